//! What one poll of the agent did: the value every surface reports (the
//! log line, `follow --json`, `status`, receipts, the exit code).

use crate::format::time::rfc3339;
use crate::verify::Refusal;

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The store said "not modified" (conditional request), and the cached
    /// head, judged again now, is still the active release.
    Unchanged,
    /// The latest release is the one running.
    UpToDate {
        version: u64,
    },
    Paused {
        until: u64,
    },
    /// Another npcnix process holds the lock (an activation is running), or
    /// recorded a release while this poll was on the network.
    Busy,
    Activated {
        version: u64,
    },
    /// Verification refused the release.
    Refused(Refusal),
    /// The release is marked bad (failed before); waiting for a newer one.
    SkippedBad {
        version: u64,
    },
    /// A failed activation (or a rolled-back release) waits for its
    /// backoff to expire.
    Backoff {
        version: u64,
        until: u64,
    },
    ActivationFailed {
        version: u64,
        message: String,
        marked_bad: bool,
    },
    /// A release on probation was undone: marked bad, or (`retry_at`) to be
    /// retried, because its system reached nothing it could verify.
    RolledBack {
        version: u64,
        reason: String,
        retry_at: Option<u64>,
    },
    /// A release on probation was to be undone and the rollback failed: the
    /// probation stays (nothing else is applied) and the rollback is tried
    /// again at `next_attempt`.
    RollbackFailed {
        version: u64,
        reason: String,
        next_attempt: u64,
    },
    /// A stop signal arrived before the next step; nothing was activated.
    Interrupted,
    /// The release verified, and this host's slot in its signed rollout
    /// wave has not come yet.
    Waiting {
        version: u64,
        until: u64,
    },
    /// The release verified, and this host's stage of its rollout is gated:
    /// it waits for a signed promotion of `stage` (issue 35).
    AwaitingPromotion {
        version: u64,
        stage: String,
    },
    /// The release verified, and a signed halt (at `at`) closed its rollout
    /// before this host's stage or slot opened.
    Halted {
        version: u64,
        at: u64,
    },
    /// The release verified, and another one (`pending`) is on probation:
    /// nothing is activated until that one is confirmed or rolled back, so
    /// a rollback never lands on a system that was never confirmed.
    AwaitingConfirmation {
        version: u64,
        pending: u64,
    },
    /// The release verified, and this host's config holds it at or below
    /// `max` (a declarative hold): nothing newer is activated.
    Held {
        version: u64,
        max: u64,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::UpToDate { .. } => "up-to-date",
            Outcome::Paused { .. } => "paused",
            Outcome::Busy => "busy",
            Outcome::Activated { .. } => "activated",
            Outcome::Refused(_) => "rejected",
            Outcome::SkippedBad { .. } => "skipped-bad",
            Outcome::Backoff { .. } => "backoff",
            Outcome::ActivationFailed { .. } => "activation-failed",
            Outcome::RolledBack { .. } => "rolled-back",
            Outcome::RollbackFailed { .. } => "rollback-failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Waiting { .. } => "waiting",
            Outcome::AwaitingConfirmation { .. } => "awaiting-confirmation",
            Outcome::Held { .. } => "held",
            Outcome::AwaitingPromotion { .. } => "waiting-for-promotion",
            Outcome::Halted { .. } => "halted",
        }
    }

    /// A problem the operator should see (counts as a failure for backoff).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Refused(_)
                | Outcome::ActivationFailed { .. }
                | Outcome::RolledBack { .. }
                | Outcome::RollbackFailed { .. }
        )
    }

    /// The release this outcome is about, if any.
    pub fn version(&self) -> Option<u64> {
        match self {
            Outcome::Activated { version }
            | Outcome::UpToDate { version }
            | Outcome::SkippedBad { version }
            | Outcome::Backoff { version, .. }
            | Outcome::ActivationFailed { version, .. }
            | Outcome::RolledBack { version, .. }
            | Outcome::RollbackFailed { version, .. }
            | Outcome::Waiting { version, .. }
            | Outcome::AwaitingConfirmation { version, .. }
            | Outcome::Held { version, .. }
            | Outcome::AwaitingPromotion { version, .. }
            | Outcome::Halted { version, .. } => Some(*version),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Unchanged => write!(f, "remote unchanged"),
            Outcome::UpToDate { version } => write!(f, "up to date at version {version}"),
            Outcome::Paused { until } if *until == u64::MAX => write!(f, "paused until unpaused"),
            Outcome::Paused { until } => write!(f, "paused until {}", rfc3339(*until)),
            Outcome::Busy => write!(f, "another npcnix process holds the lock"),
            Outcome::Activated { version } => write!(f, "activated version {version}"),
            Outcome::Refused(r) => write!(f, "rejected ({}): {r}", r.check()),
            Outcome::SkippedBad { version } => write!(
                f,
                "version {version} is marked bad; waiting for a newer release"
            ),
            Outcome::Backoff { version, until } => write!(
                f,
                "version {version} failed; next attempt at {}",
                rfc3339(*until)
            ),
            Outcome::ActivationFailed {
                version,
                message,
                marked_bad,
            } => write!(
                f,
                "activation of version {version} failed: {message}{}",
                if *marked_bad { " (marked bad)" } else { "" }
            ),
            Outcome::RolledBack {
                version,
                reason,
                retry_at: None,
            } => write!(f, "version {version} rolled back and marked bad: {reason}"),
            Outcome::RolledBack {
                version,
                reason,
                retry_at: Some(at),
            } => write!(
                f,
                "version {version} rolled back, to be retried from {}: {reason}",
                rfc3339(*at)
            ),
            Outcome::RollbackFailed {
                version,
                reason,
                next_attempt,
            } => write!(
                f,
                "ROLLBACK of version {version} FAILED, tried again at {}: {reason}",
                rfc3339(*next_attempt)
            ),
            Outcome::Interrupted => write!(f, "interrupted by a stop signal"),
            Outcome::Waiting { version, until } => write!(
                f,
                "version {version} verified; waiting for this host's rollout slot until {}",
                rfc3339(*until)
            ),
            Outcome::AwaitingConfirmation { version, pending } => write!(
                f,
                "version {version} verified; waiting until version {pending}, on probation, is confirmed or rolled back"
            ),
            Outcome::AwaitingPromotion { version, stage } => write!(
                f,
                "version {version} verified; this host is in its gated stage {stage:?}, waiting for a signed promotion (`npcnix release promote`)"
            ),
            Outcome::Halted { version, at } => write!(
                f,
                "version {version} verified; its rollout was halted at {} before this host's turn (a newer release moves on)",
                rfc3339(*at)
            ),
            Outcome::Held { version, max } => write!(
                f,
                "version {version} verified; held at version {max} or below by this host's config (hold)"
            ),
        }
    }
}
