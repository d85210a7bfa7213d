//! Lockout protection, part two: a switched host is on probation until its
//! new agent confirms (see `docs/lockout.md`).
//!
//! Before switching, the agent records a [`Probation`] (durably, in
//! `<data>/probation/<remote>.json`, a file of its own so that an older
//! npcnix reading `state.json` after a rollback is not confused) and arms a
//! watchdog that lives outside the service being replaced
//! ([`crate::host::watchdog`]). The new system's agent confirms when it
//! accepts the store's head (`host::lifecycle` says what counts); whoever
//! finds the deadline passed without confirmation (the watchdog, or the
//! agent at its next start after a reboot) rolls back with
//! [`roll_back_locked`].
//!
//! Two files beside the record keep what the round-2 record format has no
//! field for, so the record stays readable by every npcnix that may run the
//! watchdog or the agent after a rollback or a downgrade (they refuse
//! unknown fields):
//! * `<remote>.armed.json` ([`Armed`]), written with the record by whoever
//!   arms a watchdog: the deadline on the boot clock and a key rotation's
//!   previous keys. A record without it was armed by an older npcnix.
//! * `<remote>.observed.json` ([`Observed`]), written by the new system's
//!   agent while it cannot confirm: what it saw instead of a verifiable
//!   head. It decides what a rollback at the deadline means: a new system
//!   that reached nothing it could verify is retried with backoff rather
//!   than marked bad for ever (D103).
//!
//! All three are read tolerantly (unknown fields are ignored), so a later
//! npcnix can add to them without stranding this one.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::format::statement::Digest;
use crate::fsutil;
use crate::host::activate::{Activation, ActivationError, RestorePoint, RollbackPlan};
use crate::host::clock::{BootTime, Deadline, Moment};
use crate::host::config::ActivationMode;
use crate::host::journal::Journal;
use crate::host::state::{BadRelease, DataDir, Retry, StateError};
use crate::host::watchdog::Watchdog;
use crate::verify::Seen;

pub const PROBATION_FORMAT: &str = "npcnix-probation/v1";
const PROBATION_MAX_BYTES: u64 = 64 * 1024;

/// Exponential backoff for retrying a release: 1, 2, 4, ... minutes,
/// capped at an hour.
pub fn retry_delay(attempts: u32) -> u64 {
    (60u64 << attempts.saturating_sub(1).min(6)).min(3600)
}

/// A key the system before a release trusted, kept when the release itself
/// hands the host to other keys (a key rotation, docs/lockout.md): the new
/// system's agent accepts exactly that release with it, nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationKey {
    /// The `RW...` line of the key's `.pub` file.
    pub public_key: String,
    #[serde(default)]
    pub not_after: Option<u64>,
}

/// A release applied but not yet confirmed: the record (`<remote>.json`,
/// the round-2 format) with what [`Armed`] adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probation {
    pub format: String,
    pub remote: String,
    pub version: u64,
    pub statement: Digest,
    pub armed_at: u64,
    /// When an unconfirmed release is rolled back (wall clock: shown, and
    /// judged after a reboot). `None` while a `boot` release waits for the
    /// reboot that starts it.
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
    /// The same deadline on the boot clock, judged within the boot it was
    /// set in (a clock step does not move it). From [`Armed`].
    #[serde(skip)]
    pub deadline_boot: Option<BootTime>,
    /// A key rotation: the keys of the system before, which signed this
    /// release and which the new system no longer trusts. From [`Armed`].
    #[serde(skip)]
    pub rotation_keys: Vec<RotationKey>,
    /// Armed by an npcnix that kept no [`Armed`] file (before D102): its
    /// confirmation follows the rule of that time for refusals about the
    /// signers of the release itself.
    #[serde(skip)]
    pub legacy: bool,
}

/// What the record's format has no field for (`<remote>.armed.json`),
/// written with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    pub version: u64,
    pub statement: Digest,
    /// The record's wall-clock deadline this boot-clock deadline belongs to.
    #[serde(default)]
    pub deadline: Option<u64>,
    #[serde(default)]
    pub deadline_boot: Option<BootTime>,
    #[serde(default)]
    pub rotation_keys: Vec<RotationKey>,
}

impl Probation {
    pub fn seen(&self) -> Seen {
        Seen {
            version: self.version,
            statement: self.statement,
        }
    }

    /// The deadline, once the probation has started.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline.map(|wall| Deadline {
            wall,
            boot: self.deadline_boot.clone(),
        })
    }

    /// Starts (or restarts) the probation period at `now`: the only place a
    /// deadline is set.
    pub fn start(&mut self, now: &Moment) {
        let d = now.deadline_in(self.probation_secs);
        self.deadline = Some(d.wall);
        self.deadline_boot = d.boot;
    }

    /// Whether the deadline has passed (never while waiting for a reboot).
    pub fn expired(&self, now: &Moment) -> bool {
        self.deadline().is_some_and(|d| d.passed(now))
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

fn observed_path(data: &DataDir, remote: &str) -> PathBuf {
    data.root
        .join("probation")
        .join(format!("{remote}.observed.json"))
}

fn read_bounded(p: &std::path::Path) -> Result<Option<Vec<u8>>, StateError> {
    let f = match fs::File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: p.to_owned(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    f.take(PROBATION_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| StateError::Io {
            path: p.to_owned(),
            source,
        })?;
    Ok(Some(bytes))
}

fn armed_path(data: &DataDir, remote: &str) -> PathBuf {
    data.root
        .join("probation")
        .join(format!("{remote}.armed.json"))
}

/// The probation of `remote`, if any. A record that cannot be read is an
/// error: nobody could tell whether the running system was confirmed.
pub fn load(data: &DataDir, remote: &str) -> Result<Option<Probation>, StateError> {
    let p = path(data, remote);
    let Some(bytes) = read_bounded(&p)? else {
        return Ok(None);
    };
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
    let mut pr: Probation = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("probation record is not valid: {e}")))?;
    if pr.format != PROBATION_FORMAT || pr.remote != remote {
        return Err(corrupt(
            "probation record is for another format or remote".into(),
        ));
    }
    let armed: Option<Armed> = read_bounded(&armed_path(data, remote))?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|a: &Armed| a.version == pr.version && a.statement == pr.statement);
    match armed {
        Some(a) => {
            pr.deadline_boot = a.deadline_boot.filter(|_| a.deadline == pr.deadline);
            pr.rotation_keys = a.rotation_keys;
        }
        None => pr.legacy = true,
    }
    Ok(Some(pr))
}

fn write_json(data: &DataDir, p: &std::path::Path, v: &impl Serialize) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: p.to_owned(),
        source,
    };
    fsutil::ensure_private_dir(&data.root.join("probation")).map_err(io_err)?;
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| io_err(io::Error::other(e)))?;
    bytes.push(b'\n');
    fsutil::write_atomic(p, &bytes, 0o600).map_err(io_err)
}

fn remove_durably(data: &DataDir, p: &std::path::Path) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: p.to_owned(),
        source,
    };
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
        Err(_) => Ok(()),
        Ok(()) => fsutil::sync_dir(&data.root.join("probation")).map_err(io_err),
    }
}

/// Records (durably) or clears the probation of `remote`: [`Armed`] first,
/// then the record (a crash between leaves an [`Armed`] that does not match
/// the record's deadline, and its boot clock is not used).
pub fn save(data: &DataDir, remote: &str, pr: Option<&Probation>) -> Result<(), StateError> {
    match pr {
        // The removal is made durable: a confirmation lost to a power cut
        // would bring the record back, and the next start would roll back
        // (and mark bad) a release that was confirmed.
        None => {
            remove_durably(data, &path(data, remote))?;
            remove_durably(data, &armed_path(data, remote))
        }
        Some(pr) => {
            let armed = Armed {
                version: pr.version,
                statement: pr.statement,
                deadline: pr.deadline,
                deadline_boot: pr.deadline_boot.clone(),
                rotation_keys: pr.rotation_keys.clone(),
            };
            write_json(data, &armed_path(data, remote), &armed)?;
            write_json(data, &path(data, remote), pr)
        }
    }
}

/// What the new system's agent saw while it could not confirm a release:
/// polls that reached no store (errors, time-outs) and polls whose answer it
/// refused (bytes that were not the release on probation). Kept after a
/// rollback while the release waits for its retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub version: u64,
    pub statement: Digest,
    /// Polls without an answer the new system could judge (the store
    /// failed, denied access or did not have `latest`).
    #[serde(default)]
    pub unreachable: u32,
    /// Polls whose answer it refused that were not the release on
    /// probation as signed (garbage, another head, a re-signed copy).
    #[serde(default)]
    pub refused: u32,
    /// Polls where its policy refused the release on probation itself: not
    /// the store's doing, so they never earn a retry.
    #[serde(default)]
    pub refused_own: u32,
}

impl Observed {
    pub fn seen(&self) -> Seen {
        Seen {
            version: self.version,
            statement: self.statement,
        }
    }

    /// Nothing observed yet, about `seen`.
    pub fn new(seen: Seen) -> Observed {
        Observed {
            version: seen.version,
            statement: seen.statement,
            unreachable: 0,
            refused: 0,
            refused_own: 0,
        }
    }

    /// The new system reached nothing it could verify, and never refused
    /// the release it runs: a rollback at the deadline earns a retry.
    pub fn store_at_fault(&self) -> bool {
        (self.unreachable > 0 || self.refused > 0) && self.refused_own == 0
    }

    /// The old system, back in place, may convict the release if it
    /// verifies the store during the backoff: the new system got no answer
    /// at all, in more than one poll (one failed poll right after a switch
    /// is the network settling).
    pub fn convictable(&self) -> bool {
        self.store_at_fault() && self.refused == 0 && self.unreachable >= 2
    }
}

/// What the new system saw for `remote`'s release (ignored when it is about
/// another release; unreadable counts as nothing seen).
pub fn load_observed(data: &DataDir, remote: &str) -> Option<Observed> {
    read_bounded(&observed_path(data, remote))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn save_observed(
    data: &DataDir,
    remote: &str,
    observed: Option<&Observed>,
) -> Result<(), StateError> {
    let p = observed_path(data, remote);
    match observed {
        None => remove_durably(data, &p),
        Some(o) => write_json(data, &p, o),
    }
}

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

/// A probation an operator ended.
#[derive(Clone, Debug)]
pub struct Ended {
    pub probation: Probation,
    /// The audit log could not be written (a warning to show).
    pub audit_failed: Option<String>,
}

/// Ends the probation of `remote` without a verdict on the release, because
/// an operator acted on the host directly (break-glass `npcnix activate`):
/// the record goes first (a timer that fires meanwhile finds nothing to
/// undo), then the watchdog is stopped, so it never undoes the operator's
/// fix; the end is audited (`probation-ended`). The caller holds the lock.
pub fn end_by_operator(
    data: &DataDir,
    remote: &str,
    watchdog: &dyn Watchdog,
    now: u64,
    what: &str,
) -> Result<Option<Ended>, StateError> {
    let Some(pr) = load(data, remote)? else {
        return Ok(None);
    };
    save(data, remote, None)?;
    save_observed(data, remote, None)?;
    let timer = match pr.watchdog_unit.as_deref().map(|u| (u, watchdog.disarm(u))) {
        None => "no watchdog was armed".to_owned(),
        Some((u, Ok(()))) => format!("its watchdog {u} was stopped"),
        Some((u, Err(e))) => format!(
            "its watchdog {u} could not be stopped ({e}); when it fires it finds no probation and does nothing"
        ),
    };
    let journal = Journal::new(data, remote);
    let mut ev = journal.event(now, "probation-ended");
    ev.version = Some(pr.version);
    ev.statement = Some(pr.statement.to_hex());
    ev.detail = Some(format!(
        "{what}: version {} is no longer on probation (nothing will roll it back); {timer}",
        pr.version
    ));
    let audit_failed = journal.append(&ev).err().map(|e| e.to_string());
    Ok(Some(Ended {
        probation: pr,
        audit_failed,
    }))
}
