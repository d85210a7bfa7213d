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

/// The members of the archive at `path`, by path, read with the
/// extractor's bounds (raw tar entries, long names and PAX records bounded,
/// every entry counted, the total size capped) and refusing what it refuses
/// on sight: a hard link, a device, a duplicate path, data behind a
/// directory or symlink. It does not check what only extracting shows
/// (parent directories, where a symlink points): a listed archive may
/// still be refused by hosts, never the other way round.
pub fn list(path: &Path, limits: &Limits) -> io::Result<BTreeMap<String, Listed>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let f = crate::fsutil::open_regular(path)?;
    let mut dec = zstd::stream::read::Decoder::new(f)?.single_frame();
    dec.window_log_max(limits.zstd_window_log)?;
    let mut tar = tar::Archive::new(dec);
    let mut out = BTreeMap::new();
    let mut ext = super::extract::Extensions::default();
    let (mut count, mut total) = (0u64, 0u64);
    for entry in tar.entries()?.raw(true) {
        let mut entry = entry?;
        count += 1;
        if count > limits.entries {
            return Err(bad(format!(
                "more than {} entries (limits.entries)",
                limits.entries
            )));
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::GNULongName => {
                let v = ext
                    .read_long(ext.long_name.is_some(), &mut entry, limits, "GNU long name")
                    .map_err(|e| bad(e.to_string()))?;
                ext.long_name = Some(v);
                continue;
            }
            tar::EntryType::GNULongLink => {
                let v = ext
                    .read_long(ext.long_link.is_some(), &mut entry, limits, "GNU long link")
                    .map_err(|e| bad(e.to_string()))?;
                ext.long_link = Some(v);
                continue;
            }
            tar::EntryType::XHeader => {
                ext.read_pax(&mut entry, limits)
                    .map_err(|e| bad(e.to_string()))?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink => {}
            other => {
                return Err(bad(format!(
                    "an entry of type {other:?} (the extractor refuses it)"
                )))
            }
        }
        let taken = std::mem::take(&mut ext);
        let raw = taken
            .long_name
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let ep = super::path::EntryPath::new(&raw, limits.path_bytes, limits.depth)
            .map_err(|e| bad(format!("{shown}: {e}")))?;
        let name = ep.to_string();
        let size = entry.header().entry_size()?;
        if kind != tar::EntryType::Regular && size != 0 {
            return Err(bad(format!("{shown}: only regular files may carry data")));
        }
        let listed = match kind {
            tar::EntryType::Regular => {
                if size > limits.file_bytes {
                    return Err(bad(format!(
                        "{shown}: larger than {} bytes",
                        limits.file_bytes
                    )));
                }
                total = total.saturating_add(size);
                if total > limits.unpacked_bytes {
                    return Err(bad(format!(
                        "more than {} bytes of files (limits.unpacked_bytes)",
                        limits.unpacked_bytes
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
            _ => {
                let target = taken.long_link.unwrap_or_else(|| {
                    entry
                        .header()
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default()
                });
                Listed::Symlink {
                    target: String::from_utf8_lossy(&target).into_owned(),
                }
            }
        };
        if out.insert(name, listed).is_some() {
            return Err(bad(format!(
                "{shown}: a duplicate entry (the extractor refuses it)"
            )));
        }
    }
    Ok(out)
}
