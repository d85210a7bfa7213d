//! Lockout protection, part one: the built system is inspected before the
//! host switches to it (see `docs/lockout.md`).
//!
//! A host has no inbound access, so a validly signed release that stops the
//! agent, points it elsewhere or takes away the keys it needs would strand
//! it for good. Before activating, the agent builds the new system and reads
//! what the NixOS module put into it:
//!
//! ```text
//! <toplevel>/etc/npcnix/config.json                                 the host config
//! <toplevel>/etc/systemd/system/npcnix.service                      the agent's unit
//! <toplevel>/etc/systemd/system/multi-user.target.wants/npcnix.service   enabled
//! ```
//!
//! [`read_system`] is the shell that reads those (bounded); [`judge`] is the
//! pure decision. A release that retires a configuration on purpose says so
//! in its signed statement (`decommission`), never by accident.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::host::config::{ActivationMode, HostConfig, ToplevelFallback, Validated};
use crate::host::probation::RotationKey;
use crate::verify::{KeyScope, Policy, Refusal, TrustedKey, VerifiedRelease};

/// Where the NixOS module installs the host config, relative to a toplevel.
pub const CONFIG_IN_SYSTEM: &str = "etc/npcnix/config.json";
/// The agent's unit, relative to a toplevel.
pub const UNIT_IN_SYSTEM: &str = "etc/systemd/system/npcnix.service";
/// The link that enables it at boot.
pub const WANTS_IN_SYSTEM: &str = "etc/systemd/system/multi-user.target.wants/npcnix.service";
/// Host configs are small; a bigger file is refused unread.
const CONFIG_MAX_BYTES: u64 = 1 << 20;

/// What a built system holds of the agent.
#[derive(Clone, Debug)]
pub struct SystemView {
    pub path: PathBuf,
    /// The host config's bytes (`None`: no such file).
    pub config: Option<Vec<u8>>,
    pub unit: bool,
    pub enabled: bool,
}

/// Reads what [`judge`] needs from a built system.
pub fn read_system(toplevel: &Path) -> std::io::Result<SystemView> {
    let config_path = toplevel.join(CONFIG_IN_SYSTEM);
    let config = match std::fs::File::open(&config_path) {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(CONFIG_MAX_BYTES + 1).read_to_end(&mut buf)?;
            Some(buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", config_path.display()),
            ))
        }
    };
    // `exists` follows symlinks: NixOS links these into the store.
    Ok(SystemView {
        path: toplevel.to_owned(),
        config,
        unit: toplevel.join(UNIT_IN_SYSTEM).exists(),
        enabled: toplevel.join(WANTS_IN_SYSTEM).exists(),
    })
}

/// What the inspection found besides "the host stays reachable".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    /// The release hands the host to other keys (a key rotation): the keys
    /// of the current system that signed it, which the new system's agent
    /// uses to accept exactly this release when it confirms.
    pub rotation_keys: Vec<RotationKey>,
    /// The new system's hold (`hold.max_version`), if it sets one: a host
    /// held now is released by a release whose config lifts or raises its
    /// hold past the release's version (D128).
    pub next_hold: Option<u64>,
}

/// Whether the host can still receive releases after switching to `next`
/// (built from `release`): the agent is installed and enabled, its config is
/// valid, follows the same remote (name and URL), still applies releases,
/// trusts at least `threshold` keys scoped to that remote that are valid
/// now, would not refuse every later release like this one (a version
/// jump of 0, limits below this release's archive, `toplevel` mode that
/// refuses releases without a signed system path when this one has none),
/// and accepts this very release under its whole policy (with the host's
/// rollback `floor`): a new system that refuses what it runs would refuse
/// its own head. The one exception is which keys signed: a release signed
/// by the current keys for a system that trusts others is a key rotation,
/// accepted when the new policy passes it with the current keys added.
pub fn judge(
    current: &Validated,
    next: &SystemView,
    release: &VerifiedRelease,
    floor: u64,
    now: u64,
) -> Result<Inspection, Refusal> {
    let refuse = |what: String| {
        Err(Refusal::WouldLockOut(format!(
            "the built system {} {what}; the host would stop receiving releases (a release that retires this host must list it in `decommission`)",
            next.path.display()
        )))
    };
    if !next.unit {
        return refuse(format!("has no npcnix agent ({UNIT_IN_SYSTEM} is missing)"));
    }
    if !next.enabled {
        return refuse(format!(
            "does not start the npcnix agent at boot ({WANTS_IN_SYSTEM} is missing)"
        ));
    }
    let Some(bytes) = &next.config else {
        return refuse(format!(
            "has no host config ({CONFIG_IN_SYSTEM} is missing)"
        ));
    };
    let v = match HostConfig::parse(bytes)
        .map_err(|e| vec![e])
        .and_then(|c| c.validate())
    {
        Ok(v) => v,
        Err(errs) => {
            let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
            return refuse(format!(
                "carries a host config the agent would refuse ({})",
                list.join("; ")
            ));
        }
    };
    if v.remote != current.remote {
        return refuse(format!(
            "follows remote {:?}, not {:?}",
            v.remote.as_str(),
            current.remote.as_str()
        ));
    }
    // The same URL, or one of the current mirrors promoted (D129).
    if v.config.remote.url != current.config.remote.url
        && !current.config.remote.mirrors.contains(&v.config.remote.url)
    {
        return refuse(format!(
            "fetches from {}, not {}",
            v.config.remote.url, current.config.remote.url
        ));
    }
    if v.config.configuration != current.config.configuration {
        return refuse(format!(
            "is configured as {:?}, not {:?}",
            v.config.configuration, current.config.configuration
        ));
    }
    if v.config.activation.mode == ActivationMode::DryActivate
        && current.config.activation.mode != ActivationMode::DryActivate
    {
        return refuse("would only dry-activate later releases, never apply them".into());
    }
    let usable = v
        .policy
        .keys
        .iter()
        .filter(|k| match &k.scope {
            KeyScope::AnyRemote => true,
            KeyScope::Remotes(l) => l.contains(&v.remote),
        })
        .filter(|k| k.not_after.is_none_or(|t| now < t))
        .count();
    if usable < v.policy.threshold.max(1) {
        return refuse(format!(
            "trusts {usable} unexpired key(s) for remote {:?} but requires {}",
            v.remote.as_str(),
            v.policy.threshold
        ));
    }
    // Settings under which the new agent polls and confirms, then refuses
    // every later release: as stranded as a host without an agent.
    if v.policy.max_version_jump == Some(0) {
        return refuse(
            "sets policy.max_version_jump = 0, which refuses every later version".into(),
        );
    }
    let statement = release.statement();
    if v.limits.archive_bytes < statement.archive.size {
        return refuse(format!(
            "sets limits.archive_bytes = {}, below this release's own archive ({} bytes), so releases like it would be refused",
            v.limits.archive_bytes, statement.archive.size
        ));
    }
    let cfg = &v.config.activation;
    let signed_system = statement
        .toplevels
        .as_ref()
        .is_some_and(|t| t.contains_key(&v.config.configuration));
    if cfg.mode == ActivationMode::Toplevel
        && cfg.toplevel_fallback == ToplevelFallback::Refuse
        && !signed_system
    {
        return refuse(format!(
            "applies only signed system paths (activation.mode = toplevel, toplevel_fallback = refuse), but this release signs none for {:?}, so releases like it would be refused",
            v.config.configuration
        ));
    }
    let mut policy = v.policy.clone();
    policy.min_version = policy.min_version.max(floor);
    let bundle = release.bundle();
    let seen = Some(release.seen());
    let own = |r: Refusal| {
        refuse(format!(
            "would refuse this very release ({}: {r}), and so its own head",
            r.check()
        ))
    };
    let next_hold = v.config.hold.as_ref().map(|h| h.max_version);
    match crate::verify::verify_release(&policy, seen, &bundle, now) {
        Ok(_) => Ok(Inspection {
            next_hold,
            ..Inspection::default()
        }),
        Err(r) if r.is_about_signers() => {
            let old: Vec<TrustedKey> = current
                .policy
                .keys
                .iter()
                .filter(|k| k.scope.allows(&current.remote))
                .filter(|k| k.not_after.is_none_or(|t| now < t))
                .map(|k| TrustedKey {
                    key: k.key.clone(),
                    scope: KeyScope::Remotes(vec![v.remote.clone()]),
                    not_after: k.not_after,
                })
                .collect();
            match crate::verify::verify_release(&with_keys(&policy, &old), seen, &bundle, now) {
                Ok(_) => Ok(Inspection {
                    rotation_keys: old
                        .iter()
                        .map(|k| RotationKey {
                            public_key: k.key.to_base64(),
                            not_after: k.not_after,
                        })
                        .collect(),
                    next_hold,
                }),
                Err(r) => own(r),
            }
        }
        Err(r) => own(r),
    }
}

/// `policy` that also trusts `extra` (a key rotation's previous keys).
pub fn with_keys(policy: &Policy, extra: &[TrustedKey]) -> Policy {
    let mut p = policy.clone();
    p.keys.extend(extra.iter().cloned());
    p
}

/// The previous keys a probation record kept for a key rotation, as keys
/// scoped to `remote` (unreadable entries are left out).
pub fn rotation_trust(
    remote: &crate::format::remote::RemoteName,
    keys: &[RotationKey],
) -> Vec<TrustedKey> {
    keys.iter()
        .filter_map(|k| {
            crate::format::keys::PublicKey::from_base64(&k.public_key)
                .ok()
                .map(|key| TrustedKey {
                    key,
                    scope: KeyScope::Remotes(vec![remote.clone()]),
                    not_after: k.not_after,
                })
        })
        .collect()
}

/// Why an agent may not vouch for the system on probation.
#[derive(Debug, thiserror::Error)]
pub enum NotVouching {
    #[error("the running system is {}, not the release's {}", .running.display(), .system.display())]
    OtherSystem { running: PathBuf, system: PathBuf },
    #[error("this agent runs another host config than {}'s (the new system's agent must confirm)", .system.display())]
    OtherConfig { system: PathBuf },
    #[error("{}: {reason}", .system.display())]
    Unreadable { system: PathBuf, reason: String },
}

/// Whether an agent running `mine`, on the system `running` (the canonical
/// `/run/current-system`, when readable), may confirm the release whose
/// system is `next`: it must run in that system and with that system's host
/// config. So an agent left over from before the switch (a `follow`
/// without `--exit-after-switch`, or one the switch did not restart)
/// cannot vouch for a new system it never ran; `Err` says why.
pub fn may_confirm(
    mine: &HostConfig,
    running: Option<&Path>,
    next: &SystemView,
) -> Result<(), NotVouching> {
    if let Some(r) = running {
        if r != next.path {
            return Err(NotVouching::OtherSystem {
                running: r.to_owned(),
                system: next.path.clone(),
            });
        }
    }
    let unreadable = |reason: String| NotVouching::Unreadable {
        system: next.path.clone(),
        reason,
    };
    match next.config.as_deref().map(HostConfig::parse) {
        Some(Ok(c)) if &c == mine => Ok(()),
        Some(Ok(_)) => Err(NotVouching::OtherConfig {
            system: next.path.clone(),
        }),
        Some(Err(e)) => Err(unreadable(format!("host config: {e}"))),
        None => Err(unreadable("no host config".into())),
    }
}

#[cfg(test)]
mod tests;
