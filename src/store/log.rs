//! The one read path into a remote's release log. Every object a host or a
//! publisher reads goes through [`ReleaseLog`], which knows the object kinds
//! and the limit of each: small bundles are read whole under
//! [`BUNDLE_MAX_BYTES`], archives are streamed through the size and BLAKE3
//! adapter ([`super::transfer`]) and never past their signed size.

use std::io::{Read, Write};

use crate::format::bundle::BUNDLE_MAX_BYTES;
use crate::format::statement::ArchiveRef;
use crate::verify::ArchiveMismatch;

use super::{transfer, ETag, Fetched, Store, StoreError, StoreErrorKind};

/// The objects of a remote.
#[derive(Clone, Copy, Debug)]
pub enum Object<'a> {
    /// The mutable head pointer: a bundle.
    Latest,
    /// The immutable bundle of one version.
    Release(u64),
    /// A content-addressed archive.
    Archive(&'a ArchiveRef),
    /// The archive's verified-streaming outboard (issue 36), next to it.
    Outboard(&'a ArchiveRef),
    /// A host's signed receipt (`hosts/<host_id>.json`).
    Receipt(&'a str),
    /// A signed promotion of a gated stage of a release (issue 35).
    Promotion(u64, &'a str),
    /// A signed halt of a release's rollout.
    Halt(u64),
    /// The witnessed log's checkpoint, signed by the log key (issue 37).
    LogCheckpoint,
    /// A hash tile or entry bundle of the log (c2sp.org/tlog-tiles).
    LogTile(crate::format::tiles::TileName),
    /// Where the log holds a statement: its leaf index, a hint checked by
    /// the inclusion proof (`log/index/<statement BLAKE3>`).
    LogIndex(&'a crate::format::Digest),
    /// A witness's latest cosigned checkpoint, by its key ID.
    WitnessCheckpoint(u32),
}

impl Object<'_> {
    /// The object's key under the remote's prefix.
    pub fn key(&self) -> String {
        match self {
            Object::Latest => super::LATEST.to_owned(),
            Object::Release(v) => super::release_key(*v),
            Object::Archive(a) => a.object_key(),
            Object::Outboard(a) => crate::format::outboard::outboard_key(a),
            Object::Receipt(h) => format!("{RECEIPTS}{h}.json"),
            Object::Promotion(v, stage) => crate::format::decision::promotion_key(*v, stage),
            Object::Halt(v) => crate::format::decision::halt_key(*v),
            Object::LogCheckpoint => format!("{LOG}checkpoint"),
            Object::LogTile(t) => format!("{LOG}{t}"),
            Object::LogIndex(d) => format!("{LOG}index/{}", d.to_hex()),
            Object::WitnessCheckpoint(id) => format!("{WITNESSES}{id:08x}/checkpoint"),
        }
    }

    /// Most bytes npcnix reads of this object.
    pub fn limit(&self) -> u64 {
        match self {
            Object::Latest | Object::Release(_) => BUNDLE_MAX_BYTES as u64,
            Object::Archive(a) => a.size,
            Object::Outboard(a) => crate::format::outboard::outboard_len(a.size),
            Object::Receipt(_) => crate::format::receipt::RECEIPT_MAX_BYTES as u64,
            Object::Promotion(..) | Object::Halt(_) => {
                crate::format::decision::DECISION_MAX_BYTES as u64
            }
            Object::LogCheckpoint | Object::WitnessCheckpoint(_) => CHECKPOINT_MAX_BYTES as u64,
            Object::LogTile(crate::format::tiles::TileName::Hashes(_)) => {
                crate::format::tiles::FULL_TILE_BYTES as u64
            }
            Object::LogTile(crate::format::tiles::TileName::Entries(_)) => {
                LOG_BUNDLE_LIMITS.max_bundle_bytes as u64
            }
            Object::LogIndex(_) => 20,
        }
    }
}

/// Where hosts' receipts live under a remote.
const RECEIPTS: &str = "hosts/";
/// The witnessed log's prefix (issue 37).
const LOG: &str = "log/";
/// Where witnesses publish their cosigned checkpoints.
const WITNESSES: &str = "witnesses/";
/// Most bytes of a checkpoint note (a log's, or one a witness cosigned):
/// a few lines and signatures.
pub const CHECKPOINT_MAX_BYTES: usize = 16 * 1024;
/// The log's entries are release statements: an entry bundle holds at most
/// 256 of them.
pub const LOG_BUNDLE_LIMITS: crate::format::tiles::BundleLimits =
    crate::format::tiles::BundleLimits {
        max_entry_bytes: crate::format::statement::STATEMENT_MAX_BYTES,
        max_bundle_bytes: 256 * (2 + crate::format::statement::STATEMENT_MAX_BYTES),
    };

/// An object's bytes and the ETag the store gave them.
pub type Tagged = (Vec<u8>, Option<ETag>);

/// Typed, bounded reads of one remote's log.
pub struct ReleaseLog<'s> {
    store: &'s dyn Store,
    min_rate: u64,
    resumes: super::Resumes,
}

impl<'s> ReleaseLog<'s> {
    pub(crate) fn new(store: &'s dyn Store) -> ReleaseLog<'s> {
        ReleaseLog {
            store,
            min_rate: transfer::DEFAULT_MIN_RATE_BYTES_PER_SEC,
            resumes: super::Resumes::ByCaller,
        }
    }

    pub(crate) fn with_resumes(mut self, resumes: super::Resumes) -> Self {
        self.resumes = resumes;
        self
    }

    /// Sets the slowest download rate waited for (see
    /// [`transfer::deadline_for`]).
    pub fn with_min_rate(mut self, bytes_per_sec: u64) -> Self {
        self.min_rate = bytes_per_sec.max(1);
        self
    }

    pub(crate) fn store(&self) -> &'s dyn Store {
        self.store
    }

    /// Reads `latest`, conditionally on `if_none_match`. A "not modified"
    /// answer to an unconditional request is a protocol error, whatever the
    /// backend. An ETag that is not safe to send back is dropped
    /// ([`ETag::is_sendable`]).
    pub fn latest(&self, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        let obj = Object::Latest;
        let if_none_match = if_none_match.filter(|e| e.is_sendable());
        let fetched = match self.store.get(&obj.key(), if_none_match, obj.limit())? {
            Fetched::Object { bytes, etag } => Fetched::Object {
                bytes,
                etag: etag.filter(ETag::is_sendable),
            },
            Fetched::NotModified => Fetched::NotModified,
        };
        if matches!(fetched, Fetched::NotModified) && if_none_match.is_none() {
            return Err(self.unasked_not_modified(obj));
        }
        Ok(fetched)
    }

    /// Reads the bundle of `version`; `Ok(None)` if the log has none.
    pub fn release(&self, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.small(Object::Release(version))
    }

    /// Every key under `releases/`, sorted, including what is not a
    /// release (an audit reports junk); more than `max` is
    /// [`StoreErrorKind::TooLarge`].
    pub fn release_keys(&self, max: usize) -> Result<Vec<String>, StoreError> {
        self.store.list("releases/", max)
    }

    /// The host IDs that have a receipt (keys `hosts/<id>.json`; anything
    /// else under `hosts/` is skipped), sorted; more than `max` is
    /// [`StoreErrorKind::TooLarge`].
    pub fn receipt_hosts(&self, max: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .list(RECEIPTS, max)?
            .into_iter()
            .filter_map(|k| {
                k.strip_prefix(RECEIPTS)
                    .and_then(|r| r.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect())
    }

    /// A host's receipt (`Ok(None)`: none), at most
    /// [`crate::format::receipt::RECEIPT_MAX_BYTES`].
    pub fn receipt(&self, host_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.small(Object::Receipt(host_id))
    }

    /// A rollout decision (a promotion or a halt; `Ok(None)`: none), at
    /// most [`crate::format::decision::DECISION_MAX_BYTES`].
    ///
    /// "Access denied" counts as none: S3 answers it for a missing key to a
    /// reader without an unrestricted `s3:ListBucket` (the host read policy
    /// of terraform/), and a store that denies a decision only withholds it,
    /// which it can do anyway (a delay, D130).
    pub fn decision(&self, obj: Object<'_>) -> Result<Option<Vec<u8>>, StoreError> {
        debug_assert!(matches!(obj, Object::Promotion(..) | Object::Halt(_)));
        match self.small(obj) {
            Err(e) if e.kind == StoreErrorKind::Unauthorized => Ok(None),
            r => r,
        }
    }

    /// Creates a signed rollout decision only if none is there
    /// ([`StoreErrorKind::PreconditionFailed`] otherwise): a promotion or a
    /// halt, once written, is never moved (D130).
    pub fn put_new_decision(&self, obj: Object<'_>, bytes: &[u8]) -> Result<(), StoreError> {
        self.store
            .put_new(&obj.key(), &mut &bytes[..], bytes.len() as u64)
    }

    /// Writes a signed rollout decision.
    pub fn put_decision(&self, obj: Object<'_>, bytes: &[u8]) -> Result<(), StoreError> {
        self.store.put(&obj.key(), bytes)
    }

    /// A small object read whole under its limit (`Ok(None)`: none).
    fn small(&self, obj: Object<'_>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.small_tagged(obj)?.map(|(bytes, _)| bytes))
    }

    /// [`Self::small`] with the object's ETag.
    fn small_tagged(&self, obj: Object<'_>) -> Result<Option<Tagged>, StoreError> {
        match self.store.get(&obj.key(), None, obj.limit()) {
            Ok(Fetched::Object { bytes, etag }) => Ok(Some((bytes, etag))),
            Ok(Fetched::NotModified) => Err(self.unasked_not_modified(obj)),
            Err(e) if e.kind == StoreErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A 304 to a request that sent no If-None-Match: the store is broken
    /// (or lying), never "unchanged".
    fn unasked_not_modified(&self, obj: Object<'_>) -> StoreError {
        StoreError::new(
            StoreErrorKind::Protocol,
            &self.store.describe(),
            &obj.key(),
            "the store answered 'not modified' to a request without If-None-Match".into(),
        )
    }

    /// Writes this host's receipt (the one object an agent writes).
    pub fn put_receipt(&self, host_id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.store.put(&Object::Receipt(host_id).key(), bytes)
    }

    /// The versions the log holds, ascending (keys that are not
    /// `releases/<20 digits>` are ignored).
    pub fn versions(&self) -> Result<Vec<u64>, StoreError> {
        let mut v: Vec<u64> = self
            .store
            .list("releases/", super::MAX_LISTED)?
            .iter()
            .filter_map(|k| super::parse_release_key(k))
            .collect();
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Copies the archive's outboard into `to` (`Ok(false)`: the store has
    /// none, and the archive is downloaded whole). At most the exact length
    /// the signed size gives it ([`StoreErrorKind::TooLarge`] past it),
    /// within a deadline for that length. "Access denied" counts as none,
    /// as for rollout decisions: S3 answers it for a missing key to a reader
    /// without `s3:ListBucket`, and releases published before outboards
    /// existed have none. Read to its end, so the next request (the
    /// archive) starts on a finished stream.
    pub fn outboard_into(
        &self,
        archive: &ArchiveRef,
        to: &mut dyn Write,
    ) -> Result<bool, StoreError> {
        let obj = Object::Outboard(archive);
        let key = obj.key();
        let limit = obj.limit();
        let src = match self.store.open(&key, 0, limit) {
            Err(e)
                if matches!(
                    e.kind,
                    StoreErrorKind::NotFound | StoreErrorKind::Unauthorized
                ) =>
            {
                return Ok(false)
            }
            r => r?,
        };
        let mut src =
            transfer::DeadlineReader::new(src, transfer::deadline_for(limit, self.min_rate))
                .take(limit + 1);
        let n = std::io::copy(&mut src, to).map_err(|e| self.broken(&key, e))?;
        if n > limit {
            return Err(StoreError::new(
                StoreErrorKind::TooLarge,
                &self.store.describe(),
                &key,
                format!("larger than {limit} bytes"),
            ));
        }
        Ok(true)
    }

    /// The log's checkpoint and its ETag (`Ok(None)`: the remote has no log
    /// yet), at most [`CHECKPOINT_MAX_BYTES`].
    pub fn log_checkpoint(&self) -> Result<Option<Tagged>, StoreError> {
        self.small_tagged(Object::LogCheckpoint)
    }

    /// A tile or entry bundle of the log (`Ok(None)`: not there), at most
    /// a full tile's bytes, or a bundle of 256 statements.
    pub fn log_tile(
        &self,
        name: crate::format::tiles::TileName,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.small(Object::LogTile(name))
    }

    /// The leaf index the log's writer recorded for a statement (a hint:
    /// only an inclusion proof makes it true).
    pub fn log_index(&self, statement: &crate::format::Digest) -> Result<Option<u64>, StoreError> {
        let obj = Object::LogIndex(statement);
        Ok(self
            .small(obj)?
            .and_then(|b| std::str::from_utf8(&b).ok()?.trim_end().parse().ok()))
    }

    /// The checkpoint the witness with key ID `key_id` last cosigned
    /// (`Ok(None)`: none; "access denied" counts as none, as for rollout
    /// decisions).
    pub fn witness_checkpoint(&self, key_id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        match self.small(Object::WitnessCheckpoint(key_id)) {
            Err(e) if e.kind == StoreErrorKind::Unauthorized => Ok(None),
            r => r,
        }
    }

    /// Streams the archive through `outboard`'s verifier into `sink`, one
    /// buffer of verified groups at a time ([`transfer::stream_verified`]:
    /// resumed with Range reads where it breaks, within the archive's
    /// deadline; by the store itself when it resumes reads, as operator
    /// commands' retrying front does, else here).
    pub fn stream(
        &self,
        archive: &ArchiveRef,
        verifier: crate::verify::stream::StreamVerifier,
        outboard: &mut dyn std::io::Read,
        buf: crate::buf::AlignedBuf,
        sink: &mut dyn FnMut(
            crate::buf::AlignedBuf,
            usize,
        ) -> std::io::Result<crate::buf::AlignedBuf>,
    ) -> Result<(), transfer::StreamFailure> {
        let obj = Object::Archive(archive);
        let key = obj.key();
        let limit = obj.limit();
        transfer::stream_verified(
            &mut |from| self.store.open(&key, from, limit),
            match self.resumes {
                super::Resumes::ByCaller => transfer::STREAM_RESUMES,
                super::Resumes::Itself => 0,
            },
            verifier,
            outboard,
            transfer::deadline_for(archive.size, self.min_rate),
            buf,
            sink,
        )
    }

    /// The store error for a download of `key` that broke for good.
    pub fn broken(&self, key: &str, e: std::io::Error) -> StoreError {
        StoreError::new(
            StoreErrorKind::Transient,
            &self.store.describe(),
            key,
            format!("download failed: {e}"),
        )
        .with_source(e)
    }

    /// Streams the archive into `to`, reading at most its signed size and
    /// hashing as it goes. `Ok(Err(_))`: the bytes differ from what was
    /// signed; `Err(_)`: the store or the local write failed.
    pub fn download(
        &self,
        archive: &ArchiveRef,
        to: &mut dyn Write,
    ) -> Result<Result<(), ArchiveMismatch>, StoreError> {
        let obj = Object::Archive(archive);
        let src = self.store.open(&obj.key(), 0, obj.limit())?;
        let src =
            transfer::DeadlineReader::new(src, transfer::deadline_for(archive.size, self.min_rate));
        transfer::copy_verified(src, to, archive).map_err(|e| self.broken(&obj.key(), e))
    }
}
