// The webhook delivery console at /admin (docs/webhooks.md, "The delivery
// console"), driven in a real Chromium by playwright-core against the real
// server and a real receiver (e2e/lib/receiver.js: every delivery checked
// with the `standardwebhooks` verifier), no mocks:
//
// - with an API key, the console asks for it (a wrong one shows the server's
//   error), keeps it for the tab, and forgets it on request; it lists the
//   endpoint; a document created through the API fails at the receiver
//   (500), and the log shows each attempt with its status and error until the
//   endpoint is disabled with its reason; once the receiver answers 200,
//   "Re-enable", "Send test" and "Retry" (the receiver gets the failed
//   message again, with the same webhook-id) work from the page;
// - in dev mode it asks for no key, and shows an endpoint's lag (the age of
//   its oldest pending message) while a delivery hangs;
// - "Recover…" sends the messages an endpoint missed while failing again,
//   with their webhook-ids; skipped while the server has no
//   POST /api/webhooks/{id}/recover (detected at run time);
// - the page never loads the editor's code.
//
// As in browser.test.js, the server is $TANDEM_BIN serving its embedded
// bundle, or TANDEM_TEST_WEB_DIR's folder. Screenshots go to
// e2e/artifacts/admin-*.png.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { Harness } from '../lib/harness.js'
import { Receiver } from '../lib/receiver.js'
import { waitUntil } from '../lib/wait.js'

const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'artifacts')
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const WEB_ENV = process.env.TANDEM_TEST_WEB_DIR ? { TANDEM_WEB_DIR: path.resolve(process.env.TANDEM_TEST_WEB_DIR) } : {}
const FAST = {
  TANDEM_WEBHOOK_ALLOW_PRIVATE: 'true',
  TANDEM_WEBHOOK_RETRY_SCHEDULE: '1s,1s',
  TANDEM_WEBHOOK_DEBOUNCE: '500ms',
  TANDEM_WEBHOOK_MAX_WAIT: '2s'
}
/** Resource errors the console's own calls may log: the key probe (401) and an absent recover (404). */
const EXPECTED_CONSOLE = [/Failed to load resource: the server responded with a status of 40[145]/]

let browser
const cleanups = []

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}: install Debian's chromium or set CHROMIUM_PATH`)
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
})

after(async () => {
  await browser?.close().catch(() => {})
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
})

/** A server (its own database) and a receiver, torn down after the file. */
async function setup ({ apiKey = true, env = {} } = {}) {
  const key = apiKey ? `key-${randomBytes(12).toString('hex')}` : null
  const harness = new Harness({ env: { ...WEB_ENV, ...FAST, ...(key ? { TANDEM_API_KEY: key } : {}), ...env } })
  cleanups.push(() => harness.dispose())
  await harness.start()
  const rx = new Receiver({ name: 'receiver' })
  cleanups.push(() => rx.stop())
  await rx.start()
  const server = harness.server
  const api = async (method, urlPath, body) => {
    const headers = { 'content-type': 'application/json', accept: 'application/json' }
    if (key) headers.authorization = `Bearer ${key}`
    const res = await fetch(`${server.httpUrl}${urlPath}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(10_000) })
    const text = await res.text()
    let parsed = text
    try { parsed = JSON.parse(text) } catch {}
    return { status: res.status, body: parsed }
  }
  const call = async (method, urlPath, expected, body) => {
    const res = await api(method, urlPath, body)
    assert.equal(res.status, expected, `${method} ${urlPath}: ${res.status} ${JSON.stringify(res.body)}\n${server.logs(30)}`)
    return res.body
  }
  const createEndpoint = async () => {
    const ep = await call('POST', '/api/webhooks', 201, { url: rx.url, events: ['*'] })
    rx.addSecret(ep.secret)
    return ep
  }
  const deliveries = async (id) => (await call('GET', `/api/webhooks/${id}/deliveries?limit=200`, 200)).items
  return { key, harness, server, rx, api, call, createEndpoint, deliveries }
}

/** A page in a fresh browser context (its own sessionStorage), recording errors and the scripts it loads. */
async function openConsole (server) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 })
  cleanups.push(() => context.close())
  const page = await context.newPage()
  page.errors = []
  page.scripts = []
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !EXPECTED_CONSOLE.some((re) => re.test(msg.text()))) page.errors.push(`console.error: ${msg.text()}`)
  })
  page.on('pageerror', (err) => page.errors.push(`uncaught: ${err.message}`))
  page.on('response', (res) => { if (/\/assets\/.*\.js$/.test(res.url())) page.scripts.push(res) })
  await page.goto(`${server.httpUrl}/admin`)
  return page
}

const card = (page, id) => page.locator(`.endpoint[data-endpoint="${id}"]`)
const row = (page, id) => page.locator(`.delivery[data-delivery="${id}"]`)

/** Wait until `fn()` (run in the test, reading the page) is truthy. */
function waitPage (page, fn, what, timeoutMs = 20_000) {
  return waitUntil(fn, { timeoutMs, intervalMs: 100, what, describe: async () => (await page.locator('main').innerText().catch(() => '?')).slice(0, 3000) })
}

async function shot (page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `admin-${name}.png`), fullPage: true }).catch(() => {})
}

test('with an API key: the key, the failing endpoint\'s attempts, re-enable, send test and retry', async () => {
  const s = await setup()
  s.rx.setDefault(500)
  const ep = await s.createEndpoint()
  const page = await openConsole(s.server)

  // The console asks for the key and shows nothing else.
  const keyInput = page.getByLabel('API key')
  await keyInput.waitFor()
  assert.equal(await keyInput.getAttribute('type'), 'password')
  assert.equal(await page.locator('.endpoint').count(), 0)

  // A wrong key: the server's own message.
  const refused = await fetch(`${s.server.httpUrl}/api/webhooks`, { headers: { authorization: 'Bearer wrong-key' } })
  assert.equal(refused.status, 401)
  const refusal = (await refused.json()).error.message
  await keyInput.fill('wrong-key')
  await keyInput.press('Enter')
  const alert = page.locator('.key-form [role="alert"]')
  await alert.waitFor()
  assert.match(await alert.innerText(), new RegExp(refusal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
  assert.equal(await page.evaluate(() => sessionStorage.getItem('tandem.apiKey')), null, 'a refused key is not kept')

  // The right key (typed, then Enter): the endpoint, enabled, nothing pending.
  await keyInput.fill(s.key)
  await keyInput.press('Enter')
  await card(page, ep.id).waitFor()
  assert.equal(await card(page, ep.id).locator('.endpoint-url').innerText(), ep.url)
  assert.equal(await card(page, ep.id).locator('.endpoint-state').innerText(), 'Enabled')
  await waitPage(page, async () => (await card(page, ep.id).locator('.endpoint-lag').innerText()) === 'None pending', 'no lag on a new endpoint')
  assert.equal(await page.evaluate(() => sessionStorage.getItem('tandem.apiKey')), s.key, 'the key is kept for this tab')

  // Kept across a reload of the tab: no question asked again.
  await page.reload()
  await card(page, ep.id).waitFor()
  assert.equal(await page.locator('#admin-api-key').count(), 0)

  // Keyboard: Enter on the endpoint's button selects it (its delivery log shows).
  const select = card(page, ep.id).locator('.endpoint-select')
  await select.focus()
  await page.keyboard.press('Enter')
  await page.locator('#delivery-log').waitFor()
  assert.equal(await select.getAttribute('aria-pressed'), 'true')

  // Document activity: document.created fails at the receiver, attempt after attempt.
  const doc = `admin-${randomBytes(4).toString('hex')}`
  await s.call('POST', '/api/docs', 201, { id: doc })
  const created = await waitUntil(async () => (await s.deliveries(ep.id)).find((d) => d.event_type === 'document.created'),
    { timeoutMs: 10_000, what: 'the document.created message in the log' })
  const createdRow = row(page, created.id)
  await createdRow.waitFor({ timeout: 10_000 })
  assert.equal(await createdRow.locator('.delivery-type').innerText(), 'document.created')
  await createdRow.locator('.attempt-failed .attempt-code', { hasText: 'HTTP 500' }).first().waitFor({ timeout: 10_000 })
  assert.match(await createdRow.locator('.attempt-failed .attempt-error').first().innerText(), /500/)

  // Every attempt fails: the message is failed, the endpoint disabled, with its reason.
  await waitPage(page, async () => (await createdRow.getAttribute('data-status')) === 'failed', 'the delivery to show failed')
  await waitPage(page, async () => (await card(page, ep.id).getAttribute('data-enabled')) === 'false', 'the endpoint to show disabled')
  const disabled = await s.call('GET', `/api/webhooks/${ep.id}`, 200)
  assert.equal(disabled.enabled, false)
  assert.equal(await card(page, ep.id).locator('.endpoint-state').innerText(), 'Disabled')
  assert.equal(await card(page, ep.id).locator('.endpoint-reason').innerText(), disabled.disabled_reason)
  const failed = (await s.deliveries(ep.id)).find((d) => d.id === created.id)
  assert.equal(failed.status, 'failed')
  await waitPage(page, async () => (await createdRow.locator('.attempt').count()) === failed.attempts.length, `${failed.attempts.length} attempts shown`)
  // Newest first, each with its time, code, latency and error, as the API has them.
  const shown = await createdRow.locator('.attempt').evaluateAll((els) => els.map((el) => ({
    time: el.querySelector('.attempt-time')?.getAttribute('datetime'),
    code: el.querySelector('.attempt-code')?.textContent,
    latency: el.querySelector('.attempt-latency')?.textContent,
    error: el.querySelector('.attempt-error')?.textContent ?? null
  })))
  assert.deepEqual(shown, [...failed.attempts].reverse().map((a) => ({ time: a.attempted_at, code: `HTTP ${a.status_code}`, latency: `${a.latency_ms} ms`, error: a.error })))
  assert.equal(await createdRow.locator('.retry-button').isVisible(), true, 'a failed delivery has Retry')
  assert.equal(await card(page, ep.id).locator('.test-button').isDisabled(), true, 'no test to a disabled endpoint')
  const idsSeen = s.rx.requests.filter((r) => r.id === created.id).length
  assert.equal(idsSeen, failed.attempts.length, 'the receiver saw each attempt')
  await shot(page, 'failing')

  // The receiver is fixed; Re-enable from the page.
  s.rx.setDefault(200)
  await card(page, ep.id).getByRole('button', { name: 'Re-enable' }).click()
  await waitPage(page, async () => (await card(page, ep.id).getAttribute('data-enabled')) === 'true', 'the endpoint to show enabled')
  assert.equal((await s.call('GET', `/api/webhooks/${ep.id}`, 200)).enabled, true)
  assert.equal(await card(page, ep.id).getByRole('button', { name: 'Re-enable' }).isVisible(), false)

  // Send test: a webhook.test delivery, delivered, shown in the log.
  await card(page, ep.id).getByRole('button', { name: 'Send test' }).click()
  const testMessage = card(page, ep.id).locator('.endpoint-message')
  await waitPage(page, async () => /queued as msg_/.test(await testMessage.innerText()), 'the test to be queued')
  const testId = (await testMessage.innerText()).match(/msg_\w+/)[0]
  const testReceived = await s.rx.waitFor((r) => r.id === testId, { what: 'the test event' })
  assert.equal(testReceived.type, 'webhook.test')
  assert.equal(testReceived.data.endpoint, ep.id)
  await waitPage(page, async () => (await row(page, testId).getAttribute('data-status').catch(() => null)) === 'delivered', 'the test delivery to show delivered')
  assert.equal(await row(page, testId).locator('.attempt-ok .attempt-code').innerText(), 'HTTP 200')

  // Retry the failed message: a new attempt, 200, same webhook-id at the receiver.
  const before = s.rx.requests.length
  await createdRow.getByRole('button', { name: /^Retry/ }).click()
  const again = await s.rx.waitFor((r) => r.seq >= before && r.id === created.id, { what: 'the retried message' })
  assert.equal(again.type, 'document.created')
  assert.equal(again.data.doc, doc)
  assert.deepEqual(again.verifiedWith, [0], 'signed with the endpoint\'s secret')
  await waitPage(page, async () => (await createdRow.getAttribute('data-status')) === 'delivered', 'the retried delivery to show delivered')
  assert.equal(await createdRow.locator('.attempt').count(), failed.attempts.length + 1)
  assert.equal(await createdRow.locator('.attempt').first().locator('.attempt-code').innerText(), 'HTTP 200', 'the newest attempt first')
  assert.equal(await createdRow.locator('.retry-button').isVisible(), false)
  s.rx.assertClean()
  await shot(page, 'recovered')

  // Forget key: back to the question, nothing kept.
  await page.getByRole('button', { name: 'Forget key' }).click()
  await page.locator('#admin-api-key').waitFor()
  assert.equal(await page.evaluate(() => sessionStorage.getItem('tandem.apiKey')), null)
  assert.equal(await page.locator('.endpoint').count(), 0)

  // The console never loaded the editor (Tiptap, ProseMirror, Yjs).
  assert.ok(page.scripts.length >= 2, `scripts loaded: ${page.scripts.map((r) => r.url())}`)
  for (const url of new Set(page.scripts.map((r) => r.url()))) {
    assert.doesNotMatch(await (await fetch(url)).text(), /ProseMirror|prosemirror/, `${url} is editor code`)
  }
  assert.deepEqual(page.errors, [])
})

test('dev mode: no key asked; an endpoint\'s lag while a delivery hangs', async () => {
  const s = await setup({ apiKey: false, env: { TANDEM_WEBHOOK_TIMEOUT: '4s' } })
  const ep = await s.createEndpoint()
  s.rx.respond('hang') // the next request is never answered (the attempt times out), then 200
  const page = await openConsole(s.server)
  await card(page, ep.id).waitFor()
  assert.equal(await page.locator('#admin-api-key').count(), 0, 'no key asked in dev mode')
  assert.equal(await page.getByRole('button', { name: 'Forget key' }).isVisible(), false)
  assert.equal(await page.locator('.admin-mode').isVisible(), true)

  // Send test (from the page: a same-origin JSON call, as dev mode asks); it hangs, so it is pending.
  await card(page, ep.id).getByRole('button', { name: 'Send test' }).click()
  const lag = card(page, ep.id).locator('.endpoint-lag')
  await waitPage(page, async () => /^Lag \d+ s \(1 pending\)$/.test(await lag.innerText()), 'the lag of the pending test', 10_000)
  const testId = (await card(page, ep.id).locator('.endpoint-message').innerText()).match(/msg_\w+/)[0]
  assert.equal(await row(page, testId).getAttribute('data-status'), 'pending')

  // It times out, is retried a second later and delivered: nothing pending any more.
  await s.rx.waitFor((r) => r.id === testId && r.answer === 200, { timeoutMs: 15_000, what: 'the retried test' })
  await waitPage(page, async () => (await lag.innerText()) === 'None pending', 'no lag once delivered')
  await waitPage(page, async () => (await row(page, testId).getAttribute('data-status')) === 'delivered', 'the test to show delivered')
  const codes = await row(page, testId).locator('.attempt-code').allInnerTexts()
  assert.deepEqual(codes, ['HTTP 200', 'no answer'])
  assert.notEqual((await row(page, testId).locator('.attempt-failed .attempt-error').innerText()).trim(), '')
  s.rx.assertClean()
  await shot(page, 'dev')
  assert.deepEqual(page.errors, [])
})

/** Whether the server has POST /api/webhooks/{id}/recover: an unknown endpoint is "no webhook endpoint", an unknown route "no such route". */
async function canRecover (s) {
  const res = await s.api('POST', '/api/webhooks/ep_00000000000000000000000000000000/recover', { since: new Date().toISOString() })
  return !(res.status === 405 || (res.status === 404 && res.body?.error?.message === 'no such route'))
}

test('recover: the messages an endpoint missed go out again with their webhook-ids', async (t) => {
  const s = await setup()
  if (!(await canRecover(s))) {
    // The console's side of an absent endpoint: it says so, and fakes nothing.
    const ep = await s.createEndpoint()
    const page = await openConsole(s.server)
    await page.getByLabel('API key').fill(s.key)
    await page.getByLabel('API key').press('Enter')
    await card(page, ep.id).getByRole('button', { name: 'Recover…' }).click()
    await page.getByRole('button', { name: 'Recover', exact: true }).click()
    await waitPage(page, async () => /cannot recover yet/.test(await card(page, ep.id).locator('.endpoint-message').innerText()), 'the console to say it cannot recover')
    t.skip('needs POST /api/webhooks/{id}/recover')
    return
  }

  s.rx.setDefault(500)
  const ep = await s.createEndpoint()
  // Two documents: their document.created messages fail every attempt; the endpoint is disabled.
  const docs = [`rec-${randomBytes(4).toString('hex')}`, `rec-${randomBytes(4).toString('hex')}`]
  for (const doc of docs) await s.call('POST', '/api/docs', 201, { id: doc })
  await waitUntil(async () => !(await s.call('GET', `/api/webhooks/${ep.id}`, 200)).enabled, { timeoutMs: 15_000, what: 'the endpoint to be disabled' })
  // A third, created while it is disabled: held back.
  docs.push(`rec-${randomBytes(4).toString('hex')}`)
  await s.call('POST', '/api/docs', 201, { id: docs[2] })
  // Failed, or held back since the endpoint was disabled: none delivered.
  const missed = (await s.deliveries(ep.id)).filter((d) => d.event_type === 'document.created')
  assert.equal(missed.length, 3, JSON.stringify(missed))
  assert.ok(missed.some((d) => d.status === 'failed'), JSON.stringify(missed))
  assert.equal(missed.find((d) => d.payload.data.doc === docs[2])?.status, 'held', JSON.stringify(missed))
  assert.ok(missed.every((d) => d.status !== 'delivered'), JSON.stringify(missed))
  const held = missed.filter((d) => d.status === 'held').length

  // The receiver is fixed; Recover from the console (since its default, 24 h ago), then Re-enable.
  s.rx.setDefault(200)
  const page = await openConsole(s.server)
  await page.getByLabel('API key').fill(s.key)
  await page.getByLabel('API key').press('Enter')
  await waitPage(page, async () => (await card(page, ep.id).getAttribute('data-enabled').catch(() => null)) === 'false', 'the endpoint to show disabled')
  const heldNote = card(page, ep.id).locator('.endpoint-held')
  await waitPage(page, async () => (await heldNote.innerText().catch(() => '')) === `${held} held back (Recover sends them)`, 'the held messages to show')
  await card(page, ep.id).getByRole('button', { name: 'Recover…' }).click()
  const since = card(page, ep.id).getByLabel(/since/)
  const defaultSince = Date.parse(await since.inputValue()) // local time, as the input shows it
  assert.ok(Math.abs(Date.now() - 24 * 3600_000 - defaultSince) < 120_000, `default since ${await since.inputValue()}`)
  await page.getByRole('button', { name: 'Recover', exact: true }).click()
  const message = card(page, ep.id).locator('.endpoint-message')
  await waitPage(page, async () => /queued again/.test(await message.innerText()), 'the recover result')
  const count = Number((await message.innerText()).match(/(\d+) messages? queued again/)[1])
  const failedCount = missed.filter((d) => d.status !== 'pending').length
  assert.ok(count >= failedCount, `${count} messages recovered, ${failedCount} failed or held`)
  await card(page, ep.id).getByRole('button', { name: 'Re-enable' }).click()

  for (const d of missed) {
    const got = await s.rx.waitFor((r) => r.id === d.id && r.answer === 200, { timeoutMs: 15_000, what: `${d.id} delivered again` })
    assert.equal(got.type, 'document.created')
    assert.ok(docs.includes(got.data.doc))
  }
  await page.locator('.endpoint-select').click()
  for (const d of missed) {
    await waitPage(page, async () => (await row(page, d.id).getAttribute('data-status').catch(() => null)) === 'delivered', `${d.id} to show delivered`)
  }
  s.rx.assertClean()
  await shot(page, 'recover')
  assert.deepEqual(page.errors, [])
})
