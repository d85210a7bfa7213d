//! The scripted NixOS and systemd of the in-process tests: systems with
//! the files the inspection reads, generations, `current-system`, the boot
//! default, and a watchdog that records what it was asked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::host::activate::{Activation, ActivationError, Activator, Plan, RollbackPlan};
use crate::host::agent::FaultPoint;
use crate::host::config::ActivationMode;
use crate::host::watchdog::{Target, Watchdog, WatchdogError};

/// The scripted host: systems, generations, the running system, the boot
/// default, and what was done to them.
pub struct Sys {
    pub run: PathBuf,
    pub systems: PathBuf,
    pub profile: PathBuf,
    pub generations: Vec<PathBuf>,
    pub log: Vec<String>,
    pub fail_apply: bool,
    /// The switch changes the system, then fails (a unit did not start).
    pub fail_after_switch: bool,
    /// Undoing a release fails.
    pub fail_undo: bool,
    pub crash_at: Option<FaultPoint>,
    pub warnings: Vec<String>,
    pub reboots: u32,
    /// The host config a system gets when its flake carries none.
    pub base_config: Vec<u8>,
    pub(super) n: u32,
}

impl Sys {
    fn link(&self, link: &Path, to: &Path) {
        let tmp = link.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(to, &tmp).expect("symlink");
        std::fs::rename(&tmp, link).expect("rename");
    }

    pub(super) fn make_system(&mut self, marker: &str, config: &[u8]) -> PathBuf {
        self.n += 1;
        let dir = self.systems.join(format!("{marker}-{}", self.n));
        let wants = dir.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).expect("mkdir");
        std::fs::create_dir_all(dir.join("etc/npcnix")).expect("mkdir");
        std::fs::write(dir.join("etc/npcnix/config.json"), config).expect("config");
        std::fs::write(dir.join("etc/systemd/system/npcnix.service"), "[Service]\n").expect("unit");
        std::os::unix::fs::symlink("../npcnix.service", wants.join("npcnix.service"))
            .expect("wants");
        std::fs::canonicalize(dir).expect("canonical")
    }

    pub fn current(&self) -> PathBuf {
        std::fs::canonicalize(self.run.join("current-system")).expect("current-system")
    }

    pub fn boot_default(&self) -> PathBuf {
        std::fs::canonicalize(&self.profile).expect("profile")
    }

    /// The marker of the system `path` was built from.
    pub fn marker(path: &Path) -> String {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        name.rsplit_once('-')
            .map_or(name.clone(), |(m, _)| m.to_owned())
    }

    pub(super) fn switch_to(&mut self, system: &Path, mode: ActivationMode) {
        match mode {
            ActivationMode::Switch => {
                self.generations.push(system.to_owned());
                self.link(&self.run.join("current-system"), system);
                self.link(&self.profile.clone(), system);
            }
            ActivationMode::Boot => {
                self.generations.push(system.to_owned());
                self.link(&self.profile.clone(), system);
            }
            ActivationMode::Test => self.link(&self.run.join("current-system"), system),
            _ => {}
        }
    }

    fn step_back(&mut self, mode: ActivationMode) {
        match mode {
            ActivationMode::Test => {
                let n = self.generations.len();
                let to = self.generations[n.saturating_sub(2)].clone();
                self.link(&self.run.join("current-system"), &to);
            }
            _ => {
                self.generations.pop();
                let to = self.generations.last().expect("a generation").clone();
                self.link(&self.profile.clone(), &to);
                if mode == ActivationMode::Switch {
                    self.link(&self.run.join("current-system"), &to);
                }
            }
        }
    }

    /// A reboot: the boot default runs.
    pub fn reboot(&mut self) {
        let to = self.boot_default();
        self.link(&self.run.join("current-system"), &to);
        self.link(&self.run.join("booted-system"), &to);
    }
}

/// `nixos-rebuild` as the scripted host sees it.
pub struct FakeActivation {
    pub(super) activator: Activator,
    pub(super) sys: Arc<Mutex<Sys>>,
}

fn marker_of(flake_dir: &Path) -> String {
    std::fs::read_to_string(flake_dir.join("marker"))
        .expect("marker")
        .trim()
        .to_owned()
}

fn scripted(what: &str) -> ActivationError {
    ActivationError::Setting(format!("scripted failure: {what}"))
}

impl Activation for FakeActivation {
    fn activator(&self) -> &Activator {
        &self.activator
    }

    /// The real judgement of the lock, with the inputs `flake.nix` names
    /// scripted in `declared-inputs` (none: only `self`).
    fn check_inputs(&self, _plan: &Plan, flake_dir: &Path) -> Result<(), ActivationError> {
        let lock = std::fs::read(flake_dir.join("flake.lock")).ok();
        let declared: Vec<String> = std::fs::read_to_string(flake_dir.join("declared-inputs"))
            .unwrap_or_else(|_| "self".into())
            .lines()
            .map(str::to_owned)
            .collect();
        crate::verify::flake_inputs::judge(lock.as_deref(), Some(&declared))?;
        Ok(())
    }

    fn build(
        &self,
        _plan: &Plan,
        flake_dir: &Path,
        _workdir: &Path,
        _env: &[(&str, String)],
    ) -> Result<PathBuf, ActivationError> {
        let marker = marker_of(flake_dir);
        let mut s = self.sys.lock().expect("sys");
        let config = std::fs::read(flake_dir.join("npcnix-config.json"))
            .unwrap_or_else(|_| s.base_config.clone());
        s.log.push(format!("build {marker}"));
        Ok(s.make_system(&marker, &config))
    }

    fn apply(
        &self,
        _plan: &Plan,
        flake_dir: &Path,
        _built: Option<&Path>,
        _env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        let marker = marker_of(flake_dir);
        let mode = self.activator.effective_mode();
        let mut s = self.sys.lock().expect("sys");
        s.log.push(format!("{} {marker}", mode.as_arg()));
        if s.fail_apply {
            return Err(scripted("apply"));
        }
        let built = std::fs::read_dir(&s.systems)
            .expect("systems")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| Sys::marker(p) == marker)
            .max();
        let system = match built {
            Some(p) => std::fs::canonicalize(p).expect("canonical"),
            None => {
                let config = std::fs::read(flake_dir.join("npcnix-config.json"))
                    .unwrap_or_else(|_| s.base_config.clone());
                s.make_system(&marker, &config)
            }
        };
        s.switch_to(&system, mode);
        if s.fail_after_switch {
            return Err(scripted("a unit did not start after the switch"));
        }
        Ok(())
    }

    fn roll_back(&self, _plan: &Plan, _env: &[(&str, String)]) -> Result<(), ActivationError> {
        let mut s = self.sys.lock().expect("sys");
        s.log.push("rollback".into());
        s.step_back(self.activator.effective_mode());
        Ok(())
    }

    fn undo(&self, rb: &RollbackPlan, _env: &[(&str, String)]) -> Result<(), ActivationError> {
        let mut s = self.sys.lock().expect("sys");
        s.log.push(format!("undo {}", rb.mode.as_arg()));
        if s.fail_undo {
            return Err(scripted("undo"));
        }
        s.step_back(rb.mode);
        Ok(())
    }

    fn restore(
        &self,
        system: &Path,
        action: &str,
        _env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        let mut s = self.sys.lock().expect("sys");
        s.log
            .push(format!("restore {action} {}", Sys::marker(system)));
        let link = s.run.join("current-system");
        s.link(&link, system);
        Ok(())
    }

    fn probe(&self) -> Result<(), ActivationError> {
        self.activator.resolve_program().map(drop)
    }
}

/// The probation timer: recorded, never fired (tests roll back by polling
/// past the deadline, as the agent does after a reboot).
pub struct FakeWatchdog {
    sys: Arc<Mutex<Sys>>,
}

impl FakeWatchdog {
    pub fn new(sys: Arc<Mutex<Sys>>) -> FakeWatchdog {
        FakeWatchdog { sys }
    }
}

impl Watchdog for FakeWatchdog {
    fn arm(&self, t: &Target<'_>, secs: u64) -> Result<Option<String>, WatchdogError> {
        let mut s = self.sys.lock().expect("sys");
        s.log.push(format!("arm v{} {secs}s", t.version));
        Ok(Some(format!("timer-v{}-{}", t.version, s.log.len())))
    }

    fn disarm(&self, unit: &str) -> Result<(), WatchdogError> {
        self.sys
            .lock()
            .expect("sys")
            .log
            .push(format!("disarm {unit}"));
        Ok(())
    }

    fn reboot(&self) -> Result<(), WatchdogError> {
        self.sys.lock().expect("sys").reboots += 1;
        Ok(())
    }

    fn which(&self, program: &str) -> String {
        program.to_owned()
    }
}
