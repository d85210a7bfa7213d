//! `npcnix witness`: cosign a remote's log checkpoints, refusing forks
//! (issue 37; the logic is `npcnix::witness`).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use npcnix::format::keys::SecretKey;
use npcnix::fsutil;
use npcnix::verify::witness::log_verifier;
use npcnix::verify::Refusal;
use npcnix::witness::{Witness, Witnessed};

use super::common;
use super::exit::Rejected;

#[derive(clap::Args)]
#[command(
    about = "Witness a remote's release log: cosign its checkpoint if it only grew",
    long_about = "Read the remote's log checkpoint (log/checkpoint, signed by the remote's log key), \
check that the log only grew since the checkpoint this witness cosigned last (a consistency proof \
from the log's tiles in the store), remember the new head in --state-dir, and publish this witness's \
cosignature at witnesses/<key ID>/checkpoint in the store. Hosts whose policy.witnesses names this \
witness take a release only once enough witnesses cosigned a checkpoint that includes it, so no \
store (or thief of a signing quorum) can show one host a release the rest of the world cannot see. A \
log that shrank or was rewritten is a fork: nothing is cosigned, the run exits 3 naming it, and every \
later run refuses it again until the log extends the head cosigned last. Run it on a schedule, on a \
machine and under an account the publishers do not control (docs/witness.md). With --print-key, print \
the witness's note key for hosts' policy.witnesses and exit.\n\nExamples:\n  npcnix witness --print-key \
--key witness.pub --name witness.example.org\n  npcnix witness --remote s3://fleet/npcnix/prod \
--log-key log.pub --key witness.key --name witness.example.org --state-dir /var/lib/npcnix-witness"
)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL", value_parser = common::remote_url, required_unless_present = "print_key")]
    remote: Option<String>,
    /// The remote's name (default: the URL's last path segment): part of
    /// the log's origin
    #[arg(long, value_name = "NAME")]
    remote_name: Option<String>,
    /// The remote's log public key (role `log` in the hosts' config)
    #[arg(long, value_name = "KEY", required_unless_present = "print_key")]
    log_key: Option<String>,
    /// The witness's secret key (npcnix keygen); with --print-key, its
    /// public key
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The witness's name, as hosts pin it (e.g. a domain name you control)
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Where the witness remembers the checkpoint it cosigned last (one
    /// file per log; keep it: a witness that forgets accepts any history
    /// once)
    #[arg(long, value_name = "DIR", required_unless_present = "print_key")]
    state_dir: Option<PathBuf>,
    /// Print the witness's note key (`<name>+<key ID>+<key>`) and exit
    #[arg(long)]
    print_key: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: common::StoreArgs,
}

pub fn run(a: Args) -> Result<()> {
    if a.print_key {
        let pk = common::load_public_key(&a.key.to_string_lossy())?;
        let vkey = npcnix::verify::witness::witness_verifier(&a.name, &pk)
            .map_err(|e| super::exit::usage(format!("--name {:?}: {e}", a.name)))?;
        if a.json {
            common::print_json(&serde_json::json!({"name": a.name, "key": vkey.to_string()}));
        } else {
            outln!("{vkey}");
        }
        return Ok(());
    }
    let (Some(url), Some(log_key), Some(state_dir)) = (&a.remote, &a.log_key, &a.state_dir) else {
        return Err(super::exit::usage(
            "--remote, --log-key and --state-dir are required".into(),
        ));
    };
    let remote = common::remote_name(url, a.remote_name.as_deref())?;
    let log_pub = common::load_public_key(log_key)?;
    let log_vkey = log_verifier(&remote, &log_pub).map_err(anyhow::Error::msg)?;
    let sk: SecretKey = common::load_secret_key(&a.key)?;
    let state_dir = npcnix::witness::state_dir(state_dir)
        .with_context(|| format!("preparing {}", state_dir.display()))?;
    let witness = Witness {
        name: a.name.clone(),
        key: &sk,
        state_dir,
    };
    let store = a.store.open(url)?;
    let result = witness.witness(&store, &log_vkey, fsutil::now_unix())?;
    if a.json {
        common::print_json(&match &result {
            Witnessed::NoLog => serde_json::json!({"remote": url, "result": "no-log"}),
            Witnessed::Cosigned { size, from, grew } => serde_json::json!({
                "remote": url, "result": "cosigned", "size": size, "from": from, "grew": grew,
            }),
            Witnessed::Fork { cosigned, detail } => serde_json::json!({
                "remote": url, "result": "fork", "cosigned": cosigned, "detail": detail,
            }),
        });
    }
    match result {
        Witnessed::NoLog => {
            if !a.json {
                outln!("{url}: no log yet (log/checkpoint is missing); nothing to cosign");
            }
            Ok(())
        }
        Witnessed::Cosigned { size, from, grew } => {
            if !a.json {
                if grew {
                    outln!("{url}: cosigned the log at {size} entries (grew from {from})");
                } else {
                    outln!("{url}: the log is still at {size} entries, cosigned");
                }
            }
            Ok(())
        }
        Witnessed::Fork { cosigned, detail } => Err(Rejected(Refusal::LogInconsistent(format!(
            "{url}: refusing to cosign: {detail} (this witness cosigned {cosigned} entries; hosts that rely on it take nothing new until the log extends that history again)"
        )))
        .into()),
    }
}
