// The browser editor (SPEC §8), driven in a real Chromium by Playwright's
// library (playwright-core: it downloads nothing; the browser is Debian's
// `chromium`, or $CHROMIUM_PATH). Each page gets its own browser context, so
// two pages are two users: they share nothing but the server.
//
// The server is the release binary ($TANDEM_BIN) serving its embedded bundle;
// with TANDEM_TEST_WEB_DIR set it serves that folder instead (TANDEM_WEB_DIR),
// for working on web/ without rebuilding the server.
//
// Screenshots of the editors mid-edit go to e2e/artifacts/.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { Harness, uniqueDoc } from '../lib/harness.js'
import { sleep, waitUntil } from '../lib/wait.js'

const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'artifacts')
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const WEB_ENV = process.env.TANDEM_TEST_WEB_DIR ? { TANDEM_WEB_DIR: path.resolve(process.env.TANDEM_TEST_WEB_DIR) } : {}

const ADA = { name: 'Ada Lovelace', color: '#8e4ec6' }
const GRACE = { name: 'Grace Hopper', color: '#0090ff' }
const LINUS = { name: 'Linus Pauling', color: '#30a46c' }

/** The console messages a closed-for-good connection may log, and nothing else. */
const REFUSED_WEBSOCKET = [/WebSocket connection to '.*' failed/, /Failed to load resource: the server responded with a status of 40[13]/]

let browser
let dev // a server in dev mode (no API key), shared by most tests
/**
 * Set when the server's page is not the one this checkout's web/dist holds
 * (a binary built from other sources, without TANDEM_TEST_WEB_DIR): said in
 * failure messages, as the page's behaviour may be another's.
 */
let bundleNote = ''
/** every page opened, so that `after` can report stray errors */
const pages = []

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}: install Debian's chromium or set CHROMIUM_PATH`)
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
  dev = new Harness({ env: WEB_ENV })
  await dev.start()
  const local = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'web', 'dist', 'index.html')
  const served = await (await fetch(`${dev.server.httpUrl}/`)).text()
  if (fs.existsSync(local) && served !== fs.readFileSync(local, 'utf8')) {
    bundleNote = ` (note: the server serves another bundle than web/dist of this checkout; set TANDEM_TEST_WEB_DIR=${path.relative(process.cwd(), path.dirname(local))} to test these sources with this binary)`
    console.log(bundleNote.trim())
  }
})

after(async () => {
  await browser?.close().catch(() => {})
  await dev?.dispose()
})

/**
 * A page in its own browser context (its own localStorage: another user),
 * with `user` remembered as the display name and colour, logging console
 * errors and uncaught exceptions into `page.errors`.
 */
async function openPage (url, { user = ADA, viewport = { width: 1280, height: 800 }, server = dev.server } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 })
  await context.addInitScript((u) => {
    if (!localStorage.getItem('tandem.user')) localStorage.setItem('tandem.user', JSON.stringify(u))
  }, { id: `${user.name.toLowerCase().replace(/\W+/g, '-')}-${Math.random().toString(16).slice(2, 8)}`, ...user })
  const page = await context.newPage()
  page.errors = []
  page.on('console', (msg) => { if (msg.type() === 'error') page.errors.push(`console.error: ${msg.text()}`) })
  page.on('pageerror', (err) => page.errors.push(`uncaught: ${err.message}`))
  page.server = server
  pages.push(page)
  await page.goto(`${server.httpUrl}${url}`)
  return page
}

async function closePage (page) {
  await page.context().close().catch(() => {})
}

/** No console errors and no uncaught exceptions on `list`, except messages matching `allowed`. */
function assertNoErrors (list, allowed = []) {
  for (const page of list) {
    const unexpected = page.errors.filter((e) => !allowed.some((re) => re.test(e)))
    assert.deepEqual(unexpected, [], `console errors on ${page.url()}`)
  }
}

const editorOf = (page) => page.locator('.ProseMirror')

/** Wait until the page's connection pill says `state` (live, offline, closed, connecting). */
async function waitState (page, state, timeout = 10_000) {
  await page.locator(`.status-pill[data-state="${state}"]`).waitFor({ timeout })
}

/** The editor's text, without the remote carets' name labels ('' until the editor's chunk has loaded and mounted). */
function docText (page) {
  return page.evaluate(() => {
    const editor = document.querySelector('.ProseMirror')
    if (!editor) return ''
    const clone = editor.cloneNode(true)
    for (const el of clone.querySelectorAll('.collaboration-carets__caret, .collaboration-carets__label')) el.remove()
    return clone.innerText.replace(/\u00a0/g, ' ').replace(/\n+/g, '\n').trim()
  })
}

async function waitText (page, text, timeout = 5000) {
  await waitUntil(async () => (await docText(page)).includes(text), {
    timeoutMs: timeout,
    intervalMs: 25,
    what: `${JSON.stringify(text)} on ${page.url()}`,
    describe: async () => JSON.stringify(await docText(page))
  })
}

/**
 * Click into the editor and put the caret at the very end of the document.
 * (Through the editor, not Ctrl+End: ProseMirror learns of a native caret
 * move from an asynchronous selectionchange, which a fast Enter can beat.)
 */
async function focusEnd (page) {
  await editorOf(page).click()
  await page.evaluate(() => window.tandem.editor.commands.focus('end'))
}

async function api (server, method, urlPath, { body, key } = {}) {
  const headers = { accept: 'application/json' }
  if (key) headers.authorization = `Bearer ${key}`
  // Always JSON: in dev mode the server refuses state-changing calls of other types.
  headers['content-type'] = 'application/json'
  const res = await fetch(`${server.httpUrl}${urlPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000)
  })
  const text = await res.text()
  let parsed = text
  try { parsed = text ? JSON.parse(text) : null } catch {}
  return { status: res.status, body: parsed, headers: res.headers }
}

/** The document's XML fragment `default` (where Tiptap's Collaboration stores it), from GET …/json. */
async function storedXml (server, doc, key) {
  const { status, body } = await api(server, 'GET', `/api/docs/${doc}/json`, { key })
  assert.equal(status, 200, `GET /api/docs/${doc}/json: ${JSON.stringify(body)}`)
  assert.equal(typeof body.default, 'string', `the root "default" is rendered as an XML string: ${JSON.stringify(body)}`)
  return body.default
}

async function screenshot (page, name) {
  const file = path.join(ARTIFACTS, name)
  await page.screenshot({ path: file })
  return file
}

/** One image with the given screenshots side by side, captioned. */
async function composite (files, captions, name) {
  const page = await browser.newPage({ viewport: { width: 2260, height: 600 }, deviceScaleFactor: 1 })
  try {
    const cells = files.map((file, i) => `<figure><img src="data:image/png;base64,${fs.readFileSync(file).toString('base64')}"><figcaption>${captions[i]}</figcaption></figure>`).join('')
    await page.setContent(`<!doctype html><style>
      body { margin: 0; padding: 20px; background: #e4e4e7; font: 600 14px system-ui, sans-serif; color: #3f3f46; display: flex; gap: 20px; }
      figure { margin: 0; flex: 1; } img { width: 100%; display: block; border-radius: 10px; box-shadow: 0 4px 24px rgba(0,0,0,.12); }
      figcaption { margin-top: 10px; text-align: center; }
    </style>${cells}`)
    await page.waitForFunction(() => [...document.images].every((img) => img.complete && img.naturalWidth > 0))
    await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true })
  } finally {
    await page.close()
  }
}

// ---- two users on one document ------------------------------------------------

/** Ada and Grace on one document; the tests below carry it on. */
const session = {}

test('two users: typing shows up on the other page within a second, with the typist\'s caret and name', async () => {
  const doc = uniqueDoc('browser')
  const viewport = { width: 1100, height: 720 }
  const a = await openPage(`/d/${doc}`, { user: ADA, viewport })
  const b = await openPage(`/d/${doc}`, { user: GRACE, viewport })
  Object.assign(session, { doc, a, b })
  await Promise.all([waitState(a, 'live'), waitState(b, 'live')])
  assert.equal(await a.title(), `${doc} · Tandem`)
  assert.equal((await a.locator('.doc-title').textContent()).trim(), doc)

  // SPEC §8: the editing area is the page's largest contenteditable="true" element
  const largest = await a.evaluate(() => {
    const all = [...document.querySelectorAll('[contenteditable="true"]')]
    const area = (el) => { const r = el.getBoundingClientRect(); return r.width * r.height }
    all.sort((x, y) => area(y) - area(x))
    return all[0]?.classList.contains('ProseMirror') ?? false
  })
  assert.ok(largest, 'the ProseMirror editor is the largest contenteditable="true" element')

  await focusEnd(a)
  const line = 'Hello from Ada, typing in real time.'
  await a.keyboard.type(line)
  const typed = Date.now()
  await waitText(b, line, 1000)
  const latency = Date.now() - typed
  assert.ok(latency < 1000, `the text reached the other page in ${latency} ms`)

  // Grace sees Ada's caret, labelled with her name, in Ada's colour
  const caret = b.locator('.collaboration-carets__caret', { hasText: ADA.name })
  await caret.waitFor({ timeout: 2000 })
  const label = b.locator('.collaboration-carets__label', { hasText: ADA.name })
  assert.equal(await label.count(), 1)
  assert.equal(await label.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(142, 78, 198)')
  // and both pages list who is here, with the names from awareness
  await b.locator(`.presence-list .presence-avatar[data-name="${ADA.name}"]`).waitFor({ timeout: 2000 })
  await a.locator(`.presence-list .presence-avatar[data-name="${GRACE.name}"]`).waitFor({ timeout: 2000 })
  // SPEC §8: carets, labels and the list carry class names with cursor/caret/presence
  for (const selector of ['.collaboration-carets__caret', '.collaboration-carets__label', '.presence-list']) {
    const classes = await b.locator(selector).first().getAttribute('class')
    assert.match(classes, /cursor|caret|presence/, `${selector} has class names integrators can style`)
  }

  // Grace answers; Ada sees her caret
  await focusEnd(b)
  await b.keyboard.press('Enter')
  await b.keyboard.type('Grace here: I can see your cursor.')
  await waitText(a, 'Grace here: I can see your cursor.', 1000)
  await a.locator('.collaboration-carets__label', { hasText: GRACE.name }).waitFor({ timeout: 2000 })

  // a new display name is shown to the others (who-is-here, and the caret
  // once Ada is back in the text: an unfocused editor shows no caret) and remembered
  await a.locator('.me-button').click()
  await a.locator('#name-input').fill('Ada L.')
  await a.locator('#name-input').press('Enter')
  await b.locator('.presence-list .presence-avatar[data-name="Ada L."]').waitFor({ timeout: 2000 })
  await focusEnd(a)
  await b.locator('.collaboration-carets__label', { hasText: 'Ada L.' }).waitFor({ timeout: 2000 })
  assert.equal(await b.locator('.collaboration-carets__label', { hasText: ADA.name }).count(), 0, 'the old name is gone')
  const saved = await a.evaluate(() => JSON.parse(localStorage.getItem('tandem.user')))
  assert.equal(saved.name, 'Ada L.')
  await a.locator('.me-button').click()
  await a.locator('#name-input').fill(ADA.name)
  await a.locator('#name-input').press('Enter')
  await focusEnd(a)
  await b.locator('.collaboration-carets__label', { hasText: ADA.name }).waitFor({ timeout: 2000 })

  assertNoErrors([a, b])
})

test('formatting made on one page shows on the other: bold, headings, lists, code, links', async () => {
  const { a, b } = session
  assert.ok(a && b, 'needs the pages of the first test')
  await focusEnd(a)
  await a.keyboard.press('Enter')
  // toolbar: a heading
  await a.locator('.toolbar [data-action="heading2"]').click()
  await a.keyboard.type('Plan for launch')
  assert.equal(await a.locator('.toolbar [data-action="heading2"]').getAttribute('aria-pressed'), 'true')
  await a.keyboard.press('Enter')
  // toolbar: bold
  await a.keyboard.type('We ship on ')
  await a.locator('.toolbar [data-action="bold"]').click()
  await a.keyboard.type('Friday')
  await a.locator('.toolbar [data-action="bold"]').click()
  await a.keyboard.type(' with ')
  // keyboard: inline code
  await a.keyboard.press('Control+e')
  await a.keyboard.type('tandem')
  await a.keyboard.press('Control+e')
  await a.keyboard.type(' embedded.')
  await a.keyboard.press('Enter')
  // toolbar: a bulleted list
  await a.locator('.toolbar [data-action="bulletList"]').click()
  await a.keyboard.type('Toolbar and typography')
  await a.keyboard.press('Enter')
  await a.keyboard.type('Presence and carets')
  await a.keyboard.press('Enter')
  await a.keyboard.type('Offline edits')
  await a.keyboard.press('Enter')
  await a.keyboard.press('Enter') // leaves the list
  // markdown shortcut: a level-1 heading, then a link through the link form
  await a.keyboard.type('# Notes')
  await a.keyboard.press('Enter')
  await a.keyboard.type('Read the ')
  await a.locator('.toolbar [data-action="link"]').click()
  await a.locator('.link-input').fill('https://yjs.dev')
  await a.locator('.link-input').press('Enter')

  await b.locator('.ProseMirror h2', { hasText: 'Plan for launch' }).waitFor({ timeout: 2000 })
  await b.locator('.ProseMirror strong', { hasText: 'Friday' }).waitFor({ timeout: 2000 })
  await b.locator('.ProseMirror code', { hasText: 'tandem' }).waitFor({ timeout: 2000 })
  await b.locator('.ProseMirror h1', { hasText: 'Notes' }).waitFor({ timeout: 2000 })
  await b.locator('.ProseMirror a[href="https://yjs.dev"]').waitFor({ timeout: 2000 })
  await waitUntil(async () => (await b.locator('.ProseMirror ul > li').count()) === 3, { timeoutMs: 2000, what: 'three list items' })
  assert.deepEqual(await b.locator('.ProseMirror ul > li').allTextContents(), ['Toolbar and typography', 'Presence and carets', 'Offline edits'])

  // Grace selects the heading: Ada sees the selection, in Grace's colour
  await b.locator('.ProseMirror h2').click()
  await b.keyboard.press('End')
  await b.keyboard.press('Shift+Home')
  await a.locator('.collaboration-carets__selection').first().waitFor({ timeout: 2000 })
  await sleep(150)
  const fileA = await screenshot(a, 'editor-ada.png')
  const fileB = await screenshot(b, 'editor-grace.png')
  await composite([fileA, fileB], [`${ADA.name} (Chromium context 1)`, `${GRACE.name} (Chromium context 2)`], 'editors-side-by-side.png')

  assertNoErrors([a, b])
})

test('what the browsers wrote is the server\'s document: GET /api/docs/{doc}/json', async () => {
  const { doc, a, b } = session
  assert.ok(a && b, 'needs the pages of the first test')
  // the server has it all as soon as both pages show it (every update is relayed through it)
  const xml = await waitUntil(async () => {
    const x = await storedXml(dev.server, doc)
    return x.includes('Offline edits') && x.includes('Notes') ? x : null
  }, { timeoutMs: 3000, what: 'the typed text in the stored document' })
  for (const text of ['Hello from Ada, typing in real time.', 'Grace here: I can see your cursor.', 'Plan for launch', 'Friday', 'Toolbar and typography', 'Presence and carets']) {
    assert.ok(xml.includes(text), `${JSON.stringify(text)} in ${xml}`)
  }
  // the structure is Tiptap's: headings, a bullet list, bold
  assert.match(xml, /<heading[^>]*level="2"[^>]*>/)
  assert.match(xml, /<bulletList>/)
  assert.match(xml, /<listItem>/)
  assert.match(xml, /<bold>Friday<\/bold>/)
  const meta = await api(dev.server, 'GET', `/api/docs/${doc}`)
  assert.equal(meta.status, 200)
  assert.equal(meta.body.clients, 2, 'two pages connected')
  assertNoErrors([a, b])
})

test('a reload keeps everything', async () => {
  const { a, b } = session
  assert.ok(a && b, 'needs the pages of the first test')
  const before = await docText(b)
  const html = await b.locator('.ProseMirror').evaluate((el) => el.querySelectorAll('h1, h2, strong, code, li, a').length)
  await b.reload()
  await waitState(b, 'live')
  await waitUntil(async () => (await docText(b)) === before, {
    timeoutMs: 5000,
    what: 'the same text after the reload',
    describe: async () => `${JSON.stringify(await docText(b))} != ${JSON.stringify(before)}`
  })
  assert.equal(await b.locator('.ProseMirror').evaluate((el) => el.querySelectorAll('h1, h2, strong, code, li, a').length), html)
  // the display name is remembered across the reload
  await a.locator(`.presence-list .presence-avatar[data-name="${GRACE.name}"]`).waitFor({ timeout: 3000 })
  assert.equal(await b.locator('.me-name').textContent(), GRACE.name)
  assertNoErrors([a, b])
})

test('offline: a page keeps editing, shows it, and merges within 5 s once back online', async () => {
  const { a, b } = session
  assert.ok(a && b, 'needs the pages of the first test')
  await a.context().setOffline(true)
  try {
    await offlineAndBack(a, b)
  } finally {
    await a.context().setOffline(false)
  }
  assertNoErrors([a, b])
})

async function offlineAndBack (a, b) {
  await waitState(a, 'offline', 3000)
  assert.match(await a.locator('.status-pill').textContent(), /offline/i)
  assert.match(await a.locator('.notice').textContent(), /offline/i)
  assert.equal(await editorOf(a).getAttribute('contenteditable'), 'true', 'still editable while offline')

  await focusEnd(a)
  await a.keyboard.press('Enter')
  await a.keyboard.type('Written offline by Ada.')
  await focusEnd(b)
  await b.keyboard.press('Enter')
  await b.keyboard.type('Written meanwhile by Grace.')
  await sleep(300)
  await screenshot(a, 'editor-offline.png')
  assert.ok(!(await docText(b)).includes('Written offline by Ada.'), 'the offline edit has not reached anyone yet')
  assert.ok(!(await docText(a)).includes('Written meanwhile by Grace.'))

  await a.context().setOffline(false)
  const back = Date.now()
  await waitText(a, 'Written meanwhile by Grace.', 5000)
  await waitText(b, 'Written offline by Ada.', 5000)
  await waitUntil(async () => (await docText(a)) === (await docText(b)), {
    timeoutMs: Math.max(100, 5000 - (Date.now() - back)),
    what: 'both pages to converge',
    describe: async () => `${JSON.stringify(await docText(a))}\n!=\n${JSON.stringify(await docText(b))}`
  })
  await waitState(a, 'live', Math.max(100, 5000 - (Date.now() - back)))
  assert.ok(Date.now() - back < 5000, `merged ${Date.now() - back} ms after coming back online`)
  assert.equal(await a.locator('.notice').isVisible(), false, 'the offline notice is gone')
  const xml = await storedXml(dev.server, session.doc)
  assert.ok(xml.includes('Written offline by Ada.') && xml.includes('Written meanwhile by Grace.'))
}

test('phone width (375 × 740): no horizontal scroll, editor and home page usable', async () => {
  const { doc } = session
  const phone = await openPage(`/d/${doc}`, { user: LINUS, viewport: { width: 375, height: 740 } })
  try {
    await waitState(phone, 'live')
    await waitText(phone, 'Plan for launch')
    await focusEnd(phone)
    await phone.keyboard.press('Enter')
    await phone.keyboard.type('Typed on a phone.')
    await waitText(session.a, 'Typed on a phone.', 2000)
    await sleep(150)
    const width = await phone.evaluate(() => document.scrollingElement.scrollWidth)
    assert.ok(width <= 375, `scrollWidth ${width} > 375`)
    const box = await editorOf(phone).boundingBox()
    assert.ok(box.x >= 0 && box.x + box.width <= 375, `editor inside the screen: ${JSON.stringify(box)}`)
    await screenshot(phone, 'editor-phone.png')

    await phone.goto(`${dev.server.httpUrl}/`)
    await phone.locator('.doc-list').waitFor()
    const homeWidth = await phone.evaluate(() => document.scrollingElement.scrollWidth)
    assert.ok(homeWidth <= 375, `home scrollWidth ${homeWidth} > 375`)
    await screenshot(phone, 'home-phone.png')
    assertNoErrors([phone])
  } finally {
    await closePage(phone)
  }
})

test('the home page lists documents, and creating one opens its editor', async () => {
  const home = await openPage('/', { user: LINUS })
  try {
    await home.locator('.doc-list').waitFor()
    const row = home.locator('.doc-row', { hasText: session.doc })
    await row.waitFor({ timeout: 3000 })
    assert.equal(await row.getAttribute('href'), `/d/${session.doc}`)
    assert.match(await row.textContent(), /2 here/, 'it shows who is connected')
    await screenshot(home, 'home.png')

    // with a name
    const name = uniqueDoc('created')
    await home.locator('#new-doc-name').fill(name)
    await home.locator('.create-button').click()
    await home.waitForURL(`**/d/${name}`, { timeout: 5000 })
    await waitState(home, 'live')
    assert.equal((await api(dev.server, 'GET', `/api/docs/${name}`)).status, 200)
    await focusEnd(home)
    await home.keyboard.type('A fresh page.')

    // an existing name is refused with a link to it
    await home.goto(`${dev.server.httpUrl}/`)
    await home.locator('#new-doc-name').fill(name)
    await home.locator('.create-button').click()
    await home.locator('.form-message a', { hasText: 'Open it' }).waitFor({ timeout: 3000 })

    // without a name: the server picks one
    await home.locator('#new-doc-name').fill('')
    await home.locator('.create-button').click()
    await home.waitForURL((url) => url.pathname.startsWith('/d/') && !url.pathname.endsWith(name), { timeout: 5000 })
    await waitState(home, 'live')
    const generated = decodeURIComponent(new URL(home.url()).pathname.slice(3))
    assert.equal((await api(dev.server, 'GET', `/api/docs/${generated}`)).status, 200)
    // a 409 answer logs a failed resource load; nothing else may
    assertNoErrors([home], [/Failed to load resource: the server responded with a status of 409/])
  } finally {
    await closePage(home)
  }
})

test('deleting the document shows it on the page and stops reconnecting', async () => {
  const doc = uniqueDoc('doomed')
  const page = await openPage(`/d/${doc}`, { user: GRACE })
  try {
    await waitState(page, 'live')
    await focusEnd(page)
    await page.keyboard.type('This will be deleted.')
    await waitUntil(async () => (await storedXml(dev.server, doc)).includes('deleted'), { timeoutMs: 3000, what: 'the text stored' })

    let opened = 0
    page.on('websocket', () => { opened++ })
    const res = await api(dev.server, 'DELETE', `/api/docs/${doc}`)
    assert.equal(res.status, 204)
    await waitState(page, 'closed', 5000)
    assert.match(await page.locator('.notice').textContent(), /this document was deleted/i)
    assert.equal(await editorOf(page).getAttribute('contenteditable'), 'false', 'no more editing into the void')
    await screenshot(page, 'editor-deleted.png')
    await sleep(3500)
    assert.equal(opened, 0, 'no new WebSocket after the 4404 close')
    assert.equal((await api(dev.server, 'GET', `/api/docs/${doc}`)).status, 404, 'nothing re-created the document')
    assertNoErrors([page], REFUSED_WEBSOCKET)
  } finally {
    await closePage(page)
  }
})

test('the bundle: index.html for / and /d/{doc}, hashed assets with their content types, a favicon', async () => {
  for (const url of ['/', '/d/some-doc', '/d/a%41']) {
    const res = await fetch(`${dev.server.httpUrl}${url}`)
    assert.equal(res.status, 200, url)
    assert.match(res.headers.get('content-type'), /^text\/html/, url)
    assert.match(res.headers.get('cache-control') ?? '', /no-cache/, `${url}: the page is revalidated, so a new bundle is picked up`)
    const html = await res.text()
    assert.match(html, /<script type="module" src="\/assets\/main-[A-Z0-9]+\.js">/)
    assert.match(html, /<link rel="stylesheet" href="\/assets\/main-[A-Z0-9]+\.css">/)
  }
  const html = await (await fetch(`${dev.server.httpUrl}/`)).text()
  for (const [asset, type] of [[html.match(/\/assets\/main-[A-Z0-9]+\.js/)[0], /javascript/], [html.match(/\/assets\/main-[A-Z0-9]+\.css/)[0], /^text\/css/], ['/favicon.svg', /^image\/svg\+xml/]]) {
    const res = await fetch(`${dev.server.httpUrl}${asset}`)
    assert.equal(res.status, 200, asset)
    assert.match(res.headers.get('content-type'), type, asset)
    if (asset.startsWith('/assets/')) assert.match(res.headers.get('cache-control') ?? '', /immutable/, `${asset}: hashed, cached for good`)
  }
})

// ---- with an API key: tokens ------------------------------------------------------

test('with an API key: read-only links cannot change the document; write links can; the home page explains links', async (t) => {
  const key = `key-${randomBytes(12).toString('hex')}`
  const h = new Harness({ env: { ...WEB_ENV, TANDEM_API_KEY: key } })
  t.after(() => h.dispose())
  const server = await h.start()
  const doc = uniqueDoc('secured')
  const mint = async (claims) => {
    const res = await api(server, 'POST', '/api/tokens', { key, body: { doc, ttl_secs: 600, ...claims } })
    assert.equal(res.status, 200, JSON.stringify(res.body))
    return res.body.token
  }
  const writeToken = await mint({ perm: 'write', sub: 'user-ada', name: 'Ada (token)' })
  const readToken = await mint({ perm: 'read', sub: 'user-grace', name: 'Grace (token)' })

  const opened = []
  const open = [] // closed before the server stops, so that no page sees it go
  const openHere = async (url, user) => {
    const page = await openPage(url, { user, server })
    open.push(page)
    return page
  }
  try {
    const writer = await openHere(`/d/${doc}?token=${writeToken}`, ADA)
    const reader = await openHere(`/d/${doc}?token=${readToken}`, GRACE)
    await Promise.all([waitState(writer, 'live'), waitState(reader, 'live')])
    await focusEnd(writer)
    await writer.keyboard.type('Only writers change this.')
    await waitText(reader, 'Only writers change this.', 2000)

    // the read-only page says so and cannot be edited
    await reader.locator('.badge-readonly').waitFor()
    assert.equal(await editorOf(reader).getAttribute('contenteditable'), 'false')
    assert.equal(await reader.locator('.toolbar').count(), 0, 'no formatting toolbar for readers')
    assert.equal(await reader.locator('[contenteditable="true"]').count(), 0)
    // readers are still "here", with their caret-less presence
    await writer.locator(`.presence-list .presence-avatar[data-name="${GRACE.name}"]`).waitFor({ timeout: 2000 })
    const xmlBefore = await storedXml(server, doc, key)
    await editorOf(reader).click()
    await reader.keyboard.type('Reader was here.')
    await reader.keyboard.press('Enter')
    await reader.keyboard.press('Backspace')
    await sleep(800)
    assert.ok(!(await docText(reader)).includes('Reader was here'), 'nothing typed on the read-only page')
    assert.ok(!(await docText(writer)).includes('Reader was here'))
    assert.equal(await storedXml(server, doc, key), xmlBefore, 'the stored document is unchanged')
    await screenshot(reader, 'editor-read-only.png')

    // the home page explains how a backend hands out links instead of listing documents
    const home = await openHere('/', LINUS)
    await home.locator('.steps').waitFor()
    const text = await home.locator('main').textContent()
    assert.match(text, /POST .*\/api\/tokens/)
    assert.match(text, /\/d\/\{document\}\?token=/)
    await screenshot(home, 'home-protected.png')
    assertNoErrors([writer, reader])
    // /healthz tells the page an API key is set: no call is made to fail
    assertNoErrors([home])
    await closePage(home)

    // an expiring link: the server closes with 4401, the page says so and stays closed
    const shortToken = await mint({ perm: 'write', ttl_secs: 3 })
    const expiring = await openHere(`/d/${doc}?token=${shortToken}`, LINUS)
    expiring.on('websocket', (ws) => opened.push(ws.url()))
    await waitText(expiring, 'Only writers change this.', 2000) // it did connect and sync
    await waitState(expiring, 'closed', 8000)
    assert.match(await expiring.locator('.notice').textContent(), /your access has expired/i)
    const after4401 = opened.length
    await sleep(2500)
    assert.equal(opened.length, after4401, 'no reconnection after 4401')
    assertNoErrors([expiring], REFUSED_WEBSOCKET)
    await closePage(expiring)

    // a link for another document is refused before the upgrade (403): after a
    // few failed attempts the page finds out why and stops
    const otherToken = (await api(server, 'POST', '/api/tokens', { key, body: { doc: 'another-doc', perm: 'write' } })).body.token
    const refused = await openHere(`/d/${doc}?token=${otherToken}`, LINUS)
    await waitState(refused, 'closed', 10_000)
    assert.match(await refused.locator('.notice').textContent(), /not allowed/i)
    const attempts = []
    refused.on('websocket', (ws) => attempts.push(ws.url()))
    await sleep(3000)
    assert.deepEqual(attempts, [], 'no more attempts once the page knows')
    assertNoErrors([refused], REFUSED_WEBSOCKET)
    await closePage(refused)
  } finally {
    for (const page of open) await closePage(page)
  }
})

// ---- Share ---------------------------------------------------------------------

/**
 * Click Share on `page` and return what it put on the clipboard. The clipboard
 * is the browser's, so a sentinel goes there first and the copy is whatever
 * replaces it.
 */
async function clickShare (page) {
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: page.server.httpUrl })
  const sentinel = `sentinel-${randomBytes(6).toString('hex')}`
  await page.evaluate((text) => navigator.clipboard.writeText(text), sentinel)
  await page.locator('.share-button').click()
  return waitUntil(async () => {
    const text = await page.evaluate(() => navigator.clipboard.readText())
    return text !== sentinel ? text : null
  }, { timeoutMs: 3000, intervalMs: 25, what: `Share to copy something on ${page.url()}${bundleNote}` })
}

test('Share copies the document\'s link without the sharer\'s token, says recipients need their own link, and copies the plain link in dev mode', async (t) => {
  const key = `key-${randomBytes(12).toString('hex')}`
  const h = new Harness({ env: { ...WEB_ENV, TANDEM_API_KEY: key } })
  const open = []
  // Pages close before the server stops, so that no page sees it go
  // (a reconnect to a stopped server is a console error): \`after\` hooks
  // run in the order they were added, so one hook does both, in turn.
  t.after(async () => {
    for (const p of open) await closePage(p)
    await h.dispose()
  })
  const server = await h.start()
  const doc = uniqueDoc('shared')
  const minted = await api(server, 'POST', '/api/tokens', { key, body: { doc, perm: 'write', ttl_secs: 600, sub: 'user-ada', name: 'Ada (token)' } })
  assert.equal(minted.status, 200, JSON.stringify(minted.body))
  const token = minted.body.token

  const sharer = await openPage(`/d/${doc}?token=${token}`, { user: ADA, server })
  open.push(sharer)
  await waitState(sharer, 'live')
  const copied = await clickShare(sharer)
  assert.ok(!copied.includes(token), `the copied link holds the sharer's token: ${copied}${bundleNote}`)
  assert.doesNotMatch(copied, /[?&]token=/, `the copied link has a token parameter${bundleNote}`)
  assert.equal(copied, `${server.httpUrl}/d/${doc}`, `the copied link${bundleNote}`)
  // the page says why, and what recipients need
  const note = sharer.locator('.share-note')
  await note.waitFor({ state: 'visible', timeout: 2000 })
  assert.match(await note.textContent(), /their own link from whoever gave you yours/)
  await screenshot(sharer, 'editor-share-with-token.png')
  // the copied link is no credential: opened as it is, the server asks for one
  const recipient = await openPage(new URL(copied).pathname, { user: GRACE, server })
  open.push(recipient)
  await waitState(recipient, 'closed', 10_000)
  assert.match(await recipient.locator('.notice').textContent(), /needs an access link/i)
  assertNoErrors([sharer])
  assertNoErrors([recipient], REFUSED_WEBSOCKET)

  // dev mode, no token: the plain link, which opens the document for anyone, as before
  const devDoc = uniqueDoc('shared-dev')
  const owner = await openPage(`/d/${devDoc}`, { user: ADA })
  open.push(owner)
  await waitState(owner, 'live')
  await focusEnd(owner)
  await owner.keyboard.type('Shared in dev mode.')
  const plain = await clickShare(owner)
  assert.equal(plain, `${dev.server.httpUrl}/d/${devDoc}`, `the copied link in dev mode${bundleNote}`)
  await owner.locator('.share-button', { hasText: 'Link copied' }).waitFor({ timeout: 2000 })
  assert.equal(await owner.locator('.share-note').count(), 0, 'no note about tokens without a token')
  const friend = await openPage(new URL(plain).pathname, { user: GRACE })
  open.push(friend)
  await waitState(friend, 'live')
  await waitText(friend, 'Shared in dev mode.')
  assertNoErrors([owner, friend])
})

test('every page of the run: no console errors or uncaught exceptions beyond the expected refusals', () => {
  const allowed = [...REFUSED_WEBSOCKET, /status of 409/]
  for (const page of pages) {
    const unexpected = page.errors.filter((e) => !allowed.some((re) => re.test(e)))
    assert.deepEqual(unexpected, [], `console errors on ${page.url?.() ?? 'a page'}`)
  }
})
