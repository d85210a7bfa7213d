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
    assert_eq!(r.code, 1, "{}", r.stderr);
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
