//! Records the git commit the binary is built from, for `npcnix --version`.
//! `NPCNIX_GIT_COMMIT` wins (the flake sets it: a Nix build has no .git);
//! otherwise `git rev-parse HEAD`, else `unknown`.
//!
//! Also links the `npcnix` binary with packed relative relocations (RELR)
//! on dynamically linked glibc targets; see `relr` below.

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
    relr();
}

/// `-z pack-relative-relocs`: the position-independent binary's 29,000
/// relative relocations go from a 695 KB `.rela.dyn`, which the dynamic
/// loader reads page by page at every start, to an 8 KB `.relr.dyn`. That
/// is 0.9 MiB less peak RSS for every `npcnix` process (measured on a pull:
/// 12.3 -> 11.4 MiB; bench/analysis.md, D100).
///
/// The binary then needs glibc >= 2.36 to run (the linker records
/// `GLIBC_ABI_DT_RELR` as a version requirement, so an older glibc refuses
/// it with a clear error). Since the linker (rust-lld by default on
/// x86_64 since Rust 1.90) does not check that against the glibc it links
/// with, the flag is only passed where it is known to hold:
/// `NPCNIX_RELR=1` (the flake sets it: nixpkgs' glibc is newer), or a
/// native build on a machine whose own glibc is 2.36 or later (`getconf
/// GNU_LIBC_VERSION`). `NPCNIX_RELR=0` turns it off. Never for static
/// builds (`scripts/build-static`: crt-static or musl).
fn relr() {
    println!("cargo:rerun-if-env-changed=NPCNIX_RELR");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let dynamic_glibc = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static");
    let wanted = match var("NPCNIX_RELR").as_str() {
        "1" => true,
        "0" => false,
        _ => var("HOST") == var("TARGET") && native_glibc_at_least(2, 36),
    };
    if dynamic_glibc && wanted {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`, e.g. "glibc
/// 2.36") is at least `major.minor`; false when it cannot be told.
fn native_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
