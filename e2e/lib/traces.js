// Loading the editing traces in shared/traces (see its README.md for the format)
// and replaying them into Yjs documents.

import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'
import { fileURLToPath } from 'node:url'

const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
/** <repo>/../shared/traces, i.e. ../../shared/traces from the e2e folder. */
export const TRACES_DIR = process.env.TANDEM_TRACES_DIR || path.resolve(E2E_DIR, '../../shared/traces')

/** The trace files, sorted by name. */
export function traceFiles () {
  return fs.readdirSync(TRACES_DIR).filter((f) => f.endsWith('.json.gz')).sort()
}

export function loadTrace (file) {
  return JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(TRACES_DIR, file))).toString('utf8'))
}

export const isConcurrent = (trace) => trace.kind === 'concurrent'

/**
 * Apply one txn's patches to a Y.Text. Positions are code points, and no trace
 * has characters above U+FFFF, so they equal the UTF-16 offsets Yjs uses.
 */
export function applyPatches (ytext, patches) {
  for (const [pos, del, ins] of patches) {
    if (del > 0) ytext.delete(pos, del)
    if (ins.length > 0) ytext.insert(pos, ins)
  }
}
