//! The verified pull: the I/O shell around [`crate::verify`] and
//! [`crate::archive::extract`] (brief section 4, steps 1-5 and 7-9).
//!
//! Order of operations, each step failing closed:
//! 1. fetch `latest` (bounded, conditional on the last ETag);
//! 2. verify signatures, binding, remote, freshness, rollback (pure);
//! 3. download the archive into the private temp dir, at most its signed
//!    size, hashing while streaming; compare size and BLAKE3;
//! 4. extract with the hardened extractor into a fresh 0700 directory in the
//!    private temp dir;
//! 5. only then record the new highest version (atomically) and hand the
//!    extracted tree to the caller.
//!
//! Step 5 comes after extraction (the brief puts it before): a release whose
//! archive the extractor refuses is then *not* recorded, so a refusal leaves
//! the state untouched, and rollback protection is still recorded before any
//! activation starts. See `docs/decisions.md`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::{self, ExtractError, ExtractStats};
use crate::audit::{self, AuditEvent};
use crate::bundle::BUNDLE_MAX_BYTES;
use crate::fsutil::{self, TempDir};
use crate::limits::Limits;
use crate::state::{DataDir, HostState, StateError};
use crate::store::{ETag, Fetched, Store, StoreError, StoreErrorKind, LATEST};
use crate::transfer;
use crate::verify::{self, Policy, Rejection, Verdict, VerifiedRelease};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Verification refused the release (exit code 3).
    #[error("rejected ({check}): {message}")]
    Rejected { check: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("destination {0} already exists; choose a new path (npcnix never writes into an existing directory)")]
    DstExists(PathBuf),
}

impl PullError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> PullError {
        let context = context.into();
        move |source| PullError::Io { context, source }
    }

    pub fn is_rejection(&self) -> bool {
        matches!(self, PullError::Rejected { .. })
    }

    /// Whether retrying later may help (network, throttling).
    pub fn is_transient(&self) -> bool {
        matches!(self, PullError::Store(e) if e.kind == StoreErrorKind::Transient)
    }
}

impl From<Rejection> for PullError {
    fn from(r: Rejection) -> Self {
        PullError::Rejected {
            check: r.check().to_owned(),
            message: r.to_string(),
        }
    }
}

/// Fetches `latest` and verifies it. `Ok(None)`: unchanged since `etag`.
pub fn fetch_latest(
    store: &dyn Store,
    policy: &Policy,
    state: &HostState,
    etag: Option<&ETag>,
    now: u64,
) -> Result<Option<(Verdict, Option<ETag>)>, PullError> {
    let fetched = match store.get(LATEST, etag, BUNDLE_MAX_BYTES as u64) {
        Ok(f) => f,
        Err(e) if e.kind == StoreErrorKind::TooLarge => {
            return Err(PullError::Rejected {
                check: "bundle-size".into(),
                message: format!("bundle is larger than the {BUNDLE_MAX_BYTES}-byte limit"),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let (bytes, etag) = match fetched {
        Fetched::NotModified => return Ok(None),
        Fetched::Object { bytes, etag } => (bytes, etag),
    };
    let remote_state = state.remote(policy.remote.as_str());
    let seen = remote_state.and_then(|r| r.highest);
    // A floor pinned by `npcnix state reset` applies to every path.
    let mut policy = policy.clone();
    policy.min_version = policy
        .min_version
        .max(remote_state.and_then(|r| r.floor).unwrap_or(0));
    let verdict = verify::verify_release(&policy, seen, &bytes, now)?;
    Ok(Some((verdict, etag)))
}

/// Most intermediate releases a chain check fetches.
pub const MAX_CHAIN_FETCH: u64 = 10_000;

/// Fork detection (policy `require_chain`): fetches `releases/v+1..w-1`
/// between the highest release this host verified (`seen`, version v) and
/// the offered one (version w), verifies each, and checks every `previous`
/// link, so a release that does not descend from what the host runs is
/// refused even when it skips versions.
pub fn verify_descent(
    store: &dyn Store,
    policy: &Policy,
    seen: verify::Seen,
    release: &VerifiedRelease,
    now: u64,
) -> Result<(), PullError> {
    let to = release.statement.version;
    let broken = |at: u64, reason: String| -> PullError {
        Rejection::Chain {
            from: seen.version,
            to,
            at,
            reason,
        }
        .into()
    };
    if to <= seen.version {
        return Ok(());
    }
    if to - seen.version > MAX_CHAIN_FETCH {
        return Err(broken(
            to,
            format!("more than {MAX_CHAIN_FETCH} intermediate releases to check"),
        ));
    }
    let mut expected_prev = seen.statement;
    for v in seen.version + 1..to {
        let key = crate::store::release_key(v);
        let bytes = match store.get(&key, None, BUNDLE_MAX_BYTES as u64) {
            Ok(Fetched::Object { bytes, .. }) => bytes,
            Ok(Fetched::NotModified) => {
                return Err(broken(v, "store answered 'not modified'".into()))
            }
            Err(e) if e.kind == StoreErrorKind::NotFound => {
                return Err(broken(v, "release is missing from the log".into()))
            }
            Err(e) => return Err(e.into()),
        };
        let mid = verify::verify_signatures(policy, &bytes, now)
            .map_err(|r| broken(v, format!("intermediate release does not verify: {r}")))?;
        if mid.statement.version != v {
            return Err(broken(
                v,
                format!("releases/{v:020} holds version {}", mid.statement.version),
            ));
        }
        if mid.statement.previous != Some(expected_prev) {
            return Err(broken(v, "does not link to the release before it".into()));
        }
        expected_prev = mid.statement_hash;
    }
    if release.statement.previous != Some(expected_prev) {
        return Err(broken(to, "does not link to the release before it".into()));
    }
    Ok(())
}

/// Downloads and checks the archive of `release`, then extracts it into a
/// fresh private directory under the data dir's temp space.
pub fn fetch_and_extract(
    store: &dyn Store,
    release: &VerifiedRelease,
    limits: &Limits,
    data: &DataDir,
) -> Result<(TempDir, ExtractStats), PullError> {
    let aref = &release.statement.archive;
    if aref.size > limits.archive_bytes {
        return Err(PullError::Rejected {
            check: "archive-size".into(),
            message: format!(
                "release declares a {}-byte archive, above limits.archive_bytes ({})",
                aref.size, limits.archive_bytes
            ),
        });
    }
    let tmp_root = data.tmp_dir();
    let work = TempDir::new_in(&tmp_root, "pull-")
        .map_err(PullError::io("creating a private temp dir"))?;
    let archive_path = work.path().join("archive.tar.zst");
    {
        let src = store.open(&aref.object_key(), aref.size)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&archive_path)
            .map_err(PullError::io("creating the download file"))?;
        match transfer::copy_verified(src, &mut f, aref) {
            Ok(Ok(())) => {}
            Ok(Err(mismatch)) => {
                let check = match mismatch {
                    transfer::ArchiveMismatch::Hash { .. } => "archive-hash",
                    _ => "archive-size",
                };
                return Err(PullError::Rejected {
                    check: check.into(),
                    message: mismatch.to_string(),
                });
            }
            Err(e) => {
                return Err(PullError::Store(StoreError {
                    kind: StoreErrorKind::Transient,
                    store: store.describe(),
                    key: aref.object_key(),
                    detail: format!("download failed: {e}"),
                }))
            }
        }
    }
    let tree = TempDir::new_in(&tmp_root, "tree-")
        .map_err(PullError::io("creating the extraction dir"))?;
    let f = fs::File::open(&archive_path).map_err(PullError::io("reopening the download"))?;
    let root = tree.path().to_path_buf();
    let limits_copy = *limits;
    let (joined, confinement) = crate::confine::run_confined(root.clone(), move || {
        archive::extract(
            io::BufReader::with_capacity(256 * 1024, f),
            &root,
            &limits_copy,
        )
    });
    if !matches!(confinement, crate::confine::Confinement::Enforced) {
        eprintln!("npcnix: note: {confinement}");
    }
    let extracted = joined.map_err(|_| PullError::Io {
        context: "extracting".into(),
        source: io::Error::other("the extraction thread panicked"),
    })?;
    let stats = match extracted {
        Ok(s) => ExtractStats {
            confinement: Some(confinement.to_string()),
            ..s
        },
        Err(ExtractError::Refused(msg)) => {
            return Err(PullError::Rejected {
                check: "archive-content".into(),
                message: msg,
            })
        }
        Err(ExtractError::Io { path, source }) => {
            return Err(PullError::Io {
                context: format!("extracting to {}", path.display()),
                source,
            })
        }
    };
    drop(work);
    Ok((tree, stats))
}

/// Records `release` as the highest verified version for its remote.
pub fn record_verified(
    data: &DataDir,
    state: &mut HostState,
    release: &VerifiedRelease,
    now: u64,
) -> Result<(), PullError> {
    let r = state.remote_mut(release.statement.remote.as_str());
    r.highest = Some(release.seen());
    r.verified_at = Some(now);
    data.save(state)?;
    Ok(())
}

/// Appends to the audit log; failures to log are reported on stderr by the
/// caller but must not turn a refusal into an acceptance.
pub fn audit_rejection(data: &DataDir, remote: &str, err: &PullError, now: u64) -> io::Result<()> {
    let mut ev = AuditEvent::new(now, "rejected", remote);
    if let PullError::Rejected { check, message } = err {
        ev.check = Some(check.clone());
        ev.detail = Some(message.clone());
    } else {
        ev.event = "error".into();
        ev.detail = Some(err.to_string());
    }
    audit::append(&data.audit_path(), &ev)
}

pub fn audit_release(
    data: &DataDir,
    event: &str,
    release: &VerifiedRelease,
    detail: Option<String>,
    now: u64,
) -> io::Result<()> {
    let mut ev = AuditEvent::new(now, event, release.statement.remote.as_str());
    ev.version = Some(release.statement.version);
    ev.statement = Some(release.statement_hash.to_hex());
    ev.signers = release.signers.iter().map(|k| k.to_string()).collect();
    ev.detail = detail;
    audit::append(&data.audit_path(), &ev)
}

/// What a manual pull did.
#[derive(Debug)]
pub struct Pulled {
    pub release: VerifiedRelease,
    pub new: bool,
    pub stats: ExtractStats,
    pub dst: PathBuf,
}

/// `npcnix pull`: verify the remote's latest release and extract it to `dst`.
pub fn pull_to(
    store: &dyn Store,
    policy: &Policy,
    limits: &Limits,
    data: &DataDir,
    dst: &Path,
    require_chain: bool,
    now: u64,
) -> Result<Pulled, PullError> {
    if fs::symlink_metadata(dst).is_ok() {
        return Err(PullError::DstExists(dst.to_owned()));
    }
    let _lock = data.try_lock()?;
    let mut state = data.load()?;
    let remote = policy.remote.to_string();
    let result = (|| {
        let (verdict, _etag) =
            fetch_latest(store, policy, &state, None, now)?.ok_or_else(|| PullError::Io {
                context: "fetching latest".into(),
                source: io::Error::other(
                    "store answered 'not modified' to an unconditional request",
                ),
            })?;
        let seen = state.remote(policy.remote.as_str()).and_then(|r| r.highest);
        if let (true, Some(seen), Verdict::New(r)) = (require_chain, seen, &verdict) {
            verify_descent(store, policy, seen, r, now)?;
        }
        let (tree, stats) = fetch_and_extract(store, verdict.release(), limits, data)?;
        Ok((verdict, tree, stats))
    })();
    let (verdict, tree, stats) = match result {
        Ok(v) => v,
        Err(e) => {
            if let Err(log_err) = audit_rejection(data, &remote, &e, now) {
                eprintln!("npcnix: warning: could not write the audit log: {log_err}");
            }
            return Err(e);
        }
    };
    let new = matches!(verdict, Verdict::New(_));
    let release = match verdict {
        Verdict::New(r) | Verdict::Current(r) => r,
    };
    if new {
        record_verified(data, &mut state, &release, now)?;
    }
    let _ = audit_release(
        data,
        if new { "verified" } else { "up-to-date" },
        &release,
        None,
        now,
    );
    move_into_place(tree, dst)?;
    let _ = audit_release(
        data,
        "extracted",
        &release,
        Some(format!(
            "{}; {}",
            dst.display(),
            stats.confinement.as_deref().unwrap_or("")
        )),
        now,
    );
    Ok(Pulled {
        release,
        new,
        stats,
        dst: dst.to_owned(),
    })
}

/// Moves a verified, extracted tree to `dst`: a rename when on the same file
/// system, else a copy into a hidden sibling of `dst` and a rename, so `dst`
/// appears complete or not at all.
pub fn move_into_place(tree: TempDir, dst: &Path) -> Result<(), PullError> {
    if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(PullError::io(format!("creating {}", parent.display())))?;
    }
    match fs::rename(tree.path(), dst) {
        Ok(()) => {
            tree.keep();
            if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = fsutil::sync_dir(parent);
            }
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => {
            return Err(PullError::Io {
                context: format!("moving the release to {}", dst.display()),
                source: e,
            })
        }
    }
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = TempDir::new_in(parent, &format!(".{name}.npcnix-")).map_err(PullError::io(
        "creating a staging dir next to the destination",
    ))?;
    copy_tree(tree.path(), staging.path()).map_err(PullError::io(format!(
        "copying the release to {}",
        dst.display()
    )))?;
    fs::rename(staging.path(), dst).map_err(PullError::io(format!(
        "moving the release to {}",
        dst.display()
    )))?;
    staging.keep();
    let _ = fsutil::sync_dir(parent);
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    for ent in fs::read_dir(src)? {
        let ent = ent?;
        let from = ent.path();
        let to = dst.join(ent.file_name());
        let ft = ent.file_type()?;
        if ft.is_dir() {
            fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}
