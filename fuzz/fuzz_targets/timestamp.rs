//! timestamp: the strict parser of the freshness timestamp (protocol.md
//! section 4), which hosts parse once its signatures verified.
//!
//! Proves, for any accepted input:
//! * the rules hold: the exact type, version at least 1, `created` before
//!   `expires`, `expires` at most MAX_TIME;
//! * the canonical form round-trips: `parse(to_bytes(t)) == t`, and
//!   `to_bytes` is a fixed point.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::time::MAX_TIME;
use npcnix::format::timestamp::{Timestamp, TIMESTAMP_MAX_BYTES, TIMESTAMP_TYPE};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Timestamp::parse(data) else {
        return;
    };
    assert_eq!(t.kind, TIMESTAMP_TYPE);
    assert!(t.version >= 1);
    assert!(t.created < t.expires && t.expires <= MAX_TIME);
    let bytes = t.to_bytes();
    if bytes.len() > TIMESTAMP_MAX_BYTES {
        assert_eq!(bytes.len(), data.len() + 1);
        return;
    }
    let back = Timestamp::parse(&bytes).expect("canonical form must parse");
    assert_eq!(back, t);
    assert_eq!(back.to_bytes(), bytes);
});
