//! Poll sequences through faults an adversarial review of the lifecycle
//! found: a store re-signing the release on probation, lost store access,
//! a poll failing as the network settles, a release that never ran, a
//! failed rollback, a switch that fails half-way, a failed health check in
//! `test` mode, and the agent restart after the system changed.

use super::kit::{Fault, Kit};
use super::lifecycle::{refused, with_v1_confirmed};
use crate::host::agent::{FaultPoint, Outcome};
use crate::verify::Check;

/// Review finding (issue 28, defect 4 reopened): the store serves the
/// release on probation re-signed with a key of its own. Matched to the
/// probation by its statement only, it looked like "the new system refuses
/// its own release" and the rollback marked it bad. Refused at the
/// signatures, it is a copy someone made: the store's doing, retried.
#[test]
fn store_resigning_the_release_on_probation_does_not_get_it_marked_bad() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.set_fault(Fault::Serve(k.latest_resigned()));
    let new = k.running_agent();
    assert_eq!(refused(k.poll(&new)), Check::UntrustedKey);
    k.clock.advance(301);
    assert!(
        matches!(
            k.poll(&new),
            Ok(Outcome::RolledBack {
                version: 2,
                retry_at: Some(_),
                ..
            })
        ),
        "{:?}",
        k.events("rolled-back")
    );
    assert!(k.remote_state().bad.is_empty());
}

/// Review finding: a release that breaks the new system's access to the
/// store (credentials, the fetch user) was blamed on the store and retried
/// for ever. No answer at all, while the old system reaches the store:
/// the release is at fault.
#[test]
fn release_that_loses_store_access_is_convicted_not_retried_for_ever() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.set_fault(Fault::Denied);
    let new = k.running_agent();
    for _ in 0..2 {
        assert!(k.poll(&new).is_err());
        k.clock.advance(100);
    }
    k.clock.advance(101);
    assert!(matches!(
        k.poll(&new),
        Ok(Outcome::RolledBack { version: 2, .. })
    ));
    k.set_fault(Fault::None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::SkippedBad { version: 2 })
    );
}

/// One failed poll right after the switch (the network settling) is not
/// enough to convict: the release is retried, and confirmed.
#[test]
fn one_failed_poll_after_the_switch_does_not_convict_the_release() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.set_fault(Fault::Down);
    let new = k.running_agent();
    assert!(k.poll(&new).is_err());
    k.clock.advance(301);
    k.set_fault(Fault::None);
    assert!(matches!(
        k.poll(&new),
        Ok(Outcome::RolledBack {
            version: 2,
            retry_at: Some(_),
            ..
        })
    ));
    let old = k.running_agent();
    assert!(matches!(
        k.poll(&old),
        Ok(Outcome::Backoff { version: 2, .. })
    ));
    k.clock.advance(61);
    assert_eq!(k.poll(&old), Ok(Outcome::Activated { version: 2 }));
    assert_eq!(k.poll(&k.running_agent()), Ok(Outcome::Unchanged));
    assert!(k.remote_state().bad.is_empty());
}

/// Review finding: an agent killed between arming and switching, not back
/// before the deadline: the release never ran, so it is not marked bad;
/// the probation ends without a verdict and the release is applied again.
#[test]
fn release_that_never_ran_is_applied_again_not_marked_bad() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    k.sys.lock().expect("sys").crash_at = Some(FaultPoint::AfterArm);
    k.poll_crashing(&k.running_agent());
    k.clock.advance(301);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    assert!(k.remote_state().bad.is_empty());
    assert_eq!(k.events("probation-ended").len(), 1);
    assert_eq!(k.poll(&k.running_agent()), Ok(Outcome::Unchanged));
}

/// Review finding: a rollback that fails used to clear the record anyway,
/// so the still-running release became the next restore point. The
/// probation now stays (a newer release waits), and the rollback is tried
/// again one period later.
#[test]
fn failed_rollback_keeps_the_probation_and_is_tried_again() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.sys.lock().expect("sys").fail_undo = true;
    k.set_fault(Fault::Down);
    let new = k.running_agent();
    k.clock.advance(301);
    assert!(matches!(
        k.poll(&new),
        Ok(Outcome::RollbackFailed { version: 2, .. })
    ));
    assert_eq!(k.probation().map(|p| p.version), Some(2));
    assert_eq!(k.running_marker(), "v2");
    assert!(k.remote_state().bad.is_empty(), "no verdict until undone");
    k.clock.advance(200);
    assert!(k.poll(&new).is_err(), "the next attempt is a period later");
    assert_eq!(k.probation().map(|p| p.version), Some(2));
    k.sys.lock().expect("sys").fail_undo = false;
    k.clock.advance(101);
    assert!(matches!(
        k.poll(&new),
        Ok(Outcome::RolledBack { version: 2, .. })
    ));
    assert_eq!(k.running_marker(), "v1");
}

/// Review finding: a switch that fails after changing the system (a unit
/// that did not start) ended the probation and left the changed system
/// running unconfirmed. It is undone to the restore point, and the
/// failure is retried with backoff like any failed activation.
#[test]
fn switch_that_fails_after_changing_the_system_is_undone() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    k.sys.lock().expect("sys").fail_after_switch = true;
    match k.poll(&k.running_agent()) {
        Ok(Outcome::ActivationFailed {
            version: 2,
            marked_bad: false,
            ..
        }) => {}
        other => panic!("expected a failed activation, got {other:?}"),
    }
    assert_eq!(k.running_marker(), "v1");
    assert!(k.probation().is_none());
    assert!(k.remote_state().retry.is_some());
}

/// The health check right after a `test` switch fails: undone exactly to
/// the system that ran before (not `nixos-rebuild test --rollback`, one
/// generation too old), through the probation's own record.
#[test]
fn failed_health_check_after_a_test_switch_restores_exactly_the_previous_system() {
    let k = Kit::new(|c| {
        c["activation"]["mode"] = "test".into();
        c["health_check"] = serde_json::json!({"command": ["false"], "timeout_secs": 5});
    });
    k.publish("v1", None);
    let first = k.agent(&k.config());
    match k.poll(&first) {
        Ok(Outcome::RolledBack { version: 1, .. }) => {}
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(k.running_marker(), "v0");
    assert!(
        k.log().iter().any(|l| l == "restore test v0"),
        "{:?}",
        k.log()
    );
    assert!(k.remote_state().bad.iter().any(|b| b.version == 1));
}

/// After a switch or a rollback the agent that runs is another system's:
/// it says so, so `follow --exit-after-switch` restarts it.
#[test]
fn agent_notices_when_the_running_system_changed_under_it() {
    let k = Kit::new(|_| {});
    let a = k.agent(&k.config());
    assert_eq!(a.system_changed(), None);
    k.publish("v1", None);
    assert_eq!(k.poll(&a), Ok(Outcome::Activated { version: 1 }));
    assert!(a.system_changed().is_some());
    // While v1 is on probation the agent polls every 50 s (probation/6).
    assert_eq!(a.probation_poll_delay(), Some(50));
}

/// Issue 30: a signed release whose `flake.lock` does not pin an input its
/// `flake.nix` names (an upstream branch) would be resolved by each host
/// at evaluation time. It is refused before anything is built, marked bad
/// (the signed bytes will not change), not retried after a restart, and a
/// later release that pins the input goes ahead.
#[test]
fn release_following_an_upstream_branch_is_refused_before_any_evaluation() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    let builds = || k.log().iter().filter(|l| l.starts_with("build ")).count();
    let before = builds();
    k.publish_with("v2", None, &[("declared-inputs", "self\nnixpkgs\n")]);
    assert_eq!(refused(k.poll(&k.running_agent())), Check::UnlockedInputs);
    assert_eq!(builds(), before, "evaluated anyway: {:?}", k.log());
    assert_eq!(k.running_marker(), "v1");
    let bad = k.remote_state().bad;
    assert!(
        bad.iter()
            .any(|b| b.version == 2 && b.reason.contains("nixpkgs")),
        "{bad:?}"
    );
    assert!(k.events("marked-bad").iter().any(|e| e.version == Some(2)));
    // A restarted agent (a reboot) does not try it again.
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::SkippedBad { version: 2 })
    );
    assert_eq!(builds(), before);
    // The publisher pins it: version 3 is activated.
    let lock = r#"{"nodes": {"nixpkgs": {"locked": {"type": "github", "owner": "NixOS", "repo": "nixpkgs",
        "rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1", "narHash": "sha256-x"}},
        "root": {"inputs": {"nixpkgs": "nixpkgs"}}}, "root": "root", "version": 7}"#;
    k.publish_with(
        "v3",
        None,
        &[("declared-inputs", "self\nnixpkgs\n"), ("flake.lock", lock)],
    );
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 3 })
    );
}
