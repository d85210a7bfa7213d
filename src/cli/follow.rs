//! `npcnix follow`: the agent loop.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use npcnix::fsutil;
use npcnix::host::activate::Activator;
use npcnix::host::agent::{self, Agent, Outcome, Parts};
use npcnix::store;

use super::common;
use super::env;
use super::exit::{Rejected, RestartRequested};
use super::out;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Once {
    /// Poll once, whatever happens, and exit with its result
    Any,
    /// Keep polling until a release has been activated, then exit
    Activate,
}

#[derive(clap::Args)]
#[command(
    about = "Host agent: poll, verify, activate, health-check, roll back",
    long_about = "Follow the configured remote: poll with jitter (and a bounded backoff, at most 4x the \
interval, while the store fails), fetch latest conditionally on its last ETag (an unchanged remote costs one small request), \
verify exactly like `pull`, record the version, activate with nixos-rebuild, run the health check, roll \
back and mark the release bad if it fails.\n\nSIGTERM/SIGINT: exits promptly between polls; during an \
activation it waits for the activation to finish. A lock on the data dir keeps two activations from \
running at once.\n\n--once (=any) polls once and exits: 0 activated/unchanged/up to date, 3 rejected, 1 \
error or failed activation. --once=activate polls until one release is activated (first boot).\n\nExample:\n  npcnix follow --config /etc/npcnix/config.json --once"
)]
pub struct Args {
    #[command(flatten)]
    cfg: common::ConfigArgs,
    /// Poll once and exit: 0 ok, 3 rejected, 1 error (=activate: until a
    /// release is active)
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "any", require_equals = true)]
    once: Option<Once>,
    /// Print each poll's result as a JSON line
    #[arg(long)]
    json: bool,
    /// After a successful switch/test activation, exit with code 75 so the
    /// service manager restarts the agent with its new binary and config
    /// (the NixOS module sets RestartForceExitStatus=75)
    #[arg(long)]
    exit_after_switch: bool,
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

pub fn build_agent(cfg: &common::ConfigArgs) -> Result<Agent> {
    let v = cfg.load()?;
    let data = cfg.data(&v)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (store, fetcher) = fetch_side(&v, &stop)?;
    let mut activator = Activator::from_config(
        &v.config.activation,
        &v.config.configuration,
        env::activation_program(),
        env::nix(),
    );
    activator.search_path = env::search_path();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let watchdog = env::watchdog(v.config.lockout.watchdog);
    Ok(Agent::new(Parts {
        v,
        store,
        data,
        activation: Box::new(activator),
        watchdog: Box::new(watchdog),
        clock: Box::new(env::clock()),
        run_dir: env::run_dir(),
        stop,
        hooks: env::agent_hooks(),
        fetcher,
        trust_dir: env::trust_dir(),
    }))
}

/// The store the agent reads through: the unprivileged fetch worker where
/// the host can run it (root, and the fetch user exists), else in-process.
/// Returns it with a description for `status` and the audit log.
fn fetch_side(
    v: &npcnix::host::config::Validated,
    stop: &Arc<AtomicBool>,
) -> Result<(store::Remote, String)> {
    use npcnix::host::fetcher::{FetchUser, FetcherStore, Isolation, WorkerCommand};
    let r = &v.config.remote;
    let opts = r.store_options(env::read_timeout());
    let f = &v.config.fetcher;
    let in_process = |why: String| -> Result<(store::Remote, String)> {
        if f.isolation == Isolation::Required {
            anyhow::bail!(
                "fetcher.isolation is \"required\" but the fetch side cannot be separated: {why}"
            );
        }
        let stores = std::iter::once(&r.url)
            .chain(&r.mirrors)
            .map(|u| store::open_url(u, &opts))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            store::Remote::mirrored(stores),
            format!("in-process ({why})"),
        ))
    };
    if f.isolation == Isolation::Off {
        return in_process("fetcher.isolation = off".into());
    }
    if !fsutil::current_uid().is_ok_and(|u| u == 0) {
        return in_process("npcnix does not run as root".into());
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let Some(user) = FetchUser::from_passwd(&passwd, &f.user) else {
        return in_process(format!("no unprivileged user {:?}", f.user));
    };
    let program = std::env::current_exe().context("locating the npcnix binary")?;
    let required = f.isolation == Isolation::Required;
    // One worker per URL (each started when first asked).
    let fetcher = |url: &String| {
        FetcherStore::new(
            WorkerCommand {
                program: program.clone(),
                url: url.clone(),
                options: opts.clone(),
                user,
                // `nobody` runs other services' processes too: never swept;
                // nor with mirrors, whose workers share the user (a sweep
                // by one would kill the others; each still dies with its
                // process group, D129).
                dedicated: f.user != "nobody" && r.mirrors.is_empty(),
            },
            Arc::clone(stop),
            Arc::new(|line: &str| info!("{line}")),
            required,
        )
    };
    let fetch = fetcher(&r.url);
    let mirrors: Vec<store::Remote> = r.mirrors.iter().map(|u| fetcher(u).into_remote()).collect();
    // Started now, so `status` and the audit log say how it is confined
    // (and `required` refuses a worker without Landlock at once).
    let confinement = match fetch.probe() {
        Ok(h) => h.describe(),
        Err(e) if required => anyhow::bail!("{e}"),
        Err(e) => format!("not started yet: {e}"),
    };
    Ok((
        store::Remote::mirrored(
            std::iter::once(fetch.into_remote())
                .chain(mirrors)
                .collect(),
        ),
        format!(
            "separate: user {} (uid {}), {confinement}",
            f.user, user.uid
        ),
    ))
}

struct LoopOpts {
    once: Option<Once>,
    json: bool,
}

fn report(json: bool, now: u64, res: &Result<Outcome, agent::AgentError>) {
    match res {
        Ok(Outcome::Refused(r)) if json => out::json_line(&serde_json::json!({
            "time": now,
            "result": "rejected",
            "check": r.check(),
            "cause": r.cause(),
            "detail": Outcome::Refused(r.clone()).to_string(),
        })),
        Ok(o) if json => {
            let mut v =
                serde_json::json!({"time": now, "result": o.label(), "detail": o.to_string()});
            match o {
                Outcome::Waiting { version, until } => {
                    v["version"] = (*version).into();
                    v["until"] = (*until).into();
                }
                Outcome::AwaitingConfirmation { version, pending } => {
                    v["version"] = (*version).into();
                    v["pending"] = (*pending).into();
                }
                Outcome::RolledBack {
                    version, retry_at, ..
                } => {
                    v["version"] = (*version).into();
                    v["retry_at"] = (*retry_at).into();
                }
                _ => {}
            }
            out::json_line(&v)
        }
        // One line per decision; what needs attention at warning priority.
        Ok(
            o @ (Outcome::Refused(_)
            | Outcome::ActivationFailed { .. }
            | Outcome::RolledBack { .. }
            | Outcome::RollbackFailed { .. }),
        ) => {
            warn!("{o}")
        }
        Ok(o) => info!("{o}"),
        Err(e) if json => out::json_line(
            &serde_json::json!({"time": now, "result": "error", "detail": super::exit::render(e)}),
        ),
        Err(e) => warn!("poll failed: {}", super::exit::render(e)),
    }
}

pub fn run(a: Args) -> Result<()> {
    let agent = build_agent(&a.cfg)?;
    follow_loop(&agent, a.once, a.json, a.exit_after_switch)
}

/// What the loop sleeps on: a socket that a stop signal (SIGTERM, SIGINT)
/// and a finished poll write to. The loop blocks on it instead of waking on
/// a timer to look at the stop flag: an idle agent at the default interval
/// woke 3,000 times per poll (issue 36).
struct Wake {
    rx: std::os::unix::net::UnixStream,
    tx: std::os::unix::net::UnixStream,
}

impl Wake {
    /// After [`build_agent`] set up the stop flag: signal-hook runs a
    /// signal's actions in the order they were registered, so the flag is
    /// set before the wake-up is written and a woken loop sees it.
    fn new() -> Result<Wake> {
        let (rx, tx) =
            std::os::unix::net::UnixStream::pair().context("creating the wake-up socket")?;
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            let w = tx.try_clone().context("creating the wake-up socket")?;
            signal_hook::low_level::pipe::register(sig, w).context("installing signal handlers")?;
        }
        Ok(Wake { rx, tx })
    }

    /// Returns once woken, or after `timeout`. A wake-up says only that
    /// something may have changed: callers look again.
    fn wait(&self, timeout: Duration) {
        use std::io::{ErrorKind, Read};
        let timeout = timeout.max(Duration::from_millis(1));
        let waited = self
            .rx
            .set_read_timeout(Some(timeout))
            .and_then(|()| (&self.rx).read(&mut [0u8; 64]));
        if let Err(e) = waited {
            if !matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) {
                // The socket is unusable: never spin, wait as before.
                std::thread::sleep(timeout.min(Duration::from_millis(100)));
            }
        }
    }
}

/// Writes a wake-up when dropped: a poll's thread ends with one, whether
/// it returned or panicked.
struct WakeOnDrop<'a>(&'a std::os::unix::net::UnixStream);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.0.write(&[1]);
    }
}

/// Runs one poll on a thread of its own, so that a stop signal that arrives
/// while the poll is on its network side (no lock, nothing durable being
/// written; a read may be stuck on a stalling store) ends the process at
/// once. Once the poll records or activates, it always runs to its end.
fn poll_or_stop(agent: &Agent, wake: &Wake) -> Result<Outcome, agent::AgentError> {
    std::thread::scope(|s| {
        // The result comes through a channel, sent before the wake-up is
        // written: a woken loop finds it there (the thread itself may
        // still be returning, so "is it finished" could say no and the
        // loop would sleep on a wake-up already spent; found by bench/soak).
        let (result, outcome) = std::sync::mpsc::sync_channel(1);
        let poll = s.spawn(move || {
            // Written when the thread ends, by a return or a panic.
            let _done = WakeOnDrop(&wake.tx);
            let _ = result.send(agent.poll_once());
        });
        loop {
            match outcome.try_recv() {
                Ok(res) => {
                    let _ = poll.join();
                    return res;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    info!("the poll panicked");
                    std::process::exit(i32::from(super::exit::ExitCodes::ERROR))
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            if agent.should_stop() && agent.is_fetching() {
                info!("stopping (signal) during a fetch; nothing was recorded");
                std::process::exit(i32::from(super::exit::ExitCodes::OK));
            }
            // Once a stop was asked for, the poll may still reach its
            // network side: look again often until it ends.
            wake.wait(if agent.should_stop() {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(60)
            });
        }
    })
}

/// The poll loop shared by `follow` and `install`.
pub fn follow_loop(
    agent: &Agent,
    once: Option<Once>,
    json: bool,
    exit_after_switch: bool,
) -> Result<()> {
    let a = LoopOpts { once, json };
    let interval = agent.v.config.poll.interval_secs;
    let jitter = agent.v.config.poll.jitter_secs;
    if !a.json {
        info!(
            "following {} ({}) for configuration {}; every {interval}s + up to {jitter}s jitter; fetching {}",
            agent.v.remote, agent.v.config.remote.url, agent.v.config.configuration, agent.fetcher
        );
    }
    // Only once the state exists (first use creates it): an audit log next
    // to no state file reads as a lost state.
    let journal = npcnix::host::journal::Journal::new(&agent.data, agent.v.remote.as_str());
    let state_ok = match agent.data.try_lock() {
        // First use creates the state, under the lock.
        Ok(_lock) => agent.data.load().is_ok(),
        Err(_) => agent.data.peek().is_ok(),
    };
    let mut ev = journal.event(agent.clock.now().wall, "agent-start");
    ev.detail = Some(format!("fetching {}", agent.fetcher));
    if state_ok {
        if let Err(e) = journal.append(&ev) {
            warn!("{e}");
        }
        if let Some(change) = agent.check_trust_root(agent.clock.now().wall)? {
            info!("the host's trust root changed since the last run: {change}");
        }
    }
    let wake = Wake::new()?;
    loop {
        let now = agent.clock.now().wall;
        let res = poll_or_stop(agent, &wake);
        report(a.json, now, &res);
        // Only a failing store backs off; refusals poll at the interval.
        let store_errors = match &res {
            Err(e) if e.is_transient() => agent.data.load_status().consecutive_store_errors + 1,
            _ => 0,
        };
        let mut delay = agent::next_delay(interval, jitter, store_errors, random_u64());
        // Poll again right at this host's rollout slot, not an interval later.
        if let Ok(Outcome::Waiting { until, .. }) = &res {
            delay = delay.min(until.saturating_sub(now).max(1));
        }
        // A release on probation gets several chances to be confirmed, and
        // no store-error backoff runs past its deadline.
        if let Some(d) = agent.probation_poll_delay() {
            delay = delay.min(d);
        }
        if a.once == Some(Once::Activate)
            && !matches!(
                res,
                Ok(Outcome::Activated { .. } | Outcome::UpToDate { .. } | Outcome::Unchanged)
            )
        {
            // `install` waits for a first activation: say why it is still
            // waiting, every time, rather than poll in silence.
            let why = match &res {
                Ok(o) => o.to_string(),
                Err(e) => format!("{e:#}"),
            };
            info!(
                "no release activated yet ({why}); polling again in {delay} s until one is (Ctrl-C stops; the host config stays written)"
            );
        }
        agent.finish_poll(
            now,
            &res,
            if a.once == Some(Once::Any) {
                None
            } else {
                Some(now + delay)
            },
        );
        if let Some(end) = loop_ends(agent, a.once, exit_after_switch, res) {
            return end;
        }
        // Until the next poll, or a stop signal (which wakes the wait).
        let until = std::time::Instant::now() + Duration::from_secs(delay);
        loop {
            if agent.should_stop() {
                info!("stopping (signal)");
                return Ok(());
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            wake.wait(left);
        }
        if agent.should_stop() {
            info!("stopping (signal)");
            return Ok(());
        }
    }
}

/// Whether the loop ends after a poll with `res`, and how: `--once`, the
/// first activation (`install`), or a restart after the running system
/// changed (a switch or a rollback: this process runs another system's
/// binary and config).
fn loop_ends(
    agent: &Agent,
    once: Option<Once>,
    exit_after_switch: bool,
    res: Result<Outcome, agent::AgentError>,
) -> Option<Result<()>> {
    match once {
        Some(Once::Any) => {
            return Some(match res {
                Ok(Outcome::Refused(r)) => Err(Rejected(r).into()),
                Ok(
                    o @ (Outcome::ActivationFailed { .. }
                    | Outcome::RolledBack { .. }
                    | Outcome::RollbackFailed { .. }),
                ) => Err(anyhow::anyhow!("{o}")),
                Ok(_) => Ok(()),
                Err(e) => Err(e.into()),
            });
        }
        Some(Once::Activate)
            if matches!(
                res,
                Ok(Outcome::Activated { .. } | Outcome::UpToDate { .. } | Outcome::Unchanged)
            ) =>
        {
            return Some(Ok(()));
        }
        _ => {}
    }
    if !exit_after_switch {
        return None;
    }
    if let Some(now_running) = agent.system_changed() {
        info!(
            "the running system is now {}; exiting so the service restarts with its npcnix and config",
            now_running.display()
        );
        return Some(Err(RestartRequested.into()));
    }
    let switched = agent
        .activation
        .activator()
        .effective_mode()
        .changes_running_system()
        && matches!(res, Ok(Outcome::Activated { .. }));
    switched.then(|| Err(RestartRequested.into()))
}
