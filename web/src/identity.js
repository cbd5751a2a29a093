// Who this browser is: a display name and a colour, remembered in
// localStorage so that they survive reloads and are the same in every tab.

const KEY = 'tandem.user'

export const PALETTE = [
  '#e5484d', // red
  '#f76b15', // orange
  '#d6a100', // amber
  '#30a46c', // green
  '#12a594', // teal
  '#0090ff', // blue
  '#3e63dd', // indigo
  '#8e4ec6', // purple
  '#d6409f', // pink
  '#a1795a' // brown
]

const ADJECTIVES = ['Curious', 'Brave', 'Quiet', 'Swift', 'Clever', 'Gentle', 'Bright', 'Calm', 'Bold', 'Witty', 'Lucky', 'Sunny']
const ANIMALS = ['Otter', 'Falcon', 'Panda', 'Fox', 'Heron', 'Lynx', 'Koala', 'Robin', 'Badger', 'Dolphin', 'Owl', 'Hare']

const pick = (list) => list[Math.floor(Math.random() * list.length)]

export const isColor = (value) => typeof value === 'string' && /^#[0-9a-fA-F]{6}$/.test(value)

export function cleanName (name) {
  return String(name ?? '').replace(/\s+/g, ' ').trim().slice(0, 40)
}

function read () {
  try {
    return JSON.parse(localStorage.getItem(KEY) || 'null')
  } catch {
    return null
  }
}

function write (user) {
  try {
    localStorage.setItem(KEY, JSON.stringify(user))
  } catch {
    // storage disabled (private mode): the identity lasts for this page only
  }
}

/**
 * The remembered user, or a new one (named `suggestedName` when given, e.g.
 * the token's `name` claim, otherwise a friendly random name).
 * @returns {{ id: string, name: string, color: string }}
 */
export function loadUser (suggestedName) {
  const saved = read() || {}
  const user = {
    id: typeof saved.id === 'string' && saved.id ? saved.id : randomId(),
    name: cleanName(saved.name) || cleanName(suggestedName) || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`,
    color: isColor(saved.color) ? saved.color : pick(PALETTE)
  }
  write(user)
  return user
}

export function saveUser (user) {
  write({ id: user.id, name: user.name, color: user.color })
}

function randomId () {
  const bytes = new Uint8Array(8)
  crypto.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}
