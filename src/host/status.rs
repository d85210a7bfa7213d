//! What `npcnix status` shows and what the Prometheus textfile exports,
//! derived from the durable state and the last poll's status.

use crate::host::config::Validated;
use crate::host::probation::Probation;
use crate::host::state::{BadRelease, HostState, PollStatus, Retry};

/// Status summary for `npcnix status`.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub remote: String,
    pub url: String,
    pub configuration: String,
    pub activation_mode: String,
    pub active_version: Option<u64>,
    pub active_statement: Option<String>,
    pub highest_verified_version: Option<u64>,
    pub last_check: Option<u64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// The check that refused the last poll's release, if any.
    pub last_refusal: Option<String>,
    pub next_poll: Option<u64>,
    pub extraction_confinement: Option<String>,
    /// Where the network side of the polls runs (privilege separation).
    pub fetcher: Option<String>,
    /// The last change of the trust root (remote, keys, threshold).
    pub trust_changed: Option<String>,
    pub paused_until: Option<u64>,
    pub pending_retry: Option<Retry>,
    pub bad_releases: Vec<BadRelease>,
    /// A release applied but not yet confirmed (lockout protection).
    pub probation: Option<ProbationReport>,
    /// This host's ID in rollout waves and receipts.
    pub host_id: String,
    /// The host's receipt-signing public key (`RW...`), once it has one.
    pub host_public_key: Option<String>,
    /// The last poll's release waits for this host's rollout slot.
    pub waiting: Option<WaitingReport>,
    /// The last poll's release waits at a gate of its rollout, or was
    /// halted before this host's turn (issue 35).
    pub rollout_gate: Option<crate::host::state::GateWait>,
    /// When the verified head (the release hosts are offered) expires.
    pub release_expires: Option<u64>,
    /// When the newest freshness timestamp accepted expires
    /// (`policy.freshness`).
    pub freshness_expires: Option<u64>,
    /// The last poll that ended well (nothing refused, failed or errored).
    pub last_success: Option<u64>,
    /// The last activation of a release.
    pub last_activation: Option<u64>,
    /// Refusals by check name (since the status file was started).
    pub refusals: std::collections::BTreeMap<String, u64>,
    /// Seconds the last archive download took.
    pub last_fetch_seconds: Option<f64>,
    /// Event hook runs that failed.
    pub hook_failures: u64,
    /// The host config's hold (issue 34).
    pub hold: Option<crate::host::config::HoldConfig>,
    /// With mirrors: the URL that answered the last poll.
    pub mirror: Option<String>,
}

/// The expiry times a host watches: the verified head's `expires` and the
/// newest accepted timestamp's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expiries {
    pub release: Option<u64>,
    pub freshness: Option<u64>,
    /// When that timestamp was signed (its lifetime sets when to warn).
    pub freshness_created: Option<u64>,
}

/// Reads them from the cached verified head and the timestamp record.
pub fn expiries(data: &crate::host::state::DataDir, remote: &str) -> Expiries {
    let release = data.load_head(remote).and_then(|h| {
        let b = crate::format::bundle::Bundle::decode(&h.bundle).ok()?;
        crate::format::statement::Statement::parse(&b.statement)
            .ok()?
            .expires
    });
    let ts = data.load_timestamp(remote).ok().flatten();
    Expiries {
        release,
        freshness: ts.map(|t| t.expires),
        freshness_created: ts.map(|t| t.created),
    }
}

#[derive(Debug, serde::Serialize)]
pub struct WaitingReport {
    pub version: u64,
    pub until: u64,
}

/// The probation part of the status.
#[derive(Debug, serde::Serialize)]
pub struct ProbationReport {
    pub version: u64,
    /// Rolled back if not confirmed by then; `null` while a `boot` release
    /// waits for the reboot that starts it.
    pub deadline: Option<u64>,
    /// What confirms it.
    pub awaiting: String,
    pub watchdog_unit: Option<String>,
}

pub fn status_report(
    v: &Validated,
    state: &HostState,
    poll: &PollStatus,
    probation: Option<&Probation>,
    expiry: Expiries,
    now: u64,
) -> StatusReport {
    let r = state.remote(v.remote.as_str()).cloned().unwrap_or_default();
    StatusReport {
        remote: v.remote.to_string(),
        url: v.config.remote.url.clone(),
        configuration: v.config.configuration.clone(),
        activation_mode: v.config.activation.mode.as_arg().to_owned(),
        active_version: r.active.map(|s| s.version),
        active_statement: r.active.map(|s| s.statement.to_hex()),
        highest_verified_version: r.highest.map(|s| s.version),
        last_check: poll.last_check,
        last_result: poll.last_result.clone(),
        last_error: poll.last_error.clone(),
        consecutive_failures: poll.consecutive_failures,
        last_refusal: poll.last_refusal.clone(),
        next_poll: poll.next_poll,
        extraction_confinement: poll.confinement.clone(),
        fetcher: poll.fetcher.clone(),
        trust_changed: poll.trust_changed.clone(),
        paused_until: r.paused_until.filter(|t| *t > now),
        pending_retry: r.retry.clone(),
        bad_releases: r.bad.clone(),
        host_id: v.host_id.clone(),
        host_public_key: None,
        waiting: poll
            .waiting
            .map(|(version, until)| WaitingReport { version, until }),
        rollout_gate: poll.gate.clone(),
        probation: probation.map(|p| ProbationReport {
            version: p.version,
            deadline: p.deadline,
            awaiting: if p.deadline.is_none() {
                "the next boot, then a successful poll".into()
            } else if v.config.health_check.is_some() {
                "a successful poll and a passing health check".into()
            } else {
                "a successful poll".into()
            },
            watchdog_unit: p.watchdog_unit.clone(),
        }),
        release_expires: expiry.release,
        freshness_expires: expiry.freshness,
        last_success: poll.last_success,
        last_activation: poll.last_activation,
        refusals: poll.refusals.clone(),
        last_fetch_seconds: poll.last_fetch_ms.map(|ms| ms as f64 / 1000.0),
        hook_failures: poll.hook_failures,
        hold: v.config.hold.clone(),
        mirror: poll.mirror.clone(),
    }
}

/// Prometheus textfile metrics (node_exporter textfile collector).
pub fn metrics_text(rep: &StatusReport) -> String {
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        m.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{remote=\"{}\"}} {value}\n",
            rep.remote
        ));
    };
    gauge(
        "npcnix_active_version",
        "Version currently activated.",
        rep.active_version.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_highest_verified_version",
        "Highest release version verified (rollback floor).",
        rep.highest_verified_version.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_last_check_timestamp_seconds",
        "Time of the last poll.",
        rep.last_check.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_last_success_timestamp_seconds",
        "Time of the last poll that ended well (0: none yet).",
        rep.last_success.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_last_activation_timestamp_seconds",
        "Time of the last activation of a release (0: none yet).",
        rep.last_activation.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_fetch_duration_seconds",
        "How long the last archive download took (0: none yet).",
        format!("{:.3}", rep.last_fetch_seconds.unwrap_or(0.0)),
    );
    gauge(
        "npcnix_consecutive_failures",
        "Polls in a row that failed or were rejected.",
        rep.consecutive_failures.to_string(),
    );
    gauge(
        "npcnix_refused",
        "1 if the last poll refused the remote's release.",
        u8::from(rep.last_refusal.is_some()).to_string(),
    );
    gauge(
        "npcnix_paused",
        "1 if updates are paused.",
        u8::from(rep.paused_until.is_some()).to_string(),
    );
    gauge(
        "npcnix_release_expiry_timestamp_seconds",
        "When the verified head release expires (0: it does not).",
        rep.release_expires.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_freshness_expiry_timestamp_seconds",
        "When the newest accepted freshness timestamp expires (0: none).",
        rep.freshness_expires.unwrap_or(0).to_string(),
    );
    gauge(
        "npcnix_probation_deadline_timestamp_seconds",
        "Deadline of the release on probation (0: none; rolled back unless confirmed by then).",
        rep.probation
            .as_ref()
            .map_or(0, |p| p.deadline.unwrap_or(0))
            .to_string(),
    );
    gauge(
        "npcnix_probation_version",
        "Version on probation (0: none).",
        rep.probation.as_ref().map_or(0, |p| p.version).to_string(),
    );
    gauge(
        "npcnix_hold_version",
        "The version this host is held at or below (0: no hold).",
        rep.hold.as_ref().map_or(0, |h| h.max_version).to_string(),
    );
    gauge(
        "npcnix_bad_releases",
        "Releases marked bad.",
        rep.bad_releases.len().to_string(),
    );
    let remote = &rep.remote;
    m.push_str(
        "# HELP npcnix_refusals_total Releases refused, by the check that refused them.\n# TYPE npcnix_refusals_total counter\n",
    );
    for (check, n) in &rep.refusals {
        m.push_str(&format!(
            "npcnix_refusals_total{{remote=\"{remote}\",check=\"{check}\"}} {n}\n"
        ));
    }
    m.push_str(&format!(
        "# HELP npcnix_hook_failures_total Event hook runs that failed (exit status, time-out).\n# TYPE npcnix_hook_failures_total counter\nnpcnix_hook_failures_total{{remote=\"{remote}\"}} {}\n",
        rep.hook_failures
    ));
    m.push_str(&format!(
        "# HELP npcnix_build_info The running npcnix: version and commit.\n# TYPE npcnix_build_info gauge\nnpcnix_build_info{{remote=\"{remote}\",version=\"{}\",commit=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION"),
        env!("NPCNIX_GIT_COMMIT")
    ));
    m
}
