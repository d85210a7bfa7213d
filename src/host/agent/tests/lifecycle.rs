//! Poll sequences through the release lifecycle, each named after what it
//! proves (the defects of issue 28 by their number).

use super::kit::{Fault, Kit};
use crate::host::agent::{FaultPoint, Outcome};
use crate::host::state::DataDir;
use crate::verify::Check;

pub(super) fn refused(o: Result<Outcome, String>) -> Check {
    match o {
        Ok(Outcome::Refused(r)) => r.check(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// v1 published, activated by the first system's agent and confirmed by
/// the agent of the system it switched to.
pub(super) fn with_v1_confirmed(k: &Kit) {
    k.publish("v1", None);
    assert_eq!(
        k.poll(&k.agent(&k.config())),
        Ok(Outcome::Activated { version: 1 })
    );
    assert_eq!(k.running_marker(), "v1");
    assert!(k.probation().is_some());
    assert_eq!(k.poll(&k.running_agent()), Ok(Outcome::Unchanged));
    assert!(k.probation().is_none(), "confirmed");
    assert_eq!(k.events("confirmed").len(), 1);
}

#[test]
fn a_release_is_switched_then_confirmed_by_the_new_systems_agent() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    let log = k.log();
    // Built and inspected, armed before the switch, re-armed after it (the
    // period starts once the switch is done), disarmed by the confirmation.
    assert_eq!(
        log[..4],
        ["build v1", "arm v1 300s", "switch v1", "arm v1 300s"]
    );
    assert!(log[4].starts_with("disarm timer-v1-"), "{log:?}");
    assert_eq!(log.len(), 5, "{log:?}");
    assert_eq!(k.remote_state().active.map(|a| a.version), Some(1));
}

/// Issue 28, defect 1 (inspection): a release whose own host config would
/// refuse every later release (here: a floor far above its own version) is
/// refused before any switch and marked bad.
#[test]
fn release_whose_own_policy_would_refuse_its_head_is_refused_before_the_switch() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    let mut c = k.config();
    c["policy"] = serde_json::json!({"min_version": 1000});
    k.publish("v2", Some(&c));
    assert_eq!(refused(k.poll(&k.running_agent())), Check::WouldLockOut);
    assert_eq!(k.running_marker(), "v1");
    assert!(!k.log().iter().any(|l| l == "switch v2"), "{:?}", k.log());
    assert!(k.remote_state().bad.iter().any(|b| b.version == 2));
}

/// Issue 38: a store that keeps serving releases the inspection refuses
/// (here 70, each its own version) left one bad mark per refusal in the
/// state for ever: every poll re-read the growing list, and past the
/// state's size limit the agent could no longer load it. The marks stay
/// bounded, the newest is kept, and the host still takes the next good
/// release.
#[test]
fn endless_lockout_releases_leave_a_bounded_state() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    let mut c = k.config();
    c["policy"] = serde_json::json!({"min_version": 1000});
    for i in 2..=71 {
        k.publish(&format!("v{i}"), Some(&c));
        assert_eq!(refused(k.poll(&k.running_agent())), Check::WouldLockOut);
    }
    let bad = k.remote_state().bad;
    assert!(
        bad.len() <= crate::host::state::MAX_BAD_REMEMBERED,
        "{} marks",
        bad.len()
    );
    assert!(bad.iter().any(|b| b.version == 71), "the newest is kept");
    let state = std::fs::metadata(
        DataDir::open(&k.root().join("data"))
            .expect("data")
            .state_path(),
    )
    .expect("state")
    .len();
    assert!(state < 64 * 1024, "state.json is {state} bytes");
    // The last refused release is still skipped, not built again.
    let builds = k.log().iter().filter(|l| l.starts_with("build")).count();
    assert!(matches!(
        k.poll(&k.running_agent()),
        Ok(Outcome::SkippedBad { version: 71 })
    ));
    assert_eq!(
        k.log().iter().filter(|l| l.starts_with("build")).count(),
        builds
    );
    k.publish("v72", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 72 })
    );
}

/// Issue 28, defect 1 (confirmation): with the inspection off, nothing
/// stops the switch; the new agent refuses its own head, so it must not
/// confirm (it did: "the head is the statement on probation"), and the
/// deadline rolls the release back and marks it bad.
#[test]
fn new_agent_that_refuses_its_own_head_does_not_confirm_it() {
    let k = Kit::new(|c| c["lockout"]["inspect"] = false.into());
    with_v1_confirmed(&k);
    let mut c = k.config();
    c["policy"] = serde_json::json!({"min_version": 1000});
    k.publish("v2", Some(&c));
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    let stranded = k.running_agent();
    assert_eq!(refused(k.poll(&stranded)), Check::MinVersion);
    assert!(k.probation().is_some(), "not confirmed");
    assert!(!k.events("confirmed").iter().any(|e| e.version == Some(2)));
    k.clock.advance(301);
    match k.poll(&stranded) {
        Ok(Outcome::RolledBack {
            version: 2,
            retry_at: None,
            ..
        }) => {}
        other => panic!("expected a rollback of v2, got {other:?}"),
    }
    assert_eq!(k.running_marker(), "v1");
    assert!(k.remote_state().bad.iter().any(|b| b.version == 2));
}

/// Issue 28, defect 2: a mistyped `activation.program` in the new system
/// confirmed, then failed every later release. Confirmation now runs the
/// probe, and a new system that cannot apply its next release is rolled
/// back at once.
#[test]
fn mistyped_activation_program_in_the_new_system_is_rolled_back_at_confirmation() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    let mut c = k.config();
    c["activation"]["program"] = "/nonexistent/nixos-rebiuld".into();
    k.publish("v2", Some(&c));
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    match k.poll(&k.running_agent()) {
        Ok(Outcome::RolledBack {
            version: 2,
            reason,
            retry_at: None,
        }) => assert!(reason.contains("nixos-rebiuld"), "{reason}"),
        other => panic!("expected a rollback of v2, got {other:?}"),
    }
    assert_eq!(k.running_marker(), "v1");
    assert!(k.remote_state().bad.iter().any(|b| b.version == 2));
}

/// Issue 28, defect 3 (`switch`, an agent left from before the switch): a
/// newer release must not be applied over an unconfirmed one, whose
/// record would then restore to a system that was never confirmed. It
/// waits; once the new system's agent confirms, it is applied, and its
/// restore point is the confirmed system.
#[test]
fn newer_release_waits_while_another_is_on_probation() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    let leftover = k.running_agent();
    let mut c = k.config();
    c["poll"] = serde_json::json!({"interval_secs": 7});
    k.publish("v2", Some(&c));
    assert_eq!(k.poll(&leftover), Ok(Outcome::Activated { version: 2 }));
    k.publish("v3", None);
    assert_eq!(
        k.poll(&leftover),
        Ok(Outcome::AwaitingConfirmation {
            version: 3,
            pending: 2
        })
    );
    assert!(!k.log().iter().any(|l| l.contains("v3")), "{:?}", k.log());
    assert_eq!(k.probation().map(|p| p.version), Some(2));
    // The new system's agent confirms v2, then applies v3 in the same poll.
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 3 })
    );
    let pr = k.probation().expect("v3 on probation");
    assert_eq!(pr.version, 3);
    let restore = pr.rollback.restore.expect("restore point").target;
    assert_eq!(super::nixos::Sys::marker(&restore), "v2");
}

/// Issue 28, defect 3 (`boot`, default settings): v2 then v3 before a
/// reboot made v3's rollback land on v2, which never booted. v3 now waits
/// for v2's reboot and confirmation; a v3 that then fails goes back to v2,
/// which was confirmed.
#[test]
fn boot_release_superseded_before_its_reboot_never_becomes_a_restore_point() {
    let k = Kit::new(|c| c["activation"]["mode"] = "boot".into());
    k.publish("v1", None);
    assert_eq!(
        k.poll(&k.agent(&k.config())),
        Ok(Outcome::Activated { version: 1 })
    );
    assert_eq!(k.boot_marker(), "v1");
    assert_eq!(
        k.probation().and_then(|p| p.deadline),
        None,
        "waits for the reboot"
    );
    k.sys.lock().expect("sys").reboot();
    k.clock.reboot("boot-2");
    assert_eq!(k.poll(&k.running_agent()), Ok(Outcome::Unchanged));
    assert!(k.probation().is_none(), "v1 confirmed after its boot");

    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    assert_eq!(
        (k.running_marker(), k.boot_marker()),
        ("v1".into(), "v2".into())
    );
    k.publish("v3", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::AwaitingConfirmation {
            version: 3,
            pending: 2
        })
    );
    assert_eq!(k.boot_marker(), "v2");

    k.sys.lock().expect("sys").reboot();
    k.clock.reboot("boot-3");
    // v2 boots, its agent starts and confirms v2's probation, then applies v3.
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 3 })
    );
    assert!(k.events("confirmed").iter().any(|e| e.version == Some(2)));
    assert_eq!(k.boot_marker(), "v3");

    // v3 boots and never confirms (its store is gone): back to v2.
    k.sys.lock().expect("sys").reboot();
    k.clock.reboot("boot-4");
    k.set_fault(Fault::Down);
    let v3 = k.running_agent();
    assert!(k.poll(&v3).is_err());
    k.clock.advance(301);
    assert!(matches!(
        k.poll(&v3),
        Ok(Outcome::RolledBack { version: 3, .. })
    ));
    assert_eq!(
        k.boot_marker(),
        "v2",
        "the rollback lands on a confirmed system"
    );
}

/// Issue 28, defect 4: a store that serves garbage for the whole probation
/// window (no key needed) made the rollback mark a good release bad for
/// ever. The new system reached nothing it could verify, so the release is
/// retried with backoff, and confirmed once the store serves it again.
#[test]
fn store_serving_garbage_through_the_probation_does_not_mark_the_release_bad() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.set_fault(Fault::Garbage);
    let new = k.running_agent();
    for _ in 0..3 {
        assert_eq!(refused(k.poll(&new)), Check::BundleFormat);
        k.clock.advance(60);
    }
    k.clock.advance(130);
    let retry_at = match k.poll(&new) {
        Ok(Outcome::RolledBack {
            version: 2,
            retry_at: Some(at),
            ..
        }) => at,
        other => panic!("expected a rollback to retry, got {other:?}"),
    };
    assert_eq!(k.running_marker(), "v1");
    assert!(
        k.remote_state().bad.is_empty(),
        "{:?}",
        k.remote_state().bad
    );
    // The old system is back; the store serves v2 again: the rolled-back
    // release waits for its backoff (the store was at fault: no verdict on
    // the release), then is applied and confirmed.
    k.set_fault(Fault::None);
    let old = k.running_agent();
    assert_eq!(
        k.poll(&old),
        Ok(Outcome::Backoff {
            version: 2,
            until: retry_at
        })
    );
    k.clock.advance(61);
    assert_eq!(k.poll(&old), Ok(Outcome::Activated { version: 2 }));
    assert_eq!(k.poll(&k.running_agent()), Ok(Outcome::Unchanged));
    assert!(k.probation().is_none());
    assert!(k.remote_state().bad.is_empty());
}

/// The other side of defect 4's rule: a new system that reaches no store
/// at all while the system before it, back in place, reaches and verifies
/// it at once, is at fault (its network), and is marked bad.
#[test]
fn new_system_that_reaches_no_store_while_the_old_one_does_is_marked_bad() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.set_fault(Fault::Down);
    let new = k.running_agent();
    for _ in 0..3 {
        assert!(k.poll(&new).is_err());
        k.clock.advance(60);
    }
    k.clock.advance(121);
    assert!(matches!(
        k.poll(&new),
        Ok(Outcome::RolledBack {
            version: 2,
            retry_at: Some(_),
            ..
        })
    ));
    k.set_fault(Fault::None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::SkippedBad { version: 2 })
    );
    assert!(k.remote_state().bad.iter().any(|b| b.version == 2));
    assert!(k.remote_state().retry.is_none());
    assert_eq!(k.events("marked-bad").len(), 1);
}

/// Deadlines within a boot are on the boot clock: a wall-clock step of a
/// day (forward or back) neither fires the probation nor moves it.
#[test]
fn wall_clock_step_during_probation_neither_fires_nor_delays_the_deadline() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    k.set_fault(Fault::Down);
    let new = k.running_agent();
    k.clock.step_wall(86_400);
    assert!(k.poll(&new).is_err(), "store down: no verdict");
    assert!(
        k.probation().is_some(),
        "a day ahead on the wall clock fires nothing"
    );
    k.clock.step_wall(-2 * 86_400);
    k.clock.advance(299);
    assert!(k.poll(&new).is_err());
    assert!(k.probation().is_some(), "a day back moves nothing");
    k.clock.advance(2);
    assert!(matches!(
        k.poll(&new),
        Ok(Outcome::RolledBack { version: 2, .. })
    ));
}

/// A crash between arming the probation and switching: the restarted agent
/// applies the same release again under the same probation (one record, no
/// second restore point), and the new system's agent confirms it.
#[test]
fn crash_between_arming_and_switching_applies_the_same_release_under_one_probation() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    k.sys.lock().expect("sys").crash_at = Some(FaultPoint::AfterArm);
    k.poll_crashing(&k.running_agent());
    assert_eq!(k.running_marker(), "v1");
    let armed = k.probation().expect("armed before the crash");
    assert_eq!(armed.version, 2);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    let pr = k.probation().expect("on probation");
    assert_eq!(pr.rollback.restore, armed.rollback.restore);
    assert_eq!(pr.armed_at, armed.armed_at);
    assert_eq!(k.poll(&k.running_agent()), Ok(Outcome::Unchanged));
    assert!(k.probation().is_none());
}

/// A crash right after the switch, before the release is recorded active:
/// the agent that restarts (the new system's) applies it again and then
/// confirms it; nothing is rolled back.
#[test]
fn crash_after_the_switch_is_applied_again_and_confirmed() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    k.sys.lock().expect("sys").crash_at = Some(FaultPoint::AfterActivate);
    k.poll_crashing(&k.running_agent());
    assert_eq!(k.running_marker(), "v2");
    assert_eq!(k.remote_state().active.map(|a| a.version), Some(1));
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    assert_eq!(k.poll(&k.running_agent()), Ok(Outcome::Unchanged));
    assert!(k.events("rolled-back").is_empty());
}

/// Break-glass during a probation: ending it by hand (what `npcnix
/// activate` does) disarms the watchdog and removes the record, so the
/// deadline never undoes the operator's fix.
#[test]
fn operator_activation_ends_the_probation_so_the_deadline_never_undoes_it() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    let data = crate::host::state::DataDir::open(&k.root().join("data")).expect("data");
    let watchdog = super::nixos::FakeWatchdog::new(std::sync::Arc::clone(&k.sys));
    let ended = crate::host::probation::end_by_operator(
        &data,
        "prod",
        &watchdog,
        k.clock.wall(),
        "manual activation from /root/fix",
    )
    .expect("end");
    assert_eq!(ended.map(|e| e.probation.version), Some(2));
    assert!(k.log().last().is_some_and(|l| l.starts_with("disarm ")));
    let ev = k.events("probation-ended");
    assert_eq!(ev.len(), 1);
    assert!(ev[0]
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("manual activation"));
    k.set_fault(Fault::Down);
    k.clock.advance(600);
    assert!(
        k.poll(&k.running_agent()).is_err(),
        "store down, nothing to roll back"
    );
    assert!(k.events("rolled-back").is_empty());
    assert_eq!(k.running_marker(), "v2");
}

/// A paused host neither polls nor confirms, and an expired probation is
/// still rolled back first (the watchdog would do the same).
#[test]
fn paused_host_still_rolls_back_an_expired_probation() {
    let k = Kit::new(|_| {});
    with_v1_confirmed(&k);
    k.publish("v2", None);
    assert_eq!(
        k.poll(&k.running_agent()),
        Ok(Outcome::Activated { version: 2 })
    );
    let data = crate::host::state::DataDir::open(&k.root().join("data")).expect("data");
    let mut st = data.load().expect("state");
    st.remote_mut("prod").paused_until = Some(u64::MAX);
    data.save(&st).expect("save");
    let new = k.running_agent();
    assert_eq!(k.poll(&new), Ok(Outcome::Paused { until: u64::MAX }));
    assert!(k.probation().is_some(), "a paused agent does not confirm");
    k.clock.advance(301);
    assert!(matches!(
        k.poll(&new),
        Ok(Outcome::RolledBack { version: 2, .. })
    ));
}

/// Issue 32 review: the release on probation verifies, only its freshness
/// timestamp lapsed (a missed refresh). The new system reaches the store
/// and accepts what it runs: it confirms (a rollback cannot make the
/// signers refresh, and a retry loop would mark a healthy release bad).
#[test]
fn release_on_probation_whose_timestamp_lapses_is_confirmed_not_rolled_back() {
    let ts = crate::format::keys::SecretKey::generate().expect("key");
    let ts_public = ts.public_key().to_base64();
    let k = Kit::new(|c| {
        c["trusted_keys"].as_array_mut().expect("keys").push(
            serde_json::json!({"public_key": ts_public, "remotes": ["prod"], "role": "timestamp"}),
        );
        c["policy"] = serde_json::json!({"freshness": {"required": true}});
    });
    k.publish("v1", None);
    let now = crate::host::clock::Clock::now(&k.clock).wall;
    k.timestamp(&ts, now, now + 100);
    assert_eq!(
        k.poll(&k.agent(&k.config())),
        Ok(Outcome::Activated { version: 1 })
    );
    assert!(k.probation().is_some());
    k.clock.advance(150);
    assert_eq!(refused(k.poll(&k.running_agent())), Check::TimestampExpired);
    assert!(k.probation().is_none(), "confirmed");
    assert_eq!(k.events("confirmed").len(), 1);
    assert_eq!(k.running_marker(), "v1");
}
