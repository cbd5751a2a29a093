// Scenario (c): join storm on a large document. A writer (Y.Doc) first fills one room's
// Y.Text to ~1 MiB with many 1 KiB appends, each sent as its own update; a checker then
// syncs from the server and decodes the state to confirm the server holds all of it (and
// its encoded size). The writer stays connected so the document stays loaded. Then 100
// raw clients (50 in each of 2 load-generator processes, started at one agreed instant)
// connect at once and each sends sync step 1 with an empty state vector. Time to synced
// = connect start -> the sync step 2 carrying the whole state has arrived (its size is
// checked against the server's full state). Reported: p50/p99/max of that, and the
// server's peak RSS during the storm minus its RSS just before.

import { DocClient, Y, fetchState } from '../lib/yclient.mjs'
import { spawnWorkers, split } from '../lib/workers.mjs'
import { snapshot, diff } from '../lib/procstats.mjs'
import { now, sleep, summarize, tick } from '../lib/stats.mjs'
import { withServer, Metrics, addDriverDiag, KiB } from '../lib/harness.mjs'

export const id = 'c'
export const title = 'join storm: N clients sync a ~1 MiB document at once'

export function config (quick) {
  return quick
    ? { clients: 20, chunkBytes: 1024, chunks: 256 }
    : { clients: 100, chunkBytes: 1024, chunks: 1024 }
}

export function describe (quick) {
  const c = config(quick)
  return `document = ${c.chunks} appends of ${c.chunkBytes} B to one Y.Text (${((c.chunks * c.chunkBytes) / KiB).toFixed(0)} KiB of text); ${c.clients} raw clients connect at once with an empty state vector`
}

/** Deterministic text: lowercase letters and spaces from a small LCG. */
function makeChunk (seed, len) {
  let x = (seed * 2654435761) >>> 0
  let s = ''
  for (let i = 0; i < len; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    const r = x >>> 27
    s += r < 26 ? String.fromCharCode(97 + r) : ' '
  }
  return s
}

export async function run (target, { quick }) {
  const c = config(quick)
  const m = new Metrics()
  await withServer(target, async (server, sampler) => {
    const url = server.url('storm-doc')
    const doc = new Y.Doc()
    const writer = new DocClient(url, doc)
    const workers = spawnWorkers(2, 'storm')
    try {
      await writer.connect()
      const ytext = doc.getText('text')
      const tFill = now()
      for (let i = 0; i < c.chunks; i++) {
        ytext.insert(ytext.length, makeChunk(i, c.chunkBytes))
        if (i % 32 === 31) await tick()
      }
      const expectedText = ytext.toString()
      const clientEncoded = Y.encodeStateAsUpdate(doc).length
      // Wait until the server holds the whole document (bounded).
      let serverState = null
      let ok = false
      const deadline = now() + 30000
      while (now() < deadline) {
        serverState = await fetchState(url)
        if (serverState) {
          const check = new Y.Doc()
          Y.applyUpdate(check, serverState)
          if (check.getText('text').length === expectedText.length) { ok = check.getText('text').toString() === expectedText; break }
        }
        await sleep(250)
      }
      if (!ok) throw new Error(`server never held the full document (last state ${serverState ? serverState.length : 'none'} B)`)
      const fillS = (now() - tFill) / 1000
      const fullBytes = serverState.length
      m.add('doc_text_bytes', '(diag) document text', 'bytes', null, expectedText.length)
      m.add('doc_encoded_client', '(diag) encoded state, Yjs writer', 'bytes', null, clientEncoded)
      m.add('doc_encoded_server', '(diag) encoded state, server sync step 2', 'bytes', null, fullBytes)
      m.add('fill_s', `(diag) fill: ${c.chunks} updates sent and held by server`, 's', null, fillS)

      await sleep(quick ? 300 : 1000)
      const rssBefore = sampler.lastKb()
      sampler.resetPeak()
      const s0 = snapshot(server.pid)
      const parts = split(Array.from({ length: c.clients }, () => url), workers.length)
      await Promise.all(workers.map((w) => w.call('record'))) // starts the per-worker CPU clock
      const startAt = now() + 300
      const res = await Promise.all(workers.map((w, i) => w.call('open', {
        urls: parts[i], concurrency: Infinity, startAt, syncedMinBytes: 0, timeoutMs: 60000
      }, 90000)))
      const s1 = snapshot(server.pid)
      const peak = sampler.peakKb()
      const collected = await Promise.all(workers.map((w) => w.call('collect')))
      const d = diff(s0, s1)

      const times = res.flatMap((r) => Array.from(r.syncMs))
      const sizes = res.flatMap((r) => Array.from(r.step2Bytes))
      const synced = times.length
      const complete = sizes.filter((s) => s >= fullBytes).length
      if (synced < c.clients) m.note(`only ${synced}/${c.clients} clients synced (${res.flatMap((r) => r.errors).join('; ')})`)
      if (complete < synced) m.note(`${synced - complete} clients got a sync step 2 smaller than the full state (${Math.min(...sizes)} < ${fullBytes} B)`)
      const s = summarize(times)
      m.add('sync_p50_ms', 'time to synced p50', 'ms', 'lower', s.p50)
      m.add('sync_p99_ms', 'time to synced p99', 'ms', 'lower', s.p99)
      m.add('sync_max_ms', 'time to synced max', 'ms', 'lower', s.max)
      const o = summarize(res.flatMap((r) => Array.from(r.openMs)))
      m.add('open_p50_ms', '(diag) time to WebSocket open p50', 'ms', null, o.p50)
      m.add('open_max_ms', '(diag) time to WebSocket open max', 'ms', null, o.max)
      m.check('synced_full', `clients synced with the full state (of ${c.clients})`, 'clients', 'higher', complete)
      m.add('rss_before_mib', 'RSS before the storm', 'MiB', 'lower', rssBefore / 1024)
      m.add('rss_storm_delta_mib', 'peak RSS during storm - RSS before', 'MiB', 'lower', (peak - rssBefore) / 1024)
      m.add('server_cpu_ms', 'server CPU during the storm', 'ms', 'lower', d.serverCpuMs)
      addDriverDiag(m, '', d, collected)
    } finally {
      writer.close()
      await Promise.all(workers.map((w) => w.stop()))
    }
  })
  return m
}
