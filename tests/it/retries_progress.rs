//! Issue 17 item 5: operator commands retry transient store errors a
//! bounded number of times and say so; long operations show progress on a
//! terminal only (or when forced with `NPCNIX_PROGRESS=always`).

use std::sync::atomic::Ordering;

use crate::common::httpd::Httpd;
use crate::common::Kit;

/// A kit with a release of `flake` published to `prod` on its file store.
fn published(kit: &Kit) -> String {
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("f", "one"), &[]).ok();
    pubkey
}

#[test]
fn a_briefly_overloaded_mirror_is_retried_and_each_retry_is_announced() {
    let kit = Kit::new();
    let pubkey = published(&kit);
    let httpd = Httpd::serve(kit.path("store"));
    httpd.fail_next.store(2, Ordering::SeqCst);
    let dst = kit.path("out");
    let r = kit.run(&[
        "pull",
        "--remote",
        &httpd.url("prod"),
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let retries: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("retrying"))
        .collect();
    assert_eq!(retries.len(), 2, "{}", r.stderr);
    assert!(
        retries[0].starts_with("npcnix: warning: retrying (attempt 2/3) in ")
            && retries[0].contains(" s after: ")
            && retries[0].contains("latest")
            && retries[0].contains("503"),
        "{}",
        retries[0]
    );
    assert!(retries[1].contains("(attempt 3/3)"), "{}", retries[1]);
    assert!(dst.join("flake.nix").exists());
}

#[test]
fn retries_are_bounded_and_can_be_turned_off() {
    let kit = Kit::new();
    let pubkey = published(&kit);
    let httpd = Httpd::serve(kit.path("store"));
    httpd.fail_next.store(1000, Ordering::SeqCst);
    let dst = kit.path("out");
    let pull = |retries: &str| {
        kit.run(&[
            "pull",
            "--remote",
            &httpd.url("prod"),
            "--trusted-key",
            &pubkey,
            "--dst",
            dst.to_str().expect("utf8"),
            "--retries",
            retries,
        ])
    };
    let r = pull("0");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("retrying"), "{}", r.stderr);
    assert!(r.stderr.contains("503"), "{}", r.stderr);
    assert_eq!(httpd.count(), 1, "one attempt");
    let r = pull("1");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("retrying (attempt 2/2)").count(),
        1,
        "{}",
        r.stderr
    );
    assert_eq!(httpd.count(), 3, "two more attempts, then it gave up");
    assert!(!dst.exists());
    // An answer is not retried: a missing remote is said at once.
    httpd.fail_next.store(0, Ordering::SeqCst);
    let r = kit.run(&[
        "pull",
        "--remote",
        &httpd.url("nothing-here"),
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 1);
    assert!(!r.stderr.contains("retrying"), "{}", r.stderr);
    assert!(r.stderr.contains("no release published"), "{}", r.stderr);
}

/// A flake with `mib` MiB of incompressible data, so its archive is large
/// enough for transfer progress.
fn big_flake(kit: &Kit, mib: usize) -> std::path::PathBuf {
    let dir = kit.flake("big", "big");
    let mut data = vec![0u8; mib << 20];
    blake3::Hasher::new()
        .update(b"npcnix progress test")
        .finalize_xof()
        .fill(&mut data);
    std::fs::write(dir.join("blob.bin"), data).expect("write");
    dir
}

const ERASE: &str = "\r\x1b[2K";

#[test]
fn no_progress_escape_codes_reach_a_stderr_that_is_not_a_terminal() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    let src = big_flake(&kit, 2);
    let s = src.to_str().expect("utf8");
    let out = kit.path("a.tar.zst");
    let dst = kit.path("out");
    let url = kit.url("prod");
    for args in [
        vec!["pack", "--src", s, "--out", out.to_str().expect("utf8")],
        vec!["publish", "--remote", &url, "--key", &key, "--src", s],
        vec![
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &pubkey,
            "--dst",
            dst.to_str().expect("utf8"),
        ],
    ] {
        let r = kit.run(&args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains('\r') && !r.stderr.contains('\x1b'),
            "{args:?}: {:?}",
            r.stderr
        );
    }
}

#[test]
fn forced_progress_shows_packing_uploads_downloads_and_extraction() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    let src = big_flake(&kit, 2);
    let s = src.to_str().expect("utf8");
    let url = kit.url("prod");
    let run = |args: &[&str]| {
        let r = crate::common::Run::from(
            kit.cmd()
                .env("NPCNIX_PROGRESS", "always")
                .args(args)
                .output()
                .expect("run"),
        );
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        r
    };
    let r = run(&["pack", "--src", s, "--hash-only", "--json"]);
    assert!(
        r.stderr.contains(ERASE) && r.stderr.contains("packing: "),
        "{:?}",
        r.stderr
    );
    // stdout is untouched: the JSON still parses.
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert!(v["size"].as_u64().is_some_and(|n| n > 2 << 20));
    // The line is erased at the end: the last thing on stderr is the erase.
    assert!(r.stderr.ends_with(ERASE), "{:?}", r.stderr);

    let r = run(&["publish", "--remote", &url, "--key", &key, "--src", s]);
    assert!(r.stderr.contains("uploading archive "), "{:?}", r.stderr);
    let dst = kit.path("out");
    let r = run(&[
        "pull",
        "--remote",
        &url,
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ]);
    // Verified streaming: the archive is extracted as it downloads, one
    // progress line for both (issue 36).
    assert!(r.stderr.contains("downloading archive "), "{:?}", r.stderr);
    assert!(!r.stderr.contains("extracting: "), "{:?}", r.stderr);
    // Messages are whole lines: a progress line is erased before one.
    for line in r.stderr.split(ERASE) {
        if let Some(at) = line.find("npcnix:") {
            assert!(
                at == 0 || line[..at].ends_with('\n'),
                "a message mixed into a progress line: {line:?}"
            );
        }
    }

    // -q: nothing, even when forced.
    let r = crate::common::Run::from(
        kit.cmd()
            .env("NPCNIX_PROGRESS", "always")
            .args(["-q", "pack", "--src", s, "--hash-only"])
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0);
    assert!(!r.stderr.contains('\x1b'), "{:?}", r.stderr);
}

#[test]
fn key_derivation_shows_a_spinner() {
    let kit = Kit::new();
    let out = kit.path("enc");
    let r = crate::common::Run::from(
        kit.cmd()
            .env("NPCNIX_PROGRESS", "always")
            .env("NPCNIX_PASSPHRASE", "correct horse")
            .args(["keygen", "--out", out.to_str().expect("utf8")])
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("deriving the encryption key (scrypt)"),
        "{:?}",
        r.stderr
    );
}

#[test]
fn progress_is_drawn_on_a_terminal_and_not_with_quiet() {
    if !crate::common::require_tool("script") {
        return;
    }
    let kit = Kit::new();
    let src = kit.flake("f", "one");
    // util-linux `script` runs the command on a pseudo-terminal and copies
    // what it writes (stdout and stderr) to its own stdout.
    let on_a_tty = |flags: &str| {
        let line = format!(
            "{} {flags} pack --src {} --hash-only",
            crate::common::BIN,
            src.display()
        );
        let o = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("NPCNIX_PROGRESS")
            .current_dir(kit.path(""))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script");
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let shown = on_a_tty("");
    assert!(shown.contains("packing: "), "{shown:?}");
    assert!(
        shown.contains("blake3:"),
        "the result is there too: {shown:?}"
    );
    let quiet = on_a_tty("-q");
    assert!(
        !quiet.contains("packing: ") && !quiet.contains('\x1b'),
        "{quiet:?}"
    );
    assert!(quiet.contains("blake3:"), "{quiet:?}");
}

#[test]
fn a_download_that_breaks_mid_body_is_resumed_and_verified() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &big_flake(&kit, 2), &[]).ok();
    let httpd = Httpd::serve(kit.path("store"));
    httpd.cut_next_body.store(1, Ordering::SeqCst);
    let dst = kit.path("out");
    let r = kit.run(&[
        "pull",
        "--remote",
        &httpd.url("prod"),
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("retrying (attempt 2/3)") && r.stderr.contains("download broke after"),
        "{}",
        r.stderr
    );
    assert_eq!(
        httpd.cut_next_body.load(Ordering::SeqCst),
        0,
        "it did break"
    );
    assert_eq!(
        std::fs::read(dst.join("blob.bin")).expect("read").len(),
        2 << 20,
        "the whole tree, hash-checked"
    );
}
