//! Running `nixos-rebuild` (or the configured stand-in) and health checks.
//!
//! Children run in their own process group, so a Ctrl-C or SIGTERM aimed at
//! the agent does not interrupt an activation half-way; the agent waits for
//! the activation to finish before it exits. Output is inherited (journald
//! captures it under the npcnix unit).

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::host::config::{ActivationConfig, ActivationMode, HealthCheckConfig, ToplevelFallback};
use crate::nix::{Nix, SYSTEM_PROFILE};
use crate::verify::Refusal;

/// Environment variable that overrides the activation program (tests point
/// it at a recording script; operators may point it at a wrapper).
pub const PROGRAM_ENV: &str = "NPCNIX_NIXOS_REBUILD";

/// Why an activation or a rollback failed (the message is shown and
/// recorded with the release).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActivationError(pub String);

impl ActivationError {
    fn from_error(e: impl std::fmt::Display) -> ActivationError {
        ActivationError(e.to_string())
    }
}

/// Checks a realised toplevel before anything runs from it: it must be a
/// directory in place (not a symlink leading elsewhere, inside or outside the
/// store), and its resolved path must be the signed path itself. Returns the
/// path to run `bin/switch-to-configuration` from.
pub fn realised_system(signed: &Path) -> Result<std::path::PathBuf, ActivationError> {
    let md = std::fs::symlink_metadata(signed)
        .map_err(|e| ActivationError(format!("{}: {e}", signed.display())))?;
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(ActivationError(format!(
            "{} is not a directory in the store (a symlink or a file); refusing to run anything from it",
            signed.display()
        )));
    }
    let resolved = std::fs::canonicalize(signed)
        .map_err(|e| ActivationError(format!("{}: {e}", signed.display())))?;
    if resolved != signed {
        return Err(ActivationError(format!(
            "{} resolves to {}; refusing to run anything from outside the signed path",
            signed.display(),
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// What to run to activate a flake.
#[derive(Clone, Debug)]
pub struct Activator {
    pub program: String,
    pub mode: ActivationMode,
    pub configuration: String,
    pub extra_substituters: Vec<String>,
    pub extra_trusted_public_keys: Vec<String>,
    /// Mode `toplevel`: the switch-to-configuration action.
    pub toplevel_action: ActivationMode,
    /// Mode `toplevel`: the system profile.
    pub profile: std::path::PathBuf,
    pub toplevel_fallback: ToplevelFallback,
    pub nix: Nix,
}

/// How a release is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Evaluate the flake with nixos-rebuild.
    Flake,
    /// Realise and switch to this signed store path.
    Toplevel(String),
}

impl Activator {
    /// `program_override` (the CLI reads it from [`PROGRAM_ENV`]) wins over
    /// `activation.program`.
    pub fn from_config(
        cfg: &ActivationConfig,
        configuration: &str,
        program_override: Option<String>,
        nix: Nix,
    ) -> Activator {
        let program = program_override
            .filter(|p| !p.is_empty())
            .or_else(|| cfg.program.clone())
            .unwrap_or_else(|| "nixos-rebuild".to_owned());
        Activator {
            program,
            mode: cfg.mode,
            configuration: configuration.to_owned(),
            extra_substituters: cfg.extra_substituters.clone(),
            extra_trusted_public_keys: cfg.extra_trusted_public_keys.clone(),
            toplevel_action: cfg.toplevel_action.unwrap_or(ActivationMode::Switch),
            profile: cfg.profile.clone().unwrap_or_else(|| SYSTEM_PROFILE.into()),
            toplevel_fallback: cfg.toplevel_fallback,
            nix,
        }
    }

    /// Decides how to apply a release, given the signed toplevels it
    /// carries. `Err` names why a `toplevel` host refuses it.
    pub fn plan(
        &self,
        toplevels: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<Plan, Refusal> {
        if self.mode != ActivationMode::Toplevel {
            return Ok(Plan::Flake);
        }
        match toplevels.and_then(|t| t.get(&self.configuration)) {
            Some(p) => Ok(Plan::Toplevel(p.clone())),
            None if self.toplevel_fallback == ToplevelFallback::Evaluate => Ok(Plan::Flake),
            None => Err(Refusal::ToplevelMissing(format!(
                "the release signs no system path for configuration {:?}, and this host does not evaluate flakes (activation.toplevel_fallback = refuse)",
                self.configuration
            ))),
        }
    }

    /// The mode whose semantics apply (the action, for toplevel hosts).
    pub fn effective_mode(&self) -> ActivationMode {
        match self.mode {
            ActivationMode::Toplevel => self.toplevel_action,
            m => m,
        }
    }

    /// The activator that undoes a release applied under `plan` (what the
    /// probation watchdog runs; see [`crate::host::probation`]).
    pub fn for_rollback(plan: &crate::host::probation::RollbackPlan, nix: Nix) -> Activator {
        Activator {
            program: plan.program.clone(),
            mode: if plan.toplevel {
                ActivationMode::Toplevel
            } else {
                plan.mode
            },
            configuration: String::new(),
            extra_substituters: Vec::new(),
            extra_trusted_public_keys: Vec::new(),
            toplevel_action: plan.mode,
            profile: plan.profile.clone(),
            toplevel_fallback: ToplevelFallback::Refuse,
            nix,
        }
    }

    /// Builds the system a release would switch to, without activating it,
    /// and returns its path: `nixos-rebuild build` (run in `workdir`, where
    /// it leaves its `result` link), or the realised signed path.
    pub fn build(
        &self,
        plan: &Plan,
        flake_dir: &Path,
        workdir: &Path,
        env: &[(&str, String)],
    ) -> Result<std::path::PathBuf, ActivationError> {
        match plan {
            Plan::Flake => {
                let mut build = self.clone();
                build.mode = ActivationMode::Switch;
                let mut args = build.args(flake_dir);
                args[0] = "build".into();
                let mut c = Command::new(&self.program);
                c.args(&args).current_dir(workdir).process_group(0);
                for (k, v) in env {
                    c.env(k, v);
                }
                let st = c.status().map_err(|e| {
                    ActivationError(format!("running {:?} build: {e}", self.program))
                })?;
                if !st.success() {
                    return Err(ActivationError(format!(
                        "{} build exited with {st}",
                        self.program
                    )));
                }
                let result = workdir.join("result");
                std::fs::canonicalize(&result).map_err(|e| {
                    ActivationError(format!(
                        "{} build left no system at {}: {e}",
                        self.program,
                        result.display()
                    ))
                })
            }
            Plan::Toplevel(path) => {
                self.nix
                    .realise(
                        path,
                        &self.extra_substituters,
                        &self.extra_trusted_public_keys,
                    )
                    .map_err(ActivationError::from_error)?;
                realised_system(Path::new(path))
            }
        }
    }

    /// Applies a release; `Err` is the failure message.
    pub fn apply(
        &self,
        plan: &Plan,
        flake_dir: &Path,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        match plan {
            Plan::Flake => {
                let mut flake_self = self.clone();
                flake_self.mode = self.effective_mode();
                let st = flake_self
                    .run(&flake_self.args(flake_dir), env)
                    .map_err(ActivationError::from_error)?;
                if st.success() {
                    Ok(())
                } else {
                    Err(ActivationError(format!(
                        "{} exited with {st}",
                        self.program
                    )))
                }
            }
            Plan::Toplevel(path) => {
                self.nix
                    .realise(
                        path,
                        &self.extra_substituters,
                        &self.extra_trusted_public_keys,
                    )
                    .map_err(ActivationError::from_error)?;
                let system = realised_system(Path::new(path))?;
                if self.toplevel_action != ActivationMode::DryActivate {
                    self.nix
                        .set_profile(&self.profile, path)
                        .map_err(ActivationError::from_error)?;
                }
                self.switch_to(&system, self.toplevel_action.as_arg(), env)
            }
        }
    }

    fn switch_to(
        &self,
        system: &Path,
        action: &str,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        let script = system.join("bin/switch-to-configuration");
        let st = Command::new(&script)
            .arg(action)
            .process_group(0)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .map_err(|e| ActivationError(format!("running {}: {e}", script.display())))?;
        if st.success() {
            Ok(())
        } else {
            Err(ActivationError(format!(
                "{} {action} exited with {st}",
                script.display()
            )))
        }
    }

    /// Activates `system` (a system that ran before) with `action`, without
    /// touching the profile: the exact undo of a `test` activation.
    pub fn restore(
        &self,
        system: &Path,
        action: &str,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        self.switch_to(system, action, env)
    }

    /// Returns the system to the previous generation.
    pub fn roll_back(&self, plan: &Plan, env: &[(&str, String)]) -> Result<(), ActivationError> {
        if self.effective_mode() == ActivationMode::DryActivate {
            return Ok(());
        }
        match plan {
            Plan::Flake => {
                let st = self
                    .run(&self.rollback_args(), env)
                    .map_err(ActivationError::from_error)?;
                if st.success() {
                    Ok(())
                } else {
                    Err(ActivationError(format!(
                        "{} exited with {st}",
                        self.program
                    )))
                }
            }
            Plan::Toplevel(_) => {
                let previous = self
                    .nix
                    .rollback_profile(&self.profile)
                    .map_err(ActivationError::from_error)?;
                let action = match self.toplevel_action {
                    ActivationMode::Test => "test",
                    // A boot release undone before its reboot: the previous
                    // generation becomes the boot default again.
                    ActivationMode::Boot => "boot",
                    _ => "switch",
                };
                self.switch_to(&previous, action, env)
            }
        }
    }

    fn nix_options(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if !self.extra_substituters.is_empty() {
            a.extend(["--option".into(), "extra-substituters".into()]);
            a.push(self.extra_substituters.join(" ").into());
        }
        if !self.extra_trusted_public_keys.is_empty() {
            a.extend(["--option".into(), "extra-trusted-public-keys".into()]);
            a.push(self.extra_trusted_public_keys.join(" ").into());
        }
        a
    }

    /// `nixos-rebuild <mode> --flake <dir>#<configuration> [--option ...]`.
    pub fn args(&self, flake_dir: &Path) -> Vec<OsString> {
        let mut flake = OsString::from(flake_dir.as_os_str());
        flake.push("#");
        flake.push(&self.configuration);
        let mut a: Vec<OsString> = vec![self.mode.as_arg().into(), "--flake".into(), flake];
        a.extend(self.nix_options());
        a
    }

    /// `nixos-rebuild <mode> --rollback`: back to the previous generation.
    pub fn rollback_args(&self) -> Vec<OsString> {
        let mode = match self.effective_mode() {
            ActivationMode::Test => "test",
            ActivationMode::Boot => "boot",
            _ => "switch",
        };
        vec![mode.into(), "--rollback".into()]
    }

    pub fn run(&self, args: &[OsString], env: &[(&str, String)]) -> io::Result<ExitStatus> {
        let mut c = Command::new(&self.program);
        c.args(args).process_group(0);
        for (k, v) in env {
            c.env(k, v);
        }
        c.status().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "running {:?}: {e} (set activation.program or {PROGRAM_ENV})",
                    self.program
                ),
            )
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realised_toplevel_that_is_a_symlink_or_resolves_elsewhere_is_refused() {
        let tmp =
            crate::fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-test-").expect("tmp");
        let real = tmp.path().join("system");
        std::fs::create_dir(&real).expect("mkdir");
        let real = std::fs::canonicalize(&real).expect("canon");
        assert_eq!(realised_system(&real).expect("a plain directory"), real);
        let link = real.with_file_name("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(realised_system(&link).is_err(), "symlinked store path");
        let file = real.with_file_name("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(realised_system(&file).is_err(), "a file");
        // A path through a symlinked parent resolves elsewhere.
        let via = link.join(".");
        assert!(realised_system(&via).is_err(), "resolves elsewhere");
    }
}
