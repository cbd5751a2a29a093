// Not part of the benchmark run: resident memory per idle room, two Tandem binaries side by
// side (a before and an after), in 3 rounds alternating which goes first. Each round starts
// the binary on a fresh database, opens ROOMS rooms with 2 raw clients each (100 connecting
// at a time, as scenario (b) does with its 2 x 50), waits 2 s and prints (RSS after - RSS
// before) / ROOMS and the server's thread count. Scenario (b) measures the same against the
// reference server; this is for a change to Tandem alone, without the reference's noise.
//
//   node tools/idle-room-memory.mjs OLD_BIN NEW_BIN [ROOMS=1000]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RawClient } from '../lib/yclient.mjs'
import { rssKb } from '../lib/procstats.mjs'
import { sleep } from '../lib/stats.mjs'
import { alternatingRounds, startTandem, stopTandem } from './side-by-side.mjs'

const [oldBin, newBin, roomsArg] = process.argv.slice(2)
if (!oldBin || !newBin) {
  console.error('usage: node tools/idle-room-memory.mjs OLD_BIN NEW_BIN [ROOMS=1000]')
  process.exit(2)
}
const ROOMS = Number(roomsArg || 1000)
const IN_FLIGHT = 100

const threads = (pid) => Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1])

for (const [r, round] of alternatingRounds(oldBin, newBin).entries()) {
  for (const [name, bin] of round) {
    const dir = mkdtempSync(join(tmpdir(), 'idle-mem-'))
    const s = await startTandem(bin, dir)
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
    await stopTandem(s)
    rmSync(dir, { recursive: true, force: true })
  }
}
