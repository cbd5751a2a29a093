// More than one machine (SPEC §7): real `tandem` nodes on one PostgreSQL
// database and one Redis (lib/cluster.js), with stock y-websocket providers
// connected to different nodes. Updates and awareness cross nodes; `clients`
// counts are cluster-wide; DELETE on one node closes the document's sockets on
// every node with 4404; providers of a node killed with -9 move to another
// node and nothing they had is lost; a node whose Redis is unreachable stays
// ready and converges through the database within 5 s; dropped Redis
// connections heal within 2 s.
//
// Needs TANDEM_TEST_POSTGRES_URL and TANDEM_TEST_REDIS_URL (`.ci/run` exports
// both); without them every test here says it skipped and why.
//
//   CLUSTER_KILL_CYCLES=50 node --test tests/cluster.test.js   (default 20)

import { after, before, describe, it, test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Cluster, REDIS_URL, UNREACHABLE_REDIS_URL, clusterSkipReason, databaseExists } from '../lib/cluster.js'
import { TcpProxy } from '../lib/tcp-proxy.js'
import { connectRaw } from '../lib/clients.js'
import { snapshot, truncate, uniqueDoc } from '../lib/harness.js'
import { prng } from '../lib/prng.js'
import { sleep, waitUntil, withTimeout } from '../lib/wait.js'

const SKIP = clusterSkipReason()
const KILL_CYCLES = positiveInt('CLUSTER_KILL_CYCLES', 20)
const SEED = process.env.CLUSTER_SEED ? Number(process.env.CLUSTER_SEED) : Math.floor(Math.random() * 2 ** 31)

/**
 * What the spec promises, and how long a test waits for it. A test polls
 * every 25 ms and reads every node's copy over HTTP, so a bound of the spec
 * gets this much on top.
 */
const SLACK_MS = 500
/** Updates and awareness cross nodes through Redis in milliseconds; this bounds a test's wait for it. */
const LIVE_MS = 3000
/** SPEC §7: while Redis is down for a node, it catches up through the database alone within 5 s. */
const DB_ONLY_MS = 5000
/** SPEC §7: within 2 s of Redis coming back. */
const REDIS_BACK_MS = 2000
/** SPEC §7: the awareness of a node that died disappears from the others within 15 s. */
const DEAD_NODE_AWARENESS_MS = 15_000
/** After a failed wait for convergence, how long to wait before asking the nodes again (slow, or stuck?). */
const LATER_MS = 3000

function positiveInt (name, fallback) {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`)
  return n
}

/** State vector as "client:clock" pairs, sorted: readable in a failure message. */
function showVector (doc) {
  return [...Y.decodeStateVector(Y.encodeStateVector(doc))].sort((a, b) => a[0] - b[0]).map(([c, k]) => `${c}:${k}`).join(' ')
}

const sameVector = (a, b) => Buffer.from(Y.encodeStateVector(a)).equals(Buffer.from(Y.encodeStateVector(b)))

/** The content the tests compare: snapshot() of Text, Map and Array plus the 'tokens' log. */
const content = (doc) => `${snapshot(doc)}|${JSON.stringify(doc.getArray('tokens').toJSON())}`

/**
 * Wait until every provider is synced and holds the same state vector and
 * content, and every node in `nodes` serves the same through GET …/update.
 * Returns the milliseconds it took.
 */
async function waitClusterConverged (cluster, clients, docName, { timeoutMs, what, nodes = cluster.nodes.map((_s, i) => i) }) {
  const t0 = Date.now()
  let served = []
  await waitUntil(async () => {
    if (!clients.every((c) => c.provider.synced)) return false
    const ref = content(clients[0].doc)
    if (!clients.every((c) => sameVector(c.doc, clients[0].doc) && content(c.doc) === ref)) return false
    served = await Promise.all(nodes.map((i) => cluster.nodeDoc(i, docName)))
    return served.every((s) => s.doc && sameVector(s.doc, clients[0].doc) && content(s.doc) === ref)
  }, {
    timeoutMs,
    intervalMs: 25,
    what,
    describe: async () => {
      const ref = content(clients[0].doc)
      // what the nodes serve now, and a while later: slow, or stuck?
      if (clients.every((c) => c.provider.synced)) {
        served = await Promise.all(nodes.map((i) => cluster.nodeDoc(i, docName)))
        const behind = served.some((s) => !s.doc || !sameVector(s.doc, clients[0].doc))
        if (behind) {
          await sleep(LATER_MS)
          const later = await Promise.all(nodes.map((i) => cluster.nodeDoc(i, docName)))
          served = served.map((s, k) => ({ ...s, later: later[k] }))
        }
      }
      const lines = clients.map((c, i) =>
        `  provider #${i} (client ${c.doc.clientID}) on node ${c.node} connected=${c.provider.wsconnected} synced=${c.provider.synced} ` +
        `vector ${showVector(c.doc)}${content(c.doc) === ref ? ' (content as #0)' : ` content ${truncate(content(c.doc), 160)}`}`)
      const show = (s) => s.doc
        ? `vector ${showVector(s.doc)}${content(s.doc) === ref ? ' (content as #0)' : ` content ${truncate(content(s.doc), 160)}`}`
        : s.error
      const nodeLines = served.map((s, k) => `  node ${nodes[k]} serves ${show(s)}` +
        (s.later ? `\n    ${LATER_MS} ms later: ${s.later.doc && sameVector(s.later.doc, clients[0].doc) ? 'caught up' : show(s.later)}` : ''))
      const stored = await cluster.dbDoc(docName)
      const dbLine = stored.doc
        ? `  the database (last_seq ${stored.lastSeq}, snapshot upto ${stored.snapshotUpto}, ${stored.logRows} log rows) holds ${show(stored)}`
        : `  ${stored.error}`
      return `\n${lines.join('\n')}\n${nodeLines.join('\n') || '  (nodes not asked: the providers did not agree yet)'}\n${dbLine}\n  #0 content: ${truncate(ref, 300)}\n${cluster.logs(8)}`
    }
  })
  return Date.now() - t0
}

/** One random edit of the Text, Map or Array, plus a token appended to 'tokens' that nothing deletes. */
function edit (client, rnd, token) {
  const { text, map, array } = client
  client.doc.transact(() => {
    const r = rnd.next()
    if (r < 0.4) {
      if (text.length > 2000 || (r < 0.08 && text.length > 10)) {
        const at = rnd.int(text.length - 1)
        text.delete(at, 1 + rnd.int(Math.min(8, text.length - at - 1)))
      } else {
        text.insert(rnd.int(text.length + 1), `${rnd.word()} `)
      }
    } else if (r < 0.7) {
      const key = `k${rnd.int(16)}`
      if (r < 0.45 && map.has(key)) map.delete(key)
      else map.set(key, rnd.pick([rnd.int(1000), rnd.word(), { n: rnd.int(100) }, [rnd.word()]]))
    } else if (array.length > 100 || (r < 0.78 && array.length > 0)) {
      const at = rnd.int(array.length)
      array.delete(at, 1 + rnd.int(Math.min(4, array.length - at)))
    } else {
      array.insert(rnd.int(array.length + 1), [rnd.int(1000)])
    }
    client.doc.getArray('tokens').push([token])
  })
}

const stateOf = (client, id) => client.awareness.getStates().get(id)

test('harness: three nodes start at once on a fresh PostgreSQL database and share it; dispose kills them and drops the database and the Redis keys', { skip: SKIP, timeout: 60_000 }, async (t) => {
  const cluster = await Cluster.start({ nodes: 3 })
  t.after(() => cluster.dispose())
  assert.ok(await databaseExists(cluster.dbName), `the database ${cluster.dbName} exists`)

  for (let i = 0; i < 3; i++) {
    const res = await cluster.api(i, '/readyz')
    assert.equal(res.status, 200, `node ${i} /readyz: ${await res.text()}\n${cluster.logs()}`)
  }

  // One store: created on node 0, seen on 1 and 2, a second create refused on 2.
  const doc = uniqueDoc('shared')
  const created = await cluster.api(0, '/api/docs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: doc }) })
  assert.equal(created.status, 201, `POST /api/docs on node 0: ${await created.text()}`)
  for (const i of [1, 2]) assert.equal((await cluster.api(i, `/api/docs/${doc}`)).status, 200, `GET /api/docs/${doc} on node ${i}`)
  const again = await cluster.api(2, '/api/docs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: doc }) })
  assert.equal(again.status, 409, 'the same name created again on node 2')

  // An update posted to node 1 (durable before its 2xx) is what node 2 serves
  // for a document it does not hold.
  const src = new Y.Doc()
  src.getText('text').insert(0, 'through the shared database')
  const posted = await cluster.api(1, `/api/docs/${doc}/update`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Y.encodeStateAsUpdate(src) })
  assert.equal(posted.status, 200, `POST …/update on node 1: ${await posted.text()}`)
  const served = await cluster.nodeDoc(2, doc)
  assert.ok(served.doc, served.error)
  assert.equal(served.doc.getText('text').toString(), 'through the shared database')

  const procs = cluster.nodes.map((s) => s.proc)
  await cluster.dispose()
  assert.ok(procs.every((p) => p.exitCode !== null || p.signalCode !== null), 'every node process has exited')
  assert.equal(await databaseExists(cluster.dbName), false, `the database ${cluster.dbName} is dropped`)
  assert.deepEqual(await cluster.redisKeys(), [], `no Redis key holds ${cluster.redisPrefix}`)
})

describe('a cluster of three nodes', { skip: SKIP }, () => {
  /** @type {Cluster} */
  let cluster
  before(async () => { cluster = await Cluster.start({ nodes: 3 }) })
  after(() => cluster?.dispose())

  it('providers on three nodes converge on concurrent edits of Text, Map and Array; a late joiner on the third node gets everything', { timeout: 30_000 }, async (t) => {
    const doc = uniqueDoc('conv')
    const editors = []
    for (const i of [0, 0, 1, 1]) editors.push(await cluster.client(i, doc))

    // concurrent: every editor writes in the same turn of the event loop, so
    // no editor has seen the others' writes of this round
    for (let round = 0; round < 5; round++) {
      editors.forEach((e, k) => {
        e.text.insert(0, `<${k}.${round}>`)
        e.map.set(`by${k}`, round)
        e.map.set('contested', `${k}.${round}`)
        e.array.insert(0, [`${k}.${round}`])
        e.doc.getArray('tokens').push([`${k}.${round}`])
      })
      await sleep(20)
    }
    const ms = await waitClusterConverged(cluster, editors, doc, { timeoutMs: LIVE_MS, nodes: [0, 1], what: 'providers on nodes 0 and 1 and both nodes to hold the same state' })

    const text = editors[0].text.toString()
    for (let k = 0; k < editors.length; k++) {
      for (let round = 0; round < 5; round++) assert.ok(text.includes(`<${k}.${round}>`), `text holds <${k}.${round}>: ${truncate(text)}`)
      assert.equal(editors[0].map.get(`by${k}`), 4)
    }
    assert.equal(editors[0].array.length, 20)
    assert.equal(editors[0].doc.getArray('tokens').length, 20)

    // The late joiner connects to node 2, which never held the document, while
    // the others keep editing; then it edits too.
    let editing = true
    const rnd = prng(SEED)
    let n = 0
    const loop = (async () => {
      while (editing) {
        edit(rnd.pick(editors), rnd, `live${n++}`)
        await sleep(5)
      }
    })()
    await sleep(100)
    const joiner = await cluster.client(2, doc)
    await sleep(200)
    editing = false
    await loop
    joiner.text.insert(0, '[late]')
    joiner.doc.getArray('tokens').push(['late'])
    const all = [...editors, joiner]
    const ms2 = await waitClusterConverged(cluster, all, doc, { timeoutMs: LIVE_MS, what: 'the late joiner on node 2, the editors on nodes 0 and 1, and all three nodes to hold the same state' })
    const tokens = joiner.doc.getArray('tokens').toJSON()
    assert.equal(tokens.length, 20 + n + 1, 'every token written, once')
    assert.ok(editors[0].text.toString().startsWith('[late]') || editors[0].text.toString().includes('[late]'))
    t.diagnostic(`converged in ${ms} ms, then with the late joiner in ${ms2} ms`)
  })

  it('awareness crosses nodes: sent on connect, both ways, updated, and removed when a provider is destroyed or drops', { timeout: 30_000 }, async (t) => {
    const doc = uniqueDoc('aw')
    const a = await cluster.client(0, doc)
    a.awareness.setLocalStateField('user', 'alice')
    await sleep(100)
    // b joins on another node after alice set her state: it is in what b gets on connect
    const b = await cluster.client(1, doc)
    const [idA, idB] = [a.doc.clientID, b.doc.clientID]
    const seen = (who, id) => (c) => JSON.stringify([...c.awareness.getStates()].map(([k, v]) => [k === id ? who : k, v]))
    await waitUntil(() => stateOf(b, idA)?.user === 'alice', { timeoutMs: LIVE_MS, what: "b (node 1) to see alice's state (node 0) set before it connected", describe: () => seen('alice', idA)(b) })
    b.awareness.setLocalStateField('user', 'bob')
    await waitUntil(() => stateOf(a, idB)?.user === 'bob', { timeoutMs: LIVE_MS, what: "a (node 0) to see bob's state (node 1)", describe: () => seen('bob', idB)(a) })

    a.awareness.setLocalStateField('cursor', { index: 7 })
    await waitUntil(() => stateOf(b, idA)?.cursor?.index === 7, { timeoutMs: LIVE_MS, what: "b (node 1) to see alice's new cursor" })

    const c = await cluster.client(2, doc)
    const idC = c.doc.clientID
    c.awareness.setLocalStateField('user', 'carol')
    await waitUntil(() => stateOf(c, idA)?.user === 'alice' && stateOf(c, idB)?.user === 'bob', {
      timeoutMs: LIVE_MS, what: 'c (node 2) to see alice (node 0) and bob (node 1)', describe: () => JSON.stringify([...c.awareness.getStates()])
    })
    await waitUntil(() => stateOf(a, idC)?.user === 'carol' && stateOf(b, idC)?.user === 'carol', { timeoutMs: LIVE_MS, what: 'a and b to see carol (node 2)' })

    // a says goodbye (destroy sends its removal): b and c, on other nodes, drop it
    a.destroy()
    cluster.clients.delete(a)
    await waitUntil(() => !b.awareness.getStates().has(idA) && !c.awareness.getStates().has(idA), {
      timeoutMs: LIVE_MS, what: "alice's removal (node 0, destroyed) to reach b (node 1) and c (node 2)"
    })

    // b drops without a goodbye: node 1 removes b's state, and c on node 2 hears of it
    b.provider.shouldConnect = false
    b.provider.ws.terminate()
    await waitUntil(() => !c.awareness.getStates().has(idB), {
      timeoutMs: LIVE_MS, what: "bob's removal (node 1, socket dropped without a goodbye) to reach c (node 2)"
    })
    assert.equal(stateOf(c, idC)?.user, 'carol')
  })

  it('`clients` in GET /api/docs/{name} and in the list is the number of connections on all nodes, on every node', { timeout: 30_000 }, async (t) => {
    const doc = uniqueDoc('count')
    const clients = []
    for (const i of [0, 0, 1, 2, 2, 2]) clients.push(await cluster.client(i, doc))
    const counts = async () => Promise.all([0, 1, 2].map(async (i) => {
      const one = await cluster.api(i, `/api/docs/${doc}`).then((r) => r.json()).catch((err) => ({ error: err.message }))
      const list = await cluster.api(i, `/api/docs?prefix=${doc}`).then((r) => r.json()).catch((err) => ({ error: err.message }))
      const listed = (list.items ?? []).find((d) => d.id === doc)
      return { node: i, get: one.clients, list: listed?.clients }
    }))
    const expectCount = async (n, what) => {
      let last
      await waitUntil(async () => {
        last = await counts()
        return last.every((c) => c.get === n && c.list === n)
      }, { timeoutMs: LIVE_MS, intervalMs: 50, what, describe: () => JSON.stringify(last) })
    }
    await expectCount(6, '`clients` = 6 (2 on node 0, 1 on node 1, 3 on node 2) on every node')

    clients[0].destroy()
    clients[4].destroy()
    cluster.clients.delete(clients[0])
    cluster.clients.delete(clients[4])
    await expectCount(4, '`clients` = 4 on every node once one provider on node 0 and one on node 2 are gone')
  })

  it('DELETE on node 0 closes the document\'s sockets on nodes 1 and 2 with 4404; the name starts empty again', { timeout: 30_000 }, async (t) => {
    const doc = uniqueDoc('del')
    const providers = []
    for (const i of [0, 1, 2]) providers.push(await cluster.client(i, doc))
    providers[1].text.insert(0, 'doomed')
    await waitClusterConverged(cluster, providers, doc, { timeoutMs: LIVE_MS, what: 'the document on every node before the delete' })
    const raws = [await connectRaw(cluster.wsUrl(1), doc), await connectRaw(cluster.wsUrl(2), doc)]
    // a socket of another document stays open
    const bystander = await connectRaw(cluster.wsUrl(1), uniqueDoc('bystander'))

    try {
      const t0 = Date.now()
      const res = await cluster.api(0, `/api/docs/${doc}`, { method: 'DELETE' })
      assert.equal(res.status, 204, `DELETE on node 0: ${await res.text()}`)
      const closes = await Promise.all(raws.map((r, k) => withTimeout(r.closed, LIVE_MS, `the raw socket on node ${k + 1} to be closed`)))
      assert.deepEqual(closes.map((c) => c.code), [4404, 4404], `close codes of the raw sockets on nodes 1 and 2 (${JSON.stringify(closes)})`)
      await waitUntil(() => providers.every((p) => p.closeEvents.some((e) => e.code === 4404)), {
        timeoutMs: LIVE_MS,
        what: 'every provider (nodes 0, 1, 2) to be closed with 4404',
        describe: () => providers.map((p) => `node ${p.node}: ${JSON.stringify(p.closeEvents)}`).join('; ')
      })
      const elapsed = Date.now() - t0
      assert.equal(bystander.ws.readyState, bystander.ws.OPEN, 'a socket of another document is left open')
      for (const i of [1, 2]) assert.equal((await cluster.api(i, `/api/docs/${doc}`)).status, 404, `GET on node ${i} after the delete`)

      // recreated through node 2: empty, whatever node 1 or 2 held before
      const fresh = await cluster.client(2, doc)
      const other = await cluster.client(1, doc)
      await sleep(200)
      assert.equal(fresh.text.toString(), '', 'the recreated document starts empty on node 2')
      assert.equal(other.text.toString(), '', 'the recreated document starts empty on node 1')
      t.diagnostic(`every socket closed ${elapsed} ms after the DELETE`)
    } finally {
      for (const r of [...raws, bystander]) r.close()
    }
  })

  it('Redis connections dropped mid-edit (CLIENT KILL of the nodes\' pub/sub, then normal connections): everyone converges within 2 s', { timeout: 40_000 }, async (t) => {
    const doc = uniqueDoc('rkill')
    const editors = []
    for (const i of [0, 1, 2, 0, 1, 2]) editors.push(await cluster.client(i, doc))
    const rnd = prng(SEED + 1)
    let n = 0

    const round = async (what, kill) => {
      let editing = true
      const loop = (async () => {
        while (editing) {
          edit(rnd.pick(editors), rnd, `${what}${n++}`)
          await sleep(5)
        }
      })()
      await sleep(300)
      const killed = await kill()
      await sleep(300) // edits go on while the nodes reconnect
      editing = false
      await loop
      assert.ok(killed > 0, `${what}: CLIENT KILL found no Redis connection of the nodes to drop; does every node connect to Redis (TANDEM_REDIS_URL)?`)
      const ms = await waitClusterConverged(cluster, editors, doc, {
        timeoutMs: REDIS_BACK_MS + SLACK_MS,
        what: `${what}: every provider and node to converge within ${REDIS_BACK_MS} ms of the last edit (killed ${killed} connections)`
      })
      return `${what}: ${killed} killed, converged in ${ms} ms`
    }
    const notes = []
    notes.push(await round('pubsub', () => cluster.killRedisConnections({ type: 'pubsub' })))
    notes.push(await round('normal', () => cluster.killRedisConnections({ type: 'normal' })))
    notes.push(await round('node1-all', () => cluster.killRedisConnections({ nodes: [1] })))
    assert.equal(editors[0].doc.getArray('tokens').length, n, 'every token written, once')
    t.diagnostic(notes.join('; '))
  })

  it('kill -9 of a node: the awareness of its clients disappears from the other nodes within 15 s', { timeout: 40_000 }, async (t) => {
    const doc = uniqueDoc('ghost')
    const ghost = await cluster.client(2, doc)
    ghost.awareness.setLocalStateField('user', 'ghost')
    const watchers = [await cluster.client(0, doc), await cluster.client(1, doc)]
    const id = ghost.doc.clientID
    await waitUntil(() => watchers.every((w) => stateOf(w, id)?.user === 'ghost'), { timeoutMs: LIVE_MS, what: 'watchers on nodes 0 and 1 to see the ghost on node 2' })

    // the ghost must not come back through a restarted node 2: it stays away
    ghost.provider.shouldConnect = false
    const t0 = Date.now()
    await cluster.kill9(2)
    try {
      await waitUntil(() => watchers.every((w) => !w.awareness.getStates().has(id)), {
        timeoutMs: DEAD_NODE_AWARENESS_MS + SLACK_MS,
        intervalMs: 100,
        what: "the ghost's awareness (node 2, killed) to disappear on nodes 0 and 1"
      })
      t.diagnostic(`gone ${Date.now() - t0} ms after the kill`)
    } finally {
      await cluster.restart(2)
    }
  })
})

test(`kill -9 while providers edit, ${KILL_CYCLES} cycles: the providers move to other nodes and converge, and nothing any of them had is lost`, { skip: SKIP, timeout: 120_000 }, async (t) => {
  const cluster = await Cluster.start({ nodes: 3 })
  t.after(() => cluster.dispose())
  const rnd = prng(SEED + 2)
  const doc = uniqueDoc('kill')
  const editors = []
  for (const i of [0, 1, 2, 0, 1, 2]) editors.push(await cluster.client(i, doc))
  const started = Date.now()
  let n = 0

  let editing = false
  let loop = Promise.resolve()
  let midBurst = null // called once, between two edits of the next burst
  const startEditing = () => {
    editing = true
    loop = (async () => {
      while (editing) {
        const burst = 1 + rnd.int(10)
        const at = rnd.int(burst)
        const e = rnd.pick(editors)
        for (let k = 0; k < burst; k++) {
          if (k === at && midBurst) { const f = midBurst; midBurst = null; f() }
          edit(e, rnd, `t${n++}`)
        }
        await sleep(5 + rnd.int(20))
      }
    })()
  }
  const stopEditing = async () => { editing = false; await loop }

  const cycleTimes = []
  for (let cycle = 1; cycle <= KILL_CYCLES; cycle++) {
    const victim = rnd.int(3)
    const others = [0, 1, 2].filter((i) => i !== victim)
    startEditing()
    await sleep(100 + rnd.int(300))
    // SIGKILL inside a burst of edits; the victim's providers are pointed at
    // the other nodes in the same turn, so their next connection goes there
    const gone = new Promise((resolve) => {
      midBurst = () => {
        const proc = cluster.nodes[victim].proc
        proc.kill('SIGKILL')
        for (const e of editors) if (e.node === victim) cluster.move(e, rnd.pick(others))
        resolve(cluster.nodes[victim].exited)
      }
    })
    await gone
    await sleep(rnd.int(300)) // edits go on while the providers reconnect
    await stopEditing()
    const ms = await waitClusterConverged(cluster, editors, doc, {
      timeoutMs: 10_000,
      nodes: others,
      what: `cycle ${cycle}/${KILL_CYCLES}: node ${victim} killed; its providers on nodes ${others.join(' and ')} to converge with everyone (seed ${SEED})`
    })
    cycleTimes.push(ms)
    await cluster.restart(victim)
    // back to two providers per node: some move to the restarted node while connected
    const onVictim = editors.filter((e) => e.node === victim).length
    for (const e of editors.filter((e) => e.node !== victim).slice(0, Math.max(0, 2 - onVictim))) cluster.move(e, victim, { reconnect: true })
  }
  await waitClusterConverged(cluster, editors, doc, { timeoutMs: 10_000, what: `after ${KILL_CYCLES} cycles: every provider and node (seed ${SEED})` })

  // Every node's room is durable up to an update posted to it (durable before
  // its 2xx, committed in the order its room applied updates). Then no client
  // is left, every node dies, and a fresh client on a restarted node must get
  // exactly what the providers converged on.
  for (const i of [0, 1, 2]) {
    const fence = new Y.Doc()
    Y.applyUpdate(fence, Y.encodeStateAsUpdate(editors[0].doc))
    const sv = Y.encodeStateVector(fence)
    fence.getArray('tokens').push([`fence${i}`])
    const res = await cluster.api(i, `/api/docs/${doc}/update`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Y.encodeStateAsUpdate(fence, sv) })
    assert.equal(res.status, 200, `POST …/update on node ${i}: ${await res.text()}`)
  }
  await waitClusterConverged(cluster, editors, doc, { timeoutMs: LIVE_MS, what: 'every provider and node to hold the three fences' })
  const expected = { content: content(editors[0].doc), vector: showVector(editors[0].doc) }
  const tokens = editors[0].doc.getArray('tokens').toJSON()
  assert.equal(tokens.length, n + 3, `every token written (${n}) and the 3 fences, each once`)
  assert.equal(new Set(tokens).size, tokens.length, 'no token twice')

  for (const e of editors) { e.destroy(); cluster.clients.delete(e) }
  await Promise.all([0, 1, 2].map((i) => cluster.kill9(i)))
  await cluster.restart(1)
  const fresh = await cluster.client(1, doc)
  assert.equal(showVector(fresh.doc), expected.vector, 'state vector of a fresh load after every node was killed')
  assert.ok(content(fresh.doc) === expected.content, 'content of a fresh load after every node was killed')

  const sorted = [...cycleTimes].sort((a, b) => a - b)
  t.diagnostic(`${KILL_CYCLES} kill -9 cycles in ${((Date.now() - started) / 1000).toFixed(1)} s, ${n} edits by ${editors.length} providers; ` +
    `converged after a kill in median ${sorted[sorted.length >> 1]} ms, max ${sorted.at(-1)} ms; seed ${SEED}`)
})

test('a node started with Redis unreachable is ready and converges with the others through the database within 5 s', { skip: SKIP, timeout: 60_000 }, async (t) => {
  const cluster = await Cluster.start({ nodes: 3, nodeEnv: [{}, {}, { TANDEM_REDIS_URL: UNREACHABLE_REDIS_URL }] })
  t.after(() => cluster.dispose())
  const ready = async (what) => {
    const res = await cluster.api(2, '/readyz')
    assert.equal(res.status, 200, `${what}: /readyz of the node without Redis answered ${res.status} ${await res.text()}\n${cluster.logs()}`)
  }
  await ready('at start')

  const doc = uniqueDoc('noredis')
  const editors = []
  for (const i of [0, 1, 2, 2]) editors.push(await cluster.client(i, doc))
  const rnd = prng(SEED + 3)
  let n = 0
  const times = []
  // edits on the nodes with Redis, then on the one without, then everywhere at once
  for (const [what, pool] of [['nodes 0 and 1', editors.slice(0, 2)], ['node 2', editors.slice(2)], ['every node', editors]]) {
    for (let k = 0; k < 20; k++) {
      edit(rnd.pick(pool), rnd, `nr${n++}`)
      await sleep(5)
    }
    times.push(await waitClusterConverged(cluster, editors, doc, {
      timeoutMs: DB_ONLY_MS + SLACK_MS,
      what: `edits on ${what}: every provider (node 2 has no Redis) and node to converge within ${DB_ONLY_MS} ms`
    }))
  }
  await ready('after the edits')
  t.diagnostic(`converged in ${times.join(', ')} ms`)
})

test('a node whose Redis goes away and comes back (through a proxy: refused at start, restored, silent, restored) stays ready, converges through the database within 5 s meanwhile, and within 2 s once Redis is back', { skip: SKIP, timeout: 60_000 }, async (t) => {
  const target = new URL(REDIS_URL)
  const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port || 6379) })
  const port = await proxy.listen()
  t.after(() => proxy.close())
  await proxy.refuse()
  const cluster = await Cluster.start({ nodes: 2, nodeEnv: [{}, { TANDEM_REDIS_URL: `redis://127.0.0.1:${port}` }] })
  t.after(() => cluster.dispose())
  const ready = async (what) => {
    const res = await cluster.api(1, '/readyz')
    assert.equal(res.status, 200, `${what}: /readyz of the node behind the proxy answered ${res.status} ${await res.text()}\n${cluster.logs()}`)
  }
  await ready('started while its Redis refuses connections')

  const doc = uniqueDoc('flaky')
  const editors = []
  for (const i of [0, 0, 1, 1]) editors.push(await cluster.client(i, doc))
  const rnd = prng(SEED + 4)
  let n = 0
  const notes = []
  const round = async (what, boundMs) => {
    for (let k = 0; k < 20; k++) {
      edit(rnd.pick(editors), rnd, `fl${n++}`)
      await sleep(5)
    }
    const ms = await waitClusterConverged(cluster, editors, doc, { timeoutMs: boundMs + SLACK_MS, what: `${what}: every provider and node to converge within ${boundMs} ms` })
    notes.push(`${what}: ${ms} ms`)
  }

  await round('Redis refused', DB_ONLY_MS)
  await proxy.restore()
  const downBefore = proxy.bytes.down
  await round('Redis back after refusing', REDIS_BACK_MS)
  // the node uses Redis again: it talks through the proxy, and hears from Redis
  await waitUntil(() => proxy.pairs.size > 0 && proxy.bytes.down > downBefore, {
    timeoutMs: REDIS_BACK_MS, what: 'the node behind the proxy to connect to Redis again and hear from it', describe: () => `${proxy.pairs.size} connections, ${proxy.bytes.down - downBefore} bytes from Redis`
  })
  await ready('after Redis came back')

  proxy.pause()
  await round('Redis silent', DB_ONLY_MS)
  await ready('while Redis is silent')
  await proxy.restore()
  await round('Redis back after silence', REDIS_BACK_MS)
  await ready('at the end')
  assert.equal(editors[0].doc.getArray('tokens').length, n, 'every token written, once')
  t.diagnostic(notes.join('; '))
})
