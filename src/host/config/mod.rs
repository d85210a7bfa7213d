//! The host config: declarative, written by the NixOS module (or `npcnix
//! install`), separate from the mutable state in the data dir.
//!
//! Parsing is strict (unknown fields are errors, so a typo never silently
//! disables a check) and validation explains what is wrong and how to fix it.
//! The JSON shape is documented in `docs/protocol.md` ("Host config") and
//! produced by `nixos-module/host-config.nix`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::archive::limits::{LimitOverrides, Limits};
use crate::format::keys::PublicKey;
use crate::format::statement::RemoteName;
use crate::verify::{Freshness, KeyScope, Policy, TrustedKey};

pub const CONFIG_FORMAT: &str = "npcnix-host-config/v1";
/// Where the NixOS module puts the config.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/npcnix/config.json";
const CONFIG_MAX_BYTES: usize = 1 << 20;

mod check;
mod sections;

pub use check::check;

use sections::default_state_dir;
pub use sections::*;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub format: String,
    pub remote: RemoteConfig,
    pub configuration: String,
    pub trusted_keys: Vec<TrustedKeyConfig>,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub activation: ActivationConfig,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub metrics_path: Option<PathBuf>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub limits: LimitOverrides,
    #[serde(default)]
    pub fetcher: FetcherConfig,
    #[serde(default)]
    pub lockout: LockoutConfig,
    #[serde(default)]
    pub reboot: RebootConfig,
    /// This host's ID in rollout waves and receipts (default: derived from
    /// `/etc/machine-id`).
    #[serde(default)]
    pub host_id: Option<String>,
    /// `wave`: wait for this host's slot in a release's signed rollout;
    /// `immediate`: ignore waves (canaries).
    #[serde(default)]
    pub rollout: RolloutMode,
    #[serde(default)]
    pub receipts: ReceiptsConfig,
    /// Programs run after a decision is recorded (notifications).
    #[serde(default)]
    pub hooks: HooksConfig,
    /// Keep this host at or below a version (declarative; issue 34).
    #[serde(default)]
    pub hold: Option<HoldConfig>,
}

/// A config problem, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid JSON for npcnix-host-config/v1: {0}")]
    Parse(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A validated config, with derived values ready to use.
#[derive(Clone, Debug)]
pub struct Validated {
    pub config: HostConfig,
    pub remote: RemoteName,
    pub policy: Policy,
    /// Who signs promotions and halts of gated rollouts (issue 35).
    pub rollout: crate::verify::decision::RolloutTrust,
    /// The witness policy (issue 37), if the config sets one.
    pub witness: Option<crate::verify::witness::WitnessPolicy>,
    pub limits: Limits,
    pub require_chain: bool,
    /// `host_id`, or (filled in by the caller) one derived from the
    /// machine ID; empty when neither is known (waves then treat the host
    /// as immediate, and no receipts are written).
    pub host_id: String,
}

impl HostConfig {
    pub fn parse(bytes: &[u8]) -> Result<HostConfig, ConfigError> {
        if bytes.len() > CONFIG_MAX_BYTES {
            return Err(ConfigError::Parse(
                "config file is larger than 1 MiB".into(),
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Checks everything and derives the verification policy. Returns every
    /// problem found, not just the first.
    pub fn validate(&self) -> Result<Validated, Vec<ConfigError>> {
        let mut errs = Vec::new();
        if self.format != CONFIG_FORMAT {
            errs.push(invalid(
                "format",
                format!("expected {CONFIG_FORMAT:?}, got {:?}", self.format),
            ));
        }
        if !crate::store::Scheme::well_formed(&self.remote.url) {
            errs.push(invalid(
                "remote.url",
                format!("must be {}", crate::store::Scheme::accepted()),
            ));
        }
        for (i, m) in self.remote.mirrors.iter().enumerate() {
            if !crate::store::Scheme::well_formed(m) {
                errs.push(invalid(
                    format!("remote.mirrors[{i}]"),
                    format!("must be {}", crate::store::Scheme::accepted()),
                ));
            } else if *m == self.remote.url || self.remote.mirrors[..i].contains(m) {
                errs.push(invalid(format!("remote.mirrors[{i}]"), "is listed twice"));
            }
        }
        if self.remote.mirrors.len() > 8 {
            errs.push(invalid("remote.mirrors", "at most 8 mirrors"));
        }
        let name = self
            .remote
            .name
            .clone()
            .or_else(|| crate::store::default_remote_name(&self.remote.url).map(str::to_owned))
            .unwrap_or_default();
        let remote = match RemoteName::new(&name) {
            Ok(r) => Some(r),
            Err(e) => {
                errs.push(invalid("remote.name", e));
                None
            }
        };
        if !crate::format::statement::is_configuration_name(&self.configuration) {
            errs.push(invalid(
                "configuration",
                "must be a nixosConfigurations attribute name: 1-128 characters from A-Z a-z 0-9 - _ .",
            ));
        }
        let mut keys = Vec::new();
        let mut timestamp_keys: Vec<TrustedKey> = Vec::new();
        let mut rollout_keys: Vec<TrustedKey> = Vec::new();
        let mut log_keys: Vec<TrustedKey> = Vec::new();
        for (i, k) in self.trusted_keys.iter().enumerate() {
            let field = format!("trusted_keys[{i}]");
            let pk = match PublicKey::from_base64(&k.public_key) {
                Ok(pk) => pk,
                Err(e) => {
                    errs.push(invalid(
                        format!("{field}.public_key"),
                        format!("{e} (expected the RW... line of a minisign .pub file)"),
                    ));
                    continue;
                }
            };
            if k.remotes.is_empty() {
                errs.push(invalid(
                    format!("{field}.remotes"),
                    "list the remotes this key may sign for (\"*\" for any)",
                ));
                continue;
            }
            let scope = if k.remotes.iter().any(|r| r == "*") {
                KeyScope::AnyRemote
            } else {
                let mut list = Vec::new();
                for r in &k.remotes {
                    match RemoteName::new(r) {
                        Ok(n) => list.push(n),
                        Err(e) => errs.push(invalid(format!("{field}.remotes"), e)),
                    }
                }
                KeyScope::Remotes(list)
            };
            if keys
                .iter()
                .chain(&timestamp_keys)
                .chain(&rollout_keys)
                .chain(&log_keys)
                .any(|t: &TrustedKey| t.key.key_id == pk.key_id)
            {
                errs.push(invalid(
                    format!("{field}.public_key"),
                    format!("key ID {} is listed twice", pk.key_id),
                ));
            }
            // Thresholds count distinct Ed25519 keys: the same key under
            // another ID would let a config promise a threshold it can
            // never reach.
            if keys
                .iter()
                .chain(&timestamp_keys)
                .chain(&rollout_keys)
                .chain(&log_keys)
                .any(|t: &TrustedKey| t.key.bytes == pk.bytes)
            {
                errs.push(invalid(
                    format!("{field}.public_key"),
                    "the same public key is listed twice (under another key ID)",
                ));
            }
            let key = TrustedKey {
                key: pk,
                scope,
                not_after: k.not_after,
            };
            match k.role {
                KeyRole::Release => keys.push(key),
                KeyRole::Timestamp => timestamp_keys.push(key),
                KeyRole::Rollout => rollout_keys.push(key),
                KeyRole::Log => log_keys.push(key),
            }
        }
        if let Some(remote) = &remote {
            let scoped = keys
                .iter()
                .filter(|k| match &k.scope {
                    KeyScope::AnyRemote => true,
                    KeyScope::Remotes(l) => l.contains(remote),
                })
                .count();
            if scoped == 0 {
                errs.push(invalid(
                    "trusted_keys",
                    format!("no trusted key may sign for remote {remote:?}: this host could never accept a release"),
                ));
            }
            if self.remote.threshold == 0 {
                errs.push(invalid("remote.threshold", "must be at least 1"));
            } else if self.remote.threshold > scoped && scoped > 0 {
                errs.push(invalid(
                    "remote.threshold",
                    format!(
                        "requires {} signatures but only {scoped} trusted key(s) are scoped to {remote:?}",
                        self.remote.threshold
                    ),
                ));
            }
        }
        let fresh = &self.policy.freshness;
        if let (Some(remote), true) = (&remote, fresh.required) {
            let scoped = timestamp_keys
                .iter()
                .filter(|k| k.scope.allows(remote))
                .count();
            if fresh.threshold == 0 {
                errs.push(invalid("policy.freshness.threshold", "must be at least 1"));
            } else if fresh.threshold > scoped {
                errs.push(invalid(
                    "policy.freshness.threshold",
                    format!(
                        "requires {} timestamp signatures but {scoped} trusted key(s) with role \"timestamp\" are scoped to {remote:?}",
                        fresh.threshold
                    ),
                ));
            }
        }
        let witness = match (&remote, &self.policy.witnesses) {
            (Some(remote), Some(w)) => {
                let trusted: Vec<[u8; 32]> = keys
                    .iter()
                    .chain(&timestamp_keys)
                    .chain(&rollout_keys)
                    .chain(&log_keys)
                    .map(|k| k.key.bytes)
                    .collect();
                witness_policy(remote, w, &log_keys, &trusted, &mut errs)
            }
            _ => None,
        };
        if self.policy.rollout.threshold == 0 {
            errs.push(invalid("policy.rollout.threshold", "must be at least 1"));
        }
        if self.activation.toplevel_action == Some(ActivationMode::Toplevel) {
            errs.push(invalid(
                "activation.toplevel_action",
                "must be switch, boot, test or dry-activate",
            ));
        }
        if self.poll.interval_secs == 0 {
            errs.push(invalid("poll.interval_secs", "must be at least 1"));
        }
        // A week bounds every delay the agent computes (no overflow).
        if self.poll.interval_secs > 7 * 86_400 {
            errs.push(invalid(
                "poll.interval_secs",
                "must be at most 604800 (a week)",
            ));
        }
        if self.poll.jitter_secs > 7 * 86_400 {
            errs.push(invalid(
                "poll.jitter_secs",
                "must be at most 604800 (a week)",
            ));
        }
        if let Some(h) = &self.health_check {
            if h.command.is_empty() || h.command[0].is_empty() {
                errs.push(invalid("health_check.command", "must name a program"));
            }
            if h.timeout_secs == 0 {
                errs.push(invalid("health_check.timeout_secs", "must be at least 1"));
            }
        }
        // A probation longer than a day keeps a bad system running for a day.
        // Below a few seconds no agent restarts and polls in time.
        if self.lockout.probation_secs != 0 && !(5..=86_400).contains(&self.lockout.probation_secs)
        {
            errs.push(invalid(
                "lockout.probation_secs",
                "must be 0 (off) or between 5 and 86400 seconds (minutes are sensible)",
            ));
        }
        if let Some(h) = &self.hold {
            if h.max_version == 0 {
                errs.push(invalid("hold.max_version", "must be at least 1"));
            }
            if h.reason.trim().is_empty()
                || h.reason.len() > 200
                || !crate::format::text::is_plain(&h.reason)
            {
                errs.push(invalid(
                    "hold.reason",
                    "must say why, in 1 to 200 plain characters (status, receipts and fleet status show it)",
                ));
            }
        }
        for (i, h) in self.hooks.commands.iter().enumerate() {
            if !h.command.first().is_some_and(|p| p.starts_with('/')) {
                errs.push(invalid(
                    format!("hooks.commands[{i}].command"),
                    "must start with an absolute program path (the agent's PATH is not the operator's)",
                ));
            }
            if !(1..=3600).contains(&h.timeout_secs) {
                errs.push(invalid(
                    format!("hooks.commands[{i}].timeout_secs"),
                    "must be between 1 and 3600 seconds",
                ));
            }
        }
        if let Some(w) = &self.reboot.window {
            for (f, v) in [("lower", &w.lower), ("upper", &w.upper)] {
                if RebootWindow::parse_hhmm(v).is_none() {
                    errs.push(invalid(
                        format!("reboot.window.{f}"),
                        format!("{v:?} is not a time of day as HH:MM (00:00-23:59)"),
                    ));
                }
            }
            if w.lower == w.upper {
                errs.push(invalid(
                    "reboot.window",
                    "lower and upper are equal: the window would never open (use null for any time)",
                ));
            }
        }
        if let Some(id) = &self.host_id {
            if !crate::format::rollout::is_host_id(id) {
                errs.push(invalid(
                    "host_id",
                    "must be 1-64 characters from a-z 0-9 - _ . starting with a letter or digit",
                ));
            }
        }
        if !(60..=7 * 86_400).contains(&self.receipts.heartbeat_secs) {
            errs.push(invalid(
                "receipts.heartbeat_secs",
                "must be between 60 and 604800 (a week)",
            ));
        }
        for (f, v) in [
            (
                "remote.connect_timeout_secs",
                self.remote.connect_timeout_secs,
            ),
            ("remote.read_timeout_secs", self.remote.read_timeout_secs),
        ] {
            if v.is_some_and(|s| !(1..=3600).contains(&s)) {
                errs.push(invalid(f, "must be between 1 and 3600 seconds"));
            }
        }
        if self
            .remote
            .ca_file
            .as_ref()
            .is_some_and(|p| !p.is_absolute())
        {
            errs.push(invalid("remote.ca_file", "must be an absolute path"));
        }
        if !self.state_dir.is_absolute() {
            errs.push(invalid("state_dir", "must be an absolute path"));
        }
        let limits = match self.limits.resolve() {
            Ok(l) => Some(l),
            Err(e) => {
                errs.push(invalid("limits", e));
                None
            }
        };
        match (remote, limits) {
            (Some(remote), Some(limits)) if errs.is_empty() => Ok(Validated {
                policy: Policy {
                    remote: remote.clone(),
                    keys,
                    threshold: self.remote.threshold,
                    expiry: self.policy.expiry,
                    max_future_skew_secs: self.policy.max_future_skew_secs,
                    min_version: self.policy.min_version,
                    max_version_jump: self.policy.max_version_jump,
                    freshness: fresh.required.then_some(Freshness {
                        keys: timestamp_keys,
                        threshold: fresh.threshold,
                        floor: None,
                        max_lifetime_secs: fresh.max_lifetime_secs,
                    }),
                },
                rollout: crate::verify::decision::RolloutTrust {
                    keys: rollout_keys,
                    threshold: self.policy.rollout.threshold,
                },
                witness,
                remote,
                limits,
                require_chain: self.policy.require_chain,
                host_id: self.host_id.clone().unwrap_or_default(),
                config: self.clone(),
            }),
            _ => Err(errs),
        }
    }
}

/// `policy.witnesses` with the remote's log key: the one key of role `log`
/// scoped to the remote, witness note keys that parse (cosignature/v1, no
/// two alike) and a threshold they can reach.
fn witness_policy(
    remote: &RemoteName,
    w: &WitnessesConfig,
    log_keys: &[TrustedKey],
    trusted: &[[u8; 32]],
    errs: &mut Vec<ConfigError>,
) -> Option<crate::verify::witness::WitnessPolicy> {
    let scoped: Vec<&TrustedKey> = log_keys.iter().filter(|k| k.scope.allows(remote)).collect();
    let log = match scoped.as_slice() {
        [k] => match crate::verify::witness::log_verifier(remote, &k.key) {
            Ok(v) => Some(v),
            Err(e) => {
                errs.push(invalid("trusted_keys", e));
                None
            }
        },
        [] => {
            errs.push(invalid(
                "policy.witnesses",
                format!("needs the log key of remote {remote:?}: a trusted key with role \"log\" scoped to it"),
            ));
            None
        }
        _ => {
            errs.push(invalid(
                "trusted_keys",
                format!("{} keys with role \"log\" are scoped to {remote:?}; a remote's log has one key", scoped.len()),
            ));
            None
        }
    };
    let mut witnesses: Vec<crate::format::note::VerifierKey> = Vec::new();
    for (i, k) in w.keys.iter().enumerate() {
        let field = format!("policy.witnesses.keys[{i}]");
        match crate::format::note::VerifierKey::parse(k) {
            Ok(v) if v.alg != crate::format::note::ALG_COSIGNATURE_V1 => errs.push(invalid(
                field,
                "is not a cosignature/v1 witness key (type 0x04): `npcnix witness --print-key` prints one",
            )),
            Ok(v) if witnesses.iter().any(|o| o.key == v.key || o.key_id == v.key_id) => {
                errs.push(invalid(field, "the same witness is listed twice"))
            }
            // A witness must be someone else: the publisher's own keys
            // cosigning would witness nothing.
            Ok(v) if trusted.contains(v.key.as_bytes()) => errs.push(invalid(
                field,
                "is the key of a trusted key (release, timestamp, rollout or log): a witness must be an independent party",
            )),
            Ok(v) => witnesses.push(v),
            Err(e) => errs.push(invalid(field, e.to_string())),
        }
    }
    if w.threshold == 0 {
        errs.push(invalid("policy.witnesses.threshold", "must be at least 1"));
    } else if w.threshold > w.keys.len() {
        errs.push(invalid(
            "policy.witnesses.threshold",
            format!(
                "requires {} cosignatures but {} witness key(s) are listed",
                w.threshold,
                w.keys.len()
            ),
        ));
    }
    Some(crate::verify::witness::WitnessPolicy {
        log: log?,
        witnesses,
        threshold: w.threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        crate::format::keys::SecretKey::generate()
            .expect("key")
            .public_key()
            .to_base64()
    }

    fn minimal(k: &str) -> String {
        format!(
            r#"{{"format":"npcnix-host-config/v1","remote":{{"url":"file:///srv/remotes/prod"}},
               "configuration":"web1","trusted_keys":[{{"public_key":"{k}","remotes":["prod"]}}]}}"#
        )
    }

    #[test]
    fn minimal_config_validates_with_defaults() {
        let c = HostConfig::parse(minimal(&key()).as_bytes()).expect("parse");
        let v = c.validate().expect("valid");
        assert_eq!(v.remote.as_str(), "prod");
        assert_eq!(v.policy.threshold, 1);
        assert_eq!(c.poll.interval_secs, 300);
    }

    #[test]
    fn typo_in_a_field_is_an_error_not_a_silent_default() {
        let text = minimal(&key()).replace("\"configuration\"", "\"configuraton\"");
        assert!(matches!(
            HostConfig::parse(text.as_bytes()),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn key_scoped_elsewhere_leaves_no_signer_and_is_explained() {
        let text = minimal(&key()).replace("[\"prod\"]", "[\"dev\"]");
        let errs = HostConfig::parse(text.as_bytes())
            .expect("parse")
            .validate()
            .expect_err("invalid");
        assert!(errs
            .iter()
            .any(|e| e.to_string().contains("no trusted key may sign")));
    }

    #[test]
    fn threshold_above_scoped_keys_is_refused() {
        let mut c = HostConfig::parse(minimal(&key()).as_bytes()).expect("parse");
        c.remote.threshold = 2;
        let errs = c.validate().expect_err("invalid");
        assert!(errs
            .iter()
            .any(|e| e.to_string().contains("requires 2 signatures")));
    }
}
