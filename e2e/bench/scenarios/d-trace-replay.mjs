// Scenario (d): real editing trace. The automerge-paper trace (259,778 single-character
// transactions; /work/shared/traces, see README.md there) is replayed by one writer, a
// Y.Doc bound to the server like y-websocket's provider: one Yjs transaction per trace
// transaction, each update sent as it is produced, never waiting for the server (the
// loop only yields to the event loop every few thousand transactions so the socket can
// drain). One observer, a Y.Doc in a load-generator process, applies what the server
// relays. Reported: time from the first send until the observer's clock for the writer
// reaches the writer's final clock, after which the observer's text is checked against
// the trace's endContent. The writer's own Yjs work is inside that time; it is shown
// separately as "writer produce+send".

import { gunzipSync } from 'node:zlib'
import { readFileSync } from 'node:fs'
import { DocClient, Y } from '../lib/yclient.mjs'
import { spawnWorkers } from '../lib/workers.mjs'
import { snapshot, diff } from '../lib/procstats.mjs'
import { now, sleep, tick } from '../lib/stats.mjs'
import { withServer, Metrics, addDriverDiag } from '../lib/harness.mjs'

export const id = 'd'
export const title = 'trace replay: automerge-paper, 1 writer -> 1 observer'

const TRACE = process.env.BENCH_TRACE || '/work/shared/traces/automerge-paper.json.gz'

export function config (quick) {
  return quick ? { trace: TRACE, txns: 10000, yieldEvery: 2000 } : { trace: TRACE, txns: null, yieldEvery: 2000 }
}

export function describe (quick) {
  const c = config(quick)
  return `${c.trace}${c.txns ? ` (first ${c.txns.toLocaleString('en-US')} transactions only)` : ' (all transactions)'}; one Yjs transaction and one update frame per trace transaction`
}

let cached = null
function loadTrace (path) {
  if (!cached || cached.path !== path) {
    const data = JSON.parse(gunzipSync(readFileSync(path)).toString('utf8'))
    if (data.startContent !== undefined && data.startContent !== '') throw new Error('trace has non-empty startContent')
    if (!Array.isArray(data.txns)) throw new Error('not a sequential trace')
    cached = { path, txns: data.txns, endContent: data.endContent }
  }
  return cached
}

/** Applies trace transactions to a plain string (for the expected text of a prefix). */
function replayPlain (txns) {
  let chars = []
  for (const t of txns) for (const [pos, del, ins] of t.patches) chars.splice(pos, del, ...Array.from(ins))
  return chars.join('')
}

export async function run (target, { quick }) {
  const c = config(quick)
  const trace = loadTrace(c.trace)
  const txns = c.txns ? trace.txns.slice(0, c.txns) : trace.txns
  const expected = c.txns ? replayPlain(txns) : trace.endContent
  const m = new Metrics()
  await withServer(target, async (server, sampler) => {
    const url = server.url('trace-automerge-paper')
    const [obs] = spawnWorkers(1, 'trace-observer')
    const doc = new Y.Doc()
    const writer = new DocClient(url, doc)
    try {
      await obs.call('docObserver', { url })
      await writer.connect()
      await sleep(300)
      const ytext = doc.getText('text')
      const rssBefore = sampler.lastKb()
      sampler.resetPeak()
      const s0 = snapshot(server.pid)
      const tFirst = now()
      for (let i = 0; i < txns.length; i++) {
        const patches = txns[i].patches
        doc.transact(() => {
          for (const [pos, del, ins] of patches) {
            if (del > 0) ytext.delete(pos, del)
            if (ins.length > 0) ytext.insert(pos, ins)
          }
        })
        if (i % c.yieldEvery === c.yieldEvery - 1) await tick()
      }
      const tLastSend = now()
      const writerText = ytext.toString()
      if (writerText !== expected) throw new Error('the writer\'s own Y.Text does not match the trace\'s final text')
      const clock = Y.getState(doc.store, doc.clientID)
      const r = await obs.call('awaitClock', { clientId: doc.clientID, clock, timeoutMs: 180000 }, 200000)
      const s1 = snapshot(server.pid)
      const d = diff(s0, s1)
      if (!r.reached) throw new Error(`observer did not converge within the time limit (applied ${r.applies} update frames${r.closed ? `, connection closed ${r.closeCode}` : ''})`)
      const equal = r.text === expected
      if (!equal) m.note(`observer text differs from the expected final text (lengths ${r.text.length} vs ${expected.length})`)
      m.add('txns', '(diag) transactions = update frames sent', 'frames', null, writer.sentFrames)
      m.add('converge_ms', 'first send -> observer has the final text', 'ms', 'lower', r.tDone - tFirst)
      m.add('after_last_send_ms', 'last send -> observer has the final text', 'ms', 'lower', r.tDone - tLastSend)
      m.check('text_equal', 'observer text == final text (1 = yes)', 'bool', 'higher', equal ? 1 : 0)
      m.add('writer_ms', '(diag) writer produce+send (Yjs, in the driver)', 'ms', null, tLastSend - tFirst)
      m.add('server_cpu_ms', 'server CPU, first send -> converged', 'ms', 'lower', d.serverCpuMs)
      m.add('rss_delta_mib', 'peak RSS during replay - RSS before', 'MiB', 'lower', (sampler.peakKb() - rssBefore) / 1024)
      m.add('observer_cpu_pct', '(diag) observer process CPU (applying updates)', '% of 1 core', null, (100 * r.cpuMs) / r.wallMs)
      addDriverDiag(m, '', d, [{ cpuMs: r.cpuMs, wallMs: r.wallMs }])
    } finally {
      writer.close()
      await obs.stop()
    }
  })
  return m
}
