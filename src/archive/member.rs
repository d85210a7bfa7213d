//! Reads top-level files out of an archive without extracting it: what a
//! publisher checks about the flake it is about to sign (its `flake.nix`
//! and `flake.lock`, exactly as packed). The archive is one of the
//! publisher's own, but read as carefully as any: one zstd frame, the
//! default window limit, each member bounded.

use std::io::{self, Read};
use std::path::Path;

use super::limits::Limits;

/// The contents of the regular files named in `names` (top-level paths,
/// e.g. `flake.lock`), as found in the archive at `path`; a name not found,
/// or larger than `max` bytes, is `None`.
pub fn read_members(path: &Path, names: &[&str], max: u64) -> io::Result<Vec<Option<Vec<u8>>>> {
    let f = crate::fsutil::open_regular(path)?;
    let mut dec = zstd::stream::read::Decoder::new(f)?.single_frame();
    dec.window_log_max(Limits::default().zstd_window_log)?;
    let mut out: Vec<Option<Vec<u8>>> = vec![None; names.len()];
    let mut tar = tar::Archive::new(dec);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let p = entry.path()?.into_owned();
        // `tar -C dir -cf - .` names members `./flake.nix`.
        let p = p.strip_prefix(".").unwrap_or(&p);
        let Some(i) = names.iter().position(|n| p == Path::new(n)) else {
            continue;
        };
        let mut bytes = Vec::new();
        (&mut entry).take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 <= max {
            out[i] = Some(bytes);
        }
        if out.iter().all(Option::is_some) {
            break;
        }
    }
    Ok(out)
}
