//! public_key: the `RW...` keys hosts pin (protocol.md section 1).
//!
//! Proves, for any accepted text (a `.pub` file or a bare key line):
//! * the key line in the input is exactly the canonical base64 of the key
//!   (no second spelling of one key is accepted);
//! * the key round-trips through the `.pub` file form, the bare line form
//!   and `from_base64`, and its key ID through its display form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::keys::{KeyId, PublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pk) = PublicKey::parse(text) else {
        return;
    };

    let line = pk.to_base64();
    assert!(line.starts_with("RW"), "{line}");
    assert!(
        text.contains(&line),
        "accepted a non-canonical spelling of {line}"
    );

    assert_eq!(PublicKey::parse(&pk.to_file_text()).ok(), Some(pk.clone()));
    assert_eq!(PublicKey::parse(&line).ok(), Some(pk.clone()));
    assert_eq!(PublicKey::from_base64(&line).ok(), Some(pk.clone()));
    assert_eq!(KeyId::parse(&pk.key_id.to_string()), Some(pk.key_id));
    // Must not panic, whatever the 32 key bytes are.
    let _ = pk.to_verifier();
});
