// The kernel's floor under scenario (a), measured in the same run as the servers:
// floor/send-floor.c is a C program that does nothing but send a 30-byte message to
// N loopback sockets every 20 ms (250 rounds) while forked C receivers read them, and
// prints its own CPU per send. No server can deliver for less on this machine, so it
// shows how much of a server's CPU per delivery is its own and how much is the kernel's.
// It needs gcc and liburing (Debian: liburing-dev); without them it is skipped with a note.

import { execFileSync, spawn } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawnWorkers } from './workers.mjs'

const SOURCE = join(dirname(fileURLToPath(import.meta.url)), '..', 'floor', 'send-floor.c')
const BINARY = join(tmpdir(), 'tandem-send-floor')

/** Builds the floor program once (again when the source is newer); returns null or why it cannot. */
export function buildFloor () {
  try {
    if (existsSync(BINARY) && statSync(BINARY).mtimeMs >= statSync(SOURCE).mtimeMs) return null
    execFileSync('gcc', ['-O2', '-o', BINARY, SOURCE, '-luring'], { stdio: ['ignore', 'ignore', 'pipe'] })
    return null
  } catch (err) {
    const why = String(err.stderr || err.message).split('\n').find((l) => l.trim()) || 'gcc failed'
    return `cannot build floor/send-floor.c (needs gcc and liburing-dev): ${why.trim()}`
  }
}

/**
 * Runs the floor program: `n` sockets, `receivers` receiving processes, io_uring batches
 * of n (as Tandem's room sends) or one send(2) per socket. Returns µs of sender CPU per send.
 */
export function runFloor (n, receivers, mode) {
  const out = execFileSync(BINARY, [String(n), String(receivers), mode === 'io_uring' ? '1' : '0'], { encoding: 'utf8', timeout: 60000 })
  const m = /([\d.]+) us of sender CPU per send/.exec(out)
  if (!m) throw new Error(`send-floor printed no figure: ${out.trim()}`)
  return Number(m[1])
}

/**
 * As runFloor, but the receivers are the benchmark's Node load-generator processes
 * (2 unless `receivers` says otherwise) reading plain TCP sockets, like the observers of
 * scenario (a) minus the WebSocket parsing. How often receivers sleep and must be woken
 * is a cost the kernel charges to the sender, so this is the floor under the benchmark's
 * own kind of receivers.
 *
 * With `perRound` below n, each round (every `periodMs`) sends to the next `perRound`
 * sockets in turn, as a server's keepalive does, for `rounds` rounds; the result then
 * also has the sender's CPU as a share of one core (`percentOfCore`). Returns
 * { usPerSend, percentOfCore }.
 */
export async function runFloorNodeReceivers (n, mode, opts = {}) {
  const { receivers = 2, periodMs = 20, perRound = n, rounds = 250, localAddresses = null } = opts
  const args = [n, 0, mode === 'io_uring' ? 1 : 0, Math.min(perRound, 4096), periodMs, perRound, rounds].map(String)
  const child = spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)))
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d
      const m = /listening (\d+)/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    child.on('exit', (code) => reject(new Error(`send-floor exited (${code}) before listening: ${out.trim()}`)))
  })
  const workers = spawnWorkers(receivers, 'floor-receivers')
  try {
    const share = (i) => Math.floor(n / receivers) + (i < n % receivers ? 1 : 0)
    await Promise.all(workers.map((w, i) => w.call('openRaw', { port, count: share(i), localAddresses }, 120000)))
    const limitMs = 60000 + rounds * periodMs
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs)
    const code = await exited
    clearTimeout(timer)
    const m = /([\d.]+) us of sender CPU per send/.exec(out)
    if (code !== 0 || !m) throw new Error(`send-floor failed (${code}): ${out.trim()}`)
    const core = /([\d.]+) % of one core/.exec(out)
    return { usPerSend: Number(m[1]), percentOfCore: core ? Number(core[1]) : null }
  } finally {
    await Promise.all(workers.map((w) => w.stop()))
  }
}
