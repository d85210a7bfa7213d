//! Writes signed host receipts for `bench/run`'s fleet section (issue 35):
//! `cargo run --release --example bench_receipts -- DIR N` fills
//! `DIR/hosts/host-00000.json ...` with N receipts of remote `prod`, each
//! signed by its own host key, all reporting version 7, and writes the
//! pinned keys to `DIR.host-keys` (`host_id RW...` lines).
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use npcnix::format::digest::Digest;
use npcnix::format::keys::SecretKey;
use npcnix::format::receipt::{self, Receipt, VersionRef, RECEIPT_TYPE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next()) else {
        return Err("usage: bench_receipts DIR N".into());
    };
    let n: usize = n.parse()?;
    let hosts = std::path::Path::new(&dir).join("hosts");
    std::fs::create_dir_all(&hosts)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut pins = String::new();
    for i in 0..n {
        let id = format!("host-{i:05}");
        let sk = SecretKey::generate()?;
        let r = Receipt {
            kind: RECEIPT_TYPE.into(),
            host_id: id.clone(),
            remote: "prod".into(),
            configuration: "web".into(),
            active: Some(VersionRef {
                version: 7,
                statement: Digest::of(b"bench statement"),
            }),
            highest_verified: Some(7),
            result: "up-to-date".into(),
            check: None,
            about_version: Some(7),
            bad: Vec::new(),
            waiting_until: None,
            probation: None,
            hold: None,
            mirror: None,
            log: None,
            time: now,
            seq: 1,
            npcnix_version: "bench".into(),
            public_key: sk.public_key().to_base64(),
        };
        let body = r.to_bytes();
        let sig = npcnix::format::sign::sign_minisign(
            &sk,
            &body,
            &receipt::trusted_comment(&id, "prod", 1, &body),
        );
        std::fs::write(
            hosts.join(format!("{id}.json")),
            receipt::encode(&body, &sig),
        )?;
        writeln!(pins, "{id} {}", sk.public_key().to_base64())?;
    }
    std::fs::write(format!("{dir}.host-keys"), pins)?;
    Ok(())
}
