//! `npcnix activate --src DIR`: manual activation of a local flake.

use std::path::PathBuf;

use anyhow::{bail, Result};

use npcnix::fsutil;
use npcnix::host::activate::Activator;
use npcnix::host::journal::{self, AuditEvent};
use npcnix::host::probation;
use npcnix::host::state::StateError;

use super::common;

#[derive(clap::Args)]
#[command(
    about = "Activate a local flake by hand (takes the agent's lock)",
    long_about = "Activate a local flake directory by hand (break-glass), with the configured \
activation program and mode. Takes the same lock as the agent, so it never runs while the agent \
activates (and the agent waits for it). Nothing is verified: this is the operator acting directly. The \
agent's verified state is left as it is; the action is recorded in the audit log. The flake is \
evaluated with its flake.lock as it is (--no-update-lock-file): run `nix flake lock` in DIR first if \
an input is missing from it.\n\nExample:\n  npcnix activate --src /root/fleet-checkout"
)]
pub struct Args {
    #[command(flatten)]
    cfg: common::ConfigArgs,
    /// Flake directory to activate
    #[arg(long, value_name = "DIR")]
    src: PathBuf,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let v = a.cfg.load()?;
    let data = a.cfg.data(&v)?;
    common::existing_dir("--src", &a.src)?;
    let _lock = match data.try_lock() {
        Ok(l) => l,
        Err(StateError::Locked(p)) => bail!(
            "an activation is in progress (lock {} is held by another npcnix process); try again when it finishes",
            p.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if !a.src.join("flake.nix").is_file() {
        bail!("{} has no flake.nix", a.src.display());
    }
    let act = Activator::from_config(
        &v.config.activation,
        &v.config.configuration,
        super::env::activation_program(),
        super::env::nix(),
    );
    let now = fsutil::now_unix();
    // The operator takes over: a release on probation must not be rolled
    // back over the operator's fix by its watchdog.
    let watchdog = super::env::watchdog(v.config.lockout.watchdog);
    if let Some(ended) = probation::end_by_operator(
        &data,
        v.remote.as_str(),
        &watchdog,
        now,
        &format!("manual activation from {}", a.src.display()),
    )? {
        info!(
            "ended the probation of version {} (recorded in the audit log): the watchdog will not roll back this activation",
            ended.probation.version
        );
        if let Some(w) = ended.audit_failed {
            warn!("{w}");
        }
    }
    let result = act.run(
        &act.args(&a.src),
        &[("NPCNIX_REMOTE", v.remote.to_string())],
    );
    let mut ev = AuditEvent::new(now, "manual-activation", v.remote.as_str());
    ev.detail = Some(format!(
        "{} from {}: {}",
        act.mode.as_arg(),
        a.src.display(),
        match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    ));
    journal::append(&data.audit_path(), &ev)?;
    result?;
    if a.json {
        common::print_json(&serde_json::json!({
            "configuration": v.config.configuration,
            "mode": act.mode.as_arg(),
            "src": a.src,
        }));
        return Ok(());
    }
    outln!(
        "activated {} ({}) from {}",
        v.config.configuration,
        act.mode.as_arg(),
        a.src.display()
    );
    Ok(())
}
