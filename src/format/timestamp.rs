//! The freshness timestamp: a small statement, signed by a remote's
//! timestamp keys (online, short-lived authority), that the head release is
//! still current until `expires`. It names exactly one release (remote,
//! version, statement hash) and grants nothing else: hosts accept a release
//! only on its release keys' signatures, and with `policy.freshness`
//! required, also only while a timestamp for exactly that statement is
//! unexpired (TUF's timestamp role; D126).
//!
//! It travels inside `latest`'s bundle (`timestamp`), so a refresh rewrites
//! `latest` and nothing else, and the idle poll stays one conditional
//! request. Exact bytes, like the release statement:
//!
//! ```json
//! {"type":"npcnix-timestamp/v1","remote":"prod","version":12,"statement":"<BLAKE3>","created":1800000000,"expires":1800086400}
//! ```
//!
//! Its signatures are prehashed minisign signatures over those bytes whose
//! trusted comment is exactly `npcnix-timestamp/v1 timestamp=<BLAKE3 of the
//! bytes> key=<KEYID>`.

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::keys::KeyId;
use super::remote::RemoteName;

pub const TIMESTAMP_TYPE: &str = "npcnix-timestamp/v1";
/// Largest timestamp statement accepted.
pub const TIMESTAMP_MAX_BYTES: usize = 1024;

/// A freshness statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    #[serde(rename = "type")]
    pub kind: String,
    pub remote: RemoteName,
    pub version: u64,
    /// BLAKE3 of the release statement's bytes.
    pub statement: Digest,
    pub created: u64,
    pub expires: u64,
}

/// Why a timestamp cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp is larger than {TIMESTAMP_MAX_BYTES} bytes")]
    TooLarge,
    #[error("timestamp is not valid: {0}")]
    Malformed(String),
}

impl Timestamp {
    pub fn new(
        remote: RemoteName,
        version: u64,
        statement: Digest,
        created: u64,
        expires: u64,
    ) -> Timestamp {
        Timestamp {
            kind: TIMESTAMP_TYPE.to_owned(),
            remote,
            version,
            statement,
            created,
            expires,
        }
    }

    /// Strict: the exact type, no unknown or duplicate fields, `expires`
    /// after `created`.
    pub fn parse(bytes: &[u8]) -> Result<Timestamp, TimestampError> {
        if bytes.len() > TIMESTAMP_MAX_BYTES {
            return Err(TimestampError::TooLarge);
        }
        let t: Timestamp =
            serde_json::from_slice(bytes).map_err(|e| TimestampError::Malformed(e.to_string()))?;
        if t.kind != TIMESTAMP_TYPE {
            return Err(TimestampError::Malformed(format!(
                "unknown type {:?} (expected {TIMESTAMP_TYPE:?})",
                t.kind
            )));
        }
        if t.expires <= t.created {
            return Err(TimestampError::Malformed(
                "expires is not after created".into(),
            ));
        }
        if t.version == 0 {
            return Err(TimestampError::Malformed("version 0".into()));
        }
        if t.expires > super::time::MAX_TIME {
            return Err(TimestampError::Malformed(
                "expires is past year 9999".into(),
            ));
        }
        Ok(t)
    }

    /// The canonical bytes: compact JSON in field order, then `\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The trusted comment that binds a timestamp signature.
pub fn trusted_comment(timestamp_bytes: &[u8], key: KeyId) -> String {
    format!(
        "{TIMESTAMP_TYPE} timestamp={} key={key}",
        Digest::of(timestamp_bytes)
    )
}

/// A timestamp as it travels in a bundle: the exact bytes and the
/// `.minisig` texts over them. Nothing in it is trusted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTimestamp {
    pub bytes: Vec<u8>,
    pub signatures: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        Timestamp::new(
            RemoteName::new("prod").expect("name"),
            12,
            Digest::of(b"statement"),
            1_800_000_000,
            1_800_086_400,
        )
    }

    #[test]
    fn round_trip_is_exact() {
        let t = ts();
        let b = t.to_bytes();
        assert_eq!(Timestamp::parse(&b), Ok(t));
        assert!(
            b.starts_with(b"{\"type\":\"npcnix-timestamp/v1\",\"remote\":\"prod\",\"version\":12,")
        );
    }

    #[test]
    fn hostile_timestamps_are_refused() {
        let b = String::from_utf8(ts().to_bytes()).expect("utf8");
        for bad in [
            b.replace("npcnix-timestamp/v1", "npcnix-release/v1"),
            b.replace("\"expires\":1800086400", "\"expires\":1800000000"),
            b.replace("}", ",\"extra\":1}"),
            b.replace("\"version\":12", "\"version\":0"),
            b.replace("\"remote\":\"prod\"", "\"remote\":\"Prod\""),
            b.replace("\"version\":12", "\"version\":12,\"version\":13"),
        ] {
            assert!(Timestamp::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            Timestamp::parse(&vec![b' '; TIMESTAMP_MAX_BYTES + 1]),
            Err(TimestampError::TooLarge)
        );
    }
}
