//! witnessed: a host's and a witness's judgement of what witnesses
//! published (issue 37): arbitrary notes against a witness policy, and
//! arbitrary tree heads and consistency proofs.
//!
//! The input is split at 0xff bytes: the first part picks sizes and the
//! threshold, the rest are notes as a hostile store serves them under
//! `witnesses/<key ID>/checkpoint`. Proves, for any input: no panic; a
//! witnessed checkpoint is signed by the log key for its origin and
//! cosigned by at least `threshold` distinct policy witnesses; growth and
//! consistency checks on arbitrary heads and proofs never panic, and a
//! head always "grows" into itself and never into a smaller tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::merkle::{Hash, TreeHead};
use npcnix::format::note::{verify, Note, VerifierKey};
use npcnix::verify::witness::{grows, growth, witnessed, Growth};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let head = parts.next().unwrap_or_default();
    let notes: Vec<Vec<u8>> = parts.take(8).map(<[u8]>::to_vec).collect();
    // Keys of golang.org/x/mod's and transparency-dev's tests, as the log
    // key and a witness key.
    let log = VerifierKey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
        .expect("key");
    let witnesses = [
        VerifierKey::parse("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
            .expect("key"),
    ];
    let threshold = usize::from(head.first().copied().unwrap_or(1) % 3);
    if let Ok(w) = witnessed(&notes, &log, &witnesses, threshold) {
        assert!(w.witnesses.len() >= threshold);
        let cosigned = notes.iter().any(|n| {
            Note::parse(n).is_ok_and(|n| {
                n.text == w.checkpoint.to_text() && verify(&n, std::slice::from_ref(&log)).is_ok()
            })
        });
        assert!(cosigned, "a witnessed checkpoint the log key did not sign");
        assert_eq!(w.checkpoint.origin, log.name);
    }
    let hash = |at: usize| -> Hash {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = head.get(at + i).copied().unwrap_or(0);
        }
        h
    };
    let size = |at: usize| -> u64 {
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            *x = head.get(at + i).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b) >> (head.get(at + 8).copied().unwrap_or(0) % 64)
    };
    let a = TreeHead { size: size(1), root: hash(10) };
    let b = TreeHead { size: size(42), root: hash(51) };
    let proof: Vec<Hash> = (0..(head.len() / 32).min(70)).map(|i| hash(i * 32)).collect();
    match growth(Some(&a), &b) {
        Growth::Larger { old, new } => {
            assert!(old < new);
            let _ = grows(&a, &b, &proof);
        }
        Growth::Same => assert!(a.size == 0 || a == b),
        Growth::Fork(_) => assert!(b.size <= a.size),
    }
    assert_eq!(growth(Some(&a), &a), Growth::Same);
});
