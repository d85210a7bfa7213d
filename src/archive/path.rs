//! Newtypes for untrusted names inside archives.
//!
//! An [`EntryPath`] cannot hold an absolute path, `..`, `.`, an empty
//! component or a NUL byte, and does not deref to `str`: code that joins it
//! onto a directory has to go through [`EntryPath::components`], which only
//! yields plain names. A [`LinkTarget`] is a relative symlink target whose
//! `..` components all come first, so checking it against the link's depth
//! proves it stays inside the tree (see `docs/protocol.md`, "Archives").

use std::fmt;

/// Longest single path component Linux file systems accept.
pub const NAME_MAX: usize = 255;

/// Why a path or link target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path is absolute")]
    Absolute,
    #[error("path contains a `..` component")]
    DotDot,
    #[error("path contains a `.` or empty component")]
    DotOrEmpty,
    #[error("path is not valid UTF-8 or contains a NUL or control character")]
    Encoding,
    #[error("path is longer than {0} bytes")]
    TooLong(u32),
    #[error("path is deeper than {0} components")]
    TooDeep(u32),
    #[error("symlink target escapes the archive root")]
    Escapes,
}

/// A validated relative path of an archive entry.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPath(String);

fn check_text(s: &str) -> Result<(), PathError> {
    if s.chars().any(|c| c == '\0' || c.is_control()) {
        return Err(PathError::Encoding);
    }
    Ok(())
}

impl EntryPath {
    /// Validates raw entry-path bytes from a tar header. One trailing `/` is
    /// accepted (directories are often written that way) and dropped.
    pub fn new(raw: &[u8], max_bytes: u32, max_depth: u32) -> Result<EntryPath, PathError> {
        let s = std::str::from_utf8(raw).map_err(|_| PathError::Encoding)?;
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > max_bytes as usize {
            return Err(PathError::TooLong(max_bytes));
        }
        check_text(s)?;
        if s.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let mut depth = 0u32;
        for c in s.split('/') {
            match c {
                ".." => return Err(PathError::DotDot),
                "" | "." => return Err(PathError::DotOrEmpty),
                _ if c.len() > NAME_MAX => return Err(PathError::TooLong(NAME_MAX as u32)),
                _ => depth += 1,
            }
        }
        if depth > max_depth {
            return Err(PathError::TooDeep(max_depth));
        }
        Ok(EntryPath(s.to_owned()))
    }

    /// Plain path components; never `..`, `.` or empty.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The parent entry path, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<EntryPath> {
        self.0
            .rsplit_once('/')
            .map(|(p, _)| EntryPath(p.to_owned()))
    }

    /// For display and for building tar headers.
    pub fn as_display(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryPath({:?})", self.0)
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A symlink target proven to stay inside the archive root.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkTarget(String);

impl LinkTarget {
    /// Validates `raw` as the target of a symlink located at `link`.
    ///
    /// Accepted form: zero or more leading `..` components followed by plain
    /// names (`../../lib/x`, `sub/file`). Since the link's own parent chain
    /// consists of real directories (the extractor refuses entries below
    /// symlinks), the leading `..`s walk up real directories, so allowing at
    /// most `depth(link) - 1` of them keeps the target within the root; the
    /// plain names that follow can only descend. A `..` after a name is
    /// refused: resolving it physically (through a symlink) could climb out
    /// even when the lexical path stays inside.
    pub fn new(raw: &[u8], link: &EntryPath, max_bytes: u32) -> Result<LinkTarget, PathError> {
        let s = std::str::from_utf8(raw).map_err(|_| PathError::Encoding)?;
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > max_bytes as usize {
            return Err(PathError::TooLong(max_bytes));
        }
        check_text(s)?;
        if s.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let mut ups = 0usize;
        let mut names = 0usize;
        for c in s.split('/') {
            match c {
                ".." if names == 0 => ups += 1,
                ".." => return Err(PathError::Escapes),
                "" | "." => return Err(PathError::DotOrEmpty),
                _ if c.len() > NAME_MAX => return Err(PathError::TooLong(NAME_MAX as u32)),
                _ => names += 1,
            }
        }
        if ups > link.depth() - 1 {
            return Err(PathError::Escapes);
        }
        Ok(LinkTarget(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkTarget({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<EntryPath, PathError> {
        EntryPath::new(s.as_bytes(), 1024, 64)
    }

    #[test]
    fn dotdot_absolute_and_empty_are_refused() {
        assert_eq!(p("../etc/passwd"), Err(PathError::DotDot));
        assert_eq!(p("a/../../x"), Err(PathError::DotDot));
        assert_eq!(p("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(p(""), Err(PathError::Empty));
        assert_eq!(p("a//b"), Err(PathError::DotOrEmpty));
        assert_eq!(p("./a"), Err(PathError::DotOrEmpty));
        assert_eq!(p("a\nb"), Err(PathError::Encoding));
        assert!(EntryPath::new(b"a\xffb", 1024, 64).is_err());
        assert_eq!(p("dir/").map(|e| e.to_string()), Ok("dir".to_string()));
    }

    #[test]
    fn length_and_depth_limits() {
        assert_eq!(
            EntryPath::new("a/".repeat(65).trim_end_matches('/').as_bytes(), 1024, 64),
            Err(PathError::TooDeep(64))
        );
        assert_eq!(
            EntryPath::new("x".repeat(2000).as_bytes(), 1024, 64),
            Err(PathError::TooLong(1024))
        );
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        let top = p("link").expect("path");
        let deep = p("a/b/link").expect("path");
        assert!(LinkTarget::new(b"file", &top, 1024).is_ok());
        assert!(LinkTarget::new(b"../../x", &deep, 1024).is_ok());
        assert_eq!(LinkTarget::new(b"..", &top, 1024), Err(PathError::Escapes));
        assert_eq!(
            LinkTarget::new(b"../../../x", &deep, 1024),
            Err(PathError::Escapes)
        );
        assert_eq!(
            LinkTarget::new(b"/etc", &top, 1024),
            Err(PathError::Absolute)
        );
        // Lexically inside, but `d/..` through a symlink `d -> .` would climb.
        assert_eq!(
            LinkTarget::new(b"d/../x", &deep, 1024),
            Err(PathError::Escapes)
        );
        assert_eq!(
            LinkTarget::new(b"./x", &top, 1024),
            Err(PathError::DotOrEmpty)
        );
    }
}
