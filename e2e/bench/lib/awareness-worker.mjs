// A load-generator child process for scenario (f): a crowd of stock y-websocket
// providers in one room, each moving a cursor through its Awareness at a fixed rate.
// The providers behave as in a browser: y-websocket sends every awareness change it
// hears (its own and its peers', so it echoes what the server relays), and answers
// nothing else. Driven over IPC by lib/workers.mjs like client-worker.mjs.
//
// Commands (request { id, cmd, ...args } -> reply { id, result } or { id, error }):
//   open   connect `count` providers to `url`, wait until each has synced
//   move   move every cursor `hz` times a second for `durationMs` (starting at the
//          agreed instant `startAt`), then report frames received per client, the
//          latency of peers' cursor moves seen by the first `probes` providers, and
//          this process's CPU
//   exit   close every provider and exit

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { now, sleep } from './stats.mjs'

const providers = []
let frames = 0

/** The stock WebSocket, counting the frames the server sends. */
class CountingWebSocket extends WebSocket {
  constructor (...args) {
    super(...args)
    this.addEventListener('message', () => { frames++ })
  }
}

async function open ({ url, count, timeoutMs = 30000 }) {
  const base = url.slice(0, url.lastIndexOf('/'))
  const room = url.slice(url.lastIndexOf('/') + 1)
  for (let i = 0; i < count; i++) {
    const doc = new Y.Doc()
    providers.push(new WebsocketProvider(base, room, doc, { WebSocketPolyfill: CountingWebSocket, disableBc: true }))
  }
  const deadline = now() + timeoutMs
  while (now() < deadline && providers.some((p) => !p.synced)) await sleep(10)
  return { synced: providers.filter((p) => p.synced).length }
}

async function move ({ hz, durationMs, startAt, probes }) {
  // Latency: a probe notes, for each peer's cursor it sees change, how long ago the
  // peer set it (wall clocks: every process is on this machine).
  const latencies = []
  for (const p of providers.slice(0, probes)) {
    p.awareness.on('change', ({ added, updated }) => {
      const t = Date.now()
      for (const client of added.concat(updated)) {
        if (client === p.awareness.clientID) continue
        const state = p.awareness.getStates().get(client)
        if (state && typeof state.at === 'number') latencies.push(t - state.at)
      }
    })
  }
  const wait = startAt - Date.now()
  if (wait > 0) await sleep(wait)
  const frames0 = frames
  const cpu0 = process.cpuUsage()
  const t0 = now()
  const period = 1000 / hz
  let moves = 0
  // Each provider moves on its own phase within the period, as independent users do.
  for (let step = 0; now() - t0 < durationMs; step++) {
    const due = t0 + step * period
    for (let i = 0; i < providers.length; i++) {
      const at = due + (i * period) / providers.length
      const ahead = at - now()
      if (ahead > 1) await sleep(ahead)
      providers[i].awareness.setLocalState({ cursor: step, at: Date.now() })
      moves++
    }
  }
  const wallMs = now() - t0
  await sleep(200) // the last tick's relay
  const cpu = process.cpuUsage(cpu0)
  return {
    moves,
    frames: frames - frames0,
    wallMs,
    cpuMs: (cpu.user + cpu.system) / 1000,
    latencies: Float64Array.from(latencies)
  }
}

const handlers = {
  open,
  move,
  exit () {
    for (const p of providers) p.destroy()
    setTimeout(() => process.exit(0), 10)
    return true
  },
  closeAll () {
    for (const p of providers) p.destroy()
    providers.length = 0
    return true
  }
}

process.on('message', async (msg) => {
  const fn = handlers[msg.cmd]
  try {
    if (!fn) throw new Error(`unknown command ${msg.cmd}`)
    const result = await fn(msg.args || {})
    process.send({ id: msg.id, result })
  } catch (err) {
    process.send({ id: msg.id, error: String(err && err.stack ? err.stack : err) })
  }
})
process.on('disconnect', () => process.exit(0))
