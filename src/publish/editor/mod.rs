//! The publisher's lifecycle as one object: every way of writing a release
//! (`publish`, `release prepare` + `publish`, `release revert`) goes
//! through an [`Editor`], which knows what the remote's hosts require and
//! checks each new head as they will before anything is uploaded.
//!
//! ```text
//! Editor::new(store, trust)   the remote's keys and threshold (policy file, host config, flags)
//!   head()                    `latest`, verified at that threshold
//!   draft()                   the next statement; a version gap is capped here, as hosts cap it
//!   publish()                 the bundle checked as a host would check it, then uploaded
//!   revert_source()           an earlier release, through the signed chain, and the keys it brings back
//! ```
//!
//! A head that hosts would refuse is never uploaded: a one-key publish on a
//! 2-of-2 remote fails before the store changes (exit 3), instead of
//! wedging the remote with a head nobody can extend.

use std::path::{Path, PathBuf};

use crate::format::bundle::Bundle;
use crate::format::keys::{KeyId, SecretKey};
use crate::format::statement::{ArchiveRef, RemoteName, Statement};
use crate::store::retry::Retry;
use crate::store::Remote;
use crate::verify::{self, Policy, Refusal, Seen, VerifiedRelease};

use super::{read_head, upload, CurrentHead, Draft, PublishError, StatementParams, MAX_HEAD_GAP};

/// Where the publisher learnt what the remote's hosts require.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustOrigin {
    /// The policy file the hosts' NixOS module reads.
    PolicyFile(PathBuf),
    /// A host's own config.
    HostConfig(PathBuf),
    /// `--trusted-key` and `--threshold` on the command line.
    Flags,
    /// `--trusted-key` only: the threshold is at least the number of
    /// signatures the current head carries (a k-of-n remote is never
    /// treated as 1-of-n because a flag was forgotten).
    FlagsWithoutThreshold,
    /// What `release prepare` recorded in the release directory (from the
    /// source it names).
    Recorded(String),
}

impl std::fmt::Display for TrustOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustOrigin::PolicyFile(p) => write!(f, "the policy file {}", p.display()),
            TrustOrigin::HostConfig(p) => write!(f, "the host config {}", p.display()),
            TrustOrigin::Flags => write!(f, "--trusted-key and --threshold"),
            TrustOrigin::FlagsWithoutThreshold => write!(
                f,
                "--trusted-key, with the threshold the current head was signed at"
            ),
            TrustOrigin::Recorded(from) => write!(f, "release.json, recorded from {from}"),
        }
    }
}

/// What the remote's hosts require of a release.
#[derive(Clone, Debug)]
pub struct RemoteTrust {
    pub policy: Policy,
    pub origin: TrustOrigin,
}

/// A release that was published.
#[derive(Clone, Debug)]
pub struct Published {
    pub release: VerifiedRelease,
    pub archive: ArchiveRef,
    /// Where the witnessed log holds it (with a log key, issue 37).
    pub logged: Option<super::tlog::Logged>,
}

/// An earlier release to publish again (a revert), found through the signed
/// chain from the head.
#[derive(Clone, Debug)]
pub struct RevertSource {
    pub release: VerifiedRelease,
    /// Keys that signed it, or a release between it and the head, and that
    /// the remote's policy does not trust today: its configuration (or the
    /// one it replaced) most likely trusted them, so publishing its content
    /// again may re-pin them on every host.
    pub brings_back: Vec<KeyId>,
}

/// The publisher side of one remote.
pub struct Editor<'s> {
    store: &'s Remote,
    trust: RemoteTrust,
    now: u64,
    retry: Retry,
    /// Keys the policy no longer trusts that may have signed the current
    /// head (the first publish after a rotation): used to read the head
    /// and the history, never to count a new release's signatures.
    retired: Vec<crate::format::keys::PublicKey>,
    /// Timestamp keys and the timestamp's lifetime (seconds): a published
    /// head gets a freshness timestamp in `latest` (D126).
    timestamp: Option<(Vec<&'s SecretKey>, u64)>,
    /// The log key: every release published is appended to the remote's
    /// witnessed log first (issue 37).
    log: Option<super::tlog::LogSigner<'s>>,
}

/// A freshness timestamp written to `latest`.
#[derive(Clone, Debug)]
pub struct Refreshed {
    pub version: u64,
    pub statement: crate::format::statement::Digest,
    pub created: u64,
    pub expires: u64,
    pub signers: Vec<crate::format::keys::KeyId>,
}

impl<'s> Editor<'s> {
    pub fn new(store: &'s Remote, trust: RemoteTrust, now: u64, retry: Retry) -> Editor<'s> {
        Editor {
            store,
            trust,
            now,
            retry,
            retired: Vec::new(),
            timestamp: None,
            log: None,
        }
    }

    /// Appends every release this editor publishes to the remote's
    /// witnessed log, signing its checkpoint with `key` (issue 37).
    pub fn with_log(mut self, key: &'s SecretKey, new_log: bool) -> Self {
        self.log = Some(super::tlog::LogSigner {
            remote: self.trust.policy.remote.clone(),
            key,
            new_log,
            now: self.now,
        });
        self
    }

    /// Signs a freshness timestamp, valid `lifetime` seconds, with `keys`
    /// for every head this editor writes.
    pub fn with_timestamp(mut self, keys: Vec<&'s SecretKey>, lifetime: u64) -> Self {
        self.timestamp = (!keys.is_empty()).then_some((keys, lifetime));
        self
    }

    /// `bundle` as `latest` holds it: with a timestamp when this editor
    /// signs them.
    fn latest_for(&self, bundle: &Bundle, remote: &RemoteName, version: u64) -> Bundle {
        let mut b = bundle.without_timestamp();
        if let Some((keys, lifetime)) = &self.timestamp {
            b.timestamp = Some(super::sign_timestamp(
                remote,
                version,
                crate::format::statement::Digest::of(&bundle.statement),
                self.now,
                self.now.saturating_add(*lifetime),
                keys,
            ));
        }
        b
    }

    /// The ETag of `latest` if it still holds the draft's head release,
    /// only with another freshness timestamp.
    fn refreshed_since(&self, draft: &Draft) -> Option<crate::store::ETag> {
        let head = draft.head.as_ref()?;
        match self.store.log().latest(None) {
            Ok(crate::store::Fetched::Object {
                bytes,
                etag: Some(etag),
            }) => Bundle::decode(&bytes)
                .is_ok_and(|b| b.without_timestamp() == head.bundle.without_timestamp())
                .then_some(etag),
            _ => None,
        }
    }

    /// Re-signs the freshness of the current head (`npcnix timestamp`):
    /// the head must verify at the release keys' threshold; `latest` is
    /// rewritten with a new timestamp (compare-and-swap), nothing else.
    ///
    /// `floor`: the newest head this refresher timestamped (version,
    /// statement): a head below it, or another statement at its version,
    /// is a store rolling `latest` back and gets no timestamp. Neither
    /// does a head below a release the store holds.
    pub fn refresh_timestamp(
        &self,
        floor: Option<(u64, crate::format::statement::Digest)>,
    ) -> Result<Refreshed, PublishError> {
        let refuse = |m: String| PublishError::HeadUntrusted(m);
        if self.timestamp.is_none() {
            return Err(refuse("no timestamp key given".into()));
        }
        let head = self
            .head()?
            .ok_or_else(|| refuse("the remote has no release: nothing to timestamp".into()))?;
        let v = head.statement.version;
        if let Some(newer) = self.store.log().versions()?.into_iter().find(|w| *w > v) {
            return Err(refuse(format!(
                "`latest` is version {v} but the store holds releases/{newer:020}: a head rolled back; refusing to timestamp it (publish again, or restore `latest`)"
            )));
        }
        if let Some((fv, fs)) = floor {
            let this = crate::format::statement::Digest::of(&head.bundle.statement);
            if v < fv || (v == fv && this != fs) {
                return Err(refuse(format!(
                    "`latest` is version {v} (statement {this}), but this refresher last timestamped version {fv} (statement {fs}): a head rolled back or replaced; refusing to timestamp it"
                )));
            }
        }
        let mut policy = self.trust.policy.clone();
        policy.threshold = self.required_signatures(Some(&head));
        let release = verify::verify_signatures(&policy, &head.bundle.encode(), self.now).map_err(
            |refusal| PublishError::WouldBeRefused {
                hint: self.hint(&refusal, policy.threshold),
                refusal,
            },
        )?;
        let latest = self.latest_for(&head.bundle, &release.statement().remote, release.version());
        let bytes = latest.encode();
        // As a host would take it (the timestamp keys and threshold of the
        // remote, when the trust source names them).
        let checked = verify::verify_release(&policy, None, &bytes, self.now).map_err(|refusal| {
            PublishError::WouldBeRefused {
                hint: if refusal.check().name().starts_with("timestamp") {
                    "the timestamp keys given are not the remote's (its policy file lists them under \"timestamp\")".into()
                } else {
                    self.hint(&refusal, policy.threshold)
                },
                refusal,
            }
        })?;
        super::swap_latest(
            self.store,
            &bytes,
            head.etag.as_ref(),
            release.version(),
            &self.retry,
        )?;
        let ts = latest
            .timestamp
            .as_ref()
            .and_then(|t| crate::format::timestamp::Timestamp::parse(&t.bytes).ok());
        Ok(Refreshed {
            version: release.version(),
            statement: release.statement_hash(),
            created: ts.as_ref().map_or(self.now, |t| t.created),
            expires: ts.as_ref().map_or(self.now, |t| t.expires),
            signers: checked
                .release()
                .freshness()
                .map(|f| f.signers.clone())
                .unwrap_or_default(),
        })
    }

    /// Lets `keys` (retired: `--trusted-key` beside a policy) vouch for the
    /// current head and the history, not for what is published.
    pub fn with_retired(mut self, keys: Vec<crate::format::keys::PublicKey>) -> Self {
        self.retired = keys;
        self
    }

    /// The remote's policy, with the retired keys added (scoped to it).
    pub fn reading_policy(&self) -> Policy {
        let mut p = self.trust.policy.clone();
        p.keys
            .extend(self.retired.iter().map(|k| verify::TrustedKey {
                key: k.clone(),
                scope: verify::KeyScope::Remotes(vec![p.remote.clone()]),
                not_after: None,
            }));
        p
    }

    pub fn trust(&self) -> &RemoteTrust {
        &self.trust
    }

    pub fn store(&self) -> &'s Remote {
        self.store
    }

    /// `latest`, verified at the remote's keys and threshold.
    pub fn head(&self) -> Result<Option<CurrentHead>, PublishError> {
        read_head(self.store, &self.reading_policy(), self.now)
    }

    /// Signatures from distinct trusted keys a new head needs: the policy's
    /// threshold, and with only `--trusted-key` given (or a policy a
    /// release directory recorded, which may have passed through other
    /// hands), at least as many as the current head carries.
    pub fn required_signatures(&self, head: Option<&CurrentHead>) -> usize {
        let t = self.trust.policy.threshold.max(1);
        match (&self.trust.origin, head) {
            (TrustOrigin::FlagsWithoutThreshold | TrustOrigin::Recorded(_), Some(h)) => {
                t.max(h.signatures)
            }
            _ => t,
        }
    }

    /// The most versions a new head may be past the current one: the
    /// policy's cap, and never more than [`MAX_HEAD_GAP`] (every later
    /// publisher refuses to extend a wider gap).
    pub fn max_jump(&self) -> u64 {
        self.trust
            .policy
            .max_version_jump
            .map_or(MAX_HEAD_GAP, |j| j.min(MAX_HEAD_GAP))
    }

    /// The next statement on top of the verified head. A version further
    /// ahead than hosts accept is refused here, before anything is signed
    /// (hosts cap the jump on read; so does every later publisher).
    pub fn draft(
        &self,
        archive: ArchiveRef,
        params: StatementParams,
    ) -> Result<Draft, PublishError> {
        let head = self.head()?;
        let statement = super::next_statement(head.as_ref(), archive, params)?;
        let base = head.as_ref().map_or(0, |h| h.statement.version);
        let max = self.max_jump();
        if statement.version - base > max {
            return Err(PublishError::VersionGap {
                version: statement.version,
                head: base,
                max,
            });
        }
        Ok(Draft { head, statement })
    }

    /// Verifies `bundle` (the draft, signed) exactly as the remote's hosts
    /// will: keys, scopes, threshold, remote, expiry, dating, the link to
    /// the head and the version jump. `Err`: hosts would refuse it, and it
    /// must not become the head.
    pub fn check_write(
        &self,
        draft: &Draft,
        bundle: &[u8],
    ) -> Result<VerifiedRelease, PublishError> {
        let mut policy = self.trust.policy.clone();
        policy.threshold = self.required_signatures(draft.head.as_ref());
        // A statement signed elsewhere (a prepared release) never went
        // through `draft`: the jump is capped here too.
        policy.max_version_jump = Some(self.max_jump());
        let seen = draft.head.as_ref().map(|h| Seen {
            version: h.statement.version,
            statement: h.hash,
        });
        verify::verify_release(&policy, seen, bundle, self.now)
            .map(verify::Verdict::into_release)
            .map_err(|refusal| PublishError::WouldBeRefused {
                hint: self.hint(&refusal, policy.threshold),
                refusal,
            })
    }

    fn hint(&self, r: &Refusal, need: usize) -> String {
        match r {
            Refusal::Threshold { .. } | Refusal::UntrustedKey(_) => format!(
                "the remote needs {need} signature(s) from distinct trusted keys (from {}); a k-of-n remote is published offline: `npcnix release prepare` (`--revert-to N` for a revert), `npcnix sign` by each signer, then `npcnix release publish`",
                self.trust.origin
            ),
            Refusal::Expired { .. } => {
                "the release would be expired on arrival: choose a longer --expires".into()
            }
            Refusal::FastForward { .. } => format!(
                "hosts accept at most {} versions past the head (policy.max_version_jump)",
                self.trust.policy.max_version_jump.unwrap_or(0)
            ),
            _ => format!("as {} has it", self.trust.origin),
        }
    }

    /// Everything [`Editor::publish`] checks before it uploads (the head
    /// as a host would take it, with its timestamp), uploading nothing
    /// (`publish --dry-run`).
    pub fn check_only(
        &self,
        draft: &Draft,
        signatures: Vec<String>,
    ) -> Result<VerifiedRelease, PublishError> {
        let unsigned = Bundle {
            statement: draft.statement_bytes(),
            signatures,
            timestamp: None,
        };
        let latest = self.latest_for(&unsigned, &draft.statement.remote, draft.statement.version);
        self.check_write(draft, &latest.encode())
    }

    /// Checks the draft signed with `signatures` as a host would, then
    /// uploads the archive (from `archive_path`), `releases/<v>` and
    /// `latest` (compare-and-swap on the head it extends).
    pub fn publish(
        &self,
        draft: &Draft,
        archive_path: &Path,
        signatures: Vec<String>,
    ) -> Result<Published, PublishError> {
        self.publish_signed(draft, draft.statement_bytes(), archive_path, signatures)
    }

    /// [`Editor::publish`] for statement bytes signed elsewhere (a
    /// prepared release: the signatures cover these bytes, which must be
    /// the statement of `draft`).
    pub fn publish_signed(
        &self,
        draft: &Draft,
        statement_bytes: Vec<u8>,
        archive_path: &Path,
        signatures: Vec<String>,
    ) -> Result<Published, PublishError> {
        let unsigned = Bundle {
            statement: statement_bytes,
            signatures,
            timestamp: None,
        };
        let latest = self.latest_for(&unsigned, &draft.statement.remote, draft.statement.version);
        let release = self.check_write(draft, &latest.encode())?;
        // A remote with a witnessed log: hosts with a witness policy
        // refuse a release that is not in it, for good (its version is
        // then taken). Refused before anything is uploaded.
        let has_log = self.store.log().log_checkpoint()?.is_some();
        if let (Some(l), false) = (&self.log, has_log) {
            if !l.new_log && draft.statement.previous.is_some() {
                return Err(PublishError::Log(format!(
                    "{} has no log (log/checkpoint is missing) but this is not its first release: a log that disappeared is not started again silently (its witnesses would refuse the new one, and hosts with it); pass --new-log to start the remote's log deliberately (docs/witness.md)",
                    self.store.describe()
                )));
            }
        }
        if self.log.is_some() {
            if let Some(until) = super::tlog::lease_held(self.store, self.now)? {
                return Err(PublishError::Log(format!(
                    "another publisher is appending to the log on {} (its lease holds until {}); run again once it is done",
                    self.store.describe(),
                    crate::format::time::rfc3339(until)
                )));
            }
        }
        if self.log.is_none() && has_log {
            return Err(PublishError::Log(format!(
                "{} has a witnessed log (log/checkpoint) and no --log-key was given: hosts with a witness policy would refuse this release for good; pass the remote's --log-key",
                self.store.describe()
            )));
        }
        if release.statement() != &draft.statement {
            return Err(PublishError::Revert(
                "the signed statement is not the one drafted".into(),
            ));
        }
        let mut logged = None;
        match upload(
            self.store,
            archive_path,
            &draft.statement.archive,
            draft.statement.version,
            &latest,
            self.log.as_ref(),
            draft.head_etag(),
            &self.retry,
        ) {
            Err(PublishError::HeadMoved { version, store }) => {
                // `releases/<v>` is written; if only a timestamp refresh
                // (`npcnix timestamp`) rewrote `latest` meanwhile, the head
                // is still the one this release extends: swap again.
                let Some(etag) = self.refreshed_since(draft) else {
                    return Err(PublishError::HeadMoved { version, store });
                };
                super::swap_latest(
                    self.store,
                    &latest.encode(),
                    Some(&etag),
                    version,
                    &self.retry,
                )?;
            }
            r => logged = r?,
        }
        Ok(Published {
            archive: draft.statement.archive.clone(),
            release,
            logged,
        })
    }

    /// Downloads `archive` from the store into the new file `to`, checked
    /// against its signed size and hash.
    pub fn download(&self, archive: &ArchiveRef, to: &Path) -> Result<(), PublishError> {
        let io_err = |source| PublishError::Io {
            path: to.to_owned(),
            source,
        };
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(to)
                .map_err(io_err)?
        };
        self.store
            .log()
            .download(archive, &mut f)?
            .map_err(|m| PublishError::Revert(format!("the archive in the store: {m}")))
    }

    /// Version `to`, found in the history the verified head extends: the
    /// `previous` links are followed down from the head (gaps allowed), each
    /// release's statement checked against the hash the one above names, so
    /// a store cannot pass off a forked or planted release as it, and no
    /// old release needs today's keys. Every key that signed a release from
    /// `to` up to the head and that the remote's policy does not trust
    /// today is one the revert may bring back (its configuration likely
    /// trusted it, or the history around it was signed with it): such a
    /// revert needs `allow_trust_change`.
    pub fn revert_source(
        &self,
        head: &CurrentHead,
        to: u64,
        allow_trust_change: bool,
    ) -> Result<RevertSource, PublishError> {
        let log = self.store.log();
        if to == 0 || to > head.statement.version {
            return Err(PublishError::Revert(format!(
                "version {to} is not in the history of the head (version {})",
                head.statement.version
            )));
        }
        let trusted: Vec<KeyId> = self
            .trust
            .policy
            .keys
            .iter()
            .filter(|k| k.scope.allows(&self.trust.policy.remote))
            .map(|k| k.key.key_id)
            .collect();
        let mut brings_back: Vec<KeyId> = Vec::new();
        let mut expected = head.hash;
        let mut v = head.statement.version;
        let target = loop {
            // The release whose statement hash is `expected`: at `v`, or
            // below it past a gap (`--version` may skip up to the cap).
            let (bytes, statement) = loop {
                let found = log.release(v)?.and_then(|b| {
                    let bundle = Bundle::decode(&b).ok()?;
                    (crate::format::statement::Digest::of(&bundle.statement) == expected)
                        .then_some((b, bundle.statement))
                });
                if let Some(f) = found {
                    break f;
                }
                if v <= to || head.statement.version - v > 10_000 + MAX_HEAD_GAP {
                    return Err(PublishError::Revert(format!(
                        "the chain from the head down to version {to} is broken at releases/{v}: it does not hold the release the one above names (a fork, a planted or a missing release)"
                    )));
                }
                v -= 1;
            };
            let st = Statement::parse(&statement)
                .map_err(|e| PublishError::Revert(format!("release {v} in the chain: {e}")))?;
            if st.version != v {
                return Err(PublishError::Revert(format!(
                    "the store serves version {} as releases/{v}: a planted or misfiled release",
                    st.version
                )));
            }
            for k in verify::signature_key_ids(&bytes).unwrap_or_default() {
                if !trusted.contains(&k) && !brings_back.contains(&k) {
                    brings_back.push(k);
                }
            }
            if v == to {
                break (bytes, st);
            }
            if v < to {
                return Err(PublishError::Revert(format!(
                    "version {to} is not in the history of the head (a gap skips it)"
                )));
            }
            expected = st.previous.ok_or_else(|| {
                PublishError::Revert(format!("version {to} is before the first release"))
            })?;
            v -= 1;
        };
        // Who signed the target, as far as the keys known here tell (the
        // chain already proved the statement is the one the head extends).
        let mut lenient = self.reading_policy();
        lenient.threshold = 1;
        let release = verify::verify_signatures(&lenient, &target.0, self.now)
            .map_err(|r| {
                PublishError::Revert(format!(
                    "version {to} is in the history, but no key known here signed it ({}); pass the keys that did with --trusted-key",
                    r.line()
                ))
            })?;
        if !brings_back.is_empty() && !allow_trust_change {
            return Err(PublishError::TrustChange {
                to,
                keys: brings_back,
            });
        }
        Ok(RevertSource {
            release,
            brings_back,
        })
    }

    /// The statement of a revert to `source`: its archive and signed system
    /// paths, no rollout wave (hosts waiting for their slot of the bad
    /// release and hosts running it both go back at once), a comment.
    pub fn revert_draft(
        &self,
        source: &RevertSource,
        created: u64,
        expires: Option<u64>,
        flake_lock: Option<crate::format::statement::Digest>,
    ) -> Result<Draft, PublishError> {
        let old: &Statement = source.release.statement();
        let mut draft = self.draft(
            old.archive.clone(),
            StatementParams {
                remote: old.remote.clone(),
                version: None,
                created,
                expires,
                // The same archive: the same commit, and the lock as the
                // caller read it from the archive (not as the old statement
                // claimed it).
                source: Some(crate::format::statement::Source {
                    git_commit: old.source.as_ref().and_then(|s| s.git_commit.clone()),
                    flake_lock_blake3: flake_lock,
                    comment: Some(format!("revert to version {}", old.version)),
                }),
            },
        )?;
        draft.statement.toplevels = old.toplevels.clone();
        Ok(draft)
    }
}

#[cfg(test)]
mod tests;
