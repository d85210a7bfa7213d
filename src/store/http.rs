//! Read-only HTTP(S) mirrors (`https://mirror.example.org/npcnix/prod`).
//!
//! Any static web server or CDN can serve a copy of a remote: everything in
//! it is signed or content-addressed, so the mirror needs no trust. The same
//! rules apply as for every store: conditional GET of `latest` on its ETag
//! (a 304 is one cheap request), size limits before reading, and the
//! caller's size/BLAKE3 adapter on archives. Writes are refused.

use std::io::Read;
use std::time::Duration;

use super::{ETag, Fetched, Store, StoreError, StoreErrorKind, StoreOptions};

/// The CAs an HTTPS mirror's certificate may chain to: the platform's trust
/// store (rustls-native-certs: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set,
/// else the system bundle, e.g. what `update-ca-certificates` or NixOS
/// `security.pki.certificates` maintain), plus the configured CA file.
/// Only a host with no trust store at all and no CA file falls back to the
/// compiled-in Mozilla roots (webpki-roots), as before.
fn root_certs(ca_file: Option<&std::path::Path>) -> Result<ureq::tls::RootCerts, super::UrlError> {
    use ureq::tls::{Certificate, PemItem, RootCerts};
    let mut certs: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if let Some(path) = ca_file {
        let pem = super::read_ca_file(path)?;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => {
                    return Err(super::UrlError::Setup(format!(
                        "the CA file {}: {e}",
                        path.display()
                    )))
                }
            }
        }
    }
    if certs.is_empty() {
        return Ok(RootCerts::WebPki);
    }
    Ok(RootCerts::Specific(std::sync::Arc::new(certs)))
}

pub struct HttpStore {
    base: String,
    agent: ureq::Agent,
    min_rate: u64,
}

impl HttpStore {
    pub fn new(url: &str, opts: &StoreOptions) -> Result<HttpStore, super::UrlError> {
        let read = Duration::from_secs(
            opts.read_timeout_secs
                .unwrap_or(super::DEFAULT_READ_TIMEOUT_SECS),
        );
        let connect = Duration::from_secs(
            opts.connect_timeout_secs
                .unwrap_or(super::DEFAULT_CONNECT_TIMEOUT_SECS),
        );
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(root_certs(opts.ca_file.as_deref())?)
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // No redirects (D122): a mirror is one origin; following a
            // `Location` would let whoever serves the mirror make the host
            // send GETs anywhere its network position reaches (another
            // host, port or scheme). A 3xx is an error naming the mirror
            // URL and the status.
            .max_redirects(0)
            .tls_config(tls)
            .timeout_connect(Some(connect))
            .timeout_recv_response(Some(read))
            // Per read; each request also gets an overall deadline below.
            .timeout_recv_body(Some(read))
            .build();
        Ok(HttpStore {
            base: url.trim_end_matches('/').to_owned(),
            agent: ureq::Agent::new_with_config(config),
            min_rate: opts
                .min_rate_bytes_per_sec
                .unwrap_or(super::transfer::DEFAULT_MIN_RATE_BYTES_PER_SEC),
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    fn fail(&self, key: &str, kind: StoreErrorKind, detail: String) -> StoreError {
        StoreError::new(kind, &self.base, key, detail)
    }

    fn status_kind(status: u16) -> StoreErrorKind {
        match status {
            404 | 410 => StoreErrorKind::NotFound,
            401 | 403 => StoreErrorKind::Unauthorized,
            412 => StoreErrorKind::PreconditionFailed,
            408 | 429 | 500..=599 => StoreErrorKind::Transient,
            _ => StoreErrorKind::Other,
        }
    }

    fn send(
        &self,
        key: &str,
        req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> Result<ureq::http::Response<ureq::Body>, StoreError> {
        req.call().map_err(|e| {
            let what = super::cause_chain(&e);
            let detail = match super::network_hint(&what) {
                Some(h) => format!("GET {} failed: {what} (hint: {h})", self.url(key)),
                None => format!("GET {} failed: {what}", self.url(key)),
            };
            self.fail(key, StoreErrorKind::Transient, detail)
                .with_source(e)
        })
    }

    fn status_error(&self, key: &str, status: u16) -> StoreError {
        let reason = ureq::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let hint = match status {
            401 | 403 => " (hint: the mirror refuses access: check its access rules; npcnix sends no credentials to HTTP mirrors)",
            404 | 410 => " (hint: check the URL: it names the remote's directory, the one holding `latest`)",
            300..=399 => " (hint: the mirror redirects; npcnix follows no redirects: set the remote URL to the final location)",
            _ => "",
        };
        self.fail(
            key,
            Self::status_kind(status),
            format!("GET {} failed: HTTP {status} {reason}{hint}", self.url(key)),
        )
    }

    fn read_only(&self, key: &str) -> StoreError {
        self.fail(
            key,
            StoreErrorKind::Unsupported,
            "HTTP mirrors are read-only; publish to the origin store".into(),
        )
    }
}

impl Store for HttpStore {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn get(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        limit: u64,
    ) -> Result<Fetched, StoreError> {
        let deadline = super::transfer::deadline_for(limit, self.min_rate);
        let mut req = self
            .agent
            .get(&self.url(key))
            .config()
            .timeout_global(Some(deadline))
            .build();
        if let Some(e) = if_none_match {
            req = req.header("If-None-Match", &e.0);
        }
        let resp = self.send(key, req)?;
        let status = resp.status().as_u16();
        if status == 304 {
            if if_none_match.is_none() {
                return Err(self.fail(
                    key,
                    StoreErrorKind::Protocol,
                    "the mirror answered 304 Not Modified to a request without If-None-Match"
                        .into(),
                ));
            }
            return Ok(Fetched::NotModified);
        }
        if status != 200 {
            return Err(self.status_error(key, status));
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|s| ETag(s.to_owned()));
        let declared = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(self.fail(
                key,
                StoreErrorKind::TooLarge,
                format!("object is larger than {limit} bytes"),
            ));
        }
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| {
                self.fail(
                    key,
                    StoreErrorKind::Transient,
                    format!("reading the body: {e}"),
                )
            })?;
        if bytes.len() as u64 > limit {
            return Err(self.fail(
                key,
                StoreErrorKind::TooLarge,
                format!("object is larger than {limit} bytes"),
            ));
        }
        Ok(Fetched::Object { bytes, etag })
    }

    fn open(
        &self,
        key: &str,
        from: u64,
        max_bytes: u64,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let req = self
            .agent
            .get(&self.url(key))
            .config()
            .timeout_global(Some(super::transfer::deadline_for(
                max_bytes,
                self.min_rate,
            )))
            .build()
            .header("Range", &format!("bytes={from}-{max_bytes}"));
        let resp = self.send(key, req)?;
        let status = resp.status().as_u16();
        // 206 for the range, or 200 from servers that ignore ranges (the
        // caller's adapter stops reading past the signed size either way).
        if status != 200 && status != 206 {
            return Err(self.status_error(key, status));
        }
        if status == 206 {
            // A part from anywhere but `from` would be spliced in at the
            // wrong place (and refused as a mismatch): say what happened.
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if range_start(range) != Some(from) {
                return Err(self.fail(
                    key,
                    StoreErrorKind::Protocol,
                    format!(
                        "asked for bytes from {from}, the mirror answered Content-Range {range:?}"
                    ),
                ));
            }
        }
        let mut body = resp.into_body().into_reader();
        if status == 200 && from > 0 {
            // The whole object: what the caller has is skipped.
            let skipped = std::io::copy(&mut (&mut body).take(from), &mut std::io::sink())
                .map_err(|e| self.fail(key, StoreErrorKind::Transient, e.to_string()))?;
            if skipped < from {
                return Err(self.fail(
                    key,
                    StoreErrorKind::Transient,
                    format!(
                        "the object ended after {skipped} bytes, before the {from} already read"
                    ),
                ));
            }
        }
        Ok(Box::new(body))
    }

    fn put_new(&self, key: &str, _body: &mut dyn Read, _len: u64) -> Result<(), StoreError> {
        Err(self.read_only(key))
    }

    fn put_swap(
        &self,
        key: &str,
        _body: &[u8],
        _expected: Option<&ETag>,
    ) -> Result<ETag, StoreError> {
        Err(self.read_only(key))
    }

    /// Static servers cannot list; `npcnix log` enumerates versions instead
    /// (see [`super::Store::list`] callers).
    fn list(&self, prefix: &str, _max: usize) -> Result<Vec<String>, StoreError> {
        Err(self.fail(
            prefix,
            StoreErrorKind::Unsupported,
            "HTTP mirrors cannot list objects".into(),
        ))
    }
}

/// The first byte of a `Content-Range: bytes <first>-<last>/<size>`.
fn range_start(header: &str) -> Option<u64> {
    let spec = header.trim().strip_prefix("bytes")?.trim_start();
    let (first, _) = spec.split_once('-')?;
    first.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::range_start;

    #[test]
    fn content_range_start_is_read_strictly() {
        assert_eq!(range_start("bytes 32768-99999/100000"), Some(32768));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("bytes */100000"), None);
        assert_eq!(range_start(""), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }
}
