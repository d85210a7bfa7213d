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

    /// Opens an object that must be a regular file. `O_NONBLOCK` keeps a
    /// FIFO planted in the store from blocking the open forever (it has no
    /// effect on reads from regular files); anything else is refused.
    fn open_regular(&self, key: &str, path: &Path) -> Result<fs::File, StoreError> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| self.err(key, &e))?;
        let md = f.metadata().map_err(|e| self.err(key, &e))?;
        if !md.is_file() {
            return Err(self.fail(key, StoreErrorKind::Other, "not a regular file".into()));
        }
        Ok(f)
    }

    fn read_limited(&self, key: &str, path: &Path, limit: u64) -> Result<Vec<u8>, StoreError> {
        let f = self.open_regular(key, path)?;
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
        let path = self.path(key)?;
        let bytes = self.read_limited(key, &path, limit)?;
        let etag = Self::etag_of(&bytes);
        if if_none_match == Some(&etag) {
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Object {
            bytes,
            etag: Some(etag),
        })
    }

    fn open(&self, key: &str, _max_bytes: u64) -> Result<Box<dyn Read + Send>, StoreError> {
        let path = self.path(key)?;
        let f = self.open_regular(key, &path)?;
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, f)))
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
        let current = match self.read_limited(
            key,
            &path,
            crate::format::bundle::BUNDLE_MAX_BYTES as u64 * 4,
        ) {
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

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
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
