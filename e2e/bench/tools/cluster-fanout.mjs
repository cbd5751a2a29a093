// Fan-out across nodes (docs/cluster.md): one writer on node 1 and N observers of the same
// document split evenly over 1, 2 or 3 Tandem nodes sharing one fresh PostgreSQL database
// and one Redis. Reported for each node count and N: delivery latency p50/p99 to observers
// on the writer's node (same-node) and on the others (cross-node: committed, then through
// Redis), updates lost, and server CPU per delivered update on each node and in total.
// A fresh database and fresh nodes for every case.
//
// Then a join storm: a document of about 1 MB written through node 1, and 100 clients
// opening it at once on node 2, which does not hold it yet (it loads it from the
// database), beside 100 clients opening it on node 1, which does: time to sync, p50/p99.
//
//   node tools/cluster-fanout.mjs [--nodes 1,2,3] [--n 100,1000] [--rate 50] [--duration 5]
//   node tools/cluster-fanout.mjs --quick     # 1 and 2 nodes, N = 20, 1 s
//
// Needs TANDEM_BIN, TANDEM_TEST_POSTGRES_URL (a server where it may create databases) and
// TANDEM_TEST_REDIS_URL; without the last two it says it skipped. psql must be installed.

import { spawn, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { createInterface } from 'node:readline'
import { DocClient, Y, marker } from '../lib/yclient.mjs'
import { ClientWorker, drainReceipts, split } from '../lib/workers.mjs'
import { cpuMs } from '../lib/procstats.mjs'
import { now, sleep, summarize, fmt } from '../lib/stats.mjs'

const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1,2,3' },
    n: { type: 'string', default: '100,1000' },
    rate: { type: 'string', default: '50' },
    duration: { type: 'string', default: '5' },
    quick: { type: 'boolean', default: false },
    joiners: { type: 'string', default: '100' }
  }
})

const BIN = process.env.TANDEM_BIN || '/work/cargo-target/release/tandem'
const PG = process.env.TANDEM_TEST_POSTGRES_URL
const REDIS = process.env.TANDEM_TEST_REDIS_URL
if (!PG || !REDIS) {
  console.log('cluster-fanout: skipped (TANDEM_TEST_POSTGRES_URL and TANDEM_TEST_REDIS_URL are needed)')
  process.exit(0)
}

const nodeCounts = (opts.quick ? '1,2' : opts.nodes).split(',').map(Number)
const observerCounts = (opts.quick ? '20' : opts.n).split(',').map(Number)
const rate = Number(opts.rate)
const durationMs = (opts.quick ? 1 : Number(opts.duration)) * 1000
const warmupMs = opts.quick ? 200 : 1000

function psql (sql) {
  execFileSync('psql', [PG, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { stdio: ['ignore', 'ignore', 'inherit'] })
}

function withDatabase (name) {
  const url = new URL(PG)
  url.pathname = `/${name}`
  return url.toString()
}

// Nodes still running are killed if this process ends early (an error, a signal).
const children = new Set()
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL') } catch {} } })
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

/** Starts one node; resolves with { pid, port, stop } once it listens. */
function startNode (dbUrl, prefix) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, [], {
      env: {
        PATH: process.env.PATH,
        TANDEM_BIND: '127.0.0.1:0',
        TANDEM_DATABASE_URL: dbUrl,
        TANDEM_REDIS_URL: REDIS,
        TANDEM_REDIS_PREFIX: prefix,
        TANDEM_MAX_MESSAGES_PER_SECOND: '0',
        TANDEM_LOG_FORMAT: 'json',
        RUST_LOG: 'warn'.concat(',tandem=info')
      },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    children.add(child)
    child.once('exit', () => children.delete(child))
    const tail = []
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`node not ready:\n${tail.join('\n')}`)) }, 20000)
    const onLine = (line) => {
      tail.push(line); if (tail.length > 20) tail.shift()
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line)
      if (m) {
        clearTimeout(timer)
        const exited = new Promise((res) => child.once('exit', res))
        resolve({
          pid: child.pid,
          port: Number(m[1]),
          url: (doc) => `ws://127.0.0.1:${m[1]}/ws/${doc}`,
          async stop () { child.kill('SIGTERM'); await exited }
        })
      }
    }
    createInterface({ input: child.stdout }).on('line', onLine)
    createInterface({ input: child.stderr }).on('line', onLine)
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`node exited (${code}):\n${tail.join('\n')}`)) })
  })
}

async function runCase (k, n) {
  const db = `tandem_bench_${randomBytes(6).toString('hex')}`
  psql(`CREATE DATABASE ${db}`)
  const prefix = `bench-${db}:`
  const nodes = []
  const workers = []
  let writer = null
  try {
    // One node first (it runs the migrations), then the others.
    nodes.push(await startNode(withDatabase(db), prefix))
    for (let i = 1; i < k; i++) nodes.push(await startNode(withDatabase(db), prefix))
    const doc = 'fanout'
    // One load-generator process per node's observers (two when all are on one node).
    const groups = k === 1 ? [0, 0] : nodes.map((_, i) => i)
    for (let g = 0; g < groups.length; g++) workers.push(new ClientWorker(`observers${g + 1}`))
    const perGroup = split(Array.from({ length: n }, (_, i) => i), groups.length).map((p) => p.length)
    const opened = await Promise.all(workers.map((w, g) =>
      w.call('open', { urls: Array.from({ length: perGroup[g] }, () => nodes[groups[g]].url(doc)), concurrency: 50, timeoutMs: 60000 }, 90000)))
    const synced = opened.reduce((a, r) => a + r.synced, 0)
    const writerDoc = new Y.Doc()
    writer = new DocClient(nodes[0].url(doc), writerDoc)
    await writer.connect()
    const ytext = writerDoc.getText('text')
    const interval = 1000 / rate

    await Promise.all(workers.map((w) => w.call('record')))
    const warm = Math.round((rate * warmupMs) / 1000)
    for (let s = 0; s < warm; s++) { ytext.insert(ytext.length, marker(s)); await sleep(interval) }
    await drainReceipts(workers, warm * synced, { totalMs: 20000 })
    await Promise.all(workers.map((w) => w.call('record')))
    await sleep(300)

    const count = Math.round((rate * durationMs) / 1000)
    const sendTimes = new Float64Array(count)
    const cpu0 = nodes.map((s) => cpuMs(s.pid))
    const t0 = now()
    for (let seq = 0; seq < count; seq++) {
      const wait = t0 + seq * interval - now()
      if (wait > 0) await sleep(wait)
      sendTimes[seq] = now()
      ytext.insert(ytext.length, marker(seq))
    }
    await drainReceipts(workers, count * synced, { totalMs: 20000 })
    const cpu1 = nodes.map((s) => cpuMs(s.pid))
    const collected = await Promise.all(workers.map((w) => w.call('collect')))
    const same = []
    const cross = []
    let receipts = 0
    collected.forEach((r, g) => {
      receipts += r.seqs.length
      const into = groups[g] === 0 ? same : cross
      for (let i = 0; i < r.seqs.length; i++) into.push(r.times[i] - sendTimes[r.seqs[i]])
    })
    const cpu = cpu1.map((c, i) => c - cpu0[i])
    const total = cpu.reduce((a, b) => a + b, 0)
    return {
      nodes: k,
      n,
      synced,
      same: summarize(same),
      cross: cross.length ? summarize(cross) : null,
      lost: count * n - receipts,
      cpuPerDeliveryUs: cpu.map((c) => receipts ? (c * 1000) / receipts : null),
      totalCpuPerDeliveryUs: receipts ? (total * 1000) / receipts : null
    }
  } finally {
    if (writer) writer.close()
    await Promise.all(workers.map((w) => w.stop()))
    await Promise.all(nodes.map((s) => s.stop()))
    try { psql(`DROP DATABASE ${db} WITH (FORCE)`) } catch {}
  }
}


console.log(`cluster fan-out: writer on node 1, ${rate} inserts/s for ${durationMs / 1000} s after ${warmupMs / 1000} s of warm-up; binary ${BIN}`)
console.log('nodes      N  same p50  same p99  cross p50  cross p99  lost  CPU/delivery per node (µs)  total (µs)')
const results = []
for (const n of observerCounts) {
  for (const k of nodeCounts) {
    const r = await runCase(k, n)
    results.push(r)
    console.log([
      String(r.nodes).padStart(5), String(r.n).padStart(6),
      fmt(r.same.p50).padStart(9), fmt(r.same.p99).padStart(9),
      (r.cross ? fmt(r.cross.p50) : '-').padStart(10), (r.cross ? fmt(r.cross.p99) : '-').padStart(10),
      String(r.lost).padStart(5),
      r.cpuPerDeliveryUs.map((c) => fmt(c)).join(' / ').padStart(27),
      fmt(r.totalCpuPerDeliveryUs).padStart(11)
    ].join(' '))
  }
}
/** 100 joiners at once on the node that holds a ~1 MB document, then on one that does not. */
async function joinStorm (joiners) {
  const db = `tandem_bench_${randomBytes(6).toString('hex')}`
  psql(`CREATE DATABASE ${db}`)
  const prefix = `bench-${db}:`
  const nodes = []
  let writer = null
  try {
    nodes.push(await startNode(withDatabase(db), prefix))
    nodes.push(await startNode(withDatabase(db), prefix))
    const doc = 'storm'
    const writerDoc = new Y.Doc()
    writer = new DocClient(nodes[0].url(doc), writerDoc)
    await writer.connect()
    const ytext = writerDoc.getText('text')
    const chunk = 'x'.repeat(1000)
    for (let i = 0; i < (opts.quick ? 100 : 1000); i++) {
      ytext.insert(ytext.length, chunk)
      if (i % 50 === 0) await sleep(5)
    }
    const size = Y.encodeStateAsUpdate(writerDoc).length
    await sleep(500) // committed, and node 1's room holds it
    const out = []
    for (const [label, node] of [['holding it', nodes[0]], ['not holding it', nodes[1]]]) {
      const w = new ClientWorker('joiners')
      try {
        const r = await w.call('open', { urls: Array.from({ length: joiners }, () => node.url(doc)), concurrency: joiners, syncedMinBytes: size - 64, timeoutMs: 60000 }, 90000)
        const s = summarize(Array.from(r.syncMs))
        out.push({ label, synced: r.synced, p50: s.p50, p99: s.p99 })
      } finally {
        await w.stop()
      }
    }
    return { size, out }
  } finally {
    if (writer) writer.close()
    await Promise.all(nodes.map((s) => s.stop()))
    try { psql(`DROP DATABASE ${db} WITH (FORCE)`) } catch {}
  }
}

const joiners = opts.quick ? 20 : Number(opts.joiners)
const storm = await joinStorm(joiners)
console.log(`\njoin storm: ${joiners} clients at once on a ${(storm.size / 1024).toFixed(0)} KiB document`)
console.log('node               synced   sync p50 (ms)   sync p99 (ms)')
for (const r of storm.out) {
  console.log(`${r.label.padEnd(18)} ${String(r.synced).padStart(6)} ${fmt(r.p50).padStart(15)} ${fmt(r.p99).padStart(15)}`)
}

const lost = results.reduce((a, r) => a + r.lost, 0)
if (lost > 0) {
  console.error(`cluster-fanout: ${lost} deliveries lost`)
  process.exit(1)
}
