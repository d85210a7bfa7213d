//! The offline signing flow: `release prepare` (online), `sign` (offline),
//! `release publish` (online), and `release check` (re-pack and compare).
//!
//! A prepared release is a directory (e.g. on a USB stick):
//!
//! ```text
//! release.json            what was prepared: remote URL and name, version, head it extends
//! statement.json          the exact bytes to sign
//! archive.tar.zst         the archive the statement names
//! *.minisig               signatures (npcnix sign writes statement.json.<KEYID>.minisig;
//!                         stock minisign writes statement.json.minisig)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use npcnix::format::statement::{Digest, Statement};
use npcnix::format::text::visible;
use npcnix::fsutil;
use npcnix::publish::policy::{PolicyKey, RemotePolicy};
use npcnix::publish::{self, prepared, review, Editor, StatementParams};

use super::common;
use super::exit::{Rejected, Unverified};
use npcnix::verify::{ArchiveMismatch, Refusal};

#[derive(clap::Args)]
#[command(
    about = "Offline flow: prepare a release for signing, publish it, check a re-pack",
    long_about = "The offline signing flow, for keys that never touch a networked machine: \
`release prepare` (online) writes a directory with the statement to sign and the archive; `npcnix \
sign` (or stock minisign) signs it on the offline machine; `release publish` (online) verifies the \
signatures and publishes. `release check` re-packs a checkout to confirm the archive is what the \
source gives.\n\nExample:\n  npcnix release prepare --remote s3://fleet-releases/npcnix/prod --src \
./flake --out /media/usb/prod-42 --signer release.pub"
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Prepare(Box<PrepareArgs>),
    Publish(PublishArgs),
    Check(CheckArgs),
    Revert(super::publish::RevertArgs),
    Promote(Box<super::rollout::PromoteArgs>),
    Halt(super::rollout::HaltArgs),
}

#[derive(clap::Args)]
#[command(
    about = "Online: pack (or take an archive), read the head, write an unsigned release directory",
    long_about = "Prepare a release for offline signing: pack the flake (or take an archive), \
read and verify the remote's current head, and write DIR with statement.json (the exact bytes to sign) \
and archive.tar.zst. Prints what to run on the signing machine: `npcnix sign DIR --key KEY`, or the \
stock `minisign -S -t '<trusted comment>'` command for each --signer.\n\nExample:\n  npcnix release prepare --remote s3://fleet-releases/npcnix/prod --src ./flake \
--out /media/usb/prod-42 --signer release.pub --expires 30d"
)]
pub struct PrepareArgs {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: String,
    /// Directory to create
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Flake directory to pack
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["archive", "revert_to"],
        required_unless_present_any = ["archive", "revert_to"]
    )]
    src: Option<PathBuf>,
    /// Use an already packed archive
    #[arg(long, value_name = "FILE", conflicts_with = "revert_to")]
    archive: Option<PathBuf>,
    /// Prepare a revert: a new version with the content of version N (its
    /// archive and signed system paths, no rollout wave), found through the
    /// signed chain from the head; how a k-of-n remote halts a rollout
    #[arg(long, value_name = "N")]
    revert_to: Option<u64>,
    /// With --revert-to: go ahead even if version N was signed by keys the
    /// remote no longer trusts (its configuration re-pins them)
    #[arg(long, requires = "revert_to")]
    allow_trust_change: bool,
    /// Version (default: head + 1)
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Hosts refuse the release after this long, e.g. 30d
    #[arg(long, value_name = "DURATION", value_parser = common::release_expiry_secs)]
    expires: Option<u64>,
    /// The remote's signed name (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    #[command(flatten)]
    trust: common::TrustArgs,

    /// Public key of an expected signer: prints its exact minisign command (repeatable)
    #[arg(long = "signer", value_name = "PUBKEY")]
    signers: Vec<String>,
    /// With --src: pack every file, not just those git tracks
    #[arg(long)]
    all_files: bool,
    #[command(flatten)]
    provenance: super::publish::ProvenanceArgs,
    #[command(flatten)]
    build: super::publish::BuildArgs,
    /// Retire hosts of this configuration on purpose (repeatable; see
    /// `npcnix publish --help` and docs/lockout.md)
    #[arg(long, value_name = "CONFIGURATION")]
    decommission: Vec<String>,
    #[command(flatten)]
    rollout: super::publish::RolloutArgs,
    #[command(flatten)]
    store: common::StoreArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    threads: super::pack::Threads,
}

#[derive(clap::Args)]
#[command(
    about = "Online: verify the signatures in a release directory and publish it",
    long_about = "Publish a prepared and signed release directory: every *.minisig in DIR is \
checked against the trusted keys (signature and trusted-comment binding) and the threshold; the remote's \
head must still be the one the release extends. Then archive, releases/<version> and latest are \
uploaded in the usual order. A head that moved since prepare exits 4: prepare and sign again.\n\n\
Example:\n  npcnix release publish /media/usb/prod-42 --trusted-key release.pub"
)]
pub struct PublishArgs {
    /// The release directory
    dir: PathBuf,
    /// Remote URL (default: the one recorded by prepare)
    #[arg(long, value_name = "URL", value_parser = common::remote_url)]
    remote: Option<String>,
    /// The remote's keys and threshold [default: the policy prepare
    /// recorded in release.json]
    #[command(flatten)]
    trust: common::TrustArgs,
    #[command(flatten)]
    timestamp: super::timestamp::TimestampArgs,
    #[command(flatten)]
    log: super::log::LogKeyArgs,
    #[command(flatten)]
    store: common::StoreArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(
    about = "Re-pack a source tree and check it gives the archive the statement names",
    long_about = "Check a prepared release against a source checkout of your own: re-pack SRC \
deterministically and compare with the archive hash and size the statement signs (exit 3 if they \
differ). With --build, also build the signed system paths (toplevels) from the re-packed archive and \
compare them; without it they are reported as not verified.\n\nExample:\n  npcnix release check \
/media/usb/prod-42 --src ~/src/fleet"
)]
pub struct CheckArgs {
    /// The release directory
    dir: PathBuf,
    /// Source tree to re-pack
    #[arg(long, value_name = "DIR")]
    src: PathBuf,
    /// Pack every file, not just those git tracks
    #[arg(long)]
    all_files: bool,
    /// Also rebuild the signed system paths (toplevels) from the re-packed
    /// archive and compare them (needs Nix); without it they are reported
    /// as not verified
    #[arg(long)]
    build: bool,
    #[command(flatten)]
    threads: super::pack::Threads,
    /// With --build: an extra argument for every nix call (repeatable)
    #[arg(
        long = "nix-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "build"
    )]
    nix_args: Vec<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Prepare(p) => prepare(*p),
        Cmd::Publish(p) => publish_dir(p),
        Cmd::Check(c) => check(c),
        Cmd::Revert(r) => super::publish::revert(r),
        Cmd::Promote(p) => super::rollout::promote(*p),
        Cmd::Halt(h) => super::rollout::halt(h),
    }
}

/// The statement of a prepared release directory, read bounded (exit 1
/// with a clear message if `dir` is not one).
pub fn read_statement(dir: &Path) -> Result<(Vec<u8>, Statement)> {
    if fs::symlink_metadata(dir.join(prepared::STATEMENT_JSON)).is_err() {
        return Err(err_no_dir(dir));
    }
    Ok(prepared::read_statement(dir)?)
}

/// The policy to record for the signers and `release publish`: the keys,
/// and the signatures a new head needs.
fn snapshot(editor: &Editor<'_>, head: Option<&publish::CurrentHead>) -> RemotePolicy {
    let p = &editor.trust().policy;
    RemotePolicy {
        threshold: editor.required_signatures(head),
        keys: p
            .keys
            .iter()
            .filter(|k| k.scope.allows(&p.remote))
            .map(|k| PolicyKey {
                public_key: k.key.to_base64(),
                comment: None,
                not_after: k.not_after,
            })
            .collect(),
        max_version_jump: p.max_version_jump,
        timestamp: p.freshness.as_ref().map(|f| publish::policy::RolePolicy {
            threshold: f.threshold,
            keys: f
                .keys
                .iter()
                .map(|k| PolicyKey {
                    public_key: k.key.to_base64(),
                    comment: None,
                    not_after: k.not_after,
                })
                .collect(),
        }),
        // Not part of what signers review: rollout keys open stages of a
        // release the release keys signed, and sign nothing in it.
        rollout: None,
    }
}

fn prepare(a: PrepareArgs) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let signers = a
        .signers
        .iter()
        .map(|s| common::load_public_key(s))
        .collect::<Result<Vec<_>>>()?;
    if fs::symlink_metadata(&a.out).is_ok() {
        bail!(
            "{} already exists; prepare into a new directory",
            a.out.display()
        );
    }
    let (trust, retired) = a.trust.resolve(&remote, &signers, a.src.as_deref())?;
    let now = fsutil::now_unix();
    let editor = Editor::new(&store, trust, now, a.store.retry()).with_retired(retired);
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-prepare-")
        .context("creating a private temp dir")?;
    let archive_path = work.path().join(prepared::ARCHIVE);
    let expires = a.expires.map(|d| now + d);
    let draft = if let Some(n) = a.revert_to {
        let head = editor
            .head()?
            .ok_or_else(|| anyhow!("{} has no releases: nothing to revert", a.remote))?;
        let source = editor.revert_source(&head, n, a.allow_trust_change)?;
        if !source.brings_back.is_empty() {
            warn!(
                "the history from version {n} to the head was signed by key(s) {} that the remote does not trust today; its configuration most likely trusts them again on every host (--allow-trust-change)",
                source
                    .brings_back
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        editor.download(&source.release.statement().archive, &archive_path)?;
        let lock = super::publish::revert_target_inputs(&archive_path, n)?;
        editor.revert_draft(&source, now, expires, lock.lock_blake3)?
    } else {
        let source = super::publish::stage_archive(
            a.src.as_deref(),
            a.archive.as_deref(),
            a.all_files,
            &a.provenance,
            &archive_path,
            &a.threads,
        )?;
        let aref = publish::hash_file(&archive_path)?;
        let mut draft = editor.draft(
            aref,
            StatementParams {
                remote: remote.clone(),
                version: a.version,
                created: now,
                expires,
                source,
            },
        )?;
        if a.build.build {
            let build = work.path().join("build");
            fs::create_dir(&build)?;
            draft.statement.toplevels = Some(super::publish::build_toplevels(
                &archive_path,
                &build,
                &a.build,
            )?);
        }
        draft.statement.decommission = super::publish::decommission_list(&a.decommission)?;
        draft.statement.rollout = a.rollout.plan()?;
        draft
    };
    let meta = prepared::Prepared {
        url: a.remote.clone(),
        remote: remote.to_string(),
        version: draft.statement.version,
        extends: draft.head.as_ref().map(|h| h.hash),
        policy: Some(snapshot(&editor, draft.head.as_ref())),
        policy_origin: Some(editor.trust().origin.to_string()),
        revert_of: a.revert_to,
    };
    // What the release changes against the head, for the offline signer:
    // best effort (a head archive that cannot be fetched or listed, in an
    // emergency revert say, must not stop the release).
    let changes = draft.head.as_ref().and_then(|h| {
        let listed = npcnix::publish::compare::release(
            &store,
            &editor.reading_policy(),
            h.statement.version,
            now,
            work.path(),
        )
        .and_then(|old| {
            let new = npcnix::publish::compare::local(&archive_path)?;
            Ok(npcnix::publish::diff::PreparedChanges {
                from: h.statement.version,
                to: draft.statement.version,
                archive: draft.statement.archive.blake3,
                changes: npcnix::publish::diff::diff(&old.members, &new),
            })
        });
        listed
            .map_err(|e| warn!("no changes.json for the signers: {e}"))
            .ok()
    });
    prepared::write(&a.out, &meta, &draft.statement, &archive_path)?;
    if let Some(c) = &changes {
        let path = a.out.join("changes.json");
        let mut bytes = serde_json::to_vec_pretty(c)?;
        bytes.push(b'\n');
        if let Err(e) = fsutil::write_new(&path, &bytes, 0o644) {
            warn!(
                "no changes.json for the signers: writing {}: {e}",
                path.display()
            );
        }
    }
    print_prepared(
        &a,
        &draft.statement,
        &meta,
        &signers,
        &editor.trust().origin,
    );
    Ok(())
}

/// What `release prepare` says: the review the signers will see, how many
/// signatures it needs and how to sign it.
fn print_prepared(
    a: &PrepareArgs,
    st: &Statement,
    meta: &prepared::Prepared,
    signers: &[npcnix::format::keys::PublicKey],
    origin: &npcnix::publish::TrustOrigin,
) {
    let remote = &st.remote;
    let bytes = st.to_bytes();
    let need = meta.policy.as_ref().map_or(1, |p| p.threshold);
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "url": a.remote,
            "version": st.version,
            "dir": a.out,
            "statement": Digest::of(&bytes).to_hex(),
            "previous": st.previous.map(|d| d.to_hex()),
            "archive": {"blake3": st.archive.blake3.to_hex(), "size": st.archive.size},
            "expires": st.expires,
            "toplevels": st.toplevels,
            "decommission": st.decommission,
            "rollout": st.rollout,
            "revert_of": a.revert_to,
            "signatures_needed": need,
            "signers": signers.iter().map(|pk| serde_json::json!({
                "key_id": pk.key_id.to_string(),
                "trusted_comment": publish::trusted_comment(st, &bytes, pk.key_id),
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    outln!(
        "prepared {} version {} in {}{}",
        remote,
        st.version,
        a.out.display(),
        a.revert_to
            .map_or(String::new(), |n| format!(" (a revert to version {n})"))
    );
    outln!(
        "{}",
        review::render(&review::review(st, &bytes, fsutil::now_unix())).trim_end()
    );
    outln!("\nIt needs {need} signature(s) from distinct trusted keys ({origin}).");
    outln!("Sign on the offline machine, either with npcnix:");
    outln!("  npcnix sign {} --key RELEASE.key", a.out.display());
    if signers.is_empty() {
        outln!(
            "or with stock minisign (pass --signer PUBKEY to prepare to get the exact command)."
        );
    }
    for pk in signers {
        let tc = publish::trusted_comment(st, &bytes, pk.key_id);
        outln!("or with stock minisign, for key {}:", pk.key_id);
        outln!(
            "  minisign -S -s KEY -m {}/statement.json -x {}/statement.json.{}.minisig -t '{tc}'",
            a.out.display(),
            a.out.display(),
            pk.key_id
        );
    }
    outln!("\nThen, online: npcnix release publish {}", a.out.display());
}

fn publish_dir(a: PublishArgs) -> Result<()> {
    if fs::symlink_metadata(a.dir.join(prepared::STATEMENT_JSON)).is_err() {
        return Err(err_no_dir(&a.dir));
    }
    let p = prepared::read(&a.dir)?;
    let url = match &a.remote {
        Some(u) => u.clone(),
        // Recorded by prepare, on a medium that may have passed through
        // other hands: checked like `--remote`, and shown.
        None => {
            let u = common::remote_url(&p.meta.url).map_err(super::exit::usage)?;
            info!(
                "publishing to {} (the URL release.json records; --remote to choose)",
                visible(&u)
            );
            u
        }
    };
    let remote = common::remote_name(&url, Some(&p.meta.remote))?;
    if p.signatures.is_empty() {
        bail!(
            "{} has no *.minisig signatures yet; run `npcnix sign` (or minisign) first",
            a.dir.display()
        );
    }
    let flags_given = a.trust.policy.is_some()
        || a.trust.host_config.is_some()
        || !a.trust.trusted_keys.is_empty()
        || a.trust.threshold.is_some();
    let trust = if flags_given {
        a.trust.resolve(&remote, &[], None)?.0
    } else {
        let recorded = p.meta.policy.as_ref().ok_or_else(|| {
            super::exit::usage(format!(
                "{} records no policy (prepared by an older npcnix): pass --policy, --host-config or --trusted-key",
                a.dir.join(prepared::RELEASE_JSON).display()
            ))
        })?;
        let file = npcnix::publish::policy::PolicyFile {
            format: npcnix::publish::policy::POLICY_FORMAT.into(),
            remotes: [(remote.to_string(), recorded.clone())]
                .into_iter()
                .collect(),
        };
        let policy = file.policy_for(&remote)?;
        info!(
            "checking the signatures against the policy release.json records: {} of {} (--policy, --host-config or --trusted-key to choose)",
            policy.threshold,
            policy
                .keys
                .iter()
                .map(|k| k.key.key_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        npcnix::publish::RemoteTrust {
            policy,
            origin: npcnix::publish::TrustOrigin::Recorded(
                p.meta
                    .policy_origin
                    .clone()
                    .unwrap_or_else(|| "release prepare".into()),
            ),
        }
    };
    // Work on a private copy: the bytes checked here are the bytes uploaded,
    // whatever happens to the directory (a USB stick, a shared folder) now.
    let source = a.dir.join(prepared::ARCHIVE);
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-publish-")
        .context("creating a private temp dir")?;
    let archive = work.path().join(prepared::ARCHIVE);
    let aref = publish::private_copy(&source, &archive)?;
    if let Some(m) = ArchiveMismatch::between(&aref, &p.statement.archive) {
        return Err(Rejected(Refusal::Archive(m))).with_context(|| {
            format!(
                "{} is not the archive the statement names",
                source.display()
            )
        });
    }
    let store = a.store.open(&url)?;
    let ts_keys = a.timestamp.load()?;
    let log_key = a.log.load()?;
    let editor = Editor::new(&store, trust, fsutil::now_unix(), a.store.retry())
        .with_timestamp(ts_keys.iter().collect(), a.timestamp.timestamp_expires);
    let editor = super::log::with_log(editor, log_key.as_ref(), a.log.new_log);
    // The head must still be the one this release extends, verified at
    // the remote's threshold (a head planted with one stolen key is not
    // extended).
    let head = editor.head()?;
    if head.as_ref().map(|h| h.hash) != p.statement.previous {
        return Err(npcnix::publish::PublishError::HeadMoved {
            version: p.statement.version,
            store: store.describe(),
        })
        .context(
            "the remote's head changed since this release was prepared; prepare and sign again",
        );
    }
    let draft = publish::Draft {
        head,
        statement: p.statement.clone(),
    };
    let published = editor.publish_signed(
        &draft,
        p.statement_bytes.clone(),
        &archive,
        p.signatures.into_iter().map(|(_, t)| t).collect(),
    )?;
    super::publish::report_published(&published, &url, a.json, &[]);
    Ok(())
}

fn check(a: CheckArgs) -> Result<()> {
    common::existing_dir("--src", &a.src)?;
    let (bytes, st) = read_statement(&a.dir)?;
    let tree = npcnix::archive::collect_entries(&a.src, super::pack::selection(a.all_files))?;
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-check-")
        .context("creating a private temp dir")?;
    let repacked = work.path().join("archive.tar.zst");
    let r = npcnix::publish::repack::repack(
        &tree,
        &st.archive,
        &a.threads.options(),
        &repacked,
        &*super::progress::handle(),
    )?;
    let (packed, format) = (r.packed, r.format);
    if packed.blake3 != st.archive.blake3 || packed.size != st.archive.size {
        let m = ArchiveMismatch::Hash {
            got: packed.blake3,
            signed: st.archive.blake3,
        };
        return Err(Rejected(Refusal::Archive(m))).with_context(|| {
            format!(
                "re-packing {} gives a different archive ({} bytes, the statement names {} bytes)",
                a.src.display(),
                packed.size,
                st.archive.size
            )
        });
    }
    // The archive is the signed one; its flake must pin its inputs, and the
    // lock hash the statement records must be that of its flake.lock.
    let lock = super::pack::check_flake(&repacked, Some(&a.src)).map_err(|e| {
        let refused = e
            .downcast_ref::<npcnix::publish::flake::FlakeError>()
            .is_some_and(|f| f.is_refusal());
        if refused {
            anyhow::Error::new(Unverified(format!("{e:#}")))
                .context("the signed archive lets each host resolve the flake's inputs itself")
        } else {
            e.context("checking the archive's flake inputs")
        }
    })?;
    let recorded = st.source.as_ref().and_then(|s| s.flake_lock_blake3);
    let lock_how = npcnix::publish::flake::check_recorded(lock.lock_blake3, recorded)
        .map_err(|e| Unverified(e.to_string()))?;
    let report = |toplevels: &str| {
        if a.json {
            common::print_json(&serde_json::json!({
                "ok": true,
                "dir": a.dir,
                "src": a.src,
                "version": st.version,
                "statement": Digest::of(&bytes).to_hex(),
                "archive": {"blake3": packed.blake3.to_hex(), "size": packed.size},
                "pack_format": format.to_string(),
                "flake_lock_blake3": lock.lock_blake3.map(|d| d.to_hex()),
                "flake_lock_recorded": lock_how == npcnix::publish::flake::Recorded::Matches,
                "toplevels": toplevels,
                "decommission": st.decommission,
                "rollout": st.rollout,
                "expires": st.expires,
            }));
        }
    };
    if !a.json {
        outln!(
            "OK: re-packing {} gives exactly the archive in the statement ({}, {}, pack format {})",
            a.src.display(),
            packed.blake3,
            super::out::size(packed.size),
            format
        );
        outln!("   {}", npcnix::publish::flake::describe(&lock, lock_how));
        // What the archive does not cover, and the signers sign too.
        for l in review::review(&st, &bytes, fsutil::now_unix())
            .into_iter()
            .filter(|l| matches!(l.field.as_str(), "decommission" | "rollout" | "expires"))
        {
            outln!(
                "{} {}: {}",
                if l.alert { "!!" } else { "  " },
                l.field,
                l.value
            );
        }
    }
    let Some(signed) = st.toplevels.as_ref().filter(|t| !t.is_empty()) else {
        report("none");
        return Ok(());
    };
    if !a.build {
        warn!(
            "NOT VERIFIED: the statement also signs {} system path(s) (toplevels), which is all a toplevel-mode host runs; only a build shows they match this archive. Run again with --build.",
            signed.len()
        );
        report("not-verified");
        return Ok(());
    }
    let build = super::publish::BuildArgs {
        build: true,
        configurations: signed.keys().cloned().collect(),
        copy_to: None,
        nix_args: a.nix_args.clone(),
    };
    let built = super::publish::build_toplevels(&repacked, work.path(), &build)?;
    if &built != signed {
        let diff = signed
            .iter()
            .filter(|(n, p)| built.get(*n) != Some(*p))
            .map(|(n, p)| {
                format!(
                    "{}: signed {}, built {}",
                    visible(n),
                    visible(p),
                    built.get(n).map_or("nothing".into(), |b| visible(b))
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Unverified(format!(
            "the signed toplevels are not what the archive builds: {diff}"
        ))
        .into());
    }
    if a.json {
        report("verified");
    } else {
        outln!(
            "OK: building the archive gives exactly the {} signed system path(s)",
            signed.len()
        );
    }
    Ok(())
}

pub fn err_no_dir(dir: &Path) -> anyhow::Error {
    anyhow!(
        "{} is not a prepared release (no statement.json)",
        dir.display()
    )
}
