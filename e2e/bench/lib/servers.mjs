// The servers under test ("targets") and how to start and stop one. Each target knows
// how to spawn a fresh server process bound to 127.0.0.1, how to tell that it is ready
// (and on which port) from its log, and how to build a room's WebSocket URL. Adding a
// target means adding an entry to makeTargets(); scenarios only see the handle
// returned by start(): { name, pid, port, url(doc), stop(), alive(), logTail() }.

import { spawn } from 'node:child_process'
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'

const require = createRequire(import.meta.url)

/** A free TCP port on 127.0.0.1 (the OS picks; we close and hand it to the server). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function referencePaths () {
  const pkgJson = require.resolve('@y/websocket-server/package.json')
  const root = dirname(pkgJson)
  const version = JSON.parse(readFileSync(pkgJson, 'utf8')).version
  let yjsVersion = null
  for (const candidate of [join(root, 'node_modules/yjs/package.json'), require.resolve('yjs/package.json')]) {
    try { yjsVersion = JSON.parse(readFileSync(candidate, 'utf8')).version; break } catch {}
  }
  return { serverJs: join(root, 'src/server.js'), version, yjsVersion }
}

/**
 * @param {{ tandemBin: string, tandemEnv: Record<string,string>, referenceBin?: string, referenceEnv?: Record<string,string> }} opts
 * With `referenceBin`, the "reference" column is that Tandem binary (same settings as
 * `tandemBin`, plus `referenceEnv`): a before/after comparison of two builds, or of one build
 * with two settings (e.g. TANDEM_HISTORY=false), in one run.
 */
export function makeTargets ({ tandemBin, tandemEnv = {}, referenceBin, referenceEnv = {} }) {
  const baseEnv = { PATH: process.env.PATH || '/usr/bin:/bin', HOME: process.env.HOME || '/tmp', LANG: 'C.UTF-8' }
  const targets = makeTandemAndReference({ tandemBin, tandemEnv, baseEnv })
  if (referenceBin) {
    const tandem = targets[0]
    const baseline = makeTandemAndReference({ tandemBin: referenceBin, tandemEnv: { ...tandemEnv, ...referenceEnv }, baseEnv })[0]
    targets[1] = { ...baseline, name: 'reference', start: () => baseline.start.call(baseline, 'reference') }
    targets[0] = tandem
  }
  return targets
}

function makeTandemAndReference ({ tandemBin, tandemEnv, baseEnv }) {
  return [
    {
      name: 'tandem',
      describe () {
        let built = null
        try { built = statSync(tandemBin).mtime.toISOString() } catch {}
        return { binary: tandemBin, binaryModified: built, env: { ...this.fixedEnv('<tmp>'), ...tandemEnv } }
      },
      fixedEnv (dir) {
        return {
          TANDEM_BIND: '127.0.0.1:0',
          TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`,
          TANDEM_LOG_FORMAT: 'json',
          RUST_LOG: 'warn,tandem=info',
          // Per-connection rate limiting off: the reference server has none.
          TANDEM_MAX_MESSAGES_PER_SECOND: '0'
        }
      },
      unavailableReason () {
        try { accessSync(tandemBin, constants.X_OK) } catch { return `no executable at ${tandemBin} (set TANDEM_BIN)` }
        return null
      },
      async start (name = 'tandem') {
        const dir = mkdtempSync(join(tmpdir(), 'tandem-bench-'))
        const env = { ...baseEnv, ...this.fixedEnv(dir), ...tandemEnv }
        return launch({
          name,
          command: tandemBin,
          args: [],
          env,
          cwd: dir,
          readyRegex: /listening on http:\/\/127\.0\.0\.1:(\d+)/,
          url: (port, doc) => `ws://127.0.0.1:${port}/ws/${doc}`,
          cleanup: () => rmSync(dir, { recursive: true, force: true })
        })
      }
    },
    {
      name: 'reference',
      describe () {
        const p = referencePaths()
        return { package: `@y/websocket-server@${p.version}`, serverYjs: p.yjsVersion, node: process.version, persistence: 'none (in-memory)', command: `node ${p.serverJs}` }
      },
      unavailableReason () {
        try { accessSync(referencePaths().serverJs) } catch { return '@y/websocket-server is not installed (run npm ci in e2e/bench)' }
        return null
      },
      async start () {
        const { serverJs } = referencePaths()
        const port = await freePort()
        // server.js reads HOST (default 'localhost') and PORT (default 1234). Persistence
        // and the HTTP callback stay off (0.1.5 has no persistence; CALLBACK_URL unset).
        const env = { ...baseEnv, HOST: '127.0.0.1', PORT: String(port) }
        return launch({
          name: 'reference',
          command: process.execPath,
          args: [serverJs],
          env,
          cwd: dirname(serverJs),
          readyRegex: /running at '127\.0\.0\.1' on port (\d+)/,
          url: (p, doc) => `ws://127.0.0.1:${p}/${doc}`,
          cleanup: () => {}
        })
      }
    }
  ]
}

// Servers still running; killed if the driver exits abruptly (time limit, error, signal).
const live = new Set()
process.on('exit', () => { for (const { child, cleanup } of live) { try { child.kill('SIGKILL'); cleanup() } catch {} } })
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

/** Spawns a server, waits for its "ready" log line, returns a handle. */
function launch ({ name, command, args, env, cwd, readyRegex, url, cleanup, readyTimeoutMs = 20000 }) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    const entry = { child, cleanup }
    live.add(entry)
    child.on('exit', () => live.delete(entry))
    const tail = []
    let exitInfo = null
    let ready = false
    let warnLines = 0
    const exited = new Promise((res) => child.on('exit', (code, signal) => { exitInfo = { code, signal }; res(exitInfo) }))
    const timer = setTimeout(() => {
      if (!ready) {
        child.kill('SIGKILL')
        cleanup()
        reject(new Error(`${name}: not ready within ${readyTimeoutMs} ms. Log tail:\n${tail.join('\n')}`))
      }
    }, readyTimeoutMs)
    const onLine = (line) => {
      tail.push(line.length > 500 ? line.slice(0, 500) + '…' : line)
      if (tail.length > 40) tail.shift()
      if (/"level":"(WARN|ERROR)"|\b(WARN|ERROR)\b|Error/.test(line)) warnLines++
      if (!ready) {
        const m = readyRegex.exec(line)
        if (m) {
          ready = true
          clearTimeout(timer)
          const port = Number(m[1])
          resolve({
            name,
            pid: child.pid,
            port,
            url: (doc) => url(port, doc),
            alive: () => exitInfo === null,
            exitInfo: () => exitInfo,
            logTail: () => tail.slice(),
            warnLines: () => warnLines,
            async stop () {
              if (exitInfo === null) {
                child.kill('SIGTERM')
                const t = setTimeout(() => child.kill('SIGKILL'), 10000)
                await exited
                clearTimeout(t)
              }
              cleanup()
              return exitInfo
            }
          })
        }
      }
    }
    createInterface({ input: child.stdout }).on('line', onLine)
    createInterface({ input: child.stderr }).on('line', onLine)
    child.on('error', (err) => { clearTimeout(timer); cleanup(); reject(new Error(`${name}: spawn failed: ${err.message}`)) })
    exited.then(() => {
      if (!ready) {
        clearTimeout(timer)
        cleanup()
        reject(new Error(`${name}: exited (${JSON.stringify(exitInfo)}) before it was ready. Log tail:\n${tail.join('\n') || '(no output)'}`))
      }
    })
  })
}
