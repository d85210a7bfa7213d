//! The verifier, in-process and table-driven: each case names the attack,
//! mutates a valid release (or the host's view of history), and names the
//! check that must refuse it.

use crate::format::bundle::Bundle;
use crate::format::digest::Digest;
use crate::format::keys::SecretKey;
use crate::format::remote::RemoteName;
use crate::format::sign::sign_minisign;
use crate::format::statement::{ArchiveRef, Binding, Statement, STATEMENT_TYPE};

use super::*;

const NOW: u64 = 1_800_000_000;

struct World {
    k1: SecretKey,
    k2: SecretKey,
    k3: SecretKey,
    /// The statement hash of version 1, which the host has verified.
    v1: Digest,
}

fn world() -> World {
    let k1 = SecretKey::generate().expect("key");
    let k2 = SecretKey::generate().expect("key");
    let k3 = SecretKey::generate().expect("key");
    let v1 = Digest::of(&statement("prod", 1, None).to_bytes());
    World { k1, k2, k3, v1 }
}

fn statement(remote: &str, version: u64, previous: Option<Digest>) -> Statement {
    Statement {
        kind: STATEMENT_TYPE.to_owned(),
        remote: RemoteName::new(remote).expect("name"),
        version,
        previous,
        archive: ArchiveRef {
            blake3: Digest::of(b"archive"),
            size: 7,
        },
        created: NOW - 60,
        expires: Some(NOW + 3600),
        source: None,
        toplevels: None,
        decommission: None,
        rollout: None,
    }
}

/// Signs `bytes` with a trusted comment bound to `binding`.
fn sign(sk: &SecretKey, bytes: &[u8], binding: &Binding) -> String {
    sign_minisign(sk, bytes, &binding.to_trusted_comment())
}

fn binding(st: &Statement, bytes: &[u8], sk: &SecretKey) -> Binding {
    Binding {
        remote: st.remote.clone(),
        version: st.version,
        statement: Digest::of(bytes),
        key_id: sk.key_id,
    }
}

fn bundle(st: &Statement, keys: &[&SecretKey]) -> Vec<u8> {
    let bytes = st.to_bytes();
    let signatures = keys
        .iter()
        .map(|k| sign(k, &bytes, &binding(st, &bytes, k)))
        .collect();
    Bundle {
        timestamp: None,
        statement: bytes,
        signatures,
    }
    .encode()
}

fn policy(w: &World) -> Policy {
    let prod = KeyScope::Remotes(vec![RemoteName::new("prod").expect("name")]);
    let trusted = |k: &SecretKey, scope: KeyScope| TrustedKey {
        key: k.public_key(),
        scope,
        not_after: None,
    };
    Policy {
        remote: RemoteName::new("prod").expect("name"),
        keys: vec![
            trusted(&w.k1, prod.clone()),
            trusted(&w.k2, prod),
            trusted(
                &w.k3,
                KeyScope::Remotes(vec![RemoteName::new("dev").expect("name")]),
            ),
        ],
        threshold: 1,
        expiry: ExpiryPolicy::Required,
        max_future_skew_secs: DEFAULT_MAX_FUTURE_SKEW_SECS,
        min_version: 0,
        max_version_jump: Some(100),
        freshness: None,
    }
}

/// One case: what the host has seen, its policy, the bundle, the check.
struct Case {
    attack: &'static str,
    seen: Option<Seen>,
    policy: Policy,
    bundle: Vec<u8>,
    expect: Result<bool, Check>,
}

fn cases(w: &World) -> Vec<Case> {
    let seen_v1 = Some(Seen {
        version: 1,
        statement: w.v1,
    });
    let seen_v5 = Some(Seen {
        version: 5,
        statement: Digest([5; 32]),
    });
    let good = statement("prod", 2, Some(w.v1));
    let mut cases = vec![Case {
        attack: "none (the next release, linked to v1)",
        seen: seen_v1,
        policy: policy(w),
        bundle: bundle(&good, &[&w.k1]),
        expect: Ok(true),
    }];
    let mut push = |attack, seen, policy, bundle, check| {
        cases.push(Case {
            attack,
            seen,
            policy,
            bundle,
            expect: Err(check),
        })
    };
    push(
        "rollback-older-version",
        seen_v5,
        policy(w),
        bundle(&good, &[&w.k1]),
        Check::Rollback,
    );
    push(
        "equivocation-same-version-other-statement",
        Some(Seen {
            version: 2,
            statement: Digest([9; 32]),
        }),
        policy(w),
        bundle(&good, &[&w.k1]),
        Check::Equivocation,
    );
    push(
        "fork-successor-not-linked-to-what-the-host-holds",
        seen_v1,
        policy(w),
        bundle(&statement("prod", 2, Some(Digest([7; 32]))), &[&w.k1]),
        Check::Fork,
    );
    push(
        "fast-forward-past-max-version-jump",
        seen_v1,
        policy(w),
        bundle(&statement("prod", 1_000, Some(Digest([7; 32]))), &[&w.k1]),
        Check::FastForward,
    );
    push(
        "key-scope-dev-key-signs-prod",
        seen_v1,
        policy(w),
        bundle(&good, &[&w.k3]),
        Check::KeyScope,
    );
    push(
        "untrusted-key-signs",
        seen_v1,
        policy(w),
        bundle(&good, &[&SecretKey::generate().expect("key")]),
        Check::UntrustedKey,
    );
    let mut expired = good.clone();
    expired.expires = Some(NOW - 1);
    push(
        "freeze-expired-release",
        seen_v1,
        policy(w),
        bundle(&expired, &[&w.k1]),
        Check::Expired,
    );
    let mut no_expiry = good.clone();
    no_expiry.expires = None;
    push(
        "freeze-release-without-expiry",
        seen_v1,
        policy(w),
        bundle(&no_expiry, &[&w.k1]),
        Check::ExpiryRequired,
    );
    let mut future = good.clone();
    future.created = NOW + 10 * DEFAULT_MAX_FUTURE_SKEW_SECS;
    future.expires = Some(NOW + 100_000);
    push(
        "future-dated-release",
        seen_v1,
        policy(w),
        bundle(&future, &[&w.k1]),
        Check::FutureDated,
    );
    let mut two_of_three = policy(w);
    two_of_three.threshold = 2;
    push(
        "threshold-one-stolen-key-of-two-required",
        seen_v1,
        two_of_three.clone(),
        bundle(&good, &[&w.k1]),
        Check::Threshold,
    );
    push(
        "threshold-same-key-signing-twice-counts-once",
        seen_v1,
        two_of_three,
        bundle(&good, &[&w.k1, &w.k1]),
        Check::Threshold,
    );
    push(
        "remote-mismatch-release-for-another-remote",
        seen_v1,
        policy(w),
        bundle(&statement("dev", 2, Some(w.v1)), &[&w.k1]),
        Check::RemoteMismatch,
    );
    let mut floor = policy(w);
    floor.min_version = 3;
    push(
        "min-version-below-pinned-floor",
        None,
        floor,
        bundle(&good, &[&w.k1]),
        Check::MinVersion,
    );
    // Trusted-comment forgeries: the signature verifies, but the comment it
    // covers binds something else.
    let bytes = good.to_bytes();
    let forged = |edit: &dyn Fn(&mut Binding)| {
        let mut b = binding(&good, &bytes, &w.k1);
        edit(&mut b);
        Bundle {
            timestamp: None,
            statement: bytes.clone(),
            signatures: vec![sign(&w.k1, &bytes, &b)],
        }
        .encode()
    };
    push(
        "trusted-comment-binds-another-statement",
        seen_v1,
        policy(w),
        forged(&|b| b.statement = Digest([3; 32])),
        Check::TrustedComment,
    );
    push(
        "trusted-comment-binds-another-version",
        seen_v1,
        policy(w),
        forged(&|b| b.version = 3),
        Check::TrustedComment,
    );
    push(
        "trusted-comment-names-another-key",
        seen_v1,
        policy(w),
        forged(&|b| b.key_id = w.k2.key_id),
        Check::TrustedComment,
    );
    push(
        "trusted-comment-binds-another-remote",
        seen_v1,
        policy(w),
        forged(&|b| b.remote = RemoteName::new("dev").expect("name")),
        Check::RemoteMismatch,
    );
    // A valid signature over other bytes than the bundle carries.
    let mut swapped = Bundle::decode(&bundle(&good, &[&w.k1])).expect("bundle");
    swapped.statement = statement("prod", 2, Some(Digest([4; 32]))).to_bytes();
    push(
        "signature-over-other-bytes",
        seen_v1,
        policy(w),
        swapped.encode(),
        Check::Signature,
    );
    let mut capped_fresh = policy(w);
    capped_fresh.min_version = 1;
    push(
        "fast-forward-fresh-host-to-2^53-1",
        None,
        capped_fresh,
        bundle(
            &statement("prod", crate::format::statement::MAX_VERSION, Some(w.v1)),
            &[&w.k1],
        ),
        Check::FastForward,
    );
    push(
        "bundle-size-oversized",
        seen_v1,
        policy(w),
        vec![b' '; crate::format::bundle::BUNDLE_MAX_BYTES + 1],
        Check::BundleSize,
    );
    push(
        "bundle-format-garbage",
        seen_v1,
        policy(w),
        b"garbage".to_vec(),
        Check::BundleFormat,
    );
    cases
}

#[test]
fn every_attack_is_refused_by_the_named_check() {
    let w = world();
    for c in cases(&w) {
        let got = verify_release(&c.policy, c.seen, &c.bundle, NOW)
            .map(|v| v.is_new())
            .map_err(|r| r.check());
        assert_eq!(got, c.expect, "attack: {}", c.attack);
    }
}

#[test]
fn an_unchanged_head_is_judged_again_and_expires() {
    let w = world();
    let st = statement("prod", 1, None);
    let b = bundle(&st, &[&w.k1]);
    let seen = Some(Seen {
        version: 1,
        statement: Digest::of(&st.to_bytes()),
    });
    let p = policy(&w);
    assert!(matches!(
        verify_release(&p, seen, &b, NOW),
        Ok(Verdict::Current(_))
    ));
    let later = st.expires.expect("expires");
    let r = verify_release(&p, seen, &b, later).expect_err("expired");
    assert_eq!(r.check(), Check::Expired);
    assert_eq!(r.check().cause(), Cause::Time);
}

#[test]
fn chain_walk_refuses_a_release_that_skips_a_missing_or_unlinked_version() {
    let w = world();
    let p = policy(&w);
    let v1 = statement("prod", 1, None);
    let v2 = statement("prod", 2, Some(Digest::of(&v1.to_bytes())));
    let v3 = statement("prod", 3, Some(Digest::of(&v2.to_bytes())));
    let seen = Seen {
        version: 1,
        statement: Digest::of(&v1.to_bytes()),
    };
    let offered = verify_signatures(&p, &bundle(&v3, &[&w.k1]), NOW).expect("v3");
    // The honest chain.
    let mut walk = chain::Descent::start(seen, &offered)
        .expect("start")
        .expect("a walk");
    assert_eq!(walk.next_version(), Some(2));
    walk.step(&p, &bundle(&v2, &[&w.k1]), NOW)
        .expect("v2 links");
    assert_eq!(walk.next_version(), None);
    walk.finish(&offered).expect("v3 links");
    // A forked v2 that does not link to v1.
    let fork = statement("prod", 2, Some(Digest([8; 32])));
    let mut walk = chain::Descent::start(seen, &offered)
        .expect("start")
        .expect("a walk");
    let r = walk
        .step(&p, &bundle(&fork, &[&w.k1]), NOW)
        .expect_err("fork");
    assert_eq!(r.check(), Check::Chain);
    // A walk that stopped early never finishes.
    let walk = chain::Descent::start(seen, &offered)
        .expect("start")
        .expect("a walk");
    assert_eq!(walk.missing(2).check(), Check::Chain);
    assert_eq!(
        walk.finish(&offered).expect_err("early").check(),
        Check::Chain
    );
}
