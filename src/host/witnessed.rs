//! The host's witness check (issue 37): a new release is taken only if it
//! is in a checkpoint of the remote's log that enough of the host's
//! witnesses cosigned, and that checkpoint extends the one this host
//! accepted before. What the store shows this host alone (a split view) is
//! refused `unwitnessed`; a log that forked from what the host saw is
//! `log-inconsistent`. The pure judgements are `verify::witness`; this
//! reads the witnesses' notes and the log's tiles.

use crate::store::tlog::{self, LogReadError};
use crate::store::ReleaseLog;
use crate::verify::witness::{grows, growth, witnessed_with, Growth, TreeHead, WitnessPolicy};
use crate::verify::{Refusal, VerifiedRelease};

use super::pipeline::PipelineError;

fn read(e: LogReadError) -> PipelineError {
    match e {
        LogReadError::Store(e) => e.into(),
        // Tiles missing or malformed: the store can repair them.
        LogReadError::Invalid(e) => {
            Refusal::Unwitnessed(format!("the log cannot be read: {e}")).into()
        }
    }
}

/// Checks `release` against the witness policy, from the head accepted
/// last (`last`). `Ok`: the witnessed head to remember.
pub fn check(
    log: &ReleaseLog<'_>,
    policy: &WitnessPolicy,
    last: Option<&TreeHead>,
    release: &VerifiedRelease,
) -> Result<TreeHead, PipelineError> {
    let mut notes = Vec::new();
    let mut unreadable = Vec::new();
    for w in &policy.witnesses {
        match log.witness_checkpoint(w.key_id) {
            Ok(Some(n)) => notes.push(n),
            Ok(None) => {}
            // A transient failure fails the poll (it is retried); an
            // object that is not a note (too large, garbage) is one
            // missing vote, never a veto: one witness must not block
            // releases the others saw.
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => unreadable.push(format!("{}: {}", w.name, e.detail)),
        }
    }
    // A larger tree a witness cosigned counts for a smaller one it
    // extends, by a consistency proof from the log's tiles (a proof that
    // cannot be read counts as not extending: fail closed).
    let mut extends = |small: &TreeHead, large: &TreeHead| {
        tlog::consistency_proof(log, small.size, large.size)
            .is_ok_and(|proof| grows(small, large, &proof).is_ok())
    };
    let w = witnessed_with(
        &notes,
        &policy.log,
        &policy.witnesses,
        policy.threshold,
        &mut extends,
    )
    .map_err(|e| {
        let mut why = format!("version {}: {e}", release.version());
        if !unreadable.is_empty() {
            why.push_str(&format!("; unreadable: {}", unreadable.join("; ")));
        }
        Refusal::Unwitnessed(why)
    })?;
    let head = TreeHead::from(&w.checkpoint);
    match growth(last, &head) {
        Growth::Same => {}
        // A witnessed tree smaller than the one this host accepted is an
        // old note served again (a replay, a stale mirror): not a fork,
        // and no witness has seen this release in it.
        Growth::Fork(_) if last.is_some_and(|l| head.size < l.size) => {
            return Err(Refusal::Unwitnessed(format!(
                "version {}: the witnessed checkpoint ({} entries) is older than the one this host accepted ({} entries): a stale or replayed witness note",
                release.version(),
                head.size,
                last.map_or(0, |l| l.size)
            ))
            .into())
        }
        Growth::Fork(detail) => {
            return Err(Refusal::LogInconsistent(format!(
                "the witnessed log is not the one this host saw: {detail}"
            ))
            .into())
        }
        Growth::Larger { old, new } => {
            let proof = tlog::consistency_proof(log, old, new).map_err(read)?;
            if let Some(last) = last {
                grows(last, &head, &proof).map_err(|detail| {
                    Refusal::LogInconsistent(format!(
                        "the witnessed log is not the one this host saw: {detail}"
                    ))
                })?;
            }
        }
    }
    let not_in = |why: &str| {
        PipelineError::from(Refusal::Unwitnessed(format!(
            "version {} is not in the log's checkpoint of {} entries that {} cosigned ({why}); it is taken once the log holds it and the witnesses have seen that",
            release.version(),
            head.size,
            w.witnesses.join(", ")
        )))
    };
    let Some(index) = log.log_index(&release.statement_hash())? else {
        return Err(not_in("the log has no entry for it"));
    };
    if !tlog::includes(log, &head, index, release.statement_bytes()).map_err(read)? {
        return Err(not_in(&format!("its entry {index} does not prove it")));
    }
    Ok(head)
}
