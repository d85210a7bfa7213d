//! `npcnix log`: the version log, verified end to end.

use std::io::Write;

use anyhow::Result;

use npcnix::format::text::visible;
use npcnix::fsutil;
use npcnix::publish::history as history_walk;
use npcnix::verify::history;

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
    #[command(flatten)]
    trust: common::TrustArgs,

    /// The remote's signed name (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    #[command(flatten)]
    store: common::StoreArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    // Every release is checked at the remote's threshold (1 when only
    // keys are given).
    let (trust, retired) = a.trust.resolve(&remote, &[], None)?;
    let mut policy = trust.policy;
    policy
        .keys
        .extend(retired.into_iter().map(|key| npcnix::verify::TrustedKey {
            key,
            scope: npcnix::verify::KeyScope::AnyRemote,
            not_after: None,
        }));
    let store = a.store.open(&a.remote)?;
    // One release at a time: fetched, checked, printed, dropped. Memory
    // stays constant whatever the store holds.
    // Output to a closed pipe is dropped; the log is still checked to its
    // end, so the exit code is the verdict (super::out).
    let mut out = std::io::BufWriter::new(super::out::Stdout);
    let mut first = true;
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
    let mut write_error = None;
    let mut each = |entry: &history::LogEntry| {
        let res = if a.json {
            let sep = if first { "" } else { "," };
            first = false;
            write!(out, "{sep}").and_then(|()| {
                serde_json::to_writer(&mut out, entry).map_err(std::io::Error::other)
            })
        } else {
            print_entry(&mut out, entry)
        };
        if let Err(e) = res {
            write_error.get_or_insert(e);
        }
    };
    let walked = history_walk::walk(&store, &policy, fsutil::now_unix(), &mut each)?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let problems = &walked.problems;
    if a.json {
        write!(
            out,
            "],\"problems\":{},\"more_problems\":{},\"unexpected_objects\":{},\"more_unexpected_objects\":{},\"ok\":{}}}",
            serde_json::to_string(problems)?,
            walked.more_problems,
            serde_json::to_string(&walked.unexpected)?,
            walked.more_unexpected,
            walked.ok()
        )?;
        writeln!(out)?;
    } else {
        for u in &walked.unexpected {
            writeln!(out, "warning: {}", visible(u))?;
        }
        if walked.more_unexpected > 0 {
            writeln!(
                out,
                "warning: and {} more unexpected objects",
                walked.more_unexpected
            )?;
        }
        if problems.is_empty() {
            writeln!(
                out,
                "{} releases; signatures, versions and hash chain verified",
                walked.count
            )?;
        }
    }
    out.flush()?;
    drop(out);
    if problems.is_empty() && !walked.unexpected.is_empty() {
        return Err(Unverified(format!(
            "the log holds {} object(s) that are not releases (first: {})",
            walked.unexpected.len() as u64 + walked.more_unexpected,
            visible(&walked.unexpected[0])
        ))
        .into());
    }
    if let Some(p) = problems.first() {
        let total = problems.len() as u64 + walked.more_problems;
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

/// One line of the table (and, for a release that retires hosts or rolls
/// out in waves, a line that says so).
fn print_entry(out: &mut impl Write, entry: &history::LogEntry) -> std::io::Result<()> {
    if !entry.verified {
        return writeln!(
            out,
            "{:>8}  UNVERIFIED: {}",
            entry.version,
            visible(entry.error.as_deref().unwrap_or(""))
        );
    }
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
    if let Some(d) = &entry.decommission {
        writeln!(
            out,
            "{:>8}  !! decommission: {} (those hosts skip lockout protection)",
            "",
            d.iter()
                .map(|n| npcnix::publish::review::quoted(n))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if let Some(r) = &entry.rollout {
        writeln!(
            out,
            "{:>8}  rollout: {}",
            "",
            npcnix::publish::review::rollout_words(r)
        )?;
    }
    Ok(())
}
