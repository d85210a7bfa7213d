//! The pull pipeline as typed stages, shared by `npcnix pull` and the agent.
//!
//! Each stage takes the previous stage's output type and returns the next
//! one, so a poll reads top to bottom and no stage can be skipped:
//!
//! ```text
//! fetch_head  -> HeadBytes   latest's bytes: fresh, or the cached verified copy on "not modified"
//! judge       -> Judged      signatures, binding, remote, freshness, rollback (pure verify)
//! descend     -> Accepted    require_chain: intermediate releases link back to what the host holds
//! download    -> Downloaded  at most the signed size, BLAKE3 checked: verified streaming (each
//!                            16 KiB group checked as it arrives, extracted on a confined thread)
//!                            with the store's outboard, else the whole archive in the private temp dir
//! rejudge        (Downloaded) the agent, under the lock: judged again against the state as it is then
//! extract     -> Extracted   the streamed tree, or the hardened extractor on a confined thread
//! record         (Extracted) the new highest version, durable before anything is handed on
//! place          (Extracted) the tree moved to its destination
//! ```
//!
//! What a host does with a verified release between these stages (paused,
//! marked bad, up to date, rollout slot, probation) is decided by
//! `host::lifecycle`; the stages only verify and move bytes.
//!
//! A "not modified" answer never short-cuts the pipeline: it only means the
//! bytes of `latest` are the ones the host verified last time, and those
//! bytes are judged again, now, under the current host config. So an expired
//! head is refused on every poll, and a change of keys or policy re-judges it.
//! Only verified bundles are cached; a refused `latest` is fetched in full
//! again on the next poll.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::confine::{self, Confinement, ConfinementPolicy};
use crate::archive::{self, ExtractError, ExtractStats, Limits};
use crate::format::bundle::BundleError;
use crate::fsutil::{self, TempDir};
use crate::host::state::{CachedHead, DataDir, HostState, RemoteState, StateError};
use crate::store::{ETag, Fetched, ReleaseLog, StoreError, StoreErrorKind};
use crate::verify::{self, chain::Descent, Policy, Refusal, Verdict, VerifiedRelease};

/// Why a pipeline stage stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Verification refused the release (exit code 3).
    #[error("{}", .0.line())]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// `policy.confinement = "required"` and the kernel could not confine
    /// the extraction: nothing was extracted.
    #[error("refusing to extract: policy.confinement is \"required\" but {0}")]
    Unconfined(Confinement),
}

impl From<Refusal> for PipelineError {
    fn from(r: Refusal) -> Self {
        PipelineError::Refused(r)
    }
}

impl PipelineError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> PipelineError {
        let context = context.into();
        move |source| PipelineError::Io { context, source }
    }

    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            PipelineError::Refused(r) => Some(r),
            _ => None,
        }
    }

    /// The store failed (network, time-out, 5xx) rather than answered:
    /// the only kind of error that backs off.
    pub fn is_transient(&self) -> bool {
        matches!(self, PipelineError::Store(e) if e.is_transient())
    }
}

/// The bytes of `latest` to judge.
#[derive(Clone, Debug)]
pub struct HeadBytes {
    bytes: Vec<u8>,
    etag: Option<ETag>,
    /// The store said "not modified": these are the cached bytes.
    revalidated: bool,
}

impl HeadBytes {
    /// BLAKE3 of the statement the head carries, read from the envelope
    /// without verifying anything (a probation compares it with a release
    /// this host verified before; nothing else may use it).
    pub fn unverified_statement_hash(&self) -> Option<crate::format::Digest> {
        crate::format::bundle::Bundle::decode(&self.bytes)
            .ok()
            .map(|b| crate::format::Digest::of(&b.statement))
    }

    /// Whether the store answered "not modified" (the bytes are the cached,
    /// previously verified copy).
    pub fn revalidated(&self) -> bool {
        self.revalidated
    }
}

/// Stage 1: reads `latest`, conditionally when the host holds a verified copy
/// of it.
pub fn fetch_head(
    log: &ReleaseLog<'_>,
    cached: Option<&CachedHead>,
) -> Result<HeadBytes, PipelineError> {
    let etag = cached.map(|c| ETag(c.etag.clone()));
    match log.latest(etag.as_ref()) {
        Ok(Fetched::Object { bytes, etag }) => Ok(HeadBytes {
            bytes,
            etag,
            revalidated: false,
        }),
        Ok(Fetched::NotModified) => {
            // `latest` checked that a condition was sent, so `cached` is set.
            let c = cached.ok_or_else(|| {
                StoreError::new(
                    StoreErrorKind::Protocol,
                    &log.store().describe(),
                    "latest",
                    "'not modified' without a cached copy".into(),
                )
            })?;
            Ok(HeadBytes {
                bytes: c.bundle.clone(),
                etag: Some(ETag(c.etag.clone())),
                revalidated: true,
            })
        }
        Err(e) if e.kind == StoreErrorKind::TooLarge => {
            Err(Refusal::Bundle(BundleError::TooLarge).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// A verified head and what it means for this host.
#[derive(Debug)]
pub struct Judged {
    pub verdict: Verdict,
    head: HeadBytes,
}

impl Judged {
    pub fn release(&self) -> &VerifiedRelease {
        self.verdict.release()
    }

    /// The cache entry for this head, if the store gave it an ETag.
    pub fn cache_entry(&self) -> Option<CachedHead> {
        self.head.etag.as_ref().map(|e| CachedHead {
            etag: e.0.clone(),
            bundle: self.head.bytes.clone(),
        })
    }

    pub fn revalidated(&self) -> bool {
        self.head.revalidated
    }
}

/// The host's policy with the floor pinned by `npcnix state reset` applied.
pub fn effective_policy(policy: &Policy, remote: Option<&RemoteState>) -> Policy {
    let mut p = policy.clone();
    p.min_version = p.min_version.max(remote.and_then(|r| r.floor).unwrap_or(0));
    p
}

/// Stage 2: verifies the head against the host's policy and history (pure).
pub fn judge(
    policy: &Policy,
    remote: Option<&RemoteState>,
    head: HeadBytes,
    now: u64,
) -> Result<Judged, Refusal> {
    let policy = effective_policy(policy, remote);
    let seen = remote.and_then(|r| r.highest);
    let verdict = verify::verify_release(&policy, seen, &head.bytes, now)?;
    Ok(Judged { verdict, head })
}

/// A release that may be downloaded. Only [`descend`] builds one.
#[derive(Debug)]
#[non_exhaustive]
pub struct Accepted {
    pub release: VerifiedRelease,
    /// Newer than anything this host verified (recorded after extraction).
    pub new: bool,
}

/// Stage 3: with `require_chain`, checks that a new release descends from the
/// one this host holds through every intermediate release in the log.
pub fn descend(
    log: &ReleaseLog<'_>,
    policy: &Policy,
    remote: Option<&RemoteState>,
    judged: Judged,
    require_chain: bool,
    now: u64,
) -> Result<Accepted, PipelineError> {
    let new = judged.verdict.is_new();
    let release = judged.verdict.into_release();
    let seen = remote.and_then(|r| r.highest);
    if let (true, true, Some(seen)) = (require_chain, new, seen) {
        let policy = effective_policy(policy, remote);
        if let Some(mut walk) = Descent::start(seen, &release)? {
            while let Some(v) = walk.next_version() {
                let bytes = match log.release(v) {
                    Ok(Some(b)) => b,
                    Ok(None) => return Err(walk.missing(v).into()),
                    Err(e)
                        if matches!(
                            e.kind,
                            StoreErrorKind::TooLarge | StoreErrorKind::Protocol
                        ) =>
                    {
                        return Err(walk.unreadable(v, &e.detail).into())
                    }
                    Err(e) => return Err(e.into()),
                };
                walk.step(&policy, &bytes, now)?;
            }
            walk.finish(&release)?;
        }
    }
    Ok(Accepted { release, new })
}

/// A release's archive, verified: either extracted as it streamed (every
/// group checked against the signed BLAKE3 before the extractor saw it),
/// or, from a store without outboards, downloaded whole into the private
/// temp dir with its size and BLAKE3 checked.
#[derive(Debug)]
pub struct Downloaded {
    pub release: VerifiedRelease,
    pub new: bool,
    payload: Payload,
}

#[derive(Debug)]
enum Payload {
    /// The archive file (in `work`), to be extracted.
    Archive { work: TempDir, archive: PathBuf },
    /// Verified streaming: the extracted tree.
    Tree {
        tree: TempDir,
        stats: ExtractStats,
        confinement: Confinement,
    },
}

/// How a release is extracted: the bounds, the confinement the host
/// requires, and where progress goes.
#[derive(Clone, Copy)]
pub struct ExtractOptions<'a> {
    pub limits: &'a Limits,
    pub confinement: ConfinementPolicy,
    pub progress: &'a dyn crate::progress::Progress,
}

/// Stage 4: fetches the archive, never past its signed size. With the
/// archive's outboard in the store, verified streaming: each 16 KiB group
/// is checked against the signed BLAKE3 as it arrives and only then
/// extracted (on the confined thread), a broken connection resumes where
/// it broke, and the archive is never written or held whole. Without one
/// (releases published before outboards, stores that lost it), the archive
/// is downloaded whole into the private temp dir and hashed, and
/// [`extract`] extracts it after the lock is taken. A wrong outboard is a
/// refusal like wrong archive bytes, never a reason to try the other path.
pub fn download(
    log: &ReleaseLog<'_>,
    accepted: Accepted,
    opts: ExtractOptions<'_>,
    data: &DataDir,
) -> Result<Downloaded, PipelineError> {
    let aref = &accepted.release.statement().archive;
    if aref.size > opts.limits.archive_bytes {
        return Err(Refusal::ArchiveOverLimit {
            declared: aref.size,
            limit: opts.limits.archive_bytes,
        }
        .into());
    }
    // What a killed npcnix left here (a download, a tree, a build) would
    // otherwise stay for good: every kill during a download leaked up to an
    // archive's size (found by bench/soak).
    fsutil::sweep_abandoned(&data.tmp_dir())
        .map_err(PipelineError::io("removing abandoned temp dirs"))?;
    // The outboard is copied into the private temp dir and read from there
    // in order as the stream needs it: held in memory it was 0.4 % of the
    // archive (4 MiB for 1 GiB) on top of the pull's constant buffers.
    let ob_dir = TempDir::new_held_in(&data.tmp_dir(), "outboard-")
        .map_err(PipelineError::io("creating a private temp dir"))?;
    let mut ob_file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(ob_dir.path().join("outboard"))
        .map_err(PipelineError::io("creating the outboard file"))?;
    let found = match log.outboard_into(aref, &mut ob_file) {
        Ok(found) => found,
        // Longer than this archive's outboard can be: not its outboard.
        Err(e) if e.kind == StoreErrorKind::TooLarge => {
            return Err(Refusal::Archive(verify::ArchiveMismatch::Outboard {
                detail: format!(
                    "it is longer than the {} bytes an archive of {} bytes has",
                    crate::format::outboard::outboard_len(aref.size),
                    aref.size
                ),
            })
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let payload = if found {
        stream_extract(log, aref, ob_file, opts, data)?
    } else {
        drop(ob_file);
        drop(ob_dir);
        download_whole(log, aref, data)?
    };
    Ok(Downloaded {
        release: accepted.release,
        new: accepted.new,
        payload,
    })
}

fn download_whole(
    log: &ReleaseLog<'_>,
    aref: &crate::format::statement::ArchiveRef,
    data: &DataDir,
) -> Result<Payload, PipelineError> {
    let work = TempDir::new_held_in(&data.tmp_dir(), "pull-")
        .map_err(PipelineError::io("creating a private temp dir"))?;
    let archive = work.path().join("archive.tar.zst");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&archive)
        .map_err(PipelineError::io("creating the download file"))?;
    log.download(aref, &mut f)?.map_err(Refusal::Archive)?;
    Ok(Payload::Archive { work, archive })
}

/// Buffers of verified bytes in flight between the download and the
/// extractor (one being filled, the others queued or being read).
const STREAM_BUFFERS: usize = 3;

/// Verified streaming into a new tree in the private temp dir: this thread
/// reads and verifies, the extractor runs confined on its own thread and
/// reads only what was verified. Whatever fails first is the answer: a
/// mismatch or a store failure stops the extractor (it sees an error, never
/// a clean end), a refused archive stops the download.
fn stream_extract(
    log: &ReleaseLog<'_>,
    aref: &crate::format::statement::ArchiveRef,
    mut outboard: fs::File,
    opts: ExtractOptions<'_>,
    data: &DataDir,
) -> Result<Payload, PipelineError> {
    use crate::buf::AlignedBuf;
    use crate::format::outboard::HEADER_LEN;
    use crate::store::transfer::{StreamFailure, STREAM_BYTES};
    use io::{Read, Seek};
    use std::sync::mpsc;

    let read = |source| PipelineError::Io {
        context: "reading the outboard".into(),
        source,
    };
    let ob_len = outboard.seek(io::SeekFrom::End(0)).map_err(read)?;
    outboard.rewind().map_err(read)?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    (&mut outboard)
        .take(HEADER_LEN)
        .read_to_end(&mut header)
        .map_err(read)?;
    let verifier =
        verify::stream::StreamVerifier::new(aref, ob_len, &header).map_err(Refusal::Archive)?;
    let mut parents = io::BufReader::with_capacity(16 * 1024, outboard);
    let tree = TempDir::new_held_in(&data.tmp_dir(), "tree-")
        .map_err(PipelineError::io("creating the extraction dir"))?;
    // Every buffer is allocated here, on the calling thread, and the
    // channels are bounded (preallocated): the extractor's threads never
    // allocate them, so glibc gives them no arena of their own (issue 38).
    let (full, full_rx) = mpsc::sync_channel::<Option<(AlignedBuf, usize)>>(STREAM_BUFFERS);
    let (empty, empty_rx) = mpsc::sync_channel::<AlignedBuf>(STREAM_BUFFERS);
    for _ in 1..STREAM_BUFFERS {
        empty
            .send(AlignedBuf::zeroed(STREAM_BYTES))
            .map_err(|_| PipelineError::io("streaming")(io::Error::other("channel closed")))?;
    }
    let first = AlignedBuf::zeroed(STREAM_BYTES);
    let input = Verified {
        full: full_rx,
        empty,
        current: None,
        pos: 0,
        broken: false,
    };
    // No progress task of its own: extraction keeps pace with the
    // download, which the store front reports (operator commands).
    let root = tree.path().to_path_buf();
    let limits = *opts.limits;
    let required = opts.confinement;
    let (streamed, extracted) = std::thread::scope(|scope| {
        let extractor = scope.spawn(move || {
            let at = root.clone();
            confine::run_confined(root, required, move || {
                archive::extract_buffered(input, &at, &limits)
            })
        });
        let stopped = || io::Error::other("the extraction stopped");
        let streamed = log.stream(aref, verifier, &mut parents, first, &mut |buf, n| {
            full.send(Some((buf, n))).map_err(|_| stopped())?;
            empty_rx.recv().map_err(|_| stopped())
        });
        if streamed.is_err() {
            // The extractor must see an error, not the end of the archive.
            let _ = full.send(None);
        }
        drop(full);
        (streamed, extractor.join())
    });
    match streamed {
        Err(StreamFailure::Mismatch(m)) => return Err(Refusal::Archive(m).into()),
        Err(StreamFailure::Open(e)) => return Err(e.into()),
        Err(StreamFailure::Read(e)) => return Err(log.broken(&aref.object_key(), e).into()),
        Err(StreamFailure::Outboard(e)) => return Err(read(e)),
        // The extractor stopped: its result says why.
        Err(StreamFailure::Sink(_)) | Ok(()) => {}
    }
    let (joined, confinement) = extracted.map_err(|_| PipelineError::Io {
        context: "extracting".into(),
        source: io::Error::other("the extraction thread panicked"),
    })?;
    let stats = extraction_result(joined, &confinement)?;
    Ok(Payload::Tree {
        tree,
        stats,
        confinement,
    })
}

/// The extractor's input in verified streaming: buffers of verified bytes
/// in order; `None` means the download failed (an error, never an end).
struct Verified {
    full: std::sync::mpsc::Receiver<Option<(crate::buf::AlignedBuf, usize)>>,
    empty: std::sync::mpsc::SyncSender<crate::buf::AlignedBuf>,
    current: Option<(crate::buf::AlignedBuf, usize)>,
    pos: usize,
    /// The download stopped: every later read is an error too.
    broken: bool,
}

// zstd reads straight out of the verified buffers (`BufRead`): no copy into
// an input buffer of the extractor's.
impl io::BufRead for Verified {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            if self.current.as_ref().is_some_and(|(_, n)| self.pos < *n) {
                break;
            }
            if let Some((buf, _)) = self.current.take() {
                // The download may be done: the buffer is then freed.
                let _ = self.empty.send(buf);
            }
            match self.full.recv() {
                Ok(Some(next)) => {
                    self.current = Some(next);
                    self.pos = 0;
                }
                Ok(None) => {
                    self.broken = true;
                    return Err(io::Error::other("the download stopped"));
                }
                // Every verified byte was delivered (unless the download
                // stopped: then this stays an error, never an end).
                Err(_) if self.broken => return Err(io::Error::other("the download stopped")),
                Err(_) => return Ok(&[]),
            }
        }
        match &self.current {
            Some((buf, n)) => Ok(&buf[self.pos..*n]),
            None => Ok(&[]),
        }
    }

    fn consume(&mut self, amt: usize) {
        let n = self.current.as_ref().map_or(0, |(_, n)| *n);
        self.pos = (self.pos + amt).min(n);
    }
}

impl io::Read for Verified {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use io::BufRead;
        let avail = self.fill_buf()?;
        let k = avail.len().min(out.len());
        out[..k].copy_from_slice(&avail[..k]);
        self.consume(k);
        Ok(k)
    }
}

/// What the confined extraction thread returned, as the pipeline's result.
fn extraction_result(
    joined: std::thread::Result<Option<Result<ExtractStats, ExtractError>>>,
    confinement: &Confinement,
) -> Result<ExtractStats, PipelineError> {
    let extracted = joined
        .map_err(|_| PipelineError::Io {
            context: "extracting".into(),
            source: io::Error::other("the extraction thread panicked"),
        })?
        .ok_or(PipelineError::Unconfined(confinement.clone()))?;
    match extracted {
        Ok(s) => Ok(ExtractStats {
            confinement: Some(confinement.to_string()),
            ..s
        }),
        Err(ExtractError::Refused(msg)) => Err(Refusal::ArchiveContent(msg).into()),
        Err(ExtractError::Io { path, source }) => Err(PipelineError::Io {
            context: format!("extracting to {}", path.display()),
            source,
        }),
    }
}

/// Stage 4b (the agent, once it holds the data dir lock): the downloaded
/// release judged again against the host's state as it is now, since the
/// network side ran without the lock.
pub fn rejudge(
    policy: &Policy,
    remote: Option<&RemoteState>,
    downloaded: &mut Downloaded,
    now: u64,
) -> Result<(), Refusal> {
    let p = effective_policy(policy, remote);
    downloaded.new =
        verify::check_policy(&p, remote.and_then(|r| r.highest), &downloaded.release, now)?;
    // The timestamp may have expired during the download too.
    verify::check_freshness(&p, &downloaded.release, now)?;
    Ok(())
}

/// A verified release's tree, extracted into the private temp dir. Only
/// [`extract`] builds one.
#[derive(Debug)]
#[non_exhaustive]
pub struct Extracted {
    pub release: VerifiedRelease,
    pub new: bool,
    pub tree: TempDir,
    pub stats: ExtractStats,
    pub confinement: Confinement,
    /// Verified as it streamed (the store had the archive's outboard),
    /// rather than downloaded whole first.
    pub streamed: bool,
}

/// Stage 5: extracts with the hardened extractor on a thread whose writes
/// are confined to the new directory (where the kernel allows). The
/// archive bytes read are reported to `progress`. A streamed download was
/// extracted as it arrived: its tree is handed on as it is.
pub fn extract(
    downloaded: Downloaded,
    opts: ExtractOptions<'_>,
    data: &DataDir,
) -> Result<Extracted, PipelineError> {
    let (work, archive) = match downloaded.payload {
        Payload::Tree {
            tree,
            stats,
            confinement,
        } => {
            return Ok(Extracted {
                release: downloaded.release,
                new: downloaded.new,
                tree,
                stats,
                confinement,
                streamed: true,
            })
        }
        Payload::Archive { work, archive } => (work, archive),
    };
    let tree = TempDir::new_held_in(&data.tmp_dir(), "tree-")
        .map_err(PipelineError::io("creating the extraction dir"))?;
    let f = fs::File::open(&archive).map_err(PipelineError::io("reopening the download"))?;
    // Unlinked now, so its pages are freed when the extractor closes it at
    // the end of the stream, while its writing thread still writes, not
    // afterwards in series (10 ms for a 44 MB archive). Should this fail, dropping the temp dir removes it.
    let _ = fs::remove_file(&archive);
    let root = tree.path().to_path_buf();
    let task = opts.progress.start(
        "extracting",
        crate::progress::Unit::Bytes,
        Some(downloaded.release.statement().archive.size),
    );
    let f = crate::progress::CountingReader::new(f, task);
    let limits = *opts.limits;
    let (joined, confinement) = confine::run_confined(root.clone(), opts.confinement, move || {
        archive::extract(f, &root, &limits)
    });
    let stats = extraction_result(joined, &confinement)?;
    drop(work);
    Ok(Extracted {
        release: downloaded.release,
        new: downloaded.new,
        tree,
        stats,
        confinement,
        streamed: false,
    })
}

/// Stage 6: records a new release as the highest verified version for its
/// remote (atomically), before it is handed on or activated.
pub fn record(
    data: &DataDir,
    state: &mut HostState,
    extracted: &Extracted,
    now: u64,
) -> Result<(), StateError> {
    if !extracted.new {
        return Ok(());
    }
    let r = state.remote_mut(extracted.release.statement().remote.as_str());
    r.highest = Some(extracted.release.seen());
    r.verified_at = Some(now);
    data.save(state)
}

/// Moves a verified, extracted tree to `dst`: a rename when on the same file
/// system, else a copy into a hidden sibling of `dst` and a rename, so `dst`
/// appears complete or not at all.
pub fn place(tree: TempDir, dst: &Path) -> Result<(), PipelineError> {
    if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(PipelineError::io(format!("creating {}", parent.display())))?;
    }
    match fs::rename(tree.path(), dst) {
        Ok(()) => {
            tree.keep();
            if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = fsutil::sync_dir(parent);
            }
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => {
            return Err(PipelineError::Io {
                context: format!("moving the release to {}", dst.display()),
                source: e,
            })
        }
    }
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = TempDir::new_in(parent, &format!(".{name}.npcnix-")).map_err(
        PipelineError::io("creating a staging dir next to the destination"),
    )?;
    copy_tree(tree.path(), staging.path()).map_err(PipelineError::io(format!(
        "copying the release to {}",
        dst.display()
    )))?;
    fs::rename(staging.path(), dst).map_err(PipelineError::io(format!(
        "moving the release to {}",
        dst.display()
    )))?;
    staging.keep();
    let _ = fsutil::sync_dir(parent);
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    for ent in fs::read_dir(src)? {
        let ent = ent?;
        let from = ent.path();
        let to = dst.join(ent.file_name());
        let ft = ent.file_type()?;
        if ft.is_dir() {
            fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Verified;
    use crate::buf::AlignedBuf;
    use std::io::{BufRead, Read};
    use std::sync::mpsc;

    type Feed = mpsc::SyncSender<Option<(AlignedBuf, usize)>>;

    fn verified() -> (Verified, Feed, mpsc::Receiver<AlignedBuf>) {
        let (full, full_rx) = mpsc::sync_channel(4);
        let (empty, empty_rx) = mpsc::sync_channel(4);
        let v = Verified {
            full: full_rx,
            empty,
            current: None,
            pos: 0,
            broken: false,
        };
        (v, full, empty_rx)
    }

    fn buf(bytes: &[u8]) -> (AlignedBuf, usize) {
        let mut b = AlignedBuf::zeroed(16);
        b[..bytes.len()].copy_from_slice(bytes);
        (b, bytes.len())
    }

    #[test]
    fn verified_buffers_are_read_in_order_and_handed_back() {
        let (mut v, full, empty) = verified();
        full.send(Some(buf(b"abc"))).expect("send");
        full.send(Some(buf(b"defg"))).expect("send");
        drop(full);
        assert_eq!(v.fill_buf().expect("fill"), b"abc");
        v.consume(2);
        let mut out = Vec::new();
        v.read_to_end(&mut out).expect("read");
        assert_eq!(out, b"cdefg");
        assert_eq!(empty.try_iter().count(), 2, "both buffers went back");
    }

    /// A download that stopped is an error on every later read, never the
    /// end of the archive (which a reader could take for a short tar).
    #[test]
    fn stopped_download_stays_an_error_and_never_reads_as_the_end() {
        let (mut v, full, _empty) = verified();
        full.send(Some(buf(b"abc"))).expect("send");
        full.send(None).expect("send");
        drop(full);
        let mut out = [0u8; 8];
        assert_eq!(v.read(&mut out).expect("first bytes"), 3);
        assert!(v.read(&mut out).is_err());
        assert!(v.read(&mut out).is_err(), "still an error");
        assert!(v.fill_buf().is_err());
    }
}
