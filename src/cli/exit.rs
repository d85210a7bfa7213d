//! Exit codes, in one place: what each means and which error maps to it.

use npcnix::host::pull::PullError;
use npcnix::publish::PublishError;
use npcnix::{PipelineError, Refusal};

/// Exit codes scripts can rely on.
pub struct ExitCodes;

impl ExitCodes {
    pub const OK: u8 = 0;
    /// Any failure that is not one of the below (I/O, store, usage of files).
    pub const ERROR: u8 = 1;
    /// Command-line usage error: from clap, or a value clap could not check
    /// (a remote URL's scheme, a duration, a key that does not decode).
    pub const USAGE: u8 = 2;
    /// A release (or archive, or log) failed verification: refused.
    pub const REJECTED: u8 = 3;
    /// A publish lost a race with a concurrent publisher: retry.
    pub const CONFLICT: u8 = 4;
    /// `follow --exit-after-switch` after a successful switch (EX_TEMPFAIL):
    /// the service manager restarts npcnix with its new binary and config.
    pub const RESTART: u8 = 75;
}

/// A verification refusal outside the pipeline (`verify`, `release check`):
/// prints as `rejected (CHECK): MESSAGE`, exits 3.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.line())]
pub struct Rejected(pub Refusal);

/// A log or audit trail that does not verify (`log`, `audit`,
/// `release check`): exits 3. Its problems are not one release's refusal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unverified(pub String);

/// A command-line value clap could not check itself: exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(message: String) -> anyhow::Error {
    Usage(message).into()
}

/// Asks `main` to exit with [`ExitCodes::RESTART`].
#[derive(Debug, thiserror::Error)]
#[error("activated a new configuration; exiting so the service manager restarts npcnix")]
pub struct RestartRequested;

pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause
            .downcast_ref::<PublishError>()
            .is_some_and(PublishError::is_refusal)
        {
            return ExitCodes::REJECTED;
        }
        let refused = cause.is::<Rejected>()
            || cause.is::<Unverified>()
            || cause.is::<Refusal>()
            || cause
                .downcast_ref::<PipelineError>()
                .is_some_and(|p| p.refusal().is_some());
        if refused {
            return ExitCodes::REJECTED;
        }
        if let Some(PullError::Pipeline(p)) = cause.downcast_ref::<PullError>() {
            if p.refusal().is_some() {
                return ExitCodes::REJECTED;
            }
        }
        if cause.is::<Usage>() {
            return ExitCodes::USAGE;
        }
        if cause.is::<RestartRequested>() {
            return ExitCodes::RESTART;
        }
        if cause
            .downcast_ref::<PublishError>()
            .is_some_and(PublishError::is_conflict)
        {
            return ExitCodes::CONFLICT;
        }
    }
    ExitCodes::ERROR
}

/// The one-line message `main` prints for a failed command: the chain of
/// contexts down to the first store error, whose own causes (the SDK's or
/// the HTTP client's error values) are left to `-v` ([`render_debug`]).
/// Escaped ([`npcnix::format::text::visible`]): an error may quote bytes a
/// store or a tampered file chose (a field name in serde's "unknown field"),
/// and a terminal must never obey them.
pub fn render(e: &(dyn std::error::Error + 'static)) -> String {
    npcnix::format::text::visible(&render_raw(e))
}

fn render_raw(e: &(dyn std::error::Error + 'static)) -> String {
    use npcnix::store::StoreErrorKind;
    let mut parts: Vec<String> = Vec::new();
    for cause in std::iter::successors(Some(e), |c| c.source()) {
        if let Some(s) = store_error(cause) {
            // The head is missing: the remote is empty or the URL is wrong.
            if s.kind == StoreErrorKind::NotFound && s.key == npcnix::store::LATEST {
                parts.push(format!(
                    "no release published at {} yet (check the URL and remote name)",
                    s.store
                ));
            } else {
                parts.push(cause.to_string());
            }
            break;
        }
        let text = cause.to_string();
        // Wrappers that repeat their source's text, and sources a message
        // already quotes, are said once.
        if parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// The store error a cause is, or wraps transparently (its own `source()`
/// skips it: `#[error(transparent)]` forwards to the inner error's).
fn store_error<'a>(
    cause: &'a (dyn std::error::Error + 'static),
) -> Option<&'a npcnix::store::StoreError> {
    use npcnix::store::StoreError;
    if let Some(s) = cause.downcast_ref::<StoreError>() {
        return Some(s);
    }
    let pipeline = match cause.downcast_ref::<PullError>() {
        Some(PullError::Pipeline(p)) => Some(p),
        _ => cause.downcast_ref::<PipelineError>(),
    };
    if let Some(PipelineError::Store(s)) = pipeline {
        return Some(s);
    }
    match cause.downcast_ref::<PublishError>() {
        Some(PublishError::Store(s)) => Some(s),
        _ => None,
    }
}

/// Every cause, one per line, each with its `Debug` form where it adds
/// something (an SDK error's structure): for `-v`. Each escaped like
/// [`render`].
pub fn render_debug(e: &(dyn std::error::Error + 'static)) -> String {
    use npcnix::format::text::visible;
    let mut out = String::new();
    for (i, cause) in std::iter::successors(Some(e), |c| c.source()).enumerate() {
        out.push_str(&format!("  {i}: {}\n", visible(&cause.to_string())));
        let debug = format!("{cause:?}");
        if debug != cause.to_string() && !debug.starts_with('"') {
            out.push_str(&format!("     {}\n", visible(&debug)));
        }
    }
    out.trim_end().to_owned()
}
