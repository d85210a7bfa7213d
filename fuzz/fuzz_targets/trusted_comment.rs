//! trusted_comment: the binding every signature carries (protocol.md
//! section 3) is accepted only in its single canonical form.
//!
//! Proves, for any accepted string:
//! * re-serialising gives the input back byte for byte (so two verifiers
//!   can never read one comment two ways);
//! * it is one line without control characters (it must fit minisign's
//!   `trusted comment:` line);
//! * each field survives its own round trip (remote name, key ID, digest).

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::keys::KeyId;
use npcnix::format::statement::{Binding, Digest, RemoteName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(b) = Binding::parse(text) else { return };

    assert_eq!(b.to_trusted_comment(), text);
    assert!(!text.chars().any(char::is_control));
    assert_eq!(Binding::parse(&b.to_trusted_comment()), Ok(b.clone()));
    assert_eq!(RemoteName::new(b.remote.as_str()), Ok(b.remote.clone()));
    assert_eq!(KeyId::parse(&b.key_id.to_string()), Some(b.key_id));
    assert_eq!(Digest::from_hex(&b.statement.to_hex()), Some(b.statement));
});
