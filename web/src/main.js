// Tandem's browser app. One page, routed by path; each route's code is a
// chunk of its own (esbuild splitting), so that /admin never loads the editor:
//   /          the documents on this server (home.js)
//   /d/{doc}   the editor on {doc} (editor.js)
//   /admin     the webhook delivery console (admin.js)
import './style.css'
import { h, logo, setChildren } from './dom.js'

const root = document.getElementById('app')
const path = location.pathname

if (path === '/' || path === '/index.html') {
  import('./home.js').then(({ mountHome }) => mountHome(root), failed)
} else if (path.startsWith('/d/') && path.length > 3) {
  import('./editor.js').then(({ mountEditor }) => mountEditor(root, path.slice(3).replace(/\/+$/, '')), failed)
} else if (path === '/admin' || path === '/admin/') {
  import('./admin.js').then(({ mountAdmin }) => mountAdmin(root), failed)
} else {
  document.title = 'Not found · Tandem'
  page(h('h1', {}, 'Nothing here'),
    h('p', { class: 'lede' }, 'Documents live at /d/{name}. '),
    h('a', { class: 'button button-primary', href: '/' }, 'All documents'))
}

/** A page's code did not load (the server was upgraded since this page was, or is gone). */
function failed (err) {
  console.error(err)
  page(h('h1', {}, 'This page did not load'),
    h('p', { class: 'lede' }, 'The server may have been upgraded or be unreachable. Reload the page.'),
    h('button', { type: 'button', class: 'button button-primary', onclick: () => location.reload() }, 'Reload'))
}

function page (...hero) {
  root.className = 'app app-home'
  setChildren(root,
    h('header', { class: 'topbar' }, h('div', { class: 'topbar-inner' },
      h('a', { class: 'brand', href: '/' }, logo(26), h('span', { class: 'brand-name' }, 'Tandem')))),
    h('main', { class: 'page page-home' }, h('section', { class: 'hero' }, ...hero)))
}
