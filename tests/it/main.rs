//! The integration tests, in one test binary so the suite links once.
//!
//! Each module is the contract of one area, run against the real `npcnix`
//! binary and real components (directory, moto and s3s-fs stores, the stock
//! `minisign`, real Nix where the machine has it). Tests that need a missing
//! component are reported by `common::skip` and counted, never passed.

mod common;

mod agent;
mod cli;
mod confine;
mod diff;
mod docs_example;
mod fleet;
mod freshness;
mod hardening;
mod hold;
mod hooks;
mod hostile_archives;
mod interop_minisign;
mod locked_inputs;
mod lockout;
mod mirrors;
mod pack;
mod publisher;
mod quickstart;
mod release_e2e;
mod retries_progress;
mod s3;
mod snapshots;
mod soak;
mod timestamps;
mod tls;
mod toplevel;
mod trust;
mod witnessed_log;
mod worker;
