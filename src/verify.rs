//! Release verification: a pure function from (policy, what this host has
//! seen, bundle bytes, now) to a verdict.
//!
//! The order is the security argument (see `docs/protocol.md`, "Verification
//! order"): size limit, then signatures and their trusted-comment bindings,
//! then — only once enough trusted keys have vouched for the exact bytes —
//! the statement is parsed, and then remote, freshness and rollback policy
//! are applied. No I/O happens here; the caller fetches bytes and records
//! outcomes.

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::bundle::{Bundle, BundleError};
use crate::keys::{KeyId, PublicKey};
use crate::statement::{Binding, Digest, RemoteName, Statement, StatementError};

/// Which remotes a trusted key may sign for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyScope {
    /// Any remote (only for keys given on the command line of a manual
    /// `pull`/`verify`, or written as `"*"` in the host config).
    AnyRemote,
    /// Exactly these remotes.
    Remotes(Vec<RemoteName>),
}

impl KeyScope {
    fn allows(&self, remote: &RemoteName) -> bool {
        match self {
            KeyScope::AnyRemote => true,
            KeyScope::Remotes(list) => list.contains(remote),
        }
    }
}

/// A public key the host trusts, with its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub scope: KeyScope,
    /// Unix seconds after which signatures by this key no longer count.
    pub not_after: Option<u64>,
}

/// Whether releases must carry an expiry time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryPolicy {
    /// Honour `expires` when present.
    Optional,
    /// Refuse releases without `expires` (freeze-attack defence).
    Required,
}

/// Everything that decides whether a release is acceptable to this host.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The remote this host follows: the signed identity releases must name.
    pub remote: RemoteName,
    pub keys: Vec<TrustedKey>,
    /// Distinct trusted keys (scoped to `remote`) that must sign.
    pub threshold: usize,
    pub expiry: ExpiryPolicy,
    /// How far in the future `created` may be (clock skew allowance).
    pub max_future_skew_secs: u64,
    /// Never accept a version below this floor.
    pub min_version: u64,
    /// Refuse a release more than this many versions ahead of the highest
    /// one seen (fast-forward defence); `None` disables the check.
    pub max_version_jump: Option<u64>,
}

/// Default allowance for clocks running behind the publisher's.
pub const DEFAULT_MAX_FUTURE_SKEW_SECS: u64 = 600;

impl Policy {
    /// A policy for manual commands: the given keys for any remote,
    /// threshold 1, default freshness rules.
    pub fn manual(remote: RemoteName, keys: Vec<PublicKey>) -> Policy {
        Policy {
            remote,
            keys: keys
                .into_iter()
                .map(|key| TrustedKey {
                    key,
                    scope: KeyScope::AnyRemote,
                    not_after: None,
                })
                .collect(),
            threshold: 1,
            expiry: ExpiryPolicy::Optional,
            max_future_skew_secs: DEFAULT_MAX_FUTURE_SKEW_SECS,
            min_version: 0,
            max_version_jump: None,
        }
    }
}

/// The highest release this host has verified for the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub version: u64,
    pub statement: Digest,
}

/// Why a release was refused. `check()` names the failed check in a stable,
/// machine-readable way (audit log, `--json`, tests).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Bundle(BundleError),
    #[error("no signature by a trusted key (signed by: {})", list_ids(.0))]
    UntrustedKey(Vec<KeyId>),
    #[error("signature by key {0} does not verify")]
    BadSignature(KeyId),
    #[error("a signature could not be decoded")]
    UndecodableSignature,
    #[error(
        "the trusted comment of key {key}'s signature does not bind this statement ({reason})"
    )]
    TrustedComment { key: KeyId, reason: String },
    #[error("release is for remote {found:?}, this host follows {expected:?}")]
    WrongRemote { expected: String, found: String },
    #[error("key {0} is trusted, but not for this remote")]
    KeyNotScoped(KeyId),
    #[error("key {0} is past its not_after date")]
    KeyExpired(KeyId),
    #[error("{got} valid signature(s) from distinct trusted keys, {need} required")]
    Threshold { got: usize, need: usize },
    #[error("{0}")]
    Statement(StatementError),
    #[error("release expired at {} (now {})", crate::fsutil::rfc3339(*.expires), crate::fsutil::rfc3339(*.now))]
    Expired { expires: u64, now: u64 },
    #[error("release has no expiry time and policy requires one")]
    ExpiryRequired,
    #[error("release created at {}, more than {skew}s after now ({})", crate::fsutil::rfc3339(*.created), crate::fsutil::rfc3339(*.now))]
    FutureDated { created: u64, now: u64, skew: u64 },
    #[error("version {offered} is older than version {seen} already verified")]
    Rollback { offered: u64, seen: u64 },
    #[error("version {offered} is below the pinned minimum version {floor}")]
    BelowFloor { offered: u64, floor: u64 },
    #[error(
        "version {version} was already verified with a different statement ({seen}, now {offered})"
    )]
    Equivocation {
        version: u64,
        seen: Digest,
        offered: Digest,
    },
    #[error("version {version} does not descend from version {parent} this host verified")]
    Fork { version: u64, parent: u64 },
    #[error("version {offered} jumps more than {max} versions past {seen}")]
    FastForward { offered: u64, seen: u64, max: u64 },
    #[error("the chain from version {from} to {to} is broken at version {at}: {reason}")]
    Chain {
        from: u64,
        to: u64,
        at: u64,
        reason: String,
    },
}

fn list_ids(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        return "no readable key id".into();
    }
    ids.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Rejection {
    /// Stable name of the failed check.
    pub fn check(&self) -> &'static str {
        match self {
            Rejection::Bundle(BundleError::TooLarge) => "bundle-size",
            Rejection::Bundle(BundleError::NoSignatures) => "no-signatures",
            Rejection::Bundle(_) => "bundle-format",
            Rejection::UntrustedKey(_) => "untrusted-key",
            Rejection::BadSignature(_) | Rejection::UndecodableSignature => "signature",
            Rejection::TrustedComment { .. } => "trusted-comment",
            Rejection::WrongRemote { .. } => "remote-mismatch",
            Rejection::KeyNotScoped(_) => "key-scope",
            Rejection::KeyExpired(_) => "key-expired",
            Rejection::Threshold { .. } => "threshold",
            Rejection::Statement(StatementError::UnknownType(_)) => "statement-type",
            Rejection::Statement(_) => "statement-format",
            Rejection::Expired { .. } => "expired",
            Rejection::ExpiryRequired => "expiry-required",
            Rejection::FutureDated { .. } => "future-dated",
            Rejection::Rollback { .. } => "rollback",
            Rejection::BelowFloor { .. } => "min-version",
            Rejection::Equivocation { .. } => "equivocation",
            Rejection::Fork { .. } => "fork",
            Rejection::FastForward { .. } => "fast-forward",
            Rejection::Chain { .. } => "chain",
        }
    }
}

/// A release whose signatures, binding and statement checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRelease {
    pub statement: Statement,
    pub statement_bytes: Vec<u8>,
    pub statement_hash: Digest,
    /// Distinct trusted keys whose signatures counted.
    pub signers: Vec<KeyId>,
    /// Key IDs of signatures that did not count (unknown keys, or keys not
    /// trusted for this remote): reported by `npcnix log`.
    pub ignored: Vec<KeyId>,
}

impl VerifiedRelease {
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

/// Outcome of checking one signature, kept to explain a failure.
enum SigOutcome {
    Counted(Binding, [u8; 32]),
    Ignored(Option<KeyId>),
    Failed(Rejection),
}

fn check_signature(
    policy: &Policy,
    statement_bytes: &[u8],
    statement_hash: &Digest,
    text: &str,
    now: u64,
) -> SigOutcome {
    let Some(key_id) = signature_key_id(text) else {
        return SigOutcome::Failed(Rejection::UndecodableSignature);
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
        return SigOutcome::Failed(Rejection::UndecodableSignature);
    };
    // `allow_legacy = false`: only prehashed (ED) signatures.
    let verified = candidates.into_iter().find(|k| {
        k.key
            .to_verifier()
            .is_ok_and(|pk| pk.verify(statement_bytes, &sig, false).is_ok())
    });
    let Some(trusted) = verified else {
        return SigOutcome::Failed(Rejection::BadSignature(key_id));
    };
    // The trusted comment is covered by the global signature just checked.
    let binding = match Binding::parse(sig.trusted_comment()) {
        Ok(b) => b,
        Err(e) => {
            return SigOutcome::Failed(Rejection::TrustedComment {
                key: key_id,
                reason: e.to_string(),
            })
        }
    };
    if binding.key_id != key_id {
        return SigOutcome::Failed(Rejection::TrustedComment {
            key: key_id,
            reason: format!("comment names key {}", binding.key_id),
        });
    }
    if binding.statement != *statement_hash {
        return SigOutcome::Failed(Rejection::TrustedComment {
            key: key_id,
            reason: "statement hash differs".into(),
        });
    }
    if binding.remote != policy.remote {
        return SigOutcome::Failed(Rejection::WrongRemote {
            expected: policy.remote.to_string(),
            found: binding.remote.to_string(),
        });
    }
    if !trusted.scope.allows(&policy.remote) {
        return SigOutcome::Failed(Rejection::KeyNotScoped(key_id));
    }
    if trusted.not_after.is_some_and(|t| now > t) {
        return SigOutcome::Failed(Rejection::KeyExpired(key_id));
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
) -> Result<VerifiedRelease, Rejection> {
    let bundle = Bundle::decode(bundle_bytes).map_err(Rejection::Bundle)?;
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
            return Err(Rejection::UntrustedKey(ignored));
        }
        return Err(Rejection::Threshold {
            got: counted.len(),
            need,
        });
    }

    let version = counted[0].0.version;
    if let Some((b, _)) = counted.iter().find(|(b, _)| b.version != version) {
        return Err(Rejection::TrustedComment {
            key: b.key_id,
            reason: "signatures disagree on the version".into(),
        });
    }

    let statement = Statement::parse(&bundle.statement).map_err(Rejection::Statement)?;
    if statement.remote != policy.remote {
        return Err(Rejection::WrongRemote {
            expected: policy.remote.to_string(),
            found: statement.remote.to_string(),
        });
    }
    if statement.version != version {
        return Err(Rejection::TrustedComment {
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
        if let Rejection::KeyNotScoped(k) | Rejection::KeyExpired(k) | Rejection::BadSignature(k) =
            f
        {
            ignored.push(*k);
        }
    }
    ignored.sort();
    ignored.dedup();
    Ok(VerifiedRelease {
        statement,
        statement_bytes: bundle.statement,
        statement_hash,
        signers,
        ignored,
    })
}

/// The freshness and rollback rules applied to a statement whose signatures
/// verified.
pub fn check_policy(
    policy: &Policy,
    seen: Option<Seen>,
    release: &VerifiedRelease,
    now: u64,
) -> Result<bool, Rejection> {
    let st = &release.statement;
    match st.expires {
        Some(expires) if now >= expires => return Err(Rejection::Expired { expires, now }),
        None if policy.expiry == ExpiryPolicy::Required => return Err(Rejection::ExpiryRequired),
        _ => {}
    }
    if st.created > now.saturating_add(policy.max_future_skew_secs) {
        return Err(Rejection::FutureDated {
            created: st.created,
            now,
            skew: policy.max_future_skew_secs,
        });
    }
    if st.version < policy.min_version {
        return Err(Rejection::BelowFloor {
            offered: st.version,
            floor: policy.min_version,
        });
    }
    let Some(seen) = seen else {
        return Ok(true);
    };
    if st.version < seen.version {
        return Err(Rejection::Rollback {
            offered: st.version,
            seen: seen.version,
        });
    }
    if st.version == seen.version {
        if release.statement_hash == seen.statement {
            return Ok(false);
        }
        return Err(Rejection::Equivocation {
            version: st.version,
            seen: seen.statement,
            offered: release.statement_hash,
        });
    }
    // The direct successor of what we hold must link to it: a cheap fork
    // check that needs no extra requests.
    if st.version == seen.version + 1 && st.previous != Some(seen.statement) {
        return Err(Rejection::Fork {
            version: st.version,
            parent: seen.version,
        });
    }
    if let Some(max) = policy.max_version_jump {
        if st.version - seen.version > max {
            return Err(Rejection::FastForward {
                offered: st.version,
                seen: seen.version,
                max,
            });
        }
    }
    Ok(true)
}

/// Full verification of a bundle for this host (brief section 4, steps 2-5).
pub fn verify_release(
    policy: &Policy,
    seen: Option<Seen>,
    bundle_bytes: &[u8],
    now: u64,
) -> Result<Verdict, Rejection> {
    let release = verify_signatures(policy, bundle_bytes, now)?;
    if check_policy(policy, seen, &release, now)? {
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
