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
use crate::host::journal::Journal;
use crate::host::state::{DataDir, StateError};

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

/// The highest version `remote` reached in `st` (its record or its floor),
/// if any: what a renamed remote or a moved data dir starts from.
fn reached(st: &crate::host::state::HostState, remote: &str) -> Option<u64> {
    st.remote(remote)
        .map(|r| r.highest.map_or(0, |h| h.version).max(r.floor.unwrap_or(0)))
        .filter(|v| *v > 0)
}

/// Compares the trust root (remote, pinned keys, threshold) with the one
/// the last run recorded, and the data dir with the one recorded in
/// `trust_dir`. A change is audited (`trust-changed`) and shown in
/// `status`; a renamed remote or a moved data dir starts from the old one's
/// rollback floor rather than from nothing (`floor-carried-over`). Returns
/// the change, if any.
pub fn check_trust_root(
    v: &Validated,
    data: &DataDir,
    trust_dir: Option<&std::path::Path>,
    now: u64,
    warn: &dyn Fn(&str),
) -> Result<Option<String>, StateError> {
    let remote = v.remote.as_str();
    let journal = Journal::new(data, remote);
    let append = |ev: &crate::host::journal::AuditEvent| {
        if let Err(e) = journal.append(ev) {
            warn(&e.to_string());
        }
    };
    let new = TrustRecord::of(v);
    let old = data.load_trust();
    let change = old.as_ref().and_then(|o| new.changes_from(o));
    if let (Some(old), Some(change)) = (&old, &change) {
        let mut ev = journal.event(now, "trust-changed");
        ev.detail = Some(change.clone());
        append(&ev);
        if old.remote != new.remote {
            let _lock = data.lock_wait()?;
            let mut st = data.load()?;
            let carried = reached(&st, &old.remote);
            let rs = st.remote_mut(remote);
            if let (Some(floor), None) = (carried, rs.highest) {
                if rs.floor.is_none_or(|f| f < floor) {
                    rs.floor = Some(floor);
                    data.save(&st)?;
                    let mut ev = journal.event(now, "floor-carried-over");
                    ev.detail = Some(format!(
                        "remote renamed from {}: versions below {floor} are refused",
                        old.remote
                    ));
                    append(&ev);
                }
            }
        }
        let mut s = data.load_status();
        s.trust_changed = Some(format!(
            "{change} (at {})",
            crate::format::time::rfc3339(now)
        ));
        let _ = data.save_status(&s);
    }
    if old.as_ref() != Some(&new) {
        if let Err(e) = data.save_trust(&new) {
            warn(&format!("could not record the trust root: {e}"));
        }
    }
    if let Err(e) = remember_keys(data, v) {
        warn(&format!("could not record the pinned keys: {e}"));
    }
    let moved = match trust_dir {
        Some(dir) => check_state_dir(remote, data, dir, now, warn)?,
        None => None,
    };
    Ok(match (change, moved) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    })
}

/// Notices a move of the data dir (a release can change `stateDir`): the
/// new dir starts from the old one's rollback floor, not from nothing.
fn check_state_dir(
    remote: &str,
    data: &DataDir,
    dir: &std::path::Path,
    now: u64,
    warn: &dyn Fn(&str),
) -> Result<Option<String>, StateError> {
    let journal = Journal::new(data, remote);
    let append = |ev: &crate::host::journal::AuditEvent| {
        if let Err(e) = journal.append(ev) {
            warn(&e.to_string());
        }
    };
    let here = Breadcrumb {
        state_dir: data.root.clone(),
    };
    let last = load_breadcrumb(dir, remote);
    let mut change = None;
    if let Some(last) = last.as_ref().filter(|b| b.state_dir != here.state_dir) {
        let what = format!(
            "state dir {} -> {}",
            last.state_dir.display(),
            here.state_dir.display()
        );
        let mut ev = journal.event(now, "trust-changed");
        ev.detail = Some(what.clone());
        append(&ev);
        let old_floor = DataDir {
            root: last.state_dir.clone(),
        }
        .peek()
        .ok()
        .and_then(|st| reached(&st, remote));
        if let Some(floor) = old_floor {
            let _lock = data.lock_wait()?;
            let mut st = data.load()?;
            let rs = st.remote_mut(remote);
            if rs.highest.is_none_or(|h| h.version < floor) && rs.floor.is_none_or(|f| f < floor) {
                rs.floor = Some(floor);
                data.save(&st)?;
                let mut ev = journal.event(now, "floor-carried-over");
                ev.detail = Some(format!(
                    "state dir moved from {}: versions below {floor} are refused",
                    last.state_dir.display()
                ));
                append(&ev);
            }
        }
        let mut s = data.load_status();
        s.trust_changed = Some(format!("{what} (at {})", crate::format::time::rfc3339(now)));
        let _ = data.save_status(&s);
        change = Some(what);
    }
    if last.as_ref() != Some(&here) {
        if let Err(e) = save_breadcrumb(dir, remote, &here) {
            warn(&format!("could not record the state dir: {e}"));
        }
    }
    Ok(change)
}

/// Every key this host has pinned for a remote, ever
/// (`<data>/trust-keys/<remote>.json`, `KEYID:RW...` lines): what `npcnix
/// audit` verifies the store's old releases with after a key rotation.
fn key_history_path(data: &DataDir, remote: &str) -> PathBuf {
    data.root.join("trust-keys").join(format!("{remote}.json"))
}

/// The keys ever pinned for `remote` (unreadable: none).
pub fn key_history(data: &DataDir, remote: &str) -> Vec<String> {
    crate::fsutil::read_regular(&key_history_path(data, remote), 1 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds the keys `v` pins for its remote to the remote's key history.
pub fn remember_keys(data: &DataDir, v: &Validated) -> io::Result<()> {
    let remote = v.remote.as_str();
    let mut keys = key_history(data, remote);
    let before = keys.len();
    for k in TrustRecord::of(v).keys {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    if keys.len() == before && key_history_path(data, remote).exists() {
        return Ok(());
    }
    keys.sort();
    let dir = data.root.join("trust-keys");
    crate::fsutil::ensure_private_dir(&dir)?;
    crate::fsutil::write_atomic(
        &key_history_path(data, remote),
        &serde_json::to_vec_pretty(&keys).map_err(io::Error::other)?,
        0o600,
    )
}
