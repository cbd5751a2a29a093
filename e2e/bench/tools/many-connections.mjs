// Not part of the benchmark run: one Tandem node at a large number of connections.
// ROOMS rooms with two idle raw clients each (so 2 × ROOMS connections), spread over
// load-generator processes and over several loopback source addresses (127.0.0.1,
// 127.0.0.2, …: each has its own ~28,000 ephemeral ports). Then a writer in 1% of the
// rooms sends small Y.Text inserts at RATE per second per room for DURATION seconds,
// while every connection stays open.
//
// Reported: time to connect everything; the server's resident memory (VmRSS) before
// and with every connection open, and per connection; its CPU while idle at that size
// (% of one core over IDLE seconds, from schedstat, with the share of each thread);
// relay latency writer → both idle clients of its
// room (p50/p99/max) and updates lost, while at that size; the server's open file
// descriptors. Then, with the server stopped, the kernel's floor for the keepalive traffic
// of that many connections (floor/send-floor.c, see below; skipped without gcc and
// liburing-dev), and the idle CPU divided by it. Exits 1 when a connection fails, an
// update is lost, or the server dies.
//
// File limits: the server needs one descriptor per connection, each load generator one per
// client it holds. When the tool's own limit is lower it runs itself again under
// `prlimit --nofile=N:N` (raising a hard limit needs CAP_SYS_RESOURCE); the server and the
// load generators inherit that limit, and the server raises its own soft limit at start.
//
//   node tools/many-connections.mjs [--rooms N] [--workers N] [--rate N] [--duration S]
//                                   [--idle S] [--settle S] [--bin PATH]
//
// Defaults: 50,000 rooms (100,000 connections), 4 load-generator processes, 2 updates
// per second per writing room for 10 s, 3 s between the last connection and the idle
// window (--settle; the ratio to the keepalive floor needs at least a ping interval), 10 s
// of idle CPU. `--rooms 2500` is the CI smoke size (5,000 connections).
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { RawClient, TextAppender, marker } from '../lib/yclient.mjs'
import { spawnWorkers, split } from '../lib/workers.mjs'
import { rssKb, snapshot, diff } from '../lib/procstats.mjs'
import { fmt, now, sleep, summarize } from '../lib/stats.mjs'
import { buildFloor, runFloorNodeReceivers } from '../lib/floor.mjs'

const { values: opts } = parseArgs({
  options: {
    rooms: { type: 'string', default: '50000' },
    workers: { type: 'string', default: '4' },
    rate: { type: 'string', default: '2' },
    duration: { type: 'string', default: '10' },
    idle: { type: 'string', default: '10' },
    settle: { type: 'string', default: '3' },
    bin: { type: 'string' }
  }
})
const positive = (name) => {
  const n = Number(opts[name])
  if (!(n > 0)) { console.error(`--${name} must be a positive number`); process.exit(2) }
  return n
}
const ROOMS = Math.floor(positive('rooms'))
const WORKERS = Math.floor(positive('workers'))
const RATE = positive('rate')
const DURATION_S = positive('duration')
const IDLE_S = positive('idle')
const SETTLE_S = positive('settle')
const BIN = opts.bin || process.env.TANDEM_BIN || '/work/cargo-target/release/tandem'
if (!existsSync(BIN)) { console.error(`no Tandem binary at ${BIN} (set --bin or TANDEM_BIN)`); process.exit(2) }

const CONNECTIONS = 2 * ROOMS
const WRITERS = Math.max(1, Math.round(ROOMS / 100))
// The server holds one descriptor per connection (plus its database, listener and
// logs); each load generator holds its share of the clients.
const FILES_NEEDED = CONNECTIONS + WRITERS + 1024

// ---- file limits ---------------------------------------------------------------------------
function fileLimits () {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
  const [soft, hard] = line ? line.split(/\s+/).slice(3, 5) : ['0', '0']
  const n = (v) => (v === 'unlimited' ? Infinity : Number(v))
  return { soft: n(soft), hard: n(hard) }
}
if (fileLimits().soft < FILES_NEEDED) {
  const { soft, hard } = fileLimits()
  if (hard >= FILES_NEEDED) {
    // Raising the soft limit up to the hard one needs no privilege.
    console.error(`raising the open-file limit from ${soft} to ${FILES_NEEDED} (prlimit)`)
  } else if (process.env.MANY_CONNECTIONS_REEXEC) {
    const most = Math.floor((hard - WRITERS - 1024) / 2)
    console.error(`the open-file limit is ${soft} (hard ${hard}) and ${FILES_NEEDED} are needed: raising a hard limit needs CAP_SYS_RESOURCE, which this process does not have; at most --rooms ${most} fit under it`)
    process.exit(2)
  }
  const r = spawnSync('prlimit', [`--nofile=${FILES_NEEDED}:${Math.max(FILES_NEEDED, hard)}`, process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, MANY_CONNECTIONS_REEXEC: '1' }
  })
  if (r.status !== 0 && !process.env.MANY_CONNECTIONS_REEXEC && hard < FILES_NEEDED) {
    const most = Math.floor((hard - WRITERS - 1024) / 2)
    console.error(`could not raise the hard open-file limit past ${hard} (raising it needs CAP_SYS_RESOURCE); at most --rooms ${most} fit under it`)
  }
  process.exit(r.status ?? 1)
}

// ---- the server ----------------------------------------------------------------------------
// Extra server settings as JSON, e.g. '{"TANDEM_PING_INTERVAL":"60s"}'.
const serverEnv = JSON.parse(process.env.BENCH_SERVER_ENV || '{}')
const pingInterval = seconds(serverEnv.TANDEM_PING_INTERVAL ?? '15s')
/** A duration as Tandem reads it ("15s", "2.7s", "500ms", "1m"), in seconds; null if not one of these. */
function seconds (text) {
  const m = /^\s*([\d.]+)\s*(ms|s|m)?\s*$/.exec(String(text))
  if (!m || !(Number(m[1]) > 0)) return null
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60 }[m[2] || 's']
}
const dir = mkdtempSync(join(tmpdir(), 'many-'))
const server = await start()
process.on('exit', () => { try { server.p.kill('SIGKILL') } catch {} rmSync(dir, { recursive: true, force: true }) })
const url = (room) => `ws://127.0.0.1:${server.port}/ws/${room}`

function start () {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, [], {
      env: {
        PATH: process.env.PATH,
        TANDEM_BIND: '127.0.0.1:0',
        TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`,
        TANDEM_MAX_CONNECTIONS: String(CONNECTIONS + WRITERS + 1000),
        TANDEM_LOG_FORMAT: 'json',
        RUST_LOG: 'warn,tandem::app=info',
        ...serverEnv
      },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    const s = { p, port: null, last: [] }
    for (const stream of [p.stdout, p.stderr]) {
      let pending = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk) => {
        pending += chunk
        const lines = pending.split('\n')
        pending = lines.pop()
        for (const line of lines) {
          s.last.push(line)
          if (s.last.length > 20) s.last.shift()
          const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line)
          if (m && s.port === null) { s.port = Number(m[1]); resolve(s) }
        }
      })
    }
    s.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })))
    s.exited.then(({ code, signal }) => { if (s.port === null) reject(new Error(`exit ${code ?? signal}: ${s.last.join('\n')}`)) })
  })
}

const fds = () => { try { return readdirSync(`/proc/${server.p.pid}/fd`).length } catch { return null } }
const mib = (kb) => kb / 1024
const rows = []
const row = (what, value, unit) => { rows.push([what, value, unit]); console.error(`  ${what}: ${fmt(value)} ${unit}`) }
let failed = false
let idleCpu = null
let steady = false

// ---- connect everything ----------------------------------------------------------------------
await sleep(1000)
const rssCold = rssKb(server.p.pid)
row('server RSS, started', mib(rssCold), 'MiB')
// Each loopback source address has the ephemeral range (~28,000 ports) to itself.
const addresses = Array.from({ length: Math.ceil(CONNECTIONS / 20000) }, (_, i) => `127.0.0.${i + 1}`)
const workers = spawnWorkers(WORKERS, 'many')
try {
  const urls = []
  for (let r = 0; r < ROOMS; r++) urls.push(url(`many-${r}`), url(`many-${r}`))
  const parts = split(urls, WORKERS)
  console.error(`connecting ${CONNECTIONS.toLocaleString('en-US')} clients to ${ROOMS.toLocaleString('en-US')} rooms from ${addresses.join(', ')} …`)
  const t0 = now()
  const opened = await Promise.all(workers.map((w, i) => w.call('open', { urls: parts[i], concurrency: 100, timeoutMs: 600000, localAddresses: addresses }, 700000)))
  const synced = opened.reduce((a, r) => a + r.synced, 0)
  row('time to connect and sync all', (now() - t0) / 1000, 's')
  row('clients synced', synced, `of ${CONNECTIONS}`)
  if (synced < CONNECTIONS) {
    failed = true
    console.error(`not every client synced: ${opened.flatMap((r) => r.errors).slice(0, 5).join('; ')}`)
  }

  // ---- idle at that size ---------------------------------------------------------------------
  const connected = now()
  await sleep(SETTLE_S * 1000)
  const rssOpen = rssKb(server.p.pid)
  row('server RSS, all connected', mib(rssOpen), 'MiB')
  row('server RSS per connection', ((rssOpen - rssCold) * 1024) / CONNECTIONS, 'bytes')
  row('server open fds', fds(), '')
  // Keepalives fall due a ping interval after a connection's last message, so the
  // window shows their steady traffic only if it starts that long after the last
  // connection synced.
  steady = pingInterval === null || (now() - connected) / 1000 >= pingInterval
  const i0 = snapshot(server.p.pid)
  await sleep(IDLE_S * 1000)
  const idle = diff(i0, snapshot(server.p.pid))
  // From the threads' schedstat (ns), as the floor program measures itself: the
  // process's utime+stime ticks are too coarse for a few seconds of a near-idle server.
  idleCpu = (100 * idle.serverThreadCpuMs) / idle.wallMs
  row('server CPU while idle', idleCpu, '% of 1 core')
  const byThread = idle.serverThreadCpuByNameMs.map(([name, ms]) => `${name} ${fmt((1000 * ms) / idle.wallMs)}`)
  console.error(`  server CPU while idle by thread (ms/s): ${byThread.join(', ')}`)

  // ---- writers in 1% of the rooms --------------------------------------------------------------
  await Promise.all(workers.map((w) => w.call('record')))
  const writers = []
  for (let k = 0; k < WRITERS; k++) {
    const room = Math.floor((k * ROOMS) / WRITERS)
    const c = new RawClient(url(`many-${room}`), { localAddress: addresses[k % addresses.length] })
    await c.connect()
    writers.push({ c, appender: new TextAppender(1 + k) })
  }
  const perWriter = Math.round(RATE * DURATION_S)
  const count = perWriter * WRITERS
  const sendTimes = new Float64Array(count)
  const interval = 1000 / (RATE * WRITERS)
  const w0 = snapshot(server.p.pid)
  const tStart = now()
  // Seq s goes to writer s % WRITERS, so that sends are spread evenly over time and rooms.
  for (let seq = 0; seq < count; seq++) {
    const wait = tStart + seq * interval - now()
    if (wait > 0) await sleep(wait)
    const w = writers[seq % WRITERS]
    sendTimes[seq] = now()
    w.c.sendUpdate(w.appender.next(marker(seq)))
  }
  const expected = 2 * count
  const deadline = now() + 15000
  let got = 0
  while (now() < deadline) {
    got = (await Promise.all(workers.map((w) => w.call('count')))).reduce((a, r) => a + r.receipts, 0)
    if (got >= expected) break
    await sleep(100)
  }
  const busy = diff(w0, snapshot(server.p.pid))
  const collected = await Promise.all(workers.map((w) => w.call('collect')))
  const lat = []
  let receipts = 0
  for (const r of collected) {
    receipts += r.seqs.length
    for (let i = 0; i < r.seqs.length; i++) lat.push(r.times[i] - sendTimes[r.seqs[i]])
  }
  const s = summarize(lat)
  row(`writing rooms (${WRITERS}), updates per second in all`, RATE * WRITERS, '/s')
  row('relay latency p50', s.p50, 'ms')
  row('relay latency p99', s.p99, 'ms')
  row('relay latency max', s.max, 'ms')
  row('updates lost', expected - receipts, `of ${expected}`)
  row('server CPU while writing', (100 * busy.serverCpuMs) / busy.wallMs, '% of 1 core')
  row('server RSS after writing', mib(rssKb(server.p.pid)), 'MiB')
  if (receipts < expected) failed = true
  for (const w of writers) w.c.close()
} finally {
  await Promise.all(workers.map((w) => w.stop()))
}
if (server.p.exitCode !== null) {
  failed = true
  console.error(`the server exited: ${server.last.join('\n')}`)
} else {
  server.p.kill('SIGKILL')
  await server.exited
}

// ---- the kernel's floor for the same keepalive traffic --------------------------------------
// An idle server must still send every connection a message each ping interval (SPEC §2),
// in 50 ms steps. floor/send-floor.c sends the same number of small messages in the same
// steps to as many sockets, read by as many Node processes as the load generators, and
// does nothing else: no server can keep these connections for less CPU on this machine.
// It pings nobody and reads no pong, which the server does as well.
const notBuilt = buildFloor()
if (notBuilt) {
  console.error(`keepalive floor skipped: ${notBuilt}`)
} else if (pingInterval === null) {
  console.error(`keepalive floor skipped: cannot read TANDEM_PING_INTERVAL ${serverEnv.TANDEM_PING_INTERVAL}`)
} else {
  const perStep = Math.max(1, Math.round((CONNECTIONS * 0.05) / pingInterval))
  try {
    const floor = await runFloorNodeReceivers(CONNECTIONS, 'io_uring', {
      receivers: WORKERS,
      periodMs: 50,
      perRound: perStep,
      rounds: Math.max(60, Math.round(IDLE_S / 0.05)),
      localAddresses: addresses
    })
    row(`keepalive floor: ${perStep} sends every 50 ms, CPU`, floor.percentOfCore, '% of 1 core')
    row('keepalive floor: CPU per send', floor.usPerSend, 'µs')
    if (idleCpu !== null && steady) {
      row('server CPU while idle / keepalive floor', idleCpu / floor.percentOfCore, '×')
    } else if (idleCpu !== null) {
      console.error(`no ratio to the floor: the idle window began less than a ping interval (${pingInterval} s) after the last connection synced, before the keepalives were all due (--settle ${Math.ceil(pingInterval)} waits for them)`)
    }
  } catch (err) {
    // A figure beside the server's, not a check of it: its failure fails nothing.
    console.error(`keepalive floor failed: ${err.message}`)
  }
}
console.log(`\nmany connections: ${CONNECTIONS.toLocaleString('en-US')} connections in ${ROOMS.toLocaleString('en-US')} rooms, ${WORKERS} load generators`)
for (const [what, value, unit] of rows) console.log(`  ${what.padEnd(48)} ${String(fmt(value)).padStart(12)} ${unit}`)
console.log(failed ? 'FAILED' : 'ok')
process.exit(failed ? 1 : 0)
