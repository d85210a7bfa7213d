//! Lockout protection (docs/lockout.md): a validly signed release must not
//! be able to strand a host. Inspection of the built system before any
//! switch, and probation after it with a watchdog outside the agent's
//! service. Recording stand-ins for `nixos-rebuild`, `systemd-run` and
//! `systemctl` (tests/it/common/{host,system}.rs); the real-Nix case is in
//! toplevel.rs.

use std::fs;
use std::time::Duration;

use crate::common::host::Host;
use crate::common::*;

/// A host with lockout settings `lockout` (merged into the defaults).
fn host(lockout: serde_json::Value) -> Host {
    Host::with(|c| c["lockout"] = lockout)
}

/// Publishes `marker` with extra files in the flake (`npcnix-disabled`,
/// `npcnix-config.json`) and extra publish arguments.
fn publish_with(h: &Host, marker: &str, files: &[(&str, String)], extra: &[&str]) {
    let src = h.kit.flake(&format!("src-{marker}"), marker);
    for (name, text) in files {
        fs::write(src.join(name), text).expect("write");
    }
    h.kit.publish("prod", &h.key, &src, extra).ok();
}

fn sys_log(h: &Host) -> String {
    system::log(h.kit.path("").as_path())
}

fn events(h: &Host, name: &str) -> Vec<serde_json::Value> {
    h.audit()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn switches(h: &Host) -> usize {
    h.activations()
        .iter()
        .filter(|l| l.starts_with("start switch --flake"))
        .count()
}

#[test]
fn release_whose_system_disables_the_agent_is_refused_before_any_switch() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    publish_with(&h, "v2", &[("npcnix-disabled", String::new())], &[]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stderr);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("would-lock-out"), "{}", r.stderr);
    assert!(r.stderr.contains("npcnix.service"), "{}", r.stderr);
    assert_eq!(switches(&h), 1, "version 2 was never switched to");
    let s = h.status();
    assert_eq!(s["active_version"], 1);
    assert_eq!(s["bad_releases"][0]["version"], 2);
    assert!(events(&h, "rejected")
        .iter()
        .any(|e| e["check"] == "would-lock-out" && e["version"].is_null()));
    assert!(events(&h, "marked-bad").iter().any(|e| e["version"] == 2));
    // Marked bad: not built again, however often the agent polls.
    let builds = h.rebuild_log().matches("build ").count();
    assert_eq!(h.once().0, "skipped-bad");
    assert_eq!(h.rebuild_log().matches("build ").count(), builds);
}

#[test]
fn release_that_drops_the_key_for_this_remote_or_moves_the_host_is_refused() {
    let h = Host::new();
    // The new system's config scopes the only key to another remote.
    let mut cfg = h.config();
    cfg["trusted_keys"][0]["remotes"] = serde_json::json!(["staging"]);
    publish_with(&h, "v1", &[("npcnix-config.json", cfg.to_string())], &[]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stderr);
    assert!(r.stderr.contains("would-lock-out"), "{}", r.stderr);
    assert!(r.stderr.contains("no trusted key may sign"), "{}", r.stderr);
    assert_eq!(switches(&h), 0);

    // A key past its not_after leaves fewer usable keys than the threshold.
    let mut cfg = h.config();
    cfg["trusted_keys"][0]["not_after"] = serde_json::json!(1000);
    publish_with(&h, "v2", &[("npcnix-config.json", cfg.to_string())], &[]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(r.stderr.contains("unexpired key"), "{}", r.stderr);

    // Another URL for the same remote name.
    let mut cfg = h.config();
    cfg["remote"]["url"] = serde_json::json!("file:///nowhere/prod");
    publish_with(&h, "v3", &[("npcnix-config.json", cfg.to_string())], &[]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert!(
        r.stderr.contains("fetches from file:///nowhere/prod"),
        "{}",
        r.stderr
    );
    assert_eq!(switches(&h), 0);
    assert_eq!(h.status()["bad_releases"].as_array().map(Vec::len), Some(3));
}

#[test]
fn release_whose_agent_would_refuse_every_later_version_is_refused() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    // The new system's agent would poll and confirm, then refuse v3 onwards.
    let mut cfg = h.config();
    cfg["policy"] = serde_json::json!({"max_version_jump": 0});
    publish_with(&h, "v2", &[("npcnix-config.json", cfg.to_string())], &[]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stderr);
    assert!(r.stderr.contains("would-lock-out"), "{}", r.stderr);
    assert!(r.stderr.contains("max_version_jump = 0"), "{}", r.stderr);
    assert_eq!(switches(&h), 1, "version 2 was never switched to");
    // Limits its own archive does not fit.
    let mut cfg = h.config();
    cfg["limits"] = serde_json::json!({"archive_bytes": 100});
    publish_with(&h, "v3", &[("npcnix-config.json", cfg.to_string())], &[]);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stderr);
    assert!(
        r.stderr.contains("limits.archive_bytes = 100"),
        "{}",
        r.stderr
    );
    assert_eq!(switches(&h), 1);
    assert_eq!(h.status()["active_version"], 1);
}

#[test]
fn decommission_in_the_signed_statement_retires_the_host_on_purpose() {
    let h = Host::new();
    publish_with(
        &h,
        "v1",
        &[("npcnix-disabled", String::new())],
        &["--decommission", "web"],
    );
    let (label, r) = h.once();
    assert_eq!(label, "activated", "{}", r.stderr);
    assert!(!h.rebuild_log().contains("build "), "not inspected");
    assert_eq!(events(&h, "decommission").len(), 1);
    assert!(h.status()["probation"].is_null(), "no probation");
    assert!(!sys_log(&h).contains("systemd-run"), "no watchdog");
    // Another configuration's decommission does not count for this host.
    publish_with(
        &h,
        "v2",
        &[("npcnix-disabled", String::new())],
        &["--decommission", "db"],
    );
    assert_eq!(h.once().0, "rejected");
}

#[test]
fn decommission_of_a_name_that_is_no_configuration_is_a_usage_error() {
    let h = Host::new();
    let src = h.kit.flake("src", "v1");
    let r = h
        .kit
        .publish("prod", &h.key, &src, &["--decommission", "web host"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--decommission"), "{}", r.stderr);
}

#[test]
fn switch_that_is_never_confirmed_is_rolled_back_by_the_watchdog_and_not_retried() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    let s = h.status();
    assert_eq!(s["probation"]["version"], 1);
    assert!(s["probation"]["deadline"].as_u64().is_some());
    assert_eq!(s["probation"]["awaiting"], "a successful poll");
    let log = sys_log(&h);
    assert!(
        log.contains("systemd-run --unit=npcnix-probation-prod-v1-"),
        "{log}"
    );
    assert!(
        log.contains("probation expire --data-dir"),
        "the timer runs this npcnix binary: {log}"
    );
    // Nobody polls: the watchdog fires and rolls back.
    wait_for("the watchdog's rollback", Duration::from_secs(30), || {
        !events(&h, "rolled-back").is_empty()
    });
    assert!(
        h.rebuild_log().contains("start switch --rollback"),
        "{}",
        h.rebuild_log()
    );
    let s = h.status();
    assert!(s["active_version"].is_null(), "{s}");
    assert!(s["probation"].is_null());
    assert_eq!(s["bad_releases"][0]["version"], 1);
    assert!(s["bad_releases"][0]["reason"]
        .as_str()
        .expect("reason")
        .starts_with("unconfirmed"));
    assert!(events(&h, "rolled-back")[0]["detail"]
        .as_str()
        .expect("detail")
        .contains("unconfirmed"));
    // Not retried.
    assert_eq!(h.once().0, "skipped-bad");
    assert_eq!(switches(&h), 1);
}

#[test]
fn switch_confirmed_by_the_next_poll_disarms_the_watchdog_and_stays() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    let (label, _) = h.once();
    assert!(
        matches!(label.as_str(), "unchanged" | "up-to-date"),
        "{label}"
    );
    assert_eq!(events(&h, "confirmed").len(), 1);
    assert!(sys_log(&h).contains("systemctl stop npcnix-probation-prod-v1-"));
    assert!(h.status()["probation"].is_null());
    std::thread::sleep(Duration::from_secs(7));
    assert!(!sys_log(&h).contains("fired"), "{}", sys_log(&h));
    assert!(events(&h, "rolled-back").is_empty());
    assert_eq!(h.status()["active_version"], 1);
}

#[test]
fn failing_health_check_at_confirmation_rolls_back_at_once() {
    // Healthy right after the switch, unhealthy when the new agent checks.
    let flag = std::env::temp_dir().join(format!("npcnix-hc-{}", std::process::id()));
    let _ = fs::remove_file(&flag);
    let h = Host::with(|c| {
        c["lockout"] = serde_json::json!({"probation_secs": 60});
        c["health_check"] = serde_json::json!({"command": ["sh", "-c", format!("test ! -f {}", flag.display())], "timeout_secs": 5});
    });
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    fs::write(&flag, "").expect("flag");
    let (label, r) = h.once();
    let _ = fs::remove_file(&flag);
    assert_eq!(label, "rolled-back", "{}", r.stderr);
    assert!(h.rebuild_log().contains("start switch --rollback"));
    assert!(h.status()["bad_releases"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("health check failed during probation"));
    assert!(events(&h, "confirmed").is_empty());
}

#[test]
fn agent_killed_right_after_the_switch_and_restarted_within_the_deadline_confirms() {
    let h = host(serde_json::json!({"probation_secs": 60}));
    h.publish("v1");
    let r = h
        .agent_cmd(&["follow", "--once"])
        .env("NPCNIX_TEST_FAULT", "after-activate")
        .output()
        .expect("run");
    assert!(!r.status.success(), "the fault aborted the agent");
    assert_eq!(switches(&h), 1);
    // Restarted: the switch is applied again (it cannot know whether it
    // completed), the first deadline stands, and the next poll confirms.
    assert_eq!(h.once().0, "activated");
    assert_eq!(
        sys_log(&h).matches("systemd-run").count(),
        2,
        "armed before and re-armed after the one completed switch: {}",
        sys_log(&h)
    );
    h.once();
    assert_eq!(events(&h, "confirmed").len(), 1);
    assert!(events(&h, "rolled-back").is_empty());
    assert_eq!(h.status()["active_version"], 1);
}

#[test]
fn agent_killed_right_after_the_switch_and_not_back_before_the_deadline_reverts() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    h.publish("v1");
    let r = h
        .agent_cmd(&["follow", "--once"])
        .env("NPCNIX_TEST_FAULT", "after-activate")
        .output()
        .expect("run");
    assert!(!r.status.success());
    wait_for("the watchdog's rollback", Duration::from_secs(30), || {
        !events(&h, "rolled-back").is_empty()
    });
    assert_eq!(h.once().0, "skipped-bad");
    assert_eq!(switches(&h), 1);
}

/// Gives `h` a running system, `sys-before` (whose switch-to-configuration
/// stand-in logs `stc <action>` and makes itself the running system), as
/// the newest of two generations; returns its path.
fn running_system(h: &Host) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let run = h.kit.path("run");
    let before = h.kit.path("sys-before");
    fs::create_dir_all(before.join("bin")).expect("mkdir");
    fs::create_dir_all(h.kit.path("sys-older")).expect("mkdir");
    fs::create_dir_all(&run).expect("mkdir");
    let stc = before.join("bin/switch-to-configuration");
    fs::write(
        &stc,
        format!(
            "#!/bin/sh\necho \"stc $1\" >> {log}\nln -sfn {me} {run}/current-system\n",
            log = h.kit.path("bin/rebuild.log").display(),
            me = before.display(),
            run = run.display()
        ),
    )
    .expect("write");
    fs::set_permissions(&stc, fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink(&before, run.join("current-system")).expect("link");
    fs::write(
        h.kit.path("bin/generations"),
        format!(
            "{}\n{}\n",
            h.kit.path("sys-older").display(),
            before.display()
        ),
    )
    .expect("write");
    fs::canonicalize(before).expect("canonical")
}

fn running(h: &Host) -> std::path::PathBuf {
    fs::canonicalize(h.kit.path("run/current-system")).expect("current-system")
}

fn rolled_back_detail(h: &Host) -> String {
    events(h, "rolled-back")[0]["detail"]
        .as_str()
        .expect("detail")
        .to_owned()
}

/// The system the stand-in built last (what a switch runs).
fn built_system(h: &Host) -> std::path::PathBuf {
    let dir = h.kit.path("bin/systems");
    let last = fs::read_dir(&dir)
        .expect("systems")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".last"))
        .expect("a build");
    let path = fs::read_to_string(last.path()).expect("read");
    fs::canonicalize(path.trim()).expect("canonical")
}

fn relink(link: &std::path::Path, to: &std::path::Path) {
    fs::remove_file(link).expect("unlink");
    std::os::unix::fs::symlink(to, link).expect("link");
}

#[test]
fn agent_not_running_the_new_system_or_its_config_does_not_confirm() {
    let h = host(serde_json::json!({"probation_secs": 60}));
    let before = running_system(&h);
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    let new = built_system(&h);
    assert_eq!(running(&h), new, "the switch runs the inspected system");
    // The old system still runs (a switch that did not take).
    relink(&h.kit.path("run/current-system"), &before);
    let (_, r) = h.once();
    assert!(
        r.stderr.contains("not confirming version 1 yet"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("the running system is"), "{}", r.stderr);
    assert!(events(&h, "confirmed").is_empty());
    // The new system runs, but this agent has another host config.
    relink(&h.kit.path("run/current-system"), &new);
    let own = h.config();
    let mut other = own.clone();
    other["poll"]["interval_secs"] = serde_json::json!(17);
    h.set_config(&other);
    let (_, r) = h.once();
    assert!(r.stderr.contains("another host config"), "{}", r.stderr);
    assert!(events(&h, "confirmed").is_empty());
    // The new system's agent, with its own config: confirmed.
    h.set_config(&own);
    h.once();
    assert_eq!(events(&h, "confirmed").len(), 1);
    assert!(h.status()["probation"].is_null());
}

#[test]
fn agent_killed_between_arming_and_switching_is_not_rolled_back_past_the_running_system() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    let before = running_system(&h);
    h.publish("v1");
    let r = h
        .agent_cmd(&["follow", "--once"])
        .env("NPCNIX_TEST_FAULT", "after-arm")
        .output()
        .expect("run");
    assert!(!r.status.success(), "the fault aborted the agent");
    assert_eq!(switches(&h), 0);
    // The watchdog fires: the release never ran, so nothing is undone and
    // it gets no verdict (issue 28 review): the probation just ends.
    wait_for("the watchdog", Duration::from_secs(30), || {
        !events(&h, "probation-ended").is_empty()
    });
    // `switch --rollback` here would have stepped back to sys-older.
    assert!(
        !h.rebuild_log().contains("--rollback"),
        "{}",
        h.rebuild_log()
    );
    assert_eq!(running(&h), before);
    let ended = events(&h, "probation-ended");
    assert!(
        ended[0]["detail"]
            .as_str()
            .expect("detail")
            .contains("never ran"),
        "{ended:?}"
    );
    assert!(events(&h, "rolled-back").is_empty());
    assert!(h.status()["bad_releases"]
        .as_array()
        .expect("list")
        .is_empty());
    // Applied again at the next poll.
    assert_eq!(h.once().0, "activated");
    assert_eq!(switches(&h), 1);
}

#[test]
fn unconfirmed_switch_returns_to_the_system_before_it_and_the_audit_log_says_so() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    let before = running_system(&h);
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    assert_ne!(running(&h), before, "the switch moved the running system");
    wait_for("the watchdog", Duration::from_secs(30), || {
        !events(&h, "rolled-back").is_empty()
    });
    assert!(h.rebuild_log().contains("start switch --rollback"));
    assert_eq!(running(&h), before);
    let detail = rolled_back_detail(&h);
    assert!(
        detail.contains(&format!("rolled back to {}", before.display())),
        "{detail}"
    );
}

#[test]
fn unconfirmed_test_activation_returns_to_exactly_the_running_system_not_an_older_generation() {
    let h = Host::with(|c| {
        c["lockout"] = serde_json::json!({"probation_secs": 5});
        c["activation"]["mode"] = serde_json::json!("test");
    });
    let before = running_system(&h);
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    assert_ne!(running(&h), before);
    wait_for("the watchdog", Duration::from_secs(30), || {
        !events(&h, "rolled-back").is_empty()
    });
    // `nixos-rebuild test --rollback` would run sys-older, the generation
    // before the newest; the system that ran before is sys-before.
    assert!(
        !h.rebuild_log().contains("--rollback"),
        "{}",
        h.rebuild_log()
    );
    assert!(h.rebuild_log().contains("stc test"), "{}", h.rebuild_log());
    assert_eq!(running(&h), before);
    assert!(rolled_back_detail(&h).contains("rolled back to"));
}

#[test]
fn expired_probation_found_at_start_is_rolled_back_by_the_agent_itself() {
    // No watchdog (a host without systemd, or a reboot that dropped the
    // transient timer): the agent acts on the recorded deadline.
    let h = host(serde_json::json!({"probation_secs": 5, "watchdog": "none"}));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    assert!(!sys_log(&h).contains("systemd-run"));
    std::thread::sleep(Duration::from_secs(6));
    let (label, r) = h.once();
    assert_eq!(label, "rolled-back", "{}", r.stderr);
    assert!(h.rebuild_log().contains("start switch --rollback"));
    assert_eq!(h.status()["bad_releases"][0]["version"], 1);
}

#[test]
fn watchdog_that_cannot_be_armed_means_no_switch() {
    let h = host(serde_json::json!({"probation_secs": 60}));
    fs::write(h.kit.path("sys/systemd-run-fails"), "").expect("flag");
    h.publish("v1");
    let (label, r) = h.once();
    assert_eq!(label, "activation-failed", "{}", r.stderr);
    assert!(r.stderr.contains("probation watchdog"), "{}", r.stderr);
    assert_eq!(switches(&h), 0);
    assert!(h.status()["probation"].is_null());
}

#[test]
fn boot_release_is_confirmed_after_the_reboot_that_starts_it() {
    let h = Host::with(|c| {
        c["activation"]["mode"] = serde_json::json!("boot");
        c["lockout"] = serde_json::json!({"probation_secs": 60});
    });
    let once_in = |boot: &str| {
        let o = h
            .agent_cmd(&["follow", "--once", "--json"])
            .env("NPCNIX_TEST_BOOT_ID", boot)
            .output()
            .expect("run");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    h.publish("v1");
    assert!(once_in("boot-a").contains("\"activated\""));
    let s = h.status();
    assert_eq!(s["probation"]["version"], 1);
    assert!(s["probation"]["deadline"].is_null(), "waits for the reboot");
    assert!(
        !sys_log(&h).contains("systemd-run"),
        "no timer before the reboot"
    );
    // Same boot: nothing to confirm yet.
    once_in("boot-a");
    assert!(events(&h, "confirmed").is_empty());
    // After the reboot the probation starts, and the poll confirms.
    once_in("boot-b");
    assert_eq!(events(&h, "probation-started").len(), 1);
    assert_eq!(events(&h, "confirmed").len(), 1);
    assert!(h.status()["probation"].is_null());
}

/// The booted system and the boot default (the profile) differ in their
/// kernel: a reboot is due.
fn boot_default_with_another_kernel(h: &Host) {
    let sys = |name: &str, kernel: &str| {
        let d = h.kit.path(name);
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(h.kit.path(kernel), kernel).expect("kernel");
        std::os::unix::fs::symlink(h.kit.path(kernel), d.join("kernel")).expect("link");
        d
    };
    let booted = sys("old-system", "kernel-1");
    let next = sys("new-system", "kernel-2");
    std::os::unix::fs::symlink(&booted, h.kit.path("run/booted-system")).expect("link");
    let mut cfg = h.config();
    cfg["activation"]["profile"] = serde_json::json!(h.kit.path("profile"));
    h.set_config(&cfg);
    std::os::unix::fs::symlink(&next, h.kit.path("profile")).expect("link");
}

#[test]
fn changed_kernel_reboots_once_inside_the_window() {
    let h = Host::with(|c| {
        c["activation"]["mode"] = serde_json::json!("boot");
        c["reboot"] = serde_json::json!({"allow": true, "window": null});
    });
    boot_default_with_another_kernel(&h);
    h.publish("v1");
    h.once();
    assert_eq!(sys_log(&h).matches("systemctl reboot").count(), 1);
    assert_eq!(events(&h, "reboot").len(), 1);
    // A boot that fell back to the old kernel does not loop.
    h.once();
    assert_eq!(sys_log(&h).matches("systemctl reboot").count(), 1);
}

/// Issue 33: the window is the host's local time (as
/// `system.autoUpgrade.rebootWindow`), not UTC. In a zone 5 hours east of
/// UTC, a window around the local minute opens and one around the UTC
/// minute does not.
#[test]
fn reboot_window_is_local_time() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let hhmm = |m: u64| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let utc_minute = (now % 86_400) / 60;
    let local_minute = utc_minute + 5 * 60;
    for (label, around, reboots) in [("UTC", utc_minute, 0), ("local", local_minute, 1)] {
        // From 10 minutes before to 10 minutes after.
        let window =
            serde_json::json!({"lower": hhmm(around + 1440 - 10), "upper": hhmm(around + 10)});
        let h = Host::with(|c| {
            c["activation"]["mode"] = serde_json::json!("boot");
            c["reboot"] = serde_json::json!({"allow": true, "window": window});
        });
        boot_default_with_another_kernel(&h);
        h.publish("v1");
        let o = h
            .agent_cmd(&["follow", "--once", "--json"])
            .env("TZ", "XYZ-5")
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            sys_log(&h).matches("systemctl reboot").count(),
            reboots,
            "window around the {label} minute ({window}): {}\n{}",
            sys_log(&h),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn reboot_window_outside_now_waits() {
    // A one-minute window two minutes from now (UTC).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let minute = (now % 86_400) / 60;
    let hhmm = |m: u64| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let window = serde_json::json!({"lower": hhmm(minute + 2), "upper": hhmm(minute + 3)});
    let h = Host::with(|c| c["reboot"] = serde_json::json!({"allow": true, "window": window}));
    let d = h.kit.path("new-system");
    fs::create_dir_all(&d).expect("mkdir");
    std::os::unix::fs::symlink("/nonexistent-kernel", d.join("kernel")).expect("link");
    fs::create_dir_all(h.kit.path("old-system")).expect("mkdir");
    std::os::unix::fs::symlink(h.kit.path("old-system"), h.kit.path("run/booted-system"))
        .expect("link");
    let mut cfg = h.config();
    cfg["activation"]["profile"] = serde_json::json!(d);
    h.set_config(&cfg);
    h.publish("v1");
    h.once();
    assert!(!sys_log(&h).contains("reboot"), "{}", sys_log(&h));
    assert!(events(&h, "reboot").is_empty());
}

/// Found in review: a failed re-arm after the switch used to leave no
/// watchdog at all (the old timer was stopped first). Now the timer armed
/// before the switch stays until its replacement exists.
#[test]
fn failed_rearm_after_the_switch_keeps_the_first_watchdog() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    h.publish("v1");
    h.flag("slow", true);
    let child = h
        .agent_cmd(&["follow", "--once", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for("the switch to start", Duration::from_secs(30), || {
        h.kit.path("bin/started").exists()
    });
    fs::write(h.kit.path("sys/systemd-run-fails"), "").expect("flag");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not re-arm"), "{stderr}");
    assert_eq!(h.status()["probation"]["version"], 1);
    wait_for(
        "the first watchdog's rollback",
        Duration::from_secs(20),
        || !events(&h, "rolled-back").is_empty(),
    );
}

/// Found in review: the documented one-step key rotation (a release whose
/// system trusts only a new key, signed by the old one) could never be
/// confirmed by the new agent, which refuses the old key's head, and was
/// rolled back. The head byte for byte the release on probation confirms.
#[test]
fn one_step_key_rotation_is_confirmed_not_rolled_back() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    let (_new_key, new_pub) = h.kit.keygen("release-2027");
    let new_rw = fs::read_to_string(&new_pub)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("key line")
        .to_owned();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    h.once();
    let mut rotated = h.config();
    rotated["trusted_keys"] =
        serde_json::json!([{"public_key": new_rw, "remotes": ["prod"], "comment": "release-2027"}]);
    publish_with(
        &h,
        "v2",
        &[("npcnix-config.json", rotated.to_string())],
        &[],
    );
    assert_eq!(h.once().0, "activated");
    // The new agent (the switch installed the rotated config) polls: the
    // head is the rotation release itself, signed by the old key.
    let (label, _) = h.once();
    assert_eq!(
        label, "rejected",
        "the old key's head is not trusted any more"
    );
    assert!(events(&h, "confirmed").iter().any(|e| e["version"] == 2));
    std::thread::sleep(Duration::from_secs(6));
    assert!(events(&h, "rolled-back").is_empty(), "{:?}", h.audit());
    assert_eq!(h.status()["active_version"], 2);
}

/// Issue 28, defect 1, through the binary: a release whose own host config
/// would refuse it (and so every later release like it) is refused by the
/// inspection before any switch, with the check the new agent would fail.
#[test]
fn release_whose_own_policy_refuses_it_is_refused_before_any_switch() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    for (marker, policy, check) in [
        (
            "v2",
            serde_json::json!({"min_version": 1000}),
            "min-version",
        ),
        (
            "v3",
            serde_json::json!({"expiry": "required"}),
            "expiry-required",
        ),
    ] {
        let mut cfg = h.config();
        cfg["policy"] = policy;
        publish_with(&h, marker, &[("npcnix-config.json", cfg.to_string())], &[]);
        let (label, r) = h.once();
        assert_eq!(label, "rejected", "{}", r.stderr);
        assert!(r.stderr.contains("would-lock-out"), "{}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("would refuse this very release ({check}")),
            "{}",
            r.stderr
        );
    }
    assert_eq!(switches(&h), 1, "neither was switched to");
    assert_eq!(h.status()["active_version"], 1);
}

/// Break-glass during a probation (issue 28): `npcnix activate` ends the
/// probation (audited, watchdog stopped) before it runs, so the watchdog
/// never rolls back over the operator's fix.
#[test]
fn break_glass_activation_during_probation_is_never_undone_by_the_watchdog() {
    let h = host(serde_json::json!({"probation_secs": 5}));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.status()["probation"]["version"], 1);
    let fix = h.kit.flake("operator-fix", "# operator fix");
    let r = h.run(&["activate", "--src", fix.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("ended the probation of version 1"),
        "{}",
        r.stderr
    );
    assert!(h.status()["probation"].is_null());
    let ended = events(&h, "probation-ended");
    assert_eq!(ended.len(), 1, "{:?}", h.audit());
    assert!(ended[0]["detail"]
        .as_str()
        .expect("detail")
        .contains("manual activation from"));
    assert!(sys_log(&h).contains("systemctl stop npcnix-probation-prod-v1-"));
    std::thread::sleep(Duration::from_secs(7));
    assert!(events(&h, "rolled-back").is_empty(), "{:?}", h.audit());
    assert!(
        !h.rebuild_log().contains("--rollback"),
        "{}",
        h.rebuild_log()
    );
}

#[test]
fn reuse_build_switches_to_the_inspected_system_without_a_second_evaluation() {
    for mode in ["switch", "boot", "test"] {
        let h = Host::with(|c| {
            c["activation"]["mode"] = mode.into();
            c["activation"]["reuse_build"] = true.into();
            c["lockout"] = serde_json::json!({"probation_secs": 0});
        });
        h.publish("v1");
        let (label, r) = h.once();
        assert_eq!(label, "activated", "{mode}: {}", r.stderr);
        let log = h.rebuild_log();
        // The inspection's build is the one evaluation of the flake...
        let evaluations: Vec<&str> = log.lines().filter(|l| l.contains("--flake ")).collect();
        assert_eq!(evaluations.len(), 1, "{mode}: {log}");
        assert!(evaluations[0].starts_with("build "), "{mode}: {log}");
        // ...and the switch runs exactly the system it built and judged.
        let built = fs::read_to_string(h.kit.path("bin/systems/# v1.last")).expect("built");
        let acts = h.activations();
        assert_eq!(acts.len(), 1, "{mode}: {log}");
        assert!(
            acts[0].starts_with(&format!(
                "start {mode} --no-reexec --store-path {} ",
                built.trim()
            )),
            "{mode}: {}",
            acts[0]
        );
        assert_eq!(h.status()["active_version"], 1);
    }
}

#[test]
fn reuse_build_without_an_inspection_evaluates_the_flake_once_at_the_switch() {
    let h = Host::with(|c| {
        c["activation"]["reuse_build"] = true.into();
        c["lockout"] = serde_json::json!({"inspect": false, "probation_secs": 0});
    });
    h.publish("v1");
    let (label, r) = h.once();
    assert_eq!(label, "activated", "{}", r.stderr);
    let log = h.rebuild_log();
    assert!(!log.contains("build "), "{log}");
    assert_eq!(switches(&h), 1, "{log}");
}
