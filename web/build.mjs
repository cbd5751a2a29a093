// Builds the browser editor into dist/ (or the folder given with --outdir):
//
//   dist/index.html                 the single page, served for /, /d/{doc} and /admin
//   dist/assets/main-<HASH>.js      the entry: routes by path (content-hashed, cached forever)
//   dist/assets/main-<HASH>.css
//   dist/assets/{home,editor,admin}-<HASH>.js, chunk-<HASH>.js
//                                   each page's code, loaded by the entry with
//                                   import(), and the code they share: the
//                                   delivery console never loads the editor
//   dist/favicon.svg
//
// The server embeds dist/ (rust-embed), so dist/ is committed; `npm run check`
// tells when it is stale. The output depends only on the sources and the
// lockfile: no timestamps, no absolute paths, no source maps.

import * as esbuild from 'esbuild'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))

/** Build into `outdir` (emptied first); returns the list of files written, relative to it. */
export async function build (outdir) {
  fs.rmSync(outdir, { recursive: true, force: true })
  fs.mkdirSync(path.join(outdir, 'assets'), { recursive: true })

  const result = await esbuild.build({
    absWorkingDir: here,
    entryPoints: ['src/main.js'],
    bundle: true,
    splitting: true,
    minify: true,
    format: 'esm',
    target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
    platform: 'browser',
    outdir: path.join(outdir, 'assets'),
    entryNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    chunkNames: '[name]-[hash]',
    publicPath: '/assets',
    legalComments: 'none',
    charset: 'utf8',
    sourcemap: false,
    metafile: true,
    logLevel: 'warning',
    define: { 'process.env.NODE_ENV': '"production"' }
  })

  const outputs = Object.keys(result.metafile.outputs).map((file) => path.relative(outdir, path.resolve(here, file)).split(path.sep).join('/'))
  const js = outputs.find((f) => /^assets\/main-[A-Z0-9]+\.js$/.test(f))
  const css = outputs.find((f) => /^assets\/main-[A-Z0-9]+\.css$/.test(f))
  if (!js || !css) throw new Error(`unexpected esbuild outputs: ${outputs.join(', ')}`)

  const favicon = fs.readFileSync(path.join(here, 'src/favicon.svg'), 'utf8')
  fs.writeFileSync(path.join(outdir, 'favicon.svg'), favicon)

  const template = fs.readFileSync(path.join(here, 'src/index.html'), 'utf8')
  const html = template
    .replace('{{css}}', `/${css}`)
    .replace('{{js}}', `/${js}`)
  if (html.includes('{{')) throw new Error('src/index.html has an unknown placeholder')
  fs.writeFileSync(path.join(outdir, 'index.html'), html)

  return ['index.html', 'favicon.svg', ...outputs].sort()
}

/** Every file under `dir`, relative and sorted. */
export function listFiles (dir) {
  const out = []
  const walk = (sub) => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${entry.name}` : entry.name
      if (entry.isDirectory()) walk(rel)
      else out.push(rel)
    }
  }
  if (fs.existsSync(dir)) walk('')
  return out.sort()
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--outdir')
  const outdir = path.resolve(i > 0 ? process.argv[i + 1] : path.join(here, 'dist'))
  const files = await build(outdir)
  for (const file of files) {
    const size = fs.statSync(path.join(outdir, file)).size
    console.log(`${path.relative(process.cwd(), path.join(outdir, file)).padEnd(40)} ${(size / 1024).toFixed(1).padStart(7)} KiB`)
  }
}
