//! `decide`, table-driven: each row names a situation, builds the facts
//! and says the one step the host must take.

use super::*;
use crate::format::digest::Digest;
use crate::host::activate::RollbackPlan;
use crate::host::clock::BootTime;
use crate::host::config::ActivationMode;
use crate::host::state::{BadRelease, Retry};

const NOW: u64 = 1_800_000_000;

fn seen(v: u64) -> Seen {
    Seen {
        version: v,
        statement: Digest([v as u8; 32]),
    }
}

fn now() -> Moment {
    Moment {
        wall: NOW,
        boot: Some(BootTime {
            id: "b1".into(),
            secs: 1_000,
        }),
    }
}

/// A probation of `v`, started at boot-clock second 900 of boot `b1`
/// (300 s: 200 s left at [`now`]).
fn probation(v: u64) -> Probation {
    let mut p = Probation {
        format: crate::host::probation::PROBATION_FORMAT.into(),
        remote: "prod".into(),
        version: v,
        statement: seen(v).statement,
        armed_at: NOW - 100,
        deadline: None,
        deadline_boot: None,
        probation_secs: 300,
        boot_id: Some("b1".into()),
        previous_active: Some(seen(v - 1)),
        rollback: RollbackPlan {
            toplevel: false,
            program: "nixos-rebuild".into(),
            mode: ActivationMode::Switch,
            profile: "/nix/var/nix/profiles/system".into(),
            restore: None,
        },
        watchdog_unit: None,
        system: None,
        rotation_keys: Vec::new(),
        legacy: false,
    };
    p.start(&Moment {
        wall: NOW - 100,
        boot: Some(BootTime {
            id: "b1".into(),
            secs: 900,
        }),
    });
    p
}

fn verified(v: u64, new: bool, stage: Stage) -> Head {
    Head::Verified {
        seen: seen(v),
        new,
        revalidated: false,
        stage,
    }
}

struct Case {
    name: &'static str,
    remote: RemoteState,
    probation: Option<Probation>,
    observed: Option<Observed>,
    now: Moment,
    head: Head,
    vouch: Vouch,
    expect: Step,
}

fn case(name: &'static str, head: Head, expect: Step) -> Case {
    Case {
        name,
        remote: RemoteState {
            highest: Some(seen(2)),
            active: Some(seen(2)),
            ..RemoteState::default()
        },
        probation: None,
        observed: None,
        now: now(),
        head,
        vouch: Vouch::May,
        expect,
    }
}

fn end(o: Outcome) -> Step {
    Step::End(o)
}

#[test]
fn decide_takes_the_one_step_each_situation_calls_for() {
    let mut cases = vec![
        case(
            "start of a quiet poll: read the head",
            Head::Unread,
            Step::ReadHead,
        ),
        case(
            "the active release is the head: up to date",
            verified(2, false, Stage::Judged),
            end(Outcome::UpToDate { version: 2 }),
        ),
        case(
            "a newer head: walk the chain",
            verified(3, true, Stage::Judged),
            Step::Descend,
        ),
        case(
            "accepted, no wave: download",
            verified(
                3,
                true,
                Stage::Accepted {
                    slot: None,
                    closed: None,
                },
            ),
            Step::Download,
        ),
        case(
            "accepted, this host's slot later: wait",
            verified(
                3,
                true,
                Stage::Accepted {
                    slot: Some(NOW + 60),
                    closed: None,
                },
            ),
            end(Outcome::Waiting {
                version: 3,
                until: NOW + 60,
            }),
        ),
        case(
            "accepted, behind a gate not promoted: wait for the promotion, even past the slot",
            verified(
                3,
                true,
                Stage::Accepted {
                    slot: Some(NOW - 60),
                    closed: crate::format::decision::StageName::new("early").map(Closed::Gated),
                },
            ),
            end(Outcome::AwaitingPromotion {
                version: 3,
                stage: "early".into(),
            }),
        ),
        case(
            "accepted, halted before this host's turn: nothing is downloaded",
            verified(
                3,
                true,
                Stage::Accepted {
                    slot: Some(NOW - 60),
                    closed: Some(Closed::Halted { at: NOW - 120 }),
                },
            ),
            end(Outcome::Halted {
                version: 3,
                at: NOW - 120,
            }),
        ),
        case(
            "accepted, slot passed: download",
            verified(
                3,
                true,
                Stage::Accepted {
                    slot: Some(NOW),
                    closed: None,
                },
            ),
            Step::Download,
        ),
        case(
            "downloaded and judged again under the lock: install",
            verified(3, true, Stage::Downloaded),
            Step::Install,
        ),
        case(
            "store unreachable, nothing on probation: end with the error",
            Head::Unreachable,
            Step::Fail { note: None },
        ),
        case(
            "a lagging mirror's older head, nothing on probation: end with the refusal",
            Head::Behind,
            Step::Fail { note: None },
        ),
    ];
    let mut c = case(
        "paused: no store request at all",
        Head::Unread,
        end(Outcome::Paused { until: NOW + 10 }),
    );
    c.remote.paused_until = Some(NOW + 10);
    cases.push(c);
    let mut c = case(
        "paused by another process while downloading: nothing installed",
        verified(3, true, Stage::Downloaded),
        end(Outcome::Paused { until: u64::MAX }),
    );
    c.remote.paused_until = Some(u64::MAX);
    cases.push(c);
    let mut c = case(
        "marked bad: skipped until a newer release",
        verified(3, true, Stage::Judged),
        end(Outcome::SkippedBad { version: 3 }),
    );
    c.remote.bad.push(BadRelease {
        version: 3,
        statement: seen(3).statement,
        reason: "x".into(),
        at: NOW,
    });
    cases.push(c);
    let mut c = case(
        "a failed activation waits for its backoff",
        verified(3, true, Stage::Judged),
        end(Outcome::Backoff {
            version: 3,
            until: NOW + 60,
        }),
    );
    c.remote.retry = Some(Retry {
        version: 3,
        attempts: 1,
        next_at: NOW + 60,
    });
    cases.push(c);
    let mut c = case(
        "the store said not modified: unchanged",
        Head::Verified {
            seen: seen(2),
            new: false,
            revalidated: true,
            stage: Stage::Judged,
        },
        end(Outcome::Unchanged),
    );
    c.vouch = Vouch::MayNot;
    cases.push(c);

    // Probation.
    let mut c = case(
        "probation deadline passed (boot clock): roll back before anything else",
        Head::Unread,
        Step::RollBack,
    );
    c.probation = Some(probation(2));
    c.remote.paused_until = Some(u64::MAX);
    c.now.boot.as_mut().expect("boot").secs = 1_200;
    cases.push(c);
    let mut c = case(
        "probation pending, wall clock a day ahead: not expired",
        Head::Unread,
        Step::ReadHead,
    );
    c.probation = Some(probation(2));
    c.now.wall += 86_400;
    cases.push(c);
    let mut c = case(
        "probation from an earlier boot, its wall-clock deadline passed: roll back",
        Head::Unread,
        Step::RollBack,
    );
    c.probation = Some(probation(2));
    c.now = Moment {
        wall: NOW + 200,
        boot: Some(BootTime {
            id: "b2".into(),
            secs: 5,
        }),
    };
    cases.push(c);
    let mut c = case(
        "a boot release seen in a later boot: start its probation",
        Head::Unread,
        Step::StartProbation,
    );
    let mut p = probation(2);
    p.deadline = None;
    p.deadline_boot = None;
    c.probation = Some(p.clone());
    c.now.boot.as_mut().expect("boot").id = "b2".into();
    cases.push(c);
    let mut c = case(
        "a boot release in the boot it was applied in: wait for the reboot",
        Head::Unread,
        Step::ReadHead,
    );
    c.probation = Some(p);
    cases.push(c);
    let mut c = case(
        "the new system's agent accepts the head: confirm",
        verified(2, false, Stage::Judged),
        Step::Confirm,
    );
    c.probation = Some(probation(2));
    cases.push(c);
    let mut c = case(
        "an agent not running the new system does not confirm: up to date",
        verified(2, false, Stage::Judged),
        end(Outcome::UpToDate { version: 2 }),
    );
    c.probation = Some(probation(2));
    c.vouch = Vouch::MayNot;
    cases.push(c);
    for (name, head) in [
        ("a lagging mirror's older head confirms (D80)", Head::Behind),
        ("a key rotation's own head confirms", Head::Rotated),
    ] {
        let mut c = case(name, head, Step::Confirm);
        c.probation = Some(probation(2));
        cases.push(c);
    }
    let mut c = case(
        "the new system refuses the release it runs: no confirmation (issue 28, 1)",
        Head::RefusesProbation,
        Step::Fail {
            note: Some(Observation::RefusedOwn),
        },
    );
    c.probation = Some(probation(2));
    cases.push(c);
    for (name, head, note) in [
        (
            "the new system reaches no store: noted",
            Head::Unreachable,
            Observation::Unreachable,
        ),
        (
            "the new system is served what it refuses: noted",
            Head::Refused,
            Observation::Refused,
        ),
    ] {
        let mut c = case(name, head, Step::Fail { note: Some(note) });
        c.probation = Some(probation(2));
        cases.push(c);
    }
    let mut c = case(
        "a newer release while another is on probation: wait (issue 28, 3)",
        verified(3, true, Stage::Judged),
        end(Outcome::AwaitingConfirmation {
            version: 3,
            pending: 2,
        }),
    );
    c.probation = Some(probation(2));
    c.vouch = Vouch::MayNot;
    cases.push(c);
    let mut c = case(
        "the same release again after a crash: install it under its probation",
        verified(2, false, Stage::Judged),
        Step::Descend,
    );
    c.probation = Some(probation(2));
    c.remote.active = Some(seen(1));
    cases.push(c);

    // After a rollback for lack of a verifiable answer (issue 28, 4).
    let retried = |name, observed: Observed, head, expect| {
        let mut c = case(name, head, expect);
        c.remote.active = Some(seen(1));
        c.remote.retry = Some(Retry {
            version: 2,
            attempts: 1,
            next_at: NOW + 60,
        });
        c.observed = Some(observed);
        c
    };
    let unreachable = Observed {
        unreachable: 3,
        ..Observed::new(seen(2))
    };
    let served_garbage = Observed {
        refused: 3,
        ..Observed::new(seen(2))
    };
    let once_unreachable = Observed {
        unreachable: 1,
        ..Observed::new(seen(2))
    };
    cases.push(retried(
        "the old system verifies the store the new one never reached: convict",
        unreachable.clone(),
        verified(2, false, Stage::Judged),
        Step::Convict,
    ));
    cases.push(retried(
        "the store served garbage to the new system: no conviction, backoff",
        served_garbage.clone(),
        verified(2, false, Stage::Judged),
        end(Outcome::Backoff {
            version: 2,
            until: NOW + 60,
        }),
    ));
    cases.push(retried(
        "one unreachable poll right after the switch: no conviction",
        once_unreachable,
        verified(2, false, Stage::Judged),
        end(Outcome::Backoff {
            version: 2,
            until: NOW + 60,
        }),
    ));
    let mut c = retried(
        "a backoff past the longest retry delay is a wall-clock step back: due now",
        served_garbage.clone(),
        verified(2, false, Stage::Judged),
        Step::Descend,
    );
    c.remote.retry.as_mut().expect("retry").next_at = NOW + 86_400;
    cases.push(c);
    let mut c = retried(
        "after the backoff the release is retried",
        unreachable,
        verified(2, false, Stage::Judged),
        Step::Descend,
    );
    c.now.wall = NOW + 60;
    cases.push(c);

    for c in cases {
        let facts = Facts {
            remote: &c.remote,
            probation: c.probation.as_ref(),
            observed: c.observed.as_ref(),
            now: &c.now,
            head: c.head,
            vouch: c.vouch,
            stop: false,
            hold: None,
        };
        assert_eq!(decide(&facts), c.expect, "{}", c.name);
    }
}

#[test]
fn a_stop_signal_before_the_download_interrupts() {
    let remote = RemoteState::default();
    let now = now();
    let facts = Facts {
        remote: &remote,
        probation: None,
        observed: None,
        now: &now,
        head: verified(
            1,
            true,
            Stage::Accepted {
                slot: None,
                closed: None,
            },
        ),
        vouch: Vouch::MayNot,
        stop: true,
        hold: None,
    };
    assert_eq!(decide(&facts), Step::End(Outcome::Interrupted));
}

/// Issue 34: a declarative hold keeps a verified newer release from being
/// downloaded or activated; at or below the hold, nothing changes.
#[test]
fn hold_stops_a_newer_release_before_the_download() {
    let remote = RemoteState::default();
    let now = now();
    let at = |version: u64, hold: Option<Hold>| {
        decide(&Facts {
            remote: &remote,
            probation: None,
            observed: None,
            now: &now,
            head: verified(version, true, Stage::Judged),
            vouch: Vouch::MayNot,
            stop: false,
            hold,
        })
    };
    let hold = |inspectable, inspected| {
        Some(Hold {
            max: 2,
            inspectable,
            inspected,
        })
    };
    let held = Step::End(Outcome::Held { version: 3, max: 2 });
    // Nothing can read the release's own config: held at once.
    assert_eq!(at(3, hold(false, None)), held);
    // Its config may lift the hold: fetched and inspected once...
    assert_eq!(at(3, hold(true, None)), Step::Descend);
    // ...and when it kept the hold, not again.
    let seen = match verified(3, true, Stage::Judged) {
        Head::Verified { seen, .. } => seen,
        _ => unreachable!(),
    };
    assert_eq!(at(3, hold(true, Some(seen))), held);
    assert_eq!(at(2, hold(false, None)), Step::Descend);
    assert_eq!(at(3, None), Step::Descend);
}
