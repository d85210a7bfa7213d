//! Directories opened by fd, one component at a time, never through a
//! symlink: the shared base of packing (reading a source tree) and
//! extraction (creating a release tree).
//!
//! Every directory below a root is opened from its parent's fd with
//! [`DIR_FLAGS`]: `O_NOFOLLOW` with `O_DIRECTORY` fails (`ELOOP` or
//! `ENOTDIR`) on anything but a real directory, so the kernel refuses a
//! symlink at any component at the moment it is opened, whenever it was
//! put there. Files are then opened or created relative to their
//! directory's fd (`openat`), so the kernel walks one name, not the whole
//! path from `/`, and nothing resolves through a symlink.
//!
//! A [`DirChain`] keeps the chain of the last directory used open (at most
//! one fd per path component, bounded by the depth limit): entries that
//! come grouped by directory (sorted, as npcnix packs them) open every
//! directory once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::path::EntryPath;

/// How directories below a root are opened (see the module docs).
pub const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A rustix error as a `std::io::Error` (same errno, same kind).
pub fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `(parent, name)` of an entry path; the parent is `""` at the top level.
pub fn split_entry(ep: &EntryPath) -> (&str, &str) {
    ep.as_display()
        .rsplit_once('/')
        .unwrap_or(("", ep.as_display()))
}

/// An open root directory and the open chain of the last directory below
/// it that was asked for.
pub struct DirChain {
    root: OwnedFd,
    open: Vec<(String, OwnedFd)>,
}

/// Why [`DirChain::get`] could not open a directory. `prefix` is the entry
/// path of the component that failed.
pub enum ChainError {
    /// Not a real directory (`ELOOP` or `ENOTDIR`): a symlink, a file, ...
    NotADir {
        prefix: String,
    },
    /// Does not exist.
    Missing {
        prefix: String,
    },
    Io {
        prefix: String,
        source: io::Error,
    },
}

impl DirChain {
    /// Opens `root` (which may itself be a symlink: it is what the caller
    /// named).
    pub fn new(root: &Path) -> io::Result<DirChain> {
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        Ok(DirChain {
            root: fd,
            open: Vec::new(),
        })
    }

    /// The root directory's fd.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The directory `dir` (an entry path's text, `""` for the root),
    /// opening what is not open yet one component at a time with
    /// [`DIR_FLAGS`].
    pub fn get(&mut self, dir: &str) -> Result<BorrowedFd<'_>, ChainError> {
        let mut keep = 0;
        if !dir.is_empty() {
            for (i, c) in dir.split('/').enumerate() {
                match self.open.get(i) {
                    Some((name, _)) if name == c => keep = i + 1,
                    _ => break,
                }
            }
        }
        self.open.truncate(keep);
        if !dir.is_empty() {
            let mut end = 0;
            for (i, c) in dir.split('/').enumerate() {
                end += c.len() + usize::from(i > 0);
                if i < keep {
                    continue;
                }
                let at = self
                    .open
                    .last()
                    .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
                match rustix::fs::openat(at, c, DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => self.open.push((c.to_owned(), fd)),
                    Err(e) => {
                        let prefix = dir[..end].to_owned();
                        return Err(match e {
                            Errno::LOOP | Errno::NOTDIR => ChainError::NotADir { prefix },
                            Errno::NOENT => ChainError::Missing { prefix },
                            e => ChainError::Io {
                                prefix,
                                source: errno_io(e),
                            },
                        });
                    }
                }
            }
        }
        Ok(self
            .open
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd()))
    }
}
