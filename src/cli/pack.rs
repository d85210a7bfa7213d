//! `npcnix pack`: deterministic tar.zst of a flake.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use npcnix::archive::{self, FileSelection, Packed};
use npcnix::fsutil;

#[derive(clap::Args)]
#[command(
    about = "Pack a flake directory into a deterministic .tar.zst",
    long_about = "Pack a flake directory into a deterministic .tar.zst and print its BLAKE3 and size. \
The same tree gives byte-identical output whatever the mtimes, owners, umask or machine (entries sorted, \
mtime 1, uid/gid 0, modes 0644/0755). Only regular files, directories and relative symlinks that stay \
inside the tree are packed. Inside a git work tree only the files git tracks are packed (that is what Nix \
sees); --all-files packs everything except .git.\n\nExample:\n  npcnix pack --src ./flake --out release.tar.zst"
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
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn selection(all_files: bool) -> FileSelection {
    if all_files {
        FileSelection::AllFiles
    } else {
        FileSelection::GitTrackedIfRepo
    }
}

/// Packs `src` into a new file `out` (temp + rename).
pub fn pack_to_file(src: &Path, out: &Path, all_files: bool) -> Result<(Packed, bool)> {
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
    let res = (|| -> Result<Packed> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let (w, packed) =
            archive::write_archive(&tree, std::io::BufWriter::with_capacity(256 * 1024, f))?;
        // Renamed into place so readers never see a partial archive. Not
        // fsynced: a pack output is a build artifact, re-hashed by whatever
        // uses it (publish), not state (D23); an fsync of hundreds of MB
        // would double the time of a large pack.
        w.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        Ok(packed)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok((res?, tree.from_git))
}

struct Sink;
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn run(a: Args) -> Result<()> {
    super::common::existing_dir("--src", &a.src)?;
    let (packed, from_git) = match &a.out {
        Some(out) => pack_to_file(&a.src, out, a.all_files)?,
        None if a.hash_only => {
            let tree = archive::collect_entries(&a.src, selection(a.all_files))?;
            (archive::write_archive(&tree, Sink)?.1, tree.from_git)
        }
        None => bail!("--out FILE or --hash-only is required"),
    };
    if a.json {
        super::common::print_json(&serde_json::json!({
            "blake3": packed.blake3.to_hex(),
            "size": packed.size,
            "entries": packed.entries,
            "git_tracked_only": from_git,
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
        if let Some(out) = &a.out {
            outln!("written: {}", out.display());
        }
    }
    Ok(())
}
