//! Landlock confinement for extraction (defence in depth).
//!
//! The extractor's own checks already keep every write inside its target
//! directory. Where the kernel offers Landlock, extraction additionally runs
//! on a dedicated thread that has restricted itself so that file-system
//! *writes* are allowed only beneath that directory: a bug in the path
//! checks still could not write elsewhere. Reads stay unrestricted (the
//! archive lives in the private temp dir). The restriction is per thread and
//! irreversible, which is why it gets its own short-lived thread; the rest
//! of the process (state, activation) is unaffected.

use std::path::PathBuf;

use landlock::{
    path_beneath_rules, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};

/// Whether the confinement was in force.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "landlock", content = "detail")]
pub enum Confinement {
    /// Writes were restricted to the target directory.
    Enforced,
    /// The kernel supports only part of the requested restrictions.
    Partial,
    /// Landlock is not available (old kernel, disabled, or an error); the
    /// extractor's own checks still apply.
    Unavailable(String),
}

impl std::fmt::Display for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Confinement::Enforced => {
                f.write_str("landlock enforced (writes confined to the extraction dir)")
            }
            Confinement::Partial => f.write_str("landlock partially enforced (older kernel ABI)"),
            Confinement::Unavailable(why) => write!(
                f,
                "landlock unavailable ({why}); relying on the extractor's checks"
            ),
        }
    }
}

fn restrict_writes_to(dir: &PathBuf) -> Confinement {
    let abi = ABI::V3;
    let result = Ruleset::default()
        .handle_access(AccessFs::from_write(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules([dir], AccessFs::from_write(abi))))
        .and_then(|r| r.restrict_self());
    match result {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => Confinement::Enforced,
            RulesetStatus::PartiallyEnforced => Confinement::Partial,
            RulesetStatus::NotEnforced => {
                Confinement::Unavailable("not supported by this kernel".into())
            }
        },
        Err(e) => Confinement::Unavailable(e.to_string()),
    }
}

/// Restricts the calling thread (and what it spawns) so that it can write
/// nowhere in the file system; also sets `no_new_privs`. Used by the fetch
/// worker before it touches the network. Call it before starting threads
/// that must be covered.
pub fn deny_all_writes() -> Confinement {
    let abi = ABI::V3;
    let result = Ruleset::default()
        .handle_access(AccessFs::from_write(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match result {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => Confinement::Enforced,
            RulesetStatus::PartiallyEnforced => Confinement::Partial,
            RulesetStatus::NotEnforced => {
                Confinement::Unavailable("not supported by this kernel".into())
            }
        },
        Err(e) => Confinement::Unavailable(e.to_string()),
    }
}

/// Whether extraction may run without Landlock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfinementPolicy {
    /// Confine where the kernel can; report the status either way.
    #[default]
    BestEffort,
    /// Refuse to extract unless Landlock is fully enforced.
    Required,
}

/// Runs `f` on a new thread whose file-system writes are confined to
/// `writable` (where Landlock is available), and reports whether they were.
/// Under [`ConfinementPolicy::Required`], `f` does not run unless the
/// confinement is fully enforced (`Ok(None)`).
pub fn run_confined<T, F>(
    writable: PathBuf,
    policy: ConfinementPolicy,
    f: F,
) -> (std::thread::Result<Option<T>>, Confinement)
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_confined_with(writable, policy, restrict_writes_to, f)
}

fn run_confined_with<T, F>(
    writable: PathBuf,
    policy: ConfinementPolicy,
    restrict: fn(&PathBuf) -> Confinement,
    f: F,
) -> (std::thread::Result<Option<T>>, Confinement)
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name("npcnix-extract".into())
        .spawn(move || {
            let c = restrict(&writable);
            if policy == ConfinementPolicy::Required && c != Confinement::Enforced {
                return (None, c);
            }
            (Some(f()), c)
        });
    match handle {
        Ok(h) => match h.join() {
            Ok((v, c)) => (Ok(v), c),
            Err(p) => (
                Err(p),
                Confinement::Unavailable("extraction thread panicked".into()),
            ),
        },
        Err(e) => (
            Err(Box::new(e.to_string())),
            Confinement::Unavailable("could not start the extraction thread".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(_: &PathBuf) -> Confinement {
        Confinement::Unavailable("test kernel".into())
    }

    fn partial(_: &PathBuf) -> Confinement {
        Confinement::Partial
    }

    #[test]
    fn required_confinement_runs_nothing_on_a_kernel_without_landlock() {
        for restrict in [unavailable as fn(&PathBuf) -> Confinement, partial] {
            let (r, c) = run_confined_with(
                PathBuf::from("/nonexistent"),
                ConfinementPolicy::Required,
                restrict,
                || panic!("must not run"),
            );
            assert!(matches!(r, Ok(None::<()>)), "{c}");
        }
        let (r, c) = run_confined_with(
            PathBuf::from("/nonexistent"),
            ConfinementPolicy::BestEffort,
            unavailable,
            || 7,
        );
        assert_eq!(r.ok().flatten(), Some(7), "best effort still runs: {c}");
    }
}
