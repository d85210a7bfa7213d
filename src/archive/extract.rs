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
//! **Two threads.** The calling thread decompresses, parses tar and checks
//! every entry, and reads the contents of files straight into batches of
//! `BATCH_BYTES`; a writing thread (`Writer`) creates every entry of a
//! batch in stream order (directories, files with their contents,
//! symlinks) and closes each file once written. So decompression and the
//! file system's work overlap, as in `zstd -dc | tar -x`, without a pipe's
//! copies, and the two threads wake each other once per batch. (Until
//! 2026-12-07 zstd had a thread of its own and the calling thread created
//! the entries: four busy threads with the download's on two cores, many
//! more wake-ups, and the scheduler often put two of them on one core;
//! `bench/analysis.md`.) The writing thread is spawned by the calling
//! thread, so it inherits the Landlock domain of a confined extraction
//! ([`crate::archive::confine`]): every thread of an extraction is
//! confined. The first error in stream order is the one reported: the
//! writer stops at its first failure, and an error the parse meets later
//! waits for the writer to finish the entries before it.
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
//! whose reader's own buffers zstd reads), one [`DECODED_BYTES`] buffer of
//! decompressed tar stream (64 KiB), the batches (`BATCHES` x 256 KiB of
//! contents, plus their paths), one file open at a time and the open
//! directory chain (at most 16 fds). Nothing grows with the number of
//! entries: duplicates and undeclared parents are found by the file system
//! (see `apply`), not by a set of paths seen.

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
/// The buffer of decompressed tar stream the headers are parsed from; a
/// read of file contents at least this large, with nothing buffered, is
/// decompressed straight into the writer's batch.
pub const DECODED_BYTES: usize = 64 << 10;
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

/// Extracts the `.tar.zst` stream `input` into `root`, which must be an
/// existing, empty directory that only this process can write to.
/// Creating and writing run on a second thread (see the module docs).
pub fn extract<R: Read>(
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
pub fn extract_buffered<R: io::BufRead>(
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
    extract_tar(
        AlignedReader::with_capacity(DECODED_BYTES, dec),
        root,
        limits,
        |decoded| {
            // The tar stream ended cleanly and the frame with it (the
            // decoder returned its end): nothing may follow the one frame,
            // no second frame, no skippable frame, no garbage.
            let mut after = decoded.into_inner().finish();
            let mut probe = [0u8; 1];
            if after.read(&mut probe).map_err(refuse_read)? != 0 {
                return Err(ExtractError::Refused(
                    "data after the zstd frame (a second or skippable frame, or garbage); archives are exactly one zstd frame".into(),
                ));
            }
            // The input is closed here, while the writing thread may still
            // write: an unlinked download's pages are freed in parallel
            // (10 ms for a 44 MB archive), not afterwards in series.
            Ok(())
        },
    )
}

/// Parses the tar stream and checks every entry on this thread, while the
/// writing thread ([`Writer`]) creates them in the same order; `end` then
/// checks the stream (read to its end) and what follows it.
fn extract_tar<R: Read>(
    stream: R,
    root: &Path,
    limits: &Limits,
    end: impl FnOnce(R) -> Result<(), ExtractError>,
) -> Result<ExtractStats, ExtractError> {
    // Every decompressed byte is either a header, file data (counted against
    // unpacked_bytes), padding, or an extension record: cap the total so no
    // path through the tar reader can decompress without bound.
    let cap = limits
        .unpacked_bytes
        .saturating_add(limits.entries.saturating_mul(2048))
        .saturating_add(MAX_TRAILING_PADDING + (1 << 20));
    let archive = tar::Archive::new(Capped {
        inner: stream,
        left: cap,
    });
    // The file system is the record of what was created (see `apply`), so
    // the root must start empty.
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
    let chain = DirChain::new(root).map_err(|e| ExtractError::Io {
        path: root.to_owned(),
        source: e,
    })?;
    let mut writer = Writer::start(root, chain)?;
    let parsed = parse_entries(archive, &mut writer, limits)
        .and_then(|(stats, rest)| end(rest).map(|()| stats));
    // Whatever the parse found, the entries before it are created (or the
    // first of them that fails is): the writer's error is earlier in the
    // stream than any the parse met after handing it those entries, so it
    // is the one reported, as a single-threaded extractor would.
    writer.finish()?;
    parsed
}

/// The entry loop: every check, in stream order; what passes is handed to
/// the writer. Then the end of the archive: only zero padding may follow.
fn parse_entries<R: Read>(
    mut archive: tar::Archive<Capped<R>>,
    writer: &mut Writer,
    limits: &Limits,
) -> Result<(ExtractStats, R), ExtractError> {
    let mut stats = ExtractStats::default();
    let mut count = 0u64;
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
        let shown = || String::from_utf8_lossy(&raw_path).into_owned();
        let path = EntryPath::new(&raw_path, limits.path_bytes, limits.depth)
            .map_err(|e| ExtractError::entry(&shown(), e))?;
        let header_mode = entry.header().mode().unwrap_or(0);
        match kind {
            tar::EntryType::Directory => {
                writer.entry(&path, &raw_path, New::Dir)?;
                stats.dirs += 1;
            }
            tar::EntryType::Regular => {
                let size = entry.header().size().map_err(refuse_read)?;
                if size > limits.file_bytes {
                    return Err(ExtractError::entry(
                        &shown(),
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
                writer.entry(&path, &raw_path, New::File { mode, size })?;
                // The contents, read straight into the writer's batches.
                let mut left = size;
                while left > 0 {
                    let room = writer.room(left)?;
                    let mut got = 0;
                    while got < room.len() {
                        match entry.read(&mut room[got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(refuse_read(e)),
                        }
                    }
                    if got == 0 {
                        return Err(ExtractError::entry(
                            &shown(),
                            "archive ends inside this file",
                        ));
                    }
                    writer.data(got)?;
                    left -= got as u64;
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
                        .ok_or_else(|| ExtractError::entry(&shown(), "symlink without a target"))?
                        .into_owned(),
                };
                let target = LinkTarget::new(&target_raw, &path, limits.path_bytes)
                    .map_err(|e| ExtractError::entry(&shown(), symlink_reason(e)))?;
                writer.entry(&path, &raw_path, New::Symlink(target.as_str()))?;
                stats.symlinks += 1;
            }
            other => {
                return Err(ExtractError::entry(&shown(), entry_type_reason(other)));
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

    // Everything after the end-of-archive marker must be zero padding (the
    // caller then checks that the zstd frame ends there).
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
    Ok((stats, rest.inner))
}

/// Bytes of file contents per batch handed to the writing thread (each
/// file's bytes start on a cache line, see [`crate::buf`]).
const BATCH_BYTES: usize = 256 << 10;
/// Operations per batch (an entry is one, its contents one more per batch
/// they span).
const BATCH_OPS: usize = 256;
/// Bytes of paths and link targets per batch before it is sent (one entry
/// whose names are longer still fits an empty batch: the text grows).
const BATCH_TEXT: usize = 32 << 10;
/// Batches: one being filled, one waiting, one being written.
const BATCHES: usize = 3;
/// A file of at most this many bytes is never split between batches (one
/// `write(2)`); a larger one fills what is left of the current batch.
const WHOLE_FILE_BYTES: u64 = 64 << 10;
const _: () = assert!(WHOLE_FILE_BYTES as usize <= BATCH_BYTES);

/// What an entry creates.
enum New<'a> {
    Dir,
    /// Its `size` bytes follow in [`Op::Data`]s.
    File {
        mode: u32,
        size: u64,
    },
    Symlink(&'a str),
}

/// Bytes `start..end` of a batch's text or data.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

/// An entry, as the writing thread needs it: its checked path (in the
/// batch's text) and its raw path for messages.
#[derive(Clone, Copy)]
struct Named {
    path: Span,
    raw: Span,
}

enum Op {
    Dir(Named),
    File {
        at: Named,
        mode: u32,
        size: u64,
    },
    /// The next bytes of the file being written (in the batch's data).
    Data(Span),
    Symlink {
        at: Named,
        target: Span,
    },
}

struct Batch {
    data: AlignedBuf,
    used: usize,
    text: Vec<u8>,
    ops: Vec<Op>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            data: AlignedBuf::zeroed(BATCH_BYTES),
            used: 0,
            text: Vec::with_capacity(BATCH_TEXT),
            ops: Vec::with_capacity(BATCH_OPS),
        }
    }

    fn text(&self, s: Span) -> &[u8] {
        &self.text[s.start..s.end]
    }

    /// Room for data from the next cache line on.
    fn free(&self) -> usize {
        self.data.len().saturating_sub(align_up(self.used))
    }

    fn add_text(&mut self, t: &[u8]) -> Span {
        let start = self.text.len();
        self.text.extend_from_slice(t);
        Span {
            start,
            end: self.text.len(),
        }
    }
}

/// The writing thread and the batches it is handed. The parsing thread
/// checks every entry and reads the contents of files into a batch; the
/// writing thread creates the entries of each batch in stream order
/// (directories, files with their contents, symlinks), so the file
/// system's refusals of duplicates and undeclared parents happen in the
/// order of the stream, on one thread, as before the split. On a 2-core
/// host the two threads carry about equal work (decompressing and parsing;
/// creating and writing), and a batch is handed over at a time, so they
/// wake each other once per batch, not per file. It is spawned by the
/// parsing thread, so a confined extraction's Landlock domain covers it
/// too. Dropped (on an error of the parsing thread), it stops and is
/// joined.
struct Writer {
    tx: Option<mpsc::SyncSender<Batch>>,
    back: mpsc::Receiver<Batch>,
    thread: Option<std::thread::JoinHandle<Result<(), ExtractError>>>,
    batch: Option<Batch>,
    allocated: usize,
}

impl Writer {
    fn start(root: &Path, chain: DirChain) -> Result<Writer, ExtractError> {
        let (tx, rx) = mpsc::sync_channel::<Batch>(1);
        // Bounded (preallocated): the writing thread sends batches back
        // without allocating. Every batch is allocated by the parsing
        // thread.
        let (done, back) = mpsc::sync_channel(BATCHES);
        let root = root.to_owned();
        let thread = std::thread::Builder::new()
            .name("npcnix-write".into())
            .spawn(move || write_batches(rx, done, root, chain))
            .map_err(|e| ExtractError::Io {
                path: PathBuf::from("<writing thread>"),
                source: e,
            })?;
        Ok(Writer {
            tx: Some(tx),
            back,
            thread: Some(thread),
            batch: None,
            allocated: 0,
        })
    }

    /// The batch being filled, sending it first unless `fits`.
    fn batch(&mut self, fits: impl Fn(&Batch) -> bool) -> Result<&mut Batch, ExtractError> {
        if self.batch.as_ref().is_some_and(|b| !fits(b)) {
            self.send()?;
        }
        if self.batch.is_none() {
            let b = if self.allocated < BATCHES {
                self.allocated += 1;
                Batch::new()
            } else {
                match self.back.recv() {
                    Ok(b) => b,
                    Err(_) => return Err(stopped()),
                }
            };
            self.batch = Some(b);
        }
        self.batch.as_mut().ok_or_else(stopped)
    }

    /// Hands over an entry to create.
    fn entry(&mut self, path: &EntryPath, raw: &[u8], new: New<'_>) -> Result<(), ExtractError> {
        let target = match &new {
            New::Symlink(t) => t.len(),
            _ => 0,
        };
        let text = path.as_display().len() + raw.len() + target;
        // The entry and one data op fit; so does its text, unless it alone
        // is longer than a batch's text (then it goes alone).
        let b = self.batch(|b| {
            b.ops.len() + 2 <= BATCH_OPS && (b.text.is_empty() || b.text.len() + text <= BATCH_TEXT)
        })?;
        let at = Named {
            path: b.add_text(path.as_display().as_bytes()),
            raw: b.add_text(raw),
        };
        let op = match new {
            New::Dir => Op::Dir(at),
            New::File { mode, size } => Op::File { at, mode, size },
            New::Symlink(t) => Op::Symlink {
                at,
                target: b.add_text(t.as_bytes()),
            },
        };
        b.ops.push(op);
        Ok(())
    }

    /// Room for the next at most `left` bytes of the current file's
    /// contents (never empty), to be filled and recorded by
    /// [`Writer::data`].
    fn room(&mut self, left: u64) -> Result<&mut [u8], ExtractError> {
        let b = self.batch(|b| {
            let free = b.free() as u64;
            b.ops.len() < BATCH_OPS
                && free > 0
                && (free >= left || left > WHOLE_FILE_BYTES && free >= WHOLE_FILE_BYTES / 4)
        })?;
        let start = align_up(b.used);
        let len = usize::try_from(left).unwrap_or(usize::MAX).min(b.free());
        Ok(&mut b.data[start..start + len])
    }

    /// Records the `n` bytes just read into [`Writer::room`].
    fn data(&mut self, n: usize) -> Result<(), ExtractError> {
        let b = self.batch.as_mut().ok_or_else(stopped)?;
        let start = align_up(b.used);
        b.used = start + n;
        b.ops.push(Op::Data(Span {
            start,
            end: start + n,
        }));
        Ok(())
    }

    fn send(&mut self) -> Result<(), ExtractError> {
        let Some(b) = self.batch.take() else {
            return Ok(());
        };
        match &self.tx {
            Some(tx) if tx.send(b).is_ok() => Ok(()),
            // The writing thread stopped at an error, which `finish`
            // returns.
            _ => Err(stopped()),
        }
    }

    /// Sends what is left and waits until every entry handed over is
    /// created and every file written and closed; the writing thread's
    /// first error, if any.
    fn finish(mut self) -> Result<(), ExtractError> {
        let sent = self.send();
        self.tx = None;
        let written = match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(stopped()),
        };
        written.and(sent)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A batch the parse could not have made: a bug, never an archive's fault.
fn internal(what: &str) -> ExtractError {
    ExtractError::Io {
        path: PathBuf::from("<writing thread>"),
        source: io::Error::other(format!("internal error: {what}")),
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

/// A file being written: its contents may span batches.
struct Open {
    file: fs::File,
    mode: u32,
    left: u64,
    /// Its entry path, for messages.
    path: String,
}

/// The writing thread: every operation of every batch, in order; stops at
/// the first error.
fn write_batches(
    rx: mpsc::Receiver<Batch>,
    done: mpsc::SyncSender<Batch>,
    root: PathBuf,
    mut chain: DirChain,
) -> Result<(), ExtractError> {
    let mut modes = ModeCheck::default();
    let mut open: Option<Open> = None;
    for mut b in rx {
        for op in &b.ops {
            apply(op, &b, &root, &mut chain, &mut modes, &mut open)?;
        }
        b.ops.clear();
        b.text.clear();
        b.used = 0;
        // The parsing thread may be done; the batch is then freed.
        let _ = done.send(b);
    }
    Ok(())
}

fn apply(
    op: &Op,
    b: &Batch,
    root: &Path,
    chain: &mut DirChain,
    modes: &mut ModeCheck,
    open: &mut Option<Open>,
) -> Result<(), ExtractError> {
    let dest = |path: &str| {
        let mut out = root.to_path_buf();
        out.extend(path.split('/'));
        out
    };
    let (at, path) = match op {
        Op::Data(s) => {
            let f = open
                .as_mut()
                .ok_or_else(|| internal("contents with no file open"))?;
            let bytes = &b.data[s.start..s.end];
            let wrote = (&f.file).write_all(bytes);
            wrote.map_err(|e| ExtractError::Io {
                path: dest(&f.path),
                source: e,
            })?;
            f.left = f.left.saturating_sub(bytes.len() as u64);
            if f.left == 0 {
                if let Some(f) = open.take() {
                    close(f, modes, &dest)?;
                }
            }
            return Ok(());
        }
        Op::Dir(at) | Op::File { at, .. } | Op::Symlink { at, .. } => {
            if open.is_some() {
                // The parse hands over the next entry only once the file
                // before it is complete: a file cut short here would be a
                // bug of ours, and is an error, not a short file.
                return Err(internal("an entry inside a file's contents"));
            }
            // Checked on the parsing thread: an `EntryPath`'s text.
            let path = std::str::from_utf8(b.text(at.path))
                .map_err(|_| internal("a path that is not UTF-8"))?;
            (at, path)
        }
    };
    let shown = || String::from_utf8_lossy(b.text(at.raw)).into_owned();
    let (parent, name) = split_entry(path);
    // The parent, opened from the root one component at a time without
    // following symlinks: the root started empty, so it can only be a
    // directory this extraction created (the kernel's check is the parent
    // check). No set of the paths seen: the file system holds exactly what
    // this archive created, so a second entry with a path already used
    // fails with EEXIST (O_EXCL, mkdirat, symlinkat: "duplicate entry"),
    // and a parent that is not a directory created earlier (missing, a
    // file, a symlink) fails to open with O_DIRECTORY | O_NOFOLLOW. Memory
    // stays constant in the number of entries.
    let dir = chain.get(parent).map_err(|e| match e {
        ChainError::NotADir { .. } | ChainError::Missing { .. } => ExtractError::entry(
            &shown(),
            "its parent is not a directory created earlier in this archive",
        ),
        ChainError::Io { prefix, source } => ExtractError::Io {
            path: root.join(prefix),
            source,
        },
    })?;
    match op {
        Op::Dir(_) => rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755))
            .map_err(|e| io_or_refuse(&shown(), &dest(path), errno_io(e))),
        Op::Symlink { target, .. } => {
            let target = std::str::from_utf8(b.text(*target))
                .map_err(|_| internal("a link target that is not UTF-8"))?;
            rustix::fs::symlinkat(target, dir, name)
                .map_err(|e| io_or_refuse(&shown(), &dest(path), errno_io(e)))
        }
        Op::File { mode, size, .. } => {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(modes.create_mode(*mode)),
            )
            .map_err(|e| io_or_refuse(&shown(), &dest(path), errno_io(e)))?;
            let f = Open {
                file: fs::File::from(fd),
                mode: *mode,
                left: *size,
                path: path.to_owned(),
            };
            if *size == 0 {
                close(f, modes, &dest)
            } else {
                *open = Some(f);
                Ok(())
            }
        }
        Op::Data(_) => Ok(()),
    }
}

/// A file's contents are all written: its mode made exact, and closed.
fn close(
    f: Open,
    modes: &mut ModeCheck,
    dest: &dyn Fn(&str) -> PathBuf,
) -> Result<(), ExtractError> {
    modes.finish(&f.file, f.mode).map_err(|e| ExtractError::Io {
        path: dest(&f.path),
        source: e,
    })
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
