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
//! The layers (`ARCHITECTURE.md` has the picture), each using only the ones
//! below it:
//!
//! * [`format`] — pure: keys, signatures, statement, bundle, digests, names,
//!   time;
//! * [`verify`] — pure: policy, the one [`Refusal`] type, release and chain
//!   verification;
//! * [`store`] (untrusted transport, every read bounded and typed) and
//!   [`archive`] (pack, hardened extract, limits, confinement);
//! * [`publish`] (the editor side) and [`host`] (the client side: config,
//!   state, audit journal, the pull pipeline, agent, status);
//! * the `npcnix` binary (`src/cli/`), which parses, calls this library and
//!   prints. The library never prints, exits or reads the environment.
//!
//! The formats are specified in `docs/protocol.md`.

#![forbid(unsafe_code)]

pub mod archive;
pub mod buf;
pub mod format;
pub mod fsutil;
pub mod host;
pub mod nix;
pub mod progress;
pub mod publish;
pub mod store;
pub mod verify;
pub mod witness;

#[cfg(test)]
mod layers;

pub use format::{Digest, RemoteName};
pub use host::pipeline::PipelineError;
pub use verify::{Check, Policy, Refusal, Verdict, VerifiedRelease};
