// Client tokens are JWTs minted by the page's backend (POST /api/tokens).
// The page reads the payload only to adapt the interface (read-only badge,
// default display name, the right message when access ends); the server
// verifies the signature and enforces every permission.

/**
 * The claims of a JWT, or null when `token` is not one.
 * @returns {{ doc?: string, perm?: string, exp?: number, sub?: string, name?: string } | null}
 */
export function decodeToken (token) {
  if (typeof token !== 'string') return null
  const parts = token.split('.')
  if (parts.length !== 3) return null
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4)
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0))
    const claims = JSON.parse(new TextDecoder().decode(bytes))
    return claims && typeof claims === 'object' ? claims : null
  } catch {
    return null
  }
}

/** True when the claims carry an expiry that has passed. */
export function isExpired (claims, now = Date.now()) {
  return Boolean(claims && typeof claims.exp === 'number' && claims.exp * 1000 <= now)
}
