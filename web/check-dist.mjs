// `npm run check`: builds the editor into a temporary folder and compares it,
// file by file and byte by byte, with the committed web/dist/. Exits 1 when
// they differ (the server would embed a stale bundle), 0 otherwise.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, listFiles } from './build.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const committed = path.join(here, 'dist')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-web-check-'))

try {
  await build(tmp)
  const want = listFiles(tmp)
  const have = listFiles(committed)
  const problems = []
  for (const file of want) {
    if (!have.includes(file)) problems.push(`missing: dist/${file}`)
    else if (!fs.readFileSync(path.join(tmp, file)).equals(fs.readFileSync(path.join(committed, file)))) problems.push(`differs: dist/${file}`)
  }
  for (const file of have) {
    if (!want.includes(file)) problems.push(`not built any more: dist/${file}`)
  }
  if (problems.length > 0) {
    for (const p of problems) console.error(`  ${p}`)
    console.error('web/dist is stale: run `cd web && npm ci && npm run build` and commit the result')
    process.exitCode = 1
  } else {
    console.log(`web/dist is up to date (${want.length} files)`)
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true })
}
