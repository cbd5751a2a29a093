// Not part of the benchmark run: a soak of one Tandem binary. Does the server give back what
// connections and rooms took once they are gone?
//
//  (a) CYCLES connect -> sync -> awareness update -> disconnect cycles, CONCURRENCY at a time,
//      over DOCS documents. Each client is a raw `ws` socket speaking y-websocket: it sends
//      sync step 1, answers the server's step 1, waits for the server's step 2, sends one
//      awareness update with a fresh client ID, waits until the server relays it back (so the
//      server has processed it), then closes (one cycle in ten drops the TCP connection
//      without a close handshake instead).
//  (b) ROOMS distinct documents, each loaded by one connection that writes one update (a text
//      insert) and leaves; the room then unloads after TANDEM_ROOM_IDLE_TIMEOUT (set to 2 s).
//
// It samples the server's VmRSS (/proc/PID/status) and open file descriptors (/proc/PID/fd)
// every 2 s, and at idle points, each taken once the server reports no connection and no
// loaded room (/metrics) and 2 s more have passed: `cold` (just started), `before` (after a
// warm-up of CYCLES/20 cycles and ROOMS/10 rooms of the same kinds, so that threads, buffers
// and the allocator's arenas are at their working size), then after each half
// of each part: `half (a)`, `after (a)`, `half (b)`, `after (b)`. It prints a table and exits
// 1 when a part's RSS grew by more than the tolerance (--rss-tolerance-mib, default 16) over
// its own start (`before` for (a), `after (a)` for (b)), when the fds other than the database's
// files at an idle point are more than `before` (the database's own may grow as the server
// opens its pool connections lazily, up to the pools' 9 connections), when any cycle or room
// write failed, when a sample of the written rooms does not hold its text, or when SIGTERM
// does not end the server with status 0.
//
//   node tools/soak.mjs [--quick] [--bin PATH] [--cycles N] [--rooms N] [--concurrency N]
//                       [--docs N] [--rss-tolerance-mib N]
//
// Defaults: 100,000 cycles, 10,000 rooms, 200 at a time, 50 documents in (a). --quick:
// 2,000 cycles and 500 rooms. The binary is --bin, else $TANDEM_BIN, else
// /work/cargo-target/release/tandem.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { TextAppender, updateFrame } from '../lib/yclient.mjs'
import { rssKb } from '../lib/procstats.mjs'
import { sleep } from '../lib/stats.mjs'

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    bin: { type: 'string' },
    cycles: { type: 'string' },
    rooms: { type: 'string' },
    concurrency: { type: 'string', default: '200' },
    docs: { type: 'string', default: '50' },
    'rss-tolerance-mib': { type: 'string', default: '16' }
  }
})
const count = (name, value) => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) { console.error(`--${name} must be a positive integer`); process.exit(2) }
  return n
}
const BIN = opts.bin || process.env.TANDEM_BIN || '/work/cargo-target/release/tandem'
const CYCLES = count('cycles', opts.cycles ?? (opts.quick ? 2000 : 100000))
const ROOMS = count('rooms', opts.rooms ?? (opts.quick ? 500 : 10000))
const CONCURRENCY = count('concurrency', opts.concurrency)
const DOCS = count('docs', opts.docs)
const RSS_TOLERANCE_KB = Number(opts['rss-tolerance-mib']) * 1024
/**
 * SQLite connections the server may keep open: its main pool (4), its pool for loads (4, opened
 * as loads need them) and the writer's own (1); sqlx closes idle pool connections only after
 * 10 minutes. Each holds the database and its WAL open (the shared memory file is one fd).
 */
const DB_CONNECTIONS_MAX = 9
const IDLE_TIMEOUT = '2s'
const SAMPLE_MS = 2000
/** A cycle or a room write that takes longer than this has failed. */
const STEP_TIMEOUT_MS = 30000
if (!existsSync(BIN)) { console.error(`no Tandem binary at ${BIN} (set --bin or TANDEM_BIN)`); process.exit(2) }

const MSG_SYNC = 0
const MSG_AWARENESS = 1
const EMPTY_STEP1 = Uint8Array.of(MSG_SYNC, 0, 1, 0)
const EMPTY_STEP2 = Uint8Array.of(MSG_SYNC, 1, 2, 0, 0)
const WS_OPTIONS = { perMessageDeflate: false, handshakeTimeout: STEP_TIMEOUT_MS }

// ---- the server ----------------------------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), 'soak-'))
const server = await start()
const base = `ws://127.0.0.1:${server.port}/ws`

/** Starts the binary on a fresh database; resolves to { p, port, levels, last } once it listens. */
function start () {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, [], {
      env: {
        PATH: process.env.PATH,
        TANDEM_BIND: '127.0.0.1:0',
        TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`,
        TANDEM_ROOM_IDLE_TIMEOUT: IDLE_TIMEOUT,
        TANDEM_LOG_FORMAT: 'json',
        RUST_LOG: 'info'
      },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    const s = { p, port: null, levels: {}, last: [], warnings: [] }
    const onData = (stream) => {
      let pending = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk) => {
        pending += chunk
        const lines = pending.split('\n')
        pending = lines.pop()
        for (const line of lines) {
          const level = /"level":"(\w+)"/.exec(line)?.[1] ?? 'other'
          s.levels[level] = (s.levels[level] || 0) + 1
          if ((level === 'WARN' || level === 'ERROR') && s.warnings.length < 20 && !/DEV MODE/.test(line)) s.warnings.push(line)
          s.last.push(line)
          if (s.last.length > 20) s.last.shift()
          const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line)
          if (m && s.port === null) { s.port = Number(m[1]); resolve(s) }
        }
      })
    }
    onData(p.stdout)
    onData(p.stderr)
    s.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })))
    s.exited.then(({ code, signal }) => { if (s.port === null) reject(new Error(`exit ${code ?? signal}: ${s.last.join('\n')}`)) })
  })
}
process.on('exit', () => { try { server.p.kill('SIGKILL') } catch {} rmSync(dir, { recursive: true, force: true }) })

/** GET over a connection of its own that is closed after the answer, so that no kept-alive
 * socket of ours is counted among the server's fds. */
function get (path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: server.port, path, agent: false, headers: { connection: 'close' }, timeout: 10000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)))
    req.on('error', reject)
  })
}

async function gauges () {
  const { body } = await get('/metrics')
  const gauge = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1] ?? NaN)
  return { connections: gauge('tandem_connections'), rooms: gauge('tandem_rooms_loaded') }
}

const fds = () => readdirSync(`/proc/${server.p.pid}/fd`).length

/** How many of the fds in `kinds` are the database's files (the database, its WAL, its shared memory). */
const dbFds = (kinds) => Object.entries(kinds).filter(([k]) => k.startsWith('<data>/')).reduce((n, [, v]) => n + v, 0)

/** What the server's fds point at, counted by kind ("socket", "anon_inode:[eventfd]", a path). */
function fdKinds () {
  const kinds = {}
  for (const fd of readdirSync(`/proc/${server.p.pid}/fd`)) {
    let target
    try { target = readlinkSync(`/proc/${server.p.pid}/fd/${fd}`) } catch { continue }
    const kind = target.startsWith('socket:') ? 'socket' : target.startsWith('pipe:') ? 'pipe' : target.replace(dir, '<data>')
    kinds[kind] = (kinds[kind] || 0) + 1
  }
  return kinds
}

// ---- samples -------------------------------------------------------------------------------

const t0 = Date.now()
const samples = [] // every reading: { t, phase, done, rssKb, fds, connections, rooms }
const points = {} // the named readings: cold, before, after (a), after (b)
let phase = 'start'
let done = 0

async function sample () {
  const reading = { t: (Date.now() - t0) / 1000, phase, done, rssKb: rssKb(server.p.pid), fds: fds() }
  Object.assign(reading, await gauges().catch(() => ({ connections: NaN, rooms: NaN })))
  if (sampling !== null) samples.push(reading) // not one that finished after the parts ended
  return reading
}

/** Waits until the server has no connection and no loaded room, lets it settle, reads RSS and fds. */
async function idlePoint (name) {
  const deadline = Date.now() + 60000
  for (;;) {
    const g = await gauges()
    if (g.connections === 0 && g.rooms === 0) break
    if (Date.now() > deadline) throw new Error(`${name}: the server still reports ${g.connections} connections and ${g.rooms} loaded rooms after 60 s`)
    await sleep(250)
  }
  await sleep(2000)
  const reading = { t: (Date.now() - t0) / 1000, phase: name, done, rssKb: rssKb(server.p.pid), fds: fds(), connections: 0, rooms: 0, kinds: fdKinds() }
  samples.push(reading)
  points[name] = reading
  console.log(`${name.padEnd(10)} RSS ${(reading.rssKb / 1024).toFixed(1)} MiB, ${reading.fds} fds, of which ${dbFds(reading.kinds)} on the database's files (t = ${reading.t.toFixed(0)} s)`)
  return reading
}

let sampling = null
const startSampling = () => { sampling = setInterval(() => { sample().catch(() => {}) }, SAMPLE_MS) }
const stopSampling = () => { clearInterval(sampling); sampling = null }

// ---- the two kinds of work -------------------------------------------------------------------

const errors = []
const noteError = (what, err) => { errors.push(`${what}: ${err.message}`) }

/** Runs job(i) for i in [0, total), `concurrency` at a time; counts into `done`. */
async function pool (total, job, what) {
  let next = 0
  const worker = async () => {
    while (next < total) {
      const i = next++
      try { await job(i) } catch (err) { noteError(`${what} ${i}`, err) }
      done++
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, total) }, worker))
}

/** [[0, n/2), [n/2, n)] */
const halves = (n) => [[0, Math.floor(n / 2)], [Math.floor(n / 2), n]]

const randomClientId = () => 1 + Math.floor(Math.random() * 0xfffffffe)

function awarenessFrame (clientID, clock, state) {
  const inner = encoding.createEncoder()
  encoding.writeVarUint(inner, 1)
  encoding.writeVarUint(inner, clientID)
  encoding.writeVarUint(inner, clock)
  encoding.writeVarString(inner, JSON.stringify(state))
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_AWARENESS)
  encoding.writeVarUint8Array(enc, encoding.toUint8Array(inner))
  return encoding.toUint8Array(enc)
}

/** The client IDs with a (non-null) state in an awareness message's payload. */
function awarenessClients (payload) {
  const dec = decoding.createDecoder(payload)
  const out = []
  for (let n = decoding.readVarUint(dec); n > 0; n--) {
    const id = decoding.readVarUint(dec)
    decoding.readVarUint(dec)
    if (decoding.readVarString(dec) !== 'null') out.push(id)
  }
  return out
}

/**
 * One socket's life: opens `url`, sends step 1, answers the server's step 1, and calls
 * `onSynced(ws)` once the server's step 2 arrives, `onAwareness(ws, clientIds)` on every
 * awareness message. Resolves when the socket is closed after `finish()` was called, rejects
 * when it closes before, or after STEP_TIMEOUT_MS.
 */
function session (url, { onSynced, onAwareness = () => {} }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, WS_OPTIONS)
    let stage = 'opening'
    let finished = false
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`timed out while ${stage}`)) }, STEP_TIMEOUT_MS)
    const finish = (abrupt) => {
      finished = true
      stage = 'closing'
      if (abrupt) ws.terminate()
      else ws.close(1000)
    }
    ws.on('open', () => { stage = 'syncing'; ws.send(EMPTY_STEP1) })
    ws.on('message', (data) => {
      const dec = decoding.createDecoder(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
      const type = decoding.readVarUint(dec)
      if (type === MSG_SYNC) {
        const sub = decoding.readVarUint(dec)
        if (sub === 0) ws.send(EMPTY_STEP2)
        else if (sub === 1 && stage === 'syncing') { stage = 'synced'; onSynced(ws, finish) }
      } else if (type === MSG_AWARENESS && !finished) {
        onAwareness(awarenessClients(decoding.readVarUint8Array(dec)), finish)
      }
    })
    ws.on('error', () => {}) // the 'close' that follows says it
    ws.on('close', (code) => {
      clearTimeout(timer)
      if (finished) resolve()
      else reject(new Error(`closed (${code}) while ${stage}`))
    })
  })
}

/** (a): connect, sync, awareness update, its echo, disconnect. */
function awarenessCycle (i, prefix) {
  const clientID = randomClientId()
  let sent = false
  return session(`${base}/${prefix}-${i % DOCS}`, {
    onSynced: (ws) => {
      ws.send(awarenessFrame(clientID, 1, { user: { name: `soak ${i}`, color: '#30a46c' }, cursor: { anchor: i % 97, head: i % 89 } }))
      sent = true
    },
    onAwareness: (ids, finish) => { if (sent && ids.includes(clientID)) finish(i % 10 === 9) }
  })
}

/** (b): load a room of its own by writing one update to it, then leave. */
function roomWrite (i, prefix) {
  return session(`${base}/${prefix}-${i}`, {
    onSynced: (ws, finish) => {
      ws.send(updateFrame(new TextAppender(randomClientId()).next(`room ${i}`)))
      finish(false)
    }
  })
}

// ---- the run ---------------------------------------------------------------------------------

console.log(`soak: ${BIN}, ${CYCLES} cycles over ${DOCS} documents, ${ROOMS} rooms, ${CONCURRENCY} at a time, rooms unload after ${IDLE_TIMEOUT}`)
let exitCode = 0
try {
  await sleep(1000)
  await idlePoint('cold')

  phase = 'warm-up'
  const warmCycles = Math.max(CONCURRENCY, Math.ceil(CYCLES / 20))
  const warmRooms = Math.max(CONCURRENCY, Math.ceil(ROOMS / 10))
  await pool(warmCycles, (i) => awarenessCycle(i, 'soak-warm-a'), 'warm-up cycle')
  await pool(warmRooms, (i) => roomWrite(i, 'soak-warm-room'), 'warm-up room')
  await idlePoint('before')

  // Each part runs in two halves with an idle point between them: growth in the first half
  // can be the allocator reaching a new high-water mark (more rooms loaded at once than in the
  // warm-up); growth in the second half, which repeats the first, is what a leak would show.
  startSampling()
  done = 0
  let busyMs = 0
  for (const [k, [from, to]] of halves(CYCLES).entries()) {
    phase = '(a)'
    const t = Date.now()
    await pool(to - from, (i) => awarenessCycle(from + i, 'soak-a'), 'cycle')
    busyMs += Date.now() - t
    phase = 'idle'
    await idlePoint(k === 0 ? 'half (a)' : 'after (a)')
  }
  console.log(`(a) ${CYCLES} cycles in ${(busyMs / 1000).toFixed(1)} s (${(CYCLES / busyMs * 1000).toFixed(0)}/s)`)

  done = 0
  busyMs = 0
  for (const [k, [from, to]] of halves(ROOMS).entries()) {
    phase = '(b)'
    const t = Date.now()
    await pool(to - from, (i) => roomWrite(from + i, 'soak-room'), 'room')
    busyMs += Date.now() - t
    phase = 'unloading'
    await idlePoint(k === 0 ? 'half (b)' : 'after (b)')
  }
  console.log(`(b) ${ROOMS} rooms written in ${(busyMs / 1000).toFixed(1)} s (${(ROOMS / busyMs * 1000).toFixed(0)}/s)`)
  stopSampling()

  // The rooms' writes are in the database: a sample of them, read back through the API.
  const wrong = []
  for (let k = 0; k < 20; k++) {
    const i = Math.floor(Math.random() * ROOMS)
    const { status, body } = await get(`/api/docs/soak-room-${i}/json`)
    if (status !== 200 || JSON.parse(body).text !== `room ${i}`) wrong.push(`soak-room-${i}: ${status} ${body.slice(0, 100)}`)
  }

  // ---- report ----
  const mib = (kb) => (kb / 1024).toFixed(1)
  // a part's peaks include the samples taken while its connections closed and its rooms unloaded
  const of = (name) => samples.filter((s) => s.phase === name || s.phase === { '(a)': 'idle', '(b)': 'unloading' }[name])
  const peak = (name) => of(name).reduce((m, s) => (m && m.rssKb >= s.rssKb ? m : s), null)
  const maxFds = (name) => Math.max(...of(name).map((s) => s.fds))
  console.log('\nsamples (every 2 s while the parts ran):')
  console.log('     t  phase       done   RSS MiB    fds  connections  rooms')
  for (const s of samples) {
    console.log(`${s.t.toFixed(0).padStart(6)}  ${s.phase.padEnd(10)} ${String(s.done).padStart(6)} ${mib(s.rssKb).padStart(9)} ${String(s.fds).padStart(6)} ${String(s.connections).padStart(12)} ${String(s.rooms).padStart(6)}`)
  }
  const rows = [
    ['cold', points.cold],
    ['before', points.before],
    ['(a) peak', peak('(a)') && { ...peak('(a)'), fds: maxFds('(a)') }],
    ['half (a)', points['half (a)']],
    ['after (a)', points['after (a)']],
    ['(b) peak', peak('(b)') && { ...peak('(b)'), fds: maxFds('(b)') }],
    ['half (b)', points['half (b)']],
    ['after (b)', points['after (b)']]
  ]
  console.log('\n               RSS MiB    fds  (database files)')
  for (const [name, r] of rows) if (r) console.log(`${name.padEnd(12)} ${mib(r.rssKb).padStart(9)} ${String(r.fds).padStart(6)}  ${r.kinds ? `(${dbFds(r.kinds)})` : ''}`)

  const problems = []
  const growthA = points['after (a)'].rssKb - points.before.rssKb
  const growthB = points['after (b)'].rssKb - points['after (a)'].rssKb
  const signed = (kb) => `${kb >= 0 ? '+' : ''}${mib(kb)}`
  console.log(`\nRSS: (a) ${signed(growthA)} MiB over ${CYCLES} cycles (second half ${signed(points['after (a)'].rssKb - points['half (a)'].rssKb)}), ` +
    `(b) ${signed(growthB)} MiB over ${ROOMS} rooms (second half ${signed(points['after (b)'].rssKb - points['half (b)'].rssKb)}); tolerance ${mib(RSS_TOLERANCE_KB)} MiB each`)
  if (growthA > RSS_TOLERANCE_KB) problems.push(`RSS after (a) is ${mib(growthA)} MiB above before`)
  if (growthB > RSS_TOLERANCE_KB) problems.push(`RSS after (b) is ${mib(growthB)} MiB above after (a)`)
  for (const name of ['half (a)', 'after (a)', 'half (b)', 'after (b)']) {
    const { fds: n, kinds } = points[name]
    const others = n - dbFds(kinds)
    const othersBefore = points.before.fds - dbFds(points.before.kinds)
    if (others > othersBefore) {
      const more = Object.entries(kinds).filter(([k, v]) => !k.startsWith('<data>/') && v > (points.before.kinds[k] || 0)).map(([k, v]) => `${k} ${points.before.kinds[k] || 0} -> ${v}`)
      problems.push(`${others} fds other than the database's ${name}, ${othersBefore} before (${more.join(', ')})`)
    }
    const connections = kinds['<data>/tandem.db'] || 0
    if (connections > DB_CONNECTIONS_MAX) problems.push(`${connections} open database connections ${name}, more than the server's pools hold (${DB_CONNECTIONS_MAX})`)
  }
  if (errors.length) problems.push(`${errors.length} cycles or room writes failed, e.g.\n    ${errors.slice(0, 5).join('\n    ')}`)
  if (wrong.length) problems.push(`rooms that do not hold their write:\n    ${wrong.join('\n    ')}`)
  console.log(`server log lines by level: ${JSON.stringify(server.levels)}`)
  if (server.warnings.length) console.log(`first warnings:\n  ${server.warnings.slice(0, 5).join('\n  ')}`)

  server.p.kill('SIGTERM')
  const exit = await server.exited
  if (exit.code !== 0) problems.push(`after SIGTERM the server exited with ${JSON.stringify(exit)}`)

  if (problems.length) {
    console.log(`\nFAIL:\n  ${problems.join('\n  ')}`)
    exitCode = 1
  } else {
    console.log(`\nOK: RSS within ${mib(RSS_TOLERANCE_KB)} MiB, fds other than the database's back to the baseline and database connections within the pools after both parts; ${CYCLES} cycles and ${ROOMS} room writes without an error`)
  }
} catch (err) {
  console.error(`soak failed: ${err.stack}\n--- server log ---\n${server.last.join('\n')}`)
  exitCode = 1
} finally {
  stopSampling()
}
process.exit(exitCode)
