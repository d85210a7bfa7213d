//! Fleet rollouts and visibility (docs/fleet.md): signed rollout waves,
//! revert, signed host receipts read with `npcnix fleet status`. Many hosts
//! (separate data dirs, host IDs and configs) follow one directory store.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::host::Host;
use crate::common::*;

/// A fleet: the publisher's kit and store (from `h`) and `n` hosts.
struct Fleet {
    h: Host,
    hosts: Vec<String>,
}

impl Fleet {
    fn new(n: usize, edit: impl Fn(usize, &mut serde_json::Value)) -> Fleet {
        let h = Host::new();
        let base = h.config();
        let mut hosts = Vec::new();
        for i in 0..n {
            let id = format!("host-{i:02}");
            let mut c = base.clone();
            c["host_id"] = serde_json::json!(id);
            c["state_dir"] = serde_json::json!(h.kit.path(&format!("data-{id}")));
            c["metrics_path"] = serde_json::Value::Null;
            c["lockout"] = serde_json::json!({"probation_secs": 0});
            edit(i, &mut c);
            fs::write(
                h.kit.path(&format!("cfg-{id}.json")),
                serde_json::to_vec_pretty(&c).expect("json"),
            )
            .expect("write");
            hosts.push(id);
        }
        Fleet { h, hosts }
    }

    fn cfg(&self, id: &str) -> PathBuf {
        self.h.kit.path(&format!("cfg-{id}.json"))
    }

    fn cmd(&self, id: &str, args: &[&str]) -> std::process::Command {
        let mut c = self.h.agent_cmd(args);
        c.env("NPCNIX_CONFIG", self.cfg(id))
            .env("NPCNIX_DATA_DIR", self.h.kit.path(&format!("data-{id}")))
            .env("NPCNIX_TRUST_DIR", self.h.kit.path(&format!("trust-{id}")));
        c
    }

    /// `follow --once --json` for host `id`: the result line.
    fn once(&self, id: &str) -> serde_json::Value {
        let o = self
            .cmd(id, &["follow", "--once", "--json"])
            .output()
            .expect("run");
        let out = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap_or_else(|_| {
            panic!(
                "no result line for {id}: {out}{}",
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }

    fn status(&self, id: &str) -> serde_json::Value {
        let o = self.cmd(id, &["status", "--json"]).output().expect("run");
        serde_json::from_slice(&o.stdout).expect("status json")
    }

    fn publish(&self, marker: &str, extra: &[&str]) -> Run {
        let src = self.h.kit.flake(&format!("src-{marker}"), marker);
        let r = self.h.kit.publish("prod", &self.h.key, &src, extra);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r
    }

    fn fleet_status(&self, extra: &[&str]) -> (i32, serde_json::Value, String) {
        let url = self.h.kit.url("prod");
        let mut args = vec!["fleet", "status", "--remote", &url, "--json"];
        args.extend_from_slice(extra);
        let o = self
            .h
            .kit
            .cmd()
            .args(&args)
            .env("NPCNIX_DATA_DIR", self.h.kit.path("operator"))
            .output()
            .expect("run");
        (
            o.status.code().unwrap_or(-1),
            serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `host_id RW...` lines for `--host-keys`.
    fn pin_file(&self) -> PathBuf {
        let text: String = self
            .hosts
            .iter()
            .map(|id| {
                format!(
                    "{id} {}\n",
                    self.status(id)["host_public_key"].as_str().expect("key")
                )
            })
            .collect();
        let p = self.h.kit.path("host-keys.txt");
        fs::write(&p, text).expect("write");
        p
    }

    /// The marker of the last release host `id` switched to.
    fn last_marker(&self, id: &str) -> String {
        let data = format!("data-{id}/");
        self.h
            .activations()
            .iter()
            .rev()
            .find(|l| l.contains(&data))
            .and_then(|l| l.rsplit_once("| # ").map(|(_, m)| m.trim().to_owned()))
            .unwrap_or_default()
    }
}

#[test]
fn rollout_wave_activates_each_host_at_its_slot_and_all_by_the_end() {
    let f = Fleet::new(20, |_, _| {});
    f.publish("v1", &[]);
    for id in &f.hosts {
        assert_eq!(f.once(id)["result"], "activated");
    }
    f.publish("v2", &["--rollout", "20s"]);
    let start = Instant::now();
    let mut done = std::collections::BTreeSet::new();
    let mut waited_until = std::collections::BTreeMap::new();
    let mut first_round_activated = None;
    while done.len() < f.hosts.len() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every host activated: {done:?}"
        );
        for id in &f.hosts {
            if done.contains(id) {
                continue;
            }
            let r = f.once(id);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_secs();
            match r["result"].as_str() {
                Some("waiting") => {
                    let until = r["until"].as_u64().expect("until");
                    assert!(until > now.saturating_sub(1), "{r}");
                    waited_until.insert(id.clone(), until);
                }
                Some("activated") => {
                    // Never before the slot it was told.
                    if let Some(u) = waited_until.get(id) {
                        assert!(now >= *u, "{id} activated at {now}, before its slot {u}");
                    }
                    done.insert(id.clone());
                }
                other => panic!("{id}: unexpected {other:?}: {r}"),
            }
        }
        if first_round_activated.is_none() {
            first_round_activated = Some(done.len());
            // The wave is verified at once: the status shows the wait.
            let waiting = f
                .hosts
                .iter()
                .find(|id| !done.contains(*id))
                .expect("one waits");
            assert_eq!(f.status(waiting)["waiting"]["version"], 2);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let early = first_round_activated.expect("rounds");
    assert!(early < 10, "a 20 s wave let {early} of 20 hosts in at once");
    assert!(
        start.elapsed() >= Duration::from_secs(8),
        "the wave was not spread"
    );

    // Every host's receipt: 20 hosts on v2, trusted on first use.
    let (code, v, stderr) = f.fleet_status(&[]);
    assert_eq!(code, 0, "{stderr}");
    let rows = v["hosts"].as_array().expect("hosts");
    assert_eq!(rows.len(), 20, "{v}");
    assert!(
        rows.iter()
            .all(|r| r["active_version"] == 2 && r["verdict"] == "unpinned"),
        "{v}"
    );
    assert_eq!(v["summary"][0], "v2: 20 hosts");

    // Pinned: every receipt verifies with its host's key.
    let pins = f.pin_file();
    let (code, v, stderr) = f.fleet_status(&["--host-keys", pins.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(v["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .all(|r| r["verdict"] == "ok"));
}

#[test]
fn immediate_host_ignores_the_wave() {
    let f = Fleet::new(2, |i, c| {
        if i == 0 {
            c["rollout"] = serde_json::json!("immediate");
        }
    });
    f.publish("v1", &["--rollout", "1h"]);
    assert_eq!(f.once("host-00")["result"], "activated", "canary");
    let r = f.once("host-01");
    // A one-hour wave: the other host almost surely waits.
    assert!(
        matches!(r["result"].as_str(), Some("waiting" | "activated")),
        "{r}"
    );
}

#[test]
fn forged_receipt_for_a_pinned_host_is_bad_signature_and_fails_the_check() {
    let f = Fleet::new(3, |_, _| {});
    f.publish("v1", &[]);
    for id in &f.hosts {
        f.once(id);
    }
    let pins = f.pin_file();
    // A store attacker writes a receipt for host-01, signed by its own key
    // (it claims that key inside the receipt).
    let forger = Fleet::new(1, |_, c| c["host_id"] = serde_json::json!("host-01"));
    forger.publish("x1", &[]);
    forger.once("host-00");
    let forged = fs::read(forger.h.kit.store_path("prod", "hosts/host-01.json")).expect("receipt");
    fs::write(f.h.kit.store_path("prod", "hosts/host-01.json"), forged).expect("plant");
    let (code, v, _) = f.fleet_status(&["--host-keys", pins.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    let row = v["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|r| r["host"] == "host-01")
        .expect("row")
        .clone();
    assert_eq!(row["verdict"], "bad-signature", "{row}");
    // Unpinned (trust on first use, remembered from an earlier run): the
    // changed key is flagged.
    let (_, v, _) = f.fleet_status(&[]);
    let _ = v;
    let known = f.h.kit.path("operator/fleet-known-hosts/prod");
    let text = fs::read_to_string(&known).expect("known hosts");
    assert!(text.contains("host-00 RW"), "{text}");
}

#[test]
fn key_change_after_first_use_is_flagged() {
    let f = Fleet::new(1, |_, _| {});
    f.publish("v1", &[]);
    f.once("host-00");
    let (code, _, _) = f.fleet_status(&[]);
    assert_eq!(code, 0);
    // The host's key is replaced (reinstall, or an impostor).
    fs::remove_file(f.h.kit.path("data-host-00/host.key")).expect("rm");
    fs::remove_file(f.h.kit.path("data-host-00/receipt.json")).expect("rm");
    f.publish("v2", &[]);
    f.once("host-00");
    let (code, v, _) = f.fleet_status(&[]);
    assert_eq!(v["hosts"][0]["verdict"], "key-changed", "{v}");
    // Issue 31: in trust-on-first-use mode too, a changed key fails the
    // check (it exited 0).
    assert_eq!(code, 1);
}

/// Issue 31: a store attacker deletes a failing host's receipt. The host
/// was seen before, so it is reported missing and the check fails (it
/// vanished from the report with exit 0).
#[test]
fn deleted_receipt_of_a_host_seen_before_is_missing_and_fails_the_check() {
    let f = Fleet::new(2, |_, _| {});
    f.publish("v1", &[]);
    for id in &f.hosts {
        f.once(id);
    }
    let (code, _, err) = f.fleet_status(&[]);
    assert_eq!(code, 0, "{err}");
    fs::remove_file(f.h.kit.store_path("prod", "hosts/host-01.json")).expect("rm");
    let (code, v, _) = f.fleet_status(&[]);
    assert_eq!(code, 1, "{v}");
    let row = v["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|r| r["host"] == "host-01")
        .expect("host-01 still reported")
        .clone();
    assert_eq!(row["verdict"], "missing", "{row}");
    assert!(
        row["detail"]
            .as_str()
            .is_some_and(|d| d.contains("sequence")),
        "{row}"
    );
}

/// Issue 31: the store serves a host's older receipt again (from before a
/// refusal, say). It verifies, but an earlier run saw a newer one: replayed.
#[test]
fn older_receipt_served_again_is_flagged_as_replayed() {
    let f = Fleet::new(1, |_, _| {});
    f.publish("v1", &[]);
    f.once("host-00");
    let receipt = f.h.kit.store_path("prod", "hosts/host-00.json");
    let old = fs::read(&receipt).expect("receipt");
    let pins = f.pin_file();
    let pins = pins.to_str().expect("utf8");
    f.publish("v2", &[]);
    f.once("host-00");
    let (code, v, _) = f.fleet_status(&["--host-keys", pins]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["hosts"][0]["active_version"], 2, "{v}");
    fs::write(&receipt, old).expect("replay");
    let (code, v, _) = f.fleet_status(&["--host-keys", pins]);
    assert_eq!(v["hosts"][0]["verdict"], "replayed", "{v}");
    assert_eq!(code, 1);
}

/// Issue 31 review: a reinstalled host (new key, sequence from 1) is not
/// held to its old key's sequence once re-pinned, and a retired host stops
/// being `missing` once forgotten.
#[test]
fn reinstalled_host_is_not_a_replay_and_a_retired_one_can_be_forgotten() {
    let f = Fleet::new(2, |_, _| {});
    f.publish("v1", &[]);
    for id in &f.hosts {
        f.once(id);
    }
    f.publish("v2", &[]);
    for id in &f.hosts {
        f.once(id);
    }
    let pins = f.pin_file();
    let (code, _, err) = f.fleet_status(&["--host-keys", pins.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    // host-00 is reinstalled: a new key, its receipts start at 1 again.
    fs::remove_file(f.h.kit.path("data-host-00/host.key")).expect("rm");
    fs::remove_file(f.h.kit.path("data-host-00/receipt.json")).expect("rm");
    f.publish("v3", &[]);
    f.once("host-00");
    f.once("host-01");
    let pins = f.pin_file();
    let (code, v, _) = f.fleet_status(&["--host-keys", pins.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{v}");
    // host-01 is retired: its receipt removed; missing until forgotten.
    fs::remove_file(f.h.kit.store_path("prod", "hosts/host-01.json")).expect("rm");
    let (code, v, _) = f.fleet_status(&[]);
    assert_eq!(code, 1, "{v}");
    let (code, v, err) = f.fleet_status(&["--forget", "host-01"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(
        !v["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .any(|r| r["host"] == "host-01"),
        "{v}"
    );
}

/// Issue 31: one host key, two remotes. The receipt it signed for `prod`,
/// copied into `staging`'s store, must not speak for staging (the remote
/// was not in the signed comment: it verified as `ok`).
#[test]
fn receipt_copied_from_another_remote_is_refused() {
    let f = Fleet::new(1, |_, _| {});
    f.publish("v1", &[]);
    f.once("host-00");
    let pins = f.pin_file();
    let staging = f.h.kit.store_path("staging", "hosts/host-00.json");
    fs::create_dir_all(staging.parent().expect("parent")).expect("mkdir");
    fs::copy(f.h.kit.store_path("prod", "hosts/host-00.json"), &staging).expect("copy");
    let url = f.h.kit.url("staging");
    let o =
        f.h.kit
            .cmd()
            .args(["fleet", "status", "--remote", &url, "--json", "--host-keys"])
            .arg(&pins)
            .env("NPCNIX_DATA_DIR", f.h.kit.path("operator"))
            .output()
            .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert_eq!(v["hosts"][0]["verdict"], "bad-signature", "{v}");
    assert!(
        v["hosts"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("prod")),
        "{v}"
    );
}

#[test]
fn refused_release_shows_as_refused_with_its_check() {
    let f = Fleet::new(3, |_, _| {});
    f.publish("v1", &[]);
    for id in &f.hosts {
        f.once(id);
    }
    let r = f.publish("v2", &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let key = v["archive"]["key"].as_str().expect("key").to_owned();
    // The store swaps the archive's bytes (same size).
    let p = f.h.kit.store_path("prod", &key);
    let mut bytes = fs::read(&p).expect("archive");
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    fs::write(&p, bytes).expect("write");
    for id in &f.hosts {
        assert_eq!(f.once(id)["result"], "rejected");
    }
    let (code, v, _) = f.fleet_status(&[]);
    assert_eq!(code, 0);
    assert!(
        v["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .all(|r| r["result"] == "rejected"
                && r["check"] == "archive-hash"
                && r["active_version"] == 1),
        "{v}"
    );
    assert!(
        v["summary"]
            .as_array()
            .expect("summary")
            .iter()
            .any(|l| l == "refused the latest release: 3 hosts (archive-hash)"),
        "{v}"
    );
}

#[test]
fn revert_moves_running_and_waiting_hosts_to_the_old_content_at_a_higher_version() {
    // host-00 is a canary (ignores waves); the others wait for a long wave.
    let f = Fleet::new(5, |i, c| {
        if i == 0 {
            c["rollout"] = serde_json::json!("immediate");
        }
    });
    f.publish("good", &[]);
    for id in &f.hosts {
        assert_eq!(f.once(id)["result"], "activated");
    }
    f.publish("bad", &["--rollout", "2h"]);
    assert_eq!(f.once("host-00")["result"], "activated");
    assert_eq!(f.last_marker("host-00"), "bad");
    // Halt: publish version 1's content again, as version 3.
    let url = f.h.kit.url("prod");
    let r = f.h.kit.run(&[
        "release", "revert", "--remote", &url, "--key", &f.h.key, "--to", "1", "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["version"], 3);
    for id in &f.hosts {
        assert_eq!(f.once(id)["result"], "activated", "{id}");
        assert_eq!(f.last_marker(id), "good", "{id} runs the reverted content");
        assert_eq!(f.status(id)["active_version"], 3);
    }
    // Rollback protection holds: version 2 is never taken again.
    for id in &f.hosts {
        assert!(matches!(
            f.once(id)["result"].as_str(),
            Some("unchanged" | "up-to-date")
        ));
    }
}

/// Found in review: `release revert --to N` re-signed whatever signed
/// release the store served as `releases/N`.
#[test]
fn revert_refuses_a_planted_target_release() {
    let f = Fleet::new(1, |_, _| {});
    f.publish("good", &[]);
    f.publish("bad", &[]);
    let v1 = f.h.kit.store_path("prod", "releases/00000000000000000001");
    let v2 = f.h.kit.store_path("prod", "releases/00000000000000000002");
    fs::copy(&v2, &v1).expect("substitute");
    let url = f.h.kit.url("prod");
    let r = f.h.kit.run(&[
        "release", "revert", "--remote", &url, "--key", &f.h.key, "--to", "1",
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("releases/1"), "{}", r.stderr);
    assert!(
        !f.h.kit
            .store_path("prod", "releases/00000000000000000003")
            .exists(),
        "nothing was published"
    );
}

#[test]
fn store_with_hosts_planted_as_a_symlink_does_not_carry_the_receipt_elsewhere() {
    let f = Fleet::new(1, |_, _| {});
    f.h.publish("v1");
    let hosts = f.h.kit.store_path("prod", "hosts");
    let elsewhere = f.h.kit.path("elsewhere");
    fs::create_dir_all(&elsewhere).expect("mkdir");
    let _ = fs::remove_dir_all(&hosts);
    std::os::unix::fs::symlink(&elsewhere, &hosts).expect("symlink");
    let o = f
        .cmd("host-00", &["follow", "--once", "--json"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\"activated\""),
        "the decision stands: {out}\n{stderr}"
    );
    let written: Vec<_> = fs::read_dir(&elsewhere).expect("dir").collect();
    assert!(
        written.is_empty(),
        "the receipt followed the symlink: {written:?}"
    );
    assert!(
        stderr.contains("not a directory (a symlink?)"),
        "the failed receipt is a warning: {stderr}"
    );
}

/// The stage of `host` in version `v` of a plan gated at 30 % and 60 %
/// (0: before the first gate).
fn stage_of(v: u64, host: &str) -> usize {
    use npcnix::format::rollout::{Gate, Rollout};
    let plan = Rollout {
        points: vec![(0, 100), (1, 100)],
        gates: vec![
            Gate {
                stage: "two".into(),
                percent: 30,
            },
            Gate {
                stage: "three".into(),
                percent: 60,
            },
        ],
    };
    npcnix::publish::rollout::stage_index(&plan, "prod", v, host)
}

const GATED: &[&str] = &[
    "--rollout-plan",
    "0=100,1s=100",
    "--gate",
    "two=30",
    "--gate",
    "three=60",
];

#[test]
fn gated_stages_open_only_on_signed_promotions_backed_by_confirmed_hosts_and_a_halt_keeps_them_closed(
) {
    let probe = Host::new();
    let (rollout_key, rollout_pub) = probe.kit.keygen("rollout");
    let rollout_pk = fs::read_to_string(&rollout_pub)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("line")
        .to_owned();
    let f = Fleet::new(20, |_, c| {
        c["trusted_keys"].as_array_mut().expect("keys").push(
            serde_json::json!({"public_key": rollout_pk, "remotes": ["prod"], "role": "rollout"}),
        );
    });
    let failing_rebuild = f.h.kit.path("bin-fail/nixos-rebuild");
    fs::create_dir_all(failing_rebuild.parent().expect("dir")).expect("mkdir");
    fs::write(&failing_rebuild, "#!/bin/sh\nexit 1\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&failing_rebuild, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let once = |id: &str, broken: bool| -> serde_json::Value {
        let mut c = f.cmd(id, &["follow", "--once", "--json"]);
        if broken {
            c.env("NPCNIX_NIXOS_REBUILD", &failing_rebuild);
        }
        let o = c.output().expect("run");
        let out = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(out.lines().last().unwrap_or("{}"))
            .unwrap_or_else(|_| panic!("{id}: {out}{}", String::from_utf8_lossy(&o.stderr)))
    };
    let url = f.h.kit.url("prod");
    let operator = |args: &[&str]| -> Run {
        Run::from(
            f.h.kit
                .cmd()
                .args(args)
                .env("NPCNIX_DATA_DIR", f.h.kit.path("operator"))
                .output()
                .expect("run"),
        )
    };
    f.publish("v1", &[]);
    for id in &f.hosts {
        assert_eq!(once(id, false)["result"], "activated");
    }
    let pins = f.pin_file();
    let pins = pins.to_str().expect("utf8");
    // The hosts' own config says which rollout keys they accept.
    let host_cfg = f.cfg(&f.hosts[0]);
    let host_cfg = host_cfg.to_str().expect("utf8").to_owned();
    let promote_with = |v: &str, stage: &str, key: &str| -> Run {
        operator(&[
            "release",
            "promote",
            "--remote",
            &url,
            "--version",
            v,
            "--stage",
            stage,
            "--require",
            "95%",
            "--key",
            key,
            "--host-config",
            &host_cfg,
            "--host-keys",
            pins,
        ])
    };
    let promote = |v: &str, stage: &str| promote_with(v, stage, &rollout_key);
    let by_stage = |v: u64, s: usize| -> Vec<String> {
        f.hosts
            .iter()
            .filter(|h| stage_of(v, h) == s)
            .cloned()
            .collect()
    };

    // Version 2: two hosts of the first stage fail to activate it.
    f.publish("v2", GATED);
    let first = by_stage(2, 0);
    assert!(
        first.len() >= 3 && !by_stage(2, 1).is_empty() && !by_stage(2, 2).is_empty(),
        "20 hosts should fill three stages: {first:?}"
    );
    let broken: Vec<String> = first.iter().take(2).cloned().collect();
    for id in &f.hosts {
        let r = once(id, broken.contains(id));
        match stage_of(2, id) {
            0 if broken.contains(id) => assert_ne!(r["result"], "activated", "{id}: {r}"),
            0 => assert_eq!(r["result"], "activated", "{id}: {r}"),
            _ => {
                assert_eq!(r["result"], "waiting-for-promotion", "{id}: {r}");
                assert!(r.to_string().contains("two"), "names the stage: {r}");
            }
        }
    }
    let gated = by_stage(2, 2)[0].clone();
    let st = f.status(&gated);
    assert_eq!(
        st["rollout_gate"]["version"], 2,
        "status shows the gate: {st}"
    );
    assert_eq!(st["rollout_gate"]["stage"], "two", "{st}");
    let (_, fleet, _) = f.fleet_status(&["--host-keys", pins]);
    assert!(
        fleet["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .any(|r| r["host"] == gated.as_str() && r["result"] == "waiting-for-promotion"),
        "the receipt reports the gate: {fleet}"
    );
    let r = promote("2", "two");
    assert_eq!(
        r.code, 1,
        "failing first-stage hosts block the promotion: {}{}",
        r.stdout, r.stderr
    );
    for id in &broken {
        assert!(
            r.stdout.contains(id.as_str()),
            "names failing host {id}: {}",
            r.stdout
        );
    }
    assert!(!f
        .h
        .kit
        .store_path("prod", "rollouts/00000000000000000002/promote-two.json")
        .exists());
    for id in by_stage(2, 1) {
        assert_eq!(once(&id, false)["result"], "waiting-for-promotion");
    }

    // Version 3 fixes it: every first-stage host confirms, stage two opens.
    f.publish("v3", GATED);
    for id in &f.hosts {
        let r = once(id, false);
        let want = if stage_of(3, id) == 0 {
            "activated"
        } else {
            "waiting-for-promotion"
        };
        assert_eq!(r["result"], want, "{id}: {r}");
    }
    // The same assessment for stage three: two is not promoted yet.
    let r = promote("3", "three");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("promote it first"), "{}", r.stderr);
    // A key the hosts do not accept signs nothing.
    let (thief_key, _) = f.h.kit.keygen("thief");
    let r = promote_with("3", "two", &thief_key);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("hosts would refuse"), "{}", r.stderr);
    let promotion =
        f.h.kit
            .store_path("prod", "rollouts/00000000000000000003/promote-two.json");
    assert!(!promotion.exists());
    let r = promote("3", "two");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // Promoting again moves nothing (the stage's start stays).
    let first = fs::read(&promotion).expect("promotion");
    std::thread::sleep(Duration::from_millis(1100));
    let r = promote("3", "two");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);
    assert_eq!(fs::read(&promotion).expect("promotion"), first);
    for id in &f.hosts {
        let r = once(id, false);
        match stage_of(3, id) {
            0 => assert!(
                matches!(r["result"].as_str(), Some("up-to-date" | "unchanged")),
                "{id}: {r}"
            ),
            1 => assert_eq!(r["result"], "activated", "{id}: {r}"),
            _ => assert_eq!(r["result"], "waiting-for-promotion", "{id}: {r}"),
        }
    }
    for id in by_stage(3, 1) {
        assert_eq!(f.last_marker(&id), "v3", "{id}");
    }

    // A forged promotion of stage three (a key the hosts do not trust) is
    // refused, never followed.
    let thief = npcnix::format::keys::SecretKey::generate().expect("key");
    let bundle =
        fs::read(f.h.kit.store_path("prod", "releases/00000000000000000003")).expect("release");
    let bundle = npcnix::format::bundle::Bundle::decode(&bundle).expect("bundle");
    let forged = npcnix::publish::rollout::decision(
        npcnix::format::remote::RemoteName::new("prod").expect("name"),
        3,
        npcnix::format::digest::Digest::of(&bundle.statement),
        Some("three"),
        None,
        None,
        1,
    );
    let forged_path =
        f.h.kit
            .store_path("prod", "rollouts/00000000000000000003/promote-three.json");
    fs::write(
        &forged_path,
        npcnix::publish::rollout::sign(&forged, &[thief]),
    )
    .expect("write");
    let last = by_stage(3, 2);
    for id in &last {
        let r = once(id, false);
        assert_eq!(r["result"], "rejected", "{id}: {r}");
        assert_eq!(r["check"], "rollout-decision", "{id}: {r}");
        assert_ne!(
            f.last_marker(id),
            "v3",
            "{id} activated on a forged promotion"
        );
    }
    fs::remove_file(&forged_path).expect("rm");

    // A halt keeps stage three closed; a promotion after it is refused.
    let halt = || {
        operator(&[
            "release",
            "halt",
            "--remote",
            &url,
            "--version",
            "3",
            "--key",
            &rollout_key,
            "--host-config",
            &host_cfg,
            "--reason",
            "error rate up",
        ])
    };
    let r = halt();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let halt_path =
        f.h.kit
            .store_path("prod", "rollouts/00000000000000000003/halt.json");
    let first_halt = fs::read(&halt_path).expect("halt");
    std::thread::sleep(Duration::from_millis(1100));
    let r = halt();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("already halted"),
        "the first halt stands: {}",
        r.stdout
    );
    assert_eq!(fs::read(&halt_path).expect("halt"), first_halt);
    for id in &last {
        assert_eq!(once(id, false)["result"], "halted", "{id}");
    }
    let r = promote("3", "three");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("halted"), "{}", r.stderr);
    for id in &last {
        assert_ne!(f.last_marker(id), "v3", "{id}");
        assert_eq!(once(id, false)["result"], "halted", "{id}");
    }
    // The hosts already running version 3 keep it.
    for id in by_stage(3, 1) {
        let r = once(&id, false);
        assert!(
            matches!(r["result"].as_str(), Some("up-to-date" | "unchanged")),
            "{id}: {r}"
        );
        assert_eq!(f.last_marker(&id), "v3", "{id}");
    }
}

/// Issue 37, gossip: a store holding the release and log keys shows host
/// 01 a rewritten history. Honest witnesses refuse to cosign it, and the
/// host refuses it as `unwitnessed`; once a witness that lost its state
/// cosigns it, host 01 takes it, and `fleet status` flags the split view
/// from the two hosts' receipts alone.
#[test]
fn split_view_is_refused_by_honest_witnesses_and_flagged_by_fleet_status() {
    let f = Fleet::new(2, |_, _| {});
    let kit = &f.h.kit;
    let (log_key, log_pub) = kit.keygen("log");
    let (wa, wa_pub) = kit.keygen("wa");
    let (wb, wb_pub) = kit.keygen("wb");
    let vkey = |pubkey: &str, name: &str| {
        let r = kit.run(&["witness", "--print-key", "--key", pubkey, "--name", name]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout.trim().to_owned()
    };
    let (va, vb) = (vkey(&wa_pub, "a.example"), vkey(&wb_pub, "b.example"));
    let log_line = fs::read_to_string(&log_pub)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("key")
        .to_owned();
    for id in &f.hosts {
        let mut c: serde_json::Value =
            serde_json::from_slice(&fs::read(f.cfg(id)).expect("cfg")).expect("json");
        c["trusted_keys"]
            .as_array_mut()
            .expect("keys")
            .push(serde_json::json!({"public_key": log_line, "remotes": ["prod"], "role": "log"}));
        c["policy"]["witnesses"] = serde_json::json!({"keys": [va, vb], "threshold": 1});
        fs::write(f.cfg(id), serde_json::to_vec_pretty(&c).expect("json")).expect("write");
    }
    let url = kit.url("prod");
    let witness = |key: &str, name: &str, state: &str| {
        let state = kit.path(state);
        kit.run(&[
            "witness",
            "--remote",
            &url,
            "--log-key",
            &log_pub,
            "--key",
            key,
            "--name",
            name,
            "--state-dir",
            state.to_str().expect("utf8"),
        ])
    };
    f.publish("v1", &["--log-key", &log_key]);
    assert_eq!(witness(&wa, "a.example", "wa-state").code, 0);
    for id in &f.hosts {
        assert_eq!(f.once(id)["result"], "activated", "{id}");
    }
    let store = kit.path("store/prod");
    let saved = kit.path("saved");
    fs::create_dir_all(&saved).expect("mkdir");
    fs::copy(store.join("latest"), saved.join("latest")).expect("save latest");
    let cp = |from: &std::path::Path, to: &std::path::Path| {
        let o = std::process::Command::new("cp")
            .args(["-a"])
            .arg(from)
            .arg(to)
            .output()
            .expect("cp");
        assert!(o.status.success());
    };
    cp(&store.join("log"), &saved.join("log"));
    f.publish("v2", &["--log-key", &log_key]);
    assert_eq!(witness(&wa, "a.example", "wa-state").code, 0);
    assert_eq!(f.once("host-00")["result"], "activated");

    // The attack: the log and head put back to version 1, another version
    // 2 published on top, the witnesses' cosignatures of the real one
    // removed.
    fs::remove_dir_all(store.join("log")).expect("rm");
    cp(&saved.join("log"), &store.join("log"));
    fs::copy(saved.join("latest"), store.join("latest")).expect("restore");
    fs::remove_file(store.join("releases/00000000000000000002")).expect("rm release");
    fs::remove_dir_all(store.join("witnesses")).expect("rm witnesses");
    f.publish("v2-forged", &["--log-key", &log_key]);
    let honest = witness(&wa, "a.example", "wa-state");
    assert_eq!(
        honest.code, 3,
        "the honest witness refuses: {}",
        honest.stderr
    );
    assert!(
        honest.stderr.contains("log-inconsistent"),
        "{}",
        honest.stderr
    );
    let r = f.once("host-01");
    assert_eq!(r["result"], "rejected", "{r}");
    assert_eq!(r["check"], "unwitnessed", "{r}");

    // A witness that lost its state cosigns the forged history.
    assert_eq!(witness(&wb, "b.example", "wb-fresh").code, 0);
    assert_eq!(f.once("host-01")["result"], "activated");
    let r = f.once("host-00");
    assert_eq!(
        r["result"], "rejected",
        "host-00 refuses the other history: {r}"
    );

    let (code, v, stderr) = f.fleet_status(&[]);
    assert_eq!(code, 1, "{stderr}");
    let rows = v["hosts"].as_array().expect("hosts");
    for row in rows {
        assert_eq!(row["verdict"], "log-inconsistent", "{row}");
    }
}
