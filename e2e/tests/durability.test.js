// Durability: every update the server accepted survives `kill -9` (after the
// short group-commit grace the contract allows) and a graceful SIGTERM, which
// must also close every socket with 1001 and exit with status 0. Each test
// runs its own server; content is always checked from a FRESH client after the
// restart (the old providers are destroyed first so they cannot re-send).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Harness, assertSameText, snapshot, uniqueDoc, waitConverged } from '../lib/harness.js'
import { encodeUpdate } from '../lib/clients.js'
import { prng } from '../lib/prng.js'
import { sleep, waitUntil } from '../lib/wait.js'

/** Many small updates of every kind, each its own Yjs transaction (so its own message). */
function burstOfEdits (client, seed, n = 300) {
  const rnd = prng(seed)
  for (let i = 0; i < n; i++) {
    const t = client.text
    if (i % 7 === 6 && t.length > 3) t.delete(rnd.int(t.length - 2), 2)
    else t.insert(rnd.int(t.length + 1), rnd.word())
    if (i % 10 === 0) client.map.set(`k${i % 30}`, i)
    if (i % 15 === 0) client.array.push([i])
  }
}

/** Edit two documents, wait until observers have everything, return what must survive. */
async function editAndConfirm (h) {
  const docs = [uniqueDoc('durable'), uniqueDoc('durable')]
  const expected = []
  for (const [k, doc] of docs.entries()) {
    const editor = await h.client(doc)
    const observer = await h.client(doc)
    burstOfEdits(editor, 1000 + k)
    // The observer has seen every edit => the server accepted every edit.
    await waitConverged([editor, observer], { what: 'the observer to see every edit' })
    expected.push({ doc, content: snapshot(editor.doc), stateVector: Y.encodeStateVector(editor.doc) })
  }
  return expected
}

async function assertSurvived (h, expected) {
  for (const { doc, content, stateVector } of expected) {
    const fresh = await h.client(doc)
    assertSameText(snapshot(fresh.doc), content, `content of ${doc} after restart`)
    const probe = new Y.Doc()
    Y.applyUpdate(probe, Y.encodeStateAsUpdate(fresh.doc))
    assert.ok(Buffer.from(Y.encodeStateVector(probe)).equals(Buffer.from(stateVector)), `state vector of ${doc} after restart`)
  }
}

test('kill -9 a moment after edits loses nothing the server accepted', async (t) => {
  const h = new Harness()
  t.after(() => h.dispose())
  await h.start()
  const expected = await editAndConfirm(h)
  await sleep(100) // the contract allows a few ms for the group commit

  h.dropClients()
  const exit = await h.server.kill9()
  assert.equal(exit.signal, 'SIGKILL')
  await h.start()
  await assertSurvived(h, expected)
})

test('kill -9 in the middle of a stream of edits keeps everything an observer had seen 100 ms before', async (t) => {
  const h = new Harness()
  t.after(() => h.dispose())
  await h.start()
  const doc = uniqueDoc('stream')
  const editor = await h.client(doc)
  const observer = await h.client(doc)
  // ~600 appends per second, each its own update message (under the default rate limit).
  let n = 0
  const timer = setInterval(() => {
    for (let k = 0; k < 3; k++) editor.text.insert(editor.text.length, `${n++};`)
  }, 5)
  t.after(() => clearInterval(timer))
  await waitUntil(() => observer.text.length > 3000, { timeoutMs: 20_000, what: 'the stream to get going' })
  const seen = observer.text.toString()
  const seenVector = Y.decodeStateVector(Y.encodeStateVector(observer.doc))
  await sleep(100) // the group-commit grace; the stream goes on meanwhile

  await h.server.kill9()
  clearInterval(timer)
  h.dropClients()
  await h.start()
  const fresh = await h.client(doc)
  const restored = fresh.text.toString()
  assert.ok(restored.startsWith(seen),
    `after kill -9 the text has ${restored.length} chars and does not start with the ${seen.length} the observer had seen`)
  const restoredVector = Y.decodeStateVector(Y.encodeStateVector(fresh.doc))
  for (const [client, clock] of seenVector) {
    assert.ok((restoredVector.get(client) ?? 0) >= clock, `client ${client}: restored clock ${restoredVector.get(client)} < observed ${clock}`)
  }
})

test('SIGTERM closes every socket with 1001, exits 0, and keeps all data', async (t) => {
  const h = new Harness()
  t.after(() => h.dispose())
  await h.start()
  const expected = await editAndConfirm(h) // no grace pause: a graceful shutdown must flush
  const providers = [...h.clients]
  const raw = await h.raw(expected[0].doc)

  const exit = await h.server.stop({ signal: 'SIGTERM' })
  assert.deepEqual(exit, { code: 0, signal: null }, 'exit status after SIGTERM')
  const rawClose = await raw.waitClosed()
  assert.equal(rawClose.code, 1001, 'close code seen by a raw ws client')
  await waitUntil(() => providers.every((c) => c.closeEvents.length > 0), { what: "every provider's connection-close event" })
  for (const c of providers) {
    assert.equal(c.closeEvents[0].code, 1001, `close code seen by a provider on ${c.docName}`)
  }

  h.dropClients()
  await h.start()
  await assertSurvived(h, expected)
})

test('a restart with no clients in between keeps documents across several restarts', async (t) => {
  const h = new Harness()
  t.after(() => h.dispose())
  await h.start()
  const expected = await editAndConfirm(h)
  for (let i = 0; i < 2; i++) await h.restart({ signal: 'SIGTERM' })
  await assertSurvived(h, expected)

  // Edits after a restart append to the stored state, and survive kill -9 too.
  const doc = expected[0].doc
  const a = await h.client(doc)
  const b = await h.client(doc)
  a.text.insert(0, 'after-restart ')
  await waitConverged([a, b])
  const expectedAfter = [{ doc, content: snapshot(a.doc), stateVector: Y.encodeStateVector(a.doc) }]
  await sleep(100)
  await h.restart({ signal: 'SIGKILL' })
  await assertSurvived(h, expectedAfter)
})

test('providers reconnect to a server restarted on the same port and merge edits made while it was down', async (t) => {
  const h = new Harness()
  t.after(() => h.dispose())
  await h.start()
  const port = h.server.port
  const doc = uniqueDoc('reconnect')
  const a = await h.client(doc)
  const b = await h.client(doc)
  a.text.insert(0, 'before;')
  await waitConverged([a, b])

  await h.server.stop({ signal: 'SIGTERM' })
  await waitUntil(() => !a.provider.wsconnected && !b.provider.wsconnected, { what: 'providers to notice the shutdown' })
  a.text.insert(a.text.length, 'a-while-down;')
  b.map.set('b', 'while-down')

  // Same port, so the providers' automatic reconnects reach the new process.
  await h.start({ TANDEM_BIND: `127.0.0.1:${port}` })
  await waitUntil(() => a.provider.synced && b.provider.synced, { timeoutMs: 15_000, what: 'providers to reconnect and sync' })
  await waitConverged([a, b])
  assert.equal(a.text.toString(), 'before;a-while-down;')
  assert.equal(a.map.get('b'), 'while-down')
  const fresh = await h.client(doc)
  assert.equal(snapshot(fresh.doc), snapshot(a.doc))
})

test('an update stored before the update it depends on survives compaction and a restart', async (t) => {
  // Compaction is made to run after 2 stored updates; the test waits for the
  // server's (debug-level) "compacted" log line to know that it has run.
  const h = new Harness({ env: { TANDEM_COMPACT_AFTER_UPDATES: '2', RUST_LOG: 'info,tandem=debug' } })
  t.after(() => h.dispose())
  await h.start()
  const author = new Y.Doc()
  const updates = []
  author.on('update', (u) => updates.push(u))
  author.getText('text').insert(0, 'first;')
  author.getText('text').insert(6, 'second;') // depends on the first update
  const doc = uniqueDoc('pendingcompact')

  const other = await h.client(doc)
  const raw = await h.raw(doc)
  await raw.waitMessage(() => true, { what: 'sync step 1 from the server' })
  raw.send(encodeUpdate(updates[1])) // arrives first: Yjs keeps it pending
  for (let i = 0; i < 3; i++) other.map.set(`k${i}`, i) // unrelated updates, so there is a log to compact
  const observer = await h.client(doc)
  await waitUntil(() => observer.map.size === 3, { what: 'the unrelated updates to be accepted' })
  await h.server.waitForLog(/"compacted"/, { what: 'a compaction of the document (debug log "compacted")' })

  await h.restart()
  const raw2 = await h.raw(doc)
  await raw2.waitMessage(() => true, { what: 'sync step 1 from the server' })
  raw2.send(encodeUpdate(updates[0])) // the missing dependency arrives
  const fresh = await h.client(doc)
  await waitUntil(() => fresh.text.toString() === 'first;second;', {
    what: 'the dependent update to be there once its dependency arrived',
    describe: () => JSON.stringify(fresh.text.toString())
  })
  assert.deepEqual(fresh.map.toJSON(), { k0: 0, k1: 1, k2: 2 })
})
