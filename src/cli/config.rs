//! `npcnix config show|check`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use super::common;
use super::out;

#[derive(clap::Args)]
#[command(
    about = "Show or check a host config",
    long_about = "Show the effective host config (defaults filled in) or check a config file \
before it is deployed. `check` reports every problem it finds in one run: unknown fields, wrong \
types and missing sections, then the semantic checks (keys that do not decode, thresholds that \
cannot be met, bad durations and paths).\n\nExample:\n  npcnix config check /etc/npcnix/config.json"
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Show(ShowArgs),
    Check(CheckArgs),
}

#[derive(clap::Args)]
#[command(
    about = "Print the effective host config (defaults filled in) as JSON",
    long_about = "Print the host config the agent would run with, every default filled in, as \
JSON (the format of docs/protocol.md, \"Host config\"). The config must be valid; use `config \
check` to see what is wrong with one that is not.\n\nExample:\n  npcnix config show --config \
/etc/npcnix/config.json"
)]
struct ShowArgs {
    #[command(flatten)]
    cfg: common::ConfigArgs,
}

#[derive(clap::Args)]
#[command(
    about = "Validate a host config file and explain every problem found",
    long_about = "Validate a host config file and explain it: the remote and its signed name, \
the configuration, the trusted keys with their scopes, the threshold and the activation. An \
invalid file exits 1 listing every problem found in one run (not just the first), each with the \
field it concerns. Without FILE, checks this host's config.\n\nExample:\n  npcnix config check ./hosts/web1/npcnix.json --json"
)]
struct CheckArgs {
    /// The file to check (default: this host's, $NPCNIX_CONFIG or
    /// /etc/npcnix/config.json)
    #[arg(env = "NPCNIX_CONFIG", default_value = npcnix::host::config::DEFAULT_CONFIG_PATH)]
    file: PathBuf,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Show(c) => {
            let v = c.cfg.load()?;
            out::stdout(format_args!(
                "{}",
                String::from_utf8_lossy(&v.config.to_json())
            ));
            Ok(())
        }
        Cmd::Check(c) => check(c),
    }
}

fn check(c: CheckArgs) -> Result<()> {
    let text = common::read_small(&c.file, 1 << 20, "host config")?;
    let v = match common::check_config(&text) {
        Ok(v) => v,
        Err(problems) => {
            if c.json {
                common::print_json(&serde_json::json!({
                    "file": c.file,
                    "ok": false,
                    "problems": problems,
                }));
            }
            let list = problems
                .iter()
                .map(|e| format!("\n  - {e}"))
                .collect::<String>();
            return Err(anyhow!(
                "host config {} is invalid ({} problem(s)):{list}",
                c.file.display(),
                problems.len()
            ));
        }
    };
    let keys: Vec<(String, String)> = v
        .policy
        .keys
        .iter()
        .map(|k| {
            let scope = match &k.scope {
                npcnix::verify::KeyScope::AnyRemote => "any remote".to_owned(),
                npcnix::verify::KeyScope::Remotes(r) => r
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            (k.key.key_id.to_string(), scope)
        })
        .collect();
    if c.json {
        common::print_json(&serde_json::json!({
            "file": c.file,
            "ok": true,
            "problems": [],
            "remote": v.remote.as_str(),
            "url": v.config.remote.url,
            "configuration": v.config.configuration,
            "trusted_keys": keys.iter().map(|(id, scope)| serde_json::json!({"key_id": id, "scope": scope})).collect::<Vec<_>>(),
            "threshold": v.policy.threshold,
            "activation": v.config.activation.mode.as_arg(),
            "interval_secs": v.config.poll.interval_secs,
            "jitter_secs": v.config.poll.jitter_secs,
        }));
        return Ok(());
    }
    let scoped: Vec<String> = keys
        .iter()
        .map(|(id, scope)| format!("{id} ({scope})"))
        .collect();
    outln!("{}: OK", c.file.display());
    outln!("  remote:        {} at {}", v.remote, v.config.remote.url);
    outln!("  configuration: {}", v.config.configuration);
    outln!("  trusted keys:  {}", scoped.join("; "));
    outln!("  threshold:     {} signature(s)", v.policy.threshold);
    outln!(
        "  activation:    {} every {}s (+ up to {}s jitter)",
        v.config.activation.mode.as_arg(),
        v.config.poll.interval_secs,
        v.config.poll.jitter_secs
    );
    Ok(())
}
