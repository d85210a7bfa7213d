//! Deterministic packing of a flake directory into a `.tar.zst`.
//!
//! The same tree gives byte-identical output on any machine running the same
//! npcnix version: entries are sorted by path bytes, every header has
//! mtime 1, uid/gid 0, empty owner names and a normalised mode (0644 or 0755
//! for files, 0755 for directories), and nothing else from the file system
//! (xattrs, ACLs, device numbers) is recorded. zstd runs at a fixed level
//! with fixed parameters and the statically linked libzstd, so its output is
//! fixed too.
//!
//! **Pack formats.** The archive is always one zstd frame; how that frame is
//! made is the [`PackFormat`]:
//!
//! * [`PackFormat::V2`] (the default): libzstd's multithreaded mode with
//!   `nbWorkers >= 1` and a fixed job size, overlap and window. The input is
//!   cut into 4 MiB jobs at fixed offsets and each job is compressed by
//!   whichever worker is free, so the bytes are the same for 1, 2 or 64
//!   workers: any machine re-derives any other machine's archive.
//! * [`PackFormat::V1`]: the single-threaded frame (`nbWorkers = 0`) that
//!   npcnix wrote before v2. A v1 and a v2 frame of the same tree differ, so
//!   it is kept for re-deriving releases packed by older versions
//!   (`npcnix release check` tries v2, then v1).
//!
//! The extractor reads both: the frame layout is the same (one frame, no
//! checksum, no content size), only the blocks inside it differ.
//!
//! Collecting the file list (walking a directory or asking git) is done by the
//! caller-facing [`collect_entries`]; [`write_archive`] turns a sorted list
//! into bytes.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::dirfd::{errno_io, split_entry, ChainError, DirChain, DIR_FLAGS};
use super::path::{EntryPath, LinkTarget};
use crate::buf::AlignedBuf;
use crate::format::statement::Digest;

/// zstd level used for every archive (fixed so packing is reproducible).
pub const ZSTD_LEVEL: i32 = 3;
/// v2: bytes of tar stream per zstd job. 4 MiB costs about 1% in size over
/// one single-threaded frame (8 MiB: 0.4%) and keeps a 4-worker pack near
/// 40 MiB of memory; a typical flake (a few MiB) is one job.
pub const V2_JOB_BYTES: u32 = 4 << 20;
/// v2: log2 of the window (what level 3 picks for a stream of unknown size;
/// pinned so a libzstd default change cannot move it).
pub const V2_WINDOW_LOG: u32 = 21;
/// v2: each job re-reads window >> (9 - 6) = 256 KiB of the previous one
/// (libzstd's default for level 3, pinned).
pub const V2_OVERLAP_LOG: u32 = 6;

/// How the one zstd frame of an archive is made (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackFormat {
    /// Single-threaded frame, as written before pack format v2.
    V1,
    /// Multithreaded frame with fixed jobs: identical for any worker count.
    V2,
}

impl PackFormat {
    /// What `pack` and `publish` write.
    pub const CURRENT: PackFormat = PackFormat::V2;
    /// Newest first: the order in which a re-derivation tries them.
    pub const ALL: [PackFormat; 2] = [PackFormat::V2, PackFormat::V1];
}

impl std::fmt::Display for PackFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PackFormat::V1 => "v1 (single-threaded zstd frame)",
            PackFormat::V2 => "v2 (multithreaded zstd frame, 4 MiB jobs)",
        })
    }
}

/// How to pack: the format decides the bytes, `threads` only the speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackOptions {
    pub format: PackFormat,
    /// zstd worker threads for v2 (ignored by v1, which has none).
    pub threads: std::num::NonZeroU32,
}

impl Default for PackOptions {
    /// The current format on every core.
    fn default() -> Self {
        PackOptions {
            format: PackFormat::CURRENT,
            threads: default_threads(),
        }
    }
}

/// The number of cores this process may use (1 if unknown).
pub fn default_threads() -> std::num::NonZeroU32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .and_then(std::num::NonZeroU32::new)
        .unwrap_or(std::num::NonZeroU32::MIN)
}

/// Most zstd workers a pack starts: more would only cost memory (each holds
/// a job of input and output).
pub const MAX_THREADS: u32 = 64;
/// mtime written into every header.
pub const FIXED_MTIME: u64 = 1;
/// Packing limits: generous, but refuse trees nobody would deploy.
const PACK_MAX_PATH_BYTES: u32 = 1024;
const PACK_MAX_DEPTH: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0} has no flake.nix: npcnix packs flakes only")]
    NoFlake(PathBuf),
    #[error("flake.nix in {0} is not tracked by git, so Nix would not see it (git add it, or pass --all-files)")]
    FlakeUntracked(PathBuf),
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: file changed while it was being packed")]
    Changed { path: PathBuf },
    #[error("git ls-files failed in {dir}: {detail}")]
    Git { dir: PathBuf, detail: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One thing to put in the archive. A file's exec bit is read when its
/// contents are (from the open file), so header and data agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackEntry {
    Dir,
    File,
    Symlink(LinkTarget),
}

/// Which files of the source directory to pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileSelection {
    /// In a git work tree, the files git tracks (what Nix sees); elsewhere,
    /// everything except `.git`.
    GitTrackedIfRepo,
    /// Every file below the directory except `.git`.
    AllFiles,
}

/// The sorted entry list of a source tree.
pub struct Tree {
    pub root: PathBuf,
    pub entries: BTreeMap<EntryPath, PackEntry>,
    /// Whether the list came from git.
    pub from_git: bool,
}

fn entry_path(root: &Path, rel: &[u8]) -> Result<EntryPath, PackError> {
    EntryPath::new(rel, PACK_MAX_PATH_BYTES, PACK_MAX_DEPTH).map_err(|e| PackError::Unsupported {
        path: root.join(OsStr::from_bytes(rel)),
        reason: format!("cannot be packed: {e}"),
    })
}

/// Files are opened relative to their directory's fd, never followed
/// (`O_NOFOLLOW`), and never block (`O_NONBLOCK`: a FIFO swapped in cannot
/// stall the pack; `fstat` then refuses it).
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

fn not_a_real_dir(root: &Path, entry: &str, dir: &str) -> PackError {
    PackError::Unsupported {
        path: root.join(entry),
        reason: format!(
            "{} is not a real directory (a symlink?); refusing to pack through it",
            root.join(dir).display()
        ),
    }
}

/// The symlinked-directory defence: `foo/id` tracked by git while `foo` is
/// a symlink to `~/.ssh` must not pull a file from outside the tree into a
/// release, and neither may a directory swapped for a symlink while the
/// tree is walked or read. Directories are opened through a [`DirChain`]
/// (or, while walking, from their parent's fd) with `O_NOFOLLOW |
/// O_DIRECTORY`, so the kernel refuses a symlink at any component at the
/// moment it is opened, and files are opened from their directory's fd:
/// nothing is ever resolved through a symlink. Entries come sorted, so
/// every directory is opened once per pass instead of every ancestor being
/// checked for every file.
fn link_target(
    root: &Path,
    dir: BorrowedFd<'_>,
    name: &[u8],
    ep: &EntryPath,
) -> Result<PackEntry, PackError> {
    let full = root.join(ep.as_display());
    let target = rustix::fs::readlinkat(dir, OsStr::from_bytes(name), Vec::new())
        .map_err(|e| io_err(&full)(errno_io(e)))?;
    let target = target.as_bytes();
    let t = LinkTarget::new(target, ep, PACK_MAX_PATH_BYTES).map_err(|e| {
        PackError::Unsupported {
            path: full.clone(),
            reason: format!(
                "symlink to {} cannot be packed ({e}); only relative links that stay inside the tree, written as `../..`-prefix then names, are allowed",
                String::from_utf8_lossy(target)
            ),
        }
    })?;
    Ok(PackEntry::Symlink(t))
}

fn unsupported_kind(root: &Path, ep: &EntryPath) -> PackError {
    PackError::Unsupported {
        path: root.join(ep.as_display()),
        reason: "only regular files, directories and symlinks can be packed".into(),
    }
}

fn file_type_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<FileType, Errno> {
    let st = rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(FileType::from_raw_mode(st.st_mode))
}

/// Walks the directory `dir` (the entry path `rel`, empty for the root),
/// which was opened with [`DIR_FLAGS`]: one `getdents` pass per directory,
/// `fstatat` only where the file system does not report the type, and each
/// subdirectory opened from this one's fd without following symlinks.
fn walk(
    root: &Path,
    dir: OwnedFd,
    rel: &str,
    out: &mut BTreeMap<EntryPath, PackEntry>,
) -> Result<(), PackError> {
    let dir_path = root.join(rel);
    let mut d = rustix::fs::Dir::new(dir).map_err(|e| io_err(&dir_path)(errno_io(e)))?;
    let mut list = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent.map_err(|e| io_err(&dir_path)(errno_io(e)))?;
        let name = ent.file_name().to_bytes();
        if matches!(name, b"." | b".." | b".git") {
            continue;
        }
        list.push((name.to_vec(), ent.file_type()));
    }
    let fd = d.fd().map_err(|e| io_err(&dir_path)(errno_io(e)))?;
    for (name, kind) in list {
        let mut child = Vec::with_capacity(rel.len() + 1 + name.len());
        if !rel.is_empty() {
            child.extend_from_slice(rel.as_bytes());
            child.push(b'/');
        }
        child.extend_from_slice(&name);
        let ep = entry_path(root, &child)?;
        let kind = match kind {
            FileType::Unknown => file_type_at(fd, &name)
                .map_err(|e| io_err(&root.join(ep.as_display()))(errno_io(e)))?,
            k => k,
        };
        match kind {
            FileType::Directory => {
                let sub =
                    rustix::fs::openat(fd, OsStr::from_bytes(&name), DIR_FLAGS, Mode::empty())
                        .map_err(|e| match e {
                            // Swapped for something else since getdents.
                            Errno::LOOP | Errno::NOTDIR => {
                                not_a_real_dir(root, ep.as_display(), ep.as_display())
                            }
                            e => io_err(&root.join(ep.as_display()))(errno_io(e)),
                        })?;
                walk(root, sub, ep.as_display(), out)?;
                out.insert(ep, PackEntry::Dir);
            }
            FileType::RegularFile => {
                out.insert(ep, PackEntry::File);
            }
            FileType::Symlink => {
                let link = link_target(root, fd, &name, &ep)?;
                out.insert(ep, link);
            }
            _ => return Err(unsupported_kind(root, &ep)),
        }
    }
    Ok(())
}

/// Classifies the git-tracked path `ep`: `Ok(None)` if it is gone from the
/// work tree (Nix would not see it). A path through a symlink is refused.
fn classify_tracked(
    root: &Path,
    chain: &mut DirChain,
    ep: &EntryPath,
) -> Result<Option<PackEntry>, PackError> {
    let (parent, name) = split_entry(ep.as_display());
    let dir = match chain.get(parent) {
        Ok(d) => d,
        Err(ChainError::Missing { .. }) => return Ok(None),
        Err(ChainError::NotADir { prefix }) => {
            // A symlink on the way is refused; a plain file there means
            // the tracked path is gone.
            let (up, last) = prefix.rsplit_once('/').unwrap_or(("", &prefix));
            let up_fd = match chain.get(up) {
                Ok(d) => d,
                Err(_) => return Err(not_a_real_dir(root, ep.as_display(), &prefix)),
            };
            return match file_type_at(up_fd, last.as_bytes()) {
                Ok(FileType::Symlink) | Err(_) => {
                    Err(not_a_real_dir(root, ep.as_display(), &prefix))
                }
                Ok(_) => Ok(None),
            };
        }
        Err(ChainError::Io { prefix, source }) => return Err(io_err(&root.join(prefix))(source)),
    };
    match file_type_at(dir, name.as_bytes()) {
        Ok(FileType::Directory) => Ok(Some(PackEntry::Dir)),
        Ok(FileType::RegularFile) => Ok(Some(PackEntry::File)),
        Ok(FileType::Symlink) => link_target(root, dir, name.as_bytes(), ep).map(Some),
        Ok(_) => Err(unsupported_kind(root, ep)),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(io_err(&root.join(ep.as_display()))(errno_io(e))),
    }
}

/// Asks git which files it tracks below `root`; `Ok(None)` if `root` is not
/// inside a git work tree.
fn git_tracked(root: &Path) -> Result<Option<Vec<String>>, PackError> {
    let git_err = |detail: String| PackError::Git {
        dir: root.to_owned(),
        detail,
    };
    let inside = Command::new("git")
        .env_remove("NPCNIX_PASSPHRASE")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--is-inside-work-tree"])
        .stderr(std::process::Stdio::null())
        .output();
    match inside {
        Ok(o) if o.status.success() && o.stdout.trim_ascii() == b"true" => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No git binary: refuse rather than silently pack untracked
            // files of what might be a repository.
            if root.ancestors().any(|a| a.join(".git").exists()) {
                return Err(git_err(
                    "git is not installed but this is a git work tree (install git or pass --all-files)".into(),
                ));
            }
            return Ok(None);
        }
        Err(e) => return Err(git_err(e.to_string())),
    }
    let out = Command::new("git")
        .env_remove("NPCNIX_PASSPHRASE")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z", "--cached", "--"])
        .output()
        .map_err(|e| git_err(e.to_string()))?;
    if !out.status.success() {
        return Err(git_err(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let mut files = Vec::new();
    for raw in out.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let s = std::str::from_utf8(raw)
            .map_err(|_| git_err("git listed a path that is not UTF-8".into()))?;
        files.push(s.to_owned());
    }
    Ok(Some(files))
}

/// Lists what to pack from `root`.
pub fn collect_entries(root: &Path, selection: FileSelection) -> Result<Tree, PackError> {
    let flake = root.join("flake.nix");
    match fs::symlink_metadata(&flake) {
        Ok(md) if md.is_file() => {}
        _ => return Err(PackError::NoFlake(root.to_owned())),
    }
    let mut entries = BTreeMap::new();
    let tracked = match selection {
        FileSelection::AllFiles => None,
        FileSelection::GitTrackedIfRepo => git_tracked(root)?,
    };
    let from_git = tracked.is_some();
    let mut chain = DirChain::new(root).map_err(io_err(root))?;
    match tracked {
        None => {
            let top = rustix::fs::openat(chain.root(), ".", DIR_FLAGS, Mode::empty())
                .map_err(|e| io_err(root)(errno_io(e)))?;
            walk(root, top, "", &mut entries)?
        }
        Some(mut files) => {
            // git lists in path-byte order already; sorted, so the chain
            // opens every directory once.
            files.sort_unstable();
            for rel in files {
                let ep = entry_path(root, rel.as_bytes())?;
                let kind = match classify_tracked(root, &mut chain, &ep)? {
                    // Tracked but deleted in the work tree: Nix would not
                    // see it.
                    None => continue,
                    // A gitlink (submodule); Nix leaves submodules out by
                    // default, and so do we.
                    Some(PackEntry::Dir) => continue,
                    Some(k) => k,
                };
                let mut parent = ep.parent();
                while let Some(p) = parent {
                    parent = p.parent();
                    entries.insert(p, PackEntry::Dir);
                }
                entries.insert(ep, kind);
            }
            let flake_ep = entry_path(root, b"flake.nix")?;
            if !entries.contains_key(&flake_ep) {
                return Err(PackError::FlakeUntracked(root.to_owned()));
            }
        }
    }
    Ok(Tree {
        root: root.to_owned(),
        entries,
        from_git,
    })
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finalize().into(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Result of packing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub blake3: Digest,
    pub size: u64,
    pub entries: u64,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXED_MTIME);
    h
}

/// Bytes of file contents per batch handed from the reading thread to the
/// tar thread: many small files share one batch (one channel message, one
/// wake-up), a large file is read in batch-sized `read(2)`s.
const BATCH_BYTES: usize = 256 << 10;
/// Batches the reading thread may be ahead by (read-ahead is bounded: at
/// most `BATCHES_AHEAD + 2` batches exist, 1.5 MiB).
const BATCHES_AHEAD: usize = 4;

/// What the tar header of a file needs, read from the open file.
#[derive(Clone, Copy)]
struct FileHead {
    len: u64,
    executable: bool,
}

/// A run of file contents, in tree order: the heads of the files that
/// start in it, and their bytes, each file's starting on a cache line (the
/// kernel copies into aligned memory several times faster, see
/// [`crate::buf`]); a file larger than what is left of a batch continues
/// at the start of the next ones. `data[..len]` is used.
struct Batch {
    heads: Vec<FileHead>,
    data: AlignedBuf,
    len: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            heads: Vec::new(),
            data: AlignedBuf::zeroed(BATCH_BYTES),
            len: 0,
        }
    }
}

/// Where the next file's contents start in a batch filled to `len`: the
/// next cache line. Reader and tar thread both use this, so they agree
/// without recording offsets.
fn file_start(len: usize) -> usize {
    len.next_multiple_of(crate::buf::ALIGN)
}

/// The consumer stopped listening (its own error explains why).
struct Stopped;

/// The reading thread: opens every file of the tree in order (from its
/// directory's fd, see [`DirChain`]), checks it is still a regular file,
/// and reads its contents into batches. A file that shrinks or grows while
/// it is read is refused ([`PackError::Changed`]): its header's size comes
/// from `fstat`, and every read asks for more than is left, so growth shows
/// as a read past the size. (A read that returns less than asked and
/// reaches the size is taken as the end of the file, as it is for regular
/// files.)
struct FileReader<'a> {
    tree: &'a Tree,
    tx: mpsc::SyncSender<Result<Batch, PackError>>,
    back: mpsc::Receiver<Batch>,
    allocated: usize,
    batch: Batch,
}

impl FileReader<'_> {
    fn run(mut self) {
        let failed = match self.read_all() {
            Ok(()) => None,
            Err(Ok(e)) => Some(e),
            Err(Err(Stopped)) => return,
        };
        // What was read before the failure goes first, then the error.
        if self.flush().is_ok() {
            if let Some(e) = failed {
                let _ = self.tx.send(Err(e));
            }
        }
    }

    fn read_all(&mut self) -> Result<(), Result<PackError, Stopped>> {
        let mut chain =
            DirChain::new(&self.tree.root).map_err(|e| Ok(io_err(&self.tree.root)(e)))?;
        let root = &self.tree.root;
        for (ep, kind) in &self.tree.entries {
            if *kind != PackEntry::File {
                continue;
            }
            let full = || root.join(ep.as_display());
            let (parent, name) = split_entry(ep.as_display());
            let dir = chain.get(parent).map_err(|e| {
                Ok(match e {
                    ChainError::NotADir { prefix } => {
                        not_a_real_dir(root, ep.as_display(), &prefix)
                    }
                    ChainError::Missing { prefix } => {
                        io_err(&root.join(prefix))(errno_io(Errno::NOENT))
                    }
                    ChainError::Io { prefix, source } => io_err(&root.join(prefix))(source),
                })
            })?;
            let fd = rustix::fs::openat(dir, name, FILE_FLAGS, Mode::empty())
                .map_err(|e| Ok(io_err(&full())(errno_io(e))))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| Ok(io_err(&full())(errno_io(e))))?;
            let changed = || Ok(PackError::Changed { path: full() });
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(changed());
            }
            let len = u64::try_from(st.st_size).map_err(|_| changed())?;
            let start = file_start(self.batch.len);
            if start >= BATCH_BYTES {
                self.flush().map_err(Err)?;
            } else {
                self.batch.len = start;
            }
            self.batch.heads.push(FileHead {
                len,
                executable: st.st_mode & 0o100 != 0,
            });
            let mut left = len;
            loop {
                if self.batch.len == BATCH_BYTES {
                    self.flush().map_err(Err)?;
                }
                let room = BATCH_BYTES - self.batch.len;
                let n = match rustix::io::read(&fd, &mut self.batch.data[self.batch.len..]) {
                    Ok(n) => {
                        self.batch.len += n;
                        n as u64
                    }
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(Ok(io_err(&full())(errno_io(e)))),
                };
                if n > left || (n == 0 && left > 0) {
                    // Grew past, or shrank below, its size.
                    return Err(changed());
                }
                if n == 0 {
                    break;
                }
                left -= n;
                if left == 0 && n < room as u64 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Sends the current batch (if it holds anything) and starts a new one.
    fn flush(&mut self) -> Result<(), Stopped> {
        if self.batch.heads.is_empty() && self.batch.len == 0 {
            return Ok(());
        }
        let next = if self.allocated < BATCHES_AHEAD + 2 {
            self.allocated += 1;
            Batch::new()
        } else {
            // Waits until the tar thread is done with an older batch.
            let mut b = self.back.recv().map_err(|_| Stopped)?;
            b.heads.clear();
            b.len = 0;
            b
        };
        let full = std::mem::replace(&mut self.batch, next);
        self.tx.send(Ok(full)).map_err(|_| Stopped)
    }
}

/// The tar thread's side: file heads and contents as the reading thread
/// produced them, handing every used batch back.
struct Contents {
    rx: mpsc::Receiver<Result<Batch, PackError>>,
    back: mpsc::Sender<Batch>,
    heads: VecDeque<FileHead>,
    /// The batch being read (`None` before the first).
    batch: Option<Batch>,
    pos: usize,
    /// The reading thread's error, once it arrived.
    failed: Option<PackError>,
}

impl Contents {
    fn receive(&mut self) -> Result<(), PackError> {
        match self.rx.recv() {
            Ok(Ok(mut b)) => {
                self.heads.extend(b.heads.drain(..));
                if let Some(used) = self.batch.replace(b) {
                    let _ = self.back.send(used);
                }
                self.pos = 0;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PackError::Io {
                path: PathBuf::from("<file reader>"),
                source: io::Error::other("the file reading thread stopped"),
            }),
        }
    }

    /// The head of the next file in tree order.
    fn next_head(&mut self) -> Result<FileHead, PackError> {
        loop {
            if let Some(h) = self.heads.pop_front() {
                return Ok(h);
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            self.receive()?;
        }
    }

    /// After the last entry: waits for the reading thread to end and
    /// returns its error, if it had one. A file that grew while it was read
    /// is reported after the bytes read from it; when it is the last file
    /// in tree order nothing else would take that error, and the archive
    /// would hold the file cut at its first size without a word.
    fn finish(mut self) -> Result<(), PackError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // Batches handed back let a reader waiting for one finish.
        if let Some(b) = self.batch.take() {
            let _ = self.back.send(b);
        }
        loop {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    let _ = self.back.send(b);
                }
                Ok(Err(e)) => return Err(e),
                // The reader ended and dropped its sender.
                Err(_) => return Ok(()),
            }
        }
    }

    /// The next `len` bytes of contents, as a reader.
    fn body(&mut self, len: u64) -> Body<'_> {
        // Where the reading thread put this file's first byte (see
        // `file_start`); at the end of the batch, the file starts in the
        // next one.
        let used = self.batch.as_ref().map_or(0, |b| b.len);
        self.pos = file_start(self.pos).min(used);
        Body {
            contents: self,
            left: len,
        }
    }
}

/// Exactly one file's contents.
struct Body<'a> {
    contents: &'a mut Contents,
    left: u64,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let c = &mut *self.contents;
        let used = loop {
            match &c.batch {
                Some(b) if c.pos < b.len => break b.len,
                _ => {
                    if let Err(e) = c.receive() {
                        c.failed = Some(e);
                        return Err(io::Error::other("reading the file failed"));
                    }
                }
            }
        };
        let data = c.batch.as_ref().map_or(&[][..], |b| &b.data[..used]);
        let n = buf
            .len()
            .min(used - c.pos)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&data[c.pos..c.pos + n]);
        c.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes `tree` as a deterministic `.tar.zst` to `out`, in the current
/// pack format on every core.
pub fn write_archive<W: Write + Send>(tree: &Tree, out: W) -> Result<(W, Packed), PackError> {
    write_archive_with(tree, out, &PackOptions::default())
}

/// The zstd encoder of `format`, writing into `out`.
fn encoder<W: Write>(
    out: W,
    options: &PackOptions,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    use zstd::stream::raw::CParameter;
    let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    // No checksum in the frame: BLAKE3 over the whole archive is the
    // integrity check, and a smaller frame is simpler to reason about.
    enc.include_checksum(false)?;
    if options.format == PackFormat::V2 {
        // nbWorkers >= 1 always, even for one thread: 0 is v1's different
        // (single-threaded) block layout.
        enc.multithread(options.threads.get().min(MAX_THREADS))?;
        enc.set_parameter(CParameter::JobSize(V2_JOB_BYTES))?;
        enc.set_parameter(CParameter::OverlapSizeLog(V2_OVERLAP_LOG))?;
        enc.set_parameter(CParameter::WindowLog(V2_WINDOW_LOG))?;
    }
    Ok(enc)
}

/// Writes `tree` as a deterministic `.tar.zst` to `out`.
///
/// Three stages, each on its own thread, joined by small bounded channels
/// (the division of labour of `tar | zstd`, plus read-ahead): a reading
/// thread opens and reads the files in tree order ([`FileReader`], at most
/// 1.5 MiB ahead); the calling thread formats tar headers around their
/// contents; a third thread hands the stream to zstd and hashes the output
/// with BLAKE3. In v2 zstd's own workers compress the 4 MiB jobs in
/// parallel. zstd sees exactly the same byte stream whatever the
/// threading, and v2 cuts it into jobs at fixed offsets, so the output
/// depends only on the tree and the format.
pub fn write_archive_with<W: Write + Send>(
    tree: &Tree,
    out: W,
    options: &PackOptions,
) -> Result<(W, Packed), PackError> {
    write_archive_observed(tree, out, options, &*crate::progress::silent())
}

/// [`write_archive_with`], reporting the entries packed (and the bytes of
/// the files read) to `progress`.
pub fn write_archive_observed<W: Write + Send>(
    tree: &Tree,
    out: W,
    options: &PackOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<(W, Packed), PackError> {
    write_archive_keeping(tree, out, options, progress, &Keep::NOTHING).map(|(w, p, _)| (w, p))
}

/// The contents [`write_archive_keeping`] kept, one per name asked for.
pub type Kept = Vec<Option<Vec<u8>>>;

/// Files at the top of the tree whose contents [`write_archive_keeping`]
/// keeps, as written into the archive.
pub struct Keep<'a> {
    pub names: &'a [&'a str],
    /// A file larger than this is not kept (`None`).
    pub max_bytes: u64,
}

impl Keep<'_> {
    pub const NOTHING: Keep<'static> = Keep {
        names: &[],
        max_bytes: 0,
    };
}

/// [`write_archive_observed`], also returning the contents of the regular
/// files `keep.names` at the top of the tree (in that order; `None` for one
/// that is absent, not a regular file, or larger than `keep.max_bytes`),
/// copied as they went into the archive. The same answer as reading them
/// back out of the archive ([`crate::archive::member::read_members`]) but
/// without decompressing the whole archive again: a tree's `flake.nix`
/// and `flake.lock` sort after most of it, and that second pass was 15-20%
/// of a large pack.
pub fn write_archive_keeping<W: Write + Send>(
    tree: &Tree,
    out: W,
    options: &PackOptions,
    progress: &dyn crate::progress::Progress,
    keep: &Keep<'_>,
) -> Result<(W, Packed, Kept), PackError> {
    let task = progress.start(
        "packing",
        crate::progress::Unit::Entries,
        Some(tree.entries.len() as u64),
    );
    let out_err = |source: io::Error| PackError::Io {
        path: PathBuf::from("<archive output>"),
        source,
    };
    let options = *options;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<(AlignedBuf, usize)>(CHUNKS_QUEUED);
        let (spare_tx, spare_rx) = mpsc::channel::<AlignedBuf>();
        let compressor = scope.spawn(move || -> io::Result<(W, Digest, u64)> {
            let mut enc = encoder(HashingWriter::new(out), &options)?;
            for (chunk, len) in rx {
                enc.write_all(&chunk[..len])?;
                // The tar thread may be done; the chunk is then freed.
                let _ = spare_tx.send(chunk);
            }
            Ok(enc.finish()?.finish())
        });
        let (batch_tx, batch_rx) = mpsc::sync_channel(BATCHES_AHEAD);
        let (back_tx, back_rx) = mpsc::channel();
        let reader = FileReader {
            tree,
            tx: batch_tx,
            back: back_rx,
            allocated: 1,
            batch: Batch::new(),
        };
        let reading = std::thread::Builder::new()
            .name("npcnix-pack-read".into())
            .spawn_scoped(scope, move || reader.run())
            .map_err(|e| PackError::Io {
                path: tree.root.clone(),
                source: e,
            })?;
        let contents = Contents {
            rx: batch_rx,
            back: back_tx,
            heads: VecDeque::new(),
            batch: None,
            pos: 0,
            failed: None,
        };
        let written = write_tar(
            tree,
            keep,
            contents,
            ChunkWriter {
                tx: Some(tx),
                spare: spare_rx,
                allocated: 1,
                buf: AlignedBuf::zeroed(CHUNK),
                len: 0,
            },
            &*task,
        );
        // write_tar dropped its end of the channels: the reader stops at
        // its next send if it was not done.
        let _ = reading.join();
        let compressed = compressor
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compression thread panicked")));
        // A tar error explains more than the compressor's "channel closed".
        let kept = written?;
        let (out, blake3, size) = compressed.map_err(out_err)?;
        Ok((
            out,
            Packed {
                blake3,
                size,
                entries: tree.entries.len() as u64,
            },
            kept,
        ))
    })
}

const CHUNK: usize = 256 * 1024;
/// Chunks queued for the compressor (with the one being filled and the one
/// being compressed, at most `CHUNKS_QUEUED + 2` exist).
const CHUNKS_QUEUED: usize = 8;

/// Sends the tar stream to the compressor in fixed-size chunks, each on a
/// cache line (tar writes land at multiples of 512 bytes into it, so its
/// copies go to aligned memory, see [`crate::buf`]); the compressor hands
/// them back.
struct ChunkWriter {
    tx: Option<std::sync::mpsc::SyncSender<(AlignedBuf, usize)>>,
    spare: mpsc::Receiver<AlignedBuf>,
    allocated: usize,
    buf: AlignedBuf,
    len: usize,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let stopped = || io::Error::other("the compression thread stopped");
        let next = match self.spare.try_recv() {
            Ok(b) => b,
            Err(_) if self.allocated < CHUNKS_QUEUED + 2 => {
                self.allocated += 1;
                AlignedBuf::zeroed(CHUNK)
            }
            Err(_) => self.spare.recv().map_err(|_| stopped())?,
        };
        let chunk = std::mem::replace(&mut self.buf, next);
        let len = std::mem::take(&mut self.len);
        match &self.tx {
            Some(tx) => tx.send((chunk, len)).map_err(|_| stopped()),
            None => Err(io::Error::other("archive already finished")),
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        // Best effort on error paths; the success path sends explicitly.
        let _ = self.send();
        self.tx.take();
    }
}

/// Writes the tar stream of `tree` into `sink`, taking file contents from
/// the reading thread.
fn write_tar(
    tree: &Tree,
    keep: &Keep<'_>,
    mut contents: Contents,
    sink: ChunkWriter,
    task: &dyn crate::progress::Task,
) -> Result<Kept, PackError> {
    let mut kept: Kept = vec![None; keep.names.len()];
    let out_err = |source: io::Error| PackError::Io {
        path: PathBuf::from("<archive output>"),
        source,
    };
    let mut tar = tar::Builder::new(sink);
    for (ep, kind) in &tree.entries {
        let name = ep.as_display();
        match kind {
            PackEntry::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, format!("{name}/"), io::empty())
                    .map_err(out_err)?;
            }
            PackEntry::File => {
                let head = contents.next_head()?;
                task.advance(0, head.len);
                let mode = if head.executable { 0o755 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, mode, head.len);
                let slot = keep
                    .names
                    .iter()
                    .position(|n| *n == name)
                    .filter(|_| head.len <= keep.max_bytes);
                let appended = match slot {
                    None => tar.append_data(&mut h, name, contents.body(head.len)),
                    Some(i) => {
                        let mut copy = Vec::new();
                        let body = Tee {
                            inner: contents.body(head.len),
                            copy: &mut copy,
                        };
                        let appended = tar.append_data(&mut h, name, body);
                        kept[i] = Some(copy);
                        appended
                    }
                };
                if let Err(e) = appended {
                    return Err(contents.failed.take().unwrap_or_else(|| out_err(e)));
                }
            }
            PackEntry::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, name, target.as_str())
                    .map_err(out_err)?;
            }
        }
        task.advance(1, 0);
    }
    contents.finish()?;
    let mut sink = tar.into_inner().map_err(out_err)?;
    sink.send().map_err(out_err)?;
    Ok(kept)
}

/// A reader that also copies what it reads into `copy`.
struct Tee<'a, R> {
    inner: R,
    copy: &'a mut Vec<u8>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;

    fn tree_with_secret() -> (TempDir, PathBuf, PathBuf) {
        let t = TempDir::new_in(&std::env::temp_dir(), "npcnix-pack-test-").expect("tmp");
        let src = t.path().join("src");
        let secret = t.path().join("home-ssh");
        fs::create_dir_all(src.join("foo/deeper")).expect("mkdir");
        fs::create_dir_all(secret.join("deeper")).expect("mkdir");
        fs::write(src.join("flake.nix"), "{ }").expect("write");
        fs::write(src.join("foo/id"), "innocent").expect("write");
        fs::write(src.join("foo/deeper/id"), "innocent").expect("write");
        fs::write(secret.join("id"), "PRIVATE KEY").expect("write");
        fs::write(secret.join("deeper/id"), "PRIVATE KEY").expect("write");
        (t, src, secret)
    }

    fn swap_for_symlink(dir: &Path, target: &Path) {
        fs::rename(dir, dir.with_extension("orig")).expect("rename");
        std::os::unix::fs::symlink(target, dir).expect("symlink");
    }

    fn pack(tree: &Tree) -> Result<Vec<u8>, PackError> {
        write_archive_with(tree, Vec::new(), &PackOptions::default()).map(|(v, _)| v)
    }

    /// The reading thread found the last file longer than its size (it
    /// grew while it was read): the error comes after the file's bytes, and
    /// the pack fails instead of ending with the file cut at its first size.
    #[test]
    fn a_last_file_that_grew_while_it_was_read_is_refused_not_packed_cut() {
        let mut entries = BTreeMap::new();
        let ep = EntryPath::new(b"flake.nix", PACK_MAX_PATH_BYTES, PACK_MAX_DEPTH).expect("path");
        entries.insert(ep, PackEntry::File);
        let tree = Tree {
            root: PathBuf::from("/the-source-tree"),
            entries,
            from_git: false,
        };
        let (tx, rx) = mpsc::sync_channel(BATCHES_AHEAD);
        let (back, _returned) = mpsc::channel();
        let mut b = Batch::new();
        b.heads.push(FileHead {
            len: 3,
            executable: false,
        });
        b.data[..6].copy_from_slice(b"{ }\n#!");
        b.len = 6;
        tx.send(Ok(b)).expect("send");
        tx.send(Err(PackError::Changed {
            path: PathBuf::from("/the-source-tree/flake.nix"),
        }))
        .expect("send");
        drop(tx);
        let contents = Contents {
            rx,
            back,
            heads: VecDeque::new(),
            batch: None,
            pos: 0,
            failed: None,
        };
        let (chunks, _compressor) = mpsc::sync_channel(CHUNKS_QUEUED);
        let (_spare_tx, spare) = mpsc::channel();
        let sink = ChunkWriter {
            tx: Some(chunks),
            spare,
            allocated: 1,
            buf: AlignedBuf::zeroed(CHUNK),
            len: 0,
        };
        let task = crate::progress::silent().start("packing", crate::progress::Unit::Entries, None);
        let r = write_tar(&tree, &Keep::NOTHING, contents, sink, &*task);
        assert!(
            matches!(&r, Err(PackError::Changed { path }) if path.ends_with("flake.nix")),
            "{:?}",
            r.err()
        );
    }

    /// What the packer keeps is what reading the members back out of the
    /// archive finds: present, absent, too large, a symlink, a directory,
    /// and a same-named file deeper in the tree (not kept).
    #[test]
    fn kept_members_are_what_reading_them_back_out_of_the_archive_finds() {
        let t = TempDir::new_in(&std::env::temp_dir(), "npcnix-pack-test-").expect("tmp");
        let keep = Keep {
            names: &["flake.nix", "flake.lock", "big", "link", "dir", "absent"],
            max_bytes: 100,
        };
        let src = t.path().join("src");
        fs::create_dir_all(src.join("dir")).expect("mkdir");
        fs::create_dir_all(src.join("sub")).expect("mkdir");
        fs::write(src.join("flake.nix"), "{ outputs = _: { }; }").expect("write");
        fs::write(src.join("flake.lock"), "{}").expect("write");
        fs::write(src.join("sub/absent"), "deeper, not at the top").expect("write");
        fs::write(src.join("big"), vec![b'x'; 101]).expect("write");
        std::os::unix::fs::symlink("flake.nix", src.join("link")).expect("symlink");
        let tree = collect_entries(&src, FileSelection::AllFiles).expect("walk");
        let (bytes, _, kept) = write_archive_keeping(
            &tree,
            Vec::new(),
            &PackOptions::default(),
            &*crate::progress::silent(),
            &keep,
        )
        .expect("pack");
        let archive = t.path().join("a.tar.zst");
        fs::write(&archive, bytes).expect("write");
        let read = crate::archive::member::read_members(&archive, keep.names, keep.max_bytes)
            .expect("read back");
        assert_eq!(kept, read);
        assert_eq!(kept[0].as_deref(), Some(&b"{ outputs = _: { }; }"[..]));
        assert_eq!(kept[1].as_deref(), Some(&b"{}"[..]));
        assert!(kept[2..].iter().all(Option::is_none), "{kept:?}");
    }

    /// The walk listed `foo` as a directory; by the time its files are
    /// read it is a symlink to the secrets. The read refuses it.
    #[test]
    fn directory_swapped_for_a_symlink_after_the_walk_is_refused() {
        let (_t, src, secret) = tree_with_secret();
        let tree = collect_entries(&src, FileSelection::AllFiles).expect("walk");
        swap_for_symlink(&src.join("foo"), &secret);
        match pack(&tree) {
            Err(PackError::Unsupported { reason, .. }) => {
                assert!(reason.contains("not a real directory"), "{reason}")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|v| v.len())),
        }
    }

    /// A symlinked directory is never walked into: the walk records the
    /// symlink itself (here refused: it points outside the tree).
    #[test]
    fn symlinked_directory_is_not_walked_into() {
        let (_t, src, secret) = tree_with_secret();
        swap_for_symlink(&src.join("foo"), &secret);
        fs::remove_dir_all(src.join("foo.orig")).expect("rm");
        match collect_entries(&src, FileSelection::AllFiles) {
            Err(PackError::Unsupported { reason, .. }) => {
                assert!(reason.contains("symlink to"), "{reason}")
            }
            Ok(t) => panic!("walked: {:?}", t.entries.keys().collect::<Vec<_>>()),
            Err(e) => panic!("{e}"),
        }
    }

    /// A directory swapped for a symlink while the reading thread is inside
    /// it: the chain holds the directory it opened (never the symlink), so
    /// what is read is the original file or nothing, never the secret; and
    /// opening the path again is refused by the kernel.
    #[test]
    fn directory_swapped_mid_read_is_never_followed() {
        let (_t, src, secret) = tree_with_secret();
        let mut chain = DirChain::new(&src).expect("root");
        chain
            .get("foo/deeper")
            .map(|_| ())
            .unwrap_or_else(|_| panic!("open"));
        swap_for_symlink(&src.join("foo"), &secret);
        let dir = chain.get("foo/deeper").unwrap_or_else(|_| panic!("cached"));
        let fd = rustix::fs::openat(dir, "id", FILE_FLAGS, Mode::empty()).expect("open");
        let mut text = String::new();
        fs::File::from(fd).read_to_string(&mut text).expect("read");
        assert_eq!(text, "innocent");
        let mut fresh = DirChain::new(&src).expect("root");
        assert!(matches!(
            fresh.get("foo/deeper"),
            Err(ChainError::NotADir { prefix }) if prefix == "foo"
        ));
    }

    /// Every directory is opened once per pass: the chain reuses the open
    /// prefix of the last directory asked for.
    #[test]
    fn dir_chain_reuses_open_prefixes() {
        let (_t, src, _) = tree_with_secret();
        let mut chain = DirChain::new(&src).expect("root");
        assert!(chain.get("foo/deeper").is_ok());
        // Remove the real directories: a cached chain still answers.
        fs::rename(src.join("foo"), src.join("gone")).expect("rename");
        assert!(chain.get("foo/deeper").is_ok());
        assert!(chain.get("foo").is_ok());
        assert!(chain.get("foo/deeper").is_ok(), "still below the open foo");
        // Asked for from the root again, `foo` is gone.
        assert!(chain.get("").is_ok());
        assert!(matches!(
            chain.get("foo/deeper"),
            Err(ChainError::Missing { prefix }) if prefix == "foo"
        ));
    }
}
