// Configured limits: TANDEM_MAX_CONNECTIONS and TANDEM_MAX_CONNECTIONS_PER_DOC
// (one more connection is closed with 1013 right after the upgrade, and a freed
// slot can be used again), TANDEM_MAX_DOCUMENT_BYTES (an update that would
// exceed it closes its socket with 4413 and is not stored) and
// TANDEM_MAX_MESSAGES_PER_SECOND (a flooding connection is closed with 1013,
// the others carry on). Each test runs its own server.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Harness, assertSameText, sameStateVector, snapshot, uniqueDoc, waitConverged } from '../lib/harness.js'
import { RawClient, encodeSyncStep1, encodeUpdate } from '../lib/clients.js'
import { prng } from '../lib/prng.js'
import { sleep, waitUntil, withTimeout } from '../lib/wait.js'

/** Open a raw socket and report what happened within `ms`: 'open' (still open) or { code }. */
async function connectOutcome (url, ms = 1000) {
  const raw = new RawClient(url)
  await withTimeout(raw.opened, 10_000, `upgrade of ${url}`)
  const outcome = await Promise.race([raw.closed, sleep(ms).then(() => 'open')])
  return { raw, outcome }
}

async function harness (t, env) {
  const h = new Harness({ env })
  t.after(() => h.dispose())
  await h.start()
  return h
}

test('TANDEM_MAX_CONNECTIONS: one more connection is closed with 1013; a freed slot is usable again', async (t) => {
  const h = await harness(t, { TANDEM_MAX_CONNECTIONS: '3' })
  const docs = [uniqueDoc('c'), uniqueDoc('c'), uniqueDoc('c')]
  const held = []
  for (const doc of docs) held.push(await h.raw(doc))
  const { raw: extra, outcome } = await connectOutcome(`${h.server.wsUrl}/${uniqueDoc('c')}`)
  extra.close()
  assert.equal(outcome?.code, 1013, `4th connection: expected close 1013, got ${JSON.stringify(outcome)}`)
  for (const r of held) assert.equal(r.ws.readyState, r.ws.OPEN, 'the first three must stay open')

  held[0].close()
  // The server may need a moment to notice the drop; then a new connection fits.
  const client = await waitUntil(async () => {
    const { raw, outcome } = await connectOutcome(`${h.server.wsUrl}/${docs[0]}`, 300)
    if (outcome === 'open') return raw
    raw.close()
    return null
  }, { timeoutMs: 10_000, intervalMs: 100, what: 'a freed connection slot' })
  client.close()
})

test('TANDEM_MAX_CONNECTIONS_PER_DOC: one more in the same doc is closed with 1013; other docs are unaffected', async (t) => {
  const h = await harness(t, { TANDEM_MAX_CONNECTIONS_PER_DOC: '2' })
  const doc = uniqueDoc('perdoc')
  const a = await h.client(doc)
  const b = await h.client(doc)
  const { raw: extra, outcome } = await connectOutcome(`${h.server.wsUrl}/${doc}`)
  extra.close()
  assert.equal(outcome?.code, 1013, `3rd connection to the doc: expected close 1013, got ${JSON.stringify(outcome)}`)

  const other = uniqueDoc('perdoc')
  const { raw: elsewhere, outcome: otherOutcome } = await connectOutcome(`${h.server.wsUrl}/${other}`)
  elsewhere.close()
  assert.equal(otherOutcome, 'open', 'a connection to another doc must be accepted')

  a.text.insert(0, 'still fine')
  await waitConverged([a, b])
  assert.equal(b.text.toString(), 'still fine')
})

test('TANDEM_MAX_DOCUMENT_BYTES: an update that would exceed it closes its socket with 4413 and is not stored', async (t) => {
  const limit = 64 * 1024
  const h = await harness(t, { TANDEM_MAX_DOCUMENT_BYTES: String(limit) })
  const doc = uniqueDoc('docsize')
  const a = await h.client(doc)
  const b = await h.client(doc)
  a.text.insert(0, 'small start;')
  await waitConverged([a, b])

  // A valid update from another Yjs client that inserts 128 KiB of text.
  const big = new Y.Doc()
  Y.applyUpdate(big, Y.encodeStateAsUpdate(a.doc))
  const before = Y.encodeStateVector(big)
  big.getText('text').insert(0, prng(3).word(128 * 1024))
  const raw = await h.raw(doc)
  await raw.waitMessage(() => true, { what: 'sync step 1 from the server' })
  raw.send(encodeUpdate(Y.encodeStateAsUpdate(big, before)))
  const { code } = await raw.waitClosed()
  assert.equal(code, 4413, 'close code for an update over the document limit')

  a.text.insert(a.text.length, 'after;')
  await waitConverged([a, b], { what: 'the room to carry on' })
  assert.equal(b.text.toString(), 'small start;after;')
  const fresh = await h.client(doc)
  assertSameText(fresh.text.toString(), 'small start;after;', 'stored text')
  assert.ok(sameStateVector(fresh.doc, a.doc), 'the oversized update must not be stored')
  await h.restart()
  const afterRestart = await h.client(doc)
  assert.equal(snapshot(afterRestart.doc), snapshot(a.doc))
})

test('TANDEM_MAX_MESSAGES_PER_SECOND: a flooding connection is closed with 1013; the others carry on', async (t) => {
  const h = await harness(t, { TANDEM_MAX_MESSAGES_PER_SECOND: '10' })
  const doc = uniqueDoc('rate')
  const a = await h.client(doc)
  const b = await h.client(doc)
  const raw = await h.raw(doc)
  await raw.waitMessage(() => true, { what: 'sync step 1 from the server' })
  // 5,000 valid sync step 1 messages at once: far beyond any burst allowance for
  // 10/s. (Sync step 1 is answered to the sender only. A flood of awareness
  // updates would be relayed, and the stock provider re-broadcasts every
  // awareness change it receives, so the peers would exceed the limit too.)
  const step1 = encodeSyncStep1(new Y.Doc())
  for (let i = 0; i < 5000 && raw.ws.readyState === raw.ws.OPEN; i++) raw.send(step1)
  const { code } = await raw.waitClosed()
  assert.equal(code, 1013, 'close code for a flooding connection')

  a.text.insert(0, 'unaffected')
  await waitConverged([a, b], { what: 'the other clients to keep syncing' })
  assert.deepEqual([a.closeEvents, b.closeEvents], [[], []], 'the other providers must stay connected')
})
