//! Hostile archives, validly signed by a trusted key (the model: a stolen CI
//! key). Every case runs the extractor in-process on the archive's bytes and
//! must be refused (or — setuid bits — neutralised) with nothing written
//! outside the target; the cases marked `e2e` are also published and pulled
//! through the real binary, which must exit 3 (check `archive-content`)
//! with the destination absent and the host state untouched.
//!
//! Archives are built byte by byte here (raw tar headers), because no sane
//! tar writer produces most of them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// Builds a tar stream by hand.
#[derive(Default)]
struct RawTar {
    buf: Vec<u8>,
}

impl RawTar {
    fn header(&mut self, name: &[u8], kind: u8, size: u64, mode: u32, link: &[u8]) {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().expect("gnu");
            let n = name.len().min(100);
            g.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            g.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
    }

    fn data(&mut self, d: &[u8]) {
        self.buf.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    fn file(mut self, name: &str, content: &[u8], mode: u32) -> Self {
        self.header(name.as_bytes(), b'0', content.len() as u64, mode, b"");
        self.data(content);
        self
    }

    fn dir(mut self, name: &str) -> Self {
        let full = format!("{name}/");
        if full.len() > 100 {
            self = self.gnu_long(b'L', full.as_bytes());
        }
        self.header(full.as_bytes(), b'5', 0, 0o755, b"");
        self
    }

    fn symlink(mut self, name: &str, target: &str) -> Self {
        self.header(name.as_bytes(), b'2', 0, 0o777, target.as_bytes());
        self
    }

    fn special(mut self, name: &str, kind: u8, link: &str) -> Self {
        self.header(name.as_bytes(), kind, 0, 0o644, link.as_bytes());
        self
    }

    fn gnu_long(mut self, kind: u8, value: &[u8]) -> Self {
        let mut v = value.to_vec();
        v.push(0);
        self.header(b"././@LongLink", kind, v.len() as u64, 0o644, b"");
        self.data(&v);
        self
    }

    fn pax(mut self, kind: u8, records: &[(&str, &str)]) -> Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rec_len = |n: usize| format!("{n} {k}={v}\n").len();
            let mut n = rec_len(0);
            while rec_len(n) != n {
                n = rec_len(n);
            }
            body.extend_from_slice(format!("{n} {k}={v}\n").as_bytes());
        }
        self.header(b"PaxHeaders/x", kind, body.len() as u64, 0o644, b"");
        self.data(&body);
        self
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends the end-of-archive marker.
    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 1024]);
        self.buf
    }

    /// The base of every case: a valid flake.nix first.
    fn flake() -> Self {
        RawTar::default().file("flake.nix", b"{ outputs = _: { }; }\n", 0o644)
    }
}

fn zstd(tar: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(tar, 3).expect("zstd")
}

/// Signs and publishes `archive` as version 1 of `prod`, pulls it with
/// `extra` args, and returns the run. Also plants a sentinel directory to
/// prove nothing is written outside the destination.
fn publish_and_pull(archive: &[u8], extra: &[&str]) -> (Kit, Run) {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("stolen-ci-key");
    let sk = kit.secret_key(&key);
    fs::create_dir_all(kit.path("outside")).expect("mkdir");
    let path = kit.path("hostile.tar.zst");
    fs::write(&path, archive).expect("write");
    let aref = kit.put_archive("prod", &path);
    let st = statement("prod", 1, None, aref, now());
    kit.put_raw("prod", 1, &signed_bundle(&st, &sk));
    let before = kit.state_bytes();
    let run = kit.pull("prod", &pubkey, "dst", extra);
    if run.code != 0 {
        assert_eq!(
            kit.state_bytes(),
            before,
            "state changed by a refused archive"
        );
    }
    (kit, run)
}

/// Limits from `--limit KEY=VALUE` arguments, as the CLI would build them.
fn limits(extra: &[&str]) -> npcnix::archive::Limits {
    let mut o = serde_json::Map::new();
    for pair in extra.chunks(2) {
        assert_eq!(pair[0], "--limit", "only --limit is supported here");
        let (k, v) = pair[1].split_once('=').expect("KEY=VALUE");
        o.insert(k.into(), v.parse::<u64>().expect("number").into());
    }
    serde_json::from_value::<npcnix::archive::limits::LimitOverrides>(o.into())
        .expect("overrides")
        .resolve()
        .expect("limits")
}

/// Runs the extractor on `archive` in-process; returns the refusal message.
#[track_caller]
fn refused_in_process(archive: &[u8], extra: &[&str], reason: &str) -> Kit {
    let kit = Kit::new();
    fs::create_dir_all(kit.path("outside")).expect("mkdir");
    let root = kit.path("tree");
    fs::create_dir_all(&root).expect("mkdir");
    match npcnix::archive::extract(archive, &root, &limits(extra)) {
        Err(npcnix::archive::ExtractError::Refused(m)) => {
            assert!(m.contains(reason), "expected {reason:?} in: {m}")
        }
        other => panic!("expected a refusal ({reason}), got {other:?}"),
    }
    assert_eq!(
        fs::read_dir(kit.path("outside")).expect("outside").count(),
        0,
        "wrote outside"
    );
    assert!(!std::path::Path::new("/tmp/npcnix-absolute-escape").exists());
    kit
}

/// The common assertions for a refused hostile archive (in-process).
#[track_caller]
fn assert_refused(archive: &[u8], extra: &[&str], reason: &str) -> Kit {
    refused_in_process(archive, extra, reason)
}

/// In-process, and end to end through the binary: exit 3, one stderr line,
/// nothing created, state untouched.
#[track_caller]
fn assert_refused_e2e(archive: &[u8], extra: &[&str], reason: &str) -> Kit {
    refused_in_process(archive, extra, reason);
    let (kit, run) = publish_and_pull(archive, extra);
    let run = run.rejected("archive-content");
    assert!(
        run.stderr.contains(reason),
        "expected {reason:?} in: {}",
        run.stderr
    );
    kit.assert_nothing_left("dst");
    assert_eq!(
        fs::read_dir(kit.path("outside")).expect("outside").count(),
        0,
        "wrote outside"
    );
    assert!(!std::path::Path::new("/tmp/npcnix-absolute-escape").exists());
    kit
}

#[test]
fn dotdot_path_is_refused() {
    assert_refused_e2e(
        &zstd(
            &RawTar::flake()
                .file("../outside/pwned", b"x", 0o644)
                .finish(),
        ),
        &[],
        "`..`",
    );
}

#[test]
fn dotdot_inside_a_path_is_refused() {
    let t = RawTar::flake()
        .dir("a")
        .file("a/../../outside/pwned", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "`..`");
}

#[test]
fn absolute_path_is_refused() {
    assert_refused(
        &zstd(
            &RawTar::flake()
                .file("/tmp/npcnix-absolute-escape", b"x", 0o644)
                .finish(),
        ),
        &[],
        "absolute",
    );
}

#[test]
fn symlink_pointing_outside_is_refused() {
    let t = RawTar::flake().symlink("escape", "../outside").finish();
    assert_refused(&zstd(&t), &[], "escapes");
}

#[test]
fn symlink_outside_then_write_through_it_is_refused() {
    // Even an absolute symlink followed by a write through it: the link is
    // refused first, and the write would be refused because its parent is
    // not a directory this archive created.
    let t = RawTar::flake()
        .symlink("escape", "/tmp")
        .file("escape/npcnix-absolute-escape", b"x", 0o644)
        .finish();
    assert_refused_e2e(&zstd(&t), &[], "absolute");
}

#[test]
fn write_through_an_in_tree_symlink_is_refused() {
    let t = RawTar::flake()
        .dir("real")
        .symlink("alias", "real")
        .file("alias/x", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "parent is not a directory");
}

#[test]
fn symlink_to_a_parent_directory_is_refused() {
    let t = RawTar::flake().symlink("up", "..").finish();
    assert_refused(&zstd(&t), &[], "escapes");
    // Climbing through a symlink-to-self (`d -> .`, then `d/..`) is refused
    // too, although it looks in-tree lexically.
    let t = RawTar::flake()
        .dir("sub")
        .symlink("sub/d", "..")
        .symlink("sub/e", "d/..")
        .finish();
    assert_refused(&zstd(&t), &[], "escapes");
}

#[test]
fn symlink_and_directory_with_the_same_name_are_refused() {
    let t = RawTar::flake().symlink("a", "flake.nix").dir("a").finish();
    assert_refused(&zstd(&t), &[], "duplicate");
    let t = RawTar::flake().dir("a").symlink("a", "flake.nix").finish();
    assert_refused(&zstd(&t), &[], "duplicate");
}

#[test]
fn hardlink_is_refused() {
    assert_refused_e2e(
        &zstd(&RawTar::flake().special("h", b'1', "flake.nix").finish()),
        &[],
        "hardlinks",
    );
    // A hardlink to a host file would be worse still.
    assert_refused(
        &zstd(&RawTar::flake().special("h", b'1', "/etc/shadow").finish()),
        &[],
        "hardlinks",
    );
}

#[test]
fn character_device_is_refused() {
    assert_refused(
        &zstd(&RawTar::flake().special("mem", b'3', "").finish()),
        &[],
        "character devices",
    );
}

#[test]
fn block_device_is_refused() {
    assert_refused(
        &zstd(&RawTar::flake().special("sda", b'4', "").finish()),
        &[],
        "block devices",
    );
}

#[test]
fn fifo_is_refused() {
    assert_refused(
        &zstd(&RawTar::flake().special("pipe", b'6', "").finish()),
        &[],
        "FIFOs",
    );
}

#[test]
fn gnu_sparse_file_is_refused() {
    assert_refused(
        &zstd(&RawTar::flake().special("sparse", b'S', "").finish()),
        &[],
        "sparse",
    );
}

#[test]
fn setuid_and_setgid_bits_are_stripped() {
    let t = RawTar::flake()
        .file("suid", b"#!/bin/sh\n", 0o4755)
        .file("sgid", b"x", 0o2644)
        .file("sticky", b"x", 0o1777)
        .finish();
    let (kit, run) = publish_and_pull(&zstd(&t), &[]);
    run.ok();
    let mode = |n: &str| {
        fs::metadata(kit.path("dst").join(n))
            .expect("md")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o644);
    assert_eq!(mode("sticky"), 0o755);
}

/// Files are created with their final mode where the umask leaves it
/// alone (no `fchmod` per file); under a umask that strips bits the modes
/// still come out exact, for both modes and in subdirectories.
#[test]
fn file_modes_are_exact_whatever_the_umask() {
    let t = RawTar::flake()
        .dir("d")
        .file("d/a", b"x", 0o644)
        .file("d/run", b"#!/bin/sh\n", 0o755)
        .file("b", b"x", 0o600)
        .file("run2", b"#!/bin/sh\n", 0o700)
        .finish();
    for umask in ["077", "022", "027", "002"] {
        let kit = Kit::new();
        let (key, pubkey) = kit.keygen("ci");
        let sk = kit.secret_key(&key);
        let path = kit.path("a.tar.zst");
        fs::write(&path, zstd(&t)).expect("write");
        let aref = kit.put_archive("prod", &path);
        kit.put_raw(
            "prod",
            1,
            &signed_bundle(&statement("prod", 1, None, aref, now()), &sk),
        );
        let npcnix = kit.cmd();
        let mut sh = std::process::Command::new("sh");
        for (k, v) in npcnix.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        let url = kit.url("prod");
        let dst = kit.path("dst");
        let out = sh
            .current_dir(kit.path(""))
            .args(["-c", &format!("umask {umask} && exec \"$0\" \"$@\"")])
            .args([
                BIN,
                "pull",
                "--remote",
                &url,
                "--trusted-key",
                &pubkey,
                "--dst",
            ])
            .arg(&dst)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "umask {umask}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = |n: &str| fs::metadata(dst.join(n)).expect("md").permissions().mode() & 0o7777;
        for (n, m) in [
            ("d/a", 0o644),
            ("d/run", 0o755),
            ("b", 0o644),
            ("run2", 0o755),
            ("flake.nix", 0o644),
        ] {
            assert_eq!(mode(n), m, "umask {umask}: {n}");
        }
    }
}

#[test]
fn duplicate_entries_are_refused() {
    let t = RawTar::flake()
        .file("flake.nix", b"{ evil = true; }", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "duplicate");
}

/// The file system finds duplicates on the writing thread, while the
/// parsing thread has already read on: a forbidden entry after a duplicate
/// must not be reported instead of it (the first refusal in stream order
/// is the one an operator needs), neither after batches of entries, nor
/// when the writer stopped at a duplicate batches before the parse ends.
#[test]
fn a_forbidden_entry_after_a_duplicate_does_not_hide_it() {
    let t = RawTar::flake()
        .file("flake.nix", b"{ evil = true; }", 0o644)
        .special("mem", b'3', "")
        .finish();
    assert_refused(&zstd(&t), &[], "duplicate");
    let mut many = RawTar::flake().dir("d");
    for i in 0..2_000 {
        many = many.file(&format!("d/f{i}"), format!("{i}\n").as_bytes(), 0o644);
    }
    let t = many
        .file("d/f1999", b"again", 0o644)
        .special("h", b'1', "flake.nix")
        .finish();
    assert_refused(&zstd(&t), &[], "duplicate");
    // The writer fails on the first batch while the parse goes on for
    // another fifteen: the parse then finds the writer gone, and the
    // writer's refusal, not "the writing thread stopped", is reported.
    let mut early = RawTar::flake()
        .file("flake.nix", b"{ evil = true; }", 0o644)
        .dir("d");
    for i in 0..2_000 {
        early = early.file(&format!("d/f{i}"), format!("{i}\n").as_bytes(), 0o644);
    }
    assert_refused(&zstd(&early.finish()), &[], "duplicate");
}

#[test]
fn pax_header_with_a_hostile_path_is_refused() {
    let t = RawTar::flake()
        .pax(b'x', &[("path", "../outside/pwned")])
        .file("innocent", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "`..`");
}

#[test]
fn pax_header_with_a_hostile_linkpath_is_refused() {
    let t = RawTar::flake()
        .pax(b'x', &[("linkpath", "/etc/shadow")])
        .symlink("innocent", "flake.nix")
        .finish();
    assert_refused(&zstd(&t), &[], "absolute");
}

#[test]
fn pax_header_overriding_the_size_is_refused() {
    // A PAX `size` changes where the next header starts: two parsers could
    // disagree about the archive's content. Refused outright.
    let t = RawTar::flake()
        .pax(b'x', &[("size", "0")])
        .file("f", b"hidden", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "PAX key \"size\"");
}

#[test]
fn global_pax_header_is_refused() {
    let t = RawTar::flake().pax(b'g', &[("path", "x")]).finish();
    assert_refused(&zstd(&t), &[], "global PAX");
}

#[test]
fn gnu_long_name_with_a_hostile_path_is_refused() {
    let t = RawTar::flake()
        .gnu_long(b'L', b"/tmp/npcnix-absolute-escape")
        .file("innocent", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "absolute");
    let t = RawTar::flake()
        .gnu_long(b'L', b"../../outside/x")
        .file("innocent", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "`..`");
}

#[test]
fn gnu_long_link_escaping_the_tree_is_refused() {
    let t = RawTar::flake()
        .gnu_long(
            b'K',
            format!("{}../../../../etc", "a/".repeat(0)).as_bytes(),
        )
        .symlink("innocent", "flake.nix")
        .finish();
    assert_refused(&zstd(&t), &[], "escapes");
}

#[test]
fn very_long_name_is_refused_without_reading_it_whole() {
    let t = RawTar::flake()
        .gnu_long(b'L', &vec![b'a'; 5000])
        .file("x", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "limit");
    // A long-name header claiming a gigabyte is refused from its header.
    let mut t = RawTar::flake();
    t.header(b"././@LongLink", b'L', 1 << 30, 0o644, b"");
    assert_refused(&zstd(&t.finish()), &[], "limit");
}

#[test]
fn very_deep_nesting_is_refused() {
    let mut t = RawTar::flake();
    let mut p = String::new();
    for i in 0..70 {
        if i > 0 {
            p.push('/');
        }
        p.push('d');
        t = t.dir(&p);
    }
    assert_refused(&zstd(&t.finish()), &[], "deeper than 64");
}

#[test]
fn many_tiny_entries_are_refused_past_the_limit() {
    let mut t = RawTar::flake();
    for i in 0..300 {
        t = t.file(&format!("f{i}"), b"", 0o644);
    }
    assert_refused_e2e(
        &zstd(&t.finish()),
        &["--limit", "entries=100"],
        "more than 100 entries",
    );
}

#[test]
fn decompression_bomb_file_is_refused_by_its_header() {
    // A 3 GiB file of zeros compresses to a few hundred KiB.
    let kit_bytes = {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("enc");
        let mut t = RawTar::flake();
        let size: u64 = 3 << 30;
        t.header(b"bomb", b'0', size, 0o644, b"");
        enc.write_all(&t.buf).expect("w");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            enc.write_all(&zeros).expect("w");
        }
        enc.write_all(&[0u8; 1024]).expect("w");
        enc.finish().expect("finish")
    };
    assert!(
        kit_bytes.len() < 1 << 20,
        "bomb is {} bytes",
        kit_bytes.len()
    );
    assert_refused_e2e(&kit_bytes, &[], "limits.file_bytes");
}

#[test]
fn decompression_bomb_of_many_files_hits_the_total_limit() {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("enc");
    let mut t = RawTar::flake();
    let zeros = vec![0u8; 1 << 20];
    for i in 0..40 {
        t.header(format!("z{i}").as_bytes(), b'0', 1 << 20, 0o644, b"");
        enc.write_all(&t.buf).expect("w");
        t.buf.clear();
        enc.write_all(&zeros).expect("w");
    }
    enc.write_all(&[0u8; 1024]).expect("w");
    let bytes = enc.finish().expect("finish");
    assert_refused(
        &bytes,
        &["--limit", "unpacked_bytes=16777216"],
        "limits.unpacked_bytes",
    );
}

#[test]
fn zstd_frame_demanding_a_huge_window_is_refused() {
    let t = RawTar::flake().finish();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("enc");
    enc.window_log(30).expect("window");
    enc.long_distance_matching(true).expect("ldm");
    enc.write_all(&t).expect("w");
    let bytes = enc.finish().expect("finish");
    assert_refused(&bytes, &[], "not a valid tar.zst");
    // Control: the same archive is fine once the operator allows the window,
    // so the refusal above was the window limit and nothing else.
    let (_kit, run) = publish_and_pull(&bytes, &["--limit", "zstd_window_log=30"]);
    run.ok();
}

/// The default window limit is 2^21 (2 MiB), the window npcnix packs with
/// and what keeps a pull under 12 MiB: a frame that asks for 4 MiB (as
/// `zstd -19` makes) is refused unless the host raises the limit.
#[test]
fn zstd_frame_with_a_window_above_the_default_is_refused_unless_raised() {
    assert_eq!(npcnix::archive::Limits::default().zstd_window_log, 21);
    let t = RawTar::flake().file("f", b"data", 0o644).finish();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("enc");
    enc.window_log(22).expect("window");
    enc.write_all(&t).expect("w");
    let bytes = enc.finish().expect("finish");
    assert_refused(&bytes, &[], "not a valid tar.zst");
    let kit = Kit::new();
    let root = kit.path("tree");
    fs::create_dir_all(&root).expect("mkdir");
    npcnix::archive::extract(
        &bytes[..],
        &root,
        &limits(&["--limit", "zstd_window_log=22"]),
    )
    .expect("accepted once the host allows 2^22");
    // npcnix's own archives fit the default (window 2^21, any size).
    let src = kit.flake("src", "w");
    let out = kit.pack(&src, "own.tar.zst");
    let dst = kit.path("own");
    fs::create_dir_all(&dst).expect("mkdir");
    npcnix::archive::extract(
        &fs::read(out).expect("read")[..],
        &dst,
        &npcnix::archive::Limits::default(),
    )
    .expect("own archive");
}

#[test]
fn truncated_archive_is_refused() {
    let t = RawTar::flake()
        .file("big", &vec![7u8; 100_000], 0o644)
        .finish();
    let z = zstd(&t);
    assert_refused_e2e(&z[..z.len() / 2], &[], "not a valid tar.zst");
    // Truncated tar inside a complete zstd frame.
    assert_refused(&zstd(&t[..t.len() - 50_000]), &[], "");
}

#[test]
fn trailing_garbage_after_the_zstd_frame_is_refused() {
    let mut z = zstd(&RawTar::flake().finish());
    z.extend_from_slice(b"GARBAGE AFTER THE FRAME");
    assert_refused(&z, &[], "exactly one zstd frame");
}

#[test]
fn data_after_the_tar_end_marker_is_refused() {
    let t = RawTar::flake().raw(&[0u8; 1024]).raw(b"hidden payload");
    assert_refused(&zstd(&t.finish()), &[], "data after the end");
}

#[test]
fn not_zstd_at_all_is_refused() {
    assert_refused(&RawTar::flake().finish(), &[], "not a zstd frame");
}

#[test]
fn control_characters_in_names_are_refused() {
    let t = RawTar::flake().file("evil\nname", b"x", 0o644).finish();
    assert_refused(&zstd(&t), &[], "control character");
}

#[test]
fn the_baseline_archive_is_accepted() {
    // Guards the corpus: the base every case builds on must pass, so each
    // refusal above is caused by its own hostile part.
    let t = RawTar::flake()
        .dir("d")
        .file("d/x", b"ok", 0o755)
        .symlink("d/l", "x")
        .symlink("l2", "d/x")
        .finish();
    let (kit, run) = publish_and_pull(&zstd(&t), &[]);
    run.ok();
    assert_eq!(fs::read_to_string(kit.path("dst/l2")).expect("read"), "ok");
}

#[test]
fn directory_entry_with_hidden_data_is_refused() {
    // A directory header with a size: the tar reader would decompress and
    // skip the data unseen, a bomb outside every byte count.
    let mut t = RawTar::flake();
    t.header(b"d/", b'5', 4096, 0o755, b"");
    t.data(&[0u8; 4096]);
    assert_refused(&zstd(&t.finish()), &[], "only regular files may carry data");
}

#[test]
fn overlong_path_component_is_refused_not_an_io_error() {
    let long = "n".repeat(300);
    let t = RawTar::flake()
        .gnu_long(b'L', long.as_bytes())
        .file("x", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "longer than 255");
}

/// A zstd skippable frame (magic 0x184D2A50) carrying `payload`.
fn skippable(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x50, 0x2a, 0x4d, 0x18];
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn smuggled_payload_in_a_skippable_frame_before_the_data_is_refused() {
    let mut a = skippable(&[0xaa; 4096]);
    a.extend(zstd(&RawTar::flake().finish()));
    assert_refused_e2e(&a, &[], "skippable frame");
}

#[test]
fn smuggled_payload_in_a_skippable_frame_after_the_data_is_refused() {
    let mut a = zstd(&RawTar::flake().finish());
    a.extend(skippable(&[0xaa; 4096]));
    assert_refused(&a, &[], "exactly one zstd frame");
}

#[test]
fn second_zstd_frame_after_the_archive_is_refused() {
    // Even a frame of zeros, which a multi-frame decoder would read as tar
    // padding.
    let mut a = zstd(&RawTar::flake().finish());
    a.extend(zstd(&[0u8; 1024]));
    assert_refused(&a, &[], "exactly one zstd frame");
}

// ---------------------------------------------------------------------------
// Review of the fd-relative extractor (branch perf2): the duplicate/parent
// checks now live in one hash table with a "directory" bit, and parents are
// reached through a cached chain of directory fds. These pin the behaviour.

#[test]
fn file_then_directory_with_the_same_name_is_refused() {
    let t = RawTar::flake().file("x", b"x", 0o644).dir("x").finish();
    assert_refused(&zstd(&t), &[], "duplicate");
}

#[test]
fn directory_then_file_with_the_same_name_is_refused() {
    let t = RawTar::flake().dir("x").file("x", b"x", 0o644).finish();
    assert_refused(&zstd(&t), &[], "duplicate");
    let t = RawTar::flake().dir("x").symlink("x", "flake.nix").finish();
    assert_refused(&zstd(&t), &[], "duplicate");
}

#[test]
fn entry_below_a_regular_file_is_refused() {
    let t = RawTar::flake()
        .file("f", b"x", 0o644)
        .file("f/x", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "parent is not a directory");
    let t = RawTar::flake().file("f", b"x", 0o644).dir("f/d").finish();
    assert_refused(&zstd(&t), &[], "parent is not a directory");
}

#[test]
fn entry_below_a_case_variant_of_a_directory_is_refused() {
    let t = RawTar::flake()
        .dir("Dir")
        .file("dir/x", b"x", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "parent is not a directory");
}

#[test]
fn directory_or_symlink_below_an_in_tree_symlink_is_refused() {
    let t = RawTar::flake()
        .dir("real")
        .symlink("alias", "real")
        .dir("alias/sub")
        .finish();
    assert_refused(&zstd(&t), &[], "parent is not a directory");
    let t = RawTar::flake()
        .dir("real")
        .symlink("alias", "real")
        .symlink("alias/l", "../flake.nix")
        .finish();
    assert_refused(&zstd(&t), &[], "parent is not a directory");
    // The symlink pointing at a deeper directory of the chain the
    // extractor holds open does not help either.
    let t = RawTar::flake()
        .dir("a")
        .dir("a/b")
        .file("a/b/x", b"x", 0o644)
        .symlink("a/l", "b")
        .file("a/l/y", b"y", 0o644)
        .finish();
    assert_refused(&zstd(&t), &[], "parent is not a directory");
}

/// Entries out of tree order (the cached directory chain is truncated and
/// reopened back and forth) each land in their own parent.
#[test]
fn entries_interleaved_across_directories_land_in_their_own_parent() {
    let t = RawTar::flake()
        .dir("a")
        .dir("a/b")
        .dir("c")
        .file("a/b/x", b"abx", 0o644)
        .file("c/y", b"cy", 0o644)
        .dir("a/b/d")
        .file("a/b/d/z", b"abdz", 0o644)
        .file("a/w", b"aw", 0o644)
        .dir("c/b")
        .file("c/b/x", b"cbx", 0o644)
        .file("x", b"x", 0o644)
        .finish();
    let kit = Kit::new();
    let root = kit.path("tree");
    fs::create_dir_all(&root).expect("mkdir");
    npcnix::archive::extract(&zstd(&t)[..], &root, &limits(&[])).expect("extract");
    for (p, c) in [
        ("a/b/x", "abx"),
        ("c/y", "cy"),
        ("a/b/d/z", "abdz"),
        ("a/w", "aw"),
        ("c/b/x", "cbx"),
        ("x", "x"),
    ] {
        assert_eq!(fs::read_to_string(root.join(p)).expect(p), c, "{p}");
    }
}

/// The fd-relative extractor keeps one open fd per path component of the
/// current parent. A deep (but allowed: the host raised `limits.depth`)
/// tree must not fail with EMFILE under an ordinary fd limit: before perf2
/// it extracted by path with a constant number of fds.
#[test]
fn deep_tree_within_raised_limits_does_not_exhaust_file_descriptors() {
    let depth = 120;
    let mut t = RawTar::flake();
    let mut p = String::new();
    for i in 0..depth {
        if i > 0 {
            p.push('/');
        }
        p.push('d');
        t = t.dir(&p);
    }
    let t = t.finish();
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    let sk = kit.secret_key(&key);
    let path = kit.path("deep.tar.zst");
    fs::write(&path, zstd(&t)).expect("write");
    let aref = kit.put_archive("prod", &path);
    kit.put_raw(
        "prod",
        1,
        &signed_bundle(&statement("prod", 1, None, aref, now()), &sk),
    );
    let npcnix = kit.cmd();
    let mut sh = std::process::Command::new("sh");
    for (k, v) in npcnix.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let url = kit.url("prod");
    let dst = kit.path("dst");
    // 64 fds: far more than a pull by path needs, fewer than the depth.
    let out = sh
        .current_dir(kit.path(""))
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .args([
            BIN,
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &pubkey,
            "--limit",
            "depth=200",
            "--dst",
        ])
        .arg(&dst)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dst.join(&p).is_dir());
}
