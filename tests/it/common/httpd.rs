//! A minimal static HTTP server over a directory, standing in for any web
//! server or CDN mirroring a remote: GET with ETag / If-None-Match (304) and
//! `Range: bytes=0-N` (206), 404 for missing files. Counts requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct Httpd {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// When set, every request is answered "304 Not Modified", whether or
    /// not it carried If-None-Match (a broken or hostile mirror).
    pub always_not_modified: Arc<AtomicBool>,
    /// When set, 200 answers carry this ETag instead of the real one (a
    /// poisoned response, e.g. `*`).
    pub etag_override: Arc<Mutex<Option<String>>>,
    /// Requests that carried If-None-Match.
    pub conditional: Arc<AtomicUsize>,
    /// When set, requests are read and never answered (for 60 s): a store
    /// that stalls.
    pub stall: Arc<AtomicBool>,
    /// The next this-many requests are answered "503 Service Unavailable"
    /// (a store that is briefly overloaded).
    pub fail_next: Arc<AtomicUsize>,
    /// The next this-many answers with a body of more than 64 KiB send
    /// half of it and close the connection (a transfer that breaks).
    pub cut_next_body: Arc<AtomicUsize>,
    /// When set, every request is answered "302 Found" with this prefix
    /// and the request's path as `Location` (a mirror that redirects).
    pub redirect_to: Arc<Mutex<Option<String>>>,
}

impl Httpd {
    pub fn serve(root: PathBuf) -> Httpd {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        let always_not_modified = Arc::new(AtomicBool::new(false));
        let nm = Arc::clone(&always_not_modified);
        let etag_override: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let conditional = Arc::new(AtomicUsize::new(0));
        let (eo, cond) = (Arc::clone(&etag_override), Arc::clone(&conditional));
        let stall = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stall);
        let fail_next = Arc::new(AtomicUsize::new(0));
        let fails = Arc::clone(&fail_next);
        let cut_next_body = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::clone(&cut_next_body);
        let redirect_to: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let redirect = Arc::clone(&redirect_to);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                let count = Arc::clone(&count);
                let nm = Arc::clone(&nm);
                let (eo, cond) = (Arc::clone(&eo), Arc::clone(&cond));
                let st = Arc::clone(&st);
                let fails = Arc::clone(&fails);
                let cuts = Arc::clone(&cuts);
                let redirect = Arc::clone(&redirect);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut out = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                        let (mut inm, mut range) = (None, None);
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                            let lower = h.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("if-none-match:") {
                                inm = Some(v.trim().to_owned());
                            }
                            if let Some(v) = lower.strip_prefix("range: bytes=0-") {
                                range = v.trim().parse::<usize>().ok();
                            }
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        if st.load(Ordering::SeqCst) {
                            std::thread::sleep(std::time::Duration::from_secs(60));
                            return;
                        }
                        if inm.is_some() {
                            cond.fetch_add(1, Ordering::SeqCst);
                        }
                        if fails
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                        {
                            let r =
                                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
                            if out.write_all(r).is_err() {
                                return;
                            }
                            continue;
                        }
                        if let Some(to) = redirect.lock().expect("lock").clone() {
                            let r = format!(
                                "HTTP/1.1 302 Found\r\nlocation: {to}{path}\r\ncontent-length: 0\r\n\r\n"
                            );
                            if out.write_all(r.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                        let file = root.join(path.trim_start_matches('/'));
                        let resp = match std::fs::read(&file) {
                            _ if nm.load(Ordering::SeqCst) => {
                                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n".to_vec()
                            }
                            Err(_) => {
                                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec()
                            }
                            Ok(body) => {
                                let etag = format!("\"{}\"", blake3::hash(&body).to_hex());
                                if inm.as_deref() == Some(etag.as_str()) {
                                    format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\ncontent-length: 0\r\n\r\n").into_bytes()
                                } else {
                                    let etag = eo.lock().expect("lock").clone().unwrap_or(etag);
                                    let (status, body) = match range {
                                        Some(last) if last + 1 < body.len() => {
                                            ("206 Partial Content", body[..=last].to_vec())
                                        }
                                        _ => ("200 OK", body),
                                    };
                                    let mut r = format!(
                                        "HTTP/1.1 {status}\r\netag: {etag}\r\ncontent-length: {}\r\n\r\n",
                                        body.len()
                                    )
                                    .into_bytes();
                                    r.extend_from_slice(&body);
                                    r
                                }
                            }
                        };
                        if resp.len() > 64 << 10
                            && cuts
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok()
                        {
                            let _ = out.write_all(&resp[..resp.len() / 2]);
                            let _ = out.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        if out.write_all(&resp).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Httpd {
            port,
            requests,
            always_not_modified,
            etag_override,
            conditional,
            stall,
            fail_next,
            cut_next_body,
            redirect_to,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn conditional_count(&self) -> usize {
        self.conditional.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
