//! The directory store (`file://`): a remote is a plain directory, e.g. on a
//! shared file system, a USB stick, or served read-only over HTTP.
//!
//! * create-only: the object is written to a temp file, fsynced, then
//!   hard-linked to its final name (`link(2)` fails if the name exists), so
//!   readers never see a partial object and two writers cannot both win;
//! * compare-and-swap of `latest`: under an exclusive `flock` on
//!   `.npcnix-lock`, compare the current ETag, then write atomically
//!   (temp, fsync, rename, fsync dir);
//! * ETag: BLAKE3 of the content, so it changes exactly when content does.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{ETag, Fetched, Store, StoreError, StoreErrorKind};
use crate::fsutil;

pub struct FileStore {
    root: PathBuf,
    url: String,
}

impl FileStore {
    pub fn new(root: PathBuf, url: String) -> FileStore {
        FileStore { root, url }
    }

    fn err(&self, key: &str, e: &io::Error) -> StoreError {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => StoreErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => StoreErrorKind::Unauthorized,
            io::ErrorKind::AlreadyExists => StoreErrorKind::PreconditionFailed,
            _ => StoreErrorKind::Other,
        };
        if e.kind() == io::ErrorKind::PermissionDenied {
            // Name who was denied where: a root agent reads a file:// store
            // through its fetch worker, as the fetch user (D36, D121).
            let who = crate::fsutil::current_uid()
                .map_or_else(|_| "this process".into(), |uid| format!("uid {uid}"));
            return self.fail(
                key,
                kind,
                format!(
                    "{e}: {} is not readable (or writable) as {who}; a root agent reads file:// stores through its fetch worker, as the fetch user (fetcher.user): grant that user access",
                    self.root.join(key).display()
                ),
            );
        }
        self.fail(key, kind, e.to_string())
    }

    fn fail(&self, key: &str, kind: StoreErrorKind, detail: String) -> StoreError {
        StoreError::new(kind, &self.url, key, detail)
    }

    /// Maps a store key to a path, refusing anything that is not a plain
    /// relative key (keys come from our own code, but stay defensive).
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(self.fail(key, StoreErrorKind::Other, "invalid object key".into()));
        }
        Ok(self.root.join(key))
    }

    fn parent_dir(&self, key: &str, path: &Path) -> Result<PathBuf, StoreError> {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::create_dir_all(&dir).map_err(|e| self.err(key, &e))?;
        Ok(dir)
    }

    fn etag_of(bytes: &[u8]) -> ETag {
        ETag(format!("\"{}\"", blake3::hash(bytes).to_hex()))
    }

    /// Opens an object that must be a regular file, without following a
    /// symlink anywhere below the remote's root and without opening anything
    /// else for reading (opening a device node can have effects of its own).
    ///
    /// The object's directory (`releases/`, `archives/`) and then the object
    /// are opened with `O_PATH | O_NOFOLLOW`, which neither follows a final
    /// symlink nor opens the file's contents; `fstat` on that handle must
    /// show a regular file; only then is the same inode opened for reading,
    /// through `/proc/self/fd` (no second lookup of the name, so no race),
    /// with `O_NONBLOCK` as a last guard against a FIFO. The root itself is
    /// the operator's configured path and may be a symlink.
    fn open_regular(&self, key: &str) -> Result<fs::File, StoreError> {
        // Validates the key (no `..`, no absolute path, no empty component).
        self.path(key)?;
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let path_only = |p: &Path, extra: i32| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra)
                .open(p)
        };
        let (dir, name) = match key.rsplit_once('/') {
            Some((d, n)) => (
                path_only(&self.root.join(d), libc::O_DIRECTORY).map_err(|e| {
                    self.fail(
                        key,
                        if e.kind() == io::ErrorKind::NotFound {
                            StoreErrorKind::NotFound
                        } else {
                            StoreErrorKind::Other
                        },
                        format!("{d}/ must be a directory, not a symlink ({e})"),
                    )
                })?,
                n,
            ),
            None => (
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(&self.root)
                    .map_err(|e| self.err(key, &e))?,
                key,
            ),
        };
        let handle = path_only(
            Path::new(&format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())),
            0,
        )
        .map_err(|e| self.err(key, &e))?;
        let md = handle.metadata().map_err(|e| self.err(key, &e))?;
        if md.file_type().is_symlink() {
            return Err(self.fail(
                key,
                StoreErrorKind::Other,
                "is a symlink; store objects must be regular files".into(),
            ));
        }
        if !md.is_file() {
            return Err(self.fail(key, StoreErrorKind::Other, "not a regular file".into()));
        }
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
            .map_err(|e| self.err(key, &e))?;
        let opened = f.metadata().map_err(|e| self.err(key, &e))?;
        if !opened.is_file() || opened.dev() != md.dev() || opened.ino() != md.ino() {
            return Err(self.fail(key, StoreErrorKind::Other, "changed while opening".into()));
        }
        Ok(f)
    }

    fn read_limited(&self, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let f = self.open_regular(key)?;
        let mut buf = Vec::new();
        f.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| self.err(key, &e))?;
        if buf.len() as u64 > limit {
            return Err(self.fail(
                key,
                StoreErrorKind::TooLarge,
                format!("object is larger than {limit} bytes"),
            ));
        }
        Ok(buf)
    }
}

impl Store for FileStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn get(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        limit: u64,
    ) -> Result<Fetched, StoreError> {
        let bytes = self.read_limited(key, limit)?;
        let etag = Self::etag_of(&bytes);
        if if_none_match == Some(&etag) {
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Object {
            bytes,
            etag: Some(etag),
        })
    }

    fn open(
        &self,
        key: &str,
        from: u64,
        _max_bytes: u64,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let mut f = self.open_regular(key)?;
        if from > 0 {
            use std::io::Seek;
            f.seek(io::SeekFrom::Start(from))
                .map_err(|e| self.fail(key, StoreErrorKind::Other, e.to_string()))?;
        }
        // Unbuffered: the verified stream reads whole buffers of groups at
        // once, and a reader's own buffer would only copy every byte again.
        Ok(Box::new(f))
    }

    fn put_new(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let dir = self.parent_dir(key, &path)?;
        if fs::symlink_metadata(&path).is_ok() {
            return Err(self.fail(
                key,
                StoreErrorKind::PreconditionFailed,
                "already exists".into(),
            ));
        }
        let tmp = dir.join(format!(".upload-{}", fsutil::random_suffix()));
        let res = (|| -> Result<(), StoreError> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(|e| self.err(key, &e))?;
            let n = io::copy(&mut body.take(len.saturating_add(1)), &mut f)
                .map_err(|e| self.err(key, &e))?;
            if n != len {
                return Err(self.fail(
                    key,
                    StoreErrorKind::Other,
                    format!("upload body was {n} bytes, expected {len}"),
                ));
            }
            f.flush()
                .and_then(|()| f.sync_all())
                .map_err(|e| self.err(key, &e))?;
            // link(2) is the atomic create-only step: it fails if `path`
            // exists, whoever created it in the meantime.
            fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    self.fail(
                        key,
                        StoreErrorKind::PreconditionFailed,
                        "already exists".into(),
                    )
                } else {
                    self.err(key, &e)
                }
            })?;
            fsutil::sync_dir(&dir).map_err(|e| self.err(key, &e))
        })();
        let _ = fs::remove_file(&tmp);
        res
    }

    fn put_swap(
        &self,
        key: &str,
        body: &[u8],
        expected: Option<&ETag>,
    ) -> Result<ETag, StoreError> {
        let path = self.path(key)?;
        self.parent_dir(key, &path)?;
        let lock_path = self.root.join(".npcnix-lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|e| self.err(key, &e))?;
        lock.lock().map_err(|e| self.err(key, &e))?;
        let current =
            match self.read_limited(key, crate::format::bundle::BUNDLE_MAX_BYTES as u64 * 4) {
                Ok(b) => Some(Self::etag_of(&b)),
                Err(e) if e.kind == StoreErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
        if current.as_ref() != expected {
            return Err(self.fail(
                key,
                StoreErrorKind::PreconditionFailed,
                "changed since it was read".into(),
            ));
        }
        fsutil::write_atomic(&path, body, 0o644).map_err(|e| self.err(key, &e))?;
        drop(lock);
        Ok(Self::etag_of(body))
    }

    /// Written relative to directory fds opened (or created) one component
    /// at a time with `O_DIRECTORY | O_NOFOLLOW` below the root: the agent
    /// writes its receipts here as root, and a `hosts/` planted as a
    /// symlink (the store is untrusted) must not carry that write
    /// elsewhere. The final rename replaces a symlink at the key itself
    /// rather than following it.
    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        use crate::archive::dirfd::{errno_io, DIR_FLAGS};
        use rustix::fs::{Mode, OFlags};
        self.path(key)?;
        let io_err = |e: rustix::io::Errno| self.err(key, &errno_io(e));
        let (dir_part, name) = key.rsplit_once('/').unwrap_or(("", key));
        let mut dir = rustix::fs::openat(
            rustix::fs::CWD,
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        for c in dir_part.split('/').filter(|c| !c.is_empty()) {
            let next = match rustix::fs::openat(&dir, c, DIR_FLAGS, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, c, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_err(e)),
                    }
                    rustix::fs::openat(&dir, c, DIR_FLAGS, Mode::empty())
                }
                other => other,
            };
            dir = next.map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => self.fail(
                    key,
                    StoreErrorKind::Other,
                    format!("{c}/ in the remote is not a directory (a symlink?); not writing through it"),
                ),
                e => io_err(e),
            })?;
        }
        let tmp = format!(".{name}.tmp-{}", fsutil::random_suffix());
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(io_err)?;
        let mut f = fs::File::from(fd);
        let written = f
            .write_all(body)
            .and_then(|()| f.sync_all())
            .map_err(|e| self.err(key, &e))
            .and_then(|()| rustix::fs::renameat(&dir, tmp.as_str(), &dir, name).map_err(io_err));
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), rustix::fs::AtFlags::empty());
        }
        written?;
        rustix::fs::fsync(&dir).map_err(io_err)
    }

    fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        // Keys are "dir/name"; list the directory part of the prefix.
        let (dir_part, name_prefix) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(prefix, &e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| self.err(prefix, &e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.starts_with(name_prefix) {
                continue;
            }
            if out.len() == max {
                return Err(self.fail(
                    prefix,
                    StoreErrorKind::TooLarge,
                    format!("more than {max} objects"),
                ));
            }
            out.push(if dir_part.is_empty() {
                name
            } else {
                format!("{dir_part}/{name}")
            });
        }
        out.sort();
        Ok(out)
    }
}
