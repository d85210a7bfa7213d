//! The release statement: the small JSON document every signature covers.
//!
//! A statement binds an archive (BLAKE3 + size) to a remote name and a
//! version, and links to the previous release by the BLAKE3 of its statement
//! bytes, forming a hash chain. Signatures cover the statement's exact bytes;
//! the verifier parses a statement only after a signature over those bytes
//! verified, and then strictly: unknown fields, duplicate fields, wrong types
//! or oversized input are errors.
//!
//! The exact format is specified in `docs/protocol.md`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use super::digest::Digest;
pub use super::remote::RemoteName;

/// Format tag of release statements this version understands.
pub const STATEMENT_TYPE: &str = "npcnix-release/v1";
/// Prefix of the trusted comment that binds a signature to a release.
pub const TRUSTED_COMMENT_TAG: &str = "npcnix-release/v1";
/// Largest version accepted (2^53 - 1): far beyond any real history, and
/// small enough that `version + 1` never overflows anywhere.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
/// Largest timestamp accepted (see [`crate::format::time::MAX_TIME`]).
pub use super::time::MAX_TIME;
/// Hard limit on statement size; the whole bundle is limited too.
pub const STATEMENT_MAX_BYTES: usize = 32 * 1024;

/// Errors in the statement or trusted-comment format.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatementError {
    #[error("statement is larger than {STATEMENT_MAX_BYTES} bytes")]
    TooLarge,
    #[error("statement is not valid: {0}")]
    Malformed(String),
    #[error("unknown statement type {0:?} (this npcnix understands {STATEMENT_TYPE:?})")]
    UnknownType(String),
    #[error("trusted comment is not an npcnix release binding: {0}")]
    TrustedComment(&'static str),
}

/// What the archive of a release is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRef {
    /// BLAKE3 of the `.tar.zst` bytes.
    pub blake3: Digest,
    /// Exact size of the `.tar.zst` in bytes.
    pub size: u64,
}

impl ArchiveRef {
    /// Store key of the archive, derived from its hash (content addressing):
    /// no separate, possibly inconsistent, key field is signed.
    pub fn object_key(&self) -> String {
        format!("archives/{}.tar.zst", self.blake3)
    }
}

/// Informational provenance, shown in logs; never used for decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake_lock_blake3: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A release statement. Field order here is the serialised order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "type")]
    pub kind: String,
    pub remote: RemoteName,
    pub version: u64,
    /// BLAKE3 of the previous release's statement bytes; `null` for the first.
    /// Required (an absent field is an error, not `null`).
    #[serde(deserialize_with = "Option::deserialize")]
    pub previous: Option<Digest>,
    pub archive: ArchiveRef,
    /// Unix seconds (UTC) when the statement was made.
    pub created: u64,
    /// Unix seconds after which hosts refuse the release (freeze defence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// NixOS configuration name -> expected system store path.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "unique_map"
    )]
    pub toplevels: Option<BTreeMap<String, String>>,
    /// Configurations this release retires on purpose: their hosts skip the
    /// lockout inspection and probation (the new system may stop following
    /// the remote). Nothing else ever lets a release strand a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommission: Option<Vec<String>>,
    /// When each host may activate (waves): see [`super::rollout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::Rollout>,
}

impl Statement {
    /// Strictly parses statement bytes. Call only on bytes whose signature
    /// verified.
    pub fn parse(bytes: &[u8]) -> Result<Statement, StatementError> {
        if bytes.len() > STATEMENT_MAX_BYTES {
            return Err(StatementError::TooLarge);
        }
        // Peek at the type first so a future format gets a clear message
        // rather than "unknown field".
        #[derive(Deserialize)]
        struct TypeOnly {
            #[serde(rename = "type")]
            kind: String,
        }
        let t: TypeOnly =
            serde_json::from_slice(bytes).map_err(|e| StatementError::Malformed(e.to_string()))?;
        if t.kind != STATEMENT_TYPE {
            return Err(StatementError::UnknownType(t.kind));
        }
        let st: Statement =
            serde_json::from_slice(bytes).map_err(|e| StatementError::Malformed(e.to_string()))?;
        st.check()?;
        Ok(st)
    }

    /// Semantic checks beyond the JSON shape.
    fn check(&self) -> Result<(), StatementError> {
        if self.version == 0 || self.version > MAX_VERSION {
            return Err(StatementError::Malformed(format!(
                "version must be between 1 and {MAX_VERSION}"
            )));
        }
        if self.created > MAX_TIME || self.expires.is_some_and(|e| e > MAX_TIME) {
            return Err(StatementError::Malformed(
                "time is after the year 9999".into(),
            ));
        }
        if self.version == 1 && self.previous.is_some() {
            return Err(StatementError::Malformed(
                "version 1 cannot have a previous release".into(),
            ));
        }
        if self.version > 1 && self.previous.is_none() {
            return Err(StatementError::Malformed(format!(
                "version {} must name its previous release",
                self.version
            )));
        }
        if let Some(exp) = self.expires {
            if exp <= self.created {
                return Err(StatementError::Malformed(
                    "expires is not after created".into(),
                ));
            }
        }
        if let Some(src) = &self.source {
            for s in [&src.git_commit, &src.comment].into_iter().flatten() {
                if s.len() > 1024 || !super::text::is_plain(s) {
                    return Err(StatementError::Malformed(
                        "source fields must be short single-line text".into(),
                    ));
                }
            }
        }
        if let Some(t) = &self.toplevels {
            for (name, path) in t {
                if !is_configuration_name(name) {
                    return Err(StatementError::Malformed(
                        "a toplevel is named by something that is not a nixosConfigurations attribute name (1-128 characters from A-Z a-z 0-9 - _ .)".into(),
                    ));
                }
                if !is_store_path(path) {
                    return Err(StatementError::Malformed(format!(
                        "toplevel {name:?} is not a store path /nix/store/<32 base32 characters>-<name> (no sub-path)"
                    )));
                }
            }
        }
        if let Some(d) = &self.decommission {
            if d.is_empty() || d.len() > 1024 {
                return Err(StatementError::Malformed(
                    "decommission must list 1 to 1024 configurations (omit the field for none)"
                        .into(),
                ));
            }
            if !d.iter().all(|c| is_configuration_name(c)) {
                return Err(StatementError::Malformed(
                    "decommission lists something that is not a nixosConfigurations attribute name"
                        .into(),
                ));
            }
            if !d.windows(2).all(|w| w[0] < w[1]) {
                return Err(StatementError::Malformed(
                    "decommission must be sorted and without duplicates".into(),
                ));
            }
        }
        if let Some(r) = &self.rollout {
            r.check()
                .map_err(|e| StatementError::Malformed(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether this release retires `configuration` on purpose.
    pub fn decommissions(&self, configuration: &str) -> bool {
        self.decommission
            .as_ref()
            .is_some_and(|d| d.iter().any(|c| c == configuration))
    }

    /// Canonical serialisation used by publishers: compact JSON in field
    /// order, plus a newline so the file is friendly to `cat` and `minisign`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The parsed content of an npcnix trusted comment:
/// `npcnix-release/v1 remote=<name> version=<n> statement=<blake3> key=<KEYID>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub remote: RemoteName,
    pub version: u64,
    pub statement: Digest,
    pub key_id: crate::format::keys::KeyId,
}

impl Binding {
    pub fn to_trusted_comment(&self) -> String {
        format!(
            "{TRUSTED_COMMENT_TAG} remote={} version={} statement={} key={}",
            self.remote, self.version, self.statement, self.key_id
        )
    }

    /// Parses a trusted comment. Exactly the canonical form is accepted:
    /// re-serialising the result must give the input back.
    pub fn parse(tc: &str) -> Result<Binding, StatementError> {
        let mut it = tc.split(' ');
        if it.next() != Some(TRUSTED_COMMENT_TAG) {
            return Err(StatementError::TrustedComment(
                "missing npcnix-release/v1 tag",
            ));
        }
        let mut field = |name: &'static str| {
            it.next()
                .and_then(|kv| kv.strip_prefix(name))
                .and_then(|v| v.strip_prefix('='))
                .ok_or(StatementError::TrustedComment(
                    "fields missing or out of order",
                ))
        };
        let remote = RemoteName::new(field("remote")?)
            .map_err(|_| StatementError::TrustedComment("invalid remote name"))?;
        let version = field("version")?
            .parse::<u64>()
            .map_err(|_| StatementError::TrustedComment("invalid version"))?;
        let statement = Digest::from_hex(field("statement")?)
            .ok_or(StatementError::TrustedComment("invalid statement hash"))?;
        let key_id = crate::format::keys::KeyId::parse(field("key")?)
            .ok_or(StatementError::TrustedComment("invalid key id"))?;
        if it.next().is_some() {
            return Err(StatementError::TrustedComment("trailing fields"));
        }
        let b = Binding {
            remote,
            version,
            statement,
            key_id,
        };
        if b.to_trusted_comment() != tc {
            return Err(StatementError::TrustedComment("not in canonical form"));
        }
        Ok(b)
    }
}

/// A `nixosConfigurations` attribute name as npcnix accepts it: 1-128
/// characters from `A-Z a-z 0-9 - _ .` (no quoting, nothing a terminal
/// interprets).
pub fn is_configuration_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A top-level Nix store path: `/nix/store/`, 32 characters of Nix's base32
/// alphabet, `-`, and a name of 1-211 characters from `A-Z a-z 0-9 + - . _ ? =`
/// that does not start with `.`; nothing after it (no sub-path).
pub fn is_store_path(s: &str) -> bool {
    const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let Some(rest) = s.strip_prefix("/nix/store/") else {
        return false;
    };
    let (hash, name) = match (rest.get(..32), rest.get(32..)) {
        (Some(h), Some(n)) => (h, n),
        _ => return false,
    };
    let Some(name) = name.strip_prefix('-') else {
        return false;
    };
    hash.bytes().all(|b| NIX_BASE32.contains(&b))
        && !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

/// Deserialises a JSON object into a map, refusing duplicate keys (serde's
/// default for maps is "last one wins", which two parsers may disagree on).
fn unique_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, String>()? {
                if out.insert(k.clone(), v).is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "duplicate toplevel {k:?}"
                    )));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(V).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Statement {
        Statement {
            kind: STATEMENT_TYPE.into(),
            remote: RemoteName::new("prod").expect("name"),
            version: 2,
            previous: Some(Digest([7; 32])),
            archive: ArchiveRef {
                blake3: Digest([9; 32]),
                size: 1234,
            },
            created: 1_700_000_000,
            expires: Some(1_800_000_000),
            source: None,
            toplevels: None,
            decommission: None,
            rollout: None,
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Statement::parse(&s.to_bytes()), Ok(s));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let b = br#"{"type":"npcnix-release/v1","remote":"prod","version":1,"previous":null,"archive":{"blake3":"0000000000000000000000000000000000000000000000000000000000000000","size":1},"created":1,"evil":true}"#;
        assert!(matches!(
            Statement::parse(b),
            Err(StatementError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let b = br#"{"type":"npcnix-release/v1","remote":"prod","version":1,"version":9,"previous":null,"archive":{"blake3":"0000000000000000000000000000000000000000000000000000000000000000","size":1},"created":1}"#;
        assert!(matches!(
            Statement::parse(b),
            Err(StatementError::Malformed(_))
        ));
    }

    #[test]
    fn missing_previous_and_duplicate_toplevels_are_refused() {
        let no_prev = br#"{"type":"npcnix-release/v1","remote":"prod","version":1,"archive":{"blake3":"0000000000000000000000000000000000000000000000000000000000000000","size":1},"created":1}"#;
        assert!(matches!(
            Statement::parse(no_prev),
            Err(StatementError::Malformed(_))
        ));
        let dup = br#"{"type":"npcnix-release/v1","remote":"prod","version":1,"previous":null,"archive":{"blake3":"0000000000000000000000000000000000000000000000000000000000000000","size":1},"created":1,"toplevels":{"a":"/nix/store/x","a":"/nix/store/y"}}"#;
        assert!(matches!(
            Statement::parse(dup),
            Err(StatementError::Malformed(_))
        ));
    }

    #[test]
    fn version_burn_to_u64_max_is_refused() {
        let mut s = sample();
        s.version = u64::MAX;
        assert!(matches!(
            Statement::parse(&s.to_bytes()),
            Err(StatementError::Malformed(_))
        ));
    }

    #[test]
    fn future_format_gets_a_clear_error() {
        let b = br#"{"type":"npcnix-release/v9"}"#;
        assert_eq!(
            Statement::parse(b),
            Err(StatementError::UnknownType("npcnix-release/v9".into()))
        );
    }

    #[test]
    fn trusted_comment_round_trip_and_strictness() {
        let b = Binding {
            remote: RemoteName::new("dev").expect("name"),
            version: 42,
            statement: Digest([1; 32]),
            key_id: crate::format::keys::KeyId([1, 2, 3, 4, 5, 6, 7, 8]),
        };
        let tc = b.to_trusted_comment();
        assert_eq!(Binding::parse(&tc), Ok(b));
        assert!(Binding::parse(&format!("{tc} extra=1")).is_err());
        assert!(Binding::parse(&tc.replace("version=42", "version=042")).is_err());
        assert!(Binding::parse(&tc.replace(' ', "  ")).is_err());
    }

    #[test]
    fn remote_names_cannot_smuggle_separators() {
        for bad in ["", "Prod", "a b", "a=b", "../x", "-x", &"x".repeat(65)] {
            assert!(RemoteName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RemoteName::new("prod-eu.1_a").is_ok());
    }

    #[test]
    fn toplevels_must_be_plain_store_paths_named_by_configuration_names() {
        let good = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-24.05";
        assert!(is_store_path(good));
        for (attack, bad) in [
            ("sub-path", format!("{good}/bin")),
            (
                "dot-dot",
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x/../../etc".into(),
            ),
            ("short hash", "/nix/store/0123456789-x".into()),
            (
                "not base32 (e)",
                "/nix/store/e123456789abcdfghijklmnpqrsvwxyz-x".into(),
            ),
            (
                "odd characters",
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a b".into(),
            ),
            (
                "escape",
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a\u{1b}[2K".into(),
            ),
            (
                "dot name",
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-.x".into(),
            ),
            (
                "no name",
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-".into(),
            ),
            (
                "outside the store",
                "/tmp/0123456789abcdfghijklmnpqrsvwxyz-x".into(),
            ),
        ] {
            assert!(!is_store_path(&bad), "{attack}: {bad}");
        }
        assert!(is_configuration_name("web-1.prod_eu"));
        for bad in ["", "a b", "web\u{1b}[2K", "a/b", "\u{202e}web"] {
            assert!(!is_configuration_name(bad), "{bad:?}");
        }
    }
}
