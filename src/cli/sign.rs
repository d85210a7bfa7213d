//! `npcnix sign DIR --key KEY`: the offline signing step.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use npcnix::fsutil;
use npcnix::publish::flake;
use npcnix::publish::{self, prepared, review};

use super::common;
use super::out;
use super::release;

#[derive(clap::Args)]
#[command(
    about = "Offline flow: sign a prepared release (no network needed)",
    long_about = "Sign a prepared release on the offline machine. Shows what is about to be \
signed (remote, version, previous release, archive hash and size, source commit), checks the archive \
in DIR matches the statement, asks for confirmation (or --yes), and writes \
DIR/statement.json.<KEYID>.minisig. Run it once per signer for a k-of-n remote. Needs no network.\n\nExample:\n  npcnix sign /media/usb/prod-42 --key release.key"
)]
pub struct Args {
    /// The prepared release directory
    dir: PathBuf,
    /// Secret key file (npcnix or minisign; NPCNIX_PASSPHRASE or a prompt for encrypted keys)
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// Do not ask for confirmation
    #[arg(long)]
    yes: bool,
    /// Print the result as JSON (the review still goes to stderr)
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (bytes, st) = release::read_statement(&a.dir)?;
    let lines = review::review(&st, &bytes, fsutil::now_unix());
    out::text(format_args!(
        "About to sign (every signed field, as hosts will read it):\n{}\n",
        review::render(&lines)
    ));
    if lines.iter().any(|l| l.alert) {
        out::text(format_args!(
            "!! This release takes hosts out of lockout protection (decommission): sign only if that is intended.\n\n"
        ));
    }
    let archive = a.dir.join(prepared::ARCHIVE);
    if std::fs::symlink_metadata(&archive).is_ok() {
        let aref = publish::hash_file(&archive)?;
        if aref != st.archive {
            bail!(
                "{} ({}, {} bytes) does not match the statement; refusing to sign",
                archive.display(),
                aref.blake3,
                aref.size
            );
        }
        out::text(format_args!(
            "  archive.tar.zst in the directory matches the statement.\n"
        ));
        let lock = super::pack::check_flake(&archive, None)
            .context("the archive's flake does not pin its inputs; refusing to sign")?;
        let recorded = st.source.as_ref().and_then(|s| s.flake_lock_blake3);
        let how = flake::check_recorded(lock.lock_blake3, recorded).context("refusing to sign")?;
        out::text(format_args!("  {}\n", flake::describe(&lock, how)));
        show_changes(&a.dir, &archive)?;
    } else {
        out::text(format_args!(
            "  (no archive.tar.zst here: check the hash against your own `npcnix pack`)\n\
  !! NOT CHECKED: whether the flake's flake.lock pins every input and is the one source.flake_lock_blake3 names\n\
     (`npcnix release check DIR --src CHECKOUT` checks both)\n"
        ));
    }
    out::text(format_args!(
        "\nWhat this machine can check: the archive hash (above; `npcnix release check {d} --src CHECKOUT` \
re-packs your own checkout), and every other field as shown.\n\
What it cannot: `previous` (the store's head; `release publish` re-checks it online){}.\n",
        if st.toplevels.as_ref().is_some_and(|t| !t.is_empty()) {
            ", and that the toplevel paths are what the archive builds (`npcnix release check --build` on a machine with Nix)"
        } else {
            ""
        },
        d = a.dir.display()
    ));
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!("not a terminal: review the release above and pass --yes to sign");
        }
        out::text(format_args!("Sign this release? [y/N] "));
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            bail!("not signed");
        }
    }
    let sk = common::load_secret_key(&a.key)?;
    let sig = publish::sign_statement(&st, &bytes, &sk);
    let out = a.dir.join(format!("statement.json.{}.minisig", sk.key_id));
    fsutil::write_new(&out, sig.as_bytes(), 0o644)
        .with_context(|| format!("writing {} (already signed by this key?)", out.display()))?;
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": st.remote.as_str(),
            "version": st.version,
            "key_id": sk.key_id.to_string(),
            "signature_file": out,
            "statement": npcnix::format::statement::Digest::of(&bytes).to_hex(),
        }));
        return Ok(());
    }
    outln!(
        "signed {} version {} with key {} -> {}",
        st.remote,
        st.version,
        sk.key_id,
        out.display()
    );
    Ok(())
}

/// What the release changes (`changes.json`, written by `release
/// prepare`): shown, and checked against the archive here as far as this
/// machine can (the new side; the head's files it cannot see). A list
/// that contradicts the archive is refused.
fn show_changes(dir: &std::path::Path, archive: &std::path::Path) -> Result<()> {
    use npcnix::publish::diff::{self, ChangeKind, PreparedChanges};
    let path = dir.join("changes.json");
    let bytes = match fsutil::read_regular(&path, 4 << 20) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out::text(format_args!(
                "  (no changes.json: `npcnix diff --release-dir {}` on a machine that reaches the store shows what changes)\n",
                dir.display()
            ));
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let pc: PreparedChanges = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a change list", path.display()))?;
    let (_, st) = release::read_statement(dir)?;
    if pc.to != st.version || pc.archive != st.archive.blake3 || pc.from >= st.version {
        bail!(
            "changes.json is for another release (version {} from {}, archive {}), not this statement's (version {}, archive {}); refusing to sign",
            pc.to,
            pc.from,
            pc.archive,
            st.version,
            st.archive.blake3
        );
    }
    let listing = npcnix::publish::compare::local(archive)?;
    let problems = diff::check_offline(&pc.changes, &listing);
    if let Some(p) = problems.first() {
        bail!(
            "changes.json contradicts the archive ({p}{}); refusing to sign",
            if problems.len() > 1 {
                format!(" and {} more", problems.len() - 1)
            } else {
                String::new()
            }
        );
    }
    let (added, removed, changed, _, _) = diff::totals(&pc.changes);
    out::text(format_args!(
        "\nWhat it changes against version {} ({added} added, {removed} removed, {changed} changed):\n",
        pc.from
    ));
    for c in pc.changes.iter().take(200) {
        let what = match c.change {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        };
        out::text(format_args!(
            "  {what:<8} {}\n",
            npcnix::format::text::visible(&c.path)
        ));
    }
    if pc.changes.len() > 200 {
        out::text(format_args!("  ... and {} more\n", pc.changes.len() - 200));
    }
    out::text(format_args!(
        "  Checked here: every added and changed file is in the archive with that size, every removed one is not.\n  !! NOT checked here: what version {} held, so a change left OUT of this list goes unnoticed (the list comes from the online machine; `npcnix diff --release-dir DIR` on another machine that reaches the store recomputes it).\n",
        pc.from
    ));
    Ok(())
}
