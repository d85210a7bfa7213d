//! Everything the CLI prints goes through here: results on stdout, messages
//! with a level on stderr.
//!
//! * A closed stdout (`npcnix log | head -1`) never panics and never changes
//!   what a command does or its exit code: the output is dropped and the
//!   command runs to its end (decision in docs/cli.md). Any other write
//!   error on stdout (a full disk) is reported once by `main`, exit 1.
//! * Messages have levels: `-q` shows only warnings and errors, `-qq` only
//!   errors, `-v` adds debug lines (and the full error chain), `-vv` trace;
//!   without a flag, `RUST_LOG` (`error`..`trace`, or `npcnix=LEVEL`).
//! * Under systemd (stderr is the stream `JOURNAL_STREAM` names) each line
//!   starts with its syslog priority (`<4>` ...), which journald turns into
//!   the entry's priority, so `journalctl -p warning` works.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// How much is said on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

impl Level {
    fn from_u8(n: u8) -> Level {
        match n {
            0 => Level::Error,
            1 => Level::Warn,
            2 => Level::Info,
            3 => Level::Debug,
            _ => Level::Trace,
        }
    }

    /// The syslog priority journald reads from a `<N>` prefix.
    fn priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        }
    }

    /// `RUST_LOG`'s level for npcnix: a bare level, or `npcnix=LEVEL` among
    /// comma-separated directives. Unknown text is ignored.
    pub fn from_rust_log(spec: &str) -> Option<Level> {
        let mut found = None;
        for d in spec.split(',').map(str::trim) {
            let (target, level) = match d.split_once('=') {
                Some((t, l)) => (Some(t.trim()), l.trim()),
                None => (None, d),
            };
            let level = match level.to_ascii_lowercase().as_str() {
                "off" | "error" => Level::Error,
                "warn" => Level::Warn,
                "info" => Level::Info,
                "debug" => Level::Debug,
                "trace" => Level::Trace,
                _ => continue,
            };
            match target {
                Some("npcnix") => return Some(level),
                Some(_) => {}
                None => found = Some(level),
            }
        }
        found
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JOURNAL: AtomicBool = AtomicBool::new(false);
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDOUT_ERROR: Mutex<Option<String>> = Mutex::new(None);
/// A progress line (cli/progress.rs) is on the terminal, not yet erased.
static PROGRESS_SHOWN: AtomicBool = AtomicBool::new(false);

/// Erases a progress line that is shown, on a locked stderr.
fn erase_progress(err: &mut impl Write) {
    if PROGRESS_SHOWN.swap(false, Ordering::Relaxed) {
        let _ = write!(err, "\r\x1b[2K");
    }
}

/// Draws `line` as the progress line (replacing the one shown).
pub fn progress_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
    PROGRESS_SHOWN.store(true, Ordering::Relaxed);
}

/// Erases the progress line, if one is shown.
pub fn progress_clear() {
    let mut err = std::io::stderr().lock();
    erase_progress(&mut err);
    let _ = err.flush();
}

/// Whether stderr is the journal (no progress lines there).
pub fn is_journal() -> bool {
    JOURNAL.load(Ordering::Relaxed)
}

/// Sets the level from `-v`/`-q` counts, else `RUST_LOG`, and notices
/// journald on stderr.
pub fn init(verbose: u8, quiet: u8, rust_log: Option<&str>) {
    let level = if verbose > 0 || quiet > 0 {
        let n = i16::from(Level::Info as u8) + i16::from(verbose) - i16::from(quiet);
        Level::from_u8(n.clamp(0, 4) as u8)
    } else {
        rust_log
            .and_then(Level::from_rust_log)
            .unwrap_or(Level::Info)
    };
    LEVEL.store(level as u8, Ordering::Relaxed);
    JOURNAL.store(stderr_is_journal(), Ordering::Relaxed);
    // The libraries' own events (the S3 SDK: credential source, endpoint,
    // each request and its failure; its HTTP client) at -vv, or as
    // RUST_LOG's targets say (`RUST_LOG=aws_config=debug`).
    let explicit = verbose > 0 || quiet > 0;
    let filter = if explicit {
        // -vv: their debug events (as `aws --debug`); their trace level
        // (wire bytes) only by name in RUST_LOG.
        (level >= Level::Trace).then(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing_core::LevelFilter::DEBUG)
        })
    } else {
        rust_log.and_then(|s| s.parse::<tracing_subscriber::filter::Targets>().ok())
    };
    if let Some(filter) = filter {
        use tracing_subscriber::layer::SubscriberExt as _;
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(Events)
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(true);
        let _ = tracing_core::dispatcher::set_global_default(tracing_core::Dispatch::new(
            tracing_subscriber::registry().with(layer).with(filter),
        ));
    }
}

/// Where library events go: each one, when written, becomes message lines
/// at its own level (prefix, journald priority, escaping as ours).
struct Events;

struct EventLines {
    level: Level,
    buf: Vec<u8>,
}

impl std::io::Write for EventLines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        // An event is short; a runaway one is cut, not buffered unbounded.
        let room = (16 * 1024usize).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&b[..b.len().min(room)]);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventLines {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            emit(
                self.level,
                format_args!("{}", String::from_utf8_lossy(&self.buf)),
            );
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Events {
    type Writer = EventLines;
    fn make_writer(&'a self) -> EventLines {
        EventLines {
            level: Level::Debug,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing_core::Metadata<'_>) -> EventLines {
        let level = match *meta.level() {
            tracing_core::Level::ERROR => Level::Error,
            tracing_core::Level::WARN => Level::Warn,
            tracing_core::Level::INFO => Level::Info,
            tracing_core::Level::DEBUG => Level::Debug,
            _ => Level::Trace,
        };
        EventLines {
            level,
            buf: Vec::new(),
        }
    }
}

pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

pub fn enabled(l: Level) -> bool {
    l <= level()
}

/// Whether stderr is the journal stream systemd connected (the device and
/// inode in `JOURNAL_STREAM` are stderr's), as sd-journal's docs advise.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var("JOURNAL_STREAM")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// Writes one message line to stderr at `level` ("npcnix: ..."); a failed
/// write (closed stderr) is ignored.
pub fn message(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    emit(level, args);
}

/// Writes message lines at `level`, whatever the level setting (library
/// events are filtered by their own targets).
fn emit(level: Level, args: fmt::Arguments<'_>) {
    let prefix = match level {
        Level::Warn => "warning: ",
        Level::Debug => "debug: ",
        Level::Trace => "trace: ",
        Level::Error | Level::Info => "",
    };
    let text = format!("{args}");
    let mut err = std::io::stderr().lock();
    erase_progress(&mut err);
    // Every line escaped: a message may carry text a store or a file
    // chose, and a terminal (or journald) must not obey it.
    for line in text.lines().map(npcnix::format::text::visible) {
        let _ = if JOURNAL.load(Ordering::Relaxed) {
            // journald already names the unit's program (`npcnix[pid]:`).
            writeln!(err, "<{}>{prefix}{line}", level.priority())
        } else {
            writeln!(err, "npcnix: {prefix}{line}")
        };
    }
}

/// Text for a person at the terminal (prompts, the review before signing):
/// on stderr as it is, without the `npcnix:` prefix or a level.
pub fn text(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    erase_progress(&mut err);
    let _ = err.write_fmt(args);
    let _ = err.flush();
}

/// Writes result text to stdout. A closed pipe drops it quietly; other
/// errors are kept for [`stdout_error`].
pub fn stdout(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let res = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = res {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            if let Ok(mut slot) = STDOUT_ERROR.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A stdout write error other than a closed pipe, if one happened.
pub fn stdout_error() -> Option<String> {
    STDOUT_ERROR.lock().ok().and_then(|s| s.clone())
}

/// A `Write` over stdout with the same rules, for streaming output
/// (`npcnix log`): it never fails, so the command runs to its end.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        stdout(format_args!("{}", String::from_utf8_lossy(b)));
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Pretty JSON and a newline on stdout.
pub fn json(v: &serde_json::Value) {
    stdout(format_args!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// Any serializable value as pretty JSON, without building a
/// `serde_json::Value` tree first (`fleet status` of thousands of hosts).
pub fn json_of<T: serde::Serialize>(v: &T) {
    stdout(format_args!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// One JSON value on one line (JSON lines: `follow --json`).
pub fn json_line(v: &serde_json::Value) {
    stdout(format_args!("{v}\n"));
}

/// A size for people: `1.4 MiB (1468006 bytes)` above 1 KiB, else `512 bytes`.
/// `bytes` for a table column: "512 B", "1.2 KiB", "3.4 MiB" (the exact
/// count is in `--json`).
/// A table whose columns are as wide as their widest cell (headers
/// included); `right[i]`: column i is right-aligned (numbers). The last
/// column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(width(c));
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            let last = i + 1 == widths.len();
            if i > 0 {
                l.push_str("  ");
            }
            let pad = " ".repeat(widths[i].saturating_sub(width(c)));
            if right.get(i).copied().unwrap_or(false) {
                l.push_str(&pad);
                l.push_str(c);
            } else {
                l.push_str(c);
                if !last {
                    l.push_str(&pad);
                }
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(&mut headers.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

pub fn size_short(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {} ({bytes} bytes)", UNITS[unit])
}

/// `println!` for results: stdout, a closed pipe ends output quietly.
macro_rules! outln {
    () => { $crate::cli::out::stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::out::stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// An informational line on stderr (shown unless `-q`).
macro_rules! info {
    ($($t:tt)*) => { $crate::cli::out::message($crate::cli::out::Level::Info, format_args!($($t)*)) };
}

/// A warning on stderr (shown unless `-qq`).
macro_rules! warn {
    ($($t:tt)*) => { $crate::cli::out::message($crate::cli::out::Level::Warn, format_args!($($t)*)) };
}

/// A debug line on stderr (with `-v` or `RUST_LOG=debug`).
macro_rules! debug {
    ($($t:tt)*) => { $crate::cli::out::message($crate::cli::out::Level::Debug, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_levels() {
        assert_eq!(Level::from_rust_log("debug"), Some(Level::Debug));
        assert_eq!(
            Level::from_rust_log("info,npcnix=trace"),
            Some(Level::Trace)
        );
        assert_eq!(Level::from_rust_log("hyper=debug"), None);
        assert_eq!(Level::from_rust_log("WARN"), Some(Level::Warn));
        assert_eq!(Level::from_rust_log("bogus"), None);
    }

    #[test]
    fn human_sizes_keep_the_exact_count() {
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(1023), "1023 bytes");
        assert_eq!(size(1024), "1.0 KiB (1024 bytes)");
        assert_eq!(size(1_468_006), "1.4 MiB (1468006 bytes)");
        assert_eq!(size(u64::MAX).split(' ').nth(1), Some("PiB"));
    }
}
