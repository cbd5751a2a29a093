// A Tandem binary started on a SQLite file in a folder of the tool's, on a
// free port, for the tools that stop and restart one server on the same
// database (recover-load, backlog-delay). Children are killed when the
// tool exits.

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

export const BIN = process.env.TANDEM_BIN || '/work/cargo-target/release/tandem'

const children = new Set()
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL') } catch {} } })
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

/** Starts the server on `${dir}/tandem.db`; resolves to `{ pid, port, stop() }` once it listens. */
export function startOnSqlite (dir) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, [], {
      cwd: dir,
      env: {
        PATH: process.env.PATH,
        TANDEM_BIND: '127.0.0.1:0',
        TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`,
        TANDEM_MAX_MESSAGES_PER_SECOND: '0',
        TANDEM_WEBHOOK_ALLOW_PRIVATE: 'true',
        TANDEM_LOG_FORMAT: 'json',
        RUST_LOG: 'warn,tandem=info',
        // Extra settings for the server, as JSON (e.g. '{"MALLOC_ARENA_MAX":"2"}').
        ...JSON.parse(process.env.BENCH_SERVER_ENV || '{}')
      },
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

