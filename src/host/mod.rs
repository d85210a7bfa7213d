//! The client side: everything a host does with what it fetched.
//!
//! * [`config`]: the host config (strict JSON) and the policy derived from it;
//! * [`state`]: the durable per-remote state and the data directory;
//! * [`journal`]: the append-only audit log;
//! * [`pipeline`]: the pull pipeline as typed stages (fetch -> judge ->
//!   descend -> download -> extract -> record -> place);
//! * [`pull`]: `npcnix pull` on top of the pipeline;
//! * [`lifecycle`]: the one pure decision of what a host does next with a
//!   release (paused, bad, up to date, backoff, rollout, probation);
//! * [`agent`]: one poll of `npcnix follow`: gathers the facts, asks
//!   [`lifecycle`], runs the steps (the pipeline, then installation and
//!   activation); its outcome is an [`outcome::Outcome`];
//! * [`activate`]: the NixOS boundary (build, switch, undo, probe) and the
//!   health check; [`watchdog`]: the probation timer and reboots;
//!   [`clock`]: wall and boot clocks;
//! * [`fetcher`]: the network side in an unprivileged child process;
//! * [`status`]: what `npcnix status` and the metrics file show;
//! * [`trust`]: the trust root remembered between runs (changes are events);
//! * [`lockout`]: the inspection of a built system before switching to it;
//! * [`probation`]: confirm-or-revert after a switch, with its watchdog;
//! * [`receipts`]: this host's signed receipts in the store;
//! * [`witnessed`]: a new release only from a log the host's witnesses saw.

pub mod activate;
pub mod agent;
pub mod audit;
pub mod clock;
pub mod config;
pub mod fetcher;
pub mod gates;
pub mod hooks;
pub mod journal;
pub mod lifecycle;
pub mod lockout;
pub mod outcome;
pub mod pipeline;
pub mod probation;
pub mod pull;
pub mod receipts;
pub mod state;
pub mod status;
pub mod trust;
pub mod watchdog;
pub mod witnessed;
