//! Records the git commit the binary is built from, for `npcnix --version`.
//! `NPCNIX_GIT_COMMIT` wins (the flake sets it: a Nix build has no .git);
//! otherwise `git rev-parse HEAD`, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=NPCNIX_GIT_COMMIT");
    let commit = std::env::var("NPCNIX_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: HEAD itself and the ref it points to.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                println!("cargo:rerun-if-changed={dir}/HEAD");
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or(dir);
                    println!("cargo:rerun-if-changed={common}/{r}");
                    println!("cargo:rerun-if-changed={common}/packed-refs");
                }
            }
            git(&["rev-parse", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=NPCNIX_GIT_COMMIT={commit}");
}
