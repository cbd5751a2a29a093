// Scenario (f): a crowd of moving cursors. N stock y-websocket providers in one room
// (in two load-generator processes, lib/awareness-worker.mjs), each moving its cursor
// `hz` times a second through its Awareness. The stock provider sends every awareness
// change it hears, its peers' included, so whatever the server relays comes back to it
// as echoes: relaying each message to everyone at once costs about N² frames per round
// of moves, relaying by the tick about N per tick. Reported: frames the server sent
// per second (counted by the clients), server CPU, and how long a peer's cursor move
// took to be seen by the first providers of each process (p50/p99; wall clocks of one
// machine).

import { spawnWorkers } from '../lib/workers.mjs'
import { snapshot, diff } from '../lib/procstats.mjs'
import { summarize } from '../lib/stats.mjs'
import { withServer, Metrics, addDriverDiag } from '../lib/harness.mjs'

export const id = 'f'
export const title = 'awareness crowd: N stock providers moving cursors in one room'

export function config (quick) {
  return quick ? { clients: 20, hz: 10, durationMs: 1000, probes: 2 } : { clients: 100, hz: 10, durationMs: 5000, probes: 5 }
}

export function describe (quick) {
  const c = config(quick)
  return `${c.clients} stock y-websocket providers in one room, each setting its awareness state ${c.hz} times a second for ${c.durationMs / 1000} s (they echo what they hear, as the stock client does)`
}

export async function run (target, { quick }) {
  const c = config(quick)
  const m = new Metrics()
  await withServer(target, async (server) => {
    const url = server.url('crowd')
    const workers = spawnWorkers(2, 'crowd', './awareness-worker.mjs')
    try {
      const half = [Math.ceil(c.clients / 2), Math.floor(c.clients / 2)]
      const opened = await Promise.all(workers.map((w, i) => w.call('open', { url, count: half[i] }, 60000)))
      const synced = opened.reduce((a, r) => a + r.synced, 0)
      if (synced < c.clients) throw new Error(`only ${synced}/${c.clients} providers synced`)
      const startAt = Date.now() + 500
      const s0 = snapshot(server.pid)
      const runs = await Promise.all(workers.map((w) => w.call('move', { hz: c.hz, durationMs: c.durationMs, startAt, probes: c.probes }, c.durationMs + 60000)))
      const s1 = snapshot(server.pid)
      const d = diff(s0, s1)
      const frames = runs.reduce((a, r) => a + r.frames, 0)
      const moves = runs.reduce((a, r) => a + r.moves, 0)
      const wallS = Math.max(...runs.map((r) => r.wallMs)) / 1000
      const lat = summarize(runs.flatMap((r) => Array.from(r.latencies)))
      m.add('frames_per_s', 'frames sent by the server', 'per s', 'lower', frames / wallS)
      m.add('frames_per_move', '(diag) frames sent per cursor move', 'frames', null, moves ? frames / moves : null)
      m.add('server_cpu_pct', 'server CPU', '% of 1 core', 'lower', (100 * d.serverCpuMs) / d.wallMs)
      m.add('latency_p50_ms', 'cursor move seen by a peer p50', 'ms', 'lower', lat.p50)
      m.add('latency_p99_ms', 'cursor move seen by a peer p99', 'ms', 'lower', lat.p99)
      m.add('moves', '(diag) cursor moves sent', 'moves', null, moves)
      addDriverDiag(m, '', d, runs)
    } finally {
      await Promise.all(workers.map((w) => w.stop()))
    }
  })
  return m
}
