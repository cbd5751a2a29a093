// What the side-by-side tools share: a Tandem binary started on a database in a folder,
// stopped with SIGTERM, a long uncompacted log written through one client, and the rounds
// that alternate which binary goes first.
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RawClient, TextAppender, marker } from '../lib/yclient.mjs'
import { sleep, tick } from '../lib/stats.mjs'

/** Compaction off: a log stays as long as it was written. */
export const NO_COMPACTION = { TANDEM_COMPACT_AFTER_UPDATES: '4000000000' }

/** Starts `bin` on `dir`/tandem.db on a free port; resolves to { p, port } once it listens. */
export function startTandem (bin, dir, env = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [], { env: { PATH: process.env.PATH, TANDEM_BIND: '127.0.0.1:0', TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`, TANDEM_MAX_MESSAGES_PER_SECOND: '0', RUST_LOG: 'warn,tandem=info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let buf = ''
    const on = (d) => { buf += d; const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(buf); if (m) resolve({ p, port: Number(m[1]) }) }
    p.stdout.on('data', on); p.stderr.on('data', on)
    p.on('exit', (c) => reject(new Error(`exit ${c}: ${buf.slice(-500)}`)))
  })
}

/** SIGTERM, then resolves when the process has exited. */
export function stopTandem (s) {
  return new Promise((resolve) => { s.p.removeAllListeners('exit'); s.p.on('exit', resolve); s.p.kill('SIGTERM') })
}

/** Writes `rows` small text updates to document `doc` as fast as the socket takes them. */
export async function writeLog (port, doc, rows, seed) {
  const w = new RawClient(`ws://127.0.0.1:${port}/ws/${doc}`)
  await w.connect()
  const a = new TextAppender(seed)
  for (let i = 0; i < rows; i++) {
    w.sendUpdate(a.next(marker(i)))
    if ((i & 255) === 0) { await tick(); while (w.ws.bufferedAmount > 1 << 20) await sleep(1) }
  }
  return w
}

/** [name, bin] pairs for 3 rounds, old first in rounds 1 and 3, new first in round 2. */
export function alternatingRounds (oldBin, newBin) {
  return [0, 1, 2].map((r) => r % 2 ? [['new', newBin], ['old', oldBin]] : [['old', oldBin], ['new', newBin]])
}

/** Starts `bin` on a copy of the database folder `base` (compaction off), lets it settle
 * for 0.5 s, runs `fn(server)`, then stops it and removes the copy. */
export async function onCopyOf (base, bin, fn) {
  const dir = mkdtempSync(join(tmpdir(), 'side-by-side-'))
  cpSync(base, dir, { recursive: true })
  const s = await startTandem(bin, dir, NO_COMPACTION)
  try {
    await sleep(500)
    return await fn(s)
  } finally {
    await stopTandem(s)
    rmSync(dir, { recursive: true, force: true })
  }
}
