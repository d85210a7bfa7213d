//! File-system helpers with the durability and permission rules npcnix needs:
//! atomic replacement (temp file, fsync, rename, fsync dir), create-only
//! secret files (0600, `O_EXCL`), and private temporary directories (0700).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A short random hex string for temporary names.
pub fn random_suffix() -> String {
    let mut b = [0u8; 8];
    // Uniqueness, not secrecy: fall back to the pid and time on failure.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// fsyncs a directory so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Atomically replaces `path` with `data`: write a temp file in the same
/// directory, fsync it, rename over `path`, fsync the directory. Readers see
/// the old or the new content, never a mix; a crash leaves one of the two.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        random_suffix()
    ));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Creates a new file that must not exist yet (secret keys, never
/// overwritten), with `mode`, and fsyncs it and its directory.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let res = f.write_all(data).and_then(|()| f.sync_all());
    if res.is_err() {
        drop(f);
        let _ = fs::remove_file(path);
        return res;
    }
    sync_dir(parent_of(path))
}

/// Opens a file that must be a regular file: not a symlink (`O_NOFOLLOW`),
/// FIFO, device or directory. A two-faced file could give a hasher and an
/// uploader different bytes, and `/dev/zero` would read for ever.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a symlink, FIFO, device or directory)",
        ));
    }
    Ok(f)
}

/// Reads a small regular file whole ([`open_regular`]), refusing one larger
/// than `max` bytes without reading past `max + 1`.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Creates `dir` (and parents) if missing and makes sure it is a real
/// directory, not a symlink. New directories get mode 0700.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// A fresh, empty, mode-0700 directory under `parent`, removed on drop
/// unless [`TempDir::keep`] is called.
#[derive(Debug)]
pub struct TempDir {
    path: Option<PathBuf>,
    /// The directory, open and `flock`ed while this value lives (see
    /// [`TempDir::new_held_in`]).
    held: Option<fs::File>,
}

/// Name prefix of a held temp dir before it is locked and renamed to its
/// real name; [`sweep_abandoned`] leaves such entries alone for a while.
const UNLOCKED_PREFIX: &str = ".new-";

/// How old an entry that was never locked must be before
/// [`sweep_abandoned`] removes it (it can only be one whose creator died
/// between `mkdir` and `flock`, microseconds).
const UNLOCKED_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

impl TempDir {
    pub fn new_in(parent: &Path, prefix: &str) -> io::Result<TempDir> {
        ensure_private_dir(parent)?;
        for _ in 0..16 {
            let p = parent.join(format!("{prefix}{}", random_suffix()));
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {
                    return Ok(TempDir {
                        path: Some(p),
                        held: None,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not create a unique temporary directory",
        ))
    }

    /// Like [`TempDir::new_in`], and holds an exclusive `flock` on the
    /// directory for as long as this value lives. The lock is taken before
    /// the directory gets its `prefix` name (it is created as `.new-*` and
    /// renamed), so every such name under `parent` is either in use or was
    /// left by a process that died: [`sweep_abandoned`] removes the latter.
    pub fn new_held_in(parent: &Path, prefix: &str) -> io::Result<TempDir> {
        let mut t = TempDir::new_in(parent, UNLOCKED_PREFIX)?;
        let f = fs::File::open(t.path())?;
        // Where the file system has no flock, the directory is still used
        // (unlocked); the sweeper's own try_lock fails there too, so it is
        // never swept while in use.
        let locked = f.lock().is_ok();
        for _ in 0..16 {
            let p = parent.join(format!("{prefix}{}", random_suffix()));
            if fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            fs::rename(t.path(), &p)?;
            t.path = Some(p);
            t.held = locked.then_some(f);
            return Ok(t);
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not name a unique temporary directory",
        ))
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Stops the directory from being deleted and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // remove_dir_all does not follow symlinks (CVE-2022-21658 fix).
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Removes the directories under `parent` (a private temp area such as
/// `<data>/tmp`) that a process killed while using them left behind: those
/// made by [`TempDir::new_held_in`] whose lock nobody holds any more (and
/// never-locked `.new-*` ones older than ten minutes). Directories in use by
/// this or any other process, and anything that is not a directory, stay.
/// Returns how many were removed.
pub fn sweep_abandoned(parent: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(parent) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for ent in entries {
        let ent = ent?;
        let path = ent.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if ent
            .file_name()
            .to_string_lossy()
            .starts_with(UNLOCKED_PREFIX)
        {
            let young = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < UNLOCKED_GRACE);
            if young {
                continue;
            }
        }
        // flock is per open file: a directory this process holds is
        // refused here just like one another process holds.
        let Ok(f) = fs::File::open(&path) else {
            continue;
        };
        if f.try_lock().is_ok() && fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Current time as Unix seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The effective uid of this process (from `/proc/self`, without FFI).
pub fn current_uid() -> io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid())
}
