//! The host's own trust root, remembered between runs: which remote it
//! follows, which keys it pins and at what threshold. A change is an event
//! (audit log, `status`), never silent; a change of the followed remote's
//! name carries the old remote's rollback floor over, so a release that
//! renames the remote cannot reset the host to "nothing seen".

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::host::config::Validated;
use crate::host::state::DataDir;

/// What the host trusted when it last ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRecord {
    pub remote: String,
    /// `KEYID:RW...` for each pinned key scoped to the remote, sorted.
    pub keys: Vec<String>,
    pub threshold: usize,
}

impl TrustRecord {
    pub fn of(v: &Validated) -> TrustRecord {
        let mut keys: Vec<String> = v
            .policy
            .keys
            .iter()
            .filter(|k| k.scope.allows(&v.remote))
            .map(|k| format!("{}:{}", k.key.key_id, k.key.to_base64()))
            .collect();
        keys.sort();
        keys.dedup();
        TrustRecord {
            remote: v.remote.to_string(),
            keys,
            threshold: v.policy.threshold,
        }
    }

    /// What changed from `old` to `self`, in words; `None` if nothing did.
    pub fn changes_from(&self, old: &TrustRecord) -> Option<String> {
        let mut parts = Vec::new();
        if old.remote != self.remote {
            parts.push(format!("remote {} -> {}", old.remote, self.remote));
        }
        let id = |k: &String| k.split(':').next().unwrap_or("").to_owned();
        let added: Vec<String> = self
            .keys
            .iter()
            .filter(|k| !old.keys.contains(k))
            .map(id)
            .collect();
        let removed: Vec<String> = old
            .keys
            .iter()
            .filter(|k| !self.keys.contains(k))
            .map(id)
            .collect();
        if !added.is_empty() {
            parts.push(format!("keys added: {}", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("keys removed: {}", removed.join(", ")));
        }
        if old.threshold != self.threshold {
            parts.push(format!("threshold {} -> {}", old.threshold, self.threshold));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Where a host's data dir for a remote lives, recorded outside any data
/// dir (`<trust dir>/<remote>.json`), so a move of `stateDir` is noticed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breadcrumb {
    pub state_dir: PathBuf,
}

fn breadcrumb_path(dir: &std::path::Path, remote: &str) -> PathBuf {
    dir.join(format!("{remote}.json"))
}

/// The data dir last used for `remote`, if recorded.
pub fn load_breadcrumb(dir: &std::path::Path, remote: &str) -> Option<Breadcrumb> {
    let bytes = fs::read(breadcrumb_path(dir, remote)).ok()?;
    if bytes.len() > 64 * 1024 {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

pub fn save_breadcrumb(dir: &std::path::Path, remote: &str, b: &Breadcrumb) -> io::Result<()> {
    crate::fsutil::ensure_private_dir(dir)?;
    crate::fsutil::write_atomic(
        &breadcrumb_path(dir, remote),
        &serde_json::to_vec_pretty(b).map_err(io::Error::other)?,
        0o600,
    )
}

impl DataDir {
    fn trust_path(&self) -> PathBuf {
        self.root.join("trust.json")
    }

    /// The trust root recorded by the last run, if any (unreadable: none).
    pub fn load_trust(&self) -> Option<TrustRecord> {
        let bytes = fs::read(self.trust_path()).ok()?;
        if bytes.len() > 256 * 1024 {
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }

    pub fn save_trust(&self, t: &TrustRecord) -> io::Result<()> {
        crate::fsutil::write_atomic(
            &self.trust_path(),
            &serde_json::to_vec_pretty(t).map_err(io::Error::other)?,
            0o600,
        )
    }
}
