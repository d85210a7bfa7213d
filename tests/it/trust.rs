//! Trust lifecycle: the offline signing flow (npcnix and stock minisign),
//! thresholds, key scoping, rotation through the host's own configuration,
//! key expiry, fast-forward caps, fork detection and the host/store audit.

use std::fs;

use crate::common::host::Host;
use crate::common::*;

fn rw(pubfile: &str) -> String {
    fs::read_to_string(pubfile)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("key line")
        .to_owned()
}

/// `release prepare` for remote prod of the host's store.
fn prepare(h: &Host, out: &str, marker: &str, extra: &[&str]) -> Run {
    let src = h.kit.flake(&format!("src-{out}"), marker);
    let url = h.kit.url("prod");
    let dir = h.kit.path(out);
    let mut args = vec![
        "release",
        "prepare",
        "--remote",
        &url,
        "--out",
        dir.to_str().expect("utf8"),
        "--src",
        src.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    h.kit.run(&args)
}

fn sign(h: &Host, dir: &str, key: &str) -> Run {
    let d = h.kit.path(dir);
    h.kit
        .run(&["sign", d.to_str().expect("utf8"), "--key", key, "--yes"])
}

fn publish_dir(h: &Host, dir: &str, extra: &[&str]) -> Run {
    let d = h.kit.path(dir);
    let mut args = vec!["release", "publish", d.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    h.kit.run(&args)
}

#[test]
fn offline_flow_prepare_sign_publish_then_pull() {
    let h = Host::new();
    let out = prepare(&h, "rel1", "offline v1", &["--signer", &h.pubkey]).ok();
    assert!(out.stdout.contains("npcnix sign"), "{}", out.stdout);
    assert!(
        out.stdout.contains("minisign -S -s KEY -m"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("-t 'npcnix-release/v1 remote=prod version=1 statement="),
        "{}",
        out.stdout
    );
    // Publishing unsigned is refused.
    let r = publish_dir(&h, "rel1", &["--trusted-key", &h.pubkey]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no *.minisig"), "{}", r.stderr);
    let s = sign(&h, "rel1", &h.key).ok();
    assert!(s.stdout.contains("signed prod version 1"), "{}", s.stdout);
    // The signer saw what it signed.
    assert!(
        s.stderr
            .lines()
            .any(|l| l.split_whitespace().eq(["version", "1"]))
            && s.stderr.contains("archive.blake3"),
        "{}",
        s.stderr
    );
    publish_dir(&h, "rel1", &["--trusted-key", &h.pubkey]).ok();
    assert_eq!(h.once().0, "activated");
}

#[test]
fn stock_minisign_signs_a_prepared_release() {
    if !require_tool("minisign") {
        return;
    }
    let h = Host::new();
    let (mpub, mkey) = (h.kit.path("m.pub"), h.kit.path("m.key"));
    let ok = std::process::Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&mpub)
        .arg("-s")
        .arg(&mkey)
        .output()
        .expect("minisign")
        .status
        .success();
    assert!(ok);
    let mpub_s = mpub.to_str().expect("utf8").to_owned();
    let out = prepare(&h, "rel", "minisign", &["--signer", &mpub_s]).ok();
    // Run exactly the command npcnix printed, with the key path filled in.
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("minisign -S"))
        .expect("command")
        .trim()
        .to_owned();
    let cmd = line.replacen("-s KEY", &format!("-s {}", mkey.display()), 1);
    let ok = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .status()
        .expect("sh")
        .success();
    assert!(ok, "{cmd}");
    publish_dir(&h, "rel", &["--trusted-key", &mpub_s]).ok();
    // The host trusts the minisign key for prod.
    let mut cfg = h.config();
    cfg["trusted_keys"] = serde_json::json!([{"public_key": rw(&mpub_s), "remotes": ["prod"]}]);
    h.set_config(&cfg);
    assert_eq!(h.once().0, "activated");
}

#[test]
fn release_check_repacks_and_compares() {
    let h = Host::new();
    prepare(&h, "rel", "check me", &["--signer", &h.pubkey]).ok();
    let dir = h.kit.path("rel");
    let same = h.kit.flake("again", "check me");
    h.kit
        .run(&[
            "release",
            "check",
            dir.to_str().expect("utf8"),
            "--src",
            same.to_str().expect("utf8"),
        ])
        .ok();
    let other = h.kit.flake("other", "something else");
    h.kit
        .run(&[
            "release",
            "check",
            dir.to_str().expect("utf8"),
            "--src",
            other.to_str().expect("utf8"),
        ])
        .rejected("archive-hash");
}

#[test]
fn two_of_three_remote_refuses_one_signature_and_accepts_two() {
    let h = Host::new();
    let (b_key, b_pub) = h.kit.keygen("second-person");
    let (_c_key, c_pub) = h.kit.keygen("third-person");
    let mut cfg = h.config();
    cfg["remote"]["threshold"] = serde_json::json!(2);
    cfg["trusted_keys"] = serde_json::json!([
        {"public_key": rw(&h.pubkey), "remotes": ["prod"]},
        {"public_key": rw(&b_pub), "remotes": ["prod"]},
        {"public_key": rw(&c_pub), "remotes": ["prod"]},
    ]);
    h.set_config(&cfg);

    let args = [
        "--trusted-key",
        h.pubkey.as_str(),
        "--trusted-key",
        b_pub.as_str(),
        "--threshold",
        "2",
    ];

    // Two signatures from distinct trusted keys: accepted.
    prepare(&h, "one", "v1", &["--signer", &h.pubkey]).ok();
    sign(&h, "one", &h.key).ok();
    sign(&h, "one", &b_key).ok();
    publish_dir(&h, "one", &args).ok();
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.status()["active_version"], 1);

    // One stolen key with store access plants v2 signed by it alone: the
    // host refuses it.
    // (Given no threshold, a publisher requires as many signatures as the
    // head carries; the thief says 1.)
    let r = prepare(&h, "two-careless", "v2", &["--trusted-key", &h.pubkey]).ok();
    assert!(r.stdout.contains("It needs 2 signature(s)"), "{}", r.stdout);
    let thief = ["--trusted-key", h.pubkey.as_str(), "--threshold", "1"];
    prepare(&h, "two", "v2", &thief).ok();
    sign(&h, "two", &h.key).ok();
    publish_dir(&h, "two", &thief).ok();
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(
        r.stdout
            .contains("1 valid signature(s) from distinct trusted keys, 2 required"),
        "{}",
        r.stdout
    );

    // The same key signing twice is still one key.
    prepare(&h, "three", "v3", &["--trusted-key", &h.pubkey]).ok();
    sign(&h, "three", &h.key).ok();
    fs::copy(
        fs::read_dir(h.kit.path("three"))
            .expect("dir")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".minisig"))
            .expect("sig")
            .path(),
        h.kit.path("three/copy.minisig"),
    )
    .expect("copy");
    publish_dir(&h, "three", &thief).ok();
    assert_eq!(h.once().0, "rejected");

    // The honest 2-of-3 signers, checking the head at the remote's
    // threshold, refuse to extend the planted head and name its signer.
    let r = prepare(&h, "four", "v4", &args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("signed by 1 trusted key(s)") && r.stderr.contains("requires 2"),
        "{}",
        r.stderr
    );
    assert_eq!(h.status()["active_version"], 1);

    // The same with the hosts' own config as the source of keys and
    // threshold, so the publisher cannot disagree with the hosts; `log` at
    // that threshold calls the planted releases out.
    let cfg_path = h.kit.path("config.json");
    let cfg_path = cfg_path.to_str().expect("utf8");
    let r = prepare(&h, "five", "v5", &["--host-config", cfg_path]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("requires 2"), "{}", r.stderr);
    let r = h.kit.run(&[
        "log",
        "--remote",
        &h.kit.url("prod"),
        "--host-config",
        cfg_path,
    ]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("(threshold)"), "{}", r.stderr);
}

#[test]
fn ci_key_scoped_to_dev_cannot_move_a_prod_host() {
    let h = Host::new();
    let (ci_key, ci_pub) = h.kit.keygen("ci-dev");
    let mut cfg = h.config();
    cfg["trusted_keys"] = serde_json::json!([
        {"public_key": rw(&h.pubkey), "remotes": ["prod"]},
        {"public_key": rw(&ci_pub), "remotes": ["dev"]},
    ]);
    h.set_config(&cfg);
    // The CI key has write access to the prod prefix and publishes there.
    h.kit
        .publish("prod", &ci_key, &h.kit.flake("ci", "ci build"), &[])
        .ok();
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(r.stdout.contains("not for this remote"), "{}", r.stdout);
    assert!(h.activations().is_empty());
}

#[test]
fn key_rotation_through_the_hosts_own_configuration() {
    let h = Host::new();
    let (new_key, new_pub) = h.kit.keygen("release-2027");
    // v1: signed by the old key, host trusts the old key.
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    // v2 (rotation): signed by the old key, carries a host config that
    // trusts the new key and drops the old one.
    let mut rotated = h.config();
    rotated["trusted_keys"] = serde_json::json!([{"public_key": rw(&new_pub), "remotes": ["prod"], "comment": "release-2027"}]);
    let src = h.kit.flake("rot", "v2 rotation");
    fs::write(
        src.join("npcnix-config.json"),
        serde_json::to_vec_pretty(&rotated).expect("json"),
    )
    .expect("write");
    h.kit.publish("prod", &h.key, &src, &[]).ok();
    assert_eq!(h.once().0, "activated");
    assert_eq!(
        h.config()["trusted_keys"][0]["comment"],
        "release-2027",
        "the switch installed the new config"
    );
    // v3: signed by the new key (extending a head signed by the old one).
    h.kit
        .publish(
            "prod",
            &new_key,
            &h.kit.flake("v3", "v3"),
            &["--trusted-key", &h.pubkey],
        )
        .ok();
    assert_eq!(h.once().0, "activated");
    // v4: the old key is no longer trusted.
    h.kit
        .publish(
            "prod",
            &h.key,
            &h.kit.flake("v4", "v4"),
            &["--trusted-key", &new_pub],
        )
        .ok();
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(
        r.stdout.contains("no signature by a trusted key"),
        "{}",
        r.stdout
    );
    assert_eq!(h.status()["active_version"], 3);

    // Issue 29: `npcnix audit` re-verified v1 and v2 with today's keys and
    // reported MISMATCH for ever after this rotation. The host recorded
    // their statement hashes; the store's log holds those statements.
    let r = h.run(&["audit", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["versions_checked"], 3);
    // A store that swaps in another release as version 1, signed by the
    // retired key: still a fork, named with the key from the host's
    // history.
    let v1 = h.kit.store_path("prod", "releases/00000000000000000001");
    let old = npcnix::format::bundle::Bundle::decode(&fs::read(&v1).expect("v1")).expect("bundle");
    let mut st = npcnix::format::statement::Statement::parse(&old.statement).expect("st");
    st.created += 1;
    fs::write(
        &v1,
        crate::common::signed_bundle(&st, &h.kit.secret_key(&h.key)),
    )
    .expect("fork");
    let r = h.run(&["audit"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("fork or equivocation"), "{}", r.stdout);
}

#[test]
fn key_past_its_not_after_date_no_longer_counts() {
    let h = Host::new();
    let mut cfg = h.config();
    cfg["trusted_keys"][0]["not_after"] = serde_json::json!(1_000_000_000);
    h.set_config(&cfg);
    h.publish("v1");
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(r.stdout.contains("not_after"), "{}", r.stdout);
}

#[test]
fn fast_forward_beyond_the_cap_is_refused() {
    let h = Host::with(|c| c["policy"]["max_version_jump"] = serde_json::json!(5));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    h.kit
        .publish(
            "prod",
            &h.key,
            &h.kit.flake("far", "far"),
            &["--version", "100"],
        )
        .ok();
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(
        r.stdout.contains("jumps more than 5 versions"),
        "{}",
        r.stdout
    );
}

/// Rewrites the log after version 1: a signed fork v2' (not linking to v1)
/// and v3 linking to v2'. Returns nothing; latest = v3.
fn plant_fork(h: &Host) {
    let sk = h.kit.secret_key(&h.key);
    let aref = h.kit.put_archive(
        "prod",
        &h.kit.pack(&h.kit.flake("fork", "fork"), "fork.tar.zst"),
    );
    let v2 = statement(
        "prod",
        2,
        Some(npcnix::format::statement::Digest([9; 32])),
        aref.clone(),
        now(),
    );
    let b2 = signed_bundle(&v2, &sk);
    let v3 = statement(
        "prod",
        3,
        Some(npcnix::format::statement::Digest::of(&v2.to_bytes())),
        aref,
        now(),
    );
    h.kit.put_raw("prod", 2, &b2);
    h.kit.put_raw("prod", 3, &signed_bundle(&v3, &sk));
}

#[test]
fn forked_log_is_detected_by_a_host_with_require_chain() {
    let h = Host::with(|c| c["policy"]["require_chain"] = serde_json::json!(true));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    plant_fork(&h);
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(r.stdout.contains("broken at version 2"), "{}", r.stdout);
    // And by `npcnix log`.
    let url = h.kit.url("prod");
    h.kit
        .run(&["log", "--remote", &url, "--trusted-key", &h.pubkey])
        .rejected("fork");
    // Without require_chain a skip-ahead release is not chain-checked
    // (documented trade-off); with it, a legitimate chain passes.
    let h2 = Host::with(|c| c["policy"]["require_chain"] = serde_json::json!(true));
    h2.publish("v1");
    assert_eq!(h2.once().0, "activated");
    h2.publish("v2");
    h2.publish("v3");
    assert_eq!(h2.once().0, "activated");
    assert_eq!(h2.status()["active_version"], 3);
}

#[test]
fn log_reports_signatures_by_untrusted_keys() {
    let h = Host::new();
    h.publish("v1");
    let (other, _) = h.kit.keygen("outsider");
    let sk = h.kit.secret_key(&other);
    let latest = h.kit.store_path("prod", "latest");
    let mut b =
        npcnix::format::bundle::Bundle::decode(&fs::read(&latest).expect("read")).expect("bundle");
    let st = npcnix::format::statement::Statement::parse(&b.statement).expect("st");
    b.signatures
        .push(npcnix::publish::sign_statement(&st, &b.statement, &sk));
    h.kit.put_raw("prod", 1, &b.encode());
    let url = h.kit.url("prod");
    let out = h
        .kit
        .run(&[
            "log",
            "--remote",
            &url,
            "--trusted-key",
            &h.pubkey,
            "--json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        v["releases"][0]["untrusted_signers"][0],
        sk.key_id.to_string()
    );
}

#[test]
fn audit_compares_the_hosts_log_with_the_stores() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    h.run(&["audit"]).ok();
    // The store's history is rewritten after the fact: the host's record
    // proves it was shown something else.
    let sk = h.kit.secret_key(&h.key);
    let aref = h.kit.put_archive(
        "prod",
        &h.kit.pack(&h.kit.flake("rw", "rewritten"), "rw.tar.zst"),
    );
    let fake = statement("prod", 1, None, aref, now());
    h.kit.put_raw("prod", 1, &signed_bundle(&fake, &sk));
    let r = h.run(&["audit"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("fork or equivocation"), "{}", r.stdout);
}
