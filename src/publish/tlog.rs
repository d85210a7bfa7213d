//! The writer's side of a remote's witnessed log (issue 37): every
//! published release statement becomes one leaf of a C2SP tlog-tiles log
//! under `log/` in the store, and the log key signs a checkpoint of it.
//!
//! ```text
//! log/checkpoint                  signed note: origin, size, root (the log key)
//! log/tile/<L>/<N>[.p/<W>]        hash tiles (format::tiles)
//! log/tile/entries/<N>[.p/<W>]    entry bundles: the statements, byte for byte
//! log/index/<statement BLAKE3>    the leaf index of a statement (a hint)
//! witnesses/<key ID>/checkpoint   a witness's latest cosigned checkpoint
//! ```
//!
//! Appending runs while the publisher holds version `v`'s claim (it created
//! `releases/<v>`, create-only; `latest` is not yet swapped), so appenders
//! never overlap; the checkpoint itself is still swapped on its ETag, and a
//! lost swap starts over from the new checkpoint. Files past the signed
//! checkpoint belong to nobody yet: a publisher that died before signing
//! left them, and the next one overwrites them. Everything read back is
//! checked: the checkpoint against the log key, the edge tiles against the
//! signed root (`tiles::append`), so a store that altered the log is never
//! extended.

use crate::format::keys::SecretKey;
use crate::format::merkle;
use crate::format::note::{self, Checkpoint, Note, VerifierKey};
use crate::format::statement::RemoteName;
use crate::format::tiles::{self, TileName};
use crate::format::Digest;
use crate::store::retry::Retry;
use crate::store::tlog::{self as reader, LogReadError};
use crate::store::{Object, Remote, StoreErrorKind, LOG_BUNDLE_LIMITS};
use crate::verify::witness::{self, TreeHead};

use super::PublishError;

impl From<LogReadError> for PublishError {
    fn from(e: LogReadError) -> Self {
        match e {
            LogReadError::Store(e) => PublishError::Store(e),
            LogReadError::Invalid(e) => PublishError::Log(e),
        }
    }
}

/// The log key of a remote, for signing checkpoints.
pub struct LogSigner<'k> {
    pub remote: RemoteName,
    pub key: &'k SecretKey,
    /// Start a log where the remote has none although this is not its
    /// first release (`--new-log`): deliberately, never because a log
    /// disappeared.
    pub new_log: bool,
    /// The time (Unix seconds), for the append lease.
    pub now: u64,
}

/// The object that serialises appenders: the checkpoint's swap alone
/// cannot, since tiles are written before it (two publishers holding
/// different versions' claims at once, `--version N`, would write the same
/// tile names with different leaves).
const LEASE_KEY: &str = "log/append.lock";
/// How long a lease holds: a publisher that died holding it blocks others
/// this long at most.
const LEASE_SECS: u64 = 600;

/// Takes the append lease (`held <token> until <time>`; `free` once
/// released), swapped on its ETag; another holder's unexpired lease is an
/// error that says until when.
fn take_lease(
    store: &dyn crate::store::Store,
    retry: &Retry,
    now: u64,
) -> Result<crate::store::ETag, PublishError> {
    for _ in 0..3 {
        let expected = match retry.run(|_| store.get(LEASE_KEY, None, 256)) {
            Ok(crate::store::Fetched::Object { bytes, etag }) => {
                if let Some(until) = held_until(&bytes, now) {
                    return Err(PublishError::Log(format!(
                        "another publisher is appending to the log on {} (its lease, {LEASE_KEY}, holds until {}); run again once it is done",
                        store.describe(),
                        crate::format::time::rfc3339(until)
                    )));
                }
                etag
            }
            Ok(crate::store::Fetched::NotModified) => None,
            Err(e) if e.kind == StoreErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let body = format!(
            "held {} until {}\n",
            crate::fsutil::random_suffix(),
            now.saturating_add(LEASE_SECS)
        );
        match store.put_swap(LEASE_KEY, body.as_bytes(), expected.as_ref()) {
            Ok(etag) => return Ok(etag),
            // Someone took it between the read and the swap: look again.
            Err(e) if e.kind == StoreErrorKind::PreconditionFailed => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PublishError::Log(format!(
        "the log's append lease on {} kept changing hands; run again",
        store.describe()
    )))
}

/// Whether another publisher holds the append lease now (the time it
/// holds until): checked before a publish claims its version, so a busy
/// log stops it before anything is uploaded (the lease itself is taken at
/// the append).
pub fn lease_held(remote: &Remote, now: u64) -> Result<Option<u64>, PublishError> {
    match remote.store().get(LEASE_KEY, None, 256) {
        Ok(crate::store::Fetched::Object { bytes, .. }) => Ok(held_until(&bytes, now)),
        Ok(crate::store::Fetched::NotModified) => Ok(None),
        Err(e) if e.kind == StoreErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// When a lease object (`held <token> until <time>`) still holds, if it
/// does at `now`.
fn held_until(lease: &[u8], now: u64) -> Option<u64> {
    let text = String::from_utf8_lossy(lease);
    let until = text
        .split_whitespace()
        .skip_while(|w| *w != "until")
        .nth(1)
        .and_then(|t| t.parse::<u64>().ok());
    until.filter(|u| text.starts_with("held ") && *u > now)
}

/// Gives the lease back (best effort: it expires anyway).
fn release_lease(store: &dyn crate::store::Store, etag: &crate::store::ETag) {
    let _ = store.put_swap(LEASE_KEY, b"free\n", Some(etag));
}

impl LogSigner<'_> {
    pub fn origin(&self) -> String {
        witness::origin(&self.remote, &self.key.key_id)
    }

    pub fn verifier(&self) -> Result<VerifierKey, String> {
        witness::log_verifier(&self.remote, &self.key.public_key())
    }

    fn sign(&self, c: &Checkpoint) -> Vec<u8> {
        let text = c.to_text();
        let sig = note::sign(&self.origin(), self.key.signing_key(), &text);
        Note {
            text,
            sigs: vec![sig],
        }
        .to_bytes()
    }
}

/// Where a statement landed in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Its leaf index.
    pub index: u64,
    /// The size of the checkpoint that holds it.
    pub size: u64,
    /// It was there already (a publish run again after its log append).
    pub already: bool,
}

/// The statement's index if the log already holds it at the index its hint
/// names (checked against the entries, not trusted).
fn already_logged(
    remote: &Remote,
    head: &Checkpoint,
    statement: &[u8],
) -> Result<Option<u64>, PublishError> {
    let Some(index) = remote.log().log_index(&Digest::of(statement))? else {
        return Ok(None);
    };
    if index >= head.size {
        return Ok(None);
    }
    let Some(id) = tiles::bundle_in_tree(index >> 8, head.size) else {
        return Ok(None);
    };
    let Some(bytes) = remote.log().log_tile(TileName::Entries(id))? else {
        return Ok(None);
    };
    let entries = tiles::decode_bundle(id, &bytes, &LOG_BUNDLE_LIMITS)
        .map_err(|e| PublishError::Log(format!("the log's bundle {id}: {e}")))?;
    let at = (index & 0xff) as usize;
    if entries.get(at) != Some(&statement) {
        return Ok(None);
    }
    // The bundle is only a copy: its leaf must be in the signed tree.
    Ok(reader::includes(&remote.log(), &TreeHead::from(head), index, statement)?.then_some(index))
}

/// Whether `statement` extends an earlier release (it names one).
fn follows_a_release(statement: &[u8]) -> bool {
    crate::format::statement::Statement::parse(statement).map_or(true, |s| s.previous.is_some())
}

/// How often a lost checkpoint swap starts over.
const APPEND_ATTEMPTS: u32 = 3;

/// Appends `statement` (the exact signed bytes) to the remote's log and
/// signs the new checkpoint; nothing happens if the log already holds it.
pub fn append_statement(
    remote: &Remote,
    signer: &LogSigner<'_>,
    statement: &[u8],
    retry: &Retry,
) -> Result<Logged, PublishError> {
    let verifier = signer.verifier().map_err(PublishError::Log)?;
    let store = remote.store();
    let lease = take_lease(store, retry, signer.now)?;
    let res = append_leased(remote, signer, &verifier, statement, retry);
    release_lease(store, &lease);
    res
}

fn append_leased(
    remote: &Remote,
    signer: &LogSigner<'_>,
    verifier: &VerifierKey,
    statement: &[u8],
    retry: &Retry,
) -> Result<Logged, PublishError> {
    let store = remote.store();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let head = reader::read_head(&remote.log(), verifier)?;
        let (size, root, etag) = match &head {
            Some(h) => (h.checkpoint.size, h.checkpoint.root, h.etag.clone()),
            None if !signer.new_log && follows_a_release(statement) => {
                return Err(PublishError::Log(format!(
                    "{} has no log (log/checkpoint is missing) but this is not its first release: a log that disappeared is not started again silently (its witnesses would refuse the new one, and hosts with it); pass --new-log to start the remote's log deliberately (docs/witness.md)",
                    store.describe()
                )))
            }
            None => (0, merkle::root(&[]), None),
        };
        if let Some(h) = &head {
            if let Some(index) = already_logged(remote, &h.checkpoint, statement)? {
                return Ok(Logged {
                    index,
                    size,
                    already: true,
                });
            }
        }
        let edge = tiles::edge(size);
        let set = reader::fetch_tiles(&remote.log(), size, &edge.tiles)?;
        let partial =
            match edge.bundle {
                Some(id) => Some(remote.log().log_tile(TileName::Entries(id))?.ok_or_else(
                    || PublishError::Log(format!("the log's entry bundle {id} is missing")),
                )?),
                None => None,
            };
        let appended = tiles::append(
            &set,
            &root,
            partial.as_deref(),
            &[statement],
            &LOG_BUNDLE_LIMITS,
        )
        .map_err(|e| PublishError::Log(format!("refusing to extend the log: {e}")))?;
        for f in &appended.files {
            let key = Object::LogTile(f.name).key();
            retry.run(|_| store.put(&key, &f.bytes))?;
        }
        let index_key = Object::LogIndex(&Digest::of(statement)).key();
        retry.run(|_| store.put(&index_key, format!("{size}\n").as_bytes()))?;
        let next = Checkpoint {
            origin: signer.origin(),
            size: appended.size,
            root: appended.root,
            extensions: Vec::new(),
        };
        let bytes = signer.sign(&next);
        match crate::store::retry::put_swap_resolving(
            store,
            retry,
            &Object::LogCheckpoint.key(),
            &bytes,
            etag.as_ref(),
        ) {
            Ok(_) => {
                return Ok(Logged {
                    index: size,
                    size: appended.size,
                    already: false,
                })
            }
            Err(e) if e.kind == StoreErrorKind::PreconditionFailed && attempt < APPEND_ATTEMPTS => {
                continue
            }
            Err(e) if e.kind == StoreErrorKind::PreconditionFailed => {
                return Err(PublishError::Log(format!(
                    "the log's checkpoint on {} kept changing while appending ({attempt} attempts)",
                    store.describe()
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;
    use crate::store::file::FileStore;

    struct World {
        _tmp: TempDir,
        dir: std::path::PathBuf,
        store: Remote,
        key: SecretKey,
    }

    fn world() -> World {
        let tmp = TempDir::new_in(&std::env::temp_dir(), "npcnix-tlog-test-").expect("tmp");
        let dir = tmp.path().join("store");
        std::fs::create_dir(&dir).expect("mkdir");
        World {
            store: Remote::new(Box::new(FileStore::new(
                dir.clone(),
                format!("file://{}", dir.display()),
            ))),
            dir,
            _tmp: tmp,
            key: SecretKey::generate().expect("key"),
        }
    }

    impl World {
        fn signer(&self) -> LogSigner<'_> {
            LogSigner {
                remote: RemoteName::new("prod").expect("name"),
                key: &self.key,
                // The tests' statements are not real ones.
                new_log: true,
                now: 0,
            }
        }

        fn append(&self, statement: &[u8]) -> Result<Logged, PublishError> {
            append_statement(&self.store, &self.signer(), statement, &Retry::none())
        }

        fn head(&self) -> Checkpoint {
            reader::read_head(&self.store.log(), &self.signer().verifier().expect("vkey"))
                .expect("read")
                .expect("a log")
                .checkpoint
        }

        /// The inclusion of `statement` at `index`, proven from the store's
        /// tiles against the signed checkpoint, as a host checks it.
        fn proven(&self, statement: &[u8], index: u64) -> bool {
            let head = self.head();
            reader::includes(&self.store.log(), &TreeHead::from(&head), index, statement)
                .expect("tiles")
        }
    }

    fn statement(i: u64) -> Vec<u8> {
        format!("{{\"version\":{i},\"remote\":\"prod\"}}\n").into_bytes()
    }

    #[test]
    fn every_published_statement_is_a_leaf_of_the_signed_log() {
        let w = world();
        for i in 0..300 {
            let l = w.append(&statement(i)).expect("append");
            assert_eq!(
                l,
                Logged {
                    index: i,
                    size: i + 1,
                    already: false
                }
            );
        }
        let head = w.head();
        assert_eq!(head.size, 300);
        assert_eq!(head.origin, w.signer().origin());
        let leaves: Vec<merkle::Hash> =
            (0..300).map(|i| merkle::leaf_hash(&statement(i))).collect();
        assert_eq!(head.root, merkle::root(&leaves));
        for i in [0, 1, 255, 256, 299] {
            assert!(w.proven(&statement(i), i), "leaf {i}");
            assert!(!w.proven(&statement(i + 1), i), "another statement at {i}");
        }
    }

    #[test]
    fn publishing_again_after_the_append_does_not_log_twice() {
        let w = world();
        w.append(&statement(0)).expect("append");
        w.append(&statement(1)).expect("append");
        let again = w.append(&statement(1)).expect("again");
        assert_eq!(
            again,
            Logged {
                index: 1,
                size: 2,
                already: true
            }
        );
        assert_eq!(w.head().size, 2);
    }

    /// A publisher died after writing tiles but before signing: what it
    /// left past the checkpoint is nobody's, and the next append replaces
    /// it.
    #[test]
    fn leftovers_of_a_publisher_that_died_before_signing_are_replaced() {
        let w = world();
        w.append(&statement(0)).expect("append");
        std::fs::create_dir_all(w.dir.join("log/tile/0/000.p")).expect("mkdir");
        std::fs::write(w.dir.join("log/tile/0/000.p/2"), [7u8; 64]).expect("plant");
        std::fs::write(
            w.dir.join("log/tile/entries/000.p/2"),
            b"\x00\x01x\x00\x01y",
        )
        .expect("plant");
        w.append(&statement(1)).expect("append over the leftovers");
        assert!(w.proven(&statement(1), 1));
    }

    /// The store rewrote a tile the signed checkpoint covers: the log is
    /// never extended on top of it.
    #[test]
    fn store_that_rewrote_a_signed_tile_is_not_extended() {
        let w = world();
        for i in 0..3 {
            w.append(&statement(i)).expect("append");
        }
        let tile = w.dir.join("log/tile/0/000.p/3");
        let mut bytes = std::fs::read(&tile).expect("tile");
        bytes[0] ^= 1;
        std::fs::write(&tile, bytes).expect("tamper");
        let e = w.append(&statement(3)).expect_err("refused");
        assert!(e.to_string().contains("refusing to extend the log"), "{e}");
        assert_eq!(w.head().size, 3, "the checkpoint did not move");
    }

    /// A checkpoint signed by another key (or forged) is not the log's.
    #[test]
    fn checkpoint_not_signed_by_the_log_key_is_refused() {
        let w = world();
        w.append(&statement(0)).expect("append");
        let other = SecretKey::generate().expect("key");
        let forged = LogSigner {
            remote: RemoteName::new("prod").expect("name"),
            key: &other,
            new_log: false,
            now: 0,
        };
        let c = Checkpoint {
            origin: w.signer().origin(),
            size: 1,
            root: merkle::leaf_hash(b"forged"),
            extensions: Vec::new(),
        };
        std::fs::write(w.dir.join("log/checkpoint"), forged.sign(&c)).expect("forge");
        let e = w.append(&statement(1)).expect_err("refused");
        assert!(e.to_string().contains("not signed by the log key"), "{e}");
    }
}
