//! A host under test: a kit, a release key, a host config following remote
//! `prod`, and the recording `nixos-rebuild` stand-in.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::{Kit, Run};

/// The recording `nixos-rebuild`: logs its arguments and the first line of
/// the flake's hosts/web.nix (the release marker; with `--store-path`, the
/// marker and flake the built system records); fails when the file
/// `fail` exists next to the log; sleeps when `slow` exists; installs the
/// flake's `npcnix-config.json` as the host config, as a NixOS switch would.
/// `build` leaves a `result` link to a system shaped like a NixOS one (see
/// the script). Where a test made `<run>/current-system`, switches and
/// rollbacks move it (and `bin/generations`) as NixOS would.
pub const FAKE_REBUILD: &str = r#"#!/bin/sh
dir=$(dirname "$0")
marker=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--flake" ]; then
    flake="${a%%#*}"
    marker=$(head -n1 "$flake/hosts/web.nix")
  fi
  if [ "$prev" = "--store-path" ]; then
    # A system `build` made (nixos-rebuild-ng's --store-path): no
    # evaluation; what it was built from is recorded in it. The agent must
    # not let nixos-rebuild-ng re-exec (it would evaluate <nixpkgs/nixos>),
    # and must still root the build (its `result` link) while switching.
    case " $* " in *" --no-reexec "*) ;; *) echo "--store-path without --no-reexec" >&2; exit 2 ;; esac
    rooted=""
    for r in "$dir"/../data/tmp/*/result; do
      [ "$(readlink -f "$r")" = "$(readlink -f "$a")" ] && rooted=1
    done
    [ -n "$rooted" ] || { echo "switching to $a, which nothing roots" >&2; exit 3; }
    flake=$(cat "$a/flake")
    marker=$(cat "$a/marker")
  fi
  prev="$a"
done
if [ "$1" = build ]; then
  # A built system, as the npcnix module shapes it: the host config the
  # release carries (else the current one) and the agent's unit, enabled
  # unless the release says `npcnix-disabled`.
  echo "build $* | $marker" >> "$dir/rebuild.log"
  if [ -f "$dir/build-fails" ]; then exit 1; fi
  out="$dir/systems/$marker-$$"
  mkdir -p "$out/etc/npcnix" "$out/etc/systemd/system/multi-user.target.wants"
  if [ -f "$flake/npcnix-config.json" ]; then
    cp "$flake/npcnix-config.json" "$out/etc/npcnix/config.json"
  elif [ -n "$NPCNIX_TEST_SYSTEM_CONFIG" ]; then
    cp "$NPCNIX_TEST_SYSTEM_CONFIG" "$out/etc/npcnix/config.json"
  elif [ -n "$NPCNIX_CONFIG" ]; then
    cp "$NPCNIX_CONFIG" "$out/etc/npcnix/config.json"
  fi
  if [ ! -f "$flake/npcnix-disabled" ]; then
    echo "[Service]" > "$out/etc/systemd/system/npcnix.service"
    ln -s ../npcnix.service "$out/etc/systemd/system/multi-user.target.wants/npcnix.service"
  fi
  echo "$flake" > "$out/flake"
  echo "$marker" > "$out/marker"
  ln -sfn "$out" result
  echo "$out" > "$dir/systems/$marker.last"
  exit 0
fi
# What a NixOS switch does for the npcnix module: install the host config
# the new system carries (used by the key-rotation test).
if [ -n "$flake" ] && [ -f "$flake/npcnix-config.json" ] && [ -n "$NPCNIX_CONFIG" ]; then
  cp "$flake/npcnix-config.json" "$NPCNIX_CONFIG"
fi
echo "start $* | $marker" >> "$dir/rebuild.log"
if [ -f "$dir/slow" ]; then touch "$dir/started"; sleep 2; fi
echo "end $*" >> "$dir/rebuild.log"
if [ -f "$dir/fail" ]; then exit 1; fi
# With a running system (a test made $NPCNIX_TEST_RUN_DIR/current-system),
# act on it as NixOS does: switch and test point it at the new system,
# switch and boot add a generation ($dir/generations, one path a line);
# --rollback: switch and boot drop the newest generation (switch then runs
# the one left newest), test runs the generation before the newest.
run="$NPCNIX_TEST_RUN_DIR/current-system"
if [ -L "$run" ]; then
  gens="$dir/generations"
  case " $* " in
    *" --rollback "*)
      case "$1" in
        switch) sed -i '$d' "$gens"; ln -sfn "$(tail -n1 "$gens")" "$run" ;;
        boot) sed -i '$d' "$gens" ;;
        test) ln -sfn "$(tail -n2 "$gens" | head -n1)" "$run" ;;
      esac ;;
    *)
      new="$dir/systems/active-$marker"
      if [ -f "$dir/systems/$marker.last" ]; then new=$(cat "$dir/systems/$marker.last"); fi
      mkdir -p "$new"
      case "$1" in switch|boot) echo "$new" >> "$gens" ;; esac
      case "$1" in switch|test) ln -sfn "$new" "$run" ;; esac ;;
  esac
fi
exit 0
"#;

pub struct Host {
    pub kit: Kit,
    pub key: String,
    pub pubkey: String,
}

impl Host {
    pub fn new() -> Host {
        Self::with(|_| {})
    }

    /// A host following remote `prod` of the kit's store; `edit` adjusts
    /// the config JSON.
    pub fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Host {
        let kit = Kit::new();
        let (key, pubkey) = kit.keygen("release");
        let fake = kit.path("bin/nixos-rebuild");
        fs::create_dir_all(fake.parent().expect("p")).expect("mkdir");
        fs::write(&fake, FAKE_REBUILD).expect("write");
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
        let pk = fs::read_to_string(&pubkey)
            .expect("pub")
            .lines()
            .nth(1)
            .expect("line")
            .to_owned();
        let mut cfg = serde_json::json!({
            "format": "npcnix-host-config/v1",
            "remote": {"url": kit.url("prod"), "name": "prod", "threshold": 1,
                       "region": null, "endpoint": null, "path_style": false},
            "configuration": "web",
            "trusted_keys": [{"public_key": pk, "remotes": ["prod"], "not_after": null, "comment": "test"}],
            "policy": {"min_version": 0, "expiry": "optional", "max_version_jump": null, "require_chain": false},
            "poll": {"interval_secs": 1, "jitter_secs": 0},
            "activation": {"mode": "switch", "extra_substituters": ["https://cache.example.org"],
                           "extra_trusted_public_keys": ["cache.example.org-1:abc="]},
            "health_check": null,
            "metrics_path": kit.path("metrics.prom"),
            "state_dir": kit.data_dir(),
            "limits": {"archive_bytes": null, "unpacked_bytes": null, "entries": null, "depth": null,
                       "path_bytes": null, "file_bytes": null, "zstd_window_log": null}
        });
        edit(&mut cfg);
        fs::write(
            kit.path("config.json"),
            serde_json::to_vec_pretty(&cfg).expect("json"),
        )
        .expect("write");
        Host { kit, key, pubkey }
    }

    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.kit.path("config.json")).expect("config"))
            .expect("json")
    }

    pub fn set_config(&self, v: &serde_json::Value) {
        fs::write(
            self.kit.path("config.json"),
            serde_json::to_vec_pretty(v).expect("json"),
        )
        .expect("write");
    }

    pub fn publish(&self, marker: &str) {
        let src = self.kit.flake(&format!("src-{marker}"), marker);
        self.kit.publish("prod", &self.key, &src, &[]).ok();
    }

    pub fn agent_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.kit.cmd();
        c.env("NPCNIX_NIXOS_REBUILD", self.kit.path("bin/nixos-rebuild"))
            .env("NPCNIX_CONFIG", self.kit.path("config.json"))
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let o = self.agent_cmd(args).output().expect("run");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// `follow --once --json`: returns the result label.
    pub fn once(&self) -> (String, Run) {
        let r = self.run(&["follow", "--once", "--json"]);
        let label = r
            .stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["result"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (label, r)
    }

    pub fn rebuild_log(&self) -> String {
        fs::read_to_string(self.kit.path("bin/rebuild.log")).unwrap_or_default()
    }

    pub fn activations(&self) -> Vec<String> {
        self.rebuild_log()
            .lines()
            .filter(|l| l.starts_with("start "))
            .map(str::to_owned)
            .collect()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.run(&["status", "--json"]).ok().stdout).expect("status json")
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.kit.data_dir().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line"))
            .collect()
    }

    pub fn flag(&self, name: &str, on: bool) {
        let p = self.kit.path("bin").join(name);
        if on {
            fs::write(p, "").expect("write");
        } else {
            let _ = fs::remove_file(p);
        }
    }
}
