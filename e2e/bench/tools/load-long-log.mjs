// Not part of the benchmark run: how much memory and time a Tandem binary needs to load a
// document whose log was never compacted, two binaries side by side (a before and an after).
// It writes ROWS small updates to one document through NEW_BIN with compaction off (TANDEM_COMPACT_AFTER_UPDATES
// at its maximum), stops the server, then in 3 rounds (alternating which goes first) starts each
// binary on a copy of that database and measures one client's time to synced and the server's
// peak RSS above its RSS before the client came (sampled every 5 ms).
//
//   node tools/load-long-log.mjs OLD_BIN NEW_BIN [ROWS=300000]
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RawClient, TextAppender, fetchState, marker } from '../lib/yclient.mjs'
import { RssSampler, rssKb } from '../lib/procstats.mjs'
import { now, sleep, tick } from '../lib/stats.mjs'

const [oldBin, newBin, rowsArg] = process.argv.slice(2)
const ROWS = Number(rowsArg || 300000)

function start (bin, dir) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [], { env: { PATH: process.env.PATH, TANDEM_BIND: '127.0.0.1:0', TANDEM_DATABASE_URL: `sqlite://${dir}/tandem.db`, TANDEM_COMPACT_AFTER_UPDATES: '4000000000', TANDEM_MAX_MESSAGES_PER_SECOND: '0', RUST_LOG: 'warn,tandem=info' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let buf = ''
    const on = (d) => { buf += d; const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(buf); if (m) resolve({ p, port: Number(m[1]) }) }
    p.stdout.on('data', on); p.stderr.on('data', on)
    p.on('exit', (c) => reject(new Error(`exit ${c}: ${buf.slice(-500)}`)))
  })
}
const stop = (s) => new Promise((resolve) => { s.p.removeAllListeners('exit'); s.p.on('exit', resolve); s.p.kill('SIGTERM') })

const base = mkdtempSync(join(tmpdir(), 'lm-'))
{
  const s = await start(newBin, base)
  const w = new RawClient(`ws://127.0.0.1:${s.port}/ws/big`)
  await w.connect()
  const a = new TextAppender(12345)
  for (let i = 0; i < ROWS; i++) {
    w.sendUpdate(a.next(marker(i)))
    if ((i & 255) === 0) { await tick(); while (w.ws.bufferedAmount > 1 << 20) await sleep(1) }
  }
  await sleep(2000)
  const st = await fetchState(`ws://127.0.0.1:${s.port}/ws/big`, 60000)
  console.log(`wrote ${ROWS} updates; state ${st.length} bytes`)
  w.close()
  await stop(s)
}
for (let r = 0; r < 3; r++) {
  for (const [name, bin] of r % 2 ? [['new', newBin], ['old', oldBin]] : [['old', oldBin], ['new', newBin]]) {
    const dir = mkdtempSync(join(tmpdir(), 'lm-run-'))
    cpSync(base, dir, { recursive: true })
    const s = await start(bin, dir)
    await sleep(500)
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
    await stop(s)
    rmSync(dir, { recursive: true, force: true })
  }
}
rmSync(base, { recursive: true, force: true })
