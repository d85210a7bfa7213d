//! `npcnix completions SHELL` and `npcnix man`: generated from the same
//! clap definition the parser uses, so they never drift from the commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args)]
#[command(
    about = "Print shell completions for bash, zsh or fish",
    long_about = "Print the completion script for SHELL on stdout. The flake's package installs \
them already (share/bash-completion, share/zsh/site-functions, share/fish/vendor_completions.d); \
for a `cargo install`, put the output where your shell looks for completions.\n\nExample:\n  \
npcnix completions bash > ~/.local/share/bash-completion/completions/npcnix"
)]
pub struct CompletionArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(clap::Args)]
#[command(
    about = "Print the man page, or write one per command into a directory",
    long_about = "Print the npcnix(1) man page (roff) on stdout, or with --out DIR write \
npcnix.1 and a page for every command (npcnix-publish.1, npcnix-config-check.1, ...) into DIR. The \
flake's package installs them already.\n\nExample:\n  npcnix man | man -l -"
)]
pub struct ManArgs {
    /// Write npcnix.1 and one page per command into this directory
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn completions(a: CompletionArgs) -> Result<()> {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "npcnix", &mut buf);
    super::out::stdout(format_args!("{}", String::from_utf8_lossy(&buf)));
    Ok(())
}

pub fn man(a: ManArgs) -> Result<()> {
    let cmd = super::Cli::command();
    match a.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            let mut pages: Vec<String> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".1"))
                .collect();
            pages.sort();
            info!("wrote {} man page(s) to {}", pages.len(), dir.display());
            Ok(())
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .context("rendering the man page")?;
            super::out::stdout(format_args!("{}", String::from_utf8_lossy(&buf)));
            Ok(())
        }
    }
}
