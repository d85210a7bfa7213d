//! What follows a poll: the status file, this host's receipt in the store
//! and the metrics file, written from one reading of the state
//! ([`Agent::finish_poll`]); and the delay before the next poll.

use std::sync::atomic::Ordering;

use super::{Agent, AgentError};
use crate::host::journal;
use crate::host::outcome::Outcome;
use crate::host::probation::{self, Probation};
use crate::host::receipts;
use crate::host::state::{HostState, PollStatus, RemoteState, StateError};

/// Most a failing store stretches the poll interval: 2, then 4 times it.
pub const MAX_BACKOFF_FACTOR: u64 = 4;

/// Delay before the next poll: the interval plus random jitter. Only a store
/// that fails (connection errors, time-outs, 5xx: `store_errors` polls in a
/// row) backs off, doubling up to [`MAX_BACKOFF_FACTOR`] times the interval.
/// Refused answers never back off: a store serving garbage must not be able
/// to hold hosts back from the next good release.
pub fn next_delay(interval: u64, jitter: u64, store_errors: u32, random: u64) -> u64 {
    let factor = (1u64 << store_errors.min(8)).min(MAX_BACKOFF_FACTOR);
    interval.saturating_mul(factor)
        + if jitter == 0 {
            0
        } else {
            random % (jitter + 1)
        }
}

impl Agent {
    /// Compares the trust root and the data dir with the last run's (see
    /// [`crate::host::trust::check_trust_root`]); returns the change, if any.
    pub fn check_trust_root(&self, now: u64) -> Result<Option<String>, StateError> {
        crate::host::trust::check_trust_root(
            &self.v,
            &self.data,
            self.trust_dir.as_deref(),
            now,
            &|w| (self.hooks.warn)(w),
        )
    }

    /// The running system changed since this agent started (a switch, or a
    /// rollback by this agent or by the watchdog): this process runs the
    /// binary and config of another system, and should be restarted with
    /// the running one's (`follow --exit-after-switch` exits 75). Returns
    /// the system that runs now.
    pub fn system_changed(&self) -> Option<std::path::PathBuf> {
        let now = std::fs::canonicalize(self.run_dir.join("current-system")).ok()?;
        (self.started_in.as_ref().is_some_and(|s| *s != now)).then_some(now)
    }

    /// While a release this host switched to is on probation, how soon to
    /// poll again: often enough that a poll that fails right after the
    /// switch (the network settling) is not the only chance to confirm
    /// before the deadline, and never later than the deadline. `None`: no
    /// probation is running.
    pub fn probation_poll_delay(&self) -> Option<u64> {
        let pr = probation::load(&self.data, self.remote()).ok().flatten()?;
        let left = pr.deadline()?.remaining(&self.clock.now());
        Some((pr.probation_secs / 6).clamp(5, 60).min(left.max(1)))
    }

    /// After a poll: records its result in the status file, sends this
    /// host's receipt if one is due and writes the metrics file, all from
    /// one reading of the state and the probation. Returns the status (the
    /// caller takes the backoff from it).
    pub fn finish_poll(
        &self,
        now: u64,
        result: &Result<Outcome, AgentError>,
        next_poll: Option<u64>,
    ) -> PollStatus {
        let before = self.data.load_status();
        let mut status = self.record_status(before.clone(), now, result, next_poll);
        let state = self.data.peek().ok();
        let probation = probation::load(&self.data, self.remote()).ok().flatten();
        let expiry = crate::host::status::expiries(&self.data, self.remote());
        self.warn_before_expiry(expiry, now);
        if let (Ok(o), Some(st)) = (result, &state) {
            self.send_receipt(o, st, probation.as_ref(), now);
        }
        // Everything about this poll is recorded: tell the hooks.
        self.run_hooks(&before, &mut status, probation.as_ref(), now);
        if let Some(path) = &self.v.config.metrics_path {
            let rep = crate::host::status::status_report(
                &self.v,
                &state.unwrap_or_default(),
                &status,
                probation.as_ref(),
                expiry,
                now,
            );
            if let Err(e) = crate::fsutil::write_atomic(
                path,
                crate::host::status::metrics_text(&rep).as_bytes(),
                0o644,
            ) {
                self.warn_msg(&format!("writing metrics to {}: {e}", path.display()));
            }
        }
        status
    }

    /// Runs the configured hooks for this poll's events (from the audit
    /// events it appended, and `stale`), one after another, each bounded
    /// by its time-out; failures are warnings and counted in the status.
    fn run_hooks(
        &self,
        before: &PollStatus,
        status: &mut PollStatus,
        probation: Option<&Probation>,
        now: u64,
    ) {
        use crate::host::config::HookEvent;
        use crate::host::hooks::{self, Fired, HookResult};
        let audited = self
            .audited
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        let cfg = &self.v.config.hooks;
        if cfg.commands.is_empty() {
            return;
        }
        let new_refusal =
            status.last_refusal.is_some() && status.last_refusal != before.last_refusal;
        let mut fired: Vec<Fired> = audited
            .iter()
            .filter_map(|ev| HookEvent::of_audit(&ev.event, new_refusal).map(|h| Fired::of(h, ev)))
            .collect();
        // One `refused` per poll, however many refusals it audited.
        let mut refused = false;
        fired.retain(|f| f.event != HookEvent::Refused || !std::mem::replace(&mut refused, true));
        // A switch arms the watchdog without an audit event of its own.
        let armed = fired.iter().any(|f| f.event == HookEvent::ProbationArmed);
        if let (false, Some(pr)) = (armed, probation) {
            if let Some(act) = fired
                .iter()
                .find(|f| f.event == HookEvent::Activated && f.version == Some(pr.version))
            {
                let mut f = act.clone();
                f.event = HookEvent::ProbationArmed;
                fired.push(f);
            }
        }
        if let Some(since) = status.failing_since {
            if !status.stale_notified && now.saturating_sub(since) >= cfg.stale_after_secs {
                status.stale_notified = true;
                let mut ev = crate::host::journal::AuditEvent::new(now, "stale", self.remote());
                ev.detail = status.last_error.clone();
                fired.push(Fired::of(HookEvent::Stale, &ev));
            }
        }
        // All hooks of a poll share a budget: a fifth of the probation
        // period (the new system must still get to confirm a release the
        // restart after this poll hands over), else ten minutes.
        let probation_secs = self.v.config.lockout.probation_secs;
        let budget = if probation_secs > 0 {
            (probation_secs / 5).max(5)
        } else {
            600
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(budget);
        let stop = || self.should_stop();
        let mut failures = 0;
        for f in &fired {
            for h in cfg.commands.iter().filter(|h| h.events.contains(&f.event)) {
                let left = until.saturating_duration_since(std::time::Instant::now());
                let limit = left.min(std::time::Duration::from_secs(h.timeout_secs));
                let res = if limit.is_zero() {
                    HookResult::Failed(format!(
                        "not run: this poll's hooks used their {budget} s budget"
                    ))
                } else {
                    hooks::run(h, f, self.remote(), &self.v.host_id, limit, &stop)
                };
                if let HookResult::Failed(why) = res {
                    failures += 1;
                    self.warn_msg(&format!("hook for {}: {why}", f.event.name()));
                }
            }
        }
        if failures > 0 || status.stale_notified != before.stale_notified {
            status.hook_failures += failures;
            if let Err(e) = self.data.save_status(status) {
                self.warn_msg(&format!(
                    "could not write {}: {e}",
                    self.data.status_path().display()
                ));
            }
        }
    }

    /// With mirrors: the configured URL in use (credentials cut, at most
    /// 200 characters: it goes into status and signed receipts).
    fn mirror_in_use(&self) -> Option<String> {
        let r = &self.v.config.remote;
        if r.mirrors.is_empty() {
            return None;
        }
        let d = self.store.describe();
        let url = std::iter::once(&r.url)
            .chain(&r.mirrors)
            .filter(|u| d.starts_with(u.as_str()))
            .max_by_key(|u| u.len())?;
        let shown = match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('/') {
                Some((host, path)) => format!(
                    "{scheme}://{}/{path}",
                    host.rsplit_once('@').map_or(host, |(_, h)| h)
                ),
                None => format!(
                    "{scheme}://{}",
                    rest.rsplit_once('@').map_or(rest, |(_, h)| h)
                ),
            },
            None => url.clone(),
        };
        Some(shown.chars().take(200).collect())
    }

    /// Warns (once per expiry time and agent run) when the verified head
    /// expires within `policy.warn_before_expiry_secs`, or its freshness
    /// timestamp within that or half its lifetime, whichever is shorter (a
    /// timestamp refreshed on schedule never warns; one missed refresh of
    /// two does): after that, every poll refuses the head until a new
    /// release or timestamp is signed.
    fn warn_before_expiry(&self, e: crate::host::status::Expiries, now: u64) {
        let window = self.v.config.policy.warn_before_expiry_secs;
        if window == 0 {
            return;
        }
        let half_life = match (e.freshness, e.freshness_created) {
            (Some(x), Some(c)) => x.saturating_sub(c) / 2,
            _ => window,
        };
        for (what, at, window, fix) in [
            (
                "the head release",
                e.release,
                window,
                "publish a new release",
            ),
            (
                "its freshness timestamp",
                e.freshness.filter(|_| self.v.policy.freshness.is_some()),
                window.min(half_life),
                "run `npcnix timestamp` with the remote's timestamp key",
            ),
        ] {
            let Some(at) = at.filter(|at| *at > now && at - now <= window) else {
                continue;
            };
            let first = self
                .warned_expiry
                .lock()
                .map(|mut w| {
                    // Past expiries are forgotten: a long-running agent sees
                    // a new timestamp expiry several times a day (issue 38).
                    w.retain(|t| *t > now);
                    w.insert(at)
                })
                .unwrap_or(false);
            if first {
                self.warn_msg(&format!(
                    "{what} of remote {} expires at {} (in {}): this host refuses it from then on; {fix}",
                    self.remote(),
                    crate::format::time::rfc3339(at),
                    crate::format::time::duration_words(at - now)
                ));
            }
        }
    }

    /// Records a poll's result in the status file (non-durable), on top of
    /// the status as it was (`before`, read once per poll), and returns it.
    fn record_status(
        &self,
        before: PollStatus,
        now: u64,
        result: &Result<Outcome, AgentError>,
        next_poll: Option<u64>,
    ) -> PollStatus {
        let clip = |s: String| journal::clip(&s, journal::DETAIL_MAX_CHARS);
        let mut s = before;
        s.last_check = Some(now);
        s.next_poll = next_poll;
        s.fetcher = Some(self.fetcher.clone());
        if result.is_ok() {
            s.mirror = self.mirror_in_use();
        }
        match self
            .last_fetch_ms
            .swap(0, std::sync::atomic::Ordering::Relaxed)
        {
            0 => {}
            ms => s.last_fetch_ms = Some(ms),
        }
        match result {
            Ok(o) => {
                s.last_result = Some(clip(o.to_string()));
                s.consecutive_store_errors = 0;
                s.last_refusal = match o {
                    Outcome::Refused(r) => Some(r.check().name().to_owned()),
                    _ => None,
                };
                if let Some(check) = &s.last_refusal {
                    // Check names are a fixed set: the map stays bounded.
                    *s.refusals.entry(check.clone()).or_default() += 1;
                }
                if let Outcome::Activated { .. } = o {
                    s.last_activation = Some(now);
                }
                // Ended well: the host runs what it should, or waits as
                // told. Backoff, a bad head, a release awaiting another's
                // confirmation neither end a failing period nor count.
                let good = matches!(
                    o,
                    Outcome::Activated { .. }
                        | Outcome::UpToDate { .. }
                        | Outcome::Unchanged
                        | Outcome::Waiting { .. }
                        | Outcome::AwaitingPromotion { .. }
                        | Outcome::Halted { .. }
                        | Outcome::Held { .. }
                        | Outcome::Paused { .. }
                );
                if good {
                    s.last_success = Some(now);
                    s.failing_since = None;
                    s.stale_notified = false;
                }
                s.waiting = match o {
                    Outcome::Waiting { version, until } => Some((*version, *until)),
                    _ => None,
                };
                s.gate = match o {
                    Outcome::AwaitingPromotion { version, stage } => {
                        Some(crate::host::state::GateWait {
                            version: *version,
                            stage: Some(stage.clone()),
                            halted_at: None,
                        })
                    }
                    Outcome::Halted { version, at } => Some(crate::host::state::GateWait {
                        version: *version,
                        stage: None,
                        halted_at: Some(*at),
                    }),
                    _ => None,
                };
                if o.is_failure() {
                    s.consecutive_failures += 1;
                    s.last_error = Some(clip(o.to_string()));
                    s.failing_since.get_or_insert(now);
                } else if !matches!(o, Outcome::Busy) {
                    s.consecutive_failures = 0;
                }
            }
            Err(e) => {
                s.consecutive_failures += 1;
                s.failing_since.get_or_insert(now);
                s.last_result = Some("error".into());
                s.last_error = Some(clip(format!("{e:#}")));
                s.last_refusal = None;
                if e.is_transient() {
                    s.consecutive_store_errors += 1;
                } else {
                    s.consecutive_store_errors = 0;
                }
            }
        }
        if let Err(e) = self.data.save_status(&s) {
            self.warn_msg(&format!(
                "could not write {}: {e}",
                self.data.status_path().display()
            ));
        }
        s
    }

    /// Writes this host's signed receipt to the store if one is due (a
    /// changed decision, or the heartbeat). Best effort: a failure is a
    /// warning.
    fn send_receipt(&self, o: &Outcome, st: &HostState, pr: Option<&Probation>, now: u64) {
        let cfg = &self.v.config.receipts;
        if !cfg.enabled
            || self.v.host_id.is_empty()
            || matches!(o, Outcome::Busy | Outcome::Interrupted)
        {
            return;
        }
        let r: RemoteState = st.remote(self.remote()).cloned().unwrap_or_default();
        let report = receipts::Report {
            host_id: self.v.host_id.clone(),
            remote: self.remote().to_owned(),
            configuration: self.v.config.configuration.clone(),
            active: r.active.map(|a| crate::format::receipt::VersionRef {
                version: a.version,
                statement: a.statement,
            }),
            highest_verified: r.highest.map(|h| h.version),
            // "unchanged" and "up-to-date" are the same state for a reader.
            result: match o {
                Outcome::Unchanged => "up-to-date".to_owned(),
                o => o.label().to_owned(),
            },
            check: match o {
                Outcome::Refused(x) => Some(x.check().name().to_owned()),
                _ => None,
            },
            about_version: o
                .version()
                .filter(|_| !matches!(o, Outcome::UpToDate { .. })),
            bad: r.bad.iter().map(|b| b.version).collect(),
            waiting_until: match o {
                Outcome::Waiting { until, .. } => Some(*until),
                _ => None,
            },
            probation: pr.map(|p| p.version),
            hold: self
                .v
                .config
                .hold
                .as_ref()
                .map(|h| crate::format::receipt::HoldRef {
                    max_version: h.max_version,
                    reason: h.reason.clone(),
                }),
            mirror: self.mirror_in_use(),
            log: self
                .v
                .witness
                .as_ref()
                .and_then(|_| self.data.load_log_head(self.remote()).ok().flatten()),
        };
        let (bytes, log) = match receipts::due(
            &self.data,
            &report,
            cfg.heartbeat_secs,
            env!("CARGO_PKG_VERSION"),
            now,
        ) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => return self.warn_msg(&format!("no receipt: {e}")),
        };
        match self.store.log().put_receipt(&self.v.host_id, &bytes) {
            Ok(()) => {
                if let Err(e) = receipts::sent(&self.data, &log) {
                    self.warn_msg(&format!("receipt written but not recorded: {e}"));
                }
            }
            // A read-only store (an HTTP mirror) holds no receipts: say so
            // once per run, not at every decision.
            Err(e) if e.kind == crate::store::StoreErrorKind::Unsupported => {
                if !self.receipts_unsupported.swap(true, Ordering::SeqCst) {
                    self.warn_msg(&format!(
                        "this store takes no host receipts ({e}); set receipts.enabled = false to silence this"
                    ));
                }
            }
            Err(e) => self.warn_msg(&format!("could not write this host's receipt: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failure_backoff_grows_and_stays_a_small_multiple_of_the_interval() {
        assert_eq!(next_delay(300, 0, 0, 0), 300);
        assert_eq!(next_delay(300, 0, 1, 0), 600);
        assert_eq!(next_delay(300, 0, 2, 0), 1200);
        assert_eq!(next_delay(300, 0, 20, 0), 1200);
        assert_eq!(next_delay(1, 0, u32::MAX, 0), 4);
        assert!(next_delay(300, 60, 0, 12345) <= 360);
    }

    #[test]
    fn activation_retry_delay_is_exponential_and_capped() {
        use crate::host::probation::retry_delay;
        assert_eq!(retry_delay(1), 60);
        assert_eq!(retry_delay(2), 120);
        assert_eq!(retry_delay(30), 3600);
    }
}
