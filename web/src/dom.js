// A tiny hyperscript helper: h('button', { class: 'x', onclick }, 'text', child).
// Strings become text nodes (never HTML), so names from other users are safe.

export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value)
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value)
    else if (key === 'html') el.innerHTML = value // only ever used with our own constant SVG icons
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  append(el, children)
  return el
}

function append (el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue
    if (Array.isArray(child)) append(el, child)
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
}

/** Replace all children of `el`. */
export function setChildren (el, ...children) {
  el.replaceChildren()
  append(el, children)
}

/** The app's logo: two overlapping circles, as in the favicon. */
export function logo (size = 24) {
  const span = document.createElement('span')
  span.className = 'logo'
  span.innerHTML = `<svg width="${size}" height="${size}" viewBox="0 0 32 32" aria-hidden="true"><rect width="32" height="32" rx="8" fill="#111827"/><circle cx="12.5" cy="16" r="6.5" fill="#60a5fa"/><circle cx="19.5" cy="16" r="6.5" fill="#f472b6" fill-opacity=".85"/></svg>`
  return span
}

/** Initials for an avatar: "Ada Lovelace" → "AL", "otter" → "O". */
export function initials (name) {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean)
  if (words.length === 0) return '?'
  const letters = words.length === 1 ? [words[0]] : [words[0], words[words.length - 1]]
  return letters.map((w) => Array.from(w)[0]).join('').toUpperCase()
}
