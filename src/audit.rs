//! The host's audit log: one JSON object per line, appended for every
//! decision (verified, rejected and why, activated, failed, rolled back,
//! paused). Lines are written with a single `write` on an `O_APPEND` file and
//! fsynced, so concurrent writers never interleave within a line and a
//! decision is on disk before npcnix acts on it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

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

/// Appends `event` to the log at `path` (created 0600 if missing).
pub fn append(path: &Path, event: &AuditEvent) -> io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
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
pub fn read(path: &Path) -> io::Result<Vec<Result<AuditEvent, String>>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            if l.len() > 64 * 1024 {
                return Err(format!("line {}: too long", i + 1));
            }
            serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))
        })
        .collect())
}
