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
use serde::{Deserialize, Serialize};

use npcnix::format::bundle::Bundle;
use npcnix::format::statement::{Digest, Statement};
use npcnix::format::text::visible;
use npcnix::format::time::rfc3339;
use npcnix::fsutil;
use npcnix::publish::{self, StatementParams};
use npcnix::verify::{self, Policy};

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
        conflicts_with = "archive",
        required_unless_present = "archive"
    )]
    src: Option<PathBuf>,
    /// Use an already packed archive
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,
    /// Version (default: head + 1)
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Hosts refuse the release after this long, e.g. 30d
    #[arg(long, value_name = "DURATION", value_parser = common::duration_secs)]
    expires: Option<u64>,
    /// The remote's signed name (default: the URL's last path segment)
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// Keys whose signatures may sign the current head (repeatable; the head must verify)
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

    /// Public key of an expected signer: prints its exact minisign command (repeatable)
    #[arg(long = "signer", value_name = "PUBKEY")]
    signers: Vec<String>,
    /// With --src: pack every file, not just those git tracks
    #[arg(long)]
    all_files: bool,
    /// A one-line comment recorded in the statement
    #[arg(long)]
    comment: Option<String>,
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
    /// Keys the signatures must come from (repeatable)
    #[arg(
        long = "trusted-key",
        value_name = "PUBKEY",
        required_unless_present = "host_config"
    )]
    trusted_keys: Vec<String>,
    /// Signatures required from distinct trusted keys
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Verify with exactly the keys and threshold the remote's hosts use:
    /// their host config file (overrides --trusted-key and --threshold)
    #[arg(long, value_name = "FILE")]
    host_config: Option<std::path::PathBuf>,

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

/// `release.json`: what prepare recorded.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepared {
    pub url: String,
    pub remote: String,
    pub version: u64,
    /// Statement hash of the head this release extends (null: first).
    pub extends: Option<Digest>,
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Prepare(p) => prepare(*p),
        Cmd::Publish(p) => publish_dir(p),
        Cmd::Check(c) => check(c),
        Cmd::Revert(r) => super::publish::revert(r),
    }
}

pub fn read_statement(dir: &Path) -> Result<(Vec<u8>, Statement)> {
    let path = dir.join("statement.json");
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    // Not yet signed: parsed for display and checks only; hosts verify first.
    let st = Statement::parse(&bytes).with_context(|| format!("{}", path.display()))?;
    Ok((bytes, st))
}

fn prepare(a: PrepareArgs) -> Result<()> {
    let remote = common::remote_name(&a.remote, a.remote_name.as_deref())?;
    let store = a.store.open(&a.remote)?;
    let expires_in = a.expires;
    let signers = a
        .signers
        .iter()
        .map(|s| common::load_public_key(s))
        .collect::<Result<Vec<_>>>()?;
    if a.out.exists() {
        bail!(
            "{} already exists; prepare into a new directory",
            a.out.display()
        );
    }
    let mut head_keys = signers.clone();
    for k in &a.trusted_keys {
        head_keys.push(common::load_public_key(k)?);
    }
    if head_keys.is_empty() && a.host_config.is_none() {
        return Err(super::exit::usage("pass --signer, --trusted-key or --host-config: the remote's head must be verified before a release extends it".into()));
    }
    let now = fsutil::now_unix();
    let head_policy = match &a.host_config {
        Some(p) => common::host_policy(p, &remote)?,
        None => {
            let mut p = Policy::manual(remote.clone(), head_keys);
            p.threshold = a.threshold;
            p
        }
    };
    let tmp = a.out.with_file_name(format!(
        ".{}.tmp-{}",
        a.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        fsutil::random_suffix()
    ));
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let res = (|| -> Result<Statement> {
        let archive_path = tmp.join("archive.tar.zst");
        let source = super::publish::stage_archive(
            a.src.as_deref(),
            a.archive.as_deref(),
            a.all_files,
            a.comment.clone(),
            &archive_path,
            &a.threads,
        )?;
        let aref = publish::hash_file(&archive_path)?;
        let mut draft = publish::draft(
            store.as_ref(),
            &head_policy,
            aref,
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
            let work = tmp.join(".build");
            fs::create_dir(&work)?;
            let built = super::publish::build_toplevels(&archive_path, &work, &a.build);
            let _ = fs::remove_dir_all(&work);
            draft.statement.toplevels = Some(built?);
        }
        draft.statement.decommission = super::publish::decommission_list(&a.decommission)?;
        draft.statement.rollout = a.rollout.plan()?;
        fs::write(tmp.join("statement.json"), draft.statement_bytes())?;
        let prepared = Prepared {
            url: a.remote.clone(),
            remote: remote.to_string(),
            version: draft.statement.version,
            extends: draft.head.as_ref().map(|h| h.hash),
        };
        let st = draft.statement;
        fs::write(
            tmp.join("release.json"),
            serde_json::to_vec_pretty(&prepared)?,
        )?;
        Ok(st)
    })();
    let st = match res {
        Ok(st) => st,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let bytes = st.to_bytes();
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
            "signers": signers.iter().map(|pk| serde_json::json!({
                "key_id": pk.key_id.to_string(),
                "trusted_comment": publish::trusted_comment(&st, &bytes, pk.key_id),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    outln!(
        "prepared {} version {} in {}",
        remote,
        st.version,
        a.out.display()
    );
    outln!(
        "  statement: {} ({} bytes)",
        Digest::of(&bytes),
        bytes.len()
    );
    outln!(
        "  archive:   {} ({})",
        st.archive.blake3,
        super::out::size(st.archive.size)
    );
    outln!("\nSign on the offline machine, either with npcnix:");
    outln!("  npcnix sign {} --key RELEASE.key", a.out.display());
    if signers.is_empty() {
        outln!(
            "or with stock minisign (pass --signer PUBKEY to prepare to get the exact command)."
        );
    }
    for pk in &signers {
        let tc = publish::trusted_comment(&st, &bytes, pk.key_id);
        outln!("or with stock minisign, for key {}:", pk.key_id);
        outln!(
            "  minisign -S -s KEY -m {}/statement.json -x {}/statement.json.{}.minisig -t '{tc}'",
            a.out.display(),
            a.out.display(),
            pk.key_id
        );
    }
    outln!(
        "\nThen, online: npcnix release publish {} --trusted-key PUBKEY...",
        a.out.display()
    );
    Ok(())
}

/// Every `*.minisig` file in a release directory, sorted.
pub fn signatures(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "minisig") {
            let text =
                common::read_small(&p, npcnix::format::bundle::SIGNATURE_MAX_BYTES, "signature")?;
            out.push((p, text));
        }
    }
    out.sort();
    Ok(out)
}

fn publish_dir(a: PublishArgs) -> Result<()> {
    let prepared: Prepared = serde_json::from_slice(
        &fs::read(a.dir.join("release.json"))
            .with_context(|| format!("reading {}/release.json", a.dir.display()))?,
    )
    .context("release.json")?;
    let url = a.remote.clone().unwrap_or_else(|| prepared.url.clone());
    let remote = common::remote_name(&url, Some(&prepared.remote))?;
    let (bytes, st) = read_statement(&a.dir)?;
    let sigs = signatures(&a.dir)?;
    if sigs.is_empty() {
        bail!(
            "{} has no *.minisig signatures yet; run `npcnix sign` (or minisign) first",
            a.dir.display()
        );
    }
    let bundle = Bundle {
        statement: bytes.clone(),
        signatures: sigs.into_iter().map(|(_, t)| t).collect(),
    }
    .encode();
    let policy = match &a.host_config {
        Some(p) => common::host_policy(p, &remote)?,
        None => {
            let mut p = Policy::manual(remote.clone(), common::load_public_keys(&a.trusted_keys)?);
            p.threshold = a.threshold;
            p
        }
    };
    let now = fsutil::now_unix();
    let release = verify::verify_signatures(&policy, &bundle, now).map_err(Rejected)?;
    verify::check_policy(&policy, None, &release, now).map_err(Rejected)?;
    // Work on a private copy: the bytes checked here are the bytes uploaded,
    // whatever happens to the directory (a USB stick, a shared folder) now.
    let source = a.dir.join("archive.tar.zst");
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-publish-")
        .context("creating a private temp dir")?;
    let archive = work.path().join("archive.tar.zst");
    let aref = publish::private_copy(&source, &archive)?;
    if let Some(m) = ArchiveMismatch::between(&aref, &st.archive) {
        return Err(Rejected(Refusal::Archive(m))).with_context(|| {
            format!(
                "{} is not the archive the statement names",
                source.display()
            )
        });
    }
    let store = a.store.open(&url)?;
    // The head must still be the one this release extends.
    // At the remote's threshold: a head planted with one stolen key is not
    // extended.
    let head = publish::read_head(store.as_ref(), &policy, now)?;
    let head_hash = head.as_ref().map(|h| h.hash);
    if head_hash != st.previous {
        return Err(npcnix::publish::PublishError::HeadMoved {
            version: st.version,
            store: store.describe(),
        })
        .context(
            "the remote's head changed since this release was prepared; prepare and sign again",
        );
    }
    publish::upload(
        store.as_ref(),
        &archive,
        &aref,
        st.version,
        &bundle,
        head.as_ref().and_then(|h| h.etag.as_ref()),
        &a.store.retry(),
    )?;
    if a.json {
        common::print_json(&serde_json::json!({
            "remote": remote.as_str(),
            "url": url,
            "version": st.version,
            "previous": st.previous.map(|d| d.to_hex()),
            "statement": release.statement_hash().to_hex(),
            "archive": {"blake3": aref.blake3.to_hex(), "size": aref.size, "key": aref.object_key()},
            "signers": release.signers().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "expires": st.expires,
        }));
        return Ok(());
    }
    outln!(
        "published {} version {} to {} (signed by {})",
        remote,
        st.version,
        url,
        release
            .signers()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn check(a: CheckArgs) -> Result<()> {
    common::existing_dir("--src", &a.src)?;
    let (_, st) = read_statement(&a.dir)?;
    let tree = npcnix::archive::collect_entries(&a.src, super::pack::selection(a.all_files))?;
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-check-")
        .context("creating a private temp dir")?;
    let repacked = work.path().join("archive.tar.zst");
    // Newest pack format first; a release packed by an older npcnix is
    // re-derived with the format it was packed in (D: pack format v2).
    // On a mismatch the error names the current format's archive.
    let mut options = a.threads.options();
    let mut current = None;
    let mut matched = None;
    for format in npcnix::archive::PackFormat::ALL {
        options.format = format;
        let out = fs::File::create(&repacked).context("writing the re-packed archive")?;
        let (_, p) = npcnix::archive::write_archive_observed(
            &tree,
            out,
            &options,
            &*super::progress::handle(),
        )?;
        current.get_or_insert(p);
        if p.blake3 == st.archive.blake3 && p.size == st.archive.size {
            matched = Some(p);
            break;
        }
    }
    let packed = matched
        .or(current)
        .context("no pack format to re-pack with")?;
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
    let report = |toplevels: &str| {
        if a.json {
            common::print_json(&serde_json::json!({
                "ok": true,
                "dir": a.dir,
                "src": a.src,
                "version": st.version,
                "archive": {"blake3": packed.blake3.to_hex(), "size": packed.size},
                "pack_format": options.format.to_string(),
                "toplevels": toplevels,
            }));
        }
    };
    if !a.json {
        outln!(
            "OK: re-packing {} gives exactly the archive in the statement ({}, {}, pack format {})",
            a.src.display(),
            packed.blake3,
            super::out::size(packed.size),
            options.format
        );
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

/// Renders a statement for a human about to sign it.
pub fn describe(st: &Statement, bytes: &[u8]) -> String {
    let mut s = String::new();
    s.push_str(&format!("  remote:    {}\n", st.remote));
    s.push_str(&format!("  version:   {}\n", st.version));
    s.push_str(&format!(
        "  previous:  {}\n",
        st.previous
            .map_or("(none: first release)".to_owned(), |d| d.to_hex())
    ));
    s.push_str(&format!(
        "  archive:   {} ({})\n",
        st.archive.blake3,
        super::out::size(st.archive.size)
    ));
    s.push_str(&format!("  created:   {}\n", rfc3339(st.created)));
    if let Some(e) = st.expires {
        s.push_str(&format!("  expires:   {}\n", rfc3339(e)));
    }
    if let Some(t) = &st.toplevels {
        for (name, path) in t {
            s.push_str(&format!(
                "  toplevel:  {} -> {}\n",
                visible(name),
                visible(path)
            ));
        }
    }
    if let Some(src) = &st.source {
        if let Some(c) = &src.git_commit {
            s.push_str(&format!("  commit:    {}\n", visible(c)));
        }
        if let Some(c) = &src.comment {
            s.push_str(&format!("  comment:   {}\n", visible(c)));
        }
    }
    s.push_str(&format!("  statement: {}\n", Digest::of(bytes)));
    s
}

pub fn err_no_dir(dir: &Path) -> anyhow::Error {
    anyhow!(
        "{} is not a prepared release (no statement.json)",
        dir.display()
    )
}
