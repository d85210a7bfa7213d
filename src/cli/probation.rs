//! `npcnix probation expire`: what the probation watchdog runs at the
//! deadline (see `docs/lockout.md`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use npcnix::fsutil;
use npcnix::host::probation;
use npcnix::host::state::DataDir;

use super::env;

#[derive(clap::Args)]
#[command(
    long_about = "Lockout protection. After switching to a release, the agent keeps the host on \
probation: unless the new system's agent confirms (one successful poll of the store, and a passing \
health check if configured) before the deadline, the release is rolled back and marked bad \
(`unconfirmed`). The deadline is kept by a transient systemd timer that runs this command with the \
npcnix binary that did the switch, so it works even when the new system has no working agent.\n\n\
`npcnix status` shows a pending probation.\n\nExample (what the timer runs):\n  npcnix probation \
expire --data-dir /var/lib/npcnix --remote prod --version 42"
)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Roll back the release on probation if its deadline passed unconfirmed
    Expire(ExpireArgs),
}

#[derive(clap::Args)]
struct ExpireArgs {
    /// The agent's data directory
    #[arg(long)]
    data_dir: PathBuf,
    /// The remote's name
    #[arg(long)]
    remote: String,
    /// Act only if this version is the one on probation
    #[arg(long)]
    version: Option<u64>,
    /// Roll back even if the deadline has not passed yet
    #[arg(long)]
    now: bool,
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Sub::Expire(a) => expire(a),
    }
}

fn expire(a: ExpireArgs) -> Result<()> {
    npcnix::format::statement::RemoteName::new(&a.remote)
        .map_err(|e| anyhow::anyhow!("--remote: {e}"))?;
    let data = DataDir::open(&a.data_dir)
        .with_context(|| format!("opening data directory {}", a.data_dir.display()))?;
    // A timer that fires early (a deadline moved later, a clock step) waits
    // for the recorded deadline instead of leaving nothing armed.
    if !a.now {
        loop {
            let pending = probation::load(&data, &a.remote)?
                .filter(|p| a.version.is_none_or(|v| v == p.version))
                .and_then(|p| p.deadline);
            let now = fsutil::now_unix();
            match pending {
                Some(d) if d > now => {
                    std::thread::sleep(std::time::Duration::from_secs((d - now).min(60)))
                }
                _ => break,
            }
        }
    }
    let _lock = data.lock_wait()?;
    let now = fsutil::now_unix();
    let reason = if a.now {
        "rolled back by hand (`npcnix probation expire --now`)".to_owned()
    } else {
        "no successful poll before the probation deadline".to_owned()
    };
    match probation::roll_back_locked(&data, &a.remote, a.version, env::nix(), now, &reason, a.now)?
    {
        Some((version, what)) => {
            eprintln!("npcnix: version {version} of {}: {what}", a.remote);
            if what.contains("ROLLBACK FAILED") {
                anyhow::bail!("the rollback of version {version} failed; see the audit log");
            }
        }
        None => eprintln!(
            "npcnix: nothing to roll back for {} (confirmed, superseded or not yet due)",
            a.remote
        ),
    }
    Ok(())
}
