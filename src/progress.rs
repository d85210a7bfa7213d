//! Progress of long operations (packing, uploads, downloads, extraction),
//! reported to whoever drives the library. The library never prints: the
//! CLI passes in a [`Progress`] that draws on a terminal; everything else
//! (the agent, tests) passes [`silent`], which does nothing.
//!
//! The pure core (`format`, `verify`) takes no progress: it does no I/O and
//! finishes in microseconds.

use std::io::{self, Read, Write};
use std::sync::Arc;

/// What a task counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (transfers, extraction of an archive).
    Bytes,
    /// Files or entries, with the bytes they hold as a second count
    /// (packing).
    Entries,
    /// Nothing countable: only that the task is still running (key
    /// derivation).
    Spinner,
}

/// Something that shows progress.
pub trait Progress: Send + Sync {
    /// A task starts: `label` is for people ("packing", "uploading
    /// archives/ab12…"), `total` in `unit`s if known. The task ends when
    /// the returned handle is dropped.
    fn start(&self, label: &str, unit: Unit, total: Option<u64>) -> Box<dyn Task>;
}

/// One running task. Dropping it ends the task.
pub trait Task: Send + Sync {
    /// `units` more of the task's unit are done, and `bytes` more bytes
    /// (for [`Unit::Bytes`] the two are the same count).
    fn advance(&self, units: u64, bytes: u64);
}

struct Silent;

struct NoTask;

impl Progress for Silent {
    fn start(&self, _: &str, _: Unit, _: Option<u64>) -> Box<dyn Task> {
        Box::new(NoTask)
    }
}

impl Task for NoTask {
    fn advance(&self, _: u64, _: u64) {}
}

/// A [`Progress`] that shows nothing.
pub fn silent() -> Arc<dyn Progress> {
    Arc::new(Silent)
}

/// A reader that reports the bytes read through it to a task.
pub struct CountingReader<R> {
    inner: R,
    task: Box<dyn Task>,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R, task: Box<dyn Task>) -> Self {
        CountingReader { inner, task }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.advance(n as u64, n as u64);
        Ok(n)
    }
}

/// A writer that reports the bytes written through it to a task.
pub struct CountingWriter<W> {
    inner: W,
    task: Box<dyn Task>,
}

impl<W> CountingWriter<W> {
    pub fn new(inner: W, task: Box<dyn Task>) -> Self {
        CountingWriter { inner, task }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.task.advance(n as u64, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A short name for an object key in progress labels: `archives/` keys
/// are cut to their first 12 hex digits.
pub fn short_key(key: &str) -> String {
    match key.strip_prefix("archives/") {
        Some(rest) if rest.len() > 12 => format!("archive {}…", &rest[..12]),
        _ => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Count(Arc<AtomicU64>);
    impl Task for Count {
        fn advance(&self, _: u64, bytes: u64) {
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[test]
    fn counting_reader_reports_every_byte() {
        let n = Arc::new(AtomicU64::new(0));
        let mut r = CountingReader::new(&b"hello world"[..], Box::new(Count(Arc::clone(&n))));
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(n.load(Ordering::Relaxed), 11);
        assert_eq!(
            short_key("archives/0123456789abcdef.tar.zst"),
            "archive 0123456789ab…"
        );
        assert_eq!(short_key("latest"), "latest");
    }
}
