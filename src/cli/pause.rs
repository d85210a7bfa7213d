//! `npcnix pause` / `npcnix unpause`.

use anyhow::Result;

use npcnix::format::time::rfc3339;
use npcnix::fsutil;
use npcnix::host::journal::{self, AuditEvent};

use super::common;

#[derive(clap::Args)]
#[command(
    long_about = "Stop applying new releases on this host (the agent keeps running and reports \
`paused`). Without --for, until `npcnix unpause`. Recorded in the audit log."
)]
pub struct PauseArgs {
    #[command(flatten)]
    cfg: common::ConfigArgs,
    /// Pause for this long only, e.g. 2h
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
}

#[derive(clap::Args)]
pub struct UnpauseArgs {
    #[command(flatten)]
    cfg: common::ConfigArgs,
}

fn set(cfg: &common::ConfigArgs, until: Option<u64>) -> Result<()> {
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
    match until {
        Some(u64::MAX) => println!("paused until `npcnix unpause`"),
        Some(t) => println!("paused until {}", rfc3339(t)),
        None => println!("unpaused"),
    }
    Ok(())
}

pub fn pause(a: PauseArgs) -> Result<()> {
    let until = match &a.duration {
        Some(d) => fsutil::now_unix() + common::parse_duration(d)?,
        None => u64::MAX,
    };
    set(&a.cfg, Some(until))
}

pub fn unpause(a: UnpauseArgs) -> Result<()> {
    set(&a.cfg, None)
}
