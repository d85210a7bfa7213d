//! The in-process test world: a `file://` store on disk that can be made to
//! fail or serve garbage, releases published with the library's own
//! publisher, a clock stepped by hand, and a scripted NixOS (systems,
//! generations, `current-system`, the boot default) with a scripted
//! watchdog. Only the NixOS and systemd boundary is scripted.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::nixos::{FakeActivation, FakeWatchdog, Sys};
use crate::format::bundle::Bundle;
use crate::format::keys::SecretKey;
use crate::format::remote::RemoteName;
use crate::format::statement::ArchiveRef;
use crate::fsutil::TempDir;
use crate::host::activate::Activator;
use crate::host::agent::{Agent, Hooks, Outcome, Parts};
use crate::host::clock::{BootTime, Clock, Moment};
use crate::host::config::{ActivationMode, HostConfig};
use crate::host::journal::AuditEvent;
use crate::host::probation::{self, Probation};
use crate::host::state::{DataDir, RemoteState};
use crate::store::file::FileStore;
use crate::store::{ETag, Fetched, Store, StoreError, StoreErrorKind};

pub const START: u64 = 1_800_000_000;

/// What the store does besides serving its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every request fails (connection refused, time-out).
    Down,
    /// Every request is denied (credentials the new system lost).
    Denied,
    /// `latest` is garbage (no key needed).
    Garbage,
    /// `latest` is these bytes.
    Serve(Vec<u8>),
    /// The next archive download breaks after this many bytes (once).
    CutArchive(u64),
}

/// A clock stepped by hand: `advance` moves both clocks, `step_wall` only
/// the wall clock (NTP, `date -s`), `reboot` starts a new boot.
pub struct FakeClock(Mutex<Moment>);

impl Clock for Arc<FakeClock> {
    fn now(&self) -> Moment {
        self.0.lock().expect("clock").clone()
    }
}

impl FakeClock {
    pub fn advance(&self, secs: u64) {
        let mut m = self.0.lock().expect("clock");
        m.wall += secs;
        if let Some(b) = &mut m.boot {
            b.secs += secs;
        }
    }

    pub fn step_wall(&self, secs: i64) {
        let mut m = self.0.lock().expect("clock");
        m.wall = m.wall.saturating_add_signed(secs);
    }

    pub fn reboot(&self, id: &str) {
        let mut m = self.0.lock().expect("clock");
        m.wall += 30;
        m.boot = Some(BootTime {
            id: id.into(),
            secs: 10,
        });
    }

    pub fn wall(&self) -> u64 {
        self.0.lock().expect("clock").wall
    }
}

/// The store, with faults.
pub struct FaultyStore {
    inner: FileStore,
    fault: Arc<Mutex<Fault>>,
    /// Every stream opened: its key and first byte.
    opens: Arc<Mutex<Vec<(String, u64)>>>,
}

/// A stream that breaks after `left` bytes.
struct Cut {
    inner: Box<dyn Read + Send>,
    left: u64,
}

impl Read for Cut {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset (scripted)",
            ));
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl FaultyStore {
    fn check(&self, key: &str) -> Result<Fault, StoreError> {
        let fail = |kind, what: &str| {
            Err(StoreError::new(
                kind,
                &self.inner.describe(),
                key,
                format!("{what} (scripted)"),
            ))
        };
        match self.fault.lock().expect("fault").clone() {
            Fault::Down => fail(StoreErrorKind::Transient, "connection refused"),
            Fault::Denied => fail(StoreErrorKind::Unauthorized, "access denied"),
            f => Ok(f),
        }
    }
}

impl Store for FaultyStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn get(&self, key: &str, inm: Option<&ETag>, limit: u64) -> Result<Fetched, StoreError> {
        let served = match self.check(key)? {
            Fault::Garbage => Some(b"this is not a bundle".to_vec()),
            Fault::Serve(b) => Some(b),
            _ => None,
        };
        if let (Some(bytes), crate::store::LATEST) = (served, key) {
            return Ok(Fetched::Object {
                etag: Some(ETag(format!("\"{}\"", crate::format::Digest::of(&bytes)))),
                bytes,
            });
        }
        self.inner.get(key, inm, limit)
    }

    fn open(&self, key: &str, from: u64, max: u64) -> Result<Box<dyn Read + Send>, StoreError> {
        let fault = self.check(key)?;
        self.opens
            .lock()
            .expect("opens")
            .push((key.to_owned(), from));
        let inner = self.inner.open(key, from, max)?;
        match fault {
            Fault::CutArchive(after) if key.ends_with(".tar.zst") => {
                *self.fault.lock().expect("fault") = Fault::None;
                Ok(Box::new(Cut { inner, left: after }))
            }
            _ => Ok(inner),
        }
    }

    fn put_new(&self, key: &str, body: &mut dyn Read, len: u64) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.put_new(key, body, len)
    }

    fn put_swap(&self, key: &str, body: &[u8], e: Option<&ETag>) -> Result<ETag, StoreError> {
        self.check(key)?;
        self.inner.put_swap(key, body, e)
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.put(key, body)
    }

    fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        self.check(prefix)?;
        self.inner.list(prefix, max)
    }
}

pub struct Kit {
    pub tmp: TempDir,
    key: SecretKey,
    /// The remote's log key: every release is appended to the witnessed
    /// log (issue 37) unless `logging` is off.
    pub log_key: SecretKey,
    pub logging: std::cell::Cell<bool>,
    pub clock: Arc<FakeClock>,
    pub sys: Arc<Mutex<Sys>>,
    pub fault: Arc<Mutex<Fault>>,
    /// Every stream the agents opened: its key and first byte.
    pub opens: Arc<Mutex<Vec<(String, u64)>>>,
    base: serde_json::Value,
}

impl Kit {
    /// A host on `switch` with probation (300 s) and inspection on, running
    /// system `v0`; `edit` adjusts its host config.
    pub fn new(edit: impl FnOnce(&mut serde_json::Value)) -> Kit {
        let tmp = TempDir::new_in(&std::env::temp_dir(), "npcnix-agent-test-").expect("tmp");
        let root = std::fs::canonicalize(tmp.path()).expect("canonical");
        let key = SecretKey::generate().expect("key");
        for d in ["store", "data", "run", "sys/systems"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let mut base = serde_json::json!({
            "format": "npcnix-host-config/v1",
            "remote": {"url": format!("file://{}", root.join("store").display()), "name": "prod", "threshold": 1},
            "configuration": "web",
            "trusted_keys": [{"public_key": key.public_key().to_base64(), "remotes": ["prod"]}],
            "activation": {"mode": "switch", "program": "/bin/sh", "profile": root.join("sys/profile")},
            "state_dir": root.join("data"),
            "lockout": {"probation_secs": 300},
        });
        edit(&mut base);
        let base_config = serde_json::to_vec_pretty(&base).expect("json");
        let mut sys = Sys {
            run: root.join("run"),
            systems: root.join("sys/systems"),
            profile: root.join("sys/profile"),
            generations: Vec::new(),
            log: Vec::new(),
            fail_apply: false,
            fail_after_switch: false,
            fail_undo: false,
            crash_at: None,
            warnings: Vec::new(),
            reboots: 0,
            base_config: base_config.clone(),
            n: 0,
        };
        let v0 = sys.make_system("v0", &base_config);
        sys.switch_to(&v0, ActivationMode::Switch);
        sys.reboot();
        sys.log.clear();
        Kit {
            tmp,
            key,
            log_key: SecretKey::generate().expect("key"),
            logging: std::cell::Cell::new(true),
            clock: Arc::new(FakeClock(Mutex::new(Moment {
                wall: START,
                boot: Some(BootTime {
                    id: "boot-1".into(),
                    secs: 100,
                }),
            }))),
            sys: Arc::new(Mutex::new(sys)),
            fault: Arc::new(Mutex::new(Fault::None)),
            opens: Arc::default(),
            base,
        }
    }

    pub fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.tmp.path()).expect("canonical")
    }

    /// The host config of the first system, to edit for a release.
    pub fn config(&self) -> serde_json::Value {
        self.base.clone()
    }

    pub fn set_fault(&self, f: Fault) {
        *self.fault.lock().expect("fault") = f;
    }

    fn store(&self) -> FileStore {
        let dir = self.root().join("store");
        FileStore::new(dir.clone(), format!("file://{}", dir.display()))
    }

    /// Publishes the next release: a flake whose `marker` file is `marker`
    /// and, with `system_config`, whose system carries that host config.
    /// Puts a freshness timestamp by `key` for the current head, valid
    /// from `created` to `expires`, into `latest` (D126).
    pub fn timestamp(&self, key: &SecretKey, created: u64, expires: u64) {
        let latest = self.root().join("store/latest");
        let mut b = Bundle::decode(&std::fs::read(&latest).expect("latest")).expect("bundle");
        let st = crate::format::statement::Statement::parse(&b.statement).expect("statement");
        b.timestamp = Some(crate::publish::sign_timestamp(
            &st.remote,
            st.version,
            crate::format::digest::Digest::of(&b.statement),
            created,
            expires,
            &[key],
        ));
        std::fs::write(&latest, b.encode()).expect("write");
    }

    pub fn publish(&self, marker: &str, system_config: Option<&serde_json::Value>) -> u64 {
        self.publish_with(marker, system_config, &[])
    }

    /// [`Self::publish`] with extra files in the flake (`flake.lock`, and
    /// `declared-inputs`: what the scripted Nix reads from `flake.nix`).
    pub fn publish_with(
        &self,
        marker: &str,
        system_config: Option<&serde_json::Value>,
        files: &[(&str, &str)],
    ) -> u64 {
        let root = self.root();
        let src = root.join(format!("src-{marker}"));
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("flake.nix"), "{ outputs = _: { }; }\n").expect("flake");
        std::fs::write(src.join("marker"), marker).expect("marker");
        for (name, text) in files {
            std::fs::write(src.join(name), text).expect("file");
        }
        if let Some(c) = system_config {
            std::fs::write(
                src.join("npcnix-config.json"),
                serde_json::to_vec_pretty(c).expect("json"),
            )
            .expect("config");
        }
        let tree = crate::archive::collect_entries(&src, crate::archive::FileSelection::AllFiles)
            .expect("tree");
        let archive = root.join(format!("archive-{marker}.tar.zst"));
        let f = std::fs::File::create(&archive).expect("archive");
        let (_, packed) = crate::archive::write_archive(&tree, f).expect("pack");
        let aref = ArchiveRef {
            blake3: packed.blake3,
            size: packed.size,
        };
        let store = self.store();
        let remote = RemoteName::new("prod").expect("name");
        let policy = crate::verify::Policy::manual(remote.clone(), vec![self.key.public_key()]);
        let now = self.clock.wall();
        let store = crate::store::Remote::new(Box::new(store));
        let head = crate::publish::read_head(&store, &policy, now).expect("head");
        let st = crate::publish::next_statement(
            head.as_ref(),
            aref.clone(),
            crate::publish::StatementParams {
                remote,
                version: None,
                created: now,
                expires: None,
                source: None,
            },
        )
        .expect("statement");
        let bytes = st.to_bytes();
        let sig = crate::publish::sign_statement(&st, &bytes, &self.key);
        let bundle = Bundle {
            statement: bytes,
            signatures: vec![sig],
            timestamp: None,
        };
        crate::publish::upload(
            &store,
            &archive,
            &aref,
            st.version,
            &bundle,
            self.logging
                .get()
                .then(|| crate::publish::tlog::LogSigner {
                    remote: RemoteName::new("prod").expect("name"),
                    key: &self.log_key,
                    new_log: false,
                    now: 0,
                })
                .as_ref(),
            head.as_ref().and_then(|h| h.etag.as_ref()),
            &crate::store::retry::Retry::none(),
        )
        .expect("upload");
        st.version
    }

    /// The bundle `latest` holds now.
    pub fn latest(&self) -> Vec<u8> {
        match self
            .store()
            .get(crate::store::LATEST, None, 1 << 20)
            .expect("latest")
        {
            Fetched::Object { bytes, .. } => bytes,
            Fetched::NotModified => panic!("not modified"),
        }
    }

    /// The bundle `latest` holds, with its signatures replaced by one from a
    /// key nobody trusts (what a store attacker can make of a release).
    pub fn latest_resigned(&self) -> Vec<u8> {
        let b = Bundle::decode(&self.latest()).expect("bundle");
        let st = crate::format::statement::Statement::parse(&b.statement).expect("statement");
        let attacker = SecretKey::generate().expect("key");
        Bundle {
            timestamp: None,
            signatures: vec![crate::publish::sign_statement(&st, &b.statement, &attacker)],
            statement: b.statement,
        }
        .encode()
    }

    /// An agent with `config` (what runs on the host).
    pub fn agent(&self, config: &serde_json::Value) -> Agent {
        let bytes = serde_json::to_vec(config).expect("json");
        let v = HostConfig::parse(&bytes)
            .expect("parse")
            .validate()
            .expect("valid config");
        let activator = Activator::from_config(
            &v.config.activation,
            &v.config.configuration,
            None,
            crate::nix::Nix::default(),
        );
        let sys = Arc::clone(&self.sys);
        let warn_sys = Arc::clone(&self.sys);
        let fault_sys = Arc::clone(&self.sys);
        let root = self.root();
        Agent::new(Parts {
            v,
            store: crate::store::Remote::new(Box::new(FaultyStore {
                inner: self.store(),
                fault: Arc::clone(&self.fault),
                opens: Arc::clone(&self.opens),
            })),
            data: DataDir::open(&root.join("data")).expect("data"),
            activation: Box::new(FakeActivation {
                activator,
                sys: Arc::clone(&sys),
            }),
            watchdog: Box::new(FakeWatchdog::new(sys)),
            clock: Box::new(Arc::clone(&self.clock)),
            run_dir: root.join("run"),
            stop: Arc::default(),
            hooks: Hooks {
                warn: Box::new(move |w| warn_sys.lock().expect("sys").warnings.push(w.into())),
                fault: Box::new(move |p| {
                    let crash = fault_sys.lock().expect("sys").crash_at == Some(p);
                    if crash {
                        panic!("crash at {}", p.name());
                    }
                }),
            },
            fetcher: "in-process (test)".into(),
            trust_dir: None,
        })
    }

    /// The agent of the running system: its host config is the one
    /// `current-system` carries (what a switch and restart give).
    pub fn running_agent(&self) -> Agent {
        let current = self.sys.lock().expect("sys").current();
        let bytes = std::fs::read(current.join("etc/npcnix/config.json")).expect("config");
        self.agent(&serde_json::from_slice(&bytes).expect("json"))
    }

    /// One poll; `Err` is shown with its message.
    pub fn poll(&self, agent: &Agent) -> Result<Outcome, String> {
        agent.poll_once().map_err(|e| format!("{e:#}"))
    }

    /// One poll that crashes at the fault point set in `sys.crash_at`.
    pub fn poll_crashing(&self, agent: &Agent) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.poll_once()));
        assert!(r.is_err(), "the poll was to crash");
        self.sys.lock().expect("sys").crash_at = None;
    }

    pub fn remote_state(&self) -> RemoteState {
        DataDir::open(&self.root().join("data"))
            .expect("data")
            .peek()
            .expect("state")
            .remote("prod")
            .cloned()
            .unwrap_or_default()
    }

    pub fn probation(&self) -> Option<Probation> {
        probation::load(
            &DataDir::open(&self.root().join("data")).expect("data"),
            "prod",
        )
        .expect("probation")
    }

    pub fn events(&self, name: &str) -> Vec<AuditEvent> {
        crate::host::journal::read(&self.root().join("data/audit.jsonl"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.event == name)
            .collect()
    }

    pub fn log(&self) -> Vec<String> {
        self.sys.lock().expect("sys").log.clone()
    }

    pub fn running_marker(&self) -> String {
        Sys::marker(&self.sys.lock().expect("sys").current())
    }

    pub fn boot_marker(&self) -> String {
        Sys::marker(&self.sys.lock().expect("sys").boot_default())
    }
}
