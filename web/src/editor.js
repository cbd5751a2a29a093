// The editor page, /d/{doc}: Tiptap on a Yjs document synced with Tandem by
// the stock y-websocket WebsocketProvider.

import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { Placeholder } from '@tiptap/extensions'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

import { h, initials, logo, setChildren } from './dom.js'
import { mountHistory } from './history.js'
import { icons } from './icons.js'
import { PALETTE, cleanName, isColor, loadUser, saveUser } from './identity.js'
import { decodeToken, isExpired } from './token.js'
import { DOC_NAME } from './doc-name.js'

export { DOC_NAME }

/** Final closes (SPEC §2): the provider does not reconnect, the page says why. */
const FINAL = {
  4400: {
    title: 'The connection was closed',
    text: 'The server could not understand a message from this editor. Reload the page to continue.'
  },
  4401: {
    title: 'Your access has expired',
    text: 'The link you opened is no longer valid. Ask whoever shared it for a new one.'
  },
  4403: {
    title: 'You are not allowed to open this document',
    text: 'The link you opened does not give access to this document.'
  },
  4404: {
    title: 'This document was deleted',
    text: 'It no longer exists on the server, so nothing typed here is saved.',
    home: true
  },
  4413: {
    title: 'This document is too large',
    text: 'The last change would make it larger than this server allows, so it was not saved.'
  },
  noToken: {
    title: 'This document needs an access link',
    text: 'This server opens documents only through links that carry an access token. Open the link your application gave you.'
  },
  unauthorized: {
    title: 'This link does not open the document',
    text: 'The server refused the link: it may be incomplete or signed for another server. Ask whoever shared it for a new one.'
  },
  badName: {
    title: 'Not a document name',
    text: 'Document names are 1–255 characters of letters, digits and - _ . ~ : @',
    home: true
  }
}

/** Consecutive failed connection attempts before the page looks into why. */
const FAILURES_BEFORE_PROBE = 3

export function mountEditor (root, rawName) {
  let docName
  try {
    docName = decodeURIComponent(rawName)
  } catch {
    docName = rawName
  }
  document.title = `${docName} · Tandem`

  const params = new URLSearchParams(location.search)
  const token = params.get('token') || null
  const claims = decodeToken(token)
  const readOnly = claims?.perm === 'read'

  const user = loadUser(claims?.name)

  // ---- layout --------------------------------------------------------------
  const statusLabel = h('span', { class: 'status-label' }, 'Connecting…')
  const statusPill = h('span', { class: 'status-pill', 'data-state': 'connecting', role: 'status', 'aria-live': 'polite' },
    h('span', { class: 'status-dot', 'aria-hidden': 'true' }), statusLabel)
  const presenceList = h('div', { class: 'presence-list', 'aria-label': 'Who is here' })
  const meAvatar = h('span', { class: 'avatar presence-avatar presence-self-avatar' })
  const meButton = h('button', { type: 'button', class: 'me-button', 'aria-haspopup': 'dialog', 'aria-expanded': 'false', title: 'Your name and colour' }, meAvatar,
    h('span', { class: 'me-name' }))
  const nameInput = h('input', { id: 'name-input', class: 'name-input', type: 'text', maxlength: '40', autocomplete: 'nickname', spellcheck: 'false', 'aria-label': 'Your name' })
  const swatches = h('div', { class: 'swatches', role: 'radiogroup', 'aria-label': 'Your colour' })
  const mePanel = h('form', { class: 'me-panel', hidden: true },
    h('label', { class: 'me-panel-label', for: 'name-input' }, 'Your name'),
    nameInput,
    h('div', { class: 'me-panel-label' }, 'Colour'),
    swatches,
    h('p', { class: 'me-panel-hint' }, 'Others see this name next to your cursor.'))
  // Share copies the document's link, never the sharer's own token: a token
  // is a credential for one person (its `sub`, `name`, `perm` and expiry).
  // Whoever issued it hands out links to others.
  const shareButton = navigator.clipboard
    ? h('button', {
      type: 'button',
      class: 'button button-ghost share-button',
      title: token ? 'Copy a link to this document, without your access token' : 'Copy a link to this document',
      html: icons.share + '<span>Share</span>'
    })
    : null
  const shareNote = shareButton && token
    ? h('div', { class: 'share-note', role: 'status', hidden: true },
      h('strong', { class: 'share-note-title' }, 'Link copied, without your access'),
      h('span', { class: 'share-note-text' }, 'Your link carries a token for you alone, so it was left out. People you share this with need their own link from whoever gave you yours.'))
    : null

  const topbar = h('header', { class: 'topbar' },
    h('div', { class: 'topbar-inner' },
      h('a', { class: 'brand', href: '/', title: 'All documents' }, logo(26), h('span', { class: 'brand-name' }, 'Tandem')),
      h('span', { class: 'crumb-sep', 'aria-hidden': 'true' }, '/'),
      h('h1', { class: 'doc-title', title: docName }, docName),
      readOnly ? h('span', { class: 'badge badge-readonly', title: 'Your link lets you read this document, not change it', html: icons.lock + '<span>Read only</span>' }) : null,
      h('div', { class: 'spacer' }),
      statusPill,
      presenceList,
      shareButton ? h('div', { class: 'share' }, shareButton, shareNote) : null,
      h('div', { class: 'me' }, meButton, mePanel)))

  const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Formatting' })
  const linkInput = h('input', { class: 'link-input', type: 'url', placeholder: 'Paste or type a link…', 'aria-label': 'Link address', spellcheck: 'false' })
  const linkRemove = h('button', { type: 'button', class: 'button button-ghost' }, 'Remove')
  const linkForm = h('form', { class: 'link-form', hidden: true }, h('span', { class: 'link-form-icon', html: icons.link }), linkInput,
    h('button', { type: 'submit', class: 'button button-primary' }, 'Apply'), linkRemove)
  const toolbarWrap = readOnly ? null : h('div', { class: 'toolbar-wrap' }, toolbar, linkForm)

  const notice = h('div', { class: 'notice', hidden: true, role: 'alert' })
  const host = h('div', { class: 'editor-host' })
  const main = h('main', { class: 'page' }, notice, host)
  setChildren(root, topbar, toolbarWrap, main)
  root.className = readOnly ? 'app app-editor is-readonly' : 'app app-editor'

  if (!DOC_NAME.test(docName)) {
    statusPill.remove()
    showNotice(FINAL.badName, 'error')
    return
  }

  // ---- Yjs, provider, editor -------------------------------------------------
  const ydoc = new Y.Doc()
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`
  const provider = new WebsocketProvider(wsUrl, docName, ydoc, {
    params: token ? { token } : {},
    connect: navigator.onLine !== false
  })

  const editor = new Editor({
    element: host,
    editable: !readOnly,
    extensions: [
      ...contentExtensions(),
      Placeholder.configure({ placeholder: readOnly ? '' : 'Start writing…' }),
      Collaboration.configure({ document: ydoc }),
      CollaborationCaret.configure({
        provider,
        user: { name: user.name, color: user.color, id: user.id },
        render: renderCaret,
        selectionRender: (u) => ({
          nodeName: 'span',
          class: 'collaboration-carets__selection',
          style: `background-color: ${safeColor(u.color)}33`,
          'data-user': u.name
        })
      })
    ],
    editorProps: {
      attributes: { class: 'prose', spellcheck: readOnly ? 'false' : 'true', 'aria-label': `Document ${docName}` }
    }
  })

  // ---- history (SPEC §9): the toggle in the top bar, the panel at the side,
  // a version's preview in place of the editor while it is open
  const history = mountHistory({ root, docName, token, readOnly, liveEditor: editor, extensions: contentExtensions })
  statusPill.before(history.button)
  main.append(history.preview)
  root.append(history.panel)
  window.tandem = { editor, provider, ydoc, history }

  // ---- connection state ------------------------------------------------------
  let final = null // the FINAL entry once the connection is closed for good
  let opened = false // the current attempt reached 'connected'
  let failures = 0 // consecutive attempts that never opened
  let probing = false

  function setState (state, label, title = '') {
    statusPill.dataset.state = state
    statusLabel.textContent = label
    statusPill.title = title
  }

  function refreshState () {
    if (final) setState('closed', 'Disconnected', final.title)
    else if (navigator.onLine === false) setState('offline', 'Offline', 'Your edits are kept on this device and merge when you are back online')
    else if (provider.synced) setState('live', 'Live', 'Connected: changes are shared as you type')
    else if (failures >= FAILURES_BEFORE_PROBE) setState('connecting', 'Reconnecting…', 'Trying to reach the server')
    else setState('connecting', 'Connecting…')
  }

  function stopForGood (entry) {
    if (final) return
    final = entry
    provider.shouldConnect = false
    provider.disconnect()
    editor.setEditable(false)
    root.classList.add('is-closed')
    showNotice(entry, 'error')
    refreshState()
    renderPresence()
  }

  provider.on('status', ({ status }) => {
    if (status === 'connected') {
      opened = true
      failures = 0
      if (!final && navigator.onLine !== false) hideNotice()
    }
    refreshState()
  })
  provider.on('sync', () => refreshState())
  provider.on('connection-close', (event) => {
    if (event && event.code >= 4400 && event.code < 4500) {
      stopForGood(FINAL[event.code] || { title: 'The connection was closed', text: `The server ended the connection (${event.code}${event.reason ? `: ${event.reason}` : ''}).` })
      return
    }
    if (event && !opened) failures++
    opened = false
    if (failures >= FAILURES_BEFORE_PROBE && !probing && !final) probe()
    refreshState()
  })
  // y-websocket also reports final closes on its own; handled above already.
  provider.on('closed', ({ code }) => stopForGood(FINAL[code] || FINAL[4400]))

  /**
   * A WebSocket refused before the upgrade (401/403) looks like a network
   * failure to the page. After a few, ask the same URL over plain HTTP: the
   * server answers the refusal's status (and 400 "upgrade required" when the
   * link itself is fine).
   */
  async function probe () {
    probing = true
    try {
      const url = `/ws/${docName}${token ? `?token=${encodeURIComponent(token)}` : ''}`
      const res = await fetch(url, { cache: 'no-store', headers: { accept: 'application/json' } })
      if (res.status === 401) stopForGood(!token ? FINAL.noToken : isExpired(claims) ? FINAL[4401] : FINAL.unauthorized)
      else if (res.status === 403) stopForGood(FINAL[4403])
      else if (!final && navigator.onLine !== false) showNotice({ title: 'Cannot connect', text: 'The server answers, but the live connection fails (a proxy may be blocking WebSockets). Retrying…' }, 'warning')
    } catch {
      if (!final && navigator.onLine !== false) showNotice({ title: 'Cannot reach the server', text: 'Your edits are kept here and merge once the connection is back. Retrying…' }, 'warning')
    } finally {
      probing = false
    }
  }

  window.addEventListener('offline', () => {
    if (final) return
    provider.disconnect()
    showNotice({ title: 'You are offline', text: 'Keep writing: your edits are kept on this device and merge as soon as you are back online.' }, 'info')
    refreshState()
  })
  window.addEventListener('online', () => {
    if (final) return
    failures = 0
    hideNotice()
    provider.connect()
    refreshState()
  })
  if (navigator.onLine === false) {
    showNotice({ title: 'You are offline', text: 'Keep writing: your edits are kept on this device and merge as soon as you are back online.' }, 'info')
  }
  refreshState()

  // ---- presence ----------------------------------------------------------------
  const MAX_AVATARS = 4
  let lastPresence = ''
  function renderPresence () {
    const seen = new Map() // one avatar per person (a person may have several tabs)
    for (const [clientId, state] of provider.awareness.getStates()) {
      const u = state?.user
      if (!u || typeof u.name !== 'string') continue
      const self = clientId === ydoc.clientID
      const key = typeof u.id === 'string' && u.id ? u.id : `client-${clientId}`
      if (seen.has(key) && !self) continue
      seen.set(key, { name: cleanName(u.name) || 'Anonymous', color: safeColor(u.color), self: self || key === user.id })
    }
    const people = [...seen.values()].sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name))
    // awareness changes with every caret move: redraw only when the people change
    const signature = JSON.stringify(people)
    if (signature === lastPresence) return
    lastPresence = signature
    const others = people.filter((p) => !p.self)
    const shown = others.slice(0, MAX_AVATARS)
    const hidden = others.slice(MAX_AVATARS)
    setChildren(presenceList,
      shown.map((p) => h('span', { class: 'avatar presence-avatar', title: p.name, 'data-name': p.name, style: { backgroundColor: p.color } }, initials(p.name))),
      hidden.length ? h('span', { class: 'avatar presence-avatar presence-more', title: hidden.map((p) => p.name).join(', ') }, `+${hidden.length}`) : null)
    presenceList.title = people.map((p) => p.self ? `${p.name} (you)` : p.name).join(', ')
    presenceList.hidden = shown.length === 0
    presenceList.setAttribute('aria-label', `Here now: ${presenceList.title}`)
  }
  provider.awareness.on('change', renderPresence)
  provider.awareness.on('change', refreshCarets)
  renderPresence()

  /**
   * y-prosemirror keys each caret widget by client, so ProseMirror keeps the
   * caret it drew first: a new name or colour would only show once the caret
   * is re-created. Bring the drawn carets up to date in place instead.
   */
  function refreshCarets () {
    const byId = new Map()
    for (const state of provider.awareness.getStates().values()) {
      const u = state?.user
      if (u && typeof u.id === 'string') byId.set(u.id, u)
    }
    for (const caret of host.querySelectorAll('.collaboration-carets__caret[data-user-id]')) {
      const u = byId.get(caret.dataset.userId)
      if (u) paintCaret(caret, u)
    }
  }

  // ---- your name and colour -------------------------------------------------------
  function renderMe () {
    meAvatar.textContent = initials(user.name)
    meAvatar.style.backgroundColor = user.color
    meButton.querySelector('.me-name').textContent = user.name
    meButton.title = `You are ${user.name}: change your name or colour`
    if (document.activeElement !== nameInput) nameInput.value = user.name
    setChildren(swatches, PALETTE.map((color) => h('button', {
      type: 'button',
      class: 'swatch',
      role: 'radio',
      'aria-checked': String(color === user.color),
      'aria-label': `Colour ${color}`,
      style: { backgroundColor: color },
      onclick: () => { user.color = color; commitUser() }
    })))
  }
  function commitUser () {
    const name = cleanName(nameInput.value)
    if (name) user.name = name
    saveUser(user)
    editor.commands.updateUser({ name: user.name, color: user.color, id: user.id })
    renderMe()
  }
  function openPanel (open) {
    mePanel.hidden = !open
    meButton.setAttribute('aria-expanded', String(open))
    if (open) {
      nameInput.value = user.name
      nameInput.focus()
      nameInput.select()
    }
  }
  meButton.addEventListener('click', () => openPanel(mePanel.hidden))
  nameInput.addEventListener('input', () => { if (cleanName(nameInput.value)) commitUser() })
  nameInput.addEventListener('keydown', (e) => { if (e.key === 'Escape') openPanel(false) })
  mePanel.addEventListener('submit', (e) => { e.preventDefault(); commitUser(); openPanel(false) })
  nameInput.addEventListener('blur', () => { nameInput.value = user.name })
  document.addEventListener('pointerdown', (e) => {
    if (!mePanel.hidden && !e.target.closest('.me')) openPanel(false)
  })
  window.addEventListener('storage', (e) => {
    // the name was changed in another tab
    if (e.key !== 'tandem.user') return
    const next = loadUser()
    if (next.name !== user.name || next.color !== user.color) {
      Object.assign(user, next)
      editor.commands.updateUser({ name: user.name, color: user.color, id: user.id })
      renderMe()
    }
  })
  renderMe()

  // ---- share -------------------------------------------------------------------
  let shareTimer = null
  shareButton?.addEventListener('click', async () => {
    const label = shareButton.querySelector('span')
    clearTimeout(shareTimer)
    try {
      await navigator.clipboard.writeText(shareLink(location.href))
      label.textContent = 'Link copied'
      if (shareNote) shareNote.hidden = false
    } catch {
      label.textContent = 'Copy failed'
    }
    shareTimer = setTimeout(() => {
      label.textContent = 'Share'
      if (shareNote) shareNote.hidden = true
    }, shareNote && !shareNote.hidden ? 8000 : 1600)
  })
  document.addEventListener('pointerdown', (e) => {
    if (shareNote && !shareNote.hidden && !e.target.closest('.share')) shareNote.hidden = true
  })

  // ---- toolbar -------------------------------------------------------------------
  if (!readOnly) buildToolbar(editor, toolbar, linkForm, linkInput, linkRemove)

  // ---- notices ---------------------------------------------------------------------
  function showNotice (entry, kind) {
    notice.hidden = false
    notice.className = `notice notice-${kind}`
    setChildren(notice,
      h('div', { class: 'notice-body' },
        h('strong', { class: 'notice-title' }, entry.title),
        h('span', { class: 'notice-text' }, entry.text)),
      entry.home ? h('a', { class: 'button button-secondary', href: '/' }, 'All documents') : null)
  }
  function hideNotice () {
    notice.hidden = true
  }

  return { editor, provider, ydoc }
}

/**
 * The extensions that define the document's content (its schema and how it
 * renders), shared by the live editor and a version's read-only preview.
 */
function contentExtensions () {
  return [
    StarterKit.configure({
      undoRedo: false, // Collaboration brings its own, per user
      heading: { levels: [1, 2, 3] },
      link: { openOnClick: false, autolink: true, defaultProtocol: 'https' }
    })
  ]
}

/** The page's address without the `token` parameter: the link a sharer may hand on. */
export function shareLink (href) {
  const url = new URL(href)
  url.searchParams.delete('token')
  return url.href
}

function safeColor (color) {
  return isColor(color) ? color : '#6b7280'
}

/** A remote caret: a coloured bar with its owner's name above it. */
function renderCaret (u) {
  const caret = document.createElement('span')
  caret.className = 'collaboration-carets__caret'
  if (typeof u.id === 'string') caret.dataset.userId = u.id
  const label = document.createElement('span')
  label.className = 'collaboration-carets__label'
  caret.append(label)
  paintCaret(caret, u)
  return caret
}

function paintCaret (caret, u) {
  const color = safeColor(u.color)
  const name = cleanName(u.name) || 'Anonymous'
  const label = caret.firstElementChild
  if (caret.style.borderColor !== color) caret.style.borderColor = color
  if (label.style.backgroundColor !== color) label.style.backgroundColor = color
  if (label.textContent !== name) label.textContent = name
}

function buildToolbar (editor, toolbar, linkForm, linkInput, linkRemove) {
  const mod = /Mac|iPhone|iPad/.test(navigator.platform) ? '⌘' : 'Ctrl+'
  const groups = [
    [
      { name: 'bold', label: 'Bold', keys: `${mod}B`, icon: icons.bold, run: (c) => c.toggleBold(), active: () => editor.isActive('bold') },
      { name: 'italic', label: 'Italic', keys: `${mod}I`, icon: icons.italic, run: (c) => c.toggleItalic(), active: () => editor.isActive('italic') },
      { name: 'strike', label: 'Strikethrough', keys: `${mod}Shift+S`, icon: icons.strike, run: (c) => c.toggleStrike(), active: () => editor.isActive('strike') },
      { name: 'code', label: 'Inline code', keys: `${mod}E`, icon: icons.code, run: (c) => c.toggleCode(), active: () => editor.isActive('code') }
    ],
    [1, 2, 3].map((level) => ({
      name: `heading${level}`,
      label: `Heading ${level}`,
      keys: `${mod}Alt+${level}`,
      text: `H${level}`,
      run: (c) => c.toggleHeading({ level }),
      active: () => editor.isActive('heading', { level })
    })),
    [
      { name: 'bulletList', label: 'Bulleted list', keys: `${mod}Shift+8`, icon: icons.bulletList, run: (c) => c.toggleBulletList(), active: () => editor.isActive('bulletList') },
      { name: 'orderedList', label: 'Numbered list', keys: `${mod}Shift+7`, icon: icons.orderedList, run: (c) => c.toggleOrderedList(), active: () => editor.isActive('orderedList') },
      { name: 'blockquote', label: 'Quote', keys: `${mod}Shift+B`, icon: icons.quote, run: (c) => c.toggleBlockquote(), active: () => editor.isActive('blockquote') },
      { name: 'codeBlock', label: 'Code block', keys: `${mod}Alt+C`, icon: icons.codeBlock, run: (c) => c.toggleCodeBlock(), active: () => editor.isActive('codeBlock') }
    ],
    [
      { name: 'link', label: 'Link', keys: `${mod}K`, icon: icons.link, run: null, active: () => editor.isActive('link') }
    ],
    [
      { name: 'undo', label: 'Undo', keys: `${mod}Z`, icon: icons.undo, run: (c) => c.undo(), can: () => editor.can().undo() },
      { name: 'redo', label: 'Redo', keys: `${mod}Shift+Z`, icon: icons.redo, run: (c) => c.redo(), can: () => editor.can().redo() }
    ]
  ]

  const buttons = []
  for (const [i, group] of groups.entries()) {
    if (i > 0) toolbar.append(h('span', { class: 'toolbar-sep', 'aria-hidden': 'true' }))
    for (const item of group) {
      const button = h('button', {
        type: 'button',
        class: `tb-button${item.text ? ' tb-text' : ''}`,
        'data-action': item.name,
        'aria-label': item.label,
        title: `${item.label} (${item.keys})`,
        html: item.icon || undefined
      }, item.text || null)
      // keep the editor's selection: act on mousedown without taking focus
      button.addEventListener('mousedown', (e) => e.preventDefault())
      button.addEventListener('click', () => {
        if (item.run) item.run(editor.chain().focus()).run()
        else openLink()
      })
      toolbar.append(button)
      buttons.push({ item, button })
    }
  }

  const refresh = () => {
    for (const { item, button } of buttons) {
      if (item.active) {
        const on = item.active()
        button.classList.toggle('is-active', on)
        button.setAttribute('aria-pressed', String(on))
      }
      if (item.can) button.disabled = !editor.isEditable || !item.can()
      else button.disabled = !editor.isEditable
    }
  }
  editor.on('transaction', refresh)
  editor.on('selectionUpdate', refresh)
  editor.on('focus', refresh)
  refresh()

  // ---- links ----
  function openLink () {
    linkForm.hidden = false
    linkInput.value = editor.getAttributes('link').href || ''
    linkRemove.hidden = !editor.isActive('link')
    linkInput.focus()
    linkInput.select()
  }
  function closeLink () {
    linkForm.hidden = true
    editor.commands.focus()
  }
  linkForm.addEventListener('submit', (e) => {
    e.preventDefault()
    const raw = linkInput.value.trim()
    if (!raw) { closeLink(); return }
    const href = /^[a-z][a-z0-9+.-]*:/i.test(raw) || raw.startsWith('/') || raw.startsWith('#') ? raw : `https://${raw}`
    const { empty } = editor.state.selection
    if (empty && !editor.isActive('link')) {
      editor.chain().focus().insertContent({ type: 'text', text: raw, marks: [{ type: 'link', attrs: { href } }] }).run()
    } else {
      editor.chain().focus().extendMarkRange('link').setLink({ href }).run()
    }
    linkForm.hidden = true
  })
  linkRemove.addEventListener('click', () => {
    editor.chain().focus().extendMarkRange('link').unsetLink().run()
    linkForm.hidden = true
  })
  linkInput.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeLink() })
  editor.view.dom.addEventListener('keydown', (e) => {
    if ((e.metaKey || e.ctrlKey) && !e.shiftKey && !e.altKey && e.key.toLowerCase() === 'k') {
      e.preventDefault()
      openLink()
    }
  })
}
