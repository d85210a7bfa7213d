//! The worked example in docs/protocol.md must stay true: its signature
//! verifies, its trusted comment is the one documented, and its archive
//! matches the statement.

use std::fs;

use npcnix::format::keys::PublicKey;
use npcnix::format::statement::{Digest, RemoteName};
use npcnix::verify::{self, Policy};

#[test]
fn protocol_worked_example_verifies() {
    let root = env!("CARGO_MANIFEST_DIR");
    let pk = PublicKey::parse(
        &fs::read_to_string(format!("{root}/keys/example-test-only.pub")).expect("pub"),
    )
    .expect("pk");
    let bundle = fs::read(format!("{root}/docs/example/bundle.json")).expect("bundle");
    let policy = Policy::manual(RemoteName::new("prod").expect("name"), vec![pk]);
    // Signatures only: the example's expiry is allowed to pass.
    let rel = verify::verify_signatures(&policy, &bundle, 1_795_659_302).expect("verifies");
    let statement = fs::read(format!("{root}/docs/example/statement.json")).expect("statement");
    assert_eq!(rel.statement_bytes(), statement);
    let doc = fs::read_to_string(format!("{root}/docs/protocol.md")).expect("doc");
    assert!(doc.contains(&rel.statement_hash().to_hex()));
    assert!(doc.contains(std::str::from_utf8(&statement).expect("utf8").trim_end()));
    let archive = fs::read(format!("{root}/docs/example/archive.tar.zst")).expect("archive");
    assert_eq!(Digest::of(&archive), rel.statement().archive.blake3);
    assert_eq!(archive.len() as u64, rel.statement().archive.size);
}
