//! The sections of the host config (`remote`, `trusted_keys`, `policy`,
//! `poll`, `activation`, `health_check`, `lockout`, `reboot`, `fetcher`,
//! `rollout`, `receipts`): their JSON shape and defaults. The whole config
//! and its validation are in the parent module.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::verify::{ExpiryPolicy, DEFAULT_MAX_FUTURE_SKEW_SECS};

fn default_threshold() -> usize {
    1
}
fn default_interval() -> u64 {
    300
}
fn default_jitter() -> u64 {
    60
}
pub(super) fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/npcnix")
}
fn default_health_timeout() -> u64 {
    120
}
fn default_skew() -> u64 {
    DEFAULT_MAX_FUTURE_SKEW_SECS
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `file:///...`, `s3://bucket/prefix/name`, `https://mirror/...`.
    pub url: String,
    /// The signed identity; defaults to the URL's last path segment.
    #[serde(default)]
    pub name: Option<String>,
    /// Distinct trusted keys (scoped to this remote) that must sign.
    #[serde(default = "default_threshold")]
    pub threshold: usize,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    /// Slowest transfer rate waited for, in bytes per second: every object
    /// read has an overall deadline of a minute plus its size at this rate
    /// (default 32 KiB/s), besides the per-read time-out.
    #[serde(default)]
    pub min_rate_bytes_per_sec: Option<u64>,
    /// Connect time-out in seconds (default 10).
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
    /// Time-out of each network read in seconds (default 30;
    /// `NPCNIX_READ_TIMEOUT_SECS` overrides it).
    #[serde(default)]
    pub read_timeout_secs: Option<u64>,
    /// A PEM file of CA certificates the store's (or mirror's) HTTPS
    /// certificate may be issued by, besides the platform's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Other URLs serving the same signed objects (issue 34): asked in
    /// order when the one in use does not answer; never to replace an
    /// answer (D129). Same settings as `url` (region, endpoint, CA file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyConfig {
    /// The minisign public key (`RW...`).
    pub public_key: String,
    /// Remotes this key may sign for; `"*"` means any (discouraged).
    pub remotes: Vec<String>,
    /// Unix seconds after which the key's signatures no longer count.
    #[serde(default)]
    pub not_after: Option<u64>,
    #[serde(default)]
    pub comment: Option<String>,
    /// What the key may sign: releases (default) or freshness timestamps
    /// only (D126). A key has one role.
    #[serde(default, skip_serializing_if = "KeyRole::is_release")]
    pub role: KeyRole,
}

/// What a trusted key may sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRole {
    /// Release statements (counted toward `remote.threshold`).
    #[default]
    Release,
    /// Freshness timestamps of the head, and nothing else.
    Timestamp,
    /// Rollout decisions (promotions of gated stages, halts), and nothing
    /// else (D130).
    Rollout,
    /// The remote's witnessed log: its checkpoints, and nothing else
    /// (issue 37).
    Log,
}

impl KeyRole {
    pub fn is_release(&self) -> bool {
        *self == KeyRole::Release
    }
}

/// The timestamp role (`policy.freshness`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessConfig {
    /// Accept a release only with an unexpired timestamp for exactly it,
    /// signed by `threshold` timestamp keys.
    #[serde(default)]
    pub required: bool,
    #[serde(default = "default_threshold")]
    pub threshold: usize,
    /// Refuse a timestamp valid for longer than this (`expires - created`).
    #[serde(default = "default_max_timestamp_lifetime")]
    pub max_lifetime_secs: u64,
}

fn default_max_timestamp_lifetime() -> u64 {
    crate::verify::DEFAULT_MAX_TIMESTAMP_LIFETIME_SECS
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        FreshnessConfig {
            required: false,
            threshold: 1,
            max_lifetime_secs: default_max_timestamp_lifetime(),
        }
    }
}

/// The rollout role (`policy.rollout`, D130).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRoleConfig {
    /// Distinct keys with role `rollout` that must sign a promotion or a
    /// halt.
    #[serde(default = "default_threshold")]
    pub threshold: usize,
}

impl Default for RolloutRoleConfig {
    fn default() -> Self {
        RolloutRoleConfig { threshold: 1 }
    }
}

/// The witness policy (`policy.witnesses`, issue 37): accept a release only
/// once it is in a checkpoint of the remote's log (signed by its key of
/// role `log`) that `threshold` of these witnesses cosigned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessesConfig {
    /// Witness note keys, `<name>+<key ID>+<base64 key>` (`npcnix witness
    /// --print-key`; cosignature/v1 keys of other witness software too).
    pub keys: Vec<String>,
    #[serde(default = "default_threshold")]
    pub threshold: usize,
}

/// Default warning before the active release's or its timestamp's expiry.
pub const DEFAULT_WARN_BEFORE_EXPIRY_SECS: u64 = 86_400;

fn default_warn_before_expiry() -> u64 {
    DEFAULT_WARN_BEFORE_EXPIRY_SECS
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub min_version: u64,
    #[serde(default = "default_expiry")]
    pub expiry: ExpiryPolicy,
    #[serde(default)]
    pub max_version_jump: Option<u64>,
    #[serde(default)]
    pub require_chain: bool,
    /// `required`: refuse to extract unless Landlock confines the extraction.
    #[serde(default)]
    pub confinement: crate::archive::confine::ConfinementPolicy,
    #[serde(default = "default_skew")]
    pub max_future_skew_secs: u64,
    #[serde(default)]
    pub freshness: FreshnessConfig,
    /// The rollout role: how many rollout keys sign a promotion or a halt.
    #[serde(default)]
    pub rollout: RolloutRoleConfig,
    /// Take only releases a k-of-n set of witnesses has seen in the
    /// remote's log (issue 37); `None`: the log is not consulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<WitnessesConfig>,
    /// Warn in the log this long before the head's `expires` or its
    /// timestamp's (0: never).
    #[serde(default = "default_warn_before_expiry")]
    pub warn_before_expiry_secs: u64,
}

fn default_expiry() -> ExpiryPolicy {
    ExpiryPolicy::Optional
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            min_version: 0,
            expiry: ExpiryPolicy::Optional,
            max_version_jump: None,
            require_chain: false,
            confinement: Default::default(),
            max_future_skew_secs: DEFAULT_MAX_FUTURE_SKEW_SECS,
            freshness: FreshnessConfig::default(),
            rollout: RolloutRoleConfig::default(),
            witnesses: None,
            warn_before_expiry_secs: DEFAULT_WARN_BEFORE_EXPIRY_SECS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    #[serde(default = "default_jitter")]
    pub jitter_secs: u64,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval_secs: default_interval(),
            jitter_secs: default_jitter(),
        }
    }
}

/// How a verified release is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationMode {
    /// `nixos-rebuild switch`: activate now and make it the boot default.
    Switch,
    /// `nixos-rebuild boot`: make it the boot default only.
    Boot,
    /// `nixos-rebuild test`: activate now, not the boot default.
    Test,
    /// `nixos-rebuild dry-activate`: show what would change.
    DryActivate,
    /// No evaluation on the host: realise the signed system path for this
    /// configuration from the substituters and run its
    /// `bin/switch-to-configuration <toplevel_action>`.
    Toplevel,
}

impl ActivationMode {
    pub fn as_arg(self) -> &'static str {
        match self {
            ActivationMode::Switch => "switch",
            ActivationMode::Boot => "boot",
            ActivationMode::Test => "test",
            ActivationMode::DryActivate => "dry-activate",
            ActivationMode::Toplevel => "toplevel",
        }
    }

    /// Whether the running system changes (so a health check and rollback
    /// make sense).
    pub fn changes_running_system(self) -> bool {
        matches!(self, ActivationMode::Switch | ActivationMode::Test)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationConfig {
    pub mode: ActivationMode,
    /// Program to run instead of `nixos-rebuild` (`NPCNIX_NIXOS_REBUILD`
    /// overrides this).
    #[serde(default)]
    pub program: Option<String>,
    #[serde(default)]
    pub extra_substituters: Vec<String>,
    #[serde(default)]
    pub extra_trusted_public_keys: Vec<String>,
    /// Mode `toplevel`: what `switch-to-configuration` does (`switch`,
    /// `boot`, `test`, `dry-activate`; default `switch`).
    #[serde(default)]
    pub toplevel_action: Option<ActivationMode>,
    /// Mode `toplevel`: the system profile (default
    /// `/nix/var/nix/profiles/system`).
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// Mode `toplevel`: what to do with a release that carries no signed
    /// path for this configuration.
    #[serde(default)]
    pub toplevel_fallback: ToplevelFallback,
    /// Flake mode: switch to the system the lockout inspection built
    /// (`nixos-rebuild <mode> --store-path <system>`) instead of evaluating
    /// the flake a second time (issue 36). Needs a `nixos-rebuild` with
    /// `--store-path` (nixos-rebuild-ng, NixOS 26.05 on; the NixOS module
    /// sets it there). Off: `nixos-rebuild <mode> --flake` as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_build: bool,
}

/// What a `toplevel` host does when a release names no path for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToplevelFallback {
    /// Refuse the release (the default: the host never evaluates Nix).
    #[default]
    Refuse,
    /// Evaluate the flake with `nixos-rebuild switch` instead.
    Evaluate,
}

impl Default for ActivationConfig {
    fn default() -> Self {
        ActivationConfig {
            mode: ActivationMode::Switch,
            program: None,
            extra_substituters: Vec::new(),
            extra_trusted_public_keys: Vec::new(),
            toplevel_action: None,
            profile: None,
            toplevel_fallback: ToplevelFallback::Refuse,
            reuse_build: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// argv of the check; exit 0 = healthy.
    pub command: Vec<String>,
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u64,
}

/// Whether this host follows the rollout waves releases sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutMode {
    #[default]
    Wave,
    Immediate,
}

/// Signed host receipts in the store (`<remote>/hosts/<host_id>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A receipt is written at least this often even when nothing changes.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
}

fn default_heartbeat() -> u64 {
    3600
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        ReceiptsConfig {
            enabled: true,
            heartbeat_secs: default_heartbeat(),
        }
    }
}

/// Lockout protection (see `docs/lockout.md`): inspect a built system before
/// switching to it, and keep a switched host on probation until its new
/// agent proves it can still reach the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Build the new system first and refuse it (`would-lock-out`) unless it
    /// still runs this agent, following this remote with enough keys.
    #[serde(default = "default_true")]
    pub inspect: bool,
    /// Seconds a switched system has to confirm (one successful poll, and
    /// the health check if configured) before it is rolled back; 0 turns
    /// probation off.
    #[serde(default = "default_probation")]
    pub probation_secs: u64,
    /// What rolls back an unconfirmed switch if the new agent never runs.
    #[serde(default)]
    pub watchdog: WatchdogKind,
}

/// The deadline keeper that lives outside the service being replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchdogKind {
    /// A transient systemd timer (`systemd-run --on-active`) running this
    /// npcnix binary's `probation expire`.
    #[default]
    SystemdRun,
    /// None: only the agent itself acts on an expired probation (at its next
    /// start). For hosts without systemd; see docs/lockout.md.
    None,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            inspect: true,
            probation_secs: default_probation(),
            watchdog: WatchdogKind::SystemdRun,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_probation() -> u64 {
    300
}

/// Rebooting into a `boot`-mode release whose kernel, initrd or kernel
/// modules changed (as `system.autoUpgrade.allowReboot` does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootConfig {
    #[serde(default)]
    pub allow: bool,
    /// Local-time window (`HH:MM`, may wrap past midnight) outside which the
    /// agent waits with a reboot; `null` = any time.
    #[serde(default)]
    pub window: Option<RebootWindow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootWindow {
    pub lower: String,
    pub upper: String,
}

impl RebootWindow {
    /// Minutes after midnight of `HH:MM`.
    pub fn parse_hhmm(s: &str) -> Option<u32> {
        let (h, m) = s.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    }

    /// Whether `minute` (minutes after local midnight) is inside the window;
    /// a window whose upper bound is below its lower one wraps midnight.
    pub fn contains(&self, minute: u32) -> bool {
        let (Some(lo), Some(hi)) = (Self::parse_hhmm(&self.lower), Self::parse_hhmm(&self.upper))
        else {
            return false;
        };
        if lo <= hi {
            (lo..hi).contains(&minute)
        } else {
            minute >= lo || minute < hi
        }
    }
}

/// Where the network side of a poll runs (see [`crate::host::fetcher`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetcherConfig {
    /// The unprivileged user the fetch worker runs as.
    #[serde(default = "default_fetch_user")]
    pub user: String,
    #[serde(default)]
    pub isolation: crate::host::fetcher::Isolation,
}

fn default_fetch_user() -> String {
    "npcnix-fetch".into()
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            user: default_fetch_user(),
            isolation: Default::default(),
        }
    }
}

impl RemoteConfig {
    /// Backend settings for [`crate::store::open_url`].
    /// `read_timeout_secs`: an override of the configured read time-out.
    pub fn store_options(&self, read_timeout_secs: Option<u64>) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            path_style: self.path_style,
            read_timeout_secs: read_timeout_secs.or(self.read_timeout_secs),
            connect_timeout_secs: self.connect_timeout_secs,
            ca_file: self.ca_file.clone(),
            min_rate_bytes_per_sec: self.min_rate_bytes_per_sec,
            client_attempts: None,
            profile: None,
        }
    }
}

/// Programs run after the agent records a decision (`hooks`, issue 33):
/// notifications, never a say in the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    #[serde(default)]
    pub commands: Vec<HookConfig>,
    /// `stale` fires once when a poll fails and no poll ended well for
    /// this long.
    #[serde(default = "default_stale_after")]
    pub stale_after_secs: u64,
}

fn default_stale_after() -> u64 {
    3600
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            commands: Vec::new(),
            stale_after_secs: default_stale_after(),
        }
    }
}

/// One hook: a program (absolute path, arguments) and the events that run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub command: Vec<String>,
    /// Events that run it (default: every one).
    #[serde(default = "HookEvent::all")]
    pub events: Vec<HookEvent>,
    /// Killed (with its process group) after this long; all hooks of one
    /// poll together get at most a fifth of the probation period (so a
    /// slow hook never runs out the clock of a release on probation).
    #[serde(default = "default_hook_timeout")]
    pub timeout_secs: u64,
}

fn default_hook_timeout() -> u64 {
    30
}

/// What a hook is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookEvent {
    /// A release was activated.
    Activated,
    /// A release was refused (once per change of the refusing check).
    Refused,
    /// A release on probation was rolled back.
    RolledBack,
    /// Rolling a release back failed: it stays on probation, retried.
    RollbackFailed,
    /// A release went on probation (the watchdog is armed).
    ProbationArmed,
    /// A release on probation was confirmed.
    Confirmed,
    /// No poll ended well for `stale_after_secs` (once per stale period).
    Stale,
}

impl HookEvent {
    pub fn all() -> Vec<HookEvent> {
        vec![
            HookEvent::Activated,
            HookEvent::Refused,
            HookEvent::RolledBack,
            HookEvent::RollbackFailed,
            HookEvent::ProbationArmed,
            HookEvent::Confirmed,
            HookEvent::Stale,
        ]
    }

    pub fn name(self) -> &'static str {
        match self {
            HookEvent::Activated => "activated",
            HookEvent::Refused => "refused",
            HookEvent::RolledBack => "rolled-back",
            HookEvent::RollbackFailed => "rollback-failed",
            HookEvent::ProbationArmed => "probation-armed",
            HookEvent::Confirmed => "confirmed",
            HookEvent::Stale => "stale",
        }
    }

    /// The hook event an audit event is, if any (`rejected` only when
    /// `new_refusal`: the refusing check changed).
    pub fn of_audit(event: &str, new_refusal: bool) -> Option<HookEvent> {
        match event {
            "activated" => Some(HookEvent::Activated),
            "rejected" if new_refusal => Some(HookEvent::Refused),
            "rolled-back" => Some(HookEvent::RolledBack),
            "rollback-failed" => Some(HookEvent::RollbackFailed),
            "probation-started" => Some(HookEvent::ProbationArmed),
            "confirmed" => Some(HookEvent::Confirmed),
            _ => None,
        }
    }
}

/// A declarative hold (`hold`, issue 34): the host verifies newer releases
/// but activates none above `max_version`, until the config changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldConfig {
    pub max_version: u64,
    /// Why (shown by status, receipts and fleet status).
    pub reason: String,
}
