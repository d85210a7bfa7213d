//! Event hooks (issue 33): programs the host config names, run after the
//! agent has recorded a decision (audit log, status, receipt), with
//! `NPCNIX_*` variables describing it. They notify; they cannot change
//! anything: their exit status is logged and counted, never acted on, and
//! each is killed with its process group at its time-out.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::config::{HookConfig, HookEvent};
use crate::host::journal::AuditEvent;

/// One event for the hooks, with what the audit log says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    pub event: HookEvent,
    pub time: u64,
    pub version: Option<u64>,
    pub statement: Option<String>,
    pub check: Option<String>,
    pub detail: Option<String>,
}

impl Fired {
    pub fn of(event: HookEvent, ev: &AuditEvent) -> Fired {
        Fired {
            event,
            time: ev.time,
            version: ev.version,
            statement: ev.statement.clone(),
            check: ev.check.clone(),
            detail: ev.detail.clone(),
        }
    }
}

/// How one hook run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum HookResult {
    Ok,
    Failed(String),
}

/// Runs `hook` for `fired`: the environment says what happened; stdin is
/// empty, stdout and stderr go to the agent's (the log); killed with its
/// process group after `timeout_secs`.
pub fn run(hook: &HookConfig, fired: &Fired, remote: &str, host_id: &str) -> HookResult {
    let Some((program, args)) = hook.command.split_first() else {
        return HookResult::Failed("empty command".into());
    };
    let mut c = Command::new(program);
    c.args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .env("NPCNIX_EVENT", fired.event.name())
        .env("NPCNIX_REMOTE", remote)
        .env("NPCNIX_HOST_ID", host_id)
        .env("NPCNIX_TIME", fired.time.to_string());
    for (k, v) in [
        ("NPCNIX_VERSION", fired.version.map(|v| v.to_string())),
        ("NPCNIX_STATEMENT", fired.statement.clone()),
        ("NPCNIX_CHECK", fired.check.clone()),
        (
            "NPCNIX_DETAIL",
            fired
                .detail
                .as_deref()
                .map(|d| crate::host::journal::clip(d, 1024)),
        ),
    ] {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => return HookResult::Failed(format!("cannot start {program}: {e}")),
    };
    let deadline = Instant::now() + Duration::from_secs(hook.timeout_secs);
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return HookResult::Ok,
            Ok(Some(st)) => return HookResult::Failed(format!("{program} exited with {st}")),
            Ok(None) if Instant::now() >= deadline => {
                if let Some(pgid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ =
                        rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return HookResult::Failed(format!(
                    "{program} did not finish within {} s and was killed",
                    hook.timeout_secs
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return HookResult::Failed(format!("waiting for {program}: {e}")),
        }
    }
}
