// A cluster of Tandem nodes for the end-to-end tests (SPEC §7): N real
// `tandem` processes on one fresh PostgreSQL database and one Redis, with a
// Redis key prefix of their own, each on a fixed port of its own so that a
// node restarted after a kill -9 is found again at the same address.
//
// The services come from the environment, as for the Rust tests:
//   TANDEM_TEST_POSTGRES_URL  e.g. postgres://postgres@127.0.0.1:5432/postgres
//                             (an admin connection: the harness creates the
//                             database `tandem_cluster_e2e_<pid>_<random>` there)
//   TANDEM_TEST_REDIS_URL     e.g. redis://127.0.0.1:6379
// Without one of them `clusterSkipReason()` says why the tests skip.
//
// Clean-up, even on failure: `dispose()` (register it with `after()` or
// `t.after()`) kills every node, drops the database (`WITH (FORCE)`) and
// deletes the Redis keys that hold the cluster's prefix. If the test process
// dies before that, the nodes die with it (server.js kills every process it
// started on exit), an exit handler drops the database with `psql` if it can,
// and the next cluster drops any `tandem_cluster_e2e_<pid>_…` database whose process
// is gone (and the keys of such prefixes).

import fs from 'node:fs'
import net from 'node:net'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { createClient } from '@redis/client'
import * as Y from 'yjs'
import { Client, connectClient } from './clients.js'
import { makeTmpDir, removeDir, startServer } from './server.js'

export const POSTGRES_URL = process.env.TANDEM_TEST_POSTGRES_URL || ''
export const REDIS_URL = process.env.TANDEM_TEST_REDIS_URL || ''
/** A Redis URL nothing listens on: a node given it starts with Redis unreachable. */
export const UNREACHABLE_REDIS_URL = 'redis://127.0.0.1:1'

// Apart from server.js's `tandem_e2e_<hash>` (TANDEM_E2E_BACKEND=postgres), so
// the sweep below never takes one of those for a leftover.
const DB_PREFIX = 'tandem_cluster_e2e_'
const KEY_PREFIX = 'tandem-cluster-e2e-'
/** <prefix><pid>_<10 hex> (database) or <prefix><pid>-<10 hex> (Redis prefix) */
const LEFTOVER = /^(\d+)[_-][0-9a-f]{10}(?![0-9a-f])/

/** Why the cluster tests cannot run here, or false when they can (node:test's `skip` option takes either). */
export function clusterSkipReason () {
  const missing = []
  if (!POSTGRES_URL) missing.push('TANDEM_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)')
  if (!REDIS_URL) missing.push('TANDEM_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379)')
  return missing.length === 0 ? false : `cluster tests need a real PostgreSQL and Redis: set ${missing.join(' and ')}`
}

/** `url` with its database (the path) replaced by `name`. */
export function withDatabase (url, name) {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}

/** A free TCP port on 127.0.0.1 (free now: the node binds it a moment later). */
export async function freePort () {
  // Below the kernel's ephemeral range (32768 and up by default): a port the
  // OS picks for us there may be taken again at once as the local port of an
  // outgoing connection (a client, a node's PostgreSQL or Redis connection),
  // and a node restarted on it could not listen for as long as that lives.
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    const free = await new Promise((resolve) => {
      const srv = net.createServer()
      srv.once('error', () => resolve(false))
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
    if (free) return port
  }
}

const pidAlive = (pid) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return err.code === 'EPERM'
  }
}

/** Databases not yet dropped, by name: the exit handler's work list. */
const undropped = new Set()
let exitHookInstalled = false
function installExitHook () {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const name of undropped) {
      // synchronous, so it runs inside 'exit'; without psql the next run sweeps it
      try {
        spawnSync('psql', [POSTGRES_URL, '-qc', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`], { stdio: 'ignore', timeout: 5000 })
      } catch {}
    }
  })
  // A signal would end the process without 'exit' (and without the server.js
  // handler that kills the nodes).
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)))
  }
}

async function withPg (fn) {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 5000 })
  client.on('error', () => {})
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => {})
  }
}

async function withRedis (fn) {
  const client = createClient({ url: REDIS_URL, socket: { connectTimeout: 5000, reconnectStrategy: false } })
  client.on('error', () => {})
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await Promise.resolve(client.close()).catch(() => {})
  }
}

/** Every key matching `pattern`, by SCAN. */
async function scanKeys (redis, pattern) {
  const keys = []
  let cursor = '0'
  do {
    const [next, batch] = await redis.sendCommand(['SCAN', cursor, 'MATCH', pattern, 'COUNT', '1000'])
    cursor = String(next)
    keys.push(...batch.map(String))
  } while (cursor !== '0')
  return keys
}

/** Drop the databases and keys that earlier runs left behind (their process is gone). */
async function sweepLeftovers () {
  const stale = (name, prefix) => {
    const m = LEFTOVER.exec(name.slice(prefix.length))
    const pid = m ? Number(m[1]) : 0
    return pid > 0 && pid <= 2 ** 22 && pid !== process.pid && !pidAlive(pid)
  }
  await withPg(async (db) => {
    const { rows } = await db.query('SELECT datname FROM pg_database WHERE starts_with(datname, $1)', [DB_PREFIX])
    for (const { datname } of rows) {
      if (stale(datname, DB_PREFIX)) await db.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`).catch(() => {})
    }
  })
  await withRedis(async (redis) => {
    for (const key of await scanKeys(redis, `*${KEY_PREFIX}*`)) {
      const at = key.indexOf(KEY_PREFIX)
      if (stale(key.slice(at), KEY_PREFIX)) await redis.sendCommand(['UNLINK', key])
    }
  })
}

/** The local addresses ("ip:port") of `pid`'s TCP connections to `remotePort`, read from /proc. */
function tcpConnectionsTo (pid, remotePort) {
  const inodes = new Set()
  let fds = []
  try { fds = fs.readdirSync(`/proc/${pid}/fd`) } catch { return [] }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) inodes.add(m[1])
    } catch {}
  }
  const out = []
  for (const table of ['tcp', 'tcp6']) {
    let text = ''
    try { text = fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8') } catch { continue }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10 || !inodes.has(f[9])) continue
      const [, remPortHex] = f[2].split(':')
      if (parseInt(remPortHex, 16) !== remotePort) continue
      const [locIpHex, locPortHex] = f[1].split(':')
      out.push({ ip: hexIp(locIpHex), port: parseInt(locPortHex, 16) })
    }
  }
  return out
}

/** An address of /proc/net/tcp{,6} (hex, little-endian words) as text; v4-mapped v6 as v4. */
function hexIp (hex) {
  const bytes = []
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8)
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16))
  }
  if (bytes.length === 4) return bytes.join('.')
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 255 && bytes[11] === 255) return bytes.slice(12).join('.')
  const groups = []
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16))
  return groups.join(':')
}

/** CLIENT LIST output as objects. */
function parseClientList (text) {
  return String(text).split('\n').filter((l) => l.trim()).map((line) =>
    Object.fromEntries(line.trim().split(' ').map((kv) => {
      const at = kv.indexOf('=')
      return [kv.slice(0, at), kv.slice(at + 1)]
    })))
}

/** "ip:port" of a CLIENT LIST addr, without IPv6 brackets. */
const splitAddr = (addr) => {
  const at = addr.lastIndexOf(':')
  return { ip: addr.slice(0, at).replace(/^\[|\]$/g, '').replace(/^::ffff:/, ''), port: Number(addr.slice(at + 1)) }
}

export class Cluster {
  /**
   * Start `nodes` nodes at once on a fresh database.
   * @param {{ nodes?: number, env?: Record<string,string>, nodeEnv?: Array<Record<string,string|null>>, maxLogLines?: number }} opts
   *   `env`: settings for every node; `nodeEnv[i]`: overrides for node i
   *   (e.g. `{ TANDEM_REDIS_URL: UNREACHABLE_REDIS_URL }`; null removes a setting)
   */
  static async start ({ nodes = 3, env = {}, nodeEnv = [], maxLogLines } = {}) {
    const reason = clusterSkipReason()
    if (reason) throw new Error(reason)
    installExitHook()
    const cluster = new Cluster({ env, nodeEnv, maxLogLines })
    try {
      await sweepLeftovers()
      await cluster.createDatabase()
      cluster.ports = []
      for (let i = 0; i < nodes; i++) cluster.ports.push(await freePort())
      await Promise.all(cluster.ports.map((_port, i) => cluster.startNode(i)))
    } catch (err) {
      await cluster.dispose().catch(() => {})
      throw err
    }
    return cluster
  }

  constructor ({ env, nodeEnv, maxLogLines }) {
    const tag = `${process.pid}_${randomBytes(5).toString('hex')}`
    this.dbName = `${DB_PREFIX}${tag}`
    this.redisPrefix = `${KEY_PREFIX}${tag.replace('_', '-')}`
    this.dbUrl = withDatabase(POSTGRES_URL, this.dbName)
    this.env = env
    this.nodeEnv = nodeEnv
    this.maxLogLines = maxLogLines
    this.dataDir = makeTmpDir('tandem-cluster-')
    /** @type {import('./server.js').TandemServer[]} the current process of each node */
    this.nodes = []
    this.ports = []
    /** every Client made through the cluster, with `.node` its node's index */
    this.clients = new Set()
    this.disposed = false
  }

  async createDatabase () {
    await withPg((db) => db.query(`CREATE DATABASE "${this.dbName}"`))
    undropped.add(this.dbName)
  }

  /** The environment node `i` is started with. */
  nodeSettings (i, extraEnv = {}) {
    const merged = {
      TANDEM_DATABASE_URL: this.dbUrl,
      TANDEM_REDIS_URL: REDIS_URL,
      TANDEM_REDIS_PREFIX: this.redisPrefix,
      ...this.env,
      ...(this.nodeEnv[i] ?? {}),
      ...extraEnv
    }
    return Object.fromEntries(Object.entries(merged).filter(([, v]) => v !== null && v !== undefined))
  }

  /** Start node `i` on its port (retrying while a killed process still holds it). */
  async startNode (i, extraEnv = {}) {
    const server = await startServer({
      dataDir: this.dataDir,
      env: this.nodeSettings(i, extraEnv),
      port: this.ports[i],
      maxLogLines: this.maxLogLines,
      timeoutMs: 30_000
    })
    this.nodes[i] = server
    return server
  }

  /** kill -9 node `i`; resolves once the process is gone. */
  async kill9 (i) {
    await this.nodes[i].kill9()
  }

  /** Start node `i` again (after a kill or a stop), on the same port and database. */
  async restart (i, extraEnv = {}) {
    if (this.nodes[i]?.running) await this.nodes[i].stop()
    return this.startNode(i, extraEnv)
  }

  wsUrl (i) { return `ws://127.0.0.1:${this.ports[i]}/ws` }
  httpUrl (i) { return `http://127.0.0.1:${this.ports[i]}` }

  /** A stock provider on node `i`, synced. */
  async client (i, docName, opts = {}) {
    const c = await connectClient(this.wsUrl(i), docName, opts)
    c.node = i
    this.clients.add(c)
    return c
  }

  /** A stock provider on node `i`, not awaited. */
  clientNoWait (i, docName, opts = {}) {
    const c = new Client(this.wsUrl(i), docName, opts)
    c.node = i
    this.clients.add(c)
    return c
  }

  /**
   * Point a provider at node `j`: its next connection goes there. A provider
   * whose node was just killed reconnects by itself (to `j`); with
   * `reconnect: true` a live connection is closed and opened again on `j`.
   */
  move (client, j, { reconnect = false } = {}) {
    client.provider.serverUrl = this.wsUrl(j).replace(/\/+$/, '')
    client.node = j
    if (reconnect) {
      client.provider.disconnect()
      client.provider.connect()
    }
  }

  /** fetch() against node `i`'s HTTP API, bounded. */
  api (i, path, init = {}) {
    return fetch(`${this.httpUrl(i)}${path}`, { signal: AbortSignal.timeout(5000), ...init })
  }

  /** Node `i`'s copy of `docName` (GET /api/docs/{doc}/update) as a Y.Doc, or { error }. */
  async nodeDoc (i, docName) {
    try {
      const res = await this.api(i, `/api/docs/${encodeURIComponent(docName)}/update`)
      if (res.status !== 200) return { error: `node ${i}: GET …/update answered ${res.status}` }
      const doc = new Y.Doc()
      Y.applyUpdate(doc, new Uint8Array(await res.arrayBuffer()))
      return { doc }
    } catch (err) {
      return { error: `node ${i}: GET …/update failed: ${err.message}` }
    }
  }

  /**
   * For failure messages only (it knows the PostgreSQL schema): what the
   * database holds of `docName`, its snapshot and update log merged into a
   * Y.Doc, with the last sequence number; or { error }.
   */
  async dbDoc (docName) {
    const client = new pg.Client({ connectionString: this.dbUrl, connectionTimeoutMillis: 5000 })
    client.on('error', () => {})
    try {
      await client.connect()
      const docRow = await client.query('SELECT id, last_seq FROM documents WHERE name = $1', [docName])
      if (docRow.rowCount === 0) return { error: 'database: no such document' }
      const { id, last_seq: lastSeq } = docRow.rows[0]
      const snap = await client.query('SELECT data, upto_seq FROM doc_snapshots WHERE doc_id = $1', [id])
      const log = await client.query('SELECT seq, data FROM doc_updates WHERE doc_id = $1 ORDER BY seq', [id])
      const doc = new Y.Doc()
      if (snap.rowCount > 0 && snap.rows[0].data.length > 0) Y.applyUpdate(doc, new Uint8Array(snap.rows[0].data))
      for (const row of log.rows) Y.applyUpdate(doc, new Uint8Array(row.data))
      return { doc, lastSeq: Number(lastSeq), snapshotUpto: Number(snap.rows[0]?.upto_seq ?? 0), logRows: log.rowCount }
    } catch (err) {
      return { error: `database: ${err.message}` }
    } finally {
      await client.end().catch(() => {})
    }
  }

  /** The Redis clients (CLIENT LIST entries) that belong to node `i`'s current process. */
  async redisClientsOf (i, redis) {
    const redisPort = Number(new URL(REDIS_URL).port || 6379)
    const mine = tcpConnectionsTo(this.nodes[i].proc.pid, redisPort)
    const entries = parseClientList(await redis.sendCommand(['CLIENT', 'LIST']))
    return entries.filter((e) => {
      const { ip, port } = splitAddr(e.addr)
      return mine.some((m) => m.port === port && (m.ip === ip || ip === 'localhost'))
    })
  }

  /**
   * Drop the Redis connections of the given nodes (default: every node) with
   * CLIENT KILL, only those of `type` ('pubsub': subscribed connections,
   * 'normal': the others, undefined: all). Returns how many were dropped.
   */
  async killRedisConnections ({ nodes = this.nodes.map((_n, i) => i), type } = {}) {
    return withRedis(async (redis) => {
      let killed = 0
      for (const i of nodes) {
        for (const e of await this.redisClientsOf(i, redis)) {
          const pubsub = /P/.test(e.flags) || Number(e.sub) + Number(e.psub) + Number(e.ssub ?? 0) > 0
          if (type === 'pubsub' && !pubsub) continue
          if (type === 'normal' && pubsub) continue
          killed += Number(await redis.sendCommand(['CLIENT', 'KILL', 'ID', String(e.id), 'SKIPME', 'yes']))
        }
      }
      return killed
    })
  }

  /** The Redis keys that hold this cluster's prefix. */
  redisKeys () {
    return withRedis((redis) => scanKeys(redis, `*${this.redisPrefix}*`))
  }

  /** The last log lines of every node, for failure messages. */
  logs (n = 15) {
    return this.nodes.map((s, i) => `--- node ${i} (port ${this.ports[i]}) ---\n${s ? s.logs(n) : '(not started)'}`).join('\n')
  }

  /** Kill every node, drop the database and the Redis keys. Safe to call twice. */
  async dispose () {
    if (this.disposed) return
    this.disposed = true
    const errors = []
    for (const c of this.clients) {
      try { c.destroy() } catch {}
    }
    this.clients.clear()
    await Promise.all(this.nodes.map((s) => s?.running ? s.kill9().catch((err) => errors.push(err)) : null))
    if (undropped.has(this.dbName)) {
      try {
        await withPg((db) => db.query(`DROP DATABASE IF EXISTS "${this.dbName}" WITH (FORCE)`))
        undropped.delete(this.dbName)
      } catch (err) {
        errors.push(new Error(`could not drop the database ${this.dbName}: ${err.message}`))
      }
    }
    try {
      await withRedis(async (redis) => {
        for (const key of await scanKeys(redis, `*${this.redisPrefix}*`)) await redis.sendCommand(['UNLINK', key])
      })
    } catch (err) {
      errors.push(new Error(`could not delete the Redis keys of ${this.redisPrefix}: ${err.message}`))
    }
    removeDir(this.dataDir)
    if (errors.length > 0) throw new AggregateError(errors, `cluster clean-up: ${errors.map((e) => e.message).join('; ')}`)
  }
}

/** Does the database `name` exist on the test server? (For the harness's own test.) */
export function databaseExists (name) {
  return withPg(async (db) => (await db.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1)
}
