//! ARCHITECTURE.md's layering, checked: each top-level module uses only the
//! modules its row allows, and no two modules (down to `host::agent`,
//! `store::log`, ...) import each other in a circle. Reads the source tree;
//! test code (`tests.rs`, `tests/`, `#[cfg(test)]` sections) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each layer may use (`fsutil`, `buf`, `nix` and `progress` are the
/// shells and helpers ARCHITECTURE.md lists beside the layers).
const ALLOWED: &[(&str, &[&str])] = &[
    ("format", &[]),
    ("verify", &["format"]),
    ("archive", &["format", "buf", "progress", "fsutil"]),
    (
        "store",
        &["format", "verify", "archive", "buf", "fsutil", "progress"],
    ),
    (
        "publish",
        &[
            "format", "verify", "store", "archive", "fsutil", "nix", "progress",
        ],
    ),
    ("witness", &["format", "verify", "store", "fsutil"]),
    (
        "host",
        &[
            "format", "verify", "store", "archive", "fsutil", "nix", "progress", "buf",
        ],
    ),
];

/// Module name (`host`, `host/agent`, `fsutil`) -> the source it is made of.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("read src").flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() {
                if name != "tests" {
                    walk(&p, root, out);
                }
                continue;
            }
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = p.strip_prefix(root).expect("under src");
            let parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
                .filter(|c| c != "mod")
                .collect();
            let key = parts[..parts.len().min(2)].join("/");
            let text = std::fs::read_to_string(&p).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.entry(key).or_default().push_str(&code);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The modules `code` (of module `of`) names through `crate::` or `super::`.
fn uses(of: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let top = of.split('/').next().unwrap_or_default();
    let mut out = BTreeSet::new();
    for (prefix, base) in [("crate::", None), ("super::", Some(top))] {
        for (i, _) in code.match_indices(prefix) {
            let path: Vec<&str> = code[i + prefix.len()..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .collect();
            let mut names: Vec<&str> = base.into_iter().collect();
            names.extend(path.iter().take(2 - names.len()));
            for n in [names.join("/"), names[0].to_owned()] {
                if known.contains(&n) && n != of {
                    out.insert(n);
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let src = sources();
    let known: BTreeSet<String> = src.keys().cloned().collect();
    let mut wrong = Vec::new();
    for (module, code) in &src {
        let top = module.split('/').next().unwrap_or_default();
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == top) else {
            continue;
        };
        for used in uses(module, code, &known) {
            let used_top = used.split('/').next().unwrap_or_default();
            if used_top != top && !allowed.contains(&used_top) {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layering broken (ARCHITECTURE.md): {wrong:?}"
    );
}

#[test]
fn no_two_modules_import_each_other_in_a_circle() {
    let src = sources();
    let known: BTreeSet<String> = src.keys().cloned().collect();
    let graph: BTreeMap<&String, BTreeSet<String>> = src
        .iter()
        .map(|(m, code)| (m, uses(m, code, &known)))
        .collect();
    for start in graph.keys() {
        let mut stack = vec![vec![(*start).clone()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("path");
            for next in graph.get(last).into_iter().flatten() {
                if next == *start {
                    panic!("import circle: {} -> {next}", path.join(" -> "));
                }
                if !path.contains(next) && path.len() < 8 {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push(p);
                }
            }
        }
    }
}
