//! statement: the strict parser of the signed release statement
//! (protocol.md section 2).
//!
//! Proves, for any accepted input:
//! * the semantic rules hold: known type, `version` in 1..=MAX_VERSION,
//!   `previous` is null exactly for version 1, times at most MAX_TIME and
//!   `expires` after `created`;
//! * the publisher's canonical form round-trips:
//!   `parse(to_bytes(s)) == s`, and `to_bytes` is a fixed point.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::statement::{Statement, MAX_TIME, MAX_VERSION, STATEMENT_MAX_BYTES, STATEMENT_TYPE};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Statement::parse(data) else {
        return;
    };

    assert_eq!(s.kind, STATEMENT_TYPE);
    assert!(
        (1..=MAX_VERSION).contains(&s.version),
        "version {}",
        s.version
    );
    assert_eq!(s.version == 1, s.previous.is_none());
    assert!(s.created <= MAX_TIME);
    if let Some(expires) = s.expires {
        assert!(s.created < expires && expires <= MAX_TIME);
    }

    let bytes = s.to_bytes();
    // `to_bytes` is compact JSON plus a newline: never longer than an
    // accepted input, except for that newline on an input of exactly the
    // maximum size.
    if bytes.len() > STATEMENT_MAX_BYTES {
        assert_eq!(bytes.len(), data.len() + 1);
        return;
    }
    let back = Statement::parse(&bytes).expect("canonical form must parse");
    assert_eq!(back, s);
    assert_eq!(back.to_bytes(), bytes);
});
