// 20 stock providers on one document make random concurrent edits (seeded PRNG)
// to a Y.Text, a Y.Map and a Y.Array; 4 of them join while the others are
// already editing, and start editing before their first sync completes. Every
// update each client produced is also applied to a local reference Y.Doc: all
// 20 clients and a late joiner must end up with exactly the reference's
// content, i.e. the server relayed and kept every update, dropped none and
// invented none.

import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Harness, sameStateVector, snapshot, uniqueDoc, waitConverged } from '../lib/harness.js'
import { prng } from '../lib/prng.js'
import { sleep } from '../lib/wait.js'

const CLIENTS = 20
const JOIN_MIDWAY = 4 // clients that connect during the edit rounds
const ROUNDS = 30
const SEED = 0x7a6d

describe('many clients', () => {
  const h = new Harness()
  before(() => h.start())
  after(() => h.dispose())

  it(`${CLIENTS} providers making random concurrent edits converge`, async () => {
    const doc = uniqueDoc('many')
    const reference = new Y.Doc()
    let localUpdates = 0
    const track = (c) => {
      c.doc.on('update', (update, origin) => {
        if (origin !== c.provider) { // a local edit, not one received from the server
          Y.applyUpdate(reference, update)
          localUpdates++
        }
      })
      return c
    }
    const clients = await Promise.all(Array.from({ length: CLIENTS - JOIN_MIDWAY }, () => h.client(doc).then(track)))

    const rnd = prng(SEED)
    const edit = (c, round) => {
      const op = rnd.int(6)
      if (op === 0 && c.text.length > 0) {
        const pos = rnd.int(c.text.length)
        c.text.delete(pos, Math.min(1 + rnd.int(3), c.text.length - pos))
      } else if (op === 1) {
        c.map.set(rnd.pick(['k1', 'k2', 'k3', 'k4']), `${c.doc.clientID}:${round}`)
      } else if (op === 2 && c.array.length > 0) {
        c.array.delete(rnd.int(c.array.length), 1)
      } else if (op === 3) {
        c.array.insert(rnd.int(c.array.length + 1), [rnd.word()])
      } else {
        c.text.insert(rnd.int(c.text.length + 1), rnd.word())
      }
    }
    // Rounds of edits; each round every client makes 1-3 edits, and rounds are
    // separated by a few ms so that some edits see others' and some do not.
    for (let round = 0; round < ROUNDS; round++) {
      if (round % 5 === 4 && clients.length < CLIENTS) clients.push(track(h.clientNoWait(doc)))
      for (const c of clients) {
        const n = 1 + rnd.int(3)
        for (let i = 0; i < n; i++) edit(c, round)
      }
      await sleep(2 + rnd.int(8))
    }
    assert.equal(clients.length, CLIENTS)
    assert.ok(localUpdates >= (CLIENTS - JOIN_MIDWAY) * ROUNDS, `expected more local updates than ${localUpdates}`)

    await waitConverged(clients, { timeoutMs: 30_000, what: `${CLIENTS} clients to converge` })
    const expected = snapshot(reference)
    assert.equal(snapshot(clients[0].doc), expected, 'converged content differs from the union of all updates')
    assert.ok(sameStateVector(clients[0].doc, reference), 'converged state vector differs from the union of all updates')

    const late = await h.client(doc)
    assert.equal(snapshot(late.doc), expected, 'late joiner content')
    assert.ok(sameStateVector(late.doc, reference), 'late joiner state vector')
  })
})
