// A small seeded PRNG (mulberry32) so that randomized tests are reproducible.

export function prng (seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    /** integer in [0, n) */
    int: (n) => Math.floor(next() * n),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    bytes: (n) => Uint8Array.from({ length: n }, () => Math.floor(next() * 256)),
    word: (len = 1 + Math.floor(next() * 6)) =>
      Array.from({ length: len }, () => String.fromCharCode(97 + Math.floor(next() * 26))).join('')
  }
}
