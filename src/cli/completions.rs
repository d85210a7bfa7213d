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
            // The pages just generated (npcnix*.1, each rewritten), once.
            for page in pages.iter().filter(|p| p.starts_with("npcnix")) {
                let path = dir.join(page);
                if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(".SH \"EXIT STATUS\"")) {
                    continue;
                }
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                std::io::Write::write_all(&mut f, EXTRA_SECTIONS.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            info!("wrote {} man page(s) to {}", pages.len(), dir.display());
            Ok(())
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .context("rendering the man page")?;
            buf.extend_from_slice(EXTRA_SECTIONS.as_bytes());
            super::out::stdout(format_args!("{}", String::from_utf8_lossy(&buf)));
            Ok(())
        }
    }
}

/// EXIT STATUS, ENVIRONMENT and FILES (roff), appended to every page: the
/// same for every command (docs/cli.md has the details).
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success.
.TP
\fB1\fR
A failure that is not one of the below (I/O, the store, a file).
.TP
\fB2\fR
Usage error: an option or value on the command line.
.TP
\fB3\fR
Refused: a release, archive or log failed verification (the message names the check).
.TP
\fB4\fR
A publish lost a race with another publisher: run it again.
.TP
\fB75\fR
\fBfollow \-\-exit\-after\-switch\fR after a switch: the service manager restarts npcnix.
.SH ENVIRONMENT
.TP
\fBNPCNIX_CONFIG\fR
The host config (default /etc/npcnix/config.json).
.TP
\fBNPCNIX_DATA_DIR\fR
The host's state directory (default: the config's state_dir).
.TP
\fBNPCNIX_TRUST_DIR\fR
Where the trust root is remembered between runs (default /var/lib/npcnix-trust).
.TP
\fBNPCNIX_PASSPHRASE\fR
The passphrase of an encrypted secret key (else asked on the terminal).
.TP
\fBNPCNIX_RETRIES\fR, \fBNPCNIX_READ_TIMEOUT_SECS\fR
Retries of transient store failures and the read time-out of operator commands.
.TP
\fBNPCNIX_PROGRESS\fR
never hides progress lines, always shows them even when stderr is not a terminal.
.TP
\fBNPCNIX_NIXOS_REBUILD\fR, \fBNPCNIX_SYSTEMD_RUN\fR, \fBNPCNIX_SYSTEMCTL\fR
The programs the agent runs at the NixOS boundary (wrappers, tests).
.TP
\fBRUST_LOG\fR
The log level when no \-v or \-q is given (error, warn, info, debug, trace).
.TP
\fBAWS_PROFILE\fR, \fBAWS_REGION\fR, \fBAWS_ACCESS_KEY_ID\fR, ...
The AWS SDK's usual credential chain for s3:// remotes.
.SH FILES
.TP
\fI/etc/npcnix/config.json\fR
The host config (the NixOS module writes it).
.TP
\fI/var/lib/npcnix\fR
The host's state: state.json, the audit log (audit.jsonl), status.json, the cached verified head.
.TP
\fInpcnix\-policy.json\fR
A fleet's policy file in its flake: the remotes' keys and thresholds.
"#;
