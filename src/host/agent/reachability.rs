//! The steps of a poll that keep a switched host reachable (docs/lockout.md):
//! roll back an expired probation, start a `boot` release's, decide whether
//! this agent may vouch for the system on probation, confirm, note what the
//! new system could not verify, convict a release retried after such a
//! rollback, and reboot into a changed kernel.

use std::fs;

use super::{Agent, Poll};
use crate::host::activate::health_check;
use crate::host::activate::Health;
use crate::host::lifecycle::{Observation, Vouch};
use crate::host::lockout;
use crate::host::outcome::Outcome;
use crate::host::pipeline::PipelineError;
use crate::host::probation::{self, Observed, Verdict, Why};
use crate::host::state::BadRelease;
use crate::host::state::StateError;
use crate::host::watchdog::Target;

impl Agent {
    /// Rolls back the release on probation (the caller holds the lock).
    /// `None`: nothing was undone (confirmed or replaced meanwhile, or the
    /// release never ran: its probation ended and the poll goes on).
    pub(super) fn roll_back_now(
        &self,
        poll: &Poll,
        version: u64,
        why: &Why,
    ) -> Result<Option<Outcome>, PipelineError> {
        let Some(rb) = probation::roll_back_locked(
            &self.data,
            self.remote(),
            Some(version),
            self.activation.as_ref(),
            self.watchdog.as_ref(),
            &poll.now,
            why,
        )?
        else {
            return Ok(None);
        };
        if let Some(w) = &rb.audit_failed {
            self.warn_msg(w);
        }
        // The rollback audited itself (its own journal): tell the hooks
        // what happened to the system (not a probation that merely ended).
        let heard_as = match rb.verdict {
            Verdict::Bad | Verdict::Retry { .. } => Some("rolled-back"),
            Verdict::Failed { .. } => Some("rollback-failed"),
            Verdict::NotSwitched | Verdict::Undone => None,
        };
        if let (Some(name), Ok(mut heard)) = (heard_as, self.audited.lock()) {
            let mut ev = crate::host::journal::AuditEvent::new(poll.now.wall, name, self.remote());
            ev.version = Some(rb.version);
            ev.detail = Some(rb.detail.clone());
            heard.push(ev);
        }
        Ok(match rb.verdict {
            Verdict::Bad => Some(Outcome::RolledBack {
                version: rb.version,
                reason: rb.detail,
                retry_at: None,
            }),
            Verdict::Retry { at } => Some(Outcome::RolledBack {
                version: rb.version,
                reason: rb.detail,
                retry_at: Some(at),
            }),
            Verdict::Failed { next_attempt } => Some(Outcome::RollbackFailed {
                version: rb.version,
                reason: rb.detail,
                next_attempt,
            }),
            Verdict::NotSwitched | Verdict::Undone => None,
        })
    }

    /// A probation whose deadline passed: the watchdog did not run (a
    /// reboot, `watchdog = none`), so this agent rolls back. `None`: it was
    /// confirmed or replaced meanwhile (the facts are read again).
    pub(super) fn roll_back_expired(
        &self,
        poll: &mut Poll,
    ) -> Result<Option<Outcome>, PipelineError> {
        let Some(version) = poll.probation.as_ref().map(|p| p.version) else {
            return Ok(None);
        };
        let _lock = self.data.lock_wait()?;
        if let Some(o) = self.roll_back_now(poll, version, &Why::Deadline)? {
            return Ok(Some(o));
        }
        // Confirmed or replaced meanwhile, or the release never ran: decide
        // again on what is recorded now.
        let st = self.data.load()?;
        poll.remote = st.remote(self.remote()).cloned().unwrap_or_default();
        poll.state = st;
        poll.probation = probation::load(&self.data, self.remote())?;
        poll.observed = probation::load_observed(&self.data, self.remote());
        Ok(None)
    }

    /// A `boot` release seen in a later boot: its probation starts now.
    pub(super) fn start_probation(&self, poll: &mut Poll) -> Result<(), PipelineError> {
        let _lock = self.data.lock_wait()?;
        let Some(mut pr) = probation::load(&self.data, self.remote())? else {
            poll.probation = None;
            return Ok(());
        };
        if pr.deadline.is_none() && !pr.awaits_reboot(poll.now.boot_id()) {
            pr.start(&poll.now);
            let target = Target {
                data: &self.data.root,
                remote: self.remote(),
                version: pr.version,
                replaces: pr.watchdog_unit.as_deref(),
            };
            match self.watchdog.arm(&target, pr.probation_secs) {
                Ok(unit) => pr.watchdog_unit = unit,
                Err(e) => self.warn_msg(&format!(
                    "could not arm the probation watchdog (this agent still rolls back at the deadline): {e}"
                )),
            }
            probation::save(&self.data, self.remote(), Some(&pr))?;
            let mut ev = self.journal().event(poll.now.wall, "probation-started");
            ev.version = Some(pr.version);
            ev.detail = Some(format!("booted into it; {}", pr.describe()));
            self.warn(self.journal().append(&ev));
        }
        poll.probation = Some(pr);
        Ok(())
    }

    /// Whether this agent may vouch for the release on probation: when the
    /// release was inspected, only an agent running in that system with its
    /// host config (D86); an agent left from before the switch warns.
    pub(super) fn check_vouch(&self, poll: &mut Poll) {
        poll.vouch = Vouch::MayNot;
        let Some(pr) = poll
            .probation
            .as_ref()
            .filter(|p| p.deadline.is_some() && poll.remote.active == Some(p.seen()))
        else {
            return;
        };
        if let Some(system) = &pr.system {
            let running = fs::canonicalize(self.run_dir.join("current-system")).ok();
            let verdict = lockout::read_system(system)
                .map_err(|e| lockout::NotVouching::Unreadable {
                    system: system.clone(),
                    reason: e.to_string(),
                })
                .and_then(|next| lockout::may_confirm(&self.v.config, running.as_deref(), &next));
            if let Err(why) = verdict {
                self.warn_msg(&format!(
                    "not confirming version {} yet: {why}; it is rolled back at {} unless the new system's agent confirms it",
                    pr.version,
                    pr.deadline.map_or_else(String::new, crate::format::time::rfc3339)
                ));
                return;
            }
        }
        poll.vouch = Vouch::May;
    }

    /// Confirms the release on probation: this agent, running in its
    /// system, accepted the store's head. First what the next release will
    /// need (the probe) and the health check, if configured, run; either
    /// failing rolls back at once. `Some`: the poll ends (rolled back).
    pub(super) fn confirm(&self, poll: &mut Poll) -> Result<Option<Outcome>, PipelineError> {
        let Some(pr) = poll.probation.clone() else {
            return Ok(None);
        };
        // Busy (an activation or the watchdog): confirm on the next poll.
        let _lock = match &poll.lock {
            Some(_) => None,
            None => match self.data.try_lock() {
                Ok(l) => Some(l),
                Err(StateError::Locked(_)) => {
                    poll.vouch = Vouch::MayNot;
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            },
        };
        let now_record = probation::load(&self.data, self.remote())?;
        if now_record.as_ref() != Some(&pr) {
            poll.probation = now_record;
            poll.vouch = Vouch::MayNot;
            return Ok(None);
        }
        if let Err(e) = self.activation.probe() {
            return self.roll_back_now(poll, pr.version, &Why::CannotActivate(e.to_string()));
        }
        if let Some(h) = &self.v.config.health_check {
            let env = [
                ("NPCNIX_REMOTE", self.remote().to_owned()),
                ("NPCNIX_VERSION", pr.version.to_string()),
                ("NPCNIX_STATEMENT", pr.statement.to_hex()),
                ("NPCNIX_CONFIGURATION", self.v.config.configuration.clone()),
            ];
            if let Health::Unhealthy(why) = health_check(h, &env) {
                return self.roll_back_now(poll, pr.version, &Why::UnhealthyOnProbation(why));
            }
        }
        if let Some(unit) = &pr.watchdog_unit {
            if let Err(e) = self.watchdog.disarm(unit) {
                self.warn_msg(&format!(
                    "{e} (harmless: the watchdog finds the probation confirmed)"
                ));
            }
        }
        probation::save(&self.data, self.remote(), None)?;
        if let Err(e) = probation::save_observed(&self.data, self.remote(), None) {
            self.warn_msg(&e.to_string());
        }
        let after = pr.deadline().map_or(0, |d| {
            pr.probation_secs.saturating_sub(d.remaining(&poll.now))
        });
        let mut ev = self.journal().event(poll.now.wall, "confirmed");
        ev.version = Some(pr.version);
        ev.statement = Some(pr.statement.to_hex());
        ev.detail = Some(format!(
            "the new system accepted the store's head {after}s after the switch"
        ));
        self.warn(self.journal().append(&ev));
        poll.probation = None;
        poll.observed = None;
        Ok(None)
    }

    /// The system on probation reached nothing it could verify: counted
    /// beside the record (it decides what a rollback at the deadline means).
    pub(super) fn note(&self, poll: &mut Poll, what: Observation) {
        let Some(pr) = &poll.probation else {
            return;
        };
        // Under the lock: a rollback reads and clears the file under it. A
        // busy lock (the watchdog is rolling back) loses this one poll.
        let Ok(_lock) = self.data.try_lock() else {
            return;
        };
        if probation::load(&self.data, self.remote())
            .ok()
            .flatten()
            .is_none_or(|now| now.seen() != pr.seen())
        {
            return;
        }
        let mut o = poll
            .observed
            .clone()
            .filter(|o| o.seen() == pr.seen())
            .unwrap_or_else(|| Observed::new(pr.seen()));
        match what {
            Observation::Unreachable => o.unreachable = o.unreachable.saturating_add(1),
            Observation::Refused => o.refused = o.refused.saturating_add(1),
            Observation::RefusedOwn => o.refused_own = o.refused_own.saturating_add(1),
        }
        if let Err(e) = probation::save_observed(&self.data, self.remote(), Some(&o)) {
            self.warn_msg(&format!(
                "could not note what the new system saw (a rollback at the deadline will mark the release bad): {e}"
            ));
        }
        poll.observed = Some(o);
    }

    /// This system reaches and verifies the store; the release it rolled
    /// back from reached none during its probation: that release is at
    /// fault after all.
    pub(super) fn convict(&self, poll: &mut Poll) -> Result<(), PipelineError> {
        let Some(o) = poll.observed.take() else {
            return Ok(());
        };
        // Busy: the next poll convicts.
        let _lock = match &poll.lock {
            Some(_) => None,
            None => match self.data.try_lock() {
                Ok(l) => Some(l),
                Err(StateError::Locked(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            },
        };
        let mut st = self.data.load()?;
        let rs = st.remote_mut(self.remote());
        if rs.retry.as_ref().is_some_and(|r| r.version == o.version) {
            let reason = format!(
                "unconfirmed: its system reached no store in {} poll(s) during its probation, and the system before it, back in place, reaches and verifies the store",
                o.unreachable
            );
            rs.retry = None;
            rs.mark_bad(BadRelease {
                version: o.version,
                statement: o.statement,
                reason: reason.clone(),
                at: poll.now.wall,
            });
            self.data.save(&st)?;
            let mut ev = self.journal().event(poll.now.wall, "marked-bad");
            ev.version = Some(o.version);
            ev.statement = Some(o.statement.to_hex());
            ev.detail = Some(reason);
            self.warn(self.journal().append(&ev));
        }
        probation::save_observed(&self.data, self.remote(), None)?;
        poll.remote = st.remote(self.remote()).cloned().unwrap_or_default();
        poll.state = st;
        Ok(())
    }

    /// With `reboot.allow`: reboots into a boot default whose kernel, initrd
    /// or modules differ from the booted system's, inside the window, once
    /// per boot default (a boot that falls back to the old kernel does not
    /// loop).
    pub(super) fn reboot_if_due(&self, now: &crate::host::clock::Moment) {
        let rb = &self.v.config.reboot;
        if !rb.allow {
            return;
        }
        let booted = self.run_dir.join("booted-system");
        let Ok(next) = fs::canonicalize(&self.activation.activator().profile) else {
            return;
        };
        if !booted.exists() || !kernel_changed(&booted, &next) {
            return;
        }
        if let Some(w) = &rb.window {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            let tz = crate::host::clock::local_time_zone().unwrap_or_else(|e| {
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    self.warn_msg(&format!(
                        "reboot window: cannot read this host's time zone ({e}); using UTC"
                    ));
                }
                tz::TimeZone::utc()
            });
            if !w.contains(crate::host::clock::local_minute(now.wall, &tz)) {
                return;
            }
        }
        let target = next.display().to_string();
        let mut s = self.data.load_status();
        if s.rebooted_for.as_deref() == Some(target.as_str()) {
            return;
        }
        s.rebooted_for = Some(target.clone());
        if let Err(e) = self.data.save_status(&s) {
            // Without the guard a failed boot could loop: do not reboot.
            self.warn_msg(&format!("not rebooting: cannot record it: {e}"));
            return;
        }
        let mut ev = self.journal().event(now.wall, "reboot");
        ev.detail = Some(format!(
            "the boot default {target} has another kernel, initrd or kernel modules than the booted system"
        ));
        self.warn(self.journal().append(&ev));
        if let Err(e) = self.watchdog.reboot() {
            self.warn_msg(&format!("reboot failed: {e}"));
        }
    }
}

/// Whether booting `next` would run another kernel, initrd or module set
/// than the booted system (a `switch` cannot apply those).
pub fn kernel_changed(booted: &std::path::Path, next: &std::path::Path) -> bool {
    ["kernel", "initrd", "kernel-modules"].iter().any(|f| {
        let a = fs::canonicalize(booted.join(f)).ok();
        let b = fs::canonicalize(next.join(f)).ok();
        a != b
    })
}
