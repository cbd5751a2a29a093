// Clients for the tests:
//  - `Client`: a Y.Doc connected through the stock y-websocket WebsocketProvider;
//  - `RawClient`: a bare `ws` socket for hand-made (and malformed) protocol frames;
// plus encoders/decoders for y-protocols messages.
//
// Providers are created with `disableBc: true`: in Node 20 BroadcastChannel is a
// global, and providers in one process would otherwise sync with each other
// directly, bypassing the server under test.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as syncProtocol from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'
import { waitUntil, withTimeout } from './wait.js'

// Each WebsocketProvider adds a process 'exit' listener; tests create many providers.
process.setMaxListeners(0)

export const MSG_SYNC = 0
export const MSG_AWARENESS = 1
export const MSG_QUERY_AWARENESS = 3
export const SYNC_STEP1 = 0
export const SYNC_STEP2 = 1

export class Client {
  /**
   * @param {string} wsUrl server base URL, ws://127.0.0.1:PORT/ws
   * @param {string} docName
   * @param {{ doc?: Y.Doc, connect?: boolean, params?: Record<string,string> }} opts
   *   `params`: URL query parameters for the provider, e.g. { token }
   */
  constructor (wsUrl, docName, { doc = new Y.Doc(), connect = true, params = {} } = {}) {
    this.docName = docName
    this.doc = doc
    /** every 'connection-close' event: { code, reason } (null code when closed locally) */
    this.closeEvents = []
    /** every 'status' event ('connecting' is emitted once per new socket the provider opens) */
    this.statusEvents = []
    this.provider = new WebsocketProvider(wsUrl, docName, doc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      connect,
      params
    })
    this.provider.on('connection-close', (event) => {
      this.closeEvents.push(event ? { code: event.code, reason: event.reason } : { code: null, reason: 'local' })
    })
    this.provider.on('status', ({ status }) => this.statusEvents.push(status))
  }

  get text () { return this.doc.getText('text') }
  get map () { return this.doc.getMap('map') }
  get array () { return this.doc.getArray('array') }
  get awareness () { return this.provider.awareness }

  /** Resolve when the provider has received sync step 2 (immediately if it already has). */
  synced (timeoutMs = 10_000) {
    return waitUntil(() => this.provider.synced, { timeoutMs, intervalMs: 5, what: `a provider on ${this.docName} to sync` })
  }

  /** Plain JSON of the whole document, for comparisons. */
  json () { return this.doc.toJSON() }

  destroy () {
    this.provider.destroy()
    this.doc.destroy()
  }
}

/** Create a Client and wait until it is synced with the server. */
export async function connectClient (wsUrl, docName, opts = {}) {
  const client = new Client(wsUrl, docName, opts)
  try {
    await client.synced(opts.timeoutMs ?? 10_000)
  } catch (err) {
    client.destroy()
    throw err
  }
  return client
}

/** A bare websocket; records every message it receives and how it was closed. */
export class RawClient {
  constructor (url) {
    this.url = url
    /** binary messages received, as Uint8Array */
    this.messages = []
    /** text messages received */
    this.textMessages = []
    this.ws = new WebSocket(url)
    this.ws.binaryType = 'nodebuffer'
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) this.messages.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
      else this.textMessages.push(data.toString())
    })
    // errors (e.g. ECONNRESET when the server drops us) are expected in some tests;
    // they are recorded, and the 'close' event still follows.
    this.errors = []
    this.ws.on('error', (err) => this.errors.push(err))
    /** resolves to { code, reason } when the socket is closed */
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    })
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })))
      this.ws.once('close', () => reject(new Error('closed before open')))
    })
    this.opened.catch(() => {})
  }

  send (data) { this.ws.send(data) }

  /** Wait for a received binary message matching `pred`, scanning from index `from`. */
  async waitMessage (pred = () => true, { timeoutMs = 10_000, from = 0, what = 'a message' } = {}) {
    return waitUntil(() => this.messages.slice(from).find(pred), { timeoutMs, what })
  }

  /** Wait for the close and return { code, reason }. */
  waitClosed (timeoutMs = 10_000) {
    return withTimeout(this.closed, timeoutMs, `${this.url} to be closed by the server`)
  }

  close () {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) this.ws.terminate()
  }
}

/** Open a raw socket to /ws/{doc} and wait until it is open. */
export async function connectRaw (wsUrl, docName, timeoutMs = 10_000) {
  const raw = new RawClient(`${wsUrl}/${docName}`)
  await withTimeout(raw.opened, timeoutMs, `raw socket to ${docName} to open`)
  return raw
}

// ---- y-protocols message encoders ----------------------------------------------------------

const message = (write) => {
  const enc = encoding.createEncoder()
  write(enc)
  return encoding.toUint8Array(enc)
}

export const encodeSyncStep1 = (doc) => message((e) => { encoding.writeVarUint(e, MSG_SYNC); syncProtocol.writeSyncStep1(e, doc) })
export const encodeUpdate = (update) => message((e) => { encoding.writeVarUint(e, MSG_SYNC); syncProtocol.writeUpdate(e, update) })
export const encodeQueryAwareness = () => message((e) => encoding.writeVarUint(e, MSG_QUERY_AWARENESS))

/** An awareness message from raw parts: entries are { clientID, clock, state } with `state` a JSON string. */
export const encodeRawAwareness = (entries) => message((e) => {
  encoding.writeVarUint(e, MSG_AWARENESS)
  encoding.writeVarUint8Array(e, message((inner) => {
    encoding.writeVarUint(inner, entries.length)
    for (const { clientID, clock, state } of entries) {
      encoding.writeVarUint(inner, clientID)
      encoding.writeVarUint(inner, clock)
      encoding.writeVarString(inner, state)
    }
  }))
})

// ---- decoders -----------------------------------------------------------------------------

/** { type, syncType?, payload? } of a received message; payload is the inner byte array. */
export function decodeMessage (bytes) {
  const dec = decoding.createDecoder(bytes)
  const type = decoding.readVarUint(dec)
  if (type === MSG_SYNC) {
    const syncType = decoding.readVarUint(dec)
    return { type, syncType, payload: decoding.readVarUint8Array(dec) }
  }
  if (type === MSG_AWARENESS) return { type, payload: decoding.readVarUint8Array(dec) }
  return { type }
}

/** Decode an awareness payload into [{ clientID, clock, state }] with `state` parsed (null = removed). */
export function decodeAwareness (payload) {
  const dec = decoding.createDecoder(payload)
  const n = decoding.readVarUint(dec)
  const out = []
  for (let i = 0; i < n; i++) {
    const clientID = decoding.readVarUint(dec)
    const clock = decoding.readVarUint(dec)
    out.push({ clientID, clock, state: JSON.parse(decoding.readVarString(dec)) })
  }
  return out
}
