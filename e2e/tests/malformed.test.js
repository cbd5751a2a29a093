// Malformed input: each bad frame closes only the connection that sent it, with
// 4400 (or 4413/1009 for a frame over TANDEM_MAX_MESSAGE_BYTES); the providers
// already in the room stay connected and keep syncing; and the stored document
// is unchanged (checked with a fresh provider after every case, and after a
// restart at the end).

import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Harness, sameStateVector, snapshot, uniqueDoc, waitConverged } from '../lib/harness.js'
import { encodeRawAwareness, encodeUpdate } from '../lib/clients.js'
import { prng } from '../lib/prng.js'

const MAX_MESSAGE_BYTES = 65536
const MALFORMED = [4400]
const TOO_LARGE = [4413, 1009]

/** 64 seeded random bytes that Yjs itself refuses to decode as an update. */
const garbageUpdate = prng(1).bytes(64)

/** A well-formed update message carrying 1 MiB of text: only its size is wrong. */
function oneMegabyteUpdate () {
  const d = new Y.Doc()
  d.getText('text').insert(0, 'x'.repeat(1 << 20))
  return encodeUpdate(Y.encodeStateAsUpdate(d))
}

const CASES = [
  { name: 'random bytes', frame: prng(42).bytes(64), codes: MALFORMED },
  { name: 'an empty binary frame', frame: new Uint8Array(0), codes: MALFORMED },
  { name: 'a truncated varint', frame: Uint8Array.from([0x00, 0x02, 0xff]), codes: MALFORMED },
  { name: 'a length prefix beyond the frame', frame: Uint8Array.from([0x00, 0x02, 0x10, 0x01, 0x02]), codes: MALFORMED },
  { name: 'a sync update whose payload is garbage', frame: encodeUpdate(garbageUpdate), codes: MALFORMED },
  {
    name: 'an awareness message whose state is not JSON',
    frame: encodeRawAwareness([{ clientID: 4242, clock: 1, state: '{"user": not json' }]),
    codes: MALFORMED,
    awarenessId: 4242
  },
  { name: 'a text frame', frame: '{"type":"sync"}', codes: MALFORMED },
  { name: `a 1 MiB frame (limit ${MAX_MESSAGE_BYTES})`, frame: oneMegabyteUpdate(), codes: TOO_LARGE }
]

describe('malformed input', () => {
  const h = new Harness({ env: { TANDEM_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES) } })
  const doc = uniqueDoc('malformed')
  let a, b

  before(async () => {
    await h.start()
    a = await h.client(doc)
    b = await h.client(doc)
    a.text.insert(0, 'start;')
    a.map.set('k', 'v')
    await waitConverged([a, b])
  })
  after(() => h.dispose())

  it('precondition: Yjs itself rejects the garbage update', () => {
    assert.throws(() => Y.applyUpdate(new Y.Doc(), garbageUpdate))
  })

  for (const [i, c] of CASES.entries()) {
    it(`${c.name}: closes only that connection with ${c.codes.join(' or ')}; the room carries on; nothing stored changes`, async () => {
      const raw = await h.raw(doc)
      await raw.waitMessage(() => true, { what: 'sync step 1 from the server' })
      raw.send(c.frame)
      const { code } = await raw.waitClosed()
      assert.ok(c.codes.includes(code), `close code ${code}, expected ${c.codes.join(' or ')}`)

      // The providers in the room were not disturbed and still sync.
      a.text.insert(a.text.length, `after-${i};`)
      b.array.push([i])
      await waitConverged([a, b], { what: `a and b to keep syncing after ${c.name}` })
      assert.deepEqual([a.closeEvents, b.closeEvents], [[], []], 'the other providers must stay connected')
      if (c.awarenessId) assert.equal(a.awareness.getStates().has(c.awarenessId), false, 'the invalid awareness state reached a peer')

      // The stored document holds exactly what a and b wrote.
      const fresh = await h.client(doc)
      assert.equal(snapshot(fresh.doc), snapshot(a.doc))
      assert.ok(sameStateVector(fresh.doc, a.doc), 'a fresh client sees extra or missing updates')
      fresh.destroy()
    })
  }

  it('the stored document is intact after a restart', async () => {
    const expected = snapshot(a.doc)
    const stateVector = Y.encodeStateVector(a.doc)
    assert.ok(a.text.toString().startsWith('start;'))
    await h.restart({ signal: 'SIGTERM' })
    const fresh = await h.client(doc)
    assert.equal(snapshot(fresh.doc), expected)
    assert.ok(Buffer.from(Y.encodeStateVector(fresh.doc)).equals(Buffer.from(stateVector)), 'state vector after restart')
  })
})
