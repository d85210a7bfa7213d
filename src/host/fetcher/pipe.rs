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

/// The relay's rate limit, shared by every worker a store starts (a
/// respawned worker gets no fresh allowance).
#[derive(Debug)]
pub(super) struct Window {
    started: Instant,
    shown: u32,
    dropped: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            started: Instant::now(),
            shown: 0,
            dropped: 0,
        }
    }
}

impl Window {
    /// Whether a line may be shown now; `Some(n)`: first report `n` lines
    /// dropped in the window that just ended.
    fn admit(&mut self) -> (bool, Option<u64>) {
        let mut report = None;
        if self.started.elapsed() > WINDOW {
            if self.dropped > 0 {
                report = Some(self.dropped);
            }
            *self = Window::default();
        }
        if self.shown >= LINES_PER_WINDOW {
            self.dropped += 1;
            return (false, report);
        }
        self.shown += 1;
        (true, report)
    }
}

/// A worker's stderr line as the root side shows it: escaped so nothing is
/// obeyed by a terminal or the journal (control and invisible characters,
/// line separators), and with `"` and `\` escaped so the quotes it is shown
/// in cannot be closed from inside.
pub(super) fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push_str(&crate::format::text::visible(&c.to_string())),
        }
    }
    format!("\"{out}\"")
}

/// Relays the worker's stderr to `log` until it closes or `alive` is
/// cleared: each line quoted ([`quote`]), cut at [`LINE_MAX`] bytes, at most
/// [`LINES_PER_WINDOW`] a minute across every worker of the store. A worker
/// cannot write lines that look like the agent's own (a journald `<0>`
/// priority, "confirmed version 99") or flood the journal to hide them.
pub(super) fn relay_stderr<R: Read + AsFd + Send + 'static>(
    stderr: R,
    alive: Arc<AtomicBool>,
    window: Arc<std::sync::Mutex<Window>>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("npcnix-fetch-stderr".into())
        .spawn(move || {
            let mut r = stderr;
            let mut line: Vec<u8> = Vec::new();
            let mut cut = false;
            let emit = |bytes: &[u8], cut: bool| {
                let (show, dropped) = window
                    .lock()
                    .map(|mut w| w.admit())
                    .unwrap_or((false, None));
                if let Some(n) = dropped {
                    log(&format!(
                        "fetch worker: {n} more line(s) were not shown (rate limit)"
                    ));
                }
                if show {
                    log(&format!(
                        "fetch worker said: {}{}",
                        quote(bytes),
                        if cut { " (cut)" } else { "" }
                    ));
                }
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
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_line_cannot_close_its_quotes_or_draw_its_own_lines() {
        assert_eq!(quote(b"ok"), "\"ok\"");
        let q = quote(b"x\" (cut)\x1b[2K\r<0>npcnix: confirmed\xe2\x80\xa8y\\");
        assert!(q.starts_with("\"x\\\" (cut)"), "{q}");
        assert!(
            !q.contains('\x1b') && !q.contains('\r') && !q.contains('\u{2028}'),
            "{q}"
        );
        assert!(q.ends_with("\\\\\""), "{q}");
    }

    #[test]
    fn a_flood_is_cut_to_the_window_and_counted() {
        let mut w = Window::default();
        let shown = (0..100).filter(|_| w.admit().0).count();
        assert_eq!(shown, LINES_PER_WINDOW as usize);
        assert_eq!(w.dropped, 100 - u64::from(LINES_PER_WINDOW));
        w.started -= WINDOW + Duration::from_secs(1);
        assert_eq!(w.admit(), (true, Some(100 - u64::from(LINES_PER_WINDOW))));
    }
}
