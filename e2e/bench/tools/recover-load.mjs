// Recovering many failed webhook messages beside live editing: `--messages` failed messages
// (written into the database while the server is stopped, as a long outage of a receiver
// leaves them) are queued again with one `POST /api/webhooks/{id}/recover` while a writer and
// an observer edit a document. Reported: the relay's latency before and during the recovery
// (same run, both ways), how long the recovery took to deliver everything, and the server's
// memory before, at its peak during, and after.
//
//   node tools/recover-load.mjs [--messages 10000] [--baseline-ms 5000]
//
// Needs TANDEM_BIN and python3 (its sqlite3 module writes the rows).

import http from 'node:http'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BIN, startOnSqlite as start } from '../lib/sqlite-server.mjs'
import { RawClient, TextAppender, marker, scanMarkers } from '../lib/yclient.mjs'
import { rssKb } from '../lib/procstats.mjs'
import { now, sleep, summarize, fmt } from '../lib/stats.mjs'

const { values: opts } = parseArgs({
  options: {
    messages: { type: 'string', default: '10000' },
    'baseline-ms': { type: 'string', default: '5000' }
  }
})
const N = Number(opts.messages)
const BASELINE_MS = Number(opts['baseline-ms'])

/** A receiver that answers 200 at once and counts distinct webhook-ids. */
async function receiver () {
  const ids = new Set()
  const server = http.createServer((req, res) => {
    ids.add(req.headers['webhook-id'])
    req.resume()
    req.on('end', () => { res.writeHead(200); res.end() })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { ids, url: `http://127.0.0.1:${server.address().port}/hook`, close: () => server.close() }
}

/** Writes `n` failed `webhook.test` messages for `endpoint` straight into the stopped server's database. */
function writeFailed (dbPath, endpoint, n) {
  const script = `
import sqlite3, sys, time, json, secrets
db = sqlite3.connect(sys.argv[1])
ep, n = sys.argv[2], int(sys.argv[3])
now = int(time.time() * 1000)
rows = []
for i in range(n):
    at = now - n - 60000 + i
    body = json.dumps({"type": "webhook.test", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at / 1000)), "data": {"endpoint": ep}})
    rows.append(("msg_" + secrets.token_hex(16), ep, "webhook.test", body, "failed", 8, None, at - 1000, at))
db.executemany("INSERT INTO webhook_messages (id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, first_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
db.commit()
`
  execFileSync('python3', ['-c', script, dbPath, endpoint, String(n)], { stdio: ['ignore', 'inherit', 'inherit'] })
}

/** Edits for `ms` (or until `until()`), one marked insert every 10 ms; the observer's latencies. */
async function edit (port, { ms, until }) {
  const sent = new Map()
  const latencies = []
  const observer = new RawClient(`ws://127.0.0.1:${port}/ws/probe`, {
    onUpdate: (buf, s, e, t) => scanMarkers(buf, s, e, (seq) => {
      const at = sent.get(seq)
      if (at !== undefined) { latencies.push(t - at); sent.delete(seq) }
    })
  })
  const writer = new RawClient(`ws://127.0.0.1:${port}/ws/probe`)
  await observer.connect()
  await writer.connect()
  const appender = new TextAppender(1 + Math.floor(Math.random() * 0x7ffffffe))
  const t0 = now()
  let seq = 0
  while ((ms === undefined || now() - t0 < ms) && !(until && until())) {
    sent.set(seq, now())
    writer.sendUpdate(appender.next(marker(seq)))
    seq++
    await sleep(10)
  }
  await sleep(200)
  writer.close()
  observer.close()
  return { latencies, lost: sent.size }
}

function row (name, s) {
  return `${name.padEnd(34)} ${fmt(s.p50).padStart(8)} ${fmt(s.p99).padStart(8)} ${fmt(s.max).padStart(8)}`
}

const dir = mkdtempSync(join(tmpdir(), 'tandem-recover-'))
const rx = await receiver()
try {
  let server = await start(dir)
  const res = await fetch(`http://127.0.0.1:${server.port}/api/webhooks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ url: rx.url, events: ['webhook.test'] })
  })
  const endpoint = (await res.json()).id
  await server.stop()
  writeFailed(join(dir, 'tandem.db'), endpoint, N)
  server = await start(dir)
  await sleep(500)
  const rssBefore = rssKb(server.pid)
  const baseline = await edit(server.port, { ms: BASELINE_MS })

  let peak = rssKb(server.pid)
  const sampler = setInterval(() => { peak = Math.max(peak, rssKb(server.pid)) }, 20)
  const t0 = now()
  // One call queues at most 10,000: call again until nothing is left.
  const recovered = { messages: 0, calls: 0 }
  for (;;) {
    const r = await (await fetch(`http://127.0.0.1:${server.port}/api/webhooks/${endpoint}/recover`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ since: new Date(Date.now() - 3_600_000).toISOString() })
    })).json()
    recovered.calls++
    recovered.messages += r.messages
    if (process.env.DEBUG_RECOVER) console.log(`recover call ${recovered.calls}: ${JSON.stringify(r)}`)
    if (!r.messages) break
  }
  let doneAt = null
  const during = await edit(server.port, {
    until: () => {
      if (doneAt === null && rx.ids.size >= N) doneAt = now()
      return doneAt !== null || now() - t0 > 120_000
    }
  })
  clearInterval(sampler)
  await sleep(500)
  const rssAfter = rssKb(server.pid)
  await server.stop()

  console.log(`recover: ${N.toLocaleString('en-US')} failed messages, ${recovered.calls} POST …/recover (queued ${recovered.messages.toLocaleString('en-US')}); binary ${BIN}`)
  console.log(`delivered: ${rx.ids.size.toLocaleString('en-US')} distinct webhook-ids in ${doneAt === null ? 'more than 120 s' : `${fmt((doneAt - t0) / 1000)} s`}`)
  console.log(`relay latency (ms), one insert every 10 ms    p50      p99      max`)
  console.log(row(`before (${baseline.latencies.length} edits, ${baseline.lost} lost)`, summarize(baseline.latencies)))
  console.log(row(`during (${during.latencies.length} edits, ${during.lost} lost)`, summarize(during.latencies)))
  console.log(`server RSS: before ${fmt(rssBefore / 1024)} MiB, peak during ${fmt(peak / 1024)} MiB, after ${fmt(rssAfter / 1024)} MiB`)
} finally {
  rx.close()
  rmSync(dir, { recursive: true, force: true })
}
