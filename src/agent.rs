//! The host agent: one poll = fetch, verify, download, extract, record,
//! activate, health-check, and roll back or commit. `npcnix follow` runs
//! polls in a loop with jitter and backoff.
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
//!   besides the non-durable status file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::activate::{self, Activator, Health};
use crate::audit::{self, AuditEvent};
use crate::bundle::BUNDLE_MAX_BYTES;
use crate::config::Validated;
use crate::pull::{self, PullError};
use crate::state::{BadRelease, DataDir, HostState, PollStatus, RemoteState, Retry, StateError};
use crate::store::{ETag, Fetched, Store, StoreErrorKind, LATEST};
use crate::verify::{self, Rejection, Verdict, VerifiedRelease};

/// Activation attempts before a release is marked bad.
pub const MAX_ACTIVATION_ATTEMPTS: u32 = 3;
/// Test-only fault injection: `NPCNIX_TEST_FAULT=<point>` aborts the process
/// (like `kill -9`) at that point, to prove crash safety.
pub const FAULT_ENV: &str = "NPCNIX_TEST_FAULT";

fn fault(point: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == point) {
        eprintln!("npcnix: injected fault at {point}");
        std::process::abort();
    }
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The store said "not modified" (conditional request).
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
    Rejected {
        check: String,
        message: String,
    },
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
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::UpToDate { .. } => "up-to-date",
            Outcome::Paused { .. } => "paused",
            Outcome::Busy => "busy",
            Outcome::Activated { .. } => "activated",
            Outcome::Rejected { .. } => "rejected",
            Outcome::SkippedBad { .. } => "skipped-bad",
            Outcome::Backoff { .. } => "backoff",
            Outcome::ActivationFailed { .. } => "activation-failed",
            Outcome::RolledBack { .. } => "rolled-back",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// A problem the operator should see (counts as a failure for backoff).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Rejected { .. }
                | Outcome::ActivationFailed { .. }
                | Outcome::RolledBack { .. }
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
                write!(f, "paused until {}", crate::fsutil::rfc3339(*until))
            }
            Outcome::Busy => write!(f, "another npcnix process holds the lock"),
            Outcome::Activated { version } => write!(f, "activated version {version}"),
            Outcome::Rejected { check, message } => write!(f, "rejected ({check}): {message}"),
            Outcome::SkippedBad { version } => {
                write!(
                    f,
                    "version {version} is marked bad; waiting for a newer release"
                )
            }
            Outcome::Backoff { version, until } => write!(
                f,
                "version {version} failed to activate; next attempt at {}",
                crate::fsutil::rfc3339(*until)
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl AgentError {
    pub fn is_transient(&self) -> bool {
        matches!(self, AgentError::Pull(p) if p.is_transient())
    }
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

pub struct Agent {
    pub v: Validated,
    pub store: Box<dyn Store>,
    pub data: DataDir,
    pub activator: Activator,
    /// Set by SIGTERM/SIGINT: finish the current step, then stop.
    pub stop: Arc<AtomicBool>,
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

    fn audit(&self, ev: &AuditEvent) {
        if let Err(e) = audit::append(&self.data.audit_path(), ev) {
            eprintln!("npcnix: warning: could not write the audit log: {e}");
        }
    }

    fn audit_release(&self, event: &str, r: &VerifiedRelease, detail: Option<String>, now: u64) {
        if let Err(e) = pull::audit_release(&self.data, event, r, detail, now) {
            eprintln!("npcnix: warning: could not write the audit log: {e}");
        }
    }

    fn rejected(
        &self,
        st: &mut HostState,
        r: Rejection,
        etag: Option<ETag>,
        now: u64,
    ) -> Result<Outcome, AgentError> {
        self.rejected_parts(st, r.check().to_owned(), r.to_string(), etag, now)
    }

    fn rejected_parts(
        &self,
        st: &mut HostState,
        check: String,
        message: String,
        etag: Option<ETag>,
        now: u64,
    ) -> Result<Outcome, AgentError> {
        let mut ev = AuditEvent::new(now, "rejected", self.remote());
        ev.check = Some(check.clone());
        ev.detail = Some(message.clone());
        self.audit(&ev);
        // Remember the ETag so the same refused bundle costs one conditional
        // request from now on - except where time can change the verdict.
        if check != "future-dated" {
            st.remote_mut(self.remote()).etag = etag.map(|e| e.0);
            self.data.save(st)?;
        }
        Ok(Outcome::Rejected { check, message })
    }

    /// One poll. Holds the data dir lock throughout.
    pub fn poll_once(&self, now: u64) -> Result<Outcome, AgentError> {
        let _lock = match self.data.try_lock() {
            Ok(l) => l,
            Err(StateError::Locked(_)) => return Ok(Outcome::Busy),
            Err(e) => return Err(e.into()),
        };
        let mut st = self.data.load()?;
        let r: RemoteState = st.remote(self.remote()).cloned().unwrap_or_default();
        if r.is_paused(now) {
            return Ok(Outcome::Paused {
                until: r.paused_until.unwrap_or(u64::MAX),
            });
        }
        let mut policy = self.v.policy.clone();
        policy.min_version = policy.min_version.max(r.floor.unwrap_or(0));

        // Something verified but not yet active (a crash, or a failed
        // activation awaiting retry) needs the bundle even if unchanged.
        let pending = r
            .highest
            .is_some_and(|h| Some(h) != r.active && !r.is_bad(&h));
        let etag = if pending {
            None
        } else {
            r.etag.clone().map(ETag)
        };
        let fetched = match self
            .store
            .get(LATEST, etag.as_ref(), BUNDLE_MAX_BYTES as u64)
        {
            Ok(f) => f,
            Err(e) if e.kind == StoreErrorKind::TooLarge => {
                return self.rejected_parts(
                    &mut st,
                    "bundle-size".into(),
                    format!("bundle is larger than the {BUNDLE_MAX_BYTES}-byte limit"),
                    None,
                    now,
                )
            }
            Err(e) => return Err(AgentError::Pull(e.into())),
        };
        let (bytes, new_etag) = match fetched {
            Fetched::NotModified => return Ok(Outcome::Unchanged),
            Fetched::Object { bytes, etag } => (bytes, etag),
        };
        let verdict = match verify::verify_release(&policy, r.highest, &bytes, now) {
            Ok(v) => v,
            Err(rej) => return self.rejected(&mut st, rej, new_etag, now),
        };
        let release = verdict.release().clone();
        let seen = release.seen();
        let version = seen.version;
        let remember_etag = |st: &mut HostState| {
            st.remote_mut(self.remote()).etag = new_etag.clone().map(|e| e.0);
        };
        if r.is_bad(&seen) {
            if r.etag != new_etag.clone().map(|e| e.0) {
                remember_etag(&mut st);
                self.data.save(&st)?;
            }
            return Ok(Outcome::SkippedBad { version });
        }
        if matches!(verdict, Verdict::Current(_)) && r.active == Some(seen) {
            if r.etag != new_etag.clone().map(|e| e.0) {
                remember_etag(&mut st);
                self.data.save(&st)?;
            }
            return Ok(Outcome::UpToDate { version });
        }
        if let Some(retry) = &r.retry {
            if retry.version == version && now < retry.next_at {
                return Ok(Outcome::Backoff {
                    version,
                    until: retry.next_at,
                });
            }
        }

        if let (true, Some(seen), Verdict::New(_)) = (self.v.require_chain, r.highest, &verdict) {
            match pull::verify_descent(self.store.as_ref(), &policy, seen, &release, now) {
                Ok(()) => {}
                Err(PullError::Rejected { check, message }) => {
                    return self.rejected_parts(&mut st, check, message, new_etag, now)
                }
                Err(e) => return Err(e.into()),
            }
        }
        let plan = match self.activator.plan(release.statement.toplevels.as_ref()) {
            Ok(p) => p,
            Err(msg) => {
                return self.rejected_parts(&mut st, "toplevel-missing".into(), msg, new_etag, now)
            }
        };
        if self.should_stop() {
            return Ok(Outcome::Interrupted);
        }
        // Download, check and extract into the private temp dir.
        let (tree, stats) = match pull::fetch_and_extract(
            self.store.as_ref(),
            &release,
            &self.v.limits,
            &self.data,
        ) {
            Ok(t) => t,
            Err(PullError::Rejected { check, message }) => {
                return self.rejected_parts(&mut st, check, message, new_etag, now)
            }
            Err(e) => return Err(e.into()),
        };
        let mut ps = self.data.load_status();
        ps.confinement = stats.confinement.clone();
        let _ = self.data.save_status(&ps);
        // Rollback protection is durable before anything is activated.
        if matches!(verdict, Verdict::New(_)) {
            pull::record_verified(&self.data, &mut st, &release, now)?;
            self.audit_release(
                "verified",
                &release,
                Some(format!(
                    "{} files, {} bytes; {}",
                    stats.files,
                    stats.bytes,
                    stats.confinement.as_deref().unwrap_or("")
                )),
                now,
            );
        }
        fault("after-record");
        let dir = self.release_dir(&release);
        self.install_tree(tree, &dir)?;
        fault("before-activate");
        if self.should_stop() {
            // Recorded but not activated: the next start picks it up.
            return Ok(Outcome::Interrupted);
        }
        self.activate(&mut st, &release, &plan, &dir, new_etag, now)
    }

    fn release_dir(&self, r: &VerifiedRelease) -> PathBuf {
        self.data.root.join("releases").join(format!(
            "{:020}-{}",
            r.statement.version,
            &r.statement_hash.to_hex()[..16]
        ))
    }

    /// Moves an extracted tree to its place under `<data>/releases/`.
    fn install_tree(&self, tree: crate::fsutil::TempDir, dir: &Path) -> Result<(), AgentError> {
        let parent = self.data.root.join("releases");
        crate::fsutil::ensure_private_dir(&parent)
            .map_err(io_ctx(format!("creating {}", parent.display())))?;
        if fs::symlink_metadata(dir).is_ok() {
            // Left by an earlier attempt; it is ours, replace it.
            fs::remove_dir_all(dir).map_err(io_ctx(format!("removing {}", dir.display())))?;
        }
        pull::move_into_place(tree, dir)?;
        Ok(())
    }

    fn activation_env(&self, r: &VerifiedRelease, dir: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("NPCNIX_REMOTE", self.remote().to_owned()),
            ("NPCNIX_VERSION", r.statement.version.to_string()),
            ("NPCNIX_STATEMENT", r.statement_hash.to_hex()),
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
        etag: Option<ETag>,
        now: u64,
    ) -> Result<Outcome, AgentError> {
        let version = release.statement.version;
        let seen = release.seen();
        let env = self.activation_env(release, dir);
        self.audit_release(
            "activating",
            release,
            Some(match plan {
                activate::Plan::Flake => format!(
                    "{} {}",
                    self.activator.program,
                    self.activator.effective_mode().as_arg()
                ),
                activate::Plan::Toplevel(p) => format!(
                    "{p}/bin/switch-to-configuration {}",
                    self.activator.toplevel_action.as_arg()
                ),
            }),
            now,
        );
        let failure = self.activator.apply(plan, dir, &env).err();
        fault("after-activate");
        if let Some(message) = failure {
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
                    statement: seen.statement,
                    reason: format!("activation failed {attempts} times: {message}"),
                    at: now,
                });
                rs.etag = etag.map(|e| e.0);
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
            return Ok(Outcome::ActivationFailed {
                version,
                message,
                marked_bad,
            });
        }

        if let (Some(h), true) = (
            &self.v.config.health_check,
            self.activator.effective_mode().changes_running_system(),
        ) {
            if let Health::Unhealthy(reason) = activate::health_check(h, &env) {
                self.audit_release("health-check-failed", release, Some(reason.clone()), now);
                let rb_note = match self.activator.roll_back(plan, &env) {
                    Ok(()) => "rolled back to the previous generation".to_owned(),
                    Err(e) => format!("ROLLBACK FAILED: {e}"),
                };
                let rs = st.remote_mut(self.remote());
                rs.retry = None;
                rs.bad.push(BadRelease {
                    version,
                    statement: seen.statement,
                    reason: format!("health check failed: {reason}"),
                    at: now,
                });
                rs.etag = etag.map(|e| e.0);
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

        let rs = st.remote_mut(self.remote());
        rs.active = Some(seen);
        rs.retry = None;
        rs.etag = etag.map(|e| e.0);
        self.data.save(st)?;
        self.audit_release(
            "activated",
            release,
            Some(self.activator.effective_mode().as_arg().to_owned()),
            now,
        );
        self.prune_release_dirs(dir);
        Ok(Outcome::Activated { version })
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

    /// Records a poll's result in the status file (non-durable).
    pub fn record_status(
        &self,
        now: u64,
        result: &Result<Outcome, AgentError>,
        next_poll: Option<u64>,
    ) {
        let mut s = self.data.load_status();
        s.last_check = Some(now);
        s.next_poll = next_poll;
        match result {
            Ok(o) => {
                s.last_result = Some(o.to_string());
                if o.is_failure() {
                    s.consecutive_failures += 1;
                    s.last_error = Some(o.to_string());
                } else if !matches!(o, Outcome::Busy) {
                    s.consecutive_failures = 0;
                }
            }
            Err(e) => {
                s.consecutive_failures += 1;
                s.last_result = Some("error".into());
                s.last_error = Some(format!("{e:#}"));
            }
        }
        if let Err(e) = self.data.save_status(&s) {
            eprintln!(
                "npcnix: warning: could not write {}: {e}",
                self.data.status_path().display()
            );
        }
    }

    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Delay before the next poll: the interval plus random jitter, or an
/// exponential backoff after consecutive failures (capped at 1 hour, never
/// below the interval).
pub fn next_delay(interval: u64, jitter: u64, failures: u32, random: u64) -> u64 {
    let base = if failures == 0 {
        interval
    } else {
        interval
            .saturating_mul(1u64 << failures.min(12))
            .min(interval.max(3600))
    };
    base + if jitter == 0 {
        0
    } else {
        random % (jitter + 1)
    }
}

/// Status summary for `npcnix status`.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub remote: String,
    pub url: String,
    pub configuration: String,
    pub activation_mode: String,
    pub active_version: Option<u64>,
    pub active_statement: Option<String>,
    pub highest_verified_version: Option<u64>,
    pub last_check: Option<u64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub next_poll: Option<u64>,
    pub extraction_confinement: Option<String>,
    pub paused_until: Option<u64>,
    pub pending_retry: Option<Retry>,
    pub bad_releases: Vec<BadRelease>,
}

pub fn status_report(
    v: &Validated,
    state: &HostState,
    poll: &PollStatus,
    now: u64,
) -> StatusReport {
    let r = state.remote(v.remote.as_str()).cloned().unwrap_or_default();
    StatusReport {
        remote: v.remote.to_string(),
        url: v.config.remote.url.clone(),
        configuration: v.config.configuration.clone(),
        activation_mode: v.config.activation.mode.as_arg().to_owned(),
        active_version: r.active.map(|s| s.version),
        active_statement: r.active.map(|s| s.statement.to_hex()),
        highest_verified_version: r.highest.map(|s| s.version),
        last_check: poll.last_check,
        last_result: poll.last_result.clone(),
        last_error: poll.last_error.clone(),
        consecutive_failures: poll.consecutive_failures,
        next_poll: poll.next_poll,
        extraction_confinement: poll.confinement.clone(),
        paused_until: r.paused_until.filter(|t| *t > now),
        pending_retry: r.retry.clone(),
        bad_releases: r.bad.clone(),
    }
}

/// Prometheus textfile metrics (node_exporter textfile collector).
pub fn metrics_text(rep: &StatusReport) -> String {
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        m.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{remote=\"{}\"}} {value}\n",
            rep.remote
        ));
    };
    gauge(
        "npcnix_active_version",
        "Version currently activated.",
        rep.active_version.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_highest_verified_version",
        "Highest release version verified (rollback floor).",
        rep.highest_verified_version.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_last_check_timestamp_seconds",
        "Time of the last poll.",
        rep.last_check.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_consecutive_failures",
        "Polls in a row that failed or were rejected.",
        rep.consecutive_failures.to_string(),
    );
    gauge(
        "npcnix_paused",
        "1 if updates are paused.",
        u8::from(rep.paused_until.is_some()).to_string(),
    );
    gauge(
        "npcnix_bad_releases",
        "Releases marked bad.",
        rep.bad_releases.len().to_string(),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(next_delay(300, 0, 0, 0), 300);
        assert!(next_delay(300, 0, 1, 0) >= 300);
        assert_eq!(next_delay(300, 0, 20, 0), 3600);
        assert_eq!(next_delay(1, 0, 3, 0), 8);
        assert!(next_delay(300, 60, 0, 12345) <= 360);
    }

    #[test]
    fn activation_retry_delay_is_exponential_and_capped() {
        assert_eq!(retry_delay(1), 60);
        assert_eq!(retry_delay(2), 120);
        assert_eq!(retry_delay(30), 3600);
    }
}
