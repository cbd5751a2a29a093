// Repeated rounds of one scenario, folded into one figure per metric.
//
// A single run on a shared 2-core machine moves by ±20 % from one run to the next (the
// reference's own CPU per delivery at N = 1,000 ranged over 10-15 µs), so one ratio says
// little. `--rounds K` runs each scenario K times per target, alternating which target
// goes first, and reports each figure's median over the rounds. Rows that check
// correctness (updates lost, state equal) report the worst round instead: a median
// would hide a loss that happened once.

/** Median of numbers (null when none); the mean of the two middle ones for an even count. */
export function median (values) {
  const xs = values.filter((v) => typeof v === 'number' && !Number.isNaN(v)).sort((a, b) => a - b)
  if (xs.length === 0) return null
  const mid = xs.length >> 1
  return xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2
}

/** The worst of the values for a row whose `better` is 'lower' or 'higher'. */
function worst (values, better) {
  const xs = values.filter((v) => typeof v === 'number' && !Number.isNaN(v))
  if (xs.length === 0) return null
  return better === 'higher' ? Math.min(...xs) : Math.max(...xs)
}

/** Target order for round `r` (0-based): as given in even rounds, reversed in odd ones. */
export function orderForRound (targets, r) {
  return r % 2 === 0 ? targets : [...targets].reverse()
}

/**
 * Folds one target's rounds into one result of the shape a single run has:
 * { ok, seconds, metrics: [{ key, label, unit, better, value, rounds }], notes }.
 * Any failed round makes the target's result a failure that names the round.
 * @param {Array<{ ok: boolean, seconds?: number, metrics?: any[], notes?: string[], error?: string }>} runs
 */
export function combineRounds (runs) {
  const seconds = runs.reduce((a, r) => a + (r.seconds || 0), 0)
  const failed = runs.findIndex((r) => !r.ok)
  if (failed >= 0) {
    const why = runs[failed].error
    return { ok: false, seconds, error: runs.length > 1 ? `round ${failed + 1} of ${runs.length}: ${why}` : why }
  }
  if (runs.length === 1) return { ...runs[0], metrics: runs[0].metrics.map((m) => ({ ...m, rounds: [m.value] })) }
  const rows = new Map()
  runs.forEach((run, i) => {
    for (const m of run.metrics) {
      if (!rows.has(m.key)) rows.set(m.key, { ...m, rounds: new Array(runs.length).fill(null) })
      rows.get(m.key).rounds[i] = m.value
    }
  })
  const metrics = [...rows.values()].map((m) => {
    const value = m.across === 'worst' ? worst(m.rounds, m.better) : median(m.rounds)
    return { ...m, value: typeof value === 'number' ? Number(value.toPrecision(6)) : value }
  })
  const notes = runs.flatMap((run, i) => (run.notes || []).map((n) => `round ${i + 1}: ${n}`))
  return { ok: true, seconds, metrics, notes }
}

/** Per-round ratios tandem / reference (rounds paired by index; null where either is missing). */
export function roundRatios (t, r) {
  if (!t || !r) return []
  const n = Math.min(t.length, r.length)
  const out = []
  for (let i = 0; i < n; i++) {
    out.push(typeof t[i] === 'number' && typeof r[i] === 'number' && r[i] !== 0 ? Number((t[i] / r[i]).toPrecision(4)) : null)
  }
  return out
}
