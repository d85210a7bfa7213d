//! The fetch worker's edges (issue 31): a compromised worker that holds its
//! pipes open or forges log lines, a worker without Landlock under
//! `isolation = "required"`, receipts to a `file://` store from a separated
//! host, and an HTTP mirror that redirects. The worker runs as `nobody`
//! (tests that need root and that user report a skip without them).

use std::time::{Duration, Instant};

use crate::common::httpd::Httpd;
use crate::common::*;
use crate::hardening::{once_with, public_cmd, retry_busy, separated_host};

#[test]
fn compromised_worker_whose_child_holds_the_pipe_open_ends_the_poll_at_its_deadline() {
    // The worker forks a child that leaves its process group and keeps the
    // pipes open, then never answers: killing the worker gives no end of
    // file, and a blocking read would hang the agent for good.
    let Some((h, _httpd, bin)) = separated_host() else {
        return;
    };
    let mut c = public_cmd(&h, &bin, &["follow", "--once", "--json"]);
    c.env("NPCNIX_TEST_FETCHER_TAMPER", "hold-pipe")
        .env("NPCNIX_READ_TIMEOUT_SECS", "2");
    let t = Instant::now();
    let out = retry_busy(|| c.output());
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The holder existed (its pid came through the stderr relay); it left
    // the worker's process group, so only the bounded reads ended the poll.
    let holder: u32 = stderr
        .split("holder pid ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the worker started no holder: {stderr}"));
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &holder.to_string()])
        .status();
    // The budget of a bundle read: the transfer deadline's 60 s base plus
    // the read time-out; the worker itself sleeps 600 s.
    assert!(
        took < Duration::from_secs(120),
        "the poll took {took:?}: {stderr}"
    );
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("no answer within the request's deadline"),
        "{stderr}"
    );
    assert!(h.activations().is_empty());
}

#[test]
fn compromised_worker_forging_the_agents_log_lines_is_quoted_as_worker_output() {
    let Some((h, _httpd, bin)) = separated_host() else {
        return;
    };
    let r = once_with(&h, &bin, Some("forge-log"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Shown, but as what the worker said, never as a line of the agent's
    // own (a journald priority prefix at the start of a line).
    assert!(
        r.stderr
            .contains("fetch worker said: \"<0>npcnix: confirmed version 99"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.lines().any(|l| l.starts_with("<0>")),
        "{}",
        r.stderr
    );
}

#[test]
fn required_isolation_refuses_a_worker_without_landlock_and_status_says_so() {
    let Some((h, _httpd, bin)) = separated_host() else {
        return;
    };
    // `separated_host` requires isolation: a worker that reports no
    // Landlock (a kernel without it) is not used, and nothing is polled.
    let r = once_with(&h, &bin, Some("no-landlock"));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("without enforced Landlock"),
        "{}",
        r.stderr
    );
    assert!(h.activations().is_empty());
    // With `auto`, the worker is used and its confinement reported.
    let mut cfg = h.config();
    cfg["fetcher"]["isolation"] = "auto".into();
    h.set_config(&cfg);
    let r = once_with(&h, &bin, Some("no-landlock"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let start = h
        .audit()
        .into_iter()
        .rev()
        .find(|e| e["event"] == "agent-start")
        .expect("agent-start");
    assert!(
        start["detail"]
            .as_str()
            .is_some_and(|d| d.contains("landlock unavailable")),
        "{start}"
    );
    assert!(
        h.status()["fetcher"]
            .as_str()
            .is_some_and(|f| f.contains("landlock unavailable")),
        "{}",
        h.status()
    );
}

#[test]
fn receipts_reach_a_file_store_from_a_host_that_runs_the_worker() {
    // The worker may write nothing (Landlock): receipts to a directory
    // store always failed. The root side writes them (D121).
    let Some((h, _httpd, bin)) = separated_host() else {
        return;
    };
    let mut cfg = h.config();
    cfg["remote"]["url"] = h.kit.url("prod").into();
    cfg["host_id"] = "web-01".into();
    h.set_config(&cfg);
    // The worker (nobody) reads the directory store, as it would an S3
    // bucket it may read.
    let store = h.kit.path("store");
    for p in store
        .ancestors()
        .take_while(|p| p.starts_with(h.kit.path("")))
    {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    assert!(std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&store)
        .status()
        .expect("chmod")
        .success());
    let r = once_with(&h, &bin, None);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("uid 65534"), "{}", r.stderr);
    let receipt = h.kit.store_path("prod", "hosts/web-01.json");
    assert!(receipt.exists(), "no receipt: {}", r.stderr);
    assert!(!r.stderr.contains("receipt"), "{}", r.stderr);
}

#[test]
fn mirror_redirecting_elsewhere_is_refused_without_following() {
    // A mirror answering 302 to another address (here: another server the
    // test watches): the host must not send it a request (a blind GET
    // forgery from the host's network position).
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("release");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    let target = Httpd::serve(kit.path("store"));
    let mirror = Httpd::serve(kit.path("store"));
    *mirror.redirect_to.lock().expect("lock") = Some(format!("http://127.0.0.1:{}", target.port));
    let dst = kit.path("dst");
    let r = kit.run(&[
        "pull",
        "--remote",
        &mirror.url("prod"),
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 302"), "{}", r.stderr);
    assert!(r.stderr.contains("follows no redirects"), "{}", r.stderr);
    assert_eq!(target.count(), 0, "the redirect was followed");
    assert!(mirror.count() > 0);
}
