// Real editing traces (shared/traces, see its README.md) replayed through the
// server by stock y-websocket clients, with rate limiting off.
//
// Sequential traces: one client applies every txn's patches to a Y.Text, each
// txn in its own Yjs transaction (so one update message per txn, no batching);
// a second client must end with exactly endContent, and so must a fresh client
// after a server restart.
//
// Concurrent traces: one client per agent. Each agent authors its txns in a
// local Y.Doc that is brought to exactly the txn's `parents` version first (by
// merging the Yjs updates of the ancestor txns it has not seen yet), so every
// patch applies to the version its author saw. Everything an authoring doc
// produces is applied to that agent's provider doc, which sends it to the
// server; the providers also receive each other's edits from the server. All
// providers must converge on endContent, as must a fresh client, before and
// after a restart. Agent i's authoring doc has client id i + 1: the README notes
// that friendsforever reaches endContent with Yjs only when agent 0's id is the
// lower one.

import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import { Harness, assertSameText, uniqueDoc, waitConverged } from '../lib/harness.js'
import { applyPatches, isConcurrent, loadTrace, traceFiles } from '../lib/traces.js'
import { waitUntil } from '../lib/wait.js'

const TXNS_PER_SLICE = 500 // txns replayed between two yields to the event loop
const SEND_BUFFER_LIMIT = 1 << 20

/** Yield to the event loop, after letting the clients' send buffers drain below a limit. */
async function pace (clients) {
  await waitUntil(() => clients.every((c) => (c.provider.ws?.bufferedAmount ?? 0) < SEND_BUFFER_LIMIT), {
    timeoutMs: 60_000, intervalMs: 1, what: 'websocket send buffers to drain'
  })
  await new Promise((resolve) => setImmediate(resolve))
}

/** Generous wait for a trace-sized amount of work: 20 s plus 1 s per 5,000 txns. */
const budgetMs = (trace) => 20_000 + Math.ceil(trace.txns.length / 5)

async function replaySequential (h, doc, trace) {
  const editor = await h.client(doc)
  const observer = await h.client(doc)
  const text = editor.text
  for (let i = 0; i < trace.txns.length; i++) {
    editor.doc.transact(() => applyPatches(text, trace.txns[i].patches))
    if (i % TXNS_PER_SLICE === TXNS_PER_SLICE - 1) await pace([editor])
  }
  assertSameText(text.toString(), trace.endContent, 'the replaying client (harness sanity check)')
  await waitUntil(() => observer.text.length === trace.endContent.length && observer.text.toString() === trace.endContent, {
    timeoutMs: budgetMs(trace),
    intervalMs: 50,
    what: 'the second client to reach endContent',
    describe: () => `second client has ${observer.text.length} chars, expected ${trace.endContent.length}`
  })
}

/** Txns that are ancestors of (or equal to) `parents` and not yet in `known`, in causal (index) order. */
function missingAncestors (txns, parents, known) {
  const out = []
  const stack = parents.filter((p) => !known[p])
  const seen = new Set(stack)
  while (stack.length) {
    const t = stack.pop()
    out.push(t)
    for (const p of txns[t].parents) {
      if (!known[p] && !seen.has(p)) { seen.add(p); stack.push(p) }
    }
  }
  return out.sort((x, y) => x - y)
}

async function replayConcurrent (h, doc, trace) {
  const { txns, numAgents } = trace
  const clients = []
  for (let i = 0; i < numAgents; i++) clients.push(await h.client(doc))
  const authors = clients.map((client, i) => {
    const d = new Y.Doc()
    d.clientID = i + 1
    d.on('update', (update) => Y.applyUpdate(client.doc, update, 'author'))
    return d
  })
  const known = authors.map(() => new Uint8Array(txns.length)) // known[agent][txn]: authoring doc has it
  const updates = new Array(txns.length) // the Yjs update each txn produced

  for (let t = 0; t < txns.length; t++) {
    const { agent, parents, patches } = txns[t]
    const author = authors[agent]
    for (const m of missingAncestors(txns, parents, known[agent])) {
      if (updates[m]) Y.applyUpdate(author, updates[m], 'merge')
      known[agent][m] = 1
    }
    let produced = null
    const capture = (update, origin) => { if (origin === 'edit') produced = update }
    author.on('update', capture)
    author.transact(() => applyPatches(author.getText('text'), patches), 'edit')
    author.off('update', capture)
    updates[t] = produced
    known[agent][t] = 1
    if (t % TXNS_PER_SLICE === TXNS_PER_SLICE - 1) await pace(clients)
  }
  // The last txn descends from all others, so its author has the whole history.
  assertSameText(authors[txns[txns.length - 1].agent].getText('text').toString(), trace.endContent, 'the authoring replay (harness sanity check)')

  await waitConverged(clients, { timeoutMs: budgetMs(trace), what: `${numAgents} agents to converge` })
  for (const [i, c] of clients.entries()) assertSameText(c.text.toString(), trace.endContent, `agent ${i}'s client`)
  const fresh = await h.client(doc)
  assertSameText(fresh.text.toString(), trace.endContent, 'a fresh client')
}

describe('editing traces', () => {
  const h = new Harness({ env: { TANDEM_MAX_MESSAGES_PER_SECOND: '0' } })
  before(() => h.start())
  after(() => h.dispose())

  for (const file of traceFiles()) {
    it(`${file} replayed through the server gives endContent, also after a restart`, async () => {
      const trace = loadTrace(file)
      const doc = uniqueDoc(file.replace(/\.json\.gz$/, ''))
      if (isConcurrent(trace)) await replayConcurrent(h, doc, trace)
      else await replaySequential(h, doc, trace)

      await h.restart({ signal: 'SIGTERM' })
      const fresh = await h.client(doc, { timeoutMs: 30_000 })
      assertSameText(fresh.text.toString(), trace.endContent, 'a fresh client after a restart')
      h.dropClients()
    })
  }
})
