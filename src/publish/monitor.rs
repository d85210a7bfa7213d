//! `npcnix log --log-key`: the witnessed log read whole, as a monitor
//! (issue 37). Every entry bundle is read and every tile is recomputed
//! from the entries and compared with the store's (a tile that differs, or
//! entries that do not hash to the signed checkpoint, are errors); then
//! each statement is reported with how it relates to the release log: the
//! statement of `releases/<v>`, one that was never published there, or one
//! that differs from it (another statement signed for a version: what a
//! stolen release key leaves in the log even if no host took it). With a
//! head remembered from an earlier run, the log must extend it.

use crate::format::merkle::{self, TreeHead};
use crate::format::note::VerifierKey;
use crate::format::statement::Statement;
use crate::format::tiles::{self, TileName, TileSet};
use crate::format::Digest;
use crate::store::tlog::{self, LogReadError};
use crate::store::{Remote, LOG_BUNDLE_LIMITS};
use crate::verify::witness::{grows, growth, Growth};

/// How a logged statement relates to `releases/<version>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Published {
    /// It is the statement of `releases/<version>`.
    Release,
    /// `releases/<version>` does not exist (a publish that stopped after
    /// its log append, or a statement logged and never published).
    Missing,
    /// `releases/<version>` holds another statement.
    Differs,
    /// The entry is not a statement npcnix can read.
    Unreadable,
    /// A second entry for a version logged before.
    Duplicate,
}

/// One entry of the log, as reported.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    pub index: u64,
    pub statement: String,
    pub version: Option<u64>,
    pub remote: Option<String>,
    pub created: Option<u64>,
    pub archive: Option<String>,
    pub published: Published,
}

/// What a monitor run found.
pub struct Monitored {
    pub head: TreeHead,
    /// Entries reported (those past `since`).
    pub reported: u64,
    /// Reported entries that are not the published release of their
    /// version (missing, different, repeated, unreadable): alarms.
    pub suspicious: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Read(#[from] LogReadError),
    #[error("the remote has no log (log/checkpoint is missing)")]
    NoLog,
    /// The log is not what its checkpoint says, or does not extend the
    /// head seen before.
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::store::StoreError> for MonitorError {
    fn from(e: crate::store::StoreError) -> Self {
        MonitorError::Read(LogReadError::Store(e))
    }
}

/// Reads, verifies and reports the whole log; `since` is the head an
/// earlier run saw (reported entries start after it).
pub fn monitor(
    remote: &Remote,
    log_key: &VerifierKey,
    since: Option<&TreeHead>,
    each: &mut dyn FnMut(&Entry),
) -> Result<Monitored, MonitorError> {
    let log = remote.log();
    let head = tlog::read_head(&log, log_key)?.ok_or(MonitorError::NoLog)?;
    let th = TreeHead::from(&head.checkpoint);
    match growth(since, &th) {
        Growth::Same => {}
        Growth::Fork(d) => return Err(MonitorError::Invalid(format!("the log forked: {d}"))),
        Growth::Larger { old, new } => {
            let proof = tlog::consistency_proof(&log, old, new)?;
            if let Some(s) = since {
                grows(s, &th, &proof).map_err(MonitorError::Invalid)?;
            }
        }
    }
    let invalid = |what: String| MonitorError::Invalid(what);
    // Every entry, bundle by bundle.
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut b = 0u64;
    while let Some(id) = tiles::bundle_in_tree(b, th.size) {
        let bytes = log
            .log_tile(TileName::Entries(id))?
            .ok_or_else(|| invalid(format!("the log's entry bundle {id} is missing")))?;
        let got = tiles::decode_bundle(id, &bytes, &LOG_BUNDLE_LIMITS)
            .map_err(|e| invalid(format!("the log's entry bundle {id}: {e}")))?;
        entries.extend(got.into_iter().map(<[u8]>::to_vec));
        b += 1;
    }
    let leaves: Vec<merkle::Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    if merkle::root(&leaves) != th.root {
        return Err(invalid(format!(
            "the log's {} entries do not hash to its signed checkpoint",
            th.size
        )));
    }
    // Every hash tile, recomputed from the entries.
    let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    let rebuilt = tiles::append(
        &TileSet::new(0),
        &merkle::root(&[]),
        None,
        &refs,
        &LOG_BUNDLE_LIMITS,
    )
    .map_err(|e| invalid(format!("recomputing the log's tiles: {e}")))?;
    for f in rebuilt
        .files
        .iter()
        .filter(|f| matches!(f.name, TileName::Hashes(_)))
    {
        if !is_current(&f.name, th.size) {
            continue;
        }
        let stored = log
            .log_tile(f.name)?
            .ok_or_else(|| invalid(format!("the log's tile {} is missing", f.name)))?;
        if stored != f.bytes {
            return Err(invalid(format!(
                "the log's tile {} differs from the one its entries give",
                f.name
            )));
        }
    }
    let from = since.map_or(0, |s| s.size);
    let mut versions = std::collections::BTreeSet::new();
    let mut reported = 0;
    let mut suspicious = 0;
    for (i, e) in entries.iter().enumerate() {
        let index = i as u64;
        let st = Statement::parse(e).ok();
        let hash = Digest::of(e);
        let published = match &st {
            None => Published::Unreadable,
            Some(s) if !versions.insert(s.version) => Published::Duplicate,
            Some(_) if index < from => Published::Release,
            Some(s) => match log.release(s.version)? {
                None => Published::Missing,
                Some(bundle) => match crate::format::bundle::Bundle::decode(&bundle) {
                    Ok(b) if b.statement == *e => Published::Release,
                    _ => Published::Differs,
                },
            },
        };
        if index < from {
            continue;
        }
        reported += 1;
        // `missing` too: a statement logged and never published is
        // exactly what a targeted split view leaves (shown to one host,
        // never put in `releases/`), as well as a publish that stopped
        // after its log append.
        if published != Published::Release {
            suspicious += 1;
        }
        each(&Entry {
            index,
            statement: hash.to_hex(),
            version: st.as_ref().map(|s| s.version),
            remote: st.as_ref().map(|s| s.remote.to_string()),
            created: st.as_ref().map(|s| s.created),
            archive: st.as_ref().map(|s| s.archive.blake3.to_hex()),
            published,
        });
    }
    Ok(Monitored {
        head: th,
        reported,
        suspicious,
    })
}

/// Whether a tile `append` wrote on the way to `size` is one the tree of
/// `size` has (a partial tile it later completed is not).
fn is_current(name: &TileName, size: u64) -> bool {
    match name {
        TileName::Hashes(t) => tiles::tile_in_tree(t.level(), t.index(), size) == Some(*t),
        TileName::Entries(b) => tiles::bundle_in_tree(b.index(), size) == Some(*b),
    }
}
