// GET /api/openapi.json: public even with TANDEM_API_KEY set, a valid OpenAPI
// document (checked by @apidevtools/swagger-parser's validate(): the OpenAPI
// JSON schema for its version, then its own spec checks, with every $ref
// resolved), and it lists every route the server has.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import SwaggerParser from '@apidevtools/swagger-parser'
import { Harness } from '../lib/harness.js'

const ROUTES = {
  '/api/docs': ['get', 'post'],
  '/api/docs/{id}': ['delete', 'get'],
  '/api/docs/{id}/update': ['get', 'post'],
  '/api/docs/{id}/json': ['get'],
  '/api/tokens': ['post'],
  '/api/webhooks': ['get', 'post'],
  '/api/webhooks/{id}': ['delete', 'get', 'patch'],
  '/api/webhooks/{id}/rotate-secret': ['post'],
  '/api/webhooks/{id}/test': ['post'],
  '/api/webhooks/{id}/deliveries': ['get'],
  '/api/webhooks/{id}/deliveries/{delivery}/retry': ['post'],
  '/ws/{doc}': ['get'],
  '/healthz': ['get'],
  '/readyz': ['get'],
  '/metrics': ['get']
}
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

/** validate() resolves to the dereferenced document, or rejects with the validator's findings. */
async function validate (doc) {
  return SwaggerParser.validate(structuredClone(doc))
}

test('/api/openapi.json is public, a valid OpenAPI document, and lists every route', async (t) => {
  const h = new Harness({ env: { TANDEM_API_KEY: 'openapi-test-key' } })
  t.after(() => h.dispose())
  await h.start()

  const res = await fetch(`${h.server.httpUrl}/api/openapi.json`, { signal: AbortSignal.timeout(10_000) })
  assert.equal(res.status, 200, 'GET /api/openapi.json without the API key')
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/)
  const doc = await res.json()
  assert.match(String(doc.openapi), /^3\.[01]\.\d+$/, `openapi field: ${doc.openapi}`)

  // Precondition: the validator really checks this version (a broken copy is rejected).
  const broken = structuredClone(doc)
  broken.paths['/api/docs'].get.responses = 'not an object'
  await assert.rejects(validate(broken), /must be object/, 'the validator accepted a broken document')
  const dangling = structuredClone(doc)
  dangling.paths['/api/tokens'].post.responses['200'] = { $ref: '#/components/responses/NoSuchResponse' }
  await assert.rejects(validate(dangling), /Missing \$ref pointer/, 'the validator accepted a dangling $ref')
  if (doc.openapi.startsWith('3.1.')) {
    // `webhooks` exists only in the 3.1 schema (3.0 would refuse it as an unknown field).
    const webhooks = structuredClone(doc)
    webhooks.webhooks = 5
    await assert.rejects(validate(webhooks), /#\/webhooks must be object/, 'the 3.1 schema is not the one checked')
  }

  let api
  try {
    api = await validate(doc)
  } catch (err) {
    assert.fail(`OpenAPI validation failed: ${err.message}${err.details ? `\n${JSON.stringify(err.details, null, 2)}` : ''}`)
  }
  assert.equal(api.openapi, doc.openapi)

  // Every route, with its methods.
  const listed = Object.fromEntries(Object.entries(api.paths).map(([path, item]) =>
    [path, Object.keys(item).filter((k) => METHODS.includes(k))]))
  for (const [path, methods] of Object.entries(ROUTES)) {
    assert.ok(listed[path], `${path} is not in the document (paths: ${JSON.stringify(listed)})`)
    for (const method of methods) {
      assert.ok(listed[path].includes(method), `${method.toUpperCase()} ${path} is not in the document (it lists ${listed[path]})`)
      const op = api.paths[path][method]
      assert.ok(op.responses && Object.keys(op.responses).length > 0, `${method.toUpperCase()} ${path} has no responses`)
    }
  }
})
