// Worker thread body for RssSampler (procstats.mjs): reads VmRSS of one pid every
// intervalMs and publishes peak / last / sample count through a SharedArrayBuffer.
// Stops when told to, or when the process is gone.

import { workerData } from 'node:worker_threads'
import { readFileSync } from 'node:fs'

const { pid, intervalMs, shared } = workerData
const re = /^VmRSS:\s+(\d+)\s+kB/m

const timer = setInterval(() => {
  if (Atomics.load(shared, 3) === 1) { clearInterval(timer); return }
  let kb
  try {
    const m = re.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    if (!m) return
    kb = Number(m[1])
  } catch {
    clearInterval(timer) // process exited
    return
  }
  Atomics.store(shared, 1, kb)
  if (kb > Atomics.load(shared, 0)) Atomics.store(shared, 0, kb)
  Atomics.add(shared, 2, 1)
}, intervalMs)
