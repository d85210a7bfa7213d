//! Remote names: the identity a release is signed for.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a remote: the identity a release is signed for.
///
/// 1 to 64 characters from `[a-z0-9._-]`, starting with a letter or digit,
/// so it can appear unquoted in a trusted comment and as a path segment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteName(String);

/// A string that is not a valid [`RemoteName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid remote name {0:?}: use 1-64 characters from a-z 0-9 . _ -, starting with a letter or digit")]
pub struct InvalidRemoteName(pub String);

impl From<InvalidRemoteName> for String {
    fn from(e: InvalidRemoteName) -> String {
        e.to_string()
    }
}

impl RemoteName {
    pub fn new(s: &str) -> Result<RemoteName, InvalidRemoteName> {
        let ok_first = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_rest = s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        });
        if s.len() > 64 || !ok_first || !ok_rest {
            return Err(InvalidRemoteName(s.to_owned()));
        }
        Ok(RemoteName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteName({})", self.0)
    }
}

impl Serialize for RemoteName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RemoteName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RemoteName::new(&s).map_err(serde::de::Error::custom)
    }
}
