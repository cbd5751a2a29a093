// Deliveries to a healthy webhook endpoint beside a large backlog of another: the healthy
// endpoint's first-attempt delay (from the API call that caused an event to the receiver
// getting it) with no backlog, then with `--messages` due, pending messages for a disabled
// endpoint (as `recover` on a disabled endpoint leaves them, or an endpoint disabled while
// backlogged), same run, same database. The sender reads each enabled endpoint's due
// messages through an index of its own, so the backlog should cost nothing.
//
//   node tools/backlog-delay.mjs [--messages 100000] [--events 300]
//
// Needs TANDEM_BIN and python3 (its sqlite3 module writes the rows).

import http from 'node:http'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BIN, startOnSqlite as start } from '../lib/sqlite-server.mjs'
import { now, sleep, summarize, fmt } from '../lib/stats.mjs'

const { values: opts } = parseArgs({
  options: {
    messages: { type: 'string', default: '100000' },
    events: { type: 'string', default: '300' }
  }
})
const N = Number(opts.messages)
const EVENTS = Number(opts.events)

/** A receiver that answers 200 at once and notes when each document's creation arrived. */
async function receiver () {
  const arrived = new Map()
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const t = now()
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
        if (body.type === 'document.created') arrived.set(body.data.doc, t)
      } catch {}
      res.writeHead(200)
      res.end()
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { arrived, url: `http://127.0.0.1:${server.address().port}/hook`, close: () => server.close() }
}

async function api (port, method, path, body) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`)
  return res.status === 204 ? null : res.json()
}

/** Creates `EVENTS` documents, one every 20 ms; each one's delay until the receiver had it (ms). */
async function measure (port, rx, tag) {
  const sent = new Map()
  for (let i = 0; i < EVENTS; i++) {
    const doc = `${tag}-${i}`
    sent.set(doc, now())
    await api(port, 'POST', '/api/docs', { id: doc })
    await sleep(20)
  }
  const deadline = now() + 30_000
  while ([...sent.keys()].some((d) => !rx.arrived.has(d)) && now() < deadline) await sleep(50)
  const delays = [...sent].filter(([d]) => rx.arrived.has(d)).map(([d, t]) => rx.arrived.get(d) - t)
  return { delays, missing: sent.size - delays.length }
}

/** Writes `n` due, pending messages for `endpoint` and disables it, straight into the stopped server's database. */
function writeBacklog (dbPath, endpoint, n) {
  const script = `
import sqlite3, sys, time, json, secrets
db = sqlite3.connect(sys.argv[1])
ep, n = sys.argv[2], int(sys.argv[3])
now = int(time.time() * 1000)
rows = []
for i in range(n):
    at = now - 600000 + i
    body = json.dumps({"type": "webhook.test", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at / 1000)), "data": {"endpoint": ep}})
    rows.append(("msg_" + secrets.token_hex(16), ep, "webhook.test", body, "pending", 0, at, at))
db.executemany("INSERT INTO webhook_messages (id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?)", rows)
db.execute("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = 'backlog benchmark' WHERE id = ?", (ep,))
db.commit()
`
  execFileSync('python3', ['-c', script, dbPath, endpoint, String(n)], { stdio: ['ignore', 'inherit', 'inherit'] })
}

function row (name, r) {
  const s = summarize(r.delays)
  return `${name.padEnd(40)} ${fmt(s.p50).padStart(8)} ${fmt(s.p99).padStart(8)} ${fmt(s.max).padStart(8)}   (${r.delays.length} events, ${r.missing} missing)`
}

const dir = mkdtempSync(join(tmpdir(), 'tandem-backlog-'))
const rx = await receiver()
try {
  let server = await start(dir)
  await api(server.port, 'POST', '/api/webhooks', { url: rx.url, events: ['document.created'] })
  // The backlogged endpoint's receiver is never reached: it is disabled.
  const backlogged = (await api(server.port, 'POST', '/api/webhooks', { url: 'http://127.0.0.1:9/never', events: ['webhook.test'] })).id
  await sleep(300)
  const without = await measure(server.port, rx, 'before')
  await server.stop()
  writeBacklog(join(dir, 'tandem.db'), backlogged, N)
  server = await start(dir)
  await sleep(500)
  const withBacklog = await measure(server.port, rx, 'after')
  const pending = (await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text())
    .match(/tandem_webhook_outbox_pending ([0-9.e+]+)/)?.[1]
  await server.stop()
  console.log(`healthy endpoint's first-attempt delay beside a disabled endpoint's backlog; binary ${BIN}`)
  console.log(`delay from POST /api/docs to the receiver (ms)       p50      p99      max`)
  console.log(row('no backlog', without))
  console.log(row(`${N.toLocaleString('en-US')} pending for a disabled endpoint`, withBacklog))
  console.log(`outbox pending while measuring: ${pending}`)
} finally {
  rx.close()
  rmSync(dir, { recursive: true, force: true })
}
