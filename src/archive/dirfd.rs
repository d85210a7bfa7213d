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
//! A [`DirChain`] keeps the chain of the last directory used open: entries
//! that come grouped by directory (sorted, as npcnix packs them) open every
//! directory once. It holds at most [`MAX_HELD`] fds whatever the depth (a
//! host may raise `limits.depth` far past the process's fd limit): below
//! that depth only the last directory stays open, and going back up to a
//! directory whose fd was closed opens it again from the deepest one held.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// How directories below a root are opened (see the module docs).
pub const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Most directory fds a [`DirChain`] holds (the first `MAX_HELD - 1`
/// levels and the last directory).
pub const MAX_HELD: usize = 16;

/// A rustix error as a `std::io::Error` (same errno, same kind).
pub fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `(parent, name)` of an entry path's text (`EntryPath::as_display`);
/// the parent is `""` at the top level.
pub fn split_entry(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// An open root directory and the open chain of the last directory below
/// it that was asked for.
pub struct DirChain {
    root: OwnedFd,
    /// The components of the last directory, each with its fd while held:
    /// levels below `MAX_HELD - 1` and the last one.
    open: Vec<(String, Option<OwnedFd>)>,
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
        let comps: Vec<&str> = if dir.is_empty() {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        let keep = self
            .open
            .iter()
            .zip(&comps)
            .take_while(|((name, _), c)| name == *c)
            .count();
        self.open.truncate(keep);
        // Resume below the deepest level still holding its fd: levels
        // that lost theirs (deeper than MAX_HELD - 1, not last) are opened
        // again on the way.
        let start = self
            .open
            .iter()
            .rposition(|(_, fd)| fd.is_some())
            .map_or(0, |d| d + 1);
        let mut cur: Option<OwnedFd> = None;
        for (i, c) in comps.iter().enumerate().skip(start) {
            // The entry path up to this component, for the error.
            let prefix_end = comps[..=i].iter().map(|c| c.len()).sum::<usize>() + i;
            let at = match (&cur, i) {
                (Some(fd), _) => fd.as_fd(),
                (None, 0) => self.root.as_fd(),
                (None, _) => self.open[i - 1]
                    .1
                    .as_ref()
                    .map_or(self.root.as_fd(), |f| f.as_fd()),
            };
            let fd = rustix::fs::openat(at, *c, DIR_FLAGS, Mode::empty()).map_err(|e| {
                let prefix = dir[..prefix_end].to_owned();
                match e {
                    Errno::LOOP | Errno::NOTDIR => ChainError::NotADir { prefix },
                    Errno::NOENT => ChainError::Missing { prefix },
                    e => ChainError::Io {
                        prefix,
                        source: errno_io(e),
                    },
                }
            })?;
            if let Some(prev) = cur.replace(fd) {
                // Level i - 1 keeps its fd only in the held top levels.
                if i - 1 < MAX_HELD - 1 {
                    self.open[i - 1].1 = Some(prev);
                }
            }
            if i == self.open.len() {
                self.open.push(((*c).to_owned(), None));
            }
        }
        if let Some(fd) = cur {
            if let Some(last) = self.open.last_mut() {
                last.1 = Some(fd);
            }
        }
        // The level that was last before and is not any more lets its fd go.
        let n = self.open.len();
        for (i, (_, fd)) in self.open.iter_mut().enumerate() {
            if i + 1 < n && i >= MAX_HELD - 1 {
                *fd = None;
            }
        }
        Ok(self
            .open
            .last()
            .and_then(|(_, fd)| fd.as_ref())
            .map_or(self.root.as_fd(), |fd| fd.as_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl DirChain {
        /// Directory fds held below the root.
        fn held(&self) -> usize {
            self.open.iter().filter(|(_, fd)| fd.is_some()).count()
        }
    }

    /// A tree far deeper than MAX_HELD, walked down, up and across, holds
    /// a bounded number of fds and always returns the right directory.
    #[test]
    fn deep_tree_holds_a_bounded_number_of_directory_fds() {
        let root = crate::fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-dirfd-")
            .expect("temp dir");
        let deep: Vec<String> = (0..100).map(|i| format!("d{i}")).collect();
        let mut p = root.path().to_path_buf();
        for c in &deep {
            p.push(c);
            std::fs::create_dir(&p).expect("mkdir");
            std::fs::write(p.join("marker"), c).expect("marker");
        }
        let mut chain = DirChain::new(root.path()).expect("root");
        let check = |chain: &mut DirChain, depth: usize| {
            let dir = deep[..depth].join("/");
            let fd = chain.get(&dir).ok().expect("open");
            let f = rustix::fs::openat(
                fd,
                "marker",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .expect("marker");
            let text = std::io::read_to_string(std::fs::File::from(f)).expect("read");
            assert_eq!(text, deep[depth - 1], "at depth {depth}");
        };
        for depth in (1..=100)
            .chain((1..=100).rev())
            .chain([50, 3, 99, 17, 16, 15, 100])
        {
            check(&mut chain, depth);
            assert!(
                chain.held() <= MAX_HELD,
                "depth {depth}: {} fds",
                chain.held()
            );
        }
        assert!(
            matches!(chain.get("d0/nope"), Err(ChainError::Missing { prefix }) if prefix == "d0/nope")
        );
    }
}
