//! A declarative hold (issue 34): the host config keeps a host at or below
//! a version, with a reason; the agent verifies newer releases but
//! activates none above it, and status, receipts and `fleet status` say
//! so. Changing the config lifts it.

use crate::common::host::Host;

fn hold(h: &Host, max: Option<u64>) {
    let mut cfg = h.config();
    cfg["hold"] = match max {
        Some(v) => serde_json::json!({"max_version": v, "reason": "migration window OPS-123"}),
        None => serde_json::Value::Null,
    };
    h.set_config(&cfg);
}

#[test]
fn held_host_verifies_but_does_not_activate_above_its_hold_and_says_why() {
    let h = Host::with(|c| c["host_id"] = serde_json::json!("web1"));
    h.publish("v1");
    assert_eq!(h.once().0, "activated");
    hold(&h, Some(1));
    h.publish("v2");
    // Every poll (each a new agent process: a restart changes nothing).
    for _ in 0..2 {
        let (label, r) = h.once();
        assert_eq!(label, "held", "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.code, 0, "a hold is not a failure: {}", r.stderr);
    }
    // A newer release is held too.
    h.publish("v3");
    assert_eq!(h.once().0, "held");
    assert_eq!(h.activations().len(), 1);
    let s = h.status();
    assert_eq!(s["active_version"], 1);
    assert_eq!(s["hold"]["max_version"], 1, "{s}");
    assert_eq!(s["hold"]["reason"], "migration window OPS-123");
    let text = h.run(&["status"]).ok().stdout;
    assert!(
        text.contains("hold:              at version 1 or below (migration window OPS-123)"),
        "{text}"
    );
    // The receipt says so, and fleet status shows it.
    let fleet = h
        .kit
        .run(&["fleet", "status", "--remote", &h.kit.url("prod"), "--json"]);
    let j: serde_json::Value = serde_json::from_str(&fleet.stdout).expect("json");
    let row = &j["hosts"][0];
    assert_eq!(row["result"], "held", "{j}");
    assert_eq!(row["hold"]["max_version"], 1, "{j}");
    assert!(
        j["summary"].as_array().expect("summary").iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.starts_with("held at v1 or below: 1 host"))),
        "{j}"
    );
    // Lifting the hold (a config change): the newest release activates.
    hold(&h, None);
    assert_eq!(h.once().0, "activated");
    assert_eq!(h.status()["active_version"], 3);
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
