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

use crate::config::{ActivationConfig, ActivationMode, HealthCheckConfig};

/// Environment variable that overrides the activation program (tests point
/// it at a recording script; operators may point it at a wrapper).
pub const PROGRAM_ENV: &str = "NPCNIX_NIXOS_REBUILD";

/// What to run to activate a flake.
#[derive(Clone, Debug)]
pub struct Activator {
    pub program: String,
    pub mode: ActivationMode,
    pub configuration: String,
    pub extra_substituters: Vec<String>,
    pub extra_trusted_public_keys: Vec<String>,
}

impl Activator {
    pub fn from_config(cfg: &ActivationConfig, configuration: &str) -> Activator {
        let program = std::env::var(PROGRAM_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .or_else(|| cfg.program.clone())
            .unwrap_or_else(|| "nixos-rebuild".to_owned());
        Activator {
            program,
            mode: cfg.mode,
            configuration: configuration.to_owned(),
            extra_substituters: cfg.extra_substituters.clone(),
            extra_trusted_public_keys: cfg.extra_trusted_public_keys.clone(),
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
        let mode = match self.mode {
            ActivationMode::Test => "test",
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
