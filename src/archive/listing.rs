//! What an archive holds, path by path, without extracting it: for
//! `npcnix diff` (issue 34). Only archives whose hash was checked against
//! a signed statement are listed, and still under the extraction limits
//! (entries, path length, file size, zstd window): a listing never holds
//! file contents, only their BLAKE3.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use super::limits::Limits;
use crate::format::digest::Digest;

/// One member of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    File {
        size: u64,
        blake3: Digest,
        executable: bool,
    },
    Dir,
    Symlink {
        target: String,
    },
}

/// The members of the archive at `path`, by path (`./` stripped).
pub fn list(path: &Path, limits: &Limits) -> io::Result<BTreeMap<String, Listed>> {
    let f = crate::fsutil::open_regular(path)?;
    let mut dec = zstd::stream::read::Decoder::new(f)?.single_frame();
    dec.window_log_max(limits.zstd_window_log)?;
    let mut tar = tar::Archive::new(dec);
    let mut out = BTreeMap::new();
    let too_big = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if out.len() as u64 >= limits.entries {
            return Err(too_big(format!(
                "more than {} entries (the extraction limit)",
                limits.entries
            )));
        }
        let raw = entry.path()?.into_owned();
        let rel = raw.strip_prefix(".").unwrap_or(&raw);
        let name = rel.to_string_lossy().into_owned();
        if name.is_empty() {
            continue;
        }
        if name.len() > limits.path_bytes as usize {
            return Err(too_big(format!(
                "a path longer than {} bytes",
                limits.path_bytes
            )));
        }
        let listed = match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let size = entry.header().size()?;
                if size > limits.file_bytes {
                    return Err(too_big(format!(
                        "{name}: larger than {} bytes",
                        limits.file_bytes
                    )));
                }
                let executable = entry.header().mode()? & 0o111 != 0;
                let mut h = blake3::Hasher::new();
                let mut buf = [0u8; 64 * 1024];
                loop {
                    let n = entry.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Listed::File {
                    size,
                    blake3: Digest(*h.finalize().as_bytes()),
                    executable,
                }
            }
            tar::EntryType::Directory => Listed::Dir,
            tar::EntryType::Symlink => Listed::Symlink {
                target: entry
                    .link_name()?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            },
            // The extractor refuses anything else; a listing just skips it.
            _ => continue,
        };
        out.insert(name.trim_end_matches('/').to_owned(), listed);
    }
    Ok(out)
}
