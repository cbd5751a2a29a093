// Bounded waiting: poll a condition, race a promise against a timeout.
// Every wait in the suite goes through here so that a hung server fails a
// test with a message instead of hanging the run.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Poll `cond` (sync or async) until it returns a truthy value, and return that value.
 * On timeout throws an Error naming `what`; `describe()` (optional) adds the
 * current state to the message, e.g. the two texts that failed to converge.
 */
export async function waitUntil (cond, { timeoutMs = 10_000, intervalMs = 10, what = 'condition', describe } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await cond()
    if (value) return value
    if (Date.now() > deadline) {
      const detail = describe ? `: ${await describe()}` : ''
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`)
    }
    await sleep(intervalMs)
  }
}

/** Resolve/reject like `promise`, or reject after `timeoutMs` with a message naming `what`. */
export function withTimeout (promise, timeoutMs, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
