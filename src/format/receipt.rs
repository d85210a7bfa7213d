//! Host receipts: what a host runs and refused, signed by the host's own
//! key and left in the store at `hosts/<host_id>.json` (read by `npcnix
//! fleet status`).
//!
//! The object is a small JSON envelope `{"receipt": base64(receipt bytes),
//! "signature": minisign signature text}`; the signature is prehashed
//! (`ED`) and its trusted comment binds the host, the remote, the sequence
//! number and the receipt bytes: `npcnix-receipt/v1 host=<id> remote=<name>
//! seq=<n> receipt=<BLAKE3>`. A store attacker can delete or replay receipts
//! (`fleet status` remembers each host's last sequence number and flags a
//! lower one, and a known host whose receipt is gone), but cannot forge one
//! for a host whose key is pinned.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const RECEIPT_TYPE: &str = "npcnix-receipt/v1";
/// Largest receipt object (envelope) accepted or written.
pub const RECEIPT_MAX_BYTES: usize = 16 * 1024;
/// Most bad releases listed in a receipt (the newest).
pub const MAX_BAD_LISTED: usize = 16;

/// A version and the BLAKE3 of its statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRef {
    pub version: u64,
    pub statement: Digest,
}

/// What a host reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    #[serde(rename = "type")]
    pub kind: String,
    pub host_id: String,
    pub remote: String,
    pub configuration: String,
    pub active: Option<VersionRef>,
    pub highest_verified: Option<u64>,
    /// The last decision: `activated`, `rejected`, `rolled-back`,
    /// `waiting`, `unchanged`, ...
    pub result: String,
    /// For `rejected`: the check's stable name.
    pub check: Option<String>,
    /// The version the last decision was about, if any.
    pub about_version: Option<u64>,
    /// Releases marked bad (newest first, at most [`MAX_BAD_LISTED`]).
    pub bad: Vec<u64>,
    /// Waiting for this host's rollout slot until then.
    pub waiting_until: Option<u64>,
    /// A release on probation (lockout protection).
    pub probation: Option<u64>,
    /// The host config's hold (issue 34); absent without one, so readers
    /// before holds still read the receipts of hosts without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldRef>,
    /// With mirrors: the URL that answered (issue 34).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// With a witness policy: the log head the host accepted last (issue
    /// 37). `fleet status` compares them: hosts shown different histories
    /// (a split view) show up from the store alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<super::merkle::TreeHead>,
    pub time: u64,
    /// Monotonic per host: a replayed receipt shows an older one.
    pub seq: u64,
    pub npcnix_version: String,
    /// The host's public key (`RW...`): trust on first use for operators
    /// who do not pin host keys.
    pub public_key: String,
}

/// A declarative hold as a receipt reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRef {
    pub max_version: u64,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    receipt: String,
    signature: String,
}

/// The trusted comment that binds a receipt's signature: the host, the
/// remote it reports on (a receipt a host signed for another remote is not
/// this remote's), the sequence number and the receipt bytes.
pub fn trusted_comment(host_id: &str, remote: &str, seq: u64, receipt_bytes: &[u8]) -> String {
    format!(
        "{RECEIPT_TYPE} host={host_id} remote={remote} seq={seq} receipt={}",
        Digest::of(receipt_bytes)
    )
}

/// The envelope bytes for signed receipt bytes.
pub fn encode(receipt_bytes: &[u8], signature: &str) -> Vec<u8> {
    let env = Envelope {
        receipt: B64.encode(receipt_bytes),
        signature: signature.to_owned(),
    };
    let mut v = serde_json::to_vec(&env).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Why receipt bytes are not a receipt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptFormatError {
    #[error("receipt is larger than {RECEIPT_MAX_BYTES} bytes")]
    TooLarge,
    #[error("receipt envelope: {0}")]
    Envelope(String),
    #[error("receipt: {0}")]
    Json(String),
    #[error("unknown receipt type {0:?}")]
    UnknownType(String),
    #[error("receipt host_id is not a valid host ID")]
    HostId,
    #[error("receipt text fields must be short single-line text")]
    Text,
}

/// Splits an envelope into (receipt bytes, signature text), bounded.
pub fn decode(bytes: &[u8]) -> Result<(Vec<u8>, String), ReceiptFormatError> {
    if bytes.len() > RECEIPT_MAX_BYTES {
        return Err(ReceiptFormatError::TooLarge);
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| ReceiptFormatError::Envelope(e.to_string()))?;
    let receipt = B64
        .decode(env.receipt.as_bytes())
        .map_err(|e| ReceiptFormatError::Envelope(e.to_string()))?;
    Ok((receipt, env.signature))
}

impl Receipt {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses receipt bytes (call only after the signature verified, or to
    /// read the public key for trust on first use).
    pub fn parse(bytes: &[u8]) -> Result<Receipt, ReceiptFormatError> {
        let r: Receipt =
            serde_json::from_slice(bytes).map_err(|e| ReceiptFormatError::Json(e.to_string()))?;
        if r.kind != RECEIPT_TYPE {
            return Err(ReceiptFormatError::UnknownType(r.kind));
        }
        if !super::rollout::is_host_id(&r.host_id) {
            return Err(ReceiptFormatError::HostId);
        }
        let texts = [&r.remote, &r.configuration, &r.result, &r.npcnix_version];
        if texts
            .into_iter()
            .chain(r.check.iter())
            .chain(r.hold.iter().map(|h| &h.reason))
            .chain(r.mirror.iter())
            .any(|t| t.len() > 256 || !super::text::is_plain(t))
        {
            return Err(ReceiptFormatError::Text);
        }
        Ok(r)
    }
}
