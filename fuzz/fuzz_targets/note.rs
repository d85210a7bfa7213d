//! note: C2SP signed notes and checkpoints (issue 37, the witnessed log),
//! which hosts and witnesses read from the store.
//!
//! Proves, for any input: no panic; an accepted note is at most the size
//! limit, has 1 to MAX_SIGNATURES signature lines with valid names, and
//! re-serialises to exactly its input; an accepted checkpoint text
//! re-serialises to exactly itself; verifying any note against a fixed log
//! key and witness key never panics, and counts each key at most once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::note::{
    valid_name, verify, Checkpoint, Note, VerifierKey, ALG_COSIGNATURE_V1, ALG_ED25519,
    MAX_SIGNATURES, NOTE_MAX_BYTES,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = Checkpoint::parse(text) {
            assert_eq!(c.to_text(), text);
        }
    }
    let Ok(n) = Note::parse(data) else {
        return;
    };
    assert!(data.len() <= NOTE_MAX_BYTES);
    assert!(!n.sigs.is_empty() && n.sigs.len() <= MAX_SIGNATURES);
    assert!(n.sigs.iter().all(|s| valid_name(&s.name)));
    assert_eq!(n.to_bytes(), data);
    // Keys of golang.org/x/mod's and transparency-dev's tests.
    let keys = [
        VerifierKey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .expect("key"),
        VerifierKey::parse("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
            .expect("key"),
    ];
    assert_eq!((keys[0].alg, keys[1].alg), (ALG_ED25519, ALG_COSIGNATURE_V1));
    if let Ok(v) = verify(&n, &keys) {
        assert!(!v.by.is_empty() && v.by.len() <= 2 && v.by.len() == v.times.len());
    }
});
