//! `npcnix pause` / `npcnix unpause`.

use anyhow::Result;

use npcnix::format::time::rfc3339;
use npcnix::fsutil;
use npcnix::host::journal::{self, AuditEvent};

use super::common;

#[derive(clap::Args)]
#[command(
    about = "Stop applying releases on this host (optionally for a while)",
    long_about = "Stop applying new releases on this host (the agent keeps running and reports \
`paused`). Without --for, until `npcnix unpause`. Recorded in the audit log.\n\nExample:\n  npcnix pause --for 2h"
)]
pub struct PauseArgs {
    #[command(flatten)]
    cfg: common::ConfigArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    /// Pause for this long only, e.g. 2h
    #[arg(long = "for", value_name = "DURATION", value_parser = common::duration_secs)]
    duration: Option<u64>,
}

#[derive(clap::Args)]
#[command(
    about = "Resume applying releases",
    long_about = "Resume applying releases on this host after `npcnix pause` (also ends a pause \
--for early). The agent applies the latest release at its next poll. Recorded in the audit log.\n\n\
Example:\n  npcnix unpause"
)]
pub struct UnpauseArgs {
    #[command(flatten)]
    cfg: common::ConfigArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

fn set(cfg: &common::ConfigArgs, until: Option<u64>, json: bool) -> Result<()> {
    let v = cfg.load()?;
    let data = cfg.data(&v)?;
    let _lock = data.lock_wait()?;
    let mut st = data.load()?;
    st.remote_mut(v.remote.as_str()).paused_until = until;
    data.save(&st)?;
    let now = fsutil::now_unix();
    let mut ev = AuditEvent::new(
        now,
        if until.is_some() {
            "paused"
        } else {
            "unpaused"
        },
        v.remote.as_str(),
    );
    ev.detail = until.map(|u| {
        if u == u64::MAX {
            "until unpaused".to_owned()
        } else {
            format!("until {}", rfc3339(u))
        }
    });
    journal::append(&data.audit_path(), &ev)?;
    if json {
        common::print_json(&serde_json::json!({
            "remote": v.remote.as_str(),
            "paused": until.is_some(),
            // null: until `npcnix unpause` (or not paused).
            "until": until.filter(|u| *u != u64::MAX),
        }));
        return Ok(());
    }
    match until {
        Some(u64::MAX) => outln!("paused until `npcnix unpause`"),
        Some(t) => outln!("paused until {}", rfc3339(t)),
        None => outln!("unpaused"),
    }
    Ok(())
}

pub fn pause(a: PauseArgs) -> Result<()> {
    let until = match &a.duration {
        Some(d) => fsutil::now_unix().saturating_add(*d),
        None => u64::MAX,
    };
    set(&a.cfg, Some(until), a.json)
}

pub fn unpause(a: UnpauseArgs) -> Result<()> {
    set(&a.cfg, None, a.json)
}
