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
        "flake.lock",
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

/// A tree whose tar stream spans several 4 MiB zstd jobs (about 14 MiB,
/// compressible but not trivially), so worker threads really share the work.
fn multi_job_tree(kit: &Kit, name: &str) -> std::path::PathBuf {
    let src = kit.flake(name, "threads");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for d in 0..4 {
        let dir = src.join(format!("data/d{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..7 {
            let mut bytes = Vec::with_capacity(512 << 10);
            while bytes.len() < (512 << 10) + f * 1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Small alphabet: compresses about 2:1, as source code does.
                bytes.push(b"abcdefghijklmnop \n{}=;"[(x % 22) as usize]);
            }
            fs::write(dir.join(format!("f{f}.nix")), bytes).expect("write");
        }
    }
    src
}

fn pack_with(kit: &Kit, src: &Path, out: &str, extra: &[&str]) -> (Vec<u8>, serde_json::Value) {
    let out = kit.path(out);
    let mut args = vec![
        "pack",
        "--all-files",
        "--src",
        src.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--json",
    ];
    args.extend_from_slice(extra);
    let r = kit.run(&args).ok();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    (fs::read(out).expect("archive"), json)
}

#[test]
fn pack_output_is_identical_for_1_2_and_4_threads() {
    let kit = Kit::new();
    let src = multi_job_tree(&kit, "src");
    let (one, j1) = pack_with(&kit, &src, "t1.tar.zst", &["--threads", "1"]);
    assert!(one.len() > 4 << 20, "the archive spans several zstd jobs");
    let blake3 = npcnix::format::statement::Digest::of(&one).to_hex();
    assert_eq!(
        j1["blake3"],
        blake3.as_str(),
        "the printed BLAKE3 is the file's"
    );
    for n in ["2", "4"] {
        let (bytes, j) = pack_with(&kit, &src, &format!("t{n}.tar.zst"), &["--threads", n]);
        assert!(
            bytes == one,
            "{n} threads gave different bytes than 1 thread"
        );
        assert_eq!(j["blake3"], j1["blake3"], "{n} threads");
        assert_eq!(j["size"], j1["size"], "{n} threads");
    }
    // The default (all cores) gives the same bytes too, and the archive is
    // one zstd frame the hardened extractor takes (it refuses anything else).
    let (default, _) = pack_with(&kit, &src, "default.tar.zst", &[]);
    assert!(
        default == one,
        "the default thread count gave different bytes"
    );
    let dst = kit.path("dst");
    fs::create_dir(&dst).expect("mkdir");
    let stats =
        npcnix::archive::extract(&one[..], &dst, &npcnix::archive::limits::Limits::default())
            .expect("a multithreaded archive extracts");
    assert_eq!(stats.files, 4 * 7 + 4);
    assert_eq!(
        fs::read(dst.join("data/d3/f6.nix")).expect("read"),
        fs::read(src.join("data/d3/f6.nix")).expect("read")
    );
}

#[test]
fn zero_threads_is_a_usage_error() {
    let kit = Kit::new();
    let src = kit.flake("f", "x");
    let r = kit.run(&[
        "pack",
        "--src",
        src.to_str().expect("utf8"),
        "--hash-only",
        "--threads",
        "0",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--threads"), "{}", r.stderr);
}

/// Releases packed before pack format v2 (a single-threaded zstd frame) are
/// still re-derived by `release check`, and still pulled.
#[test]
fn release_check_re_derives_an_archive_packed_in_the_old_format() {
    let kit = Kit::new();
    let src = multi_job_tree(&kit, "src");
    let (v1, _) = pack_with(&kit, &src, "v1.tar.zst", &["--pack-format", "v1"]);
    let (v2, _) = pack_with(&kit, &src, "v2.tar.zst", &[]);
    assert!(
        v1 != v2,
        "v1 and v2 frames differ (else there is no format to keep)"
    );
    let (_key, pubkey) = kit.keygen("release");
    for (name, fmt) in [("v1", "pack format v1"), ("v2", "pack format v2")] {
        let dir = kit.path(&format!("rel-{name}"));
        kit.run(&[
            "release",
            "prepare",
            "--remote",
            &kit.url("prod"),
            "--out",
            dir.to_str().expect("utf8"),
            "--archive",
            kit.path(&format!("{name}.tar.zst")).to_str().expect("utf8"),
            "--signer",
            &pubkey,
        ])
        .ok();
        let r = kit
            .run(&[
                "release",
                "check",
                dir.to_str().expect("utf8"),
                "--src",
                src.to_str().expect("utf8"),
                "--all-files",
                "--threads",
                "2",
            ])
            .ok();
        assert!(r.stdout.contains(fmt), "{name}: {}", r.stdout);
    }
    // A tree that changed is still refused.
    fs::write(src.join("data/d0/f0.nix"), "changed").expect("write");
    let r = kit.run(&[
        "release",
        "check",
        kit.path("rel-v1").to_str().expect("utf8"),
        "--src",
        src.to_str().expect("utf8"),
        "--all-files",
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
}

/// Extraction runs zstd on a thread that the confined extracting thread
/// spawns: that thread must be confined too (it inherits the Landlock
/// domain), so no thread of an extraction can write outside the target.
#[test]
fn thread_spawned_by_the_confined_extractor_cannot_write_outside() {
    use npcnix::archive::confine::{run_confined, Confinement, ConfinementPolicy};
    let kit = Kit::new();
    let inside = kit.path("tree");
    fs::create_dir(&inside).expect("mkdir");
    let outside = kit.path("escaped");
    let (i2, o2) = (inside.clone(), outside.clone());
    let (res, confinement) = run_confined(inside, ConfinementPolicy::BestEffort, move || {
        std::thread::spawn(move || {
            (
                fs::write(i2.join("file"), b"fine").is_ok(),
                fs::write(&o2, b"pwned").err().map(|e| e.kind()),
            )
        })
        .join()
        .expect("child thread")
    });
    let (ok_inside, outside_err) = res.expect("thread").expect("best effort runs");
    assert!(ok_inside, "the child thread can write inside");
    match confinement {
        Confinement::Enforced | Confinement::Partial => {
            assert_eq!(outside_err, Some(std::io::ErrorKind::PermissionDenied));
            assert!(
                !outside.exists(),
                "the child thread's write outside must not happen"
            );
        }
        Confinement::Unavailable(why) => {
            assert!(outside_err.is_none());
            skip(&format!(
                "the Landlock assertion for child threads: {why}; not blocked by the kernel here"
            ));
        }
    }
}

/// A large file spanning many 128 KiB chunks, and a burst of small files,
/// come out of the two-thread extractor byte for byte.
#[test]
fn two_thread_extraction_round_trips_large_and_small_files() {
    let kit = Kit::new();
    let src = multi_job_tree(&kit, "src");
    let big: Vec<u8> = (0..(3u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("big.bin"), &big).expect("write");
    for i in 0..500 {
        fs::write(src.join(format!("data/d0/s{i}")), format!("small {i}\n")).expect("write");
    }
    let (archive, _) = pack_with(&kit, &src, "a.tar.zst", &[]);
    let dst = kit.path("dst");
    fs::create_dir(&dst).expect("mkdir");
    let stats = npcnix::archive::extract(
        &archive[..],
        &dst,
        &npcnix::archive::limits::Limits::default(),
    )
    .expect("extracts");
    assert_eq!(stats.files, 4 * 7 + 4 + 1 + 500);
    assert!(
        fs::read(dst.join("big.bin")).expect("read") == big,
        "big.bin differs"
    );
    assert_eq!(
        fs::read_to_string(dst.join("data/d0/s499")).expect("read"),
        "small 499\n"
    );
}

/// Every file, directory and symlink of `a` is in `b` with the same bytes,
/// target and executable bit, and nothing else is.
fn assert_same_tree(a: &Path, b: &Path) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            let m = fs::symlink_metadata(&p).expect("metadata");
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).expect("link").display())
            } else if m.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else {
                let bytes = fs::read(&p).expect("read");
                let exec = m.permissions().mode() & 0o111 != 0;
                format!(
                    "file {} {} exec={exec}",
                    bytes.len(),
                    npcnix::format::statement::Digest::of(&bytes).to_hex()
                )
            };
            out.push((rel, what));
        }
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    walk(a, a, &mut x);
    walk(b, b, &mut y);
    assert_eq!(x.len(), y.len(), "entry counts differ");
    for (l, r) in x.iter().zip(&y) {
        assert_eq!(l, r);
    }
}

/// The writing thread takes entries in batches (256 KiB of contents, 256
/// operations, 32 KiB of paths): more entries than a batch holds, more
/// long paths than a batch's text holds, files of every size around a batch and
/// around the size below which a file is never split, an empty file
/// between them, directories and symlinks in between: the tree comes out
/// exactly as packed.
#[test]
fn extraction_round_trips_entries_across_every_batch_boundary() {
    let kit = Kit::new();
    let src = kit.flake("src", "batches");
    let gen = |n: usize, seed: u32| -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    };
    fs::create_dir_all(src.join("many")).expect("mkdir");
    for i in 0..700 {
        fs::write(src.join(format!("many/e{i:04}")), b"").expect("write");
    }
    // About 230 bytes of path each, twice per entry in a batch's text.
    let long = "n".repeat(200);
    fs::create_dir_all(src.join(&long)).expect("mkdir");
    for i in 0..300 {
        fs::write(src.join(format!("{long}/{long}{i:03}")), format!("{i}")).expect("write");
    }
    let k = 1usize << 10;
    let sizes = [
        1,
        64 * k - 1,
        64 * k,
        64 * k + 1,
        200 * k,
        256 * k - 1,
        256 * k,
        256 * k + 1,
        512 * k + 7,
        0,
        3,
        (1 << 20) + 12_345,
    ];
    for round in 0..2u32 {
        let d = src.join(format!("sizes{round}"));
        fs::create_dir_all(d.join("sub")).expect("mkdir");
        for (i, n) in sizes.iter().enumerate() {
            fs::write(d.join(format!("f{i:02}")), gen(*n, i as u32 + round)).expect("write");
            std::os::unix::fs::symlink(format!("f{i:02}"), d.join(format!("l{i:02}")))
                .expect("symlink");
        }
        let exe = d.join("sub/run");
        fs::write(&exe, gen(70 * k, 9)).expect("write");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let (archive, _) = pack_with(&kit, &src, "a.tar.zst", &[]);
    let dst = kit.path("dst");
    fs::create_dir(&dst).expect("mkdir");
    npcnix::archive::extract(
        &archive[..],
        &dst,
        &npcnix::archive::limits::Limits::default(),
    )
    .expect("extracts");
    assert_same_tree(&src, &dst);
}

/// A tree with every kind of entry (nested and empty directories, GNU long
/// names, symlinks, an executable, an empty file, names sorting around
/// `a/`) and file sizes around the reading thread's 256 KiB batches.
fn pinned_tree(kit: &Kit) -> std::path::PathBuf {
    let src = kit.path("pinned");
    let write = |rel: &str, data: &[u8], mode: u32| {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, data).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let gen = |n: u32| -> Vec<u8> {
        (0..n)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    };
    fs::create_dir_all(src.join("a/b/c")).expect("mkdir");
    write("flake.nix", b"{ outputs = { self }: { }; }\n", 0o644);
    for i in 0..300 {
        let text = format!("{{ n = {i}; }}\n").repeat(i % 17 + 1);
        write(&format!("a/b/f{i:03}.nix"), text.as_bytes(), 0o644);
    }
    for (name, n) in [
        ("a/batch", 256 << 10),
        ("a/batch1", (256 << 10) + 1),
        ("a/b/c/big", (1 << 20) + 12_345),
        ("a/empty", 0),
    ] {
        write(name, &gen(n), 0o644);
    }
    write("run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    write("a.txt", b"sorts before a/\n", 0o644);
    write("a-b/x", b"x\n", 0o644);
    write(
        &format!("{}/{}", "l".repeat(90), "m".repeat(120)),
        b"deep\n",
        0o644,
    );
    std::os::unix::fs::symlink("b/f001.nix", src.join("a/link")).expect("symlink");
    std::os::unix::fs::symlink("../../empty", src.join("a/b/c/up")).expect("symlink");
    fs::create_dir_all(src.join("a/emptydir")).expect("mkdir");
    src
}

/// The archive of a fixed tree is pinned to the bytes npcnix 0.1's pack
/// format v2 gave before packing moved to fd-relative walking and a
/// read-ahead thread: how files are found and read must never change the
/// bytes (a release re-derived by a newer npcnix must match).
#[test]
fn pinned_tree_packs_to_the_same_bytes_as_before_the_read_ahead_thread() {
    let kit = Kit::new();
    let src = pinned_tree(&kit);
    for threads in ["1", "2"] {
        let j = hash_of(&kit, &src, &["--all-files", "--threads", threads]);
        assert_eq!(
            j["blake3"], "6dcf162d7636a3fe3d144cf2b651714318fa00e8a3225de396ca2ff0b0597b85",
            "{threads} threads"
        );
        assert_eq!(j["size"], 127_231);
        assert_eq!(j["entries"], 317);
    }
}
