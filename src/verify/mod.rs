//! Release verification: a pure function from (policy, what this host has
//! seen, bundle bytes, now) to a verdict.
//!
//! The order is the security argument (see `docs/protocol.md`, "Verification
//! order"): size limit, then signatures and their trusted-comment bindings,
//! then — only once enough trusted keys have vouched for the exact bytes —
//! the statement is parsed, and then remote, freshness and rollback policy
//! are applied. No I/O happens here; the caller fetches bytes and records
//! outcomes.

pub mod chain;
pub mod decision;
pub mod flake_inputs;
pub mod history;
mod policy;
pub mod receipt;
mod refusal;
pub mod stream;
pub mod witness;

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::format::bundle::Bundle;
use crate::format::keys::KeyId;
use crate::format::statement::{Binding, Digest, Statement};
use crate::format::timestamp::{self, SignedTimestamp, Timestamp};

pub use policy::{
    ExpiryPolicy, Freshness, KeyScope, Policy, Seen, TrustedKey, DEFAULT_MAX_FUTURE_SKEW_SECS,
    DEFAULT_MAX_TIMESTAMP_LIFETIME_SECS,
};
pub use refusal::{ArchiveMismatch, Cause, Check, Refusal};

/// A release whose signatures, binding and statement checked out. Only
/// [`verify_signatures`] builds one: holding a `VerifiedRelease` means the
/// checks ran (the fields are private and there is no other constructor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRelease {
    statement: Statement,
    statement_bytes: Vec<u8>,
    statement_hash: Digest,
    /// The bundle's signatures, as received (the release can be judged
    /// again under another policy: the lockout inspection does).
    signatures: Vec<String>,
    signers: Vec<KeyId>,
    ignored: Vec<KeyId>,
    /// The timestamp that came with it (`latest` only), unverified unless
    /// [`Self::freshness`] is set.
    timestamp: Option<SignedTimestamp>,
    /// The timestamp, verified for exactly this release (when the policy
    /// requires one).
    fresh: Option<Fresh>,
}

/// A verified freshness timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fresh {
    pub created: u64,
    pub expires: u64,
    /// Distinct timestamp keys whose signatures counted.
    pub signers: Vec<KeyId>,
}

impl VerifiedRelease {
    /// The bundle (statement and signatures) this release was verified
    /// from, encoded again.
    pub fn bundle(&self) -> Vec<u8> {
        Bundle {
            statement: self.statement_bytes.clone(),
            signatures: self.signatures.clone(),
            timestamp: self.timestamp.clone(),
        }
        .encode()
    }

    /// The verified freshness timestamp, when the policy required one.
    pub fn freshness(&self) -> Option<&Fresh> {
        self.fresh.as_ref()
    }

    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The exact statement bytes the signatures cover.
    pub fn statement_bytes(&self) -> &[u8] {
        &self.statement_bytes
    }

    /// BLAKE3 of [`Self::statement_bytes`]: the release's identity in the
    /// hash chain.
    pub fn statement_hash(&self) -> Digest {
        self.statement_hash
    }

    /// Distinct trusted keys whose signatures counted.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// Key IDs of signatures that did not count (unknown keys, or keys not
    /// trusted for this remote): reported by `npcnix log`.
    pub fn ignored(&self) -> &[KeyId] {
        &self.ignored
    }

    pub fn version(&self) -> u64 {
        self.statement.version
    }

    pub fn seen(&self) -> Seen {
        Seen {
            version: self.statement.version,
            statement: self.statement_hash,
        }
    }
}

/// What verification concluded about an acceptable bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A release newer than anything this host has seen.
    New(VerifiedRelease),
    /// Exactly the release this host already verified (same version, same
    /// statement): nothing new.
    Current(VerifiedRelease),
}

impl Verdict {
    pub fn release(&self) -> &VerifiedRelease {
        match self {
            Verdict::New(r) | Verdict::Current(r) => r,
        }
    }

    pub fn into_release(self) -> VerifiedRelease {
        match self {
            Verdict::New(r) | Verdict::Current(r) => r,
        }
    }

    pub fn is_new(&self) -> bool {
        matches!(self, Verdict::New(_))
    }
}

/// Reads the key ID from a `.minisig` text's signature line without trusting
/// anything else in it (used to route to a pinned key and to report unknown
/// signers).
fn signature_key_id(text: &str) -> Option<KeyId> {
    let line = text.lines().nth(1)?;
    let raw = B64.decode(line.trim()).ok()?;
    let mut id = [0u8; 8];
    id.copy_from_slice(raw.get(2..10)?);
    Some(KeyId(id))
}

/// The key IDs the signatures of a bundle name, unverified and without
/// duplicates: for reports about who signed a release whose statement is
/// authenticated otherwise (through the hash chain). `Err`: not a bundle.
pub fn signature_key_ids(bundle_bytes: &[u8]) -> Result<Vec<KeyId>, Refusal> {
    let bundle = Bundle::decode(bundle_bytes).map_err(Refusal::Bundle)?;
    let mut ids: Vec<KeyId> = bundle
        .signatures
        .iter()
        .filter_map(|t| signature_key_id(t))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Outcome of checking one signature, kept to explain a failure.
enum SigOutcome {
    Counted(Binding, [u8; 32]),
    Ignored(Option<KeyId>),
    Failed(Refusal),
}

fn check_signature(
    policy: &Policy,
    statement_bytes: &[u8],
    statement_hash: &Digest,
    text: &str,
    now: u64,
) -> SigOutcome {
    let Some(key_id) = signature_key_id(text) else {
        return SigOutcome::Failed(Refusal::UndecodableSignature);
    };
    // Key IDs are chosen by key holders, so two pinned keys may share one:
    // try each, never just the first.
    let candidates: Vec<&TrustedKey> = policy
        .keys
        .iter()
        .filter(|k| k.key.key_id == key_id)
        .collect();
    if candidates.is_empty() {
        return SigOutcome::Ignored(Some(key_id));
    }
    let Ok(sig) = minisign_verify::Signature::decode(text) else {
        return SigOutcome::Failed(Refusal::UndecodableSignature);
    };
    // `allow_legacy = false`: only prehashed (ED) signatures.
    let verified = candidates.into_iter().find(|k| {
        k.key
            .to_verifier()
            .is_ok_and(|pk| pk.verify(statement_bytes, &sig, false).is_ok())
    });
    let Some(trusted) = verified else {
        return SigOutcome::Failed(Refusal::BadSignature(key_id));
    };
    // The trusted comment is covered by the global signature just checked.
    let binding = match Binding::parse(sig.trusted_comment()) {
        Ok(b) => b,
        Err(e) => {
            return SigOutcome::Failed(Refusal::TrustedComment {
                key: key_id,
                reason: e.to_string(),
            })
        }
    };
    if binding.key_id != key_id {
        return SigOutcome::Failed(Refusal::TrustedComment {
            key: key_id,
            reason: format!("comment names key {}", binding.key_id),
        });
    }
    if binding.statement != *statement_hash {
        return SigOutcome::Failed(Refusal::TrustedComment {
            key: key_id,
            reason: "statement hash differs".into(),
        });
    }
    if binding.remote != policy.remote {
        return SigOutcome::Failed(Refusal::WrongRemote {
            expected: policy.remote.to_string(),
            found: binding.remote.to_string(),
        });
    }
    if !trusted.scope.allows(&policy.remote) {
        return SigOutcome::Failed(Refusal::KeyNotScoped(key_id));
    }
    if trusted.not_after.is_some_and(|t| now > t) {
        return SigOutcome::Failed(Refusal::KeyExpired(key_id));
    }
    SigOutcome::Counted(binding, trusted.key.bytes)
}

/// Checks signatures and thresholds, then parses the statement. Does not
/// apply freshness or rollback rules (see [`verify_release`]); `npcnix log`
/// uses this to audit history.
pub fn verify_signatures(
    policy: &Policy,
    bundle_bytes: &[u8],
    now: u64,
) -> Result<VerifiedRelease, Refusal> {
    let bundle = Bundle::decode(bundle_bytes).map_err(Refusal::Bundle)?;
    let statement_hash = Digest::of(&bundle.statement);

    let mut counted: Vec<(Binding, [u8; 32])> = Vec::new();
    let mut ignored = Vec::new();
    let mut failures = Vec::new();
    for text in &bundle.signatures {
        match check_signature(policy, &bundle.statement, &statement_hash, text, now) {
            SigOutcome::Counted(b, pk) => {
                // Distinct keys: the same Ed25519 key under two IDs or
                // signing twice counts once.
                if !counted.iter().any(|(_, k)| *k == pk) {
                    counted.push((b, pk));
                }
            }
            SigOutcome::Ignored(id) => ignored.extend(id),
            SigOutcome::Failed(r) => failures.push(r),
        }
    }

    let need = policy.threshold.max(1);
    if counted.len() < need {
        // Explain with the most specific failure: a trusted key's bad
        // signature or binding says more than "not enough signatures".
        if let Some(r) = failures.into_iter().next() {
            return Err(r);
        }
        if counted.is_empty() {
            return Err(Refusal::UntrustedKey(ignored));
        }
        return Err(Refusal::Threshold {
            got: counted.len(),
            need,
        });
    }

    let version = counted[0].0.version;
    if let Some((b, _)) = counted.iter().find(|(b, _)| b.version != version) {
        return Err(Refusal::TrustedComment {
            key: b.key_id,
            reason: "signatures disagree on the version".into(),
        });
    }

    let statement = Statement::parse(&bundle.statement).map_err(Refusal::Statement)?;
    if statement.remote != policy.remote {
        return Err(Refusal::WrongRemote {
            expected: policy.remote.to_string(),
            found: statement.remote.to_string(),
        });
    }
    if statement.version != version {
        return Err(Refusal::TrustedComment {
            key: counted[0].0.key_id,
            reason: format!(
                "comment says version {version}, statement says {}",
                statement.version
            ),
        });
    }
    let mut signers: Vec<KeyId> = counted.iter().map(|(b, _)| b.key_id).collect();
    signers.sort();
    for f in &failures {
        if let Refusal::KeyNotScoped(k) | Refusal::KeyExpired(k) | Refusal::BadSignature(k) = f {
            ignored.push(*k);
        }
    }
    ignored.sort();
    ignored.dedup();
    Ok(VerifiedRelease {
        statement,
        statement_bytes: bundle.statement,
        statement_hash,
        signatures: bundle.signatures,
        signers,
        ignored,
        timestamp: bundle.timestamp,
        fresh: None,
    })
}

/// The distinct keys among `keys` (scoped to `remote`, within their
/// `not_after`) whose signature in `texts` verifies over `bytes` with
/// exactly the trusted comment `comment(key)`, and why the others did not
/// count. For the small signed objects beside a release (timestamps,
/// rollout decisions); `role` names their keys in the reasons.
pub(crate) fn count_signers(
    bytes: &[u8],
    texts: &[String],
    keys: &[TrustedKey],
    remote: &crate::format::remote::RemoteName,
    now: u64,
    role: &str,
    comment: impl Fn(KeyId) -> String,
) -> (Vec<KeyId>, Vec<String>) {
    let mut counted: Vec<([u8; 32], KeyId)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for text in texts {
        let Some(key_id) = signature_key_id(text) else {
            problems.push("an undecodable signature".into());
            continue;
        };
        let Ok(sig) = minisign_verify::Signature::decode(text) else {
            problems.push(format!("key {key_id}: undecodable signature"));
            continue;
        };
        let verified = keys.iter().filter(|k| k.key.key_id == key_id).find(|k| {
            k.key
                .to_verifier()
                .is_ok_and(|pk| pk.verify(bytes, &sig, false).is_ok())
        });
        let Some(k) = verified else {
            problems.push(format!(
                "key {key_id} is not a {role} key of this remote, or its signature does not verify"
            ));
            continue;
        };
        if sig.trusted_comment() != comment(key_id) {
            problems.push(format!(
                "key {key_id}: the trusted comment binds another {role} object"
            ));
            continue;
        }
        if !k.scope.allows(remote) {
            problems.push(format!("key {key_id} is not scoped to this remote"));
            continue;
        }
        if k.not_after.is_some_and(|t| now > t) {
            problems.push(format!("key {key_id} is past its not_after date"));
            continue;
        }
        if !counted.iter().any(|(pk, _)| *pk == k.key.bytes) {
            counted.push((k.key.bytes, key_id));
        }
    }
    (counted.into_iter().map(|(_, id)| id).collect(), problems)
}

/// With `policy.freshness`: the release's timestamp, signed by at least the
/// threshold of distinct timestamp keys scoped to the remote, names exactly
/// this release, is not dated in the future, is unexpired, and is not older
/// than the newest one this host accepted. `Ok(None)`: not required.
pub fn check_freshness(
    policy: &Policy,
    release: &VerifiedRelease,
    now: u64,
) -> Result<Option<Fresh>, Refusal> {
    let Some(f) = &policy.freshness else {
        return Ok(None);
    };
    let Some(ts) = &release.timestamp else {
        return Err(Refusal::Timestamp(format!(
            "version {} carries no freshness timestamp, and this host requires one (policy.freshness): its timestamp keys must sign one (`npcnix timestamp`)",
            release.version()
        )));
    };
    let (counted, problems) = count_signers(
        &ts.bytes,
        &ts.signatures,
        &f.keys,
        &policy.remote,
        now,
        "timestamp",
        |key| timestamp::trusted_comment(&ts.bytes, key),
    );
    let need = f.threshold.max(1);
    if counted.len() < need {
        return Err(Refusal::Timestamp(format!(
            "the timestamp has {} valid signature(s) from distinct timestamp keys, {need} required{}",
            counted.len(),
            if problems.is_empty() {
                String::new()
            } else {
                format!(" ({})", problems.join("; "))
            }
        )));
    }
    let t = Timestamp::parse(&ts.bytes).map_err(|e| Refusal::Timestamp(e.to_string()))?;
    if t.remote != policy.remote
        || t.version != release.version()
        || t.statement != release.statement_hash
    {
        return Err(Refusal::Timestamp(format!(
            "the timestamp is for {} version {} (statement {}), not this release (version {}, statement {})",
            t.remote,
            t.version,
            t.statement,
            release.version(),
            release.statement_hash
        )));
    }
    if t.created > now.saturating_add(policy.max_future_skew_secs) {
        return Err(Refusal::Timestamp(format!(
            "the timestamp is dated {}, more than {} s ahead of this host's clock",
            crate::format::time::rfc3339(t.created),
            policy.max_future_skew_secs
        )));
    }
    if now >= t.expires {
        return Err(Refusal::TimestampExpired {
            expires: t.expires,
            now,
        });
    }
    if t.expires - t.created > f.max_lifetime_secs {
        return Err(Refusal::Timestamp(format!(
            "the timestamp is valid for {}, longer than this host accepts ({}, policy.freshness.max_lifetime_secs)",
            crate::format::time::duration_words(t.expires - t.created),
            crate::format::time::duration_words(f.max_lifetime_secs)
        )));
    }
    if let Some((version, created)) = f.floor {
        if t.version < version || (t.version == version && t.created < created) {
            return Err(Refusal::TimestampReplay {
                created: t.created,
                floor: created,
            });
        }
    }
    let mut signers = counted;
    signers.sort();
    Ok(Some(Fresh {
        created: t.created,
        expires: t.expires,
        signers,
    }))
}

/// The freshness and rollback rules applied to a statement whose signatures
/// verified.
pub fn check_policy(
    policy: &Policy,
    seen: Option<Seen>,
    release: &VerifiedRelease,
    now: u64,
) -> Result<bool, Refusal> {
    let st = &release.statement;
    match st.expires {
        Some(expires) if now >= expires => return Err(Refusal::Expired { expires, now }),
        None if policy.expiry == ExpiryPolicy::Required => return Err(Refusal::ExpiryRequired),
        _ => {}
    }
    if st.created > now.saturating_add(policy.max_future_skew_secs) {
        return Err(Refusal::FutureDated {
            created: st.created,
            now,
            skew: policy.max_future_skew_secs,
        });
    }
    if st.version < policy.min_version {
        return Err(Refusal::BelowFloor {
            offered: st.version,
            floor: policy.min_version,
        });
    }
    let Some(seen) = seen else {
        // First contact: no history yet, so a jump cap counts from the floor
        // the host was given (`npcnix install` pins the head it verified):
        // a key holder cannot move a fresh host straight to 2^53-1.
        if let Some(max) = policy.max_version_jump {
            if st.version - policy.min_version > max {
                return Err(Refusal::FastForward {
                    offered: st.version,
                    seen: policy.min_version,
                    max,
                });
            }
        }
        return Ok(true);
    };
    if st.version < seen.version {
        return Err(Refusal::Rollback {
            offered: st.version,
            seen: seen.version,
        });
    }
    if st.version == seen.version {
        if release.statement_hash == seen.statement {
            return Ok(false);
        }
        return Err(Refusal::Equivocation {
            version: st.version,
            seen: seen.statement,
            offered: release.statement_hash,
        });
    }
    // The direct successor of what we hold must link to it: a cheap fork
    // check that needs no extra requests.
    if st.version == seen.version + 1 && st.previous != Some(seen.statement) {
        return Err(Refusal::Fork {
            version: st.version,
            parent: seen.version,
        });
    }
    if let Some(max) = policy.max_version_jump {
        if st.version - seen.version > max {
            return Err(Refusal::FastForward {
                offered: st.version,
                seen: seen.version,
                max,
            });
        }
    }
    Ok(true)
}

/// Full verification of a bundle for this host (`docs/protocol.md`, section
/// 6, steps 1-5).
pub fn verify_release(
    policy: &Policy,
    seen: Option<Seen>,
    bundle_bytes: &[u8],
    now: u64,
) -> Result<Verdict, Refusal> {
    let mut release = verify_signatures(policy, bundle_bytes, now)?;
    let new = check_policy(policy, seen, &release, now)?;
    release.fresh = check_freshness(policy, &release, now)?;
    if new {
        Ok(Verdict::New(release))
    } else {
        Ok(Verdict::Current(release))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::New(r) => write!(f, "new release {}", r.statement.version),
            Verdict::Current(r) => write!(f, "release {} (already verified)", r.statement.version),
        }
    }
}

/// Distinct key IDs, for reports.
pub fn key_ids(keys: &[TrustedKey]) -> BTreeSet<KeyId> {
    keys.iter().map(|k| k.key.key_id).collect()
}

#[cfg(test)]
mod tests;
