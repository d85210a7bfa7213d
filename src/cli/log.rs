//! `npcnix log`: the version log, verified end to end.

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
    long_about = "Read every releases/<version> bundle of a remote and verify it: signatures by the \
trusted keys, strictly increasing versions without gaps, and the `previous` hash chain from the first \
release to latest. Prints one line per release (version, created, signing keys, archive hash, source \
commit) or --json. Exits 3 naming the first version where the log breaks."
)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL")]
    remote: String,
    /// Trusted public key: a .pub file or an RW... string (repeatable)
    #[arg(long = "trusted-key", value_name = "PUBKEY", required = true)]
    trusted_keys: Vec<String>,
    /// Signatures from distinct trusted keys the remote's head (and, for
    /// `log`, every release) must carry: the remote's threshold, as its
    /// hosts have it
    #[arg(long, value_name = "N", default_value_t = 1)]
    threshold: usize,

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
    let mut policy = Policy::manual(remote.clone(), common::load_public_keys(&a.trusted_keys)?);
    policy.threshold = a.threshold;
    let store = store::open_url(&a.remote, &a.store.options())?;
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
    let keys = match store.list("releases/") {
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
        Err(e) => return Err(e.into()),
    };
    let mut releases = Vec::new();
    let mut unreadable = Vec::new();
    for key in keys {
        let Some(v) = store::parse_release_key(&key) else {
            unreadable.push(format!("unexpected object {key}"));
            continue;
        };
        match log.release(v) {
            Ok(Some(bytes)) => releases.push((v, bytes)),
            // Listed but gone: the log shows the gap.
            Ok(None) => {}
            Err(e) if e.kind == StoreErrorKind::TooLarge => {
                releases.push((v, vec![b' '; BUNDLE_MAX_BYTES + 1]))
            }
            Err(e) if e.kind == StoreErrorKind::Protocol => {
                unreadable.push(format!("{key}: {}", e.detail))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (entries, problems) =
        history::check_history(&policy, &releases, latest.as_deref(), fsutil::now_unix());
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "url": a.remote,
            "ok": problems.is_empty() && unreadable.is_empty(),
            "releases": entries,
            "problems": problems,
            "unexpected_objects": unreadable,
        }));
    } else {
        println!(
            "{:>8}  {:<20}  {:<16}  {:<16}  {:>10}  SOURCE",
            "VERSION", "CREATED", "SIGNED BY", "ARCHIVE", "SIZE"
        );
        for e in &entries {
            if e.verified {
                println!(
                    "{:>8}  {:<20}  {:<16}  {:<16}  {:>10}  {}",
                    e.version,
                    e.created
                        .map(npcnix::format::time::rfc3339)
                        .unwrap_or_default(),
                    e.signers.join(","),
                    e.archive_blake3.as_deref().map(|h| &h[..16]).unwrap_or(""),
                    e.archive_size.unwrap_or(0),
                    e.source_commit
                        .as_deref()
                        .map(|c| visible(&c.chars().take(12).collect::<String>()))
                        .unwrap_or_else(|| "-".into()),
                );
            } else {
                println!(
                    "{:>8}  UNVERIFIED: {}",
                    e.version,
                    visible(e.error.as_deref().unwrap_or(""))
                );
            }
        }
        for u in &unreadable {
            println!("warning: {}", visible(u));
        }
        if problems.is_empty() {
            println!(
                "{} releases; signatures, versions and hash chain verified",
                entries.len()
            );
        }
    }
    if let Some(p) = problems.first() {
        let more = if problems.len() > 1 {
            format!(" (and {} more problems)", problems.len() - 1)
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
