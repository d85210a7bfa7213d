//! decision: the rollout decision envelope and the strict decision parser
//! (promotions and halts, issue 35), which hosts read from the store: the
//! envelope is split before the signatures are checked, the decision is
//! parsed once they verified.
//!
//! Proves, for any input:
//! * the envelope splitter never accepts more than the size limit, and
//!   never an envelope without signatures or with more than the maximum;
//! * an accepted decision has the exact type, version at least 1, a valid
//!   stage exactly when it is a promotion, and a plain short reason;
//! * the canonical form round-trips: `parse(to_bytes(d)) == d`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npcnix::format::decision::{
    decode, is_stage_name, Action, Decision, DECISION_MAX_BYTES, DECISION_TYPE, MAX_REASON,
    MAX_SIGNATURES,
};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, sigs)) = decode(data) {
        assert!(data.len() <= DECISION_MAX_BYTES);
        assert!(!sigs.is_empty() && sigs.len() <= MAX_SIGNATURES);
    }
    let Ok(d) = Decision::parse(data) else {
        return;
    };
    assert_eq!(d.kind, DECISION_TYPE);
    assert!(d.version >= 1);
    match d.action {
        Action::Promote => assert!(d.stage.as_deref().is_some_and(is_stage_name)),
        Action::Halt => assert!(d.stage.is_none()),
    }
    assert!(d.reason.as_ref().is_none_or(|r| r.len() <= MAX_REASON));
    let bytes = d.to_bytes();
    if bytes.len() > DECISION_MAX_BYTES {
        return;
    }
    let back = Decision::parse(&bytes).expect("canonical form must parse");
    assert_eq!(back, d);
    assert_eq!(back.to_bytes(), bytes);
});
