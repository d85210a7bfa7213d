//! `release check`: a source tree re-packed deterministically must give
//! exactly the archive a statement signs. Tried with every pack format,
//! newest first, so a release packed by an older npcnix is re-derived with
//! the format it was packed in.

use std::path::Path;

use crate::archive::pack::Tree;
use crate::archive::{write_archive_observed, PackError, PackFormat, PackOptions, Packed};
use crate::format::statement::ArchiveRef;
use crate::progress::Progress;

/// What re-packing gave.
#[derive(Clone, Copy, Debug)]
pub struct Repacked {
    pub packed: Packed,
    /// The format that gave `packed` (the newest one when none matched).
    pub format: PackFormat,
    pub matches: bool,
}

/// Re-packs `tree` into `out` with each pack format until one gives
/// `signed` (then `out` holds that archive); on a mismatch the result is
/// the newest format's.
pub fn repack(
    tree: &Tree,
    signed: &ArchiveRef,
    options: &PackOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Repacked, PackError> {
    let mut first: Option<Repacked> = None;
    for format in PackFormat::ALL {
        let mut o = *options;
        o.format = format;
        let f = std::fs::File::create(out).map_err(|source| PackError::Io {
            path: out.to_owned(),
            source,
        })?;
        let (_, p) = write_archive_observed(tree, f, &o, progress)?;
        let r = Repacked {
            packed: p,
            format,
            matches: p.blake3 == signed.blake3 && p.size == signed.size,
        };
        if r.matches {
            return Ok(r);
        }
        first.get_or_insert(r);
    }
    if let Some(r) = first {
        return Ok(r);
    }
    Err(PackError::Io {
        path: out.to_owned(),
        source: std::io::Error::other("no pack format to re-pack with"),
    })
}
