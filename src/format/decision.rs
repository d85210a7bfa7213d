//! Rollout decisions (issue 35): a signed promotion opens one gated stage of
//! a release's rollout wave; a signed halt keeps every stage that is not
//! open yet closed. Both are signed by the remote's rollout keys (role
//! `rollout`, D130) and name exactly one release (remote, version,
//! statement hash), so a store can withhold or replay them (delay) but never
//! make one open a stage of another release. Exact bytes:
//!
//! ```json
//! {"type":"npcnix-rollout-decision/v1","remote":"prod","version":12,"statement":"<BLAKE3>","action":"promote","stage":"early","created":1800000000,"evidence":{"hosts":20,"confirmed":19,"rolled_back":0,"required_percent":95}}
//! ```
//!
//! They live next to the release log, at
//! `rollouts/<version, 20 digits>/promote-<stage>.json` and
//! `rollouts/<version, 20 digits>/halt.json`, as a small envelope
//! `{"decision": base64(bytes), "signatures": [minisign texts]}`; each
//! signature is prehashed and its trusted comment is exactly
//! `npcnix-rollout-decision/v1 decision=<BLAKE3 of the bytes> key=<KEYID>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::keys::KeyId;
use super::remote::RemoteName;

pub const DECISION_TYPE: &str = "npcnix-rollout-decision/v1";
/// Largest envelope read (the decision and up to [`MAX_SIGNATURES`]).
pub const DECISION_MAX_BYTES: usize = 8 * 1024;
/// Most signatures in an envelope.
pub const MAX_SIGNATURES: usize = 8;
/// Longest halt reason.
pub const MAX_REASON: usize = 200;

/// What a decision does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Opens the gated stage `stage`.
    Promote,
    /// Keeps every stage not open yet closed; hosts already running the
    /// release keep it.
    Halt,
}

/// What the promoter saw in the receipts of the earlier stages (signed, so
/// an auditor reads the grounds of each promotion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Hosts in the earlier stages (receipts, pinned and remembered hosts).
    pub hosts: u64,
    /// Of them, hosts that run the release and no longer watch it
    /// (probation confirmed).
    pub confirmed: u64,
    /// Of them, hosts that rolled it back (marked it bad).
    pub rolled_back: u64,
    pub required_percent: u32,
}

/// A promotion or a halt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(rename = "type")]
    pub kind: String,
    pub remote: RemoteName,
    pub version: u64,
    /// BLAKE3 of the release statement's bytes.
    pub statement: Digest,
    pub action: Action,
    /// The stage a promotion opens (absent in a halt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Why (a halt's reason, shown on hosts and in `fleet status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why bytes are not a decision.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("rollout decision is larger than {DECISION_MAX_BYTES} bytes")]
    TooLarge,
    #[error("rollout decision envelope: {0}")]
    Envelope(String),
    #[error("rollout decision is not valid: {0}")]
    Malformed(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    decision: String,
    signatures: Vec<String>,
}

/// A stage name: 1-32 characters from `a-z 0-9 -`, starting with a letter
/// (it names a store object and appears in logs).
pub fn is_stage_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A stage name held by value (the host's lifecycle types are `Copy`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StageName {
    len: u8,
    bytes: [u8; 32],
}

impl StageName {
    /// `None` unless [`is_stage_name`].
    pub fn new(s: &str) -> Option<StageName> {
        if !is_stage_name(s) {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(StageName {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The store key (under the remote's prefix) of a release's promotion of
/// `stage`.
pub fn promotion_key(version: u64, stage: &str) -> String {
    format!("rollouts/{version:020}/promote-{stage}.json")
}

/// The store key of a release's halt.
pub fn halt_key(version: u64) -> String {
    format!("rollouts/{version:020}/halt.json")
}

impl Decision {
    /// The canonical bytes: compact JSON in field order, then `\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Strict: the exact type, no unknown or duplicate fields, a valid stage
    /// exactly for a promotion, plain short reason. Call only after the
    /// signatures verified.
    pub fn parse(bytes: &[u8]) -> Result<Decision, DecisionError> {
        if bytes.len() > DECISION_MAX_BYTES {
            return Err(DecisionError::TooLarge);
        }
        let d: Decision =
            serde_json::from_slice(bytes).map_err(|e| DecisionError::Malformed(e.to_string()))?;
        if d.kind != DECISION_TYPE {
            return Err(DecisionError::Malformed(format!(
                "unknown type {:?} (expected {DECISION_TYPE:?})",
                d.kind
            )));
        }
        if d.version == 0 {
            return Err(DecisionError::Malformed("version 0".into()));
        }
        match (d.action, &d.stage) {
            (Action::Promote, Some(s)) if is_stage_name(s) => {}
            (Action::Promote, _) => {
                return Err(DecisionError::Malformed(
                    "a promotion names a valid stage".into(),
                ))
            }
            (Action::Halt, None) => {}
            (Action::Halt, Some(_)) => {
                return Err(DecisionError::Malformed("a halt names no stage".into()))
            }
        }
        if d.reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REASON || !super::text::is_plain(r))
        {
            return Err(DecisionError::Malformed(format!(
                "the reason must be plain text of at most {MAX_REASON} bytes"
            )));
        }
        if d.created > super::time::MAX_TIME {
            return Err(DecisionError::Malformed("created is past year 9999".into()));
        }
        Ok(d)
    }
}

/// The trusted comment that binds a decision signature.
pub fn trusted_comment(decision_bytes: &[u8], key: KeyId) -> String {
    format!(
        "{DECISION_TYPE} decision={} key={key}",
        Digest::of(decision_bytes)
    )
}

/// The envelope bytes for signed decision bytes.
pub fn encode(decision_bytes: &[u8], signatures: &[String]) -> Vec<u8> {
    let env = Envelope {
        decision: B64.encode(decision_bytes),
        signatures: signatures.to_vec(),
    };
    let mut v = serde_json::to_vec(&env).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Splits an envelope into (decision bytes, signature texts), bounded.
/// Nothing in it is trusted yet.
pub fn decode(bytes: &[u8]) -> Result<(Vec<u8>, Vec<String>), DecisionError> {
    if bytes.len() > DECISION_MAX_BYTES {
        return Err(DecisionError::TooLarge);
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| DecisionError::Envelope(e.to_string()))?;
    if env.signatures.is_empty() || env.signatures.len() > MAX_SIGNATURES {
        return Err(DecisionError::Envelope(format!(
            "1 to {MAX_SIGNATURES} signatures expected, found {}",
            env.signatures.len()
        )));
    }
    let decision = B64
        .decode(env.decision.as_bytes())
        .map_err(|e| DecisionError::Envelope(e.to_string()))?;
    Ok((decision, env.signatures))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promotion() -> Decision {
        Decision {
            kind: DECISION_TYPE.into(),
            remote: RemoteName::new("prod").expect("name"),
            version: 12,
            statement: Digest::of(b"statement"),
            action: Action::Promote,
            stage: Some("early".into()),
            created: 1_800_000_000,
            evidence: Some(Evidence {
                hosts: 20,
                confirmed: 19,
                rolled_back: 0,
                required_percent: 95,
            }),
            reason: None,
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let d = promotion();
        let b = d.to_bytes();
        assert_eq!(Decision::parse(&b), Ok(d));
        assert!(b.starts_with(
            b"{\"type\":\"npcnix-rollout-decision/v1\",\"remote\":\"prod\",\"version\":12,"
        ));
        let env = encode(&b, &["sig".into()]);
        assert_eq!(decode(&env), Ok((b, vec!["sig".to_owned()])));
    }

    #[test]
    fn hostile_decisions_are_refused() {
        let b = String::from_utf8(promotion().to_bytes()).expect("utf8");
        for bad in [
            b.replace("npcnix-rollout-decision/v1", "npcnix-release/v1"),
            b.replace("\"stage\":\"early\",", ""),
            b.replace("\"early\"", "\"../x\""),
            b.replace("\"promote\"", "\"halt\""),
            b.replace("\"promote\"", "\"open-all\""),
            b.replace("}}", "},\"extra\":1}"),
            b.replace("\"version\":12", "\"version\":0"),
            b.replace("\"version\":12", "\"version\":12,\"version\":13"),
            b.replace("\"created\"", "\"reason\":\"a\\u001b[2J\",\"created\""),
        ] {
            assert!(Decision::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            Decision::parse(&vec![b' '; DECISION_MAX_BYTES + 1]),
            Err(DecisionError::TooLarge)
        );
        assert!(decode(&encode(b"x", &[])).is_err());
        assert!(decode(&encode(b"x", &vec!["s".to_owned(); MAX_SIGNATURES + 1])).is_err());
    }

    #[test]
    fn stage_names_name_a_store_object_safely() {
        assert!(is_stage_name("early-2"));
        for bad in ["", "Early", "2nd", "a/b", "a.b", &"x".repeat(33)] {
            assert!(!is_stage_name(bad), "{bad}");
        }
        assert_eq!(
            promotion_key(12, "early"),
            "rollouts/00000000000000000012/promote-early.json"
        );
    }
}
