//! Gated rollouts from the operator's side (issue 35): which hosts are in
//! which stage of a release's wave, whether the earlier stages' receipts
//! justify promoting the next one, and the signed promotion or halt. The
//! CLI (`npcnix release promote` / `halt`) reads the store and the keys and
//! prints; the judgement is here, pure.

use crate::format::decision::{self, Action, Decision, Evidence, DECISION_TYPE};
use crate::format::digest::Digest;
use crate::format::keys::SecretKey;
use crate::format::remote::RemoteName;
use crate::format::rollout::Rollout;

use super::fleet::Row;

/// The stage a host is in: 0 for the hosts before the first gate, `i + 1`
/// for the hosts behind gate `i`.
pub fn stage_index(plan: &Rollout, remote: &str, version: u64, host_id: &str) -> usize {
    plan.gate_of(Rollout::position(remote, version, host_id))
        .map_or(0, |i| i + 1)
}

/// How one host of the earlier stages stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostStanding {
    pub host: String,
    pub stage: usize,
    /// Runs the release, off probation, with a verified receipt.
    pub confirmed: bool,
    /// Marked the release bad (rolled it back).
    pub rolled_back: bool,
    /// Why it does not count as confirmed.
    pub why: Option<String>,
}

/// What the receipts of the stages before a gate say.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Assessment {
    pub stage: String,
    pub hosts: Vec<HostStanding>,
    /// Receipts that did not count (unpinned hosts when only pinned ones
    /// count).
    pub not_counted: Vec<String>,
    pub evidence: Evidence,
    pub max_rolled_back: u64,
    pub passes: bool,
}

/// Whether `rows` (a verified fleet survey) justify opening the gate of
/// `stage`: of the hosts in the stages before it, at least
/// `required_percent` confirmed the release (`version`, exactly
/// `statement`) and at most `max_rolled_back` rolled it back. A host counts
/// only with a verified, fresh receipt (`ok`, or `unpinned` when
/// `count_unpinned`); a missing, stale, replayed or forged one counts as not
/// confirmed. None of those hosts at all is no evidence: it does not pass.
#[allow(clippy::too_many_arguments)]
pub fn assess(
    rows: &[Row],
    plan: &Rollout,
    remote: &str,
    version: u64,
    statement: Digest,
    stage: &str,
    required_percent: u32,
    max_rolled_back: u64,
    count_unpinned: bool,
) -> Option<Assessment> {
    let gate = plan.gates.iter().position(|g| g.stage == stage)?;
    let mut hosts = Vec::new();
    let mut not_counted = Vec::new();
    for r in rows {
        if !crate::format::rollout::is_host_id(&r.host) {
            continue;
        }
        let s = stage_index(plan, remote, version, &r.host);
        if s > gate {
            continue;
        }
        // Without --count-unpinned, a host without a pinned key does not
        // count either way: anyone with store access can invent one, with
        // a good or a junk receipt.
        if !r.pinned && !count_unpinned {
            not_counted.push(r.host.clone());
            continue;
        }
        let usable = matches!(r.verdict, "ok" | "unpinned");
        let rolled_back = usable && r.bad.contains(&version);
        let runs = usable
            && r.active_version == Some(version)
            && r.active_statement.as_deref() == Some(statement.to_hex().as_str());
        let on_probation = r.probation == Some(version);
        let why = if !usable {
            Some(format!(
                "receipt {}{}",
                r.verdict,
                r.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ))
        } else if rolled_back {
            Some(format!("rolled version {version} back (marked bad)"))
        } else if !runs {
            Some(match (r.active_version, &r.result, &r.check) {
                (Some(v), Some(res), Some(c)) => format!("runs v{v}; last result {res} ({c})"),
                (Some(v), Some(res), None) => format!("runs v{v}; last result {res}"),
                (None, Some(res), _) => format!("runs nothing; last result {res}"),
                _ => "does not run it".into(),
            })
        } else if on_probation {
            Some(format!("runs version {version}, still on probation"))
        } else {
            None
        };
        hosts.push(HostStanding {
            host: r.host.clone(),
            stage: s,
            confirmed: why.is_none(),
            rolled_back,
            why,
        });
    }
    let n = hosts.len() as u64;
    let confirmed = hosts.iter().filter(|h| h.confirmed).count() as u64;
    let rolled_back = hosts.iter().filter(|h| h.rolled_back).count() as u64;
    let passes = n > 0
        && confirmed * 100 >= u64::from(required_percent) * n
        && rolled_back <= max_rolled_back;
    Some(Assessment {
        stage: stage.to_owned(),
        hosts,
        not_counted,
        evidence: Evidence {
            hosts: n,
            confirmed,
            rolled_back,
            required_percent,
        },
        max_rolled_back,
        passes,
    })
}

/// A promotion of `stage` (with its evidence) or, with `stage = None`, a
/// halt, for exactly the release `(version, statement)` of `remote`.
pub fn decision(
    remote: RemoteName,
    version: u64,
    statement: Digest,
    stage: Option<&str>,
    evidence: Option<Evidence>,
    reason: Option<String>,
    now: u64,
) -> Decision {
    Decision {
        kind: DECISION_TYPE.into(),
        remote,
        version,
        statement,
        action: if stage.is_some() {
            Action::Promote
        } else {
            Action::Halt
        },
        stage: stage.map(str::to_owned),
        created: now,
        evidence,
        reason,
    }
}

/// The envelope of `d` signed by every key in `keys`.
pub fn sign(d: &Decision, keys: &[SecretKey]) -> Vec<u8> {
    let bytes = d.to_bytes();
    let sigs: Vec<String> = keys
        .iter()
        .map(|k| {
            crate::format::sign::sign_minisign(
                k,
                &bytes,
                &decision::trusted_comment(&bytes, k.public_key().key_id),
            )
        })
        .collect();
    decision::encode(&bytes, &sigs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::rollout::Gate;

    fn plan() -> Rollout {
        Rollout {
            points: vec![(0, 30), (60, 100)],
            gates: vec![
                Gate {
                    stage: "two".into(),
                    percent: 30,
                },
                Gate {
                    stage: "three".into(),
                    percent: 60,
                },
            ],
        }
    }

    fn row(host: &str, verdict: &'static str, active: Option<u64>, st: Digest) -> Row {
        Row {
            host: host.into(),
            verdict,
            pinned: verdict == "ok",
            key_id: None,
            configuration: Some("web".into()),
            active_version: active,
            active_statement: active.map(|_| st.to_hex()),
            result: Some("up-to-date".into()),
            check: None,
            waiting_until: None,
            probation: None,
            hold: None,
            mirror: None,
            bad: Vec::new(),
            log: None,
            time: Some(1),
            age_secs: Some(1),
            seq: Some(1),
            detail: None,
        }
    }

    /// Host IDs of stage 0 (before the first gate) for version 5.
    fn first_stage(n: usize) -> Vec<String> {
        (0..200)
            .map(|i| format!("h{i}"))
            .filter(|h| stage_index(&plan(), "prod", 5, h) == 0)
            .take(n)
            .collect()
    }

    #[test]
    fn promotion_needs_enough_confirmed_hosts_of_the_earlier_stages() {
        let st = Digest::of(b"st");
        let hosts = first_stage(4);
        let mut rows: Vec<Row> = hosts.iter().map(|h| row(h, "ok", Some(5), st)).collect();
        let a = assess(&rows, &plan(), "prod", 5, st, "two", 100, 0, false).expect("gate");
        assert!(a.passes, "{a:?}");
        assert_eq!(a.evidence.confirmed, 4);
        // One on probation, one on another statement, one rolled back.
        rows[0].probation = Some(5);
        rows[1].active_statement = Some(Digest::of(b"fork").to_hex());
        rows[2].active_version = Some(4);
        rows[2].bad = vec![5];
        let a = assess(&rows, &plan(), "prod", 5, st, "two", 25, 1, false).expect("gate");
        assert!(
            a.passes,
            "1 of 4 confirmed is 25 %, one rollback allowed: {a:?}"
        );
        let a = assess(&rows, &plan(), "prod", 5, st, "two", 25, 0, false).expect("gate");
        assert!(!a.passes, "a rollback over the threshold blocks it");
        let failing: Vec<_> = a.hosts.iter().filter(|h| !h.confirmed).collect();
        assert_eq!(failing.len(), 3);
        assert!(failing.iter().all(|h| h.why.is_some()));
    }

    #[test]
    fn receipts_forged_or_unpinned_do_not_count_as_confirmed() {
        let st = Digest::of(b"st");
        let hosts = first_stage(3);
        let mut rows = vec![
            // A pinned host whose receipt is forged: counted, not confirmed.
            row(&hosts[0], "bad-signature", Some(5), st),
            row(&hosts[1], "unpinned", Some(5), st),
            // Junk planted under a new host ID: not counted at all.
            row(&hosts[2], "bad-signature", None, st),
        ];
        rows[0].pinned = true;
        let a = assess(&rows, &plan(), "prod", 5, st, "two", 50, 0, false).expect("gate");
        assert!(!a.passes);
        assert_eq!(a.not_counted, vec![hosts[1].clone(), hosts[2].clone()]);
        assert_eq!(a.evidence.hosts, 1);
        let a = assess(&rows, &plan(), "prod", 5, st, "two", 30, 0, true).expect("gate");
        assert!(a.passes, "counting unpinned hosts on request: {a:?}");
        // No host in the earlier stages: no evidence, no promotion.
        let a = assess(&[], &plan(), "prod", 5, st, "two", 0, 0, false).expect("gate");
        assert!(!a.passes);
        assert!(assess(&rows, &plan(), "prod", 5, st, "nope", 0, 0, true).is_none());
    }
}
