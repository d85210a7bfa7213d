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

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::path::{EntryPath, LinkTarget};
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

/// One thing to put in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackEntry {
    Dir,
    File { executable: bool },
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

fn entry_path(root: &Path, rel: &Path) -> Result<EntryPath, PackError> {
    let bytes = rel.as_os_str().as_encoded_bytes();
    EntryPath::new(bytes, PACK_MAX_PATH_BYTES, PACK_MAX_DEPTH).map_err(|e| PackError::Unsupported {
        path: root.join(rel),
        reason: format!("cannot be packed: {e}"),
    })
}

/// Refuses a path whose parent directories (below the root) are not real
/// directories: `foo/id` tracked by git while `foo` is a symlink to
/// `~/.ssh` must not pull a file from outside the tree into a release.
fn check_ancestors(root: &Path, ep: &EntryPath) -> Result<(), PackError> {
    let mut parent = ep.parent();
    let mut chain = Vec::new();
    while let Some(a) = parent {
        parent = a.parent();
        chain.push(a);
    }
    for a in chain.iter().rev() {
        let p = root.join(a.as_display());
        let md = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        if !md.file_type().is_dir() {
            return Err(PackError::Unsupported {
                path: root.join(ep.as_display()),
                reason: format!(
                    "{} is not a real directory (a symlink?); refusing to pack through it",
                    p.display()
                ),
            });
        }
    }
    Ok(())
}

fn classify(root: &Path, rel: &Path, ep: &EntryPath) -> Result<PackEntry, PackError> {
    check_ancestors(root, ep)?;
    let full = root.join(rel);
    let md = fs::symlink_metadata(&full).map_err(io_err(&full))?;
    let ft = md.file_type();
    if ft.is_dir() {
        Ok(PackEntry::Dir)
    } else if ft.is_file() {
        Ok(PackEntry::File {
            executable: md.permissions().mode() & 0o100 != 0,
        })
    } else if ft.is_symlink() {
        let target = fs::read_link(&full).map_err(io_err(&full))?;
        let t = LinkTarget::new(
            target.as_os_str().as_encoded_bytes(),
            ep,
            PACK_MAX_PATH_BYTES,
        )
        .map_err(|e| PackError::Unsupported {
            path: full.clone(),
            reason: format!(
                "symlink to {} cannot be packed ({e}); only relative links that stay inside the tree, written as `../..`-prefix then names, are allowed",
                target.display()
            ),
        })?;
        Ok(PackEntry::Symlink(t))
    } else {
        Err(PackError::Unsupported {
            path: full,
            reason: "only regular files, directories and symlinks can be packed".into(),
        })
    }
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<EntryPath, PackEntry>,
) -> Result<(), PackError> {
    let dir = root.join(rel);
    let rd = fs::read_dir(&dir).map_err(io_err(&dir))?;
    for ent in rd {
        let ent = ent.map_err(io_err(&dir))?;
        let name = ent.file_name();
        if name == ".git" {
            continue;
        }
        let child = rel.join(&name);
        let ep = entry_path(root, &child)?;
        let kind = classify(root, &child, &ep)?;
        let is_dir = kind == PackEntry::Dir;
        out.insert(ep, kind);
        if is_dir {
            walk(root, &child, out)?;
        }
    }
    Ok(())
}

/// Asks git which files it tracks below `root`; `Ok(None)` if `root` is not
/// inside a git work tree.
fn git_tracked(root: &Path) -> Result<Option<Vec<PathBuf>>, PackError> {
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
        files.push(PathBuf::from(s));
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
    match tracked {
        None => walk(root, Path::new(""), &mut entries)?,
        Some(files) => {
            for rel in files {
                let full = root.join(&rel);
                // Tracked but deleted in the work tree: Nix would not see it.
                if fs::symlink_metadata(&full).is_err() {
                    continue;
                }
                let ep = entry_path(root, &rel)?;
                let kind = classify(root, &rel, &ep)?;
                if kind == PackEntry::Dir {
                    // A gitlink (submodule); Nix leaves submodules out by
                    // default, and so do we.
                    continue;
                }
                let mut parent = ep.parent();
                while let Some(p) = parent {
                    parent = p.parent();
                    entries.insert(p, PackEntry::Dir);
                }
                entries.insert(ep, kind);
            }
            let flake_ep = entry_path(root, Path::new("flake.nix"))?;
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

/// Reads exactly `len` bytes, failing if the file is shorter or longer: a
/// file that changes while packing must not produce a corrupt archive.
struct Exact<R> {
    inner: R,
    left: u64,
    path: PathBuf,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: file grew while packing", self.path.display()),
                )),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: file shrank while packing", self.path.display()),
            ));
        }
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
/// Reading files and formatting tar runs on the calling thread; a second
/// thread hands the stream to zstd and hashes the output with BLAKE3, fed
/// through a small bounded channel (the same division of labour as
/// `tar | zstd`); in v2 zstd's own workers compress the 4 MiB jobs in
/// parallel while the next files are read. zstd sees exactly the same byte
/// stream whatever the threading, and v2 cuts it into jobs at fixed offsets,
/// so the output depends only on the tree and the format.
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
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let compressor = scope.spawn(move || -> io::Result<(W, Digest, u64)> {
            let mut enc = encoder(HashingWriter::new(out), &options)?;
            for chunk in rx {
                enc.write_all(&chunk)?;
            }
            Ok(enc.finish()?.finish())
        });
        let written = write_tar(
            tree,
            ChunkWriter {
                tx: Some(tx),
                buf: Vec::with_capacity(CHUNK),
            },
            &*task,
        );
        let compressed = compressor
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compression thread panicked")));
        // A tar error explains more than the compressor's "channel closed".
        written?;
        let (out, blake3, size) = compressed.map_err(out_err)?;
        Ok((
            out,
            Packed {
                blake3,
                size,
                entries: tree.entries.len() as u64,
            },
        ))
    })
}

const CHUNK: usize = 256 * 1024;

/// Sends the tar stream to the compressor in fixed-size chunks.
struct ChunkWriter {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match &self.tx {
            Some(tx) => tx
                .send(chunk)
                .map_err(|_| io::Error::other("the compression thread stopped")),
            None => Err(io::Error::other("archive already finished")),
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
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

/// Writes the tar stream of `tree` into `sink`.
fn write_tar(
    tree: &Tree,
    sink: ChunkWriter,
    task: &dyn crate::progress::Task,
) -> Result<(), PackError> {
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
            PackEntry::File { executable } => {
                let full = tree.root.join(name);
                check_ancestors(&tree.root, ep)?;
                let mut f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(&full)
                    .map_err(io_err(&full))?;
                let md = f.metadata().map_err(io_err(&full))?;
                if !md.is_file() {
                    return Err(PackError::Changed { path: full });
                }
                let len = md.len();
                task.advance(0, len);
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, mode, len);
                // Large reads: tar's copy loop would otherwise make one 8 KiB
                // read(2) per step.
                let exact = Exact {
                    inner: io::BufReader::with_capacity(
                        usize::try_from(len.clamp(8 << 10, 1 << 20)).unwrap_or(1 << 20),
                        &mut f,
                    ),
                    left: len,
                    path: full.clone(),
                };
                tar.append_data(&mut h, name, exact).map_err(|e| {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
                    ) {
                        PackError::Changed { path: full.clone() }
                    } else {
                        PackError::Io {
                            path: full.clone(),
                            source: e,
                        }
                    }
                })?;
            }
            PackEntry::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, name, target.as_str())
                    .map_err(out_err)?;
            }
        }
        task.advance(1, 0);
    }
    let mut sink = tar.into_inner().map_err(out_err)?;
    sink.send().map_err(out_err)?;
    Ok(())
}
