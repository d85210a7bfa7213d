//! Helpers shared by subcommands: key loading, remote names, exit codes.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

use npcnix::format::keys::{PublicKey, SecretKey, KEY_FILE_MAX_BYTES};
use npcnix::format::statement::RemoteName;
use npcnix::store;

/// Reads a small text file with a size bound.
pub fn read_small(path: &Path, max: usize, what: &str) -> Result<String> {
    let f = fs::File::open(path).with_context(|| format!("opening {what} {}", path.display()))?;
    let mut s = String::new();
    f.take(max as u64 + 1)
        .read_to_string(&mut s)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if s.len() > max {
        bail!("{what} {} is larger than {max} bytes", path.display());
    }
    Ok(s)
}

/// A `--trusted-key` value: a `.pub` file path, or the `RW...` key itself.
/// A value that is no file but looks like a key (base64 starting `RW`)
/// and does not decode is a usage error that says so, not "no such file".
pub fn load_public_key(arg: &str) -> Result<PublicKey> {
    let key_err = match PublicKey::from_base64(arg) {
        Ok(pk) => return Ok(pk),
        Err(e) => e,
    };
    let path = Path::new(arg);
    if !path.exists() && looks_like_key(arg) {
        return Err(super::exit::usage(format!(
            "public key {arg:?} looks like a minisign public key (RW...) but does not decode: {key_err} (check for a typo or a truncated copy; a key file must be named by its path)"
        )));
    }
    if !path.exists() {
        bail!("public key {arg:?}: no such file, and not a minisign public key (RW...)");
    }
    let text = read_small(path, KEY_FILE_MAX_BYTES, "public key file")?;
    match PublicKey::parse(&text) {
        // The wrong file on the command line: a usage error.
        Err(e @ npcnix::format::keys::KeyError::SecretKeyGiven) => {
            Err(super::exit::usage(format!("public key file {arg}: {e}")))
        }
        r => r.with_context(|| format!("public key file {arg}")),
    }
}

/// Whether a key argument is meant as the key itself: minisign public keys
/// are base64 that starts with `RW` (the Ed25519 algorithm tag).
fn looks_like_key(arg: &str) -> bool {
    arg.starts_with("RW")
        && arg.len() >= 20
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        && !arg.contains("//")
}

/// Checks a flake directory argument exists before anything reads it, so
/// a typo is not reported as "has no flake.nix".
pub fn existing_dir(flag: &str, dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{flag} {}: not a directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{flag} {}: no such directory", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("{flag} {}", dir.display())),
    }
}

pub fn load_public_keys(args: &[String]) -> Result<Vec<PublicKey>> {
    if args.is_empty() {
        bail!("at least one --trusted-key is required");
    }
    args.iter().map(|a| load_public_key(a)).collect()
}

/// Loads a secret key, asking for a passphrase only if the file is
/// encrypted: from `NPCNIX_PASSPHRASE`, else a terminal prompt.
pub fn load_secret_key(path: &Path) -> Result<SecretKey> {
    // Pre-sized so the buffer holding the key never reallocates (which would
    // leave unwiped copies behind).
    let mut raw = Zeroizing::new(Vec::with_capacity(KEY_FILE_MAX_BYTES + 1));
    let f = fs::File::open(path)
        .with_context(|| format!("opening secret key file {}", path.display()))?;
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        f.metadata()
            .with_context(|| format!("secret key file {}", path.display()))?
            .permissions()
            .mode()
    };
    f.take(KEY_FILE_MAX_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading secret key file {}", path.display()))?;
    if raw.len() > KEY_FILE_MAX_BYTES {
        bail!(
            "secret key file {} is larger than {KEY_FILE_MAX_BYTES} bytes",
            path.display()
        );
    }
    let text = std::str::from_utf8(&raw)
        .map_err(|_| anyhow!("secret key file {} is not text", path.display()))?;
    let mut prompt_err = None;
    let mut encrypted = false;
    // Shown from the passphrase on until the key is decrypted (scrypt, a
    // few seconds).
    let mut deriving = None;
    let sk = SecretKey::parse_with(text, |_| {
        encrypted = true;
        let pass = if let Ok(p) = std::env::var("NPCNIX_PASSPHRASE") {
            Some(Zeroizing::new(p.into_bytes()))
        } else {
            match rpassword::prompt_password(format!("Passphrase for {}: ", path.display())) {
                Ok(p) => Some(Zeroizing::new(p.into_bytes())),
                Err(e) => {
                    prompt_err = Some(e);
                    None
                }
            }
        };
        if pass.is_some() {
            deriving = Some(super::progress::spinner(
                "deriving the key from the passphrase (scrypt)",
            ));
        }
        pass
    });
    drop(deriving);
    // Like ssh: an unencrypted key others can read is not used.
    if mode & 0o077 != 0 && !encrypted && sk.is_ok() {
        bail!(
            "secret key file {} is not encrypted and is accessible by group or others (mode {:04o}); \
             run `chmod 600 {}` (or encrypt the key) and try again",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    match sk {
        Ok(sk) => Ok(sk),
        Err(npcnix::format::keys::KeyError::PassphraseRequired) => Err(anyhow!(
            "secret key {} is encrypted: set NPCNIX_PASSPHRASE or run from a terminal ({})",
            path.display(),
            prompt_err.map(|e| e.to_string()).unwrap_or_default()
        )),
        Err(e) => Err(e).with_context(|| format!("secret key {}", path.display())),
    }
}

/// The remote name: explicit, or the URL's last path segment.
pub fn remote_name(url: &str, explicit: Option<&str>) -> Result<RemoteName> {
    let name = match explicit {
        Some(n) => n,
        None => store::default_remote_name(url).ok_or_else(|| {
            anyhow!("cannot derive a remote name from {url:?}; pass --remote-name")
        })?,
    };
    RemoteName::new(name).map_err(|e| match explicit {
        Some(_) => super::exit::usage(format!("--remote-name {name:?}: {e}")),
        None => super::exit::usage(format!(
            "remote name {name:?} (the last segment of {url}): {e}; pass --remote-name to choose one"
        )),
    })
}

/// clap value parser for `--remote URL`: a scheme npcnix can open and a
/// well-formed location, so a typo is a usage error (exit 2) before
/// anything runs.
pub fn remote_url(s: &str) -> std::result::Result<String, String> {
    if store::Scheme::well_formed(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unsupported remote URL {s:?}: expected {}",
            store::Scheme::accepted()
        ))
    }
}

/// clap value parser for durations ("30d", "12h", "90min") in seconds.
/// [`duration_secs`] for values read after parsing: a bad one is a usage
/// error (exit 2).
pub fn parse_duration(s: &str) -> Result<u64> {
    duration_secs(s).map_err(|e| super::exit::usage(format!("{s:?}: {e}")))
}

/// Shortest release lifetime `--expires` accepts: a shorter one expires
/// before a publish's wave reaches every host, or on arrival (`0s` was
/// accepted and published an expired release).
pub const MIN_RELEASE_EXPIRY_SECS: u64 = 3600;

/// clap value parser for a release's `--expires`: a duration of at least
/// [`MIN_RELEASE_EXPIRY_SECS`].
pub fn release_expiry_secs(s: &str) -> std::result::Result<u64, String> {
    let secs = duration_secs(s)?;
    if secs < MIN_RELEASE_EXPIRY_SECS {
        return Err(format!(
            "{s:?} is shorter than an hour: hosts would refuse the release on arrival or soon after (for short-lived freshness, use a timestamp key: `npcnix timestamp`)"
        ));
    }
    Ok(secs)
}

pub fn duration_secs(s: &str) -> std::result::Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30d, 12h, 90min)"))
}

/// The data directory: flag, else `NPCNIX_DATA_DIR` (clap env), else the
/// default for this user ([`super::env::default_data_dir`]).
pub fn data_dir(arg: Option<PathBuf>) -> Result<PathBuf> {
    match arg {
        Some(d) => Ok(d),
        None => super::env::default_data_dir(),
    }
}

/// Opens (creating it if needed) a data directory. A permission error
/// says how to choose another one.
pub fn open_data_dir(dir: &Path) -> Result<npcnix::host::state::DataDir> {
    use npcnix::host::state::{DataDir, StateError};
    match DataDir::open(dir) {
        Ok(d) => Ok(d),
        Err(StateError::Io { path, source })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(anyhow!(
                "data directory {}: {source}; run as a user who may write it, or choose another data directory with --data-dir DIR or NPCNIX_DATA_DIR (as a non-root user the default is $XDG_STATE_HOME/npcnix or ~/.local/state/npcnix)",
                path.display()
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn print_json(v: &serde_json::Value) {
    super::out::json(v);
}

/// Parses repeated `--limit KEY=VALUE` options over the defaults. Every
/// problem is a usage error.
pub fn limits(args: &[String]) -> Result<npcnix::archive::limits::Limits> {
    limits_inner(args).map_err(|e| super::exit::usage(format!("{e:#}")))
}

fn limits_inner(args: &[String]) -> Result<npcnix::archive::limits::Limits> {
    let mut o = npcnix::archive::limits::LimitOverrides::default();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| anyhow!("--limit expects KEY=VALUE, got {a:?}"))?;
        let n: u64 = v
            .parse()
            .map_err(|_| anyhow!("--limit {k}: {v:?} is not a number"))?;
        let small = || u32::try_from(n).map_err(|_| anyhow!("--limit {k}: {n} is too large"));
        match k {
            "archive_bytes" => o.archive_bytes = Some(n),
            "unpacked_bytes" => o.unpacked_bytes = Some(n),
            "entries" => o.entries = Some(n),
            "depth" => o.depth = Some(small()?),
            "path_bytes" => o.path_bytes = Some(small()?),
            "file_bytes" => o.file_bytes = Some(n),
            "zstd_window_log" => o.zstd_window_log = Some(small()?),
            _ => bail!(
                "unknown limit {k:?}; known: archive_bytes, unpacked_bytes, entries, depth, path_bytes, file_bytes, zstd_window_log"
            ),
        }
    }
    o.resolve().map_err(|e| anyhow!(e))
}

/// How to reach a remote besides its URL (S3 settings).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StoreArgs {
    /// S3 region of the remote (default: the AWS chain, then us-east-1)
    #[arg(long, value_name = "REGION")]
    pub remote_region: Option<String>,
    /// S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, then AWS)
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Use path-style S3 addressing (endpoint/bucket/key)
    #[arg(long)]
    pub path_style: bool,
    /// Seconds to wait for a connection to the store [default: 10]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub connect_timeout: Option<u64>,
    /// Seconds to wait for each network read [default: 30, or
    /// NPCNIX_READ_TIMEOUT_SECS]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout: Option<u64>,
    /// PEM file of extra CA certificates for an HTTPS store or mirror behind
    /// a private CA (the platform's trust store, SSL_CERT_FILE and
    /// SSL_CERT_DIR are used too)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// AWS profile for s3:// remotes (else AWS_PROFILE, else `default`):
    /// keys, credential_process, assume-role; SSO through `credential_process
    /// = aws configure export-credentials --profile P --format process`
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Retries of a store request that failed transiently (connection,
    /// time-out, HTTP 5xx, throttling), about 1 s, 2 s, 4 s ... apart; each
    /// is announced on stderr. 0: fail at once
    #[arg(long, value_name = "N", env = "NPCNIX_RETRIES", default_value_t = DEFAULT_RETRIES,
          value_parser = clap::value_parser!(u32).range(0..=9))]
    pub retries: u32,
}

/// Retries by default: 3 attempts in all.
pub const DEFAULT_RETRIES: u32 = npcnix::store::retry::RetryPolicy::DEFAULT_ATTEMPTS - 1;

impl StoreArgs {
    pub fn options(&self) -> npcnix::store::StoreOptions {
        npcnix::store::StoreOptions {
            region: self.remote_region.clone(),
            endpoint: self.endpoint.clone(),
            path_style: self.path_style,
            read_timeout_secs: self.read_timeout.or_else(super::env::read_timeout),
            connect_timeout_secs: self.connect_timeout,
            ca_file: self.ca_file.clone(),
            min_rate_bytes_per_sec: None,
            client_attempts: None,
            profile: self.profile.clone(),
        }
    }

    /// The retries these flags ask for, announced on stderr.
    pub fn retry(&self) -> npcnix::store::retry::Retry {
        retry(self.retries)
    }

    /// Opens the remote for an operator command: transient failures
    /// retried visibly ([`retry`]), transfers shown as progress.
    pub fn open(&self, url: &str) -> Result<store::Remote> {
        open_observed(url, self.options(), self.retries)
    }
}

/// Retries as `retries` says, each announced as a warning:
/// `retrying (attempt 2/3) in 1.0 s after: STORE: KEY: ...`.
pub fn retry(retries: u32) -> npcnix::store::retry::Retry {
    use npcnix::store::retry::{Retry, RetryPolicy};
    Retry::new(RetryPolicy::standard(retries.saturating_add(1)), |n| {
        warn!(
            "retrying (attempt {}/{}) in {:.1} s after: {}",
            n.attempt,
            n.of,
            n.delay.as_secs_f64(),
            // The store's own words: escaped whole, newlines included, so
            // they cannot draw lines of their own.
            npcnix::format::text::visible(&n.error.to_string())
        )
    })
}

/// [`store::open_url`] for an operator command: the S3 client's own silent
/// retries off, ours (visible) on, progress for large transfers.
pub fn open_observed(
    url: &str,
    mut opts: store::StoreOptions,
    retries: u32,
) -> Result<store::Remote> {
    opts.client_attempts = Some(1);
    let inner = store::open_url(url, &opts)?;
    Ok(store::retry::observed(
        inner,
        retry(retries),
        super::progress::handle(),
    ))
}

/// `NPCNIX_RETRIES` for commands without `--retries` (they read the host
/// config: `audit`, `install`'s first read of the head).
pub fn env_retries() -> u32 {
    super::env::retries().map_or(DEFAULT_RETRIES, |n| n.min(9))
}

/// `--config` shared by the agent commands.
#[derive(clap::Args, Clone)]
pub struct ConfigArgs {
    /// Host config file (written by the NixOS module or `npcnix install`)
    #[arg(long, value_name = "FILE", env = "NPCNIX_CONFIG", default_value = npcnix::host::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Data dir (state, audit log, temp space); overrides the config's state_dir
    #[arg(long, value_name = "DIR", env = "NPCNIX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads and validates the config, explaining every problem.
    pub fn load(&self) -> Result<npcnix::host::config::Validated> {
        load_config(&self.config)
    }

    /// The data dir: `--data-dir`/`NPCNIX_DATA_DIR`, else the config's
    /// `state_dir` if it sets one, else the default for this user
    /// ([`super::env::default_data_dir`]: `/var/lib/npcnix` for root, the
    /// config's own default).
    pub fn data(
        &self,
        v: &npcnix::host::config::Validated,
    ) -> Result<npcnix::host::state::DataDir> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None if self.config_sets_state_dir()? => v.config.state_dir.clone(),
            None => super::env::default_data_dir()?,
        };
        open_data_dir(&dir)
    }

    /// Whether the config file names a `state_dir` (the parsed config
    /// cannot tell: it fills in `/var/lib/npcnix`).
    fn config_sets_state_dir(&self) -> Result<bool> {
        let text = read_small(&self.config, 1 << 20, "host config")?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("host config {}", self.config.display()))?;
        Ok(raw.get("state_dir").is_some())
    }
}

/// `--host-config FILE`: the trusted keys (with their scopes and dates) and
/// the threshold exactly as the hosts of `remote` have them, so a publisher
/// and the hosts cannot disagree on what a valid head is.
pub fn host_policy(path: &Path, remote: &RemoteName) -> Result<npcnix::verify::Policy> {
    let v = load_config(path)?;
    if &v.remote != remote {
        bail!(
            "host config {} follows remote {}, not {remote}",
            path.display(),
            v.remote
        );
    }
    Ok(v.policy)
}

pub fn load_config(path: &Path) -> Result<npcnix::host::config::Validated> {
    let text = read_small(path, 1 << 20, "host config")?;
    let mut v = check_config(&text).map_err(|problems| {
        let list = problems
            .iter()
            .map(|e| format!("\n  - {e}"))
            .collect::<String>();
        anyhow!("host config {} is invalid:{list}", path.display())
    })?;
    if v.host_id.is_empty() {
        v.host_id = super::env::machine_host_id().unwrap_or_default();
    }
    Ok(v)
}

/// Parses and validates a host config, returning every problem it can
/// find ([`npcnix::host::config::check`]).
pub fn check_config(
    text: &str,
) -> std::result::Result<npcnix::host::config::Validated, Vec<String>> {
    npcnix::host::config::check(text)
}

/// Where a publisher command learns the keys and threshold the remote's
/// hosts require (docs/cli.md, "The remote's policy"): `--policy`,
/// `--host-config`, the policy file in `--src`, or the flags.
#[derive(clap::Args, Debug, Default)]
pub struct TrustArgs {
    /// The fleet's policy file (npcnix-policy.json, also read by the NixOS
    /// module): the remote's keys and threshold [default: npcnix-policy.json
    /// in --src, if there is one]
    #[arg(long, value_name = "FILE", conflicts_with = "host_config")]
    pub policy: Option<PathBuf>,
    /// A host's config file: exactly the keys and threshold its agent uses
    #[arg(long, value_name = "FILE")]
    pub host_config: Option<PathBuf>,
    /// Another key the remote trusts (repeatable); with --policy or
    /// --host-config, a retired key that may have signed earlier releases
    #[arg(long = "trusted-key", value_name = "PUBKEY")]
    pub trusted_keys: Vec<String>,
    /// Signatures from distinct trusted keys a release needs (the remote's
    /// threshold) [default: the policy's; without one, at least as many as
    /// the current head carries]
    #[arg(long, value_name = "N", conflicts_with_all = ["policy", "host_config"])]
    pub threshold: Option<usize>,
}

impl TrustArgs {
    /// What the remote's hosts require, with `own` (the publisher's keys)
    /// trusted when it comes from the flags; and the extra (retired) keys
    /// given with a policy, for reading history.
    pub fn resolve(
        &self,
        remote: &RemoteName,
        own: &[PublicKey],
        src: Option<&Path>,
    ) -> Result<(npcnix::publish::RemoteTrust, Vec<PublicKey>)> {
        use npcnix::publish::{policy, RemoteTrust, TrustOrigin};
        let extra = self
            .trusted_keys
            .iter()
            .map(|a| load_public_key(a))
            .collect::<Result<Vec<_>>>()?;
        if let Some(p) = &self.host_config {
            let policy = host_policy(p, remote)?;
            return Ok((
                RemoteTrust {
                    policy,
                    origin: TrustOrigin::HostConfig(p.clone()),
                },
                extra,
            ));
        }
        let discovered = src
            .map(|s| s.join(policy::POLICY_FILE))
            .filter(|p| p.is_file() && self.trusted_keys.is_empty() && self.threshold.is_none());
        if let Some(p) = self.policy.clone().or(discovered) {
            let bytes = npcnix::fsutil::read_regular(&p, policy::POLICY_MAX_BYTES)
                .with_context(|| format!("reading the policy file {}", p.display()))?;
            let policy = policy::PolicyFile::parse(&bytes)
                .and_then(|f| f.policy_for(remote))
                .with_context(|| format!("policy file {}", p.display()))?;
            return Ok((
                RemoteTrust {
                    policy,
                    origin: TrustOrigin::PolicyFile(p),
                },
                extra,
            ));
        }
        let mut keys = own.to_vec();
        keys.extend(extra);
        if keys.is_empty() {
            return Err(super::exit::usage(
                "no key to verify the remote with: pass --policy, --host-config or --trusted-key"
                    .into(),
            ));
        }
        let mut policy = npcnix::verify::Policy::manual(remote.clone(), keys);
        policy.threshold = self.threshold.unwrap_or(1);
        let origin = if self.threshold.is_some() {
            TrustOrigin::Flags
        } else {
            TrustOrigin::FlagsWithoutThreshold
        };
        Ok((npcnix::publish::RemoteTrust { policy, origin }, Vec::new()))
    }
}
