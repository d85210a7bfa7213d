//! Command-line interface: one module per subcommand, each with `Args` and
//! `run`. Exit codes are part of the interface (see [`exit`]).
//! Everything printed goes through [`out`] (`outln!`, `info!`, `warn!`):
//! a closed pipe never panics, and messages have levels.

// `println!`/`eprintln!` panic on a closed pipe and bypass the levels.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod out;

mod activate;
mod audit;
mod common;
mod completions;
mod config;
mod diff;
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
mod progress;
mod publish;
mod pull;
mod release;
mod rollout;
mod sign;
mod state;
mod status;
mod timestamp;
mod verify;
mod witness;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use exit::ExitCodes;

/// `npcnix --version`: the crate version and the git commit it was built
/// from (build.rs; `unknown` outside a git checkout without
/// `NPCNIX_GIT_COMMIT`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("NPCNIX_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "npcnix",
    version = VERSION,
    about = "Security-first, pull-based deployment of NixOS flakes from a signed store",
    long_about = "npcnix moves NixOS configurations from a publisher to a fleet of hosts through an \
untrusted store (a directory, S3, or an HTTP mirror). Publishers pack a flake deterministically and sign \
a release statement; hosts verify it against pinned keys before downloading, extracting or activating \
anything.\n\nTypical flow:\n  npcnix keygen --out ci-dev\n  npcnix publish --remote file:///srv/npcnix/dev --src ./flake --key ci-dev.key\n  npcnix pull --remote file:///srv/npcnix/dev --trusted-key ci-dev.pub --dst ./checkout\n\n\
Exit codes: 0 ok, 1 error, 2 usage, 3 release rejected by verification, 4 publish lost a race (retry). \
`npcnix help COMMAND` or `npcnix COMMAND --help` explains each command with an example.",
    after_help = "Formats and the verification order: docs/protocol.md. Exit codes, JSON output: docs/cli.md. Threat model: SECURITY.md."
)]
pub(crate) struct Cli {
    /// More detail on stderr: -v debug lines and the full error chain, -vv trace (overrides RUST_LOG)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less on stderr: -q warnings and errors only (no progress), -qq errors only
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

// No doc comments on the variants: a variant's doc comment would replace the
// `about`/`long_about` its `Args` sets (the long help would never show).
#[derive(Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Pack(pack::Args),
    Publish(Box<publish::Args>),
    Pull(pull::Args),
    Verify(verify::Args),
    Log(log::Args),
    Diff(diff::Args),
    Follow(follow::Args),
    Status(status::Args),
    Config(config::Args),
    Pause(pause::PauseArgs),
    Unpause(pause::UnpauseArgs),
    Activate(activate::Args),
    Install(install::Args),
    State(state::Args),
    Release(release::Args),
    Sign(sign::Args),
    Timestamp(timestamp::Args),
    Witness(witness::Args),
    Audit(audit::Args),
    Probation(probation::Args),
    Fleet(fleet::Args),
    Completions(completions::CompletionArgs),
    Man(completions::ManArgs),
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
            // A closed stdout or stderr (`npcnix --help | head -1`) is fine.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    out::init(
        cli.verbose,
        cli.quiet,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    progress::init(env::progress().as_deref());
    debug!("npcnix {VERSION}");
    let result = match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Pack(a) => pack::run(a),
        Command::Publish(a) => publish::run(*a),
        Command::Pull(a) => pull::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Log(a) => log::run(a),
        Command::Diff(a) => diff::run(a),
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
        Command::Timestamp(a) => timestamp::run(a),
        Command::Witness(a) => witness::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Probation(a) => probation::run(a),
        Command::Fleet(a) => fleet::run(a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(a),
        Command::FetchWorker(a) => fetch_worker::run(a),
    };
    match result {
        Ok(()) => match out::stdout_error() {
            // The output was lost (e.g. a full disk): say so.
            Some(e) => {
                out::message(out::Level::Error, format_args!("writing to stdout: {e}"));
                ExitCode::from(ExitCodes::ERROR)
            }
            None => ExitCode::from(ExitCodes::OK),
        },
        Err(e) => {
            out::message(
                out::Level::Error,
                format_args!("{}", exit::render(e.as_ref())),
            );
            if out::enabled(out::Level::Debug) {
                out::message(
                    out::Level::Debug,
                    format_args!("full error chain:\n{}", exit::render_debug(e.as_ref())),
                );
            }
            ExitCode::from(exit::exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand (at any depth) has a long help of its own that its
    /// `--help` shows, with an example; `-h` stays short.
    #[test]
    fn every_subcommand_shows_its_long_help() {
        fn walk(cmd: &mut clap::Command, path: &str, seen: &mut Vec<String>) {
            let names: Vec<String> = cmd
                .get_subcommands()
                .filter(|c| !c.is_hide_set() && c.get_name() != "help")
                .map(|c| c.get_name().to_owned())
                .collect();
            for n in names {
                let full = format!("{path} {n}");
                let sub = cmd.find_subcommand_mut(&n).expect("subcommand");
                let long = sub
                    .get_long_about()
                    .unwrap_or_else(|| panic!("`{full}` has no long help"))
                    .to_string();
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                assert!(!about.is_empty(), "`{full}` has no one-line about");
                assert_ne!(long, about, "`{full}`: long help is the about line");
                assert!(
                    long.contains("Example") && long.contains(&format!("\n  {full}")),
                    "`{full}`: the long help has no example of `{full}`: {long}"
                );
                let rendered = sub.render_long_help().to_string();
                let first = long.lines().next().unwrap_or_default();
                let probe: String = first
                    .split_whitespace()
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(" ");
                assert!(
                    rendered
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .contains(&probe),
                    "`{full} --help` does not show its long help ({probe:?})"
                );
                seen.push(full.clone());
                walk(sub, &full, seen);
            }
        }
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut seen = Vec::new();
        walk(&mut cmd, "npcnix", &mut seen);
        assert!(seen.len() > 25, "{seen:?}");
    }

    /// Issue 17 item 7: every command that reports a result has `--json`,
    /// and every `--json` has its fields in docs/cli.md's table. The only
    /// commands without: generators, and `config show` (JSON already).
    #[test]
    fn every_command_with_a_result_has_documented_json() {
        const NO_JSON: &[&str] = &["completions", "man", "config show"];
        let docs = include_str!("../../docs/cli.md");
        let table = docs
            .split("## JSON output")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/cli.md has a JSON output section");
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
        fn leaves(cmd: &clap::Command, path: &str, out: &mut Vec<(String, bool)>) {
            let subs: Vec<&clap::Command> = cmd
                .get_subcommands()
                .filter(|c| !c.is_hide_set() && c.get_name() != "help")
                .collect();
            if subs.is_empty() {
                let json = cmd.get_arguments().any(|a| a.get_id() == "json");
                out.push((path.trim().to_owned(), json));
            }
            for s in subs {
                leaves(s, &format!("{path} {}", s.get_name()), out);
            }
        }
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut all = Vec::new();
        leaves(&cmd, "", &mut all);
        for (path, json) in &all {
            let documented = rows.iter().any(|r| {
                r.split('|')
                    .nth(1)
                    .is_some_and(|c| c.contains(&format!("`{path}`")))
            });
            if NO_JSON.contains(&path.as_str()) {
                assert!(
                    !json || documented,
                    "`{path}` has --json but no row in docs/cli.md"
                );
                continue;
            }
            assert!(json, "`{path}` reports a result but has no --json");
            assert!(
                documented,
                "`{path} --json` has no row in docs/cli.md's JSON table"
            );
        }
        assert!(all.len() > 20, "{all:?}");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
