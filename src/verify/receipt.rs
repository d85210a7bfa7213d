//! Verifying a host receipt (`format::receipt`) against a host's key.

use crate::format::keys::PublicKey;
use crate::format::receipt::{self, Receipt};

/// How a receipt failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("{0}")]
    Malformed(String),
    #[error("signature does not verify with the host's key {0}")]
    BadSignature(String),
    #[error("signature is bound to another receipt ({0})")]
    Binding(String),
}

/// Checks the envelope's signature with `key` (prehashed only) and its
/// trusted-comment binding, then parses the receipt; `object_host` is the
/// host ID the object's name claims, `remote` the remote it was read from.
pub fn verify(
    bytes: &[u8],
    key: &PublicKey,
    object_host: &str,
    remote: &str,
) -> Result<Receipt, ReceiptError> {
    let (body, sig_text) =
        receipt::decode(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    let sig = minisign_verify::Signature::decode(&sig_text)
        .map_err(|e| ReceiptError::Malformed(format!("signature: {e}")))?;
    let pk = key
        .to_verifier()
        .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    pk.verify(&body, &sig, false)
        .map_err(|_| ReceiptError::BadSignature(key.key_id.to_string()))?;
    let r = Receipt::parse(&body).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if sig.trusted_comment() != receipt::trusted_comment(&r.host_id, &r.remote, r.seq, &body) {
        return Err(ReceiptError::Binding(
            "the trusted comment names another host, remote, sequence or receipt".into(),
        ));
    }
    if r.remote != remote {
        return Err(ReceiptError::Binding(format!(
            "the host signed it for remote {:?}, not {remote:?} (copied here from another remote)",
            r.remote
        )));
    }
    if r.host_id != object_host {
        return Err(ReceiptError::Binding(format!(
            "receipt of host {:?} stored as {object_host:?}",
            r.host_id
        )));
    }
    if PublicKey::from_base64(&r.public_key).ok().as_ref() != Some(key) {
        return Err(ReceiptError::Binding(
            "the receipt names another public key than the one it verifies with".into(),
        ));
    }
    Ok(r)
}

/// The public key a receipt claims (for trust on first use), read without
/// verifying anything else.
pub fn claimed_key(bytes: &[u8]) -> Result<PublicKey, ReceiptError> {
    let (body, _) = receipt::decode(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    let r = Receipt::parse(&body).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    PublicKey::from_base64(&r.public_key).map_err(|e| ReceiptError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::SecretKey;
    use crate::format::receipt::RECEIPT_TYPE;

    fn signed(sk: &SecretKey, host: &str, seq: u64) -> Vec<u8> {
        let r = Receipt {
            kind: RECEIPT_TYPE.into(),
            host_id: host.into(),
            remote: "prod".into(),
            configuration: "web".into(),
            active: None,
            highest_verified: Some(3),
            result: "activated".into(),
            check: None,
            about_version: Some(3),
            bad: vec![],
            waiting_until: None,
            probation: None,
            hold: None,
            mirror: None,
            log: None,
            time: 1,
            seq,
            npcnix_version: "0.1.0".into(),
            public_key: sk.public_key().to_base64(),
        };
        let body = r.to_bytes();
        let sig = crate::format::sign::sign_minisign(
            sk,
            &body,
            &receipt::trusted_comment(host, "prod", seq, &body),
        );
        receipt::encode(&body, &sig)
    }

    #[test]
    fn a_receipt_verifies_with_its_hosts_key_only() {
        let sk = SecretKey::generate().expect("key");
        let other = SecretKey::generate().expect("key");
        let bytes = signed(&sk, "web-1", 7);
        assert_eq!(
            verify(&bytes, &sk.public_key(), "web-1", "prod")
                .expect("ok")
                .seq,
            7
        );
        assert!(matches!(
            verify(&bytes, &other.public_key(), "web-1", "prod"),
            Err(ReceiptError::BadSignature(_))
        ));
        // Stored under another host's name: a replay across hosts.
        assert!(matches!(
            verify(&bytes, &sk.public_key(), "web-2", "prod"),
            Err(ReceiptError::Binding(_))
        ));
        assert_eq!(claimed_key(&bytes).expect("key"), sk.public_key());
    }

    #[test]
    fn forged_receipt_signed_by_another_key_claiming_the_host_is_refused() {
        let sk = SecretKey::generate().expect("key");
        let forger = SecretKey::generate().expect("key");
        let forged = signed(&forger, "web-1", 99);
        assert!(verify(&forged, &sk.public_key(), "web-1", "prod").is_err());
    }

    #[test]
    fn receipt_copied_from_another_remote_is_refused() {
        // A host following `staging` and `prod` with one key: its staging
        // receipt, copied into prod's store, must not speak for prod.
        let sk = SecretKey::generate().expect("key");
        let staging = signed(&sk, "web-1", 3);
        assert!(matches!(
            verify(&staging, &sk.public_key(), "web-1", "staging"),
            Err(ReceiptError::Binding(_))
        ));
        assert!(verify(&staging, &sk.public_key(), "web-1", "prod").is_ok());
    }
}
