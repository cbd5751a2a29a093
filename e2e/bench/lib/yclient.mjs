// y-websocket protocol clients for the load generator.
//
// RawClient: no Yjs document at all, so it is cheap enough to run a thousand of them.
// It does the sync handshake (answers the server's sync step 1 with an empty sync step 2,
// sends its own sync step 1 with an empty state vector, marks itself synced when the
// server's sync step 2 arrives) and then hands every incoming update frame to a callback
// with its receive time. Updates are identified by content: writers put "[#<seq>]" into
// the inserted text, and Yjs v1 updates carry inserted strings verbatim as UTF-8, so
// scanMarkers() finds the sequence numbers without decoding the update.
//
// DocClient: a Y.Doc bound to a WebSocket the way y-websocket's WebsocketProvider binds
// it (sync step 1 on open, y-protocols readSyncMessage for incoming sync messages, every
// local update sent as it is produced), minus awareness and reconnection.

import WebSocket from 'ws'
import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { now } from './stats.mjs'

export const MSG_SYNC = 0
export const MSG_AWARENESS = 1
export const MSG_AUTH = 2
export const SYNC_STEP1 = 0
export const SYNC_STEP2 = 1
export const SYNC_UPDATE = 2

const WS_OPTIONS = {
  // The reference server (ws 6) does not negotiate permessage-deflate and Tandem does
  // not either; not offering it keeps the driver from paying for zlib contexts.
  perMessageDeflate: false,
  handshakeTimeout: 30000,
  maxPayload: 256 * 1024 * 1024
}

// [sync, step1, len=1, stateVector = varUint(0)] : "I have nothing".
const EMPTY_STEP1 = Uint8Array.of(MSG_SYNC, SYNC_STEP1, 1, 0)
// [sync, step2, len=2, update = (0 structs, 0 delete-set clients)] : "here is nothing".
const EMPTY_STEP2 = Uint8Array.of(MSG_SYNC, SYNC_STEP2, 2, 0, 0)

function readVarUint (buf, pos) {
  let num = 0
  let mult = 1
  for (;;) {
    const b = buf[pos.i++]
    if (b === undefined) throw new Error('truncated varuint')
    num += (b & 0x7f) * mult
    if (b < 0x80) return num
    mult *= 128
    if (mult > 2 ** 53) throw new Error('varuint too long')
  }
}

const MARK0 = 0x5b // '['
const MARK1 = 0x23 // '#'
const MARK_END = 0x5d // ']'

/** Calls cb(seq) for every "[#<digits>]" in buf[start, end). Returns how many it found. */
export function scanMarkers (buf, start, end, cb) {
  let found = 0
  let i = start
  while (i < end - 3) {
    i = buf.indexOf(MARK0, i)
    if (i < 0 || i >= end - 3) break
    if (buf[i + 1] !== MARK1) { i++; continue }
    let j = i + 2
    let seq = 0
    let digits = 0
    while (j < end && buf[j] >= 0x30 && buf[j] <= 0x39) { seq = seq * 10 + (buf[j] - 0x30); j++; digits++ }
    if (digits > 0 && j < end && buf[j] === MARK_END) { cb(seq); found++; i = j + 1 } else { i++ }
  }
  return found
}

export const marker = (seq) => `[#${seq}]`

export class RawClient {
  /**
   * @param {string} url
   * @param {object} [h]
   * @param {(payload: Buffer, start: number, end: number, tRecv: number) => void} [h.onUpdate]
   * @param {(client: RawClient) => void} [h.onSynced]
   * @param {(client: RawClient) => void} [h.onClose]
   * @param {number} [h.syncedMinBytes] only a sync step 2 with at least this many update bytes counts as "synced"
   * @param {boolean} [h.keepStep2] keep a copy of the sync step 2 payload in .step2
   * @param {string} [h.localAddress] the local address to connect from (127.0.0.x: each
   *   loopback address has its own ephemeral ports, for more than ~28,000 connections)
   */
  constructor (url, h = {}) {
    this.url = url
    this.h = h
    this.ws = null
    this.tStart = null
    this.tOpen = null
    this.tSynced = null
    this.step2Bytes = null
    this.updates = 0
    this.closed = false
    this.closeCode = null
    this.error = null
    this.expectedClose = false
  }

  /** Resolves when the socket is open (step 1 already sent); rejects on failure. */
  connect () {
    return new Promise((resolve, reject) => {
      this.tStart = now()
      const ws = new WebSocket(this.url, this.h.localAddress ? { ...WS_OPTIONS, localAddress: this.h.localAddress } : WS_OPTIONS)
      this.ws = ws
      ws.binaryType = 'nodebuffer'
      ws.on('open', () => {
        this.tOpen = now()
        ws.send(EMPTY_STEP1)
        resolve(this)
      })
      ws.on('message', (data) => this.onMessage(data))
      ws.on('error', (err) => { this.error = err.message; reject(err) })
      ws.on('close', (code) => {
        this.closed = true
        this.closeCode = code
        if (this.h.onClose) this.h.onClose(this)
        reject(new Error(`closed (${code}) before open`))
      })
    })
  }

  onMessage (data) {
    const t = now()
    const pos = { i: 0 }
    const type = readVarUint(data, pos)
    if (type !== MSG_SYNC) return // awareness, auth, query-awareness: not needed here
    const sub = readVarUint(data, pos)
    const len = readVarUint(data, pos)
    const start = pos.i
    const end = start + len
    if (sub === SYNC_UPDATE) {
      this.updates++
      if (this.h.onUpdate) this.h.onUpdate(data, start, end, t)
    } else if (sub === SYNC_STEP1) {
      this.ws.send(EMPTY_STEP2)
    } else if (sub === SYNC_STEP2) {
      if (this.tSynced === null && len >= (this.h.syncedMinBytes || 0)) {
        this.tSynced = t
        this.step2Bytes = len
        if (this.h.keepStep2) this.step2 = Uint8Array.prototype.slice.call(data, start, end)
        if (this.h.onSynced) this.h.onSynced(this)
      }
      // An early step 2 can carry updates too (scenarios start writing only after all synced).
    }
  }

  /** Sends a Yjs update as a sync-update frame. */
  sendUpdate (update) {
    this.ws.send(updateFrame(update))
  }

  close () {
    this.expectedClose = true
    if (this.ws && this.ws.readyState <= 1) this.ws.close()
  }
}

/** Connects a fresh RawClient, returns the update in the server's sync step 2 (its whole state). */
export async function fetchState (url, timeoutMs = 10000) {
  const c = new RawClient(url, { keepStep2: true })
  try {
    await c.connect()
    const deadline = now() + timeoutMs
    while (c.tSynced === null && !c.closed && now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    return c.step2 || null
  } finally { c.close() }
}

/** Encodes an update as a y-websocket "sync update" frame. */
export function updateFrame (update) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_SYNC)
  syncProtocol.writeUpdate(enc, update)
  return encoding.toUint8Array(enc)
}

/**
 * Produces, without a Y.Doc, the exact Yjs v1 update that a Y.Doc with this client id
 * emits for `ytext.insert(ytext.length, str)` on a root Y.Text that only this client
 * has written to: one client, one Item with ContentString (ref 4) whose left origin is
 * the previous insert's last character (or, for the first insert, parent = root type
 * `typeName`), and an empty delete set. ASCII strings only (Yjs clocks count UTF-16
 * units; this counts bytes). selfTest() checks it byte for byte against Yjs.
 */
export class TextAppender {
  constructor (clientId, typeName = 'text') {
    this.client = clientId
    this.typeName = typeName
    this.clock = 0
  }

  next (str) {
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, 1) // clients with structs
    encoding.writeVarUint(enc, 1) // structs of this client
    encoding.writeVarUint(enc, this.client)
    encoding.writeVarUint(enc, this.clock)
    if (this.clock === 0) {
      encoding.writeUint8(enc, 4) // ContentString, no origins, no parentSub
      encoding.writeVarUint(enc, 1) // parent is a root type, named by key
      encoding.writeVarString(enc, this.typeName)
    } else {
      encoding.writeUint8(enc, 0x80 | 4) // ContentString with a left origin
      encoding.writeVarUint(enc, this.client)
      encoding.writeVarUint(enc, this.clock - 1)
    }
    encoding.writeVarString(enc, str)
    encoding.writeVarUint(enc, 0) // empty delete set
    this.clock += str.length
    return encoding.toUint8Array(enc)
  }

  /** Throws unless this encoder matches Yjs byte for byte for `n` appends. */
  static selfTest (n = 50) {
    const doc = new Y.Doc()
    const app = new TextAppender(doc.clientID)
    const ytext = doc.getText('text')
    let got = null
    doc.on('update', (u) => { got = u })
    for (let i = 0; i < n; i++) {
      const str = marker(i)
      ytext.insert(ytext.length, str)
      const mine = app.next(str)
      if (got.length !== mine.length || got.some((b, k) => b !== mine[k])) {
        throw new Error(`TextAppender differs from Yjs at insert ${i}: ${Array.from(got)} vs ${Array.from(mine)}`)
      }
    }
    return true
  }
}

export class DocClient {
  /**
   * @param {string} url
   * @param {Y.Doc} doc
   * @param {object} [h]
   * @param {(tRecv: number) => void} [h.onRemoteUpdate] called after each applied remote update frame
   * @param {(update: Uint8Array) => void} [h.onSend] called right before a local update is sent
   * @param {string} [h.localAddress] the local address to connect from
   */
  constructor (url, doc, h = {}) {
    this.url = url
    this.doc = doc
    this.h = h
    this.ws = null
    this.synced = false
    this.closed = false
    this.closeCode = null
    this.sentFrames = 0
    this.sentBytes = 0
    this.onDocUpdate = (update, origin) => {
      if (origin === this || this.ws === null || this.ws.readyState !== 1) return
      if (this.h.onSend) this.h.onSend(update)
      const frame = updateFrame(update)
      this.sentFrames++
      this.sentBytes += frame.length
      this.ws.send(frame)
    }
    doc.on('update', this.onDocUpdate)
  }

  /** Resolves once the server's sync step 2 has been applied. */
  connect () {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, this.h.localAddress ? { ...WS_OPTIONS, localAddress: this.h.localAddress } : WS_OPTIONS)
      this.ws = ws
      ws.binaryType = 'nodebuffer'
      ws.on('open', () => {
        const enc = encoding.createEncoder()
        encoding.writeVarUint(enc, MSG_SYNC)
        syncProtocol.writeSyncStep1(enc, this.doc)
        ws.send(encoding.toUint8Array(enc))
      })
      ws.on('message', (data) => {
        const t = now()
        const dec = decoding.createDecoder(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        if (decoding.readVarUint(dec) !== MSG_SYNC) return
        const enc = encoding.createEncoder()
        encoding.writeVarUint(enc, MSG_SYNC)
        const sub = syncProtocol.readSyncMessage(dec, enc, this.doc, this)
        if (encoding.length(enc) > 1) ws.send(encoding.toUint8Array(enc))
        if (sub === SYNC_STEP2 && !this.synced) { this.synced = true; resolve(this) }
        if (sub === SYNC_UPDATE && this.h.onRemoteUpdate) this.h.onRemoteUpdate(t)
      })
      ws.on('error', (err) => reject(err))
      ws.on('close', (code) => { this.closed = true; this.closeCode = code; reject(new Error(`closed (${code}) before synced`)) })
    })
  }

  close () {
    this.doc.off('update', this.onDocUpdate)
    if (this.ws && this.ws.readyState <= 1) this.ws.close()
  }
}

export { Y }
