//! The one adapter every archive download passes through, whatever the
//! backend: it refuses to read past the signed size and hashes while
//! streaming, so the archive can be checked against the statement before
//! anything is extracted.

use std::io::{self, Read};

use crate::format::statement::{ArchiveRef, Digest};
use crate::verify::stream::Need;
pub use crate::verify::ArchiveMismatch;

/// The slowest transfer npcnix waits for, by default: an object's overall
/// deadline is [`DEADLINE_BASE`] plus its size at this rate. Together with the
/// idle read time-out it bounds how long a store that drips one byte at a
/// time can hold a poll (and, before the lock was moved, the data dir).
pub const DEFAULT_MIN_RATE_BYTES_PER_SEC: u64 = 32 * 1024;
/// Fixed allowance in every deadline (connection, TLS, slow first byte).
pub const DEADLINE_BASE: std::time::Duration = std::time::Duration::from_secs(60);

/// The overall deadline for reading `size` bytes at no less than `min_rate`
/// bytes per second.
pub fn deadline_for(size: u64, min_rate: u64) -> std::time::Duration {
    DEADLINE_BASE.saturating_add(std::time::Duration::from_secs(size / min_rate.max(1)))
}

/// Fails a read once the overall deadline has passed (checked on every
/// read; the backend's idle time-out covers a read that never returns).
pub struct DeadlineReader<R> {
    inner: R,
    /// `None`: beyond what the clock can represent, i.e. no deadline.
    until: Option<std::time::Instant>,
    budget: std::time::Duration,
}

impl<R: Read> DeadlineReader<R> {
    pub fn new(inner: R, budget: std::time::Duration) -> Self {
        DeadlineReader {
            inner,
            until: std::time::Instant::now().checked_add(budget),
            budget,
        }
    }
}

impl<R: Read> Read for DeadlineReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.until.is_some_and(|u| std::time::Instant::now() > u) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the transfer took longer than its deadline of {} s (slower than the minimum rate)",
                    self.budget.as_secs()
                ),
            ));
        }
        self.inner.read(buf)
    }
}

/// Reads at most `expected.size` bytes from `inner`, hashing them; one byte
/// more is an error ([`ArchiveMismatch::Longer`]) raised as soon as it
/// arrives, so a hostile store cannot make us read (or store) endless data.
pub struct BoundedHashReader<R> {
    inner: R,
    expected: ArchiveRef,
    read: u64,
    hasher: blake3::Hasher,
}

impl<R: Read> BoundedHashReader<R> {
    pub fn new(inner: R, expected: ArchiveRef) -> Self {
        BoundedHashReader {
            inner,
            expected,
            read: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Checks size and hash once the stream is exhausted.
    pub fn finish(self) -> Result<(), ArchiveMismatch> {
        check_complete(self.read, self.hasher.finalize().into(), &self.expected)
    }
}

/// The verdict on a stream that ended after `read` bytes (never more than
/// the signed size) hashing to `got`.
fn check_complete(read: u64, got: Digest, expected: &ArchiveRef) -> Result<(), ArchiveMismatch> {
    if read < expected.size {
        return Err(ArchiveMismatch::Shorter {
            got: read,
            signed: expected.size,
        });
    }
    if got != expected.blake3 {
        return Err(ArchiveMismatch::Hash {
            got,
            signed: expected.blake3,
        });
    }
    Ok(())
}

/// The io::Error payload used to signal an over-long stream.
#[derive(Debug)]
pub struct TooLong(pub u64);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more data than the signed size of {} bytes", self.0)
    }
}

impl std::error::Error for TooLong {}

impl<R: Read> Read for BoundedHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.read + n as u64 > self.expected.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TooLong(self.expected.size),
            ));
        }
        self.read += n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Bytes per read of a download.
const COPY_BYTES: usize = 256 << 10;
/// Buffers a download cycles through (reading, hashing, writing, and one
/// spare, so no stage waits for a buffer while the others work).
const COPY_BUFFERS: usize = 4;

/// What the reading thread hands down the pipeline, in stream order.
enum Piece {
    Bytes(crate::buf::AlignedBuf, usize),
    /// The source ended after exactly this many bytes (at most the signed
    /// size).
    End(u64),
    /// The source sent more than the signed size; nothing past it was read
    /// into the pipeline.
    Longer,
    Failed(io::Error),
}

/// Copies `src` to `dst`, at most the signed size, and verifies size and
/// BLAKE3 once the stream ends. Returns `Ok(Err(mismatch))` for a
/// verification failure and `Err(io)` for a transport or local I/O
/// failure, so callers can tell "refuse" from "retry".
///
/// Three stages on three threads, joined by bounded channels: a reading
/// thread (which stops at the signed size), a hashing thread, and the
/// calling thread, which writes. In series, read + hash + write of a large
/// archive from a local store was a third of a pull; pipelined, the
/// slowest stage (the write, where the kernel allocates the page cache)
/// sets the pace. Every byte written has been counted against the signed
/// size first, as [`BoundedHashReader`] does for streamed readers, and no
/// read asks for more than one byte past it. When the writer fails or the
/// source sends too much, the reading thread starts no further read; one
/// already under way (bounded by the store's time-outs) is waited for.
pub fn copy_verified<R: Read + Send, W: io::Write + ?Sized>(
    mut src: R,
    dst: &mut W,
    expected: &ArchiveRef,
) -> io::Result<Result<(), ArchiveMismatch>> {
    use crate::buf::AlignedBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    let signed = expected.size;
    // Set by the writer when it gives up: the reader starts no new read.
    let stop = AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| {
        let (to_hash, hash_rx) = mpsc::sync_channel::<Piece>(COPY_BUFFERS);
        let (to_write, write_rx) = mpsc::sync_channel::<Piece>(COPY_BUFFERS);
        // Every buffer is allocated here, on the calling thread, and the
        // channels are bounded (preallocated): the helper threads never call
        // malloc, so glibc gives them no arena of their own, which in a
        // long-running agent kept freed buffers resident (found by
        // bench/soak: +1.4 MiB over 60 polls).
        let stopped = || io::Error::other("the download pipeline stopped");
        let (written, back) = mpsc::sync_channel::<AlignedBuf>(COPY_BUFFERS);
        for _ in 0..COPY_BUFFERS {
            written
                .send(AlignedBuf::zeroed(COPY_BYTES))
                .map_err(|_| stopped())?;
        }
        let reader = std::thread::Builder::new()
            .name("npcnix-download".into())
            .spawn_scoped(scope, move || {
                let mut read = 0u64;
                loop {
                    let mut buf = match back.recv() {
                        Ok(b) => b,
                        // The writer stopped: its error explains why.
                        Err(_) => return,
                    };
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // At most one byte past the signed size: enough to
                    // tell a longer stream, nothing more.
                    let want = usize::try_from((signed - read).saturating_add(1))
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let got = loop {
                        match src.read(&mut buf[..want]) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            other => break other,
                        }
                    };
                    let piece = match got {
                        Ok(0) => Piece::End(read),
                        Ok(n) if n > want => Piece::Failed(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the store's reader returned more bytes than asked for",
                        )),
                        Ok(n) if read + n as u64 > signed => Piece::Longer,
                        Ok(n) => {
                            read += n as u64;
                            Piece::Bytes(buf, n)
                        }
                        Err(e) => Piece::Failed(e),
                    };
                    let last = !matches!(piece, Piece::Bytes(..));
                    if to_hash.send(piece).is_err() || last {
                        return;
                    }
                }
            })?;
        let hasher = std::thread::Builder::new()
            .name("npcnix-blake3".into())
            .spawn_scoped(scope, move || {
                let mut h = blake3::Hasher::new();
                for piece in hash_rx {
                    if let Piece::Bytes(buf, n) = &piece {
                        h.update(&buf[..*n]);
                    }
                    let last = !matches!(piece, Piece::Bytes(..));
                    if to_write.send(piece).is_err() || last {
                        break;
                    }
                }
                Digest::from(h.finalize())
            })?;
        let outcome = (|| loop {
            match write_rx.recv().map_err(|_| stopped())? {
                Piece::Bytes(buf, n) => {
                    dst.write_all(&buf[..n])?;
                    // The reader may be done; the buffer is then freed.
                    let _ = written.send(buf);
                }
                Piece::End(read) => return Ok(Ok(read)),
                Piece::Longer => return Ok(Err(ArchiveMismatch::Longer { signed })),
                Piece::Failed(e) => return Err(e),
            }
        })();
        // Whatever happened, stop the reader and wait for both threads
        // here, so a panic in either is an error, not a panic of the scope.
        stop.store(true, Ordering::Relaxed);
        drop(written);
        drop(write_rx);
        let read_ok = reader.join().is_ok();
        let hashed = hasher.join();
        let end = match outcome? {
            Ok(end) => end,
            Err(mismatch) => return Ok(Err(mismatch)),
        };
        if !read_ok {
            return Err(io::Error::other("the download thread panicked"));
        }
        let got = hashed.map_err(|_| io::Error::other("the hashing thread panicked"))?;
        Ok(check_complete(end, got, expected))
    })
}

/// Bytes of verified archive handed on at a time by [`stream_verified`]
/// (whole groups).
pub const STREAM_BYTES: usize = 8 * crate::format::outboard::GROUP_LEN as usize;
/// Most times a verified stream is opened again after it broke.
pub const STREAM_RESUMES: u32 = 3;

/// Why a verified stream stopped.
#[derive(Debug)]
pub enum StreamFailure {
    /// The bytes (or the outboard) are not the signed archive.
    Mismatch(ArchiveMismatch),
    /// The outboard (a local copy, its length already checked) could not
    /// be read.
    Outboard(io::Error),
    /// The store could not be read (after the resumptions allowed, or past
    /// the deadline).
    Read(io::Error),
    /// Opening the object (again) failed.
    Open(super::StoreError),
    /// The receiving side stopped taking bytes.
    Sink(io::Error),
}

/// Verified streaming (issue 36): reads the outboard's parents from
/// `outboard` (past its header) and the archive's groups as `verifier`
/// asks, checks each before anything below it is trusted or handed on,
/// and hands `sink` full buffers of verified bytes (it returns an empty
/// buffer to fill next). `open(from)` opens the object at byte `from`: a
/// stream that breaks is opened again at the first group not yet verified
/// (a Range request), at most `max_resumes` times (a transient failure of
/// such a re-open counts as one) and never past `deadline`. Exactly the signed size is read: bytes past it are never
/// asked for.
pub fn stream_verified(
    open: &mut dyn FnMut(u64) -> Result<Box<dyn Read + Send>, super::StoreError>,
    max_resumes: u32,
    mut verifier: crate::verify::stream::StreamVerifier,
    outboard: &mut dyn Read,
    deadline: std::time::Duration,
    mut buf: crate::buf::AlignedBuf,
    sink: &mut dyn FnMut(crate::buf::AlignedBuf, usize) -> io::Result<crate::buf::AlignedBuf>,
) -> Result<(), StreamFailure> {
    let started = std::time::Instant::now();
    let remaining = || deadline.saturating_sub(started.elapsed());
    let signed = verifier.size();
    let short_buffer = |b: &crate::buf::AlignedBuf| {
        (b.len() < crate::format::outboard::GROUP_LEN as usize).then(|| {
            StreamFailure::Sink(io::Error::other(format!(
                "a stream buffer of {} bytes is smaller than a group",
                b.len()
            )))
        })
    };
    if let Some(e) = short_buffer(&buf) {
        return Err(e);
    }
    // Opened once the first group's parents checked out: an outboard that
    // is not the signed tree's is refused before the archive is asked for.
    let mut src: Option<DeadlineReader<Box<dyn Read + Send>>> = None;
    let mut resumes = 0;
    // buf[..filled] is verified; buf[filled..filled + ahead] was read in the
    // same read as the group being checked (whole groups, not yet verified,
    // never handed on), and `broke` is why that read stopped short.
    let mut filled = 0usize;
    let mut ahead = 0usize;
    let mut broke: Option<io::Error> = None;
    // The last stream ended cleanly before its group did: the object is
    // shorter than signed (unless a resumed read finds more).
    let mut ended_short = false;
    let mut parent = [0u8; crate::format::outboard::PARENT_LEN as usize];
    loop {
        let group = match verifier.need() {
            Need::Nothing => break,
            Need::Group(g) => g,
            Need::Parent => {
                outboard
                    .read_exact(&mut parent)
                    .map_err(StreamFailure::Outboard)?;
                verifier.parent(&parent).map_err(StreamFailure::Mismatch)?;
                continue;
            }
        };
        if group.len == 0 {
            // The empty archive: nothing to ask the store for.
            verifier.check(&[]).map_err(StreamFailure::Mismatch)?;
            continue;
        }
        if ahead == 0 && broke.is_none() {
            if filled + group.len > buf.len() {
                buf = sink(buf, filled).map_err(StreamFailure::Sink)?;
                filled = 0;
                if let Some(e) = short_buffer(&buf) {
                    return Err(e);
                }
            }
            let reader = match &mut src {
                Some(r) => r,
                None => match open(group.offset) {
                    Ok(r) => src.insert(DeadlineReader::new(r, remaining())),
                    // Asked for bytes past the object's end (HTTP 416, S3
                    // InvalidRange) after it ended there: it is short.
                    Err(e) if ended_short && !e.is_transient() => {
                        return Err(StreamFailure::Mismatch(ArchiveMismatch::Shorter {
                            got: group.offset,
                            signed,
                        }))
                    }
                    // Opening again after a break failed for a cause that
                    // may pass (a reset, a 503): one more resumption, as a
                    // read that broke would be, keeping what was verified.
                    Err(e)
                        if e.is_transient()
                            && resumes > 0
                            && resumes < max_resumes
                            && !remaining().is_zero() =>
                    {
                        resumes += 1;
                        continue;
                    }
                    Err(e) => return Err(StreamFailure::Open(e)),
                },
            };
            // As many whole groups as the buffer has room for, in one read
            // straight into it (no copy through a reader's own buffer), and
            // never a byte past the signed size.
            let span = read_span(buf.len() - filled, signed - group.offset).max(group.len);
            let (n, stopped) = read_some(reader, &mut buf[filled..filled + span]);
            ahead = n;
            ended_short = n < span && stopped.is_none();
            broke = match stopped {
                Some(e) => Some(e),
                None if n < span => Some(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the archive ended after {} of its signed {signed} bytes",
                        group.offset + n as u64
                    ),
                )),
                None => None,
            };
        }
        if ahead >= group.len {
            verifier
                .check(&buf[filled..filled + group.len])
                .map_err(StreamFailure::Mismatch)?;
            filled += group.len;
            ahead -= group.len;
            continue;
        }
        // The read stopped inside this group: what arrived of it is dropped
        // and the stream opened again here, unless that was tried enough or
        // time is up.
        ahead = 0;
        let e = broke
            .take()
            .unwrap_or_else(|| io::Error::other("the read stopped without a cause"));
        if resumes >= max_resumes || remaining().is_zero() {
            if ended_short {
                return Err(StreamFailure::Mismatch(ArchiveMismatch::Shorter {
                    got: group.offset,
                    signed,
                }));
            }
            return Err(StreamFailure::Read(e));
        }
        resumes += 1;
        src = None;
    }
    if filled > 0 {
        sink(buf, filled).map_err(StreamFailure::Sink)?;
    }
    // The stream must end here, as the whole-archive download checks: one
    // byte more is refused. (Reading the end also lets the fetch worker
    // finish its stream cleanly instead of being stopped mid-answer.) A
    // failure to read it changes nothing: every signed byte is verified.
    if let Some(r) = &mut src {
        if read_full(r, &mut [0u8; 1]).is_ok_and(|n| n > 0) {
            return Err(StreamFailure::Mismatch(ArchiveMismatch::Longer { signed }));
        }
    }
    Ok(())
}

/// How many bytes to read at once into `room` bytes of buffer when
/// `left` signed bytes are still to come: whole groups only (each group is
/// then checked from the buffer), or the rest of the archive.
fn read_span(room: usize, left: u64) -> usize {
    let group = crate::format::outboard::GROUP_LEN as usize;
    let whole = room - room % group;
    usize::try_from(left).map_or(whole, |left| whole.min(left))
}

/// Reads until `buf` is full, the stream ends or fails; returns how much
/// arrived and, if it failed, why (the bytes before the failure count).
fn read_some(src: &mut dyn Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

/// Reads until `buf` is full or the stream ends; returns how much arrived.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aref(data: &[u8]) -> ArchiveRef {
        ArchiveRef {
            blake3: Digest::of(data),
            size: data.len() as u64,
        }
    }

    #[test]
    fn a_dripping_store_hits_the_deadline() {
        let mut r = DeadlineReader::new(&b"slow"[..], std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let e = r.read(&mut [0u8; 4]).expect_err("past the deadline");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(deadline_for(0, 1), DEADLINE_BASE);
        assert_eq!(
            deadline_for(64 * 1024 * 100, 64 * 1024),
            DEADLINE_BASE + std::time::Duration::from_secs(100)
        );
    }

    #[test]
    fn exact_archive_passes() {
        let mut out = Vec::new();
        let r = copy_verified(&b"hello"[..], &mut out, &aref(b"hello")).expect("io");
        assert_eq!(r, Ok(()));
        assert_eq!(out, b"hello");
    }

    #[test]
    fn endless_data_is_cut_at_the_signed_size() {
        let endless = io::repeat(b'x');
        let mut out = Vec::new();
        let r = copy_verified(endless, &mut out, &aref(b"hello")).expect("io");
        assert_eq!(r, Err(ArchiveMismatch::Longer { signed: 5 }));
        assert!(out.len() <= 5);
    }

    #[test]
    fn short_and_tampered_archives_are_refused() {
        let mut out = Vec::new();
        let r = copy_verified(&b"hell"[..], &mut out, &aref(b"hello")).expect("io");
        assert!(matches!(
            r,
            Err(ArchiveMismatch::Shorter { got: 4, signed: 5 })
        ));
        let r = copy_verified(&b"jello"[..], &mut Vec::new(), &aref(b"hello")).expect("io");
        assert!(matches!(r, Err(ArchiveMismatch::Hash { .. })));
    }

    /// Several MiB: many buffers, each recycled through all three threads.
    fn big(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect()
    }

    /// A source that hands out at most `step` bytes per read, counting
    /// its reads and failing with `fail` after `fail_after` bytes.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        fail_after: Option<usize>,
    }

    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.fail_after.is_some_and(|f| self.pos >= f) {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "store gone"));
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn source(data: Vec<u8>, step: usize) -> Source {
        Source {
            data,
            pos: 0,
            step,
            reads: Default::default(),
            fail_after: None,
        }
    }

    #[test]
    fn a_multi_buffer_archive_arrives_byte_for_byte_in_odd_sized_reads() {
        let data = big((5 << 20) + 12_345);
        for step in [1000, 64 << 10, 1 << 20] {
            let mut out = Vec::new();
            let r = copy_verified(source(data.clone(), step), &mut out, &aref(&data)).expect("io");
            assert_eq!(r, Ok(()), "step {step}");
            assert!(out == data, "step {step}: the copy differs");
        }
    }

    #[test]
    fn a_byte_flipped_deep_inside_a_large_archive_is_refused() {
        let data = big(3 << 20);
        let mut evil = data.clone();
        evil[(2 << 20) + 7] ^= 1;
        let r = copy_verified(source(evil, 256 << 10), &mut Vec::new(), &aref(&data)).expect("io");
        assert!(matches!(r, Err(ArchiveMismatch::Hash { .. })));
    }

    #[test]
    fn a_store_appending_data_after_a_large_archive_is_cut_one_byte_past_it() {
        let data = big(1 << 20);
        let mut longer = data.clone();
        longer.extend_from_slice(&big(1 << 20));
        let mut out = Vec::new();
        let r = copy_verified(source(longer, 300 << 10), &mut out, &aref(&data)).expect("io");
        assert_eq!(r, Err(ArchiveMismatch::Longer { signed: 1 << 20 }));
        assert!(out.len() <= 1 << 20, "wrote {} bytes", out.len());
        assert!(out[..] == data[..out.len()]);
    }

    #[test]
    fn a_store_failing_mid_stream_is_an_io_error_not_a_mismatch() {
        let data = big(2 << 20);
        let mut src = source(data.clone(), 256 << 10);
        src.fail_after = Some(1 << 20);
        let e = copy_verified(src, &mut Vec::new(), &aref(&data)).expect_err("io error");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    /// A local write that fails (disk full) ends the download: the error
    /// is returned and the reading thread stops soon after, instead of
    /// reading the rest of the archive.
    #[test]
    fn a_failing_local_write_stops_the_download() {
        struct Full(usize);
        impl io::Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = big(64 << 20);
        let src = source(data.clone(), 256 << 10);
        let reads = std::sync::Arc::clone(&src.reads);
        let e = copy_verified(src, &mut Full(1 << 20), &aref(&data)).expect_err("disk full");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let n = reads.load(std::sync::atomic::Ordering::Relaxed);
        // 1 MiB written, then at most the buffers in flight were read.
        assert!(n <= 4 + COPY_BUFFERS + 2, "{n} reads of 256 KiB");
    }

    /// An in-memory object served from any offset; `cuts` are how many
    /// bytes each successive open delivers before it breaks.
    fn serve<'a>(
        data: &'a [u8],
        cuts: &'a std::cell::RefCell<Vec<usize>>,
        opened: &'a std::cell::RefCell<Vec<u64>>,
    ) -> impl FnMut(u64) -> Result<Box<dyn Read + Send>, crate::store::StoreError> + 'a {
        move |from| {
            opened.borrow_mut().push(from);
            let rest = data[from as usize..].to_vec();
            let cut = if cuts.borrow().is_empty() {
                None
            } else {
                Some(cuts.borrow_mut().remove(0))
            };
            Ok(match cut {
                None => Box::new(io::Cursor::new(rest)),
                Some(n) => {
                    Box::new(io::Cursor::new(rest[..n.min(rest.len())].to_vec()).chain(Broken))
                }
            })
        }
    }

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        }
    }

    fn run(
        signed: &[u8],
        served: &[u8],
        cuts: Vec<usize>,
    ) -> (Result<(), StreamFailure>, Vec<u8>, Vec<u64>) {
        let cuts = std::cell::RefCell::new(cuts);
        let opened = std::cell::RefCell::new(Vec::new());
        let (r, out) = stream(signed, &mut serve(served, &cuts, &opened), STREAM_BYTES);
        (r, out, opened.into_inner())
    }

    /// Streams the archive `signed` (with its outboard) from what `open`
    /// serves through a buffer of `buf_len` bytes: the result and every
    /// byte handed on.
    fn stream(
        signed: &[u8],
        open: &mut dyn FnMut(u64) -> Result<Box<dyn Read + Send>, crate::store::StoreError>,
        buf_len: usize,
    ) -> (Result<(), StreamFailure>, Vec<u8>) {
        let ob = crate::format::outboard::of(signed).bytes;
        let (header, mut parents) = ob.split_at(crate::format::outboard::HEADER_LEN as usize);
        let verifier =
            crate::verify::stream::StreamVerifier::new(&aref(signed), ob.len() as u64, header)
                .expect("verifier");
        let mut out = Vec::new();
        let r = stream_verified(
            open,
            STREAM_RESUMES,
            verifier,
            &mut parents,
            std::time::Duration::from_secs(60),
            crate::buf::AlignedBuf::zeroed(buf_len),
            &mut |buf, n| {
                out.extend_from_slice(&buf[..n]);
                Ok(buf)
            },
        );
        (r, out)
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 256) as u8).collect()
    }

    #[test]
    fn verified_stream_hands_on_exactly_the_signed_bytes() {
        for n in [
            0usize,
            1,
            16384,
            16385,
            200_000,
            STREAM_BYTES,
            STREAM_BYTES + 1,
        ] {
            let d = bytes(n);
            let (r, out, opened) = run(&d, &d, vec![]);
            assert!(r.is_ok(), "length {n}: {r:?}");
            assert!(out == d, "length {n}");
            assert_eq!(opened, if n == 0 { vec![] } else { vec![0] }, "length {n}");
        }
    }

    /// Records the offset and length of every read asked of it.
    struct Recorded {
        data: io::Cursor<Vec<u8>>,
        asked: std::sync::Arc<std::sync::Mutex<Vec<(u64, usize)>>>,
    }
    impl Read for Recorded {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let at = self.data.position();
            self.asked.lock().expect("lock").push((at, buf.len()));
            self.data.read(buf)
        }
    }

    #[test]
    fn verified_stream_reads_whole_buffers_and_never_asks_past_the_signed_size() {
        for n in [1usize, 16_385, STREAM_BYTES, 3 * STREAM_BYTES + 100] {
            let d = bytes(n);
            // The store holds more than was signed: none of it is asked for
            // before the single byte that proves the object too long.
            let mut served = d.clone();
            served.extend_from_slice(&[7; 100]);
            let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let (r, out) = stream(
                &d,
                &mut |_| {
                    Ok(Box::new(Recorded {
                        data: io::Cursor::new(served.clone()),
                        asked: std::sync::Arc::clone(&asked),
                    }))
                },
                STREAM_BYTES,
            );
            assert!(
                matches!(
                    r,
                    Err(StreamFailure::Mismatch(ArchiveMismatch::Longer { .. }))
                ),
                "length {n}: {r:?}"
            );
            assert!(out == d, "length {n}: exactly the signed bytes handed on");
            let asked = asked.lock().expect("lock").clone();
            let (probe, reads) = asked.split_last().expect("reads");
            assert_eq!(
                *probe,
                (n as u64, 1),
                "length {n}: one byte past the end, last"
            );
            for &(at, len) in reads {
                assert!(
                    at + len as u64 <= n as u64,
                    "length {n}: read {len} at {at}"
                );
            }
            // Whole buffers at once (no 16 KiB reads through a copy).
            assert_eq!(
                reads.len(),
                n.div_ceil(STREAM_BYTES),
                "length {n}: {reads:?}"
            );
        }
    }

    #[test]
    fn a_stream_buffer_smaller_than_a_group_is_an_error_not_a_panic() {
        let d = bytes(100_000);
        let (r, out) = stream(&d, &mut |_| Ok(Box::new(io::Cursor::new(d.clone()))), 1024);
        assert!(matches!(r, Err(StreamFailure::Sink(_))), "{r:?}");
        assert!(out.is_empty());
    }

    #[test]
    fn broken_stream_resumes_at_the_first_unverified_group_a_bounded_number_of_times() {
        let d = bytes(200_000);
        let (r, out, opened) = run(&d, &d, vec![20_000, 50_000]);
        assert!(r.is_ok(), "{r:?}");
        assert!(out == d);
        // 20,000 bytes: group 0 verified; from 16,384 another 50,000: up to
        // 65,536 verified.
        assert_eq!(opened, [0, 16_384, 65_536]);
        let (r, _, opened) = run(&d, &d, vec![20_000; 10]);
        assert!(matches!(r, Err(StreamFailure::Read(_))), "{r:?}");
        assert_eq!(opened.len(), 1 + STREAM_RESUMES as usize);
    }

    /// A stream that broke is opened again; when that open fails for a
    /// transient cause (a reset, a 503), it is one more resumption (the
    /// verified groups kept), not the end of the download; past the
    /// resumptions allowed it is the open's error.
    #[test]
    fn a_transient_failure_to_open_a_broken_stream_again_uses_a_resumption() {
        let d = bytes(200_000);
        let transient = || {
            crate::store::StoreError::new(
                crate::store::StoreErrorKind::Transient,
                "test store",
                "archive",
                "connection reset".into(),
            )
        };
        for fails in [1usize, 2, 5] {
            let opened = std::cell::RefCell::new(Vec::new());
            let (r, out) = stream(
                &d,
                &mut |from| {
                    let n = opened.borrow().len();
                    opened.borrow_mut().push(from);
                    if n == 0 {
                        // 20,000 bytes, then the connection breaks.
                        Ok(Box::new(
                            io::Cursor::new(d[..20_000].to_vec()).chain(Broken),
                        ))
                    } else if n <= fails {
                        Err(transient())
                    } else {
                        Ok(Box::new(io::Cursor::new(d[from as usize..].to_vec())))
                    }
                },
                STREAM_BYTES,
            );
            let opened = opened.into_inner();
            // The break is one resumption, each failed open one more.
            if fails < STREAM_RESUMES as usize {
                assert!(r.is_ok(), "{fails} failed opens: {r:?}");
                assert!(out == d, "{fails} failed opens");
                // Every later open starts at the first unverified group.
                assert!(opened[1..].iter().all(|&o| o == 16_384), "{opened:?}");
            } else {
                assert!(matches!(r, Err(StreamFailure::Open(_))), "{fails}: {r:?}");
                assert_eq!(opened.len(), 1 + STREAM_RESUMES as usize, "{opened:?}");
            }
        }
    }

    #[test]
    fn store_serving_more_than_the_signed_size_is_refused_at_the_end() {
        let d = bytes(100_000);
        let mut longer = d.clone();
        longer.push(0);
        let (r, out, _) = run(&d, &longer, vec![]);
        assert!(
            matches!(
                r,
                Err(StreamFailure::Mismatch(ArchiveMismatch::Longer { .. }))
            ),
            "{r:?}"
        );
        assert!(out == d, "only verified bytes were handed on");
    }

    #[test]
    fn store_serving_a_truncated_archive_is_refused_as_shorter() {
        let d = bytes(100_000);
        let (r, out, _) = run(&d, &d[..70_000], vec![]);
        assert!(
            matches!(
                r,
                Err(StreamFailure::Mismatch(ArchiveMismatch::Shorter {
                    got: 65_536,
                    ..
                }))
            ),
            "{r:?}"
        );
        assert!(
            out.len() <= 65_536 && out[..] == d[..out.len()],
            "only verified bytes"
        );
    }

    #[test]
    fn store_flipping_a_byte_stops_the_stream_at_that_group() {
        let d = bytes(100_000);
        let mut bad = d.clone();
        bad[40_000] ^= 1;
        let (r, out, _) = run(&d, &bad, vec![]);
        assert!(
            matches!(
                r,
                Err(StreamFailure::Mismatch(ArchiveMismatch::Subtree {
                    start: 32_768,
                    ..
                }))
            ),
            "{r:?}"
        );
        assert!(out.len() <= 32_768, "nothing from the bad group on");
    }
}
