//! What this host accepts: pinned keys with their scopes and dates, the
//! signature threshold, freshness rules and version floors. Built by the host
//! config (or a manual command's flags) and passed to the pure verifier.

use crate::format::digest::Digest;
use crate::format::keys::PublicKey;
use crate::format::remote::RemoteName;

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
    pub fn allows(&self, remote: &RemoteName) -> bool {
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
    /// Require an unexpired timestamp for exactly the release (D126);
    /// `None`: timestamps are ignored.
    pub freshness: Option<Freshness>,
}

/// The timestamp role: its own keys and threshold, and the newest
/// timestamp this host accepted (an older one is a replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Keys that may sign timestamps (and nothing else: they are never
    /// release keys).
    pub keys: Vec<TrustedKey>,
    pub threshold: usize,
    /// The newest timestamp accepted for this remote: (version, created).
    /// For that version, an older timestamp is a replay; a newer release's
    /// timestamp may be dated earlier (another signer's clock).
    pub floor: Option<(u64, u64)>,
    /// Longest lifetime (`expires - created`) accepted: a timestamp for
    /// years would switch freshness off.
    pub max_lifetime_secs: u64,
}

/// Default [`Freshness::max_lifetime_secs`]: a week.
pub const DEFAULT_MAX_TIMESTAMP_LIFETIME_SECS: u64 = 7 * 86_400;

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
            freshness: None,
        }
    }
}

/// The highest release this host has verified for the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub version: u64,
    pub statement: Digest,
}
