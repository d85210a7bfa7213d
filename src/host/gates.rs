//! When this host may activate a release with a rollout wave: its slot on
//! the signed curve, and for a gated stage (issue 35) the release's signed
//! promotions and halt, read from the store and verified here
//! ([`crate::verify::decision`]). The decision itself is
//! [`crate::format::rollout::Rollout::admission`], pure.
//!
//! Reads happen only when they can change the answer: for a host behind a
//! gate, on every poll until it activates (the halt, then the promotions
//! of the gates up to its own, stopping at the first one missing: two
//! small reads for the first gated stage, one more per later gate, so it
//! reports `waiting-for-promotion` or `halted`); for an ungated host, the
//! halt on each poll from its slot on the curve (none for the hosts at the
//! wave's start). "Access denied" for a decision means none
//! ([`ReleaseLog::decision`]). A store that withholds decisions delays
//! hosts (or, for a halt, lets them go on as withholding a revert would);
//! one that serves a decision that does not verify gets a
//! `rollout-decision` refusal, never an activation.

use crate::format::rollout::{Admission, Rollout};
use crate::store::{Object, ReleaseLog};
use crate::verify::decision::{self, Expected, RolloutTrust};
use crate::verify::{Refusal, VerifiedRelease};

use super::pipeline::PipelineError;

/// This host's admission for `release` under `plan`, at `now`.
pub fn admission(
    log: &ReleaseLog<'_>,
    trust: &RolloutTrust,
    max_future_skew_secs: u64,
    release: &VerifiedRelease,
    plan: &Rollout,
    host_id: &str,
    now: u64,
) -> Result<Admission, PipelineError> {
    let st = release.statement();
    let position = Rollout::position(st.remote.as_str(), st.version, host_id);
    let curve = st.created.saturating_add(plan.offset(position));
    let gate = plan.gate_of(position);
    if gate.is_none() && (now < curve || curve == st.created) {
        // Ungated: before its slot on the curve a halt can change nothing
        // yet, and a host at the very start of the wave is open from the
        // release's creation, before any halt could be signed.
        return Ok(Admission::At(curve));
    }
    let read = |stage: Option<&str>| -> Result<Option<u64>, PipelineError> {
        let obj = match stage {
            Some(s) => Object::Promotion(st.version, s),
            None => Object::Halt(st.version),
        };
        let Some(bytes) = log.decision(obj)? else {
            return Ok(None);
        };
        let expected = Expected {
            remote: &st.remote,
            version: st.version,
            statement: release.statement_hash(),
            stage,
        };
        match decision::verify(&bytes, trust, expected, max_future_skew_secs, now) {
            Ok(v) => Ok(Some(v.decision.created)),
            Err(e) => Err(Refusal::RolloutDecision(format!(
                "{} of version {} in the store does not verify: {e}",
                match stage {
                    Some(s) => format!("the promotion of stage {s:?}"),
                    None => "the halt".to_owned(),
                },
                st.version
            ))
            .into()),
        }
    };
    let halt = read(None)?;
    let mut promoted = Vec::new();
    if let Some(i) = gate {
        for g in &plan.gates[..=i] {
            match read(Some(&g.stage))? {
                Some(t) => promoted.push((g.stage.clone(), t)),
                None => break,
            }
        }
    }
    Ok(plan.admission(
        st.created,
        position,
        |stage| promoted.iter().find(|(s, _)| s == stage).map(|(_, t)| *t),
        halt,
    ))
}
