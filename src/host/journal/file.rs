//! The audit log's files: appending a line, rotating, reading.
//!
//! Rotation never leaves a moment, crash or not, where the carried floor
//! lines (`log-rotated`) exist nowhere: the new log is written and fsynced
//! under a temporary name first, the old log is then linked to its rotated
//! name (it stays at its own name too), and only then is the new log renamed
//! over it. A rotation cut short is finished, or undone, by the next writer:
//!
//! | crash after        | on disk                                  | next writer          |
//! |--------------------|------------------------------------------|----------------------|
//! | the new log's fsync | `path` (old), `path.next`                | removes `path.next`  |
//! | linking the old     | `path` = `path.1` (old), `path.next`     | renames `path.next` into place |
//! | the rename          | `path` (new), `path.1` (old)             | nothing to do        |
//!
//! Readers see the old lines once in every state (a `path.1` that is the
//! same file as `path` is read once).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{
    clip, shows_verified, AuditEvent, MalformedLine, DETAIL_MAX_CHARS, ROTATED_EVENT,
    ROTATE_AT_BYTES,
};

/// Where the log at `path` is rotated to.
pub fn rotated_path(path: &Path) -> PathBuf {
    suffixed(path, ".1")
}

/// Where a rotation writes the new log before it takes the log's place.
fn next_path(path: &Path) -> PathBuf {
    suffixed(path, ".next")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The steps of a rotation, for tests that cut one short (a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The new log, with the carried lines, is written and fsynced.
    NewWritten,
    /// The old log is also at its rotated name.
    OldLinked,
    /// The new log is in place.
    NewPlaced,
}

/// Appends `event` to the log at `path` (created 0600 if missing), rotating
/// it first when the line would take it past [`ROTATE_AT_BYTES`].
pub fn append(path: &Path, event: &AuditEvent) -> io::Result<()> {
    append_rotating_at(path, event, ROTATE_AT_BYTES)
}

/// [`append`] with the rotation size as a parameter (tests use small ones).
pub fn append_rotating_at(path: &Path, event: &AuditEvent, rotate_at: u64) -> io::Result<()> {
    append_with(path, event, rotate_at, &|_| Ok(()))
}

/// [`append_rotating_at`] with `fault` called after each step of a
/// rotation: an `Err` ends the append there, as a crash would.
pub(crate) fn append_with(
    path: &Path,
    event: &AuditEvent,
    rotate_at: u64,
    fault: &dyn Fn(Step) -> io::Result<()>,
) -> io::Result<()> {
    let mut event = event.clone();
    event.detail = event.detail.map(|d| clip(&d, DETAIL_MAX_CHARS));
    let mut line = serde_json::to_vec(&event).map_err(io::Error::other)?;
    line.push(b'\n');
    // Writers (the agent, a manual `activate`, `pause`) serialise on an
    // flock of the file itself. One that opened the file just before
    // another rotated it finds a different inode at `path` once it holds
    // the lock, and opens again; a few times is enough unless rotations race
    // faster than a line is written.
    for _ in 0..4 {
        let f = open_log(path)?;
        f.lock()?;
        if !same_file(&f, path)? {
            continue;
        }
        if finish_rotation(path, &f)? {
            continue;
        }
        let len = f.metadata()?.len();
        let mut f = f;
        if len > 0 && len + line.len() as u64 > rotate_at {
            f = rotate(path, f, &event, fault)?;
        }
        f.write_all(&line)?;
        return f.sync_data();
    }
    Err(io::Error::other(format!(
        "{} kept being rotated by another writer",
        path.display()
    )))
}

fn open_log(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn same_file(f: &fs::File, path: &Path) -> io::Result<bool> {
    let open = f.metadata()?;
    Ok(match fs::symlink_metadata(path) {
        Ok(now) => now.dev() == open.dev() && now.ino() == open.ino(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    })
}

/// A rotation cut short (see the module docs), found by the writer holding
/// the log `f` locked: finished (`true`: the log was replaced, open it
/// again) or undone (`false`).
fn finish_rotation(path: &Path, f: &fs::File) -> io::Result<bool> {
    let next = next_path(path);
    if fs::symlink_metadata(&next).is_err() {
        return Ok(false);
    }
    if same_file(f, &rotated_path(path))? {
        fs::rename(&next, path)?;
        sync_dir(path)?;
        return Ok(true);
    }
    // Written, never linked: the old log is still whole at `path`.
    fs::remove_file(&next)?;
    Ok(false)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Rotates the log (held locked as `old`) and returns the new log, locked,
/// opened by the carried-over high-water lines.
fn rotate(
    path: &Path,
    mut old: fs::File,
    event: &AuditEvent,
    fault: &dyn Fn(Step) -> io::Result<()>,
) -> io::Result<fs::File> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    old.seek(io::SeekFrom::Start(0))?;
    // Bounded: the file is at most ROTATE_AT_BYTES plus one line, unless
    // something other than npcnix appended to it.
    Read::by_ref(&mut old)
        .take(4 * ROTATE_AT_BYTES)
        .read_to_end(&mut bytes)?;
    let carried = high_water(&String::from_utf8_lossy(&bytes));
    let mut head = Vec::new();
    for (remote, version) in carried {
        let mut ev = AuditEvent::new(event.time, ROTATED_EVENT, &remote);
        ev.version = Some(version);
        ev.detail = Some(format!(
            "audit log rotated to {}; highest version verified for this remote before it",
            rotated_path(path).display()
        ));
        head.extend(serde_json::to_vec(&ev).map_err(io::Error::other)?);
        head.push(b'\n');
    }
    // 1. The new log, complete and durable under its temporary name.
    let next = next_path(path);
    let mut new = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&next)?;
    new.write_all(&head)?;
    new.sync_all()?;
    drop(new);
    fault(Step::NewWritten)?;
    // 2. The old log at its rotated name too (replacing the one before).
    let linking = suffixed(path, ".1.link");
    let _ = fs::remove_file(&linking);
    if let Err(e) = fs::hard_link(path, &linking) {
        // A file system without hard links (vfat, some FUSE/9p mounts): a
        // durable copy instead. A crash before step 3 then leaves the old
        // lines in both files until the next rotation (read twice), never
        // lost.
        let unsupported = matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::EXDEV | libc::EOPNOTSUPP | libc::EMLINK | libc::ENOSYS)
        );
        if !unsupported {
            return Err(e);
        }
        fs::copy(path, &linking)?;
        fs::File::open(&linking)?.sync_all()?;
    }
    fs::rename(&linking, rotated_path(path))?;
    sync_dir(path)?;
    fault(Step::OldLinked)?;
    // 3. The new log takes the log's place.
    fs::rename(&next, path)?;
    sync_dir(path)?;
    fault(Step::NewPlaced)?;
    let new = open_log(path)?;
    new.lock()?;
    drop(old);
    Ok(new)
}

/// Per remote, the highest version that `text`'s lines show verified.
fn high_water(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut high = std::collections::BTreeMap::new();
    for ev in text
        .lines()
        .filter(|l| l.len() <= 64 * 1024)
        .filter_map(|l| serde_json::from_str::<AuditEvent>(l).ok())
        .filter(|ev| shows_verified(&ev.event))
    {
        if let Some(v) = ev.version {
            let h = high.entry(ev.remote).or_insert(v);
            *h = (*h).max(v);
        }
    }
    high
}

/// Reads the log: the rotated file's lines, then the current file's
/// (bounded per line); malformed lines are reported, not skipped silently.
/// A rotation cut short is read as if it had finished.
pub fn read(path: &Path) -> io::Result<Vec<Result<AuditEvent, MalformedLine>>> {
    let rotated = rotated_path(path);
    let linked_only = match (fs::metadata(path), fs::metadata(&rotated)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    let mut all = read_one(&rotated)?;
    if linked_only {
        all.extend(read_one(&next_path(path))?);
    } else {
        all.extend(read_one(path)?);
    }
    Ok(all)
}

fn read_one(path: &Path) -> io::Result<Vec<Result<AuditEvent, MalformedLine>>> {
    let bytes = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let file = path.display().to_string();
    // A torn or corrupt byte spoils its line, not the whole log.
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let malformed = |detail: String| MalformedLine {
                file: file.clone(),
                line: i + 1,
                detail,
            };
            if l.len() > 64 * 1024 {
                return Err(malformed("too long".into()));
            }
            serde_json::from_str(l).map_err(|e| malformed(e.to_string()))
        })
        .collect())
}
