//! Publishing: build a statement, sign it, and store archive, then
//! `releases/<v>` (create-only), then `latest` (compare-and-swap).
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

use crate::bundle::{Bundle, BUNDLE_MAX_BYTES};
use crate::keys::SecretKey;
use crate::sign::sign_minisign;
use crate::statement::{
    ArchiveRef, Binding, Digest, RemoteName, Source, Statement, STATEMENT_TYPE,
};
use crate::store::{release_key, ETag, Fetched, Store, StoreError, StoreErrorKind, LATEST};

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
    #[error("the store's `latest` is for remote {found:?}, not {expected:?}")]
    HeadRemote { expected: String, found: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PublishError {
    /// Lost a race: scripts may retry (exit code 4).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            PublishError::VersionTaken { .. }
                | PublishError::HeadMoved { .. }
                | PublishError::NotNewer { .. }
        )
    }
}

/// The remote's current head, as read by a publisher.
#[derive(Clone, Debug)]
pub struct Head {
    pub statement: Statement,
    pub hash: Digest,
    pub etag: Option<ETag>,
}

/// Reads `latest`. The publisher does not need to trust it — hosts verify
/// everything — but it must parse, and name this remote, so the chain the
/// new release extends is well-formed.
pub fn read_head(store: &dyn Store, remote: &RemoteName) -> Result<Option<Head>, PublishError> {
    let (bytes, etag) = match store.get(LATEST, None, BUNDLE_MAX_BYTES as u64) {
        Ok(Fetched::Object { bytes, etag }) => (bytes, etag),
        Ok(Fetched::NotModified) => {
            return Err(PublishError::HeadUnreadable("not modified".into()))
        }
        Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bundle = Bundle::decode(&bytes).map_err(|e| PublishError::HeadUnreadable(e.to_string()))?;
    let statement = Statement::parse(&bundle.statement)
        .map_err(|e| PublishError::HeadUnreadable(e.to_string()))?;
    if &statement.remote != remote {
        return Err(PublishError::HeadRemote {
            expected: remote.to_string(),
            found: statement.remote.to_string(),
        });
    }
    Ok(Some(Head {
        hash: Digest::of(&bundle.statement),
        statement,
        etag,
    }))
}

/// BLAKE3 and size of an archive file, streamed.
pub fn hash_file(path: &Path) -> Result<ArchiveRef, PublishError> {
    let io_err = |source| PublishError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::File::open(path).map_err(io_err)?;
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
    head: Option<&Head>,
    archive: ArchiveRef,
    p: StatementParams,
) -> Result<Statement, PublishError> {
    let head_version = head.map_or(0, |h| h.statement.version);
    let version = p.version.unwrap_or(head_version + 1);
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
    })
}

/// The trusted comment a signature by `key_id` over `statement_bytes` must
/// carry. Printed for offline signers using stock `minisign -t`.
pub fn trusted_comment(
    statement: &Statement,
    statement_bytes: &[u8],
    key_id: crate::keys::KeyId,
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

/// Uploads an archive and a signed bundle in the safe order.
pub fn upload(
    store: &dyn Store,
    archive_path: &Path,
    archive: &ArchiveRef,
    version: u64,
    bundle: &[u8],
    head_etag: Option<&ETag>,
) -> Result<(), PublishError> {
    let io_err = |source| PublishError::Io {
        path: archive_path.to_owned(),
        source,
    };
    let mut f = fs::File::open(archive_path).map_err(io_err)?;
    match store.put_new(&archive.object_key(), &mut f, archive.size) {
        Ok(()) => {}
        // Content-addressed: an identical archive may already be there (a
        // re-publish). Hosts check the hash, so an impostor does no harm.
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed => {}
        Err(e) => return Err(e.into()),
    }
    match store.put_new(&release_key(version), &mut &bundle[..], bundle.len() as u64) {
        Ok(()) => {}
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed => {
            return Err(PublishError::VersionTaken {
                version,
                store: store.describe(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    match store.put_swap(LATEST, bundle, head_etag) {
        Ok(_) => Ok(()),
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed => Err(PublishError::HeadMoved {
            version,
            store: store.describe(),
        }),
        Err(e) => Err(e.into()),
    }
}
