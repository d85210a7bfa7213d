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
    /// Command-line usage error (from clap).
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
