//! Time as the API shows it.

/// Unix milliseconds as RFC 3339 (UTC, milliseconds), the one timestamp
/// format of the API and of webhook bodies.
pub fn rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// RFC 3339 in UTC (`…Z`, as `rfc3339` writes and as browsers'
/// `toISOString` does) as unix milliseconds; `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}
