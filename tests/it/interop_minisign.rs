//! Interop with the stock `minisign` tool (Debian's minisign 0.11), both
//! ways: its keys sign npcnix releases, npcnix keys and signatures work with
//! it, and a statement signed offline by `minisign -S -t '<comment npcnix
//! prints>'` is accepted by a host.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;
use npcnix::format::bundle::Bundle;
use npcnix::publish;

fn minisign(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("minisign")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn minisign");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "minisign {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn minisign_generated_unencrypted_key_publishes_and_verifies() {
    if !require_tool("minisign") {
        return;
    }
    let kit = Kit::new();
    let (p, s) = (kit.path("m.pub"), kit.path("m.key"));
    minisign(
        &[
            "-G",
            "-W",
            "-p",
            p.to_str().unwrap_or(""),
            "-s",
            s.to_str().unwrap_or(""),
        ],
        None,
    );
    let src = kit.flake("flake", "minisign key");
    kit.publish("prod", s.to_str().unwrap_or(""), &src, &[])
        .ok();
    kit.pull("prod", p.to_str().unwrap_or(""), "dst", &[]).ok();
    // And the pasted RW... string works as well as the file.
    let rw = fs::read_to_string(&p)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("key line")
        .to_owned();
    kit.pull("prod", &rw, "dst2", &[]).ok();
}

#[test]
fn minisign_generated_encrypted_key_signs_with_npcnix() {
    if !require_tool("minisign") {
        return;
    }
    let kit = Kit::new();
    let (p, s) = (kit.path("m.pub"), kit.path("m.key"));
    // minisign reads the password twice from stdin when it is not a tty.
    minisign(
        &[
            "-G",
            "-p",
            p.to_str().unwrap_or(""),
            "-s",
            s.to_str().unwrap_or(""),
        ],
        Some("hunter22\nhunter22\n"),
    );
    let src = kit.flake("flake", "encrypted minisign key");
    let url = kit.url("prod");
    let out = kit
        .cmd()
        .env("NPCNIX_PASSPHRASE", "hunter22")
        .args([
            "publish",
            "--remote",
            &url,
            "--key",
            s.to_str().unwrap_or(""),
            "--src",
        ])
        .arg(&src)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kit.pull("prod", p.to_str().unwrap_or(""), "dst", &[]).ok();

    // The wrong passphrase is a clear error, not a bad signature.
    let out = kit
        .cmd()
        .env("NPCNIX_PASSPHRASE", "wrong")
        .args([
            "publish",
            "--remote",
            &url,
            "--key",
            s.to_str().unwrap_or(""),
            "--src",
        ])
        .arg(&src)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
}

#[test]
fn npcnix_encrypted_key_and_signatures_work_with_minisign() {
    if !require_tool("minisign") {
        return;
    }
    let kit = Kit::new();
    let base = kit.path("n");
    let out = kit
        .cmd()
        .env("NPCNIX_PASSPHRASE", "correct horse")
        .args(["keygen", "--out", base.to_str().unwrap_or("")])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let key = kit.path("n.key");
    let pubf = kit.path("n.pub");
    assert_eq!(
        fs::metadata(&key).expect("md").permissions().mode() & 0o777,
        0o600
    );

    // minisign signs with the npcnix key (decrypting it with the passphrase)...
    let msg = kit.path("msg");
    fs::write(&msg, "hello").expect("write");
    let sig = kit.path("msg.minisig");
    minisign(
        &[
            "-S",
            "-s",
            key.to_str().unwrap_or(""),
            "-m",
            msg.to_str().unwrap_or(""),
            "-x",
            sig.to_str().unwrap_or(""),
            "-t",
            "tc",
        ],
        Some("correct horse\n"),
    );
    minisign(
        &[
            "-V",
            "-p",
            pubf.to_str().unwrap_or(""),
            "-m",
            msg.to_str().unwrap_or(""),
            "-x",
            sig.to_str().unwrap_or(""),
        ],
        None,
    );

    // ...and minisign verifies an npcnix-published release signature.
    let src = kit.flake("flake", "npcnix key");
    let url = kit.url("prod");
    let out = kit
        .cmd()
        .env("NPCNIX_PASSPHRASE", "correct horse")
        .args([
            "publish",
            "--remote",
            &url,
            "--key",
            key.to_str().unwrap_or(""),
            "--src",
        ])
        .arg(&src)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = Bundle::decode(&fs::read(kit.store_path("prod", "latest")).expect("latest"))
        .expect("bundle");
    let st = kit.path("statement.json");
    fs::write(&st, &b.statement).expect("write");
    fs::write(kit.path("statement.json.minisig"), &b.signatures[0]).expect("write");
    let v = minisign(
        &[
            "-V",
            "-p",
            pubf.to_str().unwrap_or(""),
            "-m",
            st.to_str().unwrap_or(""),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.contains("Trusted comment: npcnix-release/v1 remote=prod version=1 statement="),
        "{text}"
    );
}

/// A fresh unencrypted minisign key pair in the kit: (public, secret).
fn minisign_keypair(kit: &Kit, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (p, s) = (
        kit.path(&format!("{name}.pub")),
        kit.path(&format!("{name}.key")),
    );
    minisign(
        &[
            "-G",
            "-W",
            "-p",
            p.to_str().unwrap_or(""),
            "-s",
            s.to_str().unwrap_or(""),
        ],
        None,
    );
    (p, s)
}

/// Publishes version 1 of `prod` whose statement was signed by stock
/// minisign with `sign_args` (plus `-t <npcnix's comment>` when `bind`).
fn publish_minisigned(
    kit: &Kit,
    archive: &std::path::Path,
    key: (&std::path::Path, &std::path::Path),
    sign_args: &[&str],
    bind: bool,
) {
    let (p, s) = key;
    let pk =
        npcnix::format::keys::PublicKey::parse(&fs::read_to_string(p).expect("pub")).expect("pk");
    // Online machine: the statement and the comment npcnix would print.
    let aref = kit.put_archive("prod", archive);
    let st = statement("prod", 1, None, aref, now());
    let bytes = st.to_bytes();
    let tc = publish::trusted_comment(&st, &bytes, pk.key_id);
    let stf = kit.path("statement.json");
    fs::write(&stf, &bytes).expect("write");
    // Offline machine: stock minisign.
    let mut args = vec!["-S"];
    args.extend_from_slice(sign_args);
    args.extend([
        "-s",
        s.to_str().unwrap_or(""),
        "-m",
        stf.to_str().unwrap_or(""),
    ]);
    if bind {
        args.extend(["-t", &tc]);
    }
    minisign(&args, None);
    let sig = fs::read_to_string(kit.path("statement.json.minisig")).expect("sig");
    kit.put_raw(
        "prod",
        1,
        &Bundle {
            timestamp: None,
            statement: bytes,
            signatures: vec![sig],
        }
        .encode(),
    );
}

#[test]
fn statement_signed_offline_by_stock_minisign_is_accepted() {
    if !require_tool("minisign") {
        return;
    }
    let kit = Kit::new();
    let (p, s) = minisign_keypair(&kit, "offline");
    let archive = kit.pack(&kit.flake("flake", "offline"), "release.tar.zst");
    publish_minisigned(&kit, &archive, (&p, &s), &[], true);
    kit.pull("prod", p.to_str().unwrap_or(""), "dst", &[]).ok();

    // minisign's default trusted comment (timestamp + file name) binds
    // nothing: such a signature is refused.
    let kit2 = Kit::new();
    publish_minisigned(&kit2, &archive, (&p, &s), &[], false);
    kit2.pull("prod", p.to_str().unwrap_or(""), "dst", &[])
        .rejected("trusted-comment");
    kit2.assert_nothing_left("dst");
}

#[test]
fn legacy_non_prehashed_minisign_signature_is_refused() {
    if !require_tool("minisign") {
        return;
    }
    let kit = Kit::new();
    let (p, s) = minisign_keypair(&kit, "legacy");
    let archive = kit.pack(&kit.flake("flake", "legacy"), "release.tar.zst");
    // -l: legacy, non-prehashed (Ed) signatures.
    publish_minisigned(&kit, &archive, (&p, &s), &["-l"], true);
    kit.pull("prod", p.to_str().unwrap_or(""), "dst", &[])
        .rejected("signature");
}
