//! Installing and activating a downloaded release, under the data dir lock,
//! as typed stages: each consumes the one before and returns the next, or
//! ends the poll ([`Halt`]).
//!
//! ```text
//! Downloaded ─extract, record, place─► Placed ─build, inspect─► Inspected
//!   ─record the probation, arm the watchdog─► Armed ─switch─► Switched
//!   ─health check─► Switched ─commit: active, probation deadline─► Activated
//! ```
//!
//! Rollback protection is durable (record) before anything runs; the
//! probation is durable and its watchdog armed before the switch, so a
//! switch that kills the agent is still rolled back.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Agent, FaultPoint, Poll, MAX_ACTIVATION_ATTEMPTS};
use crate::archive::confine::Confinement;
use crate::host::activate::{
    health_check, ActivationError, Health, Plan, RestorePoint, RollbackPlan,
};
use crate::host::config::ActivationMode;
use crate::host::lockout::{self, Inspection};
use crate::host::outcome::Outcome;
use crate::host::pipeline::{self, PipelineError};
use crate::host::probation::{self, retry_delay, Probation, Why, PROBATION_FORMAT};
use crate::host::state::{BadRelease, Retry, StateError};
use crate::host::watchdog::Target;
use crate::verify::{Refusal, VerifiedRelease};

/// Why an activation stage ended the poll.
pub(super) enum Halt {
    Done(Outcome),
    Error(PipelineError),
}

impl From<StateError> for Halt {
    fn from(e: StateError) -> Self {
        Halt::Error(e.into())
    }
}

impl From<PipelineError> for Halt {
    fn from(e: PipelineError) -> Self {
        Halt::Error(e)
    }
}

/// A verified release's tree in place under `<data>/releases/`, recorded
/// as the highest verified version.
struct Placed {
    release: VerifiedRelease,
    plan: Plan,
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    /// The release retires this configuration (`decommission`): no
    /// inspection, no probation.
    leaving: bool,
}

/// The built system, judged to keep the host reachable.
struct Inspected {
    system: Option<PathBuf>,
    verdict: Inspection,
    /// The build's directory, whose `result` link keeps the built system
    /// from the garbage collector until the switch has used it.
    root: Option<crate::fsutil::TempDir>,
}

/// The probation recorded and its watchdog armed (or none applies).
struct Armed {
    probation: Option<Probation>,
}

/// The system switched to the release.
struct Switched {
    probation: Option<Probation>,
}

impl Agent {
    /// How this host extracts a release (its limits and confinement).
    pub(super) fn extract_options<'a>(
        &'a self,
        progress: &'a dyn crate::progress::Progress,
    ) -> pipeline::ExtractOptions<'a> {
        pipeline::ExtractOptions {
            limits: &self.v.limits,
            confinement: self.v.config.policy.confinement,
            progress,
        }
    }

    /// Extracts, records and places a downloaded release, then activates
    /// it. The caller holds the lock.
    pub(super) fn install(
        &self,
        poll: &mut Poll,
        downloaded: pipeline::Downloaded,
        plan: Plan,
    ) -> Result<Outcome, PipelineError> {
        let silent = crate::progress::silent();
        let extracted = pipeline::extract(downloaded, self.extract_options(&*silent), &self.data)?;
        let mut ps = self.data.load_status();
        ps.confinement = Some(extracted.confinement.to_string());
        let _ = self.data.save_status(&ps);
        if extracted.confinement != Confinement::Enforced {
            self.warn_msg(&extracted.confinement.to_string());
        }
        // Rollback protection is durable before anything is activated.
        pipeline::record(&self.data, &mut poll.state, &extracted, poll.now.wall)?;
        let release = extracted.release;
        if extracted.new {
            self.audit_release(
                "verified",
                &release,
                Some(format!(
                    "{} files, {} bytes; {}; {}",
                    extracted.stats.files,
                    extracted.stats.bytes,
                    if extracted.streamed {
                        "verified as it streamed"
                    } else {
                        "downloaded whole (the store has no outboard)"
                    },
                    extracted.confinement
                )),
                poll.now.wall,
            );
        }
        (self.hooks.fault)(FaultPoint::AfterRecord);
        let dir = self.release_dir(&release);
        self.install_tree(extracted.tree, &dir)?;
        (self.hooks.fault)(FaultPoint::BeforeActivate);
        if self.should_stop() {
            // Recorded but not activated: the next start picks it up.
            return Ok(Outcome::Interrupted);
        }
        let placed = Placed {
            env: self.activation_env(&release, &dir),
            leaving: release
                .statement()
                .decommissions(&self.v.config.configuration),
            release,
            plan,
            dir,
        };
        match self.activate(poll, placed) {
            Ok(o) | Err(Halt::Done(o)) => Ok(o),
            Err(Halt::Error(e)) => Err(e),
        }
    }

    fn activate(&self, poll: &mut Poll, p: Placed) -> Result<Outcome, Halt> {
        if p.leaving {
            self.audit_release(
                "decommission",
                &p.release,
                Some(format!(
                    "the release retires configuration {:?} from this remote: no lockout inspection, no probation",
                    self.v.config.configuration
                )),
                poll.now.wall,
            );
        }
        self.check_inputs(poll, &p)?;
        let mut inspected = self.inspect(poll, &p)?;
        // The inspected system is what the switch runs (issue 36); its
        // build directory roots it until then.
        let built = inspected.system.clone();
        let _root = inspected.root.take();
        let armed = self.arm(poll, &p, inspected)?;
        let switched = self.switch(poll, &p, armed, built.as_deref())?;
        let healthy = self.check_health(poll, &p, switched)?;
        self.commit(poll, &p, healthy)
    }

    fn release_dir(&self, r: &VerifiedRelease) -> PathBuf {
        self.data.root.join("releases").join(format!(
            "{:020}-{}",
            r.version(),
            &r.statement_hash().to_hex()[..16]
        ))
    }

    /// Moves an extracted tree to its place under `<data>/releases/`.
    fn install_tree(&self, tree: crate::fsutil::TempDir, dir: &Path) -> Result<(), PipelineError> {
        let parent = self.data.root.join("releases");
        crate::fsutil::ensure_private_dir(&parent)
            .map_err(PipelineError::io(format!("creating {}", parent.display())))?;
        if fs::symlink_metadata(dir).is_ok() {
            // Left by an earlier attempt; it is ours, replace it.
            fs::remove_dir_all(dir)
                .map_err(PipelineError::io(format!("removing {}", dir.display())))?;
        }
        pipeline::place(tree, dir)
    }

    fn activation_env(&self, r: &VerifiedRelease, dir: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("NPCNIX_REMOTE", self.remote().to_owned()),
            ("NPCNIX_VERSION", r.version().to_string()),
            ("NPCNIX_STATEMENT", r.statement_hash().to_hex()),
            ("NPCNIX_FLAKE_DIR", dir.display().to_string()),
            ("NPCNIX_CONFIGURATION", self.v.config.configuration.clone()),
        ]
    }

    /// Refuses a flake whose lock does not pin its inputs before anything
    /// evaluates it (it would be resolved here, differently than on other
    /// hosts): marked bad, never retried. A check that could not run (no
    /// `nix-instantiate`) is an activation failure, retried.
    fn check_inputs(&self, poll: &mut Poll, p: &Placed) -> Result<(), Halt> {
        match self.activation.check_inputs(&p.plan, &p.dir) {
            Ok(()) => Ok(()),
            Err(ActivationError::Unlocked(e)) => {
                let r = Refusal::UnlockedInputs(format!(
                    "{e}: evaluating the release would resolve inputs on this host (the publisher must pin them: `nix flake lock`)"
                ));
                Err(self.mark_bad(poll, &p.release, r))
            }
            Err(e) => Err(self.failed(
                poll,
                &p.release,
                format!("checking the flake's inputs: {e}"),
            )),
        }
    }

    /// Records `release` as bad for `r` (a property of the signed release:
    /// never retried) and ends the attempt as refused.
    fn mark_bad(&self, poll: &mut Poll, release: &VerifiedRelease, r: Refusal) -> Halt {
        let now = poll.now.wall;
        let seen = release.seen();
        let rs = poll.state.remote_mut(self.remote());
        rs.retry = None;
        rs.mark_bad(BadRelease {
            version: seen.version,
            statement: seen.statement,
            reason: r.line(),
            at: now,
        });
        if let Err(e) = self.data.save(&poll.state) {
            return Halt::from(e);
        }
        self.warn(self.journal().refusal(&r, now));
        self.audit_release("marked-bad", release, Some(r.line()), now);
        Halt::Done(Outcome::Refused(r))
    }

    /// Ends the poll as held at `max`, remembering that this release was
    /// inspected and holds (the next polls stop before the download).
    fn held(&self, release: &crate::verify::VerifiedRelease, max: u64) -> Halt {
        let mut s = self.data.load_status();
        s.held_inspected = Some((release.version(), release.statement_hash().to_hex()));
        if let Err(e) = self.data.save_status(&s) {
            self.warn_msg(&format!("could not record the held release: {e}"));
        }
        Halt::Done(Outcome::Held {
            version: release.version(),
            max,
        })
    }

    /// Builds the new system and judges whether it keeps this host
    /// reachable ([`crate::host::lockout`]). A refusal marks the release bad
    /// (it would strand the host: never retried); a failed build is an
    /// activation failure (retried).
    fn inspect(&self, poll: &mut Poll, p: &Placed) -> Result<Inspected, Halt> {
        let mode = self.activation.activator().effective_mode();
        let version = p.release.version();
        // Held below this release: only the new system's own config can
        // lift the hold (D128), and only the inspection can read it.
        let held = self
            .v
            .config
            .hold
            .as_ref()
            .map(|h| h.max_version)
            .filter(|max| version > *max);
        if !self.v.config.lockout.inspect || p.leaving || mode == ActivationMode::DryActivate {
            if let Some(max) = held {
                return Err(self.held(&p.release, max));
            }
            return Ok(Inspected {
                system: None,
                verdict: Inspection::default(),
                root: None,
            });
        }
        let now = poll.now.wall;
        let mut root = None;
        let built = crate::fsutil::TempDir::new_held_in(&self.data.tmp_dir(), "build-")
            .map_err(|e| format!("creating a build directory: {e}"))
            .and_then(|work| {
                let built = self
                    .activation
                    .build(&p.plan, &p.dir, work.path(), &p.env)
                    .map_err(|e| format!("building the new system: {e}"));
                root = Some(work);
                built
            })
            .and_then(|built| {
                lockout::read_system(&built)
                    .map_err(|e| format!("reading the built system {}: {e}", built.display()))
            });
        let view = match built {
            Ok(v) => v,
            // Held: the build was only to read the release's config. Not
            // counted against the release (it may lift the hold once its
            // build succeeds); tried again at the next poll.
            Err(message) if held.is_some() => {
                self.warn_msg(&format!(
                    "version {version} is above this host's hold; its system could not be built to see whether it lifts the hold: {message}"
                ));
                return Err(Halt::Done(Outcome::Held {
                    version,
                    max: held.unwrap_or(0),
                }));
            }
            Err(message) => return Err(self.failed(poll, &p.release, message)),
        };
        let floor = poll.remote.floor.unwrap_or(0);
        match lockout::judge(&self.v, &view, &p.release, floor, now) {
            Ok(verdict) => match (held, verdict.next_hold) {
                // The release keeps a hold that excludes it.
                (Some(max), Some(next)) if version > next => Err(self.held(&p.release, max)),
                // Not held, or the release lifts or raises the hold.
                _ => Ok(Inspected {
                    system: Some(view.path),
                    verdict,
                    root,
                }),
            },
            // The release itself would strand the host: never retried.
            Err(r) => Err(self.mark_bad(poll, &p.release, r)),
        }
    }

    /// Records the probation of the release about to be applied and arms
    /// the watchdog, before the switch (a switch that kills the agent is
    /// still rolled back). Nothing for modes that change nothing now or
    /// later, for releases that retire this host, or with probation off.
    fn arm(&self, poll: &mut Poll, p: &Placed, i: Inspected) -> Result<Armed, Halt> {
        let secs = self.v.config.lockout.probation_secs;
        let act = self.activation.activator();
        let mode = act.effective_mode();
        let applies = match mode {
            ActivationMode::Switch | ActivationMode::Test => true,
            // Without a boot ID a later boot cannot be told from this one.
            ActivationMode::Boot => poll.now.boot.is_some(),
            _ => false,
        };
        if secs == 0 || p.leaving || !applies {
            return Ok(Armed { probation: None });
        }
        let seen = p.release.seen();
        if let Some(pr) = &poll.probation {
            if pr.seen() == seen {
                // Applied again after a crash: the probation stands (its
                // restore point is the system from before the release), and
                // names the system this attempt built, which is what the
                // switch runs and what may confirm.
                let mut pr = pr.clone();
                if i.system.is_some() && i.system != pr.system {
                    pr.system = i.system;
                    pr.rotation_keys = i.verdict.rotation_keys;
                    probation::save(&self.data, self.remote(), Some(&pr))?;
                    poll.probation = Some(pr.clone());
                }
                return Ok(Armed {
                    probation: Some(pr),
                });
            }
            // `decide` installs nothing while another release is on
            // probation; should a record appear under the lock anyway, wait.
            return Err(Halt::Done(Outcome::AwaitingConfirmation {
                version: seen.version,
                pending: pr.version,
            }));
        }
        let mut pr = Probation {
            format: PROBATION_FORMAT.to_owned(),
            remote: self.remote().to_owned(),
            version: seen.version,
            statement: seen.statement,
            armed_at: poll.now.wall,
            deadline: None,
            deadline_boot: None,
            probation_secs: secs,
            boot_id: poll.now.boot_id().map(str::to_owned),
            previous_active: poll.remote.active,
            rollback: RollbackPlan {
                toplevel: matches!(p.plan, Plan::Toplevel(_)),
                program: self.watchdog.which(&act.program),
                mode,
                profile: act.profile.clone(),
                restore: RestorePoint::observe(mode, &self.run_dir, &act.profile),
            },
            watchdog_unit: None,
            system: i.system,
            rotation_keys: i.verdict.rotation_keys,
            legacy: false,
        };
        // A `boot` release's probation starts in the boot that runs it.
        if mode != ActivationMode::Boot {
            pr.start(&poll.now);
        }
        // Durable before the timer exists: the timer acts on the record.
        if let Err(e) = probation::save(&self.data, self.remote(), Some(&pr)) {
            return Err(self.failed(poll, &p.release, format!("recording the probation: {e}")));
        }
        // A new probation starts with nothing observed.
        probation::save_observed(&self.data, self.remote(), None)?;
        if pr.deadline.is_some() {
            let target = Target {
                data: &self.data.root,
                remote: self.remote(),
                version: pr.version,
                replaces: None,
            };
            match self.watchdog.arm(&target, secs) {
                Ok(unit) => pr.watchdog_unit = unit,
                Err(e) => {
                    probation::save(&self.data, self.remote(), None)?;
                    poll.probation = None;
                    return Err(self.failed(
                        poll,
                        &p.release,
                        format!("arming the probation watchdog: {e}"),
                    ));
                }
            }
            probation::save(&self.data, self.remote(), Some(&pr))?;
        }
        poll.probation = Some(pr.clone());
        Ok(Armed {
            probation: Some(pr),
        })
    }

    fn switch(
        &self,
        poll: &mut Poll,
        p: &Placed,
        a: Armed,
        built: Option<&Path>,
    ) -> Result<Switched, Halt> {
        self.audit_release(
            "activating",
            &p.release,
            Some(self.activation.activator().describe(&p.plan, built)),
            poll.now.wall,
        );
        (self.hooks.fault)(FaultPoint::AfterArm);
        let failure = self.activation.apply(&p.plan, &p.dir, built, &p.env).err();
        (self.hooks.fault)(FaultPoint::AfterActivate);
        let Some(e) = failure else {
            return Ok(Switched {
                probation: a.probation,
            });
        };
        // A switch can fail after it changed the system (a unit that did
        // not start): if the system from before is gone, undo the release
        // as its probation records, and only then count the failure.
        let changed = a
            .probation
            .as_ref()
            .and_then(|pr| pr.rollback.restore.as_ref())
            .is_some_and(|r| !r.holds());
        if !changed {
            self.end_probation(poll, a.probation.as_ref());
            return Err(self.failed(poll, &p.release, e.to_string()));
        }
        let version = p.release.version();
        let undo = self.roll_back_now(poll, version, &Why::SwitchFailed(e.to_string()))?;
        self.reload(poll)?;
        match undo {
            Some(o) => Err(Halt::Done(o)),
            None => Err(self.failed(
                poll,
                &p.release,
                format!("{e}; the system it had changed was rolled back"),
            )),
        }
    }

    /// Reads the state and the probation again (a rollback wrote them).
    fn reload(&self, poll: &mut Poll) -> Result<(), StateError> {
        poll.state = self.data.load()?;
        poll.remote = poll
            .state
            .remote(self.remote())
            .cloned()
            .unwrap_or_default();
        poll.probation = probation::load(&self.data, self.remote())?;
        Ok(())
    }

    /// The health check right after a switch: failing it rolls back at
    /// once and marks the release bad.
    fn check_health(&self, poll: &mut Poll, p: &Placed, s: Switched) -> Result<Switched, Halt> {
        let mode = self.activation.activator().effective_mode();
        let (Some(h), true) = (&self.v.config.health_check, mode.changes_running_system()) else {
            return Ok(s);
        };
        let Health::Unhealthy(reason) = health_check(h, &p.env) else {
            return Ok(s);
        };
        let now = poll.now.wall;
        self.audit_release("health-check-failed", &p.release, Some(reason.clone()), now);
        if let Some(pr) = &s.probation {
            // Undone exactly as the probation records (the restore point,
            // `test` mode's exact system), and checked to have arrived.
            let undo = self.roll_back_now(poll, pr.version, &Why::Unhealthy(reason))?;
            self.reload(poll)?;
            return Err(match undo {
                Some(o) => Halt::Done(o),
                None => Halt::from(StateError::Io {
                    path: self.data.root.join("probation"),
                    source: std::io::Error::other(
                        "the probation record vanished during the health check",
                    ),
                }),
            });
        }
        let rb_note = match self.activation.roll_back(&p.plan, &p.env) {
            Ok(()) => "rolled back to the previous generation".to_owned(),
            Err(e) => format!("ROLLBACK FAILED: {e}"),
        };
        self.end_probation(poll, s.probation.as_ref());
        let seen = p.release.seen();
        let rs = poll.state.remote_mut(self.remote());
        rs.retry = None;
        rs.mark_bad(BadRelease {
            version: seen.version,
            statement: seen.statement,
            reason: format!("health check failed: {reason}"),
            at: now,
        });
        self.data.save(&poll.state)?;
        let reason = format!("{reason}; {rb_note}");
        self.audit_release("rolled-back", &p.release, Some(reason.clone()), now);
        Err(Halt::Done(Outcome::RolledBack {
            version: seen.version,
            reason,
            retry_at: None,
        }))
    }

    /// The release is the active one; its probation period starts now that
    /// the switch is done (a long build must not eat it: the timer armed
    /// before the switch only covered a switch that never returned).
    fn commit(&self, poll: &mut Poll, p: &Placed, s: Switched) -> Result<Outcome, Halt> {
        let mode = self.activation.activator().effective_mode();
        let mut on_probation = None;
        if let Some(mut pr) = s.probation {
            if pr.deadline.is_some() {
                let mut restarted = pr.clone();
                restarted.start(&self.clock.now());
                let target = Target {
                    data: &self.data.root,
                    remote: self.remote(),
                    version: pr.version,
                    replaces: pr.watchdog_unit.as_deref(),
                };
                match self.watchdog.arm(&target, pr.probation_secs) {
                    Ok(unit) => {
                        restarted.watchdog_unit = unit;
                        pr = restarted;
                    }
                    // The deadline stays the one the remaining timer keeps.
                    Err(e) => self.warn_msg(&format!(
                        "could not re-arm the probation watchdog (the one armed before the switch stays, with its deadline): {e}"
                    )),
                }
                probation::save(&self.data, self.remote(), Some(&pr))?;
            }
            on_probation = Some(pr.describe());
            poll.probation = Some(pr);
        }
        let seen = p.release.seen();
        let rs = poll.state.remote_mut(self.remote());
        rs.active = Some(seen);
        rs.retry = None;
        self.data.save(&poll.state)?;
        self.audit_release(
            "activated",
            &p.release,
            Some(match &on_probation {
                Some(pr) => format!("{}; on probation: {pr}", mode.as_arg()),
                None => mode.as_arg().to_owned(),
            }),
            poll.now.wall,
        );
        self.prune_release_dirs(&p.dir);
        Ok(Outcome::Activated {
            version: seen.version,
        })
    }

    /// Ends a probation without a verdict on the release (its activation
    /// failed or was rolled back already).
    fn end_probation(&self, poll: &mut Poll, pr: Option<&Probation>) {
        let Some(pr) = pr else { return };
        if let Some(unit) = &pr.watchdog_unit {
            if let Err(e) = self.watchdog.disarm(unit) {
                self.warn_msg(&e.to_string());
            }
        }
        if let Err(e) = probation::save(&self.data, self.remote(), None) {
            self.warn_msg(&e.to_string());
        }
        poll.probation = None;
    }

    /// A failed activation: retried with backoff, marked bad after
    /// [`MAX_ACTIVATION_ATTEMPTS`].
    fn failed(&self, poll: &mut Poll, release: &VerifiedRelease, message: String) -> Halt {
        let now = poll.now.wall;
        let version = release.version();
        let rs = poll.state.remote_mut(self.remote());
        let attempts = rs
            .retry
            .as_ref()
            .filter(|r| r.version == version)
            .map_or(0, |r| r.attempts)
            + 1;
        let marked_bad = attempts >= MAX_ACTIVATION_ATTEMPTS;
        if marked_bad {
            rs.retry = None;
            rs.mark_bad(BadRelease {
                version,
                statement: release.seen().statement,
                reason: format!("activation failed {attempts} times: {message}"),
                at: now,
            });
        } else {
            rs.retry = Some(Retry {
                version,
                attempts,
                next_at: now + retry_delay(attempts),
            });
        }
        if let Err(e) = self.data.save(&poll.state) {
            return Halt::from(e);
        }
        self.audit_release(
            if marked_bad {
                "marked-bad"
            } else {
                "activation-failed"
            },
            release,
            Some(format!("attempt {attempts}: {message}")),
            now,
        );
        Halt::Done(Outcome::ActivationFailed {
            version,
            message,
            marked_bad,
        })
    }

    /// Keeps the active release's tree and the one before it.
    fn prune_release_dirs(&self, keep: &Path) {
        let parent = self.data.root.join("releases");
        let Ok(rd) = fs::read_dir(&parent) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        let keep_from = dirs.len().saturating_sub(2);
        for d in &dirs[..keep_from] {
            if d != keep {
                let _ = fs::remove_dir_all(d);
            }
        }
    }
}
