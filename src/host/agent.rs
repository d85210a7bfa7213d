//! The host agent: one poll runs the [`pipeline`] stages (fetch, judge,
//! descend, download, extract, record), then the host's own decisions
//! (paused, marked bad, up to date, activation retry backoff), then
//! activates, health-checks, and rolls back or commits. `npcnix follow` runs
//! polls in a loop with jitter; only a failing store backs off.
//!
//! Invariants (see SECURITY.md, "The host's own state"):
//! * the highest verified version is recorded durably before activation
//!   starts, so a crash or kill at any point never lets a lower version in;
//! * a release that failed its health check is marked bad and never retried
//!   until a newer version appears; a failed activation is retried with
//!   exponential backoff, at most [`MAX_ACTIVATION_ATTEMPTS`] times;
//! * one poll at a time holds the data dir lock, so two agents (or an agent
//!   and a manual `npcnix activate`) never activate concurrently;
//! * an unchanged remote costs one conditional request and no disk writes
//!   besides the non-durable status file, and its cached bytes are judged
//!   again on every poll (freshness, current keys and policy);
//! * a refusal is never remembered: the next poll fetches and judges again,
//!   and the failure counter grows until a release is accepted.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::archive::confine::Confinement;
use crate::host::activate::{self, Activator, Health};
use crate::host::config::{ActivationMode, Validated};
use crate::host::journal::{self, Journal, JournalError};
use crate::host::pipeline::{self, PipelineError};
use crate::host::probation::{self, HostSystem, Probation, RollbackPlan};
use crate::host::state::{
    BadRelease, DataDir, HostState, PollStatus, RemoteState, Retry, StateError,
};
use crate::store::{ReleaseLog, Store};
use crate::verify::{Cause, Refusal, VerifiedRelease};

/// Activation attempts before a release is marked bad.
pub const MAX_ACTIVATION_ATTEMPTS: u32 = 3;

/// Points in a poll where a test may kill the process (like `kill -9`) to
/// prove crash safety; see [`Hooks::fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    AfterRecord,
    BeforeActivate,
    /// Probation armed, the switch not started.
    AfterArm,
    AfterActivate,
}

impl FaultPoint {
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::AfterRecord => "after-record",
            FaultPoint::BeforeActivate => "before-activate",
            FaultPoint::AfterArm => "after-arm",
            FaultPoint::AfterActivate => "after-activate",
        }
    }
}

/// How the agent reaches its caller without printing or exiting itself.
pub struct Hooks {
    /// Shows a warning that does not change a decision (the CLI prints it).
    pub warn: Box<dyn Fn(&str) + Send + Sync>,
    /// Called at each [`FaultPoint`]; the CLI's test hook aborts there.
    pub fault: Box<dyn Fn(FaultPoint) + Send + Sync>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            warn: Box::new(|_| {}),
            fault: Box::new(|_| {}),
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The store said "not modified" (conditional request), and the cached
    /// head, judged again now, is still the active release.
    Unchanged,
    /// The latest release is the one running.
    UpToDate {
        version: u64,
    },
    Paused {
        until: u64,
    },
    /// Another npcnix process holds the lock (an activation is running).
    Busy,
    Activated {
        version: u64,
    },
    /// Verification refused the release.
    Refused(Refusal),
    /// The release is marked bad (failed before); waiting for a newer one.
    SkippedBad {
        version: u64,
    },
    /// A failed activation is waiting for its backoff to expire.
    Backoff {
        version: u64,
        until: u64,
    },
    ActivationFailed {
        version: u64,
        message: String,
        marked_bad: bool,
    },
    RolledBack {
        version: u64,
        reason: String,
    },
    /// A stop signal arrived before the next step; nothing was activated.
    Interrupted,
    /// The release verified, and this host's slot in its signed rollout
    /// wave has not come yet.
    Waiting {
        version: u64,
        until: u64,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::UpToDate { .. } => "up-to-date",
            Outcome::Paused { .. } => "paused",
            Outcome::Busy => "busy",
            Outcome::Activated { .. } => "activated",
            Outcome::Refused(_) => "rejected",
            Outcome::SkippedBad { .. } => "skipped-bad",
            Outcome::Backoff { .. } => "backoff",
            Outcome::ActivationFailed { .. } => "activation-failed",
            Outcome::RolledBack { .. } => "rolled-back",
            Outcome::Interrupted => "interrupted",
            Outcome::Waiting { .. } => "waiting",
        }
    }

    /// A problem the operator should see (counts as a failure for backoff).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Refused(_) | Outcome::ActivationFailed { .. } | Outcome::RolledBack { .. }
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Unchanged => write!(f, "remote unchanged"),
            Outcome::UpToDate { version } => write!(f, "up to date at version {version}"),
            Outcome::Paused { until } if *until == u64::MAX => write!(f, "paused until unpaused"),
            Outcome::Paused { until } => {
                write!(f, "paused until {}", crate::format::time::rfc3339(*until))
            }
            Outcome::Busy => write!(f, "another npcnix process holds the lock"),
            Outcome::Activated { version } => write!(f, "activated version {version}"),
            Outcome::Refused(r) => write!(f, "rejected ({}): {r}", r.check()),
            Outcome::SkippedBad { version } => {
                write!(
                    f,
                    "version {version} is marked bad; waiting for a newer release"
                )
            }
            Outcome::Backoff { version, until } => write!(
                f,
                "version {version} failed to activate; next attempt at {}",
                crate::format::time::rfc3339(*until)
            ),
            Outcome::ActivationFailed {
                version,
                message,
                marked_bad,
            } => write!(
                f,
                "activation of version {version} failed: {message}{}",
                if *marked_bad { " (marked bad)" } else { "" }
            ),
            Outcome::RolledBack { version, reason } => {
                write!(f, "version {version} rolled back and marked bad: {reason}")
            }
            Outcome::Interrupted => write!(f, "interrupted by a stop signal"),
            Outcome::Waiting { version, until } => write!(
                f,
                "version {version} verified; waiting for this host's rollout slot until {}",
                crate::format::time::rfc3339(*until)
            ),
        }
    }
}

/// Why the inspection of a built system stopped an activation.
enum Inspection {
    /// The build or the reading failed: an activation failure (retried).
    Failed(String),
    /// The built system would strand the host.
    Refused(Refusal),
}

/// Where the network side of a poll ended.
enum FetchStep {
    /// Nothing to apply.
    Done(Outcome),
    /// A verified archive, and how to apply it (boxed: it is much larger
    /// than an outcome).
    Apply(Box<(pipeline::Downloaded, activate::Plan)>),
}

/// A poll that could not reach a verdict (store, state or local I/O).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AgentError(#[from] PipelineError);

impl From<StateError> for AgentError {
    fn from(e: StateError) -> Self {
        AgentError(e.into())
    }
}

impl AgentError {
    /// The store failed rather than answered: back off.
    pub fn is_transient(&self) -> bool {
        self.0.is_transient()
    }
}

pub struct Agent {
    pub v: Validated,
    pub store: Box<dyn Store>,
    pub data: DataDir,
    pub activator: Activator,
    /// Set by SIGTERM/SIGINT: finish the current step, then stop.
    pub stop: Arc<AtomicBool>,
    pub hooks: Hooks,
    /// Where the network side runs, for `status` (e.g. "separate: uid 991").
    pub fetcher: String,
    /// True while a poll is on its network side (no lock held, nothing
    /// durable being written): the caller may abandon it on a stop signal.
    pub fetching: AtomicBool,
    /// Where the data dir of each remote is recorded, outside any data dir
    /// (`None`: not recorded, a move of the data dir goes unnoticed).
    pub trust_dir: Option<PathBuf>,
    /// Probation watchdog, boot ID and `/run` (lockout protection).
    pub system: HostSystem,
    /// Set once the store refused a receipt as unsupported (read-only).
    pub receipts_unsupported: AtomicBool,
}

/// Exponential backoff for activation retries: 1, 2, 4, ... minutes, capped
/// at an hour.
fn retry_delay(attempts: u32) -> u64 {
    (60u64 << attempts.saturating_sub(1).min(6)).min(3600)
}

impl Agent {
    fn remote(&self) -> &str {
        self.v.remote.as_str()
    }

    fn journal(&self) -> Journal<'_> {
        Journal::new(&self.data, self.remote())
    }

    fn warn(&self, w: Result<(), JournalError>) {
        if let Err(w) = w {
            (self.hooks.warn)(&w.to_string());
        }
    }

    fn audit_release(&self, event: &str, r: &VerifiedRelease, detail: Option<String>, now: u64) {
        self.warn(self.journal().release(event, r, detail, now));
    }

    /// One poll. The network side (fetch, judge, chain, download) runs
    /// without the data dir lock, so a store that stalls never keeps
    /// `npcnix activate` or another agent out; the lock is taken to judge
    /// the release again against the state as it is then, extract, record
    /// and activate. Every refusal is audited and returned as
    /// [`Outcome::Refused`]; nothing about it is remembered, so the next
    /// poll fetches and judges `latest` again.
    pub fn poll_once(&self, now: u64) -> Result<Outcome, AgentError> {
        match self.poll_steps(now) {
            Err(PipelineError::Refused(r)) => {
                // A refused head is never remembered: the next poll fetches
                // `latest` in full and judges it again.
                self.forget_head();
                self.warn(self.journal().refusal(&r, now));
                Ok(Outcome::Refused(r))
            }
            Err(e) => {
                // A store that fails our condition (or answers it against
                // the protocol) gets an unconditional request next time.
                if !e.is_transient() {
                    self.forget_head();
                }
                Err(e.into())
            }
            Ok(o) => Ok(o),
        }
    }

    /// Compares the trust root (remote, pinned keys, threshold) with the one
    /// the last run recorded. A change is audited (`trust-changed`) and shown
    /// in `status`; when the followed remote's name changed, the new name
    /// starts from the old one's rollback floor rather than from nothing.
    /// Returns the change, if any.
    pub fn check_trust_root(&self, now: u64) -> Result<Option<String>, AgentError> {
        use crate::host::trust::TrustRecord;
        let new = TrustRecord::of(&self.v);
        let old = self.data.load_trust();
        let change = old.as_ref().and_then(|o| new.changes_from(o));
        if let (Some(old), Some(change)) = (&old, &change) {
            let mut ev = self.journal().event(now, "trust-changed");
            ev.detail = Some(change.clone());
            self.warn(self.journal().append(&ev));
            if old.remote != new.remote {
                let _lock = self.data.lock_wait()?;
                let mut st = self.data.load()?;
                let carried = st
                    .remote(&old.remote)
                    .map(|r| r.highest.map_or(0, |h| h.version).max(r.floor.unwrap_or(0)))
                    .filter(|v| *v > 0);
                let rs = st.remote_mut(self.remote());
                if let (Some(floor), None) = (carried, rs.highest) {
                    if rs.floor.is_none_or(|f| f < floor) {
                        rs.floor = Some(floor);
                        self.data.save(&st)?;
                        let mut ev = self.journal().event(now, "floor-carried-over");
                        ev.detail = Some(format!(
                            "remote renamed from {}: versions below {floor} are refused",
                            old.remote
                        ));
                        self.warn(self.journal().append(&ev));
                    }
                }
            }
            let mut s = self.data.load_status();
            s.trust_changed = Some(format!(
                "{change} (at {})",
                crate::format::time::rfc3339(now)
            ));
            let _ = self.data.save_status(&s);
        }
        if old.as_ref() != Some(&new) {
            if let Err(e) = self.data.save_trust(&new) {
                (self.hooks.warn)(&format!("could not record the trust root: {e}"));
            }
        }
        let moved = self.check_state_dir(now)?;
        Ok(match (change, moved) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        })
    }

    /// Notices a move of the data dir (a release can change `stateDir`): the
    /// new dir starts from the old one's rollback floor, not from nothing.
    fn check_state_dir(&self, now: u64) -> Result<Option<String>, AgentError> {
        use crate::host::trust::{load_breadcrumb, save_breadcrumb, Breadcrumb};
        let Some(dir) = &self.trust_dir else {
            return Ok(None);
        };
        let here = Breadcrumb {
            state_dir: self.data.root.clone(),
        };
        let last = load_breadcrumb(dir, self.remote());
        let mut change = None;
        if let Some(last) = last.as_ref().filter(|b| b.state_dir != here.state_dir) {
            let what = format!(
                "state dir {} -> {}",
                last.state_dir.display(),
                here.state_dir.display()
            );
            let mut ev = self.journal().event(now, "trust-changed");
            ev.detail = Some(what.clone());
            self.warn(self.journal().append(&ev));
            let old_floor = DataDir {
                root: last.state_dir.clone(),
            }
            .peek()
            .ok()
            .and_then(|st| {
                st.remote(self.remote())
                    .map(|r| r.highest.map_or(0, |h| h.version).max(r.floor.unwrap_or(0)))
            })
            .filter(|v| *v > 0);
            if let Some(floor) = old_floor {
                let _lock = self.data.lock_wait()?;
                let mut st = self.data.load()?;
                let rs = st.remote_mut(self.remote());
                if rs.highest.is_none_or(|h| h.version < floor)
                    && rs.floor.is_none_or(|f| f < floor)
                {
                    rs.floor = Some(floor);
                    self.data.save(&st)?;
                    let mut ev = self.journal().event(now, "floor-carried-over");
                    ev.detail = Some(format!(
                        "state dir moved from {}: versions below {floor} are refused",
                        last.state_dir.display()
                    ));
                    self.warn(self.journal().append(&ev));
                }
            }
            let mut s = self.data.load_status();
            s.trust_changed = Some(format!("{what} (at {})", crate::format::time::rfc3339(now)));
            let _ = self.data.save_status(&s);
            change = Some(what);
        }
        if last.as_ref() != Some(&here) {
            if let Err(e) = save_breadcrumb(dir, self.remote(), &here) {
                (self.hooks.warn)(&format!("could not record the state dir: {e}"));
            }
        }
        Ok(change)
    }

    fn forget_head(&self) {
        if let Err(e) = self.data.save_head(self.remote(), None) {
            (self.hooks.warn)(&format!("could not drop the cached head: {e}"));
        }
    }

    /// Whether a poll is on its network side right now (see `fetching`).
    pub fn is_fetching(&self) -> bool {
        self.fetching.load(Ordering::SeqCst)
    }

    fn poll_steps(&self, now: u64) -> Result<Outcome, PipelineError> {
        // May roll back: never abandoned (runs before `fetching` is set).
        if let Some(o) = self.check_probation(now)? {
            return Ok(o);
        }
        self.check_reboot(now);
        self.fetching.store(true, Ordering::SeqCst);
        let result = self.poll_phases(now);
        self.fetching.store(false, Ordering::SeqCst);
        result
    }

    fn poll_phases(&self, now: u64) -> Result<Outcome, PipelineError> {
        // Read-only without the lock: the state is created (and written)
        // only under it.
        let st = self.data.peek()?;
        let r: RemoteState = st.remote(self.remote()).cloned().unwrap_or_default();
        let (downloaded, plan) = match self.fetch_side(&r, now)? {
            FetchStep::Done(o) => return Ok(o),
            FetchStep::Apply(b) => *b,
        };
        // From here on the poll writes durable state: never abandoned.
        self.fetching.store(false, Ordering::SeqCst);
        let _lock = match self.data.try_lock() {
            Ok(l) => l,
            Err(StateError::Locked(_)) => return Ok(Outcome::Busy),
            Err(e) => return Err(e.into()),
        };
        let mut st = self.data.load()?;
        // The download may have taken long: judge and record with the time
        // it is now, not when the poll started.
        let now = crate::fsutil::now_unix().max(now);
        if st.remote(self.remote()).and_then(|x| x.highest) != r.highest {
            // Another process recorded a release meanwhile: what was checked
            // against the old state (the chain walk) is stale. Start over.
            return Ok(Outcome::Busy);
        }
        self.apply_side(&mut st, downloaded, plan, now)
    }

    /// Everything that talks to the store, without the lock: up to a
    /// downloaded, verified archive (or an outcome that needs nothing more).
    fn fetch_side(&self, r: &RemoteState, now: u64) -> Result<FetchStep, PipelineError> {
        if r.is_paused(now) {
            return Ok(FetchStep::Done(Outcome::Paused {
                until: r.paused_until.unwrap_or(u64::MAX),
            }));
        }
        let policy = &self.v.policy;
        let log = ReleaseLog::new(self.store.as_ref()).with_min_rate(
            self.v
                .config
                .remote
                .min_rate_bytes_per_sec
                .unwrap_or(crate::store::transfer::DEFAULT_MIN_RATE_BYTES_PER_SEC),
        );

        let cached = self.data.load_head(self.remote());
        let head = pipeline::fetch_head(&log, cached.as_ref())?;
        let head_statement = head.unverified_statement_hash();
        let judged = match pipeline::judge(policy, Some(r), head, now) {
            Ok(j) => j,
            // The head is byte for byte the release on probation, which
            // this host verified before switching (with the keys it had
            // then): the new system reached the store. Its new config may
            // no longer trust the key that signed it — a key rotation —
            // and must not roll the rotation back for that.
            Err(refusal)
                if head_statement.is_some()
                    && probation::load(&self.data, self.remote())
                        .ok()
                        .flatten()
                        .is_some_and(|p| Some(p.statement) == head_statement) =>
            {
                self.fetching.store(false, Ordering::SeqCst);
                let confirmed = self.confirm_probation(r, now);
                self.fetching.store(true, Ordering::SeqCst);
                if let Some(o) = confirmed? {
                    return Ok(FetchStep::Done(o));
                }
                return Err(refusal.into());
            }
            // Signed for this remote by this host's keys, refused only for
            // what the host has seen (an older head from a lagging mirror
            // or cache, a fork): the store is reachable and its releases
            // verify, which is all a release on probation must show. Else
            // a mirror serving the previous `latest` for longer than the
            // probation rolls back every good release (found by bench/soak).
            Err(refusal) if refusal.check().cause() == Cause::History => {
                self.fetching.store(false, Ordering::SeqCst);
                let confirmed = self.confirm_probation(r, now);
                self.fetching.store(true, Ordering::SeqCst);
                if let Some(o) = confirmed? {
                    return Ok(FetchStep::Done(o));
                }
                return Err(refusal.into());
            }
            Err(refusal) => return Err(refusal.into()),
        };
        if !judged.revalidated() {
            // Verified bytes only (and dropped again if a later stage
            // refuses the release).
            if let Err(e) = self
                .data
                .save_head(self.remote(), judged.cache_entry().as_ref())
            {
                (self.hooks.warn)(&format!("could not cache the verified head: {e}"));
            }
        }
        // The head verified: this system reached the store and can judge
        // its releases, which is what a release on probation must show.
        // Writes durable state: not abandoned on a stop signal meanwhile.
        self.fetching.store(false, Ordering::SeqCst);
        let confirmed = self.confirm_probation(r, now);
        self.fetching.store(true, Ordering::SeqCst);
        if let Some(o) = confirmed? {
            return Ok(FetchStep::Done(o));
        }
        let seen = judged.release().seen();
        let version = seen.version;
        if r.is_bad(&seen) {
            return Ok(FetchStep::Done(Outcome::SkippedBad { version }));
        }
        if !judged.verdict.is_new() && r.active == Some(seen) {
            // "Unchanged" only after the cached bytes passed judgement again.
            return Ok(FetchStep::Done(if judged.revalidated() {
                Outcome::Unchanged
            } else {
                Outcome::UpToDate { version }
            }));
        }
        if let Some(retry) = r.retry.as_ref().filter(|t| t.version == version) {
            if now < retry.next_at {
                return Ok(FetchStep::Done(Outcome::Backoff {
                    version,
                    until: retry.next_at,
                }));
            }
        }

        let accepted = pipeline::descend(&log, policy, Some(r), judged, self.v.require_chain, now)?;
        let plan = self
            .activator
            .plan(accepted.release.statement().toplevels.as_ref())?;
        if let Some(until) = self.rollout_slot(&accepted.release).filter(|t| now < *t) {
            return Ok(FetchStep::Done(Outcome::Waiting { version, until }));
        }
        if self.should_stop() {
            return Ok(FetchStep::Done(Outcome::Interrupted));
        }
        let downloaded = pipeline::download(&log, accepted, &self.v.limits, &self.data)?;
        Ok(FetchStep::Apply(Box::new((downloaded, plan))))
    }

    /// Under the lock: the release judged again against the state as it is
    /// now (another process may have recorded, activated or marked something
    /// meanwhile), then extract, record, activate.
    fn apply_side(
        &self,
        st: &mut HostState,
        mut downloaded: pipeline::Downloaded,
        plan: activate::Plan,
        now: u64,
    ) -> Result<Outcome, PipelineError> {
        let r: RemoteState = st.remote(self.remote()).cloned().unwrap_or_default();
        if r.is_paused(now) {
            return Ok(Outcome::Paused {
                until: r.paused_until.unwrap_or(u64::MAX),
            });
        }
        pipeline::rejudge(&self.v.policy, Some(&r), &mut downloaded, now)?;
        let seen = downloaded.release.seen();
        let version = seen.version;
        if r.is_bad(&seen) {
            return Ok(Outcome::SkippedBad { version });
        }
        if !downloaded.new && r.active == Some(seen) {
            return Ok(Outcome::UpToDate { version });
        }
        if let Some(retry) = r.retry.as_ref().filter(|t| t.version == version) {
            if now < retry.next_at {
                return Ok(Outcome::Backoff {
                    version,
                    until: retry.next_at,
                });
            }
        }
        let extracted = pipeline::extract(
            downloaded,
            &self.v.limits,
            self.v.config.policy.confinement,
            &self.data,
            &*crate::progress::silent(),
        )?;
        let mut ps = self.data.load_status();
        ps.confinement = Some(extracted.confinement.to_string());
        let _ = self.data.save_status(&ps);
        if extracted.confinement != Confinement::Enforced {
            (self.hooks.warn)(&extracted.confinement.to_string());
        }
        // Rollback protection is durable before anything is activated.
        pipeline::record(&self.data, st, &extracted, now)?;
        let release = extracted.release;
        if extracted.new {
            self.audit_release(
                "verified",
                &release,
                Some(format!(
                    "{} files, {} bytes; {}",
                    extracted.stats.files, extracted.stats.bytes, extracted.confinement
                )),
                now,
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
        Ok(self.activate(st, &release, &plan, &dir, now)?)
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

    fn activate(
        &self,
        st: &mut HostState,
        release: &VerifiedRelease,
        plan: &activate::Plan,
        dir: &Path,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let version = release.version();
        let seen = release.seen();
        let env = self.activation_env(release, dir);
        let mode = self.activator.effective_mode();
        let configuration = &self.v.config.configuration;
        let leaving = release.statement().decommissions(configuration);
        if leaving {
            self.audit_release(
                "decommission",
                release,
                Some(format!(
                    "the release retires configuration {configuration:?} from this remote: no lockout inspection, no probation"
                )),
                now,
            );
        }
        let mut system = None;
        if self.v.config.lockout.inspect && !leaving && mode != ActivationMode::DryActivate {
            match self.inspect(release.statement(), plan, dir, &env, now) {
                Ok(path) => system = Some(path),
                Err(Inspection::Failed(message)) => {
                    return self.activation_failed(st, release, message, now)
                }
                Err(Inspection::Refused(r)) => {
                    // The release itself would strand the host: never retried.
                    let rs = st.remote_mut(self.remote());
                    rs.retry = None;
                    rs.bad.push(BadRelease {
                        version,
                        statement: seen.statement,
                        reason: r.line(),
                        at: now,
                    });
                    self.data.save(st)?;
                    self.warn(self.journal().refusal(&r, now));
                    self.audit_release("marked-bad", release, Some(r.line()), now);
                    return Ok(Outcome::Refused(r));
                }
            }
        }
        let pending = match self.arm_probation(st, release, plan, system, mode, leaving, now) {
            Ok(p) => p,
            Err(e) => {
                return self.activation_failed(
                    st,
                    release,
                    format!("arming the probation watchdog: {e}"),
                    now,
                )
            }
        };
        self.audit_release(
            "activating",
            release,
            Some(match plan {
                activate::Plan::Flake => format!("{} {}", self.activator.program, mode.as_arg()),
                activate::Plan::Toplevel(p) => format!(
                    "{p}/bin/switch-to-configuration {}",
                    self.activator.toplevel_action.as_arg()
                ),
            }),
            now,
        );
        (self.hooks.fault)(FaultPoint::AfterArm);
        let failure = self.activator.apply(plan, dir, &env).err().map(|e| e.0);
        (self.hooks.fault)(FaultPoint::AfterActivate);
        if let Some(message) = failure {
            self.end_probation(pending.as_ref());
            return self.activation_failed(st, release, message, now);
        }

        if let (Some(h), true) = (&self.v.config.health_check, mode.changes_running_system()) {
            if let Health::Unhealthy(reason) = activate::health_check(h, &env) {
                self.audit_release("health-check-failed", release, Some(reason.clone()), now);
                let rb_note = match self.activator.roll_back(plan, &env) {
                    Ok(()) => "rolled back to the previous generation".to_owned(),
                    Err(e) => format!("ROLLBACK FAILED: {e}"),
                };
                self.end_probation(pending.as_ref());
                let rs = st.remote_mut(self.remote());
                rs.retry = None;
                rs.bad.push(BadRelease {
                    version,
                    statement: seen.statement,
                    reason: format!("health check failed: {reason}"),
                    at: now,
                });
                self.data.save(st)?;
                self.audit_release(
                    "rolled-back",
                    release,
                    Some(format!("{reason}; {rb_note}")),
                    now,
                );
                return Ok(Outcome::RolledBack {
                    version,
                    reason: format!("{reason}; {rb_note}"),
                });
            }
        }

        // The probation period starts now that the switch is done (a long
        // build must not eat it); the timer armed before the switch only
        // covered a switch that never returned.
        let mut on_probation = None;
        if let Some(mut pr) = pending {
            if pr.deadline.is_some() {
                let now = crate::fsutil::now_unix().max(now);
                match self.system.watchdog.arm(&self.data, &pr, pr.probation_secs) {
                    Ok(unit) => {
                        pr.watchdog_unit = unit;
                        pr.deadline = Some(now + pr.probation_secs);
                    }
                    // The deadline stays the one the remaining timer keeps.
                    Err(e) => (self.hooks.warn)(&format!(
                        "could not re-arm the probation watchdog (the one armed before the switch stays, with its deadline): {e}"
                    )),
                }
                probation::save(&self.data, self.remote(), Some(&pr))?;
            }
            on_probation = Some(pr.describe());
        }
        let rs = st.remote_mut(self.remote());
        rs.active = Some(seen);
        rs.retry = None;
        self.data.save(st)?;
        self.audit_release(
            "activated",
            release,
            Some(match &on_probation {
                Some(p) => format!("{}; on probation: {p}", mode.as_arg()),
                None => mode.as_arg().to_owned(),
            }),
            now,
        );
        self.prune_release_dirs(dir);
        Ok(Outcome::Activated { version })
    }

    /// A failed activation: retried with backoff, marked bad after
    /// [`MAX_ACTIVATION_ATTEMPTS`].
    fn activation_failed(
        &self,
        st: &mut HostState,
        release: &VerifiedRelease,
        message: String,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let version = release.version();
        let rs = st.remote_mut(self.remote());
        let attempts = rs
            .retry
            .as_ref()
            .filter(|r| r.version == version)
            .map_or(0, |r| r.attempts)
            + 1;
        let marked_bad = attempts >= MAX_ACTIVATION_ATTEMPTS;
        if marked_bad {
            rs.retry = None;
            rs.bad.push(BadRelease {
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
        self.data.save(st)?;
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
        Ok(Outcome::ActivationFailed {
            version,
            message,
            marked_bad,
        })
    }

    /// Builds the new system and checks that it keeps this host reachable
    /// (see [`crate::host::lockout`]). Returns the built system's path.
    fn inspect(
        &self,
        release: &crate::format::statement::Statement,
        plan: &activate::Plan,
        dir: &Path,
        env: &[(&str, String)],
        now: u64,
    ) -> Result<PathBuf, Inspection> {
        let work = crate::fsutil::TempDir::new_held_in(&self.data.tmp_dir(), "build-")
            .map_err(|e| Inspection::Failed(format!("creating a build directory: {e}")))?;
        let built = self
            .activator
            .build(plan, dir, work.path(), env)
            .map_err(|e| Inspection::Failed(format!("building the new system: {e}")))?;
        let view = crate::host::lockout::read_system(&built).map_err(|e| {
            Inspection::Failed(format!("reading the built system {}: {e}", built.display()))
        })?;
        crate::host::lockout::judge(&self.v, &view, release, now).map_err(Inspection::Refused)?;
        Ok(built)
    }

    /// Records the probation of a release about to be applied and arms the
    /// watchdog, before the switch (a switch that kills the agent is still
    /// rolled back). Nothing for modes that change nothing now or later,
    /// for releases that retire this host, or with probation off.
    #[allow(clippy::too_many_arguments)]
    fn arm_probation(
        &self,
        st: &HostState,
        release: &VerifiedRelease,
        plan: &activate::Plan,
        system: Option<PathBuf>,
        mode: ActivationMode,
        leaving: bool,
        now: u64,
    ) -> Result<Option<Probation>, String> {
        let secs = self.v.config.lockout.probation_secs;
        let applies = match mode {
            ActivationMode::Switch | ActivationMode::Test => true,
            // Without a boot ID a later boot cannot be told from this one.
            ActivationMode::Boot => self.system.boot_id.is_some(),
            _ => false,
        };
        if secs == 0 || leaving || !applies {
            return Ok(None);
        }
        let seen = release.seen();
        if let Some(pr) = probation::load(&self.data, self.remote()).map_err(|e| e.to_string())? {
            if pr.seen() == seen {
                // Applied again after a crash: the first deadline stands.
                return Ok(Some(pr));
            }
            if let Some(unit) = &pr.watchdog_unit {
                let _ = self.system.watchdog.disarm(unit);
            }
        }
        let mut pr = Probation {
            format: probation::PROBATION_FORMAT.to_owned(),
            remote: self.remote().to_owned(),
            version: seen.version,
            statement: seen.statement,
            armed_at: now,
            deadline: (mode != ActivationMode::Boot).then_some(now + secs),
            probation_secs: secs,
            boot_id: self.system.boot_id.clone(),
            previous_active: st.remote(self.remote()).and_then(|r| r.active),
            rollback: RollbackPlan {
                toplevel: matches!(plan, activate::Plan::Toplevel(_)),
                program: self.system.watchdog.which(&self.activator.program),
                mode,
                profile: self.activator.profile.clone(),
                restore: probation::RestorePoint::observe(
                    mode,
                    &self.system.run_dir,
                    &self.activator.profile,
                ),
            },
            watchdog_unit: None,
            system,
        };
        // Durable before the timer exists: the timer acts on the record.
        probation::save(&self.data, self.remote(), Some(&pr)).map_err(|e| e.to_string())?;
        if pr.deadline.is_some() {
            match self.system.watchdog.arm(&self.data, &pr, secs) {
                Ok(unit) => pr.watchdog_unit = unit,
                Err(e) => {
                    let _ = probation::save(&self.data, self.remote(), None);
                    return Err(e);
                }
            }
            probation::save(&self.data, self.remote(), Some(&pr)).map_err(|e| e.to_string())?;
        }
        Ok(Some(pr))
    }

    /// When this host may activate `release` under its signed rollout wave
    /// (`None`: no wave, the host ignores waves, or it has no host ID).
    fn rollout_slot(&self, release: &VerifiedRelease) -> Option<u64> {
        let st = release.statement();
        let plan = st.rollout.as_ref()?;
        if self.v.config.rollout == crate::host::config::RolloutMode::Immediate
            || self.v.host_id.is_empty()
        {
            return None;
        }
        Some(plan.slot(st.created, self.remote(), st.version, &self.v.host_id))
    }

    /// Writes this host's signed receipt to the store if one is due (a
    /// changed decision, or the heartbeat). Best effort: a failure is a
    /// warning.
    pub fn send_receipt(&self, result: &Result<Outcome, AgentError>, now: u64) {
        use crate::host::receipts;
        let cfg = &self.v.config.receipts;
        if !cfg.enabled || self.v.host_id.is_empty() {
            return;
        }
        let Ok(o) = result else { return };
        if matches!(o, Outcome::Busy | Outcome::Interrupted) {
            return;
        }
        let Ok(st) = self.data.peek() else { return };
        let r = st.remote(self.remote()).cloned().unwrap_or_default();
        let (check, about) = match o {
            Outcome::Refused(x) => (Some(x.check().name().to_owned()), None),
            Outcome::Activated { version }
            | Outcome::UpToDate { version }
            | Outcome::SkippedBad { version }
            | Outcome::Backoff { version, .. }
            | Outcome::ActivationFailed { version, .. }
            | Outcome::RolledBack { version, .. }
            | Outcome::Waiting { version, .. } => (None, Some(*version)),
            _ => (None, None),
        };
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
            check,
            about_version: about.filter(|_| !matches!(o, Outcome::UpToDate { .. })),
            bad: r.bad.iter().map(|b| b.version).collect(),
            waiting_until: match o {
                Outcome::Waiting { until, .. } => Some(*until),
                _ => None,
            },
            probation: probation::load(&self.data, self.remote())
                .ok()
                .flatten()
                .map(|p| p.version),
        };
        let due = match receipts::due(
            &self.data,
            &report,
            cfg.heartbeat_secs,
            env!("CARGO_PKG_VERSION"),
            now,
        ) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => return (self.hooks.warn)(&format!("no receipt: {e}")),
        };
        let (bytes, log) = due;
        match self
            .store
            .put(&receipts::object_key(&self.v.host_id), &bytes)
        {
            Ok(()) => {
                if let Err(e) = receipts::sent(&self.data, &log) {
                    (self.hooks.warn)(&format!("receipt written but not recorded: {e}"));
                }
            }
            // A read-only store (an HTTP mirror) holds no receipts: say so
            // once per run, not at every decision.
            Err(e) if e.kind == crate::store::StoreErrorKind::Unsupported => {
                if !self.receipts_unsupported.swap(true, Ordering::SeqCst) {
                    (self.hooks.warn)(&format!(
                        "this store takes no host receipts ({e}); set receipts.enabled = false to silence this"
                    ));
                }
            }
            Err(e) => (self.hooks.warn)(&format!("could not write this host's receipt: {e}")),
        }
    }

    /// Ends a probation without a verdict on the release (its activation
    /// failed or was rolled back already).
    fn end_probation(&self, pr: Option<&Probation>) {
        let Some(pr) = pr else { return };
        if let Some(unit) = &pr.watchdog_unit {
            if let Err(e) = self.system.watchdog.disarm(unit) {
                (self.hooks.warn)(&e);
            }
        }
        if let Err(e) = probation::save(&self.data, self.remote(), None) {
            (self.hooks.warn)(&e.to_string());
        }
    }

    /// At the start of a poll: a probation whose deadline passed is rolled
    /// back (the watchdog did not run: a reboot, `watchdog = none`); a `boot`
    /// release seen in a later boot starts its probation now.
    fn check_probation(&self, now: u64) -> Result<Option<Outcome>, PipelineError> {
        let Some(mut pr) = probation::load(&self.data, self.remote())? else {
            return Ok(None);
        };
        if pr.awaits_reboot(self.system.boot_id.as_deref()) {
            return Ok(None);
        }
        if pr.deadline.is_none() {
            let _lock = self.data.lock_wait()?;
            pr.deadline = Some(now + pr.probation_secs);
            match self.system.watchdog.arm(&self.data, &pr, pr.probation_secs) {
                Ok(unit) => pr.watchdog_unit = unit,
                Err(e) => (self.hooks.warn)(&format!(
                    "could not arm the probation watchdog (this agent still rolls back at the deadline): {e}"
                )),
            }
            probation::save(&self.data, self.remote(), Some(&pr))?;
            let mut ev = self.journal().event(now, "probation-started");
            ev.version = Some(pr.version);
            ev.detail = Some(format!("booted into it; {}", pr.describe()));
            self.warn(self.journal().append(&ev));
            return Ok(None);
        }
        if !pr.expired(now) {
            return Ok(None);
        }
        let _lock = self.data.lock_wait()?;
        let reason = format!(
            "no successful poll within {}s of the switch",
            pr.probation_secs
        );
        Ok(probation::roll_back_locked(
            &self.data,
            self.remote(),
            Some(pr.version),
            self.activator.nix.clone(),
            now,
            &reason,
            false,
        )?
        .map(|(version, reason)| Outcome::RolledBack { version, reason }))
    }

    /// After the head verified: confirms the release on probation if it is
    /// the active one (and the health check, if configured, passes now),
    /// disarming the watchdog. A failing health check rolls it back at once.
    fn confirm_probation(
        &self,
        r: &RemoteState,
        now: u64,
    ) -> Result<Option<Outcome>, PipelineError> {
        let Some(pr) = probation::load(&self.data, self.remote())? else {
            return Ok(None);
        };
        if pr.deadline.is_none() || pr.expired(now) || r.active != Some(pr.seen()) {
            return Ok(None);
        }
        // Busy (an activation or the watchdog): confirm on the next poll.
        let Ok(_lock) = self.data.try_lock() else {
            return Ok(None);
        };
        if probation::load(&self.data, self.remote())?.as_ref() != Some(&pr) {
            return Ok(None);
        }
        if let Some(system) = &pr.system {
            let running = fs::canonicalize(self.system.run_dir.join("current-system")).ok();
            let verdict = crate::host::lockout::read_system(system)
                .map_err(|e| format!("reading {}: {e}", system.display()))
                .and_then(|next| {
                    crate::host::lockout::may_confirm(&self.v.config, running.as_deref(), &next)
                });
            if let Err(why) = verdict {
                (self.hooks.warn)(&format!(
                    "not confirming version {} yet: {why}; it is rolled back at {} unless the new system's agent confirms it",
                    pr.version,
                    pr.deadline.map_or_else(String::new, crate::format::time::rfc3339)
                ));
                return Ok(None);
            }
        }
        if let Some(h) = &self.v.config.health_check {
            let env = [
                ("NPCNIX_REMOTE", self.remote().to_owned()),
                ("NPCNIX_VERSION", pr.version.to_string()),
                ("NPCNIX_STATEMENT", pr.statement.to_hex()),
                ("NPCNIX_CONFIGURATION", self.v.config.configuration.clone()),
            ];
            if let Health::Unhealthy(why) = activate::health_check(h, &env) {
                return Ok(probation::roll_back_locked(
                    &self.data,
                    self.remote(),
                    Some(pr.version),
                    self.activator.nix.clone(),
                    now,
                    &format!("health check failed during probation: {why}"),
                    true,
                )?
                .map(|(version, reason)| Outcome::RolledBack { version, reason }));
            }
        }
        if let Some(unit) = &pr.watchdog_unit {
            if let Err(e) = self.system.watchdog.disarm(unit) {
                (self.hooks.warn)(&format!(
                    "{e} (harmless: the watchdog finds the probation confirmed)"
                ));
            }
        }
        probation::save(&self.data, self.remote(), None)?;
        let mut ev = self.journal().event(now, "confirmed");
        ev.version = Some(pr.version);
        ev.statement = Some(pr.statement.to_hex());
        ev.detail = Some(format!(
            "the new system reached the store and verified its head {}s after the switch",
            now.saturating_sub(pr.deadline.unwrap_or(now).saturating_sub(pr.probation_secs))
        ));
        self.warn(self.journal().append(&ev));
        Ok(None)
    }

    /// With `reboot.allow`: reboots into a boot default whose kernel, initrd
    /// or modules differ from the booted system's, inside the window, once
    /// per boot default (a boot that falls back to the old kernel does not
    /// loop).
    fn check_reboot(&self, now: u64) {
        let rb = &self.v.config.reboot;
        if !rb.allow {
            return;
        }
        let booted = self.system.run_dir.join("booted-system");
        let Ok(next) = fs::canonicalize(&self.activator.profile) else {
            return;
        };
        if !booted.exists() || !probation::kernel_changed(&booted, &next) {
            return;
        }
        let minute = ((now % 86_400) / 60) as u32;
        if rb.window.as_ref().is_some_and(|w| !w.contains(minute)) {
            return;
        }
        let target = next.display().to_string();
        let mut s = self.data.load_status();
        if s.rebooted_for.as_deref() == Some(target.as_str()) {
            return;
        }
        s.rebooted_for = Some(target.clone());
        if let Err(e) = self.data.save_status(&s) {
            // Without the guard a failed boot could loop: do not reboot.
            (self.hooks.warn)(&format!("not rebooting: cannot record it: {e}"));
            return;
        }
        let mut ev = self.journal().event(now, "reboot");
        ev.detail = Some(format!(
            "the boot default {target} has another kernel, initrd or kernel modules than the booted system"
        ));
        self.warn(self.journal().append(&ev));
        if let Err(e) = self.system.watchdog.reboot() {
            (self.hooks.warn)(&format!("reboot failed: {e}"));
        }
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

    /// Records a poll's result in the status file (non-durable) and returns
    /// it (the caller takes the backoff from it).
    pub fn record_status(
        &self,
        now: u64,
        result: &Result<Outcome, AgentError>,
        next_poll: Option<u64>,
    ) -> PollStatus {
        let clip = |s: String| journal::clip(&s, journal::DETAIL_MAX_CHARS);
        let mut s = self.data.load_status();
        s.last_check = Some(now);
        s.next_poll = next_poll;
        s.fetcher = Some(self.fetcher.clone());
        match result {
            Ok(o) => {
                s.last_result = Some(clip(o.to_string()));
                s.consecutive_store_errors = 0;
                s.last_refusal = match o {
                    Outcome::Refused(r) => Some(r.check().name().to_owned()),
                    _ => None,
                };
                s.waiting = match o {
                    Outcome::Waiting { version, until } => Some((*version, *until)),
                    _ => None,
                };
                if o.is_failure() {
                    s.consecutive_failures += 1;
                    s.last_error = Some(clip(o.to_string()));
                } else if !matches!(o, Outcome::Busy) {
                    s.consecutive_failures = 0;
                }
            }
            Err(e) => {
                s.consecutive_failures += 1;
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
            (self.hooks.warn)(&format!(
                "could not write {}: {e}",
                self.data.status_path().display()
            ));
        }
        s
    }

    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

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
        assert_eq!(retry_delay(1), 60);
        assert_eq!(retry_delay(2), 120);
        assert_eq!(retry_delay(30), 3600);
    }
}
