//! One refusal type for every "no" the host pipeline says, from the bundle's
//! size to the extracted archive's content.
//!
//! A [`Refusal`] carries the typed reason; [`Refusal::check`] names it with a
//! [`Check`], whose stable names (audit log, `--json`, tests, exit code 3)
//! are defined here and nowhere else. Decisions branch on properties
//! ([`Check::cause`]), never on names.

use std::fmt;

use crate::format::bundle::BundleError;
use crate::format::digest::Digest;
use crate::format::keys::KeyId;
use crate::format::statement::{ArchiveRef, StatementError};
use crate::format::time::rfc3339;

/// Why a release was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
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
    #[error("release expired at {} (now {})", rfc3339(*.expires), rfc3339(*.now))]
    Expired { expires: u64, now: u64 },
    #[error("release has no expiry time and policy requires one")]
    ExpiryRequired,
    #[error("release created at {}, more than {skew}s after now ({})", rfc3339(*.created), rfc3339(*.now))]
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
    #[error("release declares a {declared}-byte archive, above limits.archive_bytes ({limit})")]
    ArchiveOverLimit { declared: u64, limit: u64 },
    #[error("{0}")]
    Archive(ArchiveMismatch),
    #[error("{0}")]
    ArchiveContent(String),
    #[error("{0}")]
    ToplevelMissing(String),
    /// The built system would leave the host unable to receive the next
    /// release (see `docs/lockout.md`).
    #[error("{0}")]
    WouldLockOut(String),
    /// The release's `flake.lock` does not pin every input its `flake.nix`
    /// names: evaluating it would resolve inputs on this host (issue 30).
    #[error("{0}")]
    UnlockedInputs(String),
    /// No valid timestamp for exactly this release (missing, signed by too
    /// few timestamp keys, for another statement, dated in the future).
    #[error("{0}")]
    Timestamp(String),
    #[error("the release's freshness timestamp expired at {} (now {}): its timestamp keys must sign a new one (`npcnix timestamp`)", rfc3339(*.expires), rfc3339(*.now))]
    TimestampExpired { expires: u64, now: u64 },
    #[error("timestamp created at {} is older than one this host already accepted ({}): a replay", rfc3339(*.created), rfc3339(*.floor))]
    TimestampReplay { created: u64, floor: u64 },
    /// A promotion or halt in the store for this release that does not
    /// verify (forged, for another release or stage, future-dated): the
    /// host activates nothing that decision could bear on (issue 35).
    #[error("{0}")]
    RolloutDecision(String),
    /// The release is not in a checkpoint of the remote's log that enough
    /// witnesses cosigned (no log, too few cosignatures, no inclusion
    /// proof): what the rest of the world cannot see is not taken
    /// (issue 37).
    #[error("{0}")]
    Unwitnessed(String),
    /// The log's witnessed checkpoint is not an extension of the one this
    /// host (or witness) accepted before: a split view or a rewritten
    /// history.
    #[error("{0}")]
    LogInconsistent(String),
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

impl Refusal {
    /// The failed check.
    pub fn check(&self) -> Check {
        match self {
            Refusal::Bundle(BundleError::TooLarge) => Check::BundleSize,
            Refusal::Bundle(BundleError::NoSignatures) => Check::NoSignatures,
            Refusal::Bundle(_) => Check::BundleFormat,
            Refusal::UntrustedKey(_) => Check::UntrustedKey,
            Refusal::BadSignature(_) | Refusal::UndecodableSignature => Check::Signature,
            Refusal::TrustedComment { .. } => Check::TrustedComment,
            Refusal::WrongRemote { .. } => Check::RemoteMismatch,
            Refusal::KeyNotScoped(_) => Check::KeyScope,
            Refusal::KeyExpired(_) => Check::KeyExpired,
            Refusal::Threshold { .. } => Check::Threshold,
            Refusal::Statement(StatementError::UnknownType(_)) => Check::StatementType,
            Refusal::Statement(_) => Check::StatementFormat,
            Refusal::Expired { .. } => Check::Expired,
            Refusal::ExpiryRequired => Check::ExpiryRequired,
            Refusal::FutureDated { .. } => Check::FutureDated,
            Refusal::Rollback { .. } => Check::Rollback,
            Refusal::BelowFloor { .. } => Check::MinVersion,
            Refusal::Equivocation { .. } => Check::Equivocation,
            Refusal::Fork { .. } => Check::Fork,
            Refusal::FastForward { .. } => Check::FastForward,
            Refusal::Chain { .. } => Check::Chain,
            Refusal::ArchiveOverLimit { .. } => Check::ArchiveSize,
            Refusal::Archive(
                ArchiveMismatch::Hash { .. }
                | ArchiveMismatch::Subtree { .. }
                | ArchiveMismatch::Outboard { .. },
            ) => Check::ArchiveHash,
            Refusal::Archive(_) => Check::ArchiveSize,
            Refusal::ArchiveContent(_) => Check::ArchiveContent,
            Refusal::ToplevelMissing(_) => Check::ToplevelMissing,
            Refusal::WouldLockOut(_) => Check::WouldLockOut,
            Refusal::UnlockedInputs(_) => Check::UnlockedInputs,
            Refusal::Timestamp(_) => Check::Timestamp,
            Refusal::TimestampExpired { .. } => Check::TimestampExpired,
            Refusal::TimestampReplay { .. } => Check::TimestampReplay,
            Refusal::RolloutDecision(_) => Check::RolloutDecision,
            Refusal::Unwitnessed(_) => Check::Unwitnessed,
            Refusal::LogInconsistent(_) => Check::LogInconsistent,
        }
    }

    /// What can change this verdict for the same signed bytes (the check's
    /// cause, refined where one check has several).
    pub fn cause(&self) -> Cause {
        match self {
            Refusal::ArchiveOverLimit { .. } => Cause::HostConfig,
            r => r.check().cause(),
        }
    }

    /// A refusal about which keys signed, not about what they signed: what
    /// a key rotation explains (a release signed by the keys a host trusted
    /// before, for a system that trusts others).
    pub fn is_about_signers(&self) -> bool {
        matches!(
            self,
            Refusal::UntrustedKey(_)
                | Refusal::Threshold { .. }
                | Refusal::KeyNotScoped(_)
                | Refusal::KeyExpired(_)
        )
    }

    /// A refusal of the signed statement's content by the host's policy
    /// (expiry, dating, the version floor): reached only once the
    /// signatures verified, so the same bytes are refused whoever serves
    /// them.
    pub fn is_about_signed_content(&self) -> bool {
        matches!(
            self,
            Refusal::Expired { .. }
                | Refusal::ExpiryRequired
                | Refusal::FutureDated { .. }
                | Refusal::BelowFloor { .. }
        )
    }

    /// The one-line form every surface prints: `rejected (CHECK): MESSAGE`.
    pub fn line(&self) -> String {
        format!("rejected ({}): {self}", self.check())
    }
}

/// How a downloaded archive differs from what was signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveMismatch {
    #[error("archive is longer than the signed size of {signed} bytes")]
    Longer { signed: u64 },
    #[error("archive is {got} bytes, shorter than the signed size of {signed} bytes")]
    Shorter { got: u64, signed: u64 },
    #[error("archive BLAKE3 is {got}, the release signed {signed}")]
    Hash { got: Digest, signed: Digest },
    /// Verified streaming: the bytes `start..end` as served (or the
    /// outboard's nodes for them) do not hash into the signed tree.
    #[error("archive bytes {start}..{end} (or the store's outboard for them) do not hash into the signed BLAKE3 {signed}")]
    Subtree {
        start: u64,
        end: u64,
        signed: Digest,
    },
    /// Verified streaming: the store's outboard cannot be this archive's.
    #[error("the store's outboard does not fit the signed archive: {detail}")]
    Outboard { detail: String },
}

impl ArchiveMismatch {
    /// Compares a whole archive's size and hash with the signed ones.
    pub fn between(got: &ArchiveRef, signed: &ArchiveRef) -> Option<ArchiveMismatch> {
        if got.size > signed.size {
            Some(ArchiveMismatch::Longer {
                signed: signed.size,
            })
        } else if got.size < signed.size {
            Some(ArchiveMismatch::Shorter {
                got: got.size,
                signed: signed.size,
            })
        } else if got.blake3 != signed.blake3 {
            Some(ArchiveMismatch::Hash {
                got: got.blake3,
                signed: signed.blake3,
            })
        } else {
            None
        }
    }
}

/// What can turn a refusal into an acceptance without a new signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The signed bytes themselves: only a new release changes the verdict.
    Release,
    /// What this host has verified before (rollback, equivocation, fork,
    /// jumps): only a new release, or an operator's `state reset`.
    History,
    /// The host's own configuration (keys, threshold, scopes, floors, limits,
    /// expiry policy): editing it re-judges the same bytes.
    HostConfig,
    /// The store or a binary cache, which can repair it under the same
    /// signature (a missing or damaged archive, a missing intermediate
    /// release or system path).
    Store,
    /// The clock: a release dated in the future becomes acceptable, an
    /// expired one never does.
    Time,
}

/// A named verification check. The names are part of the interface (audit
/// log, `--json`, docs/protocol.md section 6) and are defined only here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    BundleSize,
    NoSignatures,
    BundleFormat,
    UntrustedKey,
    Signature,
    TrustedComment,
    RemoteMismatch,
    KeyScope,
    KeyExpired,
    Threshold,
    StatementType,
    StatementFormat,
    Expired,
    ExpiryRequired,
    FutureDated,
    Rollback,
    MinVersion,
    Equivocation,
    Fork,
    FastForward,
    Chain,
    Unwitnessed,
    LogInconsistent,
    ArchiveSize,
    ArchiveHash,
    ArchiveContent,
    ToplevelMissing,
    Timestamp,
    TimestampExpired,
    TimestampReplay,
    RolloutDecision,
    UnlockedInputs,
    WouldLockOut,
}

impl Check {
    /// Every check, in verification order.
    pub const ALL: [Check; 33] = [
        Check::BundleSize,
        Check::NoSignatures,
        Check::BundleFormat,
        Check::UntrustedKey,
        Check::Signature,
        Check::TrustedComment,
        Check::RemoteMismatch,
        Check::KeyScope,
        Check::KeyExpired,
        Check::Threshold,
        Check::StatementType,
        Check::StatementFormat,
        Check::Expired,
        Check::ExpiryRequired,
        Check::FutureDated,
        Check::Rollback,
        Check::MinVersion,
        Check::Equivocation,
        Check::Fork,
        Check::FastForward,
        Check::Chain,
        Check::Unwitnessed,
        Check::LogInconsistent,
        Check::ArchiveSize,
        Check::ArchiveHash,
        Check::ArchiveContent,
        Check::ToplevelMissing,
        Check::Timestamp,
        Check::TimestampExpired,
        Check::TimestampReplay,
        Check::RolloutDecision,
        Check::UnlockedInputs,
        Check::WouldLockOut,
    ];

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Check::BundleSize => "bundle-size",
            Check::NoSignatures => "no-signatures",
            Check::BundleFormat => "bundle-format",
            Check::UntrustedKey => "untrusted-key",
            Check::Signature => "signature",
            Check::TrustedComment => "trusted-comment",
            Check::RemoteMismatch => "remote-mismatch",
            Check::KeyScope => "key-scope",
            Check::KeyExpired => "key-expired",
            Check::Threshold => "threshold",
            Check::StatementType => "statement-type",
            Check::StatementFormat => "statement-format",
            Check::Expired => "expired",
            Check::ExpiryRequired => "expiry-required",
            Check::FutureDated => "future-dated",
            Check::Rollback => "rollback",
            Check::MinVersion => "min-version",
            Check::Equivocation => "equivocation",
            Check::Fork => "fork",
            Check::FastForward => "fast-forward",
            Check::Chain => "chain",
            Check::Unwitnessed => "unwitnessed",
            Check::LogInconsistent => "log-inconsistent",
            Check::ArchiveSize => "archive-size",
            Check::ArchiveHash => "archive-hash",
            Check::ArchiveContent => "archive-content",
            Check::ToplevelMissing => "toplevel-missing",
            Check::Timestamp => "timestamp",
            Check::TimestampExpired => "timestamp-expired",
            Check::TimestampReplay => "timestamp-replay",
            Check::RolloutDecision => "rollout-decision",
            Check::UnlockedInputs => "unlocked-inputs",
            Check::WouldLockOut => "would-lock-out",
        }
    }

    /// Looks a check up by its stable name.
    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What can change this check's verdict for the same signed bytes.
    pub fn cause(self) -> Cause {
        match self {
            Check::BundleSize
            | Check::NoSignatures
            | Check::BundleFormat
            | Check::Signature
            | Check::TrustedComment
            | Check::RemoteMismatch
            | Check::StatementType
            | Check::StatementFormat
            | Check::ArchiveContent
            | Check::UnlockedInputs
            | Check::WouldLockOut => Cause::Release,
            Check::UntrustedKey
            | Check::KeyScope
            | Check::Threshold
            | Check::ExpiryRequired
            | Check::MinVersion => Cause::HostConfig,
            Check::Expired | Check::KeyExpired | Check::FutureDated | Check::TimestampExpired => {
                Cause::Time
            }
            Check::Rollback
            | Check::Equivocation
            | Check::Fork
            | Check::FastForward
            | Check::TimestampReplay
            | Check::LogInconsistent => Cause::History,
            Check::Chain
            | Check::ArchiveSize
            | Check::ArchiveHash
            | Check::ToplevelMissing
            | Check::Timestamp
            | Check::RolloutDecision
            | Check::Unwitnessed => Cause::Store,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = Check::ALL.iter().map(|c| c.name()).collect();
        for c in Check::ALL {
            assert_eq!(Check::from_name(c.name()), Some(c));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Check::ALL.len());
        assert_eq!(Check::from_name("no-such-check"), None);
    }
}
