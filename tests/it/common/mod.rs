//! Test kit: a scratch directory with a directory store, a host data dir,
//! keys and flakes, and a runner for the real `npcnix` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use npcnix::format::bundle::Bundle;
use npcnix::format::keys::SecretKey;
use npcnix::format::statement::{ArchiveRef, Digest, RemoteName, Statement, STATEMENT_TYPE};
use npcnix::fsutil::TempDir;
use npcnix::publish;

pub const BIN: &str = env!("CARGO_BIN_EXE_npcnix");

/// What `nix flake lock` writes for a flake without inputs.
pub const EMPTY_FLAKE_LOCK: &str =
    "{\n  \"nodes\": {\n    \"root\": {}\n  },\n  \"root\": \"root\",\n  \"version\": 7\n}\n";

pub struct Kit {
    tmp: TempDir,
}

/// Result of running the CLI.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a refusal by verification: exit 3 and the check named on
    /// stderr in one line.
    #[track_caller]
    pub fn rejected(self, check: &str) -> Run {
        assert_eq!(
            self.code, 3,
            "expected exit 3 ({check})\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(&format!("({check})")),
            "stderr does not name the check {check:?}: {}",
            self.stderr
        );
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "expected one line on stderr: {}",
            self.stderr
        );
        self
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        system::kill_pending(self.tmp.path());
    }
}

impl Kit {
    pub fn new() -> Kit {
        let base = std::env::temp_dir().join("npcnix-tests");
        fs::create_dir_all(&base).expect("temp base");
        Kit {
            tmp: TempDir::new_in(&base, "kit-").expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// URL of remote `name` in the kit's directory store.
    pub fn url(&self, name: &str) -> String {
        format!("file://{}", self.path("store").join(name).display())
    }

    pub fn store_path(&self, remote: &str, key: &str) -> PathBuf {
        self.path("store").join(remote).join(key)
    }

    pub fn cmd(&self) -> Command {
        let sys = system::install(self.tmp.path());
        let mut c = Command::new(BIN);
        c.env("NPCNIX_SYSTEMD_RUN", sys.join("systemd-run"))
            .env("NPCNIX_SYSTEMCTL", sys.join("systemctl"))
            .env("NPCNIX_TEST_RUN_DIR", self.path("run"))
            .env("NPCNIX_DATA_DIR", self.data_dir())
            .env("NPCNIX_TRUST_DIR", self.path("trust"))
            .env_remove("NPCNIX_PASSPHRASE")
            .env_remove("NPCNIX_PROGRESS")
            .env_remove("NPCNIX_RETRIES")
            // Reboot windows are local time: the machine's zone must not
            // decide a test (a test sets TZ itself to check zones).
            .env("TZ", "UTC")
            .env_remove("RUST_LOG")
            .current_dir(self.tmp.path())
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("run npcnix"))
    }

    /// An unencrypted key pair; returns (secret key path, public key path).
    pub fn keygen(&self, name: &str) -> (String, String) {
        let base = self.path(name);
        self.run(&[
            "keygen",
            "--unencrypted",
            "--out",
            base.to_str().expect("utf8"),
        ])
        .ok();
        (
            format!("{}.key", base.display()),
            format!("{}.pub", base.display()),
        )
    }

    pub fn secret_key(&self, path: &str) -> SecretKey {
        SecretKey::parse(&fs::read_to_string(path).expect("key"), None).expect("parse key")
    }

    /// A small flake (no inputs, and the lock `nix flake lock` writes for
    /// that); `marker` makes its content (and hash) distinct.
    pub fn flake(&self, name: &str, marker: &str) -> PathBuf {
        let dir = self.path(name);
        fs::create_dir_all(dir.join("hosts")).expect("mkdir");
        fs::write(
            dir.join("flake.nix"),
            "{ outputs = { self }: { nixosConfigurations = { }; }; }\n",
        )
        .expect("write");
        fs::write(dir.join("flake.lock"), EMPTY_FLAKE_LOCK).expect("write");
        fs::write(dir.join("hosts/web.nix"), format!("# {marker}\n{{ }}\n")).expect("write");
        fs::write(dir.join("deploy.sh"), "#!/bin/sh\necho hi\n").expect("write");
        fs::set_permissions(dir.join("deploy.sh"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink("hosts/web.nix", dir.join("default-host.nix")).ok();
        dir
    }

    pub fn publish(&self, remote: &str, key: &str, src: &Path, extra: &[&str]) -> Run {
        let url = self.url(remote);
        let mut args = vec![
            "publish",
            "--remote",
            &url,
            "--key",
            key,
            "--src",
            src.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn pull(&self, remote: &str, pubkey: &str, dst: &str, extra: &[&str]) -> Run {
        let url = self.url(remote);
        let dst = self.path(dst);
        let mut args = vec![
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            pubkey,
            "--dst",
            dst.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// state.json bytes (None if absent), to prove a refusal left it alone.
    /// A missing file reads as the empty state npcnix writes on first use.
    pub fn state_bytes(&self) -> Vec<u8> {
        fs::read(self.data_dir().join("state.json"))
            .unwrap_or_else(|_| npcnix::host::state::HostState::default().to_bytes())
    }

    /// Asserts that `dst` does not exist and the data dir's temp space holds
    /// nothing (no leftovers of a refused release).
    #[track_caller]
    pub fn assert_nothing_left(&self, dst: &str) {
        assert!(!self.path(dst).exists(), "{dst} was created");
        let tmp = self.data_dir().join("tmp");
        if tmp.exists() {
            let left: Vec<_> = fs::read_dir(&tmp).expect("tmp").collect();
            assert!(left.is_empty(), "temp space not cleaned: {left:?}");
        }
    }

    /// Writes a bundle as `latest` (and `releases/<v>`) of `remote`, bypassing
    /// the publisher's checks: what an attacker with store access can do.
    pub fn put_raw(&self, remote: &str, version: u64, bundle: &[u8]) {
        let rel = self.store_path(remote, &format!("releases/{version:020}"));
        fs::create_dir_all(rel.parent().expect("parent")).expect("mkdir");
        fs::write(&rel, bundle).expect("write");
        fs::write(self.store_path(remote, "latest"), bundle).expect("write");
    }

    /// Copies an archive into a remote's store.
    pub fn put_archive(&self, remote: &str, archive: &Path) -> ArchiveRef {
        let aref = publish::hash_file(archive).expect("hash");
        let p = self.store_path(remote, &aref.object_key());
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::copy(archive, p).expect("copy");
        aref
    }

    /// Packs a flake into the kit dir and returns the archive path.
    pub fn pack(&self, src: &Path, out: &str) -> PathBuf {
        let out = self.path(out);
        self.run(&[
            "pack",
            "--src",
            src.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ])
        .ok();
        out
    }
}

/// A statement with sensible defaults, to be adjusted by a test.
pub fn statement(
    remote: &str,
    version: u64,
    previous: Option<Digest>,
    archive: ArchiveRef,
    created: u64,
) -> Statement {
    Statement {
        kind: STATEMENT_TYPE.to_owned(),
        remote: RemoteName::new(remote).expect("remote"),
        version,
        previous,
        archive,
        created,
        expires: None,
        source: None,
        toplevels: None,
        decommission: None,
        rollout: None,
    }
}

/// Signs a statement with npcnix's own signer and wraps it in a bundle.
pub fn signed_bundle(st: &Statement, sk: &SecretKey) -> Vec<u8> {
    let bytes = st.to_bytes();
    let sig = publish::sign_statement(st, &bytes, sk);
    Bundle {
        timestamp: None,
        statement: bytes,
        signatures: vec![sig],
    }
    .encode()
}

pub fn now() -> u64 {
    npcnix::fsutil::now_unix()
}

/// Whether an external tool is on PATH; if not, the calling test is
/// skipped (see [`skip`]): the caller returns at once when this is false.
#[track_caller]
pub fn require_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        skip(&format!(
            "{name} is not installed (bash scripts/test or .ci/run installs it)"
        ));
    }
    found
}
pub mod host;
pub mod httpd;
pub mod s3;
pub mod system;

/// Where [`skip`] records skipped tests, one `TEST<TAB>REASON` line each;
/// `scripts/test` sets it and counts the lines in its closing summary.
pub const SKIP_LOG_ENV: &str = "NPCNIX_SKIP_LOG";

/// Skips a test that cannot run on this machine. The test harness would
/// report the returning test as `ok`, so the skip is recorded where
/// `scripts/test` counts it (`$NPCNIX_SKIP_LOG`) and shown in its closing
/// summary as skipped, never as passed. In CI (`CI=true`) a skip is a
/// failure. The caller returns right after calling this.
#[track_caller]
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run in CI: {reason}");
    }
    // libtest runs each test on a thread named after it.
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("(test at {})", std::panic::Location::caller()));
    let reason = reason.replace(['\n', '\t'], " ");
    eprintln!("\n!!!!! SKIPPING {test}: {reason}; this test did NOT run !!!!!\n");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV).filter(|v| !v.is_empty()) {
        use std::io::Write;
        // One short append per skip (O_APPEND): lines from parallel tests
        // do not interleave. A log that cannot be written fails the test,
        // so a skip is never lost.
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("skip log {}: {e}", Path::new(&log).display()));
        f.write_all(format!("{test}\t{reason}\n").as_bytes())
            .unwrap_or_else(|e| panic!("skip log {}: {e}", Path::new(&log).display()));
    }
}

/// Polls `f` every 50 ms until it holds; fails the test past `deadline`.
/// Returns how long it took.
pub fn wait_for(
    what: &str,
    deadline: std::time::Duration,
    mut f: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    start.elapsed()
}
