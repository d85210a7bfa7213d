//! A prepared release: the directory `release prepare` writes for offline
//! signing (e.g. on a USB stick), `npcnix sign` (or stock minisign) signs,
//! and `release publish` publishes.
//!
//! ```text
//! release.json       what was prepared: remote URL and name, version, the head it extends, the policy
//! statement.json     the exact bytes to sign
//! archive.tar.zst    the archive the statement names
//! *.minisig          signatures (npcnix sign writes statement.json.<KEYID>.minisig;
//!                    stock minisign writes statement.json.minisig)
//! ```
//!
//! The directory is not trusted: it may have passed through other hands.
//! Every file is read with a size bound, without following symlinks, and
//! only if it is a regular file ([`crate::fsutil::read_regular`]); the
//! statement is parsed for display only (hosts verify it first), and
//! `release publish` checks every signature before anything is uploaded.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::bundle::{MAX_SIGNATURES, SIGNATURE_MAX_BYTES};
use crate::format::statement::{Digest, Statement, STATEMENT_MAX_BYTES};
use crate::fsutil;

use super::policy::RemotePolicy;
use super::PublishError;

pub const RELEASE_JSON: &str = "release.json";
pub const STATEMENT_JSON: &str = "statement.json";
pub const ARCHIVE: &str = "archive.tar.zst";
/// `release.json` is small; a bigger one is refused unread.
const RELEASE_JSON_MAX_BYTES: u64 = 256 * 1024;

/// `release.json`: what prepare recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepared {
    pub url: String,
    pub remote: String,
    pub version: u64,
    /// Statement hash of the head this release extends (null: first).
    pub extends: Option<Digest>,
    /// The keys and threshold the remote's hosts require, as prepare knew
    /// them: `release publish` checks the signatures against them unless
    /// told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RemotePolicy>,
    /// Where that policy came from (for messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_origin: Option<String>,
    /// This release publishes again the content of that version (a revert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_of: Option<u64>,
}

/// A prepared release directory, read.
#[derive(Clone, Debug)]
pub struct PreparedRelease {
    pub dir: PathBuf,
    pub meta: Prepared,
    pub statement_bytes: Vec<u8>,
    /// Parsed for display and checks only: not yet verified.
    pub statement: Statement,
    /// Every `*.minisig` in the directory, sorted by path.
    pub signatures: Vec<(PathBuf, String)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the statement of the release directory `dir` (bounded).
pub fn read_statement(dir: &Path) -> Result<(Vec<u8>, Statement), PublishError> {
    let path = dir.join(STATEMENT_JSON);
    let bytes = fsutil::read_regular(&path, STATEMENT_MAX_BYTES as u64).map_err(io_err(&path))?;
    let st = Statement::parse(&bytes).map_err(|e| PublishError::Prepared {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    Ok((bytes, st))
}

/// Every `*.minisig` file in `dir`, sorted (bounded in number and size).
pub fn read_signatures(dir: &Path) -> Result<Vec<(PathBuf, String)>, PublishError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let p = e.map_err(io_err(dir))?.path();
        if p.extension().is_none_or(|x| x != "minisig") {
            continue;
        }
        if out.len() >= MAX_SIGNATURES {
            return Err(PublishError::Prepared {
                path: dir.to_owned(),
                problem: format!("more than {MAX_SIGNATURES} signature files"),
            });
        }
        let bytes = fsutil::read_regular(&p, SIGNATURE_MAX_BYTES as u64).map_err(io_err(&p))?;
        let text = String::from_utf8(bytes).map_err(|_| PublishError::Prepared {
            path: p.clone(),
            problem: "not UTF-8 text".into(),
        })?;
        out.push((p, text));
    }
    out.sort();
    Ok(out)
}

/// Reads a prepared release directory: `release.json`, the statement and
/// the signatures, each bounded and only from regular files.
pub fn read(dir: &Path) -> Result<PreparedRelease, PublishError> {
    let meta_path = dir.join(RELEASE_JSON);
    let meta_bytes =
        fsutil::read_regular(&meta_path, RELEASE_JSON_MAX_BYTES).map_err(io_err(&meta_path))?;
    let meta: Prepared =
        serde_json::from_slice(&meta_bytes).map_err(|e| PublishError::Prepared {
            path: meta_path.clone(),
            problem: e.to_string(),
        })?;
    let (statement_bytes, statement) = read_statement(dir)?;
    if statement.version != meta.version || statement.remote.as_str() != meta.remote {
        return Err(PublishError::Prepared {
            path: meta_path,
            problem: format!(
                "names {} version {}, the statement {} version {}",
                meta.remote, meta.version, statement.remote, statement.version
            ),
        });
    }
    Ok(PreparedRelease {
        dir: dir.to_owned(),
        meta,
        statement_bytes,
        statement,
        signatures: read_signatures(dir)?,
    })
}

/// Writes a prepared release into the new directory `out`, whole or not at
/// all (written next to it, then renamed). `archive` is moved in.
pub fn write(
    out: &Path,
    meta: &Prepared,
    statement: &Statement,
    archive: &Path,
) -> Result<(), PublishError> {
    if fs::symlink_metadata(out).is_ok() {
        return Err(PublishError::Prepared {
            path: out.to_owned(),
            problem: "already exists; prepare into a new directory".into(),
        });
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", fsutil::random_suffix()));
    let res = (|| -> Result<(), PublishError> {
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let a = tmp.join(ARCHIVE);
        if fs::rename(archive, &a).is_err() {
            fs::copy(archive, &a).map_err(io_err(archive))?;
        }
        let s = tmp.join(STATEMENT_JSON);
        fsutil::write_atomic(&s, &statement.to_bytes(), 0o644).map_err(io_err(&s))?;
        let m = tmp.join(RELEASE_JSON);
        let mut bytes = serde_json::to_vec_pretty(meta).unwrap_or_default();
        bytes.push(b'\n');
        fsutil::write_atomic(&m, &bytes, 0o644).map_err(io_err(&m))?;
        fs::rename(&tmp, out).map_err(io_err(out))
    })();
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 29: `sign`, `release check` and `release publish` read
    /// `statement.json` whole before the 32 KiB check; a link to /dev/zero
    /// read until allocation failed.
    #[test]
    fn statement_linked_to_dev_zero_is_refused_unread() {
        let tmp =
            crate::fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-test-").expect("tmp");
        std::os::unix::fs::symlink("/dev/zero", tmp.path().join(STATEMENT_JSON)).expect("link");
        let e = read_statement(tmp.path()).expect_err("refused");
        assert!(matches!(e, PublishError::Io { .. }), "{e}");
        // A FIFO or a device named by a hard path is refused as well.
        let e = read_signatures(tmp.path()).map(|s| s.len());
        assert_eq!(e.expect("no signatures"), 0);
        std::fs::remove_file(tmp.path().join(STATEMENT_JSON)).expect("rm");
        std::fs::write(
            tmp.path().join(STATEMENT_JSON),
            vec![b' '; STATEMENT_MAX_BYTES + 1],
        )
        .expect("big");
        let e = read_statement(tmp.path()).expect_err("too large");
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        assert!(
            cause.as_deref().is_some_and(|c| c.contains("larger than")),
            "{e}: {cause:?}"
        );
    }
}
