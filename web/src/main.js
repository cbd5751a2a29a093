// Tandem's browser editor. One page, routed by path:
//   /          the documents on this server (home.js)
//   /d/{doc}   the editor on {doc} (editor.js)
import './style.css'
import { h, logo, setChildren } from './dom.js'
import { mountEditor } from './editor.js'
import { mountHome } from './home.js'

const root = document.getElementById('app')
const path = location.pathname

if (path === '/' || path === '/index.html') {
  mountHome(root)
} else if (path.startsWith('/d/') && path.length > 3) {
  mountEditor(root, path.slice(3).replace(/\/+$/, ''))
} else {
  document.title = 'Not found · Tandem'
  root.className = 'app app-home'
  setChildren(root,
    h('header', { class: 'topbar' }, h('div', { class: 'topbar-inner' },
      h('a', { class: 'brand', href: '/' }, logo(26), h('span', { class: 'brand-name' }, 'Tandem')))),
    h('main', { class: 'page page-home' }, h('section', { class: 'hero' },
      h('h1', {}, 'Nothing here'),
      h('p', { class: 'lede' }, 'Documents live at /d/{name}. '),
      h('a', { class: 'button button-primary', href: '/' }, 'All documents'))))
}
