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
pub fn load_public_key(arg: &str) -> Result<PublicKey> {
    if let Ok(pk) = PublicKey::from_base64(arg) {
        return Ok(pk);
    }
    let text = read_small(Path::new(arg), KEY_FILE_MAX_BYTES, "public key file")?;
    PublicKey::parse(&text).with_context(|| format!("public key file {arg}"))
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
    let sk = SecretKey::parse_with(text, |_| {
        encrypted = true;
        if let Ok(p) = std::env::var("NPCNIX_PASSPHRASE") {
            return Some(Zeroizing::new(p.into_bytes()));
        }
        match rpassword::prompt_password(format!("Passphrase for {}: ", path.display())) {
            Ok(p) => Some(Zeroizing::new(p.into_bytes())),
            Err(e) => {
                prompt_err = Some(e);
                None
            }
        }
    });
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
    RemoteName::new(name)
        .map_err(|e| anyhow!("{e} (derived from the URL; pass --remote-name to choose one)"))
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

/// Parses a human duration ("30d", "12h", "90min").
pub fn parse_duration(s: &str) -> Result<u64> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| anyhow!("invalid duration {s:?}: {e} (examples: 30d, 12h, 90min)"))
}

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Parses repeated `--limit KEY=VALUE` options over the defaults.
pub fn limits(args: &[String]) -> Result<npcnix::archive::limits::Limits> {
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
}

impl StoreArgs {
    pub fn options(&self) -> npcnix::store::StoreOptions {
        npcnix::store::StoreOptions {
            region: self.remote_region.clone(),
            endpoint: self.endpoint.clone(),
            path_style: self.path_style,
            read_timeout_secs: super::env::read_timeout(),
            min_rate_bytes_per_sec: None,
        }
    }
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
    let cfg = npcnix::host::config::HostConfig::parse(text.as_bytes())
        .with_context(|| format!("host config {}", path.display()))?;
    let mut v = cfg.validate().map_err(|errs| {
        let list = errs
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
