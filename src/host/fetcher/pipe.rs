//! The root side's ends of the worker's pipes, which never block past a
//! deadline. A compromised worker can fork a child that keeps a pipe open
//! after the worker is killed (and leave the worker's process group): a
//! plain blocking read would then wait for ever, and the agent with it.
//! Every read and write here first waits with poll(2), in slices short
//! enough to notice a stop request, until the request's deadline.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// The longest single wait, so a stop request is seen promptly.
const SLICE: Duration = Duration::from_millis(100);

/// When the request in flight must be answered, and whether the agent is
/// stopping. Shared by the worker's pipe ends.
#[derive(Clone)]
pub(super) struct Deadline {
    /// Milliseconds since `epoch` (0: no request in flight, no deadline).
    at_ms: Arc<AtomicU64>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
}

impl Deadline {
    pub(super) fn new(stop: Arc<AtomicBool>) -> Deadline {
        Deadline {
            at_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            stop,
        }
    }

    /// Past `budget` from now, reads and writes fail.
    pub(super) fn arm(&self, budget: Duration) {
        let at = self.epoch.elapsed().saturating_add(budget).as_millis();
        self.at_ms.store(
            u64::try_from(at).unwrap_or(u64::MAX).max(1),
            Ordering::SeqCst,
        );
    }

    pub(super) fn disarm(&self) {
        self.at_ms.store(0, Ordering::SeqCst);
    }

    /// How long a wait may take now: `Err` once stopping or past the
    /// deadline.
    fn slice(&self) -> io::Result<Duration> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "npcnix is stopping",
            ));
        }
        let at = self.at_ms.load(Ordering::SeqCst);
        if at == 0 {
            return Ok(SLICE);
        }
        let left = Duration::from_millis(at).saturating_sub(self.epoch.elapsed());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer within the request's deadline",
            ));
        }
        Ok(left.min(SLICE))
    }

    /// Waits until `fd` is ready for `events` (or hung up: the read or
    /// write that follows reports it).
    fn wait(&self, fd: &impl AsFd, events: PollFlags) -> io::Result<()> {
        while !ready(fd, events, self.slice()?)? {}
        Ok(())
    }
}

/// Whether `fd` became ready for `events` (or hung up) within `within`
/// (less than a second).
fn ready(fd: &impl AsFd, events: PollFlags, within: Duration) -> io::Result<bool> {
    let ts = Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(within.min(Duration::from_millis(999)).subsec_nanos()),
    };
    let mut fds = [PollFd::new(fd, events)];
    match poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A pipe end read only once poll(2) says it is readable.
pub(super) struct TimedReader<R> {
    inner: R,
    deadline: Deadline,
}

impl<R: Read + AsFd> TimedReader<R> {
    pub(super) fn new(inner: R, deadline: Deadline) -> Self {
        TimedReader { inner, deadline }
    }
}

impl<R: Read + AsFd> Read for TimedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.deadline.wait(&self.inner, PollFlags::IN)?;
        self.inner.read(buf)
    }
}

/// A non-blocking pipe end written only as far as the reader takes it.
pub(super) struct TimedWriter<W> {
    inner: W,
    deadline: Deadline,
}

impl<W: Write + AsFd> TimedWriter<W> {
    pub(super) fn new(inner: W, deadline: Deadline) -> io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&inner)?;
        rustix::fs::fcntl_setfl(&inner, flags | rustix::fs::OFlags::NONBLOCK)?;
        Ok(TimedWriter { inner, deadline })
    }
}

impl<W: Write + AsFd> Write for TimedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.inner.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.deadline.wait(&self.inner, PollFlags::OUT)?;
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Most of a worker's stderr line kept (the rest is cut).
const LINE_MAX: usize = 512;
/// Most lines relayed per [`WINDOW`]; more are counted, then reported.
const LINES_PER_WINDOW: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);

/// Relays the worker's stderr to `log` until it closes or `alive` is
/// cleared: each line escaped and quoted, cut at [`LINE_MAX`] bytes, at most
/// [`LINES_PER_WINDOW`] a minute. A worker cannot write lines that look like
/// the agent's own (a journald `<0>` priority, "confirmed version 99") or
/// flood the journal to hide them.
pub(super) fn relay_stderr<R: Read + AsFd + Send + 'static>(
    stderr: R,
    alive: Arc<AtomicBool>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("npcnix-fetch-stderr".into())
        .spawn(move || {
            let mut r = stderr;
            let mut line: Vec<u8> = Vec::new();
            let mut cut = false;
            let mut window = (Instant::now(), 0u32, 0u64);
            let mut emit = |bytes: &[u8], cut: bool| {
                if window.0.elapsed() > WINDOW {
                    if window.2 > 0 {
                        log(&format!(
                            "fetch worker: {} more line(s) not shown (rate limit)",
                            window.2
                        ));
                    }
                    window = (Instant::now(), 0, 0);
                }
                if window.1 >= LINES_PER_WINDOW {
                    window.2 += 1;
                    return;
                }
                window.1 += 1;
                let text = crate::format::text::visible(&String::from_utf8_lossy(bytes));
                log(&format!(
                    "fetch worker said: \"{text}\"{}",
                    if cut { " (cut)" } else { "" }
                ));
            };
            let mut buf = [0u8; 4096];
            while alive.load(Ordering::SeqCst) {
                match ready(&r, PollFlags::IN, SLICE) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => break,
                }
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for &b in &buf[..n] {
                    if b == b'\n' {
                        emit(&line, cut);
                        line.clear();
                        cut = false;
                    } else if line.len() < LINE_MAX {
                        line.push(b);
                    } else {
                        cut = true;
                    }
                }
            }
            if !line.is_empty() {
                emit(&line, cut);
            }
            if window.2 > 0 {
                log(&format!(
                    "fetch worker: {} more line(s) not shown (rate limit)",
                    window.2
                ));
            }
        })
        .ok()
}
