//! Command-line interface: one module per subcommand, each with `Args` and
//! `run`. Exit codes are part of the interface (see [`exit`]).

mod activate;
mod audit;
mod common;
mod config;
mod env;
mod exit;
mod fetch_worker;
mod fleet;
mod follow;
mod install;
mod keygen;
mod log;
mod pack;
mod pause;
mod probation;
mod publish;
mod pull;
mod release;
mod sign;
mod state;
mod status;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use exit::ExitCodes;

#[derive(Parser)]
#[command(
    name = "npcnix",
    version,
    about = "Security-first, pull-based deployment of NixOS flakes from a signed store",
    long_about = "npcnix moves NixOS configurations from a publisher to a fleet of hosts through an \
untrusted store (a directory, S3, or an HTTP mirror). Publishers pack a flake deterministically and sign \
a release statement; hosts verify it against pinned keys before downloading, extracting or activating \
anything.\n\nTypical flow:\n  npcnix keygen --out ci-dev\n  npcnix publish --remote file:///srv/npcnix/dev --src ./flake --key ci-dev.key\n  npcnix pull --remote file:///srv/npcnix/dev --trusted-key ci-dev.pub --dst ./checkout\n\nExit codes: 0 ok, 1 error, 2 usage, 3 release rejected by verification, 4 publish lost a race (retry).",
    after_help = "Formats and the verification order: docs/protocol.md. Threat model: SECURITY.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a minisign-compatible signing key pair (PATH.key, PATH.pub)
    Keygen(keygen::Args),
    /// Pack a flake directory into a deterministic .tar.zst
    Pack(pack::Args),
    /// Pack (or take an archive), sign and publish a release to a remote
    Publish(publish::Args),
    /// Fetch, verify and extract the latest release of a remote
    Pull(pull::Args),
    /// Verify a release bundle and its archive offline
    Verify(verify::Args),
    /// Print and verify a remote's whole version log
    Log(log::Args),
    /// Host agent: poll, verify, activate, health-check, roll back
    Follow(follow::Args),
    /// Show this host's state: versions, last poll, errors, bad releases
    Status(status::Args),
    /// Show or check a host config
    Config(config::Args),
    /// Stop applying releases on this host (optionally for a while)
    Pause(pause::PauseArgs),
    /// Resume applying releases
    Unpause(pause::UnpauseArgs),
    /// Activate a local flake by hand (takes the agent's lock)
    Activate(activate::Args),
    /// First boot: write the host config with pinned keys, then activate
    Install(install::Args),
    /// Recover from a lost or corrupt state file
    State(state::Args),
    /// Offline flow: prepare a release for signing, publish it, check a re-pack
    Release(release::Args),
    /// Offline flow: sign a prepared release (no network needed)
    Sign(sign::Args),
    /// Check this host's audit log against the store's signed version log
    Audit(audit::Args),
    /// Lockout protection: roll back a release that was never confirmed
    Probation(probation::Args),
    /// Fleet view: every host's signed receipt in a remote, verified
    Fleet(fleet::Args),
    /// Internal: the agent's unprivileged network side (started by `follow`)
    #[command(hide = true)]
    FetchWorker(fetch_worker::Args),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCodes::USAGE
            } else {
                ExitCodes::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Pack(a) => pack::run(a),
        Command::Publish(a) => publish::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Log(a) => log::run(a),
        Command::Follow(a) => follow::run(a),
        Command::Status(a) => status::run(a),
        Command::Config(a) => config::run(a),
        Command::Pause(a) => pause::pause(a),
        Command::Unpause(a) => pause::unpause(a),
        Command::Activate(a) => activate::run(a),
        Command::Install(a) => install::run(a),
        Command::State(a) => state::run(a),
        Command::Release(a) => release::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Probation(a) => probation::run(a),
        Command::Fleet(a) => fleet::run(a),
        Command::FetchWorker(a) => fetch_worker::run(a),
    };
    match result {
        Ok(()) => ExitCode::from(ExitCodes::OK),
        Err(e) => {
            eprintln!("npcnix: {e:#}");
            ExitCode::from(exit::exit_code(&e))
        }
    }
}
