// Webhooks once per cluster (SPEC §7): three real nodes on one PostgreSQL
// database and one Redis, one receiver verifying every delivery with the
// official `standardwebhooks` library (lib/receiver.js).
// - 200 new documents, each opened at the same moment on all three nodes,
//   give exactly 200 `document.created`, one per document;
// - writers on three nodes give one `document.updated` per debounce window,
//   with the updates of every node summed and the union of their users;
// - no `webhook-id` arrives twice (nothing crashed).
//
// Needs TANDEM_TEST_POSTGRES_URL and TANDEM_TEST_REDIS_URL; skipped, saying
// why, without them.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, clusterSkipReason } from '../lib/cluster.js'
import { connectRaw } from '../lib/clients.js'
import { Receiver } from '../lib/receiver.js'
import { uniqueDoc } from '../lib/harness.js'
import { sleep } from '../lib/wait.js'

const SKIP = clusterSkipReason()
const API_KEY = 'cluster-webhooks-test-key-0123456789'
const ENV = {
  TANDEM_API_KEY: API_KEY,
  TANDEM_WEBHOOK_ALLOW_PRIVATE: 'true',
  TANDEM_WEBHOOK_DEBOUNCE: '700ms',
  TANDEM_WEBHOOK_MAX_WAIT: '3s'
}

async function call (cluster, node, method, path, body) {
  const res = await cluster.api(node, path, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  assert.ok(res.ok, `${method} ${path} on node ${node}: HTTP ${res.status} ${text}`)
  return text ? JSON.parse(text) : null
}

/** An endpoint on node 0 for `events`, its secret given to the receiver; every node uses it within 1 s. */
async function endpoint (cluster, rx, events) {
  const created = await call(cluster, 0, 'POST', '/api/webhooks', { url: rx.url, events })
  rx.addSecret(created.secret)
  await sleep(1200)
  return created
}

function assertNoDuplicateIds (rx) {
  const seen = new Map()
  // The receiver answers 200 to everything here: one delivery per message.
  for (const r of rx.requests) seen.set(r.id, (seen.get(r.id) ?? 0) + 1)
  const twice = [...seen].filter(([, n]) => n > 1)
  assert.deepEqual(twice, [], `webhook-ids delivered more than once: ${JSON.stringify(twice.slice(0, 5))}`)
}

test('200 new documents opened at the same moment on three nodes give exactly 200 document.created, no webhook-id twice', { skip: SKIP, timeout: 120_000 }, async (t) => {
  const cluster = await Cluster.start({ nodes: 3, env: ENV })
  const rx = await new Receiver({ name: 'created' }).start()
  t.after(async () => { await rx.stop(); await cluster.dispose() })
  await endpoint(cluster, rx, ['document.created'])

  const prefix = uniqueDoc('born')
  const docs = Array.from({ length: 200 }, (_, i) => `${prefix}-${i}`)
  const token = (await call(cluster, 0, 'POST', '/api/tokens', { doc: `${prefix}-*`, perm: 'write', sub: 'opener' })).token
  // Three sockets per document, one per node, all opened at once.
  const sockets = await Promise.all(docs.flatMap((doc) => [0, 1, 2].map((node) =>
    connectRaw(`${cluster.wsUrl(node)}`, `${doc}?token=${token}`, 20_000))))
  t.after(() => { for (const s of sockets) s.close() })

  await rx.waitUntil(() => new Set(rx.ofType('document.created').map((r) => r.data.doc)).size >= docs.length,
    { timeoutMs: 30_000, what: `document.created for all ${docs.length} documents` })
  await sleep(2000) // any duplicate would be on its way by now
  const created = rx.ofType('document.created')
  const perDoc = new Map()
  for (const r of created) perDoc.set(r.data.doc, (perDoc.get(r.data.doc) ?? 0) + 1)
  const twice = [...perDoc].filter(([, n]) => n !== 1)
  assert.deepEqual(twice, [], 'documents whose document.created did not arrive exactly once')
  assert.equal(created.length, docs.length, 'document.created messages')
  assertNoDuplicateIds(rx)
  rx.assertClean()
})

test('writers on three nodes give one document.updated per window, with every node\'s updates summed and the union of users; no webhook-id twice', { skip: SKIP, timeout: 120_000 }, async (t) => {
  const cluster = await Cluster.start({ nodes: 3, env: ENV })
  const rx = await new Receiver({ name: 'updated' }).start()
  t.after(async () => { await rx.stop(); await cluster.dispose() })
  await endpoint(cluster, rx, ['document.updated'])

  const doc = uniqueDoc('tally')
  const users = ['ann', 'bob', 'cy']
  const writers = []
  for (let node = 0; node < 3; node++) {
    const token = (await call(cluster, node, 'POST', '/api/tokens', { doc, perm: 'write', sub: users[node] })).token
    writers.push(await cluster.client(node, doc, { params: { token } }))
  }
  // Wait for the document to settle (the writers' first sync writes nothing),
  // then three windows: in each, every writer edits a few times close together.
  await sleep(1500)
  const before = rx.ofType('document.updated', doc).length
  const perWindow = 4
  for (let window = 0; window < 3; window++) {
    for (let k = 0; k < perWindow; k++) {
      for (const w of writers) w.doc.getText('text').insert(0, `${window}.${k};`)
      await sleep(50)
    }
    // Quiet for longer than the debounce: the window closes.
    await rx.waitUntil(() => rx.ofType('document.updated', doc).length >= before + window + 1,
      { timeoutMs: 10_000, what: `document.updated for window ${window + 1}` })
    await sleep(300)
  }
  await sleep(1500)
  const events = rx.ofType('document.updated', doc).slice(before)
  assert.equal(events.length, 3, `document.updated messages for three windows: ${JSON.stringify(events.map((r) => r.data))}`)
  for (const [i, r] of events.entries()) {
    assert.equal(r.data.updates, perWindow * writers.length, `window ${i + 1}: updates counted across the three nodes (${JSON.stringify(r.data)})`)
    assert.deepEqual(r.data.users, [...users].sort(), `window ${i + 1}: users from every node`)
  }
  assertNoDuplicateIds(rx)
  rx.assertClean()
  for (const w of writers) w.destroy()
})
