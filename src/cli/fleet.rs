//! `npcnix fleet status`: every host's signed receipt in a remote, verified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use npcnix::format::keys::PublicKey;
use npcnix::format::receipt::Receipt;
use npcnix::format::text::visible;
use npcnix::fsutil;
use npcnix::verify::receipt::{claimed_key, verify, ReceiptError};

use super::common;

#[derive(clap::Args)]
#[command(
    about = "Fleet view: every host's signed receipt in a remote, verified",
    long_about = "Read what the hosts of a remote report about themselves: each host writes a \
signed receipt to <remote>/hosts/<host_id>.json after every decision (docs/fleet.md).\n\nExample:\n  \
npcnix fleet status --remote s3://bucket/npcnix/remotes/prod --host-keys hosts.txt"
)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Status(StatusArgs),
}

#[derive(clap::Args)]
#[command(
    about = "Which hosts run which version, which refused what, and whom to trust",
    long_about = "Read every host's signed receipt (<remote>/hosts/<host_id>.json, written by the \
agents after each decision and as a heartbeat), verify each signature, and print one row per host: \
host, configuration, active version, last result, last seen, key ID and a verdict:\n\n  ok             \
signed by the host's pinned key\n  unpinned       valid, but the key is only trusted on first use\n  \
bad-signature  does not verify with the pinned (or remembered) key: forged or corrupt\n  key-changed    \
signed by another key than the one remembered on first use\n  stale          valid but older than \
--stale-after (or a pinned host with no receipt)\n\nthen a summary per version. Pin host keys with \
--host-keys FILE (lines `host_id RW...`, as `npcnix install` prints them); without it, keys are \
remembered on first use in --known-hosts and a change is flagged. A store attacker can delete or replay \
receipts (an old time and sequence show) but cannot forge one for a pinned host.\n\nExit codes: 0 all \
fine, 1 a pinned host failed verification or a host is stale.\n\nExample:\n  npcnix fleet status \
--remote s3://bucket/npcnix/remotes/prod --host-keys hosts.txt --stale-after 3h"
)]
struct StatusArgs {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Pinned host keys: lines `host_id RW...` (# comments)
    #[arg(long, value_name = "FILE")]
    host_keys: Option<PathBuf>,
    /// Keys remembered on first use (default: <data dir>/fleet-known-hosts/<remote>)
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// Where the default --known-hosts lives (default: /var/lib/npcnix for
    /// root, ~/.local/state/npcnix otherwise)
    #[arg(long, value_name = "DIR", env = "NPCNIX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Flag hosts whose last receipt is older than this (e.g. 3h)
    #[arg(long, value_name = "DURATION", default_value = "3h")]
    stale_after: String,
    /// Print as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Sub::Status(s) => status(s),
    }
}

#[derive(serde::Serialize)]
struct Row {
    host: String,
    verdict: &'static str,
    pinned: bool,
    key_id: Option<String>,
    configuration: Option<String>,
    active_version: Option<u64>,
    result: Option<String>,
    check: Option<String>,
    waiting_until: Option<u64>,
    probation: Option<u64>,
    bad: Vec<u64>,
    time: Option<u64>,
    age_secs: Option<u64>,
    seq: Option<u64>,
    detail: Option<String>,
}

fn read_keys(path: &Path) -> Result<BTreeMap<String, PublicKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading host keys {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (host, key) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("{}:{}: expected `host_id RW...`", path.display(), i + 1))?;
        let pk = PublicKey::from_base64(key.trim())
            .with_context(|| format!("{}:{}: not a minisign public key", path.display(), i + 1))?;
        out.insert(host.to_owned(), pk);
    }
    Ok(out)
}

fn status(a: StatusArgs) -> Result<()> {
    let remote = common::remote_name(&a.remote, None)?;
    let stale_after = common::parse_duration(&a.stale_after)
        .map_err(|e| super::exit::usage(format!("--stale-after {:?}: {e:#}", a.stale_after)))?;
    let pinned = match &a.host_keys {
        Some(p) => read_keys(p)?,
        None => BTreeMap::new(),
    };
    let known_path = match &a.known_hosts {
        Some(p) => p.clone(),
        None => match &a.data_dir {
            Some(d) => d.clone(),
            None => super::env::default_data_dir()?,
        }
        .join("fleet-known-hosts")
        .join(remote.as_str()),
    };
    let mut known = if known_path.exists() {
        read_keys(&known_path)?
    } else {
        BTreeMap::new()
    };
    let store = a.store.open(&a.remote)?;
    let log = store.log();
    let hosts = log.receipt_hosts(1_000_000)?;
    let now = fsutil::now_unix();
    let mut rows = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut learned = false;
    for host in &hosts {
        let host = host.as_str();
        if !npcnix::format::rollout::is_host_id(host) {
            continue;
        }
        seen.insert(host.to_owned());
        let bytes = match log.receipt(host) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(e) => {
                rows.push(row(
                    host,
                    "bad-signature",
                    pinned.contains_key(host),
                    None,
                    Some(e.to_string()),
                ));
                continue;
            }
        };
        let (key_to_use, is_pinned) = match pinned.get(host) {
            Some(k) => (Some(k.clone()), true),
            None => (known.get(host).cloned(), false),
        };
        let verdict_key = match key_to_use {
            Some(k) => k,
            None => match claimed_key(&bytes) {
                // First use: remember the key this receipt claims.
                Ok(k) => {
                    known.insert(host.to_owned(), k.clone());
                    learned = true;
                    k
                }
                Err(e) => {
                    rows.push(row(host, "bad-signature", false, None, Some(e.to_string())));
                    continue;
                }
            },
        };
        match verify(&bytes, &verdict_key, host) {
            Ok(r) => {
                let age = now.saturating_sub(r.time);
                let verdict = if age > stale_after {
                    "stale"
                } else if is_pinned {
                    "ok"
                } else {
                    "unpinned"
                };
                rows.push(from_receipt(
                    host,
                    verdict,
                    is_pinned,
                    &verdict_key,
                    &r,
                    now,
                ));
            }
            Err(ReceiptError::BadSignature(_)) | Err(ReceiptError::Binding(_))
                if !is_pinned && claimed_key(&bytes).is_ok_and(|k| k != verdict_key) =>
            {
                rows.push(row(
                    host,
                    "key-changed",
                    false,
                    Some(verdict_key.key_id.to_string()),
                    Some("signed by another key than the one remembered on first use".into()),
                ));
            }
            Err(e) => rows.push(row(
                host,
                "bad-signature",
                is_pinned,
                Some(verdict_key.key_id.to_string()),
                Some(e.to_string()),
            )),
        }
    }
    for host in pinned.keys().filter(|h| !seen.contains(*h)) {
        rows.push(row(
            host,
            "stale",
            true,
            None,
            Some("no receipt in the store".into()),
        ));
    }
    if learned {
        if let Some(parent) = known_path.parent() {
            fsutil::ensure_private_dir(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text: String = known
            .iter()
            .map(|(h, k)| format!("{h} {}\n", k.to_base64()))
            .collect();
        fsutil::write_atomic(&known_path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", known_path.display()))?;
    }
    let failing = rows
        .iter()
        .any(|r| r.verdict == "stale" || (r.pinned && r.verdict != "ok"));
    let summary = summarize(&rows);
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "hosts": rows,
            "summary": summary,
        }));
    } else {
        outln!(
            "{:<24} {:<14} {:>7} {:<18} {:>9} {:<17} VERDICT",
            "HOST",
            "CONFIGURATION",
            "ACTIVE",
            "RESULT",
            "SEEN",
            "KEY"
        );
        for r in &rows {
            outln!(
                "{:<24} {:<14} {:>7} {:<18} {:>9} {:<17} {}",
                r.host,
                visible(r.configuration.as_deref().unwrap_or("-")),
                r.active_version.map_or("-".into(), |v| format!("v{v}")),
                visible(&match (&r.result, &r.check) {
                    (Some(x), Some(c)) => format!("{x} ({c})"),
                    (Some(x), None) => x.clone(),
                    _ => "-".into(),
                }),
                r.age_secs.map_or("-".into(), age),
                r.key_id.as_deref().unwrap_or("-"),
                r.verdict
            );
        }
        outln!();
        for line in &summary {
            outln!("{line}");
        }
    }
    if failing {
        anyhow::bail!("some hosts failed verification or are stale (see above)");
    }
    Ok(())
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn row(
    host: &str,
    verdict: &'static str,
    pinned: bool,
    key_id: Option<String>,
    detail: Option<String>,
) -> Row {
    Row {
        host: host.to_owned(),
        verdict,
        pinned,
        key_id,
        configuration: None,
        active_version: None,
        result: None,
        check: None,
        waiting_until: None,
        probation: None,
        bad: Vec::new(),
        time: None,
        age_secs: None,
        seq: None,
        detail,
    }
}

fn from_receipt(
    host: &str,
    verdict: &'static str,
    pinned: bool,
    key: &PublicKey,
    r: &Receipt,
    now: u64,
) -> Row {
    Row {
        host: host.to_owned(),
        verdict,
        pinned,
        key_id: Some(key.key_id.to_string()),
        configuration: Some(r.configuration.clone()),
        active_version: r.active.map(|a| a.version),
        result: Some(r.result.clone()),
        check: r.check.clone(),
        waiting_until: r.waiting_until,
        probation: r.probation,
        bad: r.bad.clone(),
        time: Some(r.time),
        age_secs: Some(now.saturating_sub(r.time)),
        seq: Some(r.seq),
        detail: None,
    }
}

/// "v12: 37 hosts", "refused: 1 host (archive-hash)", ... from verified rows.
fn summarize(rows: &[Row]) -> Vec<String> {
    let plural = |n: usize| if n == 1 { "host" } else { "hosts" };
    let mut by_version: BTreeMap<u64, usize> = BTreeMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut none = 0;
    let mut unverified = 0;
    for r in rows {
        if r.time.is_none() {
            unverified += 1;
            continue;
        }
        match r.active_version {
            Some(v) => *by_version.entry(v).or_default() += 1,
            None => none += 1,
        }
        if r.result.as_deref() == Some("rejected") {
            *refused
                .entry(r.check.clone().unwrap_or_else(|| "?".into()))
                .or_default() += 1;
        }
    }
    let mut out: Vec<String> = by_version
        .iter()
        .rev()
        .map(|(v, n)| format!("v{v}: {n} {}", plural(*n)))
        .collect();
    if none > 0 {
        out.push(format!("no active version: {none} {}", plural(none)));
    }
    for (check, n) in refused {
        out.push(format!(
            "refused the latest release: {n} {} ({check})",
            plural(n)
        ));
    }
    if unverified > 0 {
        out.push(format!(
            "unverified or missing: {unverified} {}",
            plural(unverified)
        ));
    }
    out
}
