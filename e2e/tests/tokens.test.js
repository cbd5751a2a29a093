// Access tokens with TANDEM_API_KEY set: tokens are minted through
// POST /api/tokens (with the key) and handed to the stock WebsocketProvider as
// `params: { token }`. Write tokens (exact name or `prefix*`) let providers
// converge; a read-only token syncs and receives edits, but its own updates
// (live ones, and the offline ones its sync step 2 carries) are dropped: they
// reach no peer and are neither in the document the API serves nor stored; a
// token that expires closes its connection with 4401 and the provider stays
// disconnected; no token, a bad token, or a token for another document is
// refused before the upgrade (401 / 403) and such a provider never syncs.
// Each test runs its own server.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import * as Y from 'yjs'
import { Harness, canonicalJson, uniqueDoc, waitConverged } from '../lib/harness.js'
import { sleep, waitUntil } from '../lib/wait.js'

async function harness (t) {
  const key = `key-${randomBytes(12).toString('hex')}`
  const h = new Harness({ env: { TANDEM_API_KEY: key } })
  h.apiKey = key
  t.after(() => h.dispose())
  await h.start()
  return h
}

/** A call to the HTTP API with the key (or `key`, null for none); resolves to { status, body }. */
async function api (h, method, path, { body, key = h.apiKey, binary = false } = {}) {
  const headers = {}
  if (key !== null) headers.authorization = `Bearer ${key}`
  // Always JSON: in dev mode the server refuses state-changing calls of other types.
  headers['content-type'] = 'application/json'
  const res = await fetch(`${h.server.httpUrl}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000)
  })
  const raw = binary ? new Uint8Array(await res.arrayBuffer()) : await res.text()
  let parsed = raw
  if (!binary && raw.length > 0) {
    try { parsed = JSON.parse(raw) } catch {}
  }
  return { status: res.status, body: parsed }
}

/** POST /api/tokens; asserts 200 and a sane expiry, returns { token, expires_at }. */
async function mintToken (h, claims) {
  const before = Math.floor(Date.now() / 1000)
  const { status, body } = await api(h, 'POST', '/api/tokens', { body: claims })
  assert.equal(status, 200, `POST /api/tokens ${JSON.stringify(claims)}: ${JSON.stringify(body)}`)
  assert.equal(typeof body.token, 'string')
  assert.ok(body.token.length > 0)
  assert.equal(typeof body.expires_at, 'number', `expires_at: ${JSON.stringify(body)}`)
  assert.ok(body.expires_at > before, `expires_at ${body.expires_at} is not in the future`)
  if (claims.ttl_secs !== undefined) {
    const after = Math.ceil(Date.now() / 1000)
    assert.ok(body.expires_at >= before + claims.ttl_secs && body.expires_at <= after + claims.ttl_secs,
      `expires_at ${body.expires_at} for ttl_secs ${claims.ttl_secs} minted in [${before}, ${after}]`)
  }
  return body
}

/** The rendered document from GET /api/docs/{id}/json. */
async function docJson (h, doc) {
  const { status, body } = await api(h, 'GET', `/api/docs/${doc}/json`)
  assert.equal(status, 200, `GET /api/docs/${doc}/json: ${JSON.stringify(body)}`)
  return body
}

/** The server's copy of the document, from GET /api/docs/{id}/update. */
async function serverDoc (h, doc) {
  const { status, body } = await api(h, 'GET', `/api/docs/${doc}/update`, { binary: true })
  assert.equal(status, 200, `GET /api/docs/${doc}/update`)
  const ydoc = new Y.Doc()
  Y.applyUpdate(ydoc, body)
  return ydoc
}

/** Client IDs present in a Y.Doc's state vector. */
const writers = (ydoc) => [...Y.decodeStateVector(Y.encodeStateVector(ydoc)).keys()]

/**
 * A raw WebSocket upgrade request to /ws/{doc}[?token=]: resolves to
 * { status, body } (101 when the server accepted the upgrade).
 */
function upgradeAttempt (h, doc, token) {
  const query = token === undefined ? '' : `?token=${encodeURIComponent(token)}`
  return new Promise((resolve, reject) => {
    const req = http.get(`${h.server.httpUrl}/ws/${doc}${query}`, {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': randomBytes(16).toString('base64')
      },
      timeout: 10_000
    })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: res.statusCode, body: null })
    })
    req.on('response', (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { text += chunk })
      res.on('end', () => {
        let body = text
        try { body = JSON.parse(text) } catch {}
        resolve({ status: res.statusCode, body })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`upgrade request to ${doc} timed out`)))
    req.on('error', reject)
  })
}

const assertApiError = (body, what) => {
  assert.equal(typeof body?.error?.code, 'string', `${what}: body ${JSON.stringify(body)} lacks error.code`)
  assert.equal(typeof body?.error?.message, 'string', `${what}: body ${JSON.stringify(body)} lacks error.message`)
}

test('write tokens (exact name and prefix*): two stock providers converge on Y.Text and Y.Map', async (t) => {
  const h = await harness(t)
  const team = uniqueDoc('team')
  const doc = `${team}-notes`
  const { token: exact } = await mintToken(h, { doc, perm: 'write', sub: 'alice', name: 'Alice' })
  const { token: prefix } = await mintToken(h, { doc: `${team}-*`, perm: 'write', sub: 'bob' })
  const a = await h.client(doc, { params: { token: exact } })
  const b = await h.client(doc, { params: { token: prefix } })

  for (let i = 0; i < 5; i++) {
    a.doc.transact(() => {
      a.text.insert(a.text.length, `A${i};`)
      a.map.set(`a${i}`, i)
      a.map.set('contested', `A${i}`)
    })
    b.doc.transact(() => {
      b.text.insert(0, `B${i};`)
      b.map.set(`b${i}`, { n: i })
      b.map.set('contested', `B${i}`)
    })
  }
  await waitConverged([a, b])
  const text = a.text.toString()
  assert.equal(text.length, 30, `text: ${text}`)
  for (let i = 0; i < 5; i++) {
    assert.ok(text.includes(`A${i};`) && text.includes(`B${i};`), `text lacks A${i} or B${i}: ${text}`)
    assert.equal(b.map.get(`a${i}`), i)
    assert.deepEqual(a.map.get(`b${i}`), { n: i })
  }
  assert.ok(['A4', 'B4'].includes(a.map.get('contested')))

  // The server holds the same document, and renders it.
  await waitUntil(async () => {
    const json = await docJson(h, doc)
    return json.text === a.text.toString() && canonicalJson(json.map) === canonicalJson(a.map.toJSON())
  }, { timeoutMs: 10_000, intervalMs: 100, what: 'GET /api/docs/{id}/json to show the converged document', describe: async () => JSON.stringify(await docJson(h, doc)) })
  assert.deepEqual((await docJson(h, doc)).map, a.map.toJSON())
  assert.deepEqual([a.closeEvents, b.closeEvents], [[], []], 'both providers must stay connected')
})

test('a read-only token syncs and receives edits, but its own edits reach no peer and are never stored', async (t) => {
  const h = await harness(t)
  const doc = uniqueDoc('ro')
  const writeToken = async () => (await mintToken(h, { doc, perm: 'write' })).token
  const w = await h.client(doc, { params: { token: await writeToken() } })
  w.text.insert(0, 'hello;')
  w.map.set('by', 'writer')
  const observer = await h.client(doc, { params: { token: await writeToken() } })
  await waitConverged([w, observer])

  // The reader has an offline edit before it connects: its answer to the
  // server's sync step 1 (sync step 2) carries it.
  const readerDoc = new Y.Doc()
  readerDoc.getText('text').insert(0, 'RO-OFFLINE;')
  readerDoc.getMap('map').set('roOffline', true)
  const { token: readToken } = await mintToken(h, { doc, perm: 'read', sub: 'viewer' })
  const r = await h.client(doc, { doc: readerDoc, params: { token: readToken } })
  const roId = r.doc.clientID

  // It synced: it has the writer's content, and gets the writer's live edits.
  assert.ok(r.text.toString().includes('hello;'), `reader text after sync: ${r.text.toString()}`)
  assert.equal(r.map.get('by'), 'writer')
  w.text.insert(w.text.length, 'live;')
  await waitUntil(() => r.text.toString().includes('live;'), { what: "the reader to get the writer's live edit", describe: () => r.text.toString() })

  // A live edit by the reader.
  r.doc.transact(() => {
    r.text.insert(0, 'RO-LIVE;')
    r.map.set('roLive', 'x')
  })
  // A fence on the reader's connection: its awareness message is sent after
  // the update, so once the writer sees it the server has handled the update.
  r.awareness.setLocalStateField('user', 'viewer')
  await waitUntil(() => w.awareness.getStates().get(roId)?.user === 'viewer', { what: "the writer to see the reader's awareness (sent after its edit)" })

  // Then a later edit by the writer must reach the third client; by then the
  // reader's edit would have arrived too, had it been relayed.
  w.doc.transact(() => {
    w.text.insert(w.text.length, 'later;')
    w.map.set('later', true)
  })
  await waitUntil(() => observer.text.toString().includes('later;') && observer.map.get('later') === true, {
    what: "the writer's later edit to reach the third client", describe: () => observer.text.toString()
  })
  await waitUntil(() => r.text.toString().includes('later;'), { what: "the reader to get the writer's later edit" })

  const expectedText = 'hello;live;later;'
  const expectedMap = { by: 'writer', later: true }
  for (const [name, c] of [['writer', w], ['third client', observer]]) {
    assert.equal(c.text.toString(), expectedText, `${name}'s text`)
    assert.deepEqual(c.map.toJSON(), expectedMap, `${name}'s map`)
    assert.ok(!writers(c.doc).includes(roId), `${name} holds updates by the read-only client`)
  }
  // The reader still has its own edits locally (they were only refused upstream),
  // and it was not disconnected for them.
  assert.deepEqual(r.closeEvents, [], 'the read-only provider must stay connected')
  assert.ok(r.text.toString().includes('RO-LIVE;') && r.text.toString().includes('RO-OFFLINE;'))

  // Not in the server's document: neither rendered nor in its update.
  const json = await docJson(h, doc)
  assert.equal(json.text, expectedText, `GET /api/docs/${doc}/json text`)
  assert.deepEqual(json.map, expectedMap, `GET /api/docs/${doc}/json map`)
  const held = await serverDoc(h, doc)
  assert.ok(!writers(held).includes(roId), `GET /api/docs/${doc}/update holds updates by the read-only client`)
  assert.equal(held.getText('text').toString(), expectedText)

  // A client that joins now gets none of it.
  const late = await h.client(doc, { params: { token: await writeToken() } })
  assert.equal(late.text.toString(), expectedText)
  assert.ok(!writers(late.doc).includes(roId))

  // And none of it was stored.
  await h.restart()
  const stored = await docJson(h, doc)
  assert.equal(stored.text, expectedText, 'text after a restart')
  assert.deepEqual(stored.map, expectedMap, 'map after a restart')
  assert.ok(!writers(await serverDoc(h, doc)).includes(roId), 'stored updates by the read-only client')
})

test('an expiring token (ttl_secs: 2): the connection is closed with 4401 and the provider stays disconnected', async (t) => {
  const h = await harness(t)
  const doc = uniqueDoc('ttl')
  const { token: longToken } = await mintToken(h, { doc, perm: 'write' })
  const w = await h.client(doc, { params: { token: longToken } })
  const { token, expires_at: expiresAt } = await mintToken(h, { doc, perm: 'write', ttl_secs: 2 })
  const e = await h.client(doc, { params: { token } })
  const terminal = []
  e.provider.on('closed', (event) => terminal.push(event))

  // While valid, the token writes.
  e.text.insert(0, 'before expiry;')
  await waitConverged([w, e])
  assert.deepEqual(e.closeEvents, [])

  const close = await waitUntil(() => e.closeEvents.find((c) => c.code !== null), {
    timeoutMs: 10_000, intervalMs: 20, what: 'the expiring connection to be closed by the server'
  })
  const closedAt = Date.now() / 1000
  assert.equal(close.code, 4401, `close event ${JSON.stringify(close)}`)
  assert.ok(closedAt >= expiresAt - 0.5, `closed at ${closedAt}, before the token expired (${expiresAt})`)
  assert.deepEqual(terminal.map((c) => c.code), [4401], "the provider's 'closed' event (no more reconnects)")

  // No reconnection for 3 more seconds: every new socket the provider opens
  // emits status 'connecting', and would show in the close events too.
  const statuses = e.statusEvents.length
  const closes = e.closeEvents.length
  await sleep(3_500)
  assert.deepEqual(e.statusEvents.slice(statuses), [], 'status events after the 4401 close (a reconnection attempt?)')
  assert.equal(e.closeEvents.length, closes, `close events after the 4401 close: ${JSON.stringify(e.closeEvents)}`)
  assert.equal(e.provider.wsconnected, false)
  assert.equal(e.provider.wsconnecting, false)
  assert.equal(e.provider.ws, null)
  assert.equal(e.provider.synced, false)
  assert.equal(e.statusEvents.at(-1), 'disconnected')
  // The server agrees: only the writer is connected.
  const metrics = await fetch(`${h.server.httpUrl}/metrics`).then((res) => res.text())
  assert.match(metrics, /^tandem_connections 1$/m, 'tandem_connections after the expiry')

  // The other connection carries on.
  w.text.insert(w.text.length, 'after expiry;')
  const other = await h.client(doc, { params: { token: longToken } })
  assert.equal(other.text.toString(), 'before expiry;after expiry;')
  assert.deepEqual(w.closeEvents, [], 'the writer with a valid token must stay connected')
  // The expired token is now refused at the upgrade.
  assert.equal((await upgradeAttempt(h, doc, token)).status, 401, 'upgrade with the expired token')
})

test('no token, a bad token, or a token for another document: 401/403 before the upgrade, and the provider never syncs', async (t) => {
  const h = await harness(t)
  const doc = uniqueDoc('guarded')
  const otherDoc = uniqueDoc('other')
  const { token: writeToken } = await mintToken(h, { doc, perm: 'write' })
  const { token: otherToken } = await mintToken(h, { doc: otherDoc, perm: 'write' })
  const { token: prefixToken } = await mintToken(h, { doc: `${otherDoc}*`, perm: 'read' })
  const w = await h.client(doc, { params: { token: writeToken } })
  w.text.insert(0, 'secret')

  // The stock provider, refused.
  const anonymous = h.clientNoWait(doc)
  const wrongDoc = h.clientNoWait(doc, { params: { token: otherToken } })
  const refused = [['no token', anonymous], ['a token for another doc', wrongDoc]]
  // Each has tried (and been refused) at least twice: it keeps retrying, never syncing.
  await waitUntil(() => refused.every(([, c]) => c.closeEvents.length >= 2), {
    timeoutMs: 10_000, what: 'the refused providers to try to connect twice',
    describe: () => JSON.stringify(refused.map(([, c]) => c.closeEvents))
  })
  await sleep(1_000)
  for (const [what, c] of refused) {
    assert.equal(c.provider.synced, false, `provider with ${what} synced`)
    assert.ok(!c.statusEvents.includes('connected'), `provider with ${what} connected: ${c.statusEvents}`)
    assert.equal(c.text.toString(), '', `provider with ${what} got content`)
    assert.ok(c.closeEvents.every((e) => e.code === 1006), `provider with ${what}: close events ${JSON.stringify(c.closeEvents)}`)
  }

  // The raw upgrade attempts show why.
  const cases = [
    ['no token', undefined, 401],
    ['a malformed token', 'not-a-token', 401],
    ['a token with a forged signature', `${writeToken.slice(0, writeToken.lastIndexOf('.') + 1)}${'A'.repeat(43)}`, 401],
    ['the token of another document', otherToken, 403],
    ['a prefix token of other documents', prefixToken, 403]
  ]
  for (const [what, token, expected] of cases) {
    const { status, body } = await upgradeAttempt(h, doc, token)
    assert.equal(status, expected, `upgrade with ${what}: HTTP ${status} ${JSON.stringify(body)}`)
    assertApiError(body, `upgrade with ${what}`)
  }
  // Controls: the right tokens are accepted by the same raw request.
  assert.equal((await upgradeAttempt(h, doc, writeToken)).status, 101, 'upgrade with a valid token')
  assert.equal((await upgradeAttempt(h, `${otherDoc}-sub`, prefixToken)).status, 101, 'upgrade with a prefix token')

  // The HTTP API itself needs the key.
  for (const [what, key] of [['no key', null], ['a wrong key', 'wrong-key'], ['a document token', writeToken]]) {
    const res = await api(h, 'POST', '/api/tokens', { body: { doc, perm: 'write' }, key })
    assert.equal(res.status, 401, `POST /api/tokens with ${what}: ${JSON.stringify(res.body)}`)
    assertApiError(res.body, `POST /api/tokens with ${what}`)
    const get = await api(h, 'GET', `/api/docs/${doc}/json`, { key })
    assert.equal(get.status, 401, `GET /api/docs/{id}/json with ${what}: ${JSON.stringify(get.body)}`)
  }
  assert.deepEqual(w.closeEvents, [], 'the authorised provider must stay connected')
})
