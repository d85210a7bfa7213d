//! A witness of remotes' logs (issue 37): it pulls a log's checkpoint as
//! hosts pull releases (no inbound access), checks that the log only grew
//! since the last checkpoint it cosigned (a consistency proof from the
//! store's tiles), remembers the new head durably, and publishes its
//! `cosignature/v1` under `witnesses/<key ID>/checkpoint` in the store,
//! where hosts read it. A log that shrank or was rewritten is a fork: the
//! witness refuses to cosign it, says so on every run, and keeps the head
//! it cosigned last, so the fork stays refused until the log extends that
//! head again.
//!
//! The state is one small JSON file per log in the witness's state
//! directory (`log-<hash of the origin>.json`): the tree it last cosigned.
//! It is written (atomically, fsynced) before the cosignature is
//! published, so a crash between the two republishes the same head.

use std::path::{Path, PathBuf};

use crate::format::keys::SecretKey;
use crate::format::note::{self, Checkpoint, Note, VerifierKey};
use crate::format::Digest;
use crate::store::tlog::{self, LogReadError};
use crate::store::{Object, Remote, StoreError};
use crate::verify::witness::{grows, growth, Growth, TreeHead};

/// One witness: its name (the note key name hosts pin) and key.
pub struct Witness<'k> {
    pub name: String,
    pub key: &'k SecretKey,
    pub state_dir: PathBuf,
}

/// What a run did for one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Witnessed {
    /// The remote has no log yet.
    NoLog,
    /// The checkpoint of `size` entries is cosigned and published (`grew`:
    /// from `from` entries; else it was already cosigned and is
    /// published again if it was missing).
    Cosigned { size: u64, from: u64, grew: bool },
    /// Refused: the log is not an extension of what this witness cosigned.
    Fork { cosigned: u64, detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(transparent)]
    Read(#[from] LogReadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Key(String),
    #[error("{path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the state file holds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogState {
    origin: String,
    cosigned: TreeHead,
}

const STATE_MAX_BYTES: u64 = 4096;

impl Witness<'_> {
    /// The note key hosts pin for this witness (`policy.witnesses`).
    pub fn verifier(&self) -> Result<VerifierKey, String> {
        crate::verify::witness::witness_verifier(&self.name, &self.key.public_key())
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        let h = Digest::of(origin.as_bytes()).to_hex();
        self.state_dir.join(format!("log-{}.json", &h[..32]))
    }

    fn load(&self, origin: &str) -> Result<Option<TreeHead>, WitnessError> {
        let path = self.state_path(origin);
        let err = |source| WitnessError::State {
            path: path.clone(),
            source,
        };
        let bytes = match crate::fsutil::read_regular(&path, STATE_MAX_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let s: LogState = serde_json::from_slice(&bytes)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if s.origin != origin {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("it is the state of {:?}, not {origin:?}", s.origin),
            )));
        }
        Ok(Some(s.cosigned))
    }

    fn save(&self, origin: &str, head: &TreeHead) -> Result<(), WitnessError> {
        let path = self.state_path(origin);
        let bytes = serde_json::to_vec_pretty(&LogState {
            origin: origin.to_owned(),
            cosigned: *head,
        })
        .map_err(|e| WitnessError::State {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|source| WitnessError::State { path, source })
    }

    /// One run over one remote's log, whose checkpoints `log_key` signs.
    pub fn witness(
        &self,
        remote: &Remote,
        log_key: &VerifierKey,
        now: u64,
    ) -> Result<Witnessed, WitnessError> {
        let me = self.verifier().map_err(WitnessError::Key)?;
        // One run at a time per state dir (a timer and a manual run): the
        // head recorded only ever grows along one history.
        let _lock = self.lock()?;
        let log = remote.log();
        let Some(head) = tlog::read_head(&log, log_key)? else {
            // A log this witness cosigned cannot just disappear: a store
            // that drops it would have the next publisher start another.
            return Ok(match self.load(&log_key.name)? {
                Some(l) if l.size > 0 => Witnessed::Fork {
                    cosigned: l.size,
                    detail: "the log disappeared (log/checkpoint is missing)".into(),
                },
                _ => Witnessed::NoLog,
            });
        };
        let new = TreeHead::from(&head.checkpoint);
        let last = self.load(&log_key.name)?;
        let from = last.map_or(0, |l| l.size);
        let grew = match growth(last.as_ref(), &new) {
            Growth::Fork(detail) => {
                return Ok(Witnessed::Fork {
                    cosigned: from,
                    detail,
                })
            }
            Growth::Larger { old, new: size } => {
                let proof = tlog::consistency_proof(&log, old, size)?;
                if let Some(l) = &last {
                    if let Err(detail) = grows(l, &new, &proof) {
                        return Ok(Witnessed::Fork {
                            cosigned: l.size,
                            detail,
                        });
                    }
                }
                true
            }
            Growth::Same => last.is_none() || last != Some(new),
        };
        if grew {
            self.save(&log_key.name, &new)?;
        } else if self.published(&log, &me, &head.checkpoint)? {
            return Ok(Witnessed::Cosigned {
                size: new.size,
                from,
                grew: false,
            });
        }
        // The log's own signature kept, every other line dropped, ours
        // added: what hosts count.
        let parsed = Note::parse(&head.bytes)
            .map_err(|e| LogReadError::Invalid(format!("the log's checkpoint: {e}")))?;
        let mut sigs: Vec<_> = parsed
            .sigs
            .into_iter()
            .filter(|s| s.name == log_key.name && s.key_id == log_key.key_id)
            .collect();
        sigs.push(note::cosign(
            &self.name,
            self.key.signing_key(),
            &parsed.text,
            now,
        ));
        let bytes = Note {
            text: parsed.text,
            sigs,
        }
        .to_bytes();
        remote
            .store()
            .put(&Object::WitnessCheckpoint(me.key_id).key(), &bytes)?;
        Ok(Witnessed::Cosigned {
            size: new.size,
            from,
            grew,
        })
    }

    fn lock(&self) -> Result<std::fs::File, WitnessError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.state_dir.join(".lock");
        let err = |source| WitnessError::State {
            path: path.clone(),
            source,
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        f.lock().map_err(err)?;
        Ok(f)
    }

    /// Whether the store already holds this witness's cosignature of
    /// exactly `c`.
    fn published(
        &self,
        log: &crate::store::ReleaseLog<'_>,
        me: &VerifierKey,
        c: &Checkpoint,
    ) -> Result<bool, WitnessError> {
        let Some(bytes) = log.witness_checkpoint(me.key_id)? else {
            return Ok(false);
        };
        let Ok(n) = Note::parse(&bytes) else {
            return Ok(false);
        };
        Ok(n.text == c.to_text() && note::verify(&n, std::slice::from_ref(me)).is_ok())
    }
}

/// The state directory, created private if missing.
pub fn state_dir(path: &Path) -> std::io::Result<PathBuf> {
    crate::fsutil::ensure_private_dir(path)?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::statement::RemoteName;
    use crate::fsutil::TempDir;
    use crate::publish::tlog::{append_statement, LogSigner};
    use crate::store::file::FileStore;
    use crate::store::retry::Retry;

    struct World {
        tmp: TempDir,
        log_key: SecretKey,
        witness_key: SecretKey,
    }

    fn world() -> World {
        World {
            tmp: TempDir::new_in(&std::env::temp_dir(), "npcnix-witness-test-").expect("tmp"),
            log_key: SecretKey::generate().expect("key"),
            witness_key: SecretKey::generate().expect("key"),
        }
    }

    fn statement(tag: &str, i: u64) -> Vec<u8> {
        format!("{{\"version\":{i},\"tag\":\"{tag}\"}}\n").into_bytes()
    }

    impl World {
        fn store(&self, name: &str) -> Remote {
            let dir = self.tmp.path().join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            Remote::new(Box::new(FileStore::new(
                dir.clone(),
                format!("file://{}", dir.display()),
            )))
        }

        fn signer(&self) -> LogSigner<'_> {
            LogSigner {
                remote: RemoteName::new("prod").expect("name"),
                key: &self.log_key,
                new_log: true,
                now: 0,
            }
        }

        fn append(&self, store: &Remote, tag: &str, range: std::ops::Range<u64>) {
            for i in range {
                append_statement(store, &self.signer(), &statement(tag, i), &Retry::none())
                    .expect("append");
            }
        }

        fn witness(&self) -> Witness<'_> {
            let dir = self.tmp.path().join("witness-state");
            std::fs::create_dir_all(&dir).expect("mkdir");
            Witness {
                name: "witness.example".into(),
                key: &self.witness_key,
                state_dir: dir,
            }
        }

        fn run(&self, store: &Remote) -> Witnessed {
            self.witness()
                .witness(
                    store,
                    &self.signer().verifier().expect("vkey"),
                    1_800_000_000,
                )
                .expect("run")
        }

        /// The checkpoint hosts would take with this one witness, 1 of 1.
        fn witnessed_size(&self, store: &Remote) -> Option<u64> {
            let me = self.witness().verifier().expect("vkey");
            let note = store.log().witness_checkpoint(me.key_id).expect("read")?;
            crate::verify::witness::witnessed(
                &[note],
                &self.signer().verifier().expect("vkey"),
                &[me],
                1,
            )
            .ok()
            .map(|w| w.checkpoint.size)
        }
    }

    #[test]
    fn witness_cosigns_a_log_that_only_grows() {
        let w = world();
        let store = w.store("store");
        assert_eq!(w.run(&store), Witnessed::NoLog);
        w.append(&store, "a", 0..3);
        assert_eq!(
            w.run(&store),
            Witnessed::Cosigned {
                size: 3,
                from: 0,
                grew: true
            }
        );
        w.append(&store, "a", 3..300);
        assert_eq!(
            w.run(&store),
            Witnessed::Cosigned {
                size: 300,
                from: 3,
                grew: true
            }
        );
        assert_eq!(w.witnessed_size(&store), Some(300));
        assert_eq!(
            w.run(&store),
            Witnessed::Cosigned {
                size: 300,
                from: 300,
                grew: false
            }
        );
    }

    /// Someone with the log key and the store rewrites the history (to
    /// hide a release, or to show hosts another one): the witness refuses
    /// to cosign it, on every run, and its published cosignature stays on
    /// the history it saw.
    #[test]
    fn witness_refuses_to_cosign_a_rewritten_history() {
        let w = world();
        let store = w.store("store");
        w.append(&store, "a", 0..5);
        w.run(&store);
        // Another history of the same log, longer, sharing no entries.
        let forged = w.store("forged");
        w.append(&forged, "b", 0..6);
        let fork = w.run(&forged);
        assert!(
            matches!(&fork, Witnessed::Fork { cosigned: 5, detail } if detail.contains("rewritten")),
            "{fork:?}"
        );
        assert_eq!(w.run(&forged), fork, "refused again, not forgotten");
        // A shorter one, and one of the same size.
        let shorter = w.store("shorter");
        w.append(&shorter, "a", 0..4);
        assert!(matches!(w.run(&shorter), Witnessed::Fork { .. }));
        let same = w.store("same");
        w.append(&same, "c", 0..5);
        assert!(matches!(w.run(&same), Witnessed::Fork { .. }));
        // The genuine log, grown, is still cosigned.
        w.append(&store, "a", 5..7);
        assert!(matches!(
            w.run(&store),
            Witnessed::Cosigned {
                size: 7,
                from: 5,
                ..
            }
        ));
        assert_eq!(w.witnessed_size(&forged), None, "nothing cosigned there");
    }

    /// The witness died after recording the head, before publishing (or
    /// the store lost the object): the next run publishes it again.
    #[test]
    fn lost_cosignature_is_published_again() {
        let w = world();
        let store = w.store("store");
        w.append(&store, "a", 0..2);
        w.run(&store);
        let me = w.witness().verifier().expect("vkey");
        std::fs::remove_file(
            w.tmp
                .path()
                .join("store")
                .join(Object::WitnessCheckpoint(me.key_id).key()),
        )
        .expect("rm");
        assert_eq!(w.witnessed_size(&store), None);
        w.run(&store);
        assert_eq!(w.witnessed_size(&store), Some(2));
    }
}
