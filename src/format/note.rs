//! C2SP signed notes, checkpoints and witness cosignatures (issue 37, the
//! witnessed release log): the formats of c2sp.org/signed-note,
//! c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature (`cosignature/v1`),
//! so npcnix's log and its witnesses speak what other transparency logs
//! and witnesses speak. Pure: bytes in, values out.
//!
//! A note is text ending in a newline, a blank line, then signature lines
//! `— <name> base64(key ID || signature)`. A key is named and identified by
//! `SHA-256(name || 0x0A || type || public key)[:4]`; verifier keys are
//! written `<name>+<key ID, 8 hex digits>+base64(type || public key)`.
//! Type 0x01 is an Ed25519 signature over the note text; type 0x04 a
//! timestamped witness cosignature over `cosignature/v1\ntime <t>\n` and the
//! checkpoint text, its signature bytes the timestamp (8 bytes, big endian)
//! followed by the Ed25519 signature.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Largest note read (a checkpoint with dozens of cosignatures is a few KiB).
pub const NOTE_MAX_BYTES: usize = 64 * 1024;
/// Most signature lines a note may carry (C2SP: accept at least 16).
pub const MAX_SIGNATURES: usize = 100;
/// Longest key name.
pub const MAX_NAME: usize = 256;

/// Signature type: Ed25519 over the note text.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type: a witness cosignature (`cosignature/v1`).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is larger than {NOTE_MAX_BYTES} bytes")]
    TooLarge,
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed verifier key: {0}")]
    BadKey(String),
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
}

fn malformed(why: impl Into<String>) -> NoteError {
    NoteError::Malformed(why.into())
}

/// One signature line of a note, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// What follows the key ID.
    pub sig: Vec<u8>,
}

/// A note split into its text and its signature lines (none verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, final newline included.
    pub text: String,
    pub sigs: Vec<NoteSignature>,
}

/// Whether `name` is a valid key name: non-empty, no spaces, no `+`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.contains('+')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The key ID of a key: `SHA-256(name || 0x0A || type || key)[:4]`, big endian.
pub fn key_id(name: &str, alg: u8, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

impl Note {
    /// Splits a note strictly: valid UTF-8, no control characters but
    /// newlines, the text separated from the signatures by the last blank
    /// line, every signature line well-formed, 1 to [`MAX_SIGNATURES`].
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > NOTE_MAX_BYTES {
            return Err(NoteError::TooLarge);
        }
        let s = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
        if s.chars().any(|c| c < ' ' && c != '\n') {
            return Err(malformed("a control character"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&s[..split + 1], &s[split + 2..]);
        if !sigs.ends_with('\n') {
            return Err(malformed(
                "the last signature line does not end in a newline",
            ));
        }
        let mut out = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if out.len() == MAX_SIGNATURES {
                return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
            }
            out.push(parse_sig_line(line)?);
        }
        Ok(Note {
            text: text.to_owned(),
            sigs: out,
        })
    }

    /// The note as bytes: text, blank line, one line per signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = self.text.clone();
        s.push('\n');
        for sig in &self.sigs {
            let mut raw = sig.key_id.to_be_bytes().to_vec();
            raw.extend_from_slice(&sig.sig);
            s.push_str(&format!("— {} {}\n", sig.name, B64.encode(raw)));
        }
        s.into_bytes()
    }
}

fn parse_sig_line(line: &str) -> Result<NoteSignature, NoteError> {
    let rest = line
        .strip_prefix("— ")
        .ok_or_else(|| malformed("a signature line that does not start with an em dash"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| malformed("a signature line without a signature"))?;
    if !valid_name(name) {
        return Err(malformed(format!("bad key name {name:?}")));
    }
    let raw = B64
        .decode(b64)
        .map_err(|_| malformed("a signature that is not base64"))?;
    if raw.len() < 5 || B64.encode(&raw) != b64 {
        return Err(malformed(
            "a signature too short or not in canonical base64",
        ));
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
        sig: raw[4..].to_vec(),
    })
}

/// A key that verifies notes: its name, type and Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub alg: u8,
    pub key: VerifyingKey,
    pub key_id: u32,
}

impl std::fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![self.alg];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, B64.encode(raw))
    }
}

impl VerifierKey {
    pub fn new(name: &str, alg: u8, key: VerifyingKey) -> Result<VerifierKey, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey(format!("bad key name {name:?}")));
        }
        if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::BadKey(format!("unknown key type {alg:#04x}")));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            alg,
            key_id: key_id(name, alg, key.as_bytes()),
            key,
        })
    }

    /// Reads `<name>+<key ID>+base64(type || key)`; the key ID must be the
    /// one the rest gives.
    pub fn parse(s: &str) -> Result<VerifierKey, NoteError> {
        let bad = |why: &str| NoteError::BadKey(why.to_owned());
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<key ID>+<key>"));
        };
        if id.len() != 8
            || !id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad("the key ID is not 8 lowercase hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("bad key ID"))?;
        let raw = B64.decode(b64).map_err(|_| bad("the key is not base64"))?;
        if B64.encode(&raw) != b64 {
            return Err(bad("the key is not in canonical base64"));
        }
        let (&alg, key) = raw.split_first().ok_or_else(|| bad("empty key"))?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not an Ed25519 point"))?;
        let k = VerifierKey::new(name, alg, key)?;
        if k.key_id != id {
            return Err(bad("the key ID does not match the name and key"));
        }
        Ok(k)
    }

    /// Verifies `sig` (what follows the key ID) over `msg`.
    fn verify_raw(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

/// The outcome of checking one note's signatures against known keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Keys (by index into the list given) whose signature verified.
    pub by: Vec<usize>,
    /// For cosignatures: the timestamp each verified one carries, in the
    /// same order as `by` (0 for plain Ed25519 signatures).
    pub times: Vec<u64>,
}

/// Checks a note's signatures by `keys`: a line whose name and key ID match
/// a key must verify (else the whole note is refused); lines of unknown
/// keys are ignored, as the spec says; a note no known key signed is
/// refused. One key counts once.
pub fn verify(note: &Note, keys: &[VerifierKey]) -> Result<Verified, NoteError> {
    let mut out = Verified {
        by: Vec::new(),
        times: Vec::new(),
    };
    for sig in &note.sigs {
        let Some(i) = keys
            .iter()
            .position(|k| k.name == sig.name && k.key_id == sig.key_id)
        else {
            continue;
        };
        let k = &keys[i];
        let (ok, time) = match k.alg {
            ALG_ED25519 => (k.verify_raw(note.text.as_bytes(), &sig.sig), 0),
            ALG_COSIGNATURE_V1 => match sig.sig.split_at_checked(8) {
                Some((t, s)) => {
                    let t = u64::from_be_bytes(t.try_into().expect("8 bytes"));
                    // tlog-cosignature: the time is at most 2^63 - 1.
                    let ok = i64::try_from(t).is_ok()
                        && k.verify_raw(&cosigned_message(t, &note.text), s);
                    (ok, t)
                }
                None => (false, 0),
            },
            _ => (false, 0),
        };
        if !ok {
            return Err(malformed(format!(
                "the signature of known key {k} does not verify"
            )));
        }
        if !out.by.contains(&i) {
            out.by.push(i);
            out.times.push(time);
        }
    }
    if out.by.is_empty() {
        return Err(malformed("no known key signed it"));
    }
    Ok(out)
}

/// What a `cosignature/v1` signs: the header, the time, the checkpoint text.
pub fn cosigned_message(time: u64, checkpoint_text: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {time}\n{checkpoint_text}").into_bytes()
}

/// Signs `text` with an Ed25519 key named `name` (a log's checkpoint).
pub fn sign(name: &str, key: &SigningKey, text: &str) -> NoteSignature {
    NoteSignature {
        name: name.to_owned(),
        key_id: key_id(name, ALG_ED25519, key.verifying_key().as_bytes()),
        sig: key.sign(text.as_bytes()).to_bytes().to_vec(),
    }
}

/// A witness's `cosignature/v1` over a checkpoint's text at `time`.
pub fn cosign(name: &str, key: &SigningKey, checkpoint_text: &str, time: u64) -> NoteSignature {
    let mut sig = time.to_be_bytes().to_vec();
    sig.extend_from_slice(
        &key.sign(&cosigned_message(time, checkpoint_text))
            .to_bytes(),
    );
    NoteSignature {
        name: name.to_owned(),
        key_id: key_id(name, ALG_COSIGNATURE_V1, key.verifying_key().as_bytes()),
        sig,
    }
}

/// A checkpoint (c2sp.org/tlog-checkpoint): the log's origin, its size and
/// its head, then optional extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: crate::format::merkle::Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Reads a checkpoint from a note's text (after its signatures were
    /// checked): exact decimal size, 32-byte base64 head.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: &str| NoteError::BadCheckpoint(why.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("it does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("the tree size is not a plain decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad("the tree size is too large"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash"))?;
        let raw = B64
            .decode(root)
            .map_err(|_| bad("the root hash is not base64"))?;
        let root: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("the root hash is not 32 bytes"))?;
        if B64.encode(root) != body.split('\n').nth(2).unwrap_or_default() {
            return Err(bad("the root hash is not in canonical base64"));
        }
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The checkpoint's text (what its log and witnesses sign).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod, sumdb/note/note_test.go (BSD-style licence): keys,
    // text and signatures, used as data.
    const PETER_KEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_KEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn note(sigs: &str) -> Vec<u8> {
        format!("{TEXT}\n{sigs}").into_bytes()
    }

    #[test]
    fn go_sumdb_keys_and_signatures_interoperate() {
        let peter = VerifierKey::parse(PETER_KEY).expect("peter");
        let enoch = VerifierKey::parse(ENOCH_KEY).expect("enoch");
        assert_eq!(peter.to_string(), PETER_KEY);
        assert_eq!(peter.key_id, 0xc74f20a3);
        let n = Note::parse(&note(&format!("{PETER_SIG}{ENOCH_SIG}"))).expect("parse");
        assert_eq!(n.text, TEXT);
        assert_eq!(n.to_bytes(), note(&format!("{PETER_SIG}{ENOCH_SIG}")));
        let keys = [peter.clone(), enoch];
        assert_eq!(verify(&n, &keys).expect("verify").by, [0, 1]);
        // An unknown key's line is ignored; a known key's bad line refuses;
        // a note no known key signed is refused.
        assert_eq!(verify(&n, &keys[..1]).expect("verify").by, [0]);
        assert!(verify(&n, &[]).is_err());
        let mut bad = n.clone();
        bad.sigs[0].sig[10] ^= 1;
        assert!(verify(&bad, &keys).is_err());
        let mut other = n;
        other.text = other.text.replace("problem", "answer");
        assert!(verify(&other, &[peter]).is_err());
    }

    #[test]
    fn mangled_verifier_keys_are_refused() {
        let b = PETER_KEY.as_bytes();
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&m) {
                assert!(VerifierKey::parse(s).is_err(), "{s}");
            }
        }
        assert!(VerifierKey::parse(&PETER_KEY[..PETER_KEY.len() - 1]).is_err());
        // Go's cases: a wrong-length key and an unknown type, each with a
        // key ID made to fit.
        assert!(VerifierKey::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err());
        assert!(VerifierKey::parse(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        )
        .is_err());
    }

    #[test]
    fn malformed_notes_are_refused() {
        let bad: Vec<Vec<u8>> = vec![
            TEXT.as_bytes().to_vec(),
            format!("{TEXT}\n").into_bytes(),
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]).into_bytes(),
            format!("\x01{TEXT}\n{PETER_SIG}").into_bytes(),
            format!("{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n").into_bytes(),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n").into_bytes(),
            note(&PETER_SIG.repeat(MAX_SIGNATURES + 1)),
            vec![0xff; 10],
        ];
        for b in bad {
            assert!(
                Note::parse(&b).is_err(),
                "{:?}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn checkpoints_round_trip_and_are_read_strictly() {
        let text = "example.com/log\n42\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\next one\n";
        let c = Checkpoint::parse(text).expect("checkpoint");
        assert_eq!((c.origin.as_str(), c.size), ("example.com/log", 42));
        assert_eq!(c.extensions, ["ext one"]);
        assert_eq!(c.to_text(), text);
        for bad in [
            "example.com/log\n042\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
            "example.com/log\n-1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
            "example.com/log\n42\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVc=\n",
            "example.com/log\n42\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=",
            "\n42\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
            "example.com/log\n42\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A log signs its checkpoint, a witness cosigns it; a host holding the
    /// witness key counts the cosignature with its time, and a cosignature
    /// lifted onto another checkpoint does not verify.
    #[test]
    fn cosignatures_bind_the_time_and_the_checkpoint() {
        let log = SigningKey::from_bytes(&[7; 32]);
        let wit = SigningKey::from_bytes(&[9; 32]);
        let cp = Checkpoint {
            origin: "npcnix.test/prod".into(),
            size: 3,
            root: [5; 32],
            extensions: vec![],
        };
        let text = cp.to_text();
        let n = Note {
            text: text.clone(),
            sigs: vec![
                sign("npcnix.test/prod", &log, &text),
                cosign("witness.test/a", &wit, &text, 1_800_000_000),
            ],
        };
        let n = Note::parse(&n.to_bytes()).expect("round trip");
        let keys = [
            VerifierKey::new("npcnix.test/prod", ALG_ED25519, log.verifying_key()).expect("k"),
            VerifierKey::new("witness.test/a", ALG_COSIGNATURE_V1, wit.verifying_key()).expect("k"),
        ];
        let v = verify(&n, &keys).expect("verify");
        assert_eq!(v.by, [0, 1]);
        assert_eq!(v.times, [0, 1_800_000_000]);
        // The same cosignature on a rewritten checkpoint.
        let forged = Checkpoint { size: 4, ..cp };
        let moved = Note {
            text: forged.to_text(),
            sigs: vec![n.sigs[1].clone()],
        };
        assert!(verify(&moved, &keys).is_err());
        // The witness key read as a plain Ed25519 key has another key ID:
        // its cosignature is not taken for a log signature.
        let plain =
            [VerifierKey::new("witness.test/a", ALG_ED25519, wit.verifying_key()).expect("k")];
        assert!(verify(&n, &plain).is_err(), "not signed by any key given");
    }

    /// transparency-dev/formats, note/note_cosigv1_test.go (Apache-2.0),
    /// used as data: a native `cosignature/v1` verifier key (type 0x04), an
    /// Ed25519 one, and a cosignature whose first 8 bytes after the key ID
    /// are its time (1727964367).
    #[test]
    fn transparency_dev_cosignature_keys_and_timestamps_interoperate() {
        let remora = VerifierKey::parse(
            "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        )
        .expect("cosigner key");
        assert_eq!(remora.alg, ALG_COSIGNATURE_V1);
        let test = VerifierKey::parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6");
        // The name+ID+key split takes the first two '+': this key's base64
        // holds a '+', which Go's parser allows (it splits on the first
        // two); ours must too.
        assert_eq!(test.expect("ed25519 key").alg, ALG_ED25519);
        assert!(VerifierKey::parse("rekor.sigstore.dev+12345678+AwEB").is_err());
        let sig = parse_sig_line(
            "— w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==",
        )
        .expect("line");
        assert_eq!(sig.key_id, 0x646846b9);
        assert_eq!(sig.sig.len(), 8 + 64);
        assert_eq!(
            u64::from_be_bytes(sig.sig[..8].try_into().expect("8")),
            1_727_964_367
        );
    }
}
