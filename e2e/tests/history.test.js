// History and versions (SPEC §9) with the stock y-websocket provider and the
// release binary: a restore reaches every open provider live (no reconnect)
// and survives `kill -9` right after its 2xx; a named version survives
// `kill -9` right after its 201; versions outlive compaction and restarts.
// The server runs in dev mode (no API key), as a developer's would.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Harness, uniqueDoc, waitConverged } from '../lib/harness.js'
import { waitUntil } from '../lib/wait.js'

async function api (h, method, path, body) {
  const res = await fetch(`${h.server.httpUrl}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  let json = null
  try { json = JSON.parse(text) } catch {}
  return { status: res.status, json, text }
}

async function named (h, doc, name) {
  const r = await api(h, 'POST', `/api/docs/${doc}/versions`, { name })
  assert.equal(r.status, 201, r.text)
  return r.json.id
}

/** The server holds `text` for `doc` (every edit a client made has arrived). */
async function serverHas (h, doc, text) {
  await waitUntil(async () => (await api(h, 'GET', `/api/docs/${doc}/json`)).json?.text === text,
    { timeoutMs: 10_000, what: `the server to hold ${JSON.stringify(text).slice(0, 60)}` })
}

test('a restore reaches every open provider live and survives kill -9 right after its 2xx', async (t) => {
  const h = new Harness({ env: { TANDEM_HISTORY_INTERVAL: '1h' } })
  t.after(() => h.dispose())
  await h.start()
  const doc = uniqueDoc('restore')
  const a = await h.client(doc)
  const b = await h.client(doc)
  a.text.insert(0, 'A paragraph worth keeping.')
  a.map.set('title', 'Draft')
  await waitConverged([a, b])
  await serverHas(h, doc, 'A paragraph worth keeping.')
  const good = await named(h, doc, 'good')

  // Many later edits from both, deleting most of what the version holds.
  for (let i = 0; i < 200; i++) (i % 2 ? a : b).text.insert(0, `${i},`)
  b.text.delete(b.text.length - 20, 15)
  b.map.set('title', 'Ruined')
  b.map.set('extra', true)
  await waitConverged([a, b])
  await serverHas(h, doc, a.text.toString())

  const r = await api(h, 'POST', `/api/docs/${doc}/versions/${good}/restore`, {})
  assert.equal(r.status, 201, r.text)
  assert.equal(r.json.kind, 'restore')
  assert.equal(r.json.restored_from, good)
  // kill -9 at once: the restore was durable before its 2xx.
  const exit = await h.server.kill9()
  assert.equal(exit.signal, 'SIGKILL')

  // Both providers had it live, over the sockets they had: the server is
  // dead, so nothing could reach them since. The text and the map are the
  // version's.
  await waitUntil(() => a.text.toString() === 'A paragraph worth keeping.' && b.text.toString() === 'A paragraph worth keeping.',
    { timeoutMs: 5_000, what: 'both providers to show the restored text' })
  assert.equal(a.map.get('title'), 'Draft')
  assert.equal(b.map.get('extra'), undefined)

  h.dropClients()
  await h.start()
  const fresh = await h.client(doc)
  assert.equal(fresh.text.toString(), 'A paragraph worth keeping.')
  assert.equal(fresh.map.get('title'), 'Draft')
  const list = await api(h, 'GET', `/api/docs/${doc}/versions`)
  assert.deepEqual(list.json.items.map((v) => v.kind), ['restore', 'auto', 'named'])
  assert.equal((await api(h, 'GET', `/api/docs/${doc}/json?version=${list.json.items[1].id}`)).json.map.title, 'Ruined',
    'the version made before the restore holds the state it replaced')
})

test('a named version survives kill -9 right after its 201, and versions outlive compaction and restarts', async (t) => {
  const h = new Harness({ env: { TANDEM_HISTORY_INTERVAL: '1h', TANDEM_COMPACT_AFTER_UPDATES: '50' } })
  t.after(() => h.dispose())
  await h.start()
  const doc = uniqueDoc('named')
  const a = await h.client(doc)
  const expected = []
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 60; i++) a.text.insert(a.text.length, `${round}.${i} `)
    a.text.delete(0, 20)
    await serverHas(h, doc, a.text.toString())
    expected.push({ id: await named(h, doc, `round ${round}`), text: a.text.toString() })
  }
  await h.server.kill9()
  h.dropClients()
  await h.start()
  // The compactor folds the log (every 5 s once it holds 50 updates) and a
  // graceful restart follows.
  await new Promise((resolve) => setTimeout(resolve, 6_000))
  await h.restart()
  for (const { id, text } of expected) {
    const r = await api(h, 'GET', `/api/docs/${doc}/json?version=${id}`)
    assert.equal(r.status, 200, r.text)
    assert.equal(r.json.text, text, `version ${id}`)
  }
  const r = await api(h, 'GET', `/api/docs/${doc}/versions/424242`)
  assert.equal(r.status, 404)
})
