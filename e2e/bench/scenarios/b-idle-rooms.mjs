// Scenario (b): many idle rooms. 1,000 rooms with 2 raw clients each (one client of
// every room in each of the 2 load-generator processes), connected and synced, then
// left alone. Reported: resident memory per room = (server RSS after all connected,
// synced and settled 2 s - RSS before the first connection) / rooms, and idle CPU =
// server CPU time over a 10 s window with nothing happening, as % of one core and as
// µs of CPU per connection per second. utime+stime has 10 ms resolution (1 tick = 0.1%
// of a core over 10 s), so both idle figures are also given from the threads' schedstat
// run time, which has nanosecond resolution. Rooms stay empty (clients only handshake;
// no awareness), so this is the per-room + per-connection overhead of each server.

import { spawnWorkers } from '../lib/workers.mjs'
import { snapshot, diff, threadCpu, threadCpuDeltaMs } from '../lib/procstats.mjs'
import { now, sleep } from '../lib/stats.mjs'
import { withServer, Metrics, addDriverDiag } from '../lib/harness.mjs'

export const id = 'b'
export const title = 'idle rooms: memory per room and idle CPU'

export function config (quick) {
  return quick
    ? { rooms: 100, baselineMs: 500, settleMs: 1000, idleMs: 2000 }
    : { rooms: 1000, baselineMs: 1000, settleMs: 2000, idleMs: 10000 }
}

export function describe (quick) {
  const c = config(quick)
  return `${c.rooms} rooms x 2 idle raw clients (empty documents, no awareness); RSS settled ${c.settleMs / 1000} s after sync; idle window ${c.idleMs / 1000} s`
}

export async function run (target, { quick }) {
  const c = config(quick)
  const m = new Metrics()
  await withServer(target, async (server, sampler) => {
    const workers = spawnWorkers(2, 'idle')
    try {
      await sleep(c.baselineMs)
      const rssBefore = sampler.lastKb()
      const urls = Array.from({ length: c.rooms }, (_, i) => server.url(`idle-${i}`))
      const t0 = now()
      const opened = await Promise.all(workers.map((w) => w.call('open', { urls, concurrency: 50, timeoutMs: 90000 }, 120000)))
      const connectS = (now() - t0) / 1000
      const synced = opened.reduce((a, r) => a + r.synced, 0)
      if (synced < 2 * c.rooms) m.note(`only ${synced}/${2 * c.rooms} clients connected and synced (${opened.flatMap((r) => r.errors).join('; ')})`)
      await sleep(c.settleMs)
      const rssAfter = sampler.lastKb()
      const peakConnect = sampler.peakKb()

      await Promise.all(workers.map((w) => w.call('record')))
      const p0 = threadCpu(server.pid)
      const s0 = snapshot(server.pid)
      await sleep(c.idleMs)
      const s1 = snapshot(server.pid)
      const preciseMs = threadCpuDeltaMs(p0, threadCpu(server.pid))
      const d = diff(s0, s1)
      const collected = await Promise.all(workers.map((w) => w.call('collect')))
      const closes = collected.reduce((a, r) => a + r.unexpectedCloses, 0)
      if (closes) m.note(`${closes} idle connections were closed by the server during the idle window: ${collected.map((r) => JSON.stringify(r.closeCodes)).join(' ')}`)

      m.add('rss_before_mib', 'RSS before connecting', 'MiB', 'lower', rssBefore / 1024)
      m.add('rss_after_mib', `RSS with ${c.rooms} rooms / ${2 * c.rooms} connections`, 'MiB', 'lower', rssAfter / 1024)
      m.add('rss_per_room_kib', 'resident memory per room (2 connections)', 'KiB', 'lower', (rssAfter - rssBefore) / c.rooms)
      m.add('rss_peak_connect_mib', '(diag) peak RSS while connecting', 'MiB', null, peakConnect / 1024)
      m.add('idle_cpu_pct', `idle CPU over ${c.idleMs / 1000} s`, '% of 1 core', 'lower', (100 * d.serverCpuMs) / d.wallMs)
      m.add('idle_cpu_us_per_conn_s', 'idle CPU per connection', 'µs/conn/s', 'lower', (d.serverCpuMs * 1000) / synced / (d.wallMs / 1000))
      m.add('idle_cpu_pct_precise', `idle CPU over ${c.idleMs / 1000} s (schedstat, ns resolution)`, '% of 1 core', 'lower', (100 * preciseMs) / d.wallMs)
      m.add('idle_cpu_us_per_conn_s_precise', 'idle CPU per connection (schedstat, ns resolution)', 'µs/conn/s', 'lower', (preciseMs * 1000) / synced / (d.wallMs / 1000))
      m.add('connect_all_s', `(diag) connect+sync ${2 * c.rooms} clients (2 x 50 in flight)`, 's', null, connectS)
      addDriverDiag(m, '', d, collected)
    } finally {
      await Promise.all(workers.map((w) => w.stop()))
    }
  })
  return m
}
