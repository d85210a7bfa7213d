//! The NixOS boundary: building, switching to and undoing a system, and the
//! health check.
//!
//! [`Activation`] is what the agent asks of the host; [`Activator`] is the
//! real one (`nixos-rebuild`, or the signed path's own
//! `switch-to-configuration` in `toplevel` mode). Tests drive the agent with
//! a scripted [`Activation`] (`host/agent/tests`), and the binary with a
//! recording `nixos-rebuild` stand-in (`NPCNIX_NIXOS_REBUILD`).
//!
//! Children run in their own process group, so a Ctrl-C or SIGTERM aimed at
//! the agent does not interrupt an activation half-way; the agent waits for
//! the activation to finish before it exits. Output is inherited (journald
//! captures it under the npcnix unit).

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::host::config::{ActivationMode, HealthCheckConfig};
use crate::nix::NixError;
use crate::verify::flake_inputs::InputsError;

/// Environment variable that overrides the activation program (tests point
/// it at a recording script; operators may point it at a wrapper).
pub const PROGRAM_ENV: &str = "NPCNIX_NIXOS_REBUILD";

/// Why an activation, a build, a rollback or a probe failed (shown, and
/// recorded with the release).
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("running {program:?}: {source} (set activation.program or {PROGRAM_ENV})")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} exited with {status}")]
    Exit { what: String, status: ExitStatus },
    #[error(transparent)]
    Nix(#[from] NixError),
    /// A system path that must not be run from (a symlink, a file, a path
    /// that resolves elsewhere), or a build that left none.
    #[error("{}: {reason}", .path.display())]
    System { path: PathBuf, reason: String },
    /// The activation program cannot be run (found by the probe a new
    /// system's agent runs before confirming).
    #[error("activation program {program:?} {reason}")]
    Program { program: String, reason: String },
    /// A substituter or its key is not usable.
    #[error("{0}")]
    Setting(String),
    /// The release's flake does not pin its inputs: a property of the
    /// signed release, so it is refused, not retried.
    #[error("{0}")]
    Unlocked(#[from] InputsError),
}

/// How a release is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Evaluate the flake with nixos-rebuild.
    Flake,
    /// Realise and switch to this signed store path.
    Toplevel(String),
}

/// How an unconfirmed release is undone, fixed when its probation was armed
/// (the watchdog must not depend on anything the new system changed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPlan {
    /// `flake`: `<program> <mode> --rollback`; `toplevel`: the previous
    /// generation of `profile`, switched to with its own
    /// switch-to-configuration.
    pub toplevel: bool,
    /// The activation program, as an absolute path when it was found.
    pub program: String,
    /// The mode the release was applied with (`switch`, `test`, `boot`).
    pub mode: ActivationMode,
    pub profile: PathBuf,
    /// The system to return to, observed when the probation was armed
    /// (`None` where it could not be read: no `/run/current-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestorePoint>,
}

/// Where the system before a release was observed, and what it was: the
/// running system (`/run/current-system`) for `switch` and `test`, the boot
/// default (the system profile) for `boot`. A rollback that finds `link`
/// still at `target` has nothing to undo (the agent was stopped between
/// arming and switching), and one that ran is checked to have arrived there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePoint {
    pub link: PathBuf,
    pub target: PathBuf,
}

impl RestorePoint {
    /// Observes the system a release applied with `mode` replaces.
    pub fn observe(mode: ActivationMode, run_dir: &Path, profile: &Path) -> Option<RestorePoint> {
        let link = match mode {
            ActivationMode::Boot => profile.to_path_buf(),
            _ => run_dir.join("current-system"),
        };
        let target = std::fs::canonicalize(&link).ok()?;
        Some(RestorePoint { link, target })
    }

    /// Whether `link` points at `target` now.
    pub fn holds(&self) -> bool {
        std::fs::canonicalize(&self.link).is_ok_and(|t| t == self.target)
    }
}

/// What the agent asks of the host's NixOS: the effects, behind one trait so
/// whole poll sequences run in-process with a scripted one. The settings
/// (program, mode, profile) are the [`Activator`]'s.
pub trait Activation: Send + Sync {
    /// The activation settings (pure: plan, arguments, modes).
    fn activator(&self) -> &Activator;
    /// Before anything evaluates a flake: its `flake.lock` pins every input
    /// its `flake.nix` names ([`crate::verify::flake_inputs`]), so no input
    /// is resolved (or fetched) on this host. Nothing to check for a
    /// signed system path.
    fn check_inputs(&self, plan: &Plan, flake_dir: &Path) -> Result<(), ActivationError>;
    /// Builds the system a release would switch to, without activating it,
    /// and returns its path.
    fn build(
        &self,
        plan: &Plan,
        flake_dir: &Path,
        workdir: &Path,
        env: &[(&str, String)],
    ) -> Result<PathBuf, ActivationError>;
    /// Applies a release; `built`: the system [`Activation::build`] made
    /// for it and the inspection judged (switched to without evaluating
    /// the flake again where the activator may, issue 36).
    fn apply(
        &self,
        plan: &Plan,
        flake_dir: &Path,
        built: Option<&Path>,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError>;
    /// Returns the system to the previous generation (a release whose
    /// health check failed right after the switch).
    fn roll_back(&self, plan: &Plan, env: &[(&str, String)]) -> Result<(), ActivationError>;
    /// Undoes a release on probation as recorded when it was armed (what
    /// the watchdog runs too).
    fn undo(&self, rollback: &RollbackPlan, env: &[(&str, String)]) -> Result<(), ActivationError>;
    /// Activates `system` (a system that ran before) with `action`, without
    /// touching the profile: the exact undo of a `test` activation.
    fn restore(
        &self,
        system: &Path,
        action: &str,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError>;
    /// Checks that this host can apply its next release: the activation
    /// program resolves to an executable, and in `toplevel` mode the Nix
    /// commands run and the substituter settings are well-formed. A new
    /// system's agent runs it before confirming (docs/lockout.md).
    fn probe(&self) -> Result<(), ActivationError>;
}

mod activator;

pub use activator::Activator;

/// Checks a realised toplevel before anything runs from it: it must be a
/// directory in place (not a symlink leading elsewhere, inside or outside the
/// store), and its resolved path must be the signed path itself. Returns the
/// path to run `bin/switch-to-configuration` from.
pub fn realised_system(signed: &Path) -> Result<PathBuf, ActivationError> {
    let bad = |reason: String| ActivationError::System {
        path: signed.to_owned(),
        reason,
    };
    let md = std::fs::symlink_metadata(signed).map_err(|e| bad(e.to_string()))?;
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(bad(
            "not a directory in the store (a symlink or a file); refusing to run anything from it"
                .into(),
        ));
    }
    let resolved = std::fs::canonicalize(signed).map_err(|e| bad(e.to_string()))?;
    if resolved != signed {
        return Err(bad(format!(
            "resolves to {}; refusing to run anything from outside the signed path",
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// Result of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(String),
}

/// Runs the health check command with its timeout. A check that cannot be
/// started, fails, or times out is unhealthy.
pub fn health_check(h: &HealthCheckConfig, env: &[(&str, String)]) -> Health {
    let Some((prog, args)) = h.command.split_first() else {
        return Health::Unhealthy("empty health check command".into());
    };
    let mut c = Command::new(prog);
    c.args(args).process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => return Health::Unhealthy(format!("cannot run {prog:?}: {e}")),
    };
    let deadline = Instant::now() + Duration::from_secs(h.timeout_secs);
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Health::Healthy,
            Ok(Some(st)) => return Health::Unhealthy(format!("health check exited with {st}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Health::Unhealthy(format!(
                    "health check timed out after {}s",
                    h.timeout_secs
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Health::Unhealthy(format!("waiting for the health check: {e}")),
        }
    }
}
