//! Byte buffers that start on a cache-line boundary, for the bulk copies of
//! a pull (download, decompression, extraction).
//!
//! Why they exist: large copies on x86-64 use `rep movsb`, both in the
//! kernel (`read(2)` copying out of the page cache) and in glibc's
//! `memmove`, and on the AMD EPYC machines npcnix is benchmarked on it is
//! many times slower when the destination is not 64-byte aligned. Measured
//! there (`bench/analysis.md`): `read(2)` of a cached 200 MB file into a
//! buffer 16 bytes past a page boundary ran at 1.4 GB/s against 5 GB/s at
//! the boundary, and a 64 KiB `memmove` at 1.8 GB/s against 32 GB/s. A
//! `Vec<u8>` of that size comes from `mmap` through malloc and starts 16
//! bytes into its mapping: exactly the slow case.
//!
//! Pure: no I/O of its own ([`AlignedReader`] only forwards to the reader
//! it wraps).

use std::io::{self, BufRead, Read};
use std::ops::{Deref, DerefMut};

/// The alignment of every [`AlignedBuf`]: one cache line.
pub const ALIGN: usize = 64;

/// A zeroed, fixed-length byte buffer whose first byte is [`ALIGN`]-aligned.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + ALIGN - 1];
        // `align_offset` may in principle decline (usize::MAX); the buffer
        // is then merely slower, never wrong.
        let start = match storage.as_ptr().align_offset(ALIGN) {
            off if off < ALIGN => off,
            _ => 0,
        };
        AlignedBuf {
            storage,
            start,
            len,
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// `io::BufReader` over an [`AlignedBuf`]: every refill `read(2)`s into an
/// aligned buffer (std's `BufReader` cannot be given one).
pub struct AlignedReader<R> {
    inner: R,
    buf: AlignedBuf,
    pos: usize,
    filled: usize,
}

impl<R: Read> AlignedReader<R> {
    pub fn with_capacity(capacity: usize, inner: R) -> AlignedReader<R> {
        AlignedReader {
            inner,
            buf: AlignedBuf::zeroed(capacity),
            pos: 0,
            filled: 0,
        }
    }

    /// The reader, and whatever was buffered but not read is dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for AlignedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // A read at least as large as the buffer, with nothing buffered,
        // goes straight to the caller's memory (as std's BufReader does).
        if self.pos == self.filled && out.len() >= self.buf.len() {
            return self.inner.read(out);
        }
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for AlignedReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.filled {
            self.filled = self.inner.read(&mut self.buf)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_cache_line_whatever_their_size() {
        for len in [0, 1, 15, 64, 4096, 64 << 10, 256 << 10] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            if len > 0 {
                assert_eq!(b.as_ptr() as usize % ALIGN, 0, "len {len}");
            }
        }
    }

    #[test]
    fn the_reader_returns_the_stream_unchanged_in_small_and_large_reads() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for read_size in [1, 100, 4096, 5000, 200_000] {
            let mut r = AlignedReader::with_capacity(4096, &data[..]);
            let mut out = Vec::new();
            let mut buf = vec![0u8; read_size];
            loop {
                let n = r.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, data, "read size {read_size}");
        }
        // Through BufRead, as the zstd decoder reads it.
        let mut r = AlignedReader::with_capacity(1000, &data[..]);
        let mut out = Vec::new();
        loop {
            let got = r.fill_buf().expect("fill").to_vec();
            if got.is_empty() {
                break;
            }
            let take = got.len().min(333);
            out.extend_from_slice(&got[..take]);
            r.consume(take);
        }
        assert_eq!(out, data);
    }
}
