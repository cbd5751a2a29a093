// A real HTTP webhook receiver for the tests: node:http on 127.0.0.1, port 0
// on the first start and the SAME port on every restart.
//
// Every request is recorded and checked with the official Standard Webhooks
// verifier (the `standardwebhooks` npm package): a delivery that no known
// secret verifies, or that is not a proper Tandem webhook (headers, JSON
// envelope), is a failure; `failures` lists them, and every wait on the
// receiver (and `assertClean()`) throws as soon as there is one.
//
// What the receiver answers is programmable: `respond(b1, b2, …)` queues one
// behaviour per coming request, `setDefault(b)` sets the one used after the
// queue is empty. A behaviour is a status code (200, 500, …), an object
// `{ status, location?, body? }` (e.g. a 302 with Location), or 'hang' (read
// the request, never answer; the socket is only destroyed by `stop()`).

import http from 'node:http'
import { performance } from 'node:perf_hooks'
import { Webhook } from 'standardwebhooks'
import { waitUntil } from './wait.js'

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/

/** The `v1,…` signatures of a webhook-signature header. */
export const parseSignatures = (header) => (header ?? '').split(' ').filter((s) => s.length > 0)

/** Does `secret` verify this recorded request (the stock verifier, this secret alone)? */
export function verifiesWith (secret, record) {
  try {
    new Webhook(secret).verify(record.body, record.headers)
    return true
  } catch {
    return false
  }
}

export class Receiver {
  /** @param {{ name?: string, path?: string }} opts */
  constructor ({ name = 'receiver', path = '/hook' } = {}) {
    this.name = name
    this.path = path
    this.port = 0
    this.server = null
    /** signing secrets of the endpoint(s) that send here (whsec_…), oldest first */
    this.secrets = []
    /**
     * every request received: { seq, id, timestamp, signatures, type, data, json, body,
     * headers, method, url, receivedAt (Date.now()), receivedPerf (performance.now()),
     * answer, verifiedWith: [indexes into secrets] }
     */
    this.requests = []
    /** problems with received requests (failed verification, bad shape): strings */
    this.failures = []
    this.queue = []
    this.defaultBehaviour = 200
    this.sockets = new Set()
    this.unverified = []
  }

  get running () { return this.server !== null }
  get url () { return `http://127.0.0.1:${this.port}${this.path}` }

  /** Listen (port 0 the first time, the same port afterwards). */
  async start () {
    if (this.server) return this
    const server = http.createServer((req, res) => this.#handle(req, res))
    server.keepAliveTimeout = 5_000
    server.on('connection', (socket) => {
      this.sockets.add(socket)
      socket.once('close', () => this.sockets.delete(socket))
    })
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: '127.0.0.1', port: this.port }, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const port = server.address().port
    if (this.port !== 0 && port !== this.port) throw new Error(`${this.name}: restarted on port ${port}, not ${this.port}`)
    this.port = port
    this.server = server
    return this
  }

  /** Stop listening and drop every connection (hung requests included). */
  async stop () {
    const server = this.server
    if (!server) return
    this.server = null
    const closed = new Promise((resolve) => server.close(() => resolve()))
    server.closeAllConnections?.()
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
    await closed
  }

  /** Add a signing secret (e.g. the new one after a rotation); re-checks requests no secret verified yet. */
  addSecret (secret) {
    this.secrets.push(secret)
    const pending = this.unverified
    this.unverified = []
    for (const record of pending) this.#verify(record)
  }

  /** Queue behaviours, one per coming request. */
  respond (...behaviours) { this.queue.push(...behaviours) }

  /** The behaviour once the queue is empty (initially 200). */
  setDefault (behaviour) { this.defaultBehaviour = behaviour }

  /** Throw if any request failed verification or was malformed. */
  assertClean () {
    if (this.failures.length > 0) {
      throw new Error(`${this.name}: ${this.failures.length} bad deliveries:\n  ${this.failures.slice(0, 10).join('\n  ')}`)
    }
    if (this.secrets.length > 0 && this.unverified.length > 0) {
      throw new Error(`${this.name}: ${this.unverified.length} deliveries not verified`)
    }
  }

  /** Requests matching `pred` (recorded ones, whatever they were answered). */
  filter (pred = () => true) { return this.requests.filter(pred) }

  /** Requests of an event type (optionally for one document). */
  ofType (type, doc) {
    return this.requests.filter((r) => r.type === type && (doc === undefined || r.data?.doc === doc))
  }

  /** Wait until a request matches `pred` and return the first such; throws at once on a bad delivery. */
  waitFor (pred, { timeoutMs = 10_000, what = 'a matching delivery' } = {}) {
    return this.waitUntil(() => this.requests.find(pred), { timeoutMs, what })
  }

  /** waitUntil that also fails as soon as the receiver saw a bad delivery. */
  waitUntil (cond, { timeoutMs = 10_000, intervalMs = 10, what = 'a condition on the deliveries' } = {}) {
    return waitUntil(() => {
      this.assertClean()
      return cond()
    }, { timeoutMs, intervalMs, what: `${this.name}: ${what}`, describe: () => this.describe() })
  }

  /** A short listing of what was received, for failure messages. */
  describe (n = 30) {
    const lines = this.requests.slice(-n).map((r) =>
      `#${r.seq} +${r.receivedAt - (this.requests[0]?.receivedAt ?? r.receivedAt)}ms id=${r.id} ${r.type} ${JSON.stringify(r.data)?.slice(0, 160)} -> ${typeof r.answer === 'object' ? JSON.stringify(r.answer) : r.answer}`)
    return `${this.requests.length} requests received${lines.length ? ':\n  ' + lines.join('\n  ') : ''}`
  }

  #handle (req, res) {
    const chunks = []
    req.on('data', (chunk) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      const behaviour = this.queue.length > 0 ? this.queue.shift() : this.defaultBehaviour
      const record = this.#record(req, body, behaviour)
      this.#answer(res, behaviour, record)
    })
  }

  #record (req, body, answer) {
    const headers = { ...req.headers }
    const record = {
      seq: this.requests.length,
      method: req.method,
      url: req.url,
      headers,
      body,
      id: headers['webhook-id'],
      timestamp: headers['webhook-timestamp'] === undefined ? undefined : Number(headers['webhook-timestamp']),
      signatures: parseSignatures(headers['webhook-signature']),
      json: undefined,
      type: undefined,
      data: undefined,
      receivedAt: Date.now(),
      receivedPerf: performance.now(),
      answer,
      verifiedWith: []
    }
    const bad = (why) => this.failures.push(`request #${record.seq} (${req.method} ${req.url}, id ${record.id}): ${why}`)
    try {
      record.json = JSON.parse(body)
      record.type = record.json?.type
      record.data = record.json?.data
    } catch (err) {
      bad(`body is not JSON (${err.message}): ${body.slice(0, 200)}`)
    }
    if (req.method !== 'POST') bad(`method ${req.method}, expected POST`)
    if (req.url !== this.path) bad(`path ${req.url}, expected ${this.path}`)
    if (!/^application\/json\b/i.test(headers['content-type'] ?? '')) bad(`content-type ${headers['content-type']}`)
    if (!/^Tandem-Webhooks\//.test(headers['user-agent'] ?? '')) bad(`user-agent ${headers['user-agent']}`)
    if (!/^msg_\S+$/.test(record.id ?? '')) bad(`webhook-id ${record.id} is not msg_…`)
    if (!/^\d+$/.test(headers['webhook-timestamp'] ?? '')) bad(`webhook-timestamp ${headers['webhook-timestamp']} is not unix seconds`)
    if (record.signatures.length === 0 || !record.signatures.every((s) => /^v1,[A-Za-z0-9+/]+={0,2}$/.test(s))) {
      bad(`webhook-signature ${headers['webhook-signature']} is not a list of v1,<base64>`)
    }
    if (record.json !== undefined) {
      const { type, timestamp, data } = record.json ?? {}
      if (typeof type !== 'string') bad(`envelope type ${JSON.stringify(type)}`)
      if (typeof timestamp !== 'string' || !RFC3339.test(timestamp) || Number.isNaN(Date.parse(timestamp))) bad(`envelope timestamp ${JSON.stringify(timestamp)} is not RFC 3339`)
      if (data === null || typeof data !== 'object' || Array.isArray(data)) bad(`envelope data ${JSON.stringify(data)} is not an object`)
    }
    this.requests.push(record)
    if (this.secrets.length === 0) this.unverified.push(record)
    else this.#verify(record)
    return record
  }

  #verify (record) {
    record.verifiedWith = []
    this.secrets.forEach((secret, i) => { if (verifiesWith(secret, record)) record.verifiedWith.push(i) })
    if (record.verifiedWith.length === 0) {
      let why = 'no signature'
      try { new Webhook(this.secrets.at(-1)).verify(record.body, record.headers) } catch (err) { why = err.message }
      this.failures.push(`request #${record.seq} (id ${record.id}, ${record.type}): standardwebhooks verification failed with every known secret (${this.secrets.length}): ${why}`)
    }
  }

  #answer (res, behaviour, record) {
    if (behaviour === 'hang') return // never answered; stop() destroys the socket
    const spec = typeof behaviour === 'number' ? { status: behaviour } : behaviour
    const headers = { 'content-type': 'text/plain' }
    if (spec.location) headers.location = spec.location
    Object.assign(headers, spec.headers ?? {})
    res.writeHead(spec.status, headers)
    res.end(spec.body ?? `${this.name}: ${spec.status} for ${record.id}`)
  }
}

/** Start a receiver. */
export async function startReceiver (opts) {
  const rx = new Receiver(opts)
  await rx.start()
  return rx
}
