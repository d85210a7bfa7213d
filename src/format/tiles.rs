//! C2SP tlog-tiles (issue 37, the witnessed release log): the log as static
//! files that a store or an HTTP mirror serves as they are, and from which a
//! host, a witness or an auditor computes heads and proofs without any log
//! server. Pure: names, bytes and hashes in, values out.
//!
//! The tree is cut into tiles of 8 levels (c2sp.org/tlog-tiles). The tile
//! at level `L`, index `N` holds up to 256 consecutive hashes, each the
//! RFC 6962 head of `256^L` leaves: `tile/0/...` holds leaf hashes,
//! `tile/1/...` the heads of full level-0 tiles, and so on. The leaves'
//! data are in entry bundles, `tile/entries/<N>`, 256 to a bundle, each
//! entry a big-endian `u16` length and its bytes. `<N>` is written in
//! groups of three digits, all but the last prefixed with `x` (1234067 is
//! `x001/x234/067`). The rightmost tile of a level is usually partial: it
//! holds `W` (1 to 255) hashes and is named `<N>.p/<W>`.
//!
//! A tree of `s` leaves is described by one partial tile per nonzero
//! base-256 digit of `s` ([`tiles_for_root`]); an inclusion or consistency
//! proof needs a few more ([`tiles_for_inclusion`], [`tiles_for_consistency`]).
//! The shell asks which tiles it needs, fetches them, puts them in a
//! [`TileSet`] and asks for the head or the proof. Nothing computed from
//! tiles is trusted on its own: tiles come from the store, so a proof is
//! only worth what [`merkle::verify_inclusion`] or
//! [`merkle::verify_consistency`] says against a signed checkpoint's head,
//! with the leaf hash computed from the entry the host holds (never read
//! from a tile). A forged tile gives a proof that does not verify.
//!
//! A publisher appends with [`append`]: from the tiles at the tree's right
//! edge ([`edge`]) and the signed head they must give, it produces every
//! bundle and tile to write. Once a checkpoint covers them, full tiles
//! never change; partial ones are superseded by wider ones at new names.
//!
//! Stricter than the spec's grammar: levels stop at 7 and indexes where a
//! tree of at most 2^64 - 1 leaves (a checkpoint's size is a `u64`) ends,
//! since no such tree has a tile beyond them.

use std::collections::BTreeMap;
use std::fmt;

use crate::format::merkle::{self, leaf_hash, node_hash, Hash};

/// Hashes in a full tile, entries in a full bundle.
pub const TILE_WIDTH: u16 = 256;
/// Bytes of a hash in a tile.
pub const HASH_BYTES: usize = 32;
/// Bytes of a full hash tile.
pub const FULL_TILE_BYTES: usize = TILE_WIDTH as usize * HASH_BYTES;
/// The highest level at which a tree of at most 2^64 - 1 leaves has tiles.
pub const MAX_LEVEL: u8 = 7;
/// The longest entry a bundle can carry (its length is a `u16`).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
/// The longest name [`TileName::parse`] reads (the longest valid one is 53
/// bytes: `tile/entries/x018/x446/x744/x073/x709/x551/615.p/255`).
pub const MAX_PATH_BYTES: usize = 64;

const LEVELS: usize = MAX_LEVEL as usize + 1;
/// The longest `<N>`: 2^64 - 1 has 20 digits, 7 groups.
const MAX_GROUPS: usize = 7;

/// How large entry bundles may be, checked before anything is decoded
/// (and by [`append`], so a publisher never writes what hosts refuse).
///
/// The default is the format's own ceiling: 65,535-byte entries, and a
/// bundle of 256 of them with their length prefixes (16 MiB). A reader that
/// knows its leaves are smaller (npcnix's are release statements) passes
/// tighter limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// The longest entry (at most [`MAX_ENTRY_BYTES`]; more means that).
    pub max_entry_bytes: usize,
    /// The longest bundle, length prefixes included.
    pub max_bundle_bytes: usize,
}

impl BundleLimits {
    /// The format's ceiling: any valid bundle fits.
    pub const FORMAT: BundleLimits = BundleLimits {
        max_entry_bytes: MAX_ENTRY_BYTES,
        max_bundle_bytes: TILE_WIDTH as usize * (2 + MAX_ENTRY_BYTES),
    };

    fn max_entry(&self) -> usize {
        self.max_entry_bytes.min(MAX_ENTRY_BYTES)
    }
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits::FORMAT
    }
}

/// What is wrong with an entry bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleFault {
    #[error("{len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("entry {entry} is {len} bytes, over the limit of {max}")]
    EntryTooLarge {
        entry: usize,
        len: usize,
        max: usize,
    },
    #[error("entry {entry} is cut short")]
    Truncated { entry: usize },
    #[error("{got} entries where its width says {want}")]
    Count { got: usize, want: u16 },
}

/// Why a tile name, tile, bundle, head, proof or append was refused; each
/// names the tile or sizes involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("malformed tile name {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("no tree of at most 2^64 - 1 leaves has a tile at level {level}, index {index}, width {width}")]
    NoSuchTile { level: u64, index: u64, width: u64 },
    #[error("{tile}: {len} bytes where a tile of its width has exactly {want}")]
    Length {
        tile: String,
        len: usize,
        want: usize,
    },
    #[error("{tile} is not a tile of the tree of size {size}")]
    NotInTree { tile: String, size: u64 },
    #[error("{tile} is narrower than the {need} hashes the tree of size {size} has there")]
    TooNarrow { tile: String, size: u64, need: u16 },
    #[error("{tile} is needed for the tree of size {size} and was not given")]
    Missing { tile: String, size: u64 },
    #[error("entry bundle {bundle}: {fault}")]
    Bundle { bundle: String, fault: BundleFault },
    #[error("leaf {index} is not in the tree of size {size}")]
    NotALeaf { index: u64, size: u64 },
    #[error("no consistency proof from size {old} to the smaller size {new}")]
    Shrinks { old: u64, new: u64 },
    #[error("the right edge given for the tree of size {size} is not that tree's: {why}")]
    Edge { size: u64, why: &'static str },
    #[error("appending {count} entries to the tree of size {size} passes 2^64 - 1 leaves")]
    Overflow { size: u64, count: usize },
}

fn shr(x: u64, bits: u32) -> u64 {
    x.checked_shr(bits).unwrap_or(0)
}

/// Base-256 digit `level` of `size`: the width of the partial tile there.
fn digit(size: u64, level: usize) -> u16 {
    (shr(size, 8 * level as u32) & 0xff) as u16
}

/// Whether a tree of at most 2^64 - 1 leaves has a tile at (level, index)
/// at least `width` wide: the smallest such tree, `(index * 256 + width) *
/// 256^level` leaves, must fit.
fn exists(level: u64, index: u64, width: u64) -> bool {
    if level > u64::from(MAX_LEVEL) || width == 0 || width > u64::from(TILE_WIDTH) {
        return false;
    }
    let smallest = (u128::from(index) * 256 + u128::from(width)) << (8 * level);
    smallest <= u128::from(u64::MAX)
}

/// `<N>` in three-digit groups, all but the last prefixed with `x`.
fn write_index(f: &mut fmt::Formatter<'_>, index: u64) -> fmt::Result {
    let mut groups = [0u64; MAX_GROUPS];
    let mut n = index;
    let mut count = 0;
    loop {
        groups[count] = n % 1000;
        count += 1;
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    for (i, g) in groups[..count].iter().rev().enumerate() {
        if i + 1 < count {
            write!(f, "x{g:03}/")?;
        } else {
            write!(f, "{g:03}")?;
        }
    }
    Ok(())
}

fn write_width(f: &mut fmt::Formatter<'_>, width: u16) -> fmt::Result {
    if width < TILE_WIDTH {
        write!(f, ".p/{width}")?;
    }
    Ok(())
}

/// A hash tile's coordinates: level, index within the level, width in
/// hashes (256 for a full tile). Only tiles some tree can have exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    level: u8,
    index: u64,
    width: u16,
}

impl TileId {
    pub fn new(level: u8, index: u64, width: u16) -> Result<TileId, TileError> {
        if !exists(level.into(), index, width.into()) {
            return Err(TileError::NoSuchTile {
                level: level.into(),
                index,
                width: width.into(),
            });
        }
        Ok(TileId {
            level,
            index,
            width,
        })
    }
    pub fn level(&self) -> u8 {
        self.level
    }
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn width(&self) -> u16 {
        self.width
    }
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }
    /// The tile's size in bytes.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * HASH_BYTES
    }
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tile/{}/", self.level)?;
        write_index(f, self.index)?;
        write_width(f, self.width)
    }
}

/// An entry bundle's coordinates: index, width in entries (256 for a full
/// bundle). Bundle `N` holds the entries whose leaf hashes are level-0 tile `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId {
    index: u64,
    width: u16,
}

impl BundleId {
    pub fn new(index: u64, width: u16) -> Result<BundleId, TileError> {
        TileId::new(0, index, width)?;
        Ok(BundleId { index, width })
    }
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn width(&self) -> u16 {
        self.width
    }
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }
    /// The level-0 hash tile of this bundle's leaves.
    pub fn tile(&self) -> TileId {
        TileId {
            level: 0,
            index: self.index,
            width: self.width,
        }
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tile/entries/")?;
        write_index(f, self.index)?;
        write_width(f, self.width)
    }
}

/// A name under a log's prefix, read strictly: a hash tile or an entry
/// bundle. Its `Display` is the one canonical spelling `parse` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileName {
    Hashes(TileId),
    Entries(BundleId),
}

impl fmt::Display for TileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TileName::Hashes(t) => t.fmt(f),
            TileName::Entries(b) => b.fmt(f),
        }
    }
}

fn three_digits(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 3 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A decimal number without leading zeros, at most `max_len` digits.
fn plain_decimal(s: &str, max_len: usize) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > max_len || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

impl TileName {
    /// Reads `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` in its
    /// canonical spelling only: no leading zeros in `<L>` or `<W>`, exact
    /// three-digit groups, `x` on all but the last, no leading `x000`
    /// group, `W` in 1..=255, and a tile some tree of at most 2^64 - 1
    /// leaves has. Anything else (another spelling of the same tile, a
    /// stray slash, `..`) is refused, so one tile has one name.
    pub fn parse(path: &str) -> Result<TileName, TileError> {
        let bad = |why: &'static str| TileError::BadPath {
            path: path.chars().take(MAX_PATH_BYTES).collect(),
            why,
        };
        if path.len() > MAX_PATH_BYTES {
            return Err(bad("too long"));
        }
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| bad("it does not start with tile/"))?;
        let (kind, rest) = rest.split_once('/').ok_or_else(|| bad("no tile index"))?;
        let level = if kind == "entries" {
            None
        } else {
            let l = plain_decimal(kind, 2)
                .ok_or_else(|| bad("the level is not a plain decimal number"))?;
            if l > 63 {
                return Err(bad("the level is above 63"));
            }
            if l > u64::from(MAX_LEVEL) {
                return Err(bad(
                    "the level is above 7: no tree of 2^64 - 1 leaves has it",
                ));
            }
            Some(l as u8)
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() > MAX_GROUPS + 1 {
            return Err(bad("too many index groups"));
        }
        let (groups, width) = match parts.split_last() {
            Some((w, [init @ .., last])) if last.ends_with(".p") => {
                let w = plain_decimal(w, 3)
                    .filter(|w| (1..u64::from(TILE_WIDTH)).contains(w))
                    .ok_or_else(|| bad("the partial width is not a number in 1..=255"))?;
                let mut g = init.to_vec();
                g.push(&last[..last.len() - 2]);
                (g, w as u16)
            }
            _ => (parts, TILE_WIDTH),
        };
        if groups.len() > MAX_GROUPS {
            return Err(bad("too many index groups"));
        }
        let mut index: u64 = 0;
        for (i, g) in groups.iter().enumerate() {
            let digits = if i + 1 < groups.len() {
                let d = g
                    .strip_prefix('x')
                    .ok_or_else(|| bad("an index group other than the last lacks its x"))?;
                if i == 0 && d == "000" {
                    return Err(bad("the index has a leading zero group"));
                }
                d
            } else {
                g
            };
            let n = three_digits(digits)
                .ok_or_else(|| bad("an index group is not exactly three digits"))?;
            index = index
                .checked_mul(1000)
                .and_then(|i| i.checked_add(n))
                .ok_or_else(|| bad("the index is larger than 2^64 - 1"))?;
        }
        match level {
            None => BundleId::new(index, width).map(TileName::Entries),
            Some(l) => TileId::new(l, index, width).map(TileName::Hashes),
        }
        .map_err(|_| bad("no tree of 2^64 - 1 leaves has this tile"))
    }

    pub fn is_full(&self) -> bool {
        match self {
            TileName::Hashes(t) => t.is_full(),
            TileName::Entries(b) => b.is_full(),
        }
    }
}

/// A hash tile's bytes: the hashes, concatenated.
pub fn encode_hash_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// Reads hash tile `tile`: exactly `width` hashes, not a byte more or less.
pub fn decode_hash_tile(tile: TileId, bytes: &[u8]) -> Result<Vec<Hash>, TileError> {
    if bytes.len() != tile.byte_len() {
        return Err(TileError::Length {
            tile: tile.to_string(),
            len: bytes.len(),
            want: tile.byte_len(),
        });
    }
    let mut out = Vec::with_capacity(tile.width.into());
    for chunk in bytes.chunks_exact(HASH_BYTES) {
        let mut h = [0u8; HASH_BYTES];
        h.copy_from_slice(chunk);
        out.push(h);
    }
    Ok(out)
}

/// Writes entry bundle `bundle`: exactly `width` entries, each within
/// `limits`, the whole within `limits`.
pub fn encode_bundle<E: AsRef<[u8]>>(
    bundle: BundleId,
    entries: &[E],
    limits: &BundleLimits,
) -> Result<Vec<u8>, TileError> {
    let fault = |fault| TileError::Bundle {
        bundle: bundle.to_string(),
        fault,
    };
    if entries.len() != usize::from(bundle.width) {
        return Err(fault(BundleFault::Count {
            got: entries.len(),
            want: bundle.width,
        }));
    }
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let e = e.as_ref();
        let len = u16::try_from(e.len())
            .ok()
            .filter(|_| e.len() <= limits.max_entry())
            .ok_or_else(|| {
                fault(BundleFault::EntryTooLarge {
                    entry: i,
                    len: e.len(),
                    max: limits.max_entry(),
                })
            })?;
        if out.len() + 2 + e.len() > limits.max_bundle_bytes {
            return Err(fault(BundleFault::TooLarge {
                len: out.len() + 2 + e.len(),
                max: limits.max_bundle_bytes,
            }));
        }
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Reads entry bundle `bundle`: its size checked first, then exactly
/// `width` entries, each within `limits`, nothing after the last.
pub fn decode_bundle<'a>(
    bundle: BundleId,
    bytes: &'a [u8],
    limits: &BundleLimits,
) -> Result<Vec<&'a [u8]>, TileError> {
    let fault = |fault| TileError::Bundle {
        bundle: bundle.to_string(),
        fault,
    };
    if bytes.len() > limits.max_bundle_bytes {
        return Err(fault(BundleFault::TooLarge {
            len: bytes.len(),
            max: limits.max_bundle_bytes,
        }));
    }
    let want = usize::from(bundle.width);
    let mut out = Vec::with_capacity(want);
    let mut rest = bytes;
    while !rest.is_empty() {
        let entry = out.len();
        if entry == want {
            return Err(fault(BundleFault::Count {
                got: entry + 1,
                want: bundle.width,
            }));
        }
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return Err(fault(BundleFault::Truncated { entry }));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if len > limits.max_entry() {
            return Err(fault(BundleFault::EntryTooLarge {
                entry,
                len,
                max: limits.max_entry(),
            }));
        }
        let (e, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| fault(BundleFault::Truncated { entry }))?;
        out.push(e);
        rest = tail;
    }
    if out.len() != want {
        return Err(fault(BundleFault::Count {
            got: out.len(),
            want: bundle.width,
        }));
    }
    Ok(out)
}

/// The tile at (`level`, `index`) as the tree of `size` leaves has it
/// (full, or partial at the right edge), if it has one there.
pub fn tile_in_tree(level: u8, index: u64, size: u64) -> Option<TileId> {
    let row = shr(size, 8 * u32::from(level));
    let start = index.checked_mul(256)?;
    let width = row.checked_sub(start).filter(|w| *w > 0)?;
    TileId::new(level, index, width.min(256) as u16).ok()
}

/// Entry bundle `index` as the tree of `size` leaves has it, if it has one.
pub fn bundle_in_tree(index: u64, size: u64) -> Option<BundleId> {
    tile_in_tree(0, index, size).map(|t| BundleId {
        index: t.index,
        width: t.width,
    })
}

/// The tiles from which the head of the tree of `size` leaves is
/// computed: the partial tile of each level where `size` has a nonzero
/// base-256 digit (none for the empty tree). For 70,000 leaves:
/// `tile/0/273.p/112`, `tile/1/001.p/17`, `tile/2/000.p/1`.
pub fn tiles_for_root(size: u64) -> Vec<TileId> {
    (0..LEVELS)
        .filter(|l| digit(size, *l) > 0)
        .filter_map(|l| tile_in_tree(l as u8, shr(size, 8 * (l as u32 + 1)), size))
        .collect()
}

/// The tiles from which the inclusion proof of leaf `index` in the tree of
/// `size` leaves is computed (verify the proof against a signed head; the
/// head itself needs no tile).
pub fn tiles_for_inclusion(index: u64, size: u64) -> Result<Vec<TileId>, TileError> {
    let mut p = Planner::new(size);
    inclusion(&mut p, index, size)?;
    Ok(p.into_tiles())
}

/// The tiles from which the consistency proof from the tree of `old`
/// leaves to the tree of `new` leaves is computed: tiles of the tree of
/// `new` leaves only.
pub fn tiles_for_consistency(old: u64, new: u64) -> Result<Vec<TileId>, TileError> {
    let mut p = Planner::new(new);
    consistency(&mut p, old, new)?;
    Ok(p.into_tiles())
}

/// What a publisher reads before appending to the tree of `size` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The right edge's hash tiles: [`tiles_for_root`] of the size.
    pub tiles: Vec<TileId>,
    /// The partial entry bundle, if the size is not a multiple of 256.
    pub bundle: Option<BundleId>,
}

/// The tiles and bundle [`append`] extends at the tree of `size` leaves.
pub fn edge(size: u64) -> Edge {
    Edge {
        tiles: tiles_for_root(size),
        bundle: bundle_in_tree(shr(size, 8), size),
    }
}

/// The hash tiles fetched for one tree size, each checked as it is put in:
/// one this tree has, at least as wide as the tree has it there, exactly
/// as long as its width says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileSet {
    size: u64,
    /// (level, index) -> the hashes the tree has there (a wider tile given
    /// for a partial one is cut to the tree's width).
    tiles: BTreeMap<(u8, u64), Vec<Hash>>,
}

impl TileSet {
    /// An empty set for the tree of `size` leaves.
    pub fn new(size: u64) -> TileSet {
        TileSet {
            size,
            tiles: BTreeMap::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The width this tree has at (`level`, `index`), or why `tile` does
    /// not fit there.
    fn need(&self, tile: TileId) -> Result<u16, TileError> {
        let need = tile_in_tree(tile.level, tile.index, self.size)
            .ok_or_else(|| TileError::NotInTree {
                tile: tile.to_string(),
                size: self.size,
            })?
            .width;
        if tile.width < need {
            return Err(TileError::TooNarrow {
                tile: tile.to_string(),
                size: self.size,
                need,
            });
        }
        Ok(need)
    }

    /// Puts in hash tile `tile` read from `bytes`. A full tile given where
    /// the tree has a partial one is accepted (c2sp.org/tlog-tiles lets a
    /// client fall back to it); only the hashes the tree has are kept.
    pub fn insert(&mut self, tile: TileId, bytes: &[u8]) -> Result<(), TileError> {
        let need = self.need(tile)?;
        let mut hashes = decode_hash_tile(tile, bytes)?;
        hashes.truncate(need.into());
        self.tiles.insert((tile.level, tile.index), hashes);
        Ok(())
    }

    /// Puts in the level-0 tile of `bundle` computed from its entries (what
    /// a monitor that reads the entries does instead of fetching the tile).
    pub fn insert_entries<E: AsRef<[u8]>>(
        &mut self,
        bundle: BundleId,
        entries: &[E],
    ) -> Result<(), TileError> {
        let need = self.need(bundle.tile())?;
        if entries.len() != usize::from(bundle.width) {
            return Err(TileError::Bundle {
                bundle: bundle.to_string(),
                fault: BundleFault::Count {
                    got: entries.len(),
                    want: bundle.width,
                },
            });
        }
        let hashes = entries
            .iter()
            .take(need.into())
            .map(|e| leaf_hash(e.as_ref()))
            .collect();
        self.tiles.insert((0, bundle.index), hashes);
        Ok(())
    }

    /// The head of the tree, from [`tiles_for_root`]'s tiles.
    pub fn root(&self) -> Result<Hash, TileError> {
        root(&mut Reader(self), self.size)
    }

    /// The inclusion proof of leaf `index`, from [`tiles_for_inclusion`]'s
    /// tiles; the same proof as [`merkle::inclusion_proof`].
    pub fn inclusion_proof(&self, index: u64) -> Result<Vec<Hash>, TileError> {
        inclusion(&mut Reader(self), index, self.size)
    }

    /// The consistency proof from the tree of `old` leaves to this one,
    /// from [`tiles_for_consistency`]'s tiles; the same proof as
    /// [`merkle::consistency_proof`].
    pub fn consistency_proof(&self, old: u64) -> Result<Vec<Hash>, TileError> {
        consistency(&mut Reader(self), old, self.size)
    }

    /// The hashes this tree has at (`level`, `index`), if given.
    fn hashes(&self, level: u8, index: u64) -> Result<&[Hash], TileError> {
        self.tiles
            .get(&(level, index))
            .map(Vec::as_slice)
            .ok_or_else(|| TileError::Missing {
                tile: name_in_tree(level, index, self.size),
                size: self.size,
            })
    }
}

fn name_in_tree(level: u8, index: u64, size: u64) -> String {
    match tile_in_tree(level, index, size) {
        Some(t) => t.to_string(),
        None => format!("tile at level {level}, index {index}"),
    }
}

/// Where a tile lookup for the perfect subtree of height `h` whose leaves
/// start at `k << h` goes: (tile level, tile index, first hash, hash count).
fn locate(h: u32, k: u64) -> (u8, u64, usize, usize) {
    let (level, r) = (h / 8, h % 8);
    let first = k << r;
    (level as u8, first >> 8, (first & 0xff) as usize, 1 << r)
}

/// Where the heads of perfect subtrees come from: tiles (when computing)
/// or nowhere (when planning which tiles computing will need).
trait Subtrees {
    /// The head of the perfect subtree of height `h` (< 64) whose leaves
    /// start at `k << h`; it lies within the tree.
    fn perfect(&mut self, h: u32, k: u64) -> Result<Hash, TileError>;
}

struct Reader<'a>(&'a TileSet);

impl Subtrees for Reader<'_> {
    fn perfect(&mut self, h: u32, k: u64) -> Result<Hash, TileError> {
        let (level, index, first, count) = locate(h, k);
        if level > MAX_LEVEL {
            return Err(TileError::NotInTree {
                tile: format!("tile at level {level}"),
                size: self.0.size,
            });
        }
        let hashes = self.0.hashes(level, index)?;
        let span = first
            .checked_add(count)
            .and_then(|end| hashes.get(first..end))
            .ok_or_else(|| TileError::NotInTree {
                tile: name_in_tree(level, index, self.0.size),
                size: self.0.size,
            })?;
        Ok(merkle::root(span))
    }
}

/// Records the tiles a computation reads; answers with a placeholder.
struct Planner {
    size: u64,
    wanted: Vec<(u8, u64)>,
}

impl Planner {
    fn new(size: u64) -> Planner {
        Planner {
            size,
            wanted: Vec::new(),
        }
    }
    fn into_tiles(mut self) -> Vec<TileId> {
        self.wanted.sort_unstable();
        self.wanted.dedup();
        self.wanted
            .iter()
            .filter_map(|(l, n)| tile_in_tree(*l, *n, self.size))
            .collect()
    }
}

impl Subtrees for Planner {
    fn perfect(&mut self, h: u32, k: u64) -> Result<Hash, TileError> {
        let (level, index, _, _) = locate(h, k);
        self.wanted.push((level, index));
        Ok([0; 32])
    }
}

/// The largest power of two below `n` (n >= 2): where RFC 6962 splits.
fn split(n: u64) -> u64 {
    1 << (63 - (n.saturating_sub(1)).leading_zeros().min(63))
}

/// The head of leaves `lo..hi` (as RFC 6962 splits them, each range a
/// perfect subtree or a right-hand part the recursion cut).
fn mth<S: Subtrees>(s: &mut S, lo: u64, hi: u64) -> Result<Hash, TileError> {
    let n = hi.saturating_sub(lo);
    if n == 0 {
        return Ok(merkle::root(&[]));
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        let h = n.trailing_zeros();
        return s.perfect(h, lo >> h);
    }
    let k = split(n);
    let left = mth(s, lo, lo + k)?;
    let right = mth(s, lo + k, hi)?;
    Ok(node_hash(&left, &right))
}

fn root<S: Subtrees>(s: &mut S, size: u64) -> Result<Hash, TileError> {
    mth(s, 0, size)
}

fn inclusion<S: Subtrees>(s: &mut S, index: u64, size: u64) -> Result<Vec<Hash>, TileError> {
    if index >= size {
        return Err(TileError::NotALeaf { index, size });
    }
    let mut out = Vec::new();
    path(s, 0, size, index, &mut out)?;
    Ok(out)
}

/// RFC 6962 `PATH(m, D[lo:hi])`, `m` absolute.
fn path<S: Subtrees>(
    s: &mut S,
    lo: u64,
    hi: u64,
    m: u64,
    out: &mut Vec<Hash>,
) -> Result<(), TileError> {
    let n = hi.saturating_sub(lo);
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < lo + k {
        path(s, lo, lo + k, m, out)?;
        out.push(mth(s, lo + k, hi)?);
    } else {
        path(s, lo + k, hi, m, out)?;
        out.push(mth(s, lo, lo + k)?);
    }
    Ok(())
}

fn consistency<S: Subtrees>(s: &mut S, old: u64, new: u64) -> Result<Vec<Hash>, TileError> {
    if old > new {
        return Err(TileError::Shrinks { old, new });
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(s, 0, new, old, true, &mut out)?;
    }
    Ok(out)
}

/// RFC 6962 `SUBPROOF(m, D[lo:hi], whole)`, `m` absolute (lo < m <= hi).
fn subproof<S: Subtrees>(
    s: &mut S,
    lo: u64,
    hi: u64,
    m: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), TileError> {
    let n = hi.saturating_sub(lo);
    let rel = m.saturating_sub(lo);
    if rel >= n {
        if !whole {
            out.push(mth(s, lo, hi)?);
        }
        return Ok(());
    }
    let k = split(n);
    if rel <= k {
        subproof(s, lo, lo + k, m, whole, out)?;
        out.push(mth(s, lo + k, hi)?);
    } else {
        subproof(s, lo + k, hi, m, false, out)?;
        out.push(mth(s, lo, lo + k)?);
    }
    Ok(())
}

/// One file a publisher writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileFile {
    pub name: TileName,
    pub bytes: Vec<u8>,
}

/// What [`append`] produced: the new tree and the files that make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub size: u64,
    pub root: Hash,
    /// Every bundle and tile to write, full ones before partial ones. A
    /// name may hold different bytes only beyond the last signed
    /// checkpoint (a publisher that died before signing rewrites them);
    /// a full tile a checkpoint covers never changes.
    pub files: Vec<TileFile>,
}

/// Appends `entries` to the tree whose right edge is `edge_tiles` (a
/// [`TileSet`] of the current size holding [`edge`]'s tiles) and
/// `partial_bundle` (the bytes of [`edge`]'s bundle, when there is one).
/// The edge must give `old_root`, the signed head of the current size, and
/// the partial bundle's entries must hash to its level-0 tile: a store
/// that altered either is refused, never extended. Entries and bundles
/// are held to `limits`.
pub fn append<'a>(
    edge_tiles: &TileSet,
    old_root: &Hash,
    partial_bundle: Option<&'a [u8]>,
    entries: &[&'a [u8]],
    limits: &BundleLimits,
) -> Result<Appended, TileError> {
    let old = edge_tiles.size;
    let new = u64::try_from(entries.len())
        .ok()
        .and_then(|n| old.checked_add(n))
        .ok_or(TileError::Overflow {
            size: old,
            count: entries.len(),
        })?;
    let edge_err = |why| TileError::Edge { size: old, why };
    if edge_tiles.root()? != *old_root {
        return Err(edge_err("its tiles do not give the signed head"));
    }
    let mut rows: Vec<Vec<Hash>> = Vec::with_capacity(LEVELS);
    for l in 0..LEVELS {
        rows.push(if digit(old, l) == 0 {
            Vec::new()
        } else {
            edge_tiles
                .hashes(l as u8, shr(old, 8 * (l as u32 + 1)))?
                .to_vec()
        });
    }
    let mut bundle: Vec<&[u8]> = match (bundle_in_tree(shr(old, 8), old), partial_bundle) {
        (None, None) => Vec::new(),
        (Some(id), Some(bytes)) => {
            let e = decode_bundle(id, bytes, limits)?;
            if !e.iter().map(|e| leaf_hash(e)).eq(rows[0].iter().copied()) {
                return Err(edge_err(
                    "the partial entry bundle does not hash to its tile",
                ));
            }
            e
        }
        (Some(_), None) => return Err(edge_err("the partial entry bundle is missing")),
        (None, Some(_)) => return Err(edge_err("an entry bundle was given where it has none")),
    };

    let mut files = Vec::new();
    let mut size = old;
    for e in entries {
        bundle.push(e);
        rows[0].push(leaf_hash(e));
        size += 1;
        if bundle.len() == usize::from(TILE_WIDTH) {
            let id = BundleId::new(shr(size, 8) - 1, TILE_WIDTH)?;
            files.push(TileFile {
                name: TileName::Entries(id),
                bytes: encode_bundle(id, &bundle, limits)?,
            });
            bundle.clear();
        }
        let mut l = 0;
        while rows[l].len() == usize::from(TILE_WIDTH) {
            let id = TileId::new(l as u8, shr(size, 8 * (l as u32 + 1)) - 1, TILE_WIDTH)?;
            files.push(TileFile {
                name: TileName::Hashes(id),
                bytes: encode_hash_tile(&rows[l]),
            });
            let head = merkle::root(&rows[l]);
            rows[l].clear();
            l += 1;
            match rows.get_mut(l) {
                Some(row) => row.push(head),
                // A full level-7 tile would need 2^64 leaves.
                None => {
                    return Err(TileError::Overflow {
                        size: old,
                        count: entries.len(),
                    })
                }
            }
        }
    }

    if let Some(id) = bundle_in_tree(shr(new, 8), new).filter(|_| old != new) {
        files.push(TileFile {
            name: TileName::Entries(id),
            bytes: encode_bundle(id, &bundle, limits)?,
        });
    }
    let mut next = TileSet::new(new);
    for (l, row) in rows.into_iter().enumerate() {
        // Present exactly where the new size has a nonzero digit: partial.
        let Some(id) = tile_in_tree(l as u8, shr(new, 8 * (l as u32 + 1)), new) else {
            continue;
        };
        if shr(old, 8 * l as u32) != shr(new, 8 * l as u32) {
            files.push(TileFile {
                name: TileName::Hashes(id),
                bytes: encode_hash_tile(&row),
            });
        }
        next.tiles.insert((id.level, id.index), row);
    }
    Ok(Appended {
        size: new,
        root: next.root()?,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::merkle::{
        consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
    };
    use base64::Engine as _;
    use std::collections::BTreeSet;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    }

    fn b64(s: &str) -> Hash {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64")
            .try_into()
            .expect("32 bytes")
    }

    fn entry(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&entry(i))).collect()
    }

    fn tile(level: u8, index: u64, width: u16) -> TileId {
        TileId::new(level, index, width).expect("tile")
    }

    fn bundle(index: u64, width: u16) -> BundleId {
        BundleId::new(index, width).expect("bundle")
    }

    /// The tiles of a tree straight from the spec's formula, with merkle.rs
    /// alone: hash `i` of tile `n` at level `l` is
    /// `MTH(D[(n * 256 + i) * 256^l : (n * 256 + i + 1) * 256^l])`. The
    /// hashes of complete subtrees are the same in every larger tree, so
    /// one `Spec` serves every size up to its leaves'.
    struct Spec {
        leaves: Vec<Hash>,
        /// rows[l][j]: the head of leaves `j * 256^l .. (j + 1) * 256^l`.
        rows: Vec<Vec<Hash>>,
    }

    impl Spec {
        fn new(n: u64) -> Spec {
            let leaves = leaves(n);
            let rows = (0..=MAX_LEVEL)
                .map(|l| {
                    let span = 1usize << (8 * u32::from(l));
                    leaves.chunks_exact(span).map(merkle::root).collect()
                })
                .collect();
            Spec { leaves, rows }
        }

        fn tile(&self, t: TileId) -> Vec<u8> {
            let first = t.index() as usize * 256;
            self.rows[usize::from(t.level())][first..first + usize::from(t.width())].concat()
        }

        /// A set for the tree of `size` leaves holding exactly `tiles`.
        fn set(&self, size: u64, tiles: &[TileId]) -> TileSet {
            let mut set = TileSet::new(size);
            for t in tiles {
                set.insert(*t, &self.tile(*t)).expect("insert");
            }
            set
        }

        fn head(&self, size: u64) -> Hash {
            merkle::root(&self.leaves[..size as usize])
        }
    }

    /// Every name the tree of `size` leaves has: its tiles and bundles.
    fn names(size: u64) -> BTreeSet<TileName> {
        let mut out = BTreeSet::new();
        for l in 0..=MAX_LEVEL {
            let mut n = 0;
            while let Some(t) = tile_in_tree(l, n, size) {
                out.insert(TileName::Hashes(t));
                if l == 0 {
                    out.insert(TileName::Entries(bundle(n, t.width())));
                }
                n += 1;
            }
        }
        out
    }

    fn parse(s: &str) -> TileName {
        TileName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// c2sp.org/tlog-tiles (1234067 is x001/x234/067) and
    /// transparency-dev/tessera, api/layout/paths_test.go (Apache-2.0),
    /// used as data: TestTilePath, TestEntriesPath,
    /// TestEntriesPathForLogIndex and the accepted cases of
    /// TestParseTileLevelIndexPartial whose level is at most 7 (tessera also
    /// writes levels up to 63, which no tree of 2^64 - 1 leaves has).
    #[test]
    fn names_are_written_and_read_as_the_spec_and_tessera_do() {
        let cases = [
            (
                TileName::Hashes(tile(0, 1_234_067, 256)),
                "tile/0/x001/x234/067",
            ),
            (
                TileName::Hashes(tile(0, 1_234_067, 89)),
                "tile/0/x001/x234/067.p/89",
            ),
            (TileName::Hashes(tile(0, 1, 256)), "tile/0/001"),
            (TileName::Hashes(tile(0, 0, 256)), "tile/0/000"),
            (TileName::Hashes(tile(0, 0, 255)), "tile/0/000.p/255"),
            (TileName::Hashes(tile(1, 0, 256)), "tile/1/000"),
            (TileName::Entries(bundle(0, 256)), "tile/entries/000"),
            (TileName::Entries(bundle(0, 8)), "tile/entries/000.p/8"),
            (TileName::Entries(bundle(255, 256)), "tile/entries/255"),
            (
                TileName::Entries(bundle(255, 253)),
                "tile/entries/255.p/253",
            ),
            (
                TileName::Entries(bundle(123_456_789, 256)),
                "tile/entries/x123/x456/789",
            ),
            // The extremes: the last tiles a tree of 2^64 - 1 leaves has.
            (TileName::Hashes(tile(7, 0, 255)), "tile/7/000.p/255"),
            (
                TileName::Hashes(tile(0, (1 << 56) - 1, 255)),
                "tile/0/x072/x057/x594/x037/x927/935.p/255",
            ),
        ];
        for (name, path) in cases {
            assert_eq!(name.to_string(), path);
            assert_eq!(parse(path), name, "{path}");
        }
        // EntriesPathForLogIndex(seq, size): the bundle of a leaf.
        for (seq, size, path) in [
            (0, 256, "tile/entries/000"),
            (255, 256, "tile/entries/000"),
            (251, 255, "tile/entries/000.p/255"),
            (256, 512, "tile/entries/001"),
            (3, 257, "tile/entries/000"),
            (256, 257, "tile/entries/001.p/1"),
            (
                123_456_789 * 256,
                123_456_790 * 256,
                "tile/entries/x123/x456/789",
            ),
        ] {
            let b = bundle_in_tree(seq / 256, size).expect("in tree");
            assert_eq!(b.to_string(), path, "{seq} of {size}");
        }
        for index in [
            0,
            7,
            999,
            1000,
            1001,
            999_999,
            1_000_000,
            1 << 40,
            (1 << 48) - 2,
        ] {
            for width in [1, 17, 255, 256] {
                for t in [
                    TileName::Hashes(tile(1, index, width)),
                    TileName::Entries(bundle(index, width)),
                ] {
                    assert_eq!(parse(&t.to_string()), t);
                }
            }
        }
    }

    /// One tile, one name: a store that could answer a second spelling
    /// could show a host a tile a cache or an auditor never saw under the
    /// first. Also traversal-looking names, and names of tiles no tree of
    /// 2^64 - 1 leaves has (tessera's rejected cases are among them).
    #[test]
    fn noncanonical_and_impossible_tile_names_are_refused() {
        for bad in [
            "tile/00/000",
            "tile/01/000",
            "tile/0/0000",
            "tile/0/00",
            "tile/0/1",
            "tile/0/x000/001",
            "tile/0/x000/x001/002",
            "tile/0/x001",
            "tile/0/x001/",
            "tile/0/x001/x234",
            "tile/0/x001/x234/",
            "tile/0/001/002",
            "tile/0/X001/002",
            "tile/0/xx01/002",
            "tile/0/x001/x002",
            "tile/0/x001/0002",
            "tile/0/x001/-002",
            "tile/0/x0a1/002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/007",
            "tile/0/000.p/",
            "tile/0/000.p",
            "tile/0/000.p/+1",
            "tile/0/000.p/1/",
            "tile/0/000.p/1.p/2",
            "tile/0/x001.p/002",
            "tile/1/x001/.p/abc",
            "tile/0/000/",
            "/tile/0/000",
            "tile//000",
            "tile/0//000",
            "tile/0/../000",
            "tile/0/./000",
            "tile/../0/000",
            "tile/-1/000",
            "tile/+0/000",
            "tile/data/000",
            "tile/entries",
            "tile/entries/",
            "tile/entries/000.p/256",
            "tiles/0/000",
            "TILE/0/000",
            "tile/0/ 000",
            "tile/0/000 ",
            "tile/0/000\n",
            "tile/0/٠٠٠",
            "",
            "tile",
            "tile/",
            // Go's sumdb names carry a height: tile/H/L/N.
            "tile/8/0/001",
            "tile/4/0/001.p/5",
            // Levels the spec allows but no tree of 2^64 - 1 leaves has.
            "tile/8/000.p/1",
            "tile/63/x999/x999/x999/x999/x999/999.p/255",
            "tile/64/x001/002",
            "tile/100/000",
            // Indexes past the end of any such tree.
            "tile/7/000",
            "tile/7/001.p/1",
            "tile/0/x072/x057/x594/x037/x927/935",
            "tile/0/x072/x057/x594/x037/x927/936.p/1",
            "tile/1/x281/x474/x976/x710/656.p/1",
            "tile/entries/x072/x057/x594/x037/x927/936.p/1",
            "tile/0/x018/x446/x744/x073/x709/x551/615",
            "tile/0/x999/x999/x999/x999/x999/x999/999",
            "tile/0/x001/x000/x000/x000/x000/x000/x000/000",
        ] {
            assert!(
                matches!(TileName::parse(bad), Err(TileError::BadPath { .. })),
                "{bad:?}"
            );
        }
        let long = format!("tile/0/{}000", "x000/".repeat(20));
        assert!(matches!(
            TileName::parse(&long),
            Err(TileError::BadPath { .. })
        ));
        assert!(TileId::new(8, 0, 1).is_err());
        assert!(TileId::new(0, 0, 0).is_err());
        assert!(TileId::new(0, 0, 257).is_err());
        assert!(BundleId::new(1 << 56, 1).is_err());
    }

    /// c2sp.org/tlog-tiles: "a tree of size 70,000 will be represented by
    /// 273 full level 0 tiles, one partial level 0 tile of width 112, one
    /// full level 1 tile, one partial level 1 tile of width 17, and one
    /// partial level 2 tile of width 1. [...] a tree of size 256 will be
    /// represented by a full level 0 tile and a partial level 1 tile of
    /// width 1."
    #[test]
    fn tree_shapes_are_the_specs_examples() {
        let paths = |tiles: Vec<TileId>| tiles.iter().map(TileId::to_string).collect::<Vec<_>>();
        assert_eq!(
            paths(tiles_for_root(70_000)),
            ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"]
        );
        let all = names(70_000);
        let full0 = all
            .iter()
            .filter(|n| matches!(n, TileName::Hashes(t) if t.level() == 0 && t.is_full()))
            .count();
        assert_eq!(full0, 273);
        let hashes: Vec<String> = all
            .iter()
            .filter(|n| matches!(n, TileName::Hashes(t) if t.level() > 0 || !t.is_full()))
            .map(TileName::to_string)
            .collect();
        assert_eq!(
            hashes,
            [
                "tile/0/273.p/112",
                "tile/1/000",
                "tile/1/001.p/17",
                "tile/2/000.p/1"
            ]
        );
        assert_eq!(paths(tiles_for_root(256)), ["tile/1/000.p/1"]);
        assert_eq!(
            names(256),
            BTreeSet::from([
                parse("tile/0/000"),
                parse("tile/entries/000"),
                parse("tile/1/000.p/1")
            ])
        );
        assert!(tiles_for_root(0).is_empty());
        assert_eq!(
            edge(0),
            Edge {
                tiles: vec![],
                bundle: None
            }
        );
        assert_eq!(
            edge(257),
            Edge {
                tiles: vec![tile(0, 1, 1), tile(1, 0, 1)],
                bundle: Some(bundle(1, 1)),
            }
        );
        // The largest tree: a partial tile of 255 hashes at every level.
        let max = tiles_for_root(u64::MAX);
        assert_eq!(max.len(), 8);
        assert!(max.iter().all(|t| t.width() == 255));
    }

    #[test]
    fn hash_tiles_are_exactly_their_width() {
        for width in [1u16, 2, 255, 256] {
            let t = tile(0, 3, width);
            let hashes: Vec<Hash> = (0..width).map(|i| [i as u8; 32]).collect();
            let bytes = encode_hash_tile(&hashes);
            assert_eq!(bytes.len(), t.byte_len());
            assert_eq!(decode_hash_tile(t, &bytes).expect("decode"), hashes);
            for len in [0, bytes.len() - 1, bytes.len() + 1, bytes.len() + 32] {
                let mut b = bytes.clone();
                b.resize(len, 0);
                assert!(matches!(
                    decode_hash_tile(t, &b),
                    Err(TileError::Length { len: l, want, .. }) if l == len && want == t.byte_len()
                ));
            }
        }
        assert_eq!(tile(2, 0, 256).byte_len(), FULL_TILE_BYTES);
    }

    #[test]
    fn entry_bundles_round_trip() {
        let big = vec![0xa5; MAX_ENTRY_BYTES];
        for width in [1u16, 2, 3, 255, 256] {
            let entries: Vec<Vec<u8>> = (0..u64::from(width))
                .map(|i| match i {
                    0 => Vec::new(),
                    1 => big.clone(),
                    i => entry(i),
                })
                .collect();
            let b = bundle(9, width);
            let bytes = encode_bundle(b, &entries, &BundleLimits::default()).expect("encode");
            let back = decode_bundle(b, &bytes, &BundleLimits::FORMAT).expect("decode");
            assert_eq!(back, entries);
        }
        // The largest bundle the format has fits its ceiling exactly.
        let bytes =
            encode_bundle(bundle(0, 256), &vec![big; 256], &BundleLimits::FORMAT).expect("largest");
        assert_eq!(bytes.len(), BundleLimits::FORMAT.max_bundle_bytes);
    }

    /// A hostile store's bundles: each is refused naming what was wrong,
    /// and the size limit is checked before anything is read.
    #[test]
    fn hostile_entry_bundles_are_refused_naming_the_fault() {
        let b3 = bundle(0, 3);
        let good =
            encode_bundle(b3, &[b"a".as_ref(), b"bc", b""], &BundleLimits::FORMAT).expect("encode");
        let tight = BundleLimits {
            max_entry_bytes: 1,
            max_bundle_bytes: 16,
        };
        let fault = |r: Result<Vec<&[u8]>, TileError>| match r {
            Err(TileError::Bundle { bundle, fault }) => {
                assert_eq!(bundle, "tile/entries/000.p/3");
                fault
            }
            other => panic!("{other:?}"),
        };
        let mut smuggled = good.clone();
        smuggled.extend_from_slice(&[0, 1, b'z']);
        let cases: Vec<(&str, Vec<u8>, BundleLimits, BundleFault)> = vec![
            (
                "oversized-bundle",
                vec![0; 17],
                tight,
                BundleFault::TooLarge { len: 17, max: 16 },
            ),
            (
                "oversized-entry",
                good.clone(),
                tight,
                BundleFault::EntryTooLarge {
                    entry: 1,
                    len: 2,
                    max: 1,
                },
            ),
            (
                "entry-cut-short",
                good[..good.len() - 3].to_vec(),
                BundleLimits::FORMAT,
                BundleFault::Truncated { entry: 1 },
            ),
            (
                "length-prefix-cut-short",
                good[..good.len() - 1].to_vec(),
                BundleLimits::FORMAT,
                BundleFault::Truncated { entry: 2 },
            ),
            (
                "entry-smuggled-past-the-width",
                smuggled,
                BundleLimits::FORMAT,
                BundleFault::Count { got: 4, want: 3 },
            ),
            (
                "entry-hidden-by-a-short-bundle",
                good[..7].to_vec(),
                BundleLimits::FORMAT,
                BundleFault::Count { got: 2, want: 3 },
            ),
            (
                "empty-bundle",
                Vec::new(),
                BundleLimits::FORMAT,
                BundleFault::Count { got: 0, want: 3 },
            ),
            (
                "length-claims-more-than-there-is",
                vec![0xff, 0xff, 1, 2, 3],
                BundleLimits::FORMAT,
                BundleFault::Truncated { entry: 0 },
            ),
        ];
        for (attack, bytes, limits, want) in cases {
            assert_eq!(fault(decode_bundle(b3, &bytes, &limits)), want, "{attack}");
        }
        assert_eq!(
            decode_bundle(b3, &good, &BundleLimits::FORMAT)
                .expect("good")
                .len(),
            3
        );
        // The writer holds itself to the same limits.
        let too_long = vec![0; MAX_ENTRY_BYTES + 1];
        assert!(matches!(
            encode_bundle(bundle(0, 1), &[&too_long], &BundleLimits::FORMAT),
            Err(TileError::Bundle {
                fault: BundleFault::EntryTooLarge { entry: 0, .. },
                ..
            })
        ));
        assert!(matches!(
            encode_bundle(bundle(0, 2), &[b"ab".as_ref(), b"c"], &tight),
            Err(TileError::Bundle {
                fault: BundleFault::EntryTooLarge {
                    entry: 0,
                    len: 2,
                    max: 1
                },
                ..
            })
        ));
        assert!(matches!(
            encode_bundle(bundle(0, 2), &[b"a"], &BundleLimits::FORMAT),
            Err(TileError::Bundle {
                fault: BundleFault::Count { got: 1, want: 2 },
                ..
            })
        ));
    }

    /// The head from tiles is merkle.rs's head for every size up to 600 and
    /// around 65,536, from exactly the tiles `tiles_for_root` lists, each
    /// the spec's width (`floor(s / 256^l) mod 256`).
    #[test]
    fn tile_heads_equal_merkle_heads() {
        let spec = Spec::new(70_000);
        let sizes = (0..=600).chain([65_535, 65_536, 65_537, 70_000]);
        for n in sizes {
            let tiles = tiles_for_root(n);
            for t in &tiles {
                let span = 256u64.pow(u32::from(t.level()));
                assert_eq!(u64::from(t.width()), (n / span) % 256, "{t} of {n}");
            }
            let root = spec.set(n, &tiles).root().expect("root");
            assert_eq!(root, spec.head(n), "size {n}");
        }
    }

    /// Inclusion and consistency proofs from tiles, from exactly the tiles
    /// planned, verify, and are merkle.rs's proofs: every leaf and every old
    /// size of trees up to 600 around the tile boundaries; across 65,536 a
    /// sample, compared with merkle.rs's where that is cheap (a proof that
    /// verifies is the proof: RFC 6962 admits one per leaf and size).
    #[test]
    fn tile_proofs_equal_merkle_proofs() {
        let spec = Spec::new(70_000);
        let small = [1u64, 2, 3, 5, 8, 17, 255, 256, 257, 300, 511, 512, 513, 600];
        let large = [65_535u64, 65_536, 65_537, 70_000];
        let picks = |n: u64| -> Vec<u64> {
            if n <= 600 {
                (0..n).collect()
            } else {
                [
                    0,
                    1,
                    255,
                    256,
                    257,
                    4_097,
                    12_345,
                    65_535,
                    65_536,
                    n / 2,
                    n - 1,
                ]
                .into_iter()
                .filter(|i| *i < n)
                .collect()
            }
        };
        let mut old_heads = BTreeMap::new();
        for n in small.into_iter().chain(large) {
            let l = &spec.leaves[..n as usize];
            let head = spec.head(n);
            for i in picks(n) {
                let tiles = tiles_for_inclusion(i, n).expect("plan");
                let p = spec.set(n, &tiles).inclusion_proof(i).expect("proof");
                assert!(
                    verify_inclusion(i, n, &l[i as usize], &p, &head),
                    "{i} of {n}"
                );
                if n <= 600 || i == n / 2 {
                    assert_eq!(p, inclusion_proof(l, i as usize), "leaf {i} of {n}");
                }
            }
            for m in picks(n + 1) {
                let tiles = tiles_for_consistency(m, n).expect("plan");
                let p = spec.set(n, &tiles).consistency_proof(m).expect("proof");
                let old = *old_heads.entry(m).or_insert_with(|| spec.head(m));
                assert!(verify_consistency(m, n, &old, &head, &p), "{m} -> {n}");
                if n <= 600 || m == 65_536 {
                    assert_eq!(p, consistency_proof(l, m as usize), "{m} -> {n}");
                }
            }
        }
    }

    /// c2sp.org/tlog-tiles lets a client fall back to the full tile when
    /// the partial one is gone; a narrower tile, or a tile the tree does
    /// not have, is refused.
    #[test]
    fn a_wider_tile_stands_in_for_a_partial_one_and_nothing_else_does() {
        let spec = Spec::new(600);
        let mut set = TileSet::new(300);
        set.insert(tile(0, 1, 256), &spec.tile(tile(0, 1, 256)))
            .expect("wider");
        set.insert(tile(1, 0, 2), &spec.tile(tile(1, 0, 2)))
            .expect("wider");
        assert_eq!(set.root().expect("root"), spec.head(300));
        let narrow = tile(0, 1, 43);
        assert!(matches!(
            set.insert(narrow, &spec.tile(narrow)),
            Err(TileError::TooNarrow {
                need: 44,
                size: 300,
                ..
            })
        ));
        let beyond = tile(0, 2, 1);
        assert!(matches!(
            set.insert(beyond, &spec.tile(beyond)),
            Err(TileError::NotInTree { size: 300, .. })
        ));
        assert!(matches!(
            set.insert(tile(0, 0, 256), &[0; 31]),
            Err(TileError::Length { len: 31, .. })
        ));
        assert!(matches!(
            set.insert_entries(bundle(0, 256), &[b"x"]),
            Err(TileError::Bundle { .. })
        ));
        // A monitor's way: the level-0 tiles from the entries themselves.
        let mut m = TileSet::new(300);
        let first: Vec<Vec<u8>> = (0..256).map(entry).collect();
        let rest: Vec<Vec<u8>> = (256..300).map(entry).collect();
        m.insert_entries(bundle(0, 256), &first).expect("entries");
        m.insert_entries(bundle(1, 44), &rest).expect("entries");
        m.insert(tile(1, 0, 1), &spec.tile(tile(1, 0, 1)))
            .expect("tile");
        assert_eq!(m.root().expect("root"), spec.head(300));
        assert_eq!(
            m.inclusion_proof(7).expect("proof"),
            inclusion_proof(&spec.leaves[..300], 7)
        );
    }

    /// A hostile store shows a host a tile with a leaf the log never held
    /// (or alters any hash on the way): the proof computed from it does
    /// not verify against the signed head, for the forged leaf or the
    /// genuine one.
    #[test]
    fn forged_tile_cannot_prove_a_leaf_the_log_does_not_hold() {
        let spec = Spec::new(70_000);
        let n = 70_000u64;
        let head = spec.head(n);
        let forged_leaf = leaf_hash(b"a release nobody else sees");
        for i in [0u64, 5, 256, 65_535, 69_999] {
            let tiles = tiles_for_inclusion(i, n).expect("plan");
            let honest = spec.set(n, &tiles).inclusion_proof(i).expect("proof");
            let mut broken = 0;
            for victim in &tiles {
                for pos in 0..usize::from(victim.width()) {
                    let mut set = spec.set(n, &tiles);
                    let mut bytes = spec.tile(*victim);
                    bytes[pos * 32..pos * 32 + 32].copy_from_slice(&forged_leaf);
                    set.insert(*victim, &bytes).expect("insert");
                    let p = set.inclusion_proof(i).expect("proof");
                    assert!(!verify_inclusion(i, n, &forged_leaf, &p, &head));
                    // The forged hash is either not on this leaf's path or
                    // breaks its proof.
                    let genuine = verify_inclusion(i, n, &spec.leaves[i as usize], &p, &head);
                    assert_eq!(genuine, p == honest, "leaf {i}, {victim} at {pos}");
                    broken += usize::from(!genuine);
                }
            }
            assert!(broken > 0);
        }
    }

    /// A hostile store rewrote history and forges tiles so that the
    /// consistency proof from a host's old head seems to hold: it does not.
    #[test]
    fn forged_tiles_cannot_hide_a_rewritten_history() {
        let spec = Spec::new(600);
        let head = spec.head(600);
        for m in [1u64, 100, 256, 257, 511] {
            let old = spec.head(m);
            let tiles = tiles_for_consistency(m, 600).expect("plan");
            let honest = spec.set(600, &tiles).consistency_proof(m).expect("proof");
            let mut broken = 0;
            for victim in &tiles {
                for pos in 0..usize::from(victim.width()) {
                    let mut set = spec.set(600, &tiles);
                    let mut bytes = spec.tile(*victim);
                    bytes[pos * 32] ^= 1;
                    set.insert(*victim, &bytes).expect("insert");
                    let p = set.consistency_proof(m).expect("proof");
                    let holds = verify_consistency(m, 600, &old, &head, &p);
                    assert_eq!(holds, p == honest, "{m}, {victim} at {pos}");
                    broken += usize::from(!holds);
                }
            }
            assert!(broken > 0);
        }
    }

    /// Missing tiles, leaves past the end, shrinking trees and the largest
    /// trees give errors, never panics.
    #[test]
    fn missing_tiles_and_extreme_sizes_are_errors_not_panics() {
        let set = TileSet::new(300);
        match set.root() {
            Err(TileError::Missing { tile, size: 300 }) => {
                assert!(
                    tile == "tile/0/001.p/44" || tile == "tile/1/000.p/1",
                    "{tile}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            set.inclusion_proof(300),
            Err(TileError::NotALeaf {
                index: 300,
                size: 300
            })
        ));
        assert!(matches!(
            set.consistency_proof(301),
            Err(TileError::Shrinks { old: 301, new: 300 })
        ));
        assert!(matches!(
            tiles_for_inclusion(5, 5),
            Err(TileError::NotALeaf { .. })
        ));
        assert!(matches!(
            tiles_for_consistency(6, 5),
            Err(TileError::Shrinks { .. })
        ));
        assert_eq!(set.consistency_proof(0).expect("empty"), Vec::<Hash>::new());
        assert_eq!(
            set.consistency_proof(300).expect("empty"),
            Vec::<Hash>::new()
        );
        assert_eq!(TileSet::new(0).root().expect("empty"), merkle::root(&[]));

        // The largest tree, its tiles made up: everything computes.
        let n = u64::MAX;
        let fill = |set: &mut TileSet, tiles: &[TileId]| {
            for t in tiles {
                set.insert(*t, &vec![7; t.byte_len()]).expect("insert");
            }
        };
        let mut set = TileSet::new(n);
        fill(&mut set, &tiles_for_root(n));
        set.root().expect("root");
        for i in [0, 1 << 63, n - 1] {
            let tiles = tiles_for_inclusion(i, n).expect("plan");
            fill(&mut set, &tiles);
            let p = set.inclusion_proof(i).expect("proof");
            assert!(!p.is_empty() && p.len() <= 64);
        }
        for m in [1, 1 << 56, n / 3, n - 1] {
            fill(&mut set, &tiles_for_consistency(m, n).expect("plan"));
            set.consistency_proof(m).expect("proof");
        }
    }

    /// A store that holds files; full tiles are written once.
    #[derive(Default)]
    struct Store(BTreeMap<TileName, Vec<u8>>);

    impl Store {
        /// What a publisher reads before appending: `edge(size)`.
        fn edge(&self, size: u64) -> (TileSet, Option<Vec<u8>>) {
            let e = edge(size);
            let mut set = TileSet::new(size);
            for t in e.tiles {
                set.insert(t, &self.0[&TileName::Hashes(t)])
                    .expect("edge tile");
            }
            let b = e.bundle.map(|b| self.0[&TileName::Entries(b)].clone());
            (set, b)
        }

        fn write(&mut self, files: Vec<TileFile>) {
            for f in files {
                if let Some(old) = self.0.get(&f.name) {
                    assert_eq!(*old, f.bytes, "{} rewritten", f.name);
                }
                self.0.insert(f.name, f.bytes);
            }
        }
    }

    /// A log grown by batches of every awkward size, across 256 and 65,536:
    /// each append writes exactly the names the new tree has and the old
    /// one did not, with the bytes the spec says, never changes a full tile,
    /// and gives merkle.rs's head.
    #[test]
    fn appending_writes_exactly_the_new_tiles_the_spec_describes() {
        let limits = BundleLimits::FORMAT;
        let spec = Spec::new(69_815);
        let mut store = Store::default();
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let mut head = merkle::root(&[]);
        let mut size = 0u64;
        for batch in [1u64, 1, 14, 239, 1, 256, 300, 2, 65_000, 0, 4_000, 1] {
            let new: Vec<Vec<u8>> = (size..size + batch).map(entry).collect();
            let (set, partial) = store.edge(size);
            let refs: Vec<&[u8]> = new.iter().map(Vec::as_slice).collect();
            let a = append(&set, &head, partial.as_deref(), &refs, &limits).expect("append");
            entries.extend(new);
            assert_eq!(a.size, size + batch);
            assert_eq!(a.root, spec.head(a.size), "size {}", a.size);
            let written: BTreeSet<TileName> = a.files.iter().map(|f| f.name).collect();
            assert_eq!(written.len(), a.files.len(), "a name written twice");
            let want: BTreeSet<TileName> =
                names(a.size).difference(&names(size)).copied().collect();
            assert_eq!(written, want, "{size} -> {}", a.size);
            for f in &a.files {
                let want = match f.name {
                    TileName::Hashes(t) => spec.tile(t),
                    TileName::Entries(b) => {
                        let first = b.index() as usize * 256;
                        let e = &entries[first..first + usize::from(b.width())];
                        encode_bundle(b, e, &limits).expect("encode")
                    }
                };
                assert_eq!(f.bytes, want, "{}", f.name);
            }
            store.write(a.files);
            size = a.size;
            head = a.root;
        }
        assert_eq!(size, 69_815);
        // Everything the final tree has is in the store, as the spec says.
        for name in names(size) {
            if let TileName::Hashes(t) = name {
                assert_eq!(store.0[&name], spec.tile(t), "{name}");
            }
        }
    }

    /// A hostile store hands the publisher an altered right edge, hoping
    /// it signs a head over a history nobody logged: refused, as are
    /// entries and bundles over the limits.
    #[test]
    fn publisher_refuses_to_extend_a_tampered_edge() {
        let limits = BundleLimits::FORMAT;
        let mut store = Store::default();
        let first: Vec<Vec<u8>> = (0..300).map(entry).collect();
        let refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
        let a = append(&TileSet::new(0), &merkle::root(&[]), None, &refs, &limits).expect("append");
        let head = a.root;
        store.write(a.files);
        let (set, partial) = store.edge(300);
        let partial = partial.expect("partial bundle");
        let next: &[&[u8]] = &[b"next"];
        append(&set, &head, Some(&partial), next, &limits).expect("the honest edge");

        let edge_refused = |r: Result<Appended, TileError>| {
            assert!(matches!(r, Err(TileError::Edge { size: 300, .. })), "{r:?}")
        };
        // An edge tile altered.
        let mut forged = set.clone();
        let t = tile(0, 1, 44);
        let mut bytes = store.0[&TileName::Hashes(t)].clone();
        bytes[40] ^= 1;
        forged.insert(t, &bytes).expect("insert");
        edge_refused(append(&forged, &head, Some(&partial), next, &limits));
        // The signed head of another tree.
        let mut other = head;
        other[0] ^= 1;
        edge_refused(append(&set, &other, Some(&partial), next, &limits));
        // A partial bundle whose entries are not the tile's leaves.
        let swapped: Vec<Vec<u8>> = (256..300).map(|i| entry(i + 1)).collect();
        let swapped = encode_bundle(bundle(1, 44), &swapped, &limits).expect("encode");
        edge_refused(append(&set, &head, Some(&swapped), next, &limits));
        // The partial bundle withheld, or one given where there is none.
        edge_refused(append(&set, &head, None, next, &limits));
        let (set256, none) = {
            let mut s = TileSet::new(256);
            s.insert(tile(1, 0, 1), &store.0[&parse("tile/1/000.p/1")])
                .expect("tile");
            (s, None::<&[u8]>)
        };
        let head256 = set256.root().expect("root");
        append(&set256, &head256, none, next, &limits).expect("256");
        assert!(matches!(
            append(&set256, &head256, Some(&partial), next, &limits),
            Err(TileError::Edge { size: 256, .. })
        ));
        // A bundle over the limits is refused before its entries are read.
        let tight = BundleLimits {
            max_entry_bytes: 64,
            max_bundle_bytes: 100,
        };
        assert!(matches!(
            append(&set, &head, Some(&partial), next, &tight),
            Err(TileError::Bundle {
                fault: BundleFault::TooLarge { .. },
                ..
            })
        ));
        // A new entry over the limit is not written.
        let huge = vec![0; MAX_ENTRY_BYTES + 1];
        assert!(matches!(
            append(&set, &head, Some(&partial), &[&huge], &limits),
            Err(TileError::Bundle {
                fault: BundleFault::EntryTooLarge { .. },
                ..
            })
        ));
        // Nothing to append: nothing to write.
        let same = append(&set, &head, Some(&partial), &[], &limits).expect("nothing");
        assert_eq!((same.size, same.root, same.files.len()), (300, head, 0));
        // Past 2^64 - 1 leaves.
        assert!(matches!(
            append(&TileSet::new(u64::MAX), &head, None, next, &limits),
            Err(TileError::Overflow { .. })
        ));
    }

    // transparency-dev/tessera, testdata/log (Apache-2.0), at commit
    // 1811ae1a7c401c971d9cff2a5cfdfba07a26161e, used as data: a tlog-tiles
    // log written by tessera's posix-oneshot example (testdata/build_log.sh)
    // from the entries "one" to "fivten", one per run, with its checkpoint
    // after each. TESSERA_BUNDLE is tile/entries/000.p/15 and TESSERA_TILE
    // tile/0/000.p/15 (each narrower file there is a prefix of these);
    // TESSERA_HEADS[n] is the head in checkpoint.<n>.
    const TESSERA_ENTRIES: [&str; 15] = [
        "one", "two", "three", "four", "five", "six", "seven", "eit", "nain", "ten", "ileven",
        "twelf", "threeten", "fourten", "fivten",
    ];
    const TESSERA_BUNDLE: &str = "00036f6e65000374776f000574687265650004666f757200046669766500\
        037369780005736576656e000365697400046e61696e000374656e0006696c6576656e00057477656c66\
        0008746872656574656e0007666f757274656e000666697674656e";
    const TESSERA_TILE: &str = "
        d0d7360ab79f58ab1e1e3fe64ad77e2ea0bc07e36b5f46ed2223edd9298df9e9
        ab1ab7f07c7c8fe0eff4ba6faa53c7e4412e91a599153e8aa4e01beece5b7825
        671f146c5e471e8a1a83a3c214ce4ba907b8f3a5888d14cc8cd3ce75bb12ef94
        f715ab3faa5d071e6e2ac4bb994d5bf735943dcc3799da0d085e7980cfb9336a
        ccc29ae0e02a77b0f4578c1ac17493d79cf4262104929ac804f91fc4e7ac5af0
        ca233e7a26b8c35c2c93f524c7b905e7a2105640d6dcc594694cff56d26efb25
        d90d0fe63491f93764c1d5d6cb1f866c1597d0a65b359916cc28f24cf4a8cecc
        4e1720a15d8361c2be542c4150358094dc662f2dabeddabb74aefe3a5810296b
        f751d0a9a3f35a56c1b140e4dc9bd2a4e4caec173889f646c576737c004e9ae5
        1d397d3d1902b011c12620ec8276f13ccf813f9a15dc7b077db2e2f0ca09077d
        bb2d8c46edf697d5733185e694b4ee2c1d04b84222c9fcb4d8a5d0a2fecfed33
        3bad5c1c0eb3037ca7261ecfcdd10fadf07c684d580560819c970d22979478fb
        a5f4fecc9f63c361fe39bd564bc86137bc23637e77194d6682680c84a7eb9ad5
        b6c94e61bdb317e092f2f4d4494ae0ea49069def34864e39e5c8cf65779a495f
        3786dc18e75f450d499f119c1eaee20dd8293f21fc9d08714a18d72b1cd60eb5";
    const TESSERA_HEADS: [&str; 16] = [
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        "0Nc2CrefWKseHj/mStd+LqC8B+NrX0btIiPt2SmN+ek=",
        "T1X2GdkhUjV3iyufF9b0kVsWFxIU0VI4EpNml2Teci4=",
        "Wqx3HImawpLnS/Gv4ubjAvi1WIOy0b8Ze0amvqbavKk=",
        "zY1lN35vrXYAPixXSd59LsU29xUJtuW4o2dNNg5Y2Co=",
        "gy5gl3aksFyiCO95a/1vLXz88A3dRq+0l9Sxte8ZqZQ=",
        "a6sWvsc2eEzmj72vah7mZ5dwFltivehh2b11qwlp5Jg=",
        "IrSXADBqJ7EQoUODSDKROySgNveeL6CFhik2w/+fS7U=",
        "bC+VwvrJbalNVjfkdI8kUgs7mJoXrqiXCE7bgnD28pY=",
        "CvhHViE3S9E3htHLR+25mapWoGCJ3WckMq1UtC3VmEY=",
        "y8/gZsZCtitsMan09tY+k8I7Qpr7Y5fbO2tLi9GQnfU=",
        "Yok1cS5VdokGLBy73BC2I16b3atss6KBN9jnIi6Fz/A=",
        "uZo6M+IhVna+CLgWCrJs0xBPUHbozHkYTQASduHSLME=",
        "av0kLH0VkkVDrTuZzBGIx7d9z5G1l/GlKz/nAV/8woQ=",
        "SvCd38yNade7xEPY1a/aAc1M3A2AHYVF8lIiUnsH1ao=",
        "rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=",
    ];
    const TESSERA_KEY: &str =
        "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx";
    const TESSERA_CHECKPOINT_15: &str = "example.com/log/testdata\n15\n\
        rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=\n\n\
        — example.com/log/testdata M9e0luh4jTG+UMBqOUo9/q+yAEvx1ilBEniMvjf1zfcBOhg+CKubMt53MvIt/uEWP6zdkdIQzd/fmwlM/dlPWF74ewI=\n";

    #[test]
    fn tessera_testdata_log_interoperates() {
        use crate::format::note::{verify, Checkpoint, Note, VerifierKey};
        let words: Vec<&[u8]> = TESSERA_ENTRIES.iter().map(|w| w.as_bytes()).collect();
        let bundle_bytes = unhex(TESSERA_BUNDLE);
        let tile_bytes = unhex(TESSERA_TILE);
        let name = parse("tile/entries/000.p/15");
        let TileName::Entries(b15) = name else {
            panic!("{name}")
        };
        assert_eq!(
            decode_bundle(b15, &bundle_bytes, &BundleLimits::FORMAT).expect("bundle"),
            words
        );
        let name = parse("tile/0/000.p/15");
        let TileName::Hashes(t15) = name else {
            panic!("{name}")
        };
        let hashes = decode_hash_tile(t15, &tile_bytes).expect("tile");
        assert!(hashes.iter().eq(words
            .iter()
            .map(|w| leaf_hash(w))
            .collect::<Vec<_>>()
            .iter()));

        // Every head from tessera's tiles, from its own narrower tile and
        // from the widest one standing in for it.
        assert_eq!(
            TileSet::new(0).root().expect("empty"),
            b64(TESSERA_HEADS[0])
        );
        for n in 1..=15u16 {
            let mut narrow = TileSet::new(n.into());
            narrow
                .insert(tile(0, 0, n), &tile_bytes[..32 * usize::from(n)])
                .expect("tile");
            let mut wide = TileSet::new(n.into());
            wide.insert(t15, &tile_bytes).expect("tile");
            let want = b64(TESSERA_HEADS[usize::from(n)]);
            assert_eq!(narrow.root().expect("root"), want, "size {n}");
            assert_eq!(wide.root().expect("root"), want, "size {n}");
        }

        // Its signed checkpoint verifies (note.rs) and names that head.
        let key = VerifierKey::parse(TESSERA_KEY).expect("key");
        let note = Note::parse(TESSERA_CHECKPOINT_15.as_bytes()).expect("note");
        verify(&note, &[key]).expect("signed by the log");
        let cp = Checkpoint::parse(&note.text).expect("checkpoint");
        assert_eq!((cp.size, cp.root), (15, b64(TESSERA_HEADS[15])));

        // Appending the entries one per run, as build_log.sh does, writes
        // tessera's files and heads.
        let mut store = Store::default();
        let mut head = b64(TESSERA_HEADS[0]);
        for (n, w) in words.iter().enumerate() {
            let (set, partial) = store.edge(n as u64);
            let a = append(&set, &head, partial.as_deref(), &[w], &BundleLimits::FORMAT)
                .expect("append");
            assert_eq!(a.root, b64(TESSERA_HEADS[n + 1]), "size {}", n + 1);
            let names: Vec<String> = a.files.iter().map(|f| f.name.to_string()).collect();
            assert_eq!(
                names,
                [
                    format!("tile/entries/000.p/{}", n + 1),
                    format!("tile/0/000.p/{}", n + 1)
                ]
            );
            store.write(a.files);
            head = a.root;
        }
        assert_eq!(store.0[&TileName::Entries(b15)], bundle_bytes);
        assert_eq!(store.0[&TileName::Hashes(t15)], tile_bytes);
        // And a host proves "seven" is in the checkpoint from the tile.
        let mut set = TileSet::new(15);
        for t in tiles_for_inclusion(6, 15).expect("plan") {
            set.insert(t, &tile_bytes[..t.byte_len()]).expect("tile");
        }
        let p = set.inclusion_proof(6).expect("proof");
        assert!(verify_inclusion(6, 15, &leaf_hash(b"seven"), &p, &cp.root));
        assert!(!verify_inclusion(6, 15, &leaf_hash(b"eight"), &p, &cp.root));
    }
}
