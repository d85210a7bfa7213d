//! `npcnix log`: the version log, verified end to end.

use std::io::Write;

use anyhow::{Context as _, Result};

use npcnix::format::text::visible;
use npcnix::fsutil;
use npcnix::publish::history as history_walk;
use npcnix::verify::history;

use super::common;
use super::exit::Unverified;

/// `--log-key` for the commands that write a new head (publish, release
/// publish, release revert): the release is appended to the remote's
/// witnessed log before it becomes the head (issue 37).
#[derive(clap::Args, Debug, Default)]
pub struct LogKeyArgs {
    /// Log secret key: append the release to the remote's witnessed log
    /// and sign the log's new checkpoint (required where hosts require
    /// witnessed releases; docs/witness.md)
    #[arg(long = "log-key", value_name = "KEYFILE")]
    pub log_key: Option<std::path::PathBuf>,
    /// With --log-key, on a remote that has releases but no log yet: start
    /// its log with this release (deliberately; a log that disappeared is
    /// never started again without it)
    #[arg(long, requires = "log_key")]
    pub new_log: bool,
}

impl LogKeyArgs {
    /// The key, loaded (`None`: no log append).
    pub fn load(&self) -> Result<Option<npcnix::format::keys::SecretKey>> {
        self.log_key
            .as_deref()
            .map(common::load_secret_key)
            .transpose()
    }
}

/// Applies a loaded `--log-key` to an editor.
pub fn with_log<'s>(
    editor: npcnix::publish::editor::Editor<'s>,
    key: Option<&'s npcnix::format::keys::SecretKey>,
    new_log: bool,
) -> npcnix::publish::editor::Editor<'s> {
    match key {
        Some(k) => editor.with_log(k, new_log),
        None => editor,
    }
}

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
    /// Read the remote's witnessed log instead (issue 37), whose
    /// checkpoints this log public key signs: verify every tile against the
    /// entries and the signed checkpoint, and report every statement
    /// logged, flagging one that is not the statement of releases/<version>
    #[arg(long, value_name = "KEY")]
    log_key: Option<String>,
    /// With --log-key: remember the log head seen in FILE; the next run
    /// checks the log extends it and reports only newer entries (a monitor
    /// on a schedule). Not moved past a suspicious entry: the alarm repeats
    /// until the file is removed
    #[arg(long, value_name = "FILE", requires = "log_key")]
    state: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(k) = a.log_key.clone() {
        return monitor(a, &k);
    }
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
        // Pretty-printed like every --json, yet streamed: each release is
        // printed (indented) as it is checked.
        write!(
            out,
            "{{\n  \"remote\": {},\n  \"url\": {},\n  \"releases\": [",
            serde_json::to_string(remote.as_str())?,
            serde_json::to_string(&a.remote)?
        )?;
    } else {
        // The one column of unbounded width (signers) comes last, so the
        // table stays aligned while it streams.
        writeln!(
            out,
            "{:>8}  {:<20}  {:<16}  {:>10}  {:<12}  SIGNED BY",
            "VERSION", "CREATED", "ARCHIVE", "SIZE", "SOURCE"
        )?;
    }
    let mut write_error = None;
    let mut each = |entry: &history::LogEntry| {
        let res = if a.json {
            let sep = if first { "\n" } else { ",\n" };
            first = false;
            serde_json::to_string_pretty(entry)
                .map_err(std::io::Error::other)
                .and_then(|text| write!(out, "{sep}    {}", text.replace('\n', "\n    ")))
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
        let indent = |v: String| v.replace('\n', "\n  ");
        write!(
            out,
            "{}],\n  \"problems\": {},\n  \"more_problems\": {},\n  \"unexpected_objects\": {},\n  \"more_unexpected_objects\": {},\n  \"ok\": {}\n}}",
            if first { "" } else { "\n  " },
            indent(serde_json::to_string_pretty(problems)?),
            walked.more_problems,
            indent(serde_json::to_string_pretty(&walked.unexpected)?),
            walked.more_unexpected,
            walked.ok() && walked.count > 0
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
        if problems.is_empty() && walked.count > 0 {
            writeln!(
                out,
                "{} releases; signatures, versions and hash chain verified",
                walked.count
            )?;
        }
    }
    out.flush()?;
    drop(out);
    if walked.count == 0 && problems.is_empty() && walked.unexpected.is_empty() {
        // A mistyped URL reads as an empty store: say so, and fail.
        anyhow::bail!(
            "{} holds no releases and no `latest`: is the remote URL right? (nothing was verified)",
            a.remote
        );
    }
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
        "{:>8}  {:<20}  {:<16}  {:>10}  {:<12}  {}",
        entry.version,
        entry
            .created
            .map(npcnix::format::time::rfc3339)
            .unwrap_or_default(),
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
        entry.signers.join(","),
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

/// `npcnix log --log-key`: the witnessed log as a monitor.
fn monitor(a: Args, log_key: &str) -> Result<()> {
    use npcnix::publish::monitor::{self, Published};
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let pk = common::load_public_key(log_key)?;
    let vkey = npcnix::verify::witness::log_verifier(&remote, &pk).map_err(anyhow::Error::msg)?;
    let since: Option<npcnix::format::merkle::TreeHead> = match &a.state {
        Some(p) => match fsutil::read_regular(p, 4096) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!("{}: not a log head this command wrote ({e})", p.display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!("reading {}", p.display())))
            }
        },
        None => None,
    };
    let store = a.store.open(&a.remote)?;
    let mut out = std::io::BufWriter::new(super::out::Stdout);
    if !a.json {
        writeln!(
            out,
            "{:>8}  {:>8}  {:<20}  {:<16}  PUBLISHED AS",
            "INDEX", "VERSION", "CREATED", "STATEMENT"
        )?;
    }
    let mut rows = Vec::new();
    let mut each = |e: &monitor::Entry| {
        if a.json {
            rows.push(serde_json::to_value(e).unwrap_or_default());
        } else {
            let created = e
                .created
                .map(npcnix::format::time::rfc3339)
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:>8}  {:>8}  {:<20}  {:<16}  {}",
                e.index,
                e.version.map_or_else(|| "-".into(), |v| v.to_string()),
                created,
                &e.statement[..16],
                match e.published {
                    Published::Release => "releases/<version>".to_owned(),
                    Published::Missing =>
                        "not in releases/ (never published, or the publish stopped)".into(),
                    Published::Differs =>
                        "DIFFERS from releases/<version>: another statement signed for this version"
                            .into(),
                    Published::Duplicate => "DUPLICATE: a version logged before".into(),
                    Published::Unreadable => "UNREADABLE: not a release statement".into(),
                }
            );
        }
    };
    let res = monitor::monitor(&store, &vkey, since.as_ref(), &mut each);
    let m = match res {
        Ok(m) => m,
        Err(monitor::MonitorError::Read(npcnix::store::tlog::LogReadError::Store(e))) => {
            return Err(e.into())
        }
        Err(e) => return Err(Unverified(e.to_string()).into()),
    };
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "url": a.remote,
            "log": m.head,
            "entries": rows,
            "suspicious": m.suspicious,
            "ok": m.suspicious == 0,
        }));
    } else {
        writeln!(
            out,
            "{} entries; tiles and checkpoint verified; {} reported, {} suspicious",
            m.head.size, m.reported, m.suspicious
        )?;
    }
    out.flush()?;
    drop(out);
    // The state moves on only past a clean log: an alarm repeats on every
    // run until someone looks (and removes the state file to acknowledge).
    if let (Some(p), 0) = (&a.state, m.suspicious) {
        fsutil::write_atomic(p, &serde_json::to_vec(&m.head)?, 0o600)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if m.suspicious > 0 {
        return Err(Unverified(format!(
            "{} logged statement(s) are not the releases published for their versions: a release key may be in other hands, or a publish stopped after its log append (see the lines marked above; --state does not move past them)",
            m.suspicious
        ))
        .into());
    }
    Ok(())
}
