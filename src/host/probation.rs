//! Lockout protection, part two: a switched host is on probation until its
//! new agent confirms (see `docs/lockout.md`).
//!
//! Before switching, the agent records a [`Probation`] (durably, in
//! `<data>/probation/<remote>.json`, a file of its own so that an older
//! npcnix reading `state.json` after a rollback is not confused) and arms a
//! [`Watchdog`] that lives outside the service being replaced: a transient
//! systemd timer that runs *this* npcnix binary's `probation expire` at the
//! deadline. The new system's agent confirms with one successful poll (it
//! reached the store and verified the current head) and, if configured, a
//! passing health check; confirming disarms the watchdog and removes the
//! record. Whoever finds the deadline passed without confirmation (the
//! watchdog, or the agent at its next start after a reboot) rolls back,
//! marks the release bad (`unconfirmed`) and audits it.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::format::statement::Digest;
use crate::fsutil;
use crate::host::config::{ActivationMode, WatchdogKind};
use crate::host::state::{DataDir, StateError};
use crate::verify::Seen;

pub const PROBATION_FORMAT: &str = "npcnix-probation/v1";
const PROBATION_MAX_BYTES: u64 = 64 * 1024;

/// How an unconfirmed release is undone, fixed when it was armed (the
/// watchdog must not depend on anything the new system changed).
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
        let target = fs::canonicalize(&link).ok()?;
        Some(RestorePoint { link, target })
    }

    /// Whether `link` points at `target` now.
    pub fn holds(&self) -> bool {
        fs::canonicalize(&self.link).is_ok_and(|t| t == self.target)
    }
}

/// A release applied but not yet confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probation {
    pub format: String,
    pub remote: String,
    pub version: u64,
    pub statement: Digest,
    pub armed_at: u64,
    /// When an unconfirmed release is rolled back. `None` while a `boot`
    /// release waits for the reboot that starts it: the deadline is set by
    /// the first agent run in a later boot.
    pub deadline: Option<u64>,
    pub probation_secs: u64,
    /// The boot the release was applied in (`/proc/sys/kernel/random/boot_id`).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The release that was active before, restored on rollback.
    #[serde(default)]
    pub previous_active: Option<Seen>,
    pub rollback: RollbackPlan,
    /// The transient unit of the armed watchdog, if any.
    #[serde(default)]
    pub watchdog_unit: Option<String>,
    /// The inspected system, when the release was built before switching.
    #[serde(default)]
    pub system: Option<PathBuf>,
}

impl Probation {
    pub fn seen(&self) -> Seen {
        Seen {
            version: self.version,
            statement: self.statement,
        }
    }

    /// Whether the deadline has passed (never while waiting for a reboot).
    pub fn expired(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// A `boot` release still waiting for the reboot that starts it.
    pub fn awaits_reboot(&self, boot_id: Option<&str>) -> bool {
        self.deadline.is_none() && boot_id.is_some() && self.boot_id.as_deref() == boot_id
    }

    /// What `status` shows.
    pub fn describe(&self) -> String {
        match self.deadline {
            Some(d) => format!(
                "version {} must be confirmed by a successful poll by {}, or it is rolled back",
                self.version,
                crate::format::time::rfc3339(d)
            ),
            None => format!(
                "version {} is the boot default; it must be confirmed after the next boot",
                self.version
            ),
        }
    }
}

fn path(data: &DataDir, remote: &str) -> PathBuf {
    data.root.join("probation").join(format!("{remote}.json"))
}

/// The probation of `remote`, if any. A record that cannot be read is an
/// error: nobody could tell whether the running system was confirmed.
pub fn load(data: &DataDir, remote: &str) -> Result<Option<Probation>, StateError> {
    let p = path(data, remote);
    let f = match fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path: p, source }),
    };
    let mut bytes = Vec::new();
    f.take(PROBATION_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| StateError::Io {
            path: p.clone(),
            source,
        })?;
    let corrupt = |why: String| StateError::Io {
        path: p.clone(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{why}; check which system is running, then remove the file to end the probation"
            ),
        ),
    };
    if bytes.len() as u64 > PROBATION_MAX_BYTES {
        return Err(corrupt("probation record is too large".into()));
    }
    let pr: Probation = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("probation record is not valid: {e}")))?;
    if pr.format != PROBATION_FORMAT || pr.remote != remote {
        return Err(corrupt(
            "probation record is for another format or remote".into(),
        ));
    }
    Ok(Some(pr))
}

/// Records (durably) or clears the probation of `remote`.
pub fn save(data: &DataDir, remote: &str, pr: Option<&Probation>) -> Result<(), StateError> {
    let p = path(data, remote);
    let io_err = |source| StateError::Io {
        path: p.clone(),
        source,
    };
    match pr {
        // The removal is made durable: a confirmation lost to a power cut
        // would bring the record back, and the next start would roll back
        // (and mark bad) a release that was confirmed.
        None => match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
            Err(_) => Ok(()),
            Ok(()) => fsutil::sync_dir(&data.root.join("probation")).map_err(io_err),
        },
        Some(pr) => {
            let dir = data.root.join("probation");
            fsutil::ensure_private_dir(&dir).map_err(io_err)?;
            let mut bytes =
                serde_json::to_vec_pretty(pr).map_err(|e| io_err(io::Error::other(e)))?;
            bytes.push(b'\n');
            fsutil::write_atomic(&p, &bytes, 0o600).map_err(io_err)
        }
    }
}

/// The parts of the host system the agent touches besides the activation
/// program (stand-ins in tests).
#[derive(Clone, Debug)]
pub struct HostSystem {
    pub watchdog: Watchdog,
    /// Holds `booted-system` (`/run`).
    pub run_dir: PathBuf,
    /// This boot's ID (`/proc/sys/kernel/random/boot_id`), if readable.
    pub boot_id: Option<String>,
}

/// Reads this boot's ID.
pub fn read_boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= 64)
}

/// Undoes the release on probation for `remote` if its deadline has passed
/// (or unconditionally with `force`, for a failed confirmation): rolls the
/// system back as recorded when it was armed, marks the release bad, makes
/// the previous release the active one again, clears the record and audits
/// it. The caller holds the data dir lock. Returns the version and what was
/// done, or `None` when there is nothing to do (confirmed meanwhile, another
/// version, not yet expired).
pub fn roll_back_locked(
    data: &DataDir,
    remote: &str,
    only_version: Option<u64>,
    nix: crate::nix::Nix,
    now: u64,
    reason: &str,
    force: bool,
) -> Result<Option<(u64, String)>, StateError> {
    use crate::host::activate::{Activator, Plan};
    use crate::host::journal::Journal;
    let Some(pr) = load(data, remote)? else {
        return Ok(None);
    };
    if only_version.is_some_and(|v| v != pr.version) || !(force || pr.expired(now)) {
        return Ok(None);
    }
    let activator = Activator::for_rollback(&pr.rollback, nix);
    let plan = if pr.rollback.toplevel {
        Plan::Toplevel(String::new())
    } else {
        Plan::Flake
    };
    let env = [
        ("NPCNIX_REMOTE", remote.to_owned()),
        ("NPCNIX_VERSION", pr.version.to_string()),
        ("NPCNIX_STATEMENT", pr.statement.to_hex()),
    ];
    let note = match &pr.rollback.restore {
        // Stopped between arming and switching: rolling back now would step
        // one generation *behind* the system that runs.
        Some(r) if r.holds() => format!(
            "nothing to undo: {} is still {}, the system from before the release",
            r.link.display(),
            r.target.display()
        ),
        // `nixos-rebuild test --rollback` activates the generation before
        // the profile's current one, one older than what ran before a
        // `test` release (which adds no generation): go back to exactly it.
        Some(r) if pr.rollback.mode == ActivationMode::Test => {
            checked(activator.restore(&r.target, "test", &env), r)
        }
        Some(r) => checked(activator.roll_back(&plan, &env), r),
        None => match activator.roll_back(&plan, &env) {
            Ok(()) => "rolled back to the previous generation".to_owned(),
            Err(e) => format!("ROLLBACK FAILED: {e}"),
        },
    };
    let mut st = data.load()?;
    let rs = st.remote_mut(remote);
    if !rs.is_bad(&pr.seen()) {
        rs.bad.push(crate::host::state::BadRelease {
            version: pr.version,
            statement: pr.statement,
            reason: format!("unconfirmed: {reason}"),
            at: now,
        });
    }
    if rs.active == Some(pr.seen()) {
        rs.active = pr.previous_active;
    }
    rs.retry = None;
    data.save(&st)?;
    save(data, remote, None)?;
    let journal = Journal::new(data, remote);
    let mut ev = journal.event(now, "rolled-back");
    ev.version = Some(pr.version);
    ev.statement = Some(pr.statement.to_hex());
    ev.detail = Some(format!("unconfirmed: {reason}; {note}"));
    let _ = journal.append(&ev);
    Ok(Some((pr.version, format!("unconfirmed: {reason}; {note}"))))
}

/// What a rollback towards `r` achieved, in the audit log's words.
fn checked(res: Result<(), crate::host::activate::ActivationError>, r: &RestorePoint) -> String {
    match res {
        Err(e) => format!("ROLLBACK FAILED: {e}"),
        Ok(()) if r.holds() => format!("rolled back to {}", r.target.display()),
        Ok(()) => format!(
            "ROLLBACK INCOMPLETE: {} is {}, not {} as before the release",
            r.link.display(),
            fs::canonicalize(&r.link)
                .map_or_else(|e| format!("unreadable ({e})"), |t| t.display().to_string()),
            r.target.display()
        ),
    }
}

/// The deadline keeper outside the agent's service.
#[derive(Clone, Debug)]
pub struct Watchdog {
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

impl Watchdog {
    pub fn unit_name(remote: &str) -> String {
        format!("npcnix-probation-{remote}")
    }

    /// `program` as an absolute path found on the watchdog's PATH (the timer
    /// runs with systemd's environment, not the agent's), else as given.
    pub fn which(&self, program: &str) -> String {
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

    /// Arms the timer; returns its unit name (`None` for `watchdog = none`).
    pub fn arm(&self, data: &DataDir, pr: &Probation, secs: u64) -> Result<Option<String>, String> {
        if self.kind == WatchdogKind::None {
            return Ok(None);
        }
        // A unit of its own per arming: systemd keeps a fired or failed
        // unit loaded, and reusing its name would make systemd-run fail.
        // The timer this one replaces is stopped only once this one exists.
        let unit = format!(
            "{}-v{}-{}",
            Self::unit_name(&pr.remote),
            pr.version,
            crate::fsutil::random_suffix()
        );
        let mut c = Command::new(&self.systemd_run);
        c.arg(format!("--unit={unit}"))
            .arg(format!("--on-active={secs}s"))
            .arg("--timer-property=AccuracySec=1s")
            .arg("--property=CollectMode=inactive-or-failed")
            .arg(format!(
                "--description=npcnix: roll back version {} of {} unless confirmed",
                pr.version, pr.remote
            ))
            .arg("--quiet");
        if let Some(p) = &self.path_env {
            c.arg(format!("--setenv=PATH={p}"));
        }
        c.arg(&self.exe)
            .args(["probation", "expire", "--data-dir"])
            .arg(&data.root)
            .args(["--remote-name", &pr.remote, "--version"])
            .arg(pr.version.to_string());
        let out = c
            .output()
            .map_err(|e| format!("running {}: {e}", self.systemd_run))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                self.systemd_run,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if let Some(old) = pr.watchdog_unit.as_deref().filter(|u| *u != unit) {
            let _ = self.disarm(old);
        }
        Ok(Some(unit))
    }

    /// `systemctl reboot`.
    pub fn reboot(&self) -> Result<(), String> {
        let st = Command::new(&self.systemctl)
            .arg("reboot")
            .status()
            .map_err(|e| format!("running {}: {e}", self.systemctl))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("{} reboot exited with {st}", self.systemctl))
        }
    }

    /// Stops the timer (a timer that already fired or never existed is fine:
    /// `probation expire` finds no record and does nothing).
    pub fn disarm(&self, unit: &str) -> Result<(), String> {
        let out = Command::new(&self.systemctl)
            .args(["stop", &format!("{unit}.timer")])
            .output()
            .map_err(|e| format!("running {}: {e}", self.systemctl))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} stop {unit}.timer failed ({}): {}",
                self.systemctl,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// Whether booting `next` would run another kernel, initrd or module set
/// than the booted system (a `switch` cannot apply those).
pub fn kernel_changed(booted: &Path, next: &Path) -> bool {
    ["kernel", "initrd", "kernel-modules"].iter().any(|f| {
        let a = fs::canonicalize(booted.join(f)).ok();
        let b = fs::canonicalize(next.join(f)).ok();
        a != b
    })
}
