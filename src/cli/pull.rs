//! `npcnix pull`: the verified pull into a new directory.

use std::path::PathBuf;

use anyhow::Result;

use npcnix::fsutil;
use npcnix::host::pull;
use npcnix::verify::{ExpiryPolicy, Policy};

use super::common;

#[derive(clap::Args)]
#[command(
    about = "Fetch, verify and extract the latest release of a remote",
    long_about = "Fetch the remote's latest release bundle, verify it against the trusted keys \
(signature, trusted-comment binding, remote name, expiry, future dating, rollback and equivocation \
against what this data dir has verified before), download the archive no further than its signed size, \
check its BLAKE3, extract it with the hardened extractor into a private temp dir, record the version, and \
move the tree to DST.\n\nOn any rejection: exit code 3, one line on stderr naming the failed check, DST \
not created, state unchanged. Rollback state is kept per remote name (the signed identity), so moving to \
a mirror URL keeps the protection.\n\nExample:\n  npcnix pull --remote https://mirror.example.org/npcnix/prod --trusted-key RWQ... --dst ./checkout"
)]
pub struct Args {
    /// Remote URL, e.g. file:///srv/npcnix/remotes/prod
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Trusted public key: a .pub file or an RW... string (repeatable)
    #[arg(long = "trusted-key", value_name = "PUBKEY", required = true)]
    trusted_keys: Vec<String>,
    /// Where to put the extracted flake (must not exist)
    #[arg(long, value_name = "DIR")]
    dst: PathBuf,
    /// State, audit log and private temp space [default: /var/lib/npcnix
    /// as root, else $XDG_STATE_HOME/npcnix or ~/.local/state/npcnix]
    #[arg(long, value_name = "DIR", env = "NPCNIX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The remote's signed name (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// Refuse releases that carry no expiry time
    #[arg(long)]
    require_expiry: bool,
    /// Fetch and verify every release between the last verified one and the
    /// new one, refusing a release that does not descend from it (forks)
    #[arg(long)]
    require_chain: bool,
    /// Refuse to extract unless Landlock confines the extraction's writes
    #[arg(long)]
    require_confinement: bool,
    /// Refuse versions below N
    #[arg(long, value_name = "N", default_value_t = 0)]
    min_version: u64,
    /// Override a resource limit, e.g. entries=500000 (repeatable; see docs/protocol.md)
    #[arg(long = "limit", value_name = "KEY=VALUE")]
    limits: Vec<String>,
    #[command(flatten)]
    store: common::StoreArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let keys = common::load_public_keys(&a.trusted_keys)?;
    let mut policy = Policy::manual(remote.clone(), keys);
    if a.require_expiry {
        policy.expiry = ExpiryPolicy::Required;
    }
    policy.min_version = a.min_version;
    let store = a.store.open(&a.remote)?;
    let data = common::open_data_dir(&common::data_dir(a.data_dir)?)?;
    let now = fsutil::now_unix();
    let limits = common::limits(&a.limits)?;
    let progress = super::progress::handle();
    let req = pull::PullRequest {
        policy: &policy,
        limits: &limits,
        require_chain: a.require_chain,
        confinement: if a.require_confinement {
            npcnix::archive::confine::ConfinementPolicy::Required
        } else {
            npcnix::archive::confine::ConfinementPolicy::BestEffort
        },
        dst: &a.dst,
        progress: &*progress,
    };
    let pulled = pull::pull_to(&store, &data, &req, now)?;
    for w in &pulled.warnings {
        warn!("{w}");
    }
    if !matches!(
        pulled.confinement,
        npcnix::archive::confine::Confinement::Enforced
    ) {
        info!("note: {}", pulled.confinement);
    }
    let st = pulled.release.statement();
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "version": st.version,
            "new": pulled.new,
            "statement": pulled.release.statement_hash().to_hex(),
            "archive": {"blake3": st.archive.blake3.to_hex(), "size": st.archive.size},
            "signers": pulled.release.signers().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "dst": pulled.dst,
            "files": pulled.stats.files,
            "dirs": pulled.stats.dirs,
            "symlinks": pulled.stats.symlinks,
            "bytes": pulled.stats.bytes,
            "confinement": pulled.stats.confinement,
        }));
    } else {
        outln!(
            "verified {} version {} (signed by {}; created {})",
            remote,
            st.version,
            pulled
                .release
                .signers()
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            npcnix::format::time::rfc3339(st.created)
        );
        if !pulled.new {
            outln!("  (this host had already verified this release)");
        }
        outln!(
            "  archive:   {} ({}, hash and size match)",
            st.archive.blake3,
            super::out::size(st.archive.size)
        );
        outln!(
            "  extracted: {} files, {} dirs, {} symlinks, {} -> {}",
            pulled.stats.files,
            pulled.stats.dirs,
            pulled.stats.symlinks,
            super::out::size(pulled.stats.bytes),
            pulled.dst.display()
        );
    }
    Ok(())
}
