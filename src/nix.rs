//! Signed system closures: publishers build each NixOS configuration's
//! `config.system.build.toplevel` and sign the resulting store paths in the
//! statement (`toplevels`); hosts in `toplevel` mode never evaluate Nix —
//! they realise exactly the signed path from their substituters, point the
//! system profile at it and run its `bin/switch-to-configuration`.
//!
//! The store path is the identity: Nix itself checks that what a substituter
//! serves for that path matches the narHash in a narinfo signed by a key in
//! `trusted-public-keys`, so a cache serving a different closure is refused
//! by Nix, and a statement can only name paths its signers chose.
//!
//! This module is a thin shell around the `nix`, `nix-store` and `nix-env`
//! commands (found on PATH, or in `NPCNIX_NIX_BIN_DIR`).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the directory holding `nix`, `nix-store` and
/// `nix-env` (default: PATH).
pub const NIX_BIN_DIR_ENV: &str = "NPCNIX_NIX_BIN_DIR";
/// The NixOS system profile.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Unexpected(String),
}

/// Flags for evaluating a flake with exactly the lock it ships: an input
/// its `flake.lock` does not pin is an error, not a lock entry made on the
/// spot for whatever the input's branch points at today (issue 30); and
/// evaluation is pure. Placed after the subcommand (`nix build`,
/// `nixos-rebuild switch`). Not `--no-write-lock-file`: Nix only applies
/// `--no-update-lock-file` when it may write the lock, so the two together
/// evaluate an unlocked input after all (seen with Nix 2.8, D117). Nix
/// fetches the missing input before it refuses, which is why hosts judge
/// the lock themselves first (`verify::flake_inputs`).
pub const LOCKED_ONLY: [&str; 4] = ["--no-update-lock-file", "--option", "pure-eval", "true"];

/// Runs the Nix commands, from `bin_dir` if set (else from PATH).
#[derive(Clone, Debug, Default)]
pub struct Nix {
    pub bin_dir: Option<PathBuf>,
}

impl Nix {
    pub fn new(bin_dir: Option<PathBuf>) -> Nix {
        Nix { bin_dir }
    }

    /// Whether the program `name` can be run (in `bin_dir`, or on PATH):
    /// lets a caller skip work only Nix would use (the pack's flake check
    /// unpacks the archive for it) without first paying for it.
    pub fn finds(&self, name: &str) -> bool {
        let is_exe = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        match &self.bin_dir {
            Some(d) => is_exe(&d.join(name)),
            None => std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| is_exe(&d.join(name)))),
        }
    }

    fn program(&self, name: &str) -> String {
        match &self.bin_dir {
            Some(d) => d.join(name).display().to_string(),
            None => name.to_owned(),
        }
    }

    fn run(&self, name: &str, args: &[String], what: &str) -> Result<Output, NixError> {
        let prog = self.program(name);
        let out = Command::new(&prog)
            .args(args)
            .env_remove("NPCNIX_PASSPHRASE")
            .output()
            .map_err(|source| NixError::Spawn {
                program: prog.clone(),
                source,
            })?;
        checked(out, what)
    }

    fn flake_args() -> Vec<String> {
        vec![
            "--extra-experimental-features".into(),
            "nix-command flakes".into(),
        ]
    }

    /// The inputs `flake.nix` (in `dir`) names: its `inputs` attributes and
    /// the arguments of its `outputs` function (an input named only there
    /// comes from the registry). Evaluated in restricted mode, against no
    /// store, with no experimental features (no `builtins.getFlake`) and no
    /// search path: only files under `dir` can be read and no URI fetched,
    /// so reading a release's `flake.nix` fetches nothing, whatever it
    /// says. At most [`EVAL_TIMEOUT`].
    pub fn declared_inputs(&self, dir: &Path) -> Result<Vec<String>, NixError> {
        let mut include = std::ffi::OsString::from("flake=");
        include.push(dir.as_os_str());
        let prog = self.program("nix-instantiate");
        let mut c = Command::new(&prog);
        c.args(["--eval", "--strict", "--json"])
            .args(["--option", "store", "dummy://"])
            .args(["--option", "restrict-eval", "true"])
            .args(["--option", "allowed-uris", ""])
            .args(["--option", "experimental-features", ""])
            .args(["--option", "nix-path", ""])
            .arg("-I")
            .arg(include)
            .args(["--expr", DECLARED_INPUTS])
            .env_remove("NIX_PATH")
            .env_remove("NPCNIX_PASSPHRASE");
        let out = output_within(c, &prog, EVAL_TIMEOUT)?;
        let out = checked(out, "evaluating flake.nix's inputs")?;
        let mut names: Vec<String> = serde_json::from_slice(&out.stdout)
            .map_err(|e| NixError::Unexpected(format!("nix-instantiate output: {e}")))?;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Nix's own verdict on the lock of the flake in `dir`: it computes the
    /// lock from `flake.nix` with `--no-update-lock-file`, which fails when
    /// an entry no longer matches what `flake.nix` says (an input whose URL
    /// changed under the same name). An up-to-date lock needs nothing
    /// fetched; a stale one is fetched here, on the publisher (at most one
    /// attempt), never on a host. `store` is a private directory for a
    /// throw-away Nix store, so no daemon or writable `/nix` is needed.
    pub fn lock_is_current(&self, dir: &Path, store: &Path) -> Result<(), NixError> {
        let prog = self.program("nix");
        let mut c = Command::new(&prog);
        c.args(Self::flake_args())
            .arg("--store")
            .arg(store)
            .args(["--option", "download-attempts", "1"])
            .args(["--option", "substituters", ""])
            .args(["flake", "metadata", "--json", "--no-update-lock-file"])
            .arg(format!("path:{}", dir.display()))
            .env_remove("NPCNIX_PASSPHRASE");
        let out = output_within(c, &prog, LOCK_CHECK_TIMEOUT)?;
        checked(out, "checking flake.lock against flake.nix with Nix").map(|_| ())
    }

    /// The names of a flake's `nixosConfigurations`.
    pub fn configurations(
        &self,
        flake_dir: &Path,
        extra: &[String],
    ) -> Result<Vec<String>, NixError> {
        let mut a = Self::flake_args();
        a.extend(extra.iter().cloned());
        a.extend(["eval".into()]);
        a.extend(LOCKED_ONLY.iter().map(|s| s.to_string()));
        a.extend([
            "--json".into(),
            format!("path:{}#nixosConfigurations", flake_dir.display()),
            "--apply".into(),
            "builtins.attrNames".into(),
        ]);
        let out = self.run("nix", &a, "nix eval nixosConfigurations")?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| NixError::Unexpected(format!("nix eval output: {e}")))
    }

    /// Builds `nixosConfigurations.<name>.config.system.build.toplevel` and
    /// returns its output path.
    pub fn build(
        &self,
        flake_dir: &Path,
        name: &str,
        extra: &[String],
    ) -> Result<String, NixError> {
        let mut a = Self::flake_args();
        a.extend(extra.iter().cloned());
        a.extend(["build".into()]);
        a.extend(LOCKED_ONLY.iter().map(|s| s.to_string()));
        a.extend([
            "--no-link".into(),
            "--json".into(),
            format!(
                "path:{}#nixosConfigurations.\"{name}\".config.system.build.toplevel",
                flake_dir.display()
            ),
        ]);
        let out = self.run("nix", &a, &format!("nix build of configuration {name}"))?;
        #[derive(serde::Deserialize)]
        struct Built {
            outputs: BTreeMap<String, String>,
        }
        let built: Vec<Built> = serde_json::from_slice(&out.stdout)
            .map_err(|e| NixError::Unexpected(format!("nix build output: {e}")))?;
        built
            .into_iter()
            .next()
            .and_then(|b| b.outputs.get("out").cloned())
            .filter(|p| p.starts_with("/nix/store/"))
            .ok_or_else(|| {
                NixError::Unexpected(format!("nix build of {name} reported no output path"))
            })
    }

    /// `nix copy --to <url> <paths>`: push closures to a binary cache.
    pub fn copy_to(&self, url: &str, paths: &[String], extra: &[String]) -> Result<(), NixError> {
        let mut a = Self::flake_args();
        a.extend(extra.iter().cloned());
        a.extend(["copy".into(), "--to".into(), url.to_owned()]);
        a.extend(paths.iter().cloned());
        self.run("nix", &a, "nix copy").map(|_| ())
    }

    /// Realises exactly `path` from the configured substituters (Nix checks the
    /// narinfo signatures and the NAR hash), returning once it is valid locally.
    pub fn realise(
        &self,
        path: &str,
        substituters: &[String],
        trusted_keys: &[String],
    ) -> Result<(), NixError> {
        let mut a: Vec<String> = vec!["--realise".into(), path.to_owned()];
        if !substituters.is_empty() {
            a.extend([
                "--option".into(),
                "extra-substituters".into(),
                substituters.join(" "),
            ]);
        }
        if !trusted_keys.is_empty() {
            a.extend([
                "--option".into(),
                "extra-trusted-public-keys".into(),
                trusted_keys.join(" "),
            ]);
        }
        self.run("nix-store", &a, &format!("realising {path}"))
            .map(|_| ())
    }

    /// `nix store diff-closures OLD NEW`: the packages whose versions or
    /// sizes differ between two closures, as Nix words it (both paths must
    /// be valid in the local store).
    pub fn diff_closures(&self, old: &str, new: &str) -> Result<String, NixError> {
        let mut a = Self::flake_args();
        a.extend([
            "store".into(),
            "diff-closures".into(),
            old.to_owned(),
            new.to_owned(),
        ]);
        let out = self.run("nix", &a, "nix store diff-closures")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `nix-store --version`: the Nix commands resolve and run (what a
    /// `toplevel` host's next release needs; checked when a probation is
    /// confirmed).
    pub fn version(&self) -> Result<String, NixError> {
        let out = self.run("nix-store", &["--version".into()], "nix-store --version")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Points `profile` at `path` (a new generation).
    pub fn set_profile(&self, profile: &Path, path: &str) -> Result<(), NixError> {
        self.run(
            "nix-env",
            &[
                "-p".into(),
                profile.display().to_string(),
                "--set".into(),
                path.to_owned(),
            ],
            "setting the system profile",
        )
        .map(|_| ())
    }

    /// Rolls `profile` back one generation and returns the path it now points at.
    pub fn rollback_profile(&self, profile: &Path) -> Result<PathBuf, NixError> {
        self.run(
            "nix-env",
            &[
                "-p".into(),
                profile.display().to_string(),
                "--rollback".into(),
            ],
            "rolling back the system profile",
        )?;
        std::fs::canonicalize(profile)
            .map_err(|e| NixError::Unexpected(format!("reading {}: {e}", profile.display())))
    }
}

/// `out` if its command succeeded, else the failure with the end of its
/// stderr.
fn checked(out: Output, what: &str) -> Result<Output, NixError> {
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    Err(NixError::Failed {
        what: what.to_owned(),
        status: out.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// Longest evaluation of a `flake.nix`'s input names.
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest `nix flake metadata` of a publisher's lock check.
pub const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `c` (program `prog`) to completion, killing it past `limit`.
fn output_within(mut c: Command, prog: &str, limit: Duration) -> Result<Output, NixError> {
    use std::io::Read;
    let spawn_err = |source| NixError::Spawn {
        program: prog.to_owned(),
        source,
    };
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                // Bounded: a runaway child cannot fill root's memory.
                let _ = r.by_ref().take(OUTPUT_MAX).read_to_end(&mut buf);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(spawn_err)? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NixError::Failed {
                what: prog.to_owned(),
                status: "killed".into(),
                stderr: format!("no answer within {} s", limit.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Most output kept from a Nix command (the rest is read and dropped).
const OUTPUT_MAX: u64 = 4 << 20;

/// The names `flake.nix` (at `<flake>`) gives its inputs.
const DECLARED_INPUTS: &str = "let f = import <flake/flake.nix>; in \
builtins.attrNames (f.inputs or {}) ++ builtins.attrNames (builtins.functionArgs f.outputs)";

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_only_an_executable_file_in_the_bin_dir() {
        let dir =
            crate::fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-test-").expect("tmp");
        let nix = Nix::new(Some(dir.path().to_path_buf()));
        assert!(!nix.finds("nix-instantiate"), "an empty dir has no Nix");
        let prog = dir.path().join("nix-instantiate");
        std::fs::write(&prog, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(!nix.finds("nix-instantiate"), "not executable");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(nix.finds("nix-instantiate"));
        std::fs::create_dir(dir.path().join("nix")).expect("mkdir");
        assert!(!nix.finds("nix"), "a directory is not a program");
    }
}
