//! The editor in-process, against a directory store: each write attack of
//! issue 29 by name, and the checks that stop it before the store changes.

use super::*;
use crate::format::keys::SecretKey;
use crate::format::remote::RemoteName;
use crate::fsutil::TempDir;
use crate::store::file::FileStore;
use crate::verify::{KeyScope, TrustedKey};

const NOW: u64 = 1_800_000_000;

struct World {
    tmp: TempDir,
    store: Remote,
    alice: SecretKey,
    bob: SecretKey,
    n: std::cell::Cell<u32>,
}

fn world() -> World {
    let tmp = TempDir::new_in(&std::env::temp_dir(), "npcnix-editor-test-").expect("tmp");
    let dir = tmp.path().join("store");
    std::fs::create_dir(&dir).expect("mkdir");
    World {
        store: Remote::new(Box::new(FileStore::new(
            dir.clone(),
            format!("file://{}", dir.display()),
        ))),
        tmp,
        alice: SecretKey::generate().expect("key"),
        bob: SecretKey::generate().expect("key"),
        n: std::cell::Cell::new(0),
    }
}

fn prod() -> RemoteName {
    RemoteName::new("prod").expect("name")
}

impl World {
    /// The remote's policy: `keys`, at `threshold`.
    fn trust(&self, keys: &[&SecretKey], threshold: usize, origin: TrustOrigin) -> RemoteTrust {
        let mut policy = Policy::manual(prod(), Vec::new());
        policy.keys = keys
            .iter()
            .map(|k| TrustedKey {
                key: k.public_key(),
                scope: KeyScope::Remotes(vec![prod()]),
                not_after: None,
            })
            .collect();
        policy.threshold = threshold;
        RemoteTrust { policy, origin }
    }

    fn editor(&self, trust: RemoteTrust) -> Editor<'_> {
        Editor::new(&self.store, trust, NOW, Retry::none())
    }

    /// A small archive file with unique bytes.
    fn archive(&self) -> (PathBuf, ArchiveRef) {
        self.n.set(self.n.get() + 1);
        let p = self.tmp.path().join(format!("a{}.tar.zst", self.n.get()));
        std::fs::write(&p, format!("archive {}", self.n.get())).expect("write");
        let aref = super::super::hash_file(&p).expect("hash");
        (p, aref)
    }

    fn params(&self, version: Option<u64>, expires: Option<u64>) -> StatementParams {
        StatementParams {
            remote: prod(),
            version,
            created: NOW - 10,
            expires,
            source: None,
        }
    }

    /// Publishes the next release signed by `signers`.
    fn publish(&self, e: &Editor<'_>, signers: &[&SecretKey]) -> Result<u64, PublishError> {
        let (path, aref) = self.archive();
        let draft = e.draft(aref, self.params(None, None))?;
        let sigs = signers.iter().map(|k| draft.sign(k)).collect();
        e.publish(&draft, &path, sigs).map(|p| p.release.version())
    }

    fn head_version(&self) -> Option<u64> {
        let e = self.editor(self.trust(&[&self.alice, &self.bob], 1, TrustOrigin::Flags));
        e.head().expect("head").map(|h| h.statement.version)
    }
}

fn refused(r: Result<u64, PublishError>) -> verify::Check {
    match r {
        Err(PublishError::WouldBeRefused { refusal, .. }) => refusal.check(),
        other => panic!("expected a refusal before upload, got {other:?}"),
    }
}

/// Issue 29: a one-key publish on a 2-of-2 remote uploaded a head with one
/// signature; hosts refused it and honest publishers refused to extend it.
/// Now nothing is uploaded.
#[test]
fn one_key_publish_on_a_two_of_two_remote_wedges_nothing() {
    let w = world();
    let both = w.editor(w.trust(&[&w.alice, &w.bob], 2, TrustOrigin::Flags));
    assert_eq!(w.publish(&both, &[&w.alice, &w.bob]).expect("v1"), 1);
    assert_eq!(
        refused(w.publish(&both, &[&w.alice])),
        verify::Check::Threshold
    );
    assert_eq!(w.head_version(), Some(1), "the head did not move");
    assert!(
        w.store.log().release_keys(10).expect("list").len() == 1,
        "no releases/2 was created"
    );
    // Both signatures: accepted and extended.
    assert_eq!(w.publish(&both, &[&w.alice, &w.bob]).expect("v2"), 2);
}

/// With no threshold given, a publisher requires at least as many
/// signatures as the current head carries: a k-of-n remote is never
/// published at threshold 1 because `--threshold` was forgotten.
#[test]
fn publisher_given_no_threshold_never_treats_a_k_of_n_remote_as_1_of_n() {
    let w = world();
    let both = w.editor(w.trust(&[&w.alice, &w.bob], 2, TrustOrigin::Flags));
    w.publish(&both, &[&w.alice, &w.bob]).expect("v1");
    let careless = w.editor(w.trust(&[&w.alice, &w.bob], 1, TrustOrigin::FlagsWithoutThreshold));
    let head = careless.head().expect("head").expect("some");
    assert_eq!(head.signatures, 2);
    assert_eq!(careless.required_signatures(Some(&head)), 2);
    match w.publish(&careless, &[&w.alice]) {
        Err(e @ PublishError::WouldBeRefused { .. }) => {
            let text = e.to_string();
            assert!(text.contains("release prepare"), "{text}");
            assert!(text.contains("threshold the current head"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Saying so explicitly publishes a 1-of-n release.
    let explicit = w.editor(w.trust(&[&w.alice, &w.bob], 1, TrustOrigin::Flags));
    assert_eq!(w.publish(&explicit, &[&w.alice]).expect("v2"), 2);
}

/// Issue 29: `publish --version <head + 1500>` was accepted, and the next
/// publish then refused to extend it. The gap is capped on write.
#[test]
fn version_far_past_the_head_is_refused_before_signing() {
    let w = world();
    let e = w.editor(w.trust(&[&w.alice], 1, TrustOrigin::Flags));
    w.publish(&e, &[&w.alice]).expect("v1");
    let (_, aref) = w.archive();
    match e.draft(aref.clone(), w.params(Some(1 + 1500), None)) {
        Err(PublishError::VersionGap { max, .. }) => assert_eq!(max, MAX_HEAD_GAP),
        other => panic!("expected a version gap, got {other:?}"),
    }
    // The policy's own cap is lower: it applies.
    let mut t = w.trust(&[&w.alice], 1, TrustOrigin::Flags);
    t.policy.max_version_jump = Some(5);
    let capped = w.editor(t);
    assert!(matches!(
        capped.draft(aref.clone(), w.params(Some(7), None)),
        Err(PublishError::VersionGap { max: 5, .. })
    ));
    capped
        .draft(aref, w.params(Some(6), None))
        .expect("a jump of 5");
}

/// `publish --expires 0s` published a release that was expired on arrival.
#[test]
fn release_expired_on_arrival_is_refused_before_upload() {
    let w = world();
    let e = w.editor(w.trust(&[&w.alice], 1, TrustOrigin::Flags));
    let (path, aref) = w.archive();
    let draft = e.draft(aref, w.params(None, Some(NOW))).expect("draft");
    let sig = draft.sign(&w.alice);
    assert_eq!(
        refused(
            e.publish(&draft, &path, vec![sig])
                .map(|p| p.release.version())
        ),
        verify::Check::Expired
    );
    assert_eq!(w.head_version(), None);
}

/// A key the remote does not trust signs: hosts would refuse it.
#[test]
fn release_signed_by_a_key_the_remote_does_not_trust_is_refused_before_upload() {
    let w = world();
    let e = w.editor(w.trust(&[&w.alice], 1, TrustOrigin::Flags));
    assert_eq!(
        refused(w.publish(&e, &[&w.bob])),
        verify::Check::UntrustedKey
    );
}

/// Revert: the target is found through the signed chain, and a revert
/// across a key rotation names the keys it brings back and needs consent.
#[test]
fn revert_across_a_key_rotation_names_the_keys_it_brings_back() {
    let w = world();
    let old = w.editor(w.trust(&[&w.alice], 1, TrustOrigin::Flags));
    w.publish(&old, &[&w.alice]).expect("v1");
    // Rotation: v2 is signed by alice (still trusted), then bob only.
    let rotating = w.editor(w.trust(&[&w.alice, &w.bob], 1, TrustOrigin::Flags));
    w.publish(&rotating, &[&w.alice]).expect("v2");
    let new = w.editor(w.trust(&[&w.bob], 1, TrustOrigin::Flags));
    // The head (v2) is signed by alice, whom the new policy dropped: the
    // publisher passes her key to read it, as keys/README.md says.
    let with_alice = w.editor(w.trust(&[&w.bob, &w.alice], 1, TrustOrigin::Flags));
    w.publish(&with_alice, &[&w.bob]).expect("v3");
    let head = new.head().expect("head").expect("some");
    assert_eq!(head.statement.version, 3);
    let new = new.with_retired(vec![w.alice.public_key()]);
    let e = new
        .revert_source(&head, 1, false)
        .expect_err("brings alice back");
    match &e {
        PublishError::TrustChange { to: 1, keys } => {
            assert_eq!(keys, &vec![w.alice.key_id]);
        }
        other => panic!("expected a trust change, got {other:?}"),
    }
    assert!(e.to_string().contains("--allow-trust-change"), "{e}");
    let src = new.revert_source(&head, 1, true).expect("consented");
    assert_eq!(src.brings_back, vec![w.alice.key_id]);
    assert_eq!(src.release.version(), 1);
    // Without the retired key nobody known here signed version 1.
    let bob_only = w.editor(w.trust(&[&w.bob], 1, TrustOrigin::Flags));
    assert!(matches!(
        bob_only.revert_source(&head, 1, true),
        Err(PublishError::Revert(_))
    ));
}

/// A store that plants another release as version N (a fork) cannot pass
/// it off as the one the head's history names.
#[test]
fn revert_to_a_release_planted_in_the_store_is_refused() {
    let w = world();
    let e = w.editor(w.trust(&[&w.alice], 1, TrustOrigin::Flags));
    w.publish(&e, &[&w.alice]).expect("v1");
    w.publish(&e, &[&w.alice]).expect("v2");
    w.publish(&e, &[&w.alice]).expect("v3");
    let head = e.head().expect("head").expect("some");
    // A validly signed v1 that is not the one v2 links to.
    let (_, aref) = w.archive();
    let planted =
        crate::publish::next_statement(None, aref, w.params(Some(1), None)).expect("statement");
    let bytes = planted.to_bytes();
    let bundle = crate::format::bundle::Bundle {
        timestamp: None,
        signatures: vec![crate::publish::sign_statement(&planted, &bytes, &w.alice)],
        statement: bytes,
    }
    .encode();
    let key = w
        .tmp
        .path()
        .join("store")
        .join(crate::store::release_key(1));
    std::fs::write(&key, bundle).expect("plant");
    match e.revert_source(&head, 1, false) {
        Err(PublishError::Revert(m)) => assert!(m.contains("broken at releases/1"), "{m}"),
        other => panic!("expected a broken chain, got {other:?}"),
    }
    let src = e.revert_source(&head, 2, false).expect("v2 is fine");
    let draft = e.revert_draft(&src, NOW, None, None).expect("draft");
    assert_eq!(draft.statement.version, 4);
    assert_eq!(draft.statement.archive, src.release.statement().archive);
    assert!(draft.statement.rollout.is_none());
}

/// Review finding: `release publish` never called `draft`, so a prepared
/// statement edited to head+1500 on the stick was uploaded: hosts accepted
/// it and every later publisher refused to extend it. The jump is checked
/// on write too.
#[test]
fn prepared_statement_far_past_the_head_is_refused_on_write() {
    let w = world();
    let e = w.editor(w.trust(&[&w.alice], 1, TrustOrigin::Flags));
    w.publish(&e, &[&w.alice]).expect("v1");
    let head = e.head().expect("head");
    let (path, aref) = w.archive();
    let st = crate::publish::next_statement(head.as_ref(), aref, w.params(Some(1501), None))
        .expect("statement");
    let draft = Draft {
        head,
        statement: st,
    };
    let sig = draft.sign(&w.alice);
    assert_eq!(
        refused(
            e.publish_signed(&draft, draft.statement_bytes(), &path, vec![sig])
                .map(|p| p.release.version())
        ),
        verify::Check::FastForward
    );
    assert_eq!(w.head_version(), Some(1));
}

/// Review finding: the revert walked `v -= 1` and failed at a legal gap
/// (`--version` may skip versions); it follows the `previous` links now.
#[test]
fn revert_across_a_version_gap_follows_the_previous_links() {
    let w = world();
    let e = w.editor(w.trust(&[&w.alice], 1, TrustOrigin::Flags));
    w.publish(&e, &[&w.alice]).expect("v1");
    let (path, aref) = w.archive();
    let draft = e.draft(aref, w.params(Some(5), None)).expect("v5");
    e.publish(&draft, &path, vec![draft.sign(&w.alice)])
        .expect("publish v5");
    w.publish(&e, &[&w.alice]).expect("v6");
    let head = e.head().expect("head").expect("some");
    let src = e
        .revert_source(&head, 1, false)
        .expect("v1 through the gap");
    assert_eq!(src.release.version(), 1);
    assert!(matches!(
        e.revert_source(&head, 3, false),
        Err(PublishError::Revert(_))
    ));
}

/// Review finding: a key removed from the policy (a compromised CI key)
/// that signed only the releases between the target and the head went
/// unnoticed, although the target's configuration trusts it again. Every
/// key in the history from the target to the head counts.
#[test]
fn revert_past_a_removed_key_that_signed_the_history_between_needs_consent() {
    let w = world();
    let both = w.editor(w.trust(&[&w.alice, &w.bob], 1, TrustOrigin::Flags));
    w.publish(&both, &[&w.bob]).expect("v1 by the offline key");
    w.publish(&both, &[&w.alice]).expect("v2 by the CI key");
    // The CI key (alice) is removed; bob signs from now on.
    let bob_only = w
        .editor(w.trust(&[&w.bob], 1, TrustOrigin::Flags))
        .with_retired(vec![w.alice.public_key()]);
    w.publish(&bob_only, &[&w.bob]).expect("v3");
    let head = bob_only.head().expect("head").expect("some");
    match bob_only.revert_source(&head, 1, false) {
        Err(PublishError::TrustChange { to: 1, keys }) => assert_eq!(keys, vec![w.alice.key_id]),
        other => panic!("expected a trust change, got {other:?}"),
    }
}

/// A remote whose trust names `ts` as its timestamp key.
fn with_timestamp_key(mut t: RemoteTrust, ts: &SecretKey) -> RemoteTrust {
    t.policy.freshness = Some(verify::Freshness {
        keys: vec![TrustedKey {
            key: ts.public_key(),
            scope: KeyScope::Remotes(vec![prod()]),
            not_after: None,
        }],
        threshold: 1,
        floor: None,
        max_lifetime_secs: verify::DEFAULT_MAX_TIMESTAMP_LIFETIME_SECS,
    });
    t
}

/// Issue 32 review: a scheduled timestamp refresh rewrote `latest` while a
/// publish was between its draft and its upload; the publish then failed
/// after writing `releases/<v>`, and every retry called the version taken.
/// Now the publish sees that only the timestamp moved and swaps again.
#[test]
fn timestamp_refresh_during_a_publish_does_not_wedge_the_version() {
    let w = world();
    let ts = SecretKey::generate().expect("key");
    let trust = || with_timestamp_key(w.trust(&[&w.alice], 1, TrustOrigin::Flags), &ts);
    let e = w.editor(trust()).with_timestamp(vec![&ts], 86_400);
    assert_eq!(w.publish(&e, &[&w.alice]).expect("v1"), 1);
    let (path, aref) = w.archive();
    let draft = e.draft(aref, w.params(None, None)).expect("draft");
    // The refresher runs an hour later, in the middle of the publish.
    let later =
        Editor::new(&w.store, trust(), NOW + 3600, Retry::none()).with_timestamp(vec![&ts], 86_400);
    assert_eq!(later.refresh_timestamp(None).expect("refresh").version, 1);
    let sigs = vec![draft.sign(&w.alice)];
    let published = e
        .publish(&draft, &path, sigs)
        .expect("publish after a refresh");
    assert_eq!(published.release.version(), 2);
    assert_eq!(w.head_version(), Some(2));
}

/// A store attacker copies an older release over `latest`: the refresher
/// must not give it a fresh timestamp (new or lagging hosts would take it).
#[test]
fn rolled_back_head_gets_no_timestamp() {
    let w = world();
    let ts = SecretKey::generate().expect("key");
    let e = w
        .editor(with_timestamp_key(
            w.trust(&[&w.alice], 1, TrustOrigin::Flags),
            &ts,
        ))
        .with_timestamp(vec![&ts], 86_400);
    assert_eq!(w.publish(&e, &[&w.alice]).expect("v1"), 1);
    assert_eq!(w.publish(&e, &[&w.alice]).expect("v2"), 2);
    let v2 = e.refresh_timestamp(None).expect("refresh v2");
    let dir = w.tmp.path().join("store");
    let v1 = std::fs::read(dir.join("releases/00000000000000000001")).expect("v1");
    std::fs::write(dir.join("latest"), &v1).expect("roll back");
    let err = e.refresh_timestamp(None).expect_err("rolled back");
    assert!(err.to_string().contains("rolled back"), "{err}");
    // With releases/2 deleted too, the refresher's own record still knows.
    std::fs::remove_file(dir.join("releases/00000000000000000002")).expect("rm");
    let err = e
        .refresh_timestamp(Some((v2.version, v2.statement)))
        .expect_err("below the refresher's record");
    assert!(
        err.to_string().contains("last timestamped version 2"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("latest")).expect("latest"), v1);
}
