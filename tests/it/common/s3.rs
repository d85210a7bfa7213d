//! Real S3-compatible servers on 127.0.0.1 for the tests: moto (conditional
//! GET and PUT) and s3s-fs (credential checks), plus a TCP proxy that can
//! cut or stall responses to model a dying or slow server.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_port(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} did not start on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Finds a server binary: `$ENV_VAR`, else the pinned venv `scripts/test`
/// creates (`.ci-venv`), else (s3s-fs only) on PATH. A moto on PATH is not
/// used: its version is unknown, and an old one fails tests for the wrong
/// reason (`scripts/test` checks the version of the one it sets). Missing:
/// the test is skipped ([`super::skip`]; a failure in CI).
pub fn find_server(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".ci-venv/bin")
        .join(name);
    if venv.exists() {
        return Some(venv);
    }
    let found = if name == "moto_server" {
        None
    } else {
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    if found.is_none() {
        super::skip(&format!(
            "{name} not found (set {env_var}, or run bash scripts/test, which installs the pinned version)"
        ));
    }
    found
}

/// A moto S3 server with one bucket; its access log counts requests.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub bucket: String,
    log: PathBuf,
}

impl Moto {
    pub fn start(dir: &Path) -> Option<Moto> {
        let bin = find_server("NPCNIX_MOTO_SERVER", "moto_server")?;
        // The free port is released before moto binds it, so another
        // process (a parallel test, another test run) may take it first:
        // then moto exits, or the bucket request reaches someone else. Retry
        // on a new port rather than fail on that race.
        for attempt in 1..=5 {
            let port = free_port();
            let log = dir.join(format!("moto-{port}.log"));
            let mut child = Command::new(&bin)
                .env("PYTHONUNBUFFERED", "1")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("start moto_server");
            wait_port(port, "moto_server");
            let bucket = "npcnix-test".to_owned();
            let agent = ureq::Agent::new_with_defaults();
            let created = agent
                .put(&format!("http://127.0.0.1:{port}/{bucket}"))
                .send_empty()
                .is_ok_and(|r| r.status().is_success());
            let alive = matches!(child.try_wait(), Ok(None));
            if created && alive {
                return Some(Moto {
                    child,
                    port,
                    bucket,
                    log,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "moto_server on port {port} did not come up as ours (attempt {attempt}); retrying"
            );
        }
        panic!("moto_server did not start on a free port in 5 attempts");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, remote: &str) -> String {
        format!("s3://{}/npcnix/remotes/{remote}", self.bucket)
    }

    /// The same remote as a plain HTTP mirror (moto serves objects to
    /// anonymous GETs, with ETags and ranges, like a static web server).
    pub fn http_url(&self, remote: &str) -> String {
        format!(
            "{}/{}/npcnix/remotes/{remote}",
            self.endpoint(),
            self.bucket
        )
    }

    /// The requests logged after the first `before`, waiting for the log
    /// to catch up (moto writes its access line after answering).
    pub fn requests_since(&self, before: usize, at_least: usize) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(5);
        while self.requests().len() < before + at_least && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Give any further (unexpected) request a moment to show up too.
        std::thread::sleep(Duration::from_millis(500));
        self.requests().split_off(before.min(self.requests().len()))
    }

    /// Access-log lines so far (one per request), with werkzeug's ANSI
    /// colours (used for non-200 statuses) removed.
    pub fn requests(&self) -> Vec<String> {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
            .lines()
            .filter(|l| {
                l.contains("\"GET ")
                    || l.contains("\"PUT ")
                    || l.contains("\"POST ")
                    || l.contains("\"HEAD ")
            })
            .map(str::to_owned)
            .collect()
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip "ESC [ ... letter".
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// s3s-fs: an S3 server over a directory that checks credentials.
pub struct S3sFs {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
}

impl S3sFs {
    pub const ACCESS_KEY: &'static str = "npcnix-good-key";
    pub const SECRET_KEY: &'static str = "npcnix-good-secret";

    pub fn start(dir: &Path) -> Option<S3sFs> {
        let bin = find_server("NPCNIX_S3S_FS", "s3s-fs")?;
        let port = free_port();
        let root = dir.join("s3s-root");
        std::fs::create_dir_all(root.join("npcnix-test")).expect("bucket dir");
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                Self::ACCESS_KEY,
                "--secret-key",
                Self::SECRET_KEY,
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        wait_port(port, "s3s-fs");
        Some(S3sFs { child, port, root })
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to server responses.
pub const PASS: u8 = 0;
/// Close the connection after `budget` response bytes (server dies).
pub const CUT: u8 = 1;
/// Stop forwarding after `budget` response bytes, keep the socket open.
pub const STALL: u8 = 2;

/// Answer every request "304 Not Modified" without asking the server.
pub const NOT_MODIFIED: u8 = 3;

/// A TCP proxy in front of a server, counting nothing but able to cut or
/// stall responses.
pub struct Proxy {
    pub port: u16,
    pub mode: Arc<AtomicU8>,
    pub budget: Arc<AtomicU64>,
    /// `(needle, n)`: the next `n` PUT requests whose request line contains
    /// `needle` reach the server, but their answers are lost (the
    /// connection is closed instead): a write that happened while the
    /// client saw only a failure.
    pub lose_put_answers: Arc<std::sync::Mutex<Option<(String, u32)>>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let (m, b) = (Arc::clone(&mode), Arc::clone(&budget));
        let lose_put_answers: Arc<std::sync::Mutex<Option<(String, u32)>>> = Arc::default();
        let lose = Arc::clone(&lose_put_answers);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if m.load(Ordering::SeqCst) == NOT_MODIFIED {
                    std::thread::spawn(move || answer_not_modified(client));
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (m, b) = (Arc::clone(&m), Arc::clone(&b));
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                // Set by the request side when this connection's current
                // request is a PUT whose answer is to be lost.
                let losing = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (lose, losing_req) = (Arc::clone(&lose), Arc::clone(&losing));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if buf[..n].starts_with(b"PUT ") {
                            let line = String::from_utf8_lossy(&buf[..n]);
                            let line = line.lines().next().unwrap_or_default().to_owned();
                            let mut l = lose.lock().expect("lock");
                            if let Some((needle, left)) = l.as_mut() {
                                if *left > 0 && line.contains(needle.as_str()) {
                                    *left -= 1;
                                    losing_req.store(true, Ordering::SeqCst);
                                }
                            }
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let (mut s_read, mut c_write) = (server, client);
                    let mut sent = 0u64;
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = s_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if losing.load(Ordering::SeqCst) {
                            // The server has answered (the write happened);
                            // the client never hears it.
                            let _ = c_write.shutdown(Shutdown::Both);
                            break;
                        }
                        let mode = m.load(Ordering::SeqCst);
                        let budget = b.load(Ordering::SeqCst);
                        let allowed = if mode == PASS {
                            n as u64
                        } else {
                            budget.saturating_sub(sent).min(n as u64)
                        };
                        if allowed > 0 && c_write.write_all(&buf[..allowed as usize]).is_err() {
                            break;
                        }
                        sent += allowed;
                        if allowed < n as u64 {
                            if mode == CUT {
                                let _ = c_write.shutdown(Shutdown::Both);
                                break;
                            }
                            // STALL: hold the connection open, send nothing.
                            std::thread::sleep(Duration::from_secs(30));
                            break;
                        }
                    }
                });
            }
        });
        Proxy {
            port,
            mode,
            budget,
            lose_put_answers,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: u8, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Reads requests from `client` and answers each "304 Not Modified".
fn answer_not_modified(client: TcpStream) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(client.try_clone().expect("clone"));
    let mut out = client;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let resp = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(resp).is_err() {
            return;
        }
    }
}
