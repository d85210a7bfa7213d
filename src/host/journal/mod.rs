//! The host's audit log: one JSON object per line, appended for every
//! decision (verified, rejected and why, activated, failed, rolled back,
//! paused). Lines are written with a single `write` on an `O_APPEND` file and
//! fsynced, so concurrent writers never interleave within a line and a
//! decision is on disk before npcnix acts on it.

use std::io;
use std::path::PathBuf;

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

mod file;

pub use file::{append, append_rotating_at, read, rotated_path};
#[cfg(test)]
pub(crate) use file::{append_with, Step};

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
    /// Also handed every appended event (the agent's event hooks).
    observer: Option<&'a std::sync::Mutex<Vec<AuditEvent>>>,
}

/// Most events an observer keeps between two reads (one poll's worth).
const OBSERVED_MAX: usize = 64;

impl<'a> Journal<'a> {
    pub fn new(data: &DataDir, remote: &'a str) -> Journal<'a> {
        Journal {
            path: data.audit_path(),
            remote,
            observer: None,
        }
    }

    /// Hands every event appended through this journal to `sink` as well.
    pub fn observed(mut self, sink: &'a std::sync::Mutex<Vec<AuditEvent>>) -> Journal<'a> {
        self.observer = Some(sink);
        self
    }

    /// Appends `ev`; `Err` is a warning for the caller to show.
    pub fn append(&self, ev: &AuditEvent) -> Result<(), JournalError> {
        if let Some(Ok(mut sink)) = self.observer.map(|o| o.lock()) {
            if sink.len() < OBSERVED_MAX {
                sink.push(ev.clone());
            }
        }
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
    use std::fs;

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

    /// Issue 31: a power cut in the middle of a rotation, at each step in
    /// turn. Reading then sees every line once, the next append finishes or
    /// undoes the rotation, and the floor evidence (`log-rotated`) survives
    /// it and the rotation after.
    #[test]
    fn power_cut_at_each_step_of_a_rotation_loses_no_floor_evidence() {
        for step in [Step::NewWritten, Step::OldLinked, Step::NewPlaced] {
            let dir = TempDir::new_in(&std::env::temp_dir(), "npcnix-journal-").expect("temp dir");
            let log = dir.path().join("audit.jsonl");
            let rotate_at = 2048;
            append_rotating_at(&log, &verified(1, "prod", 8), rotate_at).expect("append");
            // Lines until the one whose rotation is cut short at `step`.
            let mut t = 2;
            loop {
                let r = append_with(&log, &refusal(t), rotate_at, &|s| {
                    if s == step {
                        Err(io::Error::other("power cut"))
                    } else {
                        Ok(())
                    }
                });
                if r.is_err() {
                    break;
                }
                t += 1;
                assert!(t < 100, "{step:?}: the rotation was not reached");
            }
            let check = |when: &str| {
                let lines: Vec<AuditEvent> = read(&log)
                    .expect("read")
                    .into_iter()
                    .map(|l| l.expect("well-formed line"))
                    .collect();
                let mut refused: Vec<u64> = lines
                    .iter()
                    .filter(|e| e.event == "rejected")
                    .map(|e| e.time)
                    .collect();
                let n = refused.len();
                refused.dedup();
                assert_eq!(refused.len(), n, "{step:?} {when}: a line read twice");
                let floor = lines
                    .iter()
                    .filter(|e| e.remote == "prod" && shows_verified(&e.event))
                    .filter_map(|e| e.version)
                    .max();
                assert_eq!(floor, Some(8), "{step:?} {when}: floor evidence lost");
                refused
            };
            let before = check("after the cut");
            append_rotating_at(&log, &refusal(t + 1), rotate_at).expect("append");
            let after = check("after the next append");
            assert!(
                before.iter().all(|t| after.contains(t)),
                "{step:?}: lines lost"
            );
            assert!(
                !dir.path().join("audit.jsonl.next").exists(),
                "{step:?}: the cut rotation was left half-done"
            );
            for t in t + 2..t + 60 {
                append_rotating_at(&log, &refusal(t), rotate_at).expect("append");
            }
            check("after more rotations");
        }
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
