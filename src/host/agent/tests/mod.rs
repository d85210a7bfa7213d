//! Whole poll sequences in-process: a directory store on disk, the real
//! pipeline and state, and scripted stand-ins for what NixOS and systemd
//! would do (`kit.rs`), so crash points, clock steps, reboots and store
//! faults are unit tests. The binary tests (`tests/it/`) cover the same
//! lifecycle through the CLI.

mod faults;
mod kit;
mod lifecycle;
mod nixos;
mod streaming;
mod witnessed;
