//! The host's mutable state and its data directory.
//!
//! The state remembers, per remote *name* (the signed identity, not the URL,
//! so moving a host to a mirror keeps its rollback protection), the highest
//! release it has verified. It is written atomically (temp, fsync, rename,
//! fsync dir). A corrupt state file, or a missing one in a data directory that
//! has been used, is an error with a recovery hint — never a silent reset to
//! "nothing seen", which would re-open the door to rollbacks.
//!
//! Data directory layout (mode 0700):
//!
//! ```text
//! <data>/state.json     this module
//! <data>/audit.jsonl    append-only decisions (crate::host::journal)
//! <data>/lock           flock held while verifying/applying a release
//! <data>/tmp/           private temp space: downloads and extractions
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::statement::Digest;
use crate::fsutil;
use crate::verify::Seen;

pub const STATE_FORMAT: &str = "npcnix-state/v1";
/// Refuse state files larger than this (they are tiny).
const STATE_MAX_BYTES: u64 = 1 << 20;
/// A cached head is at most a 64 KiB bundle, in base64, with its ETag.
const HEAD_MAX_BYTES: u64 = 128 * 1024;

/// What the host remembers about one remote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteState {
    /// Highest version verified, with its statement hash.
    #[serde(default)]
    pub highest: Option<Seen>,
    /// When `highest` was recorded (Unix seconds).
    #[serde(default)]
    pub verified_at: Option<u64>,
    /// Version currently activated (agent), if any.
    #[serde(default)]
    pub active: Option<Seen>,
    /// Written by earlier versions: the ETag of `latest` alone. Read and
    /// dropped (a head without its bytes cannot be judged again; the agent
    /// now keeps its cached head in `heads/<remote>.json`).
    #[serde(default, skip_serializing)]
    pub etag: Option<String>,
    /// Releases that failed activation or health checks: never retried.
    #[serde(default)]
    pub bad: Vec<BadRelease>,
    /// Paused until this time (Unix seconds); `u64::MAX` = until unpaused.
    #[serde(default)]
    pub paused_until: Option<u64>,
    /// Versions below this are refused (set by `npcnix state reset` when the
    /// statement hash of the last known release is not available).
    #[serde(default)]
    pub floor: Option<u64>,
    /// A failed activation waiting to be retried, with backoff.
    #[serde(default)]
    pub retry: Option<Retry>,
}

/// The newest freshness timestamp a host accepted for a remote: the floor
/// below which a timestamp is a replay, and what `status` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampSeen {
    pub version: u64,
    pub created: u64,
    pub expires: u64,
}

/// A verified copy of `latest` and the ETag the store gave it: polls are
/// conditional on the ETag, and a "not modified" answer re-judges the bytes.
/// A cache, not state: kept in `heads/<remote>.json` (so `state.json` stays
/// readable by earlier versions after a rollback of the system), replaced
/// without fsync, and a lost or unreadable entry only costs one full fetch.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedHead {
    pub etag: String,
    #[serde(with = "base64_bytes")]
    pub bundle: Vec<u8>,
}

impl std::fmt::Debug for CachedHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CachedHead({}, {} bytes)", self.etag, self.bundle.len())
    }
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub version: u64,
    pub attempts: u32,
    pub next_at: u64,
}

/// Most bad releases a remote's state remembers: the newest are kept (as
/// many as a receipt lists).
pub const MAX_BAD_REMEMBERED: usize = crate::format::receipt::MAX_BAD_LISTED;

impl RemoteState {
    /// Remembers a release as bad (never applied again), once, keeping the
    /// [`MAX_BAD_REMEMBERED`] newest marks: the list grew by one per
    /// lock-out refusal for ever (issue 38), every poll re-reads it, and
    /// past `STATE_MAX_BYTES` the state could no longer be loaded. A release
    /// whose mark was dropped is older than the 16 newest bad ones; if a
    /// store serves it again it is refused as a rollback, or judged again
    /// (and marked again), never applied on the strength of a forgotten
    /// mark.
    pub fn mark_bad(&mut self, b: BadRelease) {
        let seen = Seen {
            version: b.version,
            statement: b.statement,
        };
        if self.is_bad(&seen) {
            return;
        }
        self.bad.push(b);
        let excess = self.bad.len().saturating_sub(MAX_BAD_REMEMBERED);
        self.bad.drain(..excess);
    }

    pub fn is_bad(&self, seen: &Seen) -> bool {
        self.bad
            .iter()
            .any(|b| b.version == seen.version && b.statement == seen.statement)
    }

    pub fn is_paused(&self, now: u64) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadRelease {
    pub version: u64,
    pub statement: Digest,
    pub reason: String,
    pub at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    pub format: String,
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteState>,
}

impl Default for HostState {
    fn default() -> Self {
        HostState {
            format: STATE_FORMAT.to_owned(),
            remotes: BTreeMap::new(),
        }
    }
}

/// Why state bytes do not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedState(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path} is corrupt ({detail}); refusing to continue, since starting over would allow rollbacks. Recover with `npcnix state reset --remote-name NAME --min-version N` using the highest version you know this host ran")]
    Corrupt { path: PathBuf, detail: String },
    #[error("state file {path} is missing although the data directory {dir} has been used; refusing to continue, since starting over would allow rollbacks. Recover with `npcnix state reset --remote-name NAME --min-version N`")]
    Missing { path: PathBuf, dir: PathBuf },
    #[error("data directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another npcnix process holds the lock on {0}")]
    Locked(PathBuf),
}

impl HostState {
    /// Strictly parses a state file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<HostState, MalformedState> {
        let st: HostState =
            serde_json::from_slice(bytes).map_err(|e| MalformedState(e.to_string()))?;
        if st.format != STATE_FORMAT {
            return Err(MalformedState(format!(
                "unknown state format {:?}",
                st.format
            )));
        }
        Ok(st)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn remote(&self, name: &str) -> Option<&RemoteState> {
        self.remotes.get(name)
    }

    pub fn remote_mut(&mut self, name: &str) -> &mut RemoteState {
        self.remotes.entry(name.to_owned()).or_default()
    }
}

/// A data directory: state, audit log, lock and private temp space.
pub struct DataDir {
    pub root: PathBuf,
}

/// Holds the data directory's exclusive lock until dropped.
pub struct DataLock {
    _file: fs::File,
}

impl DataDir {
    /// Opens (creating if needed, mode 0700) a data directory.
    pub fn open(root: &Path) -> Result<DataDir, StateError> {
        fsutil::ensure_private_dir(root).map_err(|source| StateError::Io {
            path: root.to_owned(),
            source,
        })?;
        Ok(DataDir {
            root: root.to_owned(),
        })
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn lock_file(&self) -> Result<(fs::File, PathBuf), StateError> {
        let p = self.root.join("lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map(|f| (f, p.clone()))
            .map_err(|source| StateError::Io { path: p, source })
    }

    /// Takes the data directory's lock, failing at once if it is held.
    pub fn try_lock(&self) -> Result<DataLock, StateError> {
        let (f, p) = self.lock_file()?;
        match f.try_lock() {
            Ok(()) => Ok(DataLock { _file: f }),
            Err(fs::TryLockError::WouldBlock) => Err(StateError::Locked(p)),
            Err(fs::TryLockError::Error(source)) => Err(StateError::Io { path: p, source }),
        }
    }

    /// Loads the state. A data directory that has an audit log but no state
    /// file has lost its state: that is an error, not a fresh start.
    pub fn load(&self) -> Result<HostState, StateError> {
        let path = self.state_path();
        match fs::metadata(&path) {
            Ok(md) if md.len() > STATE_MAX_BYTES => {
                return Err(StateError::Corrupt {
                    path,
                    detail: "file is implausibly large".into(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.audit_path().exists()
                    || self.status_path().exists()
                    || self.root.join("releases").exists()
                {
                    return Err(StateError::Missing {
                        path,
                        dir: self.root.clone(),
                    });
                }
                // First use: write the empty state now, so that from here on a
                // missing file is detectable as loss rather than a fresh start.
                let st = HostState::default();
                self.save(&st)?;
                return Ok(st);
            }
            Err(source) => return Err(StateError::Io { path, source }),
        }
        let bytes = fs::read(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        HostState::parse(&bytes).map_err(|e| StateError::Corrupt { path, detail: e.0 })
    }

    /// Loads the state without creating it: on first use (no state, no
    /// audit log) the empty state, unsaved. For readers that do not hold the
    /// lock (the agent's network side), so they never write.
    pub fn peek(&self) -> Result<HostState, StateError> {
        if !self.state_path().exists()
            && !self.audit_path().exists()
            && !self.root.join("releases").exists()
        {
            return Ok(HostState::default());
        }
        self.load()
    }

    /// Atomically writes the state.
    pub fn save(&self, st: &HostState) -> Result<(), StateError> {
        let path = self.state_path();
        fsutil::write_atomic(&path, &st.to_bytes(), 0o600)
            .map_err(|source| StateError::Io { path, source })
    }
}

/// The agent's latest poll, for `npcnix status` and metrics. Not security
/// relevant, so it is replaced without fsync: an unchanged poll must stay
/// cheap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollStatus {
    #[serde(default)]
    pub last_check: Option<u64>,
    #[serde(default)]
    pub last_result: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Polls in a row that did not end well: refusals, errors, failed
    /// activations (status and metrics).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Polls in a row where the store failed (connection, time-out, 5xx):
    /// the only thing that backs off.
    #[serde(default)]
    pub consecutive_store_errors: u32,
    /// The check that refused the last poll's release, if any.
    #[serde(default)]
    pub last_refusal: Option<String>,
    #[serde(default)]
    pub next_poll: Option<u64>,
    /// How the last extraction was confined (Landlock status).
    #[serde(default)]
    pub confinement: Option<String>,
    /// Where the network side of the polls runs (privilege separation).
    #[serde(default)]
    pub fetcher: Option<String>,
    /// The last change of the host's trust root (remote, keys, threshold),
    /// with its time.
    #[serde(default)]
    pub trust_changed: Option<String>,
    /// The boot default the agent last rebooted into (`reboot.allow`): it
    /// never reboots twice for the same one.
    #[serde(default)]
    pub rebooted_for: Option<String>,
    /// The last poll's release waits for this host's rollout slot.
    #[serde(default)]
    pub waiting: Option<(u64, u64)>,
    /// The last poll's release waits at a gate of its rollout, or its
    /// rollout was halted before this host's turn (issue 35).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateWait>,
    /// The last poll that ended well (no refusal, error or failure).
    #[serde(default)]
    pub last_success: Option<u64>,
    /// The last activation of a release.
    #[serde(default)]
    pub last_activation: Option<u64>,
    /// Refusals counted by check name since the status file was started
    /// (Prometheus counters: they may reset with it).
    #[serde(default)]
    pub refusals: std::collections::BTreeMap<String, u64>,
    /// How long the last poll that downloaded an archive spent on it
    /// (milliseconds).
    #[serde(default)]
    pub last_fetch_ms: Option<u64>,
    /// Since when polls fail (refusals, errors), if they do.
    #[serde(default)]
    pub failing_since: Option<u64>,
    /// The `stale` hook ran for this failing period.
    #[serde(default)]
    pub stale_notified: bool,
    /// Hook runs that failed (exit status, time-out, could not start).
    #[serde(default)]
    pub hook_failures: u64,
    /// With mirrors: the URL that answered the last poll.
    #[serde(default)]
    pub mirror: Option<String>,
    /// A release above this host's hold whose own config keeps the hold
    /// (version, statement hash): not downloaded and inspected again.
    #[serde(default)]
    pub held_inspected: Option<(u64, String)>,
}

impl DataDir {
    pub fn status_path(&self) -> PathBuf {
        self.root.join("status.json")
    }

    pub fn load_status(&self) -> PollStatus {
        fs::read(self.status_path())
            .ok()
            .filter(|b| b.len() < 64 * 1024)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_status(&self, s: &PollStatus) -> io::Result<()> {
        let path = self.status_path();
        let tmp = self
            .root
            .join(format!(".status.json.tmp-{}", fsutil::random_suffix()));
        fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())?;
        fs::rename(&tmp, path)
    }

    fn head_path(&self, remote: &str) -> PathBuf {
        self.sidecar_path("heads", remote)
    }

    /// The cached verified head of `remote`, if any. Unreadable entries are
    /// treated as absent (the next poll fetches in full and judges anyway).
    pub fn load_head(&self, remote: &str) -> Option<CachedHead> {
        let f = fs::File::open(self.head_path(remote)).ok()?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(f, HEAD_MAX_BYTES + 1), &mut bytes).ok()?;
        if bytes.len() as u64 > HEAD_MAX_BYTES {
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }

    /// Replaces (or with `None` removes) the cached head of `remote`, only if
    /// it changes: an unchanged poll writes nothing.
    pub fn save_head(&self, remote: &str, head: Option<&CachedHead>) -> io::Result<()> {
        let path = self.head_path(remote);
        if self.load_head(remote).as_ref() == head {
            return Ok(());
        }
        let Some(head) = head else {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        };
        let dir = self.root.join("heads");
        fsutil::ensure_private_dir(&dir)?;
        let tmp = dir.join(format!(".{remote}.json.tmp-{}", fsutil::random_suffix()));
        fs::write(&tmp, serde_json::to_vec(head).map_err(io::Error::other)?)?;
        fs::rename(&tmp, path)
    }

    /// A per-remote record kept beside `state.json` (`<root>/<kind>/<remote>.json`):
    /// records added after `state.json`'s format was fixed, which earlier
    /// versions read strictly.
    fn sidecar_path(&self, kind: &str, remote: &str) -> PathBuf {
        self.root.join(kind).join(format!("{remote}.json"))
    }

    /// Reads a sidecar. Unreadable is an error, never "none": every sidecar
    /// is a floor something is checked against.
    fn load_sidecar<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        remote: &str,
    ) -> Result<Option<T>, StateError> {
        let path = self.sidecar_path(kind, remote);
        match fsutil::read_regular(&path, 4096) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    path,
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes a sidecar durably (atomically, 0600). The caller holds the lock.
    fn save_sidecar<T: serde::Serialize>(
        &self,
        kind: &str,
        remote: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let path = self.sidecar_path(kind, remote);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        fsutil::ensure_private_dir(&self.root.join(kind)).map_err(io)?;
        let bytes = serde_json::to_vec(value).map_err(|e| io(io::Error::other(e)))?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(io)
    }

    fn forget_sidecar(&self, kind: &str, remote: &str) -> Result<(), StateError> {
        let path = self.sidecar_path(kind, remote);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StateError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The newest freshness timestamp this host accepted for `remote` (the
    /// replay floor).
    pub fn load_timestamp(&self, remote: &str) -> Result<Option<TimestampSeen>, StateError> {
        self.load_sidecar("timestamps", remote)
    }

    /// Forgets the timestamp record (`state reset`: a corrupt record would
    /// otherwise stop every poll).
    pub fn forget_timestamp(&self, remote: &str) -> Result<(), StateError> {
        self.forget_sidecar("timestamps", remote)
    }

    /// Records `seen` as the newest accepted timestamp (durably: it is a
    /// floor). The caller holds the lock.
    pub fn save_timestamp(&self, remote: &str, seen: &TimestampSeen) -> Result<(), StateError> {
        self.save_sidecar("timestamps", remote, seen)
    }

    /// The witnessed log head this host accepted last for `remote` (issue
    /// 37): what a split view is caught against.
    pub fn load_log_head(
        &self,
        remote: &str,
    ) -> Result<Option<crate::verify::witness::TreeHead>, StateError> {
        self.load_sidecar("witnessed", remote)
    }

    /// Records `head` as the witnessed log head accepted last (durably:
    /// later heads must extend it). The caller holds the lock.
    pub fn save_log_head(
        &self,
        remote: &str,
        head: &crate::verify::witness::TreeHead,
    ) -> Result<(), StateError> {
        self.save_sidecar("witnessed", remote, head)
    }

    /// Forgets the accepted log head (`state reset`, after an operator
    /// decided which history is the right one).
    pub fn forget_log_head(&self, remote: &str) -> Result<(), StateError> {
        self.forget_sidecar("witnessed", remote)
    }

    /// Takes the lock, waiting for a holder to finish (manual commands).
    pub fn lock_wait(&self) -> Result<DataLock, StateError> {
        let (f, p) = self.lock_file()?;
        f.lock()
            .map_err(|source| StateError::Io { path: p, source })?;
        Ok(DataLock { _file: f })
    }
}

/// A release held back by its gated rollout (the status's `rollout_gate`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GateWait {
    pub version: u64,
    /// The gated stage waiting for its promotion...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// ...or when the rollout was halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(version: u64) -> BadRelease {
        BadRelease {
            version,
            statement: Digest::of(&version.to_le_bytes()),
            reason: "would lock out".into(),
            at: version,
        }
    }

    #[test]
    fn bad_marks_are_kept_once_newest_first_and_bounded() {
        let mut rs = RemoteState::default();
        for v in 1..=100 {
            rs.mark_bad(bad(v));
            rs.mark_bad(bad(v));
        }
        assert_eq!(rs.bad.len(), MAX_BAD_REMEMBERED);
        assert_eq!(rs.bad.first().map(|b| b.version), Some(85));
        assert_eq!(rs.bad.last().map(|b| b.version), Some(100));
    }
}
