//! RFC 6962 / RFC 9162 Merkle trees (issue 37, the witnessed release log):
//! leaf and node hashes, the tree head of a list of leaves, and the
//! inclusion and consistency proofs a host checks against a checkpoint.
//! Pure; proofs are verified exactly as RFC 9162 §2.1.3.2 and §2.1.4.2
//! say, so they interoperate with every C2SP tlog.

use sha2::{Digest as _, Sha256};

/// A SHA-256 hash in the tree.
pub type Hash = [u8; 32];

/// The hash of a leaf's data: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The tree head of `leaves` (leaf hashes): the empty tree's is
/// `SHA-256("")`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two smaller than `n` (n >= 2): where RFC 6962 splits.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The inclusion proof of leaf `index` in `leaves` (RFC 6962 `PATH`).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    let mut out = Vec::new();
    path(leaves, index, &mut out);
    out
}

fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        path(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// The consistency proof from the tree of the first `old` leaves to the
/// tree of all `leaves` (RFC 6962 `PROOF`).
pub fn consistency_proof(leaves: &[Hash], old: usize) -> Vec<Hash> {
    let mut out = Vec::new();
    if old > 0 && old < leaves.len() {
        subproof(leaves, old, true, &mut out);
    }
    out
}

fn subproof(leaves: &[Hash], m: usize, whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(&leaves[..k], m, whole, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(&leaves[k..], m - k, false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Whether `proof` shows the leaf `leaf` at `index` in the tree of `size`
/// leaves whose head is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows that the tree of `old_size` leaves with head
/// `old_root` is a prefix of the tree of `new_size` leaves with head
/// `new_root` (RFC 9162 §2.1.4.2): the log only appended.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        // Every tree extends the empty one; there is nothing to prove.
        return proof.is_empty();
    }
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter());
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (**first, **first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

/// A tree head: a log's size and root, as a party accepted it (a host, a
/// witness) and as receipts report it (issue 37).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeHead {
    pub size: u64,
    #[serde(with = "hex32")]
    pub root: Hash,
}

/// A hash in lowercase hex.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bad = || serde::de::Error::custom("a root is 64 lowercase hex digits");
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }

    /// The RFC 6962 reference tree: transparency-dev/merkle,
    /// testonly/constants.go (leaves, the head of every size, two
    /// inclusion proofs and a consistency proof).
    const LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves() -> Vec<Hash> {
        LEAVES.iter().map(|l| leaf_hash(l)).collect()
    }

    #[test]
    fn tree_heads_match_the_rfc6962_reference() {
        let l = leaves();
        for (n, want) in ROOTS.iter().enumerate() {
            assert_eq!(root(&l[..n]), h(want), "size {n}");
        }
    }

    #[test]
    fn reference_proofs_are_produced_and_verify() {
        let l = leaves();
        let r8 = h(ROOTS[8]);
        let p0 = [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ];
        let p5 = [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ];
        assert_eq!(inclusion_proof(&l, 0), p0);
        assert_eq!(inclusion_proof(&l, 5), p5);
        assert!(verify_inclusion(0, 8, &l[0], &p0, &r8));
        assert!(verify_inclusion(5, 8, &l[5], &p5, &r8));
        let c28 = [p0[1], p0[2]];
        assert_eq!(consistency_proof(&l, 2), c28);
        assert!(verify_consistency(2, 8, &h(ROOTS[2]), &r8, &c28));
    }

    /// Every proof of every tree up to 40 leaves verifies, and none
    /// verifies for another leaf, index or head. (A proof may verify for
    /// another size with the same head: a signed checkpoint binds the two.)
    #[test]
    fn proofs_of_every_shape_verify_and_nothing_else_does() {
        let all: Vec<Hash> = (0..40u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for n in 1..=all.len() {
            let t = &all[..n];
            let r = root(t);
            for i in 0..n {
                let p = inclusion_proof(t, i);
                assert!(
                    verify_inclusion(i as u64, n as u64, &t[i], &p, &r),
                    "{i} of {n}"
                );
                let other = if i + 1 < n { i + 1 } else { 0 };
                if other != i {
                    assert!(!verify_inclusion(other as u64, n as u64, &t[i], &p, &r));
                    assert!(!verify_inclusion(i as u64, n as u64, &t[other], &p, &r));
                }
                let mut bad = r;
                bad[0] ^= 1;
                assert!(!verify_inclusion(i as u64, n as u64, &t[i], &p, &bad));
            }
            for m in 0..=n {
                let p = consistency_proof(t, m);
                let old = root(&t[..m]);
                assert!(
                    verify_consistency(m as u64, n as u64, &old, &r, &p),
                    "{m} -> {n}"
                );
                if m > 0 && m < n {
                    // A rewritten history: the old head of another log.
                    let mut forged = old;
                    forged[31] ^= 1;
                    assert!(!verify_consistency(m as u64, n as u64, &forged, &r, &p));
                    let mut r2 = r;
                    r2[31] ^= 1;
                    assert!(!verify_consistency(m as u64, n as u64, &old, &r2, &p));
                    assert!(!verify_consistency(n as u64, m as u64, &r, &old, &p));
                }
            }
        }
    }
}
