//! Signed system closures with real Nix (Debian's nix-bin, single-user as
//! root): the publisher builds a tiny toplevel (a stand-in
//! `bin/switch-to-configuration`) with `publish --build`, copies it to a
//! signed local binary cache and removes it from the store; a `toplevel`
//! host realises exactly the signed path from that cache and switches to it.
//! Refused: a release without a path for the host, an unsigned cache entry,
//! a cache serving different bytes.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::host::Host;
use crate::common::*;

/// Nix settings for an offline machine: no default substituter, no sandbox
/// (the stand-in builder uses /bin/sh), flakes on.
const NIX_CONFIG: &str =
    "substituters =\nsandbox = false\nbuild-users-group =\nexperimental-features = nix-command flakes\n";

fn nix(args: &[&str]) -> std::process::Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .expect("run nix");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A flake whose `web` toplevel is a stand-in system: its
/// switch-to-configuration logs "<action> <own path>" to `log`. It carries
/// the npcnix agent as the NixOS module would install it (the host's config
/// and an enabled unit), so the lockout inspection passes.
fn system_flake(h: &Host, name: &str, marker: &str, log: &Path) -> std::path::PathBuf {
    system_flake_with(h, name, marker, log, true)
}

fn system_flake_with(
    h: &Host,
    name: &str,
    marker: &str,
    log: &Path,
    agent: bool,
) -> std::path::PathBuf {
    let src = h.kit.flake(name, marker);
    fs::write(
        src.join("npcnix-config.json"),
        serde_json::to_vec_pretty(&h.config()).expect("json"),
    )
    .expect("write");
    let agent_files = if agent {
        r#"
        /bin/mkdir -p $out/etc/npcnix $out/etc/systemd/system/multi-user.target.wants
        /bin/cp ${./npcnix-config.json} $out/etc/npcnix/config.json
        echo '[Service]' > $out/etc/systemd/system/npcnix.service
        /bin/ln -s ../npcnix.service $out/etc/systemd/system/multi-user.target.wants/npcnix.service"#
    } else {
        ""
    };
    let flake = format!(
        r#"{{
  outputs = {{ self }}: {{
    nixosConfigurations.web.config.system.build.toplevel = builtins.derivation {{
      name = "nixos-system-web-{marker}";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" ''
        /bin/mkdir -p $out/bin
        printf '#!/bin/sh\necho "$1 %s" >> {log}\n' "$out" > $out/bin/switch-to-configuration
        /bin/chmod +x $out/bin/switch-to-configuration{agent_files}
      '' ];
    }};
  }};
}}
"#,
        log = log.display()
    );
    fs::write(src.join("flake.nix"), flake).expect("write");
    src
}

fn setup() -> Option<(Host, String, String)> {
    if !require_tool("nix") || !require_tool("nix-store") {
        return None;
    }
    let h = Host::new();
    let cache = h.kit.path("cache");
    let (sk, pk) = (h.kit.path("cache.sk"), h.kit.path("cache.pk"));
    nix(&[
        "nix-store",
        "--generate-binary-cache-key",
        "npcnix-test-cache-1",
        sk.to_str().expect("utf8"),
        pk.to_str().expect("utf8"),
    ]);
    let cache_url = format!("file://{}", cache.display());
    let mut cfg = h.config();
    cfg["activation"] = serde_json::json!({
        "mode": "toplevel",
        "toplevel_action": "switch",
        "profile": h.kit.path("profiles/system"),
        "extra_substituters": [cache_url],
        "extra_trusted_public_keys": [fs::read_to_string(&pk).expect("cache key").trim()],
    });
    fs::create_dir_all(h.kit.path("profiles")).expect("mkdir");
    h.set_config(&cfg);
    Some((
        h,
        format!("{cache_url}?secret-key={}", sk.display()),
        cache_url,
    ))
}

fn publish_build(h: &Host, src: &Path, copy_to: &str) -> String {
    let url = h.kit.url("prod");
    let out = h
        .kit
        .cmd()
        .env("NIX_CONFIG", NIX_CONFIG)
        .args([
            "publish",
            "--remote",
            &url,
            "--key",
            &h.key,
            "--json",
            "--build",
            "--copy-to",
            copy_to,
            "--src",
        ])
        .arg(src)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let path = v["toplevels"]["web"]
        .as_str()
        .expect("signed toplevel")
        .to_owned();
    // The host must fetch it from the cache, not find it locally.
    nix(&["nix-store", "--delete", &path]);
    path
}

fn follow(h: &Host) -> (String, Run) {
    let o = h
        .agent_cmd(&["follow", "--once", "--json"])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let label = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["result"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (
        label,
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
    )
}

#[test]
fn toplevel_host_realises_and_switches_to_the_signed_path() {
    let Some((h, copy_to, _)) = setup() else {
        return;
    };
    let log = h.kit.path("switch.log");
    let path = publish_build(&h, &system_flake(&h, "v1", "v1", &log), &copy_to);
    let (label, r) = follow(&h);
    assert_eq!(label, "activated", "{}{}", r.stdout, r.stderr);
    assert_eq!(
        fs::read_to_string(&log).expect("switch ran").trim(),
        format!("switch {path}")
    );
    assert_eq!(
        fs::canonicalize(h.kit.path("profiles/system")).expect("profile"),
        Path::new(&path)
    );
    assert!(
        h.activations().is_empty(),
        "nixos-rebuild (evaluation) must not run"
    );
}

#[test]
fn release_without_a_path_for_this_host_is_refused() {
    let Some((h, _, _)) = setup() else { return };
    h.publish("v1"); // plain release: no toplevels
    let (label, r) = follow(&h);
    assert_eq!(label, "rejected");
    assert!(r.stdout.contains("signs no system path"), "{}", r.stdout);
    assert!(h.activations().is_empty());
}

#[test]
fn unsigned_or_tampered_cache_entries_are_refused() {
    let Some((h, copy_to, _)) = setup() else {
        return;
    };
    let log = h.kit.path("switch.log");
    let path = publish_build(&h, &system_flake(&h, "v1", "tamper", &log), &copy_to);
    let hash = Path::new(&path)
        .file_name()
        .expect("name")
        .to_string_lossy()[..32]
        .to_owned();
    let narinfo = h.kit.path(&format!("cache/{hash}.narinfo"));
    let original = fs::read_to_string(&narinfo).expect("narinfo");

    // A cache serving the path without a valid signature.
    let unsigned: String = original
        .lines()
        .filter(|l| !l.starts_with("Sig:"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&narinfo, unsigned).expect("write");
    let (label, _) = follow(&h);
    assert_eq!(label, "activation-failed");
    assert!(!log.exists(), "nothing was switched to");

    // A cache serving different bytes under the signed narinfo.
    fs::write(&narinfo, &original).expect("restore");
    let nar_rel = original
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL")
        .to_owned();
    let nar = h.kit.path(&format!("cache/{nar_rel}"));
    let mut bytes = fs::read(&nar).expect("nar");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&nar, bytes).expect("write");
    let mut st: serde_json::Value =
        serde_json::from_slice(&fs::read(h.kit.data_dir().join("state.json")).expect("state"))
            .expect("json");
    st["remotes"]["prod"]["retry"] = serde_json::Value::Null; // skip the backoff wait
    fs::write(
        h.kit.data_dir().join("state.json"),
        serde_json::to_vec(&st).expect("json"),
    )
    .expect("write");
    let (label, _) = follow(&h);
    assert_eq!(label, "activation-failed");
    assert!(!log.exists(), "nothing was switched to");
}

#[test]
fn failed_health_check_rolls_the_profile_back_to_the_previous_system() {
    let Some((h, copy_to, _)) = setup() else {
        return;
    };
    // Version 2 is unhealthy (the check runs with NPCNIX_VERSION set).
    let mut cfg = h.config();
    cfg["health_check"] = serde_json::json!({"command": ["sh", "-c", "test \"$NPCNIX_VERSION\" != 2"], "timeout_secs": 10});
    h.set_config(&cfg);
    let log = h.kit.path("switch.log");
    let v1 = publish_build(&h, &system_flake(&h, "v1", "rb-v1", &log), &copy_to);
    assert_eq!(follow(&h).0, "activated");
    let v2 = publish_build(&h, &system_flake(&h, "v2", "rb-v2", &log), &copy_to);
    let (label, r) = follow(&h);
    assert_eq!(label, "rolled-back", "{}{}", r.stdout, r.stderr);
    let calls: Vec<String> = fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        calls,
        [
            format!("switch {v1}"),
            format!("switch {v2}"),
            format!("switch {v1}")
        ]
    );
    assert_eq!(
        fs::canonicalize(h.kit.path("profiles/system")).expect("profile"),
        Path::new(&v1)
    );
    assert_eq!(h.status()["bad_releases"][0]["version"], 2);
}

#[test]
fn built_toplevel_without_the_agent_is_refused_before_any_switch() {
    // Lockout protection on a real built system: the signed toplevel has no
    // npcnix unit, so switching to it would strand the host.
    let Some((h, copy_to, _)) = setup() else {
        return;
    };
    let log = h.kit.path("switch.log");
    let path = publish_build(
        &h,
        &system_flake_with(&h, "v1", "no-agent", &log, false),
        &copy_to,
    );
    let (label, r) = follow(&h);
    assert_eq!(label, "rejected", "{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("would-lock-out"), "{}", r.stdout);
    assert!(
        r.stderr.contains(&path),
        "names the built system: {}",
        r.stderr
    );
    assert!(!log.exists(), "nothing was switched to");
    assert!(
        fs::symlink_metadata(h.kit.path("profiles/system")).is_err(),
        "the profile was not touched"
    );
    let s = h.status();
    assert_eq!(s["active_version"], serde_json::Value::Null);
    assert_eq!(s["bad_releases"][0]["version"], 1);
    // Marked bad: never built or inspected again.
    assert_eq!(follow(&h).0, "skipped-bad");
}

/// Issue 34: `npcnix diff --closures` shows what the signed systems of two
/// releases change, as `nix store diff-closures` words it (real Nix).
#[test]
fn diff_shows_the_closure_difference_of_the_signed_systems() {
    let Some((h, copy_to, _)) = setup() else {
        return;
    };
    let log = h.kit.path("switch.log");
    let p1 = publish_build(&h, &system_flake(&h, "src-1", "1.0", &log), &copy_to);
    let p2 = publish_build(&h, &system_flake(&h, "src-2", "2.0", &log), &copy_to);
    // Not in the store (the host fetches them from the cache): named, not fatal.
    let run = |h: &Host| {
        h.kit
            .cmd()
            .env("NIX_CONFIG", NIX_CONFIG)
            .args([
                "diff",
                "--remote",
                &h.kit.url("prod"),
                "--trusted-key",
                &h.pubkey,
                "--closures",
            ])
            .output()
            .expect("run")
    };
    let o = run(&h);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("closure of web: not shown"), "{out}");
    // Copied back into the store: the version change is shown.
    let cache = copy_to.split('?').next().expect("url").to_owned();
    for p in [&p1, &p2] {
        nix(&[
            "nix-store",
            "--realise",
            p,
            "--option",
            "extra-substituters",
            &cache,
            "--option",
            "require-sigs",
            "false",
        ]);
    }
    let o = run(&h);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("closure of web:") && out.contains("1.0") && out.contains("2.0"),
        "{out}"
    );
}
