// The start page, /: the documents on this server and a way to start one
// (dev mode). With an API key set, the admin API is not for browsers: the
// page explains how a backend hands out document links instead.

import { h, logo, setChildren } from './dom.js'
import { icons } from './icons.js'
import { DOC_NAME } from './doc-name.js'

const PAGE_SIZE = 50

export function mountHome (root) {
  document.title = 'Tandem'
  root.className = 'app app-home'

  const content = h('div', { class: 'home-content' }, h('div', { class: 'loading' }, 'Loading documents…'))
  setChildren(root,
    h('header', { class: 'topbar' },
      h('div', { class: 'topbar-inner' },
        h('a', { class: 'brand', href: '/' }, logo(26), h('span', { class: 'brand-name' }, 'Tandem')),
        h('div', { class: 'spacer' }),
        h('a', { class: 'topbar-link', href: '/api/openapi.json' }, 'API'))),
    h('main', { class: 'page page-home' }, content))

  load(content)
}

async function load (content) {
  let res
  try {
    // /healthz says whether the API needs a key, so the page never makes a call bound to fail
    const health = await fetch('/healthz').then((r) => r.json()).catch(() => ({}))
    if (health.auth === 'api_key') {
      setChildren(content, ...protectedExplanation())
      return
    }
    res = await fetch(`/api/docs?limit=${PAGE_SIZE}`, { headers: { accept: 'application/json' } })
  } catch {
    setChildren(content, h('div', { class: 'notice notice-error' },
      h('div', { class: 'notice-body' }, h('strong', { class: 'notice-title' }, 'Cannot reach the server'), h('span', { class: 'notice-text' }, 'Check that Tandem is running, then reload this page.'))))
    return
  }
  if (res.status === 401 || res.status === 403) {
    setChildren(content, ...protectedExplanation())
    return
  }
  if (!res.ok) {
    setChildren(content, h('div', { class: 'notice notice-error' },
      h('div', { class: 'notice-body' }, h('strong', { class: 'notice-title' }, 'Could not list documents'), h('span', { class: 'notice-text' }, await errorMessage(res)))))
    return
  }
  const page = await res.json()
  const list = h('ul', { class: 'doc-list' })
  const empty = h('div', { class: 'empty' },
    h('span', { class: 'empty-icon', html: icons.doc }),
    h('strong', {}, 'No documents yet'),
    h('span', {}, 'Create the first one above, or open any /d/name URL.'))
  const more = h('button', { type: 'button', class: 'button button-secondary load-more', hidden: true }, 'Show more')
  const count = h('span', { class: 'section-count' })

  let total = 0
  const addPage = (data) => {
    const items = data.items ?? data.documents ?? []
    for (const item of items) list.append(docRow(item))
    total += items.length
    count.textContent = total ? String(total) + (data.next_cursor ? '+' : '') : ''
    empty.hidden = total > 0
    list.hidden = total === 0
    more.hidden = !data.next_cursor
    more.dataset.cursor = data.next_cursor || ''
  }
  more.addEventListener('click', async () => {
    more.disabled = true
    try {
      const r = await fetch(`/api/docs?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(more.dataset.cursor)}`)
      if (r.ok) addPage(await r.json())
    } finally {
      more.disabled = false
    }
  })

  setChildren(content,
    h('section', { class: 'hero' },
      h('h1', {}, 'Documents'),
      h('p', { class: 'lede' }, 'Write together in real time. Everything is saved on this server as you type.')),
    createForm(),
    h('section', { class: 'doc-section' },
      h('div', { class: 'section-head' }, h('h2', {}, 'All documents'), count),
      list, empty, more))
  addPage(page)
}

function createForm () {
  const input = h('input', {
    id: 'new-doc-name',
    class: 'text-input',
    type: 'text',
    placeholder: 'Name (optional), e.g. team-notes',
    'aria-label': 'New document name',
    autocomplete: 'off',
    spellcheck: 'false',
    maxlength: '255'
  })
  const button = h('button', { type: 'submit', class: 'button button-primary create-button', html: icons.plus + '<span>New document</span>' })
  const message = h('p', { class: 'form-message', hidden: true, role: 'alert' })
  const form = h('form', { class: 'create-form' }, h('div', { class: 'create-row' }, input, button), message)

  const say = (...parts) => {
    message.hidden = false
    setChildren(message, ...parts)
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    const id = input.value.trim()
    if (id && !DOC_NAME.test(id)) {
      say('Use 1–255 letters, digits and - _ . ~ : @ (no spaces).')
      return
    }
    button.disabled = true
    try {
      const res = await fetch('/api/docs', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(id ? { id } : {})
      })
      if (res.status === 201 || res.status === 200) {
        const created = await res.json().catch(() => ({}))
        location.assign(docHref(created.id ?? id))
        return
      }
      if (res.status === 409) {
        say('A document with this name exists already. ', h('a', { href: docHref(id) }, 'Open it'))
      } else {
        say(await errorMessage(res))
      }
    } catch {
      say('Cannot reach the server.')
    } finally {
      button.disabled = false
    }
  })
  return form
}

function docRow (item) {
  const meta = [`Edited ${relativeTime(item.updated_at)}`, formatBytes(item.size_bytes)].filter(Boolean).join(' · ')
  return h('li', {},
    h('a', { class: 'doc-row', href: docHref(item.id) },
      h('span', { class: 'doc-icon', html: icons.doc }),
      h('span', { class: 'doc-main' },
        h('span', { class: 'doc-name' }, item.id),
        h('span', { class: 'doc-meta' }, meta)),
      item.clients > 0
        ? h('span', { class: 'live-count presence-count', title: `${item.clients} connected now` }, h('span', { class: 'status-dot' }), `${item.clients} here`)
        : null))
}

function protectedExplanation () {
  const origin = location.origin
  const mint = `curl -X POST ${origin}/api/tokens \\
  -H "Authorization: Bearer $TANDEM_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"doc": "team-notes", "perm": "write", "ttl_secs": 3600,
       "sub": "user-42", "name": "Ada"}'`
  const reply = '{"token": "eyJhbGciOiJIUzI1NiIs…", "expires_at": "…"}'
  const link = `${origin}/d/team-notes?token=eyJhbGciOiJIUzI1NiIs…`
  return [
    h('section', { class: 'hero' },
      h('span', { class: 'hero-icon', html: icons.key }),
      h('h1', {}, 'This server is protected'),
      h('p', { class: 'lede' }, 'An API key is set, so documents open through links that your application hands out. Each link carries a short-lived token saying which document it opens and whether it may edit.')),
    h('ol', { class: 'steps' },
      h('li', {},
        h('h2', {}, 'Your backend mints a token'),
        h('p', {}, 'After checking who the user is, call the admin API with the API key (never send the key to a browser). Use ', h('code', {}, '"perm": "read"'), ' for a view-only link.'),
        h('pre', { class: 'code' }, h('code', {}, mint)),
        h('p', { class: 'muted' }, 'It answers:'),
        h('pre', { class: 'code' }, h('code', {}, reply))),
      h('li', {},
        h('h2', {}, 'It links the user to the document'),
        h('p', {}, 'Open ', h('code', {}, '/d/{document}?token={token}'), ': the editor passes the token to the live connection.'),
        h('pre', { class: 'code' }, h('code', {}, link))),
      h('li', {},
        h('h2', {}, 'Or signs tokens itself'),
        h('p', {}, 'Tokens are standard HS256 JWTs signed with ', h('code', {}, 'TANDEM_TOKEN_SECRET'), ' (the API key by default), with the claims ', h('code', {}, 'doc'), ', ', h('code', {}, 'perm'), ', ', h('code', {}, 'exp'), ' and optionally ', h('code', {}, 'sub'), ' and ', h('code', {}, 'name'), '.')))
  ]
}

export function docHref (id) {
  return `/d/${DOC_NAME.test(id) ? id : encodeURIComponent(id)}`
}

async function errorMessage (res) {
  try {
    const body = await res.json()
    if (body?.error?.message) return body.error.message
  } catch {}
  return `The server answered ${res.status}.`
}

function formatBytes (n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return ''
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`
  return `${(n / 1024 / 1024).toFixed(1)} MB`
}

function relativeTime (iso) {
  const t = Date.parse(iso)
  if (!Number.isFinite(t)) return 'recently'
  const seconds = Math.round((t - Date.now()) / 1000)
  const abs = Math.abs(seconds)
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
  if (abs < 45) return 'just now'
  if (abs < 3600) return rtf.format(Math.round(seconds / 60), 'minute')
  if (abs < 86400) return rtf.format(Math.round(seconds / 3600), 'hour')
  if (abs < 86400 * 7) return rtf.format(Math.round(seconds / 86400), 'day')
  return new Date(t).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' })
}
