// Not part of the benchmark run: does the HTTP API wait while long documents load? Two
// Tandem binaries side by side (a before and an after). It writes DOCS documents of ROWS
// small updates each through NEW_BIN with compaction off, stops the server, then in 3
// rounds (alternating which binary goes first) starts each binary on a copy of that
// database, asks `GET /api/docs/big0` every 5 ms, opens all DOCS documents at once and
// prints the probe's latencies while they load and the time until every client is synced.
//
//   node tools/api-during-loads.mjs OLD_BIN NEW_BIN [DOCS=6] [ROWS=100000]
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RawClient, TextAppender, marker } from '../lib/yclient.mjs'
import { now, sleep, tick } from '../lib/stats.mjs'

const [oldBin, newBin, docsArg, rowsArg] = process.argv.slice(2)
if (!oldBin || !newBin) {
  console.error('usage: node tools/api-during-loads.mjs OLD_BIN NEW_BIN [DOCS=6] [ROWS=100000]')
  process.exit(2)
}
const DOCS = Number(docsArg || 6)
const ROWS = Number(rowsArg || 100000)

function start (bin, dir) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [], { env: { PATH: process.env.PATH, TANDEM_BIND: '127.0.0.1:0', TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`, TANDEM_COMPACT_AFTER_UPDATES: '4000000000', TANDEM_MAX_MESSAGES_PER_SECOND: '0', RUST_LOG: 'warn,tandem=info' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let buf = ''
    const on = (d) => { buf += d; const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(buf); if (m) resolve({ p, port: Number(m[1]) }) }
    p.stdout.on('data', on); p.stderr.on('data', on)
    p.on('exit', (c) => reject(new Error(`exit ${c}: ${buf.slice(-500)}`)))
  })
}
const stop = (s) => new Promise((resolve) => { s.p.removeAllListeners('exit'); s.p.on('exit', resolve); s.p.kill('SIGTERM') })

const base = mkdtempSync(join(tmpdir(), 'loads-'))
{
  const s = await start(newBin, base)
  for (let d = 0; d < DOCS; d++) {
    const w = new RawClient(`ws://127.0.0.1:${s.port}/ws/big${d}`)
    await w.connect()
    const a = new TextAppender(100 + d)
    for (let i = 0; i < ROWS; i++) {
      w.sendUpdate(a.next(marker(i)))
      if ((i & 255) === 0) { await tick(); while (w.ws.bufferedAmount > 1 << 20) await sleep(1) }
    }
    await sleep(500)
    w.close()
  }
  await sleep(2000)
  await stop(s)
  console.log(`wrote ${DOCS} documents of ${ROWS} updates`)
}
for (let r = 0; r < 3; r++) {
  for (const [name, bin] of r % 2 ? [['new', newBin], ['old', oldBin]] : [['old', oldBin], ['new', newBin]]) {
    const dir = mkdtempSync(join(tmpdir(), 'loads-run-'))
    cpSync(base, dir, { recursive: true })
    const s = await start(bin, dir)
    await sleep(500)
    const latencies = []
    let probing = true
    const probe = (async () => {
      while (probing) {
        const t = now()
        const res = await fetch(`http://127.0.0.1:${s.port}/api/docs/big0`)
        await res.arrayBuffer()
        latencies.push(now() - t)
        await sleep(5)
      }
    })()
    await sleep(200)
    const idle = latencies.length
    const t0 = now()
    const clients = Array.from({ length: DOCS }, (_, d) => new RawClient(`ws://127.0.0.1:${s.port}/ws/big${d}`))
    await Promise.all(clients.map((c) => c.connect()))
    while (clients.some((c) => c.tSynced === null)) await sleep(2)
    const synced = Math.max(...clients.map((c) => c.tSynced - t0))
    probing = false
    await probe
    const during = latencies.slice(idle).sort((x, y) => x - y)
    console.log(`round ${r + 1} ${name}: all ${DOCS} synced in ${synced.toFixed(0)} ms; API while loading: ${during.length} answers, p50 ${during[during.length >> 1].toFixed(1)} ms, max ${during.at(-1).toFixed(1)} ms`)
    clients.forEach((c) => c.close())
    await stop(s)
    rmSync(dir, { recursive: true, force: true })
  }
}
rmSync(base, { recursive: true, force: true })
