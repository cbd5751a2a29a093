// The `tandem` subcommands against the release binary, with the stock
// y-websocket provider as the editor: `tandem backup` while a provider keeps
// typing (a second server on the copy serves every document as it was at
// the backup, the typed one in a state its author really had); `tandem
// export` then `tandem import` into a fresh database (identical JSON and
// identical Yjs state: same state vector, same delete set; a second import
// without --overwrite refuses and writes nothing, with it replaces);
// `tandem token` (a write token opens a WebSocket and its edits reach the
// others, a read-only one syncs but cannot write, a token signed with another
// key is refused); `tandem check` (passes on the server's settings without
// printing the key, fails on an unusable database).
//
// Every subcommand runs as a child process with the running server's
// environment (TANDEM_DATABASE_URL, TANDEM_API_KEY). The databases are SQLite
// files named explicitly, even under TANDEM_E2E_BACKEND=postgres: `backup`
// copies SQLite files only.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import * as Y from 'yjs'
import { Harness, assertSameText, canonicalJson, uniqueDoc, waitConverged } from '../lib/harness.js'
import { TANDEM_BIN, makeTmpDir, removeDir } from '../lib/server.js'
import { prng } from '../lib/prng.js'
import { sleep, waitUntil } from '../lib/wait.js'

// ---- helpers -------------------------------------------------------------------------

/** A harness whose server uses the SQLite file `<dataDir>/tandem.db`, named in its env. */
function sqliteHarness (t, env = {}) {
  const h = new Harness()
  h.databaseFile = path.join(h.dataDir, 'tandem.db')
  h.env = { ...env, TANDEM_DATABASE_URL: `sqlite://${h.databaseFile}` }
  t.after(() => h.dispose())
  return h
}

/** A temporary directory removed when the test ends. */
function tmpDir (t) {
  const dir = makeTmpDir('tandem-e2e-cli-')
  t.after(() => removeDir(dir))
  return dir
}

/**
 * Run `tandem ARGS` with `env` added to this process's environment; resolves to
 * { code, signal, stdout, stderr, ms }. Killed (and the test failed) after `timeoutMs`.
 */
function runTandem (args, env, { timeoutMs = 30_000 } = {}) {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const proc = spawn(TANDEM_BIN, args, {
      env: { ...process.env, TANDEM_LOG_FORMAT: 'json', ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    proc.stdout.setEncoding('utf8').on('data', (c) => { stdout += c })
    proc.stderr.setEncoding('utf8').on('data', (c) => { stderr += c })
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`tandem ${args.join(' ')} did not finish within ${timeoutMs} ms\nstderr: ${stderr}`))
    }, timeoutMs)
    proc.on('error', (err) => { clearTimeout(timer); reject(err) })
    proc.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
  })
}

/** Assert that a subcommand ended with status 0. */
function assertOk (r, what) {
  assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null },
    `${what}: exit status\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`)
}

/** An HTTP API call; resolves to { status, body } (body: parsed JSON, text, or bytes with `binary`). */
async function api (server, method, urlPath, { key, binary = false, body } = {}) {
  const headers = { 'content-type': 'application/json' }
  if (key) headers.authorization = `Bearer ${key}`
  const res = await fetch(`${server.httpUrl}${urlPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000)
  })
  if (binary) return { status: res.status, body: new Uint8Array(await res.arrayBuffer()) }
  const text = await res.text()
  let parsed = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.status, body: parsed }
}

/** GET /api/docs/{id}/json (asserts 200). */
async function docJson (server, doc, key) {
  const r = await api(server, 'GET', `/api/docs/${encodeURIComponent(doc)}/json`, { key })
  assert.equal(r.status, 200, `GET /api/docs/${doc}/json on :${server.port}: ${JSON.stringify(r.body)}`)
  return r.body
}

/** GET /api/docs/{id}/update applied to a fresh Y.Doc (asserts 200). */
async function serverDoc (server, doc, key) {
  const r = await api(server, 'GET', `/api/docs/${encodeURIComponent(doc)}/update`, { key, binary: true })
  assert.equal(r.status, 200, `GET /api/docs/${doc}/update on :${server.port}`)
  return ydocFrom(r.body)
}

function ydocFrom (update) {
  const ydoc = new Y.Doc()
  Y.applyUpdate(ydoc, update)
  return ydoc
}

/** Every document name the server lists under `prefix` (all pages). */
async function listDocs (server, prefix, key) {
  const names = []
  let cursor = null
  for (;;) {
    const q = `prefix=${encodeURIComponent(prefix)}&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
    const r = await api(server, 'GET', `/api/docs?${q}`, { key })
    assert.equal(r.status, 200, `GET /api/docs?${q}: ${JSON.stringify(r.body)}`)
    names.push(...r.body.items.map((item) => item.id))
    if (!r.body.next_cursor) return names.sort()
    cursor = r.body.next_cursor
  }
}

/** The content of the root types these tests use, as canonical JSON. */
function content (ydoc) {
  return canonicalJson({
    text: ydoc.getText('text').toString(),
    map: ydoc.getMap('map').toJSON(),
    array: ydoc.getArray('array').toJSON(),
    xml: ydoc.getXmlFragment('xml').toString()
  })
}

const stateVector = (ydoc) => Y.decodeStateVector(Y.encodeStateVector(ydoc))
const svText = (ydoc) => JSON.stringify([...stateVector(ydoc)].sort((a, b) => a[0] - b[0]))

/**
 * Two Y.Docs hold the same CRDT state: the same state vector, the same delete
 * set (Y.snapshot is both, built canonically from the struct store), the same
 * content, and neither holds updates it cannot integrate yet.
 */
function assertSameYState (actual, expected, what) {
  assert.equal(actual.store.pendingStructs, null, `${what}: pending (unintegrable) structs`)
  assert.equal(actual.store.pendingDs, null, `${what}: a pending delete set`)
  assert.equal(svText(actual), svText(expected), `${what}: state vector`)
  assert.ok(Y.equalSnapshots(Y.snapshot(actual), Y.snapshot(expected)), `${what}: delete set (Y.snapshot) differs`)
  assertSameText(content(actual), content(expected), `${what}: content`)
}

/** Edits of every kind, inserts and deletes, each its own transaction (its own message). */
function fill (client, seed, { xml = false } = {}) {
  const rnd = prng(seed)
  for (let i = 0; i < 80; i++) {
    const t = client.text
    if (i % 5 === 4 && t.length > 4) t.delete(rnd.int(t.length - 3), 3)
    else t.insert(rnd.int(t.length + 1), `${rnd.word()} `)
    if (i % 6 === 0) client.map.set(`k${i % 4}`, { i, nested: { s: rnd.word(), list: [i, null, true, 1.5] } })
    if (i % 9 === 0) client.array.push([i, rnd.word(), { seed }])
  }
  client.array.delete(0, 1)
  client.map.delete('k1')
  if (xml) {
    const fragment = client.doc.getXmlFragment('xml')
    const p = new Y.XmlElement('paragraph')
    p.setAttribute('align', 'left')
    p.insert(0, [new Y.XmlText(`seed ${seed} `)])
    const h = new Y.XmlElement('heading')
    h.setAttribute('level', '2')
    h.insert(0, [new Y.XmlText('title')])
    fragment.insert(0, [h, p])
  }
}

/** The export file stem of a document name, as `tandem export --help`'s docs say. */
const fileStem = (name) => [...Buffer.from(name, 'utf8')]
  .map((b) => /[a-z0-9_-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)
  .join('')

const sha256 = (file) => createHash('sha256').update(fs.readFileSync(file)).digest('hex')

/** The claims of a JWT (not verified: the server does that). */
function jwtClaims (token) {
  const parts = token.split('.')
  assert.equal(parts.length, 3, `not a JWT: ${token}`)
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'))
}

/** A raw WebSocket upgrade to /ws/{doc}?token=…; resolves to the HTTP status (101: accepted). */
function upgradeStatus (server, doc, token) {
  const query = token === undefined ? '' : `?token=${encodeURIComponent(token)}`
  return new Promise((resolve, reject) => {
    const req = http.get(`${server.httpUrl}/ws/${doc}${query}`, {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': randomBytes(16).toString('base64')
      },
      timeout: 10_000
    })
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode) })
    req.on('response', (res) => { res.resume(); resolve(res.statusCode) })
    req.on('timeout', () => req.destroy(new Error(`upgrade request to ${doc} timed out`)))
    req.on('error', reject)
  })
}

// ---- tests ---------------------------------------------------------------------------

test('a backup taken while a stock provider keeps editing starts a server that serves every document as it was at the backup', async (t) => {
  const h = sqliteHarness(t)
  await h.start()
  const base = uniqueDoc('backup')
  const finished = [`${base}-a`, `${base}-b`]
  const typed = `${base}-typed`

  // Two finished documents, each written by two stock providers.
  const finishedEditors = []
  for (const [k, doc] of finished.entries()) {
    const a = await h.client(doc)
    const b = await h.client(doc)
    fill(a, 10 + k, { xml: k === 0 })
    fill(b, 20 + k)
    await waitConverged([a, b])
    finishedEditors.push(a)
  }

  // The typed document: one provider appends every 10 ms; every text it ever had is kept.
  const typer = await h.client(typed)
  const observer = await h.client(typed)
  const hadTexts = new Set([''])
  let n = 0
  const type = () => {
    typer.text.insert(typer.text.length, `${n++};`)
    hadTexts.add(typer.text.toString())
  }
  type()
  const timer = setInterval(type, 10)
  t.after(() => clearInterval(timer))
  await waitUntil(() => observer.text.length > 150, { timeoutMs: 10_000, what: 'the typing to get going' })
  // What the observer has, the server accepted; 100 ms later it is committed.
  const seenBeforeBackup = observer.text.toString()
  await sleep(100)

  // The backup goes into the second server's data directory (removed with it).
  const h2 = sqliteHarness(t)
  const backupFile = path.join(h2.dataDir, 'backup.db')
  h2.env = { TANDEM_DATABASE_URL: `sqlite://${backupFile}` }
  const typedAtStart = n
  const backup = await runTandem(['backup', backupFile], h.server.env)
  const typedDuring = n - typedAtStart
  assertOk(backup, 'tandem backup')
  t.diagnostic(`tandem backup took ${backup.ms} ms; ${typedDuring} inserts were typed meanwhile`)
  assert.ok(fs.statSync(backupFile).size > 0, 'the backup file is empty')

  // It refuses to overwrite the file it made, and leaves it alone.
  const backupHash = sha256(backupFile)
  const again = await runTandem(['backup', backupFile], h.server.env)
  assert.notEqual(again.code, 0, `a second backup to the same path exited 0: ${again.stderr}`)
  assert.match(again.stderr, /exists/, 'the refusal says why')
  assert.equal(sha256(backupFile), backupHash, 'the refused backup changed the existing file')

  // Typing goes on after the backup, then stops; the first server has all of it.
  await sleep(300)
  clearInterval(timer)
  await waitConverged([typer, observer])
  const finalText = typer.text.toString()
  await waitUntil(async () => (await docJson(h.server, typed)).text === finalText,
    { timeoutMs: 10_000, intervalMs: 50, what: 'the first server to hold the whole typed text' })

  // The second server, on the backup.
  await h2.start()
  assert.deepEqual(await listDocs(h2.server, base), [...finished, typed].sort(), 'documents listed by the server on the backup')

  for (const [k, doc] of finished.entries()) {
    assert.deepEqual(await docJson(h2.server, doc), await docJson(h.server, doc), `GET /api/docs/${doc}/json: backup vs original`)
    assertSameYState(await serverDoc(h2.server, doc), await serverDoc(h.server, doc), `${doc}: /update on the backup vs the original`)
    const fresh = await h2.client(doc)
    assertSameYState(fresh.doc, finishedEditors[k].doc, `${doc}: a fresh provider on the backup vs the editor`)
  }

  const fresh = await h2.client(typed)
  const backupText = fresh.text.toString()
  assert.equal((await docJson(h2.server, typed)).text, backupText, 'GET /json and a fresh provider agree on the backup')
  assert.ok(hadTexts.has(backupText),
    `the typed document in the backup (${backupText.length} chars, ending ${JSON.stringify(backupText.slice(-30))}) is no text the typing provider ever had`)
  assert.ok(finalText.startsWith(backupText), 'the typed text in the backup is not a prefix of the final text')
  assert.ok(backupText.startsWith(seenBeforeBackup),
    `the backup (${backupText.length} chars) lacks edits the observer had 100 ms before it started (${seenBeforeBackup.length} chars)`)
  assert.ok(backupText.length < finalText.length, 'the backup holds edits typed after it finished: is the second server on the backup?')
  // Its Yjs state is exactly that prefix: only the typer wrote, one clock per character, nothing pending.
  const backupState = await serverDoc(h2.server, typed)
  assert.equal(backupState.store.pendingStructs, null, 'pending structs in the backup')
  assert.equal(svText(backupState), JSON.stringify([[typer.doc.clientID, backupText.length]]), 'state vector of the typed document in the backup')
  assert.equal(svText(fresh.doc), svText(backupState))

  // The original server still has the whole text (the backup took nothing from it).
  assert.equal((await docJson(h.server, typed)).text, finalText)
})

test('export then import into a fresh server gives identical documents', async (t) => {
  const h1 = sqliteHarness(t)
  await h1.start()
  const base = uniqueDoc('export')
  // Names with characters the export file names must encode, two differing only in case.
  const docs = [`${base}-plain`, `${base}-Case.v1:x@y~z`, `${base}-case.v1:x@y~z`, `${base}-xml`]
  const editors = new Map()
  for (const [k, doc] of docs.entries()) {
    const a = await h1.client(doc)
    const b = await h1.client(doc)
    fill(a, 100 + k, { xml: doc.endsWith('-xml') })
    fill(b, 200 + k)
    await waitConverged([a, b])
    editors.set(doc, a)
  }
  for (const doc of docs) {
    const expected = editors.get(doc).text.toString()
    await waitUntil(async () => (await docJson(h1.server, doc)).text === expected,
      { timeoutMs: 10_000, intervalMs: 50, what: `the server to hold every edit of ${doc}` })
  }
  const original = new Map()
  for (const doc of docs) original.set(doc, { json: await docJson(h1.server, doc), ydoc: await serverDoc(h1.server, doc) })

  // Export from the running server.
  const exportDir = path.join(tmpDir(t), 'export')
  const exported = await runTandem(['export', exportDir], h1.server.env)
  assertOk(exported, 'tandem export')
  const manifest = JSON.parse(fs.readFileSync(path.join(exportDir, 'tandem-export.json'), 'utf8'))
  assert.equal(manifest.format, 'tandem-export')
  assert.equal(manifest.version, 1)
  assert.deepEqual(manifest.documents.map((d) => d.name).sort(), [...docs].sort(), 'documents in the manifest')
  for (const { name, file } of manifest.documents) {
    assert.equal(file, fileStem(name), `file of ${name}`)
    const bin = fs.readFileSync(path.join(exportDir, `${file}.bin`))
    assertSameYState(ydocFrom(bin), original.get(name).ydoc, `${name}: the exported .bin vs the server's /update`)
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(exportDir, `${file}.json`), 'utf8')), original.get(name).json,
      `${name}: the exported .json vs GET /json`)
  }
  assert.notEqual(fileStem(docs[1]), fileStem(docs[2]), 'the two names differing in case need two files')

  // Import into a fresh database; a server on it serves the same documents.
  const h2 = sqliteHarness(t)
  const imported = await runTandem(['import', exportDir], h2.env)
  assertOk(imported, 'tandem import')
  await h2.start()
  const assertAsExported = async (what, skip = []) => {
    assert.deepEqual(await listDocs(h2.server, base), [...docs].sort(), `${what}: documents listed`)
    for (const doc of docs) {
      if (skip.includes(doc)) continue
      assert.deepEqual(await docJson(h2.server, doc), original.get(doc).json, `${what}: GET /api/docs/${doc}/json vs the original`)
      assertSameYState(await serverDoc(h2.server, doc), original.get(doc).ydoc, `${what}: ${doc} /update vs the original`)
    }
  }
  await assertAsExported('after the import')
  for (const doc of docs) {
    const fresh = await h2.client(doc)
    assertSameYState(fresh.doc, editors.get(doc).doc, `${doc}: a fresh provider on the imported server vs the original editor`)
  }
  h2.dropClients()

  // On the imported server, one document is edited and another deleted.
  const [edited, deleted] = docs
  const editor = await h2.client(edited)
  editor.text.insert(0, 'after-import;')
  const editedText = editor.text.toString()
  await waitUntil(async () => (await docJson(h2.server, edited)).text === editedText,
    { timeoutMs: 10_000, intervalMs: 50, what: 'the edit after the import to reach the server' })
  assert.equal((await api(h2.server, 'DELETE', `/api/docs/${encodeURIComponent(deleted)}`)).status, 204, `DELETE ${deleted}`)
  assert.equal((await api(h2.server, 'GET', `/api/docs/${encodeURIComponent(deleted)}`)).status, 404)
  const before = new Map()
  for (const doc of docs.filter((d) => d !== deleted)) before.set(doc, { json: await docJson(h2.server, doc), ydoc: await serverDoc(h2.server, doc) })

  // Importing again without --overwrite: refused, and nothing written (not even the deleted document).
  const assertUnchanged = async (what) => {
    assert.equal((await api(h2.server, 'GET', `/api/docs/${encodeURIComponent(deleted)}`)).status, 404, `${what}: the deleted document came back`)
    assert.deepEqual(await listDocs(h2.server, base), docs.filter((d) => d !== deleted).sort(), `${what}: documents listed`)
    for (const [doc, was] of before) {
      assert.deepEqual(await docJson(h2.server, doc), was.json, `${what}: GET /api/docs/${doc}/json changed`)
      assertSameYState(await serverDoc(h2.server, doc), was.ydoc, `${what}: ${doc} /update changed`)
    }
  }
  const refused = await runTandem(['import', exportDir], h2.server.env)
  assert.notEqual(refused.code, 0, `a second import without --overwrite exited 0\n${refused.stderr}`)
  assert.match(refused.stderr, /exist/, 'the refusal says why')
  assert.ok(refused.stderr.includes(JSON.stringify(edited)), `the refusal names an existing document: ${refused.stderr}`)
  await assertUnchanged('after the refused import')
  await h2.restart()
  await assertUnchanged('after the refused import and a restart')

  // With --overwrite (no server on the database): every document is the exported one again.
  h2.dropClients()
  assert.deepEqual(await h2.server.stop(), { code: 0, signal: null })
  const overwritten = await runTandem(['import', '--overwrite', exportDir], h2.env)
  assertOk(overwritten, 'tandem import --overwrite')
  await h2.start()
  await assertAsExported('after import --overwrite')
  assert.ok(!(await docJson(h2.server, edited)).text.includes('after-import;'), '--overwrite merged instead of replacing')
})

test('a token from `tandem token` opens a WebSocket with the stock provider; a read-only one cannot write', async (t) => {
  const key = `key-${randomBytes(16).toString('hex')}`
  const h = sqliteHarness(t, { TANDEM_API_KEY: key })
  await h.start()
  const base = uniqueDoc('clitoken')
  const doc = `${base}-notes`

  const mint = async (args, env = h.server.env) => {
    const r = await runTandem(['token', ...args], env)
    assertOk(r, `tandem token ${args.join(' ')}`)
    const token = r.stdout.trim()
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, `stdout of tandem token is not a token alone: ${JSON.stringify(r.stdout)}`)
    return token
  }
  const t0 = Math.floor(Date.now() / 1000)
  const writeToken = await mint(['--doc', doc, '--user', 'ada', '--name', 'Ada Lovelace'])
  const prefixToken = await mint(['--doc', `${base}-*`, '--sub', 'bob', '--ttl', '10m'])
  const readToken = await mint(['--doc', doc, '--read-only', '--user', 'viewer'])
  const t1 = Math.ceil(Date.now() / 1000)
  const foreignToken = await mint(['--doc', doc], { ...h.server.env, TANDEM_API_KEY: `other-${key}` })
  const otherDocToken = await mint(['--doc', `${base}-other`])

  const claims = jwtClaims(writeToken)
  assert.deepEqual({ doc: claims.doc, perm: claims.perm, sub: claims.sub, name: claims.name },
    { doc, perm: 'write', sub: 'ada', name: 'Ada Lovelace' }, 'claims of the write token')
  assert.ok(claims.exp >= t0 + 3600 && claims.exp <= t1 + 3600, `exp ${claims.exp} is not 1h (the default) after ${t0}`)
  const prefixClaims = jwtClaims(prefixToken)
  assert.deepEqual([prefixClaims.doc, prefixClaims.perm, prefixClaims.sub], [`${base}-*`, 'write', 'bob'])
  assert.ok(prefixClaims.exp >= t0 + 600 && prefixClaims.exp <= t1 + 600, `exp ${prefixClaims.exp} is not 10m after ${t0}`)
  assert.equal(jwtClaims(readToken).perm, 'read', 'perm of the --read-only token')

  // The server takes the CLI's tokens, and only for what they grant.
  assert.equal(await upgradeStatus(h.server, doc, writeToken), 101, 'upgrade with the write token')
  assert.equal(await upgradeStatus(h.server, doc, readToken), 101, 'upgrade with the read-only token')
  assert.equal(await upgradeStatus(h.server, doc), 401, 'upgrade without a token')
  assert.equal(await upgradeStatus(h.server, doc, foreignToken), 401, 'upgrade with a token minted under another API key')
  assert.equal(await upgradeStatus(h.server, doc, otherDocToken), 403, 'upgrade with a token for another document')

  // Two stock providers with CLI tokens (exact name, prefix*): edits go both ways.
  const w = await h.client(doc, { params: { token: writeToken } })
  const o = await h.client(doc, { params: { token: prefixToken } })
  w.doc.transact(() => {
    w.text.insert(0, 'hello from ada;')
    w.map.set('by', 'ada')
  })
  await waitUntil(() => o.text.toString() === 'hello from ada;', { what: "the prefix-token provider to get the write-token provider's edit" })
  o.text.insert(o.text.length, 'bob too;')
  await waitUntil(() => w.text.toString() === 'hello from ada;bob too;', { what: "the write-token provider to get the prefix-token provider's edit" })
  await waitConverged([w, o])
  assert.equal(w.text.toString(), 'hello from ada;bob too;')
  assert.equal(o.map.get('by'), 'ada')
  const json = await docJson(h.server, doc, key)
  assert.equal(json.text, 'hello from ada;bob too;', 'GET /json after the writers')

  // The read-only provider syncs and receives live edits...
  const r = await h.client(doc, { params: { token: readToken } })
  const roId = r.doc.clientID
  assert.equal(r.text.toString(), 'hello from ada;bob too;', 'the read-only provider synced')
  w.text.insert(w.text.length, 'live;')
  await waitUntil(() => r.text.toString().endsWith('live;'), { what: "the read-only provider to get the writer's live edit" })

  // ...but its own edit changes nothing.
  r.doc.transact(() => {
    r.text.insert(0, 'RO-EDIT;')
    r.map.set('ro', true)
  })
  // A fence: its awareness update is sent after the edit, so once the writer sees it the server has handled the edit.
  r.awareness.setLocalStateField('user', 'viewer')
  await waitUntil(() => w.awareness.getStates().get(roId)?.user === 'viewer', { what: "the writer to see the read-only provider's awareness" })
  w.text.insert(w.text.length, 'later;')
  await waitUntil(() => o.text.toString().endsWith('later;') && r.text.toString().endsWith('later;'),
    { what: "the writer's later edit to reach both other providers" })

  const expected = 'hello from ada;bob too;live;later;'
  for (const [name, c] of [['writer', w], ['prefix-token writer', o]]) {
    assert.equal(c.text.toString(), expected, `${name}'s text`)
    assert.deepEqual(c.map.toJSON(), { by: 'ada' }, `${name}'s map`)
    assert.ok(!stateVector(c.doc).has(roId), `${name} holds an update by the read-only client`)
  }
  const after = await docJson(h.server, doc, key)
  assert.equal(after.text, expected, 'GET /json text after the read-only edit')
  assert.deepEqual(after.map, { by: 'ada' }, 'GET /json map after the read-only edit')
  assert.ok(!stateVector(await serverDoc(h.server, doc, key)).has(roId), 'the server holds an update by the read-only client')
  assert.deepEqual(r.closeEvents, [], 'the read-only provider stays connected')
  assert.ok(r.text.toString().startsWith('RO-EDIT;'), 'the read-only provider keeps its local edit (only refused upstream)')

  // A provider with the token minted under another key never syncs.
  const stranger = h.clientNoWait(doc, { params: { token: foreignToken } })
  await waitUntil(() => stranger.closeEvents.length >= 1, { timeoutMs: 10_000, what: 'the foreign-token provider to be refused' })
  assert.equal(stranger.provider.synced, false)
  assert.equal(stranger.text.toString(), '', 'the foreign-token provider received content')
})

test('`tandem check` passes on the server\'s settings without printing the API key, and fails on an unusable database', async (t) => {
  const key = `key-${randomBytes(16).toString('hex')}`
  const h = sqliteHarness(t, { TANDEM_API_KEY: key })
  await h.start()
  const ok = await runTandem(['check'], h.server.env)
  assertOk(ok, 'tandem check')
  assert.match(ok.stdout, /database: reachable/)
  assert.match(ok.stdout, /^ok$/m)
  assert.ok(ok.stdout.includes(h.databaseFile), 'check prints the effective database URL')
  assert.ok(!ok.stdout.includes(key) && !ok.stderr.includes(key), 'check printed the API key')

  // A database under a regular file cannot be opened or created.
  const dir = tmpDir(t)
  const file = path.join(dir, 'a-file')
  fs.writeFileSync(file, 'not a directory')
  const bad = await runTandem(['check'], { ...h.server.env, TANDEM_DATABASE_URL: `sqlite://${file}/sub/tandem.db` })
  assert.notEqual(bad.code, 0, `check on an unusable database exited 0\n${bad.stdout}`)
  assert.match(bad.stderr, /^tandem: /m, 'the failure is explained on stderr')
  assert.ok(!bad.stdout.includes('database: reachable'))
})
