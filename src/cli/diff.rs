//! `npcnix diff`: what a release changes (issue 34).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use npcnix::format::text::visible;
use npcnix::fsutil;
use npcnix::publish::compare::{self, CompareError};
use npcnix::publish::diff::{self, Change, ChangeKind};
use npcnix::publish::{self, prepared};

use super::common;
use super::exit::{Rejected, Unverified};

#[derive(clap::Args)]
#[command(
    about = "Show what a release changes: files added, removed and changed",
    long_about = "Compare the flake archives of two releases of a remote (each verified against the \
remote's keys and threshold, its archive checked against its signed hash): the files added, removed \
and changed, with their sizes, and with --patch a unified diff of each changed text file. --to \
defaults to the head, --from to the version before --to. With --release-dir, compares a prepared \
release (release prepare) with the head: what the signers are asked to approve.\n\nExamples:\n  \
npcnix diff --remote s3://fleet/npcnix/prod --policy npcnix-policy.json\n  \
npcnix diff --remote s3://fleet/npcnix/prod --policy npcnix-policy.json --from 40 --to 42 --patch\n  \
npcnix diff --remote s3://fleet/npcnix/prod --policy npcnix-policy.json --release-dir ./rel-43"
)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Remote name signed into the releases (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// The older release [default: the version before --to]
    #[arg(long, value_name = "N")]
    from: Option<u64>,
    /// The newer release [default: the head]
    #[arg(long, value_name = "N", conflicts_with = "release_dir")]
    to: Option<u64>,
    /// A prepared release directory to compare with the head (or --from)
    #[arg(long, value_name = "DIR")]
    release_dir: Option<PathBuf>,
    /// Show a unified diff of each changed text file (up to 1 MiB each)
    #[arg(long)]
    patch: bool,
    /// For each configuration whose system both releases sign (publish
    /// --build), the closure difference as `nix store diff-closures` shows
    /// it (the paths must be in the local store: build or copy them first)
    #[arg(long)]
    closures: bool,
    #[command(flatten)]
    trust: common::TrustArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

fn refused(e: CompareError) -> anyhow::Error {
    match e {
        CompareError::Refused { .. } | CompareError::Archive { .. } => {
            anyhow::Error::new(Unverified(e.to_string()))
        }
        e => e.into(),
    }
}

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let (trust, retired) = a.trust.resolve(&remote, &[], None)?;
    let mut policy = trust.policy;
    policy
        .keys
        .extend(retired.into_iter().map(|key| npcnix::verify::TrustedKey {
            key,
            scope: npcnix::verify::KeyScope::AnyRemote,
            not_after: None,
        }));
    let now = fsutil::now_unix();
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-diff-")
        .context("creating a private temp dir")?;
    let head = publish::read_head(&store, &policy, now)?;
    // The newer side: a prepared release, or a release of the remote.
    let (to_label, to_version, new_archive, new_members, new_statement) = match &a.release_dir {
        Some(dir) => {
            let p = prepared::read(dir)?;
            let archive = dir.join(prepared::ARCHIVE);
            let got = publish::hash_file(&archive)?;
            if got != p.statement.archive {
                return Err(Rejected(npcnix::verify::Refusal::Archive(
                    npcnix::verify::ArchiveMismatch::Hash {
                        got: got.blake3,
                        signed: p.statement.archive.blake3,
                    },
                )))
                .with_context(|| {
                    format!(
                        "{} is not the archive its statement names",
                        archive.display()
                    )
                });
            }
            let members = compare::local(&archive).map_err(refused)?;
            (
                format!("{} (prepared)", dir.display()),
                p.statement.version,
                archive,
                members,
                p.statement,
            )
        }
        None => {
            let v = match (a.to, &head) {
                (Some(v), _) => v,
                (None, Some(h)) => h.statement.version,
                (None, None) => anyhow::bail!("{} has no releases to compare", a.remote),
            };
            let l = compare::release(&store, &policy, v, now, work.path()).map_err(refused)?;
            (format!("version {v}"), v, l.archive, l.members, l.statement)
        }
    };
    let from = match (a.from, &a.release_dir, &head) {
        (Some(v), _, _) => v,
        // A prepared release is compared with the head it extends.
        (None, Some(_), Some(h)) => h.statement.version,
        // The newest release before it (versions may skip).
        _ => store
            .log()
            .versions()?
            .into_iter()
            .filter(|v| *v < to_version)
            .max()
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "version {to_version} has no earlier release to compare with; pass --from"
                )
            })?,
    };
    if from >= to_version {
        return Err(super::exit::usage(format!(
            "--from {from} is not older than version {to_version}"
        )));
    }
    let old = compare::release(&store, &policy, from, now, work.path()).map_err(refused)?;
    let changes = diff::diff(&old.members, &new_members);
    let mut patches: Vec<(String, String)> = Vec::new();
    if a.patch {
        // Changed and added files (an added file against nothing); what
        // has no patch says why, never silently.
        let texts: Vec<&Change> = changes
            .iter()
            .filter(|c| c.change != ChangeKind::Removed && c.new_size.is_some())
            .collect();
        let names: Vec<&str> = texts.iter().map(|c| c.path.as_str()).collect();
        let read = |p: &std::path::Path| {
            npcnix::archive::member::read_members(p, &names, diff::PATCH_MAX_BYTES)
                .with_context(|| format!("reading {}", p.display()))
        };
        let (olds, news) = (read(&old.archive)?, read(&new_archive)?);
        for ((c, o), n) in texts.iter().zip(olds).zip(news) {
            let o = match c.change {
                ChangeKind::Added => Some(Vec::new()),
                _ => o,
            };
            let text = match (o, n) {
                (Some(o), Some(n)) => diff::patch(&c.path, &o, &n)
                    .unwrap_or_else(|| format!("(no patch for {}: not UTF-8 text)\n", c.path)),
                _ => format!(
                    "(no patch for {}: larger than {} bytes)\n",
                    c.path,
                    diff::PATCH_MAX_BYTES
                ),
            };
            patches.push((c.path.clone(), text));
        }
    }
    // Closure differences: what a signed system path changes, per
    // configuration, in Nix's words (best effort: a path not in the local
    // store is named, not fatal).
    let mut closures: Vec<(String, Result<String, String>)> = Vec::new();
    if a.closures {
        let none = std::collections::BTreeMap::new();
        let (o, n) = (
            old.statement.toplevels.as_ref().unwrap_or(&none),
            new_statement.toplevels.as_ref().unwrap_or(&none),
        );
        let nix = npcnix::nix::Nix::new(None);
        for (config, new_path) in n {
            let res = match o.get(config) {
                Some(old_path) => nix.diff_closures(old_path, new_path).map_err(|e| {
                    format!("{e} (build or copy both systems into the local store first)")
                }),
                None => Err(format!("version {from} signs no system for it")),
            };
            closures.push((config.clone(), res));
        }
        if n.is_empty() {
            closures.push((
                "-".into(),
                Err(format!(
                    "version {to_version} signs no system paths (publish --build)"
                )),
            ));
        }
    }
    let (added, removed, changed, before, after) = diff::totals(&changes);
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "from": from,
            "to": to_version,
            "prepared": a.release_dir.as_ref().map(|d| d.display().to_string()),
            "changes": changes,
            "patches": patches.iter().map(|(p, t)| serde_json::json!({"path": p, "patch": t})).collect::<Vec<_>>(),
            "added": added,
            "removed": removed,
            "changed": changed,
            "closures": closures.iter().map(|(c, r)| match r {
                Ok(t) => serde_json::json!({"configuration": c, "diff": t}),
                Err(e) => serde_json::json!({"configuration": c, "error": e}),
            }).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    outln!("{remote}: version {from} -> {to_label}");
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            let size = |s: Option<u64>| s.map_or("-".to_owned(), super::out::size_short);
            vec![
                match c.change {
                    ChangeKind::Added => "added",
                    ChangeKind::Removed => "removed",
                    ChangeKind::Changed => "changed",
                }
                .to_owned(),
                size(c.old_size),
                size(c.new_size),
                match &c.note {
                    Some(n) => format!("{} ({n})", visible(&c.path)),
                    None => visible(&c.path),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!("no files differ");
    } else {
        super::out::stdout(format_args!(
            "{}",
            super::out::table(
                &["CHANGE", "BEFORE", "AFTER", "PATH"],
                &rows,
                &[false, true, true, false]
            )
        ));
    }
    outln!(
        "{added} added, {removed} removed, {changed} changed ({} -> {} in the files that differ)",
        super::out::size_short(before),
        super::out::size_short(after)
    );
    for (_, p) in &patches {
        for line in p.lines() {
            outln!("{}", visible(line));
        }
    }
    for (config, r) in &closures {
        match r {
            Ok(t) if t.trim().is_empty() => {
                outln!("closure of {}: no package differs", visible(config))
            }
            Ok(t) => {
                outln!("closure of {}:", visible(config));
                for line in t.lines() {
                    outln!("  {}", visible(line));
                }
            }
            Err(e) => outln!("closure of {}: not shown: {}", visible(config), visible(e)),
        }
    }
    Ok(())
}
