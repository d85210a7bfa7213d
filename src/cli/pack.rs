//! `npcnix pack`: deterministic tar.zst of a flake.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use npcnix::archive::{self, FileSelection, PackFormat, PackOptions, Packed};
use npcnix::fsutil;
use npcnix::publish::flake::FlakeInputs;

#[derive(clap::Args)]
#[command(
    about = "Pack a flake directory into a deterministic .tar.zst",
    long_about = "Pack a flake directory into a deterministic .tar.zst and print its BLAKE3 and size. \
The same tree gives byte-identical output whatever the mtimes, owners, umask or machine (entries sorted, \
mtime 1, uid/gid 0, modes 0644/0755). Only regular files, directories and relative symlinks that stay \
inside the tree are packed. Inside a git work tree only the files git tracks are packed (that is what Nix \
sees); --all-files packs everything except .git. Compression runs on all cores (--threads); the bytes are \
the same for any number of threads.\n\nExample:\n  npcnix pack --src ./flake --out release.tar.zst"
)]
pub struct Args {
    /// Flake directory (must contain flake.nix)
    #[arg(long, value_name = "DIR")]
    src: PathBuf,
    /// Output file (replaced atomically)
    #[arg(long, value_name = "FILE", required_unless_present = "hash_only")]
    out: Option<PathBuf>,
    /// Only compute and print the hash and size; write no file
    #[arg(long, conflicts_with = "out")]
    hash_only: bool,
    /// Pack every file, not just those git tracks
    #[arg(long)]
    all_files: bool,
    #[command(flatten)]
    threads: Threads,
    /// Archive format: v2 (default; multithreaded zstd frame, the same bytes
    /// for any --threads) or v1 (the single-threaded frame of older npcnix
    /// versions, to reproduce an old release's archive)
    #[arg(long, value_name = "VERSION", default_value = "v2", value_parser = ["v1", "v2"])]
    pack_format: String,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// `--threads N`, shared by every command that packs.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct Threads {
    /// zstd worker threads for packing (default: all cores); the archive's
    /// bytes do not depend on it
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(archive::pack::MAX_THREADS)))]
    pub threads: Option<u32>,
}

impl Threads {
    /// Pack options in the current format.
    pub fn options(&self) -> PackOptions {
        let mut o = PackOptions::default();
        if let Some(n) = self.threads.and_then(std::num::NonZeroU32::new) {
            o.threads = n;
        }
        o
    }
}

pub fn selection(all_files: bool) -> FileSelection {
    if all_files {
        FileSelection::AllFiles
    } else {
        FileSelection::GitTrackedIfRepo
    }
}

/// The flake in the archive at `archive` pins every input it names (with
/// Nix where it can be run; without, the lock itself is still checked, and
/// a warning says what was not).
pub fn check_flake(archive: &Path, src: Option<&Path>) -> Result<FlakeInputs> {
    check_flake_kept(archive, src, None)
}

/// [`check_flake`], with `flake.nix` and `flake.lock` as the packer kept
/// them (`publish::flake::KEEP`) if it did: then the archive is only
/// unpacked for Nix, not decompressed once more to find them.
fn check_flake_kept(
    archive: &Path,
    src: Option<&Path>,
    kept: Option<archive::Kept>,
) -> Result<FlakeInputs> {
    use npcnix::nix::NixError;
    use npcnix::publish::flake::{check_archive, check_members, FlakeError};
    let check = |nix: Option<&_>, work: &Path| match &kept {
        Some(m) => check_members(m, archive, src, nix, work),
        None => check_archive(archive, src, nix, work),
    };
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-flake-")
        .context("creating a private temp dir")?;
    let nix = super::env::nix();
    let without_nix = || {
        warn!(
            "nix-instantiate not found: flake.nix's inputs were not compared with flake.lock (the lock itself is checked; install Nix to check both)"
        );
        check(None, work.path())
    };
    // Without Nix the archive is not unpacked at all (that is only for Nix
    // to read); the spawn error covers Nix vanishing in between.
    let res = if !nix.finds("nix-instantiate") {
        without_nix()
    } else {
        match check(Some(&nix), work.path()) {
            Err(FlakeError::Eval(NixError::Spawn { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                without_nix()
            }
            r => r,
        }
    };
    Ok(res?)
}

/// What [`pack_to_file`] made.
pub struct PackedFile {
    pub packed: Packed,
    /// Only the files git tracks were packed.
    pub from_git: bool,
    /// The flake as packed pins its inputs (see `publish::flake`).
    pub flake: FlakeInputs,
}

/// Packs `src` into a new file `out` (temp + rename), once the flake as
/// packed is known to pin its inputs: an archive that would let each host
/// resolve them is never left at `out`.
pub fn pack_to_file(
    src: &Path,
    out: &Path,
    all_files: bool,
    options: &PackOptions,
) -> Result<PackedFile> {
    let tree = archive::collect_entries(src, selection(all_files))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", fsutil::random_suffix()));
    let res = (|| -> Result<(Packed, FlakeInputs)> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let (w, packed, kept) = archive::write_archive_keeping(
            &tree,
            std::io::BufWriter::with_capacity(256 * 1024, f),
            options,
            &*super::progress::handle(),
            &npcnix::publish::flake::KEEP,
        )?;
        // Renamed into place so readers never see a partial archive. Not
        // fsynced: a pack output is a build artifact, re-hashed by whatever
        // uses it (publish), not state (D23); an fsync of hundreds of MB
        // would double the time of a large pack.
        w.into_inner().map_err(|e| e.into_error())?;
        let flake = check_flake_kept(&tmp, Some(src), Some(kept))?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        Ok((packed, flake))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let (packed, flake) = res?;
    Ok(PackedFile {
        packed,
        from_git: tree.from_git,
        flake,
    })
}

pub fn run(a: Args) -> Result<()> {
    super::common::existing_dir("--src", &a.src)?;
    let mut options = a.threads.options();
    if a.pack_format == "v1" {
        options.format = PackFormat::V1;
    }
    // --hash-only packs into a private temp dir: the flake is checked on
    // the archive as packed, whatever is asked for.
    let work = fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-pack-")
        .context("creating a private temp dir")?;
    let out = match (&a.out, a.hash_only) {
        (Some(out), _) => out.clone(),
        (None, true) => work.path().join("archive.tar.zst"),
        (None, false) => bail!("--out FILE or --hash-only is required"),
    };
    let PackedFile {
        packed,
        from_git,
        flake,
    } = pack_to_file(&a.src, &out, a.all_files, &options)?;
    if a.json {
        super::common::print_json(&serde_json::json!({
            "blake3": packed.blake3.to_hex(),
            "size": packed.size,
            "entries": packed.entries,
            "git_tracked_only": from_git,
            "flake_lock_blake3": flake.lock_blake3.map(|d| d.to_hex()),
            "flake_inputs": flake.inputs,
            "out": a.out,
        }));
    } else {
        outln!("blake3:  {}", packed.blake3);
        outln!("size:    {}", super::out::size(packed.size));
        outln!(
            "entries: {}{}",
            packed.entries,
            if from_git {
                " (files tracked by git)"
            } else {
                ""
            }
        );
        match flake.lock_blake3 {
            Some(d) => outln!("lock:    flake.lock {d} ({})", flake.pins()),
            None => outln!("lock:    none (the flake has no inputs)"),
        }
        if let Some(out) = &a.out {
            outln!("written: {}", out.display());
        }
    }
    Ok(())
}
