#!/usr/bin/env node
// Tandem load benchmark entry point: `npm run bench` (from e2e/bench, after `npm ci`).
// Runs every scenario (or --scenario x) against each target (Tandem and the reference
// y-websocket server, a fresh server process per scenario and target, one at a time),
// prints one table per scenario with each target's figure and the ratio
// tandem / reference, and writes everything to results/latest.json.
// A full run repeats each scenario in 3 rounds (alternating which server goes first)
// and reports each figure's median over them, with the spread of the per-round ratios;
// --quick runs 1 round.
//
//   node bench.mjs [--scenario a|b|c|d|e|f[,…]] [--quick] [--rounds K] [--targets tandem,reference]
//                  [--tandem-bin PATH] [--tandem-env KEY=VALUE …] [--out FILE]
//                  [--reference-bin PATH [--reference-env KEY=VALUE …]]
//                  [--reference-bin PATH]  (the reference column is this Tandem build instead)
//                  [--wait-idle SECONDS]  (wait, at most that long, for other load to stop)

import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { makeTargets } from './lib/servers.mjs'
import { cpuCount, clockTicks, machineCpu } from './lib/procstats.mjs'
import { fmt, now, sleep } from './lib/stats.mjs'
import { combineRounds, median, orderForRound, roundRatios } from './lib/rounds.mjs'
import * as a from './scenarios/a-fanout.mjs'
import * as b from './scenarios/b-idle-rooms.mjs'
import * as c from './scenarios/c-join-storm.mjs'
import * as d from './scenarios/d-trace-replay.mjs'
import * as e from './scenarios/e-sustained.mjs'
import * as f from './scenarios/f-awareness-crowd.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const SCENARIOS = [a, b, c, d, e, f]

const { values: args } = parseArgs({
  options: {
    scenario: { type: 'string', multiple: true },
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    targets: { type: 'string', default: 'tandem,reference' },
    'tandem-bin': { type: 'string', default: process.env.TANDEM_BIN || '/work/cargo-target/release/tandem' },
    'reference-bin': { type: 'string' },
    'tandem-env': { type: 'string', multiple: true, default: [] },
    'reference-env': { type: 'string', multiple: true, default: [] },
    out: { type: 'string', default: join(HERE, 'results', 'latest.json') },
    'wait-idle': { type: 'string', default: '0' },
    help: { type: 'boolean', short: 'h', default: false }
  }
})

if (args.help) {
  const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1)
  console.log(lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'))
  process.exit(0)
}

const wanted = (args.scenario || []).flatMap((s) => s.split(',')).map((s) => s.trim().toLowerCase()).filter(Boolean)
for (const w of wanted) if (!SCENARIOS.some((s) => s.id === w)) { console.error(`unknown scenario '${w}' (a, b, c, d, e, f)`); process.exit(2) }
const scenarios = wanted.length ? SCENARIOS.filter((s) => wanted.includes(s.id)) : SCENARIOS
const rounds = args.rounds === undefined ? (args.quick ? 1 : 3) : Number(args.rounds)
if (!Number.isInteger(rounds) || rounds < 1) { console.error(`--rounds expects a whole number of at least 1, got '${args.rounds}'`); process.exit(2) }

function envArgs (flag) {
  const env = {}
  for (const kv of args[flag]) {
    const i = kv.indexOf('=')
    if (i <= 0) { console.error(`--${flag} expects KEY=VALUE, got '${kv}'`); process.exit(2) }
    env[kv.slice(0, i)] = kv.slice(i + 1)
  }
  return env
}
const tandemEnv = envArgs('tandem-env')
const referenceEnv = envArgs('reference-env')
if (Object.keys(referenceEnv).length && !args['reference-bin']) { console.error('--reference-env needs --reference-bin (a Tandem build in the reference column)'); process.exit(2) }
const allTargets = makeTargets({ tandemBin: args['tandem-bin'], tandemEnv, referenceBin: args['reference-bin'], referenceEnv })
const targetNames = args.targets.split(',').map((s) => s.trim()).filter(Boolean)
for (const t of targetNames) if (!allTargets.some((x) => x.name === t)) { console.error(`unknown target '${t}'`); process.exit(2) }
const targets = allTargets.filter((t) => targetNames.includes(t.name))

// Hard stop for the whole run, whatever happens (every inner loop is bounded too).
const overallLimitMs = args.quick ? 5 * 60 * 1000 : rounds * 30 * 60 * 1000
setTimeout(() => { console.error(`bench: overall time limit (${overallLimitMs / 60000} min) reached, aborting`); process.exit(3) }, overallLimitMs).unref()

const log = (...xs) => console.error(...xs)
const tStart = now()

// ---- header ----------------------------------------------------------------------
let commit = null
try {
  commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: HERE, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  if (execFileSync('git', ['status', '--porcelain'], { cwd: HERE, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()) commit += ' (uncommitted changes)'
} catch {}
const machine = { cores: cpuCount(), cpu: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30), clkTck: clockTicks(), node: process.version }
console.log(`Tandem load benchmark${args.quick ? ' (--quick smoke run: short windows, smaller sizes; numbers are not meaningful)' : ''}`)
console.log(`rounds: ${rounds}${rounds > 1 ? ' (each figure is the median over the rounds; rows that check correctness show the worst round; the servers alternate which goes first)' : ''}`)
console.log(`machine: ${machine.cores} cores (${machine.cpu}), ${machine.memGiB} GiB; node ${machine.node}; driver and servers share this machine, all traffic on 127.0.0.1`)
const targetInfo = {}
for (const t of targets) {
  const why = t.unavailableReason()
  targetInfo[t.name] = { ...t.describe(), available: why === null, unavailableReason: why }
  console.log(`target ${t.name}: ${why ? `UNAVAILABLE (${why})` : JSON.stringify(t.describe())}`)
}
// Other load on the machine skews every figure (both servers and the driver share 2 cores).
async function machineBusyPct (ms) {
  const m0 = machineCpu()
  await sleep(ms)
  const m1 = machineCpu()
  return Math.round((1000 * (m1.busy - m0.busy)) / (m1.total - m0.total)) / 10
}
machine.busyBeforeStartPct = await machineBusyPct(1000)
const waitIdleMs = Number(args['wait-idle']) * 1000
if (machine.busyBeforeStartPct > 10 && waitIdleMs > 0) {
  console.log(`machine CPU busy ${machine.busyBeforeStartPct}%: waiting up to ${waitIdleMs / 1000} s for it to go idle …`)
  const until = now() + waitIdleMs
  while (now() < until && (machine.busyBeforeStartPct = await machineBusyPct(2000)) > 10) { /* bounded by `until` */ }
}
console.log(`machine CPU busy before start: ${machine.busyBeforeStartPct}% of all cores${machine.busyBeforeStartPct > 10 ? '  <-- WARNING: something else is running; figures will be skewed' : ''}`)
const NOTES = [
  'ratio = tandem / reference; "better" says which direction is good for that metric ((diag) rows are diagnostics, not figures of merit).',
  'Tandem runs with TANDEM_MAX_MESSAGES_PER_SECOND=0 (per-connection rate limiting off), because the reference server has no rate limiting.',
  'Tandem persists every update to SQLite (fresh database per server process); the reference server keeps documents in memory only (no persistence).',
  'Server CPU = utime+stime from /proc/<pid>/stat (all threads), resolution 1/CLK_TCK s; RSS = VmRSS sampled every 10 ms on a separate thread.'
]
for (const n of NOTES) console.log(`note: ${n}`)

// ---- run ---------------------------------------------------------------------------
const results = {
  meta: { startedAt: new Date().toISOString(), commit, quick: args.quick, rounds, machine, targets: targetInfo, notes: NOTES, argv: process.argv.slice(2) },
  scenarios: {}
}
let failures = 0

for (const sc of scenarios) {
  const desc = sc.describe(args.quick)
  console.log(`\n=== (${sc.id}) ${sc.title}\n    ${desc}`)
  const runs = Object.fromEntries(targets.map((t) => [t.name, []]))
  const baselines = []
  for (let r = 0; r < rounds; r++) {
    for (const t of orderForRound(targets, r)) {
      if (!targetInfo[t.name].available) { runs[t.name].push({ ok: false, error: `unavailable: ${targetInfo[t.name].unavailableReason}` }); continue }
      log(`[${sc.id}] ${t.name}${rounds > 1 ? ` (round ${r + 1}/${rounds})` : ''} …`)
      const t0 = now()
      try {
        const m = await sc.run(t, { quick: args.quick, log })
        runs[t.name].push({ ok: true, seconds: (now() - t0) / 1000, metrics: m.rows, notes: m.notes })
      } catch (err) {
        const error = String(err && err.message ? err.message : err)
        runs[t.name].push({ ok: false, seconds: (now() - t0) / 1000, error })
        log(`[${sc.id}] ${t.name} FAILED: ${error}`)
      }
    }
    if (sc.baseline) {
      log(`[${sc.id}] kernel floor …`)
      try {
        baselines.push(await sc.baseline(args.quick))
      } catch (err) {
        baselines.push({ unavailable: String(err && err.message ? err.message : err) })
      }
    }
  }
  const per = {}
  for (const t of targets) {
    per[t.name] = combineRounds(runs[t.name])
    if (!per[t.name].ok) failures++
  }
  const table = printTable(sc.id, per)
  const floor = printFloor(baselines, per)
  results.scenarios[sc.id] = { title: sc.title, description: desc, config: sc.config(args.quick), table, targets: per, ...(floor ? { floor } : {}) }
}

/** Prints scenario (a)'s kernel floor beside the servers' CPU per delivery, round by round. */
function printFloor (baselines, per) {
  const got = baselines.filter(Boolean)
  if (!got.length) return null
  const missing = got.find((b) => b.unavailable)
  if (missing) {
    console.log(`  kernel floor: not measured (${missing.unavailable})`)
    return { unavailable: missing.unavailable }
  }
  const cpuRounds = (name, n) => per[name]?.ok ? per[name].metrics.find((m) => m.key === `N=${n} server_cpu_per_delivery_us`)?.rounds ?? [] : []
  const range = (xs) => `${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}`
  const largest = got[0].largest
  const big = got.map((b) => b.perN[largest])
  const uring = big.map((b) => b.io_uring_us)
  const send = big.map((b) => b.send_us)
  const sendNode = big.map((b) => b.send_node_us)
  console.log(`  kernel floor (floor/send-floor.c: a C sender that only sends), µs of CPU per send, median of ${got.length} rounds (range):`)
  console.log(`    N=${largest}, read by 2 C processes: io_uring, one batch per round: ${fmt(median(uring))} (${range(uring)});  send(2) per socket: ${fmt(median(send))} (${range(send)})`)
  console.log(`    N=${largest}, read by 2 Node processes: send(2) per socket: ${fmt(median(sendNode))} (${range(sendNode)})`)
  const out = { largest, perN: {} }
  for (const n of Object.keys(got[0].perN).map(Number)) {
    const floor = got.map((b) => b.perN[n].io_uring_node_us)
    const tandemOverFloor = roundRatios(cpuRounds('tandem', n), floor).filter((x) => x !== null)
    const referenceOverFloor = roundRatios(cpuRounds('reference', n), floor).filter((x) => x !== null)
    console.log(`    N=${n}, read by 2 Node processes: io_uring, one batch per round: ${fmt(median(floor))} (${range(floor)})`)
    if (tandemOverFloor.length) console.log(`      tandem's CPU per delivery / that floor, per round: ${tandemOverFloor.map(fmt).join(', ')} (median ${fmt(median(tandemOverFloor))})`)
    if (referenceOverFloor.length) console.log(`      reference's CPU per delivery / that floor, per round: ${referenceOverFloor.map(fmt).join(', ')}`)
    out.perN[n] = { ioUringNodeReceiversUsRounds: floor, tandemOverFloorRounds: tandemOverFloor, referenceOverFloorRounds: referenceOverFloor }
  }
  Object.assign(out.perN[largest], { ioUringUsRounds: uring, sendUsRounds: send, sendNodeReceiversUsRounds: sendNode })
  return out
}

function printTable (id, per) {
  const names = ['tandem', 'reference']
  const rows = []
  const seen = new Map()
  for (const name of names) {
    const r = per[name]
    if (!r || !r.ok) continue
    for (const row of r.metrics) {
      if (!seen.has(row.key)) { seen.set(row.key, { label: row.label, unit: row.unit, better: row.better, v: {}, rounds: {} }); rows.push(row.key) }
      seen.get(row.key).v[name] = row.value
      seen.get(row.key).rounds[name] = row.rounds
    }
  }
  const header = ['metric', 'unit', 'tandem', 'reference', 'ratio', ...(rounds > 1 ? ['ratio per round'] : []), 'better']
  const table = []
  const lines = rows.map((k) => {
    const r = seen.get(k)
    const tv = r.v.tandem
    const rv = r.v.reference
    const ratio = typeof tv === 'number' && typeof rv === 'number' && rv !== 0 ? tv / rv : null
    const perRound = roundRatios(r.rounds.tandem, r.rounds.reference)
    table.push({
      key: k,
      label: r.label,
      unit: r.unit,
      better: r.better,
      tandem: tv ?? null,
      reference: rv ?? null,
      ratio: ratio === null ? null : Number(ratio.toPrecision(4)),
      tandemRounds: r.rounds.tandem ?? null,
      referenceRounds: r.rounds.reference ?? null,
      ratioRounds: perRound
    })
    const known = perRound.filter((x) => x !== null)
    const spread = known.length ? `${fmt(Math.min(...known))}-${fmt(Math.max(...known))}` : 'n/a'
    return [r.label, r.unit, fmt(tv), fmt(rv), ratio === null ? 'n/a' : `${fmt(ratio)}x`, ...(rounds > 1 ? [spread] : []), r.better || '']
  })
  const all = [header, ...lines]
  const w = header.map((_, i) => Math.max(...all.map((l) => String(l[i]).length)))
  const right = rounds > 1 ? 5 : 4
  const line = (l) => '  ' + l.map((cell, i) => (i >= 2 && i <= right ? String(cell).padStart(w[i]) : String(cell).padEnd(w[i]))).join('  ')
  console.log(line(header))
  console.log('  ' + w.map((n) => '-'.repeat(n)).join('  '))
  for (const l of lines) console.log(line(l))
  for (const name of names) {
    const r = per[name]
    if (!r) continue
    if (!r.ok) console.log(`  ${name}: FAILED: ${r.error.split('\n')[0]}`)
    for (const n of r.notes || []) console.log(`  ${name}: ${n}`)
  }
  return table
}

results.meta.finishedAt = new Date().toISOString()
results.meta.seconds = (now() - tStart) / 1000
mkdirSync(dirname(args.out), { recursive: true })
writeFileSync(args.out, JSON.stringify(results, null, 2) + '\n')
console.log(`\nwrote ${args.out} (${results.meta.seconds.toFixed(1)} s in all)${failures ? `; ${failures} target run(s) failed or were unavailable` : ''}`)
process.exit(failures ? 1 : 0)
