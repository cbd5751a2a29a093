// Not part of the benchmark run: resident memory per idle room, two Tandem binaries side by
// side (a before and an after), in 3 rounds alternating which goes first. Each round starts
// the binary on a fresh database, opens ROOMS rooms with 2 raw clients each (100 connecting
// at a time, as scenario (b) does with its 2 x 50), waits 2 s and prints (RSS after - RSS
// before) / ROOMS and the server's thread count. Scenario (b) measures the same against the
// reference server; this is for a change to Tandem alone, without the reference's noise.
//
//   node tools/idle-room-memory.mjs OLD_BIN NEW_BIN [ROOMS=1000]
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RawClient } from '../lib/yclient.mjs'
import { rssKb } from '../lib/procstats.mjs'
import { sleep } from '../lib/stats.mjs'

const [oldBin, newBin, roomsArg] = process.argv.slice(2)
if (!oldBin || !newBin) {
  console.error('usage: node tools/idle-room-memory.mjs OLD_BIN NEW_BIN [ROOMS=1000]')
  process.exit(2)
}
const ROOMS = Number(roomsArg || 1000)
const IN_FLIGHT = 100

function start (bin, dir) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [], { env: { PATH: process.env.PATH, TANDEM_BIND: '127.0.0.1:0', TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`, TANDEM_MAX_MESSAGES_PER_SECOND: '0', RUST_LOG: 'warn,tandem=info' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let buf = ''
    const on = (d) => { buf += d; const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(buf); if (m) resolve({ p, port: Number(m[1]) }) }
    p.stdout.on('data', on); p.stderr.on('data', on)
    p.on('exit', (c) => reject(new Error(`exit ${c}: ${buf.slice(-500)}`)))
  })
}
const stop = (s) => new Promise((resolve) => { s.p.removeAllListeners('exit'); s.p.on('exit', resolve); s.p.kill('SIGTERM') })
const threads = (pid) => Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1])

for (let r = 0; r < 3; r++) {
  for (const [name, bin] of r % 2 ? [['new', newBin], ['old', oldBin]] : [['old', oldBin], ['new', newBin]]) {
    const dir = mkdtempSync(join(tmpdir(), 'idle-mem-'))
    const s = await start(bin, dir)
    await sleep(1000)
    const before = rssKb(s.p.pid)
    const clients = []
    for (let room = 0; room < ROOMS; room++) for (let k = 0; k < 2; k++) clients.push(new RawClient(`ws://127.0.0.1:${s.port}/ws/idle-${room}`))
    for (let i = 0; i < clients.length; i += IN_FLIGHT) {
      await Promise.all(clients.slice(i, i + IN_FLIGHT).map(async (c) => {
        await c.connect()
        while (c.tSynced === null) await sleep(2)
      }))
    }
    await sleep(2000)
    const after = rssKb(s.p.pid)
    console.log(`round ${r + 1} ${name}: ${((after - before) / ROOMS).toFixed(2)} KiB per room (RSS ${(before / 1024).toFixed(1)} -> ${(after / 1024).toFixed(1)} MiB, ${threads(s.p.pid)} threads)`)
    clients.forEach((c) => c.close())
    await stop(s)
    rmSync(dir, { recursive: true, force: true })
  }
}
