//! What a release changes (issue 34): `npcnix diff` between releases,
//! `publish --dry-run`, and the change list `release prepare` leaves for
//! the offline signer, which `sign` shows and checks against the archive.

use std::fs;

use crate::common::*;

/// v1 and v2 of a flake: conf.nix changed, gone.nix removed, new.nix added.
fn two_releases(kit: &Kit, key: &str) {
    let v1 = kit.flake("f1", "one");
    fs::write(v1.join("conf.nix"), "a\nb\nc\n").expect("write");
    fs::write(v1.join("gone.nix"), "{ }\n").expect("write");
    kit.publish("prod", key, &v1, &[]).ok();
    let v2 = kit.flake("f2", "one");
    fs::write(v2.join("conf.nix"), "a\nB\nc\n").expect("write");
    fs::write(v2.join("new.nix"), "{ x = 1; }\n").expect("write");
    kit.publish("prod", key, &v2, &[]).ok();
}

#[test]
fn diff_names_what_a_release_adds_removes_and_changes_with_a_patch() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    two_releases(&kit, &key);
    let url = kit.url("prod");
    let r = kit
        .run(&[
            "diff",
            "--remote",
            &url,
            "--trusted-key",
            &pubkey,
            "--patch",
            "--json",
        ])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        (j["from"].as_u64(), j["to"].as_u64()),
        (Some(1), Some(2)),
        "{j}"
    );
    let changes: Vec<(String, String)> = j["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["path"].as_str().expect("path").to_owned(),
                c["change"].as_str().expect("kind").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("conf.nix".to_owned(), "changed".to_owned()),
            ("gone.nix".to_owned(), "removed".to_owned()),
            ("new.nix".to_owned(), "added".to_owned()),
        ]
    );
    let patch = j["patches"][0]["patch"].as_str().expect("patch");
    assert!(patch.contains("-b\n") && patch.contains("+B\n"), "{patch}");
    // As a table for people.
    let r = kit
        .run(&[
            "diff",
            "--remote",
            &url,
            "--trusted-key",
            &pubkey,
            "--from",
            "1",
            "--to",
            "2",
        ])
        .ok();
    assert!(
        r.stdout.contains("1 added, 1 removed, 1 changed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("removed") && l.ends_with("gone.nix")),
        "{}",
        r.stdout
    );
}

#[test]
fn diff_refuses_a_release_the_trusted_keys_did_not_sign() {
    let kit = Kit::new();
    let (key, _pubkey) = kit.keygen("ci");
    two_releases(&kit, &key);
    let (_other, other_pub) = kit.keygen("other");
    let r = kit.run(&[
        "diff",
        "--remote",
        &kit.url("prod"),
        "--trusted-key",
        &other_pub,
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
}

#[test]
fn publish_dry_run_shows_the_statement_and_the_changes_and_uploads_nothing() {
    let kit = Kit::new();
    let (key, _pubkey) = kit.keygen("ci");
    let v1 = kit.flake("f1", "one");
    kit.publish("prod", &key, &v1, &[]).ok();
    let latest = fs::read(kit.store_path("prod", "latest")).expect("latest");
    let v2 = kit.flake("f2", "two");
    fs::write(v2.join("new.nix"), "{ }\n").expect("write");
    let r = kit
        .publish("prod", &key, &v2, &["--dry-run", "--json"])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["statement"]["version"], 2, "{j}");
    assert_eq!(j["added"], 1, "{j}");
    assert_eq!(j["changed"], 1, "hosts/web.nix: {j}");
    assert_eq!(
        fs::read(kit.store_path("prod", "latest")).expect("latest"),
        latest
    );
    assert!(!kit
        .store_path("prod", "releases/00000000000000000002")
        .exists());
}

#[test]
fn signer_sees_the_changes_and_a_change_list_that_lies_is_refused() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("f1", "one"), &[]).ok();
    let src = kit.flake("f2", "two");
    fs::write(src.join("new.nix"), "{ }\n").expect("write");
    let dir = kit.path("rel");
    kit.run(&[
        "release",
        "prepare",
        "--remote",
        &kit.url("prod"),
        "--out",
        dir.to_str().expect("utf8"),
        "--src",
        src.to_str().expect("utf8"),
        "--signer",
        &pubkey,
    ])
    .ok();
    let sign = |k: &Kit| k.run(&["sign", dir.to_str().expect("utf8"), "--key", &key, "--yes"]);
    let r = sign(&kit).ok();
    assert!(
        r.stderr
            .contains("What it changes against version 1 (1 added, 0 removed, 1 changed)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("added    new.nix"), "{}", r.stderr);
    // A compromised online machine claims a changed file was removed.
    for sig in fs::read_dir(&dir).expect("dir").flatten() {
        if sig.file_name().to_string_lossy().ends_with(".minisig") {
            fs::remove_file(sig.path()).expect("rm");
        }
    }
    let list = dir.join("changes.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&fs::read(&list).expect("list")).expect("json");
    c["changes"]
        .as_array_mut()
        .expect("changes")
        .retain(|x| x["path"] != "hosts/web.nix");
    c["changes"].as_array_mut().expect("changes").push(serde_json::json!({"path": "hosts/web.nix", "change": "removed", "old_size": 10, "new_size": null}));
    fs::write(&list, serde_json::to_vec(&c).expect("json")).expect("write");
    let r = sign(&kit);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("changes.json contradicts the archive"),
        "{}",
        r.stderr
    );
}
