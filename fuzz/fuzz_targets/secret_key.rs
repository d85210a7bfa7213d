//! secret_key: minisign secret key files (protocol.md section 1).
//!
//! scrypt is far too slow to fuzz through, so no passphrase is ever given:
//! `parse_with` asks for one only for an encrypted key, after checking the
//! file's scrypt parameters, and with none it stops there (before scrypt
//! runs). That gives the first invariant for free.
//!
//! Proves, for any input:
//! * the passphrase (and so scrypt) is only ever reached with a memory
//!   limit within `SCRYPT_MEMLIMIT_MAX`, and refusing it yields
//!   `PassphraseRequired`;
//! * an accepted key re-serialises (unencrypted) to text that parses back
//!   to the same key, and that text is a fixed point;
//! * the embedded key ID and public key are consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::keys::{
    KeyError, KeyProtection, PublicKey, ScryptLimits, SecretKey, SCRYPT_MEMLIMIT_MAX,
};

fn unencrypted(sk: &SecretKey) -> String {
    sk.to_file_text(KeyProtection::Unencrypted, b"", ScryptLimits::default())
        .expect("serialising an unencrypted key cannot fail")
        .to_string()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let mut asked: Option<ScryptLimits> = None;
    let parsed = SecretKey::parse_with(text, |limits| {
        asked = Some(limits);
        None
    });
    if let Some(limits) = asked {
        assert!(limits.memlimit <= SCRYPT_MEMLIMIT_MAX, "{limits:?}");
        assert!(
            matches!(parsed, Err(KeyError::PassphraseRequired)),
            "{parsed:?}"
        );
        return;
    }
    let Ok(sk) = parsed else { return };

    let pk = sk.public_key();
    assert_eq!(pk.key_id, sk.key_id);

    let text2 = unencrypted(&sk);
    let back = SecretKey::parse(&text2, None).expect("our own key file must parse");
    assert_eq!(back.public_key(), pk);
    assert_eq!(unencrypted(&back), text2);
    assert_eq!(PublicKey::parse(&pk.to_file_text()).ok(), Some(pk));
});
