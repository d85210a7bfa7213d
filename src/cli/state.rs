//! `npcnix state reset`: documented recovery from a lost or corrupt state.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use npcnix::format::statement::RemoteName;
use npcnix::fsutil;
use npcnix::host::journal::{self, AuditEvent};
use npcnix::host::state::HostState;

#[derive(clap::Args)]
#[command(
    about = "Recover from a lost or corrupt state file",
    long_about = "Recovery of this host's state (state.json in the data dir: the versions each \
remote has verified, which is what refuses rollbacks). `state reset` replaces a corrupt or lost \
state, pinning a version floor for one remote.\n\nExample:\n  npcnix state reset --remote-name prod \
--min-version 42"
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    #[command(
        about = "Replace a corrupt or lost state file, pinning a version floor",
        long_about = "Recovery when state.json is corrupt or missing: the old file (if any) is \
kept as state.json.corrupt-<time>, and a new state is written in which REMOTE refuses every version \
below --min-version. Use the highest version you know this host ran (see the audit log, \
`npcnix log`, or your deployment records): a floor that is too low re-opens rollbacks down to it. The \
remote's cached head and freshness timestamp record are forgotten too; its witnessed log head \
(docs/witness.md) only with --forget-log-head.\n\nThe remote is named by its signed \
name (--remote-name) or by its URL (--remote; the name is the URL's last path segment, as for \
`pull`).\n\nExample:\n  npcnix state reset --remote-name prod --min-version 42"
    )]
    Reset {
        /// The remote's signed name to set the floor for
        #[arg(
            long,
            value_name = "NAME",
            required_unless_present = "remote",
            conflicts_with = "remote"
        )]
        remote_name: Option<String>,
        /// The remote's URL (its name is the last path segment)
        #[arg(long, value_name = "URL", value_parser = super::common::remote_url)]
        remote: Option<String>,
        /// Refuse versions below this
        #[arg(long, value_name = "N")]
        min_version: u64,
        /// Data dir [default: /var/lib/npcnix as root, else
        /// $XDG_STATE_HOME/npcnix or ~/.local/state/npcnix, like `pull`]
        #[arg(long, value_name = "DIR", env = "NPCNIX_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Reset even though the state file is readable
        #[arg(long)]
        force: bool,
        /// Why a floor below the highest version the audit log shows this
        /// host verified is right (recorded in the audit log)
        #[arg(long, value_name = "TEXT")]
        lower_floor_because: Option<String>,
        /// Also forget the witnessed log head this host accepted (issue 37):
        /// only once the operators agree which history of the log is the
        /// right one (docs/witness.md); without it the head is kept and
        /// later checkpoints must still extend it
        #[arg(long)]
        forget_log_head: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Reset {
            remote_name,
            remote,
            min_version,
            data_dir,
            force,
            lower_floor_because,
            forget_log_head,
            json,
        } => {
            let remote: RemoteName = super::common::remote_name(
                remote.as_deref().unwrap_or_default(),
                remote_name.as_deref(),
            )?;
            let data = super::common::open_data_dir(&super::common::data_dir(data_dir)?)?;
            let _lock = data.lock_wait()?;
            // The audit log outlives a lost state file: a floor below what it
            // shows this host verified would re-open rollbacks.
            let audit = match journal::read(&data.audit_path()) {
                Ok(lines) => lines,
                // An audit log that exists but cannot be read is no evidence
                // of a low history: ask for the reason.
                Err(e) if lower_floor_because.is_none() => bail!(
                    "cannot read the audit log {} ({e}) to check the highest version this host verified; pass --lower-floor-because TEXT to reset anyway",
                    data.audit_path().display()
                ),
                Err(_) => Vec::new(),
            };
            let audited = audit
                .into_iter()
                .flatten()
                .filter(|e| e.remote == remote.as_str() && journal::shows_verified(&e.event))
                .filter_map(|e| e.version)
                .max();
            if let Some(high) = audited.filter(|h| min_version < *h) {
                if lower_floor_because.is_none() {
                    bail!(
                        "the audit log shows this host verified {remote} version {high}; a floor of {min_version} would re-open rollbacks to older releases. Use --min-version {high}, or pass --lower-floor-because TEXT to record why a lower floor is right"
                    );
                }
            }
            let now = fsutil::now_unix();
            let path = data.state_path();
            // A readable state keeps every other remote's protection; only the
            // named remote gets the floor (and only with --force, since the
            // state was fine).
            let mut fresh = false;
            let mut st = match data.load() {
                Ok(_) if !force => bail!(
                    "{} is readable; resetting it would discard this host's rollback state for {remote}. Pass --force if you really mean to",
                    path.display()
                ),
                Ok(st) => st,
                Err(e) => {
                    warn!("{e}");
                    warn!("starting a new state; rollback state of remotes other than {remote} is lost");
                    fresh = true;
                    HostState::default()
                }
            };
            let mut kept = None;
            if path.exists() {
                let copy = data.root.join(format!("state.json.corrupt-{now}"));
                std::fs::copy(&path, &copy)
                    .with_context(|| format!("keeping {}", copy.display()))?;
                info!("kept the old state as {}", copy.display());
                kept = Some(copy);
            }
            let r = st.remote_mut(remote.as_str());
            r.highest = None;
            r.active = None;
            r.etag = None;
            r.floor = Some(min_version);
            data.save(&st)?;
            data.save_head(remote.as_str(), None)
                .context("dropping the cached head")?;
            data.forget_timestamp(remote.as_str())
                .context("dropping the freshness timestamp record")?;
            // The witnessed log head only when asked: a reset for a corrupt
            // state.json must not re-open split views to trust on first use.
            if forget_log_head {
                data.forget_log_head(remote.as_str())
                    .context("dropping the witnessed log head")?;
            }
            let mut ev = AuditEvent::new(now, "state-reset", remote.as_str());
            ev.detail = Some(
                match &lower_floor_because {
                    Some(why) => {
                        format!(
                            "floor set to version {min_version}, below the audited version: {why}"
                        )
                    }
                    None => format!("floor set to version {min_version}"),
                } + if forget_log_head {
                    "; the witnessed log head was forgotten"
                } else {
                    ""
                },
            );
            journal::append(&data.audit_path(), &ev)?;
            if json {
                super::common::print_json(&serde_json::json!({
                    "remote": remote.as_str(),
                    "min_version": min_version,
                    "new_state": fresh,
                    "kept": kept,
                    "lower_floor_because": lower_floor_because,
                }));
            } else {
                outln!("state reset: {remote} refuses versions below {min_version}");
            }
            Ok(())
        }
    }
}
