//! minisign-compatible key files.
//!
//! npcnix keys *are* minisign keys, so an operator can sign with the stock
//! `minisign` tool on an offline machine and hosts can pin the same `RW...`
//! string that minisign prints. This module is pure: it parses and produces
//! the file contents; reading and writing files is the caller's job.
//!
//! Formats (all integers little-endian, all blobs base64 on one line after an
//! `untrusted comment:` line):
//!
//! * public key: `"Ed" || key_id[8] || ed25519_pk[32]` (42 bytes)
//! * secret key: `"Ed" || kdf_alg[2] || "B2" || salt[32] || opslimit[8] ||
//!   memlimit[8] || (key_id[8] || ed25519_sk[64] || checksum[32])` (158 bytes),
//!   where the parenthesised 104 bytes are XORed with scrypt output when
//!   `kdf_alg == "Sc"` and stored as-is when it is `[0, 0]` (unencrypted), and
//!   `checksum = BLAKE2b-256("Ed" || key_id || ed25519_sk)`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use zeroize::{Zeroize, Zeroizing};

/// Signature algorithm tag of minisign Ed25519 keys.
const SIG_ALG: [u8; 2] = *b"Ed";
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHK_ALG: [u8; 2] = *b"B2";
const PK_LEN: usize = 42;
const SK_LEN: usize = 158;
const KEYNUM_SK_LEN: usize = 104;

/// libsodium's `crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_SENSITIVE`, which
/// minisign uses for new keys.
pub const SCRYPT_OPSLIMIT_DEFAULT: u64 = 33_554_432;
/// libsodium's `..._MEMLIMIT_SENSITIVE` (1 GiB).
pub const SCRYPT_MEMLIMIT_DEFAULT: u64 = 1_073_741_824;
/// Refuse key files asking for more scrypt memory than this: a key file is
/// input, and a hostile one must not be able to make us allocate unbounded
/// memory.
pub const SCRYPT_MEMLIMIT_MAX: u64 = 2 * 1_073_741_824;
/// Upper bound on key-file text we are willing to parse.
pub const KEY_FILE_MAX_BYTES: usize = 4096;

/// Errors reading or producing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a minisign key file: {0}")]
    Format(&'static str),
    #[error("unsupported key algorithm (only Ed25519 minisign keys are supported)")]
    Algorithm,
    #[error("unsupported secret key encryption (expected scrypt or none)")]
    Kdf,
    #[error("scrypt parameters in the key file are out of range")]
    KdfParams,
    #[error("wrong passphrase, or the secret key file is corrupted (checksum mismatch)")]
    Checksum,
    #[error("the secret key is encrypted and no passphrase was given")]
    PassphraseRequired,
    #[error("the secret key does not match its embedded public key")]
    Inconsistent,
    #[error("could not get randomness from the operating system: {0}")]
    Random(String),
    #[error("this is a secret key, not a public key: pass the `.pub` file (and keep the secret key to its signer)")]
    SecretKeyGiven,
}

/// An 8-byte minisign key ID.
///
/// Displayed the way minisign displays it: the bytes read as a little-endian
/// u64, printed as 16 upper-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl KeyId {
    /// Parses the 16-hex-digit form produced by `Display`.
    pub fn parse(s: &str) -> Option<KeyId> {
        if s.len() != 16
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        u64::from_str_radix(s, 16)
            .ok()
            .map(|v| KeyId(v.to_le_bytes()))
    }
}

/// A minisign Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: KeyId,
    pub bytes: [u8; 32],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    /// Parses the one-line base64 form (`RW...`).
    pub fn from_base64(s: &str) -> Result<PublicKey, KeyError> {
        let s = s.trim();
        if s.len() > 128 {
            // A minisign secret key line (Ed25519 + KDF + checksum) is
            // longer: name the mistake rather than the length.
            let secret = s.len() < 512
                && B64
                    .decode(s)
                    .map(Zeroizing::new)
                    .is_ok_and(|raw| raw.len() == SK_LEN && raw.starts_with(&SIG_ALG));
            return Err(if secret {
                KeyError::SecretKeyGiven
            } else {
                KeyError::Format("public key is too long")
            });
        }
        let raw = B64
            .decode(s)
            .map_err(|_| KeyError::Format("public key is not valid base64"))?;
        if raw.len() != PK_LEN {
            return Err(KeyError::Format("public key has the wrong length"));
        }
        if raw[0..2] != SIG_ALG {
            return Err(KeyError::Algorithm);
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&raw[2..10]);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&raw[10..42]);
        Ok(PublicKey {
            key_id: KeyId(key_id),
            bytes,
        })
    }

    /// Parses either a whole `.pub` file (comment line + key line) or just the
    /// base64 line.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        if text.len() > KEY_FILE_MAX_BYTES {
            return Err(KeyError::Format("public key file is too large"));
        }
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().ok_or(KeyError::Format("empty public key"))?;
        let key_line = if first.starts_with("untrusted comment:") {
            lines.next().ok_or(KeyError::Format(
                "public key line missing after the comment",
            ))?
        } else {
            first
        };
        if lines.next().is_some() {
            return Err(KeyError::Format(
                "unexpected extra lines after the public key",
            ));
        }
        PublicKey::from_base64(key_line)
    }

    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(PK_LEN);
        raw.extend_from_slice(&SIG_ALG);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.bytes);
        B64.encode(raw)
    }

    /// The `.pub` file text, as minisign writes it.
    pub fn to_file_text(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id,
            self.to_base64()
        )
    }

    /// The form minisign-verify uses.
    pub fn to_verifier(&self) -> Result<minisign_verify::PublicKey, KeyError> {
        minisign_verify::PublicKey::from_base64(&self.to_base64())
            .map_err(|_| KeyError::Format("public key rejected by the verifier"))
    }
}

/// How a secret key file is protected at rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProtection {
    /// scrypt-encrypted with a passphrase (the default; for humans).
    Passphrase,
    /// Stored in the clear, for CI secret stores that already encrypt.
    Unencrypted,
}

/// Scrypt cost as recorded in a minisign secret key (libsodium's units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScryptLimits {
    pub opslimit: u64,
    pub memlimit: u64,
}

impl Default for ScryptLimits {
    fn default() -> Self {
        ScryptLimits {
            opslimit: SCRYPT_OPSLIMIT_DEFAULT,
            memlimit: SCRYPT_MEMLIMIT_DEFAULT,
        }
    }
}

impl ScryptLimits {
    /// libsodium's `pickparams`: turns (opslimit, memlimit) into scrypt's
    /// (log2 N, r, p), so files written by minisign decrypt identically.
    fn params(self) -> Result<scrypt::Params, KeyError> {
        if self.memlimit > SCRYPT_MEMLIMIT_MAX {
            return Err(KeyError::KdfParams);
        }
        let opslimit = self.opslimit.max(32_768);
        let r: u64 = 8;
        let (n_log2, p) = if opslimit < self.memlimit / 32 {
            let max_n = opslimit / (r * 4);
            (smallest_log2_above(max_n / 2), 1u64)
        } else {
            let max_n = self.memlimit / (r * 128);
            let n_log2 = smallest_log2_above(max_n / 2);
            let max_rp = ((opslimit / 4) / (1u64 << n_log2)).min(0x3fff_ffff);
            (n_log2, max_rp / r)
        };
        // Bound the work a file can demand even below the memory limit.
        if !(1..=22).contains(&n_log2) || !(1..=4).contains(&p) {
            return Err(KeyError::KdfParams);
        }
        // The output length is the buffer's (scrypt_xor), not a parameter.
        scrypt::Params::new(n_log2 as u8, r as u32, p as u32).map_err(|_| KeyError::KdfParams)
    }
}

/// libsodium's loop: the first N_log2 in 1..63 with `2^N_log2 > bound`.
fn smallest_log2_above(bound: u64) -> u32 {
    let mut n = 1u32;
    while n < 63 && (1u64 << n) <= bound {
        n += 1;
    }
    n
}

/// A decrypted Ed25519 signing key with its minisign key ID.
///
/// Never printed (the `Debug` impl shows only the key ID); the key bytes are
/// zeroized on drop by `ed25519_dalek`.
pub struct SecretKey {
    pub key_id: KeyId,
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, <redacted>)", self.key_id)
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(buf)
}

fn checksum(key_id: &KeyId, sk64: &[u8; 64]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(SIG_ALG);
    h.update(key_id.0);
    h.update(sk64);
    h.finalize().into()
}

/// XORs `data` with the scrypt stream derived from `passphrase` and `salt`.
fn scrypt_xor(
    data: &mut [u8; KEYNUM_SK_LEN],
    passphrase: &[u8],
    salt: &[u8; 32],
    limits: ScryptLimits,
) -> Result<(), KeyError> {
    let params = limits.params()?;
    let mut stream = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
    scrypt::scrypt(passphrase, salt, &params, stream.as_mut()).map_err(|_| KeyError::KdfParams)?;
    for (d, s) in data.iter_mut().zip(stream.iter()) {
        *d ^= s;
    }
    Ok(())
}

impl SecretKey {
    /// Generates a fresh key with a random key ID.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let seed = Zeroizing::new(random_bytes::<32>()?);
        let key_id = KeyId(random_bytes::<8>()?);
        Ok(SecretKey {
            key_id,
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            bytes: self.signing.verifying_key().to_bytes(),
        }
    }

    pub(crate) fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.signing
    }

    /// Parses a secret key file. `passphrase` is consulted only when the
    /// file is encrypted; `None` for an encrypted file is
    /// [`KeyError::PassphraseRequired`], so callers can prompt lazily.
    pub fn parse(text: &str, passphrase: Option<&[u8]>) -> Result<SecretKey, KeyError> {
        Self::parse_with(text, |_| passphrase.map(|p| Zeroizing::new(p.to_vec())))
    }

    /// Like [`SecretKey::parse`] but asks `get_passphrase` only if needed.
    pub fn parse_with(
        text: &str,
        get_passphrase: impl FnOnce(ScryptLimits) -> Option<Zeroizing<Vec<u8>>>,
    ) -> Result<SecretKey, KeyError> {
        if text.len() > KEY_FILE_MAX_BYTES {
            return Err(KeyError::Format("secret key file is too large"));
        }
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines
            .next()
            .ok_or(KeyError::Format("empty secret key file"))?;
        let b64 = if first.starts_with("untrusted comment:") {
            lines.next().ok_or(KeyError::Format(
                "secret key line missing after the comment",
            ))?
        } else {
            first
        };
        let raw = Zeroizing::new(
            B64.decode(b64)
                .map_err(|_| KeyError::Format("secret key is not valid base64"))?,
        );
        if raw.len() != SK_LEN {
            return Err(KeyError::Format("secret key has the wrong length"));
        }
        if raw[0..2] != SIG_ALG {
            return Err(KeyError::Algorithm);
        }
        let kdf = [raw[2], raw[3]];
        if raw[4..6] != CHK_ALG {
            return Err(KeyError::Format("unknown checksum algorithm"));
        }
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&raw[6..38]);
        let mut u64buf = [0u8; 8];
        u64buf.copy_from_slice(&raw[38..46]);
        let opslimit = u64::from_le_bytes(u64buf);
        u64buf.copy_from_slice(&raw[46..54]);
        let memlimit = u64::from_le_bytes(u64buf);
        let mut keynum = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
        keynum.copy_from_slice(&raw[54..158]);
        match kdf {
            KDF_NONE => {}
            KDF_SCRYPT => {
                let limits = ScryptLimits { opslimit, memlimit };
                // Validate before asking for a passphrase.
                limits.params()?;
                let pass = get_passphrase(limits).ok_or(KeyError::PassphraseRequired)?;
                scrypt_xor(&mut keynum, &pass, &salt, limits)?;
            }
            _ => return Err(KeyError::Kdf),
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&keynum[0..8]);
        let key_id = KeyId(key_id);
        let mut sk64 = Zeroizing::new([0u8; 64]);
        sk64.copy_from_slice(&keynum[8..72]);
        let want = checksum(&key_id, &sk64);
        // Constant-time compare: the checksum is derived from secret bytes.
        let mut diff = 0u8;
        let mut zero = 0u8;
        for (a, b) in want.iter().zip(&keynum[72..104]) {
            diff |= a ^ b;
            zero |= b;
        }
        // minisign 0.11 writes an all-zero checksum for unencrypted (-W)
        // keys; for those the public-key consistency check below is what
        // catches corruption.
        let unencrypted_without_checksum = kdf == KDF_NONE && zero == 0;
        if diff != 0 && !unencrypted_without_checksum {
            return Err(KeyError::Checksum);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&sk64[0..32]);
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        if signing.verifying_key().to_bytes()[..] != sk64[32..64] {
            return Err(KeyError::Inconsistent);
        }
        Ok(SecretKey { key_id, signing })
    }

    /// Serialises to minisign's secret key file format.
    pub fn to_file_text(
        &self,
        protection: KeyProtection,
        passphrase: &[u8],
        limits: ScryptLimits,
    ) -> Result<Zeroizing<String>, KeyError> {
        let mut sk64 = Zeroizing::new([0u8; 64]);
        sk64[0..32].copy_from_slice(self.signing.as_bytes());
        sk64[32..64].copy_from_slice(self.signing.verifying_key().as_bytes());
        let mut keynum = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
        keynum[0..8].copy_from_slice(&self.key_id.0);
        keynum[8..72].copy_from_slice(&sk64[..]);
        keynum[72..104].copy_from_slice(&checksum(&self.key_id, &sk64));

        let mut raw = Zeroizing::new(Vec::with_capacity(SK_LEN));
        raw.extend_from_slice(&SIG_ALG);
        let (kdf, salt, ops, mem, comment) = match protection {
            KeyProtection::Passphrase => {
                let salt = random_bytes::<32>()?;
                scrypt_xor(&mut keynum, passphrase, &salt, limits)?;
                (
                    KDF_SCRYPT,
                    salt,
                    limits.opslimit,
                    limits.memlimit,
                    "minisign encrypted secret key",
                )
            }
            // minisign -W writes zero KDF fields for unencrypted keys.
            KeyProtection::Unencrypted => (
                KDF_NONE,
                [0u8; 32],
                0,
                0,
                "minisign secret key (UNENCRYPTED)",
            ),
        };
        raw.extend_from_slice(&kdf);
        raw.extend_from_slice(&CHK_ALG);
        raw.extend_from_slice(&salt);
        raw.extend_from_slice(&ops.to_le_bytes());
        raw.extend_from_slice(&mem.to_le_bytes());
        raw.extend_from_slice(&keynum[..]);
        let mut b64 = B64.encode(&raw[..]);
        let text = Zeroizing::new(format!("untrusted comment: {comment}\n{b64}\n"));
        b64.zeroize();
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libsodium_pickparams_matches_minisign_defaults() {
        let p = ScryptLimits::default().params().expect("params");
        assert_eq!((p.log_n(), p.r(), p.p()), (20, 8, 1));
    }

    #[test]
    fn unencrypted_round_trip() {
        let sk = SecretKey::generate().expect("gen");
        let text = sk
            .to_file_text(KeyProtection::Unencrypted, b"", ScryptLimits::default())
            .expect("ser");
        let back = SecretKey::parse(&text, None).expect("parse");
        assert_eq!(back.public_key(), sk.public_key());
    }

    #[test]
    fn encrypted_round_trip_and_wrong_passphrase() {
        // Small scrypt cost to keep the unit test quick; the CLI tests use
        // minisign's real parameters.
        let limits = ScryptLimits {
            opslimit: 1 << 16,
            memlimit: 1 << 24,
        };
        let sk = SecretKey::generate().expect("gen");
        let text = sk
            .to_file_text(KeyProtection::Passphrase, b"correct horse", limits)
            .expect("ser");
        let back = SecretKey::parse(&text, Some(b"correct horse")).expect("parse");
        assert_eq!(back.public_key(), sk.public_key());
        assert!(matches!(
            SecretKey::parse(&text, Some(b"wrong")),
            Err(KeyError::Checksum)
        ));
        assert!(matches!(
            SecretKey::parse(&text, None),
            Err(KeyError::PassphraseRequired)
        ));
    }

    #[test]
    fn public_key_round_trip_and_key_id_display() {
        let sk = SecretKey::generate().expect("gen");
        let pk = sk.public_key();
        let parsed = PublicKey::parse(&pk.to_file_text()).expect("parse");
        assert_eq!(parsed, pk);
        assert_eq!(KeyId::parse(&pk.key_id.to_string()), Some(pk.key_id));
        assert!(pk.to_base64().starts_with("RW"));
    }

    #[test]
    fn debug_never_prints_secret_material() {
        let sk = SecretKey::generate().expect("gen");
        let dbg = format!("{sk:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(&B64.encode(sk.signing.as_bytes())));
    }

    #[test]
    fn hostile_scrypt_memlimit_is_refused() {
        let limits = ScryptLimits {
            opslimit: u64::MAX,
            memlimit: u64::MAX,
        };
        assert!(matches!(limits.params(), Err(KeyError::KdfParams)));
    }
}
