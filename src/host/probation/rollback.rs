//! Undoing a release on probation ([`roll_back_locked`]), and the verdict
//! the release gets (docs/lockout.md, "No confirmation").

use std::fs;

use super::{load, load_observed, retry_delay, save, save_observed, Probation};
use crate::host::activate::{Activation, ActivationError, RestorePoint};
use crate::host::clock::Moment;
use crate::host::config::ActivationMode;
use crate::host::journal::Journal;
use crate::host::state::{BadRelease, DataDir, Retry, StateError};
use crate::host::watchdog::Watchdog;

/// Most times a release is retried after rollbacks the store caused (the
/// new system reached nothing it could verify); the next such rollback
/// marks it bad. Bounds a store (or a proxy on the new system's path) that
/// serves garbage through every probation window.
pub const MAX_STORE_RETRIES: u32 = 5;

/// The longest a retry waits ([`retry_delay`]'s cap): a `next_at` further
/// ahead than this is a wall-clock step back, and counts as due.
pub const MAX_RETRY_DELAY: u64 = 3600;

/// Why a release on probation is rolled back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The deadline passed unconfirmed (the watchdog, or the agent).
    Deadline,
    /// An operator gave up on it (`npcnix probation expire --now`).
    ByHand,
    /// The health check failed right after the switch.
    Unhealthy(String),
    /// The health check failed when the new system's agent confirmed.
    UnhealthyOnProbation(String),
    /// The new system cannot apply its next release (the probe failed).
    CannotActivate(String),
    /// The switch failed after changing the system: undone, and the caller
    /// records the failed activation (retried with backoff).
    SwitchFailed(String),
}

/// What became of the release after the rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Marked bad: never applied again.
    Bad,
    /// Retried from `at` (the new system reached nothing it could verify).
    Retry { at: u64 },
    /// No verdict: the switch failed and was undone (the caller records an
    /// activation failure).
    Undone,
    /// The release never ran (the agent stopped between arming and
    /// switching): the probation ended, the release is applied again.
    NotSwitched,
    /// The rollback itself failed: the probation stays, and the rollback is
    /// tried again at `next_attempt` (no release is applied meanwhile).
    Failed { next_attempt: u64 },
}

/// What a rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolledBack {
    pub version: u64,
    /// What happened, in the audit log's words.
    pub detail: String,
    pub verdict: Verdict,
    /// The audit log could not be written (a warning to show).
    pub audit_failed: Option<String>,
}

/// Where a rollback runs: the data dir, the remote and its effects.
struct Ctx<'a> {
    data: &'a DataDir,
    remote: &'a str,
    activation: &'a dyn Activation,
    watchdog: &'a dyn Watchdog,
    now: &'a Moment,
}

impl Ctx<'_> {
    /// Audits `event` about `pr`; `Some`: the audit log could not be
    /// written (a warning to show).
    fn audit(&self, pr: &Probation, event: &str, detail: &str) -> Option<String> {
        let journal = Journal::new(self.data, self.remote);
        let mut ev = journal.event(self.now.wall, event);
        ev.version = Some(pr.version);
        ev.statement = Some(pr.statement.to_hex());
        ev.detail = Some(detail.to_owned());
        journal.append(&ev).err().map(|e| e.to_string())
    }
}

/// Undoes the release on probation for `remote` if its deadline has passed
/// (or at once, for every [`Why`] but the deadline): rolls the system back
/// as recorded when it was armed, checks it arrived, makes the previous
/// release the active one again, clears the record and audits it; the
/// release gets its [`Verdict`] (docs/lockout.md, "No confirmation"). A
/// rollback that fails keeps the record, restarts its deadline and re-arms
/// the `watchdog`, so it is tried again. The caller holds the data dir
/// lock. `None`: nothing to do (confirmed meanwhile, another version, not
/// yet expired).
pub fn roll_back_locked(
    data: &DataDir,
    remote: &str,
    only_version: Option<u64>,
    activation: &dyn Activation,
    watchdog: &dyn Watchdog,
    now: &Moment,
    why: &Why,
) -> Result<Option<RolledBack>, StateError> {
    let Some(pr) = load(data, remote)? else {
        return Ok(None);
    };
    if only_version.is_some_and(|v| v != pr.version) || (*why == Why::Deadline && !pr.expired(now))
    {
        return Ok(None);
    }
    let cx = Ctx {
        data,
        remote,
        activation,
        watchdog,
        now,
    };
    // Stopped between arming and switching: the release never ran, and
    // rolling back now would step one generation *behind* the running
    // system. End the probation without a verdict; the release is applied
    // again (a rollback asked for by hand still marks it bad).
    if *why == Why::Deadline && pr.rollback.restore.as_ref().is_some_and(|r| r.holds()) {
        return never_switched(&cx, &pr).map(Some);
    }
    let (note, undone) = undo(&cx, &pr);
    let observed = load_observed(data, remote).filter(|o| o.seen() == pr.seen());
    let reason = reason(why, &pr, observed.as_ref());
    if !undone {
        return try_again_later(&cx, pr, &reason, &note).map(Some);
    }
    settle(&cx, &pr, why, observed.as_ref(), &reason, &note).map(Some)
}

/// The release never ran: end its probation without a verdict.
fn never_switched(cx: &Ctx<'_>, pr: &Probation) -> Result<RolledBack, StateError> {
    let (link, target) = pr
        .rollback
        .restore
        .as_ref()
        .map(|r| (r.link.display().to_string(), r.target.display().to_string()))
        .unwrap_or_default();
    let detail = format!(
        "version {} never ran: {link} is still {target}, the system from before it; the probation ended without a verdict and the release is applied again",
        pr.version
    );
    let mut st = cx.data.load()?;
    let rs = st.remote_mut(cx.remote);
    if rs.active == Some(pr.seen()) {
        rs.active = pr.previous_active;
        cx.data.save(&st)?;
    }
    save(cx.data, cx.remote, None)?;
    save_observed(cx.data, cx.remote, None)?;
    Ok(RolledBack {
        version: pr.version,
        audit_failed: cx.audit(pr, "probation-ended", &detail),
        detail,
        verdict: Verdict::NotSwitched,
    })
}

/// Runs the rollback as recorded; returns what it did, in the audit log's
/// words, and whether the system is back.
fn undo(cx: &Ctx<'_>, pr: &Probation) -> (String, bool) {
    let env = [
        ("NPCNIX_REMOTE", cx.remote.to_owned()),
        ("NPCNIX_VERSION", pr.version.to_string()),
        ("NPCNIX_STATEMENT", pr.statement.to_hex()),
    ];
    match &pr.rollback.restore {
        Some(r) if r.holds() => (
            format!(
                "nothing to undo: {} is still {}, the system from before the release",
                r.link.display(),
                r.target.display()
            ),
            true,
        ),
        // `nixos-rebuild test --rollback` activates the generation before
        // the profile's current one, one older than what ran before a
        // `test` release (which adds no generation): go back to exactly it.
        Some(r) if pr.rollback.mode == ActivationMode::Test => {
            checked(cx.activation.restore(&r.target, "test", &env), r)
        }
        Some(r) => checked(cx.activation.undo(&pr.rollback, &env), r),
        None => match cx.activation.undo(&pr.rollback, &env) {
            Ok(()) => ("rolled back to the previous generation".to_owned(), true),
            Err(e) => (format!("ROLLBACK FAILED: {e}"), false),
        },
    }
}

/// Why the release is undone, in the audit log's and the bad mark's words.
fn reason(why: &Why, pr: &Probation, observed: Option<&super::Observed>) -> String {
    match why {
        Why::Deadline => match observed {
            Some(o) if o.refused_own > 0 => format!(
                "unconfirmed: the new system refuses the release it runs ({} poll(s))",
                o.refused_own
            ),
            Some(o) if o.store_at_fault() => format!(
                "unconfirmed: in {} poll(s) before the deadline the new system reached nothing it could verify ({} without an answer, {} refused)",
                o.unreachable + o.refused,
                o.unreachable,
                o.refused
            ),
            _ => format!(
                "unconfirmed: no successful poll within {}s of the switch",
                pr.probation_secs
            ),
        },
        Why::ByHand => "unconfirmed: rolled back by hand (`npcnix probation expire --now`)".into(),
        Why::Unhealthy(w) => format!("health check failed: {w}"),
        Why::UnhealthyOnProbation(w) => {
            format!("unconfirmed: health check failed during probation: {w}")
        }
        Why::CannotActivate(w) => {
            format!("unconfirmed: the new system could not apply its next release: {w}")
        }
        Why::SwitchFailed(w) => format!("the switch failed after changing the system: {w}"),
    }
}

/// The system is not back: keep the probation (nothing else is applied
/// meanwhile) and try again after another period, with the watchdog
/// re-armed.
fn try_again_later(
    cx: &Ctx<'_>,
    mut pr: Probation,
    reason: &str,
    note: &str,
) -> Result<RolledBack, StateError> {
    pr.start(cx.now);
    if pr.watchdog_unit.is_some() {
        let target = crate::host::watchdog::Target {
            data: &cx.data.root,
            remote: cx.remote,
            version: pr.version,
            replaces: pr.watchdog_unit.as_deref(),
        };
        if let Ok(unit) = cx.watchdog.arm(&target, pr.probation_secs) {
            pr.watchdog_unit = unit;
        }
    }
    save(cx.data, cx.remote, Some(&pr))?;
    let next_attempt = pr.deadline.unwrap_or(cx.now.wall);
    let detail = format!(
        "{reason}; {note}; the probation stays and the rollback is tried again at {}",
        crate::format::time::rfc3339(next_attempt)
    );
    Ok(RolledBack {
        version: pr.version,
        audit_failed: cx.audit(&pr, "rolled-back", &detail),
        detail,
        verdict: Verdict::Failed { next_attempt },
    })
}

/// The system is back: the release gets its verdict, the previous release
/// is the active one again, the record is cleared.
fn settle(
    cx: &Ctx<'_>,
    pr: &Probation,
    why: &Why,
    observed: Option<&super::Observed>,
    reason: &str,
    note: &str,
) -> Result<RolledBack, StateError> {
    let mut st = cx.data.load()?;
    let rs = st.remote_mut(cx.remote);
    let attempts = rs
        .retry
        .as_ref()
        .filter(|r| r.version == pr.version)
        .map_or(0, |r| r.attempts)
        + 1;
    let verdict = match (why, observed) {
        (Why::SwitchFailed(_), _) => Verdict::Undone,
        (Why::Deadline, Some(o)) if o.store_at_fault() && attempts <= MAX_STORE_RETRIES => {
            Verdict::Retry {
                at: cx.now.wall.saturating_add(retry_delay(attempts)),
            }
        }
        _ => Verdict::Bad,
    };
    match verdict {
        Verdict::Retry { at } => {
            rs.retry = Some(Retry {
                version: pr.version,
                attempts,
                next_at: at,
            })
        }
        Verdict::Bad => {
            rs.mark_bad(BadRelease {
                version: pr.version,
                statement: pr.statement,
                reason: reason.to_owned(),
                at: cx.now.wall,
            });
            rs.retry = None;
        }
        _ => {}
    }
    if rs.active == Some(pr.seen()) {
        rs.active = pr.previous_active;
    }
    cx.data.save(&st)?;
    save(cx.data, cx.remote, None)?;
    if !matches!(verdict, Verdict::Retry { .. }) {
        save_observed(cx.data, cx.remote, None)?;
    }
    let detail = match (verdict, observed) {
        (Verdict::Retry { at }, Some(o)) if !o.convictable() => format!(
            "{reason}; {note}; the store did not serve what the new system could verify, so the release is retried from {} (attempt {attempts} of {MAX_STORE_RETRIES})",
            crate::format::time::rfc3339(at)
        ),
        (Verdict::Retry { at }, _) => format!(
            "{reason}; {note}; retried from {} (attempt {attempts} of {MAX_STORE_RETRIES}), unless this system reaches and verifies the store before then (then the new system could not, and the release is marked bad)",
            crate::format::time::rfc3339(at)
        ),
        (Verdict::Bad, Some(o)) if o.store_at_fault() => {
            format!("{reason}; {note}; marked bad after {MAX_STORE_RETRIES} retries")
        }
        _ => format!("{reason}; {note}"),
    };
    Ok(RolledBack {
        version: pr.version,
        audit_failed: cx.audit(pr, "rolled-back", &detail),
        detail,
        verdict,
    })
}

/// What a rollback towards `r` achieved, in the audit log's words, and
/// whether the system is back.
fn checked(res: Result<(), ActivationError>, r: &RestorePoint) -> (String, bool) {
    match res {
        Err(e) => (format!("ROLLBACK FAILED: {e}"), false),
        Ok(()) if r.holds() => (format!("rolled back to {}", r.target.display()), true),
        Ok(()) => (
            format!(
                "ROLLBACK INCOMPLETE: {} is {}, not {} as before the release",
                r.link.display(),
                fs::canonicalize(&r.link)
                    .map_or_else(|e| format!("unreadable ({e})"), |t| t.display().to_string()),
                r.target.display()
            ),
            false,
        ),
    }
}
