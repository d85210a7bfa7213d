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
