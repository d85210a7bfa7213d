//! The one adapter every archive download passes through, whatever the
//! backend: it refuses to read past the signed size and hashes while
//! streaming, so the archive can be checked against the statement before
//! anything is extracted.

use std::io::{self, Read};

use crate::format::statement::{ArchiveRef, Digest};
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
        if self.read < self.expected.size {
            return Err(ArchiveMismatch::Shorter {
                got: self.read,
                signed: self.expected.size,
            });
        }
        let got: Digest = self.hasher.finalize().into();
        if got != self.expected.blake3 {
            return Err(ArchiveMismatch::Hash {
                got,
                signed: self.expected.blake3,
            });
        }
        Ok(())
    }
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
/// size first, as [`BoundedHashReader`] does for streamed readers.
pub fn copy_verified<R: Read + Send, W: io::Write + ?Sized>(
    mut src: R,
    dst: &mut W,
    expected: &ArchiveRef,
) -> io::Result<Result<(), ArchiveMismatch>> {
    use crate::buf::AlignedBuf;
    use std::sync::mpsc;

    let signed = expected.size;
    std::thread::scope(|scope| {
        let (to_hash, hash_rx) = mpsc::sync_channel::<Piece>(COPY_BUFFERS);
        let (to_write, write_rx) = mpsc::sync_channel::<Piece>(COPY_BUFFERS);
        let (written, back) = mpsc::channel::<AlignedBuf>();
        let stopped = || io::Error::other("the download pipeline stopped");
        std::thread::Builder::new()
            .name("npcnix-download".into())
            .spawn_scoped(scope, move || {
                let mut read = 0u64;
                let mut allocated = 0;
                loop {
                    let mut buf = if allocated < COPY_BUFFERS {
                        allocated += 1;
                        AlignedBuf::zeroed(COPY_BYTES)
                    } else {
                        match back.recv() {
                            Ok(b) => b,
                            // The writer stopped: its error explains why.
                            Err(_) => return,
                        }
                    };
                    let got = loop {
                        match src.read(&mut buf) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            other => break other,
                        }
                    };
                    let piece = match got {
                        Ok(0) => Piece::End(read),
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
        let end = loop {
            match write_rx.recv().map_err(|_| stopped())? {
                Piece::Bytes(buf, n) => {
                    dst.write_all(&buf[..n])?;
                    // The reader may be done; the buffer is then freed.
                    let _ = written.send(buf);
                }
                Piece::End(read) => break read,
                Piece::Longer => return Ok(Err(ArchiveMismatch::Longer { signed })),
                Piece::Failed(e) => return Err(e),
            }
        };
        let got = hasher
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        if end < signed {
            return Ok(Err(ArchiveMismatch::Shorter { got: end, signed }));
        }
        if got != expected.blake3 {
            return Ok(Err(ArchiveMismatch::Hash {
                got,
                signed: expected.blake3,
            }));
        }
        Ok(Ok(()))
    })
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
}
