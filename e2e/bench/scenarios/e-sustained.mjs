// Scenario (e): sustained write rate. One writer (in the main driver process) appends
// small "[#<seq>]" inserts to a Y.Text as fast as it can for a fixed time, each sent as
// its own update. So that the driver is not the bottleneck, the writer encodes each
// update itself (TextAppender: byte-identical to what a Y.Doc emits for the same append,
// checked against Yjs before the run) instead of running Yjs; at the end the server's
// whole state is fetched, decoded with Yjs and compared with the expected text. One raw
// observer in a load-generator process counts what the server relays and reports
// progress every few ms. The writer keeps at most `window` updates in flight (sent but
// not yet observed) and waits when it is that far ahead. After the send window the run
// drains (bounded). Reported: updates delivered per
// second (observer receipts / (last receipt - first send)), updates lost, latency
// percentiles under that load (bounded by the in-flight window), server CPU per update.

import { RawClient, TextAppender, Y, fetchState, marker } from '../lib/yclient.mjs'
import { spawnWorkers } from '../lib/workers.mjs'
import { snapshot, diff } from '../lib/procstats.mjs'
import { now, sleep, summarize, tick } from '../lib/stats.mjs'
import { withServer, Metrics, addDriverDiag } from '../lib/harness.mjs'

export const id = 'e'
export const title = 'sustained write rate: 1 writer -> 1 observer, as fast as possible'

export function config (quick) {
  return quick ? { durationMs: 1000, window: 1000, maxUpdates: 200000 } : { durationMs: 5000, window: 1000, maxUpdates: 1000000 }
}

export function describe (quick) {
  const c = config(quick)
  return `writer sends small Y.Text inserts back to back for ${c.durationMs / 1000} s with at most ${c.window} updates in flight (sent, not yet observed); 1 raw observer`
}

export async function run (target, { quick }) {
  const c = config(quick)
  const m = new Metrics()
  await withServer(target, async (server) => {
    const url = server.url('sustained')
    const [obs] = spawnWorkers(1, 'sustained-observer')
    TextAppender.selfTest()
    const writer = new RawClient(url)
    const appender = new TextAppender(1 + Math.floor(Math.random() * 0x7ffffffe))
    try {
      const opened = await obs.call('open', { urls: [url], timeoutMs: 20000 })
      if (opened.synced !== 1) throw new Error(`observer did not sync: ${opened.errors.join('; ')}`)
      await writer.connect()
      if (!(await waitSynced(writer))) throw new Error('writer did not sync')
      await obs.call('record')
      let observed = 0
      let wake = null
      obs.onProgress = (msg) => { observed = msg.receipts; if (wake) { const w = wake; wake = null; w() } }
      await obs.call('progress', { intervalMs: 2 })
      await sleep(300)

      const sendTimes = new Float64Array(c.maxUpdates)
      let seq = 0
      let stalls = 0
      const s0 = snapshot(server.pid)
      const tFirst = now()
      const tEnd = tFirst + c.durationMs
      while (seq < c.maxUpdates) {
        const t = now()
        if (t >= tEnd) break
        if (seq - observed >= c.window) {
          stalls++
          await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 5) })
          continue
        }
        sendTimes[seq] = t
        writer.sendUpdate(appender.next(marker(seq)))
        seq++
        if ((seq & 63) === 0) await tick() // let IPC progress and socket writes through
      }
      const tLastSend = now()
      const sent = seq
      // drain: every update observed, or 3 s without progress, or 15 s in all
      const drainDeadline = now() + 15000
      let last = -1
      let lastChange = now()
      while (observed < sent && now() < drainDeadline && now() - lastChange < 3000) {
        if (observed !== last) { last = observed; lastChange = now() }
        await sleep(10)
      }
      const s1 = snapshot(server.pid)
      const r = await obs.call('collect')
      const d = diff(s0, s1)
      let lastRecv = tFirst
      const lat = new Float64Array(r.seqs.length)
      for (let i = 0; i < r.seqs.length; i++) {
        lat[i] = r.times[i] - sendTimes[r.seqs[i]]
        if (r.times[i] > lastRecv) lastRecv = r.times[i]
      }
      const received = r.seqs.length
      const s = summarize(lat)
      if (r.unexpectedCloses) m.note(`the observer was disconnected: ${JSON.stringify(r.closeCodes)}`)
      // The server's state must hold every update, in order.
      const state = await fetchState(url, 20000)
      const check = new Y.Doc()
      if (state) Y.applyUpdate(check, state)
      let expectedText = ''
      for (let i = 0; i < sent; i++) expectedText += marker(i)
      const stateOk = check.getText('text').toString() === expectedText
      if (!stateOk) m.note(`the server's final state does not hold the ${sent} updates (text length ${check.getText('text').length} vs ${expectedText.length})`)
      m.add('delivered_per_s', 'updates delivered per second', 'updates/s', 'higher', received / ((lastRecv - tFirst) / 1000))
      m.add('sent', '(diag) updates sent', 'updates', null, sent)
      m.add('sent_per_s', '(diag) writer send rate', 'updates/s', null, sent / ((tLastSend - tFirst) / 1000))
      m.check('lost', 'updates lost', 'updates', 'lower', sent - received)
      m.check('state_ok', 'server state == all updates (1 = yes)', 'bool', 'higher', stateOk ? 1 : 0)
      m.add('latency_p50_ms', `latency p50 (<= ${c.window} in flight)`, 'ms', 'lower', s.p50)
      m.add('latency_p99_ms', `latency p99 (<= ${c.window} in flight)`, 'ms', 'lower', s.p99)
      m.add('server_cpu_per_update_us', 'server CPU per delivered update', 'µs', 'lower', received ? (d.serverCpuMs * 1000) / received : null)
      m.add('server_cpu_pct', 'server CPU', '% of 1 core', null, (100 * d.serverCpuMs) / d.wallMs)
      m.add('window_stalls', '(diag) writer waits on the in-flight window', 'waits', null, stalls)
      addDriverDiag(m, '', d, [r])
    } finally {
      writer.close()
      await obs.stop()
    }
  })
  return m
}

async function waitSynced (client, timeoutMs = 10000) {
  const deadline = now() + timeoutMs
  while (client.tSynced === null && !client.closed && now() < deadline) await sleep(5)
  return client.tSynced !== null
}
