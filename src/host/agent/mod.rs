//! The host agent: one poll gathers the host's [`Facts`], asks
//! [`lifecycle::decide`] what to do, runs that [`Step`] (fetch and judge the
//! head, confirm or roll back a probation, walk the chain, download, then
//! install and activate, `apply.rs`), updates the facts and asks again,
//! until a step ends the poll. `npcnix follow` runs polls in a loop with
//! jitter; only a failing store backs off.
//!
//! The effects sit behind traits ([`Activation`], [`Watchdog`], [`Clock`],
//! [`Remote`]), so whole poll sequences, crash points and clock steps run as
//! in-process tests (`tests.rs`); the binary tests drive the same code
//! through the CLI with stand-ins at the NixOS boundary.
//!
//! Invariants (see SECURITY.md, "The host's own state"):
//! * the highest verified version is recorded durably before activation
//!   starts, so a crash or kill at any point never lets a lower version in;
//! * a release that failed its health check is marked bad and never retried
//!   until a newer version appears; a failed activation is retried with
//!   exponential backoff, at most [`MAX_ACTIVATION_ATTEMPTS`] times;
//! * no activation starts while a probation is pending, so a rollback never
//!   lands on a system that was never confirmed;
//! * one poll at a time holds the data dir lock, so two agents (or an agent
//!   and a manual `npcnix activate`) never activate concurrently;
//! * an unchanged remote costs one conditional request and no disk writes
//!   besides the non-durable status file, and its cached bytes are judged
//!   again on every poll (freshness, current keys and policy);
//! * a refusal is never remembered: the next poll fetches and judges again,
//!   and the failure counter grows until a release is accepted.

mod apply;
mod reachability;
mod report;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::format::rollout::Admission;
use crate::host::activate::{Activation, Plan};
use crate::host::clock::{Clock, Moment};
use crate::host::config::Validated;
use crate::host::journal::{Journal, JournalError};
use crate::host::lifecycle::{self, Closed, Facts, Head, Stage, Step, Vouch};
use crate::host::lockout;
use crate::host::pipeline::{self, PipelineError};
use crate::host::probation::{self, Observed, Probation};
use crate::host::state::{DataDir, DataLock, HostState, RemoteState, StateError};
use crate::host::watchdog::Watchdog;
use crate::store::{ReleaseLog, Remote};
use crate::verify::{Cause, VerifiedRelease};

pub use crate::host::outcome::Outcome;
pub use report::{next_delay, MAX_BACKOFF_FACTOR};

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

/// The host: what it runs with, and the effects behind their traits.
pub struct Agent {
    pub v: Validated,
    pub store: Remote,
    pub data: DataDir,
    pub activation: Box<dyn Activation>,
    pub watchdog: Box<dyn Watchdog>,
    pub clock: Box<dyn Clock>,
    /// Holds `current-system` and `booted-system` (`/run`).
    pub run_dir: PathBuf,
    /// Set by SIGTERM/SIGINT: finish the current step, then stop.
    pub stop: Arc<AtomicBool>,
    pub hooks: Hooks,
    /// Where the network side runs, for `status` (e.g. "separate: uid 991").
    pub fetcher: String,
    /// Where the data dir of each remote is recorded, outside any data dir
    /// (`None`: not recorded, a move of the data dir goes unnoticed).
    pub trust_dir: Option<PathBuf>,
    /// True while a poll is on its network side (no lock held, nothing
    /// durable being written): the caller may abandon it on a stop signal.
    fetching: AtomicBool,
    /// Set once the store refused a receipt as unsupported (read-only).
    receipts_unsupported: AtomicBool,
    /// The running system when this agent started (`current-system`).
    started_in: Option<PathBuf>,
    /// Audit events of the current poll, for the event hooks.
    audited: std::sync::Mutex<Vec<crate::host::journal::AuditEvent>>,
    /// Milliseconds the last archive download took (0: none since the
    /// last status write).
    last_fetch_ms: std::sync::atomic::AtomicU64,
    /// Expiry times already warned about (each once per agent run).
    warned_expiry: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

/// The parts an [`Agent`] is built from.
pub struct Parts {
    pub v: Validated,
    pub store: Remote,
    pub data: DataDir,
    pub activation: Box<dyn Activation>,
    pub watchdog: Box<dyn Watchdog>,
    pub clock: Box<dyn Clock>,
    pub run_dir: PathBuf,
    pub stop: Arc<AtomicBool>,
    pub hooks: Hooks,
    pub fetcher: String,
    pub trust_dir: Option<PathBuf>,
}

/// Sets the agent's `fetching` flag for as long as it lives: the network
/// steps, which hold no lock and write nothing durable.
struct OnNetwork<'a>(&'a AtomicBool);

impl<'a> OnNetwork<'a> {
    fn enter(flag: &'a AtomicBool) -> OnNetwork<'a> {
        flag.store(true, Ordering::SeqCst);
        OnNetwork(flag)
    }
}

impl Drop for OnNetwork<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// One poll in progress: the facts [`lifecycle::decide`] reads, and the
/// stage the head has reached.
struct Poll {
    now: Moment,
    state: HostState,
    remote: RemoteState,
    probation: Option<Probation>,
    observed: Option<Observed>,
    head: Head,
    vouch: Vouch,
    /// The head's stage object (the facts only say how far it came).
    stage: Option<StageData>,
    /// What reading the head gave when it did not verify.
    failure: Option<PipelineError>,
    /// Held from the download on: the rest of the poll writes state.
    lock: Option<DataLock>,
    /// The witnessed log head the release was checked against (issue 37),
    /// recorded under the lock before it is installed.
    log_head: Option<crate::verify::witness::TreeHead>,
}

enum StageData {
    Judged(pipeline::Judged),
    Accepted(pipeline::Accepted, Plan),
    Downloaded(pipeline::Downloaded, Plan),
}

impl Agent {
    pub fn new(p: Parts) -> Agent {
        Agent {
            v: p.v,
            store: p.store,
            data: p.data,
            activation: p.activation,
            watchdog: p.watchdog,
            clock: p.clock,
            stop: p.stop,
            hooks: p.hooks,
            fetcher: p.fetcher,
            trust_dir: p.trust_dir,
            fetching: AtomicBool::new(false),
            receipts_unsupported: AtomicBool::new(false),
            warned_expiry: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            last_fetch_ms: std::sync::atomic::AtomicU64::new(0),
            audited: std::sync::Mutex::new(Vec::new()),
            started_in: std::fs::canonicalize(p.run_dir.join("current-system")).ok(),
            run_dir: p.run_dir,
        }
    }

    fn remote(&self) -> &str {
        self.v.remote.as_str()
    }

    fn journal(&self) -> Journal<'_> {
        Journal::new(&self.data, self.remote()).observed(&self.audited)
    }

    fn warn(&self, w: Result<(), JournalError>) {
        if let Err(w) = w {
            (self.hooks.warn)(&w.to_string());
        }
    }

    fn warn_msg(&self, msg: &str) {
        (self.hooks.warn)(msg);
    }

    fn audit_release(&self, event: &str, r: &VerifiedRelease, detail: Option<String>, now: u64) {
        self.warn(self.journal().release(event, r, detail, now));
    }

    /// Whether a poll is on its network side right now (see `fetching`).
    pub fn is_fetching(&self) -> bool {
        self.fetching.load(Ordering::SeqCst)
    }

    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn log(&self) -> ReleaseLog<'_> {
        self.store.log().with_min_rate(
            self.v
                .config
                .remote
                .min_rate_bytes_per_sec
                .unwrap_or(crate::store::transfer::DEFAULT_MIN_RATE_BYTES_PER_SEC),
        )
    }

    /// One poll. The network side (fetch, judge, chain, download) runs
    /// without the data dir lock, so a store that stalls never keeps
    /// `npcnix activate` or another agent out; the lock is taken to judge
    /// the release again against the state as it is then, extract, record
    /// and activate. Every refusal is audited and returned as
    /// [`Outcome::Refused`]; nothing about it is remembered, so the next
    /// poll fetches and judges `latest` again.
    pub fn poll_once(&self) -> Result<Outcome, AgentError> {
        let now = self.clock.now();
        match self.run(now) {
            Err(PipelineError::Refused(r)) => {
                // A refused head is never remembered: the next poll fetches
                // `latest` in full and judges it again.
                self.forget_head();
                self.warn(self.journal().refusal(&r, self.clock.now().wall));
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

    /// The host's policy with this remote's timestamp floor (the newest
    /// timestamp accepted: an older one is a replay).
    fn policy_now(&self) -> Result<crate::verify::Policy, StateError> {
        let mut p = self.v.policy.clone();
        if let Some(f) = &mut p.freshness {
            f.floor = self
                .data
                .load_timestamp(self.remote())?
                .map(|t| (t.version, t.created));
        }
        Ok(p)
    }

    /// Records a newer verified timestamp as the replay floor. Under the
    /// lock if it is free now; otherwise the next poll records it.
    fn record_freshness(&self, release: &crate::verify::VerifiedRelease) {
        let Some(f) = release.freshness() else {
            return;
        };
        let seen = crate::host::state::TimestampSeen {
            version: release.version(),
            created: f.created,
            expires: f.expires,
        };
        let Ok(_lock) = self.data.try_lock() else {
            return;
        };
        let newer = match self.data.load_timestamp(self.remote()) {
            Ok(old) => old.is_none_or(|o| {
                o.version < seen.version || (o.version == seen.version && o.created < seen.created)
            }),
            Err(_) => true,
        };
        if newer {
            if let Err(e) = self.data.save_timestamp(self.remote(), &seen) {
                self.warn_msg(&format!("could not record the freshness timestamp: {e}"));
            }
        }
    }

    fn forget_head(&self) {
        if let Err(e) = self.data.save_head(self.remote(), None) {
            self.warn_msg(&format!("could not drop the cached head: {e}"));
        }
    }

    fn run(&self, now: Moment) -> Result<Outcome, PipelineError> {
        // Read-only without the lock: the state is created (and written)
        // only under it.
        let state = self.data.peek()?;
        let remote = state.remote(self.remote()).cloned().unwrap_or_default();
        let mut poll = Poll {
            now,
            state,
            remote,
            probation: probation::load(&self.data, self.remote())?,
            observed: probation::load_observed(&self.data, self.remote()),
            head: Head::Unread,
            vouch: Vouch::MayNot,
            stage: None,
            failure: None,
            lock: None,
            log_head: None,
        };
        self.reboot_if_due(&poll.now);
        let hold = self
            .v
            .config
            .hold
            .as_ref()
            .map(|h| crate::host::lifecycle::Hold {
                max: h.max_version,
                inspectable: self.v.config.lockout.inspect
                    && self.activation.activator().effective_mode()
                        != crate::host::config::ActivationMode::DryActivate,
                inspected: self
                    .data
                    .load_status()
                    .held_inspected
                    .and_then(|(version, hex)| {
                        Some(crate::verify::Seen {
                            version,
                            statement: crate::format::digest::Digest::from_hex(&hex)?,
                        })
                    }),
            });
        loop {
            let facts = Facts {
                hold,
                remote: &poll.remote,
                probation: poll.probation.as_ref(),
                observed: poll.observed.as_ref(),
                now: &poll.now,
                head: poll.head,
                vouch: poll.vouch,
                stop: self.should_stop(),
            };
            match lifecycle::decide(&facts) {
                Step::End(o) => return Ok(o),
                Step::RollBack => {
                    if let Some(o) = self.roll_back_expired(&mut poll)? {
                        return Ok(o);
                    }
                }
                Step::StartProbation => self.start_probation(&mut poll)?,
                Step::ReadHead => self.read_head(&mut poll)?,
                Step::Confirm => {
                    if let Some(o) = self.confirm(&mut poll)? {
                        return Ok(o);
                    }
                }
                Step::Convict => self.convict(&mut poll)?,
                Step::Fail { note } => {
                    if let Some(n) = note {
                        self.note(&mut poll, n);
                    }
                    return Err(poll.failure.take().unwrap_or_else(|| no_stage("judging")));
                }
                Step::Descend => self.descend(&mut poll)?,
                Step::Download => {
                    if let Some(o) = self.download(&mut poll)? {
                        return Ok(o);
                    }
                }
                Step::Install => {
                    let Some(StageData::Downloaded(d, plan)) = poll.stage.take() else {
                        return Err(no_stage("installing"));
                    };
                    return self.install(&mut poll, d, plan);
                }
            }
        }
    }

    /// Fetches `latest` (conditionally on the cached verified copy) and
    /// judges it.
    fn read_head(&self, poll: &mut Poll) -> Result<(), PipelineError> {
        let _net = OnNetwork::enter(&self.fetching);
        let cached = self.data.load_head(self.remote());
        let head = match pipeline::fetch_head(&self.log(), cached.as_ref()) {
            Ok(h) => h,
            Err(PipelineError::State(e)) => return Err(e.into()),
            Err(e) => {
                // No answer to judge (the store failed, denied access, has
                // no `latest`): unreachable. An answer against the protocol,
                // or one too large, is something the store served: refused.
                poll.head = match &e {
                    PipelineError::Store(s) if s.kind == crate::store::StoreErrorKind::Protocol => {
                        Head::Refused
                    }
                    PipelineError::Store(_) => Head::Unreachable,
                    _ => Head::Refused,
                };
                poll.failure = Some(e);
                self.check_vouch(poll);
                return Ok(());
            }
        };
        let statement = head.unverified_statement_hash();
        let on_probation = poll
            .probation
            .as_ref()
            .filter(|p| Some(p.statement) == statement);
        let rotation = on_probation
            .filter(|p| !p.rotation_keys.is_empty())
            .map(|p| (head.clone(), p.rotation_keys.clone()));
        let legacy = on_probation.is_some_and(|p| p.legacy);
        let probation_head = on_probation.map(|_| head.clone());
        let policy = self.policy_now()?;
        match pipeline::judge(&policy, Some(&poll.remote), head, poll.now.wall) {
            Ok(judged) => {
                self.record_freshness(judged.release());
                if !judged.revalidated() {
                    // Verified bytes only (and dropped again if a later
                    // stage refuses the release).
                    if let Err(e) = self
                        .data
                        .save_head(self.remote(), judged.cache_entry().as_ref())
                    {
                        self.warn_msg(&format!("could not cache the verified head: {e}"));
                    }
                }
                poll.head = Head::Verified {
                    seen: judged.release().seen(),
                    new: judged.verdict.is_new(),
                    revalidated: judged.revalidated(),
                    stage: Stage::Judged,
                };
                poll.stage = Some(StageData::Judged(judged));
            }
            Err(refusal) => {
                // How the refusal bears on the release on probation (see
                // `lifecycle::Head`): the same statement refused at the
                // signatures is a copy someone re-signed or damaged, not
                // the release the inspection verified.
                poll.head = if refusal.cause() == Cause::History {
                    Head::Behind
                } else if matches!(refusal, crate::verify::Refusal::TimestampExpired { .. })
                    && probation_head.is_some_and(|head| {
                        let without = crate::verify::Policy {
                            freshness: None,
                            ..policy.clone()
                        };
                        pipeline::judge(&without, Some(&poll.remote), head, poll.now.wall).is_ok()
                    })
                {
                    // The release on probation verifies and only its
                    // timestamp lapsed (a refresh missed): the new system
                    // reaches the store and accepts what it runs; rolling
                    // back cannot make the signers refresh (D126).
                    Head::Behind
                } else if on_probation.is_none() {
                    Head::Refused
                } else if refusal.is_about_signers()
                    && (legacy
                        || rotation.is_some_and(|(head, keys)| {
                            pipeline::judge(
                                &lockout::with_keys(
                                    &self.v.policy,
                                    &lockout::rotation_trust(&self.v.remote, &keys),
                                ),
                                Some(&poll.remote),
                                head,
                                poll.now.wall,
                            )
                            .is_ok()
                        }))
                {
                    Head::Rotated
                } else if refusal.is_about_signed_content() {
                    Head::RefusesProbation
                } else {
                    Head::Refused
                };
                poll.failure = Some(refusal.into());
            }
        }
        self.check_vouch(poll);
        Ok(())
    }

    /// Walks the chain (`require_chain`), plans the activation and finds
    /// this host's rollout slot.
    fn descend(&self, poll: &mut Poll) -> Result<(), PipelineError> {
        let Some(StageData::Judged(judged)) = poll.stage.take() else {
            return Err(no_stage("descending"));
        };
        let _net = OnNetwork::enter(&self.fetching);
        let accepted = pipeline::descend(
            &self.log(),
            &self.v.policy,
            Some(&poll.remote),
            judged,
            self.v.require_chain,
            poll.now.wall,
        )?;
        // Every release this poll may install, not only a newer one: a
        // release recorded without the check (`npcnix pull` on this data
        // dir, or before the policy was set) is checked before it runs.
        let installing = accepted.new || poll.remote.active != Some(accepted.release.seen());
        if let (true, Some(w)) = (installing, &self.v.witness) {
            let last = self.data.load_log_head(self.remote())?;
            poll.log_head = Some(crate::host::witnessed::check(
                &self.log(),
                w,
                last.as_ref(),
                &accepted.release,
            )?);
        }
        let plan = self
            .activation
            .activator()
            .plan(accepted.release.statement().toplevels.as_ref())?;
        let (slot, closed) = match self.admission(&accepted.release, poll.now.wall)? {
            None => (None, None),
            Some(Admission::At(t)) => (Some(t), None),
            Some(Admission::Gated { stage }) => {
                match crate::format::decision::StageName::new(&stage) {
                    Some(name) => (None, Some(Closed::Gated(name))),
                    // The statement's check refuses such a name; never open.
                    None => {
                        return Err(crate::verify::Refusal::RolloutDecision(format!(
                            "the rollout names an invalid stage {stage:?}"
                        ))
                        .into())
                    }
                }
            }
            Some(Admission::Halted { at }) => (None, Some(Closed::Halted { at })),
        };
        if let Head::Verified { stage, .. } = &mut poll.head {
            *stage = Stage::Accepted { slot, closed };
        }
        poll.stage = Some(StageData::Accepted(accepted, plan));
        Ok(())
    }

    /// Downloads the archive, then takes the lock and judges the release
    /// again against the state as it is now (another process may have
    /// recorded, activated or marked something meanwhile). `Some`: the poll
    /// ends (busy).
    fn download(&self, poll: &mut Poll) -> Result<Option<Outcome>, PipelineError> {
        let Some(StageData::Accepted(accepted, plan)) = poll.stage.take() else {
            return Err(no_stage("downloading"));
        };
        let mut downloaded = {
            let _net = OnNetwork::enter(&self.fetching);
            let started = std::time::Instant::now();
            let silent = crate::progress::silent();
            let d = pipeline::download(
                &self.log(),
                accepted,
                self.extract_options(&*silent),
                &self.data,
            )?;
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_fetch_ms.store(ms.max(1), Ordering::Relaxed);
            d
        };
        // From here on the poll writes durable state: never abandoned.
        let lock = match self.data.try_lock() {
            Ok(l) => l,
            Err(StateError::Locked(_)) => return Ok(Some(Outcome::Busy)),
            Err(e) => return Err(e.into()),
        };
        let state = self.data.load()?;
        let remote = state.remote(self.remote()).cloned().unwrap_or_default();
        if remote.highest != poll.remote.highest {
            // Another process recorded a release meanwhile: what was checked
            // against the old state (the chain walk) is stale. Start over.
            return Ok(Some(Outcome::Busy));
        }
        // The download may have taken long: judge and record with the time
        // it is now, not when the poll started.
        poll.now = self.clock.now();
        pipeline::rejudge(
            &self.policy_now()?,
            Some(&remote),
            &mut downloaded,
            poll.now.wall,
        )?;
        poll.head = Head::Verified {
            seen: downloaded.release.seen(),
            new: downloaded.new,
            revalidated: false,
            stage: Stage::Downloaded,
        };
        // The witnessed head the release was checked against, durably,
        // before anything is installed: later heads must extend it.
        if let Some(head) = poll.log_head {
            let newer = self
                .data
                .load_log_head(self.remote())?
                .is_none_or(|o| o.size < head.size);
            if newer {
                self.data.save_log_head(self.remote(), &head)?;
            }
        }
        poll.state = state;
        poll.remote = remote;
        poll.probation = probation::load(&self.data, self.remote())?;
        poll.observed = probation::load_observed(&self.data, self.remote());
        poll.stage = Some(StageData::Downloaded(downloaded, plan));
        poll.lock = Some(lock);
        Ok(None)
    }

    /// When this host may activate `release` under its signed rollout wave
    /// and the wave's signed promotions and halt (`None`: no wave, the host
    /// ignores waves, or it has no host ID).
    fn admission(
        &self,
        release: &VerifiedRelease,
        now: u64,
    ) -> Result<Option<Admission>, PipelineError> {
        let Some(plan) = release.statement().rollout.as_ref() else {
            return Ok(None);
        };
        if self.v.config.rollout == crate::host::config::RolloutMode::Immediate
            || self.v.host_id.is_empty()
        {
            return Ok(None);
        }
        // Called within `descend`, already on the network.
        crate::host::gates::admission(
            &self.log(),
            &self.v.rollout,
            self.v.policy.max_future_skew_secs,
            release,
            plan,
            &self.v.host_id,
            now,
        )
        .map(Some)
    }
}

/// A step met a stage it does not follow (`decide` and the stages
/// disagree): an error, never a loop.
fn no_stage(step: &str) -> PipelineError {
    PipelineError::io(step.to_owned())(std::io::Error::other(
        "internal error: the release is not at the stage this step needs",
    ))
}
