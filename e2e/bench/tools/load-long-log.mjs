// Not part of the benchmark run: how much memory and time a Tandem binary needs to load a
// document whose log was never compacted, two binaries side by side (a before and an after).
// It writes ROWS small updates to one document through NEW_BIN with compaction off (TANDEM_COMPACT_AFTER_UPDATES
// at its maximum), stops the server, then in 3 rounds (alternating which goes first) starts each
// binary on a copy of that database and measures one client's time to synced and the server's
// peak RSS above its RSS before the client came (sampled every 5 ms).
//
//   node tools/load-long-log.mjs OLD_BIN NEW_BIN [ROWS=300000]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RawClient, fetchState } from '../lib/yclient.mjs'
import { RssSampler, rssKb } from '../lib/procstats.mjs'
import { now, sleep } from '../lib/stats.mjs'
import { NO_COMPACTION, alternatingRounds, onCopyOf, startTandem, stopTandem, writeLog } from './side-by-side.mjs'

const [oldBin, newBin, rowsArg] = process.argv.slice(2)
const ROWS = Number(rowsArg || 300000)

const base = mkdtempSync(join(tmpdir(), 'lm-'))
{
  const s = await startTandem(newBin, base, NO_COMPACTION)
  const w = await writeLog(s.port, 'big', ROWS, 12345)
  await sleep(2000)
  const st = await fetchState(`ws://127.0.0.1:${s.port}/ws/big`, 60000)
  console.log(`wrote ${ROWS} updates; state ${st.length} bytes`)
  w.close()
  await stopTandem(s)
}
for (const [r, round] of alternatingRounds(oldBin, newBin).entries()) {
  for (const [name, bin] of round) {
    await onCopyOf(base, bin, async (s) => {
      const before = rssKb(s.p.pid)
      const sampler = new RssSampler(s.p.pid, 5)
      const c = new RawClient(`ws://127.0.0.1:${s.port}/ws/big`)
      const t0 = now()
      await c.connect()
      while (c.tSynced === null) await sleep(2)
      const ms = c.tSynced - t0
      await sleep(200)
      const peak = sampler.peakKb()
      await sampler.stop()
      console.log(`round ${r + 1} ${name}: synced in ${ms.toFixed(0)} ms, step 2 ${c.step2Bytes} bytes, peak RSS - before ${((peak - before) / 1024).toFixed(1)} MiB (before ${(before / 1024).toFixed(1)} MiB)`)
      c.close()
    })
  }
}
rmSync(base, { recursive: true, force: true })
