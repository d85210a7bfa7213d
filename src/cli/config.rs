//! `npcnix config show|check`.

use std::path::PathBuf;

use anyhow::Result;

use super::common;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Print the effective host config (defaults filled in) as JSON
    Show(common::ConfigArgs),
    /// Validate a host config file and explain every problem found
    Check {
        /// The file to check
        file: PathBuf,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Show(c) => {
            let v = c.load()?;
            print!("{}", String::from_utf8_lossy(&v.config.to_json()));
            Ok(())
        }
        Cmd::Check { file } => {
            let v = common::load_config(&file)?;
            let scoped: Vec<String> = v
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
                    format!("{} ({scope})", k.key.key_id)
                })
                .collect();
            println!("{}: OK", file.display());
            println!("  remote:        {} at {}", v.remote, v.config.remote.url);
            println!("  configuration: {}", v.config.configuration);
            println!("  trusted keys:  {}", scoped.join("; "));
            println!("  threshold:     {} signature(s)", v.policy.threshold);
            println!(
                "  activation:    {} every {}s (+ up to {}s jitter)",
                v.config.activation.mode.as_arg(),
                v.config.poll.interval_secs,
                v.config.poll.jitter_secs
            );
            Ok(())
        }
    }
}
