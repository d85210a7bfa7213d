//! Signed releases end to end on a directory store, driving the real binary:
//! round trip, then one test per attack the verified pull must refuse. Every
//! refusal must exit 3 naming the check, create no DST, leave the state
//! untouched and leave no temp files.

use std::fs;

use crate::common::*;
use base64::Engine as _;
use npcnix::format::bundle::Bundle;
use npcnix::format::statement::Digest;

/// A kit with one key and version 1 of remote `prod` published.
fn published() -> (Kit, String, String) {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    let src = kit.flake("flake", "v1");
    kit.publish("prod", &key, &src, &[]).ok();
    (kit, key, pubkey)
}

/// The one archive of remote `prod`.
fn the_archive(kit: &Kit) -> std::path::PathBuf {
    fs::read_dir(kit.store_path("prod", "archives"))
        .expect("dir")
        .next()
        .expect("one")
        .expect("entry")
        .path()
}

/// Runs a pull expected to be refused for `check`, and proves it changed
/// nothing: no DST, same state bytes, clean temp space.
#[track_caller]
fn assert_refused(kit: &Kit, pubkey: &str, check: &str) {
    let before = kit.state_bytes();
    kit.pull("prod", pubkey, "dst-refused", &[]).rejected(check);
    kit.assert_nothing_left("dst-refused");
    assert_eq!(
        kit.state_bytes(),
        before,
        "state changed by a refused release"
    );
}

#[test]
fn round_trip_publish_then_pull_gives_the_same_tree() {
    let (kit, key, pubkey) = published();
    let out = kit.pull("prod", &pubkey, "dst", &["--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["version"], 1);
    assert_eq!(v["new"], true);
    assert!(
        v["confinement"]
            .as_str()
            .is_some_and(|c| c.contains("landlock")),
        "the extraction's Landlock status is reported: {v}"
    );
    let dst = kit.path("dst");
    assert_eq!(
        fs::read_to_string(dst.join("hosts/web.nix")).expect("file"),
        "# v1\n{ }\n"
    );
    assert_eq!(
        fs::read_link(dst.join("default-host.nix"))
            .expect("link")
            .to_str(),
        Some("hosts/web.nix")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dst.join("deploy.sh"))
        .expect("md")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // Version 2 chains to version 1 and is accepted.
    let src2 = kit.flake("flake2", "v2");
    let pubout = kit.publish("prod", &key, &src2, &["--json"]).ok();
    let p: serde_json::Value = serde_json::from_str(&pubout.stdout).expect("json");
    assert_eq!(p["version"], 2);
    assert_eq!(p["previous"], v["statement"]);
    kit.pull("prod", &pubkey, "dst2", &[]).ok();
    assert_eq!(
        fs::read_to_string(kit.path("dst2/hosts/web.nix")).expect("file"),
        "# v2\n{ }\n"
    );
    let state: serde_json::Value = serde_json::from_slice(&kit.state_bytes()).expect("json");
    assert_eq!(state["remotes"]["prod"]["highest"]["version"], 2);

    // The audit log recorded both.
    let audit = fs::read_to_string(kit.data_dir().join("audit.jsonl")).expect("audit");
    assert_eq!(audit.matches("\"event\":\"verified\"").count(), 2);
}

#[test]
fn pulling_the_current_release_again_is_not_new_and_keeps_state() {
    let (kit, _key, pubkey) = published();
    kit.pull("prod", &pubkey, "a", &[]).ok();
    let before = kit.state_bytes();
    let out = kit.pull("prod", &pubkey, "b", &["--json"]).ok();
    assert!(out.stdout.contains("\"new\": false"), "{}", out.stdout);
    assert_eq!(kit.state_bytes(), before);
}

#[test]
fn existing_dst_is_never_written_into() {
    let (kit, _key, pubkey) = published();
    fs::create_dir(kit.path("dst")).expect("mkdir");
    fs::write(kit.path("dst/keep"), "mine").expect("write");
    let r = kit.pull("prod", &pubkey, "dst", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("already exists"));
    assert_eq!(fs::read_dir(kit.path("dst")).expect("dir").count(), 1);
}

#[test]
fn tampered_archive_is_refused() {
    let (kit, _key, pubkey) = published();
    let f = the_archive(&kit);
    let mut bytes = fs::read(&f).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&f, bytes).expect("write");
    assert_refused(&kit, &pubkey, "archive-hash");
}

#[test]
fn archive_longer_than_signed_is_refused() {
    let (kit, _key, pubkey) = published();
    let f = the_archive(&kit);
    let mut bytes = fs::read(&f).expect("read");
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&f, bytes).expect("write");
    assert_refused(&kit, &pubkey, "archive-size");
}

#[test]
fn archive_shorter_than_signed_is_refused() {
    let (kit, _key, pubkey) = published();
    let f = the_archive(&kit);
    let bytes = fs::read(&f).expect("read");
    fs::write(&f, &bytes[..bytes.len() - 10]).expect("write");
    assert_refused(&kit, &pubkey, "archive-size");
}

#[test]
fn tampered_statement_is_refused() {
    let (kit, _key, pubkey) = published();
    let latest = kit.store_path("prod", "latest");
    let mut b = Bundle::decode(&fs::read(&latest).expect("read")).expect("bundle");
    let text = String::from_utf8(b.statement.clone()).expect("utf8");
    // Point the release at a different archive: the attacker's.
    b.statement = text.replacen("\"size\":", "\"size\":1", 1).into_bytes();
    fs::write(&latest, b.encode()).expect("write");
    assert_refused(&kit, &pubkey, "signature");
}

#[test]
fn release_signed_by_an_untrusted_key_is_refused() {
    let (kit, _key, _pubkey) = published();
    let (_other_key, other_pub) = kit.keygen("attacker");
    assert_refused(&kit, &other_pub, "untrusted-key");
}

#[test]
fn statement_for_another_remote_replayed_here_is_refused() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("shared");
    let src = kit.flake("flake", "dev build");
    kit.publish("dev", &key, &src, &[]).ok();
    // An attacker with write access to prod copies dev's release over.
    let dev = kit.path("store/dev");
    let prod = kit.path("store/prod");
    fs::create_dir_all(prod.join("archives")).expect("mkdir");
    fs::copy(dev.join("latest"), prod.join("latest")).expect("copy");
    for e in fs::read_dir(dev.join("archives")).expect("dir") {
        let e = e.expect("entry");
        fs::copy(e.path(), prod.join("archives").join(e.file_name())).expect("copy");
    }
    assert_refused(&kit, &pubkey, "remote-mismatch");
}

#[test]
fn older_version_replayed_is_refused() {
    let (kit, key, pubkey) = published();
    kit.publish("prod", &key, &kit.flake("flake2", "v2"), &[])
        .ok();
    kit.pull("prod", &pubkey, "seen-v2", &[]).ok();
    // The store (or a mirror) serves the old, validly signed version 1.
    let v1 = fs::read(kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    fs::write(kit.store_path("prod", "latest"), v1).expect("write");
    assert_refused(&kit, &pubkey, "rollback");
}

#[test]
fn same_version_with_a_different_statement_is_equivocation() {
    let (kit, key, pubkey) = published();
    kit.pull("prod", &pubkey, "seen-v1", &[]).ok();
    // The key holder signs a second, different version 1 (e.g. a fork).
    let sk = kit.secret_key(&key);
    let archive = kit.pack(&kit.flake("other", "evil twin"), "other.tar.zst");
    let aref = kit.put_archive("prod", &archive);
    let st = statement("prod", 1, None, aref, now());
    fs::write(kit.store_path("prod", "latest"), signed_bundle(&st, &sk)).expect("write");
    assert_refused(&kit, &pubkey, "equivocation");
}

#[test]
fn expired_release_is_refused() {
    let (kit, key, pubkey) = published();
    let sk = kit.secret_key(&key);
    let aref = kit.put_archive("prod", &kit.pack(&kit.flake("f", "old"), "a.tar.zst"));
    let mut st = statement("prod", 1, None, aref, now() - 7200);
    st.expires = Some(now() - 3600);
    kit.put_raw("prod", 1, &signed_bundle(&st, &sk));
    assert_refused(&kit, &pubkey, "expired");
}

#[test]
fn release_without_expiry_is_refused_when_policy_requires_one() {
    let (kit, _key, pubkey) = published();
    kit.pull("prod", &pubkey, "dst", &["--require-expiry"])
        .rejected("expiry-required");
    kit.assert_nothing_left("dst");
}

#[test]
fn future_dated_release_is_refused() {
    let (kit, key, pubkey) = published();
    let sk = kit.secret_key(&key);
    let aref = kit.put_archive("prod", &kit.pack(&kit.flake("f", "future"), "a.tar.zst"));
    let st = statement("prod", 1, None, aref, now() + 86_400);
    kit.put_raw("prod", 1, &signed_bundle(&st, &sk));
    assert_refused(&kit, &pubkey, "future-dated");
}

#[test]
fn version_below_pinned_floor_is_refused() {
    let (kit, _key, pubkey) = published();
    kit.pull("prod", &pubkey, "dst", &["--min-version", "5"])
        .rejected("min-version");
    kit.assert_nothing_left("dst");
}

#[test]
fn oversized_bundle_is_refused_unread() {
    let (kit, _key, pubkey) = published();
    fs::write(kit.store_path("prod", "latest"), vec![b' '; 64 * 1024 + 1]).expect("write");
    assert_refused(&kit, &pubkey, "bundle-size");
}

#[test]
fn garbage_bundle_is_refused() {
    let (kit, _key, pubkey) = published();
    fs::write(kit.store_path("prod", "latest"), b"\x00\x01garbage{{{").expect("write");
    assert_refused(&kit, &pubkey, "bundle-format");
}

#[test]
fn bundle_with_no_signatures_is_refused() {
    let (kit, _key, pubkey) = published();
    let latest = kit.store_path("prod", "latest");
    let mut b = Bundle::decode(&fs::read(&latest).expect("read")).expect("bundle");
    b.signatures.clear();
    fs::write(&latest, b.encode()).expect("write");
    assert_refused(&kit, &pubkey, "no-signatures");
}

#[test]
fn signature_with_a_forged_trusted_comment_is_refused() {
    // The attacker keeps the valid statement signature but rewrites the
    // trusted comment (e.g. to claim another version): the global signature
    // over the comment no longer verifies.
    let (kit, _key, pubkey) = published();
    let latest = kit.store_path("prod", "latest");
    let mut b = Bundle::decode(&fs::read(&latest).expect("read")).expect("bundle");
    b.signatures[0] = b.signatures[0].replace("version=1 ", "version=9 ");
    fs::write(&latest, b.encode()).expect("write");
    assert_refused(&kit, &pubkey, "signature");
}

#[test]
fn signature_bound_to_another_statement_is_refused() {
    // A validly signed comment that names a different statement hash: a
    // signer's comment must bind exactly these bytes.
    let (kit, key, pubkey) = published();
    let sk = kit.secret_key(&key);
    let latest = kit.store_path("prod", "latest");
    let b = Bundle::decode(&fs::read(&latest).expect("read")).expect("bundle");
    let tc = format!(
        "npcnix-release/v1 remote=prod version=1 statement={} key={}",
        Digest([0; 32]),
        sk.key_id
    );
    let sig = npcnix::format::sign::sign_minisign(&sk, &b.statement, &tc);
    let forged = Bundle {
        timestamp: None,
        statement: b.statement.clone(),
        signatures: vec![sig],
    };
    fs::write(&latest, forged.encode()).expect("write");
    assert_refused(&kit, &pubkey, "trusted-comment");
}

#[test]
fn rollback_protection_follows_the_remote_name_not_the_url() {
    // A host moved to a mirror URL keeps its highest version, because state
    // is keyed by the signed remote name.
    let (kit, key, pubkey) = published();
    kit.publish("prod", &key, &kit.flake("flake2", "v2"), &[])
        .ok();
    kit.pull("prod", &pubkey, "seen-v2", &[]).ok();
    let mirror = kit.path("mirror/prod");
    fs::create_dir_all(mirror.join("archives")).expect("mkdir");
    let v1 = fs::read(kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    fs::write(mirror.join("latest"), v1).expect("write");
    for e in fs::read_dir(kit.store_path("prod", "archives")).expect("dir") {
        let e = e.expect("entry");
        fs::copy(e.path(), mirror.join("archives").join(e.file_name())).expect("copy");
    }
    let url = format!("file://{}", mirror.display());
    let dst = kit.path("dst");
    kit.run(&[
        "pull",
        "--remote",
        &url,
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ])
    .rejected("rollback");
    assert!(!dst.exists());
}

#[test]
fn racing_publishers_never_both_win_a_version() {
    let kit = Kit::new();
    let (key, _pubkey) = kit.keygen("ci");
    let srcs: Vec<_> = (0..4)
        .map(|i| kit.flake(&format!("f{i}"), &format!("racer {i}")))
        .collect();
    let url = kit.url("prod");
    let children: Vec<_> = srcs
        .iter()
        .map(|src| {
            kit.cmd()
                .args([
                    "publish",
                    "--remote",
                    &url,
                    "--key",
                    &key,
                    "--version",
                    "1",
                    "--src",
                ])
                .arg(src)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let winners = outs.iter().filter(|o| o.status.code() == Some(0)).count();
    assert_eq!(winners, 1, "exactly one publisher must win version 1");
    for o in outs.iter().filter(|o| o.status.code() != Some(0)) {
        assert_eq!(
            o.status.code(),
            Some(4),
            "loser must exit 4: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            [
                "already published",
                "changed while publishing",
                "not newer than the current head",
                "mid-publish"
            ]
            .iter()
            .any(|m| err.contains(m)),
            "{err}"
        );
    }
    // The head is the winner's release and the log verifies.
    let latest = fs::read(kit.store_path("prod", "latest")).expect("latest");
    let rel = fs::read(kit.store_path("prod", "releases/00000000000000000001")).expect("rel");
    assert_eq!(latest, rel);
}

#[test]
fn publisher_that_read_a_stale_head_loses_cleanly() {
    use npcnix::format::statement::RemoteName;
    use npcnix::publish::{self, PublishError, StatementParams};
    use npcnix::store;
    let (kit, key, _pubkey) = published();
    let sk = kit.secret_key(&key);
    let st = store::open_url(&kit.url("prod"), &Default::default()).expect("store");
    let remote = RemoteName::new("prod").expect("name");
    // Two publishers read the same head (version 1)...
    let pk = npcnix::format::keys::PublicKey::parse(&fs::read_to_string(&_pubkey).expect("pub"))
        .expect("pk");
    let policy = npcnix::verify::Policy::manual(remote.clone(), vec![pk]);
    let head_a = publish::read_head(&st, &policy, now())
        .expect("head")
        .expect("some");
    let head_b = head_a.clone();
    let mk = |marker: &str, head: &publish::CurrentHead| {
        let archive = kit.pack(&kit.flake(marker, marker), &format!("{marker}.tar.zst"));
        let aref = publish::hash_file(&archive).expect("hash");
        let s = publish::next_statement(
            Some(head),
            aref.clone(),
            StatementParams {
                remote: remote.clone(),
                version: None,
                created: now(),
                expires: None,
                source: None,
            },
        )
        .expect("statement");
        let bytes = s.to_bytes();
        let bundle = Bundle {
            timestamp: None,
            statement: bytes.clone(),
            signatures: vec![publish::sign_statement(&s, &bytes, &sk)],
        };
        (archive, aref, s.version, bundle)
    };
    let (a_path, a_ref, a_v, a_bundle) = mk("a", &head_a);
    let (b_path, b_ref, b_v, b_bundle) = mk("b", &head_b);
    assert_eq!((a_v, b_v), (2, 2));
    publish::upload(
        &st,
        &a_path,
        &a_ref,
        a_v,
        &a_bundle,
        None,
        head_a.etag.as_ref(),
        &npcnix::store::retry::Retry::none(),
    )
    .expect("a wins");
    let err = publish::upload(
        &st,
        &b_path,
        &b_ref,
        b_v,
        &b_bundle,
        None,
        head_b.etag.as_ref(),
        &npcnix::store::retry::Retry::none(),
    )
    .expect_err("b loses");
    assert!(
        matches!(err, PublishError::VersionTaken { version: 2, .. }),
        "{err}"
    );
    assert_eq!(
        fs::read(kit.store_path("prod", "latest")).expect("latest"),
        a_bundle.encode()
    );
}

#[test]
fn verify_checks_a_release_offline() {
    let (kit, _key, pubkey) = published();
    let bundle = kit.store_path("prod", "releases/00000000000000000001");
    let archive = fs::read_dir(kit.store_path("prod", "archives"))
        .expect("dir")
        .next()
        .expect("one")
        .expect("e")
        .path();
    let b = bundle.to_str().expect("utf8");
    let a = archive.to_str().expect("utf8");
    let out = kit
        .run(&[
            "verify",
            "--bundle",
            b,
            "--archive",
            a,
            "--trusted-key",
            &pubkey,
        ])
        .ok();
    assert!(out.stdout.contains("OK: prod version 1"), "{}", out.stdout);
    // A different archive is refused.
    let other = kit.pack(&kit.flake("x", "other"), "x.tar.zst");
    kit.run(&[
        "verify",
        "--bundle",
        b,
        "--archive",
        other.to_str().expect("utf8"),
        "--trusted-key",
        &pubkey,
    ])
    .rejected("archive-size");
    // The wrong key is refused.
    let (_k, other_pub) = kit.keygen("other");
    kit.run(&[
        "verify",
        "--bundle",
        b,
        "--archive",
        a,
        "--trusted-key",
        &other_pub,
    ])
    .rejected("untrusted-key");
}

#[test]
fn log_verifies_the_chain_and_names_the_break() {
    let (kit, key, pubkey) = published();
    for i in 2..=4 {
        kit.publish(
            "prod",
            &key,
            &kit.flake(&format!("f{i}"), &format!("v{i}")),
            &["--comment", "routine"],
        )
        .ok();
    }
    let url = kit.url("prod");
    let out = kit
        .run(&["log", "--remote", &url, "--trusted-key", &pubkey, "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["releases"].as_array().expect("array").len(), 4);

    // Rewrite history: replace version 3 with a different, validly signed
    // statement. Version 4's `previous` no longer matches: a fork.
    let sk = kit.secret_key(&key);
    let b2 = Bundle::decode(
        &fs::read(kit.store_path("prod", "releases/00000000000000000002")).expect("r"),
    )
    .expect("b");
    let aref = kit.put_archive(
        "prod",
        &kit.pack(&kit.flake("evil", "evil"), "evil.tar.zst"),
    );
    let st = statement("prod", 3, Some(Digest::of(&b2.statement)), aref, now());
    fs::write(
        kit.store_path("prod", "releases/00000000000000000003"),
        signed_bundle(&st, &sk),
    )
    .expect("w");
    let out = kit
        .run(&["log", "--remote", &url, "--trusted-key", &pubkey])
        .rejected("fork");
    assert!(out.stderr.contains("version 4"), "{}", out.stderr);

    // Deleting a release is reported as a gap.
    fs::remove_file(kit.store_path("prod", "releases/00000000000000000003")).expect("rm");
    let out = kit
        .run(&["log", "--remote", &url, "--trusted-key", &pubkey])
        .rejected("gap");
    assert!(out.stderr.contains("version 4"), "{}", out.stderr);
}

#[test]
fn untrusted_signature_next_to_a_trusted_one_is_ignored() {
    let (kit, _key, pubkey) = published();
    let (other, _) = kit.keygen("bystander");
    let sk_other = kit.secret_key(&other);
    let latest = kit.store_path("prod", "latest");
    let mut b = Bundle::decode(&fs::read(&latest).expect("read")).expect("bundle");
    let st = npcnix::format::statement::Statement::parse(&b.statement).expect("st");
    b.signatures.insert(
        0,
        npcnix::publish::sign_statement(&st, &b.statement, &sk_other),
    );
    fs::write(&latest, b.encode()).expect("write");
    kit.pull("prod", &pubkey, "dst", &[]).ok();
}

#[test]
fn base64_statement_survives_reencoding() {
    // Guard for the envelope: the statement travels as base64, so its bytes
    // (which signatures cover) are exactly preserved.
    let (kit, _key, _pubkey) = published();
    let raw = fs::read(kit.store_path("prod", "latest")).expect("read");
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    let st = base64::engine::general_purpose::STANDARD
        .decode(v["statement"].as_str().expect("str"))
        .expect("b64");
    assert!(st.ends_with(b"}\n"));
}

#[test]
fn publish_refuses_unsigned_head_version_burn() {
    // A store attacker without keys plants a head claiming a huge version;
    // the real publisher must not sign version head+1 on top of it.
    let (kit, key, pubkey) = published();
    let (attacker, _) = kit.keygen("attacker");
    let ask = kit.secret_key(&attacker);
    let aref = kit.put_archive("prod", &kit.pack(&kit.flake("x", "x"), "x.tar.zst"));
    let fake = statement("prod", (1 << 53) - 2, Some(Digest([0; 32])), aref, now());
    kit.put_raw("prod", (1 << 53) - 2, &signed_bundle(&fake, &ask));
    let r = kit.publish("prod", &key, &kit.flake("v2", "v2"), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("refusing to extend the store's head"),
        "{}",
        r.stderr
    );
    // Hosts still hold version 1 and the log has no new release.
    assert!(!kit
        .store_path("prod", "releases/00000000000000000002")
        .exists());
    let _ = pubkey;
}

#[test]
fn publish_refuses_restart_when_log_nonempty() {
    let (kit, key, _pubkey) = published();
    fs::remove_file(kit.store_path("prod", "latest")).expect("rm");
    let r = kit.publish("prod", &key, &kit.flake("v2", "v2"), &[]);
    assert_eq!(r.code, 4);
    assert!(
        r.stderr
            .contains("`latest` is missing but the log holds 1 release"),
        "{}",
        r.stderr
    );
}

#[test]
fn publish_extends_a_head_signed_by_another_trusted_key() {
    let (kit, _key, pubkey) = published();
    let (ci, _ci_pub) = kit.keygen("ci");
    let r = kit.publish("prod", &ci, &kit.flake("v2", "v2"), &[]);
    assert_eq!(r.code, 1, "unknown head signer must be refused");
    kit.publish(
        "prod",
        &ci,
        &kit.flake("v2", "v2"),
        &["--trusted-key", &pubkey],
    )
    .ok();
}

#[test]
fn publish_detects_impostor_archive_at_content_address() {
    let kit = Kit::new();
    let (key, _pubkey) = kit.keygen("k");
    let src = kit.flake("f", "real");
    let archive = kit.pack(&src, "real.tar.zst");
    let aref = npcnix::publish::hash_file(&archive).expect("hash");
    let planted = kit.store_path("prod", &aref.object_key());
    fs::create_dir_all(planted.parent().expect("p")).expect("mkdir");
    fs::write(&planted, b"garbage planted by the store").expect("write");
    let r = kit.publish("prod", &key, &src, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("already holds a different object"),
        "{}",
        r.stderr
    );
}

#[test]
fn fifo_latest_in_file_store_does_not_hang() {
    let (kit, _key, pubkey) = published();
    let latest = kit.store_path("prod", "latest");
    fs::remove_file(&latest).expect("rm");
    assert!(std::process::Command::new("mkfifo")
        .arg(&latest)
        .status()
        .expect("mkfifo")
        .success());
    let t = std::time::Instant::now();
    let r = kit.pull("prod", &pubkey, "dst", &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn pull_honours_state_floor_after_reset() {
    let (kit, key, pubkey) = published();
    kit.publish("prod", &key, &kit.flake("v2", "v2"), &[]).ok();
    let data = kit.data_dir();
    kit.run(&[
        "state",
        "reset",
        "--remote-name",
        "prod",
        "--min-version",
        "2",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--force",
    ])
    .ok();
    let v1 = fs::read(kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    fs::write(kit.store_path("prod", "latest"), v1).expect("write");
    kit.pull("prod", &pubkey, "dst", &[])
        .rejected("min-version");
}

#[test]
fn state_reset_keeps_other_remotes() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("k");
    for r in ["dev", "prod"] {
        kit.publish(r, &key, &kit.flake(&format!("f-{r}"), r), &[])
            .ok();
        let url = kit.url(r);
        let dst = kit.path(&format!("dst-{r}"));
        kit.run(&[
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &pubkey,
            "--dst",
            dst.to_str().expect("utf8"),
        ])
        .ok();
    }
    let data = kit.data_dir();
    let d = data.to_str().expect("utf8");
    // A readable state is not reset without --force.
    let r = kit.run(&[
        "state",
        "reset",
        "--remote-name",
        "prod",
        "--min-version",
        "5",
        "--data-dir",
        d,
    ]);
    assert_eq!(r.code, 1);
    kit.run(&[
        "state",
        "reset",
        "--remote-name",
        "prod",
        "--min-version",
        "5",
        "--data-dir",
        d,
        "--force",
    ])
    .ok();
    let st: serde_json::Value = serde_json::from_slice(&kit.state_bytes()).expect("json");
    assert_eq!(
        st["remotes"]["dev"]["highest"]["version"], 1,
        "dev's rollback state survives"
    );
    assert_eq!(st["remotes"]["prod"]["floor"], 5);
}

#[test]
fn far_future_timestamp_is_refused_without_panicking() {
    let (kit, key, pubkey) = published();
    let sk = kit.secret_key(&key);
    let aref = kit.put_archive("prod", &kit.pack(&kit.flake("f", "y10k"), "a.tar.zst"));
    let st = statement("prod", 1, None, aref, 300_000_000_000);
    kit.put_raw("prod", 1, &signed_bundle(&st, &sk));
    let _ = pubkey;
    assert_refused(&kit, &pubkey, "statement-format");
}

#[test]
fn colliding_key_ids_still_verify() {
    // A co-tenant's key shares the prod key's ID: prod's signatures must
    // still count.
    let (kit, key, pubkey) = published();
    let (other, _) = kit.keygen("cotenant");
    let real = npcnix::format::keys::PublicKey::parse(&fs::read_to_string(&pubkey).expect("pub"))
        .expect("pk");
    let mut fake = kit.secret_key(&other).public_key();
    fake.key_id = real.key_id;
    let _ = key;
    let url = kit.url("prod");
    let dst = kit.path("dst");
    kit.run(&[
        "pull",
        "--remote",
        &url,
        "--trusted-key",
        &fake.to_base64(),
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ])
    .ok();
}
