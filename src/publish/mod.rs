//! The editor side: one flow for every way of publishing a release.
//!
//! ```text
//! draft   -> Draft      read and verify the head, hash the archive, build the next statement
//! sign    -> signature  (here for `publish`; offline with `npcnix sign` or stock minisign)
//! upload                archive, then `releases/<v>` (create-only), then `latest` (compare-and-swap)
//! ```
//!
//! `npcnix publish` runs all three at once; `release prepare` stops after
//! [`draft`] and writes the draft to a directory, `release publish` verifies
//! the collected signatures and calls [`upload`] with the head it re-read.
//!
//! The ordering makes every intermediate state safe: an archive without a
//! release is inert; a release bundle without `latest` pointing at it is in
//! the log but not offered to hosts; `latest` only ever moves from the head
//! the publisher read to a release that already exists. Two publishers racing
//! for one version cannot both create `releases/<v>`: the loser gets
//! [`PublishError::VersionTaken`].

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::format::bundle::Bundle;
use crate::format::keys::SecretKey;
use crate::format::sign::sign_minisign;
use crate::format::statement::{
    ArchiveRef, Binding, Digest, RemoteName, Source, Statement, STATEMENT_TYPE,
};
use crate::store::{release_key, ETag, Fetched, Remote, StoreError, StoreErrorKind, LATEST};
use crate::verify::{self, Policy};

pub mod compare;
pub mod diff;
pub mod editor;
pub mod flake;
pub mod fleet;
pub mod history;
pub mod monitor;
pub mod policy;
pub mod prepared;
pub mod repack;
pub mod review;
pub mod rollout;
pub mod tlog;

pub use editor::{Editor, Published, RemoteTrust, RevertSource, TrustOrigin};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("version {version} is already published on {store} (another publisher won the race); run again to publish as the next version")]
    VersionTaken { version: u64, store: String },
    #[error("`latest` on {store} changed while publishing version {version} (a concurrent publisher); releases/{version:020} exists but is not the head. Run again")]
    HeadMoved { version: u64, store: String },
    #[error("version {version} is not newer than the current head {head} (published by someone else meanwhile?); omit --version to publish the next version")]
    NotNewer { version: u64, head: u64 },
    #[error("the store's `latest` is unreadable ({0}); refusing to guess the previous release")]
    HeadUnreadable(String),
    #[error("refusing to extend the store's head: {0}")]
    HeadUntrusted(String),
    #[error("`latest` is missing but the log holds {releases} release(s): another publisher may be mid-publish (retry), or the store is damaged (restore `latest` from the newest releases/ object)")]
    HeadMissing { releases: usize },
    /// The new head would be refused by the remote's hosts: nothing was
    /// uploaded (exit code 3).
    #[error("hosts would refuse this release, so it was not published: {}; {hint}", .refusal.line())]
    WouldBeRefused {
        refusal: verify::Refusal,
        hint: String,
    },
    #[error("version {version} is {} versions past the head (version {head}); hosts refuse jumps of more than {max}, and so would every later publisher: publish the next version, or a few past it", .version - .head)]
    VersionGap { version: u64, head: u64, max: u64 },
    #[error("cannot revert: {0}")]
    Revert(String),
    /// A prepared release directory that is not one.
    #[error("{}: {problem}", .path.display())]
    Prepared { path: PathBuf, problem: String },
    #[error("the history from version {to} to the head was signed by key(s) {} that the remote's policy does not trust today: version {to}'s configuration most likely trusts them, and publishing it again re-pins them on every host; pass --allow-trust-change to revert anyway", list_keys(.keys))]
    TrustChange {
        to: u64,
        keys: Vec<crate::format::keys::KeyId>,
    },
    /// The remote's witnessed log could not be read, checked or extended
    /// (issue 37).
    #[error("the witnessed log: {0}")]
    Log(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn list_keys(keys: &[crate::format::keys::KeyId]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl PublishError {
    /// Hosts would refuse what was to be published, or the history it
    /// builds on does not verify (exit code 3).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PublishError::WouldBeRefused { .. }
                | PublishError::VersionGap { .. }
                | PublishError::Revert(_)
                | PublishError::TrustChange { .. }
        )
    }

    /// Lost a race: scripts may retry (exit code 4).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            PublishError::VersionTaken { .. }
                | PublishError::HeadMoved { .. }
                | PublishError::NotNewer { .. }
                | PublishError::HeadMissing { .. }
        )
    }
}

/// Most versions a head may be ahead of the release before it in the log for
/// a publisher to extend it.
pub const MAX_HEAD_GAP: u64 = 1000;

/// The remote's current head, as read by a publisher.
#[derive(Clone, Debug)]
pub struct CurrentHead {
    pub statement: Statement,
    pub hash: Digest,
    pub etag: Option<ETag>,
    /// Signatures the head's bundle carries (a hint of the remote's
    /// threshold: a publisher given no threshold requires at least as many).
    pub signatures: usize,
    /// `latest` as read (with its timestamp, if any).
    pub bundle: Bundle,
}

/// Reads and verifies `latest`, the head the new release will extend.
///
/// The head must be signed by a key in `policy` (the publisher's own key and
/// any `--trusted-key`s), and `releases/<v>` must hold the same bundle.
/// Otherwise a store attacker without any key could plant a fake head (say,
/// version 2^53) and have the real publisher sign a release that jumps every
/// host far ahead — freezing them. Likewise a missing `latest` with releases
/// present is a damaged store, not a fresh remote.
pub fn read_head(
    store: &Remote,
    policy: &Policy,
    now: u64,
) -> Result<Option<CurrentHead>, PublishError> {
    let log = store.log();
    let (bytes, etag) = match log.latest(None) {
        Ok(Fetched::Object { bytes, etag }) => (bytes, etag),
        Ok(Fetched::NotModified) => {
            return Err(PublishError::HeadUnreadable("not modified".into()))
        }
        Err(e) if e.kind == StoreErrorKind::NotFound => {
            let existing = log.versions()?;
            if !existing.is_empty() {
                return Err(PublishError::HeadMissing {
                    releases: existing.len(),
                });
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let release = verify::verify_signatures(policy, &bytes, now).map_err(|r| {
        if let verify::Refusal::Threshold { got, need } = r {
            // Name the keys that did sign: one stolen key plus store write
            // access must not get its head extended by the honest signers.
            let mut one = policy.clone();
            one.threshold = 1;
            let signers = verify::verify_signatures(&one, &bytes, now)
                .map(|rel| {
                    rel.signers()
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            return PublishError::HeadUntrusted(format!(
                "`latest` is signed by {got} trusted key(s) ({signers}), the remote requires {need}; refusing to extend a head below the threshold (a stolen key with store access can plant one)"
            ));
        }
        PublishError::HeadUntrusted(format!(
            "`latest` does not verify with this publisher's keys ({r}); if another key signs this remote, pass it with --trusted-key"
        ))
    })?;
    let v = release.version();
    // `latest` is `releases/<v>` plus, at most, a freshness timestamp.
    let bundle = Bundle::decode(&bytes).map_err(|e| PublishError::HeadUnreadable(e.to_string()))?;
    let same = |logged: &[u8]| {
        Bundle::decode(logged)
            .is_ok_and(|l| l.timestamp.is_none() && l == bundle.without_timestamp())
    };
    match log.release(v)? {
        Some(logged) if same(&logged) => {}
        Some(_) => {
            return Err(PublishError::HeadUntrusted(format!(
                "`latest` (version {v}) differs from releases/{v:020}"
            )))
        }
        None => {
            return Err(PublishError::HeadUntrusted(format!(
                "`latest` is version {v} but releases/{v:020} does not exist"
            )))
        }
    }
    // The head must not be far ahead of the release before it in the log: a
    // planted head with a huge version (even one signed at the threshold by
    // mistake) would burn the version space for every later release.
    if v > 1 {
        match log.versions() {
            Ok(versions) => {
                let before = versions
                    .iter()
                    .copied()
                    .filter(|x| *x < v)
                    .max()
                    .unwrap_or(0);
                if v - before > MAX_HEAD_GAP {
                    return Err(PublishError::HeadUntrusted(format!(
                        "`latest` is version {v}, but the log's release before it is version {before}: a jump of more than {MAX_HEAD_GAP} versions; refusing to extend it (publish with --version only to skip a few versions)"
                    )));
                }
            }
            // Stores that cannot list cannot be published to either.
            Err(e) if e.kind == StoreErrorKind::Unsupported => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(CurrentHead {
        hash: release.statement_hash(),
        statement: release.statement().clone(),
        etag,
        signatures: verify::signature_key_ids(&bytes).map_or(0, |k| k.len()),
        bundle,
    }))
}

/// Copies the archive at `src` (a regular file) to `dst` (created new, 0600,
/// in a private directory) and returns the hash of the bytes written, so
/// what is checked and uploaded afterwards cannot change under the caller.
pub fn private_copy(src: &Path, dst: &Path) -> Result<ArchiveRef, PublishError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let src_err = |source| PublishError::Io {
        path: src.to_owned(),
        source,
    };
    let dst_err = |source| PublishError::Io {
        path: dst.to_owned(),
        source,
    };
    let mut from = crate::fsutil::open_regular(src).map_err(src_err)?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(dst_err)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(src_err(e)),
        };
        h.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(dst_err)?;
        size += n as u64;
    }
    Ok(ArchiveRef {
        blake3: h.finalize().into(),
        size,
    })
}

/// BLAKE3 and size of an archive file (a regular file), streamed.
pub fn hash_file(path: &Path) -> Result<ArchiveRef, PublishError> {
    let io_err = |source| PublishError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = crate::fsutil::open_regular(path).map_err(io_err)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(ArchiveRef {
        blake3: h.finalize().into(),
        size,
    })
}

/// An unsigned release: the head it extends and the statement naming the
/// archive. Sign [`Draft::statement_bytes`].
#[derive(Clone, Debug)]
pub struct Draft {
    pub head: Option<CurrentHead>,
    pub statement: Statement,
}

impl Draft {
    /// The exact bytes every signature covers.
    pub fn statement_bytes(&self) -> Vec<u8> {
        self.statement.to_bytes()
    }

    /// Signs the draft with `sk`, returning the `.minisig` text.
    pub fn sign(&self, sk: &SecretKey) -> String {
        sign_statement(&self.statement, &self.statement_bytes(), sk)
    }

    /// The ETag of the head this draft extends (for the compare-and-swap).
    pub fn head_etag(&self) -> Option<&ETag> {
        self.head.as_ref().and_then(|h| h.etag.as_ref())
    }
}

/// What goes into a new statement besides the archive.
#[derive(Clone, Debug)]
pub struct StatementParams {
    pub remote: RemoteName,
    pub version: Option<u64>,
    pub created: u64,
    pub expires: Option<u64>,
    pub source: Option<Source>,
}

/// Builds the next statement on top of `head`.
pub fn next_statement(
    head: Option<&CurrentHead>,
    archive: ArchiveRef,
    p: StatementParams,
) -> Result<Statement, PublishError> {
    let head_version = head.map_or(0, |h| h.statement.version);
    let version = match p.version {
        Some(v) => v,
        None => head_version.checked_add(1).ok_or(PublishError::NotNewer {
            version: head_version,
            head: head_version,
        })?,
    };
    if version <= head_version || version == 0 {
        return Err(PublishError::NotNewer {
            version,
            head: head_version,
        });
    }
    Ok(Statement {
        kind: STATEMENT_TYPE.to_owned(),
        remote: p.remote,
        version,
        previous: head.map(|h| h.hash),
        archive,
        created: p.created,
        expires: p.expires,
        source: p.source,
        toplevels: None,
        decommission: None,
        rollout: None,
    })
}

/// The trusted comment a signature by `key_id` over `statement_bytes` must
/// carry. Printed for offline signers using stock `minisign -t`.
pub fn trusted_comment(
    statement: &Statement,
    statement_bytes: &[u8],
    key_id: crate::format::keys::KeyId,
) -> String {
    Binding {
        remote: statement.remote.clone(),
        version: statement.version,
        statement: Digest::of(statement_bytes),
        key_id,
    }
    .to_trusted_comment()
}

/// Signs statement bytes, returning the `.minisig` text.
pub fn sign_statement(statement: &Statement, statement_bytes: &[u8], sk: &SecretKey) -> String {
    let tc = trusted_comment(statement, statement_bytes, sk.key_id);
    sign_minisign(sk, statement_bytes, &tc)
}

/// Writes the archive's verified-streaming outboard next to it (issue 36),
/// before the release that names the archive exists: create-only, and one
/// already there must be byte for byte this one (it is content-addressed;
/// a different one makes every host refuse the release).
fn put_outboard(
    store: &dyn crate::store::Store,
    retry: &crate::store::retry::Retry,
    archive: &ArchiveRef,
    outboard: crate::format::outboard::Outboard,
) -> Result<(), PublishError> {
    let key = crate::format::outboard::outboard_key(archive);
    if outboard.root != archive.blake3 || outboard.len != archive.size {
        return Err(PublishError::HeadUntrusted(format!(
            "the outboard built from {} does not describe it; nothing was published",
            archive.object_key()
        )));
    }
    let different = || {
        PublishError::HeadUntrusted(format!(
            "the store already holds a different object at {key} (the outboard hosts check {} against); delete it and publish again",
            archive.object_key()
        ))
    };
    match crate::store::retry::put_new_resolving(store, retry, &key, &outboard.bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed => {
            match retry.run(|_| store.get(&key, None, outboard.bytes.len() as u64 + 1)) {
                Ok(crate::store::Fetched::Object { bytes, .. }) if bytes == outboard.bytes => {
                    Ok(())
                }
                Ok(_) => Err(different()),
                Err(e) if e.kind == StoreErrorKind::TooLarge => Err(different()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Uploads an archive and a signed bundle in the safe order.
///
/// Transient store failures are retried as `retry` says
/// ([`crate::store::retry`]): the archive is sent again from the file
/// (content-addressed, so an archive already there is simply checked);
/// `releases/<v>` and `latest` keep their preconditions on every attempt,
/// and a refusal after a failed attempt counts as success only if the
/// object holds exactly this bundle (the earlier attempt landed, its answer
/// was lost). Anything else stays a lost race. `releases/<v>` gets the
/// bundle without its freshness timestamp, `latest` the bundle as given.
#[allow(clippy::too_many_arguments)]
pub fn upload(
    remote: &Remote,
    archive_path: &Path,
    archive: &ArchiveRef,
    version: u64,
    bundle: &Bundle,
    log: Option<&tlog::LogSigner<'_>>,
    head_etag: Option<&ETag>,
    retry: &crate::store::retry::Retry,
) -> Result<Option<tlog::Logged>, PublishError> {
    use crate::store::retry::{put_new_resolving, put_swap_resolving};
    let store = remote.store();
    let latest = bundle.encode();
    let bundle_statement = bundle.statement.clone();
    let bundle = bundle.without_timestamp().encode();
    let io_err = |source| PublishError::Io {
        path: archive_path.to_owned(),
        source,
    };
    let mut local = None;
    let mut sent = None;
    let put = retry.run(|_| {
        let f = match crate::fsutil::open_regular(archive_path) {
            Ok(f) => f,
            Err(e) => {
                local = Some(e);
                return Ok(false);
            }
        };
        // The bytes sent are hashed as they go: what is uploaded is what
        // was signed, or the publish stops before `releases/<v>` exists.
        let reader = sent.insert(crate::store::transfer::BoundedHashReader::new(
            f,
            archive.clone(),
        ));
        match store.put_new(&archive.object_key(), reader, archive.size) {
            Ok(()) => Ok(true),
            // Content-addressed: an identical archive may already be there
            // (a re-publish, or an earlier attempt whose answer was lost);
            // it is checked below like a fresh upload.
            Err(e) if e.kind == StoreErrorKind::PreconditionFailed => Ok(false),
            Err(e) => Err(e),
        }
    });
    if let Some(e) = local {
        return Err(io_err(e));
    }
    let fresh = put?;
    if let (true, Some(sent)) = (fresh, sent) {
        sent.finish().map_err(|m| {
            PublishError::HeadUntrusted(format!(
                "{} changed while it was uploaded ({m}); no release was published, but the store now holds the wrong bytes at {}: delete that object before publishing again",
                archive_path.display(),
                archive.object_key()
            ))
        })?;
    }
    // Read the object back: garbage planted at the address (or bytes the
    // store mangled) would make the publish "succeed" while every host
    // refuses it. The outboard is built from exactly the bytes read back.
    let stored = store.open(&archive.object_key(), 0, archive.size)?;
    let mut outboard = crate::format::outboard::Builder::new();
    match crate::store::transfer::copy_verified(stored, &mut outboard, archive) {
        Ok(Ok(())) => {}
        Ok(Err(m)) => {
            return Err(PublishError::HeadUntrusted(format!(
                "the store {} a different object at {} ({m}); delete it and publish again",
                if fresh { "now holds" } else { "already holds" },
                archive.object_key()
            )))
        }
        Err(e) => {
            return Err(PublishError::Io {
                path: archive_path.to_owned(),
                source: e,
            })
        }
    }
    put_outboard(store, retry, archive, outboard.finish())?;
    match put_new_resolving(store, retry, &release_key(version), &bundle) {
        Ok(()) => {}
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed => {
            return Err(PublishError::VersionTaken {
                version,
                store: store.describe(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    // Logged while this publisher holds the version's claim (it created
    // `releases/<v>`) and before hosts can see it as the head: a statement
    // hosts may take is in the log first (issue 37).
    let logged = match log {
        Some(signer) => Some(tlog::append_statement(
            remote,
            signer,
            &bundle_statement,
            retry,
        )?),
        None => None,
    };
    match put_swap_resolving(store, retry, LATEST, &latest, head_etag) {
        Ok(_) => Ok(logged),
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed => Err(PublishError::HeadMoved {
            version,
            store: store.describe(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Signs a freshness timestamp for the release `version` of `remote` whose
/// statement hashes to `statement`, valid from `created` to `expires`, by
/// each of `keys` (D126).
pub fn sign_timestamp(
    remote: &RemoteName,
    version: u64,
    statement: Digest,
    created: u64,
    expires: u64,
    keys: &[&SecretKey],
) -> crate::format::timestamp::SignedTimestamp {
    use crate::format::timestamp::{self, SignedTimestamp, Timestamp};
    let bytes = Timestamp::new(remote.clone(), version, statement, created, expires).to_bytes();
    let signatures = keys
        .iter()
        .map(|sk| sign_minisign(sk, &bytes, &timestamp::trusted_comment(&bytes, sk.key_id)))
        .collect();
    SignedTimestamp { bytes, signatures }
}

/// Rewrites `latest` with `bytes` (the same release, a new timestamp),
/// compare-and-swap on the head's ETag: a head that moved meanwhile is
/// left alone.
pub fn swap_latest(
    remote: &Remote,
    bytes: &[u8],
    head_etag: Option<&ETag>,
    version: u64,
    retry: &crate::store::retry::Retry,
) -> Result<(), PublishError> {
    let store = remote.store();
    match crate::store::retry::put_swap_resolving(store, retry, LATEST, bytes, head_etag) {
        Ok(_) => Ok(()),
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed => Err(PublishError::HeadMoved {
            version,
            store: store.describe(),
        }),
        Err(e) => Err(e.into()),
    }
}
