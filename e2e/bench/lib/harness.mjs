// Glue shared by the scenarios: run a function against a fresh server process with an
// RSS sampler attached (and always stop both), collect metrics in a uniform shape, and
// summarise how busy the driver and the machine were, so a saturated load generator
// shows up in the output instead of silently capping a figure.

import { RssSampler } from './procstats.mjs'
import { round } from './stats.mjs'

/** Starts a fresh server for `target`, runs fn(server, sampler), stops everything. */
export async function withServer (target, fn) {
  const server = await target.start()
  const sampler = new RssSampler(server.pid, 10)
  let result
  try {
    result = await fn(server, sampler)
    if (!server.alive()) {
      throw new Error(`${server.name} exited during the run (${JSON.stringify(server.exitInfo())}). Log tail:\n${server.logTail().join('\n')}`)
    }
  } catch (err) {
    if (server.alive() === false && !String(err.message).includes('Log tail')) {
      err.message += `\n${server.name} exited (${JSON.stringify(server.exitInfo())}). Log tail:\n${server.logTail().join('\n')}`
    }
    throw err
  } finally {
    await sampler.stop()
    await server.stop()
  }
  return result
}

/** Collects metrics for one target run. Keys are stable identifiers; rows print in insertion order. */
export class Metrics {
  constructor () {
    this.rows = []
    this.notes = []
  }

  /**
   * @param {string} key
   * @param {string} label
   * @param {string} unit
   * @param {'lower'|'higher'|null} better null for diagnostics (not a figure of merit)
   * @param {number|null} value
   * @param {{ across?: 'median'|'worst' }} [opts] how `--rounds` folds this row: the median
   *   (default), or the worst round, for rows that check correctness
   */
  add (key, label, unit, better, value, { across = 'median' } = {}) {
    this.rows.push({ key, label, unit, better, across, value: typeof value === 'number' ? round(value, 4) : value })
    return this
  }

  /** A row that checks correctness (updates lost, state equal): `--rounds` reports its worst round. */
  check (key, label, unit, better, value) {
    return this.add(key, label, unit, better, value, { across: 'worst' })
  }

  note (text) { this.notes.push(text); return this }
}

/**
 * Adds the driver/machine diagnostic rows for a measured window.
 * @param {Metrics} m
 * @param {string} prefix key/label prefix (e.g. 'N=100 ')
 * @param {{ wallMs: number, machineBusyPct: number, driverMainCpuPct: number }} d from procstats.diff
 * @param {Array<{cpuMs: number, wallMs: number}>} workerCpu from client-worker collect
 */
export function addDriverDiag (m, prefix, d, workerCpu = []) {
  const workerPcts = workerCpu.filter((w) => w && w.wallMs > 0).map((w) => (100 * w.cpuMs) / w.wallMs)
  const maxDriver = Math.max(d.driverMainCpuPct ?? 0, ...workerPcts)
  const driverPct = (d.driverMainCpuPct ?? 0) + workerPcts.reduce((a, b) => a + b, 0)
  const serverPct = (100 * d.serverCpuMs) / d.wallMs
  // Interrupt/softirq time (mostly loopback TCP delivery, charged to no process) is shown
  // on its own; what remains beyond the server and the driver is other processes on the
  // machine (someone else's build or tests), which skews every figure.
  const irqPct = (100 * d.machineIrqMs) / d.wallMs
  const otherPct = Math.max(0, (100 * (d.machineBusyMs - d.machineIrqMs)) / d.wallMs - serverPct - driverPct)
  m.add(`${prefix}driver_max_proc_cpu_pct`, `${prefix}(diag) busiest driver process CPU`, '% of 1 core', null, maxDriver)
  m.add(`${prefix}machine_busy_pct`, `${prefix}(diag) machine CPU busy`, '% of all cores', null, d.machineBusyPct)
  m.add(`${prefix}irq_cpu_pct`, `${prefix}(diag) kernel irq+softirq CPU`, '% of 1 core', null, irqPct)
  m.add(`${prefix}other_cpu_pct`, `${prefix}(diag) CPU of other processes`, '% of 1 core', null, otherPct)
  if (d.machineStealMs > 0.05 * d.wallMs) m.note(`${prefix.trim() || 'run'}: the hypervisor stole ${((100 * d.machineStealMs) / d.wallMs).toFixed(0)}% of a core meanwhile.`)
  if (maxDriver > 90) {
    m.note(`${prefix.trim() || 'run'}: a driver process used ${maxDriver.toFixed(0)}% of a core: the load generator is saturated, figures may be capped by the driver.`)
  }
  if (otherPct > 25) {
    const top = (d.topOthers || []).map((x) => `${x.comm} ${x.pct.toFixed(0)}%`).join(', ')
    m.note(`${prefix.trim() || 'run'}: other processes used ${otherPct.toFixed(0)}% of a core meanwhile${top ? ` (busiest: ${top})` : ' (none of them visible in this PID namespace)'}: figures are skewed by outside load.`)
  }
  return maxDriver
}

export const KiB = 1024
export const MiB = 1024 * 1024
