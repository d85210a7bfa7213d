//! The inspection and the confirmation rule, in-process: each case names
//! the system a release would build and the verdict.

use super::*;

fn config(key: &str, remote: &str, url: &str, threshold: usize) -> Vec<u8> {
    format!(
        r#"{{"format":"npcnix-host-config/v1","remote":{{"url":"{url}","name":"{remote}","threshold":{threshold}}},
           "configuration":"web","trusted_keys":[{{"public_key":"{key}","remotes":["{remote}"]}}]}}"#
    )
    .into_bytes()
}

use crate::format::keys::SecretKey;
use crate::format::statement::Statement;

/// The release key every test's current config trusts (and signs with).
fn release_key() -> &'static SecretKey {
    static KEY: std::sync::OnceLock<SecretKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate().expect("key"))
}

fn setup() -> (Validated, String) {
    let key = release_key().public_key().to_base64();
    let current = HostConfig::parse(&config(&key, "prod", "file:///srv/prod", 1))
        .expect("parse")
        .validate()
        .expect("valid");
    (current, key)
}

fn view(config: Option<Vec<u8>>) -> SystemView {
    SystemView {
        path: "/nix/store/x-nixos-system".into(),
        config,
        unit: true,
        enabled: true,
    }
}

/// The statement of the release being inspected: version 2, a
/// 1234-byte archive, no system paths, no expiry.
fn statement() -> Statement {
    Statement {
        kind: crate::format::statement::STATEMENT_TYPE.into(),
        remote: crate::format::remote::RemoteName::new("prod").expect("name"),
        version: 2,
        previous: Some(crate::format::statement::Digest([1; 32])),
        archive: crate::format::statement::ArchiveRef {
            blake3: crate::format::statement::Digest([9; 32]),
            size: 1234,
        },
        created: 0,
        expires: None,
        source: None,
        toplevels: None,
        decommission: None,
        rollout: None,
    }
}

/// `st` signed by `key` and verified by the current config.
fn signed(st: &Statement, key: &SecretKey) -> VerifiedRelease {
    let bytes = st.to_bytes();
    let sig = crate::publish::sign_statement(st, &bytes, key);
    let bundle = crate::format::bundle::Bundle {
        timestamp: None,
        statement: bytes,
        signatures: vec![sig],
    }
    .encode();
    let policy = crate::verify::Policy::manual(st.remote.clone(), vec![key.public_key()]);
    crate::verify::verify_signatures(&policy, &bundle, 0).expect("verifies")
}

fn rel() -> VerifiedRelease {
    signed(&statement(), release_key())
}

/// The inspection, with no rollback floor.
fn judge(
    cur: &Validated,
    next: &SystemView,
    release: &VerifiedRelease,
    now: u64,
) -> Result<(), Refusal> {
    super::judge(cur, next, release, 0, now).map(drop)
}

fn check(r: Result<(), Refusal>, needle: &str) {
    let e = r.expect_err(needle);
    assert_eq!(e.check().name(), "would-lock-out");
    assert!(e.to_string().contains(needle), "{e}");
}

#[test]
fn the_same_remote_and_keys_pass() {
    let (cur, key) = setup();
    judge(
        &cur,
        &view(Some(config(&key, "prod", "file:///srv/prod", 1))),
        &rel(),
        0,
    )
    .expect("same config");
}

#[test]
fn a_system_without_the_agent_or_not_starting_it_is_refused() {
    let (cur, key) = setup();
    let mut v = view(Some(config(&key, "prod", "file:///srv/prod", 1)));
    v.enabled = false;
    check(judge(&cur, &v, &rel(), 0), "at boot");
    v.unit = false;
    check(judge(&cur, &v, &rel(), 0), "no npcnix agent");
    check(judge(&cur, &view(None), &rel(), 0), "no host config");
}

#[test]
fn another_remote_url_or_too_few_keys_is_refused() {
    let (cur, key) = setup();
    let other = crate::format::keys::SecretKey::generate()
        .expect("key")
        .public_key()
        .to_base64();
    check(
        judge(
            &cur,
            &view(Some(config(&key, "dev", "file:///srv/dev", 1))),
            &rel(),
            0,
        ),
        "follows remote \"dev\"",
    );
    check(
        judge(
            &cur,
            &view(Some(config(&key, "prod", "file:///elsewhere/prod", 1))),
            &rel(),
            0,
        ),
        "fetches from",
    );
    check(
        judge(&cur, &view(Some(b"{not json".to_vec())), &rel(), 0),
        "would refuse",
    );
    // A key rotation is fine: the new key is scoped to the remote.
    judge(
        &cur,
        &view(Some(config(&other, "prod", "file:///srv/prod", 1))),
        &rel(),
        0,
    )
    .expect("rotated key");
    let expired = String::from_utf8(config(&key, "prod", "file:///srv/prod", 1))
        .expect("utf8")
        .replace(
            r#""remotes":["prod"]"#,
            r#""remotes":["prod"],"not_after":100"#,
        );
    check(
        judge(&cur, &view(Some(expired.into_bytes())), &rel(), 200),
        "trusts 0 unexpired key(s)",
    );
}

/// The new agent would poll and confirm, then refuse every later
/// release: a host stranded as surely as one without an agent.
#[test]
fn config_that_polls_but_refuses_every_later_release_is_refused() {
    let (cur, key) = setup();
    let with = |extra: &str| {
        let base = String::from_utf8(config(&key, "prod", "file:///srv/prod", 1)).expect("utf8");
        let cut = base.rfind('}').expect("object");
        view(Some(format!("{},{extra}}}", &base[..cut]).into_bytes()))
    };
    check(
        judge(&cur, &with(r#""policy":{"max_version_jump":0}"#), &rel(), 0),
        "max_version_jump = 0",
    );
    judge(&cur, &with(r#""policy":{"max_version_jump":1}"#), &rel(), 0).expect("jump 1");
    check(
        judge(&cur, &with(r#""limits":{"archive_bytes":1000}"#), &rel(), 0),
        "below this release's own archive (1234 bytes)",
    );
    judge(&cur, &with(r#""limits":{"archive_bytes":1234}"#), &rel(), 0).expect("fits");
    let toplevel = with(r#""activation":{"mode":"toplevel","toplevel_fallback":"refuse"}"#);
    check(judge(&cur, &toplevel, &rel(), 0), "signs none for \"web\"");
    let mut with_path = statement();
    with_path.toplevels = Some(
        [(
            "web".to_owned(),
            "/nix/store/00000000000000000000000000000000-nixos-system-web".to_owned(),
        )]
        .into_iter()
        .collect(),
    );
    judge(&cur, &toplevel, &signed(&with_path, release_key()), 0)
        .expect("a signed system path for web");
}

#[test]
fn only_an_agent_running_the_new_system_and_its_config_may_confirm() {
    let (cur, key) = setup();
    let next = view(Some(config(&key, "prod", "file:///srv/prod", 1)));
    may_confirm(&cur.config, None, &next).expect("same config, running unknown");
    may_confirm(&cur.config, Some(&next.path), &next).expect("running it");
    let old = std::path::Path::new("/nix/store/y-nixos-system");
    let e = may_confirm(&cur.config, Some(old), &next).expect_err("old system");
    assert!(
        e.to_string()
            .contains("the running system is /nix/store/y-nixos-system"),
        "{e}"
    );
    let rotated = view(Some(config(&key, "prod", "file:///srv/prod", 2)));
    let e = may_confirm(&cur.config, None, &rotated).expect_err("old config");
    assert!(e.to_string().contains("another host config"), "{e}");
    assert!(may_confirm(&cur.config, None, &view(None)).is_err());
}

/// `base` with `extra` (`"key":value` pairs) added to its top level.
fn extended(base: Vec<u8>, extra: &str) -> SystemView {
    let base = String::from_utf8(base).expect("utf8");
    let cut = base.rfind('}').expect("object");
    view(Some(format!("{},{extra}}}", &base[..cut]).into_bytes()))
}

/// Defect found in review (issue 28, 1): a signed release whose own host
/// config refuses every later release passed the inspection, and the
/// new agent then refused its own head. The inspection now judges the
/// release under the new system's whole policy.
#[test]
fn release_whose_own_policy_refuses_it_would_lock_out() {
    let (cur, key) = setup();
    let base = || config(&key, "prod", "file:///srv/prod", 1);
    check(
        judge(
            &cur,
            &extended(base(), r#""policy":{"min_version":1000}"#),
            &rel(),
            0,
        ),
        "would refuse this very release (min-version",
    );
    check(
        judge(
            &cur,
            &extended(base(), r#""policy":{"expiry":"required"}"#),
            &rel(),
            0,
        ),
        "would refuse this very release (expiry-required",
    );
    judge(
        &cur,
        &extended(base(), r#""policy":{"min_version":2}"#),
        &rel(),
        0,
    )
    .expect("a floor at this release's own version is fine");
    // The host's rollback floor counts as the new policy's too.
    let e = super::judge(&cur, &view(Some(base())), &rel(), 5, 0).expect_err("floor 5");
    assert!(e.to_string().contains("min-version"), "{e}");
}

/// A key rotation (the new system trusts only a new key; the release is
/// signed by the current one) passes, and the inspection keeps the keys
/// the new agent needs to accept exactly this release; everything else
/// the new policy says still applies.
#[test]
fn key_rotation_passes_with_the_previous_keys_kept_for_confirmation() {
    let (cur, key) = setup();
    let new_key = SecretKey::generate().expect("key").public_key().to_base64();
    let rotated = || config(&new_key, "prod", "file:///srv/prod", 1);
    let verdict = super::judge(&cur, &view(Some(rotated())), &rel(), 0, 0).expect("rotation");
    assert_eq!(
        verdict.rotation_keys,
        vec![RotationKey {
            public_key: key.clone(),
            not_after: None
        }]
    );
    // Same keys: no rotation to remember.
    let same = super::judge(
        &cur,
        &view(Some(config(&key, "prod", "file:///srv/prod", 1))),
        &rel(),
        0,
        0,
    )
    .expect("same keys");
    assert!(same.rotation_keys.is_empty());
    check(
        judge(
            &cur,
            &extended(rotated(), r#""policy":{"min_version":1000}"#),
            &rel(),
            0,
        ),
        "would refuse this very release (min-version",
    );
}
