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
use crate::host::activate::RollbackPlan;
use crate::host::clock::{BootTime, Deadline, Moment};
use crate::host::journal::Journal;
use crate::host::state::{DataDir, StateError};
use crate::host::watchdog::Watchdog;
use crate::verify::Seen;

mod rollback;

pub use rollback::{
    roll_back_locked, RolledBack, Verdict, Why, MAX_RETRY_DELAY, MAX_STORE_RETRIES,
};

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
