//! `npcnix log`: the version log, verified end to end.

use std::io::Write;

use anyhow::Result;

use npcnix::format::bundle::BUNDLE_MAX_BYTES;
use npcnix::format::text::visible;
use npcnix::fsutil;
use npcnix::store::{self, Fetched, ReleaseLog, StoreErrorKind};
use npcnix::verify::history;
use npcnix::verify::Policy;

use super::common;
use super::exit::Unverified;

#[derive(clap::Args)]
#[command(
    about = "Print and verify a remote's whole version log",
    long_about = "Read every releases/<version> bundle of a remote and verify it: signatures by the \
trusted keys, strictly increasing versions without gaps, and the `previous` hash chain from the first \
release to latest. Prints one line per release (version, created, signing keys, archive hash, source \
commit) or --json. Exits 3 naming the first version where the log breaks.\n\nExample:\n  npcnix log --remote s3://fleet-releases/npcnix/prod --trusted-key ci.pub"
)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Trusted public key: a .pub file or an RW... string (repeatable)
    #[arg(
        long = "trusted-key",
        value_name = "PUBKEY",
        required_unless_present = "host_config"
    )]
    trusted_keys: Vec<String>,
    /// Signatures from distinct trusted keys the remote's head (and, for
    /// `log`, every release) must carry: the remote's threshold, as its
    /// hosts have it
    #[arg(long, value_name = "N", default_value_t = 1)]
    threshold: usize,
    /// Verify with exactly the keys and threshold the remote's hosts use:
    /// their host config file (overrides --trusted-key and --threshold)
    #[arg(long, value_name = "FILE")]
    host_config: Option<std::path::PathBuf>,

    /// The remote's signed name (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    #[command(flatten)]
    store: common::StoreArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// Most versions `log` will fetch one by one from a store that cannot list.
const MAX_ENUMERATED: u64 = 100_000;

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let policy = match &a.host_config {
        Some(p) => common::host_policy(p, &remote)?,
        None => {
            let mut p = Policy::manual(remote.clone(), common::load_public_keys(&a.trusted_keys)?);
            p.threshold = a.threshold;
            p
        }
    };
    let store = a.store.open(&a.remote)?;
    let log = ReleaseLog::new(store.as_ref());
    let latest = match log.latest(None) {
        Ok(Fetched::Object { bytes, .. }) => Some(bytes),
        Err(e) if e.kind == StoreErrorKind::NotFound => None,
        Ok(Fetched::NotModified) => {
            anyhow::bail!("the store answered 'not modified' to an unconditional request")
        }
        Err(e) => return Err(e.into()),
    };
    // Stores that cannot list (HTTP mirrors): enumerate versions up to the
    // verified head; missing ones show up as gaps in the chain.
    let keys = match store.list("releases/", store::MAX_LISTED) {
        Ok(k) => k,
        Err(e) if e.kind == StoreErrorKind::Unsupported => {
            let head = latest
                .as_deref()
                .and_then(|b| {
                    npcnix::verify::verify_signatures(&policy, b, fsutil::now_unix()).ok()
                })
                .map_or(0, |r| r.version());
            if head > MAX_ENUMERATED {
                anyhow::bail!("the head is version {head}; too many releases to enumerate over HTTP (max {MAX_ENUMERATED}); run `npcnix log` against the origin store");
            }
            (1..=head).map(store::release_key).collect()
        }
        Err(e) if e.kind == StoreErrorKind::TooLarge => {
            anyhow::bail!(
                "{}: more than {} objects under releases/; refusing to list them all (clean up junk objects, or audit with the store's own tools)",
                store.describe(),
                store::MAX_LISTED
            )
        }
        Err(e) => return Err(e.into()),
    };
    // One release at a time: fetched, checked, printed, dropped. Memory
    // stays constant whatever the store holds.
    // Output to a closed pipe is dropped; the log is still checked to its
    // end, so the exit code is the verdict (super::out).
    let mut out = std::io::BufWriter::new(super::out::Stdout);
    let mut check = history::HistoryCheck::new(&policy, fsutil::now_unix());
    let mut unreadable: Vec<String> = Vec::new();
    let mut more_unreadable = 0u64;
    let mut count = 0u64;
    if a.json {
        write!(
            out,
            "{{\"remote\":{},\"url\":{},\"releases\":[",
            serde_json::to_string(remote.as_str())?,
            serde_json::to_string(&a.remote)?
        )?;
    } else {
        writeln!(
            out,
            "{:>8}  {:<20}  {:<16}  {:<16}  {:>10}  SOURCE",
            "VERSION", "CREATED", "SIGNED BY", "ARCHIVE", "SIZE"
        )?;
    }
    let mut note = |u: String, list: &mut Vec<String>| {
        if list.len() < history::MAX_PROBLEMS {
            list.push(u);
        } else {
            more_unreadable += 1;
        }
    };
    for key in keys {
        let Some(v) = store::parse_release_key(&key) else {
            note(format!("unexpected object {key}"), &mut unreadable);
            continue;
        };
        let entry = match log.release(v) {
            Ok(Some(bytes)) => check.push(v, &bytes),
            // Listed but gone: the log shows the gap.
            Ok(None) => continue,
            Err(e) if e.kind == StoreErrorKind::TooLarge => {
                check.push(v, &vec![b' '; BUNDLE_MAX_BYTES + 1])
            }
            Err(e) if e.kind == StoreErrorKind::Protocol => {
                note(format!("{key}: {}", e.detail), &mut unreadable);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if a.json {
            if count > 0 {
                write!(out, ",")?;
            }
            serde_json::to_writer(&mut out, &entry)?;
        } else if entry.verified {
            writeln!(
                out,
                "{:>8}  {:<20}  {:<16}  {:<16}  {:>10}  {}",
                entry.version,
                entry
                    .created
                    .map(npcnix::format::time::rfc3339)
                    .unwrap_or_default(),
                entry.signers.join(","),
                entry
                    .archive_blake3
                    .as_deref()
                    .map(|h| &h[..16])
                    .unwrap_or(""),
                super::out::size_short(entry.archive_size.unwrap_or(0)),
                entry
                    .source_commit
                    .as_deref()
                    .map(|c| visible(&c.chars().take(12).collect::<String>()))
                    .unwrap_or_else(|| "-".into()),
            )?;
        } else {
            writeln!(
                out,
                "{:>8}  UNVERIFIED: {}",
                entry.version,
                visible(entry.error.as_deref().unwrap_or(""))
            )?;
        }
        count += 1;
    }
    let (problems, more_problems) = check.finish(latest.as_deref());
    if a.json {
        write!(
            out,
            "],\"problems\":{},\"more_problems\":{more_problems},\"unexpected_objects\":{},\"more_unexpected_objects\":{more_unreadable},\"ok\":{}}}",
            serde_json::to_string(&problems)?,
            serde_json::to_string(&unreadable)?,
            problems.is_empty() && unreadable.is_empty()
        )?;
        writeln!(out)?;
    } else {
        for u in &unreadable {
            writeln!(out, "warning: {}", visible(u))?;
        }
        if more_unreadable > 0 {
            writeln!(
                out,
                "warning: and {more_unreadable} more unexpected objects"
            )?;
        }
        if problems.is_empty() {
            writeln!(
                out,
                "{count} releases; signatures, versions and hash chain verified"
            )?;
        }
    }
    out.flush()?;
    drop(out);
    if problems.is_empty() && !unreadable.is_empty() {
        return Err(Unverified(format!(
            "the log holds {} object(s) that are not releases (first: {})",
            unreadable.len() as u64 + more_unreadable,
            visible(&unreadable[0])
        ))
        .into());
    }
    if let Some(p) = problems.first() {
        let total = problems.len() as u64 + more_problems;
        let more = if total > 1 {
            format!(" (and {} more problems)", total - 1)
        } else {
            String::new()
        };
        return Err(Unverified(format!(
            "log breaks at version {} ({}): {}{more}",
            p.version,
            p.kind,
            visible(&p.detail)
        ))
        .into());
    }
    Ok(())
}
