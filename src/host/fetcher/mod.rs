//! Privilege separation: the network side of a poll runs in a child process
//! under its own unprivileged user.
//!
//! The agent runs as root because activation must. Everything that talks to
//! the network and parses what comes back below the bundle — TLS, HTTP, the
//! S3 XML, the store's error bodies — is the largest attack surface, so it
//! runs in `npcnix fetch-worker`: started with the fetch user's uid and gid
//! (`std`'s `CommandExt`, no `unsafe`), `no_new_privs`, and Landlock denying
//! it every file-system write. It has no access to the data dir (0700 root),
//! the state or the audit log.
//!
//! The worker is only a transport. [`FetcherStore`] is a [`Store`] whose
//! reads are requests to the worker; the root side runs the same pipeline as
//! before on what comes back — the bundle is verified (signatures, policy),
//! the archive hashed and size-checked through the same bounded adapter —
//! so a compromised worker can at most withhold or corrupt, which the root
//! side refuses like any hostile store.
//!
//! The root side never blocks on the worker: its pipe ends wait with
//! poll(2) until the request's deadline or a stop request, and the worker's
//! process group is killed when it is dropped ([`pipe`], D120). Its stderr
//! is relayed quoted and rate-limited, never passed through.
//!
//! Wire format on the worker's stdin/stdout (all sizes bounded by the root).
//! The worker's first line is `hello` (its uid and Landlock status, D123),
//! written before it reads a request:
//! * request: one JSON line, `{"op":"get","key":K,"if_none_match":E|null,"limit":N}`,
//!   `{"op":"open","key":K,"max":N}`, or `{"op":"put","key":K,"len":N}`
//!   followed by exactly `N` body bytes (at most [`PUT_MAX`]: a host
//!   receipt, the only object an agent writes);
//! * response: one JSON header line (at most 4 KiB): `object` followed by
//!   exactly `len` bytes, `not-modified`, `stored` (a `put`), `error`, or
//!   `stream` followed by chunks of `u32` big-endian length and bytes,
//!   ended by a zero-length chunk (a length of `u32::MAX` announces an
//!   error header line instead).

use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{ETag, Fetched, Store, StoreError, StoreErrorKind, StoreOptions};

mod pipe;
mod protocol;
mod worker;

pub use worker::{introduce, serve, WorkerError};

use protocol::kind_from_name;
pub use protocol::{kind_name, read_header, Hello, Request, Response, CHUNK_ERROR, PUT_MAX};

use pipe::{Deadline, TimedReader, TimedWriter};

/// How long a new worker may take to introduce itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the network side must run unprivileged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Separate when running as root and the fetch user exists; otherwise
    /// fetch in-process and say so (status, audit log).
    #[default]
    Auto,
    /// Refuse to poll unless the fetch side can run as the fetch user.
    Required,
    /// Always fetch in-process.
    Off,
}

/// The unprivileged account the worker runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchUser {
    pub uid: u32,
    pub gid: u32,
}

impl FetchUser {
    /// Looks `name` up in passwd-format text (`/etc/passwd`). Root (uid 0)
    /// is never a fetch user.
    pub fn from_passwd(passwd: &str, name: &str) -> Option<FetchUser> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0] != name {
                return None;
            }
            let (uid, gid) = (f[2].parse().ok()?, f[3].parse().ok()?);
            (uid != 0 && gid != 0).then_some(FetchUser { uid, gid })
        })
    }
}

/// How to start the worker.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The npcnix binary (the running one).
    pub program: PathBuf,
    pub url: String,
    pub options: StoreOptions,
    pub user: FetchUser,
    /// The fetch user runs nothing but workers (the NixOS module's
    /// `npcnix-fetch`): every process of it is killed before a worker
    /// starts and after one is dropped, so a child that left the worker's
    /// process group does not survive it. Never for a shared user such as
    /// `nobody`.
    pub dedicated: bool,
}

impl WorkerCommand {
    fn command(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(&self.program);
        c.arg("fetch-worker").arg("--url").arg(&self.url);
        if let Some(r) = &self.options.region {
            c.arg("--remote-region").arg(r);
        }
        if let Some(e) = &self.options.endpoint {
            c.arg("--endpoint").arg(e);
        }
        if self.options.path_style {
            c.arg("--path-style");
        }
        if let Some(t) = self.options.read_timeout_secs {
            c.arg("--read-timeout").arg(t.to_string());
        }
        if let Some(t) = self.options.connect_timeout_secs {
            c.arg("--connect-timeout").arg(t.to_string());
        }
        if let Some(f) = &self.options.ca_file {
            c.arg("--ca-file").arg(f);
        }
        if let Some(r) = self.options.min_rate_bytes_per_sec {
            c.arg("--min-rate").arg(r.to_string());
        }
        // Its own process group, killed whole at the end (children a
        // compromised worker forks go with it unless they leave the group;
        // the root side's reads are time-bounded either way). Its stderr is
        // a pipe to the root side, relayed quoted (`pipe::relay_stderr`).
        c.uid(self.user.uid)
            .gid(self.user.gid)
            .process_group(0)
            .env_remove("NPCNIX_PASSPHRASE")
            // Its library events would spend the relay's line budget.
            .env_remove("RUST_LOG")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

struct Worker {
    child: Child,
    to: TimedWriter<ChildStdin>,
    from: BufReader<TimedReader<ChildStdout>>,
    deadline: Deadline,
    /// Cleared when this worker is dropped; ends its stderr relay.
    alive: Arc<AtomicBool>,
    relay: Option<std::thread::JoinHandle<()>>,
    /// The dedicated fetch user's uid, swept when the worker is dropped.
    sweep_uid: Option<u32>,
}

impl Worker {
    /// Past `budget` from now, reads and writes to the worker fail (and
    /// the worker is then dropped).
    fn arm(&self, budget: Duration) {
        self.deadline.arm(budget);
    }

    fn disarm(&self) {
        self.deadline.disarm();
    }
}

/// The real uid in a `/proc/<pid>/status` text.
fn status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kills every process whose real uid is `uid` (a dedicated fetch user's:
/// workers and whatever they left behind), a few rounds in case one forks
/// meanwhile.
fn sweep(uid: u32) {
    use rustix::process::{kill_process, Pid, Signal};
    for _ in 0..3 {
        let mut found = false;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in dir.flatten() {
            let Some(pid) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
                .and_then(Pid::from_raw)
            else {
                continue;
            };
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            if status_uid(&status) == Some(uid) {
                found = true;
                let _ = kill_process(pid, Signal::KILL);
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        // The whole process group, then the worker itself (reaped below,
        // so its pid, which is the group's ID, is not reused before).
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(uid) = self.sweep_uid {
            sweep(uid);
        }
        if let Some(r) = self.relay.take() {
            let _ = r.join();
        }
    }
}

/// A [`Store`] whose reads run in the unprivileged worker. Writes are not
/// offered, but for a host receipt (`put`).
pub struct FetcherStore {
    cmd: WorkerCommand,
    describe: String,
    worker: Arc<Mutex<Option<Worker>>>,
    stop: Arc<AtomicBool>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    /// The stderr relay's rate limit, across respawns.
    window: Arc<Mutex<pipe::Window>>,
    require_landlock: bool,
    hello: Arc<Mutex<Option<Hello>>>,
    /// A `file://` remote, for the root side's own receipt writes: the
    /// worker may write nothing (Landlock), and a local directory needs no
    /// network parsing to be kept away from root (D121).
    local: Option<Arc<crate::store::Remote>>,
}

/// Longest a root-side receipt write to a `file://` store may take (a hung
/// network file system must not stop the agent).
const LOCAL_PUT_TIMEOUT: Duration = Duration::from_secs(30);

impl FetcherStore {
    /// `stop` (the agent's SIGTERM flag) ends any read in progress; the
    /// worker's stderr lines go to `log`, quoted. With `require_landlock`,
    /// a worker that reports anything short of enforced Landlock is not
    /// used.
    pub fn new(
        cmd: WorkerCommand,
        stop: Arc<AtomicBool>,
        log: Arc<dyn Fn(&str) + Send + Sync>,
        require_landlock: bool,
    ) -> FetcherStore {
        let describe = cmd.url.clone();
        let local = cmd
            .url
            .starts_with("file://")
            .then(|| crate::store::open_url(&cmd.url, &cmd.options).ok())
            .flatten()
            .map(Arc::new);
        FetcherStore {
            cmd,
            describe,
            worker: Arc::new(Mutex::new(None)),
            stop,
            log,
            window: Arc::new(Mutex::new(pipe::Window::default())),
            require_landlock,
            hello: Arc::new(Mutex::new(None)),
            local,
        }
    }

    /// Starts the worker (if it is not running) and returns how it
    /// introduced itself: its uid and confinement, as `status` and the
    /// audit log report them.
    pub fn probe(&self) -> Result<Hello, StoreError> {
        let guard = self.started("(start)")?;
        drop(guard);
        self.hello
            .lock()
            .ok()
            .and_then(|h| h.clone())
            .ok_or_else(|| self.broken("(start)", "no introduction"))
    }

    pub fn user(&self) -> FetchUser {
        self.cmd.user
    }

    /// How long the root side waits for a whole answer: the object's
    /// deadline ([`crate::store::transfer::deadline_for`]) plus a read
    /// time-out's worth of slack.
    fn budget(&self, req: &Request) -> Duration {
        let size = match req {
            Request::Get { limit, .. } => *limit,
            Request::Open { max, from, .. } => max.saturating_sub(*from),
            Request::Put { len, .. } => *len,
        };
        let rate = self
            .cmd
            .options
            .min_rate_bytes_per_sec
            .unwrap_or(crate::store::transfer::DEFAULT_MIN_RATE_BYTES_PER_SEC);
        crate::store::transfer::deadline_for(size, rate).saturating_add(Duration::from_secs(
            self.cmd
                .options
                .read_timeout_secs
                .unwrap_or(crate::store::DEFAULT_READ_TIMEOUT_SECS),
        ))
    }

    fn fail(&self, key: &str, kind: StoreErrorKind, detail: String) -> StoreError {
        StoreError::new(kind, &self.describe, key, detail)
    }

    fn broken(&self, key: &str, e: impl std::fmt::Display) -> StoreError {
        self.fail(
            key,
            StoreErrorKind::Transient,
            format!("the fetch worker failed: {e}"),
        )
    }

    /// The worker, started (and introduced) if it was not running.
    fn started(&self, key: &str) -> Result<std::sync::MutexGuard<'_, Option<Worker>>, StoreError> {
        let mut guard = self
            .worker
            .lock()
            .map_err(|_| self.broken(key, "lock poisoned"))?;
        if guard.is_none() {
            *guard = Some(self.spawn(key)?);
        }
        Ok(guard)
    }

    fn spawn(&self, key: &str) -> Result<Worker, StoreError> {
        let sweep_uid = self.cmd.dedicated.then_some(self.cmd.user.uid);
        if let Some(uid) = sweep_uid {
            sweep(uid);
        }
        let mut child = self
            .cmd
            .command()
            .spawn()
            .map_err(|e| self.broken(key, format!("starting it: {e}")))?;
        let alive = Arc::new(AtomicBool::new(true));
        let relay = child.stderr.take().and_then(|e| {
            pipe::relay_stderr(
                e,
                Arc::clone(&alive),
                Arc::clone(&self.window),
                Arc::clone(&self.log),
            )
        });
        let deadline = Deadline::new(Arc::clone(&self.stop));
        let pipes = match (child.stdin.take(), child.stdout.take()) {
            (Some(to), Some(from)) => TimedWriter::new(to, deadline.clone())
                .map(|to| (to, BufReader::new(TimedReader::new(from, deadline.clone())))),
            _ => Err(io::Error::other("no pipes")),
        };
        let (to, from) = match pipes {
            Ok(p) => p,
            Err(e) => {
                // Dropped through a Worker-like cleanup: kill and reap.
                let _ = child.kill();
                let _ = child.wait();
                alive.store(false, Ordering::SeqCst);
                return Err(self.broken(key, e));
            }
        };
        let mut w = Worker {
            child,
            to,
            from,
            deadline,
            alive,
            relay,
            sweep_uid,
        };
        // Its introduction, written before it reads any request (so before
        // it has parsed anything from the network).
        w.arm(HELLO_TIMEOUT);
        let hello = match read_header::<_, Response>(&mut w.from) {
            Ok(Response::Hello(h)) => h,
            Ok(other) => return Err(self.broken(key, format!("introduced itself as {other:?}"))),
            Err(e) => return Err(self.broken(key, format!("no introduction: {e}"))),
        };
        w.disarm();
        if hello.uid != self.cmd.user.uid {
            return Err(self.broken(
                key,
                format!(
                    "it says it runs as uid {}, not the fetch user's {}",
                    hello.uid, self.cmd.user.uid
                ),
            ));
        }
        if self.require_landlock && !hello.landlock_enforced() {
            return Err(self.fail(
                key,
                StoreErrorKind::Other,
                format!(
                    "fetcher.isolation is \"required\" but the fetch worker runs without enforced Landlock ({}); not using it",
                    hello.describe()
                ),
            ));
        }
        if let Ok(mut h) = self.hello.lock() {
            *h = Some(hello);
        }
        Ok(w)
    }

    /// Sends `req` and reads the response header, starting the worker if it
    /// is not running. On any transport problem the worker is dropped (and
    /// killed), so the next request starts a fresh one.
    fn exchange(
        &self,
        key: &str,
        req: &Request,
    ) -> Result<(Response, std::sync::MutexGuard<'_, Option<Worker>>), StoreError> {
        self.exchange_with(key, req, &[])
    }

    /// Sends a request (and `body` right after its header line) and reads
    /// the response header.
    fn exchange_with(
        &self,
        key: &str,
        req: &Request,
        body: &[u8],
    ) -> Result<(Response, std::sync::MutexGuard<'_, Option<Worker>>), StoreError> {
        let mut guard = self.started(key)?;
        let budget = self.budget(req);
        let result = (|| -> io::Result<Response> {
            let w = guard
                .as_mut()
                .ok_or_else(|| io::Error::other("no worker"))?;
            w.arm(budget);
            let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
            line.push(b'\n');
            w.to.write_all(&line)?;
            w.to.write_all(body)?;
            w.to.flush()?;
            read_header(&mut w.from)
        })();
        match result {
            Ok(r) => Ok((r, guard)),
            Err(e) => {
                *guard = None;
                Err(self.broken(key, e))
            }
        }
    }
}

impl FetcherStore {
    /// This store as the agent holds it.
    pub fn into_remote(self) -> crate::store::Remote {
        crate::store::Remote::new(Box::new(self))
    }
}

impl Store for FetcherStore {
    fn describe(&self) -> String {
        format!("{} (via the unprivileged fetch worker)", self.describe)
    }

    fn get(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        limit: u64,
    ) -> Result<Fetched, StoreError> {
        let req = Request::Get {
            key: key.to_owned(),
            if_none_match: if_none_match.map(|e| e.0.clone()),
            limit,
        };
        let (resp, mut guard) = self.exchange(key, &req)?;
        match resp {
            Response::Object { len, etag } => {
                if len > limit {
                    *guard = None;
                    return Err(self.fail(
                        key,
                        StoreErrorKind::TooLarge,
                        format!("object is larger than {limit} bytes"),
                    ));
                }
                let w = guard.as_mut().ok_or_else(|| self.broken(key, "gone"))?;
                let mut bytes = vec![0u8; len as usize];
                if let Err(e) = w.from.read_exact(&mut bytes) {
                    *guard = None;
                    return Err(self.broken(key, e));
                }
                w.disarm();
                Ok(Fetched::Object {
                    bytes,
                    etag: etag.map(ETag),
                })
            }
            Response::NotModified => {
                if let Some(w) = guard.as_ref() {
                    w.disarm();
                }
                Ok(Fetched::NotModified)
            }
            Response::Error { kind, detail } => {
                if let Some(w) = guard.as_ref() {
                    w.disarm();
                }
                Err(self.fail(key, kind_from_name(&kind), detail))
            }
            Response::Stream | Response::Stored | Response::Hello(_) => {
                *guard = None;
                Err(self.broken(
                    key,
                    "answered a read with a stream, a write or an introduction",
                ))
            }
        }
    }

    fn open(
        &self,
        key: &str,
        from: u64,
        max_bytes: u64,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let req = Request::Open {
            key: key.to_owned(),
            from,
            max: max_bytes,
        };
        let (resp, guard) = self.exchange(key, &req)?;
        match resp {
            Response::Stream => {
                drop(guard);
                Ok(Box::new(ChunkReader {
                    worker: Arc::clone(&self.worker),
                    left_in_chunk: 0,
                    done: false,
                }))
            }
            Response::Error { kind, detail } => Err(self.fail(key, kind_from_name(&kind), detail)),
            _ => {
                let mut guard = guard;
                *guard = None;
                Err(self.broken(key, "answered an open with an object"))
            }
        }
    }

    fn put_new(&self, key: &str, _body: &mut dyn Read, _len: u64) -> Result<(), StoreError> {
        Err(self.fail(
            key,
            StoreErrorKind::Unsupported,
            "the fetch worker only reads".into(),
        ))
    }

    fn put_swap(
        &self,
        key: &str,
        _body: &[u8],
        _expected: Option<&ETag>,
    ) -> Result<ETag, StoreError> {
        Err(self.fail(
            key,
            StoreErrorKind::Unsupported,
            "the fetch worker only reads".into(),
        ))
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        if let Some(local) = &self.local {
            let (tx, rx) = std::sync::mpsc::channel();
            let (local, owned_key, body) = (Arc::clone(local), key.to_owned(), body.to_vec());
            std::thread::Builder::new()
                .name("npcnix-receipt-write".into())
                .spawn(move || {
                    let _ = tx.send(local.store().put(&owned_key, &body));
                })
                .map_err(|e| self.broken(key, e))?;
            return rx.recv_timeout(LOCAL_PUT_TIMEOUT).unwrap_or_else(|_| {
                Err(self.fail(
                    key,
                    StoreErrorKind::Transient,
                    format!(
                        "writing it did not finish within {} s (a hung network file system?)",
                        LOCAL_PUT_TIMEOUT.as_secs()
                    ),
                ))
            });
        }
        if body.len() as u64 > PUT_MAX {
            return Err(self.fail(
                key,
                StoreErrorKind::TooLarge,
                format!("the fetch worker writes at most {PUT_MAX} bytes"),
            ));
        }
        let req = Request::Put {
            key: key.to_owned(),
            len: body.len() as u64,
        };
        let (resp, guard) = self.exchange_with(key, &req, body)?;
        if let Some(w) = guard.as_ref() {
            w.disarm();
        }
        match resp {
            Response::Stored => Ok(()),
            Response::Error { kind, detail } => Err(self.fail(key, kind_from_name(&kind), detail)),
            other => Err(self.broken(key, format!("unexpected answer {other:?}"))),
        }
    }

    fn list(&self, prefix: &str, _max: usize) -> Result<Vec<String>, StoreError> {
        Err(self.fail(
            prefix,
            StoreErrorKind::Unsupported,
            "the fetch worker does not list".into(),
        ))
    }
}

/// Reads a streamed object's chunks from the worker. The caller's bounded
/// hashing adapter decides how much is acceptable; a transport problem drops
/// the worker.
struct ChunkReader {
    worker: Arc<Mutex<Option<Worker>>>,
    left_in_chunk: u32,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let mut guard = self
            .worker
            .lock()
            .map_err(|_| io::Error::other("fetch worker lock poisoned"))?;
        let result = (|| -> io::Result<usize> {
            let w = guard
                .as_mut()
                .ok_or_else(|| io::Error::other("the fetch worker is gone"))?;
            if self.left_in_chunk == 0 {
                let mut len = [0u8; 4];
                w.from.read_exact(&mut len)?;
                match u32::from_be_bytes(len) {
                    0 => {
                        self.done = true;
                        w.disarm();
                        return Ok(0);
                    }
                    CHUNK_ERROR => {
                        let e: Response = read_header(&mut w.from)?;
                        self.done = true;
                        let detail = match e {
                            Response::Error { kind, detail } => format!("{kind}: {detail}"),
                            _ => "malformed error".into(),
                        };
                        return Err(io::Error::other(detail));
                    }
                    n => self.left_in_chunk = n,
                }
            }
            let want = buf.len().min(self.left_in_chunk as usize);
            let n = w.from.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the fetch worker ended a chunk early",
                ));
            }
            self.left_in_chunk -= n as u32;
            Ok(n)
        })();
        if result.is_err() && !self.done {
            *guard = None;
        }
        result
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        // A stream abandoned half-way leaves bytes in the pipe: start over.
        if !self.done {
            if let Ok(mut g) = self.worker.lock() {
                *g = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_user_is_looked_up_and_root_is_never_one() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnpcnix-fetch:x:991:990::/var/empty:/bin/false\nevil:x:0:5::/:/bin/sh\n";
        assert_eq!(
            FetchUser::from_passwd(passwd, "npcnix-fetch"),
            Some(FetchUser { uid: 991, gid: 990 })
        );
        assert_eq!(FetchUser::from_passwd(passwd, "root"), None);
        assert_eq!(FetchUser::from_passwd(passwd, "evil"), None);
        assert_eq!(FetchUser::from_passwd(passwd, "nobody"), None);
    }

    #[test]
    fn the_real_uid_is_read_from_proc_status() {
        let status = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t991\t991\t991\t991\nGid:\t990\t990\t990\t990\n";
        assert_eq!(status_uid(status), Some(991));
        assert_eq!(status_uid("Name:\tx\n"), None);
        assert_eq!(
            status_uid(&std::fs::read_to_string("/proc/self/status").expect("status")),
            crate::fsutil::current_uid().ok()
        );
    }
}
