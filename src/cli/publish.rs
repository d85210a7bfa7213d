//! `npcnix publish`: pack (or take an archive), sign, upload.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use npcnix::format::bundle::Bundle;
use npcnix::format::statement::{Digest, Source};
use npcnix::fsutil::{self, TempDir};
use npcnix::publish::{self, StatementParams};
use npcnix::store;

use super::common;

#[derive(clap::Args)]
#[command(
    about = "Pack (or take an archive), sign and publish a release to a remote",
    long_about = "Publish a release: pack the flake (or take an already packed archive as it is), build \
the release statement (remote name, version, previous release's statement hash, archive BLAKE3 and size, \
created, optional expiry), sign it, and store archive, then releases/<version> (create-only), then latest \
(compare-and-swap).\n\nThe version defaults to the current latest + 1. If another publisher takes the \
version first, this fails with exit code 4 and changes nothing visible to hosts; run it again.\n\nExample:\n  npcnix publish --remote s3://fleet-releases/npcnix/prod --src ./flake --key ci.key --expires 30d"
)]
pub struct Args {
    /// Remote URL, e.g. file:///srv/npcnix/remotes/dev
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Secret key file (minisign format; NPCNIX_PASSPHRASE for encrypted keys)
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// Flake directory to pack
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "archive",
        required_unless_present = "archive"
    )]
    src: Option<PathBuf>,
    /// Publish an already packed archive as it is
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,
    /// Version to publish (default: current latest + 1)
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Hosts refuse the release after this long, e.g. 30d (freeze-attack defence)
    #[arg(long, value_name = "DURATION", value_parser = common::duration_secs)]
    expires: Option<u64>,
    /// Remote name signed into the release (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// With --src: pack every file, not just those git tracks
    #[arg(long)]
    all_files: bool,
    /// A one-line comment recorded in the statement (shown by `npcnix log`)
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    build: BuildArgs,
    /// Retire hosts of this configuration from the remote on purpose: they
    /// skip the lockout inspection and probation for this release, so it may
    /// stop their agent or point it elsewhere (repeatable; docs/lockout.md)
    #[arg(long, value_name = "CONFIGURATION")]
    decommission: Vec<String>,
    #[command(flatten)]
    rollout: RolloutArgs,
    /// Another key whose releases this publisher may extend (the head must be
    /// signed by this publisher's key or one of these; repeatable)
    #[arg(long = "trusted-key", value_name = "PUBKEY")]
    trusted_keys: Vec<String>,
    /// Signatures from distinct trusted keys the remote's head (and, for
    /// `log`, every release) must carry: the remote's threshold, as its
    /// hosts have it
    #[arg(long, value_name = "N", default_value_t = 1)]
    threshold: usize,
    /// Verify with exactly the keys and threshold the remote's hosts use:
    /// their host config file (overrides --trusted-key and --threshold)
    #[arg(long, value_name = "FILE")]
    host_config: Option<std::path::PathBuf>,
    #[command(flatten)]
    store: common::StoreArgs,
    #[command(flatten)]
    threads: super::pack::Threads,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// `--build`: sign the NixOS system paths too (hosts in `toplevel` mode).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BuildArgs {
    /// Build each configuration's config.system.build.toplevel with nix and
    /// sign configuration -> store path in the statement
    #[arg(long)]
    pub build: bool,
    /// With --build: only these nixosConfigurations (repeatable; default all)
    #[arg(long = "configuration", value_name = "NAME", requires = "build")]
    pub configurations: Vec<String>,
    /// With --build: push the closures to this binary cache (`nix copy --to`)
    #[arg(long, value_name = "URL", requires = "build")]
    pub copy_to: Option<String>,
    /// With --build: an extra argument for every nix call (repeatable), e.g.
    /// --nix-arg=--option --nix-arg=sandbox --nix-arg=false
    #[arg(
        long = "nix-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "build"
    )]
    pub nix_args: Vec<String>,
}

/// Builds the toplevels of the flake *as packed* (extracted from the archive
/// with the hardened extractor), so the signed paths are exactly what the
/// signed archive evaluates to.
pub fn build_toplevels(
    archive: &std::path::Path,
    work: &std::path::Path,
    b: &BuildArgs,
) -> Result<std::collections::BTreeMap<String, String>> {
    let nix = super::env::nix();
    let tree = work.join("build-src");
    std::fs::create_dir(&tree).context("creating the build dir")?;
    let f = std::fs::File::open(archive)?;
    npcnix::archive::extract(f, &tree, &npcnix::archive::limits::Limits::default())
        .context("extracting the archive to build it")?;
    let names = if b.configurations.is_empty() {
        nix.configurations(&tree, &b.nix_args)?
    } else {
        b.configurations.clone()
    };
    if names.is_empty() {
        anyhow::bail!("the flake has no nixosConfigurations to build");
    }
    let mut out = std::collections::BTreeMap::new();
    for n in names {
        info!("building nixosConfigurations.{n}.config.system.build.toplevel ...");
        let path = nix.build(&tree, &n, &b.nix_args)?;
        info!("  {n} -> {path}");
        out.insert(n, path);
    }
    if let Some(url) = &b.copy_to {
        let paths: Vec<String> = out.values().cloned().collect();
        info!("copying {} closure(s) to {url}", paths.len());
        nix.copy_to(url, &paths, &b.nix_args)?;
    }
    Ok(out)
}

/// Puts the release's archive at `out` (a private path): packs `src`, or
/// copies `archive` so the bytes hashed are the bytes uploaded even if the
/// original changes meanwhile. Returns the provenance to record.
pub fn stage_archive(
    src: Option<&Path>,
    archive: Option<&Path>,
    all_files: bool,
    comment: Option<String>,
    out: &Path,
    threads: &super::pack::Threads,
) -> Result<Option<Source>> {
    match (src, archive) {
        (Some(src), _) => {
            common::existing_dir("--src", src)?;
            super::pack::pack_to_file(src, out, all_files, &threads.options())?;
            Ok(source_info(src, comment))
        }
        (None, Some(archive)) => {
            std::fs::copy(archive, out)
                .with_context(|| format!("reading {}", archive.display()))?;
            Ok(comment.map(|c| Source {
                comment: Some(c),
                ..Source::default()
            }))
        }
        (None, None) => Err(super::exit::usage(
            "--src DIR or --archive FILE is required".into(),
        )),
    }
}

/// Informational provenance of a source tree.
pub fn source_info(src: &Path, comment: Option<String>) -> Option<Source> {
    let git_commit = Command::new("git")
        .env_remove("NPCNIX_PASSPHRASE")
        .arg("-C")
        .arg(src)
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let flake_lock_blake3 = std::fs::read(src.join("flake.lock"))
        .ok()
        .map(|b| Digest::of(&b));
    let s = Source {
        git_commit,
        flake_lock_blake3,
        comment,
    };
    (s != Source::default()).then_some(s)
}

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let sk = common::load_secret_key(&a.key)?;
    let expires_in = a.expires;

    let work = TempDir::new_in(&std::env::temp_dir(), "npcnix-publish-")
        .context("creating a private temp dir")?;
    let archive_path = work.path().join("release.tar.zst");
    let source = stage_archive(
        a.src.as_deref(),
        a.archive.as_deref(),
        a.all_files,
        a.comment.clone(),
        &archive_path,
        &a.threads,
    )?;
    let aref = publish::hash_file(&archive_path)?;
    let now = fsutil::now_unix();
    let mut head_keys = vec![sk.public_key()];
    for k in &a.trusted_keys {
        head_keys.push(common::load_public_key(k)?);
    }
    let head_policy = match &a.host_config {
        Some(p) => common::host_policy(p, &remote)?,
        None => {
            let mut p = npcnix::verify::Policy::manual(remote.clone(), head_keys);
            p.threshold = a.threshold;
            p
        }
    };
    let mut draft = publish::draft(
        store.as_ref(),
        &head_policy,
        aref.clone(),
        StatementParams {
            remote: remote.clone(),
            version: a.version,
            created: now,
            expires: expires_in.map(|d| now + d),
            source,
        },
        now,
    )?;
    if a.build.build {
        draft.statement.toplevels = Some(build_toplevels(&archive_path, work.path(), &a.build)?);
    }
    draft.statement.decommission = decommission_list(&a.decommission)?;
    draft.statement.rollout = a.rollout.plan()?;
    let bundle = Bundle {
        statement: draft.statement_bytes(),
        signatures: vec![draft.sign(&sk)],
    }
    .encode();
    publish::upload(
        store.as_ref(),
        &archive_path,
        &aref,
        draft.statement.version,
        &bundle,
        draft.head_etag(),
        &a.store.retry(),
    )?;
    let statement = draft.statement;
    let statement_bytes = statement.to_bytes();
    let statement_hash = Digest::of(&statement_bytes);
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "url": a.remote,
            "version": statement.version,
            "previous": statement.previous.map(|d| d.to_hex()),
            "statement": statement_hash.to_hex(),
            "archive": {"blake3": aref.blake3.to_hex(), "size": aref.size, "key": aref.object_key()},
            "key_id": sk.key_id.to_string(),
            "expires": statement.expires,
            "toplevels": statement.toplevels,
            "decommission": statement.decommission,
            "rollout": statement.rollout,
        }));
    } else {
        outln!(
            "published {} version {} to {}",
            remote,
            statement.version,
            a.remote
        );
        outln!(
            "  archive:   {} ({})",
            aref.blake3,
            super::out::size(aref.size)
        );
        outln!("  statement: {}", statement_hash);
        outln!("  signed by: {}", sk.key_id);
        if let Some(e) = statement.expires {
            outln!("  expires:   {}", npcnix::format::time::rfc3339(e));
        }
        if let Some(r) = &statement.rollout {
            outln!(
                "  rollout:   over {}s from now (hosts activate at their slot; `npcnix release revert` halts it)",
                r.duration()
            );
        }
        if let Some(d) = &statement.decommission {
            outln!(
                "  retires:   {} (no lockout protection for them)",
                d.join(", ")
            );
        }
    }
    Ok(())
}

/// `--rollout` / `--rollout-plan`: a signed rollout wave.
#[derive(clap::Args, Debug, Default)]
pub struct RolloutArgs {
    /// Spread activation over this long (e.g. 2h): each host waits for its
    /// own slot, derived from the remote, the version and its host ID
    #[arg(long, value_name = "DURATION", conflicts_with = "rollout_plan")]
    pub rollout: Option<String>,
    /// A staged wave as TIME=PERCENT points from 0 to 100 %, e.g.
    /// "0=1,1h=1,25h=100" (1 % at once, the rest over a day after an hour)
    #[arg(long, value_name = "POINTS")]
    pub rollout_plan: Option<String>,
}

impl RolloutArgs {
    pub fn plan(&self) -> Result<Option<npcnix::format::rollout::Rollout>> {
        use npcnix::format::rollout::Rollout;
        let plan = if let Some(d) = &self.rollout {
            let secs = common::parse_duration(d)
                .map_err(|e| super::exit::usage(format!("--rollout {d:?}: {e:#}")))?;
            Rollout::linear(secs)
        } else if let Some(p) = &self.rollout_plan {
            let mut points = Vec::new();
            for part in p.split(',') {
                let (t, pct) = part.split_once('=').ok_or_else(|| {
                    super::exit::usage(format!("--rollout-plan: {part:?} is not TIME=PERCENT"))
                })?;
                let t = if t.trim() == "0" {
                    0
                } else {
                    common::parse_duration(t.trim())
                        .map_err(|e| super::exit::usage(format!("--rollout-plan: {t:?}: {e:#}")))?
                };
                let pct: u32 = pct.trim().trim_end_matches('%').parse().map_err(|_| {
                    super::exit::usage(format!("--rollout-plan: {pct:?} is not a percentage"))
                })?;
                points.push((t, pct));
            }
            Rollout { points }
        } else {
            return Ok(None);
        };
        plan.check()
            .map_err(|e| super::exit::usage(format!("rollout: {e}")))?;
        Ok(Some(plan))
    }
}

/// `--decommission` values as the statement holds them: checked, sorted,
/// without duplicates; `None` when empty.
pub fn decommission_list(names: &[String]) -> Result<Option<Vec<String>>> {
    if let Some(bad) = names
        .iter()
        .find(|n| !npcnix::format::statement::is_configuration_name(n))
    {
        return Err(super::exit::usage(format!(
            "--decommission {bad:?}: not a nixosConfigurations attribute name (1-128 characters from A-Z a-z 0-9 - _ .)"
        )));
    }
    let mut list = names.to_vec();
    list.sort();
    list.dedup();
    Ok((!list.is_empty()).then_some(list))
}

/// `npcnix release revert --to N`.
#[derive(clap::Args)]
#[command(
    about = "Publish a new version with the content of an earlier one (revert, halt a rollout)",
    long_about = "Revert (or halt a rollout): publish a NEW version whose archive and signed system \
paths are those of version N. Hosts move forward to it like to any release, so rollback protection is \
never weakened; a revert carries no rollout wave, so hosts that were waiting for their slot of the bad \
version and hosts already running it both go to N's content at once.\n\nExample:\n  npcnix release \
revert --remote s3://bucket/npcnix/remotes/prod --key release.key --to 41"
)]
pub struct RevertArgs {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Secret key file (minisign format; NPCNIX_PASSPHRASE for encrypted keys)
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The version whose content to publish again
    #[arg(long, value_name = "N")]
    to: u64,
    /// Hosts refuse the release after this long, e.g. 30d
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
    /// Remote name signed into the release (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// Another key whose releases (the head, version N) may be trusted (repeatable)
    #[arg(long = "trusted-key", value_name = "PUBKEY")]
    trusted_keys: Vec<String>,
    /// Signatures the head and version N must carry
    #[arg(long, value_name = "N", default_value_t = 1)]
    threshold: usize,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

pub fn revert(a: RevertArgs) -> Result<()> {
    use npcnix::format::bundle::BUNDLE_MAX_BYTES;
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let sk = common::load_secret_key(&a.key)?;
    let expires_in = a
        .expires
        .as_deref()
        .map(common::parse_duration)
        .transpose()?;
    let now = fsutil::now_unix();
    let mut keys = vec![sk.public_key()];
    for k in &a.trusted_keys {
        keys.push(common::load_public_key(k)?);
    }
    let mut policy = npcnix::verify::Policy::manual(remote.clone(), keys);
    policy.threshold = a.threshold;
    let bytes = match store.get(&store::release_key(a.to), None, BUNDLE_MAX_BYTES as u64)? {
        store::Fetched::Object { bytes, .. } => bytes,
        store::Fetched::NotModified => bail!("the store answered 'not modified' to a plain read"),
    };
    let target = npcnix::verify::verify_signatures(&policy, &bytes, now)
        .map_err(super::exit::Rejected)
        .with_context(|| {
            format!("version {} does not verify with this key (add --trusted-key for the keys that signed it)", a.to)
        })?;
    if target.version() != a.to {
        bail!(
            "the store serves version {} as releases/{}: refusing to revert to it",
            target.version(),
            a.to
        );
    }
    let old = target.statement().clone();
    let work = TempDir::new_in(&std::env::temp_dir(), "npcnix-revert-")
        .context("creating a private temp dir")?;
    let archive_path = work.path().join("release.tar.zst");
    {
        let mut f = fsutil_create(&archive_path)?;
        let src = store.open(&old.archive.object_key(), old.archive.size)?;
        npcnix::store::transfer::copy_verified(src, &mut f, &old.archive)
            .context("downloading the archive")?
            .map_err(|m| anyhow::anyhow!("version {}'s archive in the store: {m}", a.to))?;
    }
    let mut draft = publish::draft(
        store.as_ref(),
        &policy,
        old.archive.clone(),
        StatementParams {
            remote: remote.clone(),
            version: None,
            created: now,
            expires: expires_in.map(|d| now + d),
            source: Some(Source {
                comment: Some(format!("revert to version {}", a.to)),
                ..Source::default()
            }),
        },
        now,
    )?;
    if draft.statement.version <= a.to + 1 && draft.statement.previous.is_some() {
        // Reverting to the head itself publishes a copy: allowed, but say so.
        info!("note: version {} is the current head", a.to);
    }
    // Version N must be in the history the head extends: walk the signed
    // `previous` links down from the head, so a store cannot pass off a
    // forked or planted release as N.
    let mut expected = draft.statement.previous;
    let mut v = draft.statement.version.saturating_sub(1);
    let mut steps = 0u32;
    while v > a.to {
        steps += 1;
        if steps > 10_000 {
            bail!(
                "version {} is more than 10000 releases below the head",
                a.to
            );
        }
        let b = match store.get(&store::release_key(v), None, BUNDLE_MAX_BYTES as u64)? {
            store::Fetched::Object { bytes, .. } => bytes,
            store::Fetched::NotModified => {
                bail!("the store answered 'not modified' to a plain read")
            }
        };
        let r = npcnix::verify::verify_signatures(&policy, &b, now)
            .map_err(super::exit::Rejected)
            .with_context(|| format!("release {v} between the head and version {}", a.to))?;
        if r.version() != v || Some(r.statement_hash()) != expected {
            return Err(super::exit::Unverified(format!(
                "the chain from the head down to version {} is broken at version {v}",
                a.to
            ))
            .into());
        }
        expected = r.statement().previous;
        v -= 1;
    }
    if Some(target.statement_hash()) != expected {
        return Err(super::exit::Unverified(format!(
            "version {} in the store is not the one the head's history names (a fork or a planted release)",
            a.to
        ))
        .into());
    }
    draft.statement.toplevels = old.toplevels.clone();
    let bundle = Bundle {
        statement: draft.statement_bytes(),
        signatures: vec![draft.sign(&sk)],
    }
    .encode();
    publish::upload(
        store.as_ref(),
        &archive_path,
        &old.archive,
        draft.statement.version,
        &bundle,
        draft.head_etag(),
        &a.store.retry(),
    )?;
    let version = draft.statement.version;
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "version": version,
            "reverted_to": a.to,
            "archive": {"blake3": old.archive.blake3.to_hex(), "size": old.archive.size},
            "toplevels": draft.statement.toplevels,
        }));
    } else {
        outln!(
            "published {remote} version {version}: the content of version {} (revert)",
            a.to
        );
    }
    Ok(())
}

fn fsutil_create(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}
