//! `npcnix timestamp`: re-sign the freshness of a remote's head with its
//! timestamp key(s) (the online role, D126).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use npcnix::format::keys::SecretKey;
use npcnix::format::time::rfc3339;
use npcnix::fsutil;
use npcnix::publish::Editor;

use super::common;

/// Shortest timestamp lifetime accepted: shorter ones leave no time to
/// notice a failed refresh before every host refuses the head.
pub const MIN_TIMESTAMP_SECS: u64 = 600;

#[derive(clap::Args)]
#[command(
    about = "Re-sign the head's freshness with a timestamp key (run on a schedule)",
    long_about = "Sign a new freshness timestamp for the remote's current head and write it into \
`latest` (compare-and-swap; the release itself is untouched). Hosts with policy.freshness required \
accept a release only while a timestamp for exactly it, signed by the remote's timestamp keys, is \
unexpired: a store that keeps serving an old head is refused once its timestamp expires, without \
waking the offline release keys. The head must verify at the release keys' threshold (--policy, \
--host-config or --trusted-key, as for publish). A timestamp key can sign freshness and nothing else: \
stolen, it can delay the freshness cliff, never make a host accept a release. Run it well inside the \
lifetime (e.g. every 6 h for --expires 1d; examples/npcnix-timestamp.timer).\n\nExample:\n  npcnix timestamp \
--remote s3://bucket/npcnix/remotes/prod --key ts.key --policy npcnix-policy.json --expires 1d"
)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Remote name signed into the timestamp (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// Timestamp secret key (repeatable, for a timestamp threshold above 1)
    #[arg(long = "key", value_name = "KEYFILE", required = true)]
    keys: Vec<PathBuf>,
    /// How long the timestamp is valid, e.g. 1d (at least 10 minutes)
    #[arg(long, value_name = "DURATION", value_parser = timestamp_lifetime)]
    expires: u64,
    #[command(flatten)]
    trust: common::TrustArgs,
    /// Remember the newest head timestamped here and refuse to timestamp
    /// an older one (a store rolling `latest` back); the scheduled job
    /// keeps it in its state directory
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

/// `--timestamp-key` for the commands that write a new head (publish,
/// release publish, release revert): the head gets its freshness timestamp
/// in the same write of `latest`.
#[derive(clap::Args, Debug, Default)]
pub struct TimestampArgs {
    /// Timestamp secret key (repeatable): sign the new head's freshness in
    /// the same write (required where hosts require freshness)
    #[arg(long = "timestamp-key", value_name = "KEYFILE")]
    pub timestamp_keys: Vec<PathBuf>,
    /// With --timestamp-key: how long the timestamp is valid
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = timestamp_lifetime)]
    pub timestamp_expires: u64,
}

impl TimestampArgs {
    /// The keys, loaded (empty: no timestamp).
    pub fn load(&self) -> Result<Vec<SecretKey>> {
        self.timestamp_keys
            .iter()
            .map(|k| common::load_secret_key(k))
            .collect()
    }
}

/// What `--state` remembers: the newest head this refresher timestamped.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RefresherState {
    remote: String,
    version: u64,
    statement: npcnix::format::digest::Digest,
}

fn read_state(path: &std::path::Path) -> Result<Option<RefresherState>> {
    match fsutil::read_regular(path, 4096) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{} is not a timestamp refresher state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// clap value parser for `--expires`: a duration of at least
/// [`MIN_TIMESTAMP_SECS`].
fn timestamp_lifetime(s: &str) -> std::result::Result<u64, String> {
    let secs = common::duration_secs(s)?;
    let max = npcnix::verify::DEFAULT_MAX_TIMESTAMP_LIFETIME_SECS;
    if secs > max {
        return Err(format!(
            "{s:?} is longer than {} days: hosts refuse a timestamp valid that long (policy.freshness.max_lifetime_secs)",
            max / 86_400
        ));
    }
    if secs < MIN_TIMESTAMP_SECS {
        return Err(format!(
            "{s:?} is shorter than {} minutes: hosts would refuse the head before anyone noticed a failed refresh",
            MIN_TIMESTAMP_SECS / 60
        ));
    }
    Ok(secs)
}

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let keys: Vec<SecretKey> = a
        .keys
        .iter()
        .map(|k| common::load_secret_key(k))
        .collect::<Result<_>>()?;
    // The release keys vouch for the head; the timestamp keys are never
    // release keys.
    let (trust, retired) = a.trust.resolve(&remote, &[], None)?;
    let now = fsutil::now_unix();
    let editor = Editor::new(&store, trust, now, a.store.retry())
        .with_retired(retired)
        .with_timestamp(keys.iter().collect(), a.expires);
    let floor = a.state.as_deref().map(read_state).transpose()?.flatten();
    if let Some(f) = &floor {
        if f.remote != remote.as_str() {
            anyhow::bail!(
                "{} is the state of remote {:?}, not {remote}",
                a.state
                    .as_deref()
                    .unwrap_or_else(|| std::path::Path::new(""))
                    .display(),
                f.remote
            );
        }
    }
    let r = editor.refresh_timestamp(floor.map(|f| (f.version, f.statement)))?;
    if let Some(path) = &a.state {
        let st = RefresherState {
            remote: remote.to_string(),
            version: r.version,
            statement: r.statement,
        };
        let bytes = serde_json::to_vec_pretty(&st)?;
        fsutil::write_atomic(path, &bytes, 0o600)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "version": r.version,
            "statement": r.statement.to_hex(),
            "created": r.created,
            "expires": r.expires,
            "signers": r.signers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if r.signers.is_empty() {
        warn!(
            "the trust source names no timestamp keys for {remote}: this timestamp was not checked as hosts check it (pass --policy with a \"timestamp\" section, or --host-config)"
        );
    }
    outln!(
        "{remote} version {} is fresh until {} (timestamp signed by {})",
        r.version,
        rfc3339(r.expires),
        keys.iter()
            .map(|k| k.key_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
