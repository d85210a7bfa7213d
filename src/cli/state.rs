//! `npcnix state reset`: documented recovery from a lost or corrupt state.

use std::path::PathBuf;

use anyhow::{Context, Result};

use npcnix::audit::{self, AuditEvent};
use npcnix::fsutil;
use npcnix::state::{DataDir, HostState};
use npcnix::statement::RemoteName;

use super::common;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Replace a corrupt or lost state file, pinning a version floor
    #[command(
        long_about = "Recovery when state.json is corrupt or missing: the old file (if any) is \
kept as state.json.corrupt-<time>, and a new state is written in which REMOTE refuses every version \
below --min-version. Use the highest version you know this host ran (see the audit log, \
`npcnix log`, or your deployment records): a floor that is too low re-opens rollbacks down to it."
    )]
    Reset {
        /// Remote name to set the floor for
        #[arg(long, value_name = "NAME")]
        remote: String,
        /// Refuse versions below this
        #[arg(long, value_name = "N")]
        min_version: u64,
        /// Data dir
        #[arg(
            long,
            value_name = "DIR",
            env = "NPCNIX_DATA_DIR",
            default_value = "/var/lib/npcnix"
        )]
        data_dir: PathBuf,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Reset {
            remote,
            min_version,
            data_dir,
        } => {
            let remote = RemoteName::new(&remote).map_err(|e| anyhow::anyhow!(e))?;
            let data = DataDir::open(&data_dir)?;
            let _lock = data.lock_wait()?;
            let now = fsutil::now_unix();
            let path = data.state_path();
            if path.exists() {
                let kept = data.root.join(format!("state.json.corrupt-{now}"));
                std::fs::rename(&path, &kept)
                    .with_context(|| format!("keeping {}", kept.display()))?;
                eprintln!("npcnix: kept the old state as {}", kept.display());
            }
            let mut st = HostState::default();
            st.remote_mut(remote.as_str()).floor = Some(min_version);
            data.save(&st)?;
            let mut ev = AuditEvent::new(now, "state-reset", remote.as_str());
            ev.detail = Some(format!("floor set to version {min_version}"));
            audit::append(&data.audit_path(), &ev)?;
            println!("state reset: {remote} refuses versions below {min_version}");
            let _ = common::print_json;
            Ok(())
        }
    }
}
