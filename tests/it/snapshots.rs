//! Snapshots of what the main commands print (stdout, stderr, exit code),
//! so that a change of wording is deliberate (issue 17 item 10). Each case
//! is `tests/it/snapshots/<name>.txt`; what varies between runs (the
//! scratch path, hashes, key IDs and keys, times, sizes) is replaced by a
//! placeholder. After an intended change, regenerate with
//! `NPCNIX_BLESS=1 cargo test --test it snapshots` and review the diff.
//!
//! A small harness of our own rather than trycmd/snapbox: the cases need a
//! kit (keys, a store, earlier commands) that a static command file cannot
//! set up, and the normalisation is a few lines.

use std::path::PathBuf;

use crate::common::{Kit, Run};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots")
}

/// Replaces what differs between runs with placeholders.
fn normalise(text: &str, kit: &Kit) -> String {
    let root = kit.path("");
    let root = root.to_str().expect("utf8").trim_end_matches('/');
    let text = text.replace(root, "[TMP]");
    let mut out = String::new();
    for line in text.lines() {
        let mut words: Vec<String> = line.split(' ').map(normalise_word).collect();
        // A table's "1.2 KiB" -> "[SIZE]"
        for i in 1..words.len() {
            let unit = ["B", "KiB", "MiB", "GiB"].contains(&words[i].as_str());
            if unit && (words[i - 1].parse::<f64>().is_ok() || words[i - 1] == "[SIZE]") {
                words[i - 1] = "[SIZE]".into();
                words[i] = String::new();
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    // "1.2 KiB ([SIZE] bytes)" -> "[SIZE]"
    for unit in ["KiB", "MiB", "GiB"] {
        while let Some(at) = out.find(&format!(" {unit} ([SIZE] bytes)")) {
            let start = out[..at].rfind(' ').map_or(0, |i| i + 1);
            let end = at + format!(" {unit} ([SIZE] bytes)").len();
            out.replace_range(start..end, "[SIZE]");
        }
    }
    out.replace("[SIZE] bytes", "[SIZE]")
}

fn normalise_word(w: &str) -> String {
    let core = w.trim_matches(|c: char| "(),;:'\"".contains(c));
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let replacement = if core.len() == 64 && is_hex(core) {
        Some("[HASH]")
    } else if core.len() == 16 && is_hex(core) && core.bytes().any(|b| b.is_ascii_digit()) {
        Some("[KEYID]")
    } else if core.starts_with("RW") && core.len() == 56 {
        Some("[PUBKEY]")
    } else if core.len() == 20 && core.as_bytes().get(10) == Some(&b'T') && core.ends_with('Z') {
        Some("[TIME]")
    } else if !core.is_empty() && core.bytes().all(|b| b.is_ascii_digit()) && core.len() >= 3 {
        Some("[SIZE]")
    } else {
        None
    };
    match replacement {
        Some(r) if !core.is_empty() => w.replacen(core, r, 1),
        _ => w.to_owned(),
    }
}

#[track_caller]
fn snapshot(name: &str, kit: &Kit, args: &[&str]) -> Run {
    let r = kit.run(args);
    let shown: Vec<String> = args
        .iter()
        .map(|a| normalise(a, kit).trim_end().to_owned())
        .collect();
    let got = format!(
        "$ npcnix {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        shown.join(" "),
        r.code,
        normalise(&r.stdout, kit),
        normalise(&r.stderr, kit)
    );
    let path = dir().join(format!("{name}.txt"));
    if std::env::var("NPCNIX_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(dir()).expect("mkdir");
        std::fs::write(&path, &got).expect("write snapshot");
        return r;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with NPCNIX_BLESS=1 to create it. Output:\n{got}",
            path.display()
        )
    });
    assert_eq!(
        got,
        want,
        "output of {name} changed (NPCNIX_BLESS=1 regenerates {}; review the diff)",
        path.display()
    );
    r
}

#[test]
fn main_commands_print_what_the_snapshots_show() {
    let kit = Kit::new();
    let k = |rel: &str| kit.path(rel).to_str().expect("utf8").to_owned();
    let url = kit.url("prod");
    snapshot(
        "keygen",
        &kit,
        &["keygen", "--out", &k("ci"), "--unencrypted"],
    );
    snapshot(
        "keygen-other",
        &kit,
        &["keygen", "--out", &k("other"), "--unencrypted"],
    );
    let flake = kit.flake("flake", "one");
    let f = flake.to_str().expect("utf8");
    snapshot(
        "pull-empty-remote",
        &kit,
        &[
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &k("ci.pub"),
            "--dst",
            &k("d0"),
        ],
    );
    snapshot(
        "pack",
        &kit,
        &["pack", "--src", f, "--out", &k("release.tar.zst")],
    );
    snapshot(
        "publish",
        &kit,
        &[
            "publish",
            "--remote",
            &url,
            "--key",
            &k("ci.key"),
            "--src",
            f,
            "--expires",
            "30d",
        ],
    );
    snapshot(
        "pull",
        &kit,
        &[
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &k("ci.pub"),
            "--dst",
            &k("d1"),
        ],
    );
    snapshot(
        "pull-wrong-key",
        &kit,
        &[
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &k("other.pub"),
            "--dst",
            &k("d2"),
        ],
    );
    snapshot(
        "verify",
        &kit,
        &[
            "verify",
            "--bundle",
            &k("store/prod/latest"),
            "--archive",
            &k("release.tar.zst"),
            "--trusted-key",
            &k("ci.pub"),
        ],
    );
    snapshot(
        "log",
        &kit,
        &["log", "--remote", &url, "--trusted-key", &k("ci.pub")],
    );
    snapshot(
        "usage-bad-scheme",
        &kit,
        &[
            "pull",
            "--remote",
            "s4://bucket/prod",
            "--trusted-key",
            &k("ci.pub"),
            "--dst",
            &k("d3"),
        ],
    );
    snapshot("usage-bad-duration", &kit, &["pause", "--for", "banana"]);
    snapshot(
        "publish-missing-src",
        &kit,
        &[
            "publish",
            "--remote",
            &url,
            "--key",
            &k("ci.key"),
            "--src",
            &k("nope"),
        ],
    );
}
