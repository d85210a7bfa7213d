//! Fork detection across skipped versions (policy `require_chain`), pure.
//!
//! When a host that verified version v is offered version w > v + 1, the
//! intermediate releases v+1..w-1 must each verify and link by `previous` to
//! the one before, back to the statement the host holds; otherwise w does
//! not descend from what the host runs. [`Descent`] walks that chain one
//! fetched bundle at a time; the caller does the fetching.

use crate::format::digest::Digest;

use super::{verify_signatures, Policy, Refusal, Seen, VerifiedRelease};

/// Most intermediate releases a chain check fetches.
pub const MAX_CHAIN_FETCH: u64 = 10_000;

/// A chain walk from the host's highest verified release to an offered one.
#[derive(Debug)]
pub struct Descent {
    from: u64,
    to: u64,
    next: u64,
    expected_prev: Digest,
}

impl Descent {
    /// Starts a walk from `seen` to `offered`. `Ok(None)`: nothing to walk
    /// (the offered release is not ahead of `seen`).
    pub fn start(seen: Seen, offered: &VerifiedRelease) -> Result<Option<Descent>, Refusal> {
        let to = offered.version();
        if to <= seen.version {
            return Ok(None);
        }
        let walk = Descent {
            from: seen.version,
            to,
            next: seen.version + 1,
            expected_prev: seen.statement,
        };
        if to - seen.version > MAX_CHAIN_FETCH {
            return Err(walk.broken(
                to,
                format!("more than {MAX_CHAIN_FETCH} intermediate releases to check"),
            ));
        }
        Ok(Some(walk))
    }

    /// The next intermediate version to fetch, or `None` when all were seen.
    pub fn next_version(&self) -> Option<u64> {
        (self.next < self.to).then_some(self.next)
    }

    /// The refusal for an intermediate release the store does not have.
    pub fn missing(&self, version: u64) -> Refusal {
        self.broken(version, "release is missing from the log".into())
    }

    /// The refusal for an intermediate release the store will not serve as
    /// a bundle (oversized, or answered against the protocol).
    pub fn unreadable(&self, version: u64, why: &str) -> Refusal {
        self.broken(version, format!("release is unreadable: {why}"))
    }

    /// Checks the bundle of [`Self::next_version`].
    pub fn step(&mut self, policy: &Policy, bundle: &[u8], now: u64) -> Result<(), Refusal> {
        let v = self.next;
        let mid = verify_signatures(policy, bundle, now)
            .map_err(|r| self.broken(v, format!("intermediate release does not verify: {r}")))?;
        if mid.version() != v {
            return Err(self.broken(
                v,
                format!("releases/{v:020} holds version {}", mid.version()),
            ));
        }
        if mid.statement().previous != Some(self.expected_prev) {
            return Err(self.broken(v, "does not link to the release before it".into()));
        }
        self.expected_prev = mid.statement_hash();
        self.next += 1;
        Ok(())
    }

    /// Checks that `offered` links to the last intermediate release.
    pub fn finish(self, offered: &VerifiedRelease) -> Result<(), Refusal> {
        if self.next != self.to {
            return Err(self.broken(self.next, "the chain walk stopped early".into()));
        }
        if offered.statement().previous != Some(self.expected_prev) {
            return Err(self.broken(self.to, "does not link to the release before it".into()));
        }
        Ok(())
    }

    fn broken(&self, at: u64, reason: String) -> Refusal {
        Refusal::Chain {
            from: self.from,
            to: self.to,
            at,
            reason,
        }
    }
}
