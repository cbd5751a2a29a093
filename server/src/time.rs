//! Time as the API shows it.

/// Unix milliseconds as RFC 3339 (UTC, milliseconds), the one timestamp
/// format of the API and of webhook bodies.
pub fn rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
