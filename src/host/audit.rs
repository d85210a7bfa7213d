//! `npcnix audit`: this host's audit log checked against the store's
//! version log. Every release the host verified or activated must be the
//! one the store's log holds for that version.
//!
//! The host recorded the statement hash of every release it verified, so
//! the first check needs no keys: the store's `releases/<v>` must carry a
//! statement with that hash. Only a differing statement is classified, by
//! verifying it with today's keys plus every key this host pinned before
//! (`host::trust::key_history`): a release verified before a key rotation
//! is not a mismatch because today's keys no longer sign for it.

use std::collections::BTreeMap;

use crate::format::bundle::Bundle;
use crate::format::keys::PublicKey;
use crate::format::statement::Digest;
use crate::host::config::Validated;
use crate::host::journal;
use crate::host::state::DataDir;
use crate::store::{Remote, StoreError};
use crate::verify::{self, KeyScope, TrustedKey};

/// What the audit found.
#[derive(Clone, Debug, Default)]
pub struct AuditReport {
    /// Versions compared with the store's log.
    pub versions_checked: usize,
    /// Each problem, in words (empty: the log matches).
    pub problems: Vec<String>,
}

/// Why the audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the audit log {}: {source}", .path.display())]
    Journal {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Audits the host of `v` (data dir `data`) against `remote`'s log at `now`.
pub fn audit(
    remote: &Remote,
    data: &DataDir,
    v: &Validated,
    now: u64,
) -> Result<AuditReport, AuditError> {
    let name = v.remote.as_str();
    // version -> statement hashes the host recorded for it.
    let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut report = AuditReport::default();
    let lines = journal::read(&data.audit_path()).map_err(|source| AuditError::Journal {
        path: data.audit_path(),
        source,
    })?;
    for line in lines {
        match line {
            Ok(ev)
                if ev.remote == name && matches!(ev.event.as_str(), "verified" | "activated") =>
            {
                if let (Some(ver), Some(h)) = (ev.version, ev.statement) {
                    let list = seen.entry(ver).or_default();
                    if !list.contains(&h) {
                        list.push(h);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => report.problems.push(format!("audit log: {e}")),
        }
    }
    let mut policy = v.policy.clone();
    policy.keys.extend(
        crate::host::trust::key_history(data, name)
            .iter()
            .filter_map(|k| k.split_once(':').map(|(_, rw)| rw))
            .filter_map(|rw| PublicKey::from_base64(rw).ok())
            .filter(|pk| !v.policy.keys.iter().any(|t| t.key.bytes == pk.bytes))
            .map(|key| TrustedKey {
                key,
                scope: KeyScope::Remotes(vec![v.remote.clone()]),
                not_after: None,
            }),
    );
    let log = remote.log();
    for (ver, hashes) in &seen {
        report.versions_checked += 1;
        let Some(bytes) = log.release(*ver)? else {
            for h in hashes {
                report.problems.push(format!(
                    "version {ver}: this host verified statement {h}, which is missing from the store's log"
                ));
            }
            continue;
        };
        let logged = Bundle::decode(&bytes)
            .ok()
            .map(|b| Digest::of(&b.statement).to_hex());
        for h in hashes {
            if logged.as_deref() == Some(h.as_str()) {
                continue;
            }
            // Differs: is the store's release a validly signed other
            // statement (a fork), or not a release at all?
            report.problems.push(
                match verify::verify_signatures(&policy, &bytes, now) {
                    Ok(rel) => format!(
                        "version {ver}: this host verified statement {h}, but the store's log holds {} signed by {} (fork or equivocation)",
                        rel.statement_hash(),
                        rel.signers()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Err(r) => format!(
                        "version {ver}: this host verified statement {h}, but the store's log holds another, which does not verify ({})",
                        r.line()
                    ),
                },
            );
        }
    }
    Ok(report)
}
