//! `npcnix publish`: pack (or take an archive), sign, upload.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use npcnix::format::statement::Source;
use npcnix::fsutil::{self, TempDir};
use npcnix::publish::{self, Editor, StatementParams};

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
    /// Hosts refuse the release after this long, e.g. 30d (freeze-attack
    /// defence; at least 1h)
    #[arg(long, value_name = "DURATION", value_parser = common::release_expiry_secs)]
    expires: Option<u64>,
    /// Remote name signed into the release (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// With --src: pack every file, not just those git tracks
    #[arg(long)]
    all_files: bool,
    #[command(flatten)]
    provenance: ProvenanceArgs,
    #[command(flatten)]
    timestamp: super::timestamp::TimestampArgs,
    #[command(flatten)]
    log: super::log::LogKeyArgs,
    #[command(flatten)]
    build: BuildArgs,
    /// Retire hosts of this configuration from the remote on purpose: they
    /// skip the lockout inspection and probation for this release, so it may
    /// stop their agent or point it elsewhere (repeatable; docs/lockout.md)
    #[arg(long, value_name = "CONFIGURATION")]
    decommission: Vec<String>,
    #[command(flatten)]
    rollout: RolloutArgs,
    #[command(flatten)]
    trust: common::TrustArgs,
    #[command(flatten)]
    store: common::StoreArgs,
    #[command(flatten)]
    threads: super::pack::Threads,
    /// Show the statement that would be signed (checked as publish checks
    /// it) and the files it changes against the head; upload nothing
    #[arg(long)]
    dry_run: bool,
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

/// Provenance for the statement, besides what the archive shows.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ProvenanceArgs {
    /// A one-line comment recorded in the statement (shown by `npcnix log`)
    #[arg(long)]
    pub comment: Option<String>,
    /// With --archive: the git commit the archive was packed from (40 hex;
    /// with --src it is read from the checkout)
    #[arg(
        long,
        value_name = "COMMIT",
        value_parser = git_commit,
        requires = "archive",
        conflicts_with = "src"
    )]
    pub git_commit: Option<String>,
}

/// clap value parser for `--git-commit`: 40 (SHA-1) or 64 (SHA-256) hex.
fn git_commit(s: &str) -> std::result::Result<String, String> {
    let ok = matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a git commit (40 or 64 hex digits)"))
    }
}

/// Puts the release's archive at `out` (a private path): packs `src`, or
/// copies `archive` so the bytes hashed are the bytes uploaded even if the
/// original changes meanwhile. Then checks that the flake as packed pins
/// its inputs (`publish::flake`). Returns the provenance to record: the
/// commit, and the hash of the packed `flake.lock`.
pub fn stage_archive(
    src: Option<&Path>,
    archive: Option<&Path>,
    all_files: bool,
    provenance: &ProvenanceArgs,
    out: &Path,
    threads: &super::pack::Threads,
) -> Result<Option<Source>> {
    let (git_commit, lock) = match (src, archive) {
        (Some(src), _) => {
            common::existing_dir("--src", src)?;
            let p = super::pack::pack_to_file(src, out, all_files, &threads.options())?;
            // --all-files packs untracked files too: no commit describes it.
            let commit = if all_files { None } else { head_commit(src) };
            (commit, p.flake)
        }
        (None, Some(archive)) => {
            publish::private_copy(archive, out)?;
            (
                provenance.git_commit.clone(),
                super::pack::check_flake(out, None)?,
            )
        }
        (None, None) => {
            return Err(super::exit::usage(
                "--src DIR or --archive FILE is required".into(),
            ))
        }
    };
    let s = Source {
        git_commit,
        flake_lock_blake3: lock.lock_blake3,
        comment: provenance.comment.clone(),
    };
    Ok((s != Source::default()).then_some(s))
}

/// The commit checked out in `src`, if it is a git work tree whose tracked
/// files are that commit's: with an uncommitted change the archive is not
/// the commit, and recording it would send a reviewer to the wrong tree.
fn head_commit(src: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .env_remove("NPCNIX_PASSPHRASE")
            .arg("-C")
            .arg(src)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
    };
    let commit = git(&["rev-parse", "--verify", "-q", "HEAD"])
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())?;
    if git(&["diff", "--quiet", "HEAD", "--"]).is_some_and(|o| o.status.success()) {
        Some(commit)
    } else {
        warn!(
            "{} has uncommitted changes: the statement records no git commit (commit first to record one)",
            src.display()
        );
        None
    }
}

pub fn run(a: Args) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let sk = common::load_secret_key(&a.key)?;
    let (trust, retired) = a
        .trust
        .resolve(&remote, &[sk.public_key()], a.src.as_deref())?;
    let work = TempDir::new_in(&std::env::temp_dir(), "npcnix-publish-")
        .context("creating a private temp dir")?;
    let archive_path = work.path().join("release.tar.zst");
    let source = stage_archive(
        a.src.as_deref(),
        a.archive.as_deref(),
        a.all_files,
        &a.provenance,
        &archive_path,
        &a.threads,
    )?;
    let aref = publish::hash_file(&archive_path)?;
    let now = fsutil::now_unix();
    let ts_keys = a.timestamp.load()?;
    let log_key = a.log.load()?;
    let editor = Editor::new(&store, trust, now, a.store.retry())
        .with_retired(retired)
        .with_timestamp(ts_keys.iter().collect(), a.timestamp.timestamp_expires);
    let editor = super::log::with_log(editor, log_key.as_ref(), a.log.new_log);
    let mut draft = editor.draft(
        aref.clone(),
        StatementParams {
            remote: remote.clone(),
            version: a.version,
            created: now,
            expires: a.expires.map(|d| now + d),
            source,
        },
    )?;
    if a.dry_run && a.build.copy_to.is_some() {
        // `--copy-to` uploads the built closures: not a dry run.
        return Err(super::exit::usage(
            "--dry-run uploads nothing: leave out --copy-to".into(),
        ));
    }
    if a.build.build {
        draft.statement.toplevels = Some(build_toplevels(&archive_path, work.path(), &a.build)?);
    }
    draft.statement.decommission = decommission_list(&a.decommission)?;
    draft.statement.rollout = a.rollout.plan()?;
    if a.dry_run {
        return dry_run(
            &editor,
            &draft,
            &archive_path,
            &sk,
            &store,
            work.path(),
            a.json,
        );
    }
    let published = editor.publish(&draft, &archive_path, vec![draft.sign(&sk)])?;
    report_published(&published, &a.remote, a.json, &[sk.key_id]);
    Ok(())
}

/// `--dry-run`: the statement that would be signed, checked as a host
/// would take it, and what it changes against the head; nothing uploaded.
fn dry_run(
    editor: &Editor<'_>,
    draft: &npcnix::publish::Draft,
    archive: &std::path::Path,
    sk: &npcnix::format::keys::SecretKey,
    store: &npcnix::store::Remote,
    work: &std::path::Path,
    json: bool,
) -> Result<()> {
    use npcnix::publish::{compare, diff};
    let checked = editor.check_only(draft, vec![draft.sign(sk)])?;
    let new = compare::local(archive)?;
    let old = match &draft.head {
        Some(h) => match compare::release(
            store,
            &editor.reading_policy(),
            h.statement.version,
            fsutil::now_unix(),
            work,
        ) {
            Ok(o) => Some(o),
            Err(e) => {
                warn!("cannot compare with the head: {e}");
                None
            }
        },
        None => None,
    };
    let changes = diff::diff(
        &old.as_ref().map(|o| o.members.clone()).unwrap_or_default(),
        &new,
    );
    let (added, removed, changed, _, _) = diff::totals(&changes);
    let statement: serde_json::Value =
        serde_json::from_slice(&draft.statement_bytes()).unwrap_or_default();
    if json {
        common::print_json(&serde_json::json!({
            "dry_run": true,
            "statement": statement,
            "statement_hash": checked.statement_hash().to_hex(),
            "changes": changes,
            "added": added,
            "removed": removed,
            "changed": changed,
        }));
        return Ok(());
    }
    outln!(
        "dry run: nothing was uploaded; hosts would accept this release (checked as publish checks it)"
    );
    outln!(
        "statement that would be signed ({}):",
        checked.statement_hash()
    );
    outln!(
        "{}",
        serde_json::to_string_pretty(&statement).unwrap_or_default()
    );
    match &draft.head {
        Some(h) => outln!(
            "against the head, version {}: {added} added, {removed} removed, {changed} changed",
            h.statement.version
        ),
        None => outln!("the remote has no release yet: {added} files"),
    }
    for c in &changes {
        outln!(
            "  {:<8} {}",
            match c.change {
                diff::ChangeKind::Added => "added",
                diff::ChangeKind::Removed => "removed",
                diff::ChangeKind::Changed => "changed",
            },
            npcnix::format::text::visible(&c.path)
        );
    }
    Ok(())
}

/// What every publishing command prints: the release as hosts will see it.
pub fn report_published(
    p: &npcnix::publish::Published,
    url: &str,
    json: bool,
    signed_here: &[npcnix::format::keys::KeyId],
) {
    let r = &p.release;
    let st = r.statement();
    let signers: Vec<String> = r.signers().iter().map(|k| k.to_string()).collect();
    if json {
        common::print_json(&serde_json::json!({
            "remote": st.remote.as_str(),
            "url": url,
            "version": st.version,
            "previous": st.previous.map(|d| d.to_hex()),
            "statement": r.statement_hash().to_hex(),
            "archive": {"blake3": p.archive.blake3.to_hex(), "size": p.archive.size, "key": p.archive.object_key()},
            "key_id": signed_here.first().map(|k| k.to_string()),
            "signers": signers,
            "expires": st.expires,
            "toplevels": st.toplevels,
            "decommission": st.decommission,
            "rollout": st.rollout,
            "log": p.logged.map(|l| serde_json::json!({"index": l.index, "size": l.size, "already": l.already})),
        }));
        return;
    }
    outln!(
        "published {} version {} to {}",
        st.remote,
        st.version,
        npcnix::format::text::visible(url)
    );
    outln!(
        "  archive:   {} ({})",
        p.archive.blake3,
        super::out::size(p.archive.size)
    );
    outln!("  statement: {}", r.statement_hash());
    if let Some(l) = p.logged {
        outln!(
            "  log:       leaf {} of {}{}",
            l.index,
            l.size,
            if l.already { " (already there)" } else { "" }
        );
    }
    outln!("  signed by: {}", signers.join(", "));
    outln!(
        "  expires:   {}",
        st.expires
            .map_or("none".to_owned(), npcnix::format::time::rfc3339)
    );
    if let Some(r) = &st.rollout {
        outln!(
            "  rollout:   {} (hosts activate at their slot; `npcnix release revert` halts it)",
            npcnix::publish::review::rollout_words(r)
        );
    }
    if let Some(d) = &st.decommission {
        outln!(
            "  retires:   {} (no lockout protection for them)",
            d.iter()
                .map(|n| npcnix::publish::review::quoted(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
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
    /// Gate a stage of the wave (repeatable): the hosts from PERCENT of the
    /// fleet on (up to the next gate) wait for a signed promotion of STAGE
    /// (`npcnix release promote`), e.g. --gate early=5 --gate rest=30
    #[arg(long, value_name = "STAGE=PERCENT")]
    pub gate: Vec<String>,
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
            Rollout {
                points,
                gates: Vec::new(),
            }
        } else if !self.gate.is_empty() {
            return Err(super::exit::usage(
                "--gate gates a stage of a rollout wave: give --rollout or --rollout-plan too"
                    .into(),
            ));
        } else {
            return Ok(None);
        };
        let mut plan = plan;
        for g in &self.gate {
            let (stage, pct) = g
                .split_once('=')
                .ok_or_else(|| super::exit::usage(format!("--gate {g:?} is not STAGE=PERCENT")))?;
            let percent: u32 = pct.trim().trim_end_matches('%').parse().map_err(|_| {
                super::exit::usage(format!("--gate {g:?}: {pct:?} is not a percentage"))
            })?;
            plan.gates.push(npcnix::format::rollout::Gate {
                stage: stage.trim().to_owned(),
                percent,
            });
        }
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
    /// Hosts refuse the release after this long, e.g. 30d (at least 1h)
    #[arg(long, value_name = "DURATION", value_parser = common::release_expiry_secs)]
    expires: Option<u64>,
    /// Remote name signed into the release (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    #[command(flatten)]
    trust: common::TrustArgs,
    /// Revert even if version N was signed by keys the remote no longer
    /// trusts (its configuration most likely re-pins them on every host)
    #[arg(long)]
    allow_trust_change: bool,
    #[command(flatten)]
    timestamp: super::timestamp::TimestampArgs,
    #[command(flatten)]
    log: super::log::LogKeyArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

/// The flake inputs of the archive a revert brings back: hosts refuse a
/// flake whose lock does not pin them (`unlocked-inputs`), so a revert to a
/// release made before that rule would be refused by every host.
pub fn revert_target_inputs(
    archive: &Path,
    version: u64,
) -> Result<npcnix::publish::flake::FlakeInputs> {
    super::pack::check_flake(archive, None).with_context(|| {
        format!(
            "version {version}'s flake does not pin its inputs, so hosts refuse it (unlocked-inputs): publish a fixed release with its content instead (check it out, `nix flake lock`, publish)"
        )
    })
}

pub fn revert(a: RevertArgs) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let sk = common::load_secret_key(&a.key)?;
    let expires_in = a.expires;
    let (trust, retired) = a.trust.resolve(&remote, &[sk.public_key()], None)?;
    let now = fsutil::now_unix();
    let ts_keys = a.timestamp.load()?;
    let log_key = a.log.load()?;
    let editor = Editor::new(&store, trust, now, a.store.retry())
        .with_retired(retired)
        .with_timestamp(ts_keys.iter().collect(), a.timestamp.timestamp_expires);
    let editor = super::log::with_log(editor, log_key.as_ref(), a.log.new_log);
    let head = editor
        .head()?
        .ok_or_else(|| anyhow::anyhow!("{} has no releases: nothing to revert", a.remote))?;
    let source = editor.revert_source(&head, a.to, a.allow_trust_change)?;
    if !source.brings_back.is_empty() {
        warn!(
            "the history from version {} to the head was signed by key(s) {} that the remote does not trust today; its configuration most likely trusts them again on every host (--allow-trust-change)",
            a.to,
            source
                .brings_back
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if head.statement.version == a.to {
        info!("note: version {} is the current head", a.to);
    }
    let work = TempDir::new_in(&std::env::temp_dir(), "npcnix-revert-")
        .context("creating a private temp dir")?;
    let archive_path = work.path().join("release.tar.zst");
    editor.download(&source.release.statement().archive, &archive_path)?;
    let lock = revert_target_inputs(&archive_path, a.to)?;
    let draft = editor.revert_draft(&source, now, expires_in.map(|d| now + d), lock.lock_blake3)?;
    let published = editor.publish(&draft, &archive_path, vec![draft.sign(&sk)])?;
    if a.json {
        let st = published.release.statement();
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "version": st.version,
            "reverted_to": a.to,
            "archive": {"blake3": published.archive.blake3.to_hex(), "size": published.archive.size},
            "toplevels": st.toplevels,
            "brings_back": source.brings_back.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    } else {
        outln!(
            "published {remote} version {}: the content of version {} (revert)",
            published.release.version(),
            a.to
        );
    }
    Ok(())
}
