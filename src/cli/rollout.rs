//! `npcnix release promote` and `npcnix release halt`: the signed decisions
//! of a gated rollout (issue 35). The judgement is
//! [`npcnix::publish::rollout`]; this reads the release and the receipts,
//! signs and writes.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use npcnix::format::decision;
use npcnix::format::keys::SecretKey;
use npcnix::format::remote::RemoteName;
use npcnix::format::text::visible;
use npcnix::format::time::rfc3339;
use npcnix::fsutil;
use npcnix::publish::rollout as plan;
use npcnix::store::{Object, Remote};
use npcnix::verify::decision::{Expected, RolloutTrust};
use npcnix::verify::{KeyScope, TrustedKey, VerifiedRelease};

use super::common;
use super::exit::Unverified;

#[derive(clap::Args)]
#[command(
    about = "Open a gated stage of a release's rollout, if the earlier stages confirmed it",
    long_about = "Sign a promotion that opens the gated stage STAGE of version N's rollout wave \
(publish --gate). First the release is verified at the remote's threshold (--policy, --host-config \
or --trusted-key, as for publish) and every host's receipt is read and verified as `fleet status` \
does. Of the hosts in the stages before STAGE, at least --require of them must run exactly version N \
with its probation confirmed (not merely activated), and at most --max-rolled-back may have rolled it \
back; a host with a missing, stale, replayed or forged receipt counts as not confirmed. Only hosts \
with a pinned key (--host-keys) count, unless --count-unpinned. Otherwise nothing is signed, the \
failing hosts are named and the exit code is 1.\n\nThe promotion is signed by the --key(s) (role \
\"rollout\" in the hosts' trusted_keys, policy.rollout.threshold of them) and written to \
<remote>/rollouts/<N>/promote-<STAGE>.json; each host behind the gate verifies it before opening. \
The stages before STAGE must be promoted first; a halted release is not promoted.\n\nExample:\n  \
npcnix release promote --remote s3://fleet/npcnix/prod --version 42 --stage early --require 95% \
--key rollout.key --policy npcnix-policy.json --host-keys hosts.txt"
)]
pub struct PromoteArgs {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// The release
    #[arg(long, value_name = "N")]
    version: u64,
    /// The gated stage to open
    #[arg(long, value_name = "STAGE")]
    stage: String,
    /// Share of the earlier stages' hosts that must have confirmed the
    /// release (e.g. 95%)
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    require: u32,
    /// Most hosts of the earlier stages that may have rolled it back
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_rolled_back: u64,
    /// Count hosts whose key is only remembered on first use (not pinned
    /// with --host-keys): anyone with store access can add such a host
    #[arg(long)]
    count_unpinned: bool,
    /// Rollout secret key (repeatable, for a rollout threshold above 1)
    #[arg(long = "key", value_name = "KEYFILE", required = true)]
    keys: Vec<PathBuf>,
    /// Assess and print, sign nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
    #[command(flatten)]
    trust: common::TrustArgs,
    /// Print the assessment as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

#[derive(clap::Args)]
#[command(
    about = "Halt a release's rollout: keep every stage that has not opened closed",
    long_about = "Sign a halt of version N's rollout: hosts whose gated stage was not promoted, or \
whose slot in the wave had not come, by the time of the halt do not activate it; hosts already \
running it keep it (to take it back from them, `npcnix release revert`). A halt is final for the \
release: promotions signed after it open nothing. The release is verified at the remote's threshold \
first (--policy, --host-config or --trusted-key); the halt is signed by the --key(s) (role \
\"rollout\") and written to <remote>/rollouts/<N>/halt.json. Halting again keeps the first halt.\n\n\
Example:\n  npcnix release halt --remote s3://fleet/npcnix/prod --version 42 --key rollout.key \
--policy npcnix-policy.json --reason \"error rate up in stage early\""
)]
pub struct HaltArgs {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Remote name signed into the releases (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// The release
    #[arg(long, value_name = "N")]
    version: u64,
    /// Why (shown on hosts and to auditors)
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Rollout secret key (repeatable)
    #[arg(long = "key", value_name = "KEYFILE", required = true)]
    keys: Vec<PathBuf>,
    #[command(flatten)]
    trust: common::TrustArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

/// clap value parser: "95%" or "95", 0 to 100.
fn percent(s: &str) -> std::result::Result<u32, String> {
    match s.trim().trim_end_matches('%').parse::<u32>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<SecretKey>> {
    paths.iter().map(|k| common::load_secret_key(k)).collect()
}

/// The hosts' rollout trust, from `--policy` (the remote's `rollout`
/// section) or `--host-config`; `None` when neither is given.
fn hosts_trust(trust: &common::TrustArgs, remote: &RemoteName) -> Result<Option<RolloutTrust>> {
    if let Some(p) = &trust.host_config {
        let v = common::load_config(p)?;
        anyhow::ensure!(
            &v.remote == remote,
            "host config {} follows remote {}, not {remote}",
            p.display(),
            v.remote
        );
        return Ok(Some(v.rollout));
    }
    let Some(p) = &trust.policy else {
        return Ok(None);
    };
    use npcnix::publish::policy;
    let bytes = fsutil::read_regular(p, policy::POLICY_MAX_BYTES)
        .with_context(|| format!("reading the policy file {}", p.display()))?;
    let file = policy::PolicyFile::parse(&bytes)
        .with_context(|| format!("policy file {}", p.display()))?;
    let Some(rp) = file.remotes.get(remote.as_str()) else {
        anyhow::bail!(
            "policy file {} has no entry for remote {remote}",
            p.display()
        );
    };
    let Some(role) = &rp.rollout else {
        return Ok(Some(RolloutTrust {
            keys: Vec::new(),
            threshold: 1,
        }));
    };
    let keys = role
        .keys
        .iter()
        .map(|k| {
            Ok(TrustedKey {
                key: npcnix::format::keys::PublicKey::from_base64(&k.public_key)
                    .with_context(|| format!("policy file {}: a rollout key", p.display()))?,
                scope: KeyScope::Remotes(vec![remote.clone()]),
                not_after: k.not_after,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RolloutTrust {
        keys,
        threshold: role.threshold.max(1),
    }))
}

/// What decisions are checked with: the hosts' rollout trust, after
/// checking that the signing keys meet it (a decision the hosts would
/// refuse is never written: they would report `rollout-decision`); without
/// one, the signers' own keys at threshold 1, with a warning.
fn decision_trust(
    trust: &common::TrustArgs,
    remote: &RemoteName,
    keys: &[SecretKey],
    now: u64,
) -> Result<RolloutTrust> {
    match hosts_trust(trust, remote)? {
        Some(t) => {
            let ours = t
                .keys
                .iter()
                .filter(|k| k.not_after.is_none_or(|n| now <= n))
                .filter(|k| keys.iter().any(|s| s.public_key().bytes == k.key.bytes))
                .count();
            anyhow::ensure!(
                ours >= t.threshold,
                "the hosts accept rollout decisions signed by {} of their {} rollout key(s) for {remote}; {ours} of the --key(s) given are among them: hosts would refuse this decision (rollout-decision)",
                t.threshold,
                t.keys.len()
            );
            Ok(t)
        }
        None => {
            warn!("no --policy or --host-config: the hosts' rollout keys and threshold are not checked (a decision they do not accept is refused on every host as rollout-decision)");
            Ok(RolloutTrust {
                keys: keys
                    .iter()
                    .map(|k| TrustedKey {
                        key: k.public_key(),
                        scope: KeyScope::Remotes(vec![remote.clone()]),
                        not_after: None,
                    })
                    .collect(),
                threshold: 1,
            })
        }
    }
}

/// Release `version` of the remote, verified at the remote's threshold.
fn release(
    store: &Remote,
    trust: &common::TrustArgs,
    remote: &RemoteName,
    version: u64,
    now: u64,
) -> Result<VerifiedRelease> {
    let (t, _) = trust.resolve(remote, &[], None)?;
    let bytes = store
        .log()
        .release(version)?
        .with_context(|| format!("{remote} has no version {version}"))?;
    npcnix::verify::verify_signatures(&t.policy, &bytes, now)
        .map_err(|r| anyhow::Error::new(Unverified(format!("version {version}: {r}"))))
}

/// A decision in the store for a release, as this command finds it.
enum Found {
    None,
    /// Verifies with the trust given.
    Valid(decision::Decision),
    /// Names this release, action and stage but does not verify (too few or
    /// unknown signatures): hosts refuse it.
    Unverified(decision::Decision, String),
    /// Not a decision for this release at all.
    Garbage(String),
}

fn existing(
    store: &Remote,
    trust: &RolloutTrust,
    remote: &RemoteName,
    release: &VerifiedRelease,
    stage: Option<&str>,
    now: u64,
) -> Result<Found> {
    let v = release.version();
    let obj = match stage {
        Some(s) => Object::Promotion(v, s),
        None => Object::Halt(v),
    };
    let Some(bytes) = store.log().decision(obj)? else {
        return Ok(Found::None);
    };
    let expected = Expected {
        remote,
        version: v,
        statement: release.statement_hash(),
        stage,
    };
    match npcnix::verify::decision::verify(&bytes, trust, expected, 600, now) {
        Ok(d) => Ok(Found::Valid(d.decision)),
        Err(e) => {
            // Read for the operator only (never trusted): is it at least a
            // decision for this release?
            let parsed = decision::decode(&bytes)
                .ok()
                .and_then(|(b, _)| decision::Decision::parse(&b).ok())
                .filter(|d| {
                    d.remote == *remote
                        && d.version == v
                        && d.statement == release.statement_hash()
                        && d.stage.as_deref() == stage
                });
            Ok(match parsed {
                Some(d) => Found::Unverified(d, e.to_string()),
                None => Found::Garbage(format!("{}: {e}", obj.key())),
            })
        }
    }
}

pub fn promote(a: PromoteArgs) -> Result<()> {
    let store = a.store.open(&a.remote)?;
    let remote = common::remote_name(&a.remote, a.fleet.remote_name.as_deref())?;
    let keys = load_keys(&a.keys)?;
    let started = fsutil::now_unix();
    let rel = release(&store, &a.trust, &remote, a.version, started)?;
    let trust = decision_trust(&a.trust, &remote, &keys, started)?;
    let st = rel.statement();
    let Some(rollout) = st.rollout.as_ref().filter(|r| !r.gates.is_empty()) else {
        anyhow::bail!(
            "version {} has no gated stages (publish --gate): nothing to promote",
            a.version
        );
    };
    let Some(gate) = rollout.gates.iter().position(|g| g.stage == a.stage) else {
        anyhow::bail!(
            "version {} has no gated stage {:?}; its stages: {}",
            a.version,
            visible(&a.stage),
            rollout
                .gates
                .iter()
                .map(|g| g.stage.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let halted = |now: u64| -> Result<()> {
        match existing(&store, &trust, &remote, &rel, None, now)? {
            Found::Valid(h) | Found::Unverified(h, _) => anyhow::bail!(
                "version {} was halted at {}: a halt is final for a release (publish a new one)",
                a.version,
                rfc3339(h.created)
            ),
            Found::None | Found::Garbage(_) => Ok(()),
        }
    };
    halted(started)?;
    // Promoted before: the stage's start stays where it is (promoting
    // again would move it later and hold back the hosts already in it).
    let replace = match existing(&store, &trust, &remote, &rel, Some(&a.stage), started)? {
        Found::Valid(d) => {
            outln!(
                "{remote} version {}: stage {:?} was promoted at {}; nothing to do",
                a.version,
                a.stage,
                rfc3339(d.created)
            );
            return Ok(());
        }
        Found::Unverified(_, why) | Found::Garbage(why) => {
            warn!(
                "the promotion in the store does not verify ({why}); hosts refuse it: replacing it"
            );
            true
        }
        Found::None => false,
    };
    for g in &rollout.gates[..gate] {
        if !matches!(
            existing(&store, &trust, &remote, &rel, Some(&g.stage), started)?,
            Found::Valid(_)
        ) {
            anyhow::bail!(
                "stage {:?} comes before {:?} and is not promoted (with signatures the hosts accept): promote it first",
                g.stage,
                a.stage
            );
        }
    }
    let (_, survey) = super::fleet::survey(&a.fleet, &a.remote, &store)?;
    let assessment = plan::assess(
        &survey.rows,
        rollout,
        remote.as_str(),
        a.version,
        rel.statement_hash(),
        &a.stage,
        a.require,
        a.max_rolled_back,
        a.count_unpinned,
    )
    .context("internal error: the gate disappeared")?;
    let signed = assessment.passes && !a.dry_run;
    if signed {
        // Dated when signed, after the survey (which may take minutes), and
        // only if no halt came meanwhile: a promotion dated before a halt
        // would count under it.
        let now = fsutil::now_unix();
        halted(now)?;
        let d = plan::decision(
            remote.clone(),
            a.version,
            rel.statement_hash(),
            Some(&a.stage),
            Some(assessment.evidence),
            None,
            now,
        );
        let obj = Object::Promotion(a.version, &a.stage);
        let bytes = plan::sign(&d, &keys);
        if replace {
            store.log().put_decision(obj, &bytes)?;
        } else {
            store.log().put_new_decision(obj, &bytes).map_err(|e| {
                if e.kind == npcnix::store::StoreErrorKind::PreconditionFailed {
                    anyhow::anyhow!("another promotion of stage {:?} was written meanwhile: run promote again to see it", a.stage)
                } else {
                    e.into()
                }
            })?;
        }
    }
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "version": a.version,
            "assessment": assessment,
            "promoted": signed,
        }));
    } else {
        let e = &assessment.evidence;
        outln!(
            "{remote} version {}, stage {:?}: of {} host(s) in the earlier stages, {} confirmed it ({} % required), {} rolled it back (at most {} allowed)",
            a.version,
            a.stage,
            e.hosts,
            e.confirmed,
            e.required_percent,
            e.rolled_back,
            assessment.max_rolled_back
        );
        for h in assessment.hosts.iter().filter(|h| !h.confirmed) {
            outln!(
                "  {}: {}",
                visible(&h.host),
                visible(h.why.as_deref().unwrap_or("-"))
            );
        }
        if !assessment.not_counted.is_empty() {
            outln!(
                "  not counted (key not pinned; --count-unpinned to count them): {}",
                assessment
                    .not_counted
                    .iter()
                    .map(|h| visible(h))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if signed {
            outln!(
                "promoted: stage {:?} opens on its hosts from their next poll ({})",
                a.stage,
                decision::promotion_key(a.version, &a.stage)
            );
        } else if assessment.passes {
            outln!("would promote (--dry-run: nothing signed)");
        }
    }
    if !assessment.passes {
        anyhow::bail!(
            "not promoted: the earlier stages do not meet --require {}% / --max-rolled-back {}{}",
            a.require,
            a.max_rolled_back,
            if assessment.evidence.hosts == 0 {
                " (no counted host in the earlier stages: pin host keys with --host-keys)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

pub fn halt(a: HaltArgs) -> Result<()> {
    let store = a.store.open(&a.remote)?;
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    if let Some(r) = &a.reason {
        anyhow::ensure!(
            r.len() <= decision::MAX_REASON && npcnix::format::text::is_plain(r),
            "--reason must be plain text of at most {} bytes",
            decision::MAX_REASON
        );
    }
    let keys = load_keys(&a.keys)?;
    let now = fsutil::now_unix();
    let rel = release(&store, &a.trust, &remote, a.version, now)?;
    let trust = decision_trust(&a.trust, &remote, &keys, now)?;
    // The first halt stands: a later one would re-open the slots between.
    // One that the hosts refuse (too few or unknown signatures) is signed
    // again with its own time.
    let (at, new) = match existing(&store, &trust, &remote, &rel, None, now)? {
        Found::Valid(d) => (d.created, false),
        found => {
            let (created, replace) = match found {
                Found::Unverified(d, why) => {
                    warn!("the halt in the store does not verify ({why}); signing it again, dated as it was ({})", rfc3339(d.created));
                    (d.created.min(now), true)
                }
                Found::Garbage(why) => {
                    warn!("{why}; replacing it");
                    (now, true)
                }
                _ => (now, false),
            };
            let d = plan::decision(
                remote.clone(),
                a.version,
                rel.statement_hash(),
                None,
                None,
                a.reason.clone(),
                created,
            );
            let bytes = plan::sign(&d, &keys);
            if replace {
                store.log().put_decision(Object::Halt(a.version), &bytes)?;
            } else {
                match store
                    .log()
                    .put_new_decision(Object::Halt(a.version), &bytes)
                {
                    Err(e) if e.kind == npcnix::store::StoreErrorKind::PreconditionFailed => {
                        anyhow::bail!(
                            "another halt was written meanwhile: run halt again to see it"
                        )
                    }
                    r => r?,
                }
            }
            (created, true)
        }
    };
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "version": a.version,
            "halted_at": at,
            "new": new,
        }));
    } else if new {
        outln!(
            "{remote} version {}: rollout halted at {}; hosts whose stage or slot had not opened will not activate it (hosts running it keep it, and hosts whose slot had come may still activate it: `npcnix release revert` to take it back)",
            a.version,
            rfc3339(at)
        );
    } else {
        outln!(
            "{remote} version {}: already halted at {} (the first halt stands)",
            a.version,
            rfc3339(at)
        );
    }
    Ok(())
}
