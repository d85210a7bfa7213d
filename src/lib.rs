//! npcnix: security-first, pull-based deployment of NixOS flakes.
//!
//! A publisher packs a flake into a deterministic `tar.zst`, signs a small
//! release statement binding the archive's BLAKE3 to a remote name and a
//! monotonic version, and stores both in a store (a directory, S3, or a
//! read-only HTTP mirror). Hosts fetch the signed bundle first, verify it
//! against keys pinned in their own configuration, refuse rollbacks, stale or
//! mismatched releases, download the archive only up to its signed size,
//! check its hash, extract it with a hardened extractor, and activate it.
//!
//! Layout: a pure core ([`keys`], [`statement`], [`bundle`], [`verify`],
//! [`history`], [`limits`], [`archive::path`], [`transfer`]) that never does
//! I/O of its own, and thin shells around it ([`store`], [`pull`],
//! [`publish`], [`state`], [`audit`]). The library never prints or exits;
//! the `npcnix` binary does.
//!
//! The formats are specified in `docs/protocol.md`.

#![forbid(unsafe_code)]

pub mod activate;
pub mod agent;
pub mod archive;
pub mod audit;
pub mod bundle;
pub mod config;
pub mod confine;
pub mod fsutil;
pub mod history;
pub mod keys;
pub mod limits;
pub mod publish;
pub mod pull;
pub mod sign;
pub mod state;
pub mod statement;
pub mod store;
pub mod toplevel;
pub mod transfer;
pub mod verify;
