//! Time as the protocol sees it: Unix seconds, bounded, shown as RFC 3339.
//! The caller passes "now" in; nothing here reads a clock.

/// Largest timestamp accepted (9999-12-31T23:59:59Z).
pub const MAX_TIME: u64 = 253_402_300_799;

/// RFC 3339 rendering of Unix seconds, for humans.
pub fn rfc3339(secs: u64) -> String {
    if secs > MAX_TIME {
        return format!("@{secs}");
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}
