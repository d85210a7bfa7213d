//! `npcnix probation expire`: what the probation watchdog runs at the
//! deadline (see `docs/lockout.md`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use npcnix::host::activate::Activator;
use npcnix::host::clock::Clock;
use npcnix::host::probation::{self, Verdict, Why};
use npcnix::host::state::DataDir;

use super::env;

#[derive(clap::Args)]
#[command(
    about = "Lockout protection: roll back a release that was never confirmed",
    long_about = "Lockout protection. After switching to a release, the agent keeps the host on \
probation: unless the new system's agent confirms before the deadline (it accepts the store's head, \
can run its activation program, and passes the health check if configured), the release is rolled \
back: marked bad (`unconfirmed`), or retried with backoff when the new system reached nothing it \
could verify (docs/lockout.md). The deadline is kept by a transient systemd timer that runs this \
command with the npcnix binary that did the switch, so it works even when the new system has no \
working agent.\n\n\
`npcnix status` shows a pending probation.\n\nExample (what the timer runs):\n  npcnix probation \
expire --data-dir /var/lib/npcnix --remote-name prod --version 42"
)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Expire(ExpireArgs),
}

#[derive(clap::Args)]
#[command(
    about = "Roll back the release on probation if its deadline passed unconfirmed",
    long_about = "Roll back the release on probation for a remote if its deadline has passed \
without a confirmation (or at once with --now, which always marks it bad), and record that in the \
audit log. The release is marked bad (`unconfirmed`), or retried with backoff when the new system \
reached nothing it could verify; a release that never ran (the switch never happened) only ends \
its probation. If the rollback itself fails, the probation stays and the rollback is tried again \
one probation period later (exit 1). Nothing happens if the release was confirmed, superseded or \
is not due yet. The probation watchdog's systemd timer runs this; run it by hand with --now to \
give up on a release early.\n\n\
Example:\n  npcnix probation expire --data-dir /var/lib/npcnix --remote-name prod --now"
)]
struct ExpireArgs {
    /// The agent's data directory
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The remote's signed name
    #[arg(long, value_name = "NAME")]
    remote_name: String,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
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
    let remote = super::common::remote_name("", Some(&a.remote_name))?;
    let data = DataDir::open(&a.data_dir)
        .with_context(|| format!("opening data directory {}", a.data_dir.display()))?;
    let clock = env::clock();
    // A timer that fires early (a deadline moved later) waits for the
    // recorded deadline instead of leaving nothing armed; within the boot
    // the deadline is on the boot clock, so a wall-clock step moves nothing.
    if !a.now {
        loop {
            let pending = probation::load(&data, &a.remote_name)?
                .filter(|p| a.version.is_none_or(|v| v == p.version))
                .and_then(|p| p.deadline());
            match pending.map(|d| d.remaining(&clock.now())) {
                Some(left) if left > 0 => {
                    std::thread::sleep(std::time::Duration::from_secs(left.min(60)))
                }
                _ => break,
            }
        }
    }
    let _lock = data.lock_wait()?;
    let why = if a.now { Why::ByHand } else { Why::Deadline };
    let undo = Activator::for_undo(env::nix());
    // Re-armed only if the rollback fails (the record names a timer unit).
    let watchdog = env::watchdog(npcnix::host::config::WatchdogKind::SystemdRun);
    let done = probation::roll_back_locked(
        &data,
        remote.as_str(),
        a.version,
        &undo,
        &watchdog,
        &clock.now(),
        &why,
    )?;
    let (verdict, retry_at, next_attempt) = match done.as_ref().map(|r| r.verdict) {
        None => (None, None, None),
        Some(Verdict::Bad) => (Some("marked-bad"), None, None),
        Some(Verdict::Retry { at }) => (Some("retried"), Some(at), None),
        Some(Verdict::NotSwitched) => (Some("never-switched"), None, None),
        Some(Verdict::Undone) => (Some("undone"), None, None),
        Some(Verdict::Failed { next_attempt }) => {
            (Some("rollback-failed"), None, Some(next_attempt))
        }
    };
    if a.json {
        super::common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "rolled_back": done.as_ref().map(|r| r.version),
            "result": done.as_ref().map(|r| &r.detail),
            "verdict": verdict,
            "retry_at": retry_at,
            "next_attempt": next_attempt,
        }));
    }
    match done {
        Some(rb) => {
            if let Some(w) = &rb.audit_failed {
                warn!("{w}");
            }
            info!("version {} of {remote}: {}", rb.version, rb.detail);
            if let Verdict::Failed { .. } = rb.verdict {
                anyhow::bail!(
                    "the rollback of version {} failed; see the audit log",
                    rb.version
                );
            }
        }
        None => info!("nothing to roll back for {remote} (confirmed, superseded or not yet due)"),
    }
    Ok(())
}
