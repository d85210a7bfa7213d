//! Undoing a release on probation ([`roll_back_locked`]), and the verdict
//! the release gets (docs/lockout.md, "No confirmation").

use std::fs;

use super::{load, load_observed, retry_delay, save, save_observed};
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
    let Some(mut pr) = load(data, remote)? else {
        return Ok(None);
    };
    if only_version.is_some_and(|v| v != pr.version) || (*why == Why::Deadline && !pr.expired(now))
    {
        return Ok(None);
    }
    let journal = Journal::new(data, remote);
    let seen = pr.seen();
    let audit = |event: &str, detail: &str| {
        let mut ev = journal.event(now.wall, event);
        ev.version = Some(seen.version);
        ev.statement = Some(seen.statement.to_hex());
        ev.detail = Some(detail.to_owned());
        journal.append(&ev).err().map(|e| e.to_string())
    };
    let restore = pr.rollback.restore.clone();
    // Stopped between arming and switching: the release never ran, and
    // rolling back now would step one generation *behind* the running
    // system. End the probation without a verdict; the release is applied
    // again (a rollback asked for by hand still marks it bad).
    if let (Some(r), Why::Deadline) = (&restore, why) {
        if r.holds() {
            let detail = format!(
                "version {} never ran: {} is still {}, the system from before it; the probation ended without a verdict and the release is applied again",
                pr.version,
                r.link.display(),
                r.target.display()
            );
            let mut st = data.load()?;
            let rs = st.remote_mut(remote);
            if rs.active == Some(pr.seen()) {
                rs.active = pr.previous_active;
                data.save(&st)?;
            }
            save(data, remote, None)?;
            save_observed(data, remote, None)?;
            return Ok(Some(RolledBack {
                version: pr.version,
                audit_failed: audit("probation-ended", &detail),
                detail,
                verdict: Verdict::NotSwitched,
            }));
        }
    }
    let env = [
        ("NPCNIX_REMOTE", remote.to_owned()),
        ("NPCNIX_VERSION", pr.version.to_string()),
        ("NPCNIX_STATEMENT", pr.statement.to_hex()),
    ];
    let (note, undone) = match &restore {
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
            checked(activation.restore(&r.target, "test", &env), r)
        }
        Some(r) => checked(activation.undo(&pr.rollback, &env), r),
        None => match activation.undo(&pr.rollback, &env) {
            Ok(()) => ("rolled back to the previous generation".to_owned(), true),
            Err(e) => (format!("ROLLBACK FAILED: {e}"), false),
        },
    };
    let observed = load_observed(data, remote).filter(|o| o.seen() == pr.seen());
    let reason = match why {
        Why::Deadline => match &observed {
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
    };
    if !undone {
        // The system is not back: keep the probation (nothing else is
        // applied meanwhile) and try again after another period.
        pr.start(now);
        if pr.watchdog_unit.is_some() {
            let target = crate::host::watchdog::Target {
                data: &data.root,
                remote,
                version: pr.version,
                replaces: pr.watchdog_unit.as_deref(),
            };
            if let Ok(unit) = watchdog.arm(&target, pr.probation_secs) {
                pr.watchdog_unit = unit;
            }
        }
        save(data, remote, Some(&pr))?;
        let next_attempt = pr.deadline.unwrap_or(now.wall);
        let detail = format!(
            "{reason}; {note}; the probation stays and the rollback is tried again at {}",
            crate::format::time::rfc3339(next_attempt)
        );
        return Ok(Some(RolledBack {
            version: pr.version,
            audit_failed: audit("rolled-back", &detail),
            detail,
            verdict: Verdict::Failed { next_attempt },
        }));
    }
    let mut st = data.load()?;
    let rs = st.remote_mut(remote);
    let attempts = rs
        .retry
        .as_ref()
        .filter(|r| r.version == pr.version)
        .map_or(0, |r| r.attempts)
        + 1;
    let verdict = match (why, &observed) {
        (Why::SwitchFailed(_), _) => Verdict::Undone,
        (Why::Deadline, Some(o)) if o.store_at_fault() && attempts <= MAX_STORE_RETRIES => {
            Verdict::Retry {
                at: now.wall.saturating_add(retry_delay(attempts)),
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
            if !rs.is_bad(&pr.seen()) {
                rs.bad.push(BadRelease {
                    version: pr.version,
                    statement: pr.statement,
                    reason: reason.clone(),
                    at: now.wall,
                });
            }
            rs.retry = None;
        }
        _ => {}
    }
    if rs.active == Some(pr.seen()) {
        rs.active = pr.previous_active;
    }
    data.save(&st)?;
    save(data, remote, None)?;
    if !matches!(verdict, Verdict::Retry { .. }) {
        save_observed(data, remote, None)?;
    }
    let detail = match (verdict, &observed) {
        (Verdict::Retry { at }, Some(o)) if !o.convictable() => format!(
            "{reason}; {note}; the store did not serve what the new system could verify, so the release is retried from {} (attempt {attempts} of {MAX_STORE_RETRIES})",
            crate::format::time::rfc3339(at)
        ),
        (Verdict::Retry { at }, _) => format!(
            "{reason}; {note}; retried from {} (attempt {attempts} of {MAX_STORE_RETRIES}), unless this system reaches and verifies the store before then (then the new system could not, and the release is marked bad)",
            crate::format::time::rfc3339(at)
        ),
        (Verdict::Bad, Some(o)) if o.store_at_fault() => format!(
            "{reason}; {note}; marked bad after {MAX_STORE_RETRIES} retries"
        ),
        _ => format!("{reason}; {note}"),
    };
    Ok(Some(RolledBack {
        version: pr.version,
        audit_failed: audit("rolled-back", &detail),
        detail,
        verdict,
    }))
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
