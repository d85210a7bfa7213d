//! Progress lines on a terminal: a spinner for key derivation, counts for
//! packing, bytes and rates for uploads, downloads and extraction.
//!
//! Shown only when stderr is a terminal (not the journal) and messages are
//! at the default level or above (`-q` turns them off);
//! `NPCNIX_PROGRESS=always` forces them on (tests, screenshots), `never`
//! off. One line, redrawn in place (`\r`, erase line) every 100 ms by a
//! small thread per task and erased when the task ends; a message printed
//! meanwhile erases it first (`out::message`), so lines never mix. No
//! dependency: this is a hundred lines, and it shares stderr's lock with
//! the messages.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use npcnix::progress::{Progress, Task, Unit};

static ENABLED: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The task that owns the line (the newest).
static ACTIVE: AtomicU64 = AtomicU64::new(0);

/// Decides once whether progress is shown: `setting` is
/// `NPCNIX_PROGRESS` (`always`, `never`, else automatic).
pub fn init(setting: Option<&str>) {
    use std::io::IsTerminal;
    let on = super::out::enabled(super::out::Level::Info)
        && match setting {
            Some("always") => true,
            Some("never") => false,
            _ => std::io::stderr().is_terminal() && !super::out::is_journal(),
        };
    ENABLED.store(on, Ordering::Relaxed);
}

/// The progress to hand to the library: the terminal's, or none.
pub fn handle() -> Arc<dyn Progress> {
    if ENABLED.load(Ordering::Relaxed) {
        Arc::new(Terminal)
    } else {
        npcnix::progress::silent()
    }
}

/// A spinner for a task the CLI runs itself (key derivation); ends when
/// dropped.
pub fn spinner(label: &str) -> Box<dyn Task> {
    handle().start(label, Unit::Spinner, None)
}

struct Terminal;

impl Progress for Terminal {
    fn start(&self, label: &str, unit: Unit, total: Option<u64>) -> Box<dyn Task> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        ACTIVE.store(id, Ordering::Relaxed);
        let state = Arc::new(State {
            label: label.to_owned(),
            unit,
            total,
            units: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            start: Instant::now(),
            done: AtomicBool::new(false),
        });
        let s = Arc::clone(&state);
        let ticker = std::thread::Builder::new()
            .name("npcnix-progress".into())
            .spawn(move || {
                let mut frame = 0usize;
                loop {
                    if ACTIVE.load(Ordering::Relaxed) == id {
                        super::out::progress_line(&s.line(frame));
                    }
                    if s.done.load(Ordering::Relaxed) {
                        return;
                    }
                    frame += 1;
                    std::thread::park_timeout(Duration::from_millis(100));
                }
            })
            .ok();
        Box::new(Bar { id, state, ticker })
    }
}

struct State {
    label: String,
    unit: Unit,
    total: Option<u64>,
    units: AtomicU64,
    bytes: AtomicU64,
    start: Instant,
    done: AtomicBool,
}

impl State {
    fn line(&self, frame: usize) -> String {
        let spin = ['|', '/', '-', '\\'][frame % 4];
        let secs = self.start.elapsed().as_secs_f64();
        let bytes = self.bytes.load(Ordering::Relaxed);
        let units = self.units.load(Ordering::Relaxed);
        let rate = if secs >= 1.0 {
            format!(", {}/s", short(bytes as f64 / secs))
        } else {
            String::new()
        };
        let text = match (self.unit, self.total) {
            (Unit::Spinner, _) => format!("{spin} {} ({secs:.0} s)", self.label),
            (Unit::Bytes, Some(t)) if t > 0 => format!(
                "{spin} {}: {} of {} ({}%){rate}",
                self.label,
                short(bytes as f64),
                short(t as f64),
                (bytes.min(t) * 100) / t
            ),
            (Unit::Bytes, _) => format!("{spin} {}: {}{rate}", self.label, short(bytes as f64)),
            (Unit::Entries, Some(t)) => format!(
                "{spin} {}: {units} of {t} entries, {} read",
                self.label,
                short(bytes as f64)
            ),
            (Unit::Entries, None) => format!(
                "{spin} {}: {units} entries, {} read",
                self.label,
                short(bytes as f64)
            ),
        };
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(80)
            .max(20);
        text.chars().take(width - 1).collect()
    }
}

/// `12.3 MiB`: a size for a progress line (no exact count).
fn short(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let mut v = bytes / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

struct Bar {
    id: u64,
    state: Arc<State>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Task for Bar {
    fn advance(&self, units: u64, bytes: u64) {
        self.state.units.fetch_add(units, Ordering::Relaxed);
        self.state.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.state.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if ACTIVE
            .compare_exchange(self.id, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            super::out::progress_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_read_well() {
        let s = State {
            label: "uploading archive".into(),
            unit: Unit::Bytes,
            total: Some(4 << 20),
            units: AtomicU64::new(1 << 20),
            bytes: AtomicU64::new(1 << 20),
            start: Instant::now(),
            done: AtomicBool::new(false),
        };
        assert_eq!(s.line(0), "| uploading archive: 1.0 MiB of 4.0 MiB (25%)");
        assert_eq!(short(512.0), "512 B");
        assert_eq!(short(1536.0 * 1024.0), "1.5 MiB");
    }
}
