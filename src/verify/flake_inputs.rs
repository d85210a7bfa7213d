//! Does a flake's `flake.lock` pin every input its `flake.nix` names? The
//! judgement shared by the publisher (before it packs or signs) and the
//! host (before it evaluates a release): pure, given the lock's bytes and
//! the input names read from `flake.nix` by the caller.
//!
//! Why both ends check: an input the lock does not pin is resolved by each
//! host when it evaluates the flake, so two hosts given one signed release
//! can build different systems (issue 30). Nix's own
//! `--no-update-lock-file` cannot be relied on to prevent that: Nix 2.8
//! fetches the missing input before it refuses, and with
//! `--no-write-lock-file` as well it does not refuse at all (D117).

use crate::format::flake_lock::{FlakeLock, LockError};
use crate::format::statement::Digest;

/// Why a flake's inputs are not pinned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputsError {
    /// No lock, for a flake that names these inputs (empty: not known).
    #[error("the flake {}has no flake.lock", if .0.is_empty() { String::new() } else { format!("names input(s) {} but ", .0.join(", ")) })]
    NoLock(Vec<String>),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("flake.lock does not lock input(s) {} that flake.nix names", .0.join(", "))]
    Unlocked(Vec<String>),
    #[error("flake.lock pins nothing for {} (no narHash)", .0.join(", "))]
    Unpinned(Vec<String>),
}

/// A lock that pins every input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locked {
    pub lock_blake3: Digest,
    /// The flake's own inputs (the lock's root node), sorted.
    pub inputs: Vec<String>,
}

/// Judges a flake: `lock` is its `flake.lock` (`None`: absent), `declared`
/// the inputs `flake.nix` names (`None`: not known, for want of Nix to read
/// it; a missing lock is then refused, as it cannot be told apart from a
/// forgotten one). Returns what the lock pins (`None`: no inputs, no lock).
pub fn judge(
    lock: Option<&[u8]>,
    declared: Option<&[String]>,
) -> Result<Option<Locked>, InputsError> {
    let Some(lock) = lock else {
        let named: Vec<String> = declared
            .unwrap_or_default()
            .iter()
            .filter(|n| *n != "self")
            .cloned()
            .collect();
        return match declared {
            Some(_) if named.is_empty() => Ok(None),
            _ => Err(InputsError::NoLock(named)),
        };
    };
    let parsed = FlakeLock::parse(lock)?;
    if !parsed.unpinned.is_empty() {
        return Err(InputsError::Unpinned(parsed.unpinned));
    }
    if let Some(d) = declared {
        let missing = parsed.missing(d);
        if !missing.is_empty() {
            return Err(InputsError::Unlocked(missing));
        }
    }
    Ok(Some(Locked {
        lock_blake3: Digest::of(lock),
        inputs: parsed.root_inputs,
    }))
}

/// The statement's `source.flake_lock_blake3` does not name the archive's
/// `flake.lock`: the provenance a signer or auditor reads is not what
/// hosts receive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the statement records flake.lock {recorded}, but the archive's flake.lock is {}", .packed.map_or("absent".to_string(), |d| d.to_hex()))]
pub struct LockMismatch {
    pub recorded: Digest,
    pub packed: Option<Digest>,
}

/// Whether a statement records the lock its archive ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// It records exactly the archive's lock (or: neither has one).
    Matches,
    /// It records none, and the archive has one (a statement from an
    /// earlier npcnix, or one written by hand).
    NotRecorded,
}

/// Compares the lock hash a statement records with the archive's.
pub fn check_recorded(
    packed: Option<Digest>,
    recorded: Option<Digest>,
) -> Result<Recorded, LockMismatch> {
    match (recorded, packed) {
        (Some(r), p) if Some(r) != p => Err(LockMismatch {
            recorded: r,
            packed: p,
        }),
        (None, Some(_)) => Ok(Recorded::NotRecorded),
        _ => Ok(Recorded::Matches),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &[u8] = br#"{"nodes": {"nixpkgs": {"locked": {"type": "github", "rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1", "narHash": "sha256-x"}},
                                    "root": {"inputs": {"nixpkgs": "nixpkgs"}}},
                          "root": "root", "version": 7}"#;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_flake_without_inputs_needs_no_lock_but_only_nix_can_tell() {
        assert_eq!(judge(None, Some(&names(&["self"]))), Ok(None));
        assert_eq!(judge(None, Some(&[])), Ok(None));
        assert_eq!(judge(None, None), Err(InputsError::NoLock(vec![])));
        let e = judge(None, Some(&names(&["self", "nixpkgs"]))).expect_err("no lock");
        assert_eq!(e, InputsError::NoLock(names(&["nixpkgs"])));
        assert_eq!(
            e.to_string(),
            "the flake names input(s) nixpkgs but has no flake.lock"
        );
    }

    #[test]
    fn upstream_branch_added_after_the_last_lock_is_refused() {
        assert_eq!(
            judge(
                Some(LOCK),
                Some(&names(&["self", "nixpkgs", "home-manager"]))
            ),
            Err(InputsError::Unlocked(names(&["home-manager"])))
        );
        let locked = Locked {
            lock_blake3: Digest::of(LOCK),
            inputs: names(&["nixpkgs"]),
        };
        assert_eq!(
            judge(Some(LOCK), Some(&names(&["self", "nixpkgs"]))),
            Ok(Some(locked.clone()))
        );
        // Without Nix the lock itself is still checked.
        assert_eq!(judge(Some(LOCK), None), Ok(Some(locked)));
    }

    #[test]
    fn lock_entry_naming_only_a_branch_is_refused() {
        let text = String::from_utf8(LOCK.to_vec()).expect("utf8").replace(
            r#""rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1", "narHash": "sha256-x""#,
            r#""ref": "nixos-unstable""#,
        );
        assert_eq!(
            judge(Some(text.as_bytes()), None),
            Err(InputsError::Unpinned(names(&["nixpkgs"])))
        );
        assert!(matches!(
            judge(Some(b"{}"), None),
            Err(InputsError::Lock(_))
        ));
    }

    #[test]
    fn recorded_lock_hash_of_a_work_tree_lock_never_shipped_is_a_mismatch() {
        // The round-2 bug: the statement recorded the hash of a work-tree
        // lock the archive did not contain.
        let shipped = Some(Digest::of(b"lock"));
        assert_eq!(check_recorded(shipped, shipped), Ok(Recorded::Matches));
        assert_eq!(check_recorded(shipped, None), Ok(Recorded::NotRecorded));
        assert_eq!(check_recorded(None, None), Ok(Recorded::Matches));
        let e = check_recorded(None, Some(Digest::of(b"work tree"))).expect_err("not shipped");
        assert_eq!(e.packed, None);
        assert!(check_recorded(shipped, Some(Digest::of(b"other"))).is_err());
    }
}
