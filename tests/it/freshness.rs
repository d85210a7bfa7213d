//! Freshness and liveness on every poll: a "not modified" answer never hides
//! a refusal, a refusal is never remembered, refusals do not back off, and a
//! "not modified" answer to an unconditional request is an error in every
//! store. Each test is named after the attack (or failure) it models.

use std::fs;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::host::Host;
use crate::common::httpd::Httpd;
use crate::common::s3::{Moto, Proxy, NOT_MODIFIED, PASS};
use crate::common::*;

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn freeze_attack_expired_head_served_not_modified_is_refused_on_every_poll() {
    let h = Host::with(|c| c["policy"]["expiry"] = "required".into());
    let src = h.kit.flake("src-v1", "v1");
    let published = now();
    // A release that expires in 3 s: signed directly (the publisher
    // refuses lifetimes under an hour).
    let aref = h.kit.put_archive("prod", &h.kit.pack(&src, "v1.tar.zst"));
    let mut st = statement("prod", 1, None, aref, published);
    st.expires = Some(published + 3);
    h.kit
        .put_raw("prod", 1, &signed_bundle(&st, &h.kit.secret_key(&h.key)));
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.once().0, "unchanged", "a conditional poll, answered 304");
    // The store keeps serving the same (now expired) head: every poll is a
    // conditional request answered "not modified".
    wait_for("the release to expire", Duration::from_secs(10), || {
        now() > published + 3
    });
    for polls in 1..=3u64 {
        let (label, r) = h.once();
        assert_eq!(label, "rejected", "poll {polls}: {}", r.stdout);
        assert_eq!(r.code, 3, "poll {polls}: exit 3 like any refusal");
        assert!(r.stdout.contains("\"check\":\"expired\""), "{}", r.stdout);
        let s = h.status();
        assert_eq!(s["consecutive_failures"], polls, "{s}");
        assert_eq!(s["last_refusal"], "expired", "{s}");
    }
    let expired = h
        .audit()
        .iter()
        .filter(|e| e["event"] == "rejected" && e["check"] == "expired")
        .count();
    assert_eq!(expired, 3, "every refused poll is audited");
    let metrics = fs::read_to_string(h.kit.path("metrics.prom")).expect("metrics");
    assert!(
        metrics.contains("npcnix_refused{remote=\"prod\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("npcnix_consecutive_failures{remote=\"prod\"} 3"),
        "{metrics}"
    );
    assert_eq!(h.activations().len(), 1, "nothing else was activated");
}

#[test]
fn tampered_archive_for_one_poll_does_not_hide_the_repaired_release() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    h.publish("v2");
    let archives = h.kit.store_path("prod", "archives");
    let newest = fs::read_dir(&archives)
        .expect("archives")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("an archive");
    let good = fs::read(&newest).expect("read");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    fs::write(&newest, &bad).expect("tamper");
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(r.stdout.contains("archive-hash"), "{}", r.stdout);
    // The store repairs the archive; `latest` never changed.
    fs::write(&newest, &good).expect("repair");
    assert_eq!(h.once().0, "activated");
    assert!(h.activations()[1].ends_with("| # v2"));
    assert_eq!(h.status()["consecutive_failures"], 0);
}

#[test]
fn missing_archive_is_retried_every_poll_until_the_store_has_it() {
    let h = Host::new();
    h.publish("v1");
    let archives = h.kit.store_path("prod", "archives");
    let moved = h.kit.path("archives-away");
    fs::rename(&archives, &moved).expect("hide archives");
    for polls in 1..=2u64 {
        let (label, r) = h.once();
        assert_eq!(label, "error", "{}", r.stdout);
        assert_ne!(r.code, 0);
        assert_eq!(h.status()["consecutive_failures"], polls);
    }
    fs::rename(&moved, &archives).expect("restore archives");
    assert_eq!(h.once().0, "activated");
}

#[test]
fn refused_head_is_evicted_so_the_next_poll_is_unconditional() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    let cache = h.kit.data_dir().join("heads/prod.json");
    assert!(cache.exists(), "the verified head is cached");
    let latest = h.kit.store_path("prod", "latest");
    let good = fs::read(&latest).expect("latest");
    fs::write(&latest, b"garbage").expect("garbage");
    assert_eq!(h.once().0, "rejected");
    assert!(!cache.exists(), "a refusal drops the cached head");
    // The good head again: fetched in full (not "unchanged"), then cached.
    fs::write(&latest, &good).expect("restore");
    assert_eq!(h.once().0, "up-to-date");
    assert!(cache.exists());
    assert_eq!(h.once().0, "unchanged");
}

#[test]
fn agent_on_an_http_mirror_revalidates_with_304_and_never_keeps_a_poisoned_etag() {
    let h = Host::new();
    h.publish("v1");
    let httpd = Httpd::serve(h.kit.path("store"));
    let mut cfg = h.config();
    cfg["remote"]["url"] = httpd.url("prod").into();
    h.set_config(&cfg);
    assert_eq!(h.once().0, "activated");
    assert_eq!(httpd.conditional_count(), 0);
    assert_eq!(h.once().0, "unchanged");
    assert_eq!(httpd.conditional_count(), 1, "one conditional request");
    // One poisoned answer: `ETag: *` would make every later conditional
    // request "not modified" on a real web server. It is never kept.
    *httpd.etag_override.lock().expect("lock") = Some("*".into());
    h.publish("v2");
    assert_eq!(h.once().0, "activated");
    assert_eq!(
        httpd.conditional_count(),
        2,
        "asked on v1's ETag, got v2 with `*`"
    );
    assert_eq!(h.once().0, "up-to-date", "fetched unconditionally");
    assert_eq!(httpd.conditional_count(), 2, "no If-None-Match: *");
    *httpd.etag_override.lock().expect("lock") = None;
    assert_eq!(h.once().0, "up-to-date");
    assert_eq!(h.once().0, "unchanged");
    assert_eq!(httpd.conditional_count(), 3);
}

#[test]
fn agent_takes_no_unasked_not_modified_as_unchanged() {
    // A fresh host (nothing cached) asks unconditionally; a mirror that
    // answers "not modified" anyway is a failing store, not an idle remote.
    let h = Host::new();
    h.publish("v1");
    let httpd = Httpd::serve(h.kit.path("store"));
    httpd
        .always_not_modified
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut cfg = h.config();
    cfg["remote"]["url"] = httpd.url("prod").into();
    h.set_config(&cfg);
    let (label, r) = h.once();
    assert_eq!(label, "error", "{}", r.stdout);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("If-None-Match"), "{}", r.stdout);
    assert_eq!(h.status()["consecutive_failures"], 1);
    assert!(h.activations().is_empty());
}

#[test]
fn key_rotation_on_the_host_re_judges_a_release_refused_as_untrusted_key() {
    let h = Host::new();
    let (new_key, new_pub) = h.kit.keygen("next");
    let src = h.kit.flake("src-v1", "v1");
    h.kit.publish("prod", &new_key, &src, &[]).ok();
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(r.stdout.contains("untrusted-key"), "{}", r.stdout);
    // The operator pins the new key; `latest` is unchanged.
    let pk = fs::read_to_string(&new_pub)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("line")
        .to_owned();
    let mut cfg = h.config();
    cfg["trusted_keys"]
        .as_array_mut()
        .expect("keys")
        .push(serde_json::json!({"public_key": pk, "remotes": ["prod"], "not_after": null, "comment": "next"}));
    h.set_config(&cfg);
    assert_eq!(h.once().0, "activated");
}

#[test]
fn key_removed_from_the_host_re_judges_the_unchanged_head() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.once().0, "unchanged");
    // The operator distrusts the key; the store still answers "not modified".
    let (_, other_pub) = h.kit.keygen("other");
    let pk = fs::read_to_string(&other_pub)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("line")
        .to_owned();
    let mut cfg = h.config();
    cfg["trusted_keys"] = serde_json::json!([{"public_key": pk, "remotes": ["prod"], "not_after": null, "comment": "other"}]);
    h.set_config(&cfg);
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("untrusted-key"), "{}", r.stdout);
}

#[test]
fn garbage_burst_does_not_freeze_hosts_through_backoff() {
    // Interval 1 s, no jitter: under the old backoff, 5 refused polls meant
    // a 32 s sleep; now refusals poll at the interval.
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    let latest = h.kit.store_path("prod", "latest");
    let good_v1 = fs::read(&latest).expect("latest");
    fs::write(&latest, b"garbage from a hostile store").expect("garbage");
    let child = h
        .agent_cmd(&["follow", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("five refused polls", Duration::from_secs(30), || {
        h.status()["consecutive_failures"]
            .as_u64()
            .is_some_and(|n| n >= 5)
    });
    let s = h.status();
    let gap = s["next_poll"].as_u64().expect("next_poll") - s["last_check"].as_u64().expect("t");
    assert_eq!(gap, 1, "refused polls keep the 1 s interval: {s}");
    // The store recovers and a good release appears.
    fs::write(&latest, &good_v1).expect("restore");
    h.publish("v2");
    let took = wait_for("v2 to be activated", Duration::from_secs(30), || {
        h.activations().len() == 2
    });
    kill(child);
    assert!(h.activations()[1].ends_with("| # v2"));
    // One interval plus jitter (0) plus the poll itself; the old backoff
    // would have slept 32 s or more.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn not_modified_to_an_unconditional_request_is_an_error_on_an_http_mirror() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    let httpd = Httpd::serve(kit.path("store"));
    httpd
        .always_not_modified
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = kit.run(&[
        "pull",
        "--remote",
        &httpd.url("prod"),
        "--trusted-key",
        &pubkey,
        "--dst",
        kit.path("dst").to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("If-None-Match"), "{}", r.stderr);
    kit.assert_nothing_left("dst");
}

#[test]
fn not_modified_to_an_unconditional_request_is_an_error_on_s3() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    let port: u16 = moto
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("moto port");
    let proxy = Proxy::start(port);
    proxy.set(PASS, u64::MAX);
    let mut c = kit.cmd();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let s3 = |c: &mut std::process::Command, args: &[&str]| -> Run {
        Run::from(c.args(args).output().expect("run"))
    };
    let src = kit.flake("v1", "v1");
    s3(
        &mut c,
        &[
            "publish",
            "--remote",
            &url,
            "--endpoint",
            &proxy.endpoint(),
            "--path-style",
            "--key",
            &key,
            "--src",
            src.to_str().expect("utf8"),
        ],
    )
    .ok();
    proxy.set(NOT_MODIFIED, 0);
    let mut c = kit.cmd();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let r = s3(
        &mut c,
        &[
            "pull",
            "--remote",
            &url,
            "--endpoint",
            &proxy.endpoint(),
            "--path-style",
            "--trusted-key",
            &pubkey,
            "--dst",
            kit.path("dst").to_str().expect("utf8"),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("If-None-Match"), "{}", r.stderr);
    kit.assert_nothing_left("dst");
}
