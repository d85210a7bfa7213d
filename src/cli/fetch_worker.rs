//! `npcnix fetch-worker` (hidden): the unprivileged network side of a poll.
//! Started by the agent (see `host::fetcher`), never by hand. It denies
//! itself every file-system write (Landlock, which also sets
//! `no_new_privs`), then answers read requests on stdin with store objects
//! on stdout until stdin closes.

use std::io::{self, BufReader};

use anyhow::{bail, Result};

use npcnix::archive::confine;
use npcnix::host::fetcher::{serve, Hello};
use npcnix::store::{self, StoreOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Remote URL
    #[arg(long, value_name = "URL")]
    url: String,
    #[arg(long, value_name = "REGION")]
    remote_region: Option<String>,
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    #[arg(long)]
    path_style: bool,
    #[arg(long, value_name = "SECS")]
    read_timeout: Option<u64>,
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<u64>,
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    #[arg(long, value_name = "BYTES_PER_SEC")]
    min_rate: Option<u64>,
}

/// Test builds only: a compromised worker that corrupts what it hands over
/// (a byte of the signed statement in a bundle, every chunk of an archive).
#[cfg(feature = "test-hooks")]
fn tamper(what: &str, bytes: &mut [u8]) {
    let mode = std::env::var("NPCNIX_TEST_FETCHER_TAMPER").unwrap_or_default();
    if mode == "hold-pipe" {
        // A child that leaves the process group and keeps the pipes open
        // (its pid goes to stderr, for the test to check and clean up),
        // and a worker that never answers.
        use std::io::Write;
        let line = match std::process::Command::new("setsid")
            .args(["sleep", "301"])
            .spawn()
        {
            Ok(c) => format!("holder pid {}\n", c.id()),
            Err(e) => format!("holder not started: {e}\n"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
    if mode != what {
        return;
    }
    let at = match what {
        "bundle" => bytes
            .windows(12)
            .position(|w| w == b"\"statement\":")
            .map(|i| i + 12 + 20),
        _ => Some(bytes.len() / 2),
    };
    if let Some(b) = at.and_then(|i| bytes.get_mut(i)) {
        *b = if *b == b'A' { b'B' } else { b'A' };
    }
}

#[cfg(not(feature = "test-hooks"))]
fn tamper(_: &str, _: &mut [u8]) {}

/// Test builds only: a compromised worker's moves before it serves
/// (`NPCNIX_TEST_FETCHER_TAMPER`): `forge-log` writes a line made to look
/// like the agent's own, with a journald priority, to its stderr;
/// `no-landlock` reports the Landlock status of a kernel without it.
#[cfg(feature = "test-hooks")]
fn tamper_start(hello: &mut Hello) {
    match std::env::var("NPCNIX_TEST_FETCHER_TAMPER").as_deref() {
        Ok("forge-log") => {
            use std::io::Write;
            let _ = std::io::stderr()
                .write_all(b"<0>npcnix: confirmed version 99 (forged by the worker)\n");
        }
        Ok("no-landlock") => {
            *hello = Hello::new(
                hello.uid,
                &confine::Confinement::Unavailable("not supported by this kernel".into()),
            );
        }
        _ => {}
    }
}

#[cfg(not(feature = "test-hooks"))]
fn tamper_start(_: &mut Hello) {}

pub fn run(a: Args) -> Result<()> {
    let confinement = confine::deny_all_writes();
    let uid = npcnix::fsutil::current_uid();
    let uid = match uid {
        Ok(0) => bail!("the fetch worker must not run as root"),
        Ok(uid) => uid,
        Err(e) => bail!("cannot tell which user the fetch worker runs as: {e}"),
    };
    info!("fetch worker running as uid {uid}");
    let mut hello = Hello::new(uid, &confinement);
    tamper_start(&mut hello);
    // The introduction comes first, before the store client is built (an
    // S3 client may already ask the instance metadata service for a
    // region): nothing from the network has been parsed when it is sent.
    let mut out = io::BufWriter::new(io::stdout().lock());
    npcnix::host::fetcher::introduce(&mut out, &hello)?;
    let opts = StoreOptions {
        region: a.remote_region,
        endpoint: a.endpoint,
        path_style: a.path_style,
        read_timeout_secs: a.read_timeout,
        connect_timeout_secs: a.connect_timeout,
        ca_file: a.ca_file,
        min_rate_bytes_per_sec: a.min_rate,
        client_attempts: None,
        profile: None,
    };
    let remote = store::open_url(&a.url, &opts)?;
    let mut input = BufReader::new(io::stdin().lock());
    Ok(serve(&remote, &mut input, &mut out, &tamper)?)
}
