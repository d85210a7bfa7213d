//! The hardened extractor.
//!
//! Never a generic `unpack`: every entry is checked before anything touches
//! the disk, and only three kinds of entry are accepted (regular files,
//! directories, relative in-tree symlinks). The rules, each motivated by an
//! attack (see `SECURITY.md`):
//!
//! * paths are [`EntryPath`]s: no absolute paths, `..`, `.`, empty
//!   components, control characters; bounded length and depth;
//! * no duplicates, and every entry's parent must be a directory this
//!   extraction created — so nothing is ever written through a symlink, and a
//!   symlink and a directory cannot share a name;
//! * files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`, directories and
//!   symlinks fail if anything exists at their name;
//! * modes are normalised to 0644/0755 (setuid, setgid and sticky bits are
//!   dropped), owners are ignored;
//! * hardlinks, devices, FIFOs, sparse files, global PAX headers and every
//!   other entry type are refused;
//! * total unpacked bytes, per-file size, entry count and zstd window size
//!   are limited ([`Limits`]);
//! * the archive is exactly one zstd frame: no skippable frame before or
//!   after it, no second frame, nothing after it;
//! * after the end-of-archive marker only zero padding may follow, and the
//!   zstd frame must end cleanly (truncated or trailing-garbage archives are
//!   refused).
//!
//! The caller hands in a fresh, private, empty directory and deletes it if
//! extraction fails.
//!
//! **Three threads.** Decompression runs on a thread of its own, which
//! hands the tar stream to the calling thread in [`CHUNK_BYTES`] chunks
//! through a channel of [`CHUNKS_IN_FLIGHT`] (the buffers go back and
//! forth, so no chunk is allocated twice); the calling thread parses tar,
//! checks every entry and creates every file, directory and symlink, and
//! writes the files larger than [`SMALL_FILE_BYTES`]; a writing thread
//! writes the contents of the small ones and closes them
//! ([`SmallFiles`]). So zstd, file creation and writing overlap, as in
//! `zstd -dc | tar -x`, without a pipe's copies. Both helper threads are
//! spawned by the calling thread, so they inherit the Landlock domain of a
//! confined extraction ([`crate::archive::confine`]): every thread of an
//! extraction is confined.
//!
//! **Creating files.** Every entry is created relative to its parent
//! directory's fd (`mkdirat`, `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`,
//! `symlinkat`), the parent opened from the root one component at a time
//! with `O_NOFOLLOW|O_DIRECTORY` and kept open while entries of the same
//! directory follow (`DirChain`): the kernel looks up one name per file,
//! not the whole path, and no symlink is ever followed on the way.
//!
//! Memory (heap; the process adds its binary, libc and stacks, about
//! 9 MiB, see `bench/analysis.md`): the zstd window (at most
//! `2^limits.zstd_window_log`: 2 MiB by default, the window of every
//! archive npcnix packs) and zstd's block buffers (about 0.4 MiB), one
//! [`INPUT_BYTES`] input buffer (128 KiB; none with [`extract_buffered`],
//! whose reader's own buffers zstd reads), the chunks (at most
//! `CHUNKS_IN_FLIGHT + 2` x 64 KiB = 256 KiB), one 64 KiB write buffer,
//! the small-file batches ([`BATCHES`] x 64 KiB = 192 KiB, at most 96
//! files open) and the open directory chain (at most 16 fds). Nothing grows
//! with the number of entries: duplicates and undeclared parents are found
//! by the file system (see the entry loop), not by a set of paths seen.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rustix::fs::{Mode, OFlags};

use super::dirfd::{errno_io, split_entry, ChainError, DirChain};
use super::path::{EntryPath, LinkTarget, PathError};
use crate::archive::limits::Limits;
use crate::buf::{AlignedBuf, AlignedReader};

/// The magic number that starts a zstd data frame (0xFD2FB528, little-endian).
const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Zero padding tolerated after the tar end-of-archive marker (GNU tar pads
/// to a 10 KiB record; anything much bigger is not padding).
const MAX_TRAILING_PADDING: u64 = 64 * 1024;
/// Decompressed bytes per chunk handed from the zstd thread to the writer:
/// big enough that a typical flake file (a few KiB) is a small part of one
/// chunk and a large file is written in 64 KiB writes, small enough to keep
/// the ring and the write buffer at 320 KiB together.
pub const CHUNK_BYTES: usize = 64 << 10;
/// Chunks waiting in the channel: the zstd thread runs ahead by up to
/// 128 KiB (about 20 typical flake files); the ring is
/// `CHUNKS_IN_FLIGHT + 2` chunks, 256 KiB.
pub const CHUNKS_IN_FLIGHT: usize = 2;
/// The archive is read in `read(2)`s of this size into the one input buffer
/// zstd decodes from (zstd's own input block size).
pub const INPUT_BYTES: usize = 128 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive breaks a rule; it is refused (exit code 3).
    #[error("archive refused: {0}")]
    Refused(String),
    /// Writing to the destination failed (disk full, permissions, ...).
    #[error("extraction failed writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ExtractError {
    fn entry(path: &str, why: impl std::fmt::Display) -> ExtractError {
        ExtractError::Refused(format!("entry {path:?}: {why}"))
    }
}

/// What an extraction produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Entries whose setuid/setgid/sticky bits were dropped.
    pub modes_neutralised: u64,
    /// How the extraction was confined (set by the caller, see
    /// [`crate::archive::confine`]).
    pub confinement: Option<String>,
}

fn refuse_read(e: io::Error) -> ExtractError {
    ExtractError::Refused(format!("archive is not a valid tar.zst stream: {e}"))
}

fn join(root: &Path, p: &EntryPath) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in p.components() {
        out.push(c);
    }
    out
}

/// Extracts the `.tar.zst` stream `input` into `root`, which must be an
/// existing, empty directory that only this process can write to.
/// Decompression runs on a second thread (see the module docs).
pub fn extract<R: Read + Send>(
    input: R,
    root: &Path,
    limits: &Limits,
) -> Result<ExtractStats, ExtractError> {
    // The only input buffer: zstd decodes from it directly (no second
    // buffer inside the decoder), so callers pass an unbuffered reader.
    extract_buffered(
        AlignedReader::with_capacity(INPUT_BYTES, input),
        root,
        limits,
    )
}

/// [`extract`] from a reader that has its own buffers: zstd decodes
/// straight out of them (the verified stream's buffers, in a pull), with no
/// copy into an input buffer of ours.
pub fn extract_buffered<R: io::BufRead + Send>(
    mut input: R,
    root: &Path,
    limits: &Limits,
) -> Result<ExtractStats, ExtractError> {
    // Exactly one zstd frame: it must start at byte 0 (a skippable frame,
    // opaque bytes the protocol says cannot be there, is refused), the
    // decoder stops at its end, and nothing may follow it (checked below).
    let mut magic = [0u8; 4];
    input
        .read_exact(&mut magic)
        .map_err(|_| ExtractError::Refused("archive is shorter than a zstd frame header".into()))?;
    if magic != ZSTD_FRAME_MAGIC {
        let what = if magic[1..] == [0x2a, 0x4d, 0x18] && magic[0] & 0xf0 == 0x50 {
            "archive starts with a zstd skippable frame; archives are exactly one zstd frame"
        } else {
            "archive is not a zstd frame"
        };
        return Err(ExtractError::Refused(what.into()));
    }
    let mut dec = zstd::stream::read::Decoder::with_buffer(io::Cursor::new(magic).chain(input))
        .map_err(refuse_read)?
        .single_frame();
    dec.window_log_max(limits.zstd_window_log)
        .map_err(refuse_read)?;
    let (full_tx, full_rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let zstd_thread = std::thread::Builder::new()
            .name("npcnix-unzstd".into())
            .spawn_scoped(scope, move || decompress(dec, full_tx, empty_rx))
            .map_err(|e| ExtractError::Io {
                path: root.to_owned(),
                source: e,
            })?;
        let stream = ChunkReader {
            rx: full_rx,
            back: empty_tx,
            chunk: None,
            pos: 0,
            used: Vec::with_capacity(2),
        };
        // On any error the reader is dropped here, which stops the zstd
        // thread at its next send; the scope then waits for it.
        let stats = extract_tar(stream, root, limits)?;
        // The tar stream ended cleanly; the zstd thread's verdict on the
        // end of the frame (and what follows it) decides.
        zstd_thread
            .join()
            .unwrap_or_else(|_| Err(ExtractError::Refused("the zstd thread panicked".into())))?;
        Ok(stats)
    })
}

/// Decompressed tar stream: the first `len` bytes of an aligned buffer
/// ([`crate::buf`]: zstd's copy out of its window and the writer's copy out
/// of the chunk both land on cache-line boundaries).
struct Filled {
    buf: AlignedBuf,
    len: usize,
}

/// A message from the zstd thread: a chunk of tar stream, or the read error
/// at that point of the stream.
type Chunk = io::Result<Filled>;

/// The zstd thread: decompresses the one frame into chunks until it ends,
/// then checks that nothing follows it. Stops early (without error) when the
/// writer stopped listening.
fn decompress<R: io::BufRead>(
    mut dec: zstd::stream::read::Decoder<'static, R>,
    full: mpsc::SyncSender<Chunk>,
    empty: mpsc::Receiver<AlignedBuf>,
) -> Result<(), ExtractError> {
    let mut allocated = 0;
    loop {
        // A chunk comes back initialised, so filling it writes zstd's
        // output straight in: no zeroing per chunk.
        let mut chunk = if allocated < CHUNKS_IN_FLIGHT + 2 {
            allocated += 1;
            AlignedBuf::zeroed(CHUNK_BYTES)
        } else {
            match empty.recv() {
                Ok(c) => c,
                Err(_) => return Ok(()),
            }
        };
        let mut filled = 0;
        // Fill the chunk (a frame's blocks come out in pieces).
        let mut failed = None;
        while filled < CHUNK_BYTES {
            match dec.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let end = filled < CHUNK_BYTES;
        if filled > 0
            && full
                .send(Ok(Filled {
                    buf: chunk,
                    len: filled,
                }))
                .is_err()
        {
            return Ok(());
        }
        if let Some(e) = failed {
            // Delivered in stream order: the tar reader reports it where
            // the stream broke.
            let _ = full.send(Err(e));
            return Ok(());
        }
        if end {
            break;
        }
    }
    // Nothing after the one frame: no second frame, no skippable frame, no
    // garbage.
    let mut after = dec.finish();
    let mut probe = [0u8; 1];
    if after.read(&mut probe).map_err(refuse_read)? != 0 {
        return Err(ExtractError::Refused(
            "data after the zstd frame (a second or skippable frame, or garbage); archives are exactly one zstd frame".into(),
        ));
    }
    Ok(())
}

/// The writer's side of the channel: the tar stream as a `Read`, handing
/// every used chunk back to the zstd thread.
struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    back: mpsc::Sender<AlignedBuf>,
    chunk: Option<Filled>,
    pos: usize,
    /// Used chunks not yet handed back (at most one between pairs).
    used: Vec<AlignedBuf>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(c) = &self.chunk {
                if self.pos < c.len {
                    let n = buf.len().min(c.len - self.pos);
                    buf[..n].copy_from_slice(&c.buf[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            let next = match self.rx.recv() {
                Ok(next) => next?,
                // The zstd thread is done: the end of the stream.
                Err(_) => return Ok(0),
            };
            if let Some(used) = self.chunk.replace(next) {
                // Handed back two at a time: the zstd thread, when ahead,
                // sleeps until a chunk is free, and every wake-up is a
                // futex call plus an IPI (costly in a VM); in pairs it
                // wakes half as often.
                self.used.push(used.buf);
                if self.used.len() == 2 {
                    for b in self.used.drain(..) {
                        let _ = self.back.send(b);
                    }
                }
            }
            self.pos = 0;
        }
    }
}

/// Parses the tar stream, checks every entry and creates the tree.
fn extract_tar<R: Read>(
    stream: R,
    root: &Path,
    limits: &Limits,
) -> Result<ExtractStats, ExtractError> {
    // Every decompressed byte is either a header, file data (counted against
    // unpacked_bytes), padding, or an extension record: cap the total so no
    // path through the tar reader can decompress without bound.
    let cap = limits
        .unpacked_bytes
        .saturating_add(limits.entries.saturating_mul(2048))
        .saturating_add(MAX_TRAILING_PADDING + (1 << 20));
    let mut archive = tar::Archive::new(Capped {
        inner: stream,
        left: cap,
    });
    let mut copy_buf = AlignedBuf::zeroed(CHUNK_BYTES);
    let mut stats = ExtractStats::default();
    // The file system is the record of what was created (see the entry
    // loop), so the root must start empty.
    match fs::read_dir(root).map(|mut d| d.next().is_none()) {
        Ok(true) => {}
        Ok(false) => {
            return Err(ExtractError::Io {
                path: root.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "extraction needs an empty directory",
                ),
            })
        }
        Err(e) => {
            return Err(ExtractError::Io {
                path: root.to_owned(),
                source: e,
            })
        }
    }
    let mut chain = DirChain::new(root).map_err(|e| ExtractError::Io {
        path: root.to_owned(),
        source: e,
    })?;
    let mut modes = ModeCheck::default();
    let mut count = 0u64;
    let mut small = SmallFiles::start(root)?;

    // Raw mode: the tar crate would read GNU long-name and PAX extension
    // bodies into memory without a bound; we read them ourselves, bounded.
    let entries = archive.entries().map_err(refuse_read)?.raw(true);
    let mut ext = Extensions::default();
    for entry in entries {
        let mut entry = entry.map_err(refuse_read)?;
        count += 1;
        if count > limits.entries {
            return Err(ExtractError::Refused(format!(
                "more than {} entries (limits.entries)",
                limits.entries
            )));
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::GNULongName => {
                let v =
                    ext.read_long(ext.long_name.is_some(), &mut entry, limits, "GNU long name")?;
                ext.long_name = Some(v);
                continue;
            }
            tar::EntryType::GNULongLink => {
                let v =
                    ext.read_long(ext.long_link.is_some(), &mut entry, limits, "GNU long link")?;
                ext.long_link = Some(v);
                continue;
            }
            tar::EntryType::XHeader => {
                ext.read_pax(&mut entry, limits)?;
                continue;
            }
            _ => {}
        }
        if !matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink
        ) {
            let shown = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
            return Err(ExtractError::entry(&shown, entry_type_reason(kind)));
        }
        if kind != tar::EntryType::Regular && entry.header().entry_size().map_err(refuse_read)? != 0
        {
            // The tar reader would decompress and skip this data unseen: a
            // bomb hidden in a directory or symlink entry.
            let shown = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
            return Err(ExtractError::entry(
                &shown,
                "only regular files may carry data",
            ));
        }
        let taken = std::mem::take(&mut ext);
        let raw_path = match taken.long_name {
            Some(p) => p,
            None => entry.header().path_bytes().into_owned(),
        };
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let path = EntryPath::new(&raw_path, limits.path_bytes, limits.depth)
            .map_err(|e| ExtractError::entry(&shown, e))?;
        // No set of the paths seen: the root was empty, so the file
        // system holds exactly what this archive created. A second entry
        // with a path already used fails with EEXIST (O_EXCL, mkdirat,
        // symlinkat: "duplicate entry"), and a parent that is not a
        // directory created earlier (missing, a file, a symlink) fails to
        // open with O_DIRECTORY | O_NOFOLLOW. Memory stays constant in the
        // number of entries.
        let (parent, name) = split_entry(&path);
        let header_mode = entry.header().mode().unwrap_or(0);
        let dest = || join(root, &path);
        // The parent, opened from the root one component at a time without
        // following symlinks: the root started empty, so it can only be a
        // directory this extraction created (the kernel's check is the
        // parent check).
        let dir = chain.get(parent).map_err(|e| match e {
            ChainError::NotADir { .. } | ChainError::Missing { .. } => ExtractError::entry(
                &shown,
                "its parent is not a directory created earlier in this archive",
            ),
            ChainError::Io { prefix, source } => ExtractError::Io {
                path: root.join(prefix),
                source,
            },
        })?;
        match kind {
            tar::EntryType::Directory => {
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755))
                    .map_err(|e| io_or_refuse(&shown, &dest(), errno_io(e)))?;
                stats.dirs += 1;
            }
            tar::EntryType::Regular => {
                let size = entry.header().size().map_err(refuse_read)?;
                if size > limits.file_bytes {
                    return Err(ExtractError::entry(
                        &shown,
                        format!(
                            "file is larger than {} bytes (limits.file_bytes)",
                            limits.file_bytes
                        ),
                    ));
                }
                if stats.bytes.saturating_add(size) > limits.unpacked_bytes {
                    return Err(ExtractError::Refused(format!(
                        "archive unpacks to more than {} bytes (limits.unpacked_bytes)",
                        limits.unpacked_bytes
                    )));
                }
                let mode = if header_mode & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(modes.create_mode(mode)),
                )
                .map_err(|e| io_or_refuse(&shown, &dest(), errno_io(e)))?;
                let mut f = fs::File::from(fd);
                if let (Some(exact), true) = (modes.known(mode), size <= SMALL_FILE_BYTES as u64) {
                    // Read here, written (and closed) by the writing thread.
                    let len = size as usize;
                    let buf = small.room(len)?;
                    let mut got = 0;
                    while got < len {
                        match entry.read(&mut buf[got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(refuse_read(e)),
                        }
                    }
                    if got != len {
                        return Err(ExtractError::entry(&shown, "archive ends inside this file"));
                    }
                    small.push(SmallFile {
                        file: f,
                        len,
                        fix_mode: (!exact).then_some(mode),
                        shown,
                    })?;
                } else {
                    // The tar entry reader yields exactly `size` bytes or fails.
                    let n =
                        copy(&mut (&mut entry).take(size), &mut f, &mut copy_buf).map_err(|e| {
                            if e.kind() == io::ErrorKind::WriteZero
                                || e.raw_os_error() == Some(libc::ENOSPC)
                            {
                                ExtractError::Io {
                                    path: dest(),
                                    source: e,
                                }
                            } else {
                                refuse_read(e)
                            }
                        })?;
                    if n != size {
                        return Err(ExtractError::entry(&shown, "archive ends inside this file"));
                    }
                    modes.finish(&f, mode).map_err(|e| ExtractError::Io {
                        path: dest(),
                        source: e,
                    })?;
                }
                stats.bytes += size;
                stats.files += 1;
            }
            tar::EntryType::Symlink => {
                let target_raw = match taken.long_link {
                    Some(t) => t,
                    None => entry
                        .header()
                        .link_name_bytes()
                        .ok_or_else(|| ExtractError::entry(&shown, "symlink without a target"))?
                        .into_owned(),
                };
                let target = LinkTarget::new(&target_raw, &path, limits.path_bytes)
                    .map_err(|e| ExtractError::entry(&shown, symlink_reason(e)))?;
                rustix::fs::symlinkat(target.as_str(), dir, name)
                    .map_err(|e| io_or_refuse(&shown, &dest(), errno_io(e)))?;
                stats.symlinks += 1;
            }
            other => {
                return Err(ExtractError::entry(&shown, entry_type_reason(other)));
            }
        }
        if header_mode & 0o7000 != 0 {
            stats.modes_neutralised += 1;
        }
    }

    if ext != Extensions::default() {
        return Err(ExtractError::Refused(
            "extension header at the end of the archive describes no entry".into(),
        ));
    }

    // Everything after the end-of-archive marker must be zero padding, and
    // the zstd frame must end cleanly (the zstd thread checks what follows
    // the frame).
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8192];
    let mut trailing = 0u64;
    loop {
        let n = rest.read(&mut buf).map_err(refuse_read)?;
        if n == 0 {
            break;
        }
        trailing += n as u64;
        if trailing > MAX_TRAILING_PADDING || buf[..n].iter().any(|b| *b != 0) {
            return Err(ExtractError::Refused(
                "data after the end of the tar archive".into(),
            ));
        }
    }
    // Every small file written and closed, or the first write error.
    small.finish()?;
    Ok(stats)
}

/// Files of at most this many bytes are written by the writing thread
/// ([`SmallFiles`]); larger ones by the tar thread, in [`CHUNK_BYTES`]
/// writes.
const SMALL_FILE_BYTES: usize = 64 << 10;
/// Bytes of small-file contents per batch (each file's bytes start on a
/// cache line, see [`crate::buf`]).
const BATCH_BYTES: usize = 64 << 10;
/// Files per batch: bounds the files open at once, with [`BATCHES`], to
/// 96.
const BATCH_FILES: usize = 32;
/// Batches: one being filled, one waiting, one being written.
const BATCHES: usize = 3;
// A small file always fits an empty batch.
const _: () = assert!(SMALL_FILE_BYTES <= BATCH_BYTES);
// The tar thread holds up to two used chunks before handing them back in
// a pair: with fewer than four chunks the zstd thread could wait forever.
const _: () = assert!(CHUNKS_IN_FLIGHT >= 1);

/// A small file, created (open, empty) by the tar thread, its contents in a
/// batch.
struct SmallFile {
    file: fs::File,
    len: usize,
    /// `Some(mode)`: set the mode exactly after writing (see [`ModeCheck`]).
    fix_mode: Option<u32>,
    /// The entry's path as shown in errors.
    shown: String,
}

struct Batch {
    data: AlignedBuf,
    used: usize,
    files: Vec<(SmallFile, usize)>,
}

/// The writing thread for small files. The tar thread creates every entry
/// (so the checks, their order and the file system's refusals of
/// duplicates and undeclared parents are as before) and reads each small
/// file's contents into a batch; this thread writes the contents, fixes
/// the mode where needed and closes the files. On a tree of many small
/// files the tar thread's `write` and `close` were half of its system
/// time, and it was the slowest of the pipeline's threads. It is spawned
/// by the tar thread, so a confined extraction's Landlock domain covers it
/// too. Dropped (on any error of the tar thread), it stops and is joined.
struct SmallFiles {
    tx: Option<mpsc::SyncSender<Batch>>,
    back: mpsc::Receiver<Batch>,
    thread: Option<std::thread::JoinHandle<Result<(), ExtractError>>>,
    batch: Option<Batch>,
    allocated: usize,
}

impl SmallFiles {
    fn start(root: &Path) -> Result<SmallFiles, ExtractError> {
        let (tx, rx) = mpsc::sync_channel::<Batch>(1);
        // Bounded (preallocated) so the writing thread never calls malloc:
        // glibc would give it an arena of its own (see
        // `store::transfer::copy_verified`).
        let (done, back) = mpsc::sync_channel(BATCHES);
        let root = root.to_owned();
        let thread = std::thread::Builder::new()
            .name("npcnix-write".into())
            .spawn(move || write_batches(rx, done, root))
            .map_err(|e| ExtractError::Io {
                path: PathBuf::from("<writing thread>"),
                source: e,
            })?;
        Ok(SmallFiles {
            tx: Some(tx),
            back,
            thread: Some(thread),
            batch: None,
            allocated: 0,
        })
    }

    /// Room for `len` bytes (at most [`BATCH_BYTES`]) in the current batch,
    /// sending the batch first if it is full.
    fn room(&mut self, len: usize) -> Result<&mut [u8], ExtractError> {
        let fits =
            |b: &Batch| b.files.len() < BATCH_FILES && align_up(b.used) + len <= b.data.len();
        if self.batch.as_ref().is_some_and(|b| !fits(b)) {
            self.send()?;
        }
        if self.batch.is_none() {
            let b = if self.allocated < BATCHES {
                self.allocated += 1;
                Batch {
                    data: AlignedBuf::zeroed(BATCH_BYTES),
                    used: 0,
                    files: Vec::with_capacity(BATCH_FILES),
                }
            } else {
                match self.back.recv() {
                    Ok(b) => b,
                    Err(_) => return Err(self.failed()),
                }
            };
            self.batch = Some(b);
        }
        let b = self.batch.as_mut().ok_or_else(stopped)?;
        let start = align_up(b.used);
        Ok(&mut b.data[start..start + len])
    }

    /// Records the file whose contents [`SmallFiles::room`] handed out.
    fn push(&mut self, f: SmallFile) -> Result<(), ExtractError> {
        let b = self.batch.as_mut().ok_or_else(stopped)?;
        let start = align_up(b.used);
        b.used = start + f.len;
        b.files.push((f, start));
        Ok(())
    }

    fn send(&mut self) -> Result<(), ExtractError> {
        let Some(b) = self.batch.take() else {
            return Ok(());
        };
        let sent = match &self.tx {
            Some(tx) => tx.send(b).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failed())
        }
    }

    /// The writing thread stopped early: its error.
    fn failed(&mut self) -> ExtractError {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => stopped(),
        }
    }

    /// Sends what is left and waits until every file is written and closed.
    fn finish(mut self) -> Result<(), ExtractError> {
        self.send()?;
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(stopped()),
        }
    }
}

impl Drop for SmallFiles {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stopped() -> ExtractError {
    ExtractError::Io {
        path: PathBuf::from("<writing thread>"),
        source: io::Error::other("the writing thread stopped"),
    }
}

/// The next cache-line boundary at or after `n`.
fn align_up(n: usize) -> usize {
    n.next_multiple_of(crate::buf::ALIGN)
}

/// The writing thread: every file of every batch, in order; stops at the
/// first error.
fn write_batches(
    rx: mpsc::Receiver<Batch>,
    done: mpsc::SyncSender<Batch>,
    root: PathBuf,
) -> Result<(), ExtractError> {
    for mut b in rx {
        for (f, start) in b.files.drain(..) {
            let wrote = (&f.file)
                .write_all(&b.data[start..start + f.len])
                .and_then(|()| match f.fix_mode {
                    Some(m) => f.file.set_permissions(fs::Permissions::from_mode(m)),
                    None => Ok(()),
                });
            wrote.map_err(|e| ExtractError::Io {
                path: root.join(&f.shown),
                source: e,
            })?;
        }
        b.used = 0;
        // The tar thread may be done; the batch is then freed.
        let _ = done.send(b);
    }
    Ok(())
}

/// Files are created with their final mode (0644 or 0755) when the umask
/// and the directory's default ACL leave it alone, which saves an
/// `fchmod` per file. That is checked once per mode, on the first file
/// created with it (`fstat`); if the mode came out different, that file
/// and every later one with that mode are created 0600 and set exactly
/// with `fchmod` after their data, as before.
#[derive(Default)]
struct ModeCheck {
    /// For 0644 and 0755: `None` until checked, then whether the created
    /// mode is exact.
    exact: [Option<bool>; 2],
}

impl ModeCheck {
    fn slot(mode: u32) -> usize {
        usize::from(mode == 0o755)
    }

    /// `Some(exact)` once the first file of this mode has been checked.
    fn known(&self, mode: u32) -> Option<bool> {
        self.exact[Self::slot(mode)]
    }

    /// The mode to pass to `open(O_CREAT)`.
    fn create_mode(&self, mode: u32) -> u32 {
        match self.exact[Self::slot(mode)] {
            Some(false) => 0o600,
            _ => mode,
        }
    }

    /// After the data is written: makes the file's mode exactly `mode`.
    fn finish(&mut self, f: &fs::File, mode: u32) -> io::Result<()> {
        let slot = Self::slot(mode);
        let exact = match self.exact[slot] {
            Some(e) => e,
            None => {
                let got = f.metadata()?.permissions().mode() & 0o7777;
                let e = got == mode;
                self.exact[slot] = Some(e);
                e
            }
        };
        if !exact {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}

/// `io::copy` with a caller-owned buffer: one large `write(2)` per chunk
/// instead of std's 8 KiB steps, and no buffer allocated per file.
fn copy<R: Read, W: io::Write>(r: &mut R, w: &mut W, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn symlink_reason(e: PathError) -> String {
    match e {
        PathError::Escapes => "symlink target escapes the archive root".into(),
        PathError::Absolute => "symlink target is absolute".into(),
        other => format!("bad symlink target: {other}"),
    }
}

fn entry_type_reason(t: tar::EntryType) -> String {
    let what = match t {
        tar::EntryType::Link => "hardlinks are not allowed",
        tar::EntryType::Char => "character devices are not allowed",
        tar::EntryType::Block => "block devices are not allowed",
        tar::EntryType::Fifo => "FIFOs are not allowed",
        tar::EntryType::GNUSparse => "sparse files are not allowed",
        tar::EntryType::XGlobalHeader => "global PAX headers are not allowed",
        _ => "entry type is not allowed (only files, directories and symlinks)",
    };
    format!("{what} (type {:?})", t.as_byte() as char)
}

/// A name collision at creation time means the archive tried to create the
/// same thing twice (or through something it made); anything else is a
/// genuine I/O failure.
fn io_or_refuse(shown: &str, dest: &Path, e: io::Error) -> ExtractError {
    match e.kind() {
        io::ErrorKind::AlreadyExists => ExtractError::entry(
            shown,
            "duplicate entry (its path is already used in this archive)",
        ),
        io::ErrorKind::NotADirectory => {
            ExtractError::entry(shown, "collides with an existing entry")
        }
        _ if e.raw_os_error() == Some(libc::ELOOP) => {
            ExtractError::entry(shown, "would be written through a symlink")
        }
        _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            ExtractError::entry(shown, "name is too long for the file system")
        }
        _ => ExtractError::Io {
            path: dest.to_owned(),
            source: e,
        },
    }
}

/// Extension headers (GNU `L`/`K`, PAX `x`) waiting for the entry they
/// describe.
#[derive(Default, PartialEq, Eq)]
pub(super) struct Extensions {
    pub(super) long_name: Option<Vec<u8>>,
    pub(super) long_link: Option<Vec<u8>>,
    pax_seen: bool,
}

/// PAX records larger than this are refused (a path plus a few times).
const MAX_PAX_BYTES: u64 = 16 * 1024;

fn read_bounded<R: Read>(
    entry: &mut R,
    size: u64,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, ExtractError> {
    if size > max {
        return Err(ExtractError::Refused(format!(
            "{what} header of {size} bytes exceeds the {max}-byte limit"
        )));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut v).map_err(refuse_read)?;
    if v.len() as u64 != size {
        return Err(ExtractError::Refused(format!(
            "archive ends inside a {what} header"
        )));
    }
    Ok(v)
}

impl Extensions {
    pub(super) fn read_long<R: Read>(
        &self,
        already: bool,
        entry: &mut tar::Entry<'_, R>,
        limits: &Limits,
        what: &str,
    ) -> Result<Vec<u8>, ExtractError> {
        if already || self.pax_seen {
            return Err(ExtractError::Refused(format!(
                "two extension headers describe the same entry ({what})"
            )));
        }
        let size = entry.header().size().map_err(refuse_read)?;
        let mut v = read_bounded(entry, size, u64::from(limits.path_bytes) + 1, what)?;
        // GNU writes a trailing NUL.
        if v.last() == Some(&0) {
            v.pop();
        }
        if v.contains(&0) {
            return Err(ExtractError::Refused(format!("{what} contains a NUL byte")));
        }
        Ok(v)
    }

    /// Parses a PAX extended header (`"<len> <key>=<value>\n"` records).
    /// Only `path` and `linkpath` are applied; metadata keys we ignore anyway
    /// (times, owners) are accepted; anything that would change how the data
    /// is read (`size`, sparse maps) or is unknown is refused, so no two
    /// readers can disagree about where entries start.
    pub(super) fn read_pax<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        limits: &Limits,
    ) -> Result<(), ExtractError> {
        if self.pax_seen || self.long_name.is_some() || self.long_link.is_some() {
            return Err(ExtractError::Refused(
                "two extension headers describe the same entry (PAX)".into(),
            ));
        }
        self.pax_seen = true;
        let size = entry.header().size().map_err(refuse_read)?;
        let body = read_bounded(entry, size, MAX_PAX_BYTES, "PAX")?;
        let bad = |why: &str| ExtractError::Refused(format!("malformed PAX header: {why}"));
        let mut rest = &body[..];
        while !rest.is_empty() {
            let sp = rest
                .iter()
                .position(|b| *b == b' ')
                .ok_or_else(|| bad("no length"))?;
            let digits = &rest[..sp];
            if digits.is_empty() || digits.len() > 6 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad("bad length"));
            }
            let len: usize = std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad length"))?;
            if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(bad("record length does not match"));
            }
            let record = &rest[sp + 1..len - 1];
            rest = &rest[len..];
            let eq = record
                .iter()
                .position(|b| *b == b'=')
                .ok_or_else(|| bad("no `=`"))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let max = u64::from(limits.path_bytes);
            match key {
                b"path" => {
                    if value.len() as u64 > max || self.long_name.replace(value.to_vec()).is_some()
                    {
                        return Err(bad("path too long or repeated"));
                    }
                }
                b"linkpath" => {
                    if value.len() as u64 > max || self.long_link.replace(value.to_vec()).is_some()
                    {
                        return Err(bad("linkpath too long or repeated"));
                    }
                }
                b"mtime" | b"atime" | b"ctime" | b"uid" | b"gid" | b"uname" | b"gname"
                | b"comment" => {}
                other => {
                    return Err(ExtractError::Refused(format!(
                        "PAX key {:?} is not supported",
                        String::from_utf8_lossy(other)
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Fails reads past a fixed number of bytes.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "archive decompresses to more than the limits allow",
                )),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}
