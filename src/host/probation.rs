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
//! What the new system's agent observed while it could not confirm is kept
//! beside the record ([`Observed`], `<remote>.observed.json`: a separate file
//! so the record the watchdog reads is only ever written by the binary that
//! armed it). It decides what a rollback at the deadline means: a new
//! system that reached nothing it could verify is retried with backoff
//! rather than marked bad for ever.

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
#[serde(deny_unknown_fields)]
pub struct RotationKey {
    /// The `RW...` line of the key's `.pub` file.
    pub public_key: String,
    #[serde(default)]
    pub not_after: Option<u64>,
}

/// A release applied but not yet confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The same deadline on the boot clock, judged within the boot it was
    /// set in (a clock step does not move it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_boot: Option<BootTime>,
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
    /// A key rotation: the keys of the system before, which signed this
    /// release and which the new system no longer trusts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    let pr: Probation = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("probation record is not valid: {e}")))?;
    if pr.format != PROBATION_FORMAT || pr.remote != remote {
        return Err(corrupt(
            "probation record is for another format or remote".into(),
        ));
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

/// Records (durably) or clears the probation of `remote`.
pub fn save(data: &DataDir, remote: &str, pr: Option<&Probation>) -> Result<(), StateError> {
    match pr {
        // The removal is made durable: a confirmation lost to a power cut
        // would bring the record back, and the next start would roll back
        // (and mark bad) a release that was confirmed.
        None => remove_durably(data, &path(data, remote)),
        Some(pr) => write_json(data, &path(data, remote), pr),
    }
}

/// What the new system's agent saw while it could not confirm a release:
/// polls that reached no store (errors, time-outs) and polls whose answer it
/// refused (bytes that were not the release on probation). Kept after a
/// rollback while the release waits for its retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    pub version: u64,
    pub statement: Digest,
    #[serde(default)]
    pub unreachable: u32,
    #[serde(default)]
    pub refused: u32,
}

impl Observed {
    pub fn seen(&self) -> Seen {
        Seen {
            version: self.version,
            statement: self.statement,
        }
    }

    /// The rollback was the store's doing (it served something the new
    /// system refused): only that, never the new system's own network.
    pub fn store_refused(&self) -> bool {
        self.refused > 0
    }

    /// Nothing observed yet, about `seen`.
    pub fn new(seen: Seen) -> Observed {
        Observed {
            version: seen.version,
            statement: seen.statement,
            unreachable: 0,
            refused: 0,
        }
    }

    pub fn any(&self) -> bool {
        self.unreachable > 0 || self.refused > 0
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

/// Why a release on probation is rolled back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The deadline passed unconfirmed (the watchdog, or the agent).
    Deadline,
    /// An operator gave up on it (`npcnix probation expire --now`).
    ByHand,
    /// The health check failed when the new system's agent confirmed.
    Unhealthy(String),
    /// The new system cannot apply its next release (the probe failed).
    CannotActivate(String),
}

/// What a rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolledBack {
    pub version: u64,
    /// What happened, in the audit log's words.
    pub detail: String,
    /// Retried from then on (the new system reached nothing it could
    /// verify); `None`: marked bad.
    pub retry_at: Option<u64>,
    /// The rollback command itself failed.
    pub failed: bool,
}

/// Undoes the release on probation for `remote` if its deadline has passed
/// (or at once, for every [`Why`] but the deadline): rolls the system back
/// as recorded when it was armed, makes the previous release the active
/// one again, clears the record and audits it. The release is marked bad,
/// unless the new system's agent saw only a store it could not verify: then
/// it is retried with backoff (docs/lockout.md, "No confirmation"). The
/// caller holds the data dir lock. `None`: nothing to do (confirmed
/// meanwhile, another version, not yet expired).
pub fn roll_back_locked(
    data: &DataDir,
    remote: &str,
    only_version: Option<u64>,
    activation: &dyn Activation,
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
    let env = [
        ("NPCNIX_REMOTE", remote.to_owned()),
        ("NPCNIX_VERSION", pr.version.to_string()),
        ("NPCNIX_STATEMENT", pr.statement.to_hex()),
    ];
    let note = match &pr.rollback.restore {
        // Stopped between arming and switching: rolling back now would step
        // one generation *behind* the system that runs.
        Some(r) if r.holds() => format!(
            "nothing to undo: {} is still {}, the system from before the release",
            r.link.display(),
            r.target.display()
        ),
        // `nixos-rebuild test --rollback` activates the generation before
        // the profile's current one, one older than what ran before a
        // `test` release (which adds no generation): go back to exactly it.
        Some(r) if pr.rollback.mode == ActivationMode::Test => {
            checked(activation.restore(&r.target, "test", &env), r)
        }
        Some(r) => checked(activation.undo(&pr.rollback, &env), r),
        None => match activation.undo(&pr.rollback, &env) {
            Ok(()) => "rolled back to the previous generation".to_owned(),
            Err(e) => format!("ROLLBACK FAILED: {e}"),
        },
    };
    let observed = load_observed(data, remote).filter(|o| o.seen() == pr.seen() && o.any());
    let reason = match why {
        Why::Deadline => match &observed {
            Some(o) => format!(
                "unconfirmed: in {} poll(s) before the deadline the new system reached nothing it could verify ({} without an answer, {} refused)",
                o.unreachable + o.refused,
                o.unreachable,
                o.refused
            ),
            None => format!(
                "unconfirmed: no successful poll within {}s of the switch",
                pr.probation_secs
            ),
        },
        Why::ByHand => "unconfirmed: rolled back by hand (`npcnix probation expire --now`)".into(),
        Why::Unhealthy(w) => format!("unconfirmed: health check failed during probation: {w}"),
        Why::CannotActivate(w) => {
            format!("unconfirmed: the new system could not apply its next release: {w}")
        }
    };
    let mut st = data.load()?;
    let rs = st.remote_mut(remote);
    let retry_at = match (why, &observed) {
        (Why::Deadline, Some(_)) => {
            let attempts = rs
                .retry
                .as_ref()
                .filter(|r| r.version == pr.version)
                .map_or(0, |r| r.attempts)
                + 1;
            let at = now.wall.saturating_add(retry_delay(attempts));
            rs.retry = Some(Retry {
                version: pr.version,
                attempts,
                next_at: at,
            });
            Some(at)
        }
        _ => {
            if !rs.is_bad(&pr.seen()) {
                rs.bad.push(BadRelease {
                    version: pr.version,
                    statement: pr.statement,
                    reason: reason.clone(),
                    at: now.wall,
                });
            }
            rs.retry = None;
            None
        }
    };
    if rs.active == Some(pr.seen()) {
        rs.active = pr.previous_active;
    }
    data.save(&st)?;
    save(data, remote, None)?;
    if retry_at.is_none() {
        save_observed(data, remote, None)?;
    }
    let detail = match (retry_at, &observed) {
        (Some(at), Some(o)) if o.store_refused() => format!(
            "{reason}; {note}; the store served what the new system refused, so the release is retried from {}",
            crate::format::time::rfc3339(at)
        ),
        (Some(at), _) => format!(
            "{reason}; {note}; retried from {}, unless this system reaches and verifies the store before then (then the new system could not, and the release is marked bad)",
            crate::format::time::rfc3339(at)
        ),
        (None, _) => format!("{reason}; {note}"),
    };
    let journal = Journal::new(data, remote);
    let mut ev = journal.event(now.wall, "rolled-back");
    ev.version = Some(pr.version);
    ev.statement = Some(pr.statement.to_hex());
    ev.detail = Some(detail.clone());
    let _ = journal.append(&ev);
    Ok(Some(RolledBack {
        version: pr.version,
        failed: detail.contains("ROLLBACK FAILED"),
        detail,
        retry_at,
    }))
}

/// What a rollback towards `r` achieved, in the audit log's words.
fn checked(res: Result<(), ActivationError>, r: &RestorePoint) -> String {
    match res {
        Err(e) => format!("ROLLBACK FAILED: {e}"),
        Ok(()) if r.holds() => format!("rolled back to {}", r.target.display()),
        Ok(()) => format!(
            "ROLLBACK INCOMPLETE: {} is {}, not {} as before the release",
            r.link.display(),
            fs::canonicalize(&r.link)
                .map_or_else(|e| format!("unreadable ({e})"), |t| t.display().to_string()),
            r.target.display()
        ),
    }
}

/// Ends the probation of `remote` without a verdict on the release, because
/// an operator acted on the host directly (break-glass `npcnix activate`):
/// the record goes first (a timer that fires meanwhile finds nothing to
/// undo), then the watchdog is stopped, so it never undoes the operator's
/// fix; the end is audited (`probation-ended`). The caller holds the lock.
pub fn end_by_operator(
    data: &DataDir,
    remote: &str,
    watchdog: &dyn crate::host::watchdog::Watchdog,
    now: u64,
    what: &str,
) -> Result<Option<Probation>, StateError> {
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
    let _ = journal.append(&ev);
    Ok(Some(pr))
}
