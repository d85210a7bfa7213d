//! [`Activator`]: the real [`Activation`], `nixos-rebuild` (or the
//! configured program) for flakes, a signed system path's own
//! `switch-to-configuration` in `toplevel` mode.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{realised_system, Activation, ActivationError, Plan, RollbackPlan};
use crate::format::flake_lock::LockError;
use crate::host::config::{ActivationConfig, ActivationMode, ToplevelFallback};
use crate::nix::{Nix, SYSTEM_PROFILE};
use crate::verify::flake_inputs::{self, InputsError};
use crate::verify::Refusal;

/// Largest `flake.lock` read (as the publisher's limit).
const LOCK_MAX_BYTES: u64 = 16 << 20;

/// A read error that the extracted tree itself explains (not the host).
fn is_property_of_the_tree(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
    ) || matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::EISDIR | libc::ENXIO)
    )
}

/// The real activation: `nixos-rebuild` (or the configured program), or
/// a signed system path's own `switch-to-configuration`.
#[derive(Clone, Debug)]
pub struct Activator {
    pub program: String,
    pub mode: ActivationMode,
    pub configuration: String,
    pub extra_substituters: Vec<String>,
    pub extra_trusted_public_keys: Vec<String>,
    /// Mode `toplevel`: the switch-to-configuration action.
    pub toplevel_action: ActivationMode,
    /// Mode `toplevel`: the system profile.
    pub profile: PathBuf,
    pub toplevel_fallback: ToplevelFallback,
    /// Flake mode: switch to the inspected build (`--store-path`).
    pub reuse_build: bool,
    pub nix: Nix,
    /// The PATH the activation program is looked up in (the agent's own;
    /// passed in by the CLI, which reads the environment).
    pub search_path: Option<String>,
}

impl Activator {
    /// `program_override` (the CLI reads it from [`PROGRAM_ENV`]) wins over
    /// `activation.program`.
    pub fn from_config(
        cfg: &ActivationConfig,
        configuration: &str,
        program_override: Option<String>,
        nix: Nix,
    ) -> Activator {
        let program = program_override
            .filter(|p| !p.is_empty())
            .or_else(|| cfg.program.clone())
            .unwrap_or_else(|| "nixos-rebuild".to_owned());
        Activator {
            program,
            mode: cfg.mode,
            configuration: configuration.to_owned(),
            extra_substituters: cfg.extra_substituters.clone(),
            extra_trusted_public_keys: cfg.extra_trusted_public_keys.clone(),
            toplevel_action: cfg.toplevel_action.unwrap_or(ActivationMode::Switch),
            profile: cfg.profile.clone().unwrap_or_else(|| SYSTEM_PROFILE.into()),
            toplevel_fallback: cfg.toplevel_fallback,
            reuse_build: cfg.reuse_build,
            nix,
            search_path: None,
        }
    }

    /// An activator that only undoes releases (what `npcnix probation
    /// expire` needs: everything else comes from the record).
    pub fn for_undo(nix: Nix) -> Activator {
        Activator::for_rollback(
            &RollbackPlan {
                toplevel: false,
                program: String::new(),
                mode: ActivationMode::Switch,
                profile: SYSTEM_PROFILE.into(),
                restore: None,
            },
            nix,
        )
    }

    /// Decides how to apply a release, given the signed toplevels it
    /// carries. `Err` names why a `toplevel` host refuses it.
    pub fn plan(&self, toplevels: Option<&BTreeMap<String, String>>) -> Result<Plan, Refusal> {
        if self.mode != ActivationMode::Toplevel {
            return Ok(Plan::Flake);
        }
        match toplevels.and_then(|t| t.get(&self.configuration)) {
            Some(p) => Ok(Plan::Toplevel(p.clone())),
            None if self.toplevel_fallback == ToplevelFallback::Evaluate => Ok(Plan::Flake),
            None => Err(Refusal::ToplevelMissing(format!(
                "the release signs no system path for configuration {:?}, and this host does not evaluate flakes (activation.toplevel_fallback = refuse)",
                self.configuration
            ))),
        }
    }

    /// The mode whose semantics apply (the action, for toplevel hosts).
    pub fn effective_mode(&self) -> ActivationMode {
        match self.mode {
            ActivationMode::Toplevel => self.toplevel_action,
            m => m,
        }
    }

    /// What the audit log says is run for `plan` (`built`: the inspected
    /// system, switched to as it is with `reuse_build`).
    pub fn describe(&self, plan: &Plan, built: Option<&Path>) -> String {
        match plan {
            Plan::Flake => match built.filter(|_| self.reuse_build) {
                Some(system) => format!(
                    "{} {} --no-reexec --store-path {}",
                    self.program,
                    self.effective_mode().as_arg(),
                    system.display()
                ),
                None => format!("{} {}", self.program, self.effective_mode().as_arg()),
            },
            Plan::Toplevel(p) => format!(
                "{p}/bin/switch-to-configuration {}",
                self.toplevel_action.as_arg()
            ),
        }
    }

    /// The activator that undoes a release applied under `plan` (what the
    /// probation watchdog runs; see [`crate::host::probation`]).
    pub fn for_rollback(plan: &RollbackPlan, nix: Nix) -> Activator {
        Activator {
            program: plan.program.clone(),
            mode: if plan.toplevel {
                ActivationMode::Toplevel
            } else {
                plan.mode
            },
            configuration: String::new(),
            extra_substituters: Vec::new(),
            extra_trusted_public_keys: Vec::new(),
            toplevel_action: plan.mode,
            profile: plan.profile.clone(),
            toplevel_fallback: ToplevelFallback::Refuse,
            reuse_build: false,
            nix,
            search_path: None,
        }
    }

    /// Where `program` resolves, as `Command::new` would find it: a path
    /// with a slash as given, else the first executable file of that name
    /// on `search_path`.
    pub fn resolve_program(&self) -> Result<PathBuf, ActivationError> {
        let bad = |reason: String| ActivationError::Program {
            program: self.program.clone(),
            reason,
        };
        let executable = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if self.program.is_empty() {
            return Err(bad("is empty".into()));
        }
        if self.program.contains('/') {
            let p = PathBuf::from(&self.program);
            return if executable(&p) {
                Ok(p)
            } else {
                Err(bad("is not an executable file".into()))
            };
        }
        let path = self.search_path.as_deref().unwrap_or_default();
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(&self.program))
            .find(|p| executable(p))
            .ok_or_else(|| bad(format!("is not found on PATH ({path})")))
    }

    fn command(&self, args: &[OsString], env: &[(&str, String)]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(args).process_group(0);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn status(&self, mut c: Command, what: String) -> Result<(), ActivationError> {
        let st = c.status().map_err(|source| ActivationError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if st.success() {
            Ok(())
        } else {
            Err(ActivationError::Exit { what, status: st })
        }
    }

    fn switch_to(
        &self,
        system: &Path,
        action: &str,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        let script = system.join("bin/switch-to-configuration");
        let st = Command::new(&script)
            .arg(action)
            .process_group(0)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .map_err(|source| ActivationError::Spawn {
                program: script.display().to_string(),
                source,
            })?;
        if st.success() {
            Ok(())
        } else {
            Err(ActivationError::Exit {
                what: format!("{} {action}", script.display()),
                status: st,
            })
        }
    }

    fn nix_options(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if !self.extra_substituters.is_empty() {
            a.extend(["--option".into(), "extra-substituters".into()]);
            a.push(self.extra_substituters.join(" ").into());
        }
        if !self.extra_trusted_public_keys.is_empty() {
            a.extend(["--option".into(), "extra-trusted-public-keys".into()]);
            a.push(self.extra_trusted_public_keys.join(" ").into());
        }
        a
    }

    /// `nixos-rebuild <mode> --flake <dir>#<configuration> <locked-only>
    /// [--option ...]`. The flake is evaluated with its lock as shipped:
    /// an input the signed `flake.lock` does not pin fails the evaluation
    /// instead of being resolved, differently, on each host (issue 30).
    pub fn args(&self, flake_dir: &Path) -> Vec<OsString> {
        let mut flake = OsString::from(flake_dir.as_os_str());
        flake.push("#");
        flake.push(&self.configuration);
        let mut a: Vec<OsString> = vec![self.mode.as_arg().into(), "--flake".into(), flake];
        a.extend(crate::nix::LOCKED_ONLY.iter().map(OsString::from));
        a.extend(self.nix_options());
        a
    }

    /// `nixos-rebuild <mode> --rollback`: back to the previous generation.
    pub fn rollback_args(&self) -> Vec<OsString> {
        let mode = match self.effective_mode() {
            ActivationMode::Test => "test",
            ActivationMode::Boot => "boot",
            _ => "switch",
        };
        vec![mode.into(), "--rollback".into()]
    }

    /// Runs the activation program with `args` (break-glass `npcnix
    /// activate`).
    pub fn run(&self, args: &[OsString], env: &[(&str, String)]) -> Result<(), ActivationError> {
        let what = format!(
            "{} {}",
            self.program,
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        );
        self.status(self.command(args, env), what)
    }

    /// Substituter URLs name a scheme, and their keys are `name:base64`.
    fn check_substituters(&self) -> Result<(), ActivationError> {
        for s in &self.extra_substituters {
            if !s.contains("://") {
                return Err(ActivationError::Setting(format!(
                    "activation.extra_substituters: {s:?} is not a URL"
                )));
            }
        }
        for k in &self.extra_trusted_public_keys {
            let ok = k.split_once(':').is_some_and(|(name, key)| {
                !name.is_empty()
                    && !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            });
            if !ok {
                return Err(ActivationError::Setting(format!(
                    "activation.extra_trusted_public_keys: {k:?} is not NAME:BASE64"
                )));
            }
        }
        Ok(())
    }
}

impl Activation for Activator {
    fn activator(&self) -> &Activator {
        self
    }

    /// The lock as shipped, and the inputs `flake.nix` names read with
    /// `nix-instantiate` in restricted mode (nothing fetched).
    fn check_inputs(&self, plan: &Plan, flake_dir: &Path) -> Result<(), ActivationError> {
        if *plan != Plan::Flake {
            return Ok(());
        }
        let path = flake_dir.join("flake.lock");
        let lock = match crate::fsutil::read_regular(&path, LOCK_MAX_BYTES) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // What the signed archive holds: a symlink, a directory, an
            // oversized lock. Anything else is this host's trouble (EIO,
            // EMFILE): retried, never held against the release.
            Err(e) if is_property_of_the_tree(&e) => {
                return Err(InputsError::Lock(LockError::Parse(format!(
                    "flake.lock is not a regular file of at most {LOCK_MAX_BYTES} bytes: {e}"
                )))
                .into())
            }
            Err(e) => {
                return Err(ActivationError::System {
                    path,
                    reason: format!("reading it: {e}"),
                })
            }
        };
        let declared = self.nix.declared_inputs(flake_dir)?;
        flake_inputs::judge(lock.as_deref(), Some(&declared))?;
        Ok(())
    }

    /// `nixos-rebuild build` (run in `workdir`, where it leaves its `result`
    /// link), or the realised signed path.
    fn build(
        &self,
        plan: &Plan,
        flake_dir: &Path,
        workdir: &Path,
        env: &[(&str, String)],
    ) -> Result<PathBuf, ActivationError> {
        match plan {
            Plan::Flake => {
                let mut build = self.clone();
                build.mode = ActivationMode::Switch;
                let mut args = build.args(flake_dir);
                args[0] = "build".into();
                let mut c = self.command(&args, env);
                c.current_dir(workdir);
                self.status(c, format!("{} build", self.program))?;
                let result = workdir.join("result");
                std::fs::canonicalize(&result).map_err(|e| ActivationError::System {
                    path: result,
                    reason: format!("{} build left no system here: {e}", self.program),
                })
            }
            Plan::Toplevel(path) => {
                self.nix.realise(
                    path,
                    &self.extra_substituters,
                    &self.extra_trusted_public_keys,
                )?;
                realised_system(Path::new(path))
            }
        }
    }

    fn apply(
        &self,
        plan: &Plan,
        flake_dir: &Path,
        built: Option<&Path>,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        match plan {
            // The system the inspection built and judged: switched to as
            // it is, not evaluated again (one evaluation per release, and
            // what runs is exactly what was inspected).
            Plan::Flake if self.reuse_build && built.is_some() => {
                let mode = self.effective_mode();
                let mut args: Vec<OsString> = vec![mode.as_arg().into()];
                if let Some(system) = built {
                    // --no-reexec: nixos-rebuild-ng would otherwise build a
                    // fresh copy of itself from `<nixpkgs/nixos>` first
                    // (without --flake: whatever configuration.nix the host
                    // has, unsigned). No --option: nothing is built or
                    // substituted; the inspection's build made the closure.
                    args.extend([
                        "--no-reexec".into(),
                        "--store-path".into(),
                        system.as_os_str().to_owned(),
                    ]);
                }
                let c = self.command(&args, env);
                self.status(
                    c,
                    format!("{} {} --store-path", self.program, mode.as_arg()),
                )
            }
            Plan::Flake => {
                let mut flake_self = self.clone();
                flake_self.mode = self.effective_mode();
                let c = flake_self.command(&flake_self.args(flake_dir), env);
                self.status(c, self.program.clone())
            }
            Plan::Toplevel(path) => {
                self.nix.realise(
                    path,
                    &self.extra_substituters,
                    &self.extra_trusted_public_keys,
                )?;
                let system = realised_system(Path::new(path))?;
                if self.toplevel_action != ActivationMode::DryActivate {
                    self.nix.set_profile(&self.profile, path)?;
                }
                self.switch_to(&system, self.toplevel_action.as_arg(), env)
            }
        }
    }

    fn roll_back(&self, plan: &Plan, env: &[(&str, String)]) -> Result<(), ActivationError> {
        if self.effective_mode() == ActivationMode::DryActivate {
            return Ok(());
        }
        match plan {
            Plan::Flake => self.status(
                self.command(&self.rollback_args(), env),
                self.program.clone(),
            ),
            Plan::Toplevel(_) => {
                let previous = self.nix.rollback_profile(&self.profile)?;
                let action = match self.toplevel_action {
                    ActivationMode::Test => "test",
                    // A boot release undone before its reboot: the previous
                    // generation becomes the boot default again.
                    ActivationMode::Boot => "boot",
                    _ => "switch",
                };
                self.switch_to(&previous, action, env)
            }
        }
    }

    fn undo(&self, rollback: &RollbackPlan, env: &[(&str, String)]) -> Result<(), ActivationError> {
        let plan = if rollback.toplevel {
            Plan::Toplevel(String::new())
        } else {
            Plan::Flake
        };
        Activator::for_rollback(rollback, self.nix.clone()).roll_back(&plan, env)
    }

    fn restore(
        &self,
        system: &Path,
        action: &str,
        env: &[(&str, String)],
    ) -> Result<(), ActivationError> {
        self.switch_to(system, action, env)
    }

    fn probe(&self) -> Result<(), ActivationError> {
        match self.mode {
            ActivationMode::Toplevel => {
                self.check_substituters()?;
                self.nix.version()?;
                if !self.profile.parent().is_some_and(Path::is_dir) {
                    return Err(ActivationError::Setting(format!(
                        "activation.profile {}: its directory does not exist",
                        self.profile.display()
                    )));
                }
                // A release without a signed path is evaluated with the
                // program (toplevel_fallback = evaluate).
                if self.toplevel_fallback == ToplevelFallback::Evaluate {
                    self.resolve_program()?;
                }
                Ok(())
            }
            _ => {
                self.check_substituters()?;
                self.resolve_program().map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realised_toplevel_that_is_a_symlink_or_resolves_elsewhere_is_refused() {
        let tmp =
            crate::fsutil::TempDir::new_in(&std::env::temp_dir(), "npcnix-test-").expect("tmp");
        let real = tmp.path().join("system");
        std::fs::create_dir(&real).expect("mkdir");
        let real = std::fs::canonicalize(&real).expect("canon");
        assert_eq!(realised_system(&real).expect("a plain directory"), real);
        let link = real.with_file_name("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(realised_system(&link).is_err(), "symlinked store path");
        let file = real.with_file_name("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(realised_system(&file).is_err(), "a file");
        // A path through a symlinked parent resolves elsewhere.
        let via = link.join(".");
        assert!(realised_system(&via).is_err(), "resolves elsewhere");
    }

    fn activator(program: &str, path: Option<&str>) -> Activator {
        let mut a = Activator::from_config(
            &ActivationConfig::default(),
            "web",
            Some(program.into()),
            Nix::default(),
        );
        a.search_path = path.map(str::to_owned);
        a
    }

    /// A new system whose `activation.program` is mistyped would confirm
    /// and then fail every later release: the probe finds it first.
    #[test]
    fn mistyped_activation_program_fails_the_probe() {
        let e = activator("nixos-rebiuld", Some("/usr/bin:/bin"))
            .probe()
            .expect_err("not on PATH");
        assert!(
            e.to_string()
                .contains("\"nixos-rebiuld\" is not found on PATH"),
            "{e}"
        );
        let e = activator("/nonexistent/nixos-rebuild", None)
            .probe()
            .expect_err("no such file");
        assert!(e.to_string().contains("is not an executable file"), "{e}");
        // A directory on PATH named like the program is not a program.
        activator("sh", Some("/nonexistent:/bin:/usr/bin"))
            .probe()
            .expect("sh is on PATH");
        activator("/bin/sh", None).probe().expect("absolute");
    }

    #[test]
    fn malformed_substituter_settings_fail_the_probe() {
        let mut a = activator("/bin/sh", None);
        a.extra_substituters = vec!["cache.example.org".into()];
        assert!(a.probe().is_err());
        a.extra_substituters = vec!["https://cache.example.org".into()];
        a.extra_trusted_public_keys = vec!["no-colon".into()];
        assert!(a.probe().is_err());
        a.extra_trusted_public_keys = vec!["cache.example.org-1:abc=".into()];
        a.probe().expect("well-formed");
    }
}
