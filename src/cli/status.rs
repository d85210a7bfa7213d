//! `npcnix status`.

use anyhow::Result;

use npcnix::format::text::visible;
use npcnix::format::time::rfc3339;
use npcnix::fsutil;

use super::common;

#[derive(clap::Args)]
#[command(
    about = "Show this host's state: versions, last poll, errors, bad releases",
    long_about = "Summarise this host: remote, configuration, active and highest verified \
versions, the last poll and its result, the last error, pause state, a pending retry, and releases \
marked bad (with why). --json for scripts and monitoring.\n\nExample:\n  npcnix status --json"
)]
pub struct Args {
    #[command(flatten)]
    cfg: common::ConfigArgs,
    /// Print as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let v = a.cfg.load()?;
    let data = a.cfg.data(&v)?;
    let state = data.load()?;
    let now = fsutil::now_unix();
    let probation = npcnix::host::probation::load(&data, v.remote.as_str())?;
    let mut rep = npcnix::host::status::status_report(
        &v,
        &state,
        &data.load_status(),
        probation.as_ref(),
        npcnix::host::status::expiries(&data, v.remote.as_str()),
        now,
    );
    rep.host_public_key = npcnix::host::receipts::host_public_key(&data).map(|k| k.to_base64());
    if a.json {
        common::print_json(&serde_json::to_value(&rep)?);
        return Ok(());
    }
    let opt = |x: Option<u64>| x.map_or("-".to_owned(), |n| n.to_string());
    outln!("remote:            {} ({})", rep.remote, rep.url);
    outln!(
        "configuration:     {} ({})",
        rep.configuration,
        rep.activation_mode
    );
    outln!("active version:    {}", opt(rep.active_version));
    outln!("highest verified:  {}", opt(rep.highest_verified_version));
    outln!(
        "last check:        {}{}",
        rep.last_check.map_or("never".to_owned(), rfc3339),
        rep.last_result
            .as_deref()
            .map(|r| format!(" — {}", visible(r)))
            .unwrap_or_default()
    );
    if let Some(e) = &rep.last_error {
        outln!(
            "last error:        {} ({} failure(s) in a row)",
            visible(e),
            rep.consecutive_failures
        );
    }
    if let Some(n) = rep.next_poll {
        outln!("next poll:         {}", rfc3339(n));
    }
    if let Some(c) = &rep.extraction_confinement {
        outln!("extraction:        {c}");
    }
    if let Some(m) = &rep.mirror {
        outln!(
            "mirror:            {} (answered the last poll)",
            npcnix::format::text::visible(m)
        );
    }
    if let Some(f) = &rep.fetcher {
        outln!("fetching:          {f}");
    }
    if let Some(t) = &rep.trust_changed {
        outln!("trust changed:     {}", visible(t));
    }
    if let Some(w) = &rep.waiting {
        outln!(
            "rollout:           version {} verified, waiting for this host's slot until {}",
            w.version,
            rfc3339(w.until)
        );
    }
    if let Some(g) = &rep.rollout_gate {
        match (&g.stage, g.halted_at) {
            (Some(stage), _) => outln!(
                "rollout:           version {} verified, this host is in gated stage {}: waiting for its signed promotion",
                g.version,
                visible(stage)
            ),
            (None, Some(at)) => outln!(
                "rollout:           version {} verified, its rollout was halted at {} before this host's turn",
                g.version,
                rfc3339(at)
            ),
            _ => {}
        }
    }
    if !rep.host_id.is_empty() {
        outln!(
            "host:              {}{}",
            rep.host_id,
            rep.host_public_key
                .as_deref()
                .map(|k| format!(" (receipt key {k})"))
                .unwrap_or_default()
        );
    }
    if let Some(p) = &rep.probation {
        match p.deadline {
            Some(d) => outln!(
                "probation:         version {} until {} (awaiting {}; rolled back if not confirmed)",
                p.version,
                rfc3339(d),
                p.awaiting
            ),
            None => outln!(
                "probation:         version {} (awaiting {})",
                p.version, p.awaiting
            ),
        }
    }
    if let Some(h) = &rep.hold {
        let above = rep.active_version.is_some_and(|v| v > h.max_version);
        outln!(
            "hold:              at version {} or below ({}){}",
            h.max_version,
            npcnix::format::text::visible(&h.reason),
            if above {
                "; this host already runs a newer version (a hold never downgrades)"
            } else {
                ""
            }
        );
    }
    match rep.paused_until {
        Some(u64::MAX) => outln!("paused:            yes, until `npcnix unpause`"),
        Some(t) => outln!("paused:            until {}", rfc3339(t)),
        None => outln!("paused:            no"),
    }
    if let Some(r) = &rep.pending_retry {
        outln!(
            "pending retry:     version {} (attempt {} at {})",
            r.version,
            r.attempts + 1,
            rfc3339(r.next_at)
        );
    }
    for b in &rep.bad_releases {
        outln!(
            "bad release:       version {} ({}): {}",
            b.version,
            rfc3339(b.at),
            visible(&b.reason)
        );
    }
    Ok(())
}
