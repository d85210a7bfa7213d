//! Stores: where releases live. The store is untrusted for integrity; every
//! byte read from it is verified by the caller (signatures for bundles,
//! BLAKE3 and size for archives).
//!
//! A [`Store`] is addressed per remote: keys are relative to the remote's
//! prefix (`latest`, `releases/<v>`, `archives/<hash>.tar.zst`). Backends
//! implement six operations with the semantics the protocol needs; limits
//! and hashing are applied by the caller through [`crate::store::transfer`], in one
//! place for all backends.

pub mod file;
#[cfg(feature = "http")]
pub mod http;
mod log;
mod mirrored;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;
pub mod tlog;
pub mod transfer;

pub use log::{Object, ReleaseLog, CHECKPOINT_MAX_BYTES, LOG_BUNDLE_LIMITS};

use std::fmt;
use std::io::Read;

/// An opaque entity tag identifying one version of an object.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ETag(pub String);

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.0)
    }
}

impl ETag {
    /// Longest ETag npcnix keeps and sends back.
    pub const MAX_LEN: usize = 256;

    /// Whether this is one RFC 9110 entity-tag (`"opaque"` or `W/"opaque"`)
    /// that is safe to send back in `If-None-Match`. A `*`, a list, or an
    /// oversized value from a hostile or broken store would make every later
    /// conditional request answer "not modified" (or fail): such ETags are
    /// never kept.
    pub fn is_sendable(&self) -> bool {
        let s = self.0.as_bytes();
        let opaque = s.strip_prefix(b"W/").unwrap_or(s);
        s.len() <= Self::MAX_LEN
            && opaque.len() >= 2
            && opaque[0] == b'"'
            && opaque[opaque.len() - 1] == b'"'
            && opaque[1..opaque.len() - 1]
                .iter()
                .all(|&c| c == 0x21 || (0x23..=0x7e).contains(&c))
    }
}

/// What a store error means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The object does not exist.
    NotFound,
    /// A create-only or compare-and-swap precondition failed: someone else
    /// wrote first.
    PreconditionFailed,
    /// The object is larger than the caller's limit.
    TooLarge,
    /// Credentials missing or refused.
    Unauthorized,
    /// Network trouble, throttling, server errors: retry later.
    Transient,
    /// The store answered against the protocol (e.g. "not modified" to a
    /// request that carried no `If-None-Match`): its answer is not used.
    Protocol,
    /// This kind of store cannot do that (an HTTP mirror cannot list or
    /// write).
    Unsupported,
    /// Anything else (misconfiguration, local I/O).
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{store}: {key}: {detail}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub store: String,
    pub key: String,
    pub detail: String,
    /// The underlying error, where there is one (kept for `{:#}` chains).
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, store: &str, key: &str, detail: String) -> StoreError {
        StoreError {
            kind,
            store: store.to_owned(),
            key: key.to_owned(),
            detail,
            source: None,
        }
    }

    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }

    /// A store that failed (connection, time-out, 5xx, throttling), as
    /// opposed to one that answered: only failures back off.
    pub fn is_transient(&self) -> bool {
        self.kind == StoreErrorKind::Transient
    }

    /// Whether asking again soon may help ([`retry`]): a transient failure,
    /// except a refused TLS certificate, which is a setup problem that
    /// fails the same way every time (the clients report it only as text,
    /// hence the text test; the agent still backs off on it).
    pub fn is_retryable(&self) -> bool {
        let t = self.detail.to_ascii_lowercase();
        self.is_transient() && !(t.contains("certificate") || t.contains("unknownissuer"))
    }
}

/// An error and its sources as one line ("a: b: c"), each text once: the
/// SDK's and the HTTP client's errors nest wrappers that repeat their
/// source.
pub(crate) fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in std::iter::successors(Some(e), |c| c.source()) {
        let text = c.to_string();
        if parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        // A wrapper that quotes its source: keep the more specific text.
        parts.retain(|p| !text.contains(p.as_str()));
        parts.push(text);
    }
    parts.join(": ")
}

/// A hint for the usual network failures, from an error's text (the SDK
/// and the HTTP client report these only as text at the bottom of their
/// chains).
pub(crate) fn network_hint(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    if t.contains("loading credentials") || t.contains("no credentials") {
        Some("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give the host an instance profile")
    } else if t.contains("connection refused") {
        Some("nothing accepts connections there: check the URL (for S3-compatible stores: --endpoint, remote.endpoint) and that the server runs")
    } else if t.contains("dns error") || t.contains("lookup address") || t.contains("resolve") {
        Some("the host name does not resolve: check the URL, the bucket name, the region and --endpoint, and the host's DNS")
    } else if t.contains("certificate") || t.contains("unknownissuer") || t.contains("tls") {
        Some("TLS failed: is the server's certificate issued by a CA this host trusts? (system store, SSL_CERT_FILE/SSL_CERT_DIR, or --ca-file / remote.ca_file)")
    } else if t.contains("timed out") || t.contains("timeout") {
        Some("no answer in time: check the network path (firewall, proxy); time-outs are --connect-timeout/--read-timeout")
    } else {
        None
    }
}

/// Result of a conditional small-object read.
#[derive(Debug)]
pub enum Fetched {
    /// The object still has the ETag the caller presented.
    NotModified,
    Object {
        bytes: Vec<u8>,
        etag: Option<ETag>,
    },
}

/// A release store for one remote: what a backend implements. Private to
/// the library: everything outside reads through [`Remote::log`] (the
/// bounded, typed [`ReleaseLog`]) and writes through the editor
/// (`crate::publish`) or the agent's receipts.
pub(crate) trait Store: Send + Sync {
    /// Human-readable location (URL) for messages.
    fn describe(&self) -> String;

    /// Reads a small object whole. With `if_none_match`, an unchanged object
    /// yields [`Fetched::NotModified`] (one cheap request on S3/HTTP); without
    /// it, a "not modified" answer is [`StoreErrorKind::Protocol`]. More
    /// than `limit` bytes is [`StoreErrorKind::TooLarge`].
    fn get(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        limit: u64,
    ) -> Result<Fetched, StoreError>;

    /// Opens a possibly large object as a stream starting at byte `from`
    /// (a Range request: a download resumes where it broke). `max_bytes`
    /// is the end to read up to, a hint (a backend may ask the server for
    /// no more); the caller enforces it.
    fn open(
        &self,
        key: &str,
        from: u64,
        max_bytes: u64,
    ) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Creates `key` with `len` bytes from `body`, only if it does not exist
    /// (else [`StoreErrorKind::PreconditionFailed`]).
    fn put_new(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), StoreError>;

    /// Replaces `key` only if its current ETag is `expected` (`None`: only if
    /// it does not exist). Returns the new ETag.
    fn put_swap(&self, key: &str, body: &[u8], expected: Option<&ETag>)
        -> Result<ETag, StoreError>;

    /// Writes a small object unconditionally (create or overwrite): host
    /// receipts, one per host, each written only by its host. Read-only
    /// stores say [`StoreErrorKind::Unsupported`].
    fn put(&self, key: &str, _body: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::new(
            StoreErrorKind::Unsupported,
            &self.describe(),
            key,
            "this store is read-only".into(),
        ))
    }

    /// Lists keys starting with `prefix`, sorted; more than `max` keys is
    /// [`StoreErrorKind::TooLarge`] (a store full of junk must not exhaust
    /// memory).
    fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError>;
}

/// Most keys a listing returns ([`Store::list`]).
pub const MAX_LISTED: usize = 1_000_000;

/// Whether `key` names an object whose absence is normal and means
/// nothing was decided (rollout decisions, issue 35) or only that a faster
/// path is not there (archive outboards, issue 36; a witness's cosigned
/// checkpoint and the log's index hints, issue 37): readers take "no such
/// object" (or, where the store's read policy answers that way, "access
/// denied") as "none", and a mirror's "none" is its answer.
pub fn is_optional(key: &str) -> bool {
    key.starts_with("rollouts/")
        || (key.starts_with("archives/") && key.ends_with(".obao"))
        || key.starts_with("witnesses/")
        || key.starts_with("log/index/")
}

/// Key of the mutable head pointer.
pub const LATEST: &str = "latest";

/// Key of the immutable bundle of `version` (20 digits, so lexical order is
/// numeric order).
pub fn release_key(version: u64) -> String {
    format!("releases/{version:020}")
}

/// Parses a `releases/<20 digits>` key.
pub fn parse_release_key(key: &str) -> Option<u64> {
    let digits = key.strip_prefix("releases/")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("unsupported remote URL {url:?}: expected {accepted}", url = .0, accepted = Scheme::accepted())]
    Scheme(String),
    #[error("remote URL {0:?} has no path")]
    Empty(String),
    #[error("{0}")]
    S3(String),
    /// The client could not be set up (e.g. an unreadable CA bundle).
    #[error("{0}")]
    Setup(String),
}

/// Default TCP (and TLS) connect time-out, seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Default time-out for each network read (a response, a body chunk),
/// seconds.
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 30;

/// Backend settings that are not part of the URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// S3 region (else the standard AWS chain, else us-east-1).
    pub region: Option<String>,
    /// S3-compatible endpoint (else `AWS_ENDPOINT_URL` or AWS itself).
    pub endpoint: Option<String>,
    /// Path-style S3 addressing (`endpoint/bucket/key`), for S3-compatible
    /// servers without virtual-host buckets.
    pub path_style: bool,
    /// Network read timeout in seconds (default
    /// [`DEFAULT_READ_TIMEOUT_SECS`]), per read.
    pub read_timeout_secs: Option<u64>,
    /// Connect time-out in seconds (default [`DEFAULT_CONNECT_TIMEOUT_SECS`]).
    pub connect_timeout_secs: Option<u64>,
    /// Extra CA certificates (PEM) that HTTPS servers may be issued by,
    /// besides the platform's trust store (which honours `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR`): for stores and mirrors behind a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// Slowest transfer rate waited for: every object read has an overall
    /// deadline of a minute plus its size at this rate (default
    /// [`transfer::DEFAULT_MIN_RATE_BYTES_PER_SEC`]).
    pub min_rate_bytes_per_sec: Option<u64>,
    /// Attempts the S3 client makes per request on its own, silently
    /// (`None`: the SDK's default, 3). The operator commands set 1 and
    /// retry visibly themselves ([`retry`]); the agent keeps the default.
    pub client_attempts: Option<u32>,
    /// AWS profile of the shared config files (else `AWS_PROFILE`, else
    /// `default`): SSO, `credential_process`, assume-role.
    pub profile: Option<String>,
}

/// Opens the store a remote URL names.
pub fn open_url(url: &str, opts: &StoreOptions) -> Result<Remote, UrlError> {
    let scheme = Scheme::of(url).ok_or_else(|| UrlError::Scheme(url.to_owned()))?;
    let store: Box<dyn Store> = match scheme.kind {
        SchemeKind::File => {
            let path = url.strip_prefix(scheme.prefix).unwrap_or_default();
            if path.is_empty() {
                return Err(UrlError::Empty(url.to_owned()));
            }
            Box::new(file::FileStore::new(path.into(), url.to_owned()))
        }
        #[cfg(feature = "s3")]
        SchemeKind::S3 => Box::new(s3::S3Store::new(url, opts)?),
        #[cfg(feature = "http")]
        SchemeKind::Http => Box::new(http::HttpStore::new(url, opts)?),
    };
    let _ = opts;
    Ok(Remote::new(store))
}

/// The kinds of store npcnix can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemeKind {
    File,
    #[cfg(feature = "s3")]
    S3,
    #[cfg(feature = "http")]
    Http,
}

/// One URL scheme: the one table every URL check and every `open_url`
/// reads (the host config, `--remote`, the fetch worker).
#[derive(Clone, Copy, Debug)]
pub struct Scheme {
    pub prefix: &'static str,
    pub kind: SchemeKind,
    /// What a well-formed URL of this scheme looks like (for messages).
    pub example: &'static str,
}

/// The schemes this build can open.
pub const SCHEMES: &[Scheme] = &[
    Scheme {
        prefix: "file://",
        kind: SchemeKind::File,
        example: "file:///absolute/path",
    },
    #[cfg(feature = "s3")]
    Scheme {
        prefix: "s3://",
        kind: SchemeKind::S3,
        example: "s3://bucket/prefix/remote",
    },
    #[cfg(feature = "http")]
    Scheme {
        prefix: "https://",
        kind: SchemeKind::Http,
        example: "https://mirror.example.org/path",
    },
    #[cfg(feature = "http")]
    Scheme {
        prefix: "http://",
        kind: SchemeKind::Http,
        // Said once, with https.
        example: "",
    },
];

impl Scheme {
    /// The scheme of `url`, if this build can open it.
    pub fn of(url: &str) -> Option<&'static Scheme> {
        SCHEMES.iter().find(|s| url.starts_with(s.prefix))
    }

    /// Whether `url` is well formed for its scheme (a typo is caught before
    /// anything runs).
    pub fn well_formed(url: &str) -> bool {
        let Some(s) = Scheme::of(url) else {
            return false;
        };
        let rest = &url[s.prefix.len()..];
        match s.kind {
            SchemeKind::File => rest.starts_with('/'),
            #[cfg(feature = "s3")]
            SchemeKind::S3 => s3::parse_url(url).is_some(),
            #[cfg(feature = "http")]
            SchemeKind::Http => !rest.is_empty() && !rest.starts_with('/'),
        }
    }

    /// "file:///absolute/path, s3://... or https://...": what is accepted.
    pub fn accepted() -> String {
        let ex: Vec<&str> = SCHEMES
            .iter()
            .map(|s| s.example)
            .filter(|e| !e.is_empty())
            .collect();
        match ex.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => ex.join(""),
        }
    }
}

/// A remote's store, as the world outside the library holds it: it can say
/// where it is and hand out its [`ReleaseLog`], the one bounded, typed read
/// path; writes are the editor's (`crate::publish`) and the agent's.
pub struct Remote(Box<dyn Store>, Resumes);

/// Whether the store already resumes a read that broke (operator
/// commands' retrying front, [`retry::observed`]): a verified stream then
/// leaves resuming to it rather than multiplying the attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resumes {
    Itself,
    ByCaller,
}

impl Remote {
    pub(crate) fn new(store: Box<dyn Store>) -> Remote {
        Remote(store, Resumes::ByCaller)
    }

    pub(crate) fn resuming_itself(store: Box<dyn Store>) -> Remote {
        Remote(store, Resumes::Itself)
    }

    /// Where the store is (its URL), for messages.
    pub fn describe(&self) -> String {
        self.0.describe()
    }

    /// The remote's objects, read bounded and typed.
    pub fn log(&self) -> ReleaseLog<'_> {
        ReleaseLog::new(self.0.as_ref()).with_resumes(self.1)
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.0.as_ref()
    }

    pub(crate) fn into_inner(self) -> Box<dyn Store> {
        self.0
    }
}

/// Reads a PEM CA bundle (`StoreOptions::ca_file`): its bytes, checked to
/// hold at least one certificate.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, UrlError> {
    let bytes = std::fs::read(path)
        .map_err(|e| UrlError::Setup(format!("reading the CA file {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(UrlError::Setup(format!(
            "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The default remote name: the URL's last non-empty path segment.
pub fn default_remote_name(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').rev().find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    /// The module doc says how many operations a backend implements: the
    /// `fn`s of the `Store` trait besides `describe`.
    #[test]
    fn the_module_doc_counts_the_store_operations() {
        let src = include_str!("mod.rs");
        let start = src.find("pub(crate) trait Store").expect("trait");
        let body = &src[start..start + src[start..].find("\n}\n").expect("end")];
        let n = body.matches("    fn ").count() - body.matches("    fn describe").count();
        let words = [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
        ];
        assert!(
            src.contains(&format!("implement {} operations", words[n])),
            "the Store trait has {n} operations; fix the module doc"
        );
    }

    use super::*;

    #[test]
    fn release_keys_sort_numerically() {
        assert_eq!(release_key(42), "releases/00000000000000000042");
        assert_eq!(parse_release_key(&release_key(u64::MAX)), Some(u64::MAX));
        assert!(release_key(9) < release_key(10));
        assert_eq!(parse_release_key("releases/42"), None);
    }

    #[test]
    fn only_single_bounded_entity_tags_are_sent_back() {
        for ok in ["\"abc\"", "W/\"abc\"", "\"\"", "\"0123456789abcdef\""] {
            assert!(ETag(ok.into()).is_sendable(), "{ok}");
        }
        let long = format!("\"{}\"", "a".repeat(ETag::MAX_LEN));
        for bad in [
            "*",
            "abc",
            "\"a\", \"b\"",
            "\"a b\"",
            "\"",
            "W/",
            "\"a\"\r\nx: y",
            long.as_str(),
        ] {
            assert!(!ETag(bad.into()).is_sendable(), "{bad}");
        }
    }

    #[test]
    fn remote_name_defaults_to_last_segment() {
        assert_eq!(
            default_remote_name("s3://b/npcnix/remotes/prod/"),
            Some("prod")
        );
        assert_eq!(default_remote_name("file:///tmp/x/dev"), Some("dev"));
    }
}
