//! Producing minisign signatures (prehashed, `ED`) with ed25519-dalek.
//!
//! Verification deliberately uses a different implementation
//! (`minisign-verify`, see [`crate::verify`]), so a bug in one is unlikely to
//! be masked by the same bug in the other; the interop tests check both
//! against the stock `minisign` tool.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use blake2::{Blake2b512, Digest as _};
use ed25519_dalek::Signer as _;

use crate::format::keys::SecretKey;

/// Signs `message` in minisign's prehashed mode with `trusted_comment`, and
/// returns the text of a `.minisig` file.
pub fn sign_minisign(sk: &SecretKey, message: &[u8], trusted_comment: &str) -> String {
    let prehash = Blake2b512::digest(message);
    let sig = sk.signing_key().sign(&prehash).to_bytes();
    let mut global_msg = Vec::with_capacity(64 + trusted_comment.len());
    global_msg.extend_from_slice(&sig);
    global_msg.extend_from_slice(trusted_comment.as_bytes());
    let global = sk.signing_key().sign(&global_msg).to_bytes();
    let mut line1 = Vec::with_capacity(74);
    line1.extend_from_slice(b"ED");
    line1.extend_from_slice(&sk.key_id.0);
    line1.extend_from_slice(&sig);
    format!(
        "untrusted comment: npcnix signature by key {}\n{}\ntrusted comment: {}\n{}\n",
        sk.key_id,
        B64.encode(line1),
        trusted_comment,
        B64.encode(global)
    )
}
