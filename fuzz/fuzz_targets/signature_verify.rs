//! signature_verify: verification implies authenticity and integrity
//! (protocol.md sections 3 and 6, step 2-3).
//!
//! A signing key is generated once per process; the policy trusts only it.
//! The first input byte picks the mode.
//!
//! Mode 0 (even): the rest of the input is a bundle. Nobody outside this
//! process holds the key, so `verify_signatures` must refuse it, whatever
//! the bytes (even if the fuzzer learns the key ID from comparisons).
//!
//! Mode 1 (odd): a valid statement is built from the input and signed, and
//! the genuine bundle must verify (positive control: the signer and the
//! verifier agree). The encoded bundle is then edited as the rest of the
//! input directs. If the edited bundle still verifies, it must carry exactly
//! the statement bytes that were signed: an edit may only touch what no
//! signature covers (the untrusted comment, JSON whitespace and escapes).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use npcnix::format::bundle::Bundle;
use npcnix::format::keys::SecretKey;
use npcnix::publish::sign_statement;
use npcnix::format::statement::{
    ArchiveRef, Digest, RemoteName, Statement, MAX_TIME, MAX_VERSION, STATEMENT_TYPE,
};
use npcnix::verify::{verify_signatures, Policy};

/// Verification time; `verify_signatures` only uses it for key expiry.
const NOW: u64 = 1_800_000_000;
/// Edits applied to the genuine bundle in mode 1.
const MAX_EDITS: usize = 16;

struct Fixture {
    sk: SecretKey,
    policy: Policy,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let sk = SecretKey::generate().expect("key generation");
        let remote = RemoteName::new("prod").expect("remote name");
        let policy = Policy::manual(remote, vec![sk.public_key()]);
        Fixture { sk, policy }
    })
}

/// Reads fixed-size fields from the input, padding with zeros at the end.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let rest: &'a [u8] = self.0;
        let n = N.min(rest.len());
        let mut out = [0u8; N];
        out[..n].copy_from_slice(&rest[..n]);
        self.0 = &rest[n..];
        out
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
}

/// A statement for remote `prod` that passes `Statement::parse`'s checks.
fn statement_from(inp: &mut Input<'_>) -> Statement {
    let version = 1 + inp.u64() % MAX_VERSION;
    let previous = if version > 1 {
        Some(Digest(inp.bytes()))
    } else {
        None
    };
    let archive = ArchiveRef {
        blake3: Digest(inp.bytes()),
        size: inp.u64(),
    };
    let created = inp.u64() % (MAX_TIME + 1);
    let e = inp.u64();
    let expires = if e & 1 == 1 && created < MAX_TIME {
        Some(created + 1 + (e >> 1) % (MAX_TIME - created))
    } else {
        None
    };
    Statement {
        kind: STATEMENT_TYPE.to_owned(),
        remote: RemoteName::new("prod").expect("remote name"),
        version,
        previous,
        archive,
        created,
        expires,
        source: None,
        toplevels: None,
        decommission: None,
        rollout: None,
    }
}

fn forged(f: &Fixture, bundle: &[u8]) {
    if let Ok(r) = verify_signatures(&f.policy, bundle, NOW) {
        panic!("verified without the secret key: {r:?}");
    }
}

fn tampered(f: &Fixture, data: &[u8]) {
    let mut inp = Input(data);
    let st = statement_from(&mut inp);
    let st_bytes = st.to_bytes();
    assert_eq!(Statement::parse(&st_bytes), Ok(st.clone()));

    let sig = sign_statement(&st, &st_bytes, &f.sk);
    let genuine = Bundle {
        timestamp: None,
        statement: st_bytes.clone(),
        signatures: vec![sig],
    }
    .encode();
    let ok = verify_signatures(&f.policy, &genuine, NOW).expect("a genuine bundle must verify");
    assert_eq!(ok.statement(), &st);
    assert_eq!(ok.signers(), [f.sk.key_id]);

    let mut edited = genuine.clone();
    for op in inp.0.chunks_exact(4).take(MAX_EDITS) {
        let pos = usize::from(u16::from_le_bytes([op[1], op[2]]));
        let value = op[3];
        match op[0] % 4 {
            0 if !edited.is_empty() => {
                let i = pos % edited.len();
                edited[i] ^= value;
            }
            1 if !edited.is_empty() => {
                let i = pos % edited.len();
                edited[i] = value;
            }
            2 => {
                let i = pos % (edited.len() + 1);
                edited.insert(i, value);
            }
            3 if !edited.is_empty() => {
                let i = pos % edited.len();
                edited.remove(i);
            }
            _ => {}
        }
    }

    match verify_signatures(&f.policy, &edited, NOW) {
        Ok(r) => {
            assert_eq!(r.statement_bytes(), st_bytes, "an edit changed signed bytes");
            assert_eq!(r.statement_hash(), Digest::of(&st_bytes));
            assert_eq!(r.statement(), &st);
        }
        Err(e) => assert_ne!(
            edited, genuine,
            "the genuine bundle verified a moment ago: {e}"
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    if mode & 1 == 0 {
        forged(f, rest);
    } else {
        tampered(f, rest);
    }
});
