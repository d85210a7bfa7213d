//! host_state: the host's rollback memory (protocol.md section 8). A state
//! file that reads back differently from what was written would silently
//! weaken rollback protection.
//!
//! Proves, for any accepted input:
//! * the format tag is the one this npcnix writes;
//! * the state round-trips: `parse(to_bytes(s)) == s` except for the legacy
//!   per-remote `etag` field, which is read and dropped (a cache hint, never
//!   security state), and `to_bytes` is a fixed point.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::host::state::{HostState, STATE_FORMAT};

fuzz_target!(|data: &[u8]| {
    let Ok(mut s) = HostState::parse(data) else {
        return;
    };
    let mut dropped = s.clone();
    for r in dropped.remotes.values_mut() {
        r.etag = None;
    }

    assert_eq!(s.format, STATE_FORMAT);
    let bytes = s.to_bytes();
    let back = HostState::parse(&bytes).expect("our own state file must parse");
    s = dropped;
    assert_eq!(back, s);
    assert_eq!(back.to_bytes(), bytes);
});
