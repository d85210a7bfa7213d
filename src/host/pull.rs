//! `npcnix pull`: the verified pull of a remote's latest release into a new
//! directory, through the same [`pipeline`] stages the agent uses.
//!
//! The fetch is unconditional (a manual pull has no cached head), and the
//! version is recorded after extraction: a release whose archive is refused
//! leaves the state untouched, and rollback protection is recorded before the
//! tree is handed on. See `docs/decisions.md` (D7).

use std::fs;
use std::path::{Path, PathBuf};

use crate::archive::confine::Confinement;
use crate::archive::{ExtractStats, Limits};
use crate::host::journal::Journal;
use crate::host::pipeline::{self, PipelineError};
use crate::host::state::{DataDir, StateError};
use crate::store::Remote;
use crate::verify::{Policy, VerifiedRelease};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("destination {0} already exists; choose a new path (npcnix never writes into an existing directory)")]
    DstExists(PathBuf),
}

impl From<StateError> for PullError {
    fn from(e: StateError) -> Self {
        PullError::Pipeline(e.into())
    }
}

/// What a manual pull did.
#[derive(Debug)]
pub struct Pulled {
    pub release: VerifiedRelease,
    pub new: bool,
    pub stats: ExtractStats,
    pub confinement: Confinement,
    pub dst: PathBuf,
    /// Problems that did not change the outcome (an audit line that could
    /// not be written), for the caller to show.
    pub warnings: Vec<String>,
}

/// What to pull and how.
pub struct PullRequest<'a> {
    pub policy: &'a Policy,
    pub limits: &'a Limits,
    pub require_chain: bool,
    pub confinement: crate::archive::confine::ConfinementPolicy,
    pub dst: &'a Path,
    /// Where download and extraction progress goes
    /// ([`crate::progress::silent`] for none).
    pub progress: &'a dyn crate::progress::Progress,
}

/// Verifies the remote's latest release and extracts it to `req.dst`.
/// Every outcome, refusal or acceptance, is appended to the audit log.
pub fn pull_to(
    store: &Remote,
    data: &DataDir,
    req: &PullRequest<'_>,
    now: u64,
) -> Result<Pulled, PullError> {
    if fs::symlink_metadata(req.dst).is_ok() {
        return Err(PullError::DstExists(req.dst.to_owned()));
    }
    // The network side without the lock (a stalling store must not keep
    // the agent or `npcnix activate` out); the state is only read here.
    // A brief lock (no network) to create the state on first use: from then
    // on an audit line next to no state file means a lost state.
    let snapshot = {
        let _first_use = data.try_lock()?;
        data.load()?
    };
    let journal = Journal::new(data, req.policy.remote.as_str());
    let log = store.log();
    let remote = snapshot.remote(req.policy.remote.as_str()).cloned();
    let mut lock = None;
    let mut state = snapshot.clone();
    let mut stages = || -> Result<pipeline::Extracted, PipelineError> {
        let head = pipeline::fetch_head(&log, None)?;
        let judged = pipeline::judge(req.policy, remote.as_ref(), head, now)?;
        let accepted = pipeline::descend(
            &log,
            req.policy,
            remote.as_ref(),
            judged,
            req.require_chain,
            now,
        )?;
        let opts = pipeline::ExtractOptions {
            limits: req.limits,
            confinement: req.confinement,
            progress: req.progress,
        };
        let mut downloaded = pipeline::download(&log, accepted, opts, data)?;
        // Then the lock, and the release judged again against the state as
        // it is now.
        lock = Some(data.try_lock()?);
        state = data.load()?;
        let fresh = state.remote(req.policy.remote.as_str()).cloned();
        if fresh.as_ref().and_then(|r| r.highest) != remote.as_ref().and_then(|r| r.highest) {
            return Err(PipelineError::Io {
                context:
                    "another npcnix process recorded a release while this pull ran; run it again"
                        .into(),
                source: std::io::Error::other("state changed"),
            });
        }
        pipeline::rejudge(req.policy, fresh.as_ref(), &mut downloaded, now)?;
        pipeline::extract(downloaded, opts, data)
    };
    let extracted = match stages() {
        Ok(x) => x,
        Err(e) => {
            // The refusal is the result; a failed audit write is reported
            // with it but never turns it into anything else.
            let _ = match e.refusal() {
                Some(r) => journal.refusal(r, now),
                None => journal.error(&format!("{e:#}"), now),
            };
            return Err(e.into());
        }
    };
    pipeline::record(data, &mut state, &extracted, now)?;
    let mut warnings = Vec::new();
    let release = &extracted.release;
    let event = if extracted.new {
        "verified"
    } else {
        "up-to-date"
    };
    warnings.extend(
        journal
            .release(event, release, None, now)
            .err()
            .map(|e| e.to_string()),
    );
    pipeline::place(extracted.tree, req.dst)?;
    warnings.extend(
        journal
            .release(
                "extracted",
                release,
                Some(format!("{}; {}", req.dst.display(), extracted.confinement)),
                now,
            )
            .err()
            .map(|e| e.to_string()),
    );
    drop(lock);
    Ok(Pulled {
        release: extracted.release,
        new: extracted.new,
        stats: extracted.stats,
        confinement: extracted.confinement,
        dst: req.dst.to_owned(),
        warnings,
    })
}
