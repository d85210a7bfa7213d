//! The host agent end to end, with a recording stand-in for `nixos-rebuild`
//! (the only stand-in allowed: the process boundary where NixOS would run).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::host::Host;
use crate::common::*;

#[test]
fn follow_once_activates_v1_then_v2_with_the_right_arguments() {
    let h = Host::new();
    h.publish("v1");
    let (label, _) = h.once();
    assert_eq!(label, "activated");
    let acts = h.activations();
    assert_eq!(acts.len(), 1);
    let a = &acts[0];
    assert!(a.starts_with("start switch --flake "), "{a}");
    assert!(
        a.contains(&format!("{}/releases/", h.kit.data_dir().display())),
        "{a}"
    );
    assert!(a.contains("#web "), "{a}");
    assert!(
        a.contains("--option extra-substituters https://cache.example.org"),
        "{a}"
    );
    assert!(
        a.contains("--option extra-trusted-public-keys cache.example.org-1:abc="),
        "{a}"
    );
    assert!(a.ends_with("| # v1"), "{a}");

    h.publish("v2");
    assert_eq!(h.once().0, "activated");
    assert!(h.activations()[1].ends_with("| # v2"));
    let s = h.status();
    assert_eq!(s["active_version"], 2);
    assert_eq!(s["highest_verified_version"], 2);
    assert!(
        s["extraction_confinement"]
            .as_str()
            .is_some_and(|c| c.contains("landlock")),
        "{s}"
    );
    let metrics = fs::read_to_string(h.kit.path("metrics.prom")).expect("metrics");
    assert!(
        metrics.contains("npcnix_active_version{remote=\"prod\"} 2"),
        "{metrics}"
    );
}

#[test]
fn unchanged_remote_downloads_nothing_and_activates_nothing() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    // Remove the archives: any download attempt would now fail.
    fs::remove_dir_all(h.kit.store_path("prod", "archives")).expect("rm");
    assert_eq!(h.once().0, "unchanged");
    assert_eq!(h.once().0, "unchanged");
    assert_eq!(h.activations().len(), 1);
}

#[test]
fn older_equivocating_expired_and_foreign_releases_are_refused_and_logged() {
    let h = Host::new();
    h.publish("v1");
    h.publish("v2");
    assert_eq!(h.once().0, "activated");
    let v1 = fs::read(h.kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    let latest = h.kit.store_path("prod", "latest");
    let sk = h.kit.secret_key(&h.key);

    // Older version replayed.
    fs::write(&latest, &v1).expect("write");
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert_eq!(r.code, 3);

    // Same version 2, different statement.
    let aref = h.kit.put_archive(
        "prod",
        &h.kit.pack(&h.kit.flake("twin", "twin"), "twin.tar.zst"),
    );
    let twin = statement(
        "prod",
        2,
        Some(npcnix::format::statement::Digest([2; 32])),
        aref.clone(),
        now(),
    );
    fs::write(&latest, signed_bundle(&twin, &sk)).expect("write");
    assert_eq!(h.once().0, "rejected");

    // Expired version 3.
    let mut exp = statement(
        "prod",
        3,
        Some(npcnix::format::statement::Digest([1; 32])),
        aref.clone(),
        now() - 100,
    );
    exp.expires = Some(now() - 10);
    fs::write(&latest, signed_bundle(&exp, &sk)).expect("write");
    assert_eq!(h.once().0, "rejected");

    // A release for another remote.
    let foreign = statement(
        "dev",
        3,
        Some(npcnix::format::statement::Digest([1; 32])),
        aref,
        now(),
    );
    fs::write(&latest, signed_bundle(&foreign, &sk)).expect("write");
    assert_eq!(h.once().0, "rejected");

    let checks: Vec<String> = h
        .audit()
        .iter()
        .filter(|e| e["event"] == "rejected")
        .map(|e| e["check"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        checks,
        ["rollback", "equivocation", "expired", "remote-mismatch"]
    );
    assert_eq!(h.activations().len(), 1, "nothing else was activated");
    assert_eq!(h.status()["active_version"], 2);
}

#[test]
fn garbage_head_is_refused_and_audited_on_every_poll() {
    let h = Host::new();
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    fs::write(h.kit.store_path("prod", "latest"), b"garbage").expect("write");
    assert_eq!(h.once().0, "rejected");
    // Same bytes again: a refusal is never remembered, so it is judged and
    // reported again (exit 3, one more audit line, failures keep counting).
    let refusals = || {
        h.audit()
            .iter()
            .filter(|e| e["event"] == "rejected")
            .count()
    };
    let before = refusals();
    let (label, r) = h.once();
    assert_eq!(label, "rejected");
    assert_eq!(r.code, 3);
    assert_eq!(refusals(), before + 1);
    assert_eq!(h.status()["consecutive_failures"], 2);
}

#[test]
fn failed_health_check_rolls_back_marks_bad_and_never_retries() {
    // Version 2 is unhealthy (the check runs with NPCNIX_VERSION set).
    let h = Host::with(|c| {
        c["health_check"] = serde_json::json!({"command": ["sh", "-c", "test \"$NPCNIX_VERSION\" != 2"], "timeout_secs": 5});
    });
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    h.publish("v2");
    let (label, r) = h.once();
    assert_eq!(label, "rolled-back", "{}", r.stderr);
    assert_ne!(r.code, 0);
    assert!(
        h.rebuild_log().contains("start switch --rollback"),
        "{}",
        h.rebuild_log()
    );
    let s = h.status();
    assert_eq!(s["active_version"], 1);
    assert_eq!(s["bad_releases"][0]["version"], 2);
    assert!(s["bad_releases"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("health check failed"));
    assert!(h
        .audit()
        .iter()
        .any(|e| e["event"] == "rolled-back" && e["version"] == 2));

    // Not retried: no new activation, however often we poll.
    let n = h.activations().len();
    assert!(matches!(h.once().0.as_str(), "unchanged" | "skipped-bad"));
    assert_eq!(h.activations().len(), n);

    // A newer release is tried.
    h.publish("v3");
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.status()["active_version"], 3);
}

#[test]
fn failed_activation_backs_off_instead_of_looping() {
    let h = Host::new();
    h.flag("fail", true);
    h.publish("v1");
    let (label, r) = h.once();
    assert_eq!(label, "activation-failed");
    assert_eq!(r.code, 1);
    // Polling again right away does not re-run the activation.
    assert_eq!(h.once().0, "backoff");
    assert_eq!(h.once().0, "backoff");
    assert_eq!(h.activations().len(), 1);
    let s = h.status();
    assert_eq!(s["pending_retry"]["version"], 1);
    assert_eq!(
        s["highest_verified_version"], 1,
        "recorded before activation"
    );
    assert!(s["active_version"].is_null());
}

#[test]
fn crash_at_any_step_never_lets_a_lower_version_in() {
    for point in ["after-record", "before-activate", "after-activate"] {
        let h = Host::new();
        h.publish("v1");
        assert_eq!(h.once().0, "activated");
        h.publish("v2");
        let r = h
            .agent_cmd(&["follow", "--once"])
            .env("NPCNIX_TEST_FAULT", point)
            .output()
            .expect("run");
        assert!(
            !r.status.success(),
            "{point}: the fault must kill the agent (is the binary built with --features test-hooks? run bash scripts/test)"
        );
        // The state survived the crash and already holds version 2...
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(h.kit.data_dir().join("state.json")).expect("state"))
                .expect("json");
        assert_eq!(state["remotes"]["prod"]["highest"]["version"], 2, "{point}");
        // ...so the old version replayed now is refused.
        let v1 = fs::read(h.kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
        let v2 = fs::read(h.kit.store_path("prod", "latest")).expect("v2");
        fs::write(h.kit.store_path("prod", "latest"), &v1).expect("write");
        assert_eq!(h.once().0, "rejected", "{point}");
        // And the interrupted release is completed on the next poll.
        fs::write(h.kit.store_path("prod", "latest"), &v2).expect("write");
        assert_eq!(h.once().0, "activated", "{point}");
        assert_eq!(h.status()["active_version"], 2, "{point}");
    }
}

#[test]
fn pause_and_unpause_are_honoured() {
    let h = Host::new();
    h.publish("v1");
    h.run(&["pause"]).ok();
    assert_eq!(h.once().0, "paused");
    assert!(h.activations().is_empty());
    assert_eq!(h.status()["paused_until"], u64::MAX);
    h.run(&["unpause"]).ok();
    assert_eq!(h.once().0, "activated");
    h.run(&["pause", "--for", "1h"]).ok();
    h.publish("v2");
    assert_eq!(h.once().0, "paused");
    let events: Vec<_> = h
        .audit()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(events.contains(&"paused".to_owned()) && events.contains(&"unpaused".to_owned()));
}

fn spawn(h: &Host, args: &[&str]) -> Child {
    h.agent_cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn sigterm(child: &Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

#[test]
fn sigterm_during_activation_lets_it_finish_and_the_lock_holds_off_others() {
    let h = Host::new();
    h.flag("slow", true);
    h.publish("v1");
    let child = spawn(&h, &["follow"]);
    wait_for("the activation to start", Duration::from_secs(20), || {
        h.kit.path("bin/started").exists()
    });

    // Meanwhile: a second agent and a manual activation are held off.
    assert_eq!(h.once().0, "busy");
    let src = h.kit.flake("manual", "manual");
    let r = h.run(&["activate", "--src", src.to_str().expect("utf8")]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("activation is in progress"),
        "{}",
        r.stderr
    );

    sigterm(&child);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The activation ran to its end and was recorded.
    assert!(
        h.rebuild_log().contains("end switch"),
        "{}",
        h.rebuild_log()
    );
    assert_eq!(h.status()["active_version"], 1);
}

#[test]
fn sigterm_between_polls_exits_promptly() {
    let h = Host::with(|c| c["poll"]["interval_secs"] = serde_json::json!(3600));
    h.publish("v1");
    let child = spawn(&h, &["follow"]);
    wait_for("the first activation", Duration::from_secs(20), || {
        h.activations().len() == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    sigterm(&child);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn unreachable_store_backs_off_and_recovers_without_restart() {
    let h = Host::new();
    h.publish("v1");
    let store = h.kit.path("store/prod");
    let hidden = h.kit.path("store/hidden");
    fs::rename(&store, &hidden).expect("hide");
    let mut child = spawn(&h, &["follow", "--json"]);
    wait_for("errors to be recorded", Duration::from_secs(20), || {
        h.kit.data_dir().join("status.json").exists()
            && h.run(&["status", "--json"])
                .stdout
                .contains("\"consecutive_failures\": 2")
    });
    fs::rename(&hidden, &store).expect("restore");
    wait_for("recovery", Duration::from_secs(30), || {
        h.activations().len() == 1
    });
    sigterm(&child);
    let _ = child.wait();
    let _ = child.kill();
    let s = h.status();
    assert_eq!(s["active_version"], 1);
    assert_eq!(s["consecutive_failures"], 0);
}

#[test]
fn corrupt_state_fails_closed_with_a_recovery_command() {
    let h = Host::new();
    h.publish("v1");
    h.publish("v2");
    assert_eq!(h.once().0, "activated");
    let state = h.kit.data_dir().join("state.json");
    fs::write(
        &state,
        b"{\"format\": \"npcnix-state/v1\", \"remotes\": {\"prod\": {\"highest\": ",
    )
    .expect("torn");
    let r = h.run(&["follow", "--once"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("corrupt") && r.stderr.contains("npcnix state reset"),
        "{}",
        r.stderr
    );
    assert_eq!(h.activations().len(), 1);

    // A missing state file in a used data dir is not a fresh start either.
    fs::remove_file(&state).expect("rm");
    let r = h.run(&["follow", "--once"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);

    // Recovery pins a floor: version 1 is refused afterwards.
    h.run(&[
        "state",
        "reset",
        "--remote-name",
        "prod",
        "--min-version",
        "2",
    ])
    .ok();
    let v1 = fs::read(h.kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    let v2 = fs::read(h.kit.store_path("prod", "latest")).expect("v2");
    fs::write(h.kit.store_path("prod", "latest"), &v1).expect("write");
    assert_eq!(h.once().0, "rejected");
    fs::write(h.kit.store_path("prod", "latest"), &v2).expect("write");
    assert_eq!(h.once().0, "activated");
}

#[test]
fn config_check_explains_problems() {
    let h = Host::new();
    let good = h.kit.path("config.json");
    h.run(&["config", "check", good.to_str().expect("utf8")])
        .ok();
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(&good).expect("read")).expect("json");
    v["trusted_keys"][0]["remotes"] = serde_json::json!(["dev"]);
    v["remote"]["threshold"] = serde_json::json!(0);
    v["configuration"] = serde_json::json!("bad name!");
    let bad = h.kit.path("bad.json");
    fs::write(&bad, serde_json::to_vec(&v).expect("json")).expect("write");
    let r = h.run(&["config", "check", bad.to_str().expect("utf8")]);
    assert_eq!(r.code, 1);
    for needle in [
        "no trusted key may sign for remote",
        "configuration:",
        "remote.threshold",
    ] {
        assert!(
            r.stderr.contains(needle),
            "missing {needle:?} in {}",
            r.stderr
        );
    }
    let show = h.run(&["config", "show"]).ok();
    assert!(show.stdout.contains("\"configuration\": \"web\""));
}

#[test]
fn install_writes_a_pinned_config_and_activates_the_first_release() {
    let h = Host::new();
    h.publish("v1");
    let cfg = h.kit.path("etc/npcnix/config.json");
    let url = h.kit.url("prod");
    let r = h
        .agent_cmd(&[
            "install",
            "--remote",
            &url,
            "--configuration",
            "web",
            "--trusted-key",
            &h.pubkey,
            "--config-out",
            cfg.to_str().expect("utf8"),
            "--data-dir",
            h.kit.path("data2").to_str().expect("utf8"),
        ])
        // The released system carries the config install writes.
        .env("NPCNIX_TEST_SYSTEM_CONFIG", &cfg)
        .env_remove("NPCNIX_CONFIG")
        .env_remove("NPCNIX_DATA_DIR")
        .output()
        .expect("run");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(&cfg).expect("cfg")).expect("json");
    assert_eq!(written["trusted_keys"][0]["remotes"][0], "prod");
    assert_eq!(h.activations().len(), 1);
    // Never overwritten silently.
    let again = h
        .agent_cmd(&[
            "install",
            "--remote",
            &url,
            "--configuration",
            "web",
            "--trusted-key",
            &h.pubkey,
            "--config-out",
        ])
        .arg(&cfg)
        .arg("--no-activate")
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
    let _ = PathBuf::new();
}

#[test]
fn exit_after_switch_asks_the_service_manager_for_a_restart() {
    // The NixOS unit restarts npcnix on exit code 75, so a switch that
    // delivers a new binary or new trusted keys takes effect at once.
    let h = Host::new();
    h.publish("v1");
    let r = h.run(&["follow", "--exit-after-switch"]);
    assert_eq!(r.code, 75, "{}", r.stderr);
    assert_eq!(h.status()["active_version"], 1);
}
