//! What is signed is what every host builds (issue 30): before a flake is
//! packed, published or signed, its `flake.lock` must pin every input
//! `flake.nix` names, and be in the archive itself. Checked on the archive
//! as packed (its `flake.nix` and `flake.lock` members), so `--archive` is
//! held to the same rule as `--src`, and the lock hash the statement
//! records is that of the lock hosts receive. The judgement itself is
//! [`crate::verify::flake_inputs`], which hosts apply too.

use std::path::Path;

use crate::archive::extract::{extract, ExtractError};
use crate::archive::limits::Limits;
use crate::archive::member::read_members;
use crate::format::statement::Digest;
use crate::nix::{Nix, NixError};
use crate::verify::flake_inputs::{judge, InputsError};

pub use crate::verify::flake_inputs::{check_recorded, LockMismatch, Recorded};

/// Largest `flake.nix` or `flake.lock` read.
pub const MEMBER_MAX_BYTES: u64 = 16 << 20;

/// The archive's members the check reads, in the order [`check_members`]
/// takes them.
pub const MEMBERS: [&str; 2] = ["flake.nix", "flake.lock"];

/// The members a pack keeps for [`check_members`] as it writes them.
pub const KEEP: crate::archive::Keep<'static> = crate::archive::Keep {
    names: &MEMBERS,
    max_bytes: MEMBER_MAX_BYTES,
};

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlakeInputs {
    /// BLAKE3 of the packed `flake.lock` (`None`: the flake has no inputs
    /// and no lock).
    pub lock_blake3: Option<Digest>,
    /// The inputs the lock pins (the flake's own; sorted).
    pub inputs: Vec<String>,
    /// The inputs `flake.nix` names were compared with the lock (`false`:
    /// no Nix to evaluate it with; the lock itself was still checked).
    pub declared_checked: bool,
}

/// Why a flake may not be packed or published; each says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum FlakeError {
    #[error("reading the archive: {0}")]
    Archive(#[from] std::io::Error),
    #[error("the archive has no flake.nix")]
    NoFlake,
    #[error("flake.lock exists but is not tracked by git, so it is not packed and every host would resolve the inputs itself: `git add flake.lock`")]
    LockUntracked,
    #[error("{0}: every host would resolve the flake's inputs itself, and two hosts could build different systems from one signed release; run `nix flake lock`, then `git add flake.lock`{hint}", hint = if matches!(.0, InputsError::NoLock(n) if n.is_empty()) { " (a flake without inputs needs no lock, but telling so needs nix-instantiate on this machine)" } else { "" })]
    Inputs(InputsError),
    #[error("flake.lock does not match flake.nix (an input changed since the last `nix flake lock`, so hosts would resolve it themselves): run `nix flake lock`, then `git add flake.lock`. Nix said: {0}")]
    Stale(String),
    #[error("unpacking the archive to evaluate flake.nix: {0}")]
    Extract(#[from] ExtractError),
    #[error("evaluating flake.nix's inputs (to compare them with flake.lock): {0}")]
    Eval(#[from] NixError),
}

/// Checks the flake in the archive at `archive` (`src`: the source tree it
/// was packed from, to tell an untracked lock from a missing one). With
/// `nix`, the inputs `flake.nix` names are compared with the lock, and Nix
/// confirms the lock is current (`work`: a private directory to unpack the
/// archive in for that).
pub fn check_archive(
    archive: &Path,
    src: Option<&Path>,
    nix: Option<&Nix>,
    work: &Path,
) -> Result<FlakeInputs, FlakeError> {
    let members = read_members(archive, &MEMBERS, MEMBER_MAX_BYTES)?;
    check_members(&members, archive, src, nix, work)
}

/// [`check_archive`] with [`MEMBERS`] (in that order, `None` where absent)
/// already read out of the archive, or kept by the packer as it wrote them
/// ([`KEEP`]); the archive itself is only unpacked for Nix.
pub fn check_members(
    members: &[Option<Vec<u8>>],
    archive: &Path,
    src: Option<&Path>,
    nix: Option<&Nix>,
    work: &Path,
) -> Result<FlakeInputs, FlakeError> {
    let member = |i: usize| members.get(i).and_then(Option::as_deref);
    member(0).ok_or(FlakeError::NoFlake)?;
    let lock = member(1);
    let tree = work.join("flake-inputs");
    let res = (|| {
        let declared = match nix {
            Some(nix) => {
                std::fs::create_dir(&tree)?;
                extract(
                    crate::fsutil::open_regular(archive)?,
                    &tree,
                    &Limits::default(),
                )?;
                Some(nix.declared_inputs(&tree)?)
            }
            None => None,
        };
        let locked = match judge(lock, declared.as_deref()) {
            Ok(locked) => locked,
            Err(InputsError::NoLock(_)) if src.is_some_and(|s| s.join("flake.lock").is_file()) => {
                return Err(FlakeError::LockUntracked)
            }
            Err(e) => return Err(FlakeError::Inputs(e)),
        };
        if let (Some(nix), Some(_)) = (nix, &locked) {
            let store = work.join("flake-check-store");
            let current = nix.lock_is_current(&tree, &store);
            let _ = std::fs::remove_dir_all(&store);
            match current {
                Err(NixError::Failed { stderr, .. }) => return Err(FlakeError::Stale(stderr)),
                r => r?,
            }
        }
        Ok(FlakeInputs {
            lock_blake3: locked.as_ref().map(|l| l.lock_blake3),
            inputs: locked.map(|l| l.inputs).unwrap_or_default(),
            declared_checked: declared.is_some(),
        })
    })();
    let _ = std::fs::remove_dir_all(&tree);
    res
}

impl FlakeError {
    /// A verdict on the flake itself (what `release check` reports as a
    /// refusal), not a failure to check it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            FlakeError::NoFlake
                | FlakeError::LockUntracked
                | FlakeError::Inputs(_)
                | FlakeError::Stale(_)
        )
    }
}

impl FlakeInputs {
    /// What the lock pins, in words: `pins nixpkgs, sops` or `no inputs`.
    pub fn pins(&self) -> String {
        if self.inputs.is_empty() {
            "no inputs".into()
        } else {
            format!("pins {}", self.inputs.join(", "))
        }
    }
}

/// What the archive's `flake.lock` says, for a signer or a checker.
pub fn describe(lock: &FlakeInputs, how: Recorded) -> String {
    let checked = if lock.declared_checked {
        "every input flake.nix names"
    } else {
        "the inputs it lists (no Nix here to read flake.nix)"
    };
    match (lock.lock_blake3, how) {
        (None, _) => "the flake has no inputs and no flake.lock".into(),
        (Some(d), Recorded::Matches) => format!(
            "flake.lock in the archive ({d}; {}) is the one the statement records, and pins {checked}",
            lock.pins()
        ),
        (Some(d), Recorded::NotRecorded) => format!(
            "flake.lock in the archive ({d}; {}) pins {checked}; the statement records no lock hash",
            lock.pins()
        ),
    }
}
