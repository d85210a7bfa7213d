//! Hardening round 2 (host side): strict store objects, strict secret-key
//! files, single-frame archives, strict toplevel paths, first contact.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::*;

#[test]
fn group_readable_unencrypted_secret_key_is_refused_like_ssh() {
    let kit = Kit::new();
    let (key, _) = kit.keygen("ci");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("mode 0644"), "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert!(
        !kit.store_path("prod", "latest").exists(),
        "nothing was published"
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
}

/// A store whose `latest` was replaced by `plant`; a pull must fail with a
/// store error naming the object, create nothing and change no state.
fn pull_refuses_planted(plant: impl FnOnce(&Kit), what: &str) {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    plant(&kit);
    let before = kit.state_bytes();
    let r = kit.pull("prod", &pubkey, "dst", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(what), "expected {what:?} in {}", r.stderr);
    kit.assert_nothing_left("dst");
    assert_eq!(kit.state_bytes(), before);
}

#[test]
fn store_symlink_from_latest_to_dev_zero_is_not_followed() {
    pull_refuses_planted(
        |kit| {
            let latest = kit.store_path("prod", "latest");
            fs::remove_file(&latest).expect("rm");
            std::os::unix::fs::symlink("/dev/zero", &latest).expect("symlink");
        },
        "is a symlink",
    );
}

#[test]
fn store_symlink_to_a_valid_bundle_elsewhere_is_not_followed() {
    pull_refuses_planted(
        |kit| {
            let latest = kit.store_path("prod", "latest");
            let elsewhere = kit.path("elsewhere");
            fs::rename(&latest, &elsewhere).expect("mv");
            std::os::unix::fs::symlink(&elsewhere, &latest).expect("symlink");
        },
        "is a symlink",
    );
}

#[test]
fn store_symlinked_archives_directory_is_not_followed() {
    pull_refuses_planted(
        |kit| {
            let dir = kit.store_path("prod", "archives");
            let moved = kit.path("archives-elsewhere");
            fs::rename(&dir, &moved).expect("mv");
            std::os::unix::fs::symlink(&moved, &dir).expect("symlink");
        },
        "archives/ must be a directory, not a symlink",
    );
}

#[test]
fn store_device_node_planted_as_latest_is_never_opened() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root {
        skip("mknod needs root");
        return;
    }
    pull_refuses_planted(
        |kit| {
            let latest = kit.store_path("prod", "latest");
            fs::remove_file(&latest).expect("rm");
            let ok = Command::new("mknod")
                .arg(&latest)
                .args(["c", "1", "5"])
                .status()
                .expect("mknod")
                .success();
            assert!(ok, "mknod");
        },
        "not a regular file",
    );
}

#[test]
fn fast_forward_fresh_host_to_2_pow_53_minus_1_is_refused_when_jumps_are_capped() {
    let h = crate::common::host::Host::with(|c| {
        c["policy"]["max_version_jump"] = serde_json::json!(5);
        c["policy"]["min_version"] = serde_json::json!(1);
    });
    // A key holder publishes straight to the largest version on a remote
    // this fresh host has never polled.
    h.publish("v1");
    let src = h.kit.flake("src-max", "max");
    h.kit
        .publish("prod", &h.key, &src, &["--version", "9007199254740991"])
        .ok();
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stdout);
    assert!(r.stdout.contains("fast-forward"), "{}", r.stdout);
    assert!(h.activations().is_empty());
}

#[test]
fn install_pins_the_verified_head_so_a_replayed_old_release_is_refused() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    for v in ["v1", "v2", "v3"] {
        kit.publish("prod", &key, &kit.flake(v, v), &["--expires", "30d"])
            .ok();
    }
    let cfg = kit.path("config.json");
    let r = kit
        .run(&[
            "install",
            "--remote",
            &kit.url("prod"),
            "--configuration",
            "web",
            "--trusted-key",
            &pubkey,
            "--require-expiry",
            "--max-version-jump",
            "10",
            "--config-out",
            cfg.to_str().expect("utf8"),
            "--data-dir",
            kit.data_dir().to_str().expect("utf8"),
            "--no-activate",
        ])
        .ok();
    assert!(r.stderr.contains("pinning version 3"), "{}", r.stderr);
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(&cfg).expect("config")).expect("json");
    assert_eq!(c["policy"]["min_version"], 3);
    assert_eq!(c["policy"]["expiry"], "required");
    assert_eq!(c["policy"]["max_version_jump"], 10);
    // A store writer without a key replays version 1 to the new host.
    let v1 = fs::read(kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    fs::write(kit.store_path("prod", "latest"), v1).expect("replay");
    let r = kit.run(&["follow", "--once", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("(min-version)"), "{}", r.stderr);
}

#[test]
fn state_reset_below_the_audited_version_needs_a_recorded_reason() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    kit.publish("prod", &key, &kit.flake("v2", "v2"), &[]).ok();
    kit.pull("prod", &pubkey, "dst", &[]).ok();
    fs::remove_file(kit.data_dir().join("state.json")).expect("lose the state");
    let d = kit.data_dir();
    let d = d.to_str().expect("utf8");
    let reset = |extra: &[&str]| {
        let mut args = vec!["state", "reset", "--remote", "prod", "--data-dir", d];
        args.extend_from_slice(extra);
        kit.run(&args)
    };
    let r = reset(&["--min-version", "1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("version 2"), "{}", r.stderr);
    reset(&[
        "--min-version",
        "1",
        "--lower-floor-because",
        "v2 was pulled for a test only",
    ])
    .ok();
    let audit = fs::read_to_string(kit.data_dir().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("v2 was pulled for a test only"), "{audit}");
}
