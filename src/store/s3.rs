//! The S3 store (`s3://bucket/prefix/remote`), through aws-sdk-s3.
//!
//! The protocol's preconditions map directly onto S3's conditional requests:
//! * `get` with an ETag: `If-None-Match` — a 304 means unchanged, so an idle
//!   poll is one small request;
//! * `put_new`: `If-None-Match: *` on PutObject (and on
//!   CompleteMultipartUpload for large archives);
//! * `put_swap`: `If-Match: <etag>` (or `If-None-Match: *` for the first
//!   release);
//! * `open`: a ranged GET for at most the signed size plus one byte, so an
//!   over-long object is detected without downloading it all.
//!
//! The async client runs on a private current-thread tokio runtime behind
//! the synchronous [`Store`] trait (docs/decisions.md, D1). TLS is rustls
//! with the ring provider; credentials come from the standard AWS chain
//! (environment, profile, web identity, ECS, EC2 instance profile via
//! IMDSv2).

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::{ETag, Fetched, Store, StoreError, StoreErrorKind, StoreOptions};

/// Archives above this are uploaded in parts of this size.
pub const MULTIPART_PART_BYTES: usize = 16 << 20;

pub struct S3Store {
    rt: Arc<tokio::runtime::Runtime>,
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    url: String,
    min_rate: u64,
    read_timeout: Duration,
    connect_timeout: Duration,
}

/// Splits `s3://bucket/prefix/remote` into bucket and prefix.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    if bucket.is_empty() || prefix.split('/').any(|c| c == "." || c == "..") {
        return None;
    }
    Some((bucket.to_owned(), prefix.to_owned()))
}

impl S3Store {
    pub fn new(url: &str, opts: &StoreOptions) -> Result<S3Store, super::UrlError> {
        use super::UrlError;
        let (bucket, prefix) = parse_url(url).ok_or_else(|| {
            UrlError::S3(format!(
                "invalid S3 URL {url:?}: expected s3://bucket/prefix/remote"
            ))
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| UrlError::S3(format!("starting the S3 runtime: {e}")))?;
        // The platform's trust store (SSL_CERT_FILE/SSL_CERT_DIR honoured),
        // plus the configured CA file.
        let mut trust = aws_smithy_http_client::tls::TrustStore::default();
        if let Some(path) = &opts.ca_file {
            trust = trust.with_pem_certificate(super::read_ca_file(path)?);
        }
        let tls = aws_smithy_http_client::tls::TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| UrlError::Setup(format!("setting up TLS: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(tls)
            .build_https();
        let connect_timeout = Duration::from_secs(
            opts.connect_timeout_secs
                .unwrap_or(super::DEFAULT_CONNECT_TIMEOUT_SECS),
        );
        let read_timeout = Duration::from_secs(
            opts.read_timeout_secs
                .unwrap_or(super::DEFAULT_READ_TIMEOUT_SECS),
        );
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts);
        if let Some(n) = opts.client_attempts {
            // 1: no retries inside the SDK (the caller retries visibly).
            loader = loader.retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(n.max(1)),
            );
        }
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &opts.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        let shared = rt.block_on(loader.load());
        let mut b = aws_sdk_s3::config::Builder::from(&shared).force_path_style(opts.path_style);
        if shared.region().is_none() {
            // S3 needs a region to sign; us-east-1 works for any bucket via
            // redirects and for S3-compatible servers.
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        Ok(S3Store {
            rt: Arc::new(rt),
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket,
            prefix,
            url: url.to_owned(),
            min_rate: opts
                .min_rate_bytes_per_sec
                .unwrap_or(super::transfer::DEFAULT_MIN_RATE_BYTES_PER_SEC),
            read_timeout,
            connect_timeout,
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn fail(&self, key: &str, kind: StoreErrorKind, detail: String) -> StoreError {
        StoreError::new(kind, &self.url, key, detail)
    }

    /// Maps an SDK error to what the caller acts on, with a one-line
    /// message: the operation, the HTTP status, S3's error code and message,
    /// and a hint for the common causes. The SDK error itself is kept as the
    /// source (its structure is for `-v`, not for the message).
    fn err<E>(&self, op: &str, key: &str, e: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().unwrap_or("").to_owned();
        let kind = match (&e, status) {
            (
                SdkError::DispatchFailure(_)
                | SdkError::TimeoutError(_)
                | SdkError::ResponseError(_),
                _,
            ) => StoreErrorKind::Transient,
            (_, Some(404)) if code == "NoSuchBucket" => StoreErrorKind::Other,
            (_, Some(404)) => StoreErrorKind::NotFound,
            (_, Some(412)) => StoreErrorKind::PreconditionFailed,
            // ConditionalRequestConflict: a concurrent conditional write.
            (_, Some(409)) if code == "ConditionalRequestConflict" => {
                StoreErrorKind::PreconditionFailed
            }
            (_, Some(401 | 403)) => StoreErrorKind::Unauthorized,
            (_, Some(408 | 429 | 500..=599)) => StoreErrorKind::Transient,
            _ if code == "NoSuchKey" => StoreErrorKind::NotFound,
            _ if matches!(
                code.as_str(),
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken"
            ) =>
            {
                StoreErrorKind::Unauthorized
            }
            _ => StoreErrorKind::Other,
        };
        let what = match (&e, status) {
            (SdkError::TimeoutError(_), _) => format!(
                "no answer in time (connect time-out {} s, read time-out {} s)",
                self.connect_timeout.as_secs(),
                self.read_timeout.as_secs()
            ),
            (_, Some(s)) => {
                let mut w = format!("HTTP {s}");
                if !code.is_empty() {
                    w.push_str(&format!(" {code}"));
                }
                if let Some(m) = e.message().filter(|m| !m.is_empty()) {
                    w.push_str(&format!(": {m}"));
                }
                w
            }
            // No answer: the cause is at the bottom of the SDK's chain.
            _ => super::cause_chain(&e),
        };
        let hint = match code.as_str() {
            "NoSuchBucket" => Some("the bucket does not exist: check the bucket in the URL (and --endpoint for S3-compatible stores)"),
            "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
                Some("the bucket is in another region: set --remote-region (remote.region in the host config)")
            }
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken" => {
                Some("the credentials are wrong or expired: check AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance profile")
            }
            "AccessDenied" => Some("the credentials may not do this: check the IAM policy (README, \"Stores\") and the bucket policy"),
            _ => None,
        }
        .or_else(|| {
            // An SSO profile: npcnix leaves out the SDK's SSO provider (it
            // would bring a second digest generation, D127).
            (what.contains("sso") && what.contains("feature")).then_some(
                "SSO profiles are read through the aws CLI: give npcnix a profile with `credential_process = aws configure export-credentials --profile YOUR-SSO-PROFILE --format process` (after `aws sso login`)",
            )
        })
        .or_else(|| super::network_hint(&what))
        .or_else(|| (kind == StoreErrorKind::Unauthorized).then_some(
            "check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, instance profile) and the IAM policy",
        ));
        let detail = match hint {
            Some(h) => format!("{op} failed: {what} (hint: {h})"),
            None => format!("{op} failed: {what}"),
        };
        self.fail(key, kind, detail).with_source(e)
    }

    async fn collect_limited(
        &self,
        key: &str,
        body: ByteStream,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let deadline = super::transfer::deadline_for(limit, self.min_rate);
        match tokio::time::timeout(deadline, self.collect_inner(key, body, limit)).await {
            Ok(r) => r,
            Err(_) => Err(self.fail(
                key,
                StoreErrorKind::Transient,
                format!(
                    "reading the body took longer than its deadline of {} s",
                    deadline.as_secs()
                ),
            )),
        }
    }

    async fn collect_inner(
        &self,
        key: &str,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    if out.len() as u64 + chunk.len() as u64 > limit {
                        return Err(self.fail(
                            key,
                            StoreErrorKind::TooLarge,
                            format!("object is larger than {limit} bytes"),
                        ));
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    return Err(self.fail(
                        key,
                        StoreErrorKind::Transient,
                        format!("reading the body: {e}"),
                    ))
                }
            }
        }
    }
}

/// A blocking reader over an S3 response body.
struct BodyReader {
    rt: Arc<tokio::runtime::Runtime>,
    body: ByteStream,
    chunk: bytes_chunk::Chunk,
    /// Per-chunk idle time-out: the SDK's read time-out covers only the
    /// wait for the response, not the body.
    idle: Duration,
}

mod bytes_chunk {
    /// The unread rest of the current body chunk.
    #[derive(Default)]
    pub struct Chunk {
        pub data: Vec<u8>,
        pub pos: usize,
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.pos >= self.chunk.data.len() {
            let next = self
                .rt
                .block_on(async { tokio::time::timeout(self.idle, self.body.try_next()).await });
            let Ok(next) = next else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("S3 download stalled for {} s", self.idle.as_secs()),
                ));
            };
            match next {
                Ok(Some(b)) => {
                    self.chunk.data = b.to_vec();
                    self.chunk.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(format!("S3 download failed: {e}"))),
            }
        }
        let n = buf.len().min(self.chunk.data.len() - self.chunk.pos);
        buf[..n].copy_from_slice(&self.chunk.data[self.chunk.pos..self.chunk.pos + n]);
        self.chunk.pos += n;
        Ok(n)
    }
}

fn is_not_modified<E>(e: &SdkError<E, HttpResponse>) -> bool {
    // aws-sdk-s3 reports a 304 as an error whose raw response is 304.
    e.raw_response().is_some_and(|r| r.status().as_u16() == 304)
}

impl Store for S3Store {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn get(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        limit: u64,
    ) -> Result<Fetched, StoreError> {
        self.rt.block_on(async {
            let req = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .set_if_none_match(if_none_match.map(|e| e.0.clone()));
            let resp =
                match req.send().await {
                    Ok(r) => r,
                    Err(e) if is_not_modified(&e) && if_none_match.is_some() => {
                        return Ok(Fetched::NotModified)
                    }
                    Err(e) if is_not_modified(&e) => return Err(self.fail(
                        key,
                        StoreErrorKind::Protocol,
                        "the server answered 304 Not Modified to a request without If-None-Match"
                            .into(),
                    )),
                    Err(e) => return Err(self.err("GetObject", key, e)),
                };
            if resp
                .content_length()
                .is_some_and(|n| n < 0 || n as u64 > limit)
            {
                return Err(self.fail(
                    key,
                    StoreErrorKind::TooLarge,
                    format!("object is larger than {limit} bytes"),
                ));
            }
            let etag = resp.e_tag().map(|e| ETag(e.to_owned()));
            let bytes = self.collect_limited(key, resp.body, limit).await?;
            Ok(Fetched::Object { bytes, etag })
        })
    }

    fn open(
        &self,
        key: &str,
        from: u64,
        max_bytes: u64,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let body = self.rt.block_on(async {
            // One byte past the signed size is enough to detect "longer".
            let resp = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .range(format!("bytes={from}-{max_bytes}"))
                .send()
                .await
                .map_err(|e| self.err("GetObject", key, e))?;
            Ok::<_, StoreError>(resp.body)
        })?;
        Ok(Box::new(BodyReader {
            rt: Arc::clone(&self.rt),
            body,
            chunk: Default::default(),
            idle: self.read_timeout,
        }))
    }

    fn put_new(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), StoreError> {
        let full = self.full_key(key);
        if len <= MULTIPART_PART_BYTES as u64 {
            let mut data = Vec::with_capacity(len as usize);
            body.take(len)
                .read_to_end(&mut data)
                .map_err(|e| self.fail(key, StoreErrorKind::Other, e.to_string()))?;
            if data.len() as u64 != len {
                return Err(self.fail(
                    key,
                    StoreErrorKind::Other,
                    format!("upload body was {} bytes, expected {len}", data.len()),
                ));
            }
            return self.rt.block_on(async {
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&full)
                    .if_none_match("*")
                    .content_length(len as i64)
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err("PutObject", key, e))
            });
        }
        self.rt.block_on(async {
            let created = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
            let upload_id = created.upload_id().unwrap_or_default().to_owned();
            let result = async {
                let mut parts = Vec::new();
                let mut sent = 0u64;
                let mut number = 1i32;
                while sent < len {
                    let want = (len - sent).min(MULTIPART_PART_BYTES as u64);
                    let mut chunk = Vec::with_capacity(want as usize);
                    (&mut *body)
                        .take(want)
                        .read_to_end(&mut chunk)
                        .map_err(|e| self.fail(key, StoreErrorKind::Other, e.to_string()))?;
                    if chunk.len() as u64 != want {
                        return Err(self.fail(
                            key,
                            StoreErrorKind::Other,
                            "upload body ended early".into(),
                        ));
                    }
                    let part = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(&full)
                        .upload_id(&upload_id)
                        .part_number(number)
                        .body(ByteStream::from(chunk))
                        .send()
                        .await
                        .map_err(|e| self.err("UploadPart", key, e))?;
                    parts.push(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(part.e_tag().map(str::to_owned))
                            .build(),
                    );
                    sent += want;
                    number += 1;
                }
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .if_none_match("*")
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
                Ok(())
            }
            .await;
            if result.is_err() {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send()
                    .await;
            }
            result
        })
    }

    fn put_swap(
        &self,
        key: &str,
        body: &[u8],
        expected: Option<&ETag>,
    ) -> Result<ETag, StoreError> {
        self.rt.block_on(async {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .content_length(body.len() as i64)
                .body(ByteStream::from(body.to_vec()));
            req = match expected {
                Some(e) => req.if_match(e.0.clone()),
                None => req.if_none_match("*"),
            };
            let out = req
                .send()
                .await
                .map_err(|e| self.err("PutObject", key, e))?;
            Ok(ETag(out.e_tag().unwrap_or_default().to_owned()))
        })
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.rt.block_on(async {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .content_length(body.len() as i64)
                .body(ByteStream::from(body.to_vec()))
                .send()
                .await
                .map_err(|e| self.err("PutObject", key, e))?;
            Ok(())
        })
    }

    fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        self.rt.block_on(async {
            let full = self.full_key(prefix);
            let strip = self.full_key("");
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let resp = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&full)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| self.err("ListObjectsV2", prefix, e))?;
                for o in resp.contents() {
                    if let Some(k) = o.key().and_then(|k| k.strip_prefix(&strip)) {
                        if out.len() == max {
                            return Err(self.fail(
                                prefix,
                                StoreErrorKind::TooLarge,
                                format!("more than {max} objects"),
                            ));
                        }
                        out.push(k.to_owned());
                    }
                }
                match resp.next_continuation_token() {
                    Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            out.sort();
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_url("s3://b/npcnix/remotes/prod"),
            Some(("b".into(), "npcnix/remotes/prod".into()))
        );
        assert_eq!(parse_url("s3://b/prod/"), Some(("b".into(), "prod".into())));
        assert_eq!(parse_url("s3:///x"), None);
        assert_eq!(parse_url("s3://b/../x"), None);
    }
}
