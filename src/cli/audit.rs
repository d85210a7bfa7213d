//! `npcnix audit`: the host's audit log checked against the store's log.

use std::collections::BTreeMap;

use anyhow::Result;

use npcnix::fsutil;
use npcnix::host::journal;
use npcnix::store::ReleaseLog;
use npcnix::verify;

use super::common;
use super::env;
use super::exit::Unverified;

#[derive(clap::Args)]
#[command(
    about = "Check this host's audit log against the store's signed version log",
    long_about = "Check this host's audit log against the store's version log: every release the \
host verified or activated must be exactly the release recorded as releases/<version> in the store, \
validly signed for this remote. A mismatch is evidence of a fork or equivocation (the host was shown a \
release the public log does not contain) and exits 3.\n\nExample:\n  npcnix audit --config /etc/npcnix/config.json"
)]
pub struct Args {
    #[command(flatten)]
    cfg: common::ConfigArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let v = a.cfg.load()?;
    let data = a.cfg.data(&v)?;
    let r = &v.config.remote;
    let store = super::common::open_observed(
        &r.url,
        r.store_options(env::read_timeout()),
        super::common::env_retries(),
    )?;
    let log = ReleaseLog::new(store.as_ref());
    // version -> statement hashes the host recorded for it.
    let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut malformed = Vec::new();
    for line in journal::read(&data.audit_path())? {
        match line {
            Ok(ev)
                if ev.remote == v.remote.as_str()
                    && matches!(ev.event.as_str(), "verified" | "activated") =>
            {
                if let (Some(ver), Some(h)) = (ev.version, ev.statement) {
                    let list = seen.entry(ver).or_default();
                    if !list.contains(&h) {
                        list.push(h);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => malformed.push(e),
        }
    }
    let now = fsutil::now_unix();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (ver, hashes) in &seen {
        let logged = match log.release(*ver) {
            Ok(Some(bytes)) => match verify::verify_signatures(&v.policy, &bytes, now) {
                Ok(rel) => Some(rel.statement_hash().to_hex()),
                Err(rej) => {
                    problems.push(format!(
                        "version {ver}: the store's release does not verify ({rej})"
                    ));
                    continue;
                }
            },
            Ok(None) => None,
            Err(e) => return Err(e.into()),
        };
        checked += 1;
        for h in hashes {
            match &logged {
                Some(l) if l == h => {}
                Some(l) => problems.push(format!(
                    "version {ver}: this host verified statement {h}, but the store's log holds {l} (fork or equivocation)"
                )),
                None => problems.push(format!(
                    "version {ver}: this host verified statement {h}, which is missing from the store's log"
                )),
            }
        }
    }
    for m in &malformed {
        problems.push(format!("audit log: {m}"));
    }
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": v.remote.as_str(),
            "versions_checked": checked,
            "ok": problems.is_empty(),
            "problems": problems,
        }));
    } else if problems.is_empty() {
        outln!("OK: all {checked} version(s) this host verified match the store's signed log");
    } else {
        for p in &problems {
            outln!("MISMATCH: {p}");
        }
    }
    if let Some(p) = problems.first() {
        return Err(Unverified(format!("audit failed: {p}")).into());
    }
    Ok(())
}
