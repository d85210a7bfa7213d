//! The deadline keeper outside the agent's service (docs/lockout.md): a
//! transient systemd timer that runs *this* npcnix binary's `probation
//! expire` at a probation's deadline, so a new system whose agent never
//! starts is still rolled back. Also the host's reboot.
//!
//! [`Watchdog`] is what the agent asks for; [`SystemdWatchdog`] is the real
//! one (`systemd-run` and `systemctl`, stand-ins selected by the CLI in
//! tests); the agent's in-process tests script their own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::config::WatchdogKind;

/// Why the watchdog could not be armed or disarmed, or the host not
/// rebooted.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: String,
        stderr: String,
    },
}

/// What the agent needs of the host's service manager.
pub trait Watchdog: Send + Sync {
    /// Arms a timer that rolls `version` of `remote` back in `secs` unless
    /// it is confirmed, then stops the timer it `replaces`; returns its unit
    /// (`None`: no watchdog is kept, `lockout.watchdog = "none"`).
    fn arm(&self, target: &Target<'_>, secs: u64) -> Result<Option<String>, WatchdogError>;
    /// Stops a timer (one that already fired or never existed is fine: the
    /// rollback it runs finds no record and does nothing).
    fn disarm(&self, unit: &str) -> Result<(), WatchdogError>;
    fn reboot(&self) -> Result<(), WatchdogError>;
    /// `program` as the timer will find it (an absolute path where one is
    /// found): the timer runs with the service manager's environment.
    fn which(&self, program: &str) -> String;
}

/// The release a watchdog is armed for.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The agent's data dir (the rollback reads the record there).
    pub data: &'a Path,
    pub remote: &'a str,
    pub version: u64,
    /// The timer this one replaces (stopped once this one exists).
    pub replaces: Option<&'a str>,
}

/// `systemd-run` timers and `systemctl`.
#[derive(Clone, Debug)]
pub struct SystemdWatchdog {
    pub kind: WatchdogKind,
    /// `systemd-run` (a stand-in in tests).
    pub systemd_run: String,
    /// `systemctl` (a stand-in in tests).
    pub systemctl: String,
    /// The npcnix binary the timer runs: this one, not the new system's.
    pub exe: PathBuf,
    /// PATH for the rollback the timer runs (nixos-rebuild needs nix).
    pub path_env: Option<String>,
}

/// The prefix of every probation timer's unit of `remote`.
pub fn unit_name(remote: &str) -> String {
    format!("npcnix-probation-{remote}")
}

fn run(program: &str, c: &mut Command, what: String) -> Result<(), WatchdogError> {
    let out = c.output().map_err(|source| WatchdogError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(WatchdogError::Failed {
        what,
        status: out.status.to_string(),
        stderr: crate::host::journal::clip(String::from_utf8_lossy(&out.stderr).trim(), 400),
    })
}

impl Watchdog for SystemdWatchdog {
    fn arm(&self, t: &Target<'_>, secs: u64) -> Result<Option<String>, WatchdogError> {
        if self.kind == WatchdogKind::None {
            return Ok(None);
        }
        // A unit of its own per arming: systemd keeps a fired or failed
        // unit loaded, and reusing its name would make systemd-run fail.
        // The timer this one replaces is stopped only once this one exists.
        let unit = format!(
            "{}-v{}-{}",
            unit_name(t.remote),
            t.version,
            crate::fsutil::random_suffix()
        );
        let mut c = Command::new(&self.systemd_run);
        c.arg(format!("--unit={unit}"))
            .arg(format!("--on-active={secs}s"))
            .arg("--timer-property=AccuracySec=1s")
            .arg("--property=CollectMode=inactive-or-failed")
            .arg(format!(
                "--description=npcnix: roll back version {} of {} unless confirmed",
                t.version, t.remote
            ))
            .arg("--quiet");
        if let Some(p) = &self.path_env {
            c.arg(format!("--setenv=PATH={p}"));
        }
        c.arg(&self.exe)
            .args(["probation", "expire", "--data-dir"])
            .arg(t.data)
            .args(["--remote-name", t.remote, "--version"])
            .arg(t.version.to_string());
        run(
            &self.systemd_run,
            &mut c,
            format!("{} --unit={unit}", self.systemd_run),
        )?;
        if let Some(old) = t.replaces.filter(|u| *u != unit) {
            let _ = self.disarm(old);
        }
        Ok(Some(unit))
    }

    fn disarm(&self, unit: &str) -> Result<(), WatchdogError> {
        run(
            &self.systemctl,
            Command::new(&self.systemctl).args(["stop", &format!("{unit}.timer")]),
            format!("{} stop {unit}.timer", self.systemctl),
        )
    }

    fn reboot(&self) -> Result<(), WatchdogError> {
        run(
            &self.systemctl,
            Command::new(&self.systemctl).arg("reboot"),
            format!("{} reboot", self.systemctl),
        )
    }

    fn which(&self, program: &str) -> String {
        if program.contains('/') {
            return program.to_owned();
        }
        self.path_env
            .as_deref()
            .unwrap_or_default()
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(program))
            .find(|p| p.is_file())
            .map_or_else(|| program.to_owned(), |p| p.display().to_string())
    }
}
