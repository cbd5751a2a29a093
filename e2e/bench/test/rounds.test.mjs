// The folding of --rounds: medians for figures, the worst round for checks,
// failures named by round, and per-round ratios paired by index.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { combineRounds, median, orderForRound, roundRatios } from '../lib/rounds.mjs'

const row = (key, value, extra = {}) => ({ key, label: key, unit: 'x', better: 'lower', across: 'median', value, ...extra })

test('median of odd and even counts, ignoring missing values', () => {
  assert.equal(median([3, 1, 2]), 2)
  assert.equal(median([4, 1, 3, 2]), 2.5)
  assert.equal(median([null, 5, Number.NaN]), 5)
  assert.equal(median([]), null)
})

test('servers alternate which goes first', () => {
  assert.deepEqual(orderForRound(['t', 'r'], 0), ['t', 'r'])
  assert.deepEqual(orderForRound(['t', 'r'], 1), ['r', 't'])
  assert.deepEqual(orderForRound(['t', 'r'], 2), ['t', 'r'])
})

test('figures fold to the median, checks to the worst round', () => {
  const runs = [
    { ok: true, seconds: 1, metrics: [row('cpu', 5), row('lost', 0, { across: 'worst' }), row('ok', 1, { better: 'higher', across: 'worst' })], notes: ['slow'] },
    { ok: true, seconds: 2, metrics: [row('cpu', 9), row('lost', 3, { across: 'worst' }), row('ok', 0, { better: 'higher', across: 'worst' })], notes: [] },
    { ok: true, seconds: 3, metrics: [row('cpu', 6), row('lost', 0, { across: 'worst' }), row('ok', 1, { better: 'higher', across: 'worst' })], notes: [] }
  ]
  const c = combineRounds(runs)
  assert.equal(c.ok, true)
  assert.equal(c.seconds, 6)
  const by = Object.fromEntries(c.metrics.map((m) => [m.key, m]))
  assert.equal(by.cpu.value, 6)
  assert.deepEqual(by.cpu.rounds, [5, 9, 6])
  assert.equal(by.lost.value, 3, 'a loss in one round is not hidden by the median')
  assert.equal(by.ok.value, 0, 'a failed check in one round is not hidden by the median')
  assert.deepEqual(c.notes, ['round 1: slow'])
})

test('a failed round fails the target and says which round', () => {
  const c = combineRounds([{ ok: true, metrics: [row('cpu', 1)] }, { ok: false, error: 'server exited' }])
  assert.equal(c.ok, false)
  assert.equal(c.error, 'round 2 of 2: server exited')
})

test('a single round keeps its values as they are', () => {
  const c = combineRounds([{ ok: true, seconds: 1, metrics: [row('cpu', 7)], notes: ['n'] }])
  assert.equal(c.metrics[0].value, 7)
  assert.deepEqual(c.metrics[0].rounds, [7])
  assert.deepEqual(c.notes, ['n'])
})

test('per-round ratios pair rounds by index', () => {
  assert.deepEqual(roundRatios([5, 6], [10, 0]), [0.5, null])
  assert.deepEqual(roundRatios(undefined, [1]), [])
})
