//! A remote's whole history, walked and verified one release at a time
//! (`npcnix log`): every `releases/<v>` through [`crate::store::ReleaseLog`],
//! checked by the pure [`HistoryCheck`], each entry handed to the caller as
//! it is read, so memory stays constant whatever the store holds.

use crate::format::bundle::BUNDLE_MAX_BYTES;
use crate::store::{self, Fetched, Remote, StoreError, StoreErrorKind};
use crate::verify::history::{self, HistoryCheck, LogEntry, Problem};
use crate::verify::Policy;

/// Most versions enumerated one by one from a store that cannot list.
pub const MAX_ENUMERATED: u64 = 100_000;

/// What a walk found besides the entries.
#[derive(Clone, Debug, Default)]
pub struct Walked {
    /// Releases read.
    pub count: u64,
    pub problems: Vec<Problem>,
    /// Problems past [`history::MAX_PROBLEMS`], counted only.
    pub more_problems: u64,
    /// Objects under `releases/` that are not releases, or could not be
    /// read as one.
    pub unexpected: Vec<String>,
    pub more_unexpected: u64,
}

impl Walked {
    /// The log verified end to end.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.unexpected.is_empty()
    }
}

/// Why a walk could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store answered 'not modified' to an unconditional request")]
    NotModified,
    #[error("the head is version {head}; too many releases to enumerate over HTTP (max {MAX_ENUMERATED}); run `npcnix log` against the origin store")]
    TooManyToEnumerate { head: u64 },
    #[error("{store}: more than {max} objects under releases/; refusing to list them all (clean up junk objects, or audit with the store's own tools)")]
    TooManyObjects { store: String, max: usize },
}

/// Walks the history of `remote`, verifying with `policy` at `now`,
/// calling `each` with every entry in version order.
pub fn walk(
    remote: &Remote,
    policy: &Policy,
    now: u64,
    each: &mut dyn FnMut(&LogEntry),
) -> Result<Walked, WalkError> {
    let log = remote.log();
    let latest = match log.latest(None) {
        Ok(Fetched::Object { bytes, .. }) => Some(bytes),
        Err(e) if e.kind == StoreErrorKind::NotFound => None,
        Ok(Fetched::NotModified) => return Err(WalkError::NotModified),
        Err(e) => return Err(e.into()),
    };
    // Stores that cannot list (HTTP mirrors): enumerate versions up to the
    // verified head; missing ones show up as gaps in the chain.
    let keys = match log.release_keys(store::MAX_LISTED) {
        Ok(k) => k,
        Err(e) if e.kind == StoreErrorKind::Unsupported => {
            let head = latest
                .as_deref()
                .and_then(|b| crate::verify::verify_signatures(policy, b, now).ok())
                .map_or(0, |r| r.version());
            if head > MAX_ENUMERATED {
                return Err(WalkError::TooManyToEnumerate { head });
            }
            (1..=head).map(store::release_key).collect()
        }
        Err(e) if e.kind == StoreErrorKind::TooLarge => {
            return Err(WalkError::TooManyObjects {
                store: remote.describe(),
                max: store::MAX_LISTED,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let mut check = HistoryCheck::new(policy, now);
    let mut w = Walked::default();
    let note = |w: &mut Walked, u: String| {
        if w.unexpected.len() < history::MAX_PROBLEMS {
            w.unexpected.push(u);
        } else {
            w.more_unexpected += 1;
        }
    };
    for key in keys {
        let Some(v) = store::parse_release_key(&key) else {
            note(&mut w, format!("unexpected object {key}"));
            continue;
        };
        let entry = match log.release(v) {
            Ok(Some(bytes)) => check.push(v, &bytes),
            // Listed but gone: the log shows the gap.
            Ok(None) => continue,
            Err(e) if e.kind == StoreErrorKind::TooLarge => {
                check.push(v, &vec![b' '; BUNDLE_MAX_BYTES + 1])
            }
            Err(e) if e.kind == StoreErrorKind::Protocol => {
                note(&mut w, format!("{key}: {}", e.detail));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        each(&entry);
        w.count += 1;
    }
    let (problems, more) = check.finish(latest.as_deref());
    w.problems = problems;
    w.more_problems = more;
    Ok(w)
}
