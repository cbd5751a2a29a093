// Parent side of lib/client-worker.mjs: forks load-generator child processes and calls
// their commands as promises. Advanced (structured-clone) IPC serialization lets typed
// arrays of receipts come back without JSON.

import { fork } from 'node:child_process'
import { now, sleep, withTimeout } from './stats.mjs'

export class ClientWorker {
  constructor (name, module = './client-worker.mjs') {
    this.name = name
    this.child = fork(new URL(module, import.meta.url), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.pending = new Map()
    this.nextId = 1
    this.onProgress = null
    this.exited = false
    this.child.on('message', (msg) => {
      if (msg.type === 'progress') { if (this.onProgress) this.onProgress(msg); return }
      const p = this.pending.get(msg.id)
      if (!p) return
      this.pending.delete(msg.id)
      if (msg.error) p.reject(new Error(`${this.name}: ${msg.error}`)); else p.resolve(msg.result)
    })
    this.child.on('exit', (code) => {
      this.exited = true
      for (const p of this.pending.values()) p.reject(new Error(`${this.name} exited (${code})`))
      this.pending.clear()
    })
  }

  call (cmd, args = {}, timeoutMs = 120000) {
    const id = this.nextId++
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }))
    this.child.send({ id, cmd, args })
    return withTimeout(p, timeoutMs, `${this.name}.${cmd}`)
  }

  async stop () {
    if (this.exited) return
    try { await this.call('closeAll', {}, 5000) } catch {}
    try { await this.call('exit', {}, 2000) } catch {}
    if (!this.exited) this.child.kill('SIGKILL')
  }
}

/** Forks n workers. */
export const spawnWorkers = (n, prefix = 'worker', module = './client-worker.mjs') =>
  Array.from({ length: n }, (_, i) => new ClientWorker(`${prefix}${i + 1}`, module))

/** Splits items into n nearly equal contiguous parts. */
export function split (items, n) {
  const parts = Array.from({ length: n }, () => [])
  items.forEach((item, i) => parts[i % n].push(item))
  return parts
}

/**
 * Waits until the workers hold `expected` receipts in all, or `quietMs` pass without
 * progress, or `totalMs` in all.
 */
export async function drainReceipts (workers, expected, { totalMs = 15000, quietMs = 3000 } = {}) {
  const deadline = now() + totalMs
  let last = -1
  let lastChange = now()
  for (;;) {
    const counts = await Promise.all(workers.map((w) => w.call('count')))
    const got = counts.reduce((a, r) => a + r.receipts, 0)
    if (got !== last) { last = got; lastChange = now() }
    if (got >= expected || now() > deadline || now() - lastChange > quietMs) return
    await sleep(50)
  }
}
