// Crash loop: stock y-websocket providers keep editing one document (its Text,
// Map and Array) while the server is killed with SIGKILL at random moments and
// restarted on the same data directory and the same port, so that the
// providers reconnect by themselves. After every restart all providers and the
// server must hold the same state (equal encoded state vectors, equal content)
// within a deadline. At the end every provider is destroyed, the server is
// killed once more with no client left, and a fresh client must receive
// exactly what they had converged on.
//
// Where in a cycle the kill lands (seeded, so a failing run can be replayed
// with CRASH_SEED, although the network's timing is not replayed):
//  - between bursts: a timer fires while the editors pause;
//  - mid-burst: inside a burst of edits, after some of its updates were sent
//    and before the rest (which the providers keep and re-send);
//  - during resync: as above, then a second kill a moment after the restart,
//    while the providers are reconnecting and syncing.
// Edits go on while the server is down and while it comes back up.
//
//   CRASH_CYCLES=100 node --test tests/crash-loop.test.js   (default 20 cycles)
//   CRASH_SEED=1234 …                                       (default: random, printed)

import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Harness, snapshot, truncate, uniqueDoc } from '../lib/harness.js'
import { prng } from '../lib/prng.js'
import { sleep, waitUntil } from '../lib/wait.js'

const CYCLES = positiveInt('CRASH_CYCLES', 20)
const SEED = process.env.CRASH_SEED ? Number(process.env.CRASH_SEED) : Math.floor(Math.random() * 2 ** 31)
const EDITORS = 4
/** Longest burst of edits (each its own update message) by one editor. */
const MAX_BURST = 30
/**
 * After a restart the stock provider is at most maxBackoffTime (2.5 s) away
 * from its next attempt; the rest is loading and syncing a small document.
 */
const CONVERGE_MS = 20_000
/** Keeps the document small, so that the cost of a cycle does not grow with the run. */
const TEXT_SOFT_MAX = 3000
const ARRAY_SOFT_MAX = 150

function positiveInt (name, fallback) {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`)
  return n
}

/** One random edit of the Text, the Map or the Array, in its own transaction. */
function edit (client, rnd) {
  const { text, map, array } = client
  const r = rnd.next()
  if (r < 0.45) {
    if (text.length > TEXT_SOFT_MAX || (r < 0.1 && text.length > 10)) {
      const at = rnd.int(text.length - 1)
      text.delete(at, 1 + rnd.int(Math.min(12, text.length - at - 1)))
    } else {
      text.insert(rnd.int(text.length + 1), `${rnd.word()} `)
    }
  } else if (r < 0.7) {
    const key = `k${rnd.int(24)}`
    if (r < 0.5 && map.has(key)) map.delete(key)
    else map.set(key, rnd.pick([rnd.int(1000), rnd.word(), { n: rnd.int(100), w: rnd.word() }, [rnd.int(10), rnd.word()], rnd.next() < 0.5]))
  } else {
    if (array.length > ARRAY_SOFT_MAX || (r < 0.8 && array.length > 0)) {
      const at = rnd.int(array.length)
      array.delete(at, 1 + rnd.int(Math.min(5, array.length - at)))
    } else {
      array.insert(rnd.int(array.length + 1), [rnd.pick([rnd.int(1000), rnd.word()])])
    }
  }
}

/** State vector as "client:clock" pairs, sorted: readable in a failure message. */
function showVector (doc) {
  return [...Y.decodeStateVector(Y.encodeStateVector(doc))].sort((a, b) => a[0] - b[0]).map(([c, k]) => `${c}:${k}`).join(' ')
}

function sameVector (a, b) {
  return Buffer.from(Y.encodeStateVector(a)).equals(Buffer.from(Y.encodeStateVector(b)))
}

/** Where two canonical snapshots first differ, with context. */
function firstDifference (a, b) {
  let i = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  return `at ${i}: …${JSON.stringify(a.slice(Math.max(0, i - 30), i + 30))}… vs …${JSON.stringify(b.slice(Math.max(0, i - 30), i + 30))}…`
}

test(`crash loop: ${CYCLES} cycles of SIGKILL at a random moment while ${EDITORS} stock providers edit; they converge after every restart and the result survives a last kill`, { timeout: 120_000 + CYCLES * 20_000 }, async (t) => {
  const rnd = prng(SEED)
  const h = new Harness()
  t.after(() => h.dispose())
  await h.start()
  const port = h.server.port
  const doc = uniqueDoc('crashloop')
  const started = Date.now()

  const editors = []
  for (let i = 0; i < EDITORS; i++) editors.push(await h.client(doc))
  const written = { updates: 0, bytes: 0 }
  for (const e of editors) {
    e.doc.on('update', (update, origin) => {
      if (origin !== e.provider) { written.updates++; written.bytes += update.length }
    })
  }

  // ---- the editing loop: random bursts by random editors until told to stop ----
  let editing = false
  let loop = Promise.resolve()
  let midBurstKill = null // armed: called once, inside the next burst, between two of its edits
  const startEditing = () => {
    editing = true
    loop = (async () => {
      while (editing) {
        const e = rnd.pick(editors)
        const n = 1 + rnd.int(MAX_BURST)
        const killAt = midBurstKill && n >= 3 ? 1 + rnd.int(n - 2) : -1
        for (let i = 0; i < n; i++) {
          if (i === killAt) { const kill = midBurstKill; midBurstKill = null; kill() }
          edit(e, rnd)
        }
        // a cursor move now and then, as an editor's awareness would carry
        if (rnd.next() < 0.1) e.awareness.setLocalStateField('cursor', { at: e.text.length })
        await sleep(5 + rnd.int(30))
      }
    })()
  }
  const stopEditing = async () => { editing = false; await loop }

  /** SIGKILL now (synchronously), resolving once the process is gone. */
  const killNow = () => {
    kills++
    const server = h.server
    server.proc.kill('SIGKILL')
    return server.exited
  }
  const restart = async () => {
    const t0 = Date.now()
    await h.start({}, { port })
    startTimes.push(Date.now() - t0)
  }

  /** The server's copy of the document, through the API, as a Y.Doc. */
  const serverDoc = async () => {
    const res = await fetch(`${h.server.httpUrl}/api/docs/${doc}/update`, { signal: AbortSignal.timeout(5000) })
    if (res.status !== 200) return { error: `GET …/update answered ${res.status}` }
    const d = new Y.Doc()
    Y.applyUpdate(d, new Uint8Array(await res.arrayBuffer()))
    return { doc: d }
  }

  /** Every provider synced, all with the server's state vector and content. */
  const waitAllConverged = async (what) => {
    const t0 = Date.now()
    let last = null
    await waitUntil(async () => {
      if (!editors.every((e) => e.provider.synced)) return false
      const content = snapshot(editors[0].doc)
      if (!editors.every((e) => sameVector(e.doc, editors[0].doc) && snapshot(e.doc) === content)) return false
      last = await serverDoc().catch((err) => ({ error: err.message }))
      return last.doc && sameVector(last.doc, editors[0].doc) && snapshot(last.doc) === content
    }, {
      timeoutMs: CONVERGE_MS,
      intervalMs: 25,
      what: `${what} (seed ${SEED})`,
      describe: () => {
        const ref = snapshot(editors[0].doc)
        const lines = editors.map((e, i) => {
          const s = snapshot(e.doc)
          return `  provider #${i} (client ${e.doc.clientID}) connected=${e.provider.wsconnected} synced=${e.provider.synced}\n` +
            `    state vector ${showVector(e.doc)}\n    content ${s === ref ? 'same as #0' : `differs from #0 ${firstDifference(s, ref)}`}`
        })
        const server = last?.doc
          ? `  server: state vector ${showVector(last.doc)}; content ${snapshot(last.doc) === ref ? 'same as #0' : `differs from #0 ${firstDifference(snapshot(last.doc), ref)}`}`
          : `  server: ${last?.error ?? 'not asked (the providers did not agree yet)'}`
        return `\n${lines.join('\n')}\n${server}\n  provider #0 content: ${truncate(ref)}\n--- server log ---\n${h.server.logs(20)}`
      }
    })
    return Date.now() - t0
  }

  let kills = 0
  const startTimes = []
  const convergeTimes = []
  const modes = { 'between bursts': 0, 'mid-burst': 0, 'during resync': 0 }

  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    const r = rnd.next()
    const mode = r < 0.45 ? 'between bursts' : r < 0.8 ? 'mid-burst' : 'during resync'
    modes[mode]++
    startEditing()
    await sleep(50 + rnd.int(1200))
    if (mode === 'between bursts') {
      await killNow()
    } else {
      const gone = new Promise((resolve) => { midBurstKill = () => resolve(killNow()) })
      await gone
    }
    await sleep(rnd.int(600)) // the editors go on while the server is down
    await restart()
    if (mode === 'during resync') {
      await sleep(rnd.int(400)) // the providers are reconnecting and syncing
      await killNow()
      await restart()
    }
    await sleep(rnd.int(400)) // and while they reconnect
    await stopEditing()
    convergeTimes.push(await waitAllConverged(`cycle ${cycle}/${CYCLES} (${mode}): every provider and the server to hold the same state`))
  }

  // ---- the end: no client left, one more kill, and a fresh client gets it all ----
  // An update through the HTTP API is durable before its 2xx, and the server
  // commits updates in the order its rooms applied them: once this one is
  // answered, everything the room held before it is in the database too.
  const fence = new Y.Doc()
  Y.applyUpdate(fence, Y.encodeStateAsUpdate(editors[0].doc))
  const before = Y.encodeStateVector(fence)
  fence.getMap('map').set('end', `after ${CYCLES} cycles`)
  const res = await fetch(`${h.server.httpUrl}/api/docs/${doc}/update`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: Y.encodeStateAsUpdate(fence, before)
  })
  assert.equal(res.status, 200, `POST …/update: ${await res.text()}`)
  await waitAllConverged('the providers and the server to hold the last update (sent through the API)')
  const expected = { content: snapshot(editors[0].doc), vector: Y.encodeStateVector(editors[0].doc), shown: showVector(editors[0].doc) }

  for (const e of editors) e.destroy()
  h.clients.clear()
  await killNow()
  await restart()
  const fresh = await h.client(doc)
  const got = snapshot(fresh.doc)
  assert.ok(got === expected.content, `content after the last kill differs from the converged content ${firstDifference(got, expected.content)} (seed ${SEED})`)
  assert.ok(Buffer.from(Y.encodeStateVector(fresh.doc)).equals(Buffer.from(expected.vector)),
    `state vector after the last kill: ${showVector(fresh.doc)}, converged: ${expected.shown} (seed ${SEED})`)
  assert.ok(written.updates > CYCLES, `the editors wrote ${written.updates} updates`)

  const sorted = [...convergeTimes].sort((a, b) => a - b)
  const summary = `crash loop: ${CYCLES} cycles (${Object.entries(modes).map(([m, n]) => `${n} ${m}`).join(', ')}), ${kills} SIGKILLs, ` +
    `${((Date.now() - started) / 1000).toFixed(1)} s, ${written.updates} updates written (${(written.bytes / 1024).toFixed(0)} KiB) by ${EDITORS} providers; ` +
    `converged after restart in median ${sorted[sorted.length >> 1]} ms, max ${sorted.at(-1)} ms; server start median ${[...startTimes].sort((a, b) => a - b)[startTimes.length >> 1]} ms; ` +
    `final document: text ${fresh.text.length} chars, map ${fresh.map.size} keys, array ${fresh.array.length} items; seed ${SEED}`
  t.diagnostic(summary)
})
