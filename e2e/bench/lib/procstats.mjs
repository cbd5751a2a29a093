// Process statistics from /proc: a server's CPU time (utime+stime from /proc/<pid>/stat,
// which covers all of its threads, including ones that have exited), its resident memory
// (VmRSS from /proc/<pid>/status), whole-machine CPU busy time (/proc/stat), and an RSS
// sampler that runs on its own worker thread every ~10 ms so that a busy driver event
// loop cannot make it miss peaks.

import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { Worker } from 'node:worker_threads'

let clkTck = null
/** Clock ticks per second (`getconf CLK_TCK`), read once. */
export function clockTicks () {
  if (clkTck === null) {
    clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    if (!Number.isFinite(clkTck) || clkTck <= 0) throw new Error('getconf CLK_TCK gave nothing usable')
  }
  return clkTck
}

/** CPU time of a process in milliseconds, at 1/CLK_TCK resolution: user + system, and
 * system alone (time in the kernel, e.g. the TCP send path). */
export function cpuSplitMs (pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return { total: ((utime + stime) * 1000) / clockTicks(), system: (stime * 1000) / clockTicks() }
}

/** CPU time (user + system) of a process in milliseconds, at 1/CLK_TCK resolution. */
export function cpuMs (pid) {
  return cpuSplitMs(pid).total
}

/** Per-thread run time of a process at nanosecond resolution: Map tid -> { ns on CPU, the
 * thread's name }, from the first field of /proc/<pid>/task/<tid>/schedstat and its comm. Diff two readings with
 * threadCpuDeltaMs: threads that exit in between are missed (an undercount), so use it
 * only where utime+stime ticks are too coarse, e.g. near-idle windows. */
export function threadCpu (pid) {
  const out = new Map()
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      out.set(tid, { ns, name })
    } catch {} // gone meanwhile
  }
  return out
}

/** CPU ms between two threadCpu readings, over the threads alive at the second one. */
export function threadCpuDeltaMs (before, after) {
  let ns = 0
  for (const [tid, v] of after) ns += v.ns - (before.get(tid)?.ns || 0)
  return ns / 1e6
}

/** The same, per thread name (a pool's threads share one), busiest first: [[name, ms]]. */
export function threadCpuByNameMs (before, after) {
  const by = new Map()
  for (const [tid, v] of after) by.set(v.name, (by.get(v.name) || 0) + (v.ns - (before.get(tid)?.ns || 0)) / 1e6)
  return [...by].filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1])
}

/** VmRSS of a process in KiB. */
export function rssKb (pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  if (!m) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(m[1])
}

/** Whole-machine CPU counters from /proc/stat, in ticks: busy (user, nice, system, irq,
 * softirq), irq (irq + softirq: mostly loopback TCP work, which is not charged to any
 * process), steal, and total (everything but guest, which is inside user). */
export function machineCpu () {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map((x) => Number(x) || 0)
  return {
    busy: user + nice + system + irq + softirq,
    irq: irq + softirq,
    steal,
    total: user + nice + system + idle + iowait + irq + softirq + steal
  }
}

export const cpuCount = () => {
  const stat = readFileSync('/proc/stat', 'utf8')
  return (stat.match(/^cpu\d+ /gm) || []).length || 1
}

/** Samples VmRSS of `pid` every `intervalMs` on a worker thread. peakKb() is the
 * highest value since the last resetPeak(); lastKb() the latest sample. */
export class RssSampler {
  constructor (pid, intervalMs = 10) {
    this.shared = new Int32Array(new SharedArrayBuffer(16)) // [peakKb, lastKb, samples, stop]
    const first = rssKb(pid)
    this.shared[0] = first
    this.shared[1] = first
    this.worker = new Worker(new URL('./rss-sampler-thread.mjs', import.meta.url), {
      workerData: { pid, intervalMs, shared: this.shared }
    })
    this.worker.unref()
  }

  resetPeak () { Atomics.store(this.shared, 0, Atomics.load(this.shared, 1)) }
  peakKb () { return Atomics.load(this.shared, 0) }
  lastKb () { return Atomics.load(this.shared, 1) }
  samples () { return Atomics.load(this.shared, 2) }

  async stop () {
    Atomics.store(this.shared, 3, 1)
    await this.worker.terminate()
  }
}

/** Every process's CPU ticks, command name and parent: Map pid -> { comm, ppid, ticks }. */
export function processTable () {
  const out = new Map()
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const close = stat.lastIndexOf(')')
      const comm = stat.slice(stat.indexOf('(') + 1, close)
      const f = stat.slice(close + 2).split(' ')
      out.set(Number(pid), { comm, ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) })
    } catch {} // gone meanwhile
  }
  return out
}

/** Snapshot of a server's CPU, the machine's CPU and this driver process's CPU, to diff later. */
export function snapshot (pid) {
  const cpu = cpuSplitMs(pid)
  return { t: performance.now(), pid, serverCpuMs: cpu.total, serverSysMs: cpu.system, serverThreads: threadCpu(pid), machine: machineCpu(), self: process.cpuUsage(), procs: processTable() }
}

/** Differences between two snapshots: wall ms, server CPU ms (ticks; of it in the
 * kernel; and from the threads' schedstat, at ns resolution), machine busy % (of all
 * cores) and machine busy in ms of CPU, main driver CPU %. */
export function diff (a, b) {
  const wallMs = b.t - a.t
  const machineTotal = b.machine.total - a.machine.total
  const selfUs = (b.self.user - a.self.user) + (b.self.system - a.self.system)
  return {
    wallMs,
    serverCpuMs: b.serverCpuMs - a.serverCpuMs,
    serverSysMs: b.serverSysMs - a.serverSysMs,
    serverThreadCpuMs: threadCpuDeltaMs(a.serverThreads, b.serverThreads),
    serverThreadCpuByNameMs: threadCpuByNameMs(a.serverThreads, b.serverThreads),
    machineBusyPct: machineTotal > 0 ? (100 * (b.machine.busy - a.machine.busy)) / machineTotal : null,
    machineBusyMs: ((b.machine.busy - a.machine.busy) * 1000) / clockTicks(),
    machineIrqMs: ((b.machine.irq - a.machine.irq) * 1000) / clockTicks(),
    machineStealMs: ((b.machine.steal - a.machine.steal) * 1000) / clockTicks(),
    driverMainCpuPct: wallMs > 0 ? (100 * selfUs) / 1000 / wallMs : null,
    // The busiest processes that are neither the server nor this driver or its children.
    topOthers: [...b.procs].filter(([p, v]) => p !== b.pid && p !== process.pid && v.ppid !== process.pid)
      .map(([p, v]) => ({ pid: p, comm: v.comm, pct: (100 * (((v.ticks - (a.procs.get(p)?.ticks ?? v.ticks)) * 1000) / clockTicks())) / wallMs }))
      .filter((x) => x.pct >= 5).sort((x, y) => y.pct - x.pct).slice(0, 3)
  }
}
