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

/// Runs `hook` for `fired` within `limit` (its time-out, or less when the
/// poll's hook budget is nearly spent), or until `stop` says the agent is
/// stopping: the environment is only what it needs (no credentials of the
/// agent's) and says what happened; stdin is empty, its stdout and stderr
/// go to the agent's stderr (the log, never the `--json` stream). Its
/// process group is killed when it ends, finishes or not.
pub fn run(
    hook: &HookConfig,
    fired: &Fired,
    remote: &str,
    host_id: &str,
    limit: Duration,
    stop: &dyn Fn() -> bool,
) -> HookResult {
    let Some((program, args)) = hook.command.split_first() else {
        return HookResult::Failed("empty command".into());
    };
    let mut c = Command::new(program);
    c.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .process_group(0);
    for k in ["PATH", "LANG", "LC_ALL", "TZ"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    c.env("NPCNIX_EVENT", fired.event.name())
        .env("NPCNIX_REMOTE", remote)
        .env("NPCNIX_HOST_ID", host_id)
        .env("NPCNIX_TIME", fired.time.to_string());
    for (k, v) in [
        ("NPCNIX_VERSION", fired.version.map(|v| v.to_string())),
        ("NPCNIX_STATEMENT", fired.statement.clone()),
        ("NPCNIX_CHECK", fired.check.clone()),
        (
            "NPCNIX_DETAIL",
            // Store-chosen text: escaped (a NUL would fail the spawn and
            // silence the notification; a terminal escape reaches mail).
            fired
                .detail
                .as_deref()
                .map(|d| crate::format::text::visible(&crate::host::journal::clip(d, 1024))),
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
    let pgid = rustix::process::Pid::from_raw(child.id() as i32);
    let end = |child: &mut std::process::Child| {
        // Whatever the hook left running goes with it.
        if let Some(pgid) = pgid {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let deadline = Instant::now() + limit;
    loop {
        // Whether it exited, without reaping it: its pid (the group's id)
        // stays taken until the group is killed and it is reaped.
        let exited = pgid.map(|p| {
            use rustix::process::{waitid, WaitId, WaitIdOptions};
            waitid(
                WaitId::Pid(p),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
            )
            .map(|s| s.is_some())
        });
        match exited.map(|r| r.map_err(std::io::Error::from)) {
            Some(Ok(true)) => {
                if let Some(pgid) = pgid {
                    let _ =
                        rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                }
                return match child.wait() {
                    Ok(st) if st.success() => HookResult::Ok,
                    Ok(st) => HookResult::Failed(format!("{program} exited with {st}")),
                    Err(e) => HookResult::Failed(format!("waiting for {program}: {e}")),
                };
            }
            Some(Err(e)) => {
                end(&mut child);
                return HookResult::Failed(format!("waiting for {program}: {e}"));
            }
            _ => {}
        }
        if stop() {
            end(&mut child);
            return HookResult::Failed(format!("{program} was killed: the agent is stopping"));
        }
        if Instant::now() >= deadline {
            end(&mut child);
            return HookResult::Failed(format!(
                "{program} did not finish within {} s and was killed",
                limit.as_millis().div_ceil(1000)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
