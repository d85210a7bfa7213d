//! What a release changes, file by file (issue 34): the members of two
//! flake archives compared (added, removed, changed, with sizes), and a
//! unified patch of a changed text file. Pure: the listings are made by
//! [`crate::archive::listing`] from archives whose hashes were checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::archive::listing::Listed;

/// How a path differs between two archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Added,
    Removed,
    /// Other content, another kind of member, another symlink target, or
    /// the executable bit.
    Changed,
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub path: String,
    pub change: ChangeKind,
    /// File size before and after (`None`: not a regular file there).
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
    /// What changed besides the content (`mode`, `kind`, `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn size(l: &Listed) -> Option<u64> {
    match l {
        Listed::File { size, .. } => Some(*size),
        _ => None,
    }
}

/// Every path that differs, in path order.
pub fn diff(old: &BTreeMap<String, Listed>, new: &BTreeMap<String, Listed>) -> Vec<Change> {
    let mut out = Vec::new();
    for (path, o) in old {
        match new.get(path) {
            None => out.push(Change {
                path: path.clone(),
                change: ChangeKind::Removed,
                old_size: size(o),
                new_size: None,
                note: None,
            }),
            Some(n) if n != o => {
                let note = match (o, n) {
                    (
                        Listed::File {
                            blake3: a,
                            executable: x,
                            ..
                        },
                        Listed::File {
                            blake3: b,
                            executable: y,
                            ..
                        },
                    ) if a == b && x != y => Some("mode"),
                    (Listed::File { executable: x, .. }, Listed::File { executable: y, .. })
                        if x != y =>
                    {
                        Some("content and mode")
                    }
                    (Listed::File { .. }, Listed::File { .. }) => None,
                    (Listed::Symlink { .. }, Listed::Symlink { .. }) => Some("target"),
                    _ => Some("kind"),
                };
                out.push(Change {
                    path: path.clone(),
                    change: ChangeKind::Changed,
                    old_size: size(o),
                    new_size: size(n),
                    note: note.map(str::to_owned),
                });
            }
            Some(_) => {}
        }
    }
    for (path, n) in new {
        if !old.contains_key(path) {
            out.push(Change {
                path: path.clone(),
                change: ChangeKind::Added,
                old_size: None,
                new_size: size(n),
                note: None,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Totals for a summary line: (added, removed, changed, bytes before,
/// bytes after) over the changed paths.
pub fn totals(changes: &[Change]) -> (usize, usize, usize, u64, u64) {
    let count = |k| changes.iter().filter(|c| c.change == k).count();
    (
        count(ChangeKind::Added),
        count(ChangeKind::Removed),
        count(ChangeKind::Changed),
        changes.iter().filter_map(|c| c.old_size).sum(),
        changes.iter().filter_map(|c| c.new_size).sum(),
    )
}

/// What `release prepare` leaves for the offline signer
/// (`changes.json`): the changes against the head it extends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparedChanges {
    /// The head the release extends.
    pub from: u64,
    /// The prepared release's version and archive: a list made for another
    /// release is refused.
    pub to: u64,
    pub archive: crate::format::digest::Digest,
    pub changes: Vec<Change>,
}

/// What the signer can check offline of `changes` against the listing of
/// the prepared archive (whose hash the statement signs): every added or
/// changed file is there with the stated size, every removed path is
/// absent, no path is listed twice. What the head held cannot be checked
/// offline, so neither can a change left out of the list.
pub fn check_offline(changes: &[Change], new: &BTreeMap<String, Listed>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for c in changes {
        if !seen.insert(c.path.as_str()) {
            problems.push(format!("{}: listed twice", c.path));
        }
    }
    for c in changes {
        match (c.change, new.get(&c.path)) {
            (ChangeKind::Removed, Some(_)) => problems.push(format!(
                "{}: listed as removed, but the archive has it",
                c.path
            )),
            (ChangeKind::Added | ChangeKind::Changed, None) => problems.push(format!(
                "{}: listed as added or changed, but the archive lacks it",
                c.path
            )),
            (ChangeKind::Added | ChangeKind::Changed, Some(l)) if size(l) != c.new_size => problems
                .push(format!(
                    "{}: listed with {:?} bytes, the archive has {:?}",
                    c.path,
                    c.new_size,
                    size(l)
                )),
            _ => {}
        }
    }
    problems
}

/// Largest file shown as a patch; a larger one is named, not shown.
pub const PATCH_MAX_BYTES: u64 = 1 << 20;

/// A unified diff (3 lines of context) of `old` and `new` as text, or
/// `None` when either is not UTF-8 (a binary file).
pub fn patch(path: &str, old: &[u8], new: &[u8]) -> Option<String> {
    let (old, new) = (
        std::str::from_utf8(old).ok()?,
        std::str::from_utf8(new).ok()?,
    );
    Some(
        similar::TextDiff::configure()
            // Myers on hostile 1 MiB texts could run for hours: past the
            // deadline the diff is coarser, never wrong.
            .timeout(std::time::Duration::from_secs(5))
            .diff_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{path}"), &format!("b/{path}"))
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::Digest;

    fn file(text: &str, executable: bool) -> Listed {
        Listed::File {
            size: text.len() as u64,
            blake3: Digest::of(text.as_bytes()),
            executable,
        }
    }

    #[test]
    fn changes_are_found_and_named() {
        let old: BTreeMap<String, Listed> = [
            ("flake.nix".to_owned(), file("a", false)),
            ("gone.nix".to_owned(), file("bye", false)),
            ("run.sh".to_owned(), file("x", false)),
            ("link".to_owned(), Listed::Symlink { target: "a".into() }),
            ("same".to_owned(), file("s", false)),
        ]
        .into();
        let new: BTreeMap<String, Listed> = [
            ("flake.nix".to_owned(), file("ab", false)),
            ("run.sh".to_owned(), file("x", true)),
            ("link".to_owned(), Listed::Symlink { target: "b".into() }),
            ("same".to_owned(), file("s", false)),
            ("new.nix".to_owned(), file("hello", false)),
        ]
        .into();
        let d = diff(&old, &new);
        let got: Vec<(&str, ChangeKind, Option<&str>)> = d
            .iter()
            .map(|c| (c.path.as_str(), c.change, c.note.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("flake.nix", ChangeKind::Changed, None),
                ("gone.nix", ChangeKind::Removed, None),
                ("link", ChangeKind::Changed, Some("target")),
                ("new.nix", ChangeKind::Added, None),
                ("run.sh", ChangeKind::Changed, Some("mode")),
            ]
        );
        assert_eq!(totals(&d), (1, 1, 3, 1 + 3 + 1, 2 + 5 + 1));
    }

    #[test]
    fn patch_shows_lines_and_skips_binary() {
        let p = patch("flake.nix", b"a\nb\nc\n", b"a\nB\nc\n").expect("text");
        assert!(
            p.contains("--- a/flake.nix") && p.contains("-b\n") && p.contains("+B\n"),
            "{p}"
        );
        assert_eq!(patch("x", b"\xff\xfe", b"a"), None);
    }
}
