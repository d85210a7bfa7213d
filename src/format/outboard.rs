//! The verified-streaming outboard of an archive (issue 36): the interior
//! nodes of the archive's BLAKE3 tree, down to groups of 16 chunks
//! (16 KiB), so a host can check every group against the signed hash as it
//! streams, before the extractor sees a byte of it. The signed BLAKE3 is
//! the root of the very tree these nodes describe: the outboard adds no
//! trust anchor, it is checked top-down against the statement like the
//! archive itself (`crate::verify::stream`).
//!
//! Layout: bao's outboard encoding with chunk groups (bao-tree's
//! `BlockSize(4)`; bao itself uses single chunks): the archive's length as
//! 8 bytes little-endian, then every parent node above the groups in
//! pre-order (a parent, then its left subtree, then its right), each the
//! left and right child's 32-byte chaining values. The tree splits as
//! BLAKE3's does (`blake3::hazmat::left_subtree_len`): the left subtree of a
//! node covers the largest power of two of chunks that is less than the
//! node's length. An archive of `n` bytes has `max(1, ceil(n / 16 KiB))`
//! groups and one parent fewer: 8 bytes plus 0.39 % of the archive.
//!
//! Pure: no I/O. The publisher builds one from the archive's bytes
//! ([`Builder`]); `docs/protocol.md` §2.5 specifies it.

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, HasherExt};
use blake3::hazmat::{ChainingValue, Mode};

use super::statement::ArchiveRef;
use super::Digest;

/// Bytes per chunk group: a leaf of the outboard's tree.
pub const GROUP_LEN: u64 = 16 * 1024;
/// The header: the archive's length, little-endian.
pub const HEADER_LEN: u64 = 8;
/// One parent node: the left and the right child's chaining values.
pub const PARENT_LEN: u64 = 64;

/// The number of groups of an archive of `size` bytes (an empty archive is
/// one empty group).
pub fn groups(size: u64) -> u64 {
    groups_of(size, GROUP_LEN)
}

fn groups_of(size: u64, group_len: u64) -> u64 {
    size.div_ceil(group_len).max(1)
}

/// The exact length of the outboard of an archive of `size` bytes: anything
/// else is not its outboard.
pub fn outboard_len(size: u64) -> u64 {
    HEADER_LEN + PARENT_LEN * (groups(size) - 1)
}

/// Store key of an archive's outboard, next to the archive (content
/// addressed by the archive's hash, so it is written once).
pub fn outboard_key(archive: &ArchiveRef) -> String {
    format!("archives/{}.obao", archive.blake3)
}

/// Builds an outboard from the archive's bytes, fed in order in pieces of
/// any size.
pub struct Builder {
    group_len: u64,
    /// The group being hashed.
    hasher: blake3::Hasher,
    in_group: u64,
    len: u64,
    /// Chaining values of the completed groups.
    cvs: Vec<ChainingValue>,
    /// The first group's hasher, kept when it completes: if no byte follows,
    /// it is the root and must be finalized as one.
    first: Option<blake3::Hasher>,
}

/// A finished outboard.
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    /// The BLAKE3 of the bytes fed: the tree's root.
    pub root: Digest,
    /// How many bytes were fed.
    pub len: u64,
    /// The encoded outboard (header and parents).
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Outboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboard")
            .field("root", &self.root)
            .field("len", &self.len)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder::with_group_len(GROUP_LEN)
    }

    /// Groups of another power-of-two number of chunks: bao's own format is
    /// `blake3::CHUNK_LEN` (its published test vectors check this module).
    fn with_group_len(group_len: u64) -> Builder {
        debug_assert!(group_len.is_power_of_two() && group_len >= blake3::CHUNK_LEN as u64);
        Builder {
            group_len,
            hasher: blake3::Hasher::new(),
            in_group: 0,
            len: 0,
            cvs: Vec::new(),
            first: None,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) -> &mut Self {
        while !data.is_empty() {
            if self.in_group == self.group_len {
                self.close_group();
            }
            let room = (self.group_len - self.in_group).min(data.len() as u64) as usize;
            self.hasher.update(&data[..room]);
            self.in_group += room as u64;
            self.len += room as u64;
            data = &data[room..];
        }
        self
    }

    /// Ends the full group being hashed, once a byte past it arrives (only
    /// then is it known not to be the whole archive).
    fn close_group(&mut self) {
        let next = {
            let mut h = blake3::Hasher::new();
            h.set_input_offset(self.len);
            h
        };
        let done = std::mem::replace(&mut self.hasher, next);
        self.cvs.push(done.finalize_non_root());
        if self.cvs.len() == 1 {
            self.first = Some(done);
        }
        self.in_group = 0;
    }

    pub fn finish(mut self) -> Outboard {
        let mut bytes = Vec::with_capacity(
            (HEADER_LEN + PARENT_LEN * (groups_of(self.len, self.group_len) - 1)) as usize,
        );
        bytes.extend_from_slice(&self.len.to_le_bytes());
        if self.cvs.is_empty() {
            // One group: it is the root, hashed as a whole input.
            return Outboard {
                root: self.hasher.finalize().into(),
                len: self.len,
                bytes,
            };
        }
        self.cvs.push(self.hasher.finalize_non_root());
        let root = match self.node(0, self.len, &mut bytes) {
            Node::Root(h) => h,
            Node::Child(_) => unreachable!("more than one group has a parent at the root"),
        };
        drop(self.first);
        Outboard {
            root,
            len: self.len,
            bytes,
        }
    }

    /// The subtree of `len` bytes at `offset`: its parents appended in
    /// pre-order (each written once its children are known), its value
    /// returned.
    fn node(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Node {
        if len <= self.group_len {
            return Node::Child(self.cvs[(offset / self.group_len) as usize]);
        }
        let at = out.len();
        out.extend_from_slice(&[0; PARENT_LEN as usize]);
        let left_len = left_subtree_len(len);
        let left = self.node(offset, left_len, out).cv();
        let right = self.node(offset + left_len, len - left_len, out).cv();
        out[at..at + 32].copy_from_slice(&left);
        out[at + 32..at + 64].copy_from_slice(&right);
        if offset == 0 && len == self.len {
            Node::Root(merge_subtrees_root(&left, &right, Mode::Hash).into())
        } else {
            Node::Child(merge_subtrees_non_root(&left, &right, Mode::Hash))
        }
    }
}

enum Node {
    Root(Digest),
    Child(ChainingValue),
}

impl Node {
    fn cv(self) -> ChainingValue {
        match self {
            Node::Child(cv) => cv,
            Node::Root(_) => unreachable!("a subtree below the root is never the root"),
        }
    }
}

/// The bytes are hashed as they are written (a sink for a copy).
impl std::io::Write for Builder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length an outboard's header declares, if it has one.
pub fn declared_len(outboard: &[u8]) -> Option<u64> {
    let head: [u8; 8] = outboard.get(..HEADER_LEN as usize)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// Builds the outboard of `data` in one call.
pub fn of(data: &[u8]) -> Outboard {
    let mut b = Builder::new();
    b.update(data);
    b.finish()
}

#[cfg(test)]
pub(crate) fn of_with_group_len(data: &[u8], group_len: u64) -> Outboard {
    let mut b = Builder::with_group_len(group_len);
    b.update(data);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        // bao's test input: the byte sequence 0, 1, ..., 250, 0, 1, ...
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn the_root_is_the_archives_blake3_whatever_the_length_and_the_pieces() {
        for n in [
            0usize, 1, 1023, 1024, 1025, 16383, 16384, 16385, 32768, 32769, 49153, 100_000,
            262_144, 262_145, 1_000_000,
        ] {
            let d = data(n);
            let whole = of(&d);
            assert_eq!(whole.root, Digest::of(&d), "length {n}");
            assert_eq!(whole.len, n as u64);
            assert_eq!(
                whole.bytes.len() as u64,
                outboard_len(n as u64),
                "length {n}"
            );
            assert_eq!(declared_len(&whole.bytes), Some(n as u64));
            // Fed in odd pieces, the same outboard.
            let mut b = Builder::new();
            for piece in d.chunks(7_777) {
                b.update(piece);
            }
            assert_eq!(b.finish(), whole, "length {n} in pieces");
        }
    }

    #[test]
    fn outboard_lengths_follow_the_group_count() {
        assert_eq!(outboard_len(0), 8);
        assert_eq!(outboard_len(16384), 8);
        assert_eq!(outboard_len(16385), 8 + 64);
        assert_eq!(outboard_len(3 * 16384), 8 + 128);
        assert_eq!(outboard_len(512 << 20), 8 + 64 * (32768 - 1));
    }

    /// The first parent of a two-group archive is the two groups' chaining
    /// values, computed independently with blake3's own subtree API.
    #[test]
    fn parents_hold_the_childrens_chaining_values_in_pre_order() {
        let d = data(40_000); // groups: 16384, 16384, 7232; root splits 32768 | 7232
        let ob = of(&d);
        assert_eq!(ob.bytes.len(), 8 + 2 * 64);
        let cv = |off: usize, end: usize| {
            let mut h = blake3::Hasher::new();
            h.set_input_offset(off as u64);
            h.update(&d[off..end]);
            h.finalize_non_root()
        };
        let left = merge_subtrees_non_root(&cv(0, 16384), &cv(16384, 32768), Mode::Hash);
        let right = cv(32768, 40_000);
        assert_eq!(&ob.bytes[8..40], &left);
        assert_eq!(&ob.bytes[40..72], &right);
        assert_eq!(&ob.bytes[72..104], &cv(0, 16384));
        assert_eq!(&ob.bytes[104..136], &cv(16384, 32768));
    }
    /// bao's outboard test vectors (BLAKE3, 1 KiB groups): input length, the
    /// input's hash, the BLAKE3 of the outboard. Source: github.com/oconnor663/bao,
    /// tests/test_vectors.json, "outboard", at commit 697fefe4d8ebdb9ff73274d8d41d79fe820972de.
    const BAO_OUTBOARD: &[(usize, &str, &str)] = &[
        (
            0,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "71e0a99173564931c0b8acc52d2685a8e39c64dc52e3d02390fdac2a12b155cb",
        ),
        (
            1,
            "48fc721fbbc172e0925fa27af1671de225ba927134802998b10a1568a188652b",
            "1a0d12016999e47689dae5744d2b8c1903faf7ca2886a658150083100ef2c8ee",
        ),
        (
            1023,
            "15f8c1ae1049fe7e837186612c8ce732e66835841a4569b71e4ac3e3d3411b90",
            "044eb61340254eec36c5e66bf8fed9275fef9ad1894f8ae55221a98d5e25e255",
        ),
        (
            1024,
            "f749c19181983b839cd97fe121cebaf076bc951e8c8e6d64accfedad5951ec22",
            "d27e778a2b838caf6be23c7528e6f1f7beb6bff048f9cf9a8fdb2767c74215b3",
        ),
        (
            1025,
            "3613596275c4ea790774dedf20835b2daf86cacc892feef6ce720c121572f1f9",
            "025f630e00fbdcc023b970c9f1f21016c56c0a34e384e712c66428bf1c7999b9",
        ),
        (
            2047,
            "89cc9b9cf2a83f03b22983c8bd7f2df392f5c1966f0e221db9ab396f7043c4d7",
            "f281b8a95b6c5eaea8e86732d24c88aa407df10295709e419772d615028b40a0",
        ),
        (
            2048,
            "fed8b40d6095dc7c5061f9cd832fd192337473bd392bf6f6bbaf1261ea78f8fa",
            "55546b68936932ac03d2a01de41517c287ddd68b79715ef892a636dc38292a90",
        ),
        (
            2049,
            "64770fa15a4bbe7770654c4ac68ed4f0e975ad6c85b5edb4d3db3b4b604e084e",
            "f2afc0716690e8513d8697e3e75f5c3532d51e0c704416e7fb0bbf7c0abfb57e",
        ),
        (
            3071,
            "3bf36194161a10a32843a84568d0ce0a524b3bc6182abc492ddaaa3dae785279",
            "2dba3a5aa0e356e279760280e147245429d6360581b0eb5c7e0b9c265d915b2c",
        ),
        (
            3072,
            "9748169f2aa70258d18cef6dc6b4b4511265e268e85f73dcbea6e34ab0341da1",
            "4dd51a45418589b1d12a183f80e3e3ba39b200094287c6e07f489def70a42e48",
        ),
        (
            3073,
            "5ba075072daba2470558a171e3769fba057dc3f12375c60892bdbe73348d9fd1",
            "fa89135a2c00ff1a073321ed79fd17b9fdd53c2d2549236cd8d796232a89dc83",
        ),
        (
            11264,
            "69fa39c8ab837dbb9e419c66a3ab7014ce9f86dba55935936b4c38cfcbc4d5f6",
            "651f08a23902499142f6a28fadb99a8cba2bc32fbefe5237fd3a9cb5edec70da",
        ),
        (
            13312,
            "3e88d1dd20f426640077dcf82d6d4e18ee0062aa72f8ae547a0e65fcd36a0f06",
            "ad01dbb6b7d0fefd1f8e52783d6212856546f382b815a7c370377bc79e0bd41a",
        ),
    ];

    /// bao's input: a 4-byte little-endian counter from 1.
    fn bao_input(n: usize) -> Vec<u8> {
        (1u32..).flat_map(|i| i.to_le_bytes()).take(n).collect()
    }

    /// Interoperability: with bao's own group size, the same bytes as bao.
    #[test]
    fn matches_bao_outboard_vectors_at_one_chunk_per_group() {
        for (n, hash, encoded) in BAO_OUTBOARD {
            let ob = of_with_group_len(&bao_input(*n), blake3::CHUNK_LEN as u64);
            assert_eq!(ob.root.to_hex(), *hash, "length {n}");
            assert_eq!(Digest::of(&ob.bytes).to_hex(), *encoded, "length {n}");
        }
    }
}
