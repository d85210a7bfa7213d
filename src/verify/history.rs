//! The version log as an audit trail: every `releases/<v>` bundle verified,
//! versions strictly increasing, and each `previous` link matching the
//! statement hash of the release before it.
//!
//! [`HistoryCheck`] is pure: it is fed what was read from the store, one
//! release at a time, and returns each entry and every problem found;
//! `npcnix log` does the I/O.

use serde::Serialize;

use crate::format::statement::Digest;
use crate::verify::{self, Policy};

/// One release in the log, as read and verified.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    pub version: u64,
    pub created: Option<u64>,
    pub expires: Option<u64>,
    pub statement: Option<String>,
    pub previous: Option<String>,
    pub archive_blake3: Option<String>,
    pub archive_size: Option<u64>,
    pub signers: Vec<String>,
    /// Signatures that did not count: unknown keys or keys not trusted for
    /// this remote.
    pub untrusted_signers: Vec<String>,
    pub source_commit: Option<String>,
    /// BLAKE3 of the `flake.lock` in the archive, as the statement records
    /// it (hex).
    pub source_flake_lock: Option<String>,
    pub comment: Option<String>,
    /// Configurations the release retires (they skip lockout protection).
    pub decommission: Option<Vec<String>>,
    /// The signed rollout wave, if any.
    pub rollout: Option<crate::format::rollout::Rollout>,
    pub verified: bool,
    pub error: Option<String>,
}

/// A break in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub version: u64,
    pub kind: String,
    pub detail: String,
}

/// Most problems kept in full; past it only a count (a store full of junk
/// must not grow the report without bound).
pub const MAX_PROBLEMS: usize = 1000;

/// Verifies a remote's history one release at a time, in key order, keeping
/// only what the next link needs: memory stays constant however long the
/// log (`npcnix log` prints each entry as it goes).
pub struct HistoryCheck<'p> {
    policy: &'p Policy,
    now: u64,
    prev: Option<(u64, Digest)>,
    seen_any: bool,
    /// Version and BLAKE3 of the bundle bytes of the last release pushed.
    last: Option<(u64, Digest)>,
    problems: Vec<Problem>,
    /// Problems past [`MAX_PROBLEMS`], counted only.
    pub more_problems: u64,
}

impl<'p> HistoryCheck<'p> {
    pub fn new(policy: &'p Policy, now: u64) -> HistoryCheck<'p> {
        HistoryCheck {
            policy,
            now,
            prev: None,
            seen_any: false,
            last: None,
            problems: Vec::new(),
            more_problems: 0,
        }
    }

    fn problem(&mut self, version: u64, kind: &str, detail: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem {
                version,
                kind: kind.to_owned(),
                detail,
            });
        } else {
            self.more_problems += 1;
        }
    }

    /// Checks the bundle stored as `releases/<key_version>`.
    pub fn push(&mut self, key_version: u64, bytes: &[u8]) -> LogEntry {
        let mut e = LogEntry {
            version: key_version,
            created: None,
            expires: None,
            statement: None,
            previous: None,
            archive_blake3: None,
            archive_size: None,
            signers: Vec::new(),
            untrusted_signers: Vec::new(),
            source_commit: None,
            source_flake_lock: None,
            comment: None,
            decommission: None,
            rollout: None,
            verified: false,
            error: None,
        };
        self.last = Some((key_version, Digest::of(bytes)));
        match verify::verify_signatures(self.policy, bytes, self.now) {
            Err(r) => {
                self.problem(key_version, r.check().name(), r.to_string());
                e.error = Some(r.to_string());
                // The chain cannot be followed through an unverifiable entry.
                self.prev = None;
            }
            Ok(rel) => {
                let st = rel.statement();
                e.created = Some(st.created);
                e.expires = st.expires;
                e.statement = Some(rel.statement_hash().to_hex());
                e.previous = st.previous.map(|d| d.to_hex());
                e.archive_blake3 = Some(st.archive.blake3.to_hex());
                e.archive_size = Some(st.archive.size);
                e.signers = rel.signers().iter().map(|k| k.to_string()).collect();
                e.untrusted_signers = rel.ignored().iter().map(|k| k.to_string()).collect();
                e.source_commit = st.source.as_ref().and_then(|s| s.git_commit.clone());
                e.source_flake_lock = st
                    .source
                    .as_ref()
                    .and_then(|s| s.flake_lock_blake3)
                    .map(|d| d.to_hex());
                e.comment = st.source.as_ref().and_then(|s| s.comment.clone());
                e.decommission = st.decommission.clone();
                e.rollout = st.rollout.clone();
                e.verified = true;
                let (version, previous) = (st.version, st.previous);
                if version != key_version {
                    self.problem(
                        key_version,
                        "misfiled",
                        format!("releases/{key_version:020} holds version {version}"),
                    );
                }
                match self.prev {
                    Some((pv, ph)) => {
                        if version != pv + 1 {
                            self.problem(
                                version,
                                "gap",
                                format!("versions {} to {} are missing", pv + 1, version - 1),
                            );
                        }
                        if previous != Some(ph) {
                            self.problem(
                                version,
                                "fork",
                                format!("previous does not match the statement of version {pv}"),
                            );
                        }
                    }
                    None if !self.seen_any && previous.is_some() && version != 1 => {
                        self.problem(
                            version,
                            "gap",
                            format!(
                                "the log starts at version {version} (earlier releases missing)"
                            ),
                        );
                    }
                    None => {}
                }
                self.prev = Some((version, rel.statement_hash()));
            }
        }
        self.seen_any = true;
        e
    }

    /// Checks `latest` (if any) against the newest release and returns every
    /// problem found (at most [`MAX_PROBLEMS`]; see `more_problems`).
    pub fn finish(mut self, latest: Option<&[u8]>) -> (Vec<Problem>, u64) {
        // `latest` is the newest `releases/<v>` plus, at most, a freshness
        // timestamp (D126), which the publisher wrote from the same bundle.
        let head_digest = |head: &[u8]| match crate::format::bundle::Bundle::decode(head) {
            Ok(b) if b.timestamp.is_some() => Digest::of(&b.without_timestamp().encode()),
            _ => Digest::of(head),
        };
        match (latest, self.last) {
            (Some(head), Some((v, last))) if head_digest(head) != last => {
                self.problem(
                    v,
                    "head",
                    "`latest` is not the newest release bundle".into(),
                );
            }
            (Some(_), None) => {
                self.problem(0, "head", "`latest` exists but the log is empty".into())
            }
            (None, Some((v, _))) => {
                self.problem(v, "head", "the log has releases but no `latest`".into())
            }
            _ => {}
        }
        (self.problems, self.more_problems)
    }
}
