//! `npcnix fleet status`: every host's signed receipt in a remote, verified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use npcnix::format::keys::PublicKey;
use npcnix::format::text::visible;
use npcnix::fsutil;
use npcnix::publish::fleet;

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
--stale-after\n  missing        pinned, known or seen before, and no receipt now\n  replayed       \
valid, but older than a receipt of the same host seen before\n  log-inconsistent  the witnessed log head \
it accepted (hosts with policy.witnesses report it) differs from another host's of the same size, or the \
store's log does not extend it: hosts were shown different histories (a split view)\n\nthen a summary per version. Pin host keys with \
--host-keys FILE (lines `host_id RW...`, as `npcnix install` prints them); without it, keys are \
remembered on first use in --known-hosts and a change is flagged. The newest receipt of each host is \
remembered next to it (<known-hosts>.seen.json): an older one served again is `replayed`, and a host seen \
before whose receipt is gone is `missing`. A store attacker can delete or replay receipts (both are \
flagged) but cannot forge one for a pinned host.\n\nExit codes: 0 every host ok (or unpinned), 1 any \
host stale, missing, replayed, key-changed, log-inconsistent or with a bad signature.\n\nExample:\n  npcnix fleet status \
--remote s3://bucket/npcnix/remotes/prod --host-keys hosts.txt --stale-after 3h"
)]
struct StatusArgs {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Show only hosts running this version
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Show only hosts whose receipt is stale or missing
    #[arg(long)]
    stale: bool,
    /// Show only hosts that fail: a receipt that is not ok (stale, missing,
    /// replayed, forged, key changed) or a last result that is a failure
    /// (rejected, activation failed, rolled back)
    #[arg(long)]
    failing: bool,
    #[command(flatten)]
    fleet: FleetArgs,
    /// Print as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

/// How the hosts' receipts are read and trusted (`fleet status`, `release
/// promote`).
#[derive(clap::Args)]
pub struct FleetArgs {
    /// Pinned host keys: lines `host_id RW...` (# comments)
    #[arg(long, value_name = "FILE")]
    pub host_keys: Option<PathBuf>,
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
    /// The remote's name as the hosts know it (default: the URL's last path
    /// segment; as `install --remote-name`): receipts are signed for it
    #[arg(long, value_name = "NAME")]
    pub remote_name: Option<String>,
    /// Receipts read at once
    #[arg(long, value_name = "N", default_value_t = fleet::DEFAULT_CONCURRENCY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    concurrency: usize,
    /// Forget a host before reading (its remembered key and newest
    /// receipt): a retired host that is no longer `missing`, or a
    /// reinstalled one (repeatable)
    #[arg(long, value_name = "HOST")]
    forget: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Sub::Status(s) => status(s),
    }
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

/// Reads and verifies every receipt of the remote at `url` (as `fleet
/// status` does: pinned keys, keys remembered on first use, the newest
/// receipt remembered per host), and saves what was learned.
pub fn survey(
    a: &FleetArgs,
    url: &str,
    store: &npcnix::store::Remote,
) -> Result<(npcnix::format::remote::RemoteName, fleet::Survey)> {
    let remote = common::remote_name(url, a.remote_name.as_deref())?;
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
    let seen_path = seen_path(&known_path);
    let mut seen = read_seen(&seen_path)?;
    let mut forgot = false;
    for h in &a.forget {
        let k = known.remove(h).is_some();
        let s = seen.remove(h).is_some();
        if !(k || s) {
            warn!("--forget {h:?}: no such host remembered");
        }
        forgot |= k || s;
        if pinned.contains_key(h) {
            warn!("--forget {h:?}: the host is pinned in --host-keys; remove its line there too");
        }
    }
    // Receipts are counted as "files" on the progress line (one a host).
    let task =
        super::progress::handle().start("reading receipts", npcnix::progress::Unit::Entries, None);
    let advance = |_: usize, _: usize| task.advance(1, 0);
    let survey = fleet::survey(
        store,
        remote.as_str(),
        &pinned,
        &mut known,
        &mut seen,
        stale_after,
        fsutil::now_unix(),
        fleet::Options {
            concurrency: a.concurrency,
            progress: Some(&advance),
        },
    )?;
    drop(task);
    if survey.learned || survey.seen_changed || forgot {
        if let Some(parent) = known_path.parent() {
            fsutil::ensure_private_dir(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    if survey.learned || forgot {
        let text: String = known
            .iter()
            .map(|(h, k)| format!("{h} {}\n", k.to_base64()))
            .collect();
        fsutil::write_atomic(&known_path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", known_path.display()))?;
    }
    if survey.seen_changed || forgot {
        // Another run may have written meanwhile: never move a host back.
        let hosts = if forgot {
            seen
        } else {
            fleet::merge_seen(read_seen(&seen_path)?, &seen)
        };
        let file = fleet::SeenFile {
            format: fleet::SEEN_FORMAT.into(),
            hosts,
        };
        let bytes = serde_json::to_vec_pretty(&file)?;
        fsutil::write_atomic(&seen_path, &bytes, 0o600)
            .with_context(|| format!("writing {}", seen_path.display()))?;
    }
    Ok((remote, survey))
}

fn status(a: StatusArgs) -> Result<()> {
    let store = a.store.open(&a.remote)?;
    let (remote, survey) = survey(&a.fleet, &a.remote, &store)?;
    let failing = survey.failing();
    let summary = fleet::summarize(&survey.rows);
    let filter = fleet::Filter {
        version: a.version,
        stale: a.stale,
        failing: a.failing,
    };
    let rows: Vec<&fleet::Row> = survey.rows.iter().filter(|r| filter.shows(r)).collect();
    let filtered = filter.is_active();
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            remote: &'a str,
            hosts: &'a [&'a fleet::Row],
            total_hosts: usize,
            summary: &'a [String],
        }
        super::out::json_of(&Out {
            remote: remote.as_str(),
            hosts: &rows,
            total_hosts: survey.rows.len(),
            summary: &summary,
        });
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    visible(&r.host),
                    visible(r.configuration.as_deref().unwrap_or("-")),
                    r.active_version.map_or("-".into(), |v| format!("v{v}")),
                    visible(&match (&r.result, &r.check, &r.hold) {
                        (Some(x), Some(c), _) => format!("{x} ({c})"),
                        (Some(x), None, Some(h)) => format!("{x} (hold v{})", h.max_version),
                        (Some(x), None, None) => x.clone(),
                        _ => "-".into(),
                    }),
                    r.age_secs.map_or("-".into(), age),
                    r.key_id.as_deref().unwrap_or("-").to_owned(),
                    r.verdict.to_string(),
                ]
            })
            .collect();
        super::out::stdout(format_args!(
            "{}",
            super::out::table(
                &[
                    "HOST",
                    "CONFIGURATION",
                    "ACTIVE",
                    "RESULT",
                    "SEEN",
                    "KEY",
                    "VERDICT"
                ],
                &cells,
                &[false, false, true, false, true, false, false],
            )
        ));
        outln!();
        if filtered {
            outln!("shown: {} of {} hosts", rows.len(), survey.rows.len());
        }
        for line in &summary {
            outln!("{line}");
        }
    }
    if failing {
        anyhow::bail!("some hosts are stale, missing, replayed or failed verification (see above)");
    }
    Ok(())
}

/// Where the newest receipt seen of each host is remembered: next to the
/// known-hosts file.
fn seen_path(known: &Path) -> PathBuf {
    let mut p = known.as_os_str().to_owned();
    p.push(".seen.json");
    PathBuf::from(p)
}

fn read_seen(path: &Path) -> Result<BTreeMap<String, fleet::LastSeen>> {
    let bytes = match fsutil::read_regular(path, 16 << 20) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let f: fleet::SeenFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a file npcnix wrote", path.display()))?;
    anyhow::ensure!(
        f.format == fleet::SEEN_FORMAT,
        "{} has format {:?}, expected {:?}",
        path.display(),
        f.format,
        fleet::SEEN_FORMAT
    );
    Ok(f.hosts)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
