// Scenario (a): fan-out. One writer and N raw observers in one room (N = 1, 100, 500,
// 1000, a fresh server for each N). The writer is a Y.Doc that appends a small Y.Text insert
// "[#<seq>]" at a fixed rate and records the send time of each seq just before the
// insert; observers identify each received update by the seq in its text. Reported:
// propagation latency p50/p99/max over every observer receipt, updates lost (expected
// receipts - unique receipts), and server CPU time per delivered update (server CPU
// during the send+drain window / observer receipts). Observers live in 1 (N=1) or 2
// load-generator processes; the writer lives in the main driver process.
// A warm-up of the same rate comes first and is not recorded: in the first
// 0.2 s of sending, the load generators' JIT compilers used 1.4-1.7 cores of the
// machine's 2 and starved whichever server ran (all of Tandem's N=1000 receipts
// above p99 came from the first 10 updates).

import { DocClient, Y, marker } from '../lib/yclient.mjs'
import { drainReceipts, spawnWorkers, split } from '../lib/workers.mjs'
import { snapshot, diff } from '../lib/procstats.mjs'
import { now, sleep, summarize } from '../lib/stats.mjs'
import { withServer, Metrics, addDriverDiag } from '../lib/harness.mjs'
import { buildFloor, runFloor, runFloorNodeReceivers } from '../lib/floor.mjs'

export const id = 'a'
export const title = 'fan-out: 1 writer -> N observers in one room'

export function config (quick) {
  return quick
    ? { observerCounts: counts(), ratePerSec: 50, durationMs: 1000, settleMs: 200, warmupMs: 200 }
    : { observerCounts: counts(), ratePerSec: 50, durationMs: 5000, settleMs: 500, warmupMs: 1000 }
}

export function describe (quick) {
  const c = config(quick)
  return `writer sends ${c.ratePerSec} small Y.Text inserts/s for ${c.durationMs / 1000} s (${(c.ratePerSec * c.durationMs) / 1000} updates), after ${c.warmupMs / 1000} s of unrecorded warm-up at that rate; N = ${c.observerCounts.join(', ')}; fresh server per N`
}

export async function run (target, { quick, log }) {
  const c = config(quick)
  const m = new Metrics()
  for (const n of c.observerCounts) {
    log(`  N=${n}`)
    await withServer(target, (server) => runOne(server, n, c, m))
  }
  return m
}

/**
 * Once per round, after both servers: the kernel's floor (lib/floor.mjs) as µs of CPU per
 * send. At every N of at least 100: io_uring batches read by 2 Node load-generator
 * processes (as the observers are), the figure the servers are divided by. At the largest
 * N also one send(2) per socket, and both read by 2 C processes. Skipped in --quick runs.
 */
export async function baseline (quick) {
  const ns = counts().filter((n) => n >= 100)
  if (quick || !ns.length) return null
  const why = buildFloor()
  if (why) return { unavailable: why }
  const largest = Math.max(...ns)
  const perN = {}
  for (const n of ns) {
    perN[n] = { io_uring_node_us: (await runFloorNodeReceivers(n, 'io_uring')).usPerSend }
    if (n === largest) {
      Object.assign(perN[n], {
        io_uring_us: runFloor(n, 2, 'io_uring'),
        send_us: runFloor(n, 2, 'send'),
        send_node_us: (await runFloorNodeReceivers(n, 'send')).usPerSend
      })
    }
  }
  return { largest, perN }
}

async function runOne (server, n, c, m) {
  const p = `N=${n} `
  const room = `fanout-${n}`
  const url = server.url(room)
  const workers = spawnWorkers(Math.min(2, n), 'observers')
  const writerDoc = new Y.Doc()
  const writer = new DocClient(url, writerDoc)
  try {
    const parts = split(Array.from({ length: n }, () => url), workers.length)
    const t0 = now()
    const opened = await Promise.all(workers.map((w, i) => w.call('open', { urls: parts[i], concurrency: 50, timeoutMs: 60000 }, 90000)))
    const synced = opened.reduce((a, r) => a + r.synced, 0)
    if (synced < n) {
      const errs = opened.flatMap((r) => r.errors)
      m.note(`${p}only ${synced}/${n} observers connected and synced (${errs.join('; ')})`)
    }
    m.add(`${p}connect_all_s`, `${p}(diag) connect+sync all observers`, 's', null, (now() - t0) / 1000)
    await writer.connect()
    const ytext = writerDoc.getText('text')
    const interval = 1000 / c.ratePerSec

    // Warm-up: the same traffic through the same code, recorded and then discarded.
    await Promise.all(workers.map((w) => w.call('record')))
    const warmup = Math.round((c.ratePerSec * c.warmupMs) / 1000)
    await sendAtRate(ytext, warmup, interval, null)
    await drainReceipts(workers, warmup * synced)

    await Promise.all(workers.map((w) => w.call('record')))
    await sleep(c.settleMs)
    const count = Math.round((c.ratePerSec * c.durationMs) / 1000)
    const sendTimes = new Float64Array(count)
    const s0 = snapshot(server.pid)
    await sendAtRate(ytext, count, interval, sendTimes)
    const expected = count * synced
    await drainReceipts(workers, expected)
    const s1 = snapshot(server.pid)
    const collected = await Promise.all(workers.map((w) => w.call('collect')))
    const d = diff(s0, s1)

    const lat = []
    let receipts = 0
    let dupes = 0
    let closes = 0
    for (const r of collected) {
      receipts += r.seqs.length
      dupes += r.dupes
      closes += r.unexpectedCloses
      for (let i = 0; i < r.seqs.length; i++) lat.push(r.times[i] - sendTimes[r.seqs[i]])
      if (r.unexpectedCloses) m.note(`${p}observer connections closed by the server: ${JSON.stringify(r.closeCodes)}`)
    }
    const s = summarize(lat)
    m.add(`${p}latency_p50_ms`, `${p}latency p50`, 'ms', 'lower', s.p50)
    m.add(`${p}latency_p99_ms`, `${p}latency p99`, 'ms', 'lower', s.p99)
    m.add(`${p}latency_max_ms`, `${p}latency max`, 'ms', 'lower', s.max)
    m.check(`${p}lost`, `${p}updates lost (of ${(count * n).toLocaleString('en-US')})`, 'receipts', 'lower', count * n - receipts)
    m.add(`${p}server_cpu_per_delivery_us`, `${p}server CPU per delivered update`, 'µs', 'lower', receipts ? (d.serverCpuMs * 1000) / receipts : null)
    m.add(`${p}server_cpu_pct`, `${p}server CPU while sending`, '% of 1 core', 'lower', (100 * d.serverCpuMs) / d.wallMs)
    // The same at ns resolution (a run is only tens of 10 ms ticks at N = 1), and the
    // part spent in the kernel: mostly the TCP send path, the floor of any server.
    m.add(`${p}server_cpu_per_delivery_us_precise`, `${p}(diag) server CPU per delivered update (schedstat)`, 'µs', null, receipts ? (d.serverThreadCpuMs * 1000) / receipts : null)
    m.add(`${p}server_sys_per_delivery_us`, `${p}(diag) of it in the kernel (stime)`, 'µs', null, receipts ? (d.serverSysMs * 1000) / receipts : null)
    // Where the server's CPU went, per thread name (a pool's threads share one).
    if (receipts) {
      const parts = d.serverThreadCpuByNameMs.map(([name, ms]) => `${name} ${((ms * 1000) / receipts).toFixed(2)}`)
      m.note(`${p}CPU per delivery by thread (schedstat, µs): ${parts.join(', ')}`)
    }
    if (dupes) m.note(`${p}${dupes} duplicate receipts ignored`)
    if (closes && synced === n) m.note(`${p}${closes} observers were disconnected during the run`)
    addDriverDiag(m, p, d, collected)
  } finally {
    writer.close()
    await Promise.all(workers.map((w) => w.stop()))
  }
}

/** Appends markers 0..count-1 at one every `interval` ms, noting each send time. */
async function sendAtRate (ytext, count, interval, sendTimes) {
  const start = now()
  for (let seq = 0; seq < count; seq++) {
    const due = start + seq * interval
    const wait = due - now()
    if (wait > 0) await sleep(wait)
    if (sendTimes) sendTimes[seq] = now()
    ytext.insert(ytext.length, marker(seq))
  }
}


// BENCH_FANOUT_N=1,100 runs only those observer counts (for profiling one case).
function counts () {
  const env = process.env.BENCH_FANOUT_N
  return env ? env.split(',').map(Number) : [1, 100, 500, 1000]
}
