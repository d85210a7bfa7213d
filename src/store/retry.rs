//! Bounded, visible retries of transient store errors for the operator
//! commands, and the store front that applies them (with progress).
//!
//! Only [`StoreErrorKind::Transient`](super::StoreErrorKind) errors are
//! retried (a connection that failed, a time-out, 5xx, throttling): a
//! missing object, a refused precondition or bad credentials are answers,
//! and asking again would not change them.
//!
//! **Writes.** [`ObservedStore`] retries reads (`get`, `open`, `list`) and
//! the unconditional `put` (host receipts: the same bytes again). It never
//! retries the conditional writes (`put_new`, `put_swap`): after a
//! transient error the write may have happened (the answer was lost), so a
//! second attempt could be refused by its own first one and read as a lost
//! race. Those are retried by [`crate::publish::upload`], which knows the
//! bytes it wrote and resolves such a refusal by reading the object back
//! ([`put_new_resolving`], [`put_swap_resolving`]). The resent write keeps
//! its precondition, so it can never overwrite another publisher's.
//!
//! A download that breaks mid-body is resumed by reading the object again
//! and dropping what was already read ([`ObservedStore::open`]).
//!
//! The agent (`npcnix follow`) does not use this: it has its own backoff
//! between polls.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use super::{ETag, Fetched, Store, StoreError, StoreErrorKind};
use crate::progress::{self, CountingReader, Progress, Unit};

/// How many times and how long apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1 (1: no retry).
    pub attempts: u32,
    /// Wait before the first retry; each later wait doubles, up to
    /// `max_delay`. A random ±20 % is applied to every wait.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Attempts an operator command makes by default.
    pub const DEFAULT_ATTEMPTS: u32 = 3;
    /// Most attempts that can be asked for.
    pub const MAX_ATTEMPTS: u32 = 10;

    /// The default: 3 attempts, about 1 s then 2 s apart.
    pub fn standard(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts: attempts.clamp(1, Self::MAX_ATTEMPTS),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }

    /// One attempt.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 1,
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// The wait before attempt `next` (2 for the first retry), with
    /// `jitter` in [-1, 1] scaling ±20 %.
    pub fn delay(&self, next: u32, jitter: f64) -> Duration {
        let doublings = next.saturating_sub(2).min(16);
        let base = self
            .first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        base.mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0))
    }
}

/// A retry about to happen, for the caller to show.
#[derive(Debug)]
pub struct RetryNotice<'a> {
    /// The attempt that comes next (2 for the first retry).
    pub attempt: u32,
    /// Attempts in all.
    pub of: u32,
    /// The wait before it.
    pub delay: Duration,
    /// Why: the transient error of the attempt before.
    pub error: &'a StoreError,
}

type Notify = Arc<dyn Fn(&RetryNotice<'_>) + Send + Sync>;

/// A retry policy and who to tell about each retry.
#[derive(Clone)]
pub struct Retry {
    pub policy: RetryPolicy,
    notify: Notify,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Retry {
    pub fn new(
        policy: RetryPolicy,
        notify: impl Fn(&RetryNotice<'_>) + Send + Sync + 'static,
    ) -> Retry {
        Retry {
            policy,
            notify: Arc::new(notify),
        }
    }

    /// No retries.
    pub fn none() -> Retry {
        Retry::new(RetryPolicy::none(), |_| {})
    }

    /// Runs `op` (given the attempt number, from 1) until it succeeds, fails
    /// with an error that is not transient, or the attempts are used up.
    pub fn run<T>(
        &self,
        mut op: impl FnMut(u32) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            match op(attempt) {
                Err(e) if e.is_retryable() && attempt < self.policy.attempts => {
                    attempt += 1;
                    self.wait(attempt, &e);
                }
                r => return r,
            }
        }
    }

    fn wait(&self, next: u32, error: &StoreError) {
        let delay = self.policy.delay(next, jitter());
        (self.notify)(&RetryNotice {
            attempt: next,
            of: self.policy.attempts,
            delay,
            error,
        });
        std::thread::sleep(delay);
    }
}

/// A random number in [-1, 1] (0 if the OS has no randomness to give).
fn jitter() -> f64 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 2.0 - 1.0
}

/// `put_new` of a small body, retried: a refusal ("exists") after a
/// transient failure is checked by reading the object back: if it holds
/// exactly `body`, the earlier attempt did write it and this is success.
/// Any other refusal stays a refusal (someone else's object).
pub(crate) fn put_new_resolving(
    store: &dyn Store,
    retry: &Retry,
    key: &str,
    body: &[u8],
) -> Result<(), StoreError> {
    let mut uncertain = false;
    let res = retry.run(|attempt| {
        uncertain = attempt > 1;
        store.put_new(key, &mut &body[..], body.len() as u64)
    });
    match res {
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed && uncertain => {
            if holds(store, retry, key, body)? {
                Ok(())
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

/// `put_swap`, retried the same way: every attempt keeps the original
/// precondition (`expected`), so a resend cannot replace another
/// publisher's head; a refusal after a transient failure is success only if
/// `key` holds exactly `body` (the earlier attempt landed). Returns the new
/// ETag (`None` when it was resolved by reading and the store gave none).
pub(crate) fn put_swap_resolving(
    store: &dyn Store,
    retry: &Retry,
    key: &str,
    body: &[u8],
    expected: Option<&ETag>,
) -> Result<Option<ETag>, StoreError> {
    let mut uncertain = false;
    let res = retry.run(|attempt| {
        uncertain = attempt > 1;
        store.put_swap(key, body, expected)
    });
    match res {
        Ok(etag) => Ok(Some(etag)),
        Err(e) if e.kind == StoreErrorKind::PreconditionFailed && uncertain => {
            if holds(store, retry, key, body)? {
                Ok(None)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// Whether `key` holds exactly `body`.
fn holds(store: &dyn Store, retry: &Retry, key: &str, body: &[u8]) -> Result<bool, StoreError> {
    match retry.run(|_| store.get(key, None, body.len() as u64 + 1)) {
        Ok(Fetched::Object { bytes, .. }) => Ok(bytes == body),
        Ok(Fetched::NotModified) => Ok(false),
        Err(e) if matches!(e.kind, StoreErrorKind::NotFound | StoreErrorKind::TooLarge) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A store front for operator commands: transient read failures retried
/// (visibly, through the [`Retry`]'s notifier), transfers reported to a
/// [`Progress`]. Conditional writes pass through once (module docs).
pub(crate) struct ObservedStore {
    inner: Arc<dyn Store>,
    retry: Retry,
    progress: Arc<dyn Progress>,
}

/// `remote` for an operator command: transient read failures retried
/// visibly, transfers reported to `progress` ([`ObservedStore`]).
pub fn observed(remote: super::Remote, retry: Retry, progress: Arc<dyn Progress>) -> super::Remote {
    super::Remote::resuming_itself(Box::new(ObservedStore::new(
        remote.into_inner(),
        retry,
        progress,
    )))
}

impl ObservedStore {
    fn new(inner: Box<dyn Store>, retry: Retry, progress: Arc<dyn Progress>) -> Self {
        ObservedStore {
            inner: Arc::from(inner),
            retry,
            progress,
        }
    }
}

/// A download that breaks in the middle of the body is opened again where
/// it broke (a Range request from the first byte not yet read; a server
/// that ignores ranges is skipped ahead by the backend). What the caller
/// sees is one stream, which it bounds and hashes as always, so an object
/// that changed between attempts is refused as a mismatch, never spliced
/// in silently.
struct Resuming {
    store: Arc<dyn Store>,
    key: String,
    /// Where the stream started.
    from: u64,
    max: u64,
    retry: Retry,
    inner: Box<dyn Read + Send>,
    /// Bytes handed to the caller so far.
    pos: u64,
    attempt: u32,
}

impl Read for Resuming {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let e = match self.inner.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            if self.attempt >= self.retry.policy.attempts {
                return Err(e);
            }
            self.attempt += 1;
            let why = StoreError::new(
                StoreErrorKind::Transient,
                &self.store.describe(),
                &self.key,
                format!("download broke after {} bytes: {e}", self.pos),
            );
            self.retry.wait(self.attempt, &why);
            self.inner = self
                .store
                .open(&self.key, self.from + self.pos, self.max)
                .map_err(std::io::Error::other)?;
        }
    }
}

/// Objects up to this size are not worth a progress line.
const PROGRESS_MIN_BYTES: u64 = 1 << 20;

impl Store for ObservedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn get(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        limit: u64,
    ) -> Result<Fetched, StoreError> {
        self.retry
            .run(|_| self.inner.get(key, if_none_match, limit))
    }

    fn open(
        &self,
        key: &str,
        from: u64,
        max_bytes: u64,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let r = self.retry.run(|_| self.inner.open(key, from, max_bytes))?;
        let r: Box<dyn Read + Send> = Box::new(Resuming {
            store: Arc::clone(&self.inner),
            key: key.to_owned(),
            from,
            max: max_bytes,
            retry: self.retry.clone(),
            inner: r,
            pos: 0,
            attempt: 1,
        });
        if max_bytes < PROGRESS_MIN_BYTES {
            return Ok(r);
        }
        let task = self.progress.start(
            &format!("downloading {}", progress::short_key(key)),
            Unit::Bytes,
            Some(max_bytes),
        );
        Ok(Box::new(CountingReader::new(r, task)))
    }

    fn put_new(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), StoreError> {
        if len < PROGRESS_MIN_BYTES {
            return self.inner.put_new(key, body, len);
        }
        let task = self.progress.start(
            &format!("uploading {}", progress::short_key(key)),
            Unit::Bytes,
            Some(len),
        );
        let mut counted = CountingReader::new(body, task);
        self.inner.put_new(key, &mut counted, len)
    }

    fn put_swap(
        &self,
        key: &str,
        body: &[u8],
        expected: Option<&ETag>,
    ) -> Result<ETag, StoreError> {
        self.inner.put_swap(key, body, expected)
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.retry.run(|_| self.inner.put(key, body))
    }

    fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        self.retry.run(|_| self.inner.list(prefix, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::FileStore;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// A store whose next writes fail transiently, before or after
    /// actually writing (a lost answer).
    struct Flaky {
        inner: FileStore,
        /// Writes that fail; `lose_answer`: they happen, then fail.
        fail: AtomicU32,
        lose_answer: std::sync::atomic::AtomicBool,
        reads_fail: AtomicU32,
    }

    fn transient(key: &str) -> StoreError {
        StoreError::new(StoreErrorKind::Transient, "flaky", key, "HTTP 503".into())
    }

    impl Flaky {
        fn take(n: &AtomicU32) -> bool {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
        }
    }

    impl Store for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn get(&self, key: &str, inm: Option<&ETag>, limit: u64) -> Result<Fetched, StoreError> {
            if Self::take(&self.reads_fail) {
                return Err(transient(key));
            }
            self.inner.get(key, inm, limit)
        }
        fn open(&self, key: &str, from: u64, max: u64) -> Result<Box<dyn Read + Send>, StoreError> {
            self.inner.open(key, from, max)
        }
        fn put_new(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), StoreError> {
            if Self::take(&self.fail) {
                if self.lose_answer.load(Ordering::SeqCst) {
                    self.inner.put_new(key, body, len)?;
                }
                return Err(transient(key));
            }
            self.inner.put_new(key, body, len)
        }
        fn put_swap(&self, key: &str, body: &[u8], exp: Option<&ETag>) -> Result<ETag, StoreError> {
            if Self::take(&self.fail) {
                if self.lose_answer.load(Ordering::SeqCst) {
                    self.inner.put_swap(key, body, exp)?;
                }
                return Err(transient(key));
            }
            self.inner.put_swap(key, body, exp)
        }
        fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix, max)
        }
    }

    fn flaky(dir: &std::path::Path, fail: u32, lose_answer: bool) -> Flaky {
        Flaky {
            inner: FileStore::new(dir.to_owned(), "file:///flaky".into()),
            fail: AtomicU32::new(fail),
            lose_answer: std::sync::atomic::AtomicBool::new(lose_answer),
            reads_fail: AtomicU32::new(0),
        }
    }

    fn quick(attempts: u32, seen: Arc<Mutex<Vec<String>>>) -> Retry {
        Retry::new(
            RetryPolicy {
                attempts,
                first_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
            },
            move |n| {
                seen.lock()
                    .expect("lock")
                    .push(format!("{}/{} {}", n.attempt, n.of, n.error))
            },
        )
    }

    fn tmp() -> crate::fsutil::TempDir {
        crate::fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-retry-test-").expect("tmp")
    }

    #[test]
    fn delays_double_with_bounded_jitter() {
        let p = RetryPolicy::standard(3);
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(2400));
        assert_eq!(p.delay(3, -1.0), Duration::from_millis(1600));
        assert_eq!(p.delay(30, 0.0), Duration::from_secs(30));
        assert_eq!(RetryPolicy::standard(0).attempts, 1);
    }

    #[test]
    fn transient_reads_are_retried_and_announced() {
        let dir = tmp();
        let f = flaky(dir.path(), 0, false);
        f.reads_fail.store(2, Ordering::SeqCst);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = ObservedStore::new(Box::new(f), quick(3, Arc::clone(&seen)), progress::silent());
        let e = s.get("latest", None, 10).expect_err("missing");
        assert_eq!(
            e.kind,
            StoreErrorKind::NotFound,
            "retried until the store answered"
        );
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 2);
        assert!(
            seen[0].starts_with("2/3 flaky: latest: HTTP 503"),
            "{seen:?}"
        );
    }

    #[test]
    fn a_lost_answer_to_a_create_is_not_reported_as_a_lost_race() {
        let dir = tmp();
        let f = flaky(dir.path(), 1, true);
        let r = quick(3, Arc::default());
        put_new_resolving(&f, &r, "releases/1", b"ours").expect("our write landed");
        assert_eq!(
            std::fs::read(dir.path().join("releases/1")).expect("read"),
            b"ours"
        );
    }

    #[test]
    fn a_create_that_finds_someone_elses_object_stays_a_lost_race() {
        let dir = tmp();
        let f = flaky(dir.path(), 0, false);
        let r = quick(3, Arc::default());
        put_new_resolving(&f, &r, "releases/1", b"theirs").expect("first");
        // Our attempt fails transiently without writing; the resend finds
        // their object.
        f.fail.store(1, Ordering::SeqCst);
        let e = put_new_resolving(&f, &r, "releases/1", b"ours").expect_err("lost");
        assert_eq!(e.kind, StoreErrorKind::PreconditionFailed);
    }

    #[test]
    fn a_lost_answer_to_a_head_swap_is_success_and_a_moved_head_is_not() {
        let dir = tmp();
        let f = flaky(dir.path(), 0, true);
        let r = quick(3, Arc::default());
        let e1 = put_swap_resolving(&f, &r, "latest", b"v1", None)
            .expect("create")
            .expect("etag");
        // v2's swap lands but its answer is lost: the resend is refused by
        // its own write, which is read back and recognised.
        f.fail.store(1, Ordering::SeqCst);
        put_swap_resolving(&f, &r, "latest", b"v2", Some(&e1)).expect("ours landed");
        // Another publisher's head: the resend keeps the precondition and
        // is refused; the head is not ours, so it stays a conflict.
        f.lose_answer.store(false, Ordering::SeqCst);
        f.fail.store(1, Ordering::SeqCst);
        let e = put_swap_resolving(&f, &r, "latest", b"v3", Some(&e1)).expect_err("head moved");
        assert_eq!(e.kind, StoreErrorKind::PreconditionFailed);
        assert_eq!(
            std::fs::read(dir.path().join("latest")).expect("read"),
            b"v2"
        );
    }

    #[test]
    fn a_refused_certificate_is_not_retried() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let r = quick(3, Arc::clone(&seen));
        let mut calls = 0;
        let e = r
            .run(|_| -> Result<(), StoreError> {
                calls += 1;
                Err(StoreError::new(
                    StoreErrorKind::Transient,
                    "https://m",
                    "latest",
                    "GET failed: invalid peer certificate: UnknownIssuer".into(),
                ))
            })
            .expect_err("fails");
        assert!(e.is_transient() && !e.is_retryable());
        assert_eq!(calls, 1);
        assert!(seen.lock().expect("lock").is_empty());
    }

    /// Serves "latest" through a reader that breaks after `cut` bytes,
    /// `breaks` times.
    struct Breaking {
        data: Vec<u8>,
        breaks: AtomicU32,
        /// Bytes each breaking stream delivers before it breaks.
        cut: usize,
        /// Where each open started.
        opened_at: Arc<Mutex<Vec<u64>>>,
    }

    struct Cut {
        data: Vec<u8>,
        pos: usize,
        cut: Option<usize>,
    }

    impl Read for Cut {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.cut.is_some_and(|c| self.pos >= c) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset",
                ));
            }
            let end = self.data.len().min(self.pos + buf.len().min(7));
            let n = end - self.pos;
            buf[..n].copy_from_slice(&self.data[self.pos..end]);
            self.pos = end;
            Ok(n)
        }
    }

    impl Store for Breaking {
        fn describe(&self) -> String {
            "breaking".into()
        }
        fn get(&self, key: &str, _: Option<&ETag>, _: u64) -> Result<Fetched, StoreError> {
            Err(StoreError::new(
                StoreErrorKind::NotFound,
                "b",
                key,
                "no".into(),
            ))
        }
        fn open(&self, _: &str, from: u64, _: u64) -> Result<Box<dyn Read + Send>, StoreError> {
            let cut = Flaky::take(&self.breaks).then_some(self.cut);
            self.opened_at.lock().expect("lock").push(from);
            Ok(Box::new(Cut {
                data: self.data.clone(),
                pos: from as usize,
                cut: cut.map(|c| from as usize + c),
            }))
        }
        fn put_new(&self, key: &str, _: &mut dyn Read, _: u64) -> Result<(), StoreError> {
            Err(transient(key))
        }
        fn put_swap(&self, key: &str, _: &[u8], _: Option<&ETag>) -> Result<ETag, StoreError> {
            Err(transient(key))
        }
        fn list(&self, _: &str, _: usize) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_download_that_breaks_mid_body_continues_where_it_broke() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let opened_at = Arc::new(Mutex::new(Vec::new()));
        let s = ObservedStore::new(
            Box::new(Breaking {
                data: data.clone(),
                breaks: AtomicU32::new(2),
                cut: 300,
                opened_at: Arc::clone(&opened_at),
            }),
            quick(3, Arc::clone(&seen)),
            progress::silent(),
        );
        let mut out = Vec::new();
        s.open("archives/x", 0, 1000)
            .expect("open")
            .read_to_end(&mut out)
            .expect("resumed twice");
        assert_eq!(out, data, "one stream, nothing lost or repeated");
        assert_eq!(
            *opened_at.lock().expect("lock"),
            [0, 300, 600],
            "each attempt asks for the rest only"
        );
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].contains("download broke after"), "{seen:?}");

        // A third break is one too many.
        let s = ObservedStore::new(
            Box::new(Breaking {
                data,
                breaks: AtomicU32::new(3),
                cut: 300,
                opened_at: Arc::default(),
            }),
            quick(3, Arc::default()),
            progress::silent(),
        );
        let e = s
            .open("archives/x", 0, 1000)
            .expect("open")
            .read_to_end(&mut Vec::new())
            .expect_err("gives up");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn attempts_are_bounded() {
        let dir = tmp();
        let f = flaky(dir.path(), 10, false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let r = quick(3, Arc::clone(&seen));
        let e = put_new_resolving(&f, &r, "releases/1", b"x").expect_err("gives up");
        assert!(e.is_transient());
        assert_eq!(seen.lock().expect("lock").len(), 2);
        assert_eq!(f.fail.load(Ordering::SeqCst), 7);
    }
}
