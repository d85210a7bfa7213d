//! The witnessed log's checks (issue 37), pure: a checkpoint against the
//! log key, a new checkpoint against the last one a party accepted (a
//! witness before it cosigns, a host before it takes a release), and a set
//! of witnesses' cosigned checkpoints against a k-of-n witness policy.
//!
//! The shells fetch the notes and the tiles (`store::tlog`) and pass them
//! in; nothing here reads anything.

use crate::format::keys::{KeyId, PublicKey};
use crate::format::merkle::{self, Hash};
use crate::format::note::{self, Checkpoint, Note, VerifierKey};
use crate::format::statement::RemoteName;

/// The log's name in its checkpoints (the C2SP origin line): one per remote
/// and log key, so a witness following many logs never mixes two up.
pub fn origin(remote: &RemoteName, log_key: &KeyId) -> String {
    format!("npcnix/{remote}/{log_key}")
}

/// The note key that verifies a remote's checkpoints: the log key (a
/// minisign Ed25519 key of role `log`) under the log's origin.
pub fn log_verifier(remote: &RemoteName, log_key: &PublicKey) -> Result<VerifierKey, String> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&log_key.bytes)
        .map_err(|_| "the log key is not an Ed25519 public key".to_owned())?;
    VerifierKey::new(&origin(remote, &log_key.key_id), note::ALG_ED25519, key)
        .map_err(|e| e.to_string())
}

/// A witness's note key (`cosignature/v1`) named `name`, from its minisign
/// public key.
pub fn witness_verifier(name: &str, key: &PublicKey) -> Result<VerifierKey, String> {
    let k = ed25519_dalek::VerifyingKey::from_bytes(&key.bytes)
        .map_err(|_| "the witness key is not an Ed25519 public key".to_owned())?;
    VerifierKey::new(name, note::ALG_COSIGNATURE_V1, k).map_err(|e| e.to_string())
}

/// A checkpoint note signed by `log_key`, for its origin.
pub fn verify_checkpoint(bytes: &[u8], log_key: &VerifierKey) -> Result<Checkpoint, String> {
    let note =
        Note::parse(bytes).map_err(|e| format!("the checkpoint is not a signed note: {e}"))?;
    checkpoint_of(&note, log_key)
}

fn checkpoint_of(note: &Note, log_key: &VerifierKey) -> Result<Checkpoint, String> {
    note::verify(note, std::slice::from_ref(log_key))
        .map_err(|e| format!("the checkpoint is not signed by the log key {log_key}: {e}"))?;
    let c =
        Checkpoint::parse(&note.text).map_err(|e| format!("the checkpoint is malformed: {e}"))?;
    if c.origin != log_key.name {
        return Err(format!(
            "the checkpoint is for {:?}, not {:?}",
            c.origin, log_key.name
        ));
    }
    Ok(c)
}

pub use crate::format::merkle::TreeHead;

impl From<&Checkpoint> for TreeHead {
    fn from(c: &Checkpoint) -> Self {
        TreeHead {
            size: c.size,
            root: c.root,
        }
    }
}

/// How `new` relates to the last head accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Growth {
    /// Nothing to prove: the same tree, or the accepted one was empty.
    Same,
    /// A larger tree: consistent only with a consistency proof from
    /// `old` to `new`, which the caller fetches and passes to [`grows`].
    Larger { old: u64, new: u64 },
    /// Not a growth of the accepted tree: a smaller one, or the same size
    /// with another root. A fork (or a rollback) of the log.
    Fork(String),
}

/// Compares a checkpoint with the last head accepted (`None`: nothing yet).
pub fn growth(last: Option<&TreeHead>, new: &TreeHead) -> Growth {
    let Some(last) = last else {
        return Growth::Same;
    };
    if new.size < last.size {
        return Growth::Fork(format!(
            "the log shrank from {} to {} entries",
            last.size, new.size
        ));
    }
    if new.size == last.size {
        return if new.root == last.root {
            Growth::Same
        } else {
            Growth::Fork(format!(
                "two different trees of {} entries: {} accepted, {} now",
                new.size,
                hex(&last.root),
                hex(&new.root)
            ))
        };
    }
    if last.size == 0 {
        return Growth::Same;
    }
    Growth::Larger {
        old: last.size,
        new: new.size,
    }
}

/// Whether `proof` shows the tree `new` grew from `last` without rewriting
/// anything; `Err` names the fork.
pub fn grows(last: &TreeHead, new: &TreeHead, proof: &[Hash]) -> Result<(), String> {
    // Every tree extends the empty one.
    if last.size == 0 && new.size > 0 {
        return Ok(());
    }
    if merkle::verify_consistency(last.size, new.size, &last.root, &new.root, proof) {
        Ok(())
    } else {
        Err(format!(
            "the tree of {} entries ({}) is not an extension of the accepted tree of {} ({}): the history was rewritten",
            new.size,
            hex(&new.root),
            last.size,
            hex(&last.root)
        ))
    }
}

/// A host's witness policy (`policy.witnesses`, issue 37): the remote's
/// log key, the witnesses it trusts and how many must cosign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessPolicy {
    pub log: VerifierKey,
    pub witnesses: Vec<VerifierKey>,
    pub threshold: usize,
}

/// A checkpoint enough witnesses cosigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witnessed {
    pub checkpoint: Checkpoint,
    /// The names of the witnesses whose cosignature verified.
    pub witnesses: Vec<String>,
}

/// Of the notes witnesses published (each a checkpoint signed by the log
/// key and cosigned by its witness), the largest tree that at least
/// `threshold` of `witnesses` cosigned. Notes that do not parse, carry no
/// valid log signature, or no valid cosignature of a policy witness count
/// for nothing (a witness that is behind or broken is one missing vote);
/// `Err` says what was found instead.
pub fn witnessed(
    notes: &[Vec<u8>],
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    threshold: usize,
) -> Result<Witnessed, String> {
    witnessed_with(notes, log_key, witnesses, threshold, &mut |_, _| false)
}

/// [`witnessed`], where a witness that cosigned a larger tree also counts
/// for a smaller one its tree extends: `extends(smaller, larger)` says
/// whether `larger` grew from `smaller` (the shell checks a consistency
/// proof from the log's tiles). Witnesses that run at different times
/// rarely cosign the very same tree of a log that keeps growing; without
/// this, hosts could wait for ever although every witness saw the release.
pub fn witnessed_with(
    notes: &[Vec<u8>],
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    threshold: usize,
    extends: &mut dyn FnMut(&TreeHead, &TreeHead) -> bool,
) -> Result<Witnessed, String> {
    // (size, root) -> (checkpoint, the witnesses that cosigned it)
    let mut votes: Vec<(Checkpoint, Vec<usize>)> = Vec::new();
    let mut problems = Vec::new();
    for bytes in notes {
        let note = match Note::parse(bytes) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("a note that does not parse ({e})"));
                continue;
            }
        };
        let c = match checkpoint_of(&note, log_key) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let by = match note::verify(&note, witnesses) {
            Ok(v) => v.by,
            Err(e) => {
                problems.push(format!("a checkpoint of {} entries: {e}", c.size));
                continue;
            }
        };
        match votes
            .iter_mut()
            .find(|(k, _)| k.size == c.size && k.root == c.root)
        {
            Some((_, v)) => {
                for w in by {
                    if !v.contains(&w) {
                        v.push(w);
                    }
                }
            }
            None => votes.push((c, by)),
        }
    }
    // Largest trees first: the first with enough votes (its own, and those
    // of every larger tree that extends it) is the witnessed head.
    votes.sort_by_key(|v| std::cmp::Reverse(v.0.size));
    let mut most = 0;
    for (i, (c, own)) in votes.iter().enumerate() {
        let mut by = own.clone();
        let head = TreeHead::from(c);
        for (larger, theirs) in &votes[..i] {
            if larger.size > c.size && extends(&head, &TreeHead::from(larger)) {
                for w in theirs {
                    if !by.contains(w) {
                        by.push(*w);
                    }
                }
            }
        }
        most = most.max(by.len());
        if by.len() >= threshold {
            by.sort_unstable();
            return Ok(Witnessed {
                checkpoint: c.clone(),
                witnesses: by.iter().map(|&i| witnesses[i].name.clone()).collect(),
            });
        }
    }
    let mut why = format!(
        "no checkpoint of the log is cosigned by {threshold} of its {} witnesses (at most {most})",
        witnesses.len()
    );
    if !problems.is_empty() {
        why.push_str("; ");
        why.push_str(&problems.join("; "));
    }
    Err(why)
}

fn hex(h: &Hash) -> String {
    crate::format::merkle::hex(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::SecretKey;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(format!("statement {i}").as_bytes()))
            .collect()
    }

    fn head(l: &[Hash]) -> TreeHead {
        TreeHead {
            size: l.len() as u64,
            root: merkle::root(l),
        }
    }

    struct Log {
        remote: RemoteName,
        key: SecretKey,
    }

    impl Log {
        fn new() -> Log {
            Log {
                remote: RemoteName::new("prod").expect("name"),
                key: SecretKey::generate().expect("key"),
            }
        }

        fn vkey(&self) -> VerifierKey {
            log_verifier(&self.remote, &self.key.public_key()).expect("vkey")
        }

        /// A checkpoint of `l` signed by the log key, cosigned by `by`.
        fn note(&self, l: &[Hash], by: &[(&str, &SecretKey)]) -> Vec<u8> {
            let text = Checkpoint {
                origin: origin(&self.remote, &self.key.key_id),
                size: l.len() as u64,
                root: merkle::root(l),
                extensions: Vec::new(),
            }
            .to_text();
            let mut sigs = vec![note::sign(
                &origin(&self.remote, &self.key.key_id),
                self.key.signing_key(),
                &text,
            )];
            for (name, k) in by {
                sigs.push(note::cosign(name, k.signing_key(), &text, 1_800_000_000));
            }
            Note { text, sigs }.to_bytes()
        }
    }

    #[test]
    fn a_grown_log_is_consistent_and_a_rewritten_one_is_a_fork() {
        let all = leaves(300);
        let old = head(&all[..100]);
        let new = head(&all);
        assert_eq!(
            growth(Some(&old), &new),
            Growth::Larger { old: 100, new: 300 }
        );
        let proof = merkle::consistency_proof(&all, 100);
        assert_eq!(grows(&old, &new, &proof), Ok(()));
        // The same number of entries, one of the old ones rewritten.
        let mut rewritten = all.clone();
        rewritten[7] = merkle::leaf_hash(b"stolen-key release, hidden later");
        let forked = head(&rewritten);
        let proof = merkle::consistency_proof(&rewritten, 100);
        assert!(grows(&old, &forked, &proof).is_err());
        assert!(matches!(growth(Some(&new), &forked), Growth::Fork(_)));
        assert!(
            matches!(growth(Some(&new), &old), Growth::Fork(_)),
            "shrank"
        );
        assert_eq!(growth(Some(&new), &new), Growth::Same);
        assert_eq!(growth(None, &new), Growth::Same);
    }

    #[test]
    fn checkpoint_needs_k_of_n_cosignatures_on_the_same_tree() {
        let log = Log::new();
        let w: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate().expect("k")).collect();
        let names = ["w0.example", "w1.example", "w2.example"];
        let keys: Vec<VerifierKey> = names
            .iter()
            .zip(&w)
            .map(|(n, k)| witness_verifier(n, &k.public_key()).expect("vkey"))
            .collect();
        let l = leaves(10);
        let notes = vec![
            log.note(&l, &[(names[0], &w[0])]),
            log.note(&l, &[(names[1], &w[1])]),
            log.note(&l[..9], &[(names[2], &w[2])]),
        ];
        let got = witnessed(&notes, &log.vkey(), &keys, 2).expect("2 of 3");
        assert_eq!(got.checkpoint.size, 10);
        assert_eq!(got.witnesses, ["w0.example", "w1.example"]);
        // k - 1 cosignatures on any one tree: refused.
        let e = witnessed(&notes, &log.vkey(), &keys, 3).expect_err("3 of 3");
        assert!(e.contains("at most 2"), "{e}");
        // One witness publishing twice counts once.
        let twice = vec![notes[0].clone(), notes[0].clone()];
        assert!(witnessed(&twice, &log.vkey(), &keys, 2).is_err());
    }

    /// Witnesses that ran at different times cosigned different sizes of
    /// one growing log: a larger tree counts for a smaller one it extends,
    /// so a release in both is not starved; a tree that does not extend it
    /// (a fork) counts for nothing.
    #[test]
    fn witnesses_on_different_sizes_of_one_log_count_together() {
        let log = Log::new();
        let w: Vec<SecretKey> = (0..2).map(|_| SecretKey::generate().expect("k")).collect();
        let keys: Vec<VerifierKey> = ["w0.example", "w1.example"]
            .iter()
            .zip(&w)
            .map(|(n, k)| witness_verifier(n, &k.public_key()).expect("vkey"))
            .collect();
        let all = leaves(6);
        let notes = vec![
            log.note(&all[..5], &[("w0.example", &w[0])]),
            log.note(&all, &[("w1.example", &w[1])]),
        ];
        assert!(
            witnessed(&notes, &log.vkey(), &keys, 2).is_err(),
            "same tree only"
        );
        let mut extends = |small: &TreeHead, large: &TreeHead| {
            let proof = merkle::consistency_proof(&all[..large.size as usize], small.size as usize);
            grows(small, large, &proof).is_ok()
        };
        let got = witnessed_with(&notes, &log.vkey(), &keys, 2, &mut extends).expect("2 of 2");
        assert_eq!(got.checkpoint.size, 5);
        assert_eq!(got.witnesses, ["w0.example", "w1.example"]);
        // The larger tree is a fork of the smaller: no extension, no vote.
        let mut forked = all.clone();
        forked[2] = merkle::leaf_hash(b"rewritten");
        let notes = vec![
            log.note(&all[..5], &[("w0.example", &w[0])]),
            log.note(&forked, &[("w1.example", &w[1])]),
        ];
        let mut extends = |small: &TreeHead, large: &TreeHead| {
            let proof =
                merkle::consistency_proof(&forked[..large.size as usize], small.size as usize);
            grows(small, large, &proof).is_ok()
        };
        assert!(witnessed_with(&notes, &log.vkey(), &keys, 2, &mut extends).is_err());
    }

    /// A store shows a host a checkpoint no witness saw (or one a witness
    /// cosigned under a key outside the policy, or signed by another log
    /// key): none of it counts.
    #[test]
    fn split_view_without_the_witnesses_is_not_witnessed() {
        let log = Log::new();
        let w = SecretKey::generate().expect("k");
        let keys = [witness_verifier("w.example", &w.public_key()).expect("vkey")];
        let l = leaves(5);
        let stranger = SecretKey::generate().expect("k");
        let forger = Log::new();
        let notes = vec![
            log.note(&l, &[]),
            log.note(&l, &[("w.example", &stranger)]),
            forger.note(&l, &[("w.example", &w)]),
            b"garbage".to_vec(),
        ];
        let e = witnessed(&notes, &log.vkey(), &keys, 1).expect_err("unwitnessed");
        assert!(e.contains("no checkpoint"), "{e}");
        assert!(witnessed(&[log.note(&l, &[("w.example", &w)])], &log.vkey(), &keys, 1).is_ok());
    }

    #[test]
    fn tree_heads_round_trip_and_bad_roots_are_refused() {
        let h = head(&leaves(3));
        let j = serde_json::to_string(&h).expect("json");
        assert_eq!(serde_json::from_str::<TreeHead>(&j).expect("parse"), h);
        for bad in [
            r#"{"size":1,"root":"00"}"#,
            r#"{"size":1,"root":"é0000000000000000000000000000000000000000000000000000000000000"}"#,
        ] {
            assert!(serde_json::from_str::<TreeHead>(bad).is_err(), "{bad}");
        }
    }
}
