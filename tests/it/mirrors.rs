//! Mirrors (issue 34): a remote served from several URLs. The agent asks
//! the next one when the one in use does not answer, never to replace an
//! answer: a mirror with an older or tampered head is refused as today,
//! and rollback protection holds across mirrors.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::host::Host;

/// A URL where nothing listens: connection refused (a mirror that is down).
const DOWN: &str = "http://127.0.0.1:1/npcnix/prod";

fn copy_store(h: &Host, name: &str) -> String {
    let from = h.kit.path("store/prod");
    let to = h.kit.path(&format!("store/{name}"));
    let _ = fs::remove_dir_all(&to);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(&to)
        .status()
        .expect("cp")
        .success());
    h.kit.url(name)
}

fn set_remote(h: &Host, url: &str, mirrors: &[&str]) {
    let mut cfg = h.config();
    cfg["remote"]["url"] = serde_json::json!(url);
    cfg["remote"]["mirrors"] = serde_json::json!(mirrors);
    h.set_config(&cfg);
}

fn check_of(stdout: &str) -> String {
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["check"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn mirror_down_fails_over_to_the_next_and_status_names_who_answered() {
    let h = Host::new();
    h.publish("v1");
    let good = h.kit.url("prod");
    set_remote(&h, DOWN, &[&good]);
    let (label, r) = h.once();
    assert_eq!(label, "activated", "{}\n{}", r.stdout, r.stderr);
    let s = h.status();
    assert_eq!(s["mirror"], good, "{s}");
    assert_eq!(s["active_version"], 1);
}

#[test]
fn mirror_serving_an_older_head_is_refused_not_followed_and_not_passed_over() {
    let h = Host::new();
    h.publish("v1");
    let stale = copy_store(&h, "stale");
    h.publish("v2");
    assert_eq!(h.once().0, "activated");
    // The mirror in use (the first) answers with the older head: refused
    // (rollback), although the next mirror has the newest. An answer is
    // never replaced by another mirror's.
    set_remote(&h, &stale, &[&h.kit.url("prod")]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}\n{}", r.stdout, r.stderr);
    assert_eq!(check_of(&r.stdout), "rollback", "{}", r.stdout);
    assert_eq!(h.status()["active_version"], 2);
    // With the up-to-date store down and the stale one next: still refused.
    set_remote(&h, DOWN, &[&stale]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stdout);
    assert_eq!(check_of(&r.stdout), "rollback", "{}", r.stdout);
    assert_eq!(h.status()["active_version"], 2);
}

#[test]
fn tampered_mirror_is_refused_and_nothing_is_activated() {
    let h = Host::new();
    h.publish("v1");
    let tampered = copy_store(&h, "tampered");
    // Flip a byte of every archive on the mirror.
    let dir = h.kit.path("store/tampered/archives");
    for e in fs::read_dir(&dir).expect("archives").flatten() {
        flip(&e.path());
    }
    set_remote(&h, DOWN, &[&tampered]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}\n{}", r.stdout, r.stderr);
    assert_eq!(check_of(&r.stdout), "archive-hash", "{}", r.stdout);
    assert!(h.activations().is_empty());
}

fn flip(p: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut b = fs::read(p).expect("read");
    let i = b.len() / 2;
    b[i] ^= 0xff;
    fs::write(p, b).expect("write");
}
