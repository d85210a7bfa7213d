//! `npcnix audit`: the host's audit log checked against the store's log.

use anyhow::Result;

use npcnix::fsutil;

use super::common;
use super::env;
use super::exit::Unverified;

#[derive(clap::Args)]
#[command(
    about = "Check this host's audit log against the store's signed version log",
    long_about = "Check this host's audit log against the store's version log: every release the \
host verified or activated must be exactly the release recorded as releases/<version> in the store \
(the same statement: its hash is what the host recorded when it verified it). A store that holds \
another statement for a version is classified with today's keys and every key the host pinned \
before (a fork signed by trusted keys, or a release that does not verify). A mismatch is evidence of a fork or equivocation (the host was shown a \
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
    // Today's keys join the history the agent keeps.
    let _ = npcnix::host::trust::remember_keys(&data, &v);
    let report = npcnix::host::audit::audit(&store, &data, &v, fsutil::now_unix())?;
    let checked = report.versions_checked;
    let problems = report.problems;
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": v.remote.as_str(),
            "versions_checked": checked,
            "ok": problems.is_empty(),
            "problems": problems,
        }));
    } else if problems.is_empty() {
        outln!("OK: all {checked} version(s) this host verified are the statements the store's log holds");
    } else {
        for p in &problems {
            outln!("MISMATCH: {}", npcnix::format::text::visible(p));
        }
    }
    if let Some(p) = problems.first() {
        return Err(Unverified(format!("audit failed: {p}")).into());
    }
    Ok(())
}
