//! This host's signed receipts in the store (`hosts/<host_id>.json`; the
//! format is [`crate::format::receipt`], the reader `npcnix fleet status`).
//!
//! The host's own Ed25519 key lives in `<data>/host.key` (minisign format,
//! unencrypted, 0600, created once with `create_new`). A receipt is written
//! after every decision that changes what the host runs or refuses, and as a
//! heartbeat at most once per `receipts.heartbeat_secs`. Writing is best
//! effort: one small PUT, after the poll's decision is recorded, whose
//! failure is a warning and never touches an activation.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::format::keys::{KeyProtection, PublicKey, ScryptLimits, SecretKey};
use crate::format::receipt::{self, Receipt, VersionRef, MAX_BAD_LISTED, RECEIPT_TYPE};
use crate::fsutil;
use crate::host::state::{DataDir, StateError};

/// The host key's file name in the data dir.
pub const HOST_KEY_FILE: &str = "host.key";

fn key_path(data: &DataDir) -> PathBuf {
    data.root.join(HOST_KEY_FILE)
}

fn io_err(path: PathBuf) -> impl FnOnce(std::io::Error) -> StateError {
    move |source| StateError::Io { path, source }
}

/// The host's key, created on first use.
pub fn host_key(data: &DataDir) -> Result<SecretKey, StateError> {
    let path = key_path(data);
    match fs::File::open(&path) {
        Ok(f) => {
            let mut text = zeroize::Zeroizing::new(String::new());
            f.take(4096)
                .read_to_string(&mut text)
                .map_err(io_err(path.clone()))?;
            SecretKey::parse(&text, None).map_err(|e| StateError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let sk = SecretKey::generate().map_err(|e| StateError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let text = sk
                .to_file_text(KeyProtection::Unencrypted, b"", ScryptLimits::default())
                .map_err(|e| StateError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            fsutil::write_new(&path, text.as_bytes(), 0o600).map_err(io_err(path))?;
            Ok(sk)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The host's public key, if it has one yet (for `status`).
pub fn host_public_key(data: &DataDir) -> Option<PublicKey> {
    let text = fs::read_to_string(key_path(data)).ok()?;
    SecretKey::parse(&text, None).ok().map(|k| k.public_key())
}

/// What the last receipt said, to tell a change from a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLog {
    pub seq: u64,
    pub last_sent: u64,
    /// The receipt's content without time and sequence.
    pub fingerprint: String,
}

fn log_path(data: &DataDir) -> PathBuf {
    data.root.join("receipt.json")
}

fn load_log(data: &DataDir) -> ReceiptLog {
    fs::read(log_path(data))
        .ok()
        .filter(|b| b.len() < 4096)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// What a receipt reports, before time, sequence and key are added.
#[derive(Clone, Debug)]
pub struct Report {
    pub host_id: String,
    pub remote: String,
    pub configuration: String,
    pub active: Option<VersionRef>,
    pub highest_verified: Option<u64>,
    pub result: String,
    pub check: Option<String>,
    pub about_version: Option<u64>,
    pub bad: Vec<u64>,
    pub waiting_until: Option<u64>,
    pub probation: Option<u64>,
    pub hold: Option<crate::format::receipt::HoldRef>,
    pub mirror: Option<String>,
    /// The witnessed log head accepted last (issue 37).
    pub log: Option<crate::format::merkle::TreeHead>,
}

impl Report {
    /// What a new receipt is written for: what the host runs, refuses or
    /// waits for, and whether the release it runs is still on probation (a
    /// promotion counts confirmed hosts: the confirmation must reach the
    /// store, issue 35). Not the difference between "activated" and "up to
    /// date" for the same active release: an unchanged poll stays one
    /// request.
    fn fingerprint(&self) -> String {
        let result = match self.result.as_str() {
            "activated" | "up-to-date" | "unchanged" => "running",
            r => r,
        };
        format!(
            "{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.active.map(|a| (a.version, a.statement.to_hex())),
            self.probation,
            self.highest_verified,
            result,
            self.check,
            self.bad,
            self.waiting_until,
            self.hold,
            self.mirror,
            self.log.map(|l| l.size),
        )
    }
}

/// The signed receipt object for `report`, if one is due (a change since
/// the last one, or the heartbeat), with the log entry to save once it is
/// written. The sequence number grows even if the write then fails.
pub fn due(
    data: &DataDir,
    report: &Report,
    heartbeat_secs: u64,
    npcnix_version: &str,
    now: u64,
) -> Result<Option<(Vec<u8>, ReceiptLog)>, StateError> {
    let log = load_log(data);
    let fingerprint = report.fingerprint();
    if log.fingerprint == fingerprint && now < log.last_sent.saturating_add(heartbeat_secs) {
        return Ok(None);
    }
    let sk = host_key(data)?;
    let seq = log.seq + 1;
    let mut bad = report.bad.clone();
    bad.sort_unstable_by(|a, b| b.cmp(a));
    bad.truncate(MAX_BAD_LISTED);
    let r = Receipt {
        kind: RECEIPT_TYPE.into(),
        host_id: report.host_id.clone(),
        remote: report.remote.clone(),
        configuration: report.configuration.clone(),
        active: report.active,
        highest_verified: report.highest_verified,
        result: report.result.clone(),
        check: report.check.clone(),
        about_version: report.about_version,
        bad,
        waiting_until: report.waiting_until,
        probation: report.probation,
        hold: report.hold.clone(),
        mirror: report.mirror.clone(),
        log: report.log,
        time: now,
        seq,
        npcnix_version: npcnix_version.into(),
        public_key: sk.public_key().to_base64(),
    };
    let body = r.to_bytes();
    let sig = crate::format::sign::sign_minisign(
        &sk,
        &body,
        &receipt::trusted_comment(&r.host_id, &r.remote, seq, &body),
    );
    // The sequence is durable before the receipt leaves: never reused.
    let next = ReceiptLog {
        seq,
        last_sent: log.last_sent,
        fingerprint: log.fingerprint,
    };
    fsutil::write_atomic(
        &log_path(data),
        &serde_json::to_vec(&next).unwrap_or_default(),
        0o600,
    )
    .map_err(io_err(log_path(data)))?;
    Ok(Some((
        receipt::encode(&body, &sig),
        ReceiptLog {
            seq,
            last_sent: now,
            fingerprint,
        },
    )))
}

/// Records that a receipt was written.
pub fn sent(data: &DataDir, log: &ReceiptLog) -> Result<(), StateError> {
    fsutil::write_atomic(
        &log_path(data),
        &serde_json::to_vec(log).unwrap_or_default(),
        0o600,
    )
    .map_err(io_err(log_path(data)))
}

/// The store key of a host's receipt.
pub fn object_key(host_id: &str) -> String {
    format!("hosts/{host_id}.json")
}
