//! outboard_stream: verified streaming (issue 36): an archive checked group
//! by group against the signed BLAKE3 through an outboard the store serves.
//!
//! The signed archive is the input's first part, repeated up to 300 KB so
//! the tree has several 16 KiB groups and levels. Byte 0 picks the mode:
//! * mode 0: the genuine outboard and archive, then up to 16 edits from the
//!   rest of the input (4 bytes each: target outboard or archive, position
//!   `u16` scaled to the object, xor value);
//! * mode 1: the rest of the input is the outboard, as a hostile store
//!   serves it.
//!
//! Proves, for any input: no panic; every group the verifier accepts is
//! exactly the signed archive's bytes at its offset (nothing else is ever
//! handed on); a stream that reaches the end delivered exactly the signed
//! archive; with no effective edit the genuine pair always verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::outboard;
use npcnix::format::statement::ArchiveRef;
use npcnix::format::Digest;
use npcnix::verify::stream::{Need, StreamVerifier};

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let mode = input[0] % 2;
    let seed_len = usize::from(input[1]).max(1).min(input.len() - 2);
    let seed = &input[2..2 + seed_len];
    let rest = &input[2 + seed_len..];
    let len = (seed.len() * usize::from(input[1].wrapping_mul(37))).min(300_000);
    let signed_bytes: Vec<u8> = seed.iter().copied().cycle().take(len).collect();
    let signed = ArchiveRef {
        blake3: Digest::of(&signed_bytes),
        size: signed_bytes.len() as u64,
    };
    let genuine = outboard::of(&signed_bytes).bytes;
    let (ob, served) = if mode == 0 {
        let mut ob = genuine.clone();
        let mut served = signed_bytes.clone();
        for e in rest.chunks_exact(4).take(16) {
            let target = if e[0] % 2 == 0 { &mut ob } else { &mut served };
            if target.is_empty() {
                continue;
            }
            let at = usize::from(u16::from_le_bytes([e[1], e[2]])) * target.len() / 65_536;
            target[at] ^= e[3];
        }
        (ob, served)
    } else {
        (rest.to_vec(), signed_bytes.clone())
    };
    let untouched = ob == genuine && served == signed_bytes;
    let header = ob.len().min(outboard::HEADER_LEN as usize);
    let Ok(mut v) = StreamVerifier::new(&signed, ob.len() as u64, &ob[..header]) else {
        assert!(!untouched, "the genuine outboard was refused");
        return;
    };
    // The parents, handed over in file order as the host reads them.
    let mut parents = ob[header..].chunks(outboard::PARENT_LEN as usize);
    let mut delivered = 0u64;
    loop {
        let group = match v.need() {
            Need::Group(g) => g,
            Need::Nothing => break,
            Need::Parent => {
                let ok = parents.next().is_some_and(|p| v.parent(p).is_ok());
                if !ok {
                    assert!(!untouched, "the genuine pair was refused");
                    return;
                }
                continue;
            }
        };
        assert_eq!(group.offset, delivered, "groups come in order");
        let start = group.offset as usize;
        let bytes = &served[start..start + group.len];
        match v.check(bytes) {
            Ok(()) => {
                assert_eq!(bytes, &signed_bytes[start..start + group.len], "an unsigned group was accepted");
                delivered += group.len as u64;
            }
            Err(_) => {
                assert!(!untouched, "the genuine pair was refused");
                return;
            }
        }
    }
    assert_eq!(delivered, signed.size, "the end comes after exactly the signed bytes");
});
