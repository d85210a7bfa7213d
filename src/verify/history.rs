//! The version log as an audit trail: every `releases/<v>` bundle verified,
//! versions strictly increasing, and each `previous` link matching the
//! statement hash of the release before it.
//!
//! [`check_history`] is pure: it takes what was read from the store and
//! returns the entries and every problem found; `npcnix log` does the I/O.

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
    pub comment: Option<String>,
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

/// Verifies a remote's history. `releases` are `(version from the key,
/// bundle bytes)` in key order; `latest` is the head bundle if any.
pub fn check_history(
    policy: &Policy,
    releases: &[(u64, Vec<u8>)],
    latest: Option<&[u8]>,
    now: u64,
) -> (Vec<LogEntry>, Vec<Problem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut prev: Option<(u64, Digest)> = None;
    let mut problem = |version: u64, kind: &str, detail: String| {
        problems.push(Problem {
            version,
            kind: kind.to_owned(),
            detail,
        })
    };
    for (key_version, bytes) in releases {
        let mut e = LogEntry {
            version: *key_version,
            created: None,
            expires: None,
            statement: None,
            previous: None,
            archive_blake3: None,
            archive_size: None,
            signers: Vec::new(),
            untrusted_signers: Vec::new(),
            source_commit: None,
            comment: None,
            verified: false,
            error: None,
        };
        match verify::verify_signatures(policy, bytes, now) {
            Err(r) => {
                problem(*key_version, r.check().name(), r.to_string());
                e.error = Some(r.to_string());
                // The chain cannot be followed through an unverifiable entry.
                prev = None;
            }
            Ok(rel) => {
                let st = &rel.statement;
                e.created = Some(st.created);
                e.expires = st.expires;
                e.statement = Some(rel.statement_hash.to_hex());
                e.previous = st.previous.map(|d| d.to_hex());
                e.archive_blake3 = Some(st.archive.blake3.to_hex());
                e.archive_size = Some(st.archive.size);
                e.signers = rel.signers.iter().map(|k| k.to_string()).collect();
                e.untrusted_signers = rel.ignored.iter().map(|k| k.to_string()).collect();
                e.source_commit = st.source.as_ref().and_then(|s| s.git_commit.clone());
                e.comment = st.source.as_ref().and_then(|s| s.comment.clone());
                e.verified = true;
                if st.version != *key_version {
                    problem(
                        *key_version,
                        "misfiled",
                        format!("releases/{key_version:020} holds version {}", st.version),
                    );
                }
                match prev {
                    Some((pv, ph)) => {
                        if st.version != pv + 1 {
                            problem(
                                st.version,
                                "gap",
                                format!("versions {} to {} are missing", pv + 1, st.version - 1),
                            );
                        }
                        if st.previous != Some(ph) {
                            problem(
                                st.version,
                                "fork",
                                format!("previous does not match the statement of version {pv}"),
                            );
                        }
                    }
                    None if entries.is_empty() && st.previous.is_some() && st.version != 1 => {
                        problem(
                            st.version,
                            "gap",
                            format!(
                                "the log starts at version {} (earlier releases missing)",
                                st.version
                            ),
                        );
                    }
                    None => {}
                }
                prev = Some((st.version, rel.statement_hash));
            }
        }
        entries.push(e);
    }
    match (latest, releases.last()) {
        (Some(head), Some((v, last))) if head != last.as_slice() => {
            problem(
                *v,
                "head",
                "`latest` is not the newest release bundle".into(),
            );
        }
        (Some(_), None) => problem(0, "head", "`latest` exists but the log is empty".into()),
        (None, Some((v, _))) => problem(*v, "head", "the log has releases but no `latest`".into()),
        _ => {}
    }
    (entries, problems)
}
