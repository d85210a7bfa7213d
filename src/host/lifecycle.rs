//! The host's release lifecycle, decided in one place.
//!
//! A release goes through these states on a host; each arrow is a stage
//! that consumes one type and returns the next (`host::pipeline` up to
//! `Downloaded`, `host::agent` after it):
//!
//! ```text
//! store head ──read──► Judged ──descend──► Accepted ──download──► Downloaded
//!     (waiting for its rollout slot, a promotion of its gated   (under the lock,
//!      stage, or halted: stays Accepted)
//!                                                                judged again)
//!                                                                     │ install
//!                                                                     ▼
//!   Placed ──build+inspect──► Inspected ──arm──► Armed ──switch──► Switched
//!                                                                     │ health
//!                                                                     ▼
//!          confirmed ◄──confirm── OnProbation ──deadline──► rolled back
//!                                                           (bad, or retried)
//! ```
//!
//! [`decide`] is the one function that says what happens next, from the
//! host's durable state, the probation record, what the store showed and
//! the time: the host's decisions (expired probation, a boot probation to
//! start, paused, confirm, marked bad, up to date, backoff, a probation
//! pending for another release, the rollout slot and gate) are made here and
//! nowhere else. It is pure: the agent (`host::agent`) gathers the
//! [`Facts`], runs the [`Step`] it is given, updates the facts and asks
//! again, until a step ends the poll.

use crate::host::clock::Moment;
use crate::host::outcome::Outcome;
use crate::host::probation::{Observed, Probation, MAX_RETRY_DELAY};
use crate::host::state::{RemoteState, Retry};
use crate::verify::Seen;

/// Everything a decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub remote: &'a RemoteState,
    pub probation: Option<&'a Probation>,
    /// What the new system saw during the last probation (see
    /// [`crate::host::probation::Observed`]).
    pub observed: Option<&'a Observed>,
    pub now: &'a Moment,
    pub head: Head,
    /// Whether this agent may vouch for the system on probation.
    pub vouch: Vouch,
    /// A stop signal arrived.
    pub stop: bool,
    /// The host config's hold (D128).
    pub hold: Option<Hold>,
}

/// A host config's hold as the lifecycle sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Activate nothing above this version...
    pub max: u64,
    /// ...unless the release's own config lifts the hold: a release above
    /// it is downloaded and inspected once (`inspected`: the one whose
    /// config kept the hold), or at once held when nothing can inspect it.
    pub inspectable: bool,
    pub inspected: Option<Seen>,
}

/// What the store's head is to this host, so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Not read yet: the start of a poll.
    Unread,
    /// Verified under this host's whole policy and its history.
    Verified {
        seen: Seen,
        /// Newer than anything this host verified.
        new: bool,
        /// The store said "not modified" and the cached bytes were judged
        /// again.
        revalidated: bool,
        stage: Stage,
    },
    /// Signed for this remote and acceptable under this host's policy, but
    /// refused for what this host has seen (an older head from a lagging
    /// mirror, a fork): the store is reachable and its releases verify.
    Behind,
    /// The release on probation itself, signed by keys the system before it
    /// trusted and this one does not (a key rotation the inspection
    /// recorded), and acceptable under this host's policy otherwise.
    Rotated,
    /// This host's policy refuses the release on probation itself: the new
    /// system would not accept what it runs.
    RefusesProbation,
    /// An answer refused that is not the release on probation (a store can
    /// serve anything, without a key).
    Refused,
    /// No answer: the store failed (connection, time-out, 5xx).
    Unreachable,
}

/// How far a verified head has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Verified, not yet checked against the chain.
    Judged,
    /// May be downloaded; `slot`: this host's time in the signed rollout;
    /// `closed`: its gated stage is not open (issue 35).
    Accepted {
        slot: Option<u64>,
        closed: Option<Closed>,
    },
    /// Downloaded and judged again under the lock, against the state as it
    /// is now.
    Downloaded,
}

/// Why a verified release's rollout does not admit this host (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Behind the gate of this stage, not promoted.
    Gated(crate::format::decision::StageName),
    /// The rollout was halted (signed at `at`) before this host's stage
    /// or slot opened.
    Halted { at: u64 },
}

/// Whether this agent may vouch for the system on probation: it runs in it,
/// with its host config (D86), and the lock was free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vouch {
    May,
    MayNot,
}

/// What the new system on probation saw instead of a verifiable head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    Unreachable,
    Refused,
    /// Its own policy refuses the release it runs.
    RefusedOwn,
}

/// What the agent does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The probation's deadline passed unconfirmed: roll it back.
    RollBack,
    /// A `boot` release is running in a later boot: its probation starts.
    StartProbation,
    /// Read and judge the store's head.
    ReadHead,
    /// This poll confirms the release on probation (then decide again).
    Confirm,
    /// This system reaches and verifies the store, where the system of the
    /// release it rolled back for reaching nothing verifiable could not:
    /// that release is at fault after all, mark it bad (then decide again).
    Convict,
    /// Walk the chain (`require_chain`) and plan the activation.
    Descend,
    /// Download the archive.
    Download,
    /// Extract, record and activate.
    Install,
    /// End the poll with what reading the head gave (its refusal or
    /// error), first noting what the system on probation saw.
    Fail { note: Option<Observation> },
    /// End the poll.
    End(Outcome),
}

/// The next step (see the module docs).
pub fn decide(f: &Facts<'_>) -> Step {
    let now = f.now.wall;
    let r = f.remote;
    if f.head == Head::Unread {
        if let Some(p) = f.probation {
            if p.expired(f.now) {
                return Step::RollBack;
            }
            if p.deadline.is_none() && !p.awaits_reboot(f.now.boot_id()) {
                return Step::StartProbation;
            }
        }
    }
    if r.is_paused(now) {
        return Step::End(Outcome::Paused {
            until: r.paused_until.unwrap_or(u64::MAX),
        });
    }
    // The release on probation, switched to, and this agent runs in its
    // system: what this agent accepts confirms it; what it cannot verify
    // is noted (it decides what a rollback at the deadline means).
    let vouching = f.probation.is_some_and(|p| {
        p.deadline.is_some() && r.active == Some(p.seen()) && f.vouch == Vouch::May
    });
    let (seen, new, revalidated, stage) = match f.head {
        Head::Unread => return Step::ReadHead,
        Head::Verified {
            seen,
            new,
            revalidated,
            stage,
        } => (seen, new, revalidated, stage),
        Head::Behind | Head::Rotated if vouching => return Step::Confirm,
        Head::Unreachable if vouching => {
            return Step::Fail {
                note: Some(Observation::Unreachable),
            }
        }
        Head::Refused if vouching => {
            return Step::Fail {
                note: Some(Observation::Refused),
            }
        }
        Head::RefusesProbation if vouching => {
            return Step::Fail {
                note: Some(Observation::RefusedOwn),
            }
        }
        Head::Behind
        | Head::Rotated
        | Head::RefusesProbation
        | Head::Refused
        | Head::Unreachable => return Step::Fail { note: None },
    };
    if vouching {
        return Step::Confirm;
    }
    let version = seen.version;
    // A `next_at` further ahead than any backoff is a wall-clock step back:
    // due now.
    let waiting = |t: &Retry| now < t.next_at && t.next_at - now <= MAX_RETRY_DELAY;
    if let (Some(t), Some(o)) = (&r.retry, f.observed) {
        if o.version == t.version && o.convictable() && waiting(t) {
            return Step::Convict;
        }
    }
    if r.is_bad(&seen) {
        return Step::End(Outcome::SkippedBad { version });
    }
    if !new && r.active == Some(seen) {
        return Step::End(if revalidated {
            Outcome::Unchanged
        } else {
            Outcome::UpToDate { version }
        });
    }
    if let Some(h) = f.hold.filter(|h| version > h.max) {
        if !h.inspectable || h.inspected == Some(seen) {
            return Step::End(Outcome::Held {
                version,
                max: h.max,
            });
        }
    }
    if let Some(t) = r.retry.as_ref().filter(|t| t.version == version) {
        if waiting(t) {
            return Step::End(Outcome::Backoff {
                version,
                until: t.next_at,
            });
        }
    }
    if let Some(p) = f.probation.filter(|p| p.seen() != seen) {
        return Step::End(Outcome::AwaitingConfirmation {
            version,
            pending: p.version,
        });
    }
    match stage {
        Stage::Judged => Step::Descend,
        Stage::Accepted {
            closed: Some(Closed::Gated(stage)),
            ..
        } => Step::End(Outcome::AwaitingPromotion {
            version,
            stage: stage.as_str().to_owned(),
        }),
        Stage::Accepted {
            closed: Some(Closed::Halted { at }),
            ..
        } => Step::End(Outcome::Halted { version, at }),
        Stage::Accepted {
            slot: Some(until), ..
        } if now < until => Step::End(Outcome::Waiting { version, until }),
        Stage::Accepted { .. } if f.stop => Step::End(Outcome::Interrupted),
        Stage::Accepted { .. } => Step::Download,
        Stage::Downloaded => Step::Install,
    }
}

#[cfg(test)]
mod tests;
