//! What is signed is what every host builds (issue 30). A flake whose
//! packed `flake.lock` does not pin every input it names is refused by
//! every publisher path (`pack`, `publish`, `release prepare`, `--archive`);
//! the statement records the hash of the lock the archive ships, and `sign`
//! and `release check` compare the two; hosts evaluate with exactly that
//! lock (`--no-update-lock-file --no-write-lock-file`, pure), so an archive
//! whose lock is incomplete fails instead of fetching on each host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use npcnix::format::statement::Digest;

use crate::common::host::Host;
use crate::common::*;

/// A flake that takes nixpkgs from a moving branch.
const BRANCH_INPUT: &str = r#"{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  outputs = { self, nixpkgs }: { };
}
"#;

/// A lock pinning `nixpkgs` (as `nix flake lock` writes it).
const NIXPKGS_LOCK: &str = r#"{
  "nodes": {
    "nixpkgs": {
      "locked": {
        "lastModified": 1733000000,
        "narHash": "sha256-4XEVRiTmDtpZ5lZPYp0FIkqV2rrJOnnkYs3Tfn9gDrs=",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1",
        "type": "github"
      },
      "original": {
        "owner": "NixOS",
        "ref": "nixos-unstable",
        "repo": "nixpkgs",
        "type": "github"
      }
    },
    "root": {
      "inputs": {
        "nixpkgs": "nixpkgs"
      }
    }
  },
  "root": "root",
  "version": 7
}
"#;

/// `Kit::flake` with `flake.nix` replaced and the lock set (`None`: no
/// lock at all).
fn flake_with(kit: &Kit, name: &str, flake_nix: &str, lock: Option<&str>) -> PathBuf {
    let dir = kit.flake(name, name);
    fs::write(dir.join("flake.nix"), flake_nix).expect("write");
    match lock {
        Some(l) => fs::write(dir.join("flake.lock"), l).expect("write"),
        None => fs::remove_file(dir.join("flake.lock")).expect("rm"),
    }
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// `pack`, `publish` and `release prepare` of `src` all fail with exit 1,
/// a message containing `needle`, and nothing written.
#[track_caller]
fn refused_everywhere(kit: &Kit, src: &Path, needle: &str) {
    let out = kit.path("refused.tar.zst");
    let r = kit.run(&["pack", "--src", s(src), "--out", s(&out)]);
    assert_eq!(r.code, 1, "pack: {}", r.stderr);
    assert!(r.stderr.contains(needle), "pack: {}", r.stderr);
    assert!(!out.exists(), "pack left the refused archive at --out");
    let r = kit.run(&["pack", "--src", s(src), "--hash-only"]);
    assert_eq!(r.code, 1, "pack --hash-only: {}", r.stderr);

    let name = src
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let (key, pubkey) = kit.keygen(&format!("ci-{name}"));
    let r = kit.publish("prod", &key, src, &[]);
    assert_eq!(r.code, 1, "publish: {}", r.stderr);
    assert!(r.stderr.contains(needle), "publish: {}", r.stderr);
    assert!(
        !kit.path("store/prod").exists(),
        "publish wrote to the store"
    );

    let dir = kit.path(&format!("prepared-{name}"));
    let r = kit.run(&[
        "release",
        "prepare",
        "--remote",
        &kit.url("prod"),
        "--out",
        s(&dir),
        "--src",
        s(src),
        "--signer",
        &pubkey,
    ]);
    assert_eq!(r.code, 1, "release prepare: {}", r.stderr);
    assert!(r.stderr.contains(needle), "release prepare: {}", r.stderr);
    assert!(!dir.join("statement.json").exists());
}

#[test]
fn flake_following_an_upstream_branch_without_a_lock_is_refused() {
    // The reproduction: host A and host B, given the same signed release,
    // built different systems because each resolved nixpkgs itself.
    let kit = Kit::new();
    let src = flake_with(&kit, "branch", BRANCH_INPUT, None);
    refused_everywhere(&kit, &src, "nix flake lock");
}

#[test]
fn lock_left_out_of_git_is_refused_with_the_fix() {
    // The lock exists in the work tree but was never `git add`ed: before,
    // it was silently left out of the archive (while the statement
    // recorded its hash).
    if !require_tool("git") {
        return;
    }
    let kit = Kit::new();
    let src = flake_with(&kit, "untracked", BRANCH_INPUT, Some(NIXPKGS_LOCK));
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-C"])
            .arg(&src)
            .args(args)
            .output()
            .expect("git");
        assert!(st.status.success(), "git {args:?}: {st:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "flake.nix", "hosts", "deploy.sh", "default-host.nix"]);
    git(&["commit", "-qm", "flake"]);
    refused_everywhere(&kit, &src, "git add flake.lock");
    git(&["add", "flake.lock"]);
    git(&["commit", "-qm", "lock"]);
    kit.run(&["pack", "--src", s(&src), "--hash-only"]).ok();
}

#[test]
fn lock_without_a_newly_added_input_is_refused() {
    // A new input added to flake.nix after the last `nix flake lock`: the
    // lock pins nixpkgs, the host would resolve home-manager itself.
    if !require_tool("nix-instantiate") {
        return;
    }
    let kit = Kit::new();
    let flake = r#"{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  inputs.home-manager.url = "github:nix-community/home-manager";
  outputs = { self, nixpkgs, home-manager }: { };
}
"#;
    let src = flake_with(&kit, "added", flake, Some(NIXPKGS_LOCK));
    refused_everywhere(&kit, &src, "home-manager");
    // An input named only as an argument of `outputs` comes from the
    // registry: it needs a lock entry as much.
    let src = flake_with(
        &kit,
        "registry",
        "{ outputs = { self, nixpkgs, utils }: { }; }\n",
        Some(NIXPKGS_LOCK),
    );
    refused_everywhere(&kit, &src, "utils");
    // `outputs` in another file is read from the archive too.
    let src = flake_with(
        &kit,
        "imported",
        "{ inputs.nixpkgs.url = \"github:NixOS/nixpkgs\"; outputs = import ./outputs.nix; }\n",
        Some(NIXPKGS_LOCK),
    );
    fs::write(src.join("outputs.nix"), "{ self, nixpkgs, sops }: { }\n").expect("write");
    refused_everywhere(&kit, &src, "sops");
}

#[test]
fn lock_entry_that_pins_nothing_is_refused() {
    // A hand-edited (or very old) lock whose entry names a branch only.
    let kit = Kit::new();
    let lock = NIXPKGS_LOCK
        .replace(
            r#""narHash": "sha256-4XEVRiTmDtpZ5lZPYp0FIkqV2rrJOnnkYs3Tfn9gDrs=","#,
            "",
        )
        .replace(r#""rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1","#, "");
    let src = flake_with(&kit, "unpinned", BRANCH_INPUT, Some(&lock));
    refused_everywhere(&kit, &src, "pins nothing for nixpkgs");
}

#[test]
fn flake_without_inputs_needs_no_lock() {
    if !require_tool("nix-instantiate") {
        return;
    }
    let kit = Kit::new();
    let src = flake_with(&kit, "bare", "{ outputs = { self }: { }; }\n", None);
    let r = kit
        .run(&["pack", "--src", s(&src), "--hash-only", "--json"])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(j["flake_lock_blake3"], serde_json::Value::Null, "{j}");
    let (key, _) = kit.keygen("ci");
    kit.publish("prod", &key, &src, &[]).ok();
}

#[test]
fn archive_from_elsewhere_is_held_to_the_same_rule() {
    // `publish --archive` of a tar.zst made by other tools: the flake in it
    // is checked exactly as a packed one.
    if !require_tool("tar") || !require_tool("zstd") {
        return;
    }
    let kit = Kit::new();
    let src = flake_with(&kit, "elsewhere", BRANCH_INPUT, None);
    let archive = kit.path("elsewhere.tar.zst");
    let st = Command::new("sh")
        .arg("-c")
        .arg(r#"tar --sort=name --owner=0 --group=0 -C "$1" -cf - flake.nix hosts | zstd -q -o "$2""#)
        .args(["sh", s(&src), s(&archive)])
        .status()
        .expect("tar");
    assert!(st.success());
    let (key, _) = kit.keygen("ci");
    let r = kit.run(&[
        "publish",
        "--remote",
        &kit.url("prod"),
        "--key",
        &key,
        "--archive",
        s(&archive),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("nix flake lock"), "{}", r.stderr);
    assert!(!kit.path("store/prod").exists());
}

/// `log --json`'s one release.
fn logged(kit: &Kit, pubkey: &str) -> serde_json::Value {
    let r = kit
        .run(&[
            "log",
            "--remote",
            &kit.url("prod"),
            "--trusted-key",
            pubkey,
            "--json",
        ])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    j["releases"][0].clone()
}

#[test]
fn statement_records_the_lock_the_archive_ships() {
    let kit = Kit::new();
    let src = flake_with(&kit, "locked", BRANCH_INPUT, Some(NIXPKGS_LOCK));
    let want = Digest::of(NIXPKGS_LOCK.as_bytes()).to_hex();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &src, &[]).ok();
    assert_eq!(logged(&kit, &pubkey)["source_flake_lock"], want.as_str());

    // --archive: the hash comes from the archive itself, the commit from
    // --git-commit (what remote_s3_upload passes).
    let kit = Kit::new();
    let archive = kit.pack(&src, "locked.tar.zst");
    let (key, pubkey) = kit.keygen("ci");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    kit.run(&[
        "publish",
        "--remote",
        &kit.url("prod"),
        "--key",
        &key,
        "--archive",
        s(&archive),
        "--git-commit",
        commit,
    ])
    .ok();
    let e = logged(&kit, &pubkey);
    assert_eq!(e["source_flake_lock"], want.as_str(), "{e}");
    assert_eq!(e["source_commit"], commit, "{e}");
    // A commit is only taken for an archive: with --src it is read from
    // the checkout.
    let r = kit.run(&[
        "publish",
        "--remote",
        &kit.url("prod"),
        "--key",
        &key,
        "--src",
        s(&src),
        "--git-commit",
        commit,
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn forged_lock_hash_in_a_prepared_statement_is_refused_by_sign_and_check() {
    // Whoever prepares the release (or edits the USB stick) records a lock
    // hash the archive does not ship: the provenance a signer and later an
    // auditor read would send them to the wrong lock.
    let kit = Kit::new();
    let src = flake_with(&kit, "forged", BRANCH_INPUT, Some(NIXPKGS_LOCK));
    let (key, pubkey) = kit.keygen("release");
    let dir = kit.path("rel");
    kit.run(&[
        "release",
        "prepare",
        "--remote",
        &kit.url("prod"),
        "--out",
        s(&dir),
        "--src",
        s(&src),
        "--signer",
        &pubkey,
    ])
    .ok();
    let st_path = dir.join("statement.json");
    let text = fs::read_to_string(&st_path).expect("statement");
    let real = Digest::of(NIXPKGS_LOCK.as_bytes()).to_hex();
    assert!(
        text.contains(&real),
        "the statement records the packed lock"
    );

    // Untouched: sign shows the lock as checked, release check agrees.
    let r = kit
        .run(&["release", "check", s(&dir), "--src", s(&src), "--json"])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(j["flake_lock_blake3"], real.as_str());
    assert_eq!(j["flake_lock_recorded"], true);

    let forged = Digest::of(b"a lock nobody reviewed").to_hex();
    fs::write(&st_path, text.replace(&real, &forged)).expect("write");
    let r = kit.run(&["sign", s(&dir), "--key", &key, "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("records flake.lock"), "{}", r.stderr);
    assert!(
        fs::read_dir(&dir).expect("dir").all(|e| !e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with(".minisig")),
        "signed anyway"
    );
    let r = kit.run(&["release", "check", s(&dir), "--src", s(&src)]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("records flake.lock"), "{}", r.stderr);
}

#[test]
fn hosts_evaluate_only_the_lock_they_were_given() {
    // Every nixos-rebuild a flake host runs (the inspection build and the
    // activation, in each mode) carries the flags that make an incomplete
    // lock an error instead of a fetch.
    for mode in ["switch", "test", "boot", "dry-activate"] {
        let h = Host::with(|c| c["activation"]["mode"] = mode.into());
        h.publish("v1");
        let (label, r) = h.once();
        assert_eq!(label, "activated", "{mode}: {}", r.stderr);
        let calls: Vec<String> = h
            .rebuild_log()
            .lines()
            .filter(|l| l.contains("--flake "))
            .map(str::to_owned)
            .collect();
        assert!(!calls.is_empty(), "{mode}: no nixos-rebuild call");
        assert!(
            calls
                .iter()
                .any(|l| l.starts_with(&format!("start {mode} "))),
            "{mode}: {calls:?}"
        );
        for l in &calls {
            assert!(
                l.contains(" --no-update-lock-file --option pure-eval true"),
                "{mode}: {l}"
            );
        }
    }
}

/// Nix settings for an offline machine: no substituter, no sandbox, flakes
/// on, one download attempt.
const NIX_CONFIG: &str = "substituters =\nsandbox = false\nbuild-users-group =\nexperimental-features = nix-command flakes\ndownload-attempts = 1\n";

#[test]
fn host_given_an_archive_with_an_unlocked_input_fetches_nothing() {
    // An archive whose lock does not pin an input (made before this check,
    // or by hand), signed and served: the host refuses it before anything
    // evaluates it, and nothing is fetched. Real Nix reads flake.nix; the
    // input is a real tarball on a local HTTP server that counts requests.
    if !require_tool("nix") || !require_tool("nix-instantiate") || !require_tool("tar") {
        return;
    }
    let h = Host::with(|c| {
        c["activation"]["extra_substituters"] = serde_json::json!([]);
        c["activation"]["extra_trusted_public_keys"] = serde_json::json!([]);
    });
    let www = h.kit.path("www");
    fs::create_dir_all(www.join("up")).expect("mkdir");
    fs::write(www.join("up/file"), "whatever the branch says today\n").expect("write");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&www)
        .args(["-czf", "upstream.tar.gz", "up"])
        .current_dir(&www)
        .status()
        .expect("tar");
    assert!(st.success());
    let httpd = crate::common::httpd::Httpd::serve(www);
    let src = flake_with(
        &h.kit,
        "unlocked",
        &format!(
            "{{ inputs.upstream = {{ url = \"{}\"; flake = false; }};\n  outputs = {{ self, upstream }}: {{ x = builtins.readFile \"${{upstream}}/file\"; }}; }}\n",
            httpd.url("upstream.tar.gz")
        ),
        Some(EMPTY_FLAKE_LOCK),
    );
    // Signed and served as an older publisher (or a hand-made archive)
    // would: this npcnix's publisher refuses it.
    let archive = h.kit.path("unlocked.tar.zst");
    let tree = npcnix::archive::collect_entries(&src, npcnix::archive::FileSelection::AllFiles)
        .expect("tree");
    let f = fs::File::create(&archive).expect("create");
    npcnix::archive::write_archive(&tree, f).expect("pack");
    let aref = h.kit.put_archive("prod", &archive);
    let st = statement("prod", 1, None, aref, now());
    h.kit
        .put_raw("prod", 1, &signed_bundle(&st, &h.kit.secret_key(&h.key)));

    let cache = h.kit.path("xdg-cache");
    let out = h
        .agent_cmd(&["follow", "--once", "--json"])
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("json line");
    assert_eq!(line["check"], "unlocked-inputs", "{line}");
    assert!(
        line["detail"]
            .as_str()
            .is_some_and(|d| d.contains("upstream")),
        "{line}"
    );
    assert_eq!(h.rebuild_log(), "", "nixos-rebuild ran");
    assert_eq!(httpd.count(), 0, "the host fetched the unlocked input");
    let s = h.status();
    assert_eq!(s["active_version"], serde_json::Value::Null, "{s}");
    assert!(
        h.audit().iter().any(|e| e["event"] == "marked-bad"),
        "not marked bad"
    );

    // The control, and why the host checks for itself (D117): Nix with the
    // flags issue 30 first asked for fetches the input and evaluates it;
    // `--no-update-lock-file` alone refuses (after fetching).
    let dir = h.kit.path("control");
    fs::create_dir_all(&dir).expect("mkdir");
    npcnix::archive::extract(
        fs::File::open(&archive).expect("open"),
        &dir,
        &npcnix::archive::Limits::default(),
    )
    .expect("extract");
    let eval = |flags: &[&str]| {
        Command::new("nix")
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("XDG_CACHE_HOME", &cache)
            .arg("eval")
            .args(flags)
            .arg(format!("path:{}#x", dir.display()))
            .output()
            .expect("nix")
    };
    let both = eval(&["--no-update-lock-file", "--no-write-lock-file"]);
    assert!(
        httpd.count() > 0,
        "control: nix did not fetch ({})",
        String::from_utf8_lossy(&both.stderr)
    );
    let locked = eval(&npcnix::nix::LOCKED_ONLY);
    assert!(
        !locked.status.success(),
        "nix evaluated an unlocked input despite {:?}",
        npcnix::nix::LOCKED_ONLY
    );
}

/// `git` in `dir`, with an identity, asserting success; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-C"])
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(o.status.success(), "git {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn remote_s3_upload_records_the_commit_and_the_lock_it_publishes() {
    // Terraform's publisher published with --archive and recorded no
    // provenance at all: `log` showed `-` as the source.
    if !require_tool("git") || !require_tool("jq") {
        return;
    }
    let kit = Kit::new();
    let src = flake_with(&kit, "tf", BRANCH_INPUT, Some(NIXPKGS_LOCK));
    git(&src, &["init", "-q"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "flake"]);
    let commit = git(&src, &["rev-parse", "HEAD"]);
    let (key, pubkey) = kit.keygen("ci");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform/remote_s3_upload/publish.sh");
    let publish = |comment: &str| {
        let planned = kit
            .run(&["pack", "--src", s(&src), "--hash-only", "--json"])
            .ok();
        let planned: serde_json::Value = serde_json::from_str(&planned.stdout).expect("json");
        let base = kit.cmd();
        let mut c = Command::new("sh");
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.arg(&script)
            .env("NPCNIX", BIN)
            .env("NPCNIX_REMOTE", kit.url("prod"))
            .env("NPCNIX_SRC", &src)
            .env("NPCNIX_KEY_FILE", &key)
            .env("NPCNIX_REMOTE_REGION", "")
            .env("NPCNIX_ENDPOINT", "")
            .env("NPCNIX_EXPIRES", "")
            .env("NPCNIX_COMMENT", comment)
            .env("NPCNIX_ALL_FILES", "0")
            .env(
                "NPCNIX_EXPECTED_BLAKE3",
                planned["blake3"].as_str().expect("blake3"),
            );
        Run::from(c.output().expect("sh"))
    };
    publish("clean").ok();
    let e = logged(&kit, &pubkey);
    assert_eq!(e["source_commit"], commit.as_str(), "{e}");
    assert_eq!(
        e["source_flake_lock"],
        Digest::of(NIXPKGS_LOCK.as_bytes()).to_hex().as_str(),
        "{e}"
    );
    // An uncommitted change: the archive is not that commit, so no commit
    // is recorded (and the apply says so).
    fs::write(src.join("hosts/web.nix"), "# edited, not committed\n{ }\n").expect("write");
    let r = publish("dirty").ok();
    assert!(
        r.stderr.contains("not a clean git checkout"),
        "{}",
        r.stderr
    );
    let r = kit
        .run(&[
            "log",
            "--remote",
            &kit.url("prod"),
            "--trusted-key",
            &pubkey,
            "--json",
        ])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let v2 = &j["releases"][1];
    assert_eq!(v2["comment"], "dirty", "{j}");
    assert_eq!(v2["source_commit"], serde_json::Value::Null, "{j}");
}

#[test]
fn publish_from_a_checkout_with_uncommitted_changes_records_no_commit() {
    if !require_tool("git") {
        return;
    }
    let kit = Kit::new();
    let src = flake_with(&kit, "dirty", BRANCH_INPUT, Some(NIXPKGS_LOCK));
    git(&src, &["init", "-q"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "flake"]);
    let commit = git(&src, &["rev-parse", "HEAD"]);
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &src, &[]).ok();
    assert_eq!(logged(&kit, &pubkey)["source_commit"], commit.as_str());
    fs::write(src.join("hosts/web.nix"), "# edited\n{ }\n").expect("write");
    let r = kit.publish("prod", &key, &src, &[]).ok();
    assert!(r.stderr.contains("uncommitted changes"), "{}", r.stderr);
    let r = kit
        .run(&[
            "log",
            "--remote",
            &kit.url("prod"),
            "--trusted-key",
            &pubkey,
            "--json",
        ])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        j["releases"][1]["source_commit"],
        serde_json::Value::Null,
        "{j}"
    );
}

/// Runs real `nix` with a private chroot store under `kit` (no daemon, no
/// writable /nix needed), asserting success.
fn nix_in(kit: &Kit, dir: &Path, args: &[&str]) {
    let o = Command::new("nix")
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("XDG_CACHE_HOME", kit.path("xdg-cache"))
        .arg("--store")
        .arg(kit.path("nix-store"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("nix");
    assert!(
        o.status.success(),
        "nix {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn stale_lock_whose_input_moved_under_the_same_name_is_refused() {
    // The everyday mistake: `inputs.nixpkgs.url` moved to another branch
    // (here: another directory) and nobody ran `nix flake lock`. The names
    // still match; the lock pins the old tree, and Nix would resolve the new
    // one on each host.
    if !require_tool("nix") || !require_tool("nix-instantiate") {
        return;
    }
    let kit = Kit::new();
    for (d, text) in [("b1", "old tree\n"), ("b2", "new tree\n")] {
        fs::create_dir_all(kit.path(d)).expect("mkdir");
        fs::write(kit.path(d).join("file"), text).expect("write");
    }
    let flake = |dir: &str| {
        format!(
            "{{ inputs.up = {{ url = \"path:{}\"; flake = false; }};\n  outputs = {{ self, up }}: {{ }}; }}\n",
            kit.path(dir).display()
        )
    };
    let src = flake_with(&kit, "moved", &flake("b1"), None);
    nix_in(&kit, &src, &["flake", "lock"]);
    // Locked and current: accepted.
    let r = kit
        .run(&["pack", "--src", s(&src), "--hash-only", "--json"])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(j["flake_inputs"], serde_json::json!(["up"]), "{j}");
    // The URL moves, the lock stays.
    fs::write(src.join("flake.nix"), flake("b2")).expect("write");
    refused_everywhere(&kit, &src, "flake.lock does not match flake.nix");
}

#[test]
fn reading_flake_nix_fetches_nothing_even_through_get_flake() {
    // flake.nix is evaluated to learn its input names; a flake.nix that
    // fetches while being read (builtins.getFlake, fetchTarball) must not
    // get a request out, on the publisher or on a host.
    if !require_tool("nix-instantiate") {
        return;
    }
    let kit = Kit::new();
    let www = kit.path("www");
    fs::create_dir_all(&www).expect("mkdir");
    let httpd = crate::common::httpd::Httpd::serve(www);
    for (name, expr) in [
        (
            "getflake",
            format!("(builtins.getFlake \"{}\").outputs", httpd.url("f.tar.gz")),
        ),
        (
            "tarball",
            format!(
                "import (builtins.fetchTarball \"{}\")",
                httpd.url("t.tar.gz")
            ),
        ),
        ("nixpath", "import <nixpkgs>".to_string()),
    ] {
        let src = flake_with(
            &kit,
            name,
            &format!("{{ outputs = {expr}; }}\n"),
            Some(EMPTY_FLAKE_LOCK),
        );
        let r = kit.run(&["pack", "--src", s(&src), "--hash-only"]);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("evaluating flake.nix"),
            "{name}: {}",
            r.stderr
        );
    }
    assert_eq!(httpd.count(), 0, "reading flake.nix fetched something");
}

#[test]
fn revert_to_a_release_whose_inputs_are_not_pinned_is_refused_before_signing() {
    // Version 1 was published before hosts checked locks: every host now
    // refuses it, so a revert to it would be an outage, not a fix.
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    let old = flake_with(&kit, "old", BRANCH_INPUT, None);
    let archive = kit.path("old.tar.zst");
    let tree = npcnix::archive::collect_entries(&old, npcnix::archive::FileSelection::AllFiles)
        .expect("tree");
    npcnix::archive::write_archive(&tree, fs::File::create(&archive).expect("create"))
        .expect("pack");
    let aref = kit.put_archive("prod", &archive);
    let v1 = statement("prod", 1, None, aref, now());
    kit.put_raw("prod", 1, &signed_bundle(&v1, &kit.secret_key(&key)));
    let good = flake_with(&kit, "good", BRANCH_INPUT, Some(NIXPKGS_LOCK));
    let trusted = ["--trusted-key", pubkey.as_str()];
    kit.publish("prod", &key, &good, &trusted).ok();
    kit.publish("prod", &key, &kit.flake("v3", "v3"), &trusted)
        .ok();
    let revert = |to: &str| {
        kit.run(&[
            "release",
            "revert",
            "--remote",
            &kit.url("prod"),
            "--key",
            &key,
            "--trusted-key",
            &pubkey,
            "--to",
            to,
        ])
    };
    let r = revert("1");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("version 1's flake does not pin its inputs"),
        "{}",
        r.stderr
    );
    // A revert to a locked release records the lock it brings back.
    revert("2").ok();
    let r = kit
        .run(&[
            "log",
            "--remote",
            &kit.url("prod"),
            "--trusted-key",
            &pubkey,
            "--json",
        ])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let v4 = &j["releases"][3];
    assert_eq!(v4["version"], 4, "{j}");
    assert_eq!(
        v4["source_flake_lock"],
        Digest::of(NIXPKGS_LOCK.as_bytes()).to_hex().as_str(),
        "{j}"
    );
}
