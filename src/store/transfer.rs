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

/// Copies `src` to `dst` through the adapter and verifies the result.
/// Returns `Ok(Err(mismatch))` for a verification failure and `Err(io)` for
/// a transport or local I/O failure, so callers can tell "refuse" from
/// "retry".
pub fn copy_verified<R: Read, W: io::Write + ?Sized>(
    src: R,
    dst: &mut W,
    expected: &ArchiveRef,
) -> io::Result<Result<(), ArchiveMismatch>> {
    let mut rd = BoundedHashReader::new(src, expected.clone());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match rd.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if e.get_ref().is_some_and(|inner| inner.is::<TooLong>()) {
                    return Ok(Err(ArchiveMismatch::Longer {
                        signed: expected.size,
                    }));
                }
                return Err(e);
            }
        };
        dst.write_all(&buf[..n])?;
    }
    Ok(rd.finish())
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
