// Document sync between stock y-websocket clients through one server:
// concurrent edits converge (Y.Text, Y.Map, Y.Array), a late joiner gets the
// whole state at sync time, offline edits merge on reconnect, an update that
// arrives before the one it depends on is kept and reaches everybody, rooms are
// isolated (content and awareness), doc names are validated, and a 1 MiB
// document reaches a late joiner and survives a restart.

import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Harness, assertSameText, sameStateVector, snapshot, uniqueDoc, waitConverged } from '../lib/harness.js'
import { MSG_SYNC, RawClient, SYNC_STEP2, encodeSyncStep1, encodeUpdate } from '../lib/clients.js'
import { prng } from '../lib/prng.js'
import { waitUntil } from '../lib/wait.js'

describe('sync', () => {
  const h = new Harness()
  before(() => h.start())
  after(() => h.dispose())

  it('two providers converge on concurrent edits to Y.Text, Y.Map and Y.Array', async () => {
    const doc = uniqueDoc('converge')
    const a = await h.client(doc)
    const b = await h.client(doc)

    // Both sides edit before either can have received the other's edits.
    for (let i = 0; i < 10; i++) {
      a.doc.transact(() => {
        a.text.insert(a.text.length, `A${i};`)
        a.map.set(`a${i}`, i)
        a.map.set('contested', `A${i}`)
        a.array.push([`a${i}`])
      })
      b.doc.transact(() => {
        b.text.insert(0, `B${i};`)
        b.map.set(`b${i}`, { n: i })
        b.map.set('contested', `B${i}`)
        b.array.insert(0, [`b${i}`])
      })
    }
    await waitConverged([a, b])

    const text = a.text.toString()
    for (let i = 0; i < 10; i++) {
      assert.ok(text.includes(`A${i};`), `text lacks A${i}: ${text}`)
      assert.ok(text.includes(`B${i};`), `text lacks B${i}: ${text}`)
      assert.equal(a.map.get(`a${i}`), i)
      assert.deepEqual(a.map.get(`b${i}`), { n: i })
    }
    assert.equal(text.length, 60) // "A0;" … "A9;" and "B0;" … "B9;": 20 tokens of 3 chars
    assert.ok(['A9', 'B9'].includes(a.map.get('contested')), `contested = ${a.map.get('contested')}`)
    assert.deepEqual([...a.array.toArray()].sort(), [...Array(10).keys()].flatMap((i) => [`a${i}`, `b${i}`]).sort())

    // Concurrent deletes and inserts on the converged state.
    a.doc.transact(() => { a.text.delete(0, 6); a.map.delete('a0'); a.array.delete(0, 2) })
    b.doc.transact(() => { b.text.insert(b.text.length, 'END'); b.map.set('a1', 'changed'); b.array.push(['tail']) })
    await waitConverged([a, b])
    assert.ok(a.text.toString().endsWith('END'))
    assert.equal(a.text.length, 60 - 6 + 3)
    assert.equal(a.map.has('a0'), false)
    assert.equal(a.map.get('a1'), 'changed')
    assert.equal(a.array.length, 20 - 2 + 1)
    assert.equal(a.array.get(a.array.length - 1), 'tail')
  })

  it('a late joiner gets the whole state when it syncs', async () => {
    const doc = uniqueDoc('late')
    const a = await h.client(doc)
    const observer = await h.client(doc)
    for (let i = 0; i < 50; i++) a.text.insert(a.text.length, `line ${i}\n`) // 50 separate updates
    a.text.delete(0, 7)
    a.map.set('nested', new Y.Map([['k', 'v']]))
    a.array.push([1, 'two', { three: 3 }, [4]])
    await waitConverged([a, observer]) // the server has accepted all of it

    const late = await h.client(doc) // resolves on sync step 2 from the server
    assert.equal(snapshot(late.doc), snapshot(a.doc), 'late joiner content right after sync')
    assert.ok(sameStateVector(late.doc, a.doc), 'late joiner state vector right after sync')
    assert.equal(late.map.get('nested').get('k'), 'v')
  })

  it('offline edits merge after reconnect', async () => {
    const doc = uniqueDoc('offline')
    const a = await h.client(doc)
    const b = await h.client(doc)
    a.text.insert(0, 'base.')
    await waitConverged([a, b])

    a.provider.disconnect()
    await waitUntil(() => !a.provider.wsconnected && a.provider.ws === null, { what: 'a to disconnect' })
    a.text.insert(a.text.length, ' offline-A.')
    a.map.set('fromA', true)
    b.text.insert(0, 'online-B. ')
    b.array.push(['fromB'])
    const observer = await h.client(doc)
    await waitUntil(() => observer.text.toString() === 'online-B. base.', {
      what: "b's edit to reach an observer", describe: () => observer.text.toString()
    })
    assert.equal(a.text.toString(), 'base. offline-A.', 'a must not receive anything while offline')

    a.provider.connect()
    await waitConverged([a, b, observer])
    assert.equal(a.text.toString(), 'online-B. base. offline-A.')
    assert.equal(b.map.get('fromA'), true)
    assert.deepEqual(a.array.toArray(), ['fromB'])
    const fresh = await h.client(doc)
    assert.equal(snapshot(fresh.doc), snapshot(a.doc))
  })

  it('an update that arrives before the update it depends on is kept, and every client gets both', async () => {
    // Out-of-order delivery happens e.g. when browser tabs share edits over
    // BroadcastChannel and only one of them is online. Yjs keeps such an
    // update pending until its dependency arrives.
    const author = new Y.Doc()
    const updates = []
    author.on('update', (u) => updates.push(u))
    author.getText('text').insert(0, 'first;')
    author.getText('text').insert(6, 'second;') // depends on the first update
    const [first, second] = updates

    const doc = uniqueDoc('pending')
    const early = await h.client(doc) // connected before anything arrives
    const raw = await h.raw(doc)
    await raw.waitMessage(() => true, { what: 'sync step 1 from the server' })
    raw.send(encodeUpdate(second))
    // The answer to a sync step 1 sent after it proves the server has processed it.
    const from = raw.messages.length
    raw.send(encodeSyncStep1(new Y.Doc()))
    await raw.waitMessage((m) => m[0] === MSG_SYNC && m[1] === SYNC_STEP2, { from, what: 'sync step 2 for the raw client' })
    const joinedBetween = await h.client(doc) // joins while only `second` is there
    raw.send(encodeUpdate(first))

    for (const [name, c] of [['a client connected before both', early], ['a client that joined between them', joinedBetween]]) {
      await waitUntil(() => c.text.toString() === 'first;second;', {
        what: `${name} to have both updates`, describe: () => JSON.stringify(c.text.toString())
      })
    }
    const fresh = await h.client(doc)
    assert.equal(fresh.text.toString(), 'first;second;', 'a fresh client')
    assert.equal(raw.ws.readyState, raw.ws.OPEN, 'an out-of-order update is not malformed')
  })

  it('rooms are isolated: edits and awareness in one doc never reach another', async () => {
    const docA = uniqueDoc('roomA')
    const docB = uniqueDoc('roomB')
    const a1 = await h.client(docA)
    const a2 = await h.client(docA)
    const b1 = await h.client(docB)
    const b2 = await h.client(docB)
    a1.awareness.setLocalStateField('user', 'in-A')
    b1.awareness.setLocalStateField('user', 'in-B')
    a1.text.insert(0, 'only in A')
    a1.map.set('room', 'A')
    b1.text.insert(0, 'only in B')
    await waitConverged([a1, a2])
    await waitConverged([b1, b2])
    await waitUntil(() => a2.awareness.getStates().get(a1.doc.clientID)?.user === 'in-A', { what: 'awareness in room A' })
    await waitUntil(() => b2.awareness.getStates().get(b1.doc.clientID)?.user === 'in-B', { what: 'awareness in room B' })

    assert.equal(a2.text.toString(), 'only in A')
    assert.equal(b2.text.toString(), 'only in B')
    assert.equal(b2.map.has('room'), false)
    assert.equal(b2.awareness.getStates().has(a1.doc.clientID), false, 'room B sees awareness of room A')
    assert.equal(a2.awareness.getStates().has(b1.doc.clientID), false, 'room A sees awareness of room B')
    const freshB = await h.client(docB)
    assert.equal(snapshot(freshB.doc), snapshot(b1.doc))
    assert.equal(freshB.doc.store.clients.has(a1.doc.clientID), false, "room B holds room A's client")
  })

  it('doc names: every allowed character and 255 chars work; anything else is HTTP 400', async () => {
    const allowed = ['Az09-_.~:@', 'x'.repeat(255)]
    for (const name of allowed) {
      const a = await h.client(name)
      const b = await h.client(name)
      a.text.insert(0, `hi ${name.length}`)
      await waitConverged([a, b], { what: `clients on doc name ${name.slice(0, 20)}…` })
    }
    const rejected = ['x'.repeat(256), 'has%20space', 'semi;colon', 'excl!', 'dollar$', 'star*', 'quote%22', 'percent%25', 'plus+', 'comma,', 'a/b']
    for (const name of rejected) {
      const raw = new RawClient(`${h.server.wsUrl}/${name}`)
      const err = await raw.opened.then(() => null, (e) => e)
      raw.close()
      assert.equal(err?.statusCode, 400, `doc name ${JSON.stringify(name.slice(0, 40))}: expected HTTP 400, got ${err ? err.message : 'an open socket'}`)
    }
  })

  it('a 1 MiB document built from several updates reaches a late joiner and survives a restart', async () => {
    const doc = uniqueDoc('big')
    const a = await h.client(doc)
    const observer = await h.client(doc)
    const rnd = prng(1)
    const chunk = 64 * 1024
    let expected = ''
    for (let i = 0; i < 16; i++) {
      const piece = rnd.word(chunk)
      a.text.insert(a.text.length, piece) // one update per 64 KiB piece
      expected += piece
    }
    assert.equal(expected.length, 1024 * 1024)
    await waitUntil(() => observer.text.length === expected.length, {
      timeoutMs: 30_000, what: 'the observer to receive 1 MiB', describe: () => `observer has ${observer.text.length} chars`
    })
    assertSameText(observer.text.toString(), expected, 'observer content')

    const late = await h.client(doc, { timeoutMs: 30_000 })
    assertSameText(late.text.toString(), expected, 'late joiner content')

    await h.restart()
    const afterRestart = await h.client(doc, { timeoutMs: 30_000 })
    assertSameText(afterRestart.text.toString(), expected, 'content after restart')
  })
})
