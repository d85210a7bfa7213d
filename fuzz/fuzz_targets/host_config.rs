//! host_config: the host's configuration (written by the NixOS module, but
//! parsed strictly because a typo must never silently disable a check).
//!
//! Proves, for any accepted input:
//! * the config round-trips: `parse(to_json(c)) == c`;
//! * `validate` never panics, and reports at least one problem when it
//!   refuses;
//! * a validated config yields a policy that can be met and limits the
//!   extractor accepts: threshold at least 1 and at most the number of
//!   distinct trusted public keys scoped to the remote (verification counts
//!   keys by public key, not by key ID), unique key IDs, the policy's
//!   remote is the validated remote, limits within their documented ranges
//!   and an absolute state directory.

#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use npcnix::host::config::HostConfig;
use npcnix::verify::{key_ids, KeyScope};

/// `config.rs`'s private size limit on config files.
const CONFIG_MAX_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = HostConfig::parse(data) else {
        return;
    };

    let json = c.to_json();
    // Pretty-printing can grow a compact input past the size limit.
    if json.len() <= CONFIG_MAX_BYTES {
        assert_eq!(HostConfig::parse(&json), Ok(c.clone()));
    }

    let v = match c.validate() {
        Ok(v) => v,
        Err(errs) => {
            assert!(!errs.is_empty(), "refused without saying why");
            return;
        }
    };
    assert_eq!(v.config, c);
    assert_eq!(v.policy.remote, v.remote);
    assert!(v.policy.threshold >= 1);
    assert_eq!(
        key_ids(&v.policy.keys).len(),
        v.policy.keys.len(),
        "duplicate key IDs"
    );
    let scoped: BTreeSet<[u8; 32]> = v
        .policy
        .keys
        .iter()
        .filter(|k| match &k.scope {
            KeyScope::AnyRemote => true,
            KeyScope::Remotes(list) => list.contains(&v.remote),
        })
        .map(|k| k.key.bytes)
        .collect();
    assert!(
        v.policy.threshold <= scoped.len(),
        "threshold {} can never be met by {} distinct scoped key(s)",
        v.policy.threshold,
        scoped.len()
    );
    assert!((10..=31).contains(&v.limits.zstd_window_log));
    assert!((1..=4096).contains(&v.limits.path_bytes));
    assert!(v.limits.depth > 0 && v.limits.entries > 0 && v.limits.archive_bytes > 0);
    assert!(v.config.state_dir.is_absolute());
});
