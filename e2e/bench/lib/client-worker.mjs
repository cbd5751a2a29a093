// A load-generator child process. The parent (bench.mjs, through lib/workers.mjs) forks
// one or two of these and drives them over IPC. Each holds many RawClients (or one
// DocClient observer) so that client work runs outside the parent's event loop and can
// use the second core. All traffic goes to the 127.0.0.1 URLs the parent sends.
//
// Commands (request { id, cmd, ...args } -> reply { id, result } or { id, error }):
//   open        connect RawClients to urls (optionally from several local addresses), optionally
//               all at one agreed instant; wait until synced
//   record      start recording "[#seq]" update receipts (seq, receive time, client index)
//   count       receipts so far and unexpected closes
//   progress    push { type: 'progress', receipts } messages every intervalMs while receipts change
//   collect     recorded receipts as typed arrays, plus this process's CPU use since `record`
//   docObserver connect one Y.Doc observer (DocClient) to a url
//   awaitClock  wait until the Y.Doc observer has clock >= target for a client id; report when
//   openRaw     connect `count` plain TCP sockets to 127.0.0.1:port that read and discard
//               (the receivers of the kernel-floor program, lib/floor.mjs), from
//               `localAddresses` in turn when given
//   closeAll    close every client
//   exit        exit the process

import { connect } from 'node:net'
import { RawClient, DocClient, scanMarkers, Y } from './yclient.mjs'
import { now, sleep } from './stats.mjs'

const clients = []
const rawSockets = []
let rawBytes = 0
let recording = false
let seqs = []
let times = []
let owners = []
let dupes = 0
let seen = [] // per client: Uint8Array bitmap of seen seqs
let unexpectedCloses = 0
let closeCodes = {}
let cpuAtRecord = null
let tRecord = null
let progressTimer = null

let observer = null // { doc, client, lastApply, applies }

function markSeen (ci, seq) {
  let bm = seen[ci]
  if (!bm || seq >= bm.length) {
    const grown = new Uint8Array(Math.max(1024, (seq + 1) * 2))
    if (bm) grown.set(bm)
    bm = seen[ci] = grown
  }
  if (bm[seq]) { dupes++; return false }
  bm[seq] = 1
  return true
}

function makeClient (url, ci, syncedMinBytes, localAddress) {
  return new RawClient(url, {
    syncedMinBytes,
    localAddress,
    onUpdate: (buf, start, end, t) => {
      if (!recording) return
      scanMarkers(buf, start, end, (seq) => {
        if (markSeen(ci, seq)) { seqs.push(seq); times.push(t); owners.push(ci) }
      })
    },
    onClose: (c) => {
      if (!c.expectedClose) {
        unexpectedCloses++
        closeCodes[c.closeCode] = (closeCodes[c.closeCode] || 0) + 1
      }
    }
  })
}

async function open ({ urls, concurrency = 64, startAt = null, syncedMinBytes = 0, timeoutMs = 60000, localAddresses = null }) {
  const base = clients.length
  const from = (k) => (localAddresses ? localAddresses[(base + k) % localAddresses.length] : undefined)
  const batch = urls.map((u, k) => makeClient(u, base + k, syncedMinBytes, from(k)))
  clients.push(...batch)
  if (startAt !== null) {
    const wait = startAt - now()
    if (wait > 2) await sleep(wait - 2)
    while (now() < startAt) { /* spin the last ms so both workers start together */ }
  }
  const deadline = now() + timeoutMs
  const errors = []
  let next = 0
  const lane = async () => {
    while (next < batch.length && now() < deadline) {
      const c = batch[next++]
      try { await c.connect() } catch (err) { if (errors.length < 5) errors.push(err.message) }
    }
  }
  const lanes = []
  const n = Math.min(batch.length, concurrency === Infinity || concurrency === null ? batch.length : concurrency)
  for (let i = 0; i < n; i++) lanes.push(lane())
  await Promise.all(lanes)
  // wait for every opened client's sync step 2, bounded
  while (now() < deadline && batch.some((c) => c.tOpen !== null && c.tSynced === null && !c.closed)) await sleep(5)
  const synced = batch.filter((c) => c.tSynced !== null)
  return {
    requested: batch.length,
    opened: batch.filter((c) => c.tOpen !== null).length,
    synced: synced.length,
    failed: batch.length - synced.length,
    errors,
    // per synced client: time from connect start to sync step 2 received, and its size
    syncMs: Float64Array.from(synced.map((c) => c.tSynced - c.tStart)),
    openMs: Float64Array.from(synced.map((c) => c.tOpen - c.tStart)),
    step2Bytes: Float64Array.from(synced.map((c) => c.step2Bytes)),
    firstStart: Math.min(...batch.map((c) => c.tStart ?? Infinity)),
    lastSynced: Math.max(...synced.map((c) => c.tSynced))
  }
}

const handlers = {
  open,
  record () {
    seqs = []; times = []; owners = []; dupes = 0; seen = []
    recording = true
    cpuAtRecord = process.cpuUsage()
    tRecord = now()
    return true
  },
  count () {
    return { receipts: seqs.length, unexpectedCloses, closeCodes, dupes }
  },
  progress ({ intervalMs = 5 }) {
    let last = -1
    clearInterval(progressTimer)
    progressTimer = setInterval(() => {
      if (seqs.length !== last) { last = seqs.length; process.send({ type: 'progress', receipts: last, t: now() }) }
    }, intervalMs)
    return true
  },
  collect () {
    clearInterval(progressTimer)
    recording = false
    const cpu = process.cpuUsage(cpuAtRecord || undefined)
    return {
      seqs: Int32Array.from(seqs),
      times: Float64Array.from(times),
      owners: Int32Array.from(owners),
      dupes,
      unexpectedCloses,
      closeCodes,
      cpuMs: (cpu.user + cpu.system) / 1000,
      wallMs: tRecord === null ? null : now() - tRecord
    }
  },
  async docObserver ({ url }) {
    const doc = new Y.Doc()
    observer = { doc, lastApply: null, applies: 0, client: null, cpu0: null, t0: null }
    observer.client = new DocClient(url, doc, {
      onRemoteUpdate: (t) => { observer.lastApply = now(); observer.applies++ }
    })
    await observer.client.connect()
    observer.cpu0 = process.cpuUsage()
    observer.t0 = now()
    return { synced: true }
  },
  async awaitClock ({ clientId, clock, timeoutMs }) {
    const deadline = now() + timeoutMs
    const reached = () => Y.getState(observer.doc.store, clientId) >= clock
    while (!reached() && now() < deadline && !observer.client.closed) await sleep(2)
    const cpu = process.cpuUsage(observer.cpu0)
    return {
      reached: reached(),
      tDone: reached() ? observer.lastApply : null,
      applies: observer.applies,
      closed: observer.client.closed,
      closeCode: observer.client.closeCode,
      text: observer.doc.getText('text').toString(),
      cpuMs: (cpu.user + cpu.system) / 1000,
      wallMs: now() - observer.t0
    }
  },
  async openRaw ({ port, count, localAddresses = null }) {
    const opened = []
    for (let i = 0; i < count; i++) {
      opened.push(new Promise((resolve, reject) => {
        const localAddress = localAddresses ? localAddresses[i % localAddresses.length] : undefined
        const s = connect({ port, host: '127.0.0.1', noDelay: true, localAddress }, () => resolve())
        s.on('data', (d) => { rawBytes += d.length })
        s.on('error', reject)
        rawSockets.push(s)
      }))
    }
    await Promise.all(opened)
    return { connected: count }
  },
  rawBytes () {
    return rawBytes
  },
  closeAll () {
    for (const s of rawSockets) s.destroy()
    rawSockets.length = 0
    for (const c of clients) c.close()
    if (observer) observer.client.close()
    return true
  },
  exit () {
    setTimeout(() => process.exit(0), 10)
    return true
  }
}

process.on('message', async (msg) => {
  const fn = handlers[msg.cmd]
  try {
    if (!fn) throw new Error(`unknown command ${msg.cmd}`)
    const result = await fn(msg.args || {})
    process.send({ id: msg.id, result })
  } catch (err) {
    process.send({ id: msg.id, error: String(err && err.stack ? err.stack : err) })
  }
})
process.on('disconnect', () => process.exit(0))
