//! `npcnix install`: first boot. Writes the host config with pinned keys,
//! then runs the first verified activation.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use npcnix::fsutil;
use npcnix::host::config::{
    ActivationConfig, ActivationMode, HostConfig, PolicyConfig, PollConfig, RemoteConfig,
    TrustedKeyConfig, CONFIG_FORMAT, DEFAULT_CONFIG_PATH,
};
use npcnix::verify::ExpiryPolicy;

use super::common;
use super::follow::{self, Once};

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Switch,
    Boot,
    Test,
    DryActivate,
}

#[derive(clap::Args)]
#[command(
    about = "First boot: write the host config with pinned keys, then activate",
    long_about = "First boot of a host: write a host config that pins the given public keys \
(scoped to this remote) and then poll until the first verified release is activated. There is no \
unpinned first boot: at least one --trusted-key is required.\n\nOn NixOS hosts managed by the npcnix \
module, the module writes the config; use install only for the first boot (e.g. from cloud-init), before \
the module takes over.\n\nExample:\n  npcnix install --remote s3://fleet-releases/npcnix/prod --configuration web1 --trusted-key RWQ..."
)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// nixosConfigurations attribute to activate
    #[arg(long, value_name = "NAME")]
    configuration: String,
    /// Trusted public key (RW... or a .pub file), scoped to this remote (repeatable)
    #[arg(long = "trusted-key", value_name = "PUBKEY", required = true)]
    trusted_keys: Vec<String>,
    /// The remote's signed name (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// This host's ID in rollout waves and receipts (default: derived from
    /// /etc/machine-id); 1-64 of a-z 0-9 - _ .
    #[arg(long, value_name = "ID")]
    host_id: Option<String>,
    /// Signatures required from distinct trusted keys
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// How to reach the store (written into the config's `remote`)
    #[command(flatten)]
    store: common::StoreArgs,
    /// Refuse versions below N. Default: the version of the remote's head,
    /// verified with the pinned keys at install time, so a store writer
    /// cannot replay an older release to this new host (pass 0 to pin none)
    #[arg(long, value_name = "N")]
    min_version: Option<u64>,
    /// Refuse releases that carry no expiry time (freeze-attack defence)
    #[arg(long)]
    require_expiry: bool,
    /// Refuse a release more than N versions past the highest one seen (on
    /// first contact: past --min-version)
    #[arg(long, value_name = "N")]
    max_version_jump: Option<u64>,
    /// Activation mode
    #[arg(long, value_enum, default_value = "switch")]
    activation: Mode,
    /// Poll interval in seconds
    #[arg(long, default_value_t = 300)]
    interval: u64,
    /// Where to write the host config
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    config_out: PathBuf,
    /// Data dir (state, audit log, temp space)
    #[arg(
        long,
        value_name = "DIR",
        env = "NPCNIX_DATA_DIR",
        default_value = "/var/lib/npcnix"
    )]
    data_dir: PathBuf,
    /// Replace an existing config file
    #[arg(long)]
    force: bool,
    /// Only write the config; do not activate
    #[arg(long)]
    no_activate: bool,
    /// Print the result as JSON when done (the polls are reported on stderr)
    #[arg(long)]
    json: bool,
}

/// The version of the remote's head, verified with the config's keys and
/// threshold (0 for an empty remote): the first-contact floor.
/// Read as an operator command: `--retries` visible retries.
fn pinned_head(v: &npcnix::host::config::Validated, retries: u32) -> Result<u64> {
    let r = &v.config.remote;
    let store =
        common::open_observed(&r.url, r.store_options(super::env::read_timeout()), retries)?;
    let log = store.log();
    let bytes = match log.latest(None) {
        Ok(npcnix::store::Fetched::Object { bytes, .. }) => bytes,
        Err(e) if e.kind == npcnix::store::StoreErrorKind::NotFound => return Ok(0),
        Ok(npcnix::store::Fetched::NotModified) => {
            bail!("the store answered 'not modified' to an unconditional request")
        }
        Err(e) => {
            return Err(e).context("reading the remote's head to pin it (or pass --min-version)")
        }
    };
    let rel = npcnix::verify::verify_signatures(&v.policy, &bytes, fsutil::now_unix())
        .map_err(super::exit::Rejected)
        .context("the remote's head does not verify with the pinned keys (pass --min-version to install anyway)")?;
    info!(
        "pinning version {} (the remote's verified head) as the minimum version",
        rel.version()
    );
    Ok(rel.version())
}

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let keys = common::load_public_keys(&a.trusted_keys)?;
    let mut cfg = host_config(&a, &remote, &keys)?;
    let v = match cfg.validate() {
        Ok(v) => v,
        Err(errs) => {
            let list = errs
                .iter()
                .map(|e| format!("\n  - {e}"))
                .collect::<String>();
            bail!("the resulting config would be invalid:{list}");
        }
    };
    cfg.policy.min_version = match a.min_version {
        Some(n) => n,
        None => pinned_head(&v, a.store.retries)?,
    };
    if a.config_out.exists() && !a.force {
        bail!(
            "{} already exists; pass --force to replace it",
            a.config_out.display()
        );
    }
    if let Some(parent) = a.config_out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    fsutil::write_atomic(&a.config_out, &cfg.to_json(), 0o644)
        .with_context(|| format!("writing {}", a.config_out.display()))?;
    info!(
        "wrote {} (remote {remote}, {} pinned key(s))",
        a.config_out.display(),
        keys.len()
    );
    // The host's receipt key, made now so the operator can pin it.
    let data = common::open_data_dir(&a.data_dir)?;
    let hk = npcnix::host::receipts::host_key(&data)?;
    let host_id = if v.host_id.is_empty() {
        super::env::machine_host_id().unwrap_or_default()
    } else {
        v.host_id.clone()
    };
    info!(
        "this host's receipt key (pin it for `npcnix fleet status --host-keys`): {} {}",
        if host_id.is_empty() {
            "<no host id>"
        } else {
            &host_id
        },
        hk.public_key().to_base64()
    );
    if !a.no_activate {
        let cargs = common::ConfigArgs {
            config: a.config_out.clone(),
            data_dir: Some(a.data_dir.clone()),
        };
        let agent = follow::build_agent(&cargs)?;
        follow::follow_loop(&agent, Some(Once::Activate), false, false)?;
    }
    if a.json {
        common::print_json(&serde_json::json!({
            "host_id": host_id,
            "host_public_key": hk.public_key().to_base64(),
            "config": a.config_out,
            "remote": remote.as_str(),
            "url": a.remote,
            "configuration": a.configuration,
            "trusted_keys": keys.iter().map(|k| k.key_id.to_string()).collect::<Vec<_>>(),
            "min_version": cfg.policy.min_version,
            "activated": !a.no_activate,
        }));
    }
    Ok(())
}

/// The host config `install` writes, from its arguments.
fn host_config(
    a: &Args,
    remote: &npcnix::format::statement::RemoteName,
    keys: &[npcnix::format::keys::PublicKey],
) -> Result<HostConfig> {
    Ok(HostConfig {
        format: CONFIG_FORMAT.to_owned(),
        remote: RemoteConfig {
            mirrors: Vec::new(),
            url: a.remote.clone(),
            name: Some(remote.to_string()),
            threshold: a.threshold,
            region: a.store.remote_region.clone(),
            endpoint: a.store.endpoint.clone(),
            path_style: a.store.path_style,
            min_rate_bytes_per_sec: None,
            connect_timeout_secs: a.store.connect_timeout,
            read_timeout_secs: a.store.read_timeout,
            ca_file: a
                .store
                .ca_file
                .as_deref()
                .map(std::path::absolute)
                .transpose()
                .context("resolving --ca-file")?,
        },
        configuration: a.configuration.clone(),
        trusted_keys: keys
            .iter()
            .map(|k| TrustedKeyConfig {
                public_key: k.to_base64(),
                remotes: vec![remote.to_string()],
                not_after: None,
                comment: Some("pinned by npcnix install".into()),
                role: Default::default(),
            })
            .collect(),
        policy: PolicyConfig {
            min_version: 0,
            expiry: if a.require_expiry {
                ExpiryPolicy::Required
            } else {
                ExpiryPolicy::Optional
            },
            max_version_jump: a.max_version_jump,
            ..PolicyConfig::default()
        },
        poll: PollConfig {
            interval_secs: a.interval,
            ..PollConfig::default()
        },
        activation: ActivationConfig {
            mode: match a.activation {
                Mode::Switch => ActivationMode::Switch,
                Mode::Boot => ActivationMode::Boot,
                Mode::Test => ActivationMode::Test,
                Mode::DryActivate => ActivationMode::DryActivate,
            },
            ..ActivationConfig::default()
        },
        health_check: None,
        metrics_path: None,
        state_dir: std::path::absolute(&a.data_dir).context("resolving --data-dir")?,
        limits: Default::default(),
        fetcher: Default::default(),
        lockout: Default::default(),
        reboot: Default::default(),
        host_id: a.host_id.clone(),
        rollout: Default::default(),
        receipts: Default::default(),
        hooks: Default::default(),
        hold: None,
    })
}
