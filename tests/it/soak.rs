//! Regressions found by the soak (`bench/soak`: a fleet of agents against a
//! faulty store, killed -9 once each). Each test is named after a finding.

use std::fs;

use npcnix::fsutil::TempDir;

use crate::common::host::Host;

fn tmp_entries(h: &Host) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(h.kit.data_dir().join("tmp"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An agent killed while it holds a download, an extracted tree or a build
/// in `<data>/tmp` left it there for good: every kill during a download
/// leaked up to an archive's size of disk. The next download removes what a
/// dead process left, and nothing a living one holds.
#[test]
fn temp_dir_leaked_by_a_killed_agent() {
    let h = Host::new();
    h.publish("v1");
    let r = h
        .agent_cmd(&["follow", "--once"])
        .env("NPCNIX_TEST_FAULT", "after-record")
        .output()
        .expect("run");
    assert!(
        !r.status.success(),
        "the fault must kill the agent (is the binary built with --features test-hooks? run bash scripts/test)"
    );
    let left = tmp_entries(&h);
    assert!(
        left.len() == 1 && left[0].starts_with("tree-"),
        "the killed agent leaves its extracted tree behind: {left:?}"
    );
    // Another process's download in progress, which must survive the sweep.
    let live = TempDir::new_held_in(&h.kit.data_dir().join("tmp"), "pull-").expect("held dir");
    fs::write(live.path().join("archive.tar.zst"), b"in progress").expect("write");
    let live_name = live
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    // The release recorded before the kill is downloaded again and applied.
    let (label, run) = h.once();
    assert_eq!(label, "activated", "{}", run.stderr);
    assert_eq!(
        tmp_entries(&h),
        vec![live_name.clone()],
        "the dead agent's tree is gone, the living download is not"
    );
    assert!(live.path().join("archive.tar.zst").exists());
    drop(live);
    assert!(tmp_entries(&h).is_empty());
}

/// A mirror or cache that still serves the previous `latest` (validly
/// signed, only older) for longer than the probation made every poll a
/// `rollback` refusal, so the good release just switched to was never
/// confirmed: it was rolled back and marked bad. An older head signed for
/// this remote by the host's keys shows what probation asks for (the store
/// is reachable, its releases verify), so it confirms.
#[test]
fn stale_latest_from_a_lagging_mirror_rolled_back_a_good_release() {
    let h = Host::with(|c| {
        c["lockout"] = serde_json::json!({"probation_secs": 5, "watchdog": "none"});
    });
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.once().0, "unchanged", "confirms version 1");
    let v1 = fs::read(h.kit.store_path("prod", "latest")).expect("v1");
    h.publish("v2");
    assert_eq!(h.once().0, "activated");
    let v2 = fs::read(h.kit.store_path("prod", "latest")).expect("v2");
    // The mirror lags: it serves version 1 as `latest` again.
    fs::write(h.kit.store_path("prod", "latest"), &v1).expect("write");
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stderr);
    assert!(r.stderr.contains("(rollback)"), "{}", r.stderr);
    let confirmed: Vec<_> = h
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "confirmed")
        .map(|e| e["version"].clone())
        .collect();
    assert_eq!(confirmed, vec![serde_json::json!(1), serde_json::json!(2)]);
    // Past the deadline, still lagging: nothing to roll back.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stderr);
    fs::write(h.kit.store_path("prod", "latest"), &v2).expect("write");
    let (label, r) = h.once();
    assert!(
        label == "unchanged" || label == "up-to-date",
        "{label}: {}",
        r.stderr
    );
    assert!(
        !h.audit().iter().any(|e| e["event"] == "rolled-back"),
        "a good release was rolled back: {:?}",
        h.audit()
    );
    let s = h.status();
    assert_eq!(s["active_version"], 2);
    assert!(s["bad_releases"].as_array().is_none_or(|b| b.is_empty()));
}
