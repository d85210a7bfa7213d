//! The README's Quickstart works as written, for a normal user: the test
//! runs the commands between `<!-- quickstart:begin` and
//! `<!-- quickstart:end -->` in README.md itself (so the two cannot drift),
//! with bash, as an unprivileged user: as root (CI) it drops to `nobody`
//! with a fresh HOME and TMPDIR, so a command that needs root, or writes
//! to `/var/lib/npcnix`, `/srv` or HOME, fails here as it would for a
//! newcomer. Also the data-dir defaults a normal user gets.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{skip, Run, BIN, EMPTY_FLAKE_LOCK};
use npcnix::fsutil::TempDir;

const BEGIN: &str = "<!-- quickstart:begin";
const END: &str = "<!-- quickstart:end -->";

/// The lines of every ```sh block between the README's quickstart markers.
fn quickstart_script() -> String {
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let start = readme
        .find(BEGIN)
        .expect("README.md has no quickstart:begin marker");
    let end = readme[start..]
        .find(END)
        .map(|e| start + e)
        .expect("README.md has no quickstart:end marker after quickstart:begin");
    let mut script = String::new();
    let mut in_sh = false;
    for line in readme[start..end].lines() {
        match (in_sh, line.trim_end()) {
            (false, "```sh") => in_sh = true,
            (true, "```") => in_sh = false,
            (true, l) => {
                script.push_str(l);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(!in_sh, "unterminated ```sh block in the README quickstart");
    script
}

/// A throw-away place for an unprivileged user: `home/`, `tmp/` and a
/// copy of the npcnix binary in `bin/`, all owned by that user.
struct Sandbox {
    tmp: TempDir,
    /// (uid, gid) to drop to, when the test runs as root.
    user: Option<(u32, u32)>,
}

impl Sandbox {
    /// None (after recording a skip; a failure in CI) when the test runs as
    /// root on a machine without the user `nobody`.
    fn new() -> Option<Sandbox> {
        let user = if npcnix::fsutil::current_uid().expect("uid") == 0 {
            let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
            let nobody = passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[0] == "nobody")
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten()
            });
            match nobody {
                Some(ids) => Some(ids),
                None => {
                    skip("running as root, and there is no user nobody to run the quickstart as");
                    return None;
                }
            }
        } else {
            None
        };
        let base = std::env::temp_dir().join("npcnix-tests");
        fs::create_dir_all(&base).expect("temp base");
        let sb = Sandbox {
            tmp: TempDir::new_in(&base, "quickstart-").expect("temp dir"),
            user,
        };
        for d in ["home", "tmp", "bin"] {
            fs::create_dir(sb.path(d)).expect("mkdir");
        }
        // A copy, so the binary is reachable whatever the permissions on
        // the path to the build's target directory.
        fs::copy(BIN, sb.path("bin/npcnix")).expect("copy npcnix");
        fs::set_permissions(sb.path("bin/npcnix"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        sb.give_away(sb.tmp.path());
        Some(sb)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Hands `path` and everything below it to the unprivileged user.
    fn give_away(&self, path: &Path) {
        let Some((uid, gid)) = self.user else { return };
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
        if path.is_dir() && !path.is_symlink() {
            for e in fs::read_dir(path).expect("read_dir") {
                self.give_away(&e.expect("entry").path());
            }
        }
    }

    /// `program` as the unprivileged user, with nothing of this process's
    /// environment: PATH with the npcnix copy first, HOME and TMPDIR in
    /// the sandbox, working directory HOME.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    self.path("bin").display()
                ),
            )
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"))
            .env("LC_ALL", "C.UTF-8")
            .current_dir(self.path("home"))
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            // std drops the supplementary groups too when it sets the uid.
            c.uid(uid).gid(gid);
        }
        c
    }

    fn npcnix(&self, args: &[&str], env: &[(&str, &Path)]) -> Run {
        let mut c = self.command(&self.path("bin/npcnix").display().to_string());
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(output(&mut c))
    }

    /// A key pair and version 1 of a small flake on a `file://` store, all
    /// in `dir`; returns the store URL and the public key path.
    fn publish_one(&self, dir: &str) -> (String, String) {
        let d = self.path(dir);
        fs::create_dir_all(d.join("flake")).expect("mkdir");
        fs::write(d.join("flake/flake.nix"), "{ outputs = { self }: { }; }\n").expect("write");
        fs::write(d.join("flake/flake.lock"), EMPTY_FLAKE_LOCK).expect("write");
        self.give_away(&d);
        let key = d.join("k");
        let key = key.to_str().expect("utf8");
        self.npcnix(&["keygen", "--unencrypted", "--out", key], &[])
            .ok();
        let url = format!("file://{}", d.join("store/dev").display());
        self.npcnix(
            &[
                "publish",
                "--remote",
                &url,
                "--key",
                &format!("{key}.key"),
                "--src",
                d.join("flake").to_str().expect("utf8"),
            ],
            &[],
        )
        .ok();
        (url, format!("{key}.pub"))
    }
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("prefix").display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn readme_quickstart_runs_as_written_for_an_unprivileged_user() {
    let script = quickstart_script();
    for needed in ["npcnix keygen", "npcnix publish", "npcnix pull"] {
        assert!(
            script.contains(needed),
            "the README quickstart no longer runs `{needed}`:\n{script}"
        );
    }
    let Some(sb) = Sandbox::new() else { return };
    // The guard makes a quickstart that silently ran as root fail.
    let guarded = format!(
        "if [ \"$(id -u)\" = 0 ]; then echo 'quickstart test: running as root' >&2; exit 99; fi\n{script}"
    );
    let run = Run::from(
        sb.command("bash")
            .args(["-euo", "pipefail", "-c", &guarded])
            .output()
            .expect("run bash"),
    );
    assert_eq!(
        run.code, 0,
        "the README quickstart failed for an unprivileged user\nscript:\n{script}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("verified dev version 1"),
        "pull did not report the verified version:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("services.nginx.enable = true"),
        "the checkout does not show the published flake:\n{}",
        run.stdout
    );

    // Everything happened in the one throw-away directory under TMPDIR.
    let made: Vec<PathBuf> = fs::read_dir(sb.path("tmp"))
        .expect("tmp")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(made.len(), 1, "expected one throw-away dir: {made:?}");
    let qs = &made[0];
    for f in [
        "ci-dev.key",
        "ci-dev.pub",
        "flake/flake.nix",
        "checkout/flake.nix",
        "checkout/hosts/web.nix",
        "host-state/state.json",
        "host-state/audit.jsonl",
        "store/dev/latest",
    ] {
        assert!(qs.join(f).is_file(), "the quickstart did not create {f}");
    }
    let key_mode = fs::metadata(qs.join("ci-dev.key"))
        .expect("key")
        .permissions();
    assert_eq!(key_mode.mode() & 0o777, 0o600, "secret key mode");
    assert_eq!(
        files_under(&sb.path("home")),
        Vec::<String>::new(),
        "the quickstart wrote to HOME"
    );
    if let Some((uid, _)) = sb.user {
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(qs.join("host-state/state.json"))
            .expect("state")
            .uid();
        assert_eq!(
            owner, uid,
            "the quickstart did not run as the unprivileged user"
        );
    }
}

#[test]
fn pull_as_a_normal_user_keeps_state_under_xdg_state_home_or_home() {
    let Some(sb) = Sandbox::new() else { return };
    let (url, public) = sb.publish_one("pub");
    let pull = |dst: &str, env: &[(&str, &Path)]| {
        let dst = sb.path(dst);
        sb.npcnix(
            &[
                "pull",
                "--remote",
                &url,
                "--trusted-key",
                &public,
                "--dst",
                dst.to_str().expect("utf8"),
            ],
            env,
        )
    };
    // No data dir given, no XDG_STATE_HOME: ~/.local/state/npcnix.
    pull("out1", &[]).ok();
    assert!(
        sb.path("home/.local/state/npcnix/state.json").is_file(),
        "no state under ~/.local/state/npcnix: {:?}",
        files_under(&sb.path("home"))
    );
    // XDG_STATE_HOME wins over HOME.
    fs::create_dir(sb.path("xdg")).expect("mkdir");
    sb.give_away(&sb.path("xdg"));
    let xdg = sb.path("xdg");
    pull("out2", &[("XDG_STATE_HOME", &xdg)]).ok();
    assert!(
        sb.path("xdg/npcnix/state.json").is_file(),
        "no state under $XDG_STATE_HOME/npcnix"
    );
    // A relative XDG_STATE_HOME is invalid (XDG spec): HOME's default again.
    let out = pull("out3", &[("XDG_STATE_HOME", Path::new("relative"))]).ok();
    assert!(out.stdout.contains("version 1"), "{}", out.stdout);
    assert!(!sb.path("home/relative").exists());
}

#[test]
fn pull_into_a_data_dir_it_cannot_write_names_data_dir_and_the_variable() {
    let Some(sb) = Sandbox::new() else { return };
    let (url, public) = sb.publish_one("pub");
    let locked = sb.path("locked");
    fs::create_dir(&locked).expect("mkdir");
    sb.give_away(&locked);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).expect("chmod");
    let data = locked.join("data");
    let dst = sb.path("out");
    let run = sb.npcnix(
        &[
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &public,
            "--dst",
            dst.to_str().expect("utf8"),
        ],
        &[("NPCNIX_DATA_DIR", &data)],
    );
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    for needed in ["Permission denied", "--data-dir", "NPCNIX_DATA_DIR"] {
        assert!(
            run.stderr.contains(needed),
            "the error does not say {needed:?}: {}",
            run.stderr
        );
    }
    assert!(!dst.exists(), "pull created its destination");
    // Without HOME or XDG_STATE_HOME there is no default for a normal
    // user: a clear error, not a guess.
    let mut c = sb.command(&sb.path("bin/npcnix").display().to_string());
    c.env_remove("HOME").args([
        "pull",
        "--remote",
        &url,
        "--trusted-key",
        &public,
        "--dst",
        dst.to_str().expect("utf8"),
    ]);
    let run = Run::from(output(&mut c));
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("--data-dir") && run.stderr.contains("NPCNIX_DATA_DIR"),
        "{}",
        run.stderr
    );
}

/// Runs `c`, retrying while its program is "text file busy": the sandbox's
/// copy of the binary was open for writing when another test thread
/// forked, and that child holds the descriptor until it execs.
fn output(c: &mut Command) -> std::process::Output {
    for _ in 0..100 {
        match c.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.expect("run npcnix"),
        }
    }
    c.output().expect("run npcnix (text file busy for 2 s)")
}
