// The webhook delivery console, /admin (docs/webhooks.md, "The delivery
// console"): the endpoints with their state and lag, each one's delivery log
// with every attempt, and the calls an operator makes by hand: send a test,
// re-enable, retry a failed message, recover the messages of a time window.
//
// It uses the admin API as any client does. With an API key, the page asks
// for it and keeps it in sessionStorage (this tab only, gone when it closes);
// in dev mode (GET /api/webhooks answers without a key) it asks nothing.
// What is shown is asked again every 5 s while the page is visible; the DOM
// nodes of endpoints and deliveries are kept and updated in place, so that a
// refresh never takes the focus away from a button or a field.
//
// This module must not import the editor (editor.js, Tiptap, Yjs): the entry
// loads it as a chunk of its own.

import { h, logo, setChildren } from './dom.js'
import { icons } from './icons.js'

const KEY_STORAGE = 'tandem.apiKey'
const REFRESH_MS = 5000
const LOG_PAGE = 25
const MAX_PAGE = 200
/** Pages of pending messages read to find an endpoint's oldest one. */
const LAG_PAGES = 5

export function mountAdmin (root) {
  document.title = 'Webhooks · Tandem'
  root.className = 'app app-admin'
  const forget = h('button', { type: 'button', class: 'button button-ghost forget-key', hidden: true }, 'Forget key')
  const mode = h('span', { class: 'badge badge-readonly admin-mode', hidden: true }, 'Dev mode: no key needed')
  const content = h('div', { class: 'admin-content' }, h('div', { class: 'loading' }, 'Loading…'))
  setChildren(root,
    h('header', { class: 'topbar' },
      h('div', { class: 'topbar-inner' },
        h('a', { class: 'brand', href: '/' }, logo(26), h('span', { class: 'brand-name' }, 'Tandem')),
        h('span', { class: 'crumb-sep', 'aria-hidden': 'true' }, '/'),
        h('h1', { class: 'doc-title' }, 'Webhook deliveries'),
        h('div', { class: 'spacer' }),
        mode,
        forget,
        h('a', { class: 'topbar-link', href: '/api/openapi.json' }, 'API'))),
    h('main', { class: 'page page-admin' }, content))

  const session = { key: storedKey(), console: null }

  const showKeyForm = (error) => {
    session.console?.stop()
    session.console = null
    forget.hidden = true
    mode.hidden = true
    setChildren(content, keyForm(error, async (key) => {
      const res = await call('GET', '/api/webhooks', { key })
      if (res.status === 200) {
        storeKey(key)
        session.key = key
        open(res.body)
        return null
      }
      return res.status === 401 || res.status === 403 ? `The key was refused: ${res.message}` : res.message
    }))
  }

  const open = (list) => {
    forget.hidden = !session.key
    mode.hidden = !!session.key
    session.console = new Console(content, session.key, (why) => {
      storeKey(null)
      session.key = null
      showKeyForm(why)
    })
    session.console.start(list)
  }

  forget.addEventListener('click', () => {
    storeKey(null)
    session.key = null
    showKeyForm(null)
  })

  ;(async () => {
    // With a key from this tab, use it; without one, an answer without a key says dev mode.
    const res = await call('GET', '/api/webhooks', { key: session.key })
    if (res.status === 200) return open(res.body)
    if (res.status === 401 || res.status === 403) {
      const had = session.key
      storeKey(null)
      session.key = null
      return showKeyForm(had ? `The saved key was refused: ${res.message}` : null)
    }
    setChildren(content, notice('error', res.status === 0 ? 'Cannot reach the server' : 'Could not list the webhook endpoints', res.message))
  })()
}

function keyForm (error, submit) {
  const input = h('input', {
    id: 'admin-api-key',
    class: 'text-input',
    type: 'password',
    name: 'api-key',
    autocomplete: 'current-password',
    spellcheck: 'false',
    required: true
  })
  const button = h('button', { type: 'submit', class: 'button button-primary' }, 'Open the console')
  const message = h('p', { class: 'form-message', role: 'alert', hidden: !error }, error || '')
  const form = h('form', { class: 'create-form key-form' },
    // For password managers (and Chrome's advice): whose password this is.
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'tandem-api-key', hidden: true, 'aria-hidden': 'true', tabindex: '-1' }),
    h('label', { class: 'field-label', for: 'admin-api-key' }, 'API key'),
    h('div', { class: 'create-row' }, input, button),
    h('p', { class: 'muted field-hint' }, 'The server’s TANDEM_API_KEY. It stays in this tab only (session storage) and goes to the server as a bearer token.'),
    message)
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    const key = input.value.trim()
    if (!key) return
    button.disabled = true
    message.hidden = true
    try {
      const problem = await submit(key)
      if (problem) {
        message.textContent = problem
        message.hidden = false
        input.select()
      }
    } finally {
      button.disabled = false
    }
  })
  queueMicrotask(() => input.focus())
  return [
    h('section', { class: 'hero' },
      h('span', { class: 'hero-icon', html: icons.key }),
      h('h2', {}, 'Webhook delivery console'),
      h('p', { class: 'lede' }, 'See what each webhook endpoint was sent, every attempt and its answer; retry, re-enable and recover. This server needs its API key.')),
    form
  ]
}

/** The console proper: endpoints above, the chosen one's delivery log below. */
class Console {
  constructor (content, key, onRefused) {
    this.key = key
    this.onRefused = onRefused
    this.cards = new Map() // endpoint id -> EndpointCard
    this.selected = null // endpoint id
    this.log = null // DeliveryLog of the selected endpoint
    this.timer = null
    this.busy = false

    this.count = h('span', { class: 'section-count' })
    this.list = h('ul', { class: 'endpoint-list', 'aria-label': 'Webhook endpoints' })
    this.empty = h('div', { class: 'empty', hidden: true },
      h('span', { class: 'empty-icon', html: icons.doc }),
      h('strong', {}, 'No webhook endpoints'),
      h('span', {}, 'Register one with POST /api/webhooks (see docs/webhooks.md).'))
    this.status = h('span', { class: 'admin-refresh-note', role: 'status' })
    const refresh = h('button', { type: 'button', class: 'button button-secondary refresh-button' }, 'Refresh')
    refresh.addEventListener('click', () => this.refresh({ manual: true }))
    this.logHost = h('section', { class: 'delivery-section', id: 'delivery-log', 'aria-labelledby': 'delivery-log-title', hidden: true })

    setChildren(content,
      h('section', { class: 'endpoint-section' },
        h('div', { class: 'section-head' }, h('h2', {}, 'Endpoints'), this.count, h('div', { class: 'spacer' }), this.status, refresh),
        this.list, this.empty),
      this.logHost)

    this.onVisible = () => { if (!document.hidden) this.refresh() }
  }

  start (list) {
    this.render(list.items ?? [])
    const wanted = decodeURIComponent(location.hash.slice(1))
    const first = this.cards.has(wanted) ? wanted : null
    if (first) this.select(first)
    this.refreshLags()
    document.addEventListener('visibilitychange', this.onVisible)
    this.timer = setInterval(() => { if (!document.hidden) this.refresh() }, REFRESH_MS)
  }

  stop () {
    clearInterval(this.timer)
    document.removeEventListener('visibilitychange', this.onVisible)
    this.stopped = true
  }

  /** A call with this console's key; a refused key ends the console. */
  async call (method, path, body) {
    const res = await call(method, path, { key: this.key, body })
    if (res.status === 401 && !this.stopped) {
      this.stop()
      this.onRefused(`The key was refused: ${res.message}`)
    }
    return res
  }

  /** Ask for everything shown again; a call while one runs makes it run once more after. */
  async refresh ({ manual = false } = {}) {
    if (this.stopped) return
    if (this.busy) {
      this.again = true
      return
    }
    this.busy = true
    try {
      const res = await this.call('GET', '/api/webhooks')
      if (this.stopped) return
      if (res.status !== 200) {
        this.status.textContent = `Refresh failed: ${res.message}`
        this.status.dataset.kind = 'error'
        return
      }
      this.render(res.body.items ?? [])
      await Promise.all([this.refreshLags(), this.log?.refresh()])
      this.status.textContent = manual ? 'Up to date' : ''
      delete this.status.dataset.kind
    } finally {
      this.busy = false
      if (this.again) {
        this.again = false
        this.refresh()
      }
    }
  }

  render (items) {
    const seen = new Set()
    let prev = null
    for (const ep of items) {
      seen.add(ep.id)
      let card = this.cards.get(ep.id)
      if (!card) {
        card = new EndpointCard(this, ep)
        this.cards.set(ep.id, card)
      }
      card.update(ep)
      // Move a node only when it is out of place: moving one blurs what it holds.
      const want = prev ? prev.nextSibling : this.list.firstChild
      if (want !== card.el) this.list.insertBefore(card.el, want)
      prev = card.el
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.el.remove()
        this.cards.delete(id)
        if (this.selected === id) this.select(null)
      }
    }
    this.count.textContent = items.length ? String(items.length) : ''
    this.empty.hidden = items.length > 0
    this.list.hidden = items.length === 0
  }

  refreshLags () {
    return Promise.all([...this.cards.values()].map((card) => card.refreshLag()))
  }

  select (id) {
    if (this.selected === id) return
    this.selected = id
    for (const [cid, card] of this.cards) card.setSelected(cid === id)
    history.replaceState(null, '', id ? `#${encodeURIComponent(id)}` : location.pathname)
    if (!id) {
      this.log = null
      this.logHost.hidden = true
      setChildren(this.logHost)
      return
    }
    this.log = new DeliveryLog(this, this.cards.get(id).endpoint, this.logHost)
    this.logHost.hidden = false
    this.log.refresh()
  }
}

/** One endpoint: its state, lag and actions. Built once, updated in place. */
class EndpointCard {
  constructor (console, ep) {
    this.console = console
    this.endpoint = ep
    const id = ep.id
    this.url = h('span', { class: 'endpoint-url' })
    this.selectButton = h('button', { type: 'button', class: 'endpoint-select', 'aria-pressed': 'false', 'aria-controls': 'delivery-log', title: 'Show its delivery log' }, this.url)
    this.selectButton.addEventListener('click', () => console.select(console.selected === id ? null : id))
    this.state = h('span', { class: 'badge endpoint-state' })
    this.reason = h('p', { class: 'endpoint-reason' })
    this.events = h('span', { class: 'endpoint-events' })
    this.lag = h('span', { class: 'endpoint-lag' }, 'Pending: …')
    this.held = h('span', { class: 'endpoint-held', hidden: true })
    this.prefix = h('span', { class: 'endpoint-prefix', hidden: true })
    this.idText = h('code', { class: 'endpoint-id' }, id)
    this.description = h('span', { class: 'endpoint-description' })

    this.testButton = h('button', { type: 'button', class: 'button button-secondary button-small test-button' }, 'Send test')
    this.enableButton = h('button', { type: 'button', class: 'button button-primary button-small enable-button' }, 'Re-enable')
    this.recoverButton = h('button', { type: 'button', class: 'button button-secondary button-small recover-button', 'aria-expanded': 'false' }, 'Recover…')
    this.message = h('p', { class: 'admin-message endpoint-message', role: 'status', hidden: true })
    this.recoverForm = this.buildRecoverForm()

    this.testButton.addEventListener('click', () => this.sendTest())
    this.enableButton.addEventListener('click', () => this.enable())
    this.recoverButton.addEventListener('click', () => this.toggleRecover())

    this.el = h('li', { class: 'endpoint', 'data-endpoint': id },
      h('div', { class: 'endpoint-head' }, this.selectButton, this.state),
      h('div', { class: 'endpoint-meta' }, this.idText, this.events, this.prefix, this.lag, this.held, this.description),
      this.reason,
      h('div', { class: 'endpoint-actions' }, this.testButton, this.enableButton, this.recoverButton),
      this.recoverForm,
      this.message)
  }

  update (ep) {
    this.endpoint = ep
    this.url.textContent = ep.url
    this.el.dataset.enabled = String(ep.enabled)
    this.state.textContent = ep.enabled ? 'Enabled' : 'Disabled'
    this.state.className = `badge endpoint-state ${ep.enabled ? 'badge-ok' : 'badge-bad'}`
    this.reason.textContent = ep.enabled ? '' : (ep.disabled_reason || 'Disabled (no reason given)')
    this.reason.hidden = ep.enabled
    this.events.textContent = `Events: ${(ep.events ?? []).join(', ') || 'none'}`
    this.prefix.textContent = ep.doc_prefix ? `Documents: ${ep.doc_prefix}…` : ''
    this.prefix.hidden = !ep.doc_prefix
    this.description.textContent = ep.description ?? ''
    this.description.hidden = !ep.description
    this.enableButton.hidden = ep.enabled
    this.testButton.disabled = !ep.enabled
    this.testButton.title = ep.enabled ? '' : 'Re-enable the endpoint first'
  }

  setSelected (on) {
    this.selectButton.setAttribute('aria-pressed', String(on))
    this.el.classList.toggle('is-selected', on)
  }

  say (kind, text) {
    this.message.dataset.kind = kind
    this.message.textContent = text
    this.message.hidden = false
  }

  /** The age of the oldest pending message, from the delivery log (pending ones, oldest last). */
  async refreshLag () {
    const id = this.endpoint.id
    let oldest = null
    let count = 0
    let cursor = null
    let pages = 0
    do {
      const q = `status=pending&limit=${MAX_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
      const res = await this.console.call('GET', `/api/webhooks/${encodeURIComponent(id)}/deliveries?${q}`)
      if (res.status !== 200) {
        this.lag.textContent = 'Pending: unknown'
        this.lag.title = res.message
        return
      }
      const items = res.body.items ?? []
      count += items.length
      if (items.length) oldest = items[items.length - 1].created_at
      cursor = res.body.next_cursor
      pages++
    } while (cursor && pages < LAG_PAGES)
    this.lag.dataset.pending = String(count)
    this.lag.title = oldest ? `Oldest pending message created ${formatTime(oldest)}` : ''
    this.lag.dataset.lag = oldest ? 'pending' : 'none'
    this.lag.textContent = oldest
      ? `Lag ${formatAge(Date.now() - Date.parse(oldest))} (${count}${cursor ? '+' : ''} pending)`
      : 'None pending'
    await this.refreshHeld()
  }

  /** How many messages were held back while the endpoint was disabled (Recover sends them). */
  async refreshHeld () {
    const res = await this.console.call('GET', `/api/webhooks/${encodeURIComponent(this.endpoint.id)}/deliveries?status=held&limit=${MAX_PAGE}`)
    if (res.status !== 200) return
    const n = (res.body.items ?? []).length
    this.held.dataset.held = String(n)
    this.held.textContent = n ? `${n}${res.body.next_cursor ? '+' : ''} held back (Recover sends them)` : ''
    this.held.hidden = n === 0
  }

  async sendTest () {
    this.testButton.disabled = true
    try {
      const res = await this.console.call('POST', `/api/webhooks/${encodeURIComponent(this.endpoint.id)}/test`, {})
      if (res.status === 202) {
        this.say('ok', `Test event queued as ${res.body.delivery}.`)
        this.console.select(this.endpoint.id)
        await this.console.refresh()
      } else {
        this.say('error', `Send test failed: ${res.message}`)
      }
    } finally {
      this.testButton.disabled = !this.endpoint.enabled
    }
  }

  async enable () {
    this.enableButton.disabled = true
    try {
      const res = await this.console.call('PATCH', `/api/webhooks/${encodeURIComponent(this.endpoint.id)}`, { enabled: true })
      if (res.status === 200) {
        this.update(res.body)
        this.say('ok', 'Re-enabled: messages to it are sent again.')
        this.testButton.focus()
        await this.console.refresh()
      } else {
        this.say('error', `Re-enable failed: ${res.message}`)
      }
    } finally {
      this.enableButton.disabled = false
    }
  }

  buildRecoverForm () {
    const inputId = `recover-since-${this.endpoint.id}`
    this.sinceInput = h('input', { id: inputId, class: 'text-input recover-since', type: 'datetime-local', step: '1', required: true })
    const submit = h('button', { type: 'submit', class: 'button button-primary button-small' }, 'Recover')
    const cancel = h('button', { type: 'button', class: 'button button-ghost button-small' }, 'Cancel')
    cancel.addEventListener('click', () => this.toggleRecover(false))
    const form = h('form', { class: 'recover-form', hidden: true },
      h('label', { class: 'field-label', for: inputId }, 'Send again the messages that failed (or were held back) since'),
      h('div', { class: 'recover-row' }, this.sinceInput, submit, cancel),
      h('p', { class: 'muted field-hint' }, 'Each goes out with its original webhook-id, so receivers can tell a repeat. Your local time.'))
    form.addEventListener('submit', async (e) => {
      e.preventDefault()
      const since = new Date(this.sinceInput.value)
      if (Number.isNaN(since.getTime())) {
        this.say('error', 'Choose a date and time.')
        return
      }
      submit.disabled = true
      try {
        await this.recover(since)
      } finally {
        submit.disabled = false
      }
    })
    form.addEventListener('keydown', (e) => { if (e.key === 'Escape') this.toggleRecover(false) })
    return form
  }

  toggleRecover (open = this.recoverForm.hidden) {
    this.recoverForm.hidden = !open
    this.recoverButton.setAttribute('aria-expanded', String(open))
    if (open) {
      this.sinceInput.value = localInputValue(new Date(Date.now() - 24 * 3600 * 1000))
      this.sinceInput.focus()
    } else {
      this.recoverButton.focus()
    }
  }

  async recover (since) {
    const res = await this.console.call('POST', `/api/webhooks/${encodeURIComponent(this.endpoint.id)}/recover`, { since: since.toISOString() })
    if (res.status === 202 || res.status === 200) {
      const n = res.body?.messages ?? 0
      const waiting = this.endpoint.enabled ? '' : ' They wait until the endpoint is re-enabled.'
      this.say('ok', `${n} ${n === 1 ? 'message' : 'messages'} queued again.${waiting}`)
      this.recoverForm.hidden = true
      this.recoverButton.setAttribute('aria-expanded', 'false')
      this.recoverButton.focus()
      await this.console.refresh()
    } else if (res.status === 405 || (res.status === 404 && !/webhook endpoint/i.test(res.message))) {
      this.say('error', 'This server cannot recover yet: it has no POST /api/webhooks/{id}/recover. Upgrade it, or retry failed deliveries one by one.')
    } else {
      this.say('error', `Recover failed: ${res.message}`)
    }
  }
}

/** The delivery log of one endpoint, newest first, paged with "Load more". */
class DeliveryLog {
  constructor (console, ep, host) {
    this.console = console
    this.endpoint = ep
    this.rows = new Map() // message id -> DeliveryRow
    this.cursor = null
    this.list = h('ol', { class: 'delivery-list', 'aria-label': 'Deliveries, newest first' })
    this.empty = h('p', { class: 'history-empty', hidden: true }, 'Nothing sent to this endpoint yet.')
    this.error = h('p', { class: 'admin-message', 'data-kind': 'error', role: 'alert', hidden: true })
    this.more = h('button', { type: 'button', class: 'button button-secondary load-more', hidden: true }, 'Load more')
    this.more.addEventListener('click', () => this.loadMore())
    setChildren(host,
      h('div', { class: 'section-head' },
        h('h2', { id: 'delivery-log-title', tabindex: '-1' }, 'Delivery log'),
        h('span', { class: 'delivery-log-url' }, ep.url)),
      this.error,
      this.list, this.empty, this.more)
  }

  path (query) {
    return `/api/webhooks/${encodeURIComponent(this.endpoint.id)}/deliveries?${query}`
  }

  /** Ask again for the newest page, as long as what is shown (up to MAX_PAGE). */
  async refresh () {
    const shown = this.rows.size
    const limit = Math.min(MAX_PAGE, Math.max(LOG_PAGE, shown))
    const res = await this.console.call('GET', this.path(`limit=${limit}`))
    if (this !== this.console.log) return
    if (res.status !== 200) {
      this.error.textContent = `Could not read the delivery log: ${res.message}`
      this.error.hidden = false
      return
    }
    this.error.hidden = true
    const items = res.body.items ?? []
    const keepOlder = shown > MAX_PAGE // rows loaded past the first MAX_PAGE stay as they are
    const fresh = new Set(items.map((d) => d.id))
    let prev = null
    for (const d of items) {
      prev = this.place(d, prev)
    }
    if (!keepOlder) {
      for (const [id, row] of this.rows) {
        if (!fresh.has(id)) {
          row.el.remove()
          this.rows.delete(id)
        }
      }
      this.cursor = res.body.next_cursor
    }
    this.done()
  }

  async loadMore () {
    if (!this.cursor) return
    this.more.disabled = true
    try {
      const res = await this.console.call('GET', this.path(`limit=${LOG_PAGE}&cursor=${encodeURIComponent(this.cursor)}`))
      if (res.status !== 200) {
        this.error.textContent = `Could not read more of the log: ${res.message}`
        this.error.hidden = false
        return
      }
      let prev = this.list.lastChild
      for (const d of res.body.items ?? []) prev = this.place(d, prev)
      this.cursor = res.body.next_cursor
      this.done()
    } finally {
      this.more.disabled = false
    }
  }

  /** Show `d` right after the node `prev` (null: first); returns its node. */
  place (d, prev) {
    let row = this.rows.get(d.id)
    if (!row) {
      row = new DeliveryRow(this, d)
      this.rows.set(d.id, row)
    }
    row.update(d)
    const want = prev ? prev.nextSibling : this.list.firstChild
    if (want !== row.el) this.list.insertBefore(row.el, want)
    return row.el
  }

  done () {
    this.empty.hidden = this.rows.size > 0
    this.more.hidden = !this.cursor
  }
}

class DeliveryRow {
  constructor (log, d) {
    this.log = log
    this.type = h('span', { class: 'delivery-type' })
    this.status = h('span', { class: 'badge delivery-status' })
    this.created = h('time', { class: 'delivery-time' })
    this.id = h('code', { class: 'delivery-id', title: 'webhook-id' }, d.id)
    this.next = h('span', { class: 'delivery-next' })
    this.attempts = h('ol', { class: 'attempt-list', reversed: true })
    this.payload = h('pre', { class: 'code delivery-payload' })
    this.retry = h('button', { type: 'button', class: 'button button-secondary button-small retry-button', 'aria-label': `Retry ${d.event_type} ${d.id}` }, 'Retry')
    this.message = h('p', { class: 'admin-message', role: 'status', hidden: true })
    this.retry.addEventListener('click', () => this.retryNow())
    this.el = h('li', { class: 'delivery', 'data-delivery': d.id },
      h('div', { class: 'delivery-head' }, this.type, this.status, this.created, this.id, h('div', { class: 'spacer' }), this.retry),
      this.next,
      this.attempts,
      h('details', { class: 'delivery-details' }, h('summary', {}, 'Payload'), this.payload),
      this.message)
  }

  update (d) {
    this.d = d
    this.el.dataset.status = d.status
    this.type.textContent = d.event_type
    this.status.textContent = d.status
    this.status.className = `badge delivery-status ${d.status === 'delivered' ? 'badge-ok' : d.status === 'failed' ? 'badge-bad' : 'badge-wait'}`
    this.created.dateTime = d.created_at
    this.created.textContent = formatTime(d.created_at)
    this.created.title = `Created ${d.created_at}`
    this.next.textContent = d.status === 'pending' && d.next_attempt_at ? `Next attempt ${formatTime(d.next_attempt_at)}` : ''
    this.next.hidden = !this.next.textContent
    this.retry.hidden = d.status !== 'failed'
    const payload = JSON.stringify(d.payload, null, 2)
    if (this.payload.textContent !== payload) this.payload.textContent = payload
    const attempts = [...(d.attempts ?? [])].reverse() // the API lists them oldest first
    setChildren(this.attempts, attempts.length === 0
      ? h('li', { class: 'attempt attempt-none' }, 'No attempt yet')
      : attempts.map((a) => {
        const ok = a.status_code !== null && a.status_code !== undefined && a.status_code >= 200 && a.status_code < 300
        return h('li', { class: `attempt ${ok ? 'attempt-ok' : 'attempt-failed'}` },
          h('time', { class: 'attempt-time', datetime: a.attempted_at, title: a.attempted_at }, formatTime(a.attempted_at)),
          h('span', { class: 'attempt-code' }, a.status_code === null || a.status_code === undefined ? 'no answer' : `HTTP ${a.status_code}`),
          h('span', { class: 'attempt-latency' }, `${a.latency_ms} ms`),
          a.error ? h('span', { class: 'attempt-error' }, a.error) : null,
          a.next_retry_at ? h('span', { class: 'attempt-retry' }, `retry ${formatTime(a.next_retry_at)}`) : null)
      }))
  }

  async retryNow () {
    const ep = this.log.endpoint
    this.retry.disabled = true
    try {
      const res = await this.log.console.call('POST', `/api/webhooks/${encodeURIComponent(ep.id)}/deliveries/${encodeURIComponent(this.d.id)}/retry`, {})
      if (res.status === 202) {
        this.message.dataset.kind = 'ok'
        this.message.textContent = 'Queued: it is sent again now, with the same webhook-id.'
        this.message.hidden = false
        await this.log.console.refresh()
      } else {
        this.message.dataset.kind = 'error'
        this.message.textContent = `Retry failed: ${res.message}`
        this.message.hidden = false
      }
    } finally {
      this.retry.disabled = false
    }
  }
}

// ---- helpers ------------------------------------------------------------------------

/**
 * One API call: resolves to { status, body, message } (status 0 when the
 * server cannot be reached; message: the server's error message, or a sentence).
 * State-changing calls send JSON, which dev mode asks for.
 */
async function call (method, path, { key, body } = {}) {
  const headers = { accept: 'application/json' }
  if (key) headers.authorization = `Bearer ${key}`
  if (method !== 'GET') headers['content-type'] = 'application/json'
  let res
  try {
    res = await fetch(path, { method, headers, body: method === 'GET' ? undefined : JSON.stringify(body ?? {}), cache: 'no-store' })
  } catch {
    return { status: 0, body: null, message: 'Cannot reach the server.' }
  }
  let parsed = null
  try { parsed = await res.json() } catch {}
  const message = parsed?.error?.message ?? (res.ok ? '' : `The server answered ${res.status}.`)
  return { status: res.status, body: parsed, message }
}

function storedKey () {
  try { return sessionStorage.getItem(KEY_STORAGE) } catch { return null }
}

function storeKey (key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key)
    else sessionStorage.removeItem(KEY_STORAGE)
  } catch {}
}

function notice (kind, title, text) {
  return h('div', { class: `notice notice-${kind}`, role: 'alert' },
    h('div', { class: 'notice-body' }, h('strong', { class: 'notice-title' }, title), h('span', { class: 'notice-text' }, text)))
}

const TIME = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' })

function formatTime (iso) {
  const t = Date.parse(iso)
  return Number.isFinite(t) ? TIME.format(t) : String(iso ?? '')
}

/** "4 s", "12 min", "3 h", "2 d". */
export function formatAge (ms) {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round(s / 60)} min`
  if (s < 172800) return `${Math.round(s / 3600)} h`
  return `${Math.round(s / 86400)} d`
}

/** A Date as a datetime-local input's value (local time, to the second). */
function localInputValue (date) {
  const p = (n) => String(n).padStart(2, '0')
  return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}T${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`
}
