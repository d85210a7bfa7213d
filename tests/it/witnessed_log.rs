//! The witnessed release log from the outside (issue 37): `publish
//! --log-key` appends, `npcnix witness` cosigns, `npcnix log --log-key`
//! verifies every tile and reports every logged statement, flagging what a
//! stolen release key leaves in the log even if no host took it.

use std::fs;

use crate::common::*;

struct World {
    kit: Kit,
    key: String,
    log_key: String,
    log_pub: String,
}

fn world() -> World {
    let kit = Kit::new();
    let (key, _) = kit.keygen("release");
    let (log_key, log_pub) = kit.keygen("log");
    World {
        kit,
        key,
        log_key,
        log_pub,
    }
}

impl World {
    fn publish(&self, marker: &str) {
        let src = self.kit.flake(&format!("src-{marker}"), marker);
        let r = self
            .kit
            .publish("prod", &self.key, &src, &["--log-key", &self.log_key]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }

    fn monitor(&self, extra: &[&str]) -> Run {
        let url = self.kit.url("prod");
        let mut args = vec![
            "log",
            "--remote",
            &url,
            "--log-key",
            &self.log_pub,
            "--json",
        ];
        args.extend_from_slice(extra);
        self.kit.run(&args)
    }
}

#[test]
fn monitor_reports_every_logged_release_and_only_new_ones_with_state() {
    let w = world();
    w.publish("v1");
    w.publish("v2");
    let state = w.kit.path("monitor.json");
    let state = state.to_str().expect("utf8");
    let r = w.monitor(&["--state", state]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["log"]["size"], 2);
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["published"] == "release"), "{v}");
    w.publish("v3");
    let r = w.monitor(&["--state", state]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["entries"][0]["version"], 3);
}

/// A thief with the release key and the log key signs another version 2
/// and logs it (to show it to some hosts later): the monitor flags it,
/// though `releases/` and `latest` never changed.
#[test]
fn statement_logged_with_a_stolen_key_is_flagged_by_the_monitor() {
    let w = world();
    w.publish("v1");
    w.publish("v2");
    let genuine =
        fs::read(w.kit.store_path("prod", "releases/00000000000000000002")).expect("release");
    let bundle = npcnix::format::bundle::Bundle::decode(&genuine).expect("bundle");
    let mut st = npcnix::format::statement::Statement::parse(&bundle.statement).expect("st");
    st.created += 1;
    let forged = st.to_bytes();
    let remote = npcnix::store::open_url(&w.kit.url("prod"), &Default::default()).expect("open");
    let log_key = w.kit.secret_key(&w.log_key);
    npcnix::publish::tlog::append_statement(
        &remote,
        &npcnix::publish::tlog::LogSigner {
            remote: npcnix::RemoteName::new("prod").expect("name"),
            key: &log_key,
            new_log: false,
            now: 0,
        },
        &forged,
        &npcnix::store::retry::Retry::none(),
    )
    .expect("append");
    let r = w.monitor(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["suspicious"], 1, "{v}");
    assert_eq!(v["entries"][2]["published"], "duplicate", "{v}");
    assert!(
        r.stderr.contains("not the releases published"),
        "{}",
        r.stderr
    );
}

/// The store rewrites a hash tile: the monitor recomputes every tile from
/// the entries and refuses the log.
#[test]
fn tile_rewritten_in_the_store_is_refused_by_the_monitor() {
    let w = world();
    for i in 0..3 {
        w.publish(&format!("v{i}"));
    }
    let tile = w.kit.store_path("prod", "log/tile/0/000.p/3");
    let mut b = fs::read(&tile).expect("tile");
    b[40] ^= 1;
    fs::write(&tile, b).expect("write");
    let r = w.monitor(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("tile/0/000.p/3"), "{}", r.stderr);
}

/// A publisher that forgets --log-key on a remote with a log would leave a
/// release hosts refuse for good: refused before anything is uploaded.
#[test]
fn publish_without_the_log_key_on_a_logged_remote_is_refused() {
    let w = world();
    w.publish("v1");
    let src = w.kit.flake("src-v2", "v2");
    let r = w.kit.publish("prod", &w.key, &src, &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--log-key"), "{}", r.stderr);
    assert!(!w
        .kit
        .store_path("prod", "releases/00000000000000000002")
        .exists());
}

/// The log disappears from the store: the next publisher does not start
/// another one silently, and the witness that cosigned it refuses loudly.
#[test]
fn log_that_disappeared_is_not_started_again_silently() {
    let w = world();
    let (wk, _) = w.kit.keygen("witness");
    w.publish("v1");
    let url = w.kit.url("prod");
    let state = w.kit.path("wstate");
    let witness = || {
        w.kit.run(&[
            "witness",
            "--remote",
            &url,
            "--log-key",
            &w.log_pub,
            "--key",
            &wk,
            "--name",
            "w.example",
            "--state-dir",
            state.to_str().expect("utf8"),
        ])
    };
    assert_eq!(witness().code, 0);
    fs::remove_dir_all(w.kit.store_path("prod", "log")).expect("rm log");
    let r = witness();
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("disappeared"), "{}", r.stderr);
    let src = w.kit.flake("src-v2", "v2");
    let r = w
        .kit
        .publish("prod", &w.key, &src, &["--log-key", &w.log_key]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--new-log"), "{}", r.stderr);
    let r = w.kit.publish(
        "prod",
        &w.key,
        &src,
        &["--log-key", &w.log_key, "--new-log"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// Another publisher holds the append lease: this one stops with a message
/// saying until when, and the log is untouched.
#[test]
fn append_lease_held_by_another_publisher_stops_this_one() {
    let w = world();
    w.publish("v1");
    let until = 4_000_000_000u64;
    fs::write(
        w.kit.store_path("prod", "log/append.lock"),
        format!("held other until {until}\n"),
    )
    .expect("lease");
    let src = w.kit.flake("src-v2", "v2");
    let r = w
        .kit
        .publish("prod", &w.key, &src, &["--log-key", &w.log_key]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("another publisher is appending"),
        "{}",
        r.stderr
    );
    // An expired lease is taken over.
    fs::write(
        w.kit.store_path("prod", "log/append.lock"),
        "held other until 1\n",
    )
    .expect("lease");
    let src = w.kit.flake("src-v3", "v3");
    let r = w.kit.publish(
        "prod",
        &w.key,
        &src,
        &["--log-key", &w.log_key, "--version", "3"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// A suspicious entry is reported on every run: --state does not move past
/// it.
#[test]
fn monitor_alarm_repeats_until_acknowledged() {
    let w = world();
    w.publish("v1");
    w.publish("v2");
    fs::remove_file(w.kit.store_path("prod", "releases/00000000000000000002")).expect("rm");
    let state = w.kit.path("monitor.json");
    let state = state.to_str().expect("utf8");
    for _ in 0..2 {
        let r = w.monitor(&["--state", state]);
        assert_eq!(r.code, 3, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
        assert_eq!(v["suspicious"], 1, "{v}");
        assert_eq!(v["entries"][1]["published"], "missing", "{v}");
    }
}
