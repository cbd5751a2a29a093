// Spawning and stopping the Tandem server under test.
//
// The binary is $TANDEM_BIN (default /work/cargo-target/release/tandem). A path
// ending in .js/.mjs is run with node, which lets the harness itself be tried
// against a stand-in server speaking the same protocol.
//
// Each server gets TANDEM_BIND=127.0.0.1:0 (or a fixed `port`, so that clients
// reconnect to a restarted process by themselves) and an SQLite database in a
// data directory; the port is parsed from the "listening on
// http://127.0.0.1:PORT" log line (stdout or stderr, plain or JSON), then
// /healthz must answer 200.

import { execFileSync, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sleep, waitUntil, withTimeout } from './wait.js'

export const TANDEM_BIN = process.env.TANDEM_BIN || '/work/cargo-target/release/tandem'

const LISTENING = /listening on http:\/\/127\.0\.0\.1:(\d+)/
const MAX_LOG_LINES = 400

/** Every live server process, so that none outlives the test file. */
const live = new Set()
process.on('exit', () => {
  for (const proc of live) {
    try { proc.kill('SIGKILL') } catch {}
  }
})

export function makeTmpDir (prefix = 'tandem-e2e-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

export function removeDir (dir) {
  fs.rmSync(dir, { recursive: true, force: true })
  dropDatabaseOf(dir)
}

// ---- PostgreSQL instead of SQLite (TANDEM_E2E_BACKEND=postgres) --------------------------
//
// With TANDEM_E2E_BACKEND=postgres and TANDEM_TEST_POSTGRES_URL (a server where databases
// may be created), each data directory gets a PostgreSQL database of its own instead of
// an SQLite file: `tandem_e2e_<hash of the directory>`, so a restarted server finds its
// documents again. The server creates it at its first start; it is dropped when the
// directory is removed, and any left are dropped when the test process exits.

const POSTGRES = process.env.TANDEM_E2E_BACKEND === 'postgres'
const POSTGRES_URL = process.env.TANDEM_TEST_POSTGRES_URL
if (POSTGRES && !POSTGRES_URL) throw new Error('TANDEM_E2E_BACKEND=postgres needs TANDEM_TEST_POSTGRES_URL')
const databases = new Map() // dataDir -> database name

function databaseUrlFor (dataDir) {
  let name = databases.get(dataDir)
  if (!name) {
    name = `tandem_e2e_${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}`
    databases.set(dataDir, name)
  }
  const url = new URL(POSTGRES_URL)
  url.pathname = `/${name}`
  return url.toString()
}

function dropDatabaseOf (dataDir) {
  const name = databases.get(dataDir)
  if (!name) return
  databases.delete(dataDir)
  try {
    execFileSync('psql', [POSTGRES_URL, '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`], { stdio: 'ignore' })
  } catch {}
}
process.on('exit', () => { for (const dir of [...databases.keys()]) dropDatabaseOf(dir) })

export class TandemServer {
  constructor ({ proc, port, dataDir, env, logLines, maxLogLines = MAX_LOG_LINES }) {
    this.proc = proc
    this.port = port
    this.dataDir = dataDir
    this.env = env
    this.maxLogLines = maxLogLines
    /** the last `maxLogLines` lines of stdout and stderr (all of them with maxLogLines: Infinity) */
    this.logLines = logLines
    this.httpUrl = `http://127.0.0.1:${port}`
    /** base URL for WebsocketProvider: the doc name is appended as /ws/{doc} */
    this.wsUrl = `ws://127.0.0.1:${port}/ws`
    this.exited = new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve({ code: proc.exitCode, signal: proc.signalCode })
      else proc.once('exit', (code, signal) => resolve({ code, signal }))
    })
  }

  get running () {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** The last log lines, for failure messages. */
  logs (n = 40) {
    return this.logLines.slice(-n).join('\n')
  }

  /** Wait until a log line matches `re` (for events only the log shows). */
  waitForLog (re, { timeoutMs = 20_000, what = `a log line matching ${re}` } = {}) {
    return waitUntil(() => this.logLines.find((line) => re.test(line)), { timeoutMs, intervalMs: 50, what })
  }

  /** Send `signal` and wait for the exit; resolves to { code, signal }. Falls back to SIGKILL. */
  async stop ({ signal = 'SIGTERM', timeoutMs = 15_000 } = {}) {
    if (this.running) this.proc.kill(signal)
    try {
      return await withTimeout(this.exited, timeoutMs, `server exit after ${signal}`)
    } catch (err) {
      this.proc.kill('SIGKILL')
      await this.exited
      throw err
    }
  }

  /** kill -9, and wait until the process is gone. */
  kill9 () {
    return this.stop({ signal: 'SIGKILL', timeoutMs: 10_000 })
  }

  /**
   * Start a new server process on the same database (and environment). A
   * server started on a fixed port is restarted on it; `samePort: true` does
   * the same for one that was started on port 0, so that clients reconnect to
   * the new process by themselves.
   */
  restart (extraEnv = {}, { samePort = false } = {}) {
    return startServer({
      dataDir: this.dataDir,
      env: { ...this.env, ...extraEnv },
      maxLogLines: this.maxLogLines,
      port: samePort ? this.port : undefined
    })
  }
}

/**
 * Start a server whose database lives in `dataDir` (which must exist).
 * `env` adds or overrides TANDEM_* settings. `maxLogLines` is how many of the
 * last log lines are kept (Infinity: all of them, e.g. to scan a whole log).
 * `port` binds 127.0.0.1:port instead of a free port; while that address is
 * still in use (a process that was just killed), the start is retried until
 * `timeoutMs`. The returned server remembers the port in its `env`, so its
 * `restart()` uses it again.
 */
export async function startServer ({ dataDir, env = {}, timeoutMs = 20_000, maxLogLines = MAX_LOG_LINES, port }) {
  if (port === undefined) return startOnce({ dataDir, env, timeoutMs, maxLogLines })
  const fixed = { ...env, TANDEM_BIND: `127.0.0.1:${port}` }
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await startOnce({ dataDir, env: fixed, timeoutMs: Math.max(1000, deadline - Date.now()), maxLogLines })
    } catch (err) {
      if (!err.addressInUse || Date.now() > deadline) throw err
      await sleep(50)
    }
  }
}

async function startOnce ({ dataDir, env, timeoutMs, maxLogLines }) {
  if (!fs.existsSync(TANDEM_BIN)) {
    throw new Error(`TANDEM_BIN does not exist: ${TANDEM_BIN} (build it, or set TANDEM_BIN)`)
  }
  const fullEnv = {
    TANDEM_BIND: '127.0.0.1:0',
    TANDEM_DATABASE_URL: POSTGRES ? databaseUrlFor(dataDir) : `sqlite://${path.join(dataDir, 'tandem.db')}`,
    TANDEM_LOG_FORMAT: 'json',
    // The access log (a line per request) would push the lines tests wait for
    // out of the kept window.
    RUST_LOG: 'info,tandem::access=warn',
    ...env
  }
  const isScript = /\.(m?js)$/.test(TANDEM_BIN)
  const proc = spawn(isScript ? process.execPath : TANDEM_BIN, isScript ? [TANDEM_BIN] : [], {
    env: { ...process.env, ...fullEnv },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  live.add(proc)
  proc.once('exit', () => live.delete(proc))

  const logLines = []
  let resolvePort
  const portFound = new Promise((resolve) => { resolvePort = resolve })
  const onData = (stream) => {
    let pending = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk) => {
      pending += chunk
      const lines = pending.split('\n')
      pending = lines.pop()
      for (const line of lines) {
        logLines.push(line)
        if (logLines.length > maxLogLines) logLines.shift()
        const m = LISTENING.exec(line)
        if (m) resolvePort(Number(m[1]))
      }
    })
    // a last line without a newline (e.g. when the process is killed)
    stream.on('end', () => {
      if (pending.length > 0) logLines.push(pending)
      pending = ''
    })
  }
  onData(proc.stdout)
  onData(proc.stderr)
  const exitedEarly = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))
  // 'close' comes after the last output has been read ('exit' may come before it)
  const outputDone = new Promise((resolve) => proc.once('close', resolve))

  const fail = async (why) => {
    proc.kill('SIGKILL')
    await exitedEarly
    await withTimeout(outputDone, 2000, 'the end of the server output').catch(() => {})
    const err = new Error(`${why}\n--- server log ---\n${logLines.slice(-40).join('\n')}`)
    err.addressInUse = logLines.some((line) => /Address already in use/.test(line))
    throw err
  }

  const started = await withTimeout(
    Promise.race([portFound.then((port) => ({ port })), exitedEarly.then((exit) => ({ exit }))]),
    timeoutMs, 'the "listening on" log line'
  ).catch((err) => ({ error: err }))
  if (started.error) return fail(started.error.message)
  if (started.exit) return fail(`server exited during startup: ${JSON.stringify(started.exit)}`)

  const server = new TandemServer({ proc, port: started.port, dataDir, env, logLines, maxLogLines })
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const status = await fetch(`${server.httpUrl}/healthz`).then((r) => r.status, () => 0)
    if (status === 200) return server
    if (!server.running) return fail('server exited before /healthz answered')
    if (Date.now() > deadline) return fail(`/healthz did not answer 200 (last status ${status})`)
    await sleep(50)
  }
}
