//! Reading a remote's witnessed log (issue 37): the checkpoint, verified
//! against the log key, and the tiles that prove an entry's inclusion or
//! the log's consistency, fetched as `format::tiles` plans them and checked
//! by `format::merkle`. The publisher's writer (`publish::tlog`), the
//! witness and the host all read through here.

use crate::format::merkle::{self, Hash};
use crate::format::note::{Checkpoint, VerifierKey};
use crate::format::tiles::{self, TileId, TileName, TileSet};
use crate::verify::witness::TreeHead;

use super::{ETag, ReleaseLog, StoreError};

/// Why the log could not be read or checked.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What the store holds is not a valid log (a forged checkpoint, a
    /// missing or malformed tile).
    #[error("{0}")]
    Invalid(String),
}

/// The log's checkpoint, verified, with its bytes and ETag (`Ok(None)`:
/// the remote has no log).
pub struct Head {
    pub checkpoint: Checkpoint,
    pub bytes: Vec<u8>,
    pub etag: Option<ETag>,
}

/// Reads and verifies the log's checkpoint.
pub fn read_head(
    log: &ReleaseLog<'_>,
    log_key: &VerifierKey,
) -> Result<Option<Head>, LogReadError> {
    let Some((bytes, etag)) = log.log_checkpoint()? else {
        return Ok(None);
    };
    let checkpoint = crate::verify::witness::verify_checkpoint(&bytes, log_key)
        .map_err(|e| LogReadError::Invalid(format!("the log's {e}")))?;
    Ok(Some(Head {
        checkpoint,
        bytes,
        etag,
    }))
}

/// Fetches the hash tiles `ids` into a [`TileSet`] of `size`.
pub fn fetch_tiles(
    log: &ReleaseLog<'_>,
    size: u64,
    ids: &[TileId],
) -> Result<TileSet, LogReadError> {
    let mut set = TileSet::new(size);
    for id in ids {
        let bytes = log
            .log_tile(TileName::Hashes(*id))?
            .ok_or_else(|| LogReadError::Invalid(format!("the log's tile {id} is missing")))?;
        set.insert(*id, &bytes)
            .map_err(|e| LogReadError::Invalid(format!("the log's tile {id}: {e}")))?;
    }
    Ok(set)
}

/// Whether `entry` is leaf `index` of the tree `head`, proven from the
/// store's tiles.
pub fn includes(
    log: &ReleaseLog<'_>,
    head: &TreeHead,
    index: u64,
    entry: &[u8],
) -> Result<bool, LogReadError> {
    if index >= head.size {
        return Ok(false);
    }
    let ids = tiles::tiles_for_inclusion(index, head.size)
        .map_err(|e| LogReadError::Invalid(e.to_string()))?;
    let proof = fetch_tiles(log, head.size, &ids)?
        .inclusion_proof(index)
        .map_err(|e| LogReadError::Invalid(e.to_string()))?;
    Ok(merkle::verify_inclusion(
        index,
        head.size,
        &merkle::leaf_hash(entry),
        &proof,
        &head.root,
    ))
}

/// The consistency proof from the tree of `old` entries to the tree of
/// `new`, from the store's tiles (checked by the caller against both heads:
/// `verify::witness::grows`).
pub fn consistency_proof(
    log: &ReleaseLog<'_>,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, LogReadError> {
    let ids =
        tiles::tiles_for_consistency(old, new).map_err(|e| LogReadError::Invalid(e.to_string()))?;
    fetch_tiles(log, new, &ids)?
        .consistency_proof(old)
        .map_err(|e| LogReadError::Invalid(e.to_string()))
}
