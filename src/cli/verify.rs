//! `npcnix verify`: check a release offline (bundle + archive files).

use std::path::PathBuf;

use anyhow::{Context, Result};

use npcnix::archive;
use npcnix::format::bundle::{Bundle, BUNDLE_MAX_BYTES};
use npcnix::format::statement::Statement;
use npcnix::fsutil::{self, TempDir};
use npcnix::publish;
use npcnix::verify::{self, Policy};

use super::common;
use super::exit::Rejected;
use npcnix::format::bundle::BundleError;
use npcnix::verify::{ArchiveMismatch, Refusal};

#[derive(clap::Args)]
#[command(
    about = "Verify a release bundle and its archive offline",
    long_about = "Verify a release offline: the bundle's signatures against the trusted keys, the \
trusted-comment binding, the statement, expiry and future dating, then the archive's size and BLAKE3 \
against the statement, and finally a trial extraction with the hardened extractor into a temp dir. \
Exit code 3 if anything fails. No rollback check: there is no host state here.\n\nExample:\n  npcnix verify --bundle latest --archive release.tar.zst --trusted-key ci.pub"
)]
pub struct Args {
    /// Release bundle file (a copy of latest or releases/<v>)
    #[arg(long, value_name = "FILE")]
    bundle: PathBuf,
    /// The release's .tar.zst
    #[arg(long, value_name = "FILE")]
    archive: PathBuf,
    /// Trusted public key: a .pub file or an RW... string (repeatable)
    #[arg(long = "trusted-key", value_name = "PUBKEY", required = true)]
    trusted_keys: Vec<String>,
    /// Remote name the release must be for (default: the name the release claims, printed)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// Override a resource limit, e.g. entries=500000 (repeatable; see docs/protocol.md)
    #[arg(long = "limit", value_name = "KEY=VALUE")]
    limits: Vec<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let bytes =
        std::fs::read(&a.bundle).with_context(|| format!("reading {}", a.bundle.display()))?;
    if bytes.len() > BUNDLE_MAX_BYTES {
        return Err(Rejected(Refusal::Bundle(BundleError::TooLarge)).into());
    }
    let remote = match &a.remote_name {
        Some(n) => common::remote_name("", Some(n))?,
        // Only to pick the expected name; everything is verified below.
        None => Bundle::decode(&bytes)
            .ok()
            .and_then(|b| Statement::parse(&b.statement).ok())
            .map(|s| s.remote)
            .ok_or_else(|| {
                Rejected(Refusal::Bundle(BundleError::Malformed(
                    "cannot read the remote name from the bundle; pass --remote-name".into(),
                )))
            })?,
    };
    let keys = common::load_public_keys(&a.trusted_keys)?;
    let policy = Policy::manual(remote.clone(), keys);
    let now = fsutil::now_unix();
    let release = verify::verify_signatures(&policy, &bytes, now).map_err(Rejected)?;
    verify::check_policy(&policy, None, &release, now).map_err(Rejected)?;
    let st = release.statement();
    let aref = publish::hash_file(&a.archive)?;
    if let Some(m) = ArchiveMismatch::between(&aref, &st.archive) {
        return Err(Rejected(Refusal::Archive(m)).into());
    }
    let tmp = TempDir::new_in(&std::env::temp_dir(), "npcnix-verify-")?;
    let f = std::fs::File::open(&a.archive)?;
    let stats = archive::extract(
        f,
        &tmp.path().join("t").tap_mkdir()?,
        &common::limits(&a.limits)?,
    )
    .map_err(|e| match e {
        archive::ExtractError::Refused(m) => {
            anyhow::Error::from(Rejected(Refusal::ArchiveContent(m)))
        }
        other => anyhow::Error::from(other),
    })?;
    if a.json {
        common::print_json(&serde_json::json!({
            "ok": true,
            "remote": remote.as_str(),
            "version": st.version,
            "statement": release.statement_hash().to_hex(),
            "previous": st.previous.map(|d| d.to_hex()),
            "created": st.created,
            "expires": st.expires,
            "signers": release.signers().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "archive": {"blake3": st.archive.blake3.to_hex(), "size": st.archive.size},
            "files": stats.files,
        }));
    } else {
        outln!(
            "OK: {} version {} is validly signed by {}",
            remote,
            st.version,
            release
                .signers()
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        outln!("  statement: {}", release.statement_hash());
        outln!("  created:   {}", npcnix::format::time::rfc3339(st.created));
        if let Some(e) = st.expires {
            outln!("  expires:   {}", npcnix::format::time::rfc3339(e));
        }
        outln!(
            "  archive:   {} ({}), {} files extract cleanly",
            st.archive.blake3,
            super::out::size(st.archive.size),
            stats.files
        );
    }
    Ok(())
}

trait TapMkdir: Sized {
    fn tap_mkdir(self) -> std::io::Result<Self>;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> std::io::Result<Self> {
        std::fs::create_dir(&self)?;
        Ok(self)
    }
}
