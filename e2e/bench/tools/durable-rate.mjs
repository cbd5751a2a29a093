// One writer's durable rate on SQLite and on PostgreSQL, side by side: a writer sends
// `--updates` small Y.Text inserts back to back (each its own update, as in scenario e)
// to a fresh server, and the clock stops when the server has committed every one of them
// to its database (its /metrics: every update received and none waiting to be written;
// a committed update survives kill -9). Reported: updates committed per second, and the
// server's CPU per update.
//
//   node tools/durable-rate.mjs [--updates 50000] [--backends sqlite,postgres]
//
// TANDEM_HISTORY is passed on (history on by default; `false` to compare).
// Needs TANDEM_BIN; PostgreSQL needs TANDEM_TEST_POSTGRES_URL (a fresh database per run)
// and psql, and is skipped, saying so, without it.

import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { createInterface } from 'node:readline'
import { RawClient, TextAppender, marker } from '../lib/yclient.mjs'
import { cpuMs } from '../lib/procstats.mjs'
import { now, sleep, tick, fmt } from '../lib/stats.mjs'

const { values: opts } = parseArgs({
  options: {
    updates: { type: 'string', default: '50000' },
    backends: { type: 'string', default: 'sqlite,postgres' }
  }
})
const BIN = process.env.TANDEM_BIN || '/work/cargo-target/release/tandem'
const PG = process.env.TANDEM_TEST_POSTGRES_URL
const total = Number(opts.updates)

function psql (sql) {
  execFileSync('psql', [PG, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { stdio: ['ignore', 'ignore', 'inherit'] })
}

// A server still running is killed if this process ends early (an error, a signal).
const children = new Set()
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL') } catch {} } })
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

function start (dbUrl, dir) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, [], {
      cwd: dir,
      env: { PATH: process.env.PATH, TANDEM_BIND: '127.0.0.1:0', TANDEM_DATABASE_URL: dbUrl, TANDEM_MAX_MESSAGES_PER_SECOND: '0', TANDEM_LOG_FORMAT: 'json', RUST_LOG: 'warn,tandem=info', ...(process.env.TANDEM_HISTORY ? { TANDEM_HISTORY: process.env.TANDEM_HISTORY } : {}) },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    children.add(child)
    child.once('exit', () => children.delete(child))
    const tail = []
    const onLine = (line) => {
      tail.push(line); if (tail.length > 20) tail.shift()
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line)
      if (m) {
        const exited = new Promise((res) => child.once('exit', res))
        resolve({ pid: child.pid, port: Number(m[1]), async stop () { child.kill('SIGTERM'); await exited } })
      }
    }
    createInterface({ input: child.stdout }).on('line', onLine)
    createInterface({ input: child.stderr }).on('line', onLine)
    child.once('exit', (code) => reject(new Error(`server exited (${code}):\n${tail.join('\n')}`)))
  })
}

async function metric (port, name) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'))
  return line ? Number(line.split(' ').pop()) : 0
}

async function run (backend) {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-durable-'))
  let db = null
  let url = `sqlite://${dir}/tandem.db`
  if (backend === 'postgres') {
    db = `tandem_bench_${randomBytes(6).toString('hex')}`
    psql(`CREATE DATABASE ${db}`)
    const u = new URL(PG)
    u.pathname = `/${db}`
    url = u.toString()
  }
  const server = await start(url, dir)
  try {
    TextAppender.selfTest()
    const writer = new RawClient(`ws://127.0.0.1:${server.port}/ws/durable`)
    await writer.connect()
    const appender = new TextAppender(1 + Math.floor(Math.random() * 0x7ffffffe))
    await sleep(300)
    const cpu0 = cpuMs(server.pid)
    const t0 = now()
    for (let seq = 0; seq < total; seq++) {
      writer.sendUpdate(appender.next(marker(seq)))
      if ((seq & 255) === 0) {
        await tick()
        // The socket's own backpressure: wait while much is unsent.
        while (writer.ws.bufferedAmount > 1 << 20) await sleep(1)
      }
    }
    const tSent = now()
    const deadline = now() + 120000
    for (;;) {
      const received = await metric(server.port, 'tandem_updates_received_total')
      const waiting = await metric(server.port, 'tandem_persist_backlog_updates')
      if (received >= total && waiting === 0) break
      if (now() > deadline) throw new Error(`${backend}: ${received} received, ${waiting} waiting after 120 s`)
      await sleep(5)
    }
    const t1 = now()
    const cpu = cpuMs(server.pid) - cpu0
    writer.close()
    return { backend, rate: total / ((t1 - t0) / 1000), sendRate: total / ((tSent - t0) / 1000), cpuPerUpdateUs: (cpu * 1000) / total }
  } finally {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
    if (db) { try { psql(`DROP DATABASE ${db} WITH (FORCE)`) } catch {} }
  }
}

console.log(`durable rate: one writer, ${total.toLocaleString('en-US')} small updates back to back; binary ${BIN}`)
console.log('backend      committed/s   sent/s   server CPU per update (µs)')
for (const backend of opts.backends.split(',')) {
  if (backend === 'postgres' && !PG) {
    console.log('postgres     skipped (TANDEM_TEST_POSTGRES_URL is not set)')
    continue
  }
  const r = await run(backend)
  console.log(`${backend.padEnd(10)} ${fmt(r.rate).padStart(13)} ${fmt(r.sendRate).padStart(8)} ${fmt(r.cpuPerUpdateUs).padStart(12)}`)
}
