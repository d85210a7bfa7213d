//! Verified streaming (issue 36): an archive checked group by group against
//! the signed BLAKE3 as it arrives, with the store's outboard
//! (`crate::format::outboard`) supplying the tree's interior nodes. Every
//! parent is checked against the node above it before its children are
//! trusted, starting from the signed root; every group is checked against
//! its parent before it is handed on. So no byte reaches the extractor that
//! is not part of exactly the signed archive, and the whole archive is
//! never held or copied.
//!
//! Pure: the shell (`crate::store::transfer::stream_verified`) asks
//! [`StreamVerifier::need`] what to read next, the outboard's next parent
//! or the archive's next group, and hands it over. The outboard is read in
//! order, once, so the shell never has to hold it whole (a host keeps it in
//! its private temp dir: 0.4 % of the archive, 4 MiB for 1 GiB, issue 36).

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::format::outboard::{self, GROUP_LEN, PARENT_LEN};
use crate::format::statement::ArchiveRef;
use crate::format::Digest;

use super::ArchiveMismatch;

/// A group of the archive the stream must deliver next: `len` bytes at
/// `offset` (at most [`GROUP_LEN`]; offsets are multiples of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub offset: u64,
    pub len: usize,
}

/// What the stream needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The outboard's next parent ([`PARENT_LEN`] bytes), for
    /// [`StreamVerifier::parent`].
    Parent,
    /// The archive's next group, for [`StreamVerifier::check`].
    Group(Group),
    /// Nothing: the whole archive is verified.
    Nothing,
}

#[derive(Clone, Copy, Debug)]
enum Expected {
    Root(Digest),
    Child(ChainingValue),
}

#[derive(Clone, Copy, Debug)]
struct Node {
    offset: u64,
    len: u64,
    expected: Expected,
}

/// Walks the archive's tree in order, one parent or group at a time.
pub struct StreamVerifier {
    /// Subtrees still to deliver, the next on top (at most two per level).
    todo: Vec<Node>,
    /// The group [`Self::need`] asked for, until it is checked.
    pending: Option<Node>,
    verified: u64,
    size: u64,
    /// The signed hash, for messages.
    signed: Digest,
}

impl std::fmt::Debug for StreamVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamVerifier")
            .field("verified", &self.verified)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl StreamVerifier {
    /// Starts from the signed archive reference, the length of the store's
    /// outboard and its header (its first [`outboard::HEADER_LEN`] bytes):
    /// an outboard of another length, or for another length, is refused
    /// before anything else is read.
    pub fn new(
        signed: &ArchiveRef,
        outboard_len: u64,
        header: &[u8],
    ) -> Result<StreamVerifier, ArchiveMismatch> {
        let want = outboard::outboard_len(signed.size);
        let declared = outboard::declared_len(header);
        if outboard_len != want || declared != Some(signed.size) {
            return Err(ArchiveMismatch::Outboard {
                detail: format!(
                    "the outboard is {outboard_len} bytes declaring {}; an archive of {} bytes needs {want} bytes declaring its length",
                    declared.map_or_else(|| "nothing".to_owned(), |n| format!("{n} bytes")),
                    signed.size
                ),
            });
        }
        Ok(StreamVerifier {
            todo: vec![Node {
                offset: 0,
                len: signed.size,
                expected: Expected::Root(signed.blake3),
            }],
            pending: None,
            verified: 0,
            size: signed.size,
            signed: signed.blake3,
        })
    }

    /// Bytes verified so far: the offset of the next group (where a resumed
    /// download starts).
    pub fn verified(&self) -> u64 {
        self.verified
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// What to read next: the outboard's next parent (the tree is walked in
    /// the outboard's pre-order, so parents come in file order), or the
    /// archive's next group once every parent above it checked out. Asking
    /// again before [`Self::parent`] or [`Self::check`] gives the same
    /// answer.
    pub fn need(&mut self) -> Need {
        if let Some(n) = self.pending {
            return Need::Group(group_of(&n));
        }
        match self.todo.last().copied() {
            None => Need::Nothing,
            Some(n) if n.len <= GROUP_LEN => {
                self.todo.pop();
                self.pending = Some(n);
                Need::Group(group_of(&n))
            }
            Some(_) => Need::Parent,
        }
    }

    /// Checks the outboard's next parent (the left and right chaining
    /// values of the subtree [`Self::need`] stopped at) against the node
    /// above it; right ones split the subtree in two.
    pub fn parent(&mut self, parent: &[u8]) -> Result<(), ArchiveMismatch> {
        let node = match (self.pending, self.todo.last()) {
            (None, Some(n)) if n.len > GROUP_LEN => *n,
            _ => {
                return Err(ArchiveMismatch::Outboard {
                    detail: "a parent was given when none was asked for".into(),
                })
            }
        };
        let (Some(left), Some(right)) = (
            parent
                .get(..32)
                .and_then(|b| ChainingValue::try_from(b).ok()),
            parent
                .get(32..)
                .and_then(|b| ChainingValue::try_from(b).ok()),
        ) else {
            return Err(ArchiveMismatch::Outboard {
                detail: format!("a parent is {PARENT_LEN} bytes, not {}", parent.len()),
            });
        };
        let ok = match node.expected {
            Expected::Root(root) => {
                Digest::from(merge_subtrees_root(&left, &right, Mode::Hash)) == root
            }
            Expected::Child(cv) => merge_subtrees_non_root(&left, &right, Mode::Hash) == cv,
        };
        if !ok {
            return Err(self.mismatch(&node));
        }
        self.todo.pop();
        let left_len = blake3::hazmat::left_subtree_len(node.len);
        self.todo.push(Node {
            offset: node.offset + left_len,
            len: node.len - left_len,
            expected: Expected::Child(right),
        });
        self.todo.push(Node {
            offset: node.offset,
            len: left_len,
            expected: Expected::Child(left),
        });
        Ok(())
    }

    /// Checks the bytes of the group [`Self::need`] asked for. Wrong
    /// bytes are refused (the stream cannot go on); right ones move to the
    /// next group.
    pub fn check(&mut self, data: &[u8]) -> Result<(), ArchiveMismatch> {
        let Some(node) = self.pending else {
            return Err(ArchiveMismatch::Outboard {
                detail: "a group was checked before it was asked for".into(),
            });
        };
        if data.len() as u64 != node.len {
            return Err(self.mismatch(&node));
        }
        let ok = match node.expected {
            Expected::Root(root) => Digest::of(data) == root,
            Expected::Child(cv) => {
                let mut h = blake3::Hasher::new();
                h.set_input_offset(node.offset);
                h.update(data);
                h.finalize_non_root() == cv
            }
        };
        if !ok {
            return Err(self.mismatch(&node));
        }
        self.pending = None;
        self.verified = node.offset + node.len;
        Ok(())
    }

    fn mismatch(&self, node: &Node) -> ArchiveMismatch {
        ArchiveMismatch::Subtree {
            start: node.offset,
            end: node.offset + node.len,
            signed: self.signed,
        }
    }
}

fn group_of(n: &Node) -> Group {
    Group {
        offset: n.offset,
        len: n.len as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::outboard;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn signed(d: &[u8]) -> ArchiveRef {
        ArchiveRef {
            blake3: Digest::of(d),
            size: d.len() as u64,
        }
    }

    /// The verifier driven over an outboard held in memory: its parents
    /// handed over in file order, as the shell hands them from a file.
    struct Mem<'a> {
        v: StreamVerifier,
        parents: &'a [u8],
    }

    impl<'a> Mem<'a> {
        fn new(signed: &ArchiveRef, ob: &'a [u8]) -> Result<Mem<'a>, ArchiveMismatch> {
            let header = ob.len().min(outboard::HEADER_LEN as usize);
            Ok(Mem {
                v: StreamVerifier::new(signed, ob.len() as u64, &ob[..header])?,
                parents: &ob[header..],
            })
        }

        fn next_group(&mut self) -> Result<Option<Group>, ArchiveMismatch> {
            loop {
                match self.v.need() {
                    Need::Nothing => return Ok(None),
                    Need::Group(g) => return Ok(Some(g)),
                    Need::Parent => {
                        let (p, rest) = self
                            .parents
                            .split_at((PARENT_LEN as usize).min(self.parents.len()));
                        self.parents = rest;
                        self.v.parent(p)?;
                    }
                }
            }
        }

        fn check(&mut self, data: &[u8]) -> Result<(), ArchiveMismatch> {
            self.v.check(data)
        }

        fn verified(&self) -> u64 {
            self.v.verified()
        }
    }

    /// Runs the verifier over `d` as a host would: group by group.
    fn stream(signed: &ArchiveRef, ob: Vec<u8>, d: &[u8]) -> Result<Vec<u8>, ArchiveMismatch> {
        let mut v = Mem::new(signed, &ob)?;
        let mut out = Vec::new();
        while let Some(g) = v.next_group()? {
            assert_eq!(v.next_group()?, Some(g), "asking again is the same group");
            let end = (g.offset as usize + g.len).min(d.len());
            let bytes = &d[g.offset as usize..end];
            v.check(bytes)?;
            out.extend_from_slice(bytes);
            assert_eq!(v.verified(), end as u64);
        }
        Ok(out)
    }

    #[test]
    fn every_length_streams_whole_and_in_order() {
        for n in [
            0usize, 1, 16383, 16384, 16385, 32768, 32769, 40_000, 65537, 300_001,
        ] {
            let d = data(n);
            let ob = outboard::of(&d);
            assert_eq!(
                stream(&signed(&d), ob.bytes, &d).expect("ok"),
                d,
                "length {n}"
            );
        }
    }

    #[test]
    fn tampered_group_is_refused_before_it_is_handed_on() {
        let d = data(100_000);
        let ob = outboard::of(&d).bytes;
        for at in [0usize, 16384, 50_000, 99_999] {
            let mut bad = d.clone();
            bad[at] ^= 1;
            let mut v = Mem::new(&signed(&d), &ob).expect("ok");
            let mut handed_on = 0u64;
            let err = loop {
                let g = v.next_group().expect("ok").expect("a group");
                let bytes = &bad[g.offset as usize..g.offset as usize + g.len];
                match v.check(bytes) {
                    Ok(()) => handed_on = v.verified(),
                    Err(e) => break e,
                }
            };
            let first_bad_group = at as u64 / GROUP_LEN * GROUP_LEN;
            assert_eq!(handed_on, first_bad_group, "nothing from the bad group on");
            assert!(
                matches!(err, ArchiveMismatch::Subtree { start, .. } if start == first_bad_group)
            );
        }
    }

    /// The store rewrites both the archive and the outboard consistently:
    /// the forged tree's root is not the signed one, so the very first
    /// parent is refused, before any archive byte is read.
    #[test]
    fn forged_archive_with_its_own_outboard_is_refused_at_the_root() {
        let d = data(100_000);
        let mut forged = d.clone();
        forged[70_000] ^= 0xff;
        let forged_ob = outboard::of(&forged).bytes;
        let mut v = Mem::new(&signed(&d), &forged_ob).expect("ok");
        assert!(matches!(
            v.next_group(),
            Err(ArchiveMismatch::Subtree {
                start: 0,
                end: 100_000,
                ..
            })
        ));
    }

    #[test]
    fn tampered_outboard_node_is_refused_where_it_is_used() {
        let d = data(100_000);
        let good = outboard::of(&d).bytes;
        for at in [8usize, 40, 72, good.len() - 1] {
            let mut ob = good.clone();
            ob[at] ^= 1;
            assert!(
                matches!(
                    stream(&signed(&d), ob, &d),
                    Err(ArchiveMismatch::Subtree { .. })
                ),
                "byte {at}"
            );
        }
    }

    #[test]
    fn truncated_padded_or_foreign_length_outboard_is_refused_before_reading() {
        let d = data(100_000);
        let good = outboard::of(&d).bytes;
        let mut long = good.clone();
        long.extend_from_slice(&[0; 64]);
        let mut lying = good.clone();
        lying[..8].copy_from_slice(&99_999u64.to_le_bytes());
        for ob in [good[..good.len() - 1].to_vec(), long, lying, Vec::new()] {
            assert!(matches!(
                Mem::new(&signed(&d), &ob),
                Err(ArchiveMismatch::Outboard { .. })
            ));
        }
        // An outboard of a shorter archive with the same prefix.
        let short = outboard::of(&d[..50_000]).bytes;
        assert!(Mem::new(&signed(&d), &short).is_err());
    }

    #[test]
    fn short_group_is_refused() {
        let d = data(40_000);
        let ob = outboard::of(&d).bytes;
        let mut v = Mem::new(&signed(&d), &ob).expect("ok");
        let g = v.next_group().expect("ok").expect("ok");
        assert!(v.check(&d[..g.len - 1]).is_err());
        assert_eq!(v.verified(), 0);
    }

    #[test]
    fn checking_before_asking_is_an_error_not_a_panic() {
        let d = data(10);
        let ob = outboard::of(&d).bytes;
        let mut v = StreamVerifier::new(&signed(&d), ob.len() as u64, &ob).expect("ok");
        assert!(v.check(&d).is_err());
        // A parent nobody asked for (a one-group archive has none), or
        // of the wrong length, is refused, not trusted.
        assert!(v.parent(&[0; PARENT_LEN as usize]).is_err());
        let d = data(40_000);
        let ob = outboard::of(&d).bytes;
        let mut v = StreamVerifier::new(&signed(&d), ob.len() as u64, &ob[..8]).expect("ok");
        assert_eq!(v.need(), Need::Parent);
        assert!(v.parent(&ob[8..8 + 63]).is_err());
        assert!(v.check(&d[..16384]).is_err(), "a group before its parent");
        v.parent(&ob[8..8 + 64]).expect("the root");
        assert_eq!(v.need(), Need::Parent, "the left 32 KiB subtree's");
        v.parent(&ob[8 + 64..8 + 128]).expect("the left subtree");
        assert!(matches!(v.need(), Need::Group(Group { offset: 0, .. })));
        assert!(
            v.parent(&ob[8 + 64..8 + 128]).is_err(),
            "a parent while a group is due"
        );
    }
}
