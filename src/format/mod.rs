//! The wire formats, pure: keys and signatures (minisign), the release
//! statement, the bundle that carries it, digests, remote names and time.
//!
//! Nothing here does I/O, prints, or reads the environment: every function
//! takes bytes or values and returns values. Parsers are strict and bounded;
//! `docs/protocol.md` specifies what they accept.

pub mod bundle;
pub mod decision;
pub mod digest;
pub mod flake_lock;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod outboard;
pub mod receipt;
pub mod remote;
pub mod rollout;
pub mod sign;
pub mod statement;
pub mod text;
pub mod tiles;
pub mod time;
pub mod timestamp;

pub use digest::Digest;
pub use remote::RemoteName;
