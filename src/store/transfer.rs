//! The one adapter every archive download passes through, whatever the
//! backend: it refuses to read past the signed size and hashes while
//! streaming, so the archive can be checked against the statement before
//! anything is extracted.

use std::io::{self, Read};

use crate::format::statement::{ArchiveRef, Digest};
pub use crate::verify::ArchiveMismatch;

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
