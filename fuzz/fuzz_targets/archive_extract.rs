//! archive_extract: the hardened extractor (protocol.md section 7) never
//! writes outside its directory and never leaves anything a packer could
//! not have produced, whatever the archive, accepted or refused.
//!
//! The first input byte picks the mode. Mode 0 (even): the rest is a
//! `.tar.zst` stream, as a store would serve it. Mode 1 (odd): the rest is a
//! raw tar stream, zstd-compressed here first so that mutations reach the
//! tar layer.
//!
//! Each run extracts into a fresh directory inside a per-process base
//! directory. Proves, after every extraction (Ok or Err):
//! * a failure is a refusal, never an I/O error: with these small limits
//!   every name fits the file system, so an `Io` error means a hostile
//!   entry was misclassified (exit code 1 instead of 3), or the disk is full;
//! * the base directory holds nothing but this run's directory;
//! * the tree holds only regular files, directories and symlinks, none with
//!   setuid, setgid or sticky bits;
//! * every symlink is relative: leading `..` components, then plain names,
//!   with fewer `..` than the link's depth, so it resolves inside the tree;
//! and, when extraction succeeded:
//! * the input is exactly one zstd frame: it starts with the frame magic
//!   and a single-frame decoder consumes it to the last byte;
//! * files have mode 0644 or 0755 exactly;
//! * the tree matches the returned stats (files, dirs, symlinks, bytes) and
//!   the stats respect the limits.

#![no_main]

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use npcnix::archive::{extract, ExtractError};
use npcnix::archive::limits::Limits;

/// Small limits: a run stays fast, and the limits themselves get hit.
const LIMITS: Limits = Limits {
    archive_bytes: 1 << 20,
    unpacked_bytes: 1 << 20,
    entries: 1000,
    depth: 16,
    path_bytes: 256,
    file_bytes: 1 << 20,
    zstd_window_log: 20,
};

static RUN: AtomicU64 = AtomicU64::new(0);

/// `$TMPDIR/npcnix-fuzz-extract-<pid>`, created empty, mode 0700 (set
/// explicitly, so no setgid bit is inherited from the temp dir).
fn base_dir() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("npcnix-fuzz-extract-{}", std::process::id()));
        // Left over from an earlier process with the same pid.
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("create base dir");
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).expect("chmod base dir");
        base
    })
    .as_path()
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
}

/// Walks `dir` (at `depth` components below the run directory) without
/// following symlinks, checking each entry.
fn walk(dir: &Path, depth: usize, succeeded: bool, t: &mut Tally) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        let md = fs::symlink_metadata(&path).expect("lstat");
        let mode = md.permissions().mode();
        let kind = md.file_type();
        assert_eq!(
            mode & 0o7000,
            0,
            "{path:?} has setuid/setgid/sticky bits ({mode:o})"
        );
        if kind.is_symlink() {
            check_link(&path, depth + 1);
            t.symlinks += 1;
        } else if kind.is_dir() {
            t.dirs += 1;
            walk(&path, depth + 1, succeeded, t);
        } else if kind.is_file() {
            if succeeded {
                let perm = mode & 0o7777;
                assert!(perm == 0o644 || perm == 0o755, "{path:?} has mode {perm:o}");
            }
            t.files += 1;
            t.bytes += md.len();
        } else {
            panic!("{path:?} is not a file, directory or symlink ({kind:?})");
        }
    }
}

/// A symlink at `depth` components below the run directory must resolve
/// inside it, lexically and through any chain of in-tree symlinks.
fn check_link(link: &Path, depth: usize) {
    let target = fs::read_link(link).expect("readlink");
    let text = target
        .to_str()
        .unwrap_or_else(|| panic!("{link:?} -> non-UTF-8 target {target:?}"));
    assert!(
        !text.starts_with('/'),
        "{link:?} -> absolute target {text:?}"
    );
    let mut ups = 0usize;
    let mut names = 0usize;
    for c in text.split('/') {
        match c {
            ".." if names == 0 => ups += 1,
            ".." => panic!("{link:?} -> {text:?}: `..` after a name"),
            "" | "." => panic!("{link:?} -> {text:?}: empty or `.` component"),
            _ => names += 1,
        }
    }
    assert!(
        ups < depth,
        "{link:?} -> {text:?} climbs {ups} levels from depth {depth}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let compressed;
    let input: &[u8] = if mode & 1 == 0 {
        rest
    } else {
        compressed = zstd::stream::encode_all(rest, 1).expect("zstd compression");
        &compressed
    };

    let base = base_dir();
    let name = format!("run-{}", RUN.fetch_add(1, Ordering::Relaxed));
    let run = base.join(&name);
    fs::create_dir(&run).expect("create run dir");

    let result = extract(input, &run, &LIMITS);
    if let Err(ExtractError::Io { path, source }) = &result {
        panic!("I/O error instead of a refusal at {path:?}: {source}");
    }

    let in_base: Vec<OsString> = fs::read_dir(base)
        .expect("read base dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(
        in_base,
        vec![OsString::from(name.as_str())],
        "extraction wrote outside its directory"
    );
    assert!(fs::symlink_metadata(&run).expect("lstat run dir").is_dir());

    if result.is_ok() {
        assert_eq!(input.get(..4), Some(&[0x28, 0xb5, 0x2f, 0xfd][..]), "accepted a non-frame start");
        let mut cursor = std::io::Cursor::new(input);
        let mut dec = zstd::stream::read::Decoder::with_buffer(&mut cursor)
            .expect("decoder")
            .single_frame();
        std::io::copy(&mut dec, &mut std::io::sink()).expect("one valid frame");
        drop(dec);
        assert_eq!(cursor.position() as usize, input.len(), "accepted data after the frame");
    }

    let mut tally = Tally::default();
    walk(&run, 0, result.is_ok(), &mut tally);
    if let Ok(stats) = &result {
        let expected = Tally {
            files: stats.files,
            dirs: stats.dirs,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
        };
        assert_eq!(
            tally, expected,
            "the tree on disk differs from the reported stats"
        );
        assert!(stats.bytes <= LIMITS.unpacked_bytes);
        assert!(stats.files + stats.dirs + stats.symlinks <= LIMITS.entries);
    }

    fs::remove_dir_all(&run).expect("remove run dir");
});
