//! Deterministic packing: the same tree gives the same bytes whatever the
//! mtimes, permissions beyond the exec bit, umask or location; git work
//! trees pack what git tracks; what cannot be deployed is refused.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn hash_of(kit: &Kit, src: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "pack",
        "--src",
        src.to_str().expect("utf8"),
        "--hash-only",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&kit.run(&args).ok().stdout).expect("json")
}

fn set_mtime(path: &Path, secs: i64) {
    let ok = Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}")])
        .arg(path)
        .status()
        .expect("touch")
        .success();
    assert!(ok);
}

#[test]
fn same_tree_with_different_mtimes_modes_and_umask_packs_identically() {
    let kit = Kit::new();
    let a = kit.flake("a", "same");
    // Build the second copy under a different umask, with other mtimes and
    // group/other permission bits.
    let b = kit.path("b");
    let status = Command::new("sh")
        .args([
            "-c",
            &format!(
                "umask 077 && cp -r --no-preserve=mode,timestamps {} {}",
                a.display(),
                b.display()
            ),
        ])
        .status()
        .expect("cp");
    assert!(status.success());
    fs::set_permissions(b.join("deploy.sh"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::set_permissions(b.join("flake.nix"), fs::Permissions::from_mode(0o664)).expect("chmod");
    for p in [
        "flake.nix",
        "hosts/web.nix",
        "hosts",
        "deploy.sh",
        "default-host.nix",
    ] {
        set_mtime(&b.join(p), 1_000_000_000);
    }
    let ha = hash_of(&kit, &a, &[]);
    let hb = hash_of(&kit, &b, &[]);
    assert_eq!(ha["blake3"], hb["blake3"]);
    assert_eq!(ha["size"], hb["size"]);

    // --out writes exactly the bytes --hash-only describes.
    let out = kit.pack(&b, "b.tar.zst");
    let aref = npcnix::publish::hash_file(&out).expect("hash");
    assert_eq!(serde_json::json!(aref.blake3.to_hex()), ha["blake3"]);

    // A content change, or losing the exec bit, changes the hash.
    fs::set_permissions(b.join("deploy.sh"), fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_ne!(hash_of(&kit, &b, &[])["blake3"], ha["blake3"]);
}

#[test]
fn git_work_tree_packs_only_tracked_files() {
    if !require_tool("git") {
        return;
    }
    let kit = Kit::new();
    let src = kit.flake("repo", "git");
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&src)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git");
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&[
        "add",
        "flake.nix",
        "hosts/web.nix",
        "deploy.sh",
        "default-host.nix",
    ]);
    git(&["commit", "-q", "-m", "init"]);
    let tracked = hash_of(&kit, &src, &[]);
    assert_eq!(tracked["git_tracked_only"], true);

    // An untracked secret is not packed (Nix would not see it either)...
    fs::write(src.join("secret.key"), "do not ship").expect("write");
    assert_eq!(hash_of(&kit, &src, &[])["blake3"], tracked["blake3"]);
    // ...unless --all-files asks for everything.
    let all = hash_of(&kit, &src, &["--all-files"]);
    assert_ne!(all["blake3"], tracked["blake3"]);
    assert_eq!(all["entries"], tracked["entries"].as_u64().expect("n") + 1);

    // The packed tree is the same as packing a plain copy of the tracked files.
    let plain = kit.flake("plain", "git");
    assert_eq!(hash_of(&kit, &plain, &[])["blake3"], tracked["blake3"]);

    // Records the commit in the statement when publishing from git.
    let (key, pubkey) = kit.keygen("k");
    kit.publish("prod", &key, &src, &[]).ok();
    let url = kit.url("prod");
    let log = kit
        .run(&["log", "--remote", &url, "--trusted-key", &pubkey, "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&log.stdout).expect("json");
    assert_eq!(
        v["releases"][0]["source_commit"].as_str().map(str::len),
        Some(40)
    );
}

#[test]
fn untracked_flake_nix_is_refused() {
    if !require_tool("git") {
        return;
    }
    let kit = Kit::new();
    let src = kit.flake("repo", "x");
    assert!(Command::new("git")
        .arg("-C")
        .arg(&src)
        .args(["init", "-q"])
        .status()
        .expect("git")
        .success());
    let r = kit.run(&["pack", "--src", src.to_str().expect("utf8"), "--hash-only"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not tracked by git"), "{}", r.stderr);
}

#[test]
fn directory_without_flake_nix_is_refused() {
    let kit = Kit::new();
    let dir = kit.path("notaflake");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("default.nix"), "{}").expect("write");
    let r = kit.run(&[
        "pack",
        "--src",
        dir.to_str().expect("utf8"),
        "--out",
        "x.tar.zst",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no flake.nix"), "{}", r.stderr);
    assert!(!kit.path("x.tar.zst").exists());
}

#[test]
fn symlink_pointing_outside_the_tree_is_not_packed() {
    let kit = Kit::new();
    let src = kit.flake("f", "x");
    std::os::unix::fs::symlink("/etc/passwd", src.join("passwd")).expect("symlink");
    let r = kit.run(&["pack", "--src", src.to_str().expect("utf8"), "--hash-only"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("passwd"), "{}", r.stderr);
    fs::remove_file(src.join("passwd")).expect("rm");
    std::os::unix::fs::symlink("../../outside", src.join("hosts/up")).expect("symlink");
    let r = kit.run(&["pack", "--src", src.to_str().expect("utf8"), "--hash-only"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("escapes"), "{}", r.stderr);
}

#[test]
fn fifo_in_the_tree_is_not_packed() {
    let kit = Kit::new();
    let src = kit.flake("f", "x");
    assert!(Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .expect("mkfifo")
        .success());
    let r = kit.run(&["pack", "--src", src.to_str().expect("utf8"), "--hash-only"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("only regular files"), "{}", r.stderr);
}

#[test]
fn long_paths_round_trip_through_gnu_long_names() {
    let kit = Kit::new();
    let src = kit.flake("f", "x");
    let deep = src.join("a".repeat(90)).join("b".repeat(90));
    fs::create_dir_all(&deep).expect("mkdir");
    fs::write(deep.join("c".repeat(120)), "deep").expect("write");
    let (key, pubkey) = kit.keygen("k");
    kit.publish("prod", &key, &src, &[]).ok();
    kit.pull("prod", &pubkey, "dst", &[]).ok();
    let got = kit
        .path("dst")
        .join("a".repeat(90))
        .join("b".repeat(90))
        .join("c".repeat(120));
    assert_eq!(fs::read_to_string(got).expect("read"), "deep");
}

#[test]
fn pack_refuses_tracked_file_below_symlinked_dir() {
    if !require_tool("git") {
        return;
    }
    let kit = Kit::new();
    let src = kit.flake("repo", "x");
    let secret_dir = kit.path("home-ssh");
    fs::create_dir_all(&secret_dir).expect("mkdir");
    fs::write(secret_dir.join("id"), "PRIVATE KEY").expect("write");
    let git = |args: &[&str]| {
        assert!(Command::new("git")
            .arg("-C")
            .arg(&src)
            .args(args)
            .output()
            .expect("git")
            .status
            .success())
    };
    git(&["init", "-q"]);
    fs::create_dir_all(src.join("foo")).expect("mkdir");
    fs::write(src.join("foo/id"), "innocent").expect("write");
    git(&["add", "."]);
    // Now swap the tracked directory for a symlink to the secrets.
    fs::remove_dir_all(src.join("foo")).expect("rm");
    std::os::unix::fs::symlink(&secret_dir, src.join("foo")).expect("symlink");
    let r = kit.run(&["pack", "--src", src.to_str().expect("utf8"), "--hash-only"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("not a real directory"), "{}", r.stderr);
}
