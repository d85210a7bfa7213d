//! `npcnix keygen`: a minisign-compatible key pair.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use npcnix::format::keys::{KeyProtection, ScryptLimits, SecretKey};
use npcnix::fsutil;

#[derive(clap::Args)]
#[command(
    about = "Generate a minisign-compatible signing key pair (PATH.key, PATH.pub)",
    long_about = "Generate an Ed25519 signing key pair in minisign's file formats: PATH.key (secret, \
mode 0600, scrypt-encrypted with a passphrase unless --unencrypted) and PATH.pub (public). Existing files \
are never overwritten. Keys work with the stock minisign tool and vice versa.\n\nThe passphrase is read \
from NPCNIX_PASSPHRASE, or asked for twice on the terminal. Use --unencrypted only for keys that live in \
a CI secret store.\n\nExample:\n  npcnix keygen --out ci-dev    # ci-dev.key (secret), ci-dev.pub (pin it on hosts)"
)]
pub struct Args {
    /// Base path: writes PATH.key and PATH.pub
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Store the secret key unencrypted (for CI secret stores)
    #[arg(long)]
    unencrypted: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

fn with_ext(p: &std::path::Path, ext: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn passphrase() -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("NPCNIX_PASSPHRASE") {
        if p.is_empty() {
            bail!("NPCNIX_PASSPHRASE is empty; use --unencrypted for an unprotected key");
        }
        return Ok(Zeroizing::new(p));
    }
    let a = Zeroizing::new(
        rpassword::prompt_password("Passphrase for the new key: ")
            .context("reading the passphrase (set NPCNIX_PASSPHRASE when there is no terminal)")?,
    );
    let b = Zeroizing::new(
        rpassword::prompt_password("Passphrase (again): ").context("reading the passphrase")?,
    );
    if a.as_str() != b.as_str() {
        bail!("the passphrases differ");
    }
    if a.is_empty() {
        bail!("empty passphrase; use --unencrypted for an unprotected key");
    }
    Ok(a)
}

pub fn run(a: Args) -> Result<()> {
    let key_path = with_ext(&a.out, ".key");
    let pub_path = with_ext(&a.out, ".pub");
    for p in [&key_path, &pub_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            bail!(
                "{} already exists; npcnix never overwrites key files",
                p.display()
            );
        }
    }
    let (protection, pass) = if a.unencrypted {
        (KeyProtection::Unencrypted, Zeroizing::new(String::new()))
    } else {
        (KeyProtection::Passphrase, passphrase()?)
    };
    let sk = SecretKey::generate()?;
    if protection == KeyProtection::Passphrase && !a.json {
        info!("deriving the encryption key (scrypt, 1 GiB, a few seconds) ...");
    }
    let deriving = (protection == KeyProtection::Passphrase)
        .then(|| super::progress::spinner("deriving the encryption key (scrypt)"));
    let text = sk.to_file_text(protection, pass.as_bytes(), ScryptLimits::default())?;
    drop(deriving);
    fsutil::write_new(&key_path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", key_path.display()))?;
    let pk = sk.public_key();
    fsutil::write_new(&pub_path, pk.to_file_text().as_bytes(), 0o644)
        .with_context(|| format!("writing {}", pub_path.display()))?;
    if a.json {
        super::common::print_json(&serde_json::json!({
            "key_id": pk.key_id.to_string(),
            "public_key": pk.to_base64(),
            "secret_key_file": key_path,
            "public_key_file": pub_path,
            "encrypted": protection == KeyProtection::Passphrase,
        }));
    } else {
        outln!("key id:      {}", pk.key_id);
        outln!("public key:  {}", pk.to_base64());
        outln!(
            "secret key:  {} ({})",
            key_path.display(),
            if a.unencrypted {
                "UNENCRYPTED"
            } else {
                "encrypted"
            }
        );
        outln!("public file: {}", pub_path.display());
        outln!("Pin the public key on hosts (trusted keys); keep the secret key offline or in a secret store.");
    }
    Ok(())
}
