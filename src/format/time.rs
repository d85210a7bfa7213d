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

/// A duration in rough words for messages: `45 s`, `12 min`, `5 h`, `3 d`.
pub fn duration_words(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}
