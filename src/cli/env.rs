//! The environment variables npcnix reads, all in one place: the library
//! never reads the environment, the CLI passes these in.

use std::path::PathBuf;

use npcnix::host::activate::PROGRAM_ENV;
use npcnix::host::agent::{FaultPoint, Hooks};
use npcnix::nix::{Nix, NIX_BIN_DIR_ENV};

/// Test-only fault injection: `NPCNIX_TEST_FAULT=<point>` aborts the process
/// (like `kill -9`) at that point of a poll, to prove crash safety. Read only
/// in builds with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub const FAULT_ENV: &str = "NPCNIX_TEST_FAULT";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `NPCNIX_NIX_BIN_DIR`: where `nix`, `nix-store` and `nix-env` are.
pub fn nix() -> Nix {
    Nix::new(var(NIX_BIN_DIR_ENV).map(PathBuf::from))
}

/// `NPCNIX_NIXOS_REBUILD`: the activation program (tests, wrappers).
pub fn activation_program() -> Option<String> {
    var(PROGRAM_ENV)
}

/// `NPCNIX_TRUST_DIR`: where the agent records each remote's data dir, to
/// notice a move of `stateDir` (default `/var/lib/npcnix-trust` when running
/// as root; not recorded otherwise).
pub fn trust_dir() -> Option<PathBuf> {
    if let Some(d) = var("NPCNIX_TRUST_DIR") {
        return Some(PathBuf::from(d));
    }
    let root = npcnix::fsutil::current_uid().is_ok_and(|u| u == 0);
    root.then(|| PathBuf::from("/var/lib/npcnix-trust"))
}

/// The data directory when none is given (`--data-dir`, `NPCNIX_DATA_DIR`)
/// or configured (the host config's `state_dir`): `/var/lib/npcnix` for
/// root, the agent's place; for anyone else `$XDG_STATE_HOME/npcnix`, else
/// `$HOME/.local/state/npcnix` (the XDG base directory default), so `pull`
/// works as a normal user without touching the host's real state.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    let root = npcnix::fsutil::current_uid().is_ok_and(|u| u == 0);
    if root {
        return Ok(PathBuf::from(SYSTEM_DATA_DIR));
    }
    // XDG: a relative XDG_STATE_HOME is invalid and ignored.
    if let Some(d) = var("XDG_STATE_HOME").map(PathBuf::from) {
        if d.is_absolute() {
            return Ok(d.join("npcnix"));
        }
    }
    match var("HOME").map(PathBuf::from) {
        Some(h) if h.is_absolute() => Ok(h.join(".local/state/npcnix")),
        _ => anyhow::bail!(
            "no data directory: not running as root, and neither XDG_STATE_HOME nor HOME is an absolute path; pass --data-dir DIR or set NPCNIX_DATA_DIR"
        ),
    }
}

/// Root's data directory, the host config's default `state_dir`.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/npcnix";

/// `NPCNIX_READ_TIMEOUT_SECS`: network read time-out in seconds (default
/// 30; `--read-timeout` and the host config's `remote.read_timeout_secs`
/// are the documented ways, this overrides the config for the agent).
pub fn read_timeout() -> Option<u64> {
    var("NPCNIX_READ_TIMEOUT_SECS").and_then(|v| v.parse().ok())
}

/// `NPCNIX_PROGRESS`: `always` shows progress lines even when stderr is
/// not a terminal (tests, recordings), `never` hides them; anything else
/// (or unset): on a terminal only.
pub fn progress() -> Option<String> {
    var("NPCNIX_PROGRESS")
}

/// `NPCNIX_RETRIES` (read by clap for `--retries`): how often operator
/// commands retry a transient store error.
pub fn retries() -> Option<u32> {
    var("NPCNIX_RETRIES").and_then(|v| v.parse().ok())
}

/// The agent's hooks: warnings to stderr, and (test builds only, feature
/// `test-hooks`) the fault-injection points.
pub fn agent_hooks() -> Hooks {
    Hooks {
        warn: Box::new(|w| warn!("{w}")),
        fault: fault_hook(),
    }
}

#[cfg(feature = "test-hooks")]
fn fault_hook() -> Box<dyn Fn(FaultPoint) + Send + Sync> {
    let fault = var(FAULT_ENV);
    Box::new(move |p: FaultPoint| {
        if fault.as_deref() == Some(p.name()) {
            info!("injected fault at {}", p.name());
            std::process::abort();
        }
    })
}

#[cfg(not(feature = "test-hooks"))]
fn fault_hook() -> Box<dyn Fn(FaultPoint) + Send + Sync> {
    Box::new(|_| {})
}

/// The probation watchdog as the agent uses it: `NPCNIX_SYSTEMD_RUN` and
/// `NPCNIX_SYSTEMCTL` name stand-ins for `systemd-run` and `systemctl`
/// (tests, wrappers); PATH goes to the watchdog's rollback.
pub fn watchdog(
    kind: npcnix::host::config::WatchdogKind,
) -> npcnix::host::watchdog::SystemdWatchdog {
    npcnix::host::watchdog::SystemdWatchdog {
        kind,
        systemd_run: var("NPCNIX_SYSTEMD_RUN").unwrap_or_else(|| "systemd-run".into()),
        systemctl: var("NPCNIX_SYSTEMCTL").unwrap_or_else(|| "systemctl".into()),
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("npcnix")),
        path_env: search_path(),
    }
}

/// `PATH`: where the activation program is looked up (the probe) and what
/// the watchdog's rollback runs with.
pub fn search_path() -> Option<String> {
    var("PATH")
}

/// `/run`, holding `current-system` and `booted-system`; test builds
/// (feature `test-hooks`) read `NPCNIX_TEST_RUN_DIR` instead.
pub fn run_dir() -> PathBuf {
    test_var("NPCNIX_TEST_RUN_DIR").map_or_else(|| PathBuf::from("/run"), PathBuf::from)
}

/// The host's clocks; test builds (feature `test-hooks`) read
/// `NPCNIX_TEST_BOOT_ID` (to simulate a reboot).
pub fn clock() -> npcnix::host::clock::SystemClock {
    npcnix::host::clock::SystemClock::with_boot_id(test_var("NPCNIX_TEST_BOOT_ID"))
}

#[cfg(feature = "test-hooks")]
fn test_var(name: &str) -> Option<String> {
    var(name)
}

#[cfg(not(feature = "test-hooks"))]
fn test_var(_: &str) -> Option<String> {
    None
}

/// A host ID derived from `/etc/machine-id` (or `NPCNIX_TEST_MACHINE_ID` in
/// test builds): a keyed hash, so receipts in the store do not reveal the
/// machine ID itself.
pub fn machine_host_id() -> Option<String> {
    let id = test_var("NPCNIX_TEST_MACHINE_ID").or_else(|| {
        std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_owned())
    })?;
    if id.is_empty() {
        return None;
    }
    let d = blake3::derive_key("npcnix host id from machine-id v1", id.as_bytes());
    let hex: String = d[..10].iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("m-{hex}"))
}
