//! The host's audit log: one JSON object per line, appended for every
//! decision (verified, rejected and why, activated, failed, rolled back,
//! paused). Lines are written with a single `write` on an `O_APPEND` file and
//! fsynced, so concurrent writers never interleave within a line and a
//! decision is on disk before npcnix acts on it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::pipeline::PipelineError;
use crate::host::state::DataDir;
use crate::verify::{Refusal, VerifiedRelease};

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub time: u64,
    /// `verified`, `rejected`, `up-to-date`, `extracted`, `activated`,
    /// `activation-failed`, `rolled-back`, `paused`, `unpaused`, ...
    pub event: String,
    pub remote: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// For rejections: the stable name of the failed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
}

impl AuditEvent {
    pub fn new(time: u64, event: &str, remote: &str) -> AuditEvent {
        AuditEvent {
            time,
            event: event.to_owned(),
            remote: remote.to_owned(),
            version: None,
            statement: None,
            check: None,
            detail: None,
            signers: Vec::new(),
        }
    }
}

/// Longest `detail` kept in an audit line (or a status field): messages can
/// quote store-controlled text, which must not bloat every line of the log.
pub const DETAIL_MAX_CHARS: usize = 1024;

/// `s` cut to at most `max` characters, marked when cut.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}... (cut)", &s[..i]),
    }
}

/// Appends `event` to the log at `path` (created 0600 if missing).
pub fn append(path: &Path, event: &AuditEvent) -> io::Result<()> {
    let mut event = event.clone();
    event.detail = event.detail.map(|d| clip(&d, DETAIL_MAX_CHARS));
    let mut line = serde_json::to_vec(&event).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Reads the log (bounded per line); malformed lines are reported, not
/// skipped silently.
pub fn read(path: &Path) -> io::Result<Vec<Result<AuditEvent, MalformedLine>>> {
    let bytes = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // A torn or corrupt byte spoils its line, not the whole log.
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let malformed = |detail: String| MalformedLine {
                line: i + 1,
                detail,
            };
            if l.len() > 64 * 1024 {
                return Err(malformed("too long".into()));
            }
            serde_json::from_str(l).map_err(|e| malformed(e.to_string()))
        })
        .collect())
}

/// An audit log line that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {detail}")]
pub struct MalformedLine {
    pub line: usize,
    pub detail: String,
}

/// An audit line that could not be written. Reported as a warning: a
/// decision is never changed by a failure to log it.
#[derive(Debug, thiserror::Error)]
#[error("could not write the audit log {}: {source}", path.display())]
pub struct JournalError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The audit log of one data dir, for one remote: how the pipeline, the
/// agent and the manual commands write their decisions.
pub struct Journal<'a> {
    path: PathBuf,
    remote: &'a str,
}

impl<'a> Journal<'a> {
    pub fn new(data: &DataDir, remote: &'a str) -> Journal<'a> {
        Journal {
            path: data.audit_path(),
            remote,
        }
    }

    /// Appends `ev`; `Err` is a warning for the caller to show.
    pub fn append(&self, ev: &AuditEvent) -> Result<(), JournalError> {
        append(&self.path, ev).map_err(|source| JournalError {
            path: self.path.clone(),
            source,
        })
    }

    pub fn event(&self, now: u64, event: &str) -> AuditEvent {
        AuditEvent::new(now, event, self.remote)
    }

    /// A refusal: event `rejected`, with the check's stable name.
    pub fn refusal(&self, r: &Refusal, now: u64) -> Result<(), JournalError> {
        let mut ev = self.event(now, "rejected");
        ev.check = Some(r.check().name().to_owned());
        ev.detail = Some(r.to_string());
        self.append(&ev)
    }

    /// A pipeline that stopped: a refusal, or an `error` event.
    pub fn failure(&self, e: &PipelineError, now: u64) -> Result<(), JournalError> {
        if let Some(r) = e.refusal() {
            return self.refusal(r, now);
        }
        let mut ev = self.event(now, "error");
        ev.detail = Some(format!("{e:#}"));
        self.append(&ev)
    }

    /// A decision about a verified release.
    pub fn release(
        &self,
        event: &str,
        release: &VerifiedRelease,
        detail: Option<String>,
        now: u64,
    ) -> Result<(), JournalError> {
        let mut ev = self.event(now, event);
        ev.version = Some(release.version());
        ev.statement = Some(release.statement_hash().to_hex());
        ev.signers = release.signers().iter().map(|k| k.to_string()).collect();
        ev.detail = detail;
        self.append(&ev)
    }
}
