// Not part of the benchmark run: does the HTTP API wait while long documents load? Two
// Tandem binaries side by side (a before and an after). It writes DOCS documents of ROWS
// small updates each through NEW_BIN with compaction off, stops the server, then in 3
// rounds (alternating which binary goes first) starts each binary on a copy of that
// database, asks `GET /api/docs/big0` every 5 ms, opens all DOCS documents at once and
// prints the probe's latencies while they load and the time until every client is synced.
//
//   node tools/api-during-loads.mjs OLD_BIN NEW_BIN [DOCS=6] [ROWS=100000]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RawClient } from '../lib/yclient.mjs'
import { now, sleep } from '../lib/stats.mjs'
import { NO_COMPACTION, alternatingRounds, onCopyOf, startTandem, stopTandem, writeLog } from './side-by-side.mjs'

const [oldBin, newBin, docsArg, rowsArg] = process.argv.slice(2)
if (!oldBin || !newBin) {
  console.error('usage: node tools/api-during-loads.mjs OLD_BIN NEW_BIN [DOCS=6] [ROWS=100000]')
  process.exit(2)
}
const DOCS = Number(docsArg || 6)
const ROWS = Number(rowsArg || 100000)

const base = mkdtempSync(join(tmpdir(), 'loads-'))
{
  const s = await startTandem(newBin, base, NO_COMPACTION)
  for (let d = 0; d < DOCS; d++) {
    const w = await writeLog(s.port, `big${d}`, ROWS, 100 + d)
    await sleep(500)
    w.close()
  }
  await sleep(2000)
  await stopTandem(s)
  console.log(`wrote ${DOCS} documents of ${ROWS} updates`)
}
for (const [r, round] of alternatingRounds(oldBin, newBin).entries()) {
  for (const [name, bin] of round) {
    await onCopyOf(base, bin, async (s) => {
      const latencies = []
      let probing = true
      const probe = (async () => {
        while (probing) {
          const t = now()
          const res = await fetch(`http://127.0.0.1:${s.port}/api/docs/big0`)
          await res.arrayBuffer()
          latencies.push(now() - t)
          await sleep(5)
        }
      })()
      await sleep(200)
      const idle = latencies.length
      const t0 = now()
      const clients = Array.from({ length: DOCS }, (_, d) => new RawClient(`ws://127.0.0.1:${s.port}/ws/big${d}`))
      await Promise.all(clients.map((c) => c.connect()))
      while (clients.some((c) => c.tSynced === null)) await sleep(2)
      const synced = Math.max(...clients.map((c) => c.tSynced - t0))
      probing = false
      await probe
      const during = latencies.slice(idle).sort((x, y) => x - y)
      console.log(`round ${r + 1} ${name}: all ${DOCS} synced in ${synced.toFixed(0)} ms; API while loading: ${during.length} answers, p50 ${during[during.length >> 1].toFixed(1)} ms, max ${during.at(-1).toFixed(1)} ms`)
      clients.forEach((c) => c.close())
    })
  }
}
rmSync(base, { recursive: true, force: true })
