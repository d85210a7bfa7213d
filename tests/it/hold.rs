//! A declarative hold (issue 34): the host config keeps a host at or below
//! a version, with a reason; the agent verifies newer releases but
//! activates none above it, and status, receipts and `fleet status` say
//! so. Changing the config lifts it.

use crate::common::host::Host;

/// Publishes `marker` with the host config its system carries (as the
/// NixOS module puts it there): the current one with `hold` set or lifted.
fn publish_with_hold(h: &Host, marker: &str, hold: Option<u64>) {
    let mut cfg = h.config();
    cfg["hold"] = match hold {
        Some(v) => serde_json::json!({"max_version": v, "reason": "migration window OPS-123"}),
        None => serde_json::Value::Null,
    };
    let src = h.kit.flake(&format!("src-{marker}"), marker);
    std::fs::write(
        src.join("npcnix-config.json"),
        serde_json::to_vec_pretty(&cfg).expect("json"),
    )
    .expect("config");
    h.kit.publish("prod", &h.key, &src, &[]).ok();
}

#[test]
fn held_host_verifies_but_does_not_activate_above_its_hold_until_a_release_lifts_it() {
    let h = Host::with(|c| c["host_id"] = serde_json::json!("web1"));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    // Version 2 brings the hold (at its own version) through its config.
    publish_with_hold(&h, "v2", Some(2));
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.config()["hold"]["max_version"], 2);
    // Version 3 keeps the hold: inspected once, then held on every poll
    // (each a new agent process: a restart changes nothing), not rebuilt.
    h.publish("v3");
    let (label, r) = h.once();
    assert_eq!(label, "held", "{}\n{}", r.stdout, r.stderr);
    let builds = h.rebuild_log().matches("build").count();
    assert!(builds > 0, "{}", h.rebuild_log());
    for _ in 0..2 {
        let (label, r) = h.once();
        assert_eq!(label, "held", "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.code, 0, "a hold is not a failure: {}", r.stderr);
    }
    assert_eq!(
        h.rebuild_log().matches("build").count(),
        builds,
        "rebuilt while held"
    );
    assert_eq!(h.status()["active_version"], 2);
    let s = h.status();
    assert_eq!(s["hold"]["max_version"], 2, "{s}");
    assert_eq!(s["hold"]["reason"], "migration window OPS-123");
    let text = h.run(&["status"]).ok().stdout;
    assert!(
        text.contains("hold:              at version 2 or below (migration window OPS-123)"),
        "{text}"
    );
    // The receipt says so, and fleet status shows it.
    let fleet = h
        .kit
        .run(&["fleet", "status", "--remote", &h.kit.url("prod"), "--json"]);
    let j: serde_json::Value = serde_json::from_str(&fleet.stdout).expect("json");
    let row = &j["hosts"][0];
    assert_eq!(row["result"], "held", "{j}");
    assert_eq!(row["hold"]["max_version"], 2, "{j}");
    assert!(
        j["summary"].as_array().expect("summary").iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.starts_with("held at v2 or below: 1 host"))),
        "{j}"
    );
    // Version 4's config lifts the hold: fetched, inspected, activated.
    publish_with_hold(&h, "v4", None);
    let (label, r) = h.once();
    assert_eq!(label, "activated", "{}\n{}", r.stdout, r.stderr);
    assert_eq!(h.status()["active_version"], 4);
    assert!(h.config()["hold"].is_null());
}

#[test]
fn hold_without_a_reason_is_a_config_error() {
    let h = Host::new();
    let mut cfg = h.config();
    cfg["hold"] = serde_json::json!({"max_version": 3, "reason": " "});
    h.set_config(&cfg);
    let r = h.kit.run(&[
        "config",
        "check",
        h.kit.path("config.json").to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("hold.reason"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}
