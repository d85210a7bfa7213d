//! tiles: C2SP tlog-tiles names, entry bundles, and heads and proofs
//! computed from tiles (issue 37, the witnessed log), all of which hosts,
//! witnesses and auditors read from the store.
//!
//! Byte 0 picks the mode; the rest is its input. Proves, for any input:
//! no panic, and
//! 0. an accepted tile name re-serialises to exactly its input;
//! 1. an accepted entry bundle (width from two bytes, under the format's
//!    limits and under tight ones) has exactly its width in entries, each
//!    within the limits, and re-encodes to exactly its input;
//! 2. for an arbitrary tree size, leaf and old size, with arbitrary bytes
//!    offered for every tile the plans list: each tile is accepted only
//!    when its length is exact; with every tile accepted, the head and both
//!    proofs compute (an inclusion proof of at most 64 hashes);
//! 3. a log built by `append` in two steps (entries and the split taken
//!    from the input, up to 2,000 leaves, so tiles fill and carry) writes
//!    no name twice, gives merkle.rs's head, and the inclusion and consistency proofs from its
//!    tiles are merkle.rs's and verify.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use npcnix::format::merkle::{self, leaf_hash, Hash};
use npcnix::format::tiles::{
    append, decode_bundle, edge, encode_bundle, tiles_for_consistency, tiles_for_inclusion,
    tiles_for_root, BundleId, BundleLimits, TileId, TileName, TileSet,
};

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn names(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = TileName::parse(s) {
            assert_eq!(n.to_string(), s);
        }
    }
}

fn bundles(data: &[u8]) {
    let Some((w, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let width = u16::from_le_bytes(*w) % 256 + 1;
    let id = BundleId::new(u64::from(w[0]), width).expect("a small bundle exists");
    let tight = BundleLimits {
        max_entry_bytes: 64,
        max_bundle_bytes: 1024,
    };
    for limits in [BundleLimits::FORMAT, tight] {
        if let Ok(entries) = decode_bundle(id, bytes, &limits) {
            assert_eq!(entries.len(), usize::from(width));
            assert!(bytes.len() <= limits.max_bundle_bytes);
            assert!(entries.iter().all(|e| e.len() <= limits.max_entry_bytes));
            let again = encode_bundle(id, &entries, &limits).expect("re-encode");
            assert_eq!(again, bytes);
        }
    }
}

fn arbitrary_tiles(data: &[u8]) {
    let size = u64_at(data, 0);
    if size == 0 {
        return;
    }
    let index = u64_at(data, 8) % size;
    // Any old size up to `size` (all of them when size is u64::MAX).
    let old = match size.checked_add(1) {
        Some(n) => u64_at(data, 16) % n,
        None => u64_at(data, 16),
    };
    let mut tiles: Vec<TileId> = tiles_for_root(size);
    tiles.extend(tiles_for_inclusion(index, size).expect("a leaf of the tree"));
    tiles.extend(tiles_for_consistency(old, size).expect("a smaller size"));
    let rest = data.get(24..).unwrap_or_default();
    let mut set = TileSet::new(size);
    let mut all_in = true;
    let mut at = 0;
    for (i, t) in tiles.iter().enumerate() {
        // A length byte per tile: exact, or off by what it says.
        let skew = rest.get(i).copied().unwrap_or(0);
        let len = match skew {
            0..=223 => t.byte_len(),
            s => t.byte_len().saturating_sub(usize::from(s - 223)),
        };
        let bytes: Vec<u8> = if rest.is_empty() {
            vec![0; len]
        } else {
            (0..len).map(|k| rest[(at + k) % rest.len()]).collect()
        };
        at = (at + len) % rest.len().max(1);
        let ok = set.insert(*t, &bytes).is_ok();
        assert_eq!(ok, len == t.byte_len(), "{t}: {len} bytes");
        all_in &= ok;
    }
    let root = set.root();
    let incl = set.inclusion_proof(index);
    let cons = set.consistency_proof(old);
    if all_in {
        root.expect("head");
        assert!(incl.expect("inclusion").len() <= 64);
        cons.expect("consistency");
    }
}

fn honest_log(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let n = (data.len() * 4).min(2000);
    let entries: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut e = vec![data[i % data.len()]];
            e.extend_from_slice(&(i as u32).to_le_bytes()[..(i % 5)]);
            e
        })
        .collect();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let split = usize::from(u16::from_le_bytes([data[0], data[1]])) % (n + 1);
    let index = usize::from(u16::from_le_bytes([data[2], data[3]])) % n;
    let limits = BundleLimits::FORMAT;

    let mut store: BTreeMap<TileName, Vec<u8>> = BTreeMap::new();
    let mut head = merkle::root(&[]);
    let mut size = 0u64;
    for part in [&entries[..split], &entries[split..]] {
        let e = edge(size);
        let mut set = TileSet::new(size);
        for t in e.tiles {
            set.insert(t, &store[&TileName::Hashes(t)])
                .expect("edge tile");
        }
        let partial = e.bundle.map(|b| store[&TileName::Entries(b)].clone());
        let refs: Vec<&[u8]> = part.iter().map(Vec::as_slice).collect();
        let a = append(&set, &head, partial.as_deref(), &refs, &limits).expect("append");
        for f in a.files {
            // Only names the tree did not have before: nothing rewritten.
            assert!(store.insert(f.name, f.bytes).is_none(), "{}", f.name);
        }
        size = a.size;
        head = a.root;
        assert_eq!(head, merkle::root(&leaves[..size as usize]));
    }

    let read = |tiles: Vec<TileId>| {
        let mut set = TileSet::new(n as u64);
        for t in tiles {
            set.insert(t, &store[&TileName::Hashes(t)]).expect("tile");
        }
        set
    };
    let set = read(tiles_for_inclusion(index as u64, n as u64).expect("plan"));
    let p = set.inclusion_proof(index as u64).expect("proof");
    assert_eq!(p, merkle::inclusion_proof(&leaves, index));
    assert!(merkle::verify_inclusion(
        index as u64,
        n as u64,
        &leaves[index],
        &p,
        &head
    ));
    let set = read(tiles_for_consistency(split as u64, n as u64).expect("plan"));
    let p = set.consistency_proof(split as u64).expect("proof");
    assert_eq!(p, merkle::consistency_proof(&leaves, split));
    let old = merkle::root(&leaves[..split]);
    assert!(merkle::verify_consistency(
        split as u64,
        n as u64,
        &old,
        &head,
        &p
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => names(rest),
        1 => bundles(rest),
        2 => arbitrary_tiles(rest),
        _ => honest_log(rest),
    }
});
