//! Verified streaming (issue 36) through whole polls: the archive is
//! checked group by group against the signed hash as it arrives and
//! extracted from the stream; a broken connection resumes with a Range
//! read; a store without outboards gets the whole-archive download; a store
//! that rewrites the archive or its outboard is refused, never bypassed.

use super::kit::{Fault, Kit};
use super::lifecycle::refused;
use crate::host::agent::Outcome;
use crate::verify::Check;

/// A file of `n` bytes that zstd cannot shrink much (hex of a BLAKE3
/// stream), so the archive spans several 16 KiB groups.
fn bulky(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut x = blake3::Hasher::new().update(b"bulky").finalize_xof();
    let mut block = [0u8; 64];
    while out.len() < n {
        x.fill(&mut block);
        for b in block {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out.truncate(n);
    out
}

fn publish_bulky(k: &Kit, marker: &str) -> (String, String) {
    let big = bulky(120_000);
    k.publish_with(marker, None, &[("big", &big)]);
    let store = k.root().join("store/archives");
    let mut archive = None;
    let mut outboard = None;
    for e in std::fs::read_dir(&store).expect("archives") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        let stem = name.split('.').next().unwrap_or_default().to_owned();
        if name.ends_with(".tar.zst") {
            archive = Some(stem);
        } else if name.ends_with(".obao") {
            outboard = Some(stem);
        }
    }
    let (a, o) = (archive.expect("archive"), outboard.expect("outboard"));
    assert_eq!(a, o, "the outboard sits next to the archive it describes");
    (
        format!("archives/{a}.tar.zst"),
        format!("archives/{a}.obao"),
    )
}

fn verified_detail(k: &Kit) -> String {
    let e = k.events("verified");
    let last = e.last().expect("a verified event");
    last.detail.clone().unwrap_or_default()
}

/// A host whose agent has started once (`follow` creates the state before
/// its first poll), so refusals on its first polls are not a lost state.
fn started(k: &Kit) {
    crate::host::state::DataDir::open(&k.root().join("data"))
        .expect("data")
        .load()
        .expect("state");
}

fn tmp_is_empty(k: &Kit) -> bool {
    let tmp = k.root().join("data/tmp");
    std::fs::read_dir(&tmp).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn release_is_verified_as_it_streams_and_the_archive_is_never_downloaded_whole() {
    let k = Kit::new(|_| {});
    let (archive, outboard) = publish_bulky(&k, "v1");
    assert_eq!(
        k.poll(&k.agent(&k.config())),
        Ok(Outcome::Activated { version: 1 })
    );
    assert_eq!(k.running_marker(), "v1");
    assert!(
        verified_detail(&k).contains("verified as it streamed"),
        "{}",
        verified_detail(&k)
    );
    let opens = k.opens.lock().expect("opens").clone();
    assert_eq!(
        opens,
        [(outboard, 0), (archive, 0)],
        "the outboard, then one archive stream from the first byte"
    );
    assert!(tmp_is_empty(&k));
}

#[test]
fn store_without_outboards_gets_the_whole_archive_download() {
    let k = Kit::new(|_| {});
    let (_, outboard) = publish_bulky(&k, "v1");
    std::fs::remove_file(k.root().join("store").join(&outboard)).expect("rm");
    assert_eq!(
        k.poll(&k.agent(&k.config())),
        Ok(Outcome::Activated { version: 1 })
    );
    assert!(
        verified_detail(&k).contains("downloaded whole"),
        "{}",
        verified_detail(&k)
    );
}

#[test]
fn connection_broken_mid_archive_resumes_at_the_first_unverified_group() {
    let k = Kit::new(|_| {});
    let (archive, outboard) = publish_bulky(&k, "v1");
    k.set_fault(Fault::CutArchive(40_000));
    assert_eq!(
        k.poll(&k.agent(&k.config())),
        Ok(Outcome::Activated { version: 1 })
    );
    let opens = k.opens.lock().expect("opens").clone();
    // 40,000 bytes arrived: groups 0 and 1 (32 KiB) verified, the third
    // was cut short and is asked for again from its start.
    assert_eq!(
        opens,
        [(outboard, 0), (archive.clone(), 0), (archive, 32_768)]
    );
    assert!(verified_detail(&k).contains("verified as it streamed"));
}

/// The store flips a byte in the middle of the archive: the group holding
/// it is refused before the extractor sees it, and what was extracted from
/// the groups before it is removed with the private temp dir.
#[test]
fn archive_tampered_in_the_store_is_refused_mid_stream_and_nothing_is_kept() {
    let k = Kit::new(|_| {});
    started(&k);
    let (archive, _) = publish_bulky(&k, "v1");
    let path = k.root().join("store").join(&archive);
    let mut bytes = std::fs::read(&path).expect("archive");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    assert_eq!(refused(k.poll(&k.agent(&k.config()))), Check::ArchiveHash);
    assert!(k.remote_state().active.is_none());
    assert!(k.events("activated").is_empty());
    assert!(tmp_is_empty(&k), "the partial tree went with the temp dir");
}

/// The store replaces the archive and its outboard with a consistent pair
/// for other bytes: the forged tree's root is not the signed hash, so the
/// first parent is refused, and the host never falls back to the whole
/// download (which would refuse too, later and at more cost).
#[test]
fn forged_outboard_is_refused_not_bypassed() {
    let k = Kit::new(|_| {});
    started(&k);
    let (archive, outboard) = publish_bulky(&k, "v1");
    let store = k.root().join("store");
    let mut forged = std::fs::read(store.join(&archive)).expect("archive");
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    std::fs::write(store.join(&archive), &forged).expect("write");
    std::fs::write(
        store.join(&outboard),
        crate::format::outboard::of(&forged).bytes,
    )
    .expect("write");
    assert_eq!(refused(k.poll(&k.agent(&k.config()))), Check::ArchiveHash);
    let opens = k.opens.lock().expect("opens").clone();
    assert_eq!(
        opens,
        [(outboard.clone(), 0)],
        "refused before the archive was opened"
    );
    // A truncated outboard likewise.
    std::fs::write(store.join(&outboard), b"short").expect("write");
    assert_eq!(refused(k.poll(&k.agent(&k.config()))), Check::ArchiveHash);
}
