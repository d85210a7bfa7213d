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

/// Size at which the audit log is rotated: `audit.jsonl` becomes
/// `audit.jsonl.1` (replacing the one before). A store that serves a
/// tampered archive is refused, and audited, on every poll for as long as it
/// does so; rotation keeps that from filling the disk, while the two files
/// still hold months of ordinary decisions (a line is ~300 bytes).
pub const ROTATE_AT_BYTES: u64 = 16 << 20;

/// Event that opens a rotated-to log: for each remote, the highest version
/// the rotated-out lines (and the `log-rotated` line they began with) show
/// this host verified. `state reset` relies on it to keep the floor it
/// derives from the audit log across any number of rotations.
pub const ROTATED_EVENT: &str = "log-rotated";

/// Events whose `version` this host verified (the evidence for a floor).
pub fn shows_verified(event: &str) -> bool {
    matches!(
        event,
        "verified" | "activated" | "up-to-date" | ROTATED_EVENT
    )
}

/// Where the log at `path` is rotated to.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Appends `event` to the log at `path` (created 0600 if missing), rotating
/// it first when the line would take it past [`ROTATE_AT_BYTES`].
pub fn append(path: &Path, event: &AuditEvent) -> io::Result<()> {
    append_rotating_at(path, event, ROTATE_AT_BYTES)
}

/// [`append`] with the rotation size as a parameter (tests use small ones).
pub fn append_rotating_at(path: &Path, event: &AuditEvent, rotate_at: u64) -> io::Result<()> {
    let mut event = event.clone();
    event.detail = event.detail.map(|d| clip(&d, DETAIL_MAX_CHARS));
    let mut line = serde_json::to_vec(&event).map_err(io::Error::other)?;
    line.push(b'\n');
    // Writers (the agent, a manual `activate`, `pause`) serialise on an
    // flock of the file itself. One that opened the file just before
    // another rotated it finds a different inode at `path` once it holds
    // the lock, and opens again; twice is enough unless rotations race
    // faster than a line is written.
    for _ in 0..3 {
        let f = open_log(path)?;
        f.lock()?;
        if !same_file(&f, path)? {
            continue;
        }
        let len = f.metadata()?.len();
        let mut f = f;
        if len > 0 && len + line.len() as u64 > rotate_at {
            f = rotate(path, f, &event)?;
        }
        f.write_all(&line)?;
        return f.sync_data();
    }
    Err(io::Error::other(format!(
        "{} kept being rotated by another writer",
        path.display()
    )))
}

fn open_log(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn same_file(f: &fs::File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = f.metadata()?;
    Ok(match fs::symlink_metadata(path) {
        Ok(now) => now.dev() == open.dev() && now.ino() == open.ino(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    })
}

/// Moves the log (held locked as `old`) to its rotated path and returns the
/// new log, locked, opened by the carried-over high-water lines.
fn rotate(path: &Path, mut old: fs::File, event: &AuditEvent) -> io::Result<fs::File> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    old.seek(io::SeekFrom::Start(0))?;
    // Bounded: the file is at most ROTATE_AT_BYTES plus one line, unless
    // something other than npcnix appended to it.
    Read::by_ref(&mut old)
        .take(4 * ROTATE_AT_BYTES)
        .read_to_end(&mut bytes)?;
    let carried = high_water(&String::from_utf8_lossy(&bytes));
    fs::rename(path, rotated_path(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    let mut new = open_log(path)?;
    new.lock()?;
    let mut head = Vec::new();
    for (remote, version) in carried {
        let mut ev = AuditEvent::new(event.time, ROTATED_EVENT, &remote);
        ev.version = Some(version);
        ev.detail = Some(format!(
            "audit log rotated to {}; highest version verified for this remote before it",
            rotated_path(path).display()
        ));
        head.extend(serde_json::to_vec(&ev).map_err(io::Error::other)?);
        head.push(b'\n');
    }
    new.write_all(&head)?;
    drop(old);
    Ok(new)
}

/// Per remote, the highest version that `text`'s lines show verified.
fn high_water(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut high = std::collections::BTreeMap::new();
    for ev in text
        .lines()
        .filter(|l| l.len() <= 64 * 1024)
        .filter_map(|l| serde_json::from_str::<AuditEvent>(l).ok())
        .filter(|ev| shows_verified(&ev.event))
    {
        if let Some(v) = ev.version {
            let h = high.entry(ev.remote).or_insert(v);
            *h = (*h).max(v);
        }
    }
    high
}

/// Reads the log: the rotated file's lines, then the current file's
/// (bounded per line); malformed lines are reported, not skipped silently.
pub fn read(path: &Path) -> io::Result<Vec<Result<AuditEvent, MalformedLine>>> {
    let mut all = read_one(&rotated_path(path))?;
    all.extend(read_one(path)?);
    Ok(all)
}

fn read_one(path: &Path) -> io::Result<Vec<Result<AuditEvent, MalformedLine>>> {
    let bytes = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let file = path.display().to_string();
    // A torn or corrupt byte spoils its line, not the whole log.
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let malformed = |detail: String| MalformedLine {
                file: file.clone(),
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
#[error("{file} line {line}: {detail}")]
pub struct MalformedLine {
    pub file: String,
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

    /// Something that stopped a pull or a poll without a refusal: an
    /// `error` event with its message.
    pub fn error(&self, message: &str, now: u64) -> Result<(), JournalError> {
        let mut ev = self.event(now, "error");
        ev.detail = Some(message.to_owned());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;

    fn refusal(time: u64) -> AuditEvent {
        let mut ev = AuditEvent::new(time, "rejected", "prod");
        ev.version = Some(9);
        ev.check = Some("archive-hash".into());
        ev.detail = Some("the archive's BLAKE3 is not the signed one".into());
        ev
    }

    fn verified(time: u64, remote: &str, version: u64) -> AuditEvent {
        let mut ev = AuditEvent::new(time, "verified", remote);
        ev.version = Some(version);
        ev
    }

    /// A store serving a tampered archive is refused (and audited) on every
    /// poll; the log must stay bounded and keep the floor evidence.
    #[test]
    fn tampered_archive_on_every_poll_keeps_the_audit_log_bounded() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "npcnix-journal-").expect("temp dir");
        let log = dir.path().join("audit.jsonl");
        let rotate_at = 4096;
        append_rotating_at(&log, &verified(1, "prod", 8), rotate_at).expect("append");
        append_rotating_at(&log, &verified(1, "staging", 3), rotate_at).expect("append");
        for t in 2..2000 {
            append_rotating_at(&log, &refusal(t), rotate_at).expect("append");
        }
        for p in [&log, &rotated_path(&log)] {
            let len = fs::metadata(p).expect("log exists").len();
            assert!(len <= rotate_at, "{} is {len} bytes", p.display());
        }
        let lines: Vec<AuditEvent> = read(&log)
            .expect("read")
            .into_iter()
            .map(|l| l.expect("well-formed line"))
            .collect();
        // The newest refusal is the last line read; order is kept across files.
        assert_eq!(lines.last().expect("lines").time, 1999);
        assert!(lines.windows(2).all(|w| w[0].time <= w[1].time));
        // The verified versions were rotated out long ago, carried forward.
        let floor = |remote: &str| {
            lines
                .iter()
                .filter(|e| e.remote == remote && shows_verified(&e.event))
                .filter_map(|e| e.version)
                .max()
        };
        assert!(!lines.iter().any(|e| e.event == "verified"));
        assert_eq!(floor("prod"), Some(8));
        assert_eq!(floor("staging"), Some(3));
        let meta = fs::metadata(&log).expect("log exists");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn concurrent_writers_lose_no_line_across_rotations() {
        let dir = TempDir::new_in(&std::env::temp_dir(), "npcnix-journal-").expect("temp dir");
        let log = dir.path().join("audit.jsonl");
        let rotate_at = 20_000;
        std::thread::scope(|s| {
            for w in 0..4u64 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..100 {
                        append_rotating_at(log, &verified(w * 1000 + i, "prod", 1), rotate_at)
                            .expect("append");
                    }
                });
            }
        });
        let mut times: Vec<u64> = read(&log)
            .expect("read")
            .into_iter()
            .map(|l| l.expect("well-formed line"))
            .filter(|e| e.event == "verified")
            .map(|e| e.time)
            .collect();
        // 400 lines of ~63 bytes (25 KB): exactly one rotation, so (below two
        // rotations' worth) every line is still in one of the two files.
        assert!(rotated_path(&log).exists());
        times.sort();
        assert_eq!(times.len(), 400);
        times.dedup();
        assert_eq!(times.len(), 400);
    }
}
