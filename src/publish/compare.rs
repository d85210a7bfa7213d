//! The archives two releases (or a prepared release and the head) are
//! compared on, fetched and checked (issue 34, `npcnix diff`): a release is
//! read from `releases/<v>`, its signatures verified at the remote's
//! threshold, its archive downloaded into a private directory with its
//! signed size and hash checked, and only then listed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::archive::limits::Limits;
use crate::archive::listing::{self, Listed};
use crate::format::statement::Statement;
use crate::store::{Remote, StoreError};
use crate::verify::{self, ArchiveMismatch, Policy, Refusal};

/// Why a release cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("the remote has no version {0}")]
    Missing(u64),
    #[error("version {version} does not verify: {}", .refusal.line())]
    Refused { version: u64, refusal: Refusal },
    #[error("the archive of version {version} is not the signed one: {mismatch}")]
    Archive {
        version: u64,
        mismatch: ArchiveMismatch,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A verified release's statement and the listing of its archive (kept in
/// `work` as `<version>.tar.zst`, for patches).
pub struct Listing {
    pub statement: Statement,
    pub archive: std::path::PathBuf,
    pub members: BTreeMap<String, Listed>,
}

/// Fetches, verifies and lists release `version` of `remote`.
pub fn release(
    remote: &Remote,
    policy: &Policy,
    version: u64,
    now: u64,
    work: &Path,
) -> Result<Listing, CompareError> {
    let log = remote.log();
    let bundle = log
        .release(version)?
        .ok_or(CompareError::Missing(version))?;
    let release = verify::verify_signatures(policy, &bundle, now)
        .map_err(|refusal| CompareError::Refused { version, refusal })?;
    let statement = release.statement().clone();
    let path = work.join(format!("{version}.tar.zst"));
    let io = |what: String| move |source| CompareError::Io { what, source };
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(format!("creating {}", path.display())))?
    };
    log.download(&statement.archive, &mut f)?
        .map_err(|mismatch| CompareError::Archive { version, mismatch })?;
    drop(f);
    let members = listing::list(&path, &Limits::default())
        .map_err(io(format!("listing the archive of version {version}")))?;
    Ok(Listing {
        statement,
        archive: path,
        members,
    })
}

/// Lists a local archive that the caller checked against its statement
/// (a prepared release's).
pub fn local(path: &Path) -> Result<BTreeMap<String, Listed>, CompareError> {
    listing::list(path, &Limits::default()).map_err(|source| CompareError::Io {
        what: format!("listing {}", path.display()),
        source,
    })
}
