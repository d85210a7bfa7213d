//! Hardening round 2 (host side): strict store objects, strict secret-key
//! files, single-frame archives, strict toplevel paths, first contact.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::*;

#[test]
fn group_readable_unencrypted_secret_key_is_refused_like_ssh() {
    let kit = Kit::new();
    let (key, _) = kit.keygen("ci");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("mode 0644"), "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert!(
        !kit.store_path("prod", "latest").exists(),
        "nothing was published"
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
}

/// A store whose `latest` was replaced by `plant`; a pull must fail with a
/// store error naming the object, create nothing and change no state.
fn pull_refuses_planted(plant: impl FnOnce(&Kit), what: &str) {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    plant(&kit);
    let before = kit.state_bytes();
    let r = kit.pull("prod", &pubkey, "dst", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(what), "expected {what:?} in {}", r.stderr);
    kit.assert_nothing_left("dst");
    assert_eq!(kit.state_bytes(), before);
}

#[test]
fn store_symlink_from_latest_to_dev_zero_is_not_followed() {
    pull_refuses_planted(
        |kit| {
            let latest = kit.store_path("prod", "latest");
            fs::remove_file(&latest).expect("rm");
            std::os::unix::fs::symlink("/dev/zero", &latest).expect("symlink");
        },
        "is a symlink",
    );
}

#[test]
fn store_symlink_to_a_valid_bundle_elsewhere_is_not_followed() {
    pull_refuses_planted(
        |kit| {
            let latest = kit.store_path("prod", "latest");
            let elsewhere = kit.path("elsewhere");
            fs::rename(&latest, &elsewhere).expect("mv");
            std::os::unix::fs::symlink(&elsewhere, &latest).expect("symlink");
        },
        "is a symlink",
    );
}

#[test]
fn store_symlinked_archives_directory_is_not_followed() {
    pull_refuses_planted(
        |kit| {
            let dir = kit.store_path("prod", "archives");
            let moved = kit.path("archives-elsewhere");
            fs::rename(&dir, &moved).expect("mv");
            std::os::unix::fs::symlink(&moved, &dir).expect("symlink");
        },
        "archives/ must be a directory, not a symlink",
    );
}

#[test]
fn store_device_node_planted_as_latest_is_never_opened() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root {
        skip("mknod needs root");
        return;
    }
    pull_refuses_planted(
        |kit| {
            let latest = kit.store_path("prod", "latest");
            fs::remove_file(&latest).expect("rm");
            let ok = Command::new("mknod")
                .arg(&latest)
                .args(["c", "1", "5"])
                .status()
                .expect("mknod")
                .success();
            assert!(ok, "mknod");
        },
        "not a regular file",
    );
}

#[test]
fn fast_forward_fresh_host_to_2_pow_53_minus_1_is_refused_when_jumps_are_capped() {
    let h = crate::common::host::Host::with(|c| {
        c["policy"]["max_version_jump"] = serde_json::json!(5);
        c["policy"]["min_version"] = serde_json::json!(1);
    });
    // A key holder publishes straight to the largest version on a remote
    // this fresh host has never polled.
    h.publish("v1");
    // With tooling of its own: npcnix's publisher caps the jump on write.
    let latest = fs::read(h.kit.store_path("prod", "latest")).expect("latest");
    let v1 = npcnix::format::bundle::Bundle::decode(&latest).expect("bundle");
    let archive = npcnix::format::statement::Statement::parse(&v1.statement)
        .expect("statement")
        .archive;
    let st = crate::common::statement(
        "prod",
        9007199254740991,
        Some(npcnix::format::statement::Digest::of(&v1.statement)),
        archive,
        crate::common::now(),
    );
    let max = crate::common::signed_bundle(&st, &h.kit.secret_key(&h.key));
    fs::write(
        h.kit
            .store_path("prod", &format!("releases/{:020}", 9007199254740991u64)),
        &max,
    )
    .expect("plant");
    fs::write(h.kit.store_path("prod", "latest"), &max).expect("plant");
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}", r.stdout);
    assert!(r.stdout.contains("fast-forward"), "{}", r.stdout);
    assert!(h.activations().is_empty());
}

#[test]
fn install_pins_the_verified_head_so_a_replayed_old_release_is_refused() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    for v in ["v1", "v2", "v3"] {
        kit.publish("prod", &key, &kit.flake(v, v), &["--expires", "30d"])
            .ok();
    }
    let cfg = kit.path("config.json");
    let r = kit
        .run(&[
            "install",
            "--remote",
            &kit.url("prod"),
            "--configuration",
            "web",
            "--trusted-key",
            &pubkey,
            "--require-expiry",
            "--max-version-jump",
            "10",
            "--config-out",
            cfg.to_str().expect("utf8"),
            "--data-dir",
            kit.data_dir().to_str().expect("utf8"),
            "--no-activate",
        ])
        .ok();
    assert!(r.stderr.contains("pinning version 3"), "{}", r.stderr);
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(&cfg).expect("config")).expect("json");
    assert_eq!(c["policy"]["min_version"], 3);
    assert_eq!(c["policy"]["expiry"], "required");
    assert_eq!(c["policy"]["max_version_jump"], 10);
    // A store writer without a key replays version 1 to the new host.
    let v1 = fs::read(kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    fs::write(kit.store_path("prod", "latest"), v1).expect("replay");
    let r = kit.run(&["follow", "--once", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("(min-version)"), "{}", r.stderr);
}

#[test]
fn state_reset_below_the_audited_version_needs_a_recorded_reason() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    kit.publish("prod", &key, &kit.flake("v2", "v2"), &[]).ok();
    kit.pull("prod", &pubkey, "dst", &[]).ok();
    fs::remove_file(kit.data_dir().join("state.json")).expect("lose the state");
    let d = kit.data_dir();
    let d = d.to_str().expect("utf8");
    let reset = |extra: &[&str]| {
        let mut args = vec!["state", "reset", "--remote-name", "prod", "--data-dir", d];
        args.extend_from_slice(extra);
        kit.run(&args)
    };
    let r = reset(&["--min-version", "1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("version 2"), "{}", r.stderr);
    reset(&[
        "--min-version",
        "1",
        "--lower-floor-because",
        "v2 was pulled for a test only",
    ])
    .ok();
    let audit = fs::read_to_string(kit.data_dir().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("v2 was pulled for a test only"), "{audit}");
}

/// A copy of the npcnix binary in a world-readable directory, so that the
/// unprivileged fetch worker can execute it (the build tree may sit below a
/// directory only root can enter).
pub(crate) fn public_binary() -> std::path::PathBuf {
    // One copy per test process: copying while other test threads fork is
    // what makes exec fail with "text file busy", so it happens once.
    static BIN_COPY: std::sync::OnceLock<(npcnix::fsutil::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    BIN_COPY
        .get_or_init(|| {
            let dir =
                npcnix::fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-pub-").expect("tmp");
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
            let bin = dir.path().join("npcnix");
            fs::copy(BIN, &bin).expect("copy binary");
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
            (dir, bin)
        })
        .1
        .clone()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// A host polling an HTTP mirror of its store through a fetch worker that
/// runs as `nobody`; returns the host, the mirror and the public binary.
pub(crate) fn separated_host() -> Option<(
    crate::common::host::Host,
    crate::common::httpd::Httpd,
    std::path::PathBuf,
)> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if !is_root() || !passwd.lines().any(|l| l.starts_with("nobody:")) {
        skip("privilege separation needs root and the user nobody");
        return None;
    }
    let h = crate::common::host::Host::new();
    h.publish("v1");
    let httpd = crate::common::httpd::Httpd::serve(h.kit.path("store"));
    let mut cfg = h.config();
    cfg["remote"]["url"] = httpd.url("prod").into();
    cfg["fetcher"] = serde_json::json!({"user": "nobody", "isolation": "required"});
    h.set_config(&cfg);
    Some((h, httpd, public_binary()))
}

/// `h.agent_cmd(args)`, but running the public copy of the binary.
pub(crate) fn public_cmd(
    h: &crate::common::host::Host,
    bin: &std::path::Path,
    args: &[&str],
) -> Command {
    let c = h.agent_cmd(args);
    let mut c2 = Command::new(bin);
    c2.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => c2.env(k, v),
            None => c2.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        c2.current_dir(d);
    }
    c2
}

/// Retries `f` while a concurrent fork in another test thread briefly holds
/// the binary copy open for writing (ETXTBSY).
pub(crate) fn retry_busy<T>(mut f: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..100 {
        match f() {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.expect("run"),
        }
    }
    panic!("the binary copy stayed busy")
}

pub(crate) fn once_with(
    h: &crate::common::host::Host,
    bin: &std::path::Path,
    tamper: Option<&str>,
) -> Run {
    let mut c = public_cmd(h, bin, &["follow", "--once", "--json"]);
    if let Some(t) = tamper {
        c.env("NPCNIX_TEST_FETCHER_TAMPER", t);
    }
    Run::from(retry_busy(|| c.output()))
}

/// A host following an HTTP mirror of its store that stalls every request.
fn stalling_host(
    fetcher: serde_json::Value,
) -> (crate::common::host::Host, crate::common::httpd::Httpd) {
    let h = crate::common::host::Host::new();
    h.publish("v1");
    let httpd = crate::common::httpd::Httpd::serve(h.kit.path("store"));
    httpd.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut cfg = h.config();
    cfg["remote"]["url"] = httpd.url("prod").into();
    cfg["fetcher"] = fetcher;
    h.set_config(&cfg);
    (h, httpd)
}

/// Starts `follow` (read time-out 50 s) and waits until its first request
/// is stuck on the stalling mirror.
fn follow_until_stuck(
    mut cmd: Command,
    httpd: &crate::common::httpd::Httpd,
) -> std::process::Child {
    cmd.args(["follow"])
        .env("NPCNIX_READ_TIMEOUT_SECS", "50")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = retry_busy(|| cmd.spawn());
    wait_for(
        "the first request",
        std::time::Duration::from_secs(20),
        || httpd.count() > 0,
    );
    child
}

/// Sends SIGTERM and asserts the agent exits successfully within 10 s.
fn sigterm_stops_promptly(mut child: std::process::Child) {
    let t = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            return;
        }
        if t.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the agent did not stop within 10 s of SIGTERM while a read was stuck");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn network_side_runs_as_the_unprivileged_fetch_user() {
    let Some((h, httpd, bin)) = separated_host() else {
        return;
    };
    let r = once_with(&h, &bin, None);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("\"activated\""), "{}", r.stdout);
    // Reported from inside the worker process itself.
    assert!(
        r.stderr.contains("fetch worker running as uid 65534"),
        "{}",
        r.stderr
    );
    assert!(
        httpd.count() >= 2,
        "the bundle and the archive went through the mirror"
    );
    let s = h.status();
    assert!(
        s["fetcher"]
            .as_str()
            .is_some_and(|f| f.starts_with("separate: user nobody (uid 65534), landlock")),
        "{s}"
    );
    assert!(h.audit().iter().any(|e| e["event"] == "agent-start"
        && e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("uid 65534"))));
}

#[test]
fn compromised_fetcher_swapping_the_archive_is_caught_by_the_root_side() {
    let Some((h, _httpd, bin)) = separated_host() else {
        return;
    };
    let r = once_with(&h, &bin, Some("archive"));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("archive-hash"), "{}", r.stdout);
    assert!(h.activations().is_empty());
}

#[test]
fn compromised_fetcher_swapping_the_bundle_is_caught_by_the_root_side() {
    let Some((h, _httpd, bin)) = separated_host() else {
        return;
    };
    let r = once_with(&h, &bin, Some("bundle"));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("\"rejected\""), "{}", r.stdout);
    assert!(h.activations().is_empty());
}

#[test]
fn required_isolation_without_the_fetch_user_refuses_to_poll() {
    let h = crate::common::host::Host::with(|c| {
        c["fetcher"] = serde_json::json!({"user": "no-such-user", "isolation": "required"});
    });
    h.publish("v1");
    let r = h.run(&["follow", "--once"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be separated"), "{}", r.stderr);
    assert!(h.activations().is_empty());
}

#[test]
fn a_stalling_store_does_not_hold_the_lock_so_break_glass_activate_works() {
    let (h, httpd) = stalling_host(serde_json::json!({"isolation": "off"}));
    let mut follow = follow_until_stuck(h.agent_cmd(&[]), &httpd);
    // The poll is stuck in a read; the operator's break-glass activation
    // still gets the lock.
    let src = h.kit.flake("manual", "manual");
    let r = h.run(&["activate", "--src", src.to_str().expect("utf8")]);
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(h.rebuild_log().contains("# manual"), "{}", h.rebuild_log());
}

#[test]
fn sigterm_interrupts_a_poll_stuck_on_a_stalling_store() {
    let Some((h, httpd, bin)) = separated_host() else {
        return;
    };
    httpd.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    sigterm_stops_promptly(follow_until_stuck(public_cmd(&h, &bin, &[]), &httpd));
}

#[test]
fn trust_root_changes_are_audited_and_a_remote_rename_keeps_the_floor() {
    let h = crate::common::host::Host::new();
    for v in ["v1", "v2", "v3"] {
        h.publish(v);
    }
    assert_eq!(h.once().0, "activated");
    // A release (or an operator) changes the trust root: one more key, a
    // higher threshold. Never silent.
    let (_, b_pub) = h.kit.keygen("second");
    let b = fs::read_to_string(&b_pub)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("line")
        .to_owned();
    let mut cfg = h.config();
    cfg["trusted_keys"]
        .as_array_mut()
        .expect("keys")
        .push(serde_json::json!({"public_key": b, "remotes": ["prod"], "not_after": null, "comment": "second"}));
    cfg["remote"]["threshold"] = serde_json::json!(2);
    h.set_config(&cfg);
    let (_, r) = h.once();
    assert!(
        r.stderr.contains("trust root changed") && r.stderr.contains("threshold 1 -> 2"),
        "{}",
        r.stderr
    );
    let changed: Vec<String> = h
        .audit()
        .iter()
        .filter(|e| e["event"] == "trust-changed")
        .map(|e| e["detail"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].contains("keys added"), "{}", changed[0]);
    assert!(h.status()["trust_changed"]
        .as_str()
        .is_some_and(|t| t.contains("threshold 1 -> 2")));
    // A release renames the followed remote (to one whose store serves an
    // old release): the new name starts from the old floor, not from zero.
    h.kit
        .publish("staging", &h.key, &h.kit.flake("old", "old"), &[])
        .ok();
    let mut cfg = h.config();
    cfg["remote"]["url"] = h.kit.url("staging").into();
    cfg["remote"]["name"] = "staging".into();
    cfg["remote"]["threshold"] = serde_json::json!(1);
    cfg["trusted_keys"][0]["remotes"] = serde_json::json!(["prod", "staging"]);
    h.set_config(&cfg);
    let (label, r) = h.once();
    assert_eq!(label, "rejected", "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("min-version"), "{}", r.stdout);
    assert!(h.audit().iter().any(|e| e["event"] == "floor-carried-over"
        && e["detail"].as_str().is_some_and(|d| d.contains("below 3"))));
}

#[test]
fn sigterm_ends_an_in_process_fetch_stuck_on_a_stalling_store() {
    let (h, httpd) = stalling_host(serde_json::json!({"isolation": "off"}));
    sigterm_stops_promptly(follow_until_stuck(h.agent_cmd(&[]), &httpd));
    assert!(h.activations().is_empty());
}

#[test]
fn a_moved_state_dir_keeps_the_rollback_floor() {
    let h = crate::common::host::Host::new();
    for v in ["v1", "v2", "v3"] {
        h.publish(v);
    }
    assert_eq!(h.once().0, "activated");
    // A release moves stateDir; the store replays version 1.
    let v1 = fs::read(h.kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    fs::write(h.kit.store_path("prod", "latest"), v1).expect("replay");
    let moved = h.kit.path("moved-data");
    let o = h
        .agent_cmd(&["follow", "--once", "--json"])
        .env("NPCNIX_DATA_DIR", &moved)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("min-version"), "{stdout}");
    assert!(stderr.contains("state dir"), "{stderr}");
    let audit = fs::read_to_string(moved.join("audit.jsonl")).expect("audit");
    assert!(
        audit.contains("floor-carried-over") && audit.contains("below 3"),
        "{audit}"
    );
}
