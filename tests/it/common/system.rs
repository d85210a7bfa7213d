//! Stand-ins for the systemd boundary the agent crosses for lockout
//! protection: `systemd-run` (the probation watchdog's transient timer) and
//! `systemctl` (disarming it, rebooting). Selected by `NPCNIX_SYSTEMD_RUN`
//! and `NPCNIX_SYSTEMCTL`, set for every command of a kit (no test ever
//! reaches the real systemd).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Records its arguments in `systemd.log`, then runs the command in the
/// background after `--on-active` seconds, as the timer would (output to
/// `watchdog.out`). Fails when the file `systemd-run-fails` exists.
const SYSTEMD_RUN: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "systemd-run $*" >> "$dir/systemd.log"
unit=""; secs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --unit=*) unit="${1#--unit=}";;
    --on-active=*) secs="${1#--on-active=}"; secs="${secs%s}";;
    --*) ;;
    *) break;;
  esac
  shift
done
if [ -f "$dir/systemd-run-fails" ]; then echo "Failed to start transient timer unit" >&2; exit 1; fi
# Its own session and process group, so disarming (and the test's end)
# kills the sleep too, not just the shell around it.
setsid sh -c 'sleep "$0"; echo "fired $1" >> "$2/systemd.log"; shift 2; exec "$@"' \
  "$secs" "$unit" "$dir" "$@" </dev/null >>"$dir/watchdog.out" 2>&1 &
echo $! > "$dir/$unit.pid"
exit 0
"#;

/// `stop UNIT.timer` kills the pending timer; `reboot` is recorded.
const SYSTEMCTL: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "systemctl $*" >> "$dir/systemd.log"
if [ "$1" = stop ]; then
  unit="${2%.timer}"
  if [ -f "$dir/$unit.pid" ]; then kill -- "-$(cat "$dir/$unit.pid")" 2>/dev/null; rm -f "$dir/$unit.pid"; fi
fi
exit 0
"#;

/// Writes the stand-ins into `<kit>/sys` (once) and returns that dir.
pub fn install(kit: &Path) -> PathBuf {
    let dir = kit.join("sys");
    if !dir.join("systemctl").exists() {
        fs::create_dir_all(&dir).expect("mkdir sys");
        for (name, text) in [("systemd-run", SYSTEMD_RUN), ("systemctl", SYSTEMCTL)] {
            let p = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            fs::write(&tmp, text).expect("write stand-in");
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod");
            fs::rename(&tmp, &p).expect("rename");
        }
        fs::create_dir_all(kit.join("run")).expect("mkdir run");
    }
    dir
}

/// The stand-ins' log (`systemd-run ...`, `systemctl ...`, `fired UNIT`).
pub fn log(kit: &Path) -> String {
    fs::read_to_string(kit.join("sys/systemd.log")).unwrap_or_default()
}

/// Kills the timers still pending in a kit (its end): no test leaves a
/// sleeping watchdog behind.
pub fn kill_pending(kit: &Path) {
    let Ok(rd) = fs::read_dir(kit.join("sys")) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "pid") {
            if let Ok(pid) = fs::read_to_string(&p) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", pid.trim())])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}
