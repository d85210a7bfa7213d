//! The timestamp role (issue 32, D126): an online key re-signs the head's
//! freshness (`npcnix timestamp`), hosts with `policy.freshness` required
//! accept a release only while a timestamp for exactly it is unexpired, and
//! a timestamp key can do nothing else.

use std::fs;
use std::time::Duration;

use npcnix::format::bundle::Bundle;
use npcnix::format::statement::{Digest, RemoteName};

use crate::common::host::Host;
use crate::common::*;

/// A host requiring freshness, with a timestamp key `ts` (returned: secret
/// and public key paths) scoped to `prod`.
fn fresh_host() -> (Host, String, String) {
    let h = Host::new();
    let (ts_key, ts_pub) = h.kit.keygen("ts");
    let pk = fs::read_to_string(&ts_pub)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("line")
        .to_owned();
    let mut cfg = h.config();
    cfg["trusted_keys"]
        .as_array_mut()
        .expect("keys")
        .push(serde_json::json!({"public_key": pk, "remotes": ["prod"], "role": "timestamp", "comment": "online"}));
    cfg["policy"]["freshness"] = serde_json::json!({"required": true});
    h.set_config(&cfg);
    (h, ts_key, ts_pub)
}

/// `publish` of a new release with its timestamp, trusting the host's own
/// config (release keys and timestamp keys as the hosts have them).
fn publish_fresh(h: &Host, marker: &str, ts_key: &str) -> Run {
    let src = h.kit.flake(&format!("src-{marker}"), marker);
    let cfg = h.kit.path("config.json");
    h.kit.publish(
        "prod",
        &h.key,
        &src,
        &[
            "--host-config",
            cfg.to_str().expect("utf8"),
            "--timestamp-key",
            ts_key,
        ],
    )
}

/// Replaces `latest`'s timestamp with one made here (any dates, any key).
fn plant_timestamp(h: &Host, key: &str, statement: Option<Digest>, created: u64, expires: u64) {
    let latest = h.kit.store_path("prod", "latest");
    let mut b = Bundle::decode(&fs::read(&latest).expect("latest")).expect("bundle");
    let st = npcnix::format::statement::Statement::parse(&b.statement).expect("statement");
    let sk = h.kit.secret_key(key);
    b.timestamp = Some(npcnix::publish::sign_timestamp(
        &RemoteName::new("prod").expect("name"),
        st.version,
        statement.unwrap_or_else(|| Digest::of(&b.statement)),
        created,
        expires,
        &[&sk],
    ));
    fs::write(&latest, b.encode()).expect("write");
}

fn check_of(r: &Run) -> String {
    r.stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["check"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn release_with_a_fresh_timestamp_activates_and_status_shows_its_expiry() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let (label, r) = h.once();
    assert_eq!(label, "activated", "{}\n{}", r.stdout, r.stderr);
    let s = h.status();
    let exp = s["freshness_expires"].as_u64().expect("freshness expiry");
    assert!(exp > now() + 80_000, "{s}");
    let metrics = fs::read_to_string(h.kit.path("metrics.prom")).expect("metrics");
    assert!(
        metrics.contains(&format!(
            "npcnix_freshness_expiry_timestamp_seconds{{remote=\"prod\"}} {exp}"
        )),
        "{metrics}"
    );
}

#[test]
fn freeze_with_an_expired_timestamp_is_refused_on_every_poll_and_recovers_without_a_release() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let t = now();
    plant_timestamp(&h, &ts_key, None, t, t + 3);
    assert_eq!(h.once().0, "activated");
    std::thread::sleep(Duration::from_secs(4));
    // The store keeps serving the head with its stale timestamp.
    for poll in 1..=2 {
        let (label, r) = h.once();
        assert_eq!(label, "rejected", "poll {poll}: {}", r.stdout);
        assert_eq!(check_of(&r), "timestamp-expired", "{}", r.stdout);
    }
    assert_eq!(h.status()["last_refusal"], "timestamp-expired");
    // The online key signs a fresh timestamp: no new release needed.
    let cfg = h.kit.path("config.json");
    let r = h
        .kit
        .run(&[
            "timestamp",
            "--remote",
            &h.kit.url("prod"),
            "--key",
            &ts_key,
            "--host-config",
            cfg.to_str().expect("utf8"),
            "--expires",
            "1d",
            "--json",
        ])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(j["version"], 1, "{j}");
    let (label, r) = h.once();
    assert!(
        matches!(label.as_str(), "unchanged" | "up-to-date"),
        "{label}: {}",
        r.stdout
    );
    assert_eq!(h.activations().len(), 1);
}

#[test]
fn timestamp_signed_by_a_release_key_where_the_timestamp_role_is_required_is_refused() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let t = now();
    plant_timestamp(&h, &h.key, None, t, t + 86_400);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stdout);
    assert_eq!(check_of(&r), "timestamp", "{}", r.stdout);
    assert!(h.activations().is_empty());
}

#[test]
fn timestamp_for_another_statement_is_refused() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let t = now();
    plant_timestamp(
        &h,
        &ts_key,
        Some(Digest::of(b"another release")),
        t,
        t + 86_400,
    );
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stdout);
    assert_eq!(check_of(&r), "timestamp", "{}", r.stdout);
    assert!(r.stdout.contains("not this release"), "{}", r.stdout);
}

#[test]
fn replayed_older_timestamp_is_refused() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let t = now();
    plant_timestamp(&h, &ts_key, None, t - 600, t + 86_400);
    let old = fs::read(h.kit.store_path("prod", "latest")).expect("latest");
    assert_eq!(h.once().0, "activated");
    plant_timestamp(&h, &ts_key, None, t - 60, t + 86_400);
    let (label, r) = h.once();
    assert!(label != "rejected", "{}", r.stdout);
    // The store serves the older (still unexpired) timestamp again.
    fs::write(h.kit.store_path("prod", "latest"), old).expect("replay");
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stdout);
    assert_eq!(check_of(&r), "timestamp-replay", "{}", r.stdout);
}

#[test]
fn timestamp_key_cannot_publish_a_release() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let cfg = h.kit.path("config.json");
    let r = h.kit.publish(
        "prod",
        &ts_key,
        &h.kit.flake("src-evil", "evil"),
        &[
            "--host-config",
            cfg.to_str().expect("utf8"),
            "--timestamp-key",
            &ts_key,
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("untrusted-key") || r.stderr.contains("rejected"),
        "{}",
        r.stderr
    );
    assert!(
        !h.kit
            .store_path("prod", "releases/00000000000000000002")
            .exists(),
        "a release by the timestamp key was stored"
    );
}

#[test]
fn publish_without_a_timestamp_where_hosts_require_one_is_refused_before_upload() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let cfg = h.kit.path("config.json");
    let r = h.kit.publish(
        "prod",
        &h.key,
        &h.kit.flake("src-v2", "v2"),
        &["--host-config", cfg.to_str().expect("utf8")],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("timestamp"), "{}", r.stderr);
    assert!(!h
        .kit
        .store_path("prod", "releases/00000000000000000002")
        .exists());
}

#[test]
fn expiry_shorter_than_the_minimum_is_a_usage_error() {
    let kit = Kit::new();
    let (key, _) = kit.keygen("release");
    let r = kit.publish("prod", &key, &kit.flake("v1", "v1"), &["--expires", "0s"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("shorter than an hour"), "{}", r.stderr);
    let r = kit.run(&[
        "timestamp",
        "--remote",
        &kit.url("prod"),
        "--key",
        &key,
        "--expires",
        "1min",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn agent_warns_before_the_freshness_expires() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    // Refreshed on schedule (a day's timestamp, just signed): no warning.
    let (label, r) = h.once();
    assert_eq!(label, "activated", "{}", r.stderr);
    assert!(!r.stderr.contains("expires at"), "{}", r.stderr);
    // The next release, two refreshes missed: 4 h of a day's timestamp
    // left (below half its lifetime and below the default day's warning).
    publish_fresh(&h, "v2", &ts_key).ok();
    let t = now();
    plant_timestamp(&h, &ts_key, None, t - 20 * 3600, t + 4 * 3600);
    let (_, r) = h.once();
    assert!(
        r.stderr
            .contains("its freshness timestamp of remote prod expires at"),
        "{}",
        r.stderr
    );
}

#[test]
fn timestamp_valid_for_a_month_is_refused() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let t = now();
    plant_timestamp(&h, &ts_key, None, t, t + 30 * 86_400);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stdout);
    assert_eq!(check_of(&r), "timestamp", "{}", r.stdout);
    assert!(
        r.stdout.contains("longer than this host accepts"),
        "{}",
        r.stdout
    );
}

#[test]
fn newer_release_timestamped_by_a_slower_clock_is_not_a_replay_and_log_stays_clean() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    // The refresher's clock ran 5 minutes ahead of the publisher's.
    let t = now();
    plant_timestamp(&h, &ts_key, None, t + 300, t + 86_400);
    assert_eq!(h.once().0, "activated");
    publish_fresh(&h, "v2", &ts_key).ok();
    let (label, r) = h.once();
    assert_eq!(label, "activated", "{}\n{}", r.stdout, r.stderr);
    // `npcnix log` reads `latest` with its timestamp as the newest release.
    let r = h.kit.run(&[
        "log",
        "--remote",
        &h.kit.url("prod"),
        "--trusted-key",
        &h.pubkey,
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn timestamp_refuses_a_head_the_release_keys_did_not_sign() {
    let (h, ts_key, _) = fresh_host();
    publish_fresh(&h, "v1", &ts_key).ok();
    let before = fs::read(h.kit.store_path("prod", "latest")).expect("latest");
    // The timestamp job trusts another release key than the one that
    // signed the head: a store-planted head must not get a timestamp.
    let (_, other_pub) = h.kit.keygen("other-release");
    let r = h.kit.run(&[
        "timestamp",
        "--remote",
        &h.kit.url("prod"),
        "--key",
        &ts_key,
        "--trusted-key",
        &other_pub,
        "--expires",
        "1d",
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("`latest` does not verify"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read(h.kit.store_path("prod", "latest")).expect("latest"),
        before,
        "latest was rewritten"
    );
}
