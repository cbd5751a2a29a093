// The editor's history panel (SPEC §9, last bullet), driven in a real Chromium
// by playwright-core against the real server (no mocks): the version list
// (automatic versions appear while one types, a version named in the panel
// shows its name, "Load more" pages through the rest), a read-only preview of
// a version with the changed block highlighted, a restore made in one browser
// seen live in another, and a read-only link without the buttons that change
// anything.
//
// The servers run with TANDEM_HISTORY_INTERVAL=1s, so that automatic versions
// come within a second or two of an edit. As in browser.test.js, the server
// is $TANDEM_BIN serving its embedded bundle, or TANDEM_TEST_WEB_DIR's folder.
// Screenshots go to e2e/artifacts/history-*.png.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import * as Y from 'yjs'
import { Harness, uniqueDoc } from '../lib/harness.js'
import { waitUntil } from '../lib/wait.js'

const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'artifacts')
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const WEB_ENV = process.env.TANDEM_TEST_WEB_DIR ? { TANDEM_WEB_DIR: path.resolve(process.env.TANDEM_TEST_WEB_DIR) } : {}
const HISTORY_ENV = { TANDEM_HISTORY_INTERVAL: '1s' }

const ADA = { name: 'Ada Lovelace', color: '#8e4ec6' }
const GRACE = { name: 'Grace Hopper', color: '#0090ff' }

/** How long an automatic version may take to show: its 1 s window, then the open panel's next refresh (every 4 s). */
const VERSION_SHOWS_MS = 15_000

let browser
let dev // a dev-mode server (no API key) with 1 s history windows
/** every page opened, so that the last test can report stray errors */
const pages = []

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}: install Debian's chromium or set CHROMIUM_PATH`)
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
  dev = new Harness({ env: { ...WEB_ENV, ...HISTORY_ENV } })
  await dev.start()
})

after(async () => {
  await browser?.close().catch(() => {})
  await dev?.dispose()
})

/** A page in its own browser context (another user), logging console errors and uncaught exceptions into `page.errors`. */
async function openPage (url, { user = ADA, viewport = { width: 1400, height: 860 }, server = dev.server } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 })
  await context.addInitScript((u) => {
    if (!localStorage.getItem('tandem.user')) localStorage.setItem('tandem.user', JSON.stringify(u))
  }, { id: `${user.name.toLowerCase().replace(/\W+/g, '-')}-${Math.random().toString(16).slice(2, 8)}`, ...user })
  const page = await context.newPage()
  page.errors = []
  page.on('console', (msg) => { if (msg.type() === 'error') page.errors.push(`console.error: ${msg.text()}`) })
  page.on('pageerror', (err) => page.errors.push(`uncaught: ${err.message}`))
  pages.push(page)
  await page.goto(`${server.httpUrl}${url}`)
  return page
}

async function closePage (page) {
  await page.context().close().catch(() => {})
}

function assertNoErrors (list) {
  for (const page of list) assert.deepEqual(page.errors, [], `console errors on ${page.url()}`)
}

/** The live (collaborative) editor; the preview's is `.history-preview .ProseMirror`. */
const liveEditorOf = (page) => page.locator('.editor-host .ProseMirror')

async function waitState (page, state, timeout = 10_000) {
  await page.locator(`.status-pill[data-state="${state}"]`).waitFor({ timeout })
}

/** The text of the editor matched by `selector`, without remote carets' labels. */
function textOf (page, selector = '.editor-host .ProseMirror') {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel)
    if (!el) return null
    const clone = el.cloneNode(true)
    for (const c of clone.querySelectorAll('.collaboration-carets__caret, .collaboration-carets__label')) c.remove()
    // innerText needs the element rendered: measure the clone in place of nothing
    const box = document.createElement('div')
    box.style.cssText = 'position:absolute;left:-10000px;top:0;width:700px'
    box.append(clone)
    document.body.append(box)
    const text = clone.innerText
    box.remove()
    return text.replace(/\u00a0/g, ' ').replace(/\n+/g, '\n').trim()
  }, selector)
}

async function waitText (page, text, timeout = 5000) {
  await waitUntil(async () => (await textOf(page))?.includes(text), {
    timeoutMs: timeout,
    intervalMs: 25,
    what: `${JSON.stringify(text)} in the editor of ${page.url()}`,
    describe: async () => JSON.stringify(await textOf(page))
  })
}

async function focusEnd (page) {
  await liveEditorOf(page).click()
  await page.evaluate(() => window.tandem.editor.commands.focus('end'))
}

async function api (server, method, urlPath, { body, key, bytes = false } = {}) {
  const headers = { accept: bytes ? 'application/octet-stream' : 'application/json', 'content-type': 'application/json' }
  if (key) headers.authorization = `Bearer ${key}`
  const res = await fetch(`${server.httpUrl}${urlPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000)
  })
  if (bytes && res.ok) return { status: res.status, body: new Uint8Array(await res.arrayBuffer()) }
  const text = await res.text()
  let parsed = text
  try { parsed = text ? JSON.parse(text) : null } catch {}
  return { status: res.status, body: parsed }
}

/** The document's XML fragment `default` as the server renders it (GET …/json[?version=]). */
async function storedXml (server, doc, { key, version } = {}) {
  const res = await api(server, 'GET', `/api/docs/${doc}/json${version ? `?version=${encodeURIComponent(version)}` : ''}`, { key })
  assert.equal(res.status, 200, `GET /api/docs/${doc}/json${version ? `?version=${version}` : ''}: ${JSON.stringify(res.body)}`)
  return res.body.default ?? ''
}

/** Wait until the server holds `text` (so that a version made now has it). */
async function waitStored (server, doc, text, { key } = {}) {
  await waitUntil(async () => (await storedXml(server, doc, { key })).includes(text), {
    timeoutMs: 5000,
    what: `${JSON.stringify(text)} in the stored document`
  })
}

/** Every version of `doc`, newest first, through all the pages. */
async function allVersions (server, doc, { key, query = '' } = {}) {
  const out = []
  let cursor = null
  do {
    const res = await api(server, 'GET', `/api/docs/${doc}/versions?limit=20${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { key })
    assert.equal(res.status, 200, `GET versions: ${JSON.stringify(res.body)}`)
    out.push(...res.body.items)
    cursor = res.body.next_cursor
  } while (cursor)
  return out
}

/** The version ids the panel lists, in order. */
function listedIds (page) {
  return page.locator('.history-panel .history-item').evaluateAll((els) => els.map((el) => el.dataset.versionId))
}

async function openHistory (page) {
  const toggle = page.getByRole('button', { name: 'History', exact: true })
  await toggle.click()
  await page.locator('.history-panel').waitFor({ state: 'visible', timeout: 2000 })
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true')
}

async function screenshot (page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, name) })
}

// ---- one document, carried through the tests below ---------------------------

const FIRST = 'The first paragraph, as it was.'
const SECOND = 'The second paragraph, never changed.'
const REWRITTEN = 'The first paragraph, rewritten since.'
const NAME = 'Before the rewrite'
const session = {}

test('the panel lists versions: an automatic one appears after typing; one named in the panel shows its name', async () => {
  const doc = uniqueDoc('history')
  const a = await openPage(`/d/${doc}`, { user: ADA })
  Object.assign(session, { doc, a })
  await waitState(a, 'live')
  await focusEnd(a)
  await a.keyboard.type(FIRST)
  await a.keyboard.press('Enter')
  await a.keyboard.type(SECOND)
  await waitStored(dev.server, doc, SECOND)

  await openHistory(a)
  // an automatic version, within a window and a refresh of the open panel
  const auto = a.locator('.history-item[data-kind="auto"]').first()
  await auto.waitFor({ timeout: VERSION_SHOWS_MS })
  assert.match(await auto.locator('.history-item-title').textContent(), /^Automatic version$/)
  assert.match(await auto.locator('time').getAttribute('datetime'), /^\d{4}-\d\d-\d\dT/)
  const autos = await allVersions(dev.server, doc, { query: '&kind=auto' })
  assert.ok(autos.length > 0, 'the API lists automatic versions')
  assert.ok(autos.map((v) => v.id).includes(await auto.getAttribute('data-version-id')), 'the listed version is one the API knows')

  // name the current state, through the panel (keyboard: the form submits on Enter)
  await a.locator('.history-name-button').click()
  const input = a.locator('.history-name-input')
  await input.waitFor({ state: 'visible' })
  assert.equal(await input.evaluate((el) => el === document.activeElement), true, 'the name field takes the focus')
  await input.fill(NAME)
  await input.press('Enter')
  const named = a.locator('.history-item[data-kind="named"]', { hasText: NAME })
  await named.waitFor({ timeout: 5000 })
  const namedId = await named.getAttribute('data-version-id')
  session.namedId = namedId
  await a.locator('.history-message', { hasText: NAME }).waitFor({ timeout: 2000 })
  assert.equal(await a.locator('.history-name-form').isVisible(), false, 'the form closes once saved')

  // the server has it, named, with the content typed so far
  const one = await api(dev.server, 'GET', `/api/docs/${doc}/versions/${encodeURIComponent(namedId)}`)
  assert.equal(one.status, 200, JSON.stringify(one.body))
  assert.equal(one.body.kind, 'named')
  assert.equal(one.body.name, NAME)
  const xml = await storedXml(dev.server, doc, { version: namedId })
  assert.ok(xml.includes(FIRST) && xml.includes(SECOND), `the named version holds the text: ${xml}`)

  // the panel lists what the API lists, newest first (after its next refresh at the latest)
  await waitUntil(async () => {
    const api = (await allVersions(dev.server, doc)).map((v) => v.id)
    const shown = await listedIds(a)
    return JSON.stringify(api) === JSON.stringify(shown)
  }, {
    timeoutMs: 10_000,
    intervalMs: 250,
    what: 'the panel to list the API\'s versions in order',
    describe: async () => `panel ${JSON.stringify(await listedIds(a))} vs API ${JSON.stringify((await allVersions(dev.server, doc)).map((v) => v.id))}`
  })
  await screenshot(a, 'history-list.png')
  assertNoErrors([a])
})

test('a preview shows the version read-only, the block changed since highlighted', async () => {
  const { doc, a, namedId } = session
  assert.ok(a && namedId, 'needs the page and the named version of the first test')
  // rewrite the first paragraph
  await liveEditorOf(a).locator('p').first().click()
  await a.keyboard.press('Home')
  await a.keyboard.press('Shift+End')
  await a.keyboard.type(REWRITTEN)
  await waitStored(dev.server, doc, REWRITTEN)
  assert.ok(!(await textOf(a)).includes(FIRST))

  // open the named version from the keyboard
  const item = a.locator(`.history-item[data-version-id="${namedId}"]`)
  await item.focus()
  await a.keyboard.press('Enter')
  const preview = a.locator('.history-preview .ProseMirror')
  await preview.waitFor({ state: 'visible', timeout: 5000 })
  assert.equal(await item.getAttribute('aria-current'), 'true')
  assert.equal(await preview.getAttribute('contenteditable'), 'false', 'the preview is read-only')
  const previewText = await textOf(a, '.history-preview .ProseMirror')
  assert.equal(previewText, `${FIRST}\n${SECOND}`, 'the preview holds the version\'s text')
  session.previewText = previewText
  // the live editor and its toolbar make way for it
  assert.equal(await liveEditorOf(a).isVisible(), false)
  assert.equal(await a.locator('.toolbar').isVisible(), false)
  assert.match(await a.locator('.history-banner-title').textContent(), new RegExp(NAME))

  // exactly the first paragraph differs from the current document
  const changed = a.locator('.history-preview .history-changed')
  assert.equal(await changed.count(), 1, 'one block highlighted')
  assert.equal((await changed.textContent()).trim(), FIRST)
  const background = await changed.evaluate((el) => getComputedStyle(el).backgroundColor)
  assert.notEqual(background, 'rgba(0, 0, 0, 0)', 'the highlight is visible')
  assert.equal(await a.locator('.history-preview p', { hasText: SECOND }).evaluate((el) => el.classList.contains('history-changed')), false)
  assert.match(await a.locator('.history-banner-summary').textContent(), /^1 highlighted block/)
  // the highlights follow the live document: another client (the stock
  // y-websocket one) puts the old text back, then the new one again
  const other = await dev.client(doc)
  const setFirst = (text) => {
    const t = other.doc.getXmlFragment('default').get(0).get(0)
    other.doc.transact(() => {
      t.delete(0, t.length)
      t.insert(0, text)
    })
  }
  try {
    setFirst(FIRST)
    await waitUntil(async () => (await changed.count()) === 0, { timeoutMs: 5000, what: 'no highlight once the current document has the old text again' })
    assert.match(await a.locator('.history-banner-summary').textContent(), /^Same text/)
    setFirst(REWRITTEN)
    await waitUntil(async () => (await changed.count()) === 1, { timeoutMs: 5000, what: 'the highlight back once the text differs again' })
    await waitStored(dev.server, doc, REWRITTEN)
  } finally {
    other.destroy()
  }
  // typing into the preview changes nothing
  await preview.click()
  await a.keyboard.type('typed into the preview')
  assert.equal(await textOf(a, '.history-preview .ProseMirror'), previewText)
  assert.equal(await a.locator('.history-restore').isEnabled(), true)
  await screenshot(a, 'history-preview.png')

  // back to the document (Escape, from the keyboard): the live editor as it is now
  await a.locator('.history-preview-close').focus()
  await a.keyboard.press('Escape')
  await liveEditorOf(a).waitFor({ state: 'visible', timeout: 2000 })
  assert.equal(await a.locator('.history-preview').isVisible(), false)
  assert.ok((await textOf(a)).includes(REWRITTEN))
  assert.ok(!(await textOf(a)).includes('typed into the preview'))
  assertNoErrors([a])
})

test('a restore from one browser is seen live in another, without a reload, and the content is the version\'s', async () => {
  const { doc, a, namedId, previewText } = session
  assert.ok(a && namedId && previewText, 'needs the pages and versions of the tests above')
  const b = await openPage(`/d/${doc}`, { user: GRACE })
  session.b = b
  await waitState(b, 'live')
  await waitText(b, REWRITTEN)
  await b.evaluate(() => { window.__sameDocument = true })

  await a.locator(`.history-item[data-version-id="${namedId}"]`).click()
  await a.locator('.history-preview .ProseMirror').waitFor({ state: 'visible', timeout: 5000 })
  // a confirm step first, which can be cancelled
  await a.locator('.history-restore').click()
  const confirm = a.locator('.history-confirm')
  await confirm.waitFor({ state: 'visible', timeout: 2000 })
  await a.locator('.history-restore-cancel').click()
  assert.equal(await confirm.isVisible(), false)
  assert.ok((await textOf(b)).includes(REWRITTEN), 'nothing restored on cancel')
  await a.locator('.history-restore').click()
  await confirm.waitFor({ state: 'visible', timeout: 2000 })
  await screenshot(a, 'history-restore-confirm.png')
  await a.locator('.history-restore-confirm').click()

  // Grace sees it arrive over her WebSocket, on the same page
  await waitText(b, FIRST, 5000)
  assert.equal(await textOf(b), previewText, 'the other browser shows the version\'s text')
  assert.equal(await b.evaluate(() => window.__sameDocument), true, 'the other page was not reloaded')
  // and her Y.Doc holds the version's content, as the version's own update builds it
  const update = await api(dev.server, 'GET', `/api/docs/${doc}/update?version=${encodeURIComponent(namedId)}`, { bytes: true })
  assert.equal(update.status, 200)
  const versionDoc = new Y.Doc()
  Y.applyUpdate(versionDoc, update.body)
  const expected = versionDoc.getXmlFragment('default').toString()
  await waitUntil(async () => (await b.evaluate(() => window.tandem.ydoc.getXmlFragment('default').toString())) === expected, {
    timeoutMs: 3000,
    what: 'the other browser\'s document to be the version\'s',
    describe: async () => `${await b.evaluate(() => window.tandem.ydoc.getXmlFragment('default').toString())} != ${expected}`
  })
  // the server agrees: the current document renders as the version does
  assert.equal(await storedXml(dev.server, doc), await storedXml(dev.server, doc, { version: namedId }))

  // Ada's preview closed; her editor has the version's text; the list shows the restore
  await liveEditorOf(a).waitFor({ state: 'visible', timeout: 2000 })
  assert.equal(await a.locator('.history-preview').isVisible(), false)
  await waitText(a, FIRST)
  assert.equal(await textOf(a), previewText)
  const restore = a.locator('.history-item[data-kind="restore"]').first()
  await restore.waitFor({ timeout: 5000 })
  assert.equal((await restore.locator('.history-item-title').textContent()).trim(), `Restored from “${NAME}”`)
  const restores = await allVersions(dev.server, doc, { query: '&kind=restore' })
  assert.equal(restores.length, 1)
  assert.equal(restores[0].restored_from, namedId)
  assert.equal(await restore.getAttribute('data-version-id'), restores[0].id)
  await screenshot(a, 'history-restored-ada.png')
  await screenshot(b, 'history-restored-grace.png')
  assertNoErrors([a, b])
  await closePage(a)
  await closePage(b)
})

test('"Load more" pages through the versions with the API\'s cursor', async () => {
  const doc = uniqueDoc('history-pages')
  const a = await openPage(`/d/${doc}`, { user: ADA })
  await waitState(a, 'live')
  await focusEnd(a)
  await a.keyboard.type('Checkpoints ahead.')
  await waitStored(dev.server, doc, 'Checkpoints ahead.')
  // the edit's automatic version first, so that the checkpoints are the newest and nothing comes after them
  await waitUntil(async () => (await allVersions(dev.server, doc, { query: '&kind=auto' })).length > 0, { timeoutMs: 10_000, intervalMs: 200, what: 'an automatic version' })
  for (let i = 1; i <= 25; i++) {
    const res = await api(dev.server, 'POST', `/api/docs/${doc}/versions`, { body: { name: `Checkpoint ${i}` } })
    assert.equal(res.status, 201, JSON.stringify(res.body))
  }
  await openHistory(a)
  await waitUntil(async () => (await listedIds(a)).length === 20, { timeoutMs: 5000, what: 'the first page of 20 versions' })
  assert.equal((await a.locator('.history-item-title').first().textContent()).trim(), 'Checkpoint 25', 'newest first')
  const more = a.getByRole('button', { name: 'Load more' })
  await more.waitFor({ state: 'visible' })
  await more.click()
  await waitUntil(async () => (await listedIds(a)).length > 20, { timeoutMs: 5000, what: 'the next page' })
  // the rest: as many clicks as pages remain
  while (await more.isVisible()) {
    const n = (await listedIds(a)).length
    await more.click()
    await waitUntil(async () => (await listedIds(a)).length > n || !(await more.isVisible()), { timeoutMs: 5000, what: 'one more page' })
  }
  const everything = (await allVersions(dev.server, doc)).map((v) => v.id)
  assert.ok(everything.length >= 25)
  assert.deepEqual(await listedIds(a), everything, 'all the versions, each once, newest first')
  const titles = await a.locator('.history-item[data-kind="named"] .history-item-title').allTextContents()
  assert.deepEqual(titles.map((t) => t.trim()), Array.from({ length: 25 }, (_, i) => `Checkpoint ${25 - i}`))
  assertNoErrors([a])
  await closePage(a)
})

test('with an API key: the page sends its own token; a read-only link previews versions but has no name or restore button', async (t) => {
  const key = `key-${randomBytes(12).toString('hex')}`
  const h = new Harness({ env: { ...WEB_ENV, ...HISTORY_ENV, TANDEM_API_KEY: key } })
  const open = []
  // Pages close before the server stops, so that no page sees it go
  // (a reconnect to a stopped server is a console error): \`after\` hooks
  // run in the order they were added, so one hook does both, in turn.
  t.after(async () => {
    for (const p of open) await closePage(p)
    await h.dispose()
  })
  const server = await h.start()
  const doc = uniqueDoc('history-secured')
  const mint = async (claims) => {
    const res = await api(server, 'POST', '/api/tokens', { key, body: { doc, ttl_secs: 600, ...claims } })
    assert.equal(res.status, 200, JSON.stringify(res.body))
    return res.body.token
  }
  const writeToken = await mint({ perm: 'write', sub: 'user-ada', name: 'Ada (token)' })
  const readToken = await mint({ perm: 'read', sub: 'user-grace', name: 'Grace (token)' })

  const writer = await openPage(`/d/${doc}?token=${writeToken}`, { user: ADA, server })
  open.push(writer)
  await waitState(writer, 'live')
  await focusEnd(writer)
  await writer.keyboard.type('Written with a write link.')
  await waitStored(server, doc, 'Written with a write link.', { key })

  // the writer's panel: its calls carry the write token (the server wants a credential)
  await openHistory(writer)
  const auto = writer.locator('.history-item[data-kind="auto"]').first()
  await auto.waitFor({ timeout: VERSION_SHOWS_MS })
  assert.match(await auto.locator('.history-item-people').textContent(), /user-ada/, 'the authors are the token subs that wrote')
  await writer.locator('.history-name-button').click()
  await writer.locator('.history-name-input').fill('Reviewed')
  await writer.locator('.history-name-input').press('Enter')
  const named = writer.locator('.history-item[data-kind="named"]', { hasText: 'Reviewed' })
  await named.waitFor({ timeout: 5000 })
  const namedId = await named.getAttribute('data-version-id')
  const meta = await api(server, 'GET', `/api/docs/${doc}/versions/${encodeURIComponent(namedId)}`, { key })
  assert.equal(meta.status, 200, JSON.stringify(meta.body))
  assert.equal(meta.body.created_by, 'user-ada', 'named with the writer\'s token')
  assert.equal(await writer.locator('.history-message[data-kind="error"]').count(), 0)

  // the reader: the list and a preview, but nothing that changes the document
  const reader = await openPage(`/d/${doc}?token=${readToken}`, { user: GRACE, server })
  open.push(reader)
  await waitState(reader, 'live')
  await reader.locator('.badge-readonly').waitFor()
  await openHistory(reader)
  const readerNamed = reader.locator(`.history-item[data-version-id="${namedId}"]`)
  await readerNamed.waitFor({ timeout: 5000 })
  assert.equal(await reader.locator('.history-name-button').count(), 0, 'no "Name this version" for a read-only link')
  await readerNamed.click()
  const preview = reader.locator('.history-preview .ProseMirror')
  await preview.waitFor({ state: 'visible', timeout: 5000 })
  assert.ok((await textOf(reader, '.history-preview .ProseMirror')).includes('Written with a write link.'))
  assert.equal(await preview.getAttribute('contenteditable'), 'false')
  assert.equal(await reader.locator('.history-restore').count(), 0, 'no restore button for a read-only link')
  assert.equal(await reader.getByRole('button', { name: /restore/i }).count(), 0)
  assert.equal(await reader.locator('.history-message[data-kind="error"]').count(), 0)
  await screenshot(reader, 'history-read-only.png')
  // and the server refuses the read token what the page does not offer
  const refused = await api(server, 'POST', `/api/docs/${doc}/versions/${encodeURIComponent(namedId)}/restore`, { key: readToken })
  assert.equal(refused.status, 403, `restore with a read token: ${JSON.stringify(refused.body)}`)
  assertNoErrors([writer, reader])
})

test('every page of the run: no console errors or uncaught exceptions', () => {
  for (const page of pages) assert.deepEqual(page.errors, [], `console errors on ${page.url?.() ?? 'a page'}`)
})
