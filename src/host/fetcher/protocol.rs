//! The wire protocol between the agent (root) and its fetch worker: one
//! JSON request line (a `put` followed by its body), one bounded JSON
//! response header line, then the object's bytes or a chunked stream (see
//! the parent module's docs for the framing).

use std::io::{self, BufRead, Read};

use serde::{Deserialize, Serialize};

use crate::store::StoreErrorKind;

/// Longest response header line.
pub(super) const HEADER_MAX: u64 = 4096;
/// Chunk length announcing an error header instead of data.
pub const CHUNK_ERROR: u32 = u32::MAX;

/// A request to the worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Get {
        key: String,
        if_none_match: Option<String>,
        limit: u64,
    },
    Open {
        key: String,
        /// Where the stream starts (a resumed download).
        #[serde(default)]
        from: u64,
        max: u64,
    },
    /// Followed by exactly `len` body bytes (at most [`PUT_MAX`]).
    Put { key: String, len: u64 },
}

/// Largest object the worker writes (host receipts are a few KiB).
pub const PUT_MAX: u64 = 64 * 1024;

/// A response header from the worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Response {
    Object {
        len: u64,
        etag: Option<String>,
    },
    NotModified,
    Stream,
    Stored,
    Error {
        kind: String,
        detail: String,
    },
    /// The worker's first line, before it reads a request: who it runs as
    /// and how it is confined (trustworthy as far as the worker is: it has
    /// parsed nothing from the network yet).
    Hello(Hello),
}

/// How a worker introduced itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub uid: u32,
    /// `enforced`, `partial` or `unavailable`.
    pub landlock: String,
    /// In words, from the worker (its kernel's reason): shown by the worker
    /// only; the root side describes `landlock` in its own words.
    pub confinement: String,
}

impl Hello {
    pub fn new(uid: u32, c: &crate::archive::confine::Confinement) -> Hello {
        use crate::archive::confine::Confinement;
        let (landlock, confinement) = match c {
            Confinement::Enforced => (
                "enforced",
                "landlock enforced: no file-system writes".to_string(),
            ),
            Confinement::Partial => ("partial", c.to_string()),
            Confinement::Unavailable(why) => (
                "unavailable",
                format!("landlock unavailable ({why}): file permissions only"),
            ),
        };
        Hello {
            uid,
            landlock: landlock.into(),
            confinement,
        }
    }

    pub fn landlock_enforced(&self) -> bool {
        self.landlock == "enforced"
    }

    /// The confinement in the root side's words (the worker's own text is
    /// never repeated into status or the audit log).
    pub fn describe(&self) -> String {
        match self.landlock.as_str() {
            "enforced" => "landlock enforced: no file-system writes".into(),
            "partial" => "landlock partially enforced (older kernel ABI)".into(),
            _ => "landlock unavailable: file permissions only".into(),
        }
    }
}

/// The names of store error kinds on the wire.
pub fn kind_name(k: StoreErrorKind) -> &'static str {
    match k {
        StoreErrorKind::NotFound => "not-found",
        StoreErrorKind::PreconditionFailed => "precondition-failed",
        StoreErrorKind::TooLarge => "too-large",
        StoreErrorKind::Unauthorized => "unauthorized",
        StoreErrorKind::Transient => "transient",
        StoreErrorKind::Protocol => "protocol",
        StoreErrorKind::Unsupported => "unsupported",
        StoreErrorKind::Other => "other",
    }
}

pub(super) fn kind_from_name(s: &str) -> StoreErrorKind {
    match s {
        "not-found" => StoreErrorKind::NotFound,
        "precondition-failed" => StoreErrorKind::PreconditionFailed,
        "too-large" => StoreErrorKind::TooLarge,
        "unauthorized" => StoreErrorKind::Unauthorized,
        "transient" => StoreErrorKind::Transient,
        "protocol" => StoreErrorKind::Protocol,
        "unsupported" => StoreErrorKind::Unsupported,
        _ => StoreErrorKind::Other,
    }
}

/// Reads one bounded JSON header line.
pub fn read_header<R: BufRead, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<T> {
    let mut line = Vec::new();
    r.take(HEADER_MAX).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "header line missing or too long",
        ));
    }
    serde_json::from_slice(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
