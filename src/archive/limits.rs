//! Resource limits on everything read from a store, with documented defaults.
//!
//! Defaults are sized for real NixOS configuration flakes (typically a few
//! hundred files and a few MiB) with generous headroom, and stay small enough
//! that a 512 MiB host survives a hostile release. Every limit can be raised
//! in the host config (`limits`), see `docs/protocol.md`.

use serde::{Deserialize, Serialize};

/// Hard limits applied while fetching and extracting a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest compressed archive a statement may declare (bytes).
    pub archive_bytes: u64,
    /// Total bytes of file content written by one extraction.
    pub unpacked_bytes: u64,
    /// Number of tar entries (files, directories, symlinks).
    pub entries: u64,
    /// Path components in one entry path.
    pub depth: u32,
    /// Bytes in one entry path (and in one symlink target).
    pub path_bytes: u32,
    /// Size of one regular file.
    pub file_bytes: u64,
    /// Largest zstd window (log2 bytes) the decoder will allocate. The
    /// default, 21 (2 MiB), is the window npcnix packs with (every pack
    /// format); it is the dominant term of a pull's memory, which it keeps
    /// under 12 MiB. Archives made by other tools with bigger windows
    /// (`zstd -19` uses 2^23, `--long` more) need a host to raise it.
    pub zstd_window_log: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            archive_bytes: 512 << 20,
            unpacked_bytes: 2 << 30,
            entries: 200_000,
            depth: 64,
            path_bytes: 1024,
            file_bytes: 512 << 20,
            zstd_window_log: 21,
        }
    }
}

/// Limits out of their allowed ranges.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitsError(pub String);

impl From<LimitsError> for String {
    fn from(e: LimitsError) -> String {
        e.0
    }
}

/// The same limits with every field optional, as in the host config: `null`
/// (or absent) means "built-in default".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default)]
    pub archive_bytes: Option<u64>,
    #[serde(default)]
    pub unpacked_bytes: Option<u64>,
    #[serde(default)]
    pub entries: Option<u64>,
    #[serde(default)]
    pub depth: Option<u32>,
    #[serde(default)]
    pub path_bytes: Option<u32>,
    #[serde(default)]
    pub file_bytes: Option<u64>,
    #[serde(default)]
    pub zstd_window_log: Option<u32>,
}

impl LimitOverrides {
    /// Applies overrides to the defaults, validating ranges.
    pub fn resolve(&self) -> Result<Limits, LimitsError> {
        let d = Limits::default();
        let l = Limits {
            archive_bytes: self.archive_bytes.unwrap_or(d.archive_bytes),
            unpacked_bytes: self.unpacked_bytes.unwrap_or(d.unpacked_bytes),
            entries: self.entries.unwrap_or(d.entries),
            depth: self.depth.unwrap_or(d.depth),
            path_bytes: self.path_bytes.unwrap_or(d.path_bytes),
            file_bytes: self.file_bytes.unwrap_or(d.file_bytes),
            zstd_window_log: self.zstd_window_log.unwrap_or(d.zstd_window_log),
        };
        if !(10..=31).contains(&l.zstd_window_log) {
            return Err(LimitsError(format!(
                "limits.zstd_window_log must be between 10 and 31, got {}",
                l.zstd_window_log
            )));
        }
        if l.path_bytes == 0 || l.path_bytes > 4096 {
            return Err(LimitsError(format!(
                "limits.path_bytes must be between 1 and 4096, got {}",
                l.path_bytes
            )));
        }
        if l.depth == 0 || l.entries == 0 || l.archive_bytes == 0 {
            return Err(LimitsError(
                "limits.depth, limits.entries and limits.archive_bytes must be positive".into(),
            ));
        }
        Ok(l)
    }
}
