//! The worker side of the protocol (`npcnix fetch-worker`): answers the
//! agent's requests on `input` with store objects on `output` until the
//! input closes. The worker process is only a transport: everything it
//! hands over is verified again by the root side.

use std::io::{self, BufRead, Read, Write};

use super::protocol::{kind_name, read_header, Request, Response, CHUNK_ERROR, PUT_MAX};
use crate::store::{ETag, Fetched, Remote, StoreError};

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

/// Why the worker stops before its input closed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("malformed request: {0}")]
    Request(io::Error),
    #[error("put of {0} bytes: more than {PUT_MAX}")]
    PutTooLarge(u64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Serves requests until `input` closes (after [`introduce`]). `tamper` sees every bundle and
/// archive chunk before it is sent (test builds corrupt them there to
/// model a compromised worker; otherwise it does nothing).
/// The worker's first line (D123), written before anything else happens.
pub fn introduce(out: &mut impl Write, hello: &super::Hello) -> io::Result<()> {
    header(out, &Response::Hello(hello.clone()))?;
    out.flush()
}

pub fn serve(
    remote: &Remote,
    input: &mut impl BufRead,
    out: &mut impl Write,
    tamper: &dyn Fn(&str, &mut [u8]),
) -> Result<(), WorkerError> {
    let store = remote.store();
    loop {
        let req: Request = match read_header(input) {
            Ok(r) => r,
            // stdin closed: the agent is done with us.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let mut probe = [0u8; 1];
                if input.read(&mut probe)? == 0 {
                    return Ok(());
                }
                return Err(WorkerError::Request(e));
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
                        out,
                        &Response::Object {
                            len: bytes.len() as u64,
                            etag: etag.map(|e| e.0),
                        },
                    )?;
                    out.write_all(&bytes)?;
                }
                Ok(Fetched::NotModified) => header(out, &Response::NotModified)?,
                Err(e) => header(out, &error(&e))?,
            },
            Request::Open { key, from, max } => match store.open(&key, from, max) {
                Ok(src) => {
                    header(out, &Response::Stream)?;
                    // One byte past `max` lets the root side see "longer
                    // than signed"; more is never sent.
                    let mut src = src.take(max.saturating_add(1).saturating_sub(from));
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
                                    out,
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
                Err(e) => header(out, &error(&e))?,
            },
            Request::Put { key, len } => {
                if len > PUT_MAX {
                    return Err(WorkerError::PutTooLarge(len));
                }
                let mut body = vec![0u8; len as usize];
                input.read_exact(&mut body)?;
                match store.put(&key, &body) {
                    Ok(()) => header(out, &Response::Stored)?,
                    Err(e) => header(out, &error(&e))?,
                }
            }
        }
        out.flush()?;
    }
}
