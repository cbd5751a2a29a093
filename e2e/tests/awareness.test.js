// Awareness (presence) through the server: states reach peers and late joiners,
// a new connection is sent the current states right after sync step 1, the
// server echoes awareness to the sender too, answers query-awareness (message
// type 3) with every state, and when a connection drops without saying goodbye
// the server removes its awareness clients and tells the remaining peers.

import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Harness, uniqueDoc } from '../lib/harness.js'
import {
  MSG_AWARENESS, MSG_SYNC, SYNC_STEP1,
  decodeAwareness, decodeMessage, encodeQueryAwareness, encodeRawAwareness
} from '../lib/clients.js'
import { waitUntil } from '../lib/wait.js'

const stateOf = (client, id) => client.awareness.getStates().get(id)

/** The awareness entries of a raw message, or [] if it is not an awareness message. */
const awarenessEntries = (bytes) => {
  const msg = decodeMessage(bytes)
  return msg.type === MSG_AWARENESS ? decodeAwareness(msg.payload) : []
}

/** Does this raw message carry awareness states for all of `wanted` ({ clientID: user })? */
const carriesUsers = (wanted) => (bytes) => {
  const entries = awarenessEntries(bytes)
  return Object.entries(wanted).every(([id, user]) =>
    entries.some((e) => e.clientID === Number(id) && e.state?.user === user))
}

describe('awareness', () => {
  const h = new Harness()
  before(() => h.start())
  after(() => h.dispose())

  it('reaches peers and late joiners, and is removed when a connection drops', async () => {
    const doc = uniqueDoc('aw')
    const a = await h.client(doc)
    a.awareness.setLocalStateField('user', 'alice')
    const b = await h.client(doc)
    const [idA, idB] = [a.doc.clientID, b.doc.clientID]

    // b joined after a set its state: the server must have sent it on connect.
    await waitUntil(() => stateOf(b, idA)?.user === 'alice', { what: "b to see alice's state" })
    b.awareness.setLocalStateField('user', 'bob')
    await waitUntil(() => stateOf(a, idB)?.user === 'bob', { what: "a to see bob's state" })

    // Updates of an existing state propagate.
    a.awareness.setLocalStateField('cursor', { index: 7 })
    await waitUntil(() => stateOf(b, idA)?.cursor?.index === 7, { what: "b to see alice's cursor" })

    // A late joiner sees both.
    const c = await h.client(doc)
    await waitUntil(() => stateOf(c, idA)?.user === 'alice' && stateOf(c, idB)?.user === 'bob', {
      what: 'late joiner to see alice and bob',
      describe: () => JSON.stringify([...c.awareness.getStates()])
    })

    // b drops without sending its awareness removal (no close frame, no goodbye):
    // the server must remove b's state and broadcast the removal.
    b.provider.shouldConnect = false
    b.provider.ws.terminate()
    await waitUntil(() => !a.awareness.getStates().has(idB) && !c.awareness.getStates().has(idB), {
      what: "peers to see bob's awareness removed",
      describe: () => `a: ${JSON.stringify([...a.awareness.getStates().keys()])}, c: ${JSON.stringify([...c.awareness.getStates().keys()])}`
    })
    assert.equal(stateOf(c, idA)?.user, 'alice', 'alice must still be present')
  })

  it('a raw connection gets sync step 1 then the current states, echoes, query-awareness, removal', async () => {
    const doc = uniqueDoc('awraw')
    const a = await h.client(doc)
    a.awareness.setLocalStateField('user', 'alice')
    const b = await h.client(doc)
    b.awareness.setLocalStateField('user', 'bob')
    const [idA, idB] = [a.doc.clientID, b.doc.clientID]
    await waitUntil(() => stateOf(a, idB)?.user === 'bob' && stateOf(b, idA)?.user === 'alice', { what: 'a and b to see each other' })

    const raw = await h.raw(doc)
    await raw.waitMessage(carriesUsers({ [idA]: 'alice', [idB]: 'bob' }), { what: 'current awareness states on connect' })
    const first = decodeMessage(raw.messages[0])
    assert.deepEqual([first.type, first.syncType], [MSG_SYNC, SYNC_STEP1], 'first message must be sync step 1')

    // query-awareness: all states again.
    let from = raw.messages.length
    raw.send(encodeQueryAwareness())
    await raw.waitMessage(carriesUsers({ [idA]: 'alice', [idB]: 'bob' }), { from, what: 'answer to query-awareness' })

    // The raw client announces a state: peers see it and the sender gets it back.
    const rawId = 123456789
    from = raw.messages.length
    raw.send(encodeRawAwareness([{ clientID: rawId, clock: 1, state: JSON.stringify({ user: 'raw' }) }]))
    await raw.waitMessage(carriesUsers({ [rawId]: 'raw' }), { from, what: 'own awareness echoed back' })
    await waitUntil(() => stateOf(a, rawId)?.user === 'raw' && stateOf(b, rawId)?.user === 'raw', { what: "peers to see the raw client's state" })

    // Dropping the socket removes the raw client's state for the peers.
    raw.close()
    await waitUntil(() => !a.awareness.getStates().has(rawId) && !b.awareness.getStates().has(rawId), {
      what: "peers to see the raw client's awareness removed"
    })
    assert.equal(stateOf(a, idB)?.user, 'bob')
    assert.equal(stateOf(b, idA)?.user, 'alice')
  })
})
