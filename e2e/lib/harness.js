// Per-test (or per-file) harness: one data directory, the server running on it,
// and every client made through it; `dispose()` tears all of it down, and is
// meant to be registered with `after()` / `t.after()` so it runs on failure too.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import * as Y from 'yjs'
import { Client, connectClient, connectRaw } from './clients.js'
import { makeTmpDir, removeDir, startServer } from './server.js'
import { waitUntil } from './wait.js'

export class Harness {
  /**
   * @param {{ env?: Record<string,string>, maxLogLines?: number }} opts settings passed to
   *   every server start; `maxLogLines` as in startServer (default: the last 400)
   */
  constructor ({ env = {}, maxLogLines } = {}) {
    this.env = env
    this.maxLogLines = maxLogLines
    this.dataDir = makeTmpDir()
    this.server = null
    this.clients = new Set()
    this.raws = new Set()
  }

  /** Start the server; `port` binds that port (e.g. the previous server's) instead of a free one. */
  async start (extraEnv = {}, { port } = {}) {
    this.server = await startServer({ dataDir: this.dataDir, env: { ...this.env, ...extraEnv }, maxLogLines: this.maxLogLines, port })
    return this.server
  }

  /**
   * Stop the running server (`signal`: 'SIGTERM' or 'SIGKILL'), drop all clients so
   * none of them can re-send anything, and start a new server on the same database.
   */
  async restart ({ signal = 'SIGTERM' } = {}) {
    this.dropClients()
    const exit = await this.server.stop({ signal })
    await this.start()
    return exit
  }

  /** A Client on `docName`, synced. */
  async client (docName, opts = {}) {
    const c = await connectClient(this.server.wsUrl, docName, opts)
    this.clients.add(c)
    return c
  }

  /** A Client that is not awaited (e.g. not connected yet: { connect: false }). */
  clientNoWait (docName, opts = {}) {
    const c = new Client(this.server.wsUrl, docName, opts)
    this.clients.add(c)
    return c
  }

  /** A raw ws socket on /ws/{docName}, open. */
  async raw (docName) {
    const r = await connectRaw(this.server.wsUrl, docName)
    this.raws.add(r)
    return r
  }

  dropClients () {
    for (const c of this.clients) c.destroy()
    for (const r of this.raws) r.close()
    this.clients.clear()
    this.raws.clear()
  }

  async dispose () {
    this.dropClients()
    if (this.server?.running) await this.server.kill9().catch(() => {})
    removeDir(this.dataDir)
  }
}

/** A fresh document name (valid characters only) that no other test uses. */
export function uniqueDoc (prefix = 'doc') {
  return `${prefix}-${randomBytes(4).toString('hex')}`
}

/**
 * The content of the root types the tests use (Y.Text 'text', Y.Map 'map',
 * Y.Array 'array') as canonical JSON: map keys sorted, so that two documents
 * with the same content give the same string whatever order keys arrived in.
 * (Y.Doc#toJSON would only list root types this replica has accessed.)
 */
export function snapshot (doc) {
  return canonicalJson({
    text: doc.getText('text').toString(),
    map: doc.getMap('map').toJSON(),
    array: doc.getArray('array').toJSON()
  })
}

export function canonicalJson (value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
      : v)
}

/**
 * assert.equal for long strings: on mismatch, report the lengths and the first
 * differing position with some context instead of dumping megabytes.
 */
export function assertSameText (actual, expected, what = 'text') {
  if (actual === expected) return
  let i = 0
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i++
  const around = (s) => JSON.stringify(s.slice(Math.max(0, i - 40), i + 40))
  throw new assert.AssertionError({
    message: `${what}: differs at index ${i} (actual length ${actual.length}, expected length ${expected.length})\n` +
      `  actual   …${around(actual)}…\n  expected …${around(expected)}…`
  })
}

/** Y.Doc state vectors equal (same clients, same clocks)? */
export function sameStateVector (a, b) {
  return Buffer.from(Y.encodeStateVector(a)).equals(Buffer.from(Y.encodeStateVector(b)))
}

/** Wait until every client holds the same state vector and the same content. */
export async function waitConverged (clients, { timeoutMs = 15_000, what = 'clients to converge' } = {}) {
  await waitUntil(() => {
    const [first, ...rest] = clients
    const s = snapshot(first.doc)
    return rest.every((c) => sameStateVector(first.doc, c.doc) && snapshot(c.doc) === s)
  }, {
    timeoutMs,
    intervalMs: 25,
    what,
    describe: () => clients.map((c, i) => `#${i} ${truncate(snapshot(c.doc))}`).join('\n')
  })
}

export function truncate (s, n = 300) {
  return s.length <= n ? s : `${s.slice(0, n)}… (${s.length} chars)`
}
