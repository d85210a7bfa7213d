//! The release bundle: statement bytes plus signatures in one small object.
//!
//! `latest` and `releases/<version>` hold bundles, so a host learns about a
//! release (and can verify it) with one small request. The envelope is JSON
//! in the spirit of DSSE: the statement travels as base64 so its exact bytes
//! survive any JSON tooling, and each signature is the verbatim text of a
//! `.minisig` file, so signatures made by the stock `minisign` tool can be
//! added without conversion.
//!
//! The envelope is the one thing parsed before any signature is checked; it
//! is parsed strictly and under hard limits ([`BUNDLE_MAX_BYTES`],
//! [`MAX_SIGNATURES`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::format::statement::STATEMENT_MAX_BYTES;
use crate::format::timestamp::{SignedTimestamp, TIMESTAMP_MAX_BYTES};

pub const BUNDLE_TYPE: &str = "npcnix-bundle/v1";
/// Hard limit on a bundle's size; a store serving more is refused unread.
pub const BUNDLE_MAX_BYTES: usize = 64 * 1024;
/// At most this many signatures are considered.
pub const MAX_SIGNATURES: usize = 16;
/// A `.minisig` file is about 300 bytes; allow long trusted comments.
pub const SIGNATURE_MAX_BYTES: usize = 2048;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("bundle is larger than the {BUNDLE_MAX_BYTES}-byte limit")]
    TooLarge,
    #[error("bundle is not valid: {0}")]
    Malformed(String),
    #[error("bundle has no signatures")]
    NoSignatures,
    #[error("bundle has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    statement: String,
    signatures: Vec<String>,
    /// Only in `latest`: the head's freshness timestamp (D126).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<TimestampEnvelope>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimestampEnvelope {
    statement: String,
    signatures: Vec<String>,
}

/// A decoded bundle. Nothing in it is trusted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The statement's exact bytes, as signed.
    pub statement: Vec<u8>,
    /// `.minisig` texts.
    pub signatures: Vec<String>,
    /// The head's freshness timestamp (`latest` only; never part of what
    /// the release keys sign).
    pub timestamp: Option<SignedTimestamp>,
}

impl Bundle {
    pub fn decode(bytes: &[u8]) -> Result<Bundle, BundleError> {
        if bytes.len() > BUNDLE_MAX_BYTES {
            return Err(BundleError::TooLarge);
        }
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        if env.kind != BUNDLE_TYPE {
            return Err(BundleError::Malformed(format!(
                "unknown bundle type {:?} (expected {BUNDLE_TYPE:?})",
                env.kind
            )));
        }
        if env.signatures.is_empty() {
            return Err(BundleError::NoSignatures);
        }
        if env.signatures.len() > MAX_SIGNATURES {
            return Err(BundleError::TooManySignatures);
        }
        if env.signatures.iter().any(|s| s.len() > SIGNATURE_MAX_BYTES) {
            return Err(BundleError::Malformed("a signature is too large".into()));
        }
        let statement = B64
            .decode(env.statement.as_bytes())
            .map_err(|_| BundleError::Malformed("statement is not valid base64".into()))?;
        if statement.len() > STATEMENT_MAX_BYTES {
            return Err(BundleError::Malformed("statement is too large".into()));
        }
        let timestamp = match env.timestamp {
            None => None,
            Some(t) => {
                if t.signatures.is_empty() || t.signatures.len() > MAX_SIGNATURES {
                    return Err(BundleError::Malformed(format!(
                        "the timestamp has {} signatures (1 to {MAX_SIGNATURES})",
                        t.signatures.len()
                    )));
                }
                if t.signatures.iter().any(|s| s.len() > SIGNATURE_MAX_BYTES) {
                    return Err(BundleError::Malformed(
                        "a timestamp signature is too large".into(),
                    ));
                }
                let bytes = B64
                    .decode(t.statement.as_bytes())
                    .map_err(|_| BundleError::Malformed("timestamp is not valid base64".into()))?;
                if bytes.len() > TIMESTAMP_MAX_BYTES {
                    return Err(BundleError::Malformed("timestamp is too large".into()));
                }
                Some(SignedTimestamp {
                    bytes,
                    signatures: t.signatures,
                })
            }
        };
        Ok(Bundle {
            statement,
            signatures: env.signatures,
            timestamp,
        })
    }

    /// The same release without a timestamp: what `releases/<v>` holds.
    pub fn without_timestamp(&self) -> Bundle {
        Bundle {
            timestamp: None,
            ..self.clone()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let env = Envelope {
            kind: BUNDLE_TYPE.to_owned(),
            statement: B64.encode(&self.statement),
            signatures: self.signatures.clone(),
            timestamp: self.timestamp.as_ref().map(|t| TimestampEnvelope {
                statement: B64.encode(&t.bytes),
                signatures: t.signatures.clone(),
            }),
        };
        let mut v = serde_json::to_vec_pretty(&env).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = Bundle {
            statement: b"{}\n".to_vec(),
            signatures: vec!["sig".into()],
            timestamp: None,
        };
        assert_eq!(Bundle::decode(&b.encode()), Ok(b.clone()));
        // A bundle without a timestamp encodes as before (no field).
        assert!(!String::from_utf8_lossy(&b.encode()).contains("timestamp"));
        b.timestamp = Some(SignedTimestamp {
            bytes: b"{}\n".to_vec(),
            signatures: vec!["ts-sig".into()],
        });
        assert_eq!(Bundle::decode(&b.encode()), Ok(b.clone()));
        assert_eq!(b.without_timestamp().timestamp, None);
    }

    #[test]
    fn garbage_and_limits() {
        assert!(matches!(
            Bundle::decode(b"\x00\xff"),
            Err(BundleError::Malformed(_))
        ));
        assert_eq!(
            Bundle::decode(&vec![b' '; BUNDLE_MAX_BYTES + 1]),
            Err(BundleError::TooLarge)
        );
        let none = br#"{"type":"npcnix-bundle/v1","statement":"e30K","signatures":[]}"#;
        assert_eq!(Bundle::decode(none), Err(BundleError::NoSignatures));
    }
}
