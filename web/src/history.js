// The history panel (SPEC §9): the document's versions, newest first; a
// read-only preview of one, its top-level blocks that differ from the current
// document highlighted; naming the current state and restoring a version
// (writers only: a read-only link sees neither button, and the server refuses
// both to it anyway).
//
// It calls the versions API on the page's own origin, with the page's client
// token as a bearer (no header in dev mode). A preview is built in the page:
// the version's state is one Yjs update (GET …/update?version=), applied to a
// Y.Doc of its own and rendered by a non-editable Tiptap editor with the live
// editor's schema, so the live document is never touched by it. A restore is
// the server's doing: the new content reaches this and every other open
// editor over its WebSocket, like any edit.

import { Editor, Extension } from '@tiptap/core'
import { Plugin, PluginKey } from '@tiptap/pm/state'
import { Decoration, DecorationSet } from '@tiptap/pm/view'
import { yXmlFragmentToProseMirrorRootNode } from '@tiptap/y-tiptap'
import * as Y from 'yjs'

import { h, setChildren } from './dom.js'
import { icons } from './icons.js'

/** Versions asked for per page of the list. */
const PAGE_SIZE = 20
/** While the panel is open, the list is asked for again this often (automatic versions come every few seconds). */
const REFRESH_MS = 4000
/** Above this many cells, the block comparison matches equal blocks as a multiset instead of an LCS table. */
const MAX_LCS_CELLS = 2_000_000
/** Where Tiptap's Collaboration extension keeps the document in the Y.Doc. */
const FRAGMENT = 'default'

/** An API call that failed: the server's message (or ours) and the HTTP status (0: no answer). */
class HistoryError extends Error {
  constructor (message, status) {
    super(message)
    this.status = status
  }
}

/**
 * Mount the history UI of the editor page. Returns the toggle button (for the
 * top bar), the side panel and the preview (for the page to place), and
 * `{ open, close }` for tests and debugging.
 *
 * @param {object} opts
 * @param {HTMLElement} opts.root the page's root element (gets `history-open` and `is-previewing`)
 * @param {string} opts.docName
 * @param {string|null} opts.token the page's client token, sent as a bearer
 * @param {boolean} opts.readOnly no naming, no restoring
 * @param {import('@tiptap/core').Editor} opts.liveEditor the collaborative editor (schema, current content)
 * @param {() => import('@tiptap/core').AnyExtension[]} opts.extensions the live editor's content extensions, without collaboration
 */
export function mountHistory ({ root, docName, token, readOnly, liveEditor, extensions }) {
  // ---- the server ---------------------------------------------------------------
  async function call (method, path, { body, bytes = false } = {}) {
    const headers = { accept: bytes ? 'application/octet-stream' : 'application/json' }
    if (token) headers.authorization = `Bearer ${token}`
    // the server takes state-changing calls only with a JSON content type
    if (method !== 'GET') headers['content-type'] = 'application/json'
    let res
    try {
      res = await fetch(`/api/docs/${docName}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store'
      })
    } catch {
      throw new HistoryError('the server could not be reached', 0)
    }
    if (!res.ok) {
      let message = `the server answered ${res.status}`
      try {
        const parsed = await res.json()
        if (typeof parsed?.error?.message === 'string' && parsed.error.message) message = parsed.error.message
      } catch {}
      if (res.status === 401 || res.status === 403) message = `your link does not allow this (${message.replace(/\.$/, '')})`
      throw new HistoryError(message, res.status)
    }
    if (res.status === 204) return null
    return bytes ? new Uint8Array(await res.arrayBuffer()) : res.json()
  }

  // ---- state ----------------------------------------------------------------------
  let isOpen = false
  let items = [] // the versions loaded, newest first
  let nextCursor = null
  let listLoaded = false
  let refreshing = null // the refresh under way (a promise), if any
  let timer = null
  let selected = null // the id of the version previewed
  let previewEditor = null
  let previewSeq = 0 // a newer preview makes an older one's answer stale
  let lastRendered = ''

  // ---- elements -------------------------------------------------------------------
  const button = h('button', {
    type: 'button',
    class: 'button button-ghost history-button',
    'aria-expanded': 'false',
    'aria-controls': 'history-panel',
    title: 'Versions of this document',
    html: icons.history + '<span>History</span>'
  })

  const heading = h('h2', { class: 'history-title', tabindex: '-1' }, 'History')
  const closeButton = h('button', { type: 'button', class: 'icon-button history-close', 'aria-label': 'Close history', title: 'Close history', html: icons.close })
  const nameButton = readOnly
    ? null
    : h('button', { type: 'button', class: 'button button-secondary history-name-button', html: icons.plus + '<span>Name this version</span>' })
  const nameInput = h('input', {
    id: 'history-name-input',
    class: 'text-input history-name-input',
    type: 'text',
    maxlength: '200',
    autocomplete: 'off',
    placeholder: 'Sent for review',
    'aria-label': 'Name for the current version'
  })
  const nameSave = h('button', { type: 'submit', class: 'button button-primary history-name-save' }, 'Save')
  const nameCancel = h('button', { type: 'button', class: 'button button-ghost history-name-cancel' }, 'Cancel')
  const nameForm = readOnly
    ? null
    : h('form', { class: 'history-name-form', hidden: true },
      h('label', { class: 'history-label', for: 'history-name-input' }, 'Name the document as it is now'),
      nameInput,
      h('div', { class: 'history-row' }, nameSave, nameCancel))
  const message = h('p', { class: 'history-message', role: 'status', 'aria-live': 'polite', hidden: true })
  const list = h('ol', { class: 'history-list', 'aria-label': 'Versions, newest first' })
  const empty = h('p', { class: 'history-empty', hidden: true }, 'No versions yet. One is kept a few seconds after each burst of edits.')
  const more = h('button', { type: 'button', class: 'button button-secondary history-more', hidden: true }, 'Load more')
  const panel = h('aside', { id: 'history-panel', class: 'history-panel', 'aria-label': 'Version history', hidden: true },
    h('div', { class: 'history-head' }, heading, closeButton),
    readOnly
      ? h('p', { class: 'history-note' }, 'Your link lets you look at earlier versions, not restore them.')
      : h('div', { class: 'history-actions' }, nameButton, nameForm),
    message,
    list,
    empty,
    more)

  const previewTitle = h('strong', { class: 'history-banner-title' })
  const previewMeta = h('span', { class: 'history-banner-meta' })
  const previewSummary = h('span', { class: 'history-banner-summary' })
  const restoreButton = readOnly ? null : h('button', { type: 'button', class: 'button button-primary history-restore', disabled: true }, 'Restore this version')
  const previewClose = h('button', { type: 'button', class: 'button button-secondary history-preview-close' }, 'Back to the document')
  const confirmYes = h('button', { type: 'button', class: 'button button-danger history-restore-confirm' }, 'Restore')
  const confirmNo = h('button', { type: 'button', class: 'button button-ghost history-restore-cancel' }, 'Cancel')
  const confirmBox = readOnly
    ? null
    : h('div', { class: 'history-confirm', role: 'group', 'aria-label': 'Confirm the restore', hidden: true },
      h('div', { class: 'history-confirm-body' },
        h('strong', {}, 'Restore this version for everyone?'),
        h('span', {}, 'The document becomes this version for everyone editing it. The current state is kept as a version first, so you can go back.')),
      h('div', { class: 'history-row' }, confirmYes, confirmNo))
  const previewError = h('p', { class: 'history-preview-error', role: 'alert', hidden: true })
  const previewLoading = h('p', { class: 'loading history-preview-loading' }, 'Loading the version…')
  const previewHost = h('div', { class: 'history-preview-host' })
  const preview = h('section', { class: 'history-preview', 'aria-label': 'Preview of an earlier version', hidden: true },
    h('div', { class: 'history-banner' },
      h('div', { class: 'history-banner-body' }, previewTitle, previewMeta, previewSummary),
      h('div', { class: 'history-row' }, restoreButton, previewClose)),
    confirmBox,
    previewError,
    previewLoading,
    previewHost)

  // ---- the list ---------------------------------------------------------------------
  const byId = (id) => items.find((v) => v.id === id)

  function titleOf (v) {
    if (v.kind === 'restore') {
      const from = v.restored_from == null ? null : byId(v.restored_from)
      return from ? `Restored from ${from.name ? `“${from.name}”` : `the version of ${formatTime(from.created_at)}`}` : 'Restored from an earlier version'
    }
    return v.name || 'Automatic version'
  }

  function peopleOf (v) {
    const authors = Array.isArray(v.authors) ? v.authors.filter((a) => typeof a === 'string' && a) : []
    if (authors.length > 0) {
      const shown = authors.slice(0, 3).join(', ')
      return authors.length > 3 ? `by ${shown} and ${authors.length - 3} more` : `by ${shown}`
    }
    if (v.created_by && v.kind !== 'auto') return `by ${v.created_by}`
    return ''
  }

  function render () {
    const signature = JSON.stringify([items, nextCursor, selected, listLoaded])
    if (signature === lastRendered) return
    lastRendered = signature
    const focusedId = document.activeElement?.closest?.('.history-item')?.dataset.versionId
    setChildren(list, items.map((v) => {
      const people = peopleOf(v)
      const title = titleOf(v)
      const item = h('button', {
        type: 'button',
        class: `history-item history-kind-${v.kind}${v.id === selected ? ' is-selected' : ''}`,
        'data-version-id': v.id,
        'data-kind': v.kind,
        'aria-current': v.id === selected ? 'true' : null,
        title: `Preview: ${title}`
      },
      h('span', { class: 'history-item-title' }, title),
      h('span', { class: 'history-item-meta' },
        h('time', { class: 'history-item-time', datetime: v.created_at, title: fullTime(v.created_at) }, formatTime(v.created_at)),
        people ? h('span', { class: 'history-item-people' }, people) : null))
      return h('li', { class: 'history-entry' }, item)
    }))
    empty.hidden = !listLoaded || items.length > 0
    more.hidden = !nextCursor
    if (focusedId) list.querySelector(`.history-item[data-version-id="${CSS.escape(focusedId)}"]`)?.focus()
  }

  /**
   * Ask for the newest page again and merge it into what is loaded: versions
   * newer than the newest held go on top, renamed ones are updated, and held
   * ones that the page no longer lists (deleted) are dropped. Pages loaded
   * with "Load more" stay, their cursor valid.
   */
  function refresh () {
    if (refreshing) return refreshing
    refreshing = (async () => {
      try {
        const page = await call('GET', `/versions?limit=${PAGE_SIZE}`)
        const fresh = Array.isArray(page?.items) ? page.items : []
        const freshIds = new Set(fresh.map((v) => v.id))
        let lastCommon = items.length - 1
        while (lastCommon >= 0 && !freshIds.has(items[lastCommon].id)) lastCommon--
        if (!listLoaded || lastCommon < 0) {
          items = fresh
          nextCursor = page?.next_cursor ?? null
        } else {
          const held = new Set(items.map((v) => v.id))
          const newer = []
          for (const v of fresh) {
            if (held.has(v.id)) break
            newer.push(v)
          }
          const updated = new Map(fresh.map((v) => [v.id, v]))
          items = [
            ...newer,
            ...items.slice(0, lastCommon + 1).filter((v) => freshIds.has(v.id)).map((v) => updated.get(v.id)),
            ...items.slice(lastCommon + 1)
          ]
        }
        listLoaded = true
        if (message.dataset.kind === 'error') hideMessage()
      } catch (err) {
        if (err.status === 404 && !listLoaded) {
          // no document yet (nothing was ever written): no versions either
          listLoaded = true
          items = []
          nextCursor = null
        } else {
          showMessage(`The versions could not be loaded: ${err.message}`, 'error')
        }
      } finally {
        refreshing = null
        render()
      }
    })()
    return refreshing
  }

  async function loadMore () {
    if (!nextCursor) return
    more.disabled = true
    try {
      const page = await call('GET', `/versions?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(nextCursor)}`)
      const held = new Set(items.map((v) => v.id))
      items = [...items, ...(page?.items ?? []).filter((v) => !held.has(v.id))]
      nextCursor = page?.next_cursor ?? null
      render()
    } catch (err) {
      showMessage(`More versions could not be loaded: ${err.message}`, 'error')
    } finally {
      more.disabled = false
    }
  }

  let messageTimer = null
  function showMessage (text, kind = 'info') {
    clearTimeout(messageTimer)
    message.hidden = false
    message.textContent = text
    message.dataset.kind = kind
    if (kind !== 'error') messageTimer = setTimeout(hideMessage, 6000)
  }
  function hideMessage () {
    message.hidden = true
    message.dataset.kind = ''
  }

  // ---- open and close ---------------------------------------------------------------
  function open () {
    if (isOpen) return refreshing || Promise.resolve()
    isOpen = true
    panel.hidden = false
    button.setAttribute('aria-expanded', 'true')
    button.classList.add('is-active')
    root.classList.add('history-open')
    heading.focus()
    timer = setInterval(() => { if (!document.hidden) refresh() }, REFRESH_MS)
    return refresh()
  }

  function close () {
    if (!isOpen) return
    isOpen = false
    clearInterval(timer)
    timer = null
    closePreview()
    closeNameForm()
    panel.hidden = true
    button.setAttribute('aria-expanded', 'false')
    button.classList.remove('is-active')
    root.classList.remove('history-open')
  }

  button.addEventListener('click', () => (isOpen ? close() : open()))
  closeButton.addEventListener('click', () => {
    close()
    button.focus()
  })
  more.addEventListener('click', loadMore)
  list.addEventListener('click', (e) => {
    const item = e.target.closest('.history-item')
    if (item) openPreview(item.dataset.versionId)
  })
  panel.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return
    e.preventDefault()
    if (nameForm && !nameForm.hidden) {
      closeNameForm()
      nameButton.focus()
    } else if (selected) {
      closePreview()
    } else {
      close()
      button.focus()
    }
  })

  // ---- naming the current state ----------------------------------------------------------
  function closeNameForm () {
    if (!nameForm) return
    nameForm.hidden = true
    nameButton.hidden = false
  }
  nameButton?.addEventListener('click', () => {
    nameButton.hidden = true
    nameForm.hidden = false
    nameInput.value = ''
    nameInput.focus()
  })
  nameCancel.addEventListener('click', () => {
    closeNameForm()
    nameButton.focus()
  })
  nameForm?.addEventListener('submit', async (e) => {
    e.preventDefault()
    const name = nameInput.value.trim()
    if (!name) {
      nameInput.focus()
      return
    }
    nameSave.disabled = true
    try {
      const version = await call('POST', '/versions', { body: { name } })
      items = [version, ...items.filter((v) => v.id !== version.id)]
      listLoaded = true
      render()
      closeNameForm()
      showMessage(`Saved as “${version.name ?? name}”.`)
      list.querySelector(`.history-item[data-version-id="${CSS.escape(version.id)}"]`)?.focus()
    } catch (err) {
      showMessage(`The version could not be named: ${err.message}`, 'error')
    } finally {
      nameSave.disabled = false
    }
  })

  // ---- the preview --------------------------------------------------------------------
  async function openPreview (id) {
    const version = byId(id)
    if (!version) return
    const seq = ++previewSeq
    selected = id
    render()
    destroyPreviewEditor()
    root.classList.add('is-previewing')
    preview.hidden = false
    previewTitle.textContent = titleOf(version)
    previewMeta.textContent = [fullTime(version.created_at), peopleOf(version)].filter(Boolean).join(' · ')
    previewSummary.textContent = ''
    previewError.hidden = true
    previewLoading.hidden = false
    if (confirmBox) confirmBox.hidden = true
    if (restoreButton) restoreButton.disabled = true
    window.scrollTo({ top: 0 })
    try {
      const update = await call('GET', `/update?version=${encodeURIComponent(id)}`, { bytes: true })
      if (seq !== previewSeq) return
      const ydoc = new Y.Doc()
      let content
      try {
        Y.applyUpdate(ydoc, update)
        content = yXmlFragmentToProseMirrorRootNode(ydoc.getXmlFragment(FRAGMENT), liveEditor.schema).toJSON()
      } finally {
        ydoc.destroy()
      }
      previewEditor = new Editor({
        element: previewHost,
        editable: false,
        injectCSS: false,
        extensions: [...extensions(), ChangeHighlight.configure({ current: () => liveEditor.state.doc, onSummary: summarize })],
        content,
        editorProps: {
          attributes: { class: 'prose history-preview-prose', 'aria-label': `The document as of ${fullTime(version.created_at)}`, 'aria-readonly': 'true' }
        }
      })
      summarize(changeKey.getState(previewEditor.state))
      previewLoading.hidden = true
      if (restoreButton) restoreButton.disabled = false
    } catch (err) {
      if (seq !== previewSeq) return
      previewLoading.hidden = true
      previewError.hidden = false
      previewError.textContent = err instanceof HistoryError ? `This version could not be shown: ${err.message}` : 'This version could not be shown.'
    }
  }

  function summarize (summary) {
    if (!summary) return
    const { changed, added } = summary
    const parts = []
    if (changed > 0) parts.push(`${changed} highlighted ${changed === 1 ? 'block' : 'blocks'} changed or removed since`)
    if (added > 0) parts.push(`${added} ${added === 1 ? 'block' : 'blocks'} added since`)
    previewSummary.textContent = parts.length ? `${parts.join('; ')}.` : 'Same text as the current document.'
    previewSummary.dataset.changed = String(changed)
  }

  function destroyPreviewEditor () {
    previewEditor?.destroy()
    previewEditor = null
    previewHost.replaceChildren()
  }

  function closePreview () {
    if (!selected && preview.hidden) return
    previewSeq++
    const was = selected
    selected = null
    destroyPreviewEditor()
    preview.hidden = true
    root.classList.remove('is-previewing')
    render()
    if (was && isOpen) list.querySelector(`.history-item[data-version-id="${CSS.escape(was)}"]`)?.focus()
  }

  // the highlights follow the live document while a preview is open
  liveEditor.on('transaction', ({ transaction }) => {
    if (transaction.docChanged && previewEditor && !previewEditor.isDestroyed) {
      previewEditor.view.dispatch(previewEditor.state.tr.setMeta(changeKey, 'refresh'))
    }
  })

  previewClose.addEventListener('click', closePreview)
  preview.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return
    e.preventDefault()
    if (confirmBox && !confirmBox.hidden) {
      confirmBox.hidden = true
      restoreButton.focus()
    } else {
      closePreview()
    }
  })

  // ---- restore ---------------------------------------------------------------------------
  restoreButton?.addEventListener('click', () => {
    confirmBox.hidden = false
    confirmYes.focus()
  })
  confirmNo.addEventListener('click', () => {
    confirmBox.hidden = true
    restoreButton.focus()
  })
  confirmYes.addEventListener('click', async () => {
    const id = selected
    if (!id) return
    confirmYes.disabled = true
    restoreButton.disabled = true
    try {
      const version = await call('POST', `/versions/${encodeURIComponent(id)}/restore`)
      if (version?.id) items = [version, ...items.filter((v) => v.id !== version.id)]
      closePreview()
      showMessage('Restored: the document is now this version, for everyone.')
      refresh()
    } catch (err) {
      previewError.hidden = false
      previewError.textContent = `The version could not be restored: ${err.message}`
      restoreButton.disabled = false
    } finally {
      confirmYes.disabled = false
      if (confirmBox) confirmBox.hidden = true
    }
  })

  return { button, panel, preview, open, close, refresh }
}

// ---- what changed ---------------------------------------------------------------------

const changeKey = new PluginKey('historyChanges')

/**
 * Highlights (class `history-changed`) the top-level blocks of the previewed
 * version that the current document does not have, in order: those whose type,
 * attributes or text differ, and those removed since. Recomputed when the
 * preview's document changes or on a `changeKey` meta (the live one changed).
 */
const ChangeHighlight = Extension.create({
  name: 'historyChanges',
  addOptions: () => ({ current: null, onSummary: null }),
  addProseMirrorPlugins () {
    const { current, onSummary } = this.options
    const compute = (doc) => {
      const result = compareBlocks(doc, current())
      onSummary?.(result)
      return result
    }
    return [new Plugin({
      key: changeKey,
      state: {
        init: (_config, state) => compareBlocks(state.doc, current()),
        apply: (tr, old, _before, state) => (tr.docChanged || tr.getMeta(changeKey) ? compute(state.doc) : old)
      },
      props: {
        decorations: (state) => changeKey.getState(state)?.decorations
      }
    })]
  }
})

const blockKey = (node) => `${node.type.name}\u0000${JSON.stringify(node.attrs)}\u0000${node.textContent}`

function compareBlocks (versionDoc, currentDoc) {
  const mine = []
  versionDoc.forEach((node) => mine.push(blockKey(node)))
  const theirs = []
  currentDoc.forEach((node) => theirs.push(blockKey(node)))
  const kept = matchedBlocks(mine, theirs)
  const decorations = []
  let changed = 0
  versionDoc.forEach((node, offset, index) => {
    if (kept[index]) return
    changed++
    decorations.push(Decoration.node(offset, offset + node.nodeSize, { class: 'history-changed' }))
  })
  const same = mine.length - changed
  return { decorations: DecorationSet.create(versionDoc, decorations), changed, added: theirs.length - same }
}

/**
 * For each of `a`, whether it is part of a longest common subsequence of `a`
 * and `b` (equal strings, in order). Common ends are matched first; a middle
 * too large for a table is matched as a multiset instead.
 */
export function matchedBlocks (a, b) {
  const kept = new Array(a.length).fill(false)
  let start = 0
  while (start < a.length && start < b.length && a[start] === b[start]) kept[start++] = true
  let endA = a.length
  let endB = b.length
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    kept[--endA] = true
    endB--
  }
  const n = endA - start
  const m = endB - start
  if (n === 0 || m === 0) return kept
  if ((n + 1) * (m + 1) > MAX_LCS_CELLS) {
    const counts = new Map()
    for (let j = start; j < endB; j++) counts.set(b[j], (counts.get(b[j]) || 0) + 1)
    for (let i = start; i < endA; i++) {
      const c = counts.get(a[i])
      if (c) {
        kept[i] = true
        counts.set(a[i], c - 1)
      }
    }
    return kept
  }
  // lcs[i][j]: the LCS length of a[start+i..endA) and b[start+j..endB)
  const w = m + 1
  const lcs = new Uint32Array((n + 1) * w)
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * w + j] = a[start + i] === b[start + j] ? lcs[(i + 1) * w + j + 1] + 1 : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1])
    }
  }
  let i = 0
  let j = 0
  while (i < n && j < m) {
    if (a[start + i] === b[start + j]) {
      kept[start + i] = true
      i++
      j++
    } else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
      i++
    } else {
      j++
    }
  }
  return kept
}

// ---- times ------------------------------------------------------------------------------

const sameDay = (a, b) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate()

/** "14:03:22" today, "3 Dec, 14:03" this year, "3 Dec 2024, 14:03" before. */
export function formatTime (iso, now = new Date()) {
  const date = new Date(iso)
  if (Number.isNaN(date.getTime())) return String(iso ?? '')
  if (sameDay(date, now)) return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })
  const options = { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' }
  if (date.getFullYear() !== now.getFullYear()) options.year = 'numeric'
  return date.toLocaleString(undefined, options)
}

function fullTime (iso) {
  const date = new Date(iso)
  if (Number.isNaN(date.getTime())) return String(iso ?? '')
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' })
}
