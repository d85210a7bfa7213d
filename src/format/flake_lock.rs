//! `flake.lock` (Nix's lock file, version 7), read for one question: does
//! it pin every input, so that every host evaluates the same inputs the
//! signers approved? Parsed strictly enough to answer that, bounded by the
//! caller.
//!
//! ```json
//! {"nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs", "utils": ["flake-utils"]}},
//!            "nixpkgs": {"locked": {"type": "github", "rev": "...", "narHash": "sha256-..."}, "original": {...}}},
//!  "root": "root", "version": 7}
//! ```
//!
//! An input is pinned when its node has a `locked` reference with a
//! `narHash` (what Nix checks the fetched tree against; a `rev` alone is
//! not enough, see [`pins`]). A `follows` input (a path of names) is pinned
//! when the node it follows is.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The lock versions this reader understands.
const VERSIONS: [u64; 1] = [7];

/// What a lock file pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlakeLock {
    /// The inputs of the flake itself (the root node's), sorted.
    pub root_inputs: Vec<String>,
    /// Nodes (by name) whose reference pins nothing: no `locked`, or one
    /// without `narHash` (see [`pins`]).
    pub unpinned: Vec<String>,
}

/// Why a lock file cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("flake.lock is not valid JSON for a Nix lock file: {0}")]
    Parse(String),
    #[error("flake.lock has version {0}; this npcnix reads version 7 (run `nix flake lock` with a recent Nix)")]
    Version(u64),
    #[error("flake.lock names node {0:?}, which it does not contain")]
    MissingNode(String),
}

#[derive(Deserialize)]
struct File {
    nodes: BTreeMap<String, Node>,
    root: String,
    version: u64,
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    locked: Option<BTreeMap<String, serde_json::Value>>,
}

/// Whether a `locked` reference names exactly one tree: it carries the
/// `narHash` Nix checks what it fetched against. A `rev` alone is not
/// enough: on a `path` or tarball reference Nix ignores it (a `path` input
/// "locked" by `rev` evaluated whatever the directory held). The one
/// exception is a relative `path` (an input inside the flake itself, as newer
/// Nix writes it): the archive pins it.
fn pins(locked: &BTreeMap<String, serde_json::Value>) -> bool {
    if locked
        .get("narHash")
        .is_some_and(|h| h.as_str().is_some_and(|h| !h.is_empty()))
    {
        return true;
    }
    let is_path = locked.get("type").and_then(|t| t.as_str()) == Some("path");
    let relative = locked
        .get("path")
        .and_then(|p| p.as_str())
        .is_some_and(|p| !p.starts_with('/') && !p.split('/').any(|c| c == ".."));
    is_path && relative
}

impl FlakeLock {
    /// Reads a lock file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<FlakeLock, LockError> {
        let f: File = serde_json::from_slice(bytes).map_err(|e| LockError::Parse(e.to_string()))?;
        if !VERSIONS.contains(&f.version) {
            return Err(LockError::Version(f.version));
        }
        let root = f
            .nodes
            .get(&f.root)
            .ok_or_else(|| LockError::MissingNode(f.root.clone()))?;
        let mut unpinned = Vec::new();
        for (name, node) in &f.nodes {
            if *name == f.root {
                continue;
            }
            let pinned = node.locked.as_ref().is_some_and(pins);
            if !pinned {
                unpinned.push(name.clone());
            }
            // Every node an input names must exist (a follows path is
            // resolved by Nix; its first element must be a root input).
            for v in node.inputs.values() {
                if let Some(target) = v.as_str() {
                    if !f.nodes.contains_key(target) {
                        return Err(LockError::MissingNode(target.to_owned()));
                    }
                }
            }
        }
        for v in root.inputs.values() {
            if let Some(target) = v.as_str() {
                if !f.nodes.contains_key(target) {
                    return Err(LockError::MissingNode(target.to_owned()));
                }
            }
        }
        Ok(FlakeLock {
            root_inputs: root.inputs.keys().cloned().collect(),
            unpinned,
        })
    }

    /// The inputs in `declared` (what `flake.nix` names, `self` aside)
    /// that this lock does not lock.
    pub fn missing(&self, declared: &[String]) -> Vec<String> {
        declared
            .iter()
            .filter(|d| d.as_str() != "self" && !self.root_inputs.contains(d))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"{
      "nodes": {
        "nixpkgs": {"locked": {"type": "github", "owner": "NixOS", "repo": "nixpkgs",
                               "rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1", "narHash": "sha256-x"},
                    "original": {"type": "github", "owner": "NixOS", "repo": "nixpkgs"}},
        "root": {"inputs": {"nixpkgs": "nixpkgs", "pkgs2": ["nixpkgs"]}}
      },
      "root": "root", "version": 7}"#;

    #[test]
    fn a_lock_pins_the_inputs_it_names() {
        let l = FlakeLock::parse(LOCK.as_bytes()).expect("lock");
        assert_eq!(l.root_inputs, ["nixpkgs", "pkgs2"]);
        assert!(l.unpinned.is_empty());
        assert!(l.missing(&["self".into(), "nixpkgs".into()]).is_empty());
        assert_eq!(l.missing(&["home-manager".into()]), ["home-manager"]);
    }

    #[test]
    fn an_input_without_a_pinned_reference_is_unpinned() {
        let text = LOCK.replace(
            r#""rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1", "narHash": "sha256-x""#,
            r#""ref": "nixos-unstable""#,
        );
        let l = FlakeLock::parse(text.as_bytes()).expect("lock");
        assert_eq!(l.unpinned, ["nixpkgs"]);
    }

    #[test]
    fn path_input_locked_by_rev_alone_is_unpinned() {
        // Nix ignores `rev` on a path reference: the host would evaluate
        // whatever its directory holds.
        let text = LOCK.replace(
            r#"{"type": "github", "owner": "NixOS", "repo": "nixpkgs",
                               "rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1", "narHash": "sha256-x"}"#,
            r#"{"type": "path", "path": "/srv/nixpkgs", "rev": "5e2305d5ab0a39d8e3d5a2cd1e8ed5d1e4e4a6b1"}"#,
        );
        assert_ne!(text, LOCK);
        let l = FlakeLock::parse(text.as_bytes()).expect("lock");
        assert_eq!(l.unpinned, ["nixpkgs"]);
        // A path inside the flake itself is pinned by the archive.
        let inside = text.replace(r#""path": "/srv/nixpkgs""#, r#""path": "./modules""#);
        assert!(FlakeLock::parse(inside.as_bytes())
            .expect("lock")
            .unpinned
            .is_empty());
        let outside = text.replace(r#""path": "/srv/nixpkgs""#, r#""path": "../elsewhere""#);
        assert_eq!(
            FlakeLock::parse(outside.as_bytes()).expect("lock").unpinned,
            ["nixpkgs"]
        );
    }

    #[test]
    fn other_versions_and_dangling_nodes_are_errors() {
        assert!(matches!(
            FlakeLock::parse(LOCK.replace("\"version\": 7", "\"version\": 5").as_bytes()),
            Err(LockError::Version(5))
        ));
        assert!(matches!(
            FlakeLock::parse(
                LOCK.replace("\"nixpkgs\": \"nixpkgs\"", "\"nixpkgs\": \"gone\"")
                    .as_bytes()
            ),
            Err(LockError::MissingNode(_))
        ));
        assert!(FlakeLock::parse(b"not json").is_err());
    }
}
