// Small helpers shared by the driver: a monotonic clock that is comparable across
// processes on this machine, sleeps, bounded waits, percentiles and number formatting.

/** Milliseconds on CLOCK_MONOTONIC (process.hrtime), with microsecond resolution.
 * Every Node process on the machine reads the same clock, so a send time taken in
 * one process and a receive time taken in another can be subtracted. */
export const now = () => Number(process.hrtime.bigint() / 1000n) / 1000

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export const tick = () => new Promise((resolve) => setImmediate(resolve))

/** Polls `cond` every `intervalMs` until it is truthy or `timeoutMs` passes.
 * Returns true when the condition held, false on timeout. */
export async function waitFor (cond, { timeoutMs, intervalMs = 20 }) {
  const deadline = now() + timeoutMs
  for (;;) {
    if (await cond()) return true
    if (now() >= deadline) return false
    await sleep(intervalMs)
  }
}

/** Rejects if `promise` does not settle within `ms`. */
export function withTimeout (promise, ms, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

/** Nearest-rank percentile of an ascending-sorted array-like (p in 0..100). */
export function percentile (sorted, p) {
  if (sorted.length === 0) return null
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]
}

/** { count, p50, p99, max, mean } of an array of numbers (copied into a Float64Array and sorted). */
export function summarize (values) {
  const a = Float64Array.from(values)
  a.sort()
  let sum = 0
  for (let i = 0; i < a.length; i++) sum += a[i]
  return {
    count: a.length,
    p50: percentile(a, 50),
    p99: percentile(a, 99),
    max: a.length ? a[a.length - 1] : null,
    mean: a.length ? sum / a.length : null
  }
}

/** Formats a number for the tables: thousands separators, 3 significant-ish digits. */
export function fmt (v) {
  if (v === null || v === undefined || Number.isNaN(v)) return 'n/a'
  if (typeof v !== 'number') return String(v)
  const abs = Math.abs(v)
  if (abs === 0) return '0'
  if (Number.isInteger(v) && abs < 1e15) return v.toLocaleString('en-US')
  if (abs >= 1000) return Math.round(v).toLocaleString('en-US')
  if (abs >= 100) return v.toFixed(1)
  if (abs >= 10) return v.toFixed(2)
  if (abs >= 1) return v.toFixed(2)
  if (abs >= 0.01) return v.toFixed(3)
  return v.toPrecision(2)
}

export const round = (v, digits = 3) =>
  v === null || v === undefined || Number.isNaN(v) ? null : Number(v.toFixed(digits))
