//! Publisher and offline-signing hardening: sign what you see, upload what
//! you hashed, heads at the remote's threshold.

use std::fs;
use std::process::Command;

use crate::common::*;

fn prepare(kit: &Kit, key_pub: &str, out: &str) -> Run {
    let src = kit.flake(&format!("src-{out}"), out);
    kit.run(&[
        "release",
        "prepare",
        "--remote",
        &kit.url("prod"),
        "--out",
        kit.path(out).to_str().expect("utf8"),
        "--src",
        src.to_str().expect("utf8"),
        "--signer",
        key_pub,
    ])
}

#[test]
fn two_faced_archive_fifo_in_the_release_directory_is_refused_before_upload() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    prepare(&kit, &pubkey, "rel").ok();
    let dir = kit.path("rel");
    kit.run(&["sign", dir.to_str().expect("utf8"), "--key", &key, "--yes"])
        .ok();
    // A FIFO (or a hostile device) could hand the hasher one set of bytes
    // and the uploader another.
    let archive = dir.join("archive.tar.zst");
    fs::remove_file(&archive).expect("rm");
    assert!(Command::new("mkfifo")
        .arg(&archive)
        .status()
        .expect("mkfifo")
        .success());
    let r = kit.run(&[
        "release",
        "publish",
        dir.to_str().expect("utf8"),
        "--trusted-key",
        &pubkey,
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert!(
        !kit.store_path("prod", "releases").exists()
            || fs::read_dir(kit.store_path("prod", "releases"))
                .expect("dir")
                .next()
                .is_none(),
        "no release was published"
    );
    assert!(!kit.store_path("prod", "latest").exists());
}

#[test]
fn release_check_says_loudly_that_toplevels_were_not_verified() {
    let kit = Kit::new();
    let (_key, pubkey) = kit.keygen("release");
    prepare(&kit, &pubkey, "rel").ok();
    // A statement prepared on a compromised online machine may sign system
    // paths that have nothing to do with the archive.
    let st_path = kit.path("rel/statement.json");
    let mut st: serde_json::Value =
        serde_json::from_slice(&fs::read(&st_path).expect("statement")).expect("json");
    st["toplevels"] =
        serde_json::json!({"web": "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-evil"});
    let mut bytes = serde_json::to_vec(&st).expect("json");
    bytes.push(b'\n');
    fs::write(&st_path, bytes).expect("write");
    let r = kit
        .run(&[
            "release",
            "check",
            kit.path("rel").to_str().expect("utf8"),
            "--src",
            kit.path("src-rel").to_str().expect("utf8"),
        ])
        .ok();
    assert!(r.stdout.contains("OK: re-packing"), "{}", r.stdout);
    assert!(r.stderr.contains("NOT VERIFIED"), "{}", r.stderr);
    assert!(r.stderr.contains("--build"), "{}", r.stderr);
}

#[test]
fn sign_shows_terminal_escapes_instead_of_obeying_them() {
    // The statement parser refuses hidden characters in every text field a
    // signer sees; the signer's view escapes whatever it prints.
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    prepare(&kit, &pubkey, "rel").ok();
    let st_path = kit.path("rel/statement.json");
    let mut st: serde_json::Value =
        serde_json::from_slice(&fs::read(&st_path).expect("statement")).expect("json");
    st["source"] = serde_json::json!({"comment": "ok\u{1b}[2K\u{202e}evil"});
    fs::write(&st_path, serde_json::to_vec(&st).expect("json")).expect("write");
    let r = kit.run(&[
        "sign",
        kit.path("rel").to_str().expect("utf8"),
        "--key",
        &key,
        "--yes",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}'),
        "raw escape printed: {:?}",
        r.stderr
    );
    assert!(r.stderr.contains("single-line text"), "{}", r.stderr);
}

#[test]
fn log_over_thousands_of_junk_releases_stays_in_constant_memory() {
    if !require_tool("/usr/bin/time") {
        return;
    }
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    // A store writer fills the log with 2,000 near-limit junk "releases"
    // (about 120 MB): a log that kept them all would hold them in memory.
    let junk = vec![b'j'; 60 * 1024];
    for v in 10..2010u64 {
        fs::write(kit.store_path("prod", &format!("releases/{v:020}")), &junk).expect("junk");
    }
    let o = Command::new("/usr/bin/time")
        .args([
            "-f",
            "maxrss_kib=%M",
            BIN,
            "log",
            "--remote",
            &kit.url("prod"),
        ])
        .args(["--trusted-key", &pubkey])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("more problems"), "{stderr}");
    let rss: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("rss");
    assert!(
        rss < 48 * 1024,
        "peak RSS {rss} KiB: the log is not streamed"
    );
}

/// A (stolen or mistaken) signing key with its own tooling writes a head
/// far ahead of the log: honest publishers refuse to extend it.
#[test]
fn version_burn_by_a_signed_head_far_ahead_of_the_log_is_not_extended() {
    let kit = Kit::new();
    let (key, _pubkey) = kit.keygen("release");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    let v1 = fs::read(kit.store_path("prod", "latest")).expect("latest");
    let v1 = npcnix::format::bundle::Bundle::decode(&v1).expect("bundle");
    let archive = npcnix::format::statement::Statement::parse(&v1.statement)
        .expect("statement")
        .archive;
    let mut st = statement(
        "prod",
        5000,
        Some(npcnix::format::statement::Digest::of(&v1.statement)),
        archive,
        now(),
    );
    st.expires = None;
    let burnt = signed_bundle(&st, &kit.secret_key(&key));
    fs::write(
        kit.store_path("prod", "releases/00000000000000005000"),
        &burnt,
    )
    .expect("plant");
    fs::write(kit.store_path("prod", "latest"), &burnt).expect("plant");
    let r = kit.publish("prod", &key, &kit.flake("next", "next"), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("a jump of more than 1000 versions"),
        "{}",
        r.stderr
    );
    assert!(!kit
        .store_path("prod", "releases/00000000000000005001")
        .exists());
}

/// Issue 29: `publish --version <head + 1500>` was accepted, and the next
/// publish then refused to extend it. The jump is capped on write.
#[test]
fn version_burn_by_our_own_publisher_is_refused_on_write() {
    let kit = Kit::new();
    let (key, _pubkey) = kit.keygen("release");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    let r = kit.publish(
        "prod",
        &key,
        &kit.flake("v1501", "x"),
        &["--version", "1501"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("hosts refuse jumps of more than 1000"),
        "{}",
        r.stderr
    );
    assert!(!kit
        .store_path("prod", "releases/00000000000000001501")
        .exists());
    kit.publish("prod", &key, &kit.flake("v2", "v2"), &[]).ok();
}

/// The `RW...` line of a `.pub` file.
fn rw(pub_path: &str) -> String {
    fs::read_to_string(pub_path)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("key line")
        .to_owned()
}

/// A 2-of-2 remote: the fleet's policy file (what the NixOS module reads)
/// beside the flake.
fn two_of_two(kit: &Kit) -> (String, String, String, String, std::path::PathBuf) {
    let (a_key, a_pub) = kit.keygen("alice");
    let (b_key, b_pub) = kit.keygen("bob");
    let policy = kit.path("npcnix-policy.json");
    fs::write(
        &policy,
        serde_json::json!({
            "format": "npcnix-policy/v1",
            "remotes": {"prod": {"threshold": 2, "keys": [
                {"public_key": rw(&a_pub), "comment": "alice"},
                {"public_key": rw(&b_pub), "comment": "bob"},
            ]}}
        })
        .to_string(),
    )
    .expect("policy");
    (a_key, a_pub, b_key, b_pub, policy)
}

/// prepare (with `extra`), sign by both, release publish: the k-of-n way.
fn offline_release(kit: &Kit, keys: &[&str], out: &str, extra: &[&str]) -> Run {
    let dir = kit.path(out);
    let url = kit.url("prod");
    let mut args = vec![
        "release",
        "prepare",
        "--remote",
        &url,
        "--out",
        dir.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    kit.run(&args).ok();
    for k in keys {
        kit.run(&["sign", dir.to_str().expect("utf8"), "--key", k, "--yes"])
            .ok();
    }
    kit.run(&["release", "publish", dir.to_str().expect("utf8")])
}

/// Issue 29: a one-key `publish` or `release revert` on a 2-of-2 remote
/// uploaded a head with one signature, even given the hosts' policy: hosts
/// refused it and honest publishers refused to extend it, so the remote was
/// wedged. Now both exit 3 and upload nothing, and a revert is done offline
/// (`release prepare --revert-to N`, two signatures, `release publish`).
#[test]
fn one_key_write_on_a_two_of_two_remote_wedges_nothing_and_revert_goes_offline() {
    let kit = Kit::new();
    let (a_key, _, b_key, _, policy) = two_of_two(&kit);
    let policy = policy.to_str().expect("utf8").to_owned();
    for (out, marker) in [("v1", "good"), ("v2", "bad")] {
        let src = kit.flake(&format!("src-{out}"), marker);
        offline_release(
            &kit,
            &[&a_key, &b_key],
            out,
            &["--src", src.to_str().expect("utf8"), "--policy", &policy],
        )
        .ok();
    }
    let url = kit.url("prod");
    let src = kit.flake("src-v3", "v3");
    let r = kit.run(&[
        "publish",
        "--remote",
        &url,
        "--key",
        &a_key,
        "--src",
        src.to_str().expect("utf8"),
        "--policy",
        &policy,
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("hosts would refuse this release"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("2 required"), "{}", r.stderr);
    assert!(r.stderr.contains("release prepare"), "{}", r.stderr);
    let r = kit.run(&[
        "release", "revert", "--remote", &url, "--key", &a_key, "--to", "1", "--policy", &policy,
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("--revert-to"), "{}", r.stderr);
    assert!(!kit
        .store_path("prod", "releases/00000000000000000003")
        .exists());
    // The documented way to halt a k-of-n rollout.
    let r = offline_release(
        &kit,
        &[&a_key, &b_key],
        "revert",
        &["--revert-to", "1", "--policy", &policy],
    )
    .ok();
    assert!(
        r.stdout.contains("published prod version 3"),
        "{}",
        r.stdout
    );
    let log = kit.run(&["log", "--remote", &url, "--policy", &policy, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&log.stdout).expect("json");
    let releases = v["releases"].as_array().expect("releases");
    assert_eq!(releases[2]["comment"], "revert to version 1");
    assert_eq!(releases[2]["archive_blake3"], releases[0]["archive_blake3"]);
    assert_eq!(releases[2]["signers"].as_array().expect("signers").len(), 2);
}

/// Given no policy and no threshold, a publisher requires as many
/// signatures as the head carries: a 2-of-2 remote is not published at
/// threshold 1 because the operator forgot `--threshold`.
#[test]
fn forgotten_threshold_never_publishes_a_k_of_n_remote_at_1() {
    let kit = Kit::new();
    let (a_key, a_pub, b_key, b_pub, policy) = two_of_two(&kit);
    let src = kit.flake("src-v1", "v1");
    offline_release(
        &kit,
        &[&a_key, &b_key],
        "v1",
        &[
            "--src",
            src.to_str().expect("utf8"),
            "--policy",
            policy.to_str().expect("utf8"),
        ],
    )
    .ok();
    let url = kit.url("prod");
    let src = kit.flake("src-v2", "v2");
    let r = kit.run(&[
        "publish",
        "--remote",
        &url,
        "--key",
        &a_key,
        "--src",
        src.to_str().expect("utf8"),
        "--trusted-key",
        &b_pub,
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("threshold the current head was signed at"),
        "{}",
        r.stderr
    );
    let _ = a_pub;
}

/// Issue 29: `npcnix sign` never showed `decommission` or `rollout`, yet
/// signed them; a compromised prepare machine could add
/// `"decommission": ["web1"]` unseen. The review shows every field, flags
/// decommission and says "expires: none".
#[test]
fn decommission_added_on_the_prepare_machine_is_flagged_to_the_signer() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    prepare(&kit, &pubkey, "rel").ok();
    let st_path = kit.path("rel/statement.json");
    let mut st: serde_json::Value =
        serde_json::from_slice(&fs::read(&st_path).expect("statement")).expect("json");
    st["decommission"] = serde_json::json!(["web1"]);
    st["rollout"] = serde_json::json!({"points": [[0, 1], [3600, 100]]});
    fs::write(&st_path, serde_json::to_vec(&st).expect("json")).expect("write");
    let r = kit.run(&[
        "sign",
        kit.path("rel").to_str().expect("utf8"),
        "--key",
        &key,
        "--yes",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("!! decommission"), "{}", r.stderr);
    assert!(r.stderr.contains("\"web1\" (4 chars)"), "{}", r.stderr);
    assert!(
        r.stderr.contains("takes hosts out of lockout protection"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("rollout"), "{}", r.stderr);
    assert!(r.stderr.contains("0s=1%, 1h=100%"), "{}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.split_whitespace().next() == Some("expires") && l.contains("none")),
        "{}",
        r.stderr
    );
}

/// Issue 29: serde's "unknown field" error names a field taken from a
/// tampered statement; printed raw, an OSC 52 sequence writes the
/// operator's clipboard. Every error is printed escaped.
#[test]
fn error_quoting_a_field_name_with_terminal_escapes_is_printed_escaped() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    prepare(&kit, &pubkey, "rel").ok();
    let st_path = kit.path("rel/statement.json");
    let text = fs::read_to_string(&st_path).expect("statement");
    let evil = text.replacen('{', "{\"\\u001b]52;c;aGk=\\u0007\":1,", 1);
    fs::write(&st_path, evil).expect("write");
    for args in [
        vec![
            "sign",
            kit.path("rel").to_str().expect("utf8"),
            "--key",
            &key,
            "--yes",
        ],
        vec![
            "sign",
            kit.path("rel").to_str().expect("utf8"),
            "--key",
            &key,
            "--yes",
            "-v",
        ],
    ] {
        let r = kit.run(&args);
        assert_ne!(r.code, 0, "{}", r.stderr);
        assert!(!r.stderr.contains('\u{1b}'), "raw escape: {:?}", r.stderr);
        assert!(!r.stderr.contains('\u{7}'), "raw bell: {:?}", r.stderr);
        assert!(r.stderr.contains("\\u{001b}]52"), "{}", r.stderr);
    }
}

/// `release check`, `release publish` and `log --json` show `decommission`
/// and `rollout` (they were silent).
#[test]
fn decommission_and_rollout_show_in_check_publish_and_log() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    let src = kit.flake("src", "v1");
    let url = kit.url("prod");
    let dir = kit.path("rel");
    kit.run(&[
        "release",
        "prepare",
        "--remote",
        &url,
        "--out",
        dir.to_str().expect("utf8"),
        "--src",
        src.to_str().expect("utf8"),
        "--signer",
        &pubkey,
        "--decommission",
        "web1",
        "--rollout",
        "1h",
    ])
    .ok();
    let r = kit
        .run(&[
            "release",
            "check",
            dir.to_str().expect("utf8"),
            "--src",
            src.to_str().expect("utf8"),
            "--json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["decommission"], serde_json::json!(["web1"]));
    assert!(v["rollout"].is_object(), "{v}");
    let r = kit
        .run(&[
            "release",
            "check",
            dir.to_str().expect("utf8"),
            "--src",
            src.to_str().expect("utf8"),
        ])
        .ok();
    assert!(r.stdout.contains("!! decommission"), "{}", r.stdout);
    kit.run(&["sign", dir.to_str().expect("utf8"), "--key", &key, "--yes"])
        .ok();
    let r = kit
        .run(&["release", "publish", dir.to_str().expect("utf8"), "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["decommission"], serde_json::json!(["web1"]));
    assert!(v["rollout"].is_object(), "{v}");
    let r = kit
        .run(&["log", "--remote", &url, "--trusted-key", &pubkey, "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        v["releases"][0]["decommission"],
        serde_json::json!(["web1"])
    );
    assert!(v["releases"][0]["rollout"].is_object(), "{v}");
    let r = kit
        .run(&["log", "--remote", &url, "--trusted-key", &pubkey])
        .ok();
    assert!(
        r.stdout.contains("!! decommission: \"web1\""),
        "{}",
        r.stdout
    );
}
