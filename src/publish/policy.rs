//! The remote policy file (`npcnix-policy.json`, checked into the fleet's
//! repository): for each remote, the keys its hosts pin and the threshold
//! they require. The NixOS module reads it (`services.npcnix.policyFile`)
//! to render the hosts' config, and publishers read the same file, so a
//! k-of-n remote is never published as if it were 1-of-n because someone
//! forgot `--threshold` (D112).
//!
//! ```json
//! {
//!   "format": "npcnix-policy/v1",
//!   "remotes": {
//!     "prod": {
//!       "threshold": 2,
//!       "keys": [
//!         { "public_key": "RWQ...", "comment": "alice (offline)" },
//!         { "public_key": "RWT...", "comment": "bob (offline)", "not_after": 1830000000 }
//!       ],
//!       "max_version_jump": 1000,
//!       "timestamp": { "threshold": 1, "keys": [ { "public_key": "RWS...", "comment": "online timestamp key" } ] }
//!     }
//!   }
//! }
//! ```
//!
//! Parsing is strict (unknown fields are errors: a typo must not drop a
//! key or a threshold) and bounded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::keys::PublicKey;
use crate::format::remote::RemoteName;
use crate::verify::{Freshness, KeyScope, Policy, TrustedKey};

pub const POLICY_FORMAT: &str = "npcnix-policy/v1";
/// Where a flake keeps its policy file.
pub const POLICY_FILE: &str = "npcnix-policy.json";
/// Policy files are small; a bigger one is refused unread.
pub const POLICY_MAX_BYTES: u64 = 256 * 1024;

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub format: String,
    pub remotes: BTreeMap<String, RemotePolicy>,
}

/// One remote's keys and threshold, as its hosts have them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemotePolicy {
    pub threshold: usize,
    pub keys: Vec<PolicyKey>,
    #[serde(default)]
    pub max_version_jump: Option<u64>,
    /// The timestamp role: with it, hosts require an unexpired timestamp
    /// signed by `threshold` of these keys (D126).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<RolePolicy>,
    /// The rollout role: keys that sign promotions of gated stages and
    /// halts, `threshold` of them (issue 35, D130).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolePolicy>,
}

/// A role's keys (timestamp, rollout) and their threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePolicy {
    #[serde(default = "one")]
    pub threshold: usize,
    pub keys: Vec<PolicyKey>,
}

fn one() -> usize {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyKey {
    /// The `RW...` line of the key's `.pub` file.
    pub public_key: String,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub not_after: Option<u64>,
}

/// Why a policy file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file is not valid {POLICY_FORMAT} JSON: {0}")]
    Parse(String),
    #[error("policy file format is {0:?}, expected {POLICY_FORMAT:?}")]
    Format(String),
    #[error("the policy file has no entry for remote {0:?} (it lists: {1})")]
    NoRemote(String, String),
    #[error("remote {remote:?}: {problem}")]
    Invalid { remote: String, problem: String },
}

impl PolicyFile {
    /// Strictly parses a policy file's bytes (the caller bounds the read).
    pub fn parse(bytes: &[u8]) -> Result<PolicyFile, PolicyError> {
        let f: PolicyFile =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if f.format != POLICY_FORMAT {
            return Err(PolicyError::Format(f.format));
        }
        Ok(f)
    }

    /// The verification policy of `remote`: its keys, scoped to it, and its
    /// threshold (other rules at their defaults).
    pub fn policy_for(&self, remote: &RemoteName) -> Result<Policy, PolicyError> {
        let Some(rp) = self.remotes.get(remote.as_str()) else {
            return Err(PolicyError::NoRemote(
                remote.to_string(),
                self.remotes.keys().cloned().collect::<Vec<_>>().join(", "),
            ));
        };
        let invalid = |problem: String| PolicyError::Invalid {
            remote: remote.to_string(),
            problem,
        };
        let mut keys = Vec::new();
        for (i, k) in rp.keys.iter().enumerate() {
            let key = PublicKey::from_base64(&k.public_key)
                .map_err(|e| invalid(format!("keys[{i}].public_key: {e}")))?;
            if keys.iter().any(|t: &TrustedKey| t.key.bytes == key.bytes) {
                return Err(invalid(format!("keys[{i}]: the same key is listed twice")));
            }
            keys.push(TrustedKey {
                key,
                scope: KeyScope::Remotes(vec![remote.clone()]),
                not_after: k.not_after,
            });
        }
        if rp.threshold == 0 || rp.threshold > keys.len() {
            return Err(invalid(format!(
                "threshold {} with {} key(s): it must be 1 to the number of keys",
                rp.threshold,
                keys.len()
            )));
        }
        let mut p = Policy::manual(remote.clone(), Vec::new());
        p.threshold = rp.threshold;
        p.max_version_jump = rp.max_version_jump;
        if let Some(t) = &rp.timestamp {
            let mut ts_keys: Vec<TrustedKey> = Vec::new();
            for (i, k) in t.keys.iter().enumerate() {
                let key = PublicKey::from_base64(&k.public_key)
                    .map_err(|e| invalid(format!("timestamp.keys[{i}].public_key: {e}")))?;
                if keys
                    .iter()
                    .chain(&ts_keys)
                    .any(|t: &TrustedKey| t.key.bytes == key.bytes)
                {
                    return Err(invalid(format!(
                        "timestamp.keys[{i}]: the key is listed twice (a key has one role)"
                    )));
                }
                ts_keys.push(TrustedKey {
                    key,
                    scope: KeyScope::Remotes(vec![remote.clone()]),
                    not_after: k.not_after,
                });
            }
            if t.threshold == 0 || t.threshold > ts_keys.len() {
                return Err(invalid(format!(
                    "timestamp.threshold {} with {} key(s): it must be 1 to the number of keys",
                    t.threshold,
                    ts_keys.len()
                )));
            }
            p.freshness = Some(Freshness {
                keys: ts_keys,
                threshold: t.threshold,
                floor: None,
                max_lifetime_secs: crate::verify::DEFAULT_MAX_TIMESTAMP_LIFETIME_SECS,
            });
        }
        p.keys = keys;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        crate::format::keys::SecretKey::generate()
            .expect("key")
            .public_key()
            .to_base64()
    }

    #[test]
    fn a_remotes_keys_and_threshold_come_from_the_file() {
        let (a, b) = (key(), key());
        let text = format!(
            r#"{{"format":"npcnix-policy/v1","remotes":{{"prod":{{"threshold":2,"keys":[{{"public_key":"{a}"}},{{"public_key":"{b}","comment":"bob"}}],"max_version_jump":10}}}}}}"#
        );
        let f = PolicyFile::parse(text.as_bytes()).expect("parse");
        let p = f
            .policy_for(&RemoteName::new("prod").expect("name"))
            .expect("policy");
        assert_eq!(p.threshold, 2);
        assert_eq!(p.keys.len(), 2);
        assert_eq!(p.max_version_jump, Some(10));
        let e = f
            .policy_for(&RemoteName::new("dev").expect("name"))
            .expect_err("no dev");
        assert!(e.to_string().contains("it lists: prod"), "{e}");
    }

    #[test]
    fn a_typo_or_an_unreachable_threshold_is_an_error_not_a_weaker_policy() {
        let a = key();
        let typo = format!(
            r#"{{"format":"npcnix-policy/v1","remotes":{{"prod":{{"treshold":2,"threshold":1,"keys":[{{"public_key":"{a}"}}]}}}}}}"#
        );
        assert!(PolicyFile::parse(typo.as_bytes()).is_err());
        let high = format!(
            r#"{{"format":"npcnix-policy/v1","remotes":{{"prod":{{"threshold":2,"keys":[{{"public_key":"{a}"}}]}}}}}}"#
        );
        let f = PolicyFile::parse(high.as_bytes()).expect("parse");
        assert!(f
            .policy_for(&RemoteName::new("prod").expect("name"))
            .is_err());
    }
}
