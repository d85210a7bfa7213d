//! `npcnix fetch-worker` (hidden): the unprivileged network side of a poll.
//! Started by the agent (see `host::fetcher`), never by hand. It denies
//! itself every file-system write (Landlock, which also sets
//! `no_new_privs`), then answers read requests on stdin with store objects
//! on stdout until stdin closes.

use std::io::{self, BufReader, Read, Write};

use anyhow::{bail, Result};

use npcnix::archive::confine::{self, Confinement};
use npcnix::host::fetcher::{kind_name, read_header, Request, Response, CHUNK_ERROR, PUT_MAX};
use npcnix::store::{self, ETag, Fetched, StoreError, StoreOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL")]
    url: String,
    #[arg(long, value_name = "REGION")]
    remote_region: Option<String>,
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    #[arg(long)]
    path_style: bool,
    #[arg(long, value_name = "SECS")]
    read_timeout: Option<u64>,
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<u64>,
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    #[arg(long, value_name = "BYTES_PER_SEC")]
    min_rate: Option<u64>,
}

fn header(out: &mut impl Write, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

fn error(e: &StoreError) -> Response {
    Response::Error {
        kind: kind_name(e.kind).into(),
        detail: e.detail.clone(),
    }
}

/// Test builds only: a compromised worker that corrupts what it hands over
/// (a byte of the signed statement in a bundle, every chunk of an archive).
#[cfg(feature = "test-hooks")]
fn tamper(what: &str, bytes: &mut [u8]) {
    if !std::env::var("NPCNIX_TEST_FETCHER_TAMPER").is_ok_and(|v| v == what) {
        return;
    }
    let at = match what {
        "bundle" => bytes
            .windows(12)
            .position(|w| w == b"\"statement\":")
            .map(|i| i + 12 + 20),
        _ => Some(bytes.len() / 2),
    };
    if let Some(b) = at.and_then(|i| bytes.get_mut(i)) {
        *b = if *b == b'A' { b'B' } else { b'A' };
    }
}

#[cfg(not(feature = "test-hooks"))]
fn tamper(_: &str, _: &mut [u8]) {}

pub fn run(a: Args) -> Result<()> {
    let confinement = confine::deny_all_writes();
    let uid = npcnix::fsutil::current_uid();
    if !matches!(confinement, Confinement::Enforced) {
        info!("fetch worker: {confinement}");
    }
    match uid {
        Ok(0) => bail!("the fetch worker must not run as root"),
        Ok(uid) => info!("fetch worker running as uid {uid}"),
        Err(e) => bail!("cannot tell which user the fetch worker runs as: {e}"),
    }
    let opts = StoreOptions {
        region: a.remote_region,
        endpoint: a.endpoint,
        path_style: a.path_style,
        read_timeout_secs: a.read_timeout,
        connect_timeout_secs: a.connect_timeout,
        ca_file: a.ca_file,
        min_rate_bytes_per_sec: a.min_rate,
        client_attempts: None,
    };
    let store = store::open_url(&a.url, &opts)?;
    let mut input = BufReader::new(io::stdin().lock());
    let mut out = io::BufWriter::new(io::stdout().lock());
    loop {
        let req: Request = match read_header(&mut input) {
            Ok(r) => r,
            // stdin closed: the agent is done with us.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let mut probe = [0u8; 1];
                if input.read(&mut probe)? == 0 {
                    return Ok(());
                }
                bail!("malformed request: {e}");
            }
            Err(e) => return Err(e.into()),
        };
        match req {
            Request::Get {
                key,
                if_none_match,
                limit,
            } => match store.get(&key, if_none_match.map(ETag).as_ref(), limit) {
                Ok(Fetched::Object { mut bytes, etag }) => {
                    tamper("bundle", &mut bytes);
                    header(
                        &mut out,
                        &Response::Object {
                            len: bytes.len() as u64,
                            etag: etag.map(|e| e.0),
                        },
                    )?;
                    out.write_all(&bytes)?;
                }
                Ok(Fetched::NotModified) => header(&mut out, &Response::NotModified)?,
                Err(e) => header(&mut out, &error(&e))?,
            },
            Request::Open { key, max } => match store.open(&key, max) {
                Ok(src) => {
                    header(&mut out, &Response::Stream)?;
                    // One byte past `max` lets the root side see "longer
                    // than signed"; more is never sent.
                    let mut src = src.take(max.saturating_add(1));
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match src.read(&mut buf) {
                            Ok(0) => {
                                out.write_all(&0u32.to_be_bytes())?;
                                break;
                            }
                            Ok(n) => {
                                tamper("archive", &mut buf[..n]);
                                out.write_all(&(n as u32).to_be_bytes())?;
                                out.write_all(&buf[..n])?;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                out.write_all(&CHUNK_ERROR.to_be_bytes())?;
                                header(
                                    &mut out,
                                    &Response::Error {
                                        kind: "transient".into(),
                                        detail: format!("download failed: {e}"),
                                    },
                                )?;
                                break;
                            }
                        }
                    }
                }
                Err(e) => header(&mut out, &error(&e))?,
            },
            Request::Put { key, len } => {
                if len > PUT_MAX {
                    bail!("put of {len} bytes: more than {PUT_MAX}");
                }
                let mut body = vec![0u8; len as usize];
                input.read_exact(&mut body)?;
                match store.put(&key, &body) {
                    Ok(()) => header(&mut out, &Response::Stored)?,
                    Err(e) => header(&mut out, &error(&e))?,
                }
            }
        }
        out.flush()?;
    }
}
