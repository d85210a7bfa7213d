//! The S3 and HTTP stores against real servers on 127.0.0.1: moto for the
//! protocol's conditional requests, s3s-fs for credential checks, and a TCP
//! proxy that kills or stalls the server mid-download.

use std::fs;
use std::process::Stdio;

use crate::common::s3::{Moto, Proxy, S3sFs, CUT, PASS, STALL};
use crate::common::*;

/// Environment for talking to moto (it accepts any credentials).
fn s3_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

fn run_s3(kit: &Kit, args: &[&str]) -> Run {
    let mut c = kit.cmd();
    s3_env(&mut c).args(args);
    let o = c.output().expect("run");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn publish(kit: &Kit, url: &str, endpoint: &str, key: &str, src: &std::path::Path) -> Run {
    run_s3(
        kit,
        &[
            "publish",
            "--remote",
            url,
            "--endpoint",
            endpoint,
            "--path-style",
            "--key",
            key,
            "--src",
            src.to_str().expect("utf8"),
        ],
    )
}

fn pull(kit: &Kit, url: &str, endpoint: &str, pubkey: &str, dst: &str) -> Run {
    let dst = kit.path(dst);
    run_s3(
        kit,
        &[
            "pull",
            "--remote",
            url,
            "--endpoint",
            endpoint,
            "--path-style",
            "--trusted-key",
            pubkey,
            "--dst",
            dst.to_str().expect("utf8"),
        ],
    )
}

/// A flake with a 1 MiB incompressible file, so downloads take many reads.
fn big_flake(kit: &Kit, name: &str) -> std::path::PathBuf {
    let src = kit.flake(name, name);
    let mut data = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(src.join("blob.bin"), data).expect("write");
    src
}

#[test]
fn s3_publish_and_pull_round_trip() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    publish(&kit, &url, &moto.endpoint(), &key, &big_flake(&kit, "v1")).ok();
    pull(&kit, &url, &moto.endpoint(), &pubkey, "dst").ok();
    assert_eq!(
        fs::read(kit.path("dst/blob.bin")).expect("blob").len(),
        1 << 20
    );
    // Version 2 chains to 1; the log verifies on S3 too.
    publish(&kit, &url, &moto.endpoint(), &key, &kit.flake("v2", "v2")).ok();
    let log = run_s3(
        &kit,
        &[
            "log",
            "--remote",
            &url,
            "--endpoint",
            &moto.endpoint(),
            "--path-style",
            "--trusted-key",
            &pubkey,
        ],
    )
    .ok();
    assert!(
        log.stdout
            .contains("2 releases; signatures, versions and hash chain verified"),
        "{}",
        log.stdout
    );
}

#[test]
fn unchanged_remote_costs_exactly_one_conditional_request() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    publish(&kit, &url, &moto.endpoint(), &key, &kit.flake("v1", "v1")).ok();
    let pk = fs::read_to_string(&pubkey)
        .expect("pub")
        .lines()
        .nth(1)
        .expect("line")
        .to_owned();
    let fake = kit.path("bin/nixos-rebuild");
    fs::create_dir_all(fake.parent().expect("p")).expect("mkdir");
    fs::write(&fake, crate::common::host::FAKE_REBUILD).expect("write");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = serde_json::json!({
        "format": "npcnix-host-config/v1",
        "remote": {"url": url, "name": "prod", "threshold": 1, "region": "us-east-1",
                   "endpoint": moto.endpoint(), "path_style": true},
        "configuration": "web",
        "trusted_keys": [{"public_key": pk, "remotes": ["prod"], "not_after": null, "comment": null}],
        "state_dir": kit.data_dir(),
    });
    fs::write(
        kit.path("config.json"),
        serde_json::to_vec(&cfg).expect("json"),
    )
    .expect("write");
    let follow = || {
        let mut c = kit.cmd();
        s3_env(&mut c)
            .env("NPCNIX_NIXOS_REBUILD", &fake)
            .env("NPCNIX_TEST_SYSTEM_CONFIG", kit.path("config.json"))
            .args(["follow", "--once", "--json", "--config"])
            .arg(kit.path("config.json"));
        let o = c.output().expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(follow().contains("\"activated\""));
    let before = moto.requests_since(0, 1).len();
    // The activation left this host's signed receipt (one plain PUT).
    assert!(
        moto.requests_since(0, 1)
            .iter()
            .any(|r| r.contains("PUT /npcnix-test/npcnix/remotes/prod/hosts/")),
        "no receipt written"
    );
    // The next poll confirms the probation, and the receipt says so (one
    // more PUT, issue 35: a promotion counts confirmed hosts).
    assert!(follow().contains("\"unchanged\""));
    let confirmed = moto.requests_since(before, 1);
    assert!(
        confirmed
            .iter()
            .any(|r| r.contains("PUT /npcnix-test/npcnix/remotes/prod/hosts/")),
        "the end of the probation is not in a receipt: {confirmed:#?}"
    );
    let before = before + confirmed.len();
    // From then on, idle.
    assert!(follow().contains("\"unchanged\""));
    let new: Vec<String> = moto.requests_since(before, 1);
    assert_eq!(
        new.len(),
        1,
        "an unchanged poll must cost one request: {new:#?}"
    );
    assert!(
        new[0].contains("GET /npcnix-test/npcnix/remotes/prod/latest"),
        "{}",
        new[0]
    );
    assert!(
        new[0].contains("\" 304 "),
        "expected 304 Not Modified: {}",
        new[0]
    );
}

#[test]
fn racing_publishers_on_s3_never_both_win() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let (key, _pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let src = kit.flake(&format!("r{i}"), &format!("racer {i}"));
            let mut c = kit.cmd();
            s3_env(&mut c)
                .args([
                    "publish",
                    "--remote",
                    &url,
                    "--endpoint",
                    &moto.endpoint(),
                    "--path-style",
                    "--version",
                    "1",
                    "--key",
                    &key,
                    "--src",
                ])
                .arg(src)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let winners = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        winners,
        1,
        "{:#?}",
        outs.iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(
            o.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn wrong_credentials_are_a_clear_error_and_publish_nothing() {
    let kit = Kit::new();
    let Some(srv) = S3sFs::start(&kit.path("")) else {
        return;
    };
    let (key, _pubkey) = kit.keygen("ci");
    let src = kit.flake("f", "x");
    let endpoint = format!("http://127.0.0.1:{}", srv.port);
    let mut c = kit.cmd();
    c.env("AWS_ACCESS_KEY_ID", "wrong-key")
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "publish",
            "--remote",
            "s3://npcnix-test/remotes/prod",
            "--endpoint",
            &endpoint,
            "--path-style",
            "--key",
            &key,
            "--src",
        ])
        .arg(&src);
    let o = c.output().expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("check the credentials"), "{err}");
    let left: Vec<_> = walk(&srv.root.join("npcnix-test"));
    assert!(left.is_empty(), "nothing may be published: {left:?}");

    // The right credentials work against the same server.
    let mut c = kit.cmd();
    c.env("AWS_ACCESS_KEY_ID", S3sFs::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3sFs::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["pack", "--src"])
        .arg(&src)
        .arg("--hash-only");
    assert!(c.output().expect("run").status.success());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn server_dying_mid_download_is_transient_and_the_next_poll_recovers() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let proxy = Proxy::start(moto.port);
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    publish(&kit, &url, &moto.endpoint(), &key, &big_flake(&kit, "v1")).ok();
    proxy.set(CUT, 256 * 1024);
    let r = pull(&kit, &url, &proxy.endpoint(), &pubkey, "dst");
    assert_eq!(
        r.code, 1,
        "a dying server is an error, not a rejection: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("download failed") || r.stderr.contains("request failed"),
        "{}",
        r.stderr
    );
    kit.assert_nothing_left("dst");
    let st: serde_json::Value = serde_json::from_slice(&kit.state_bytes()).expect("state");
    assert!(st["remotes"]["prod"].is_null(), "nothing recorded: {st}");
    proxy.set(PASS, u64::MAX);
    pull(&kit, &url, &proxy.endpoint(), &pubkey, "dst").ok();
}

/// Issue 36: a connection that dies mid-archive is resumed where it broke
/// (a Range read against the real S3 server), and the archive is still
/// verified group by group as it streams.
#[test]
fn server_cutting_the_archive_download_is_resumed_with_a_range_read() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let proxy = Proxy::start(moto.port);
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    publish(&kit, &url, &moto.endpoint(), &key, &big_flake(&kit, "v1")).ok();
    // Every connection dies after 700 KiB: the ~1 MiB archive needs two.
    proxy.set(CUT, 700 * 1024);
    let r = pull(&kit, &url, &proxy.endpoint(), &pubkey, "dst").ok();
    assert!(
        r.stderr.contains("download broke after") && r.stderr.contains("retrying"),
        "the break is visible: {}",
        r.stderr
    );
    assert_eq!(
        fs::read(kit.path("dst/blob.bin")).expect("blob").len(),
        1 << 20
    );
}

#[test]
fn slow_server_times_out_as_a_transient_error() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let proxy = Proxy::start(moto.port);
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    publish(&kit, &url, &moto.endpoint(), &key, &big_flake(&kit, "v1")).ok();
    proxy.set(STALL, 256 * 1024);
    let dst = kit.path("dst");
    let mut c = kit.cmd();
    s3_env(&mut c)
        .env("NPCNIX_READ_TIMEOUT_SECS", "2")
        .args([
            "pull",
            "--remote",
            &url,
            "--endpoint",
            &proxy.endpoint(),
            "--path-style",
            "--trusted-key",
            &pubkey,
            "--dst",
        ])
        .arg(&dst);
    let t = std::time::Instant::now();
    let o = c.output().expect("run");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(25),
        "took {:?}",
        t.elapsed()
    );
    kit.assert_nothing_left("dst");
}

#[test]
fn http_mirror_serves_a_verified_pull_and_conditional_polls() {
    // Any static web server can mirror a remote: here one serving a copy of
    // a directory store over plain HTTP.
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("ci");
    kit.publish("prod", &key, &kit.flake("v1", "v1"), &[]).ok();
    let httpd = crate::common::httpd::Httpd::serve(kit.path("store"));
    let mirror = httpd.url("prod");
    let dst = kit.path("dst");
    kit.run(&[
        "pull",
        "--remote",
        &mirror,
        "--trusted-key",
        &pubkey,
        "--dst",
        dst.to_str().expect("utf8"),
    ])
    .ok();
    assert!(dst.join("flake.nix").exists());
    // A mirror is read-only.
    let r = kit.run(&[
        "publish",
        "--remote",
        &mirror,
        "--key",
        &key,
        "--src",
        kit.flake("v2", "v2").to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);
    // The log works over HTTP too (enumerating versions; no listing).
    kit.publish("prod", &key, &kit.flake("v2b", "v2"), &[]).ok();
    let log = kit
        .run(&["log", "--remote", &mirror, "--trusted-key", &pubkey])
        .ok();
    assert!(log.stdout.contains("2 releases"), "{}", log.stdout);
    // A mirror serving an old release is refused like any store.
    let dst2 = kit.path("dst2");
    kit.run(&[
        "pull",
        "--remote",
        &mirror,
        "--trusted-key",
        &pubkey,
        "--dst",
        dst2.to_str().expect("utf8"),
    ])
    .ok();
    let v1 = fs::read(kit.store_path("prod", "releases/00000000000000000001")).expect("v1");
    fs::write(kit.store_path("prod", "latest"), v1).expect("write");
    let dst3 = kit.path("dst3");
    kit.run(&[
        "pull",
        "--remote",
        &mirror,
        "--trusted-key",
        &pubkey,
        "--dst",
        dst3.to_str().expect("utf8"),
    ])
    .rejected("rollback");
}

#[test]
fn large_archive_goes_up_in_parts_and_comes_back_verified() {
    // Above 16 MiB the archive is uploaded with a multipart upload whose
    // completion is conditional (If-None-Match: *), like every create.
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let (key, pubkey) = kit.keygen("ci");
    let src = big_flake(&kit, "big");
    let mut blob = fs::read(src.join("blob.bin")).expect("blob");
    for i in 0..20u8 {
        blob.iter_mut()
            .for_each(|b| *b = b.wrapping_add(i).rotate_left(3));
        fs::write(src.join(format!("blob{i}.bin")), &blob).expect("write");
    }
    let url = moto.url("prod");
    publish(&kit, &url, &moto.endpoint(), &key, &src).ok();
    let uploads: Vec<String> = moto
        .requests_since(0, 1)
        .into_iter()
        .filter(|r| r.contains("uploadId=") || r.contains("uploads"))
        .collect();
    assert!(!uploads.is_empty(), "expected a multipart upload");
    pull(&kit, &url, &moto.endpoint(), &pubkey, "dst").ok();
    assert_eq!(fs::read(kit.path("dst/blob19.bin")).expect("blob"), blob);
}

/// A publish whose write of `releases/<v>` or `latest` happened but whose
/// answer was lost: the retry is refused by its own first attempt, and the
/// publisher must recognise its bundle instead of reporting a lost race
/// (exit 4), and never write without the precondition.
#[test]
fn lost_answers_to_conditional_writes_are_retried_without_a_false_lost_race() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let proxy = Proxy::start(moto.port);
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    publish(&kit, &url, &proxy.endpoint(), &key, &kit.flake("v1", "v1")).ok();
    for (needle, version) in [("/latest", 2), ("/releases/", 3)] {
        *proxy.lose_put_answers.lock().expect("lock") = Some((needle.to_owned(), 1));
        let marker = format!("v{version}");
        let r = publish(
            &kit,
            &url,
            &proxy.endpoint(),
            &key,
            &kit.flake(&marker, &marker),
        );
        assert_eq!(r.code, 0, "{needle}: {}", r.stderr);
        assert!(
            r.stderr.contains("retrying (attempt 2/3)"),
            "{needle}: {}",
            r.stderr
        );
        assert!(
            r.stdout.contains(&format!("version {version}")),
            "{needle}: {}",
            r.stdout
        );
        assert_eq!(
            proxy
                .lose_put_answers
                .lock()
                .expect("lock")
                .as_ref()
                .map(|l| l.1),
            Some(0),
            "{needle}: the answer was lost once"
        );
    }
    let r = pull(&kit, &url, &proxy.endpoint(), &pubkey, "dst").ok();
    assert!(r.stdout.contains("version 3"), "{}", r.stdout);
    // The log is whole: one release per version, each verified.
    let log = run_s3(
        &kit,
        &[
            "log",
            "--remote",
            &url,
            "--endpoint",
            &proxy.endpoint(),
            "--path-style",
            "--trusted-key",
            &pubkey,
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&log.stdout).expect("log json");
    assert_eq!(v["ok"], true, "{}", log.stdout);
    assert_eq!(v["releases"].as_array().map(Vec::len), Some(3));
}

/// Issue 33: operators' profiles (SSO, `credential_process`, assume-role)
/// work as with the aws CLI. A `credential_process` profile authenticates
/// against the credential-checking server; a profile whose process hands
/// out wrong keys is refused with the usual hint.
#[test]
fn credential_process_profile_authenticates_with_profile_and_aws_profile() {
    use std::os::unix::fs::PermissionsExt as _;
    let kit = Kit::new();
    let Some(srv) = S3sFs::start(&kit.path("")) else {
        return;
    };
    let (key, _pubkey) = kit.keygen("ci");
    let src = kit.flake("f", "x");
    let endpoint = format!("http://127.0.0.1:{}", srv.port);
    let script = |name: &str, ak: &str, sk: &str| {
        let p = kit.path(name);
        fs::write(
            &p,
            format!(
                "#!/bin/sh\nprintf '{{\"Version\":1,\"AccessKeyId\":\"{ak}\",\"SecretAccessKey\":\"{sk}\"}}'\n"
            ),
        )
        .expect("script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    };
    let good = script("good-creds", S3sFs::ACCESS_KEY, S3sFs::SECRET_KEY);
    let bad = script("bad-creds", "wrong-key", "wrong-secret");
    let config = kit.path("aws-config");
    fs::write(
        &config,
        format!(
            "[profile fleet-admin]\ncredential_process = {}\nregion = us-east-1\n\n[profile wrong]\ncredential_process = {}\nregion = us-east-1\n\n[profile sso]\nsso_start_url = https://example.awsapps.com/start\nsso_region = us-east-1\nsso_account_id = 123456789012\nsso_role_name = Admin\nregion = us-east-1\n",
            good.display(),
            bad.display()
        ),
    )
    .expect("config");
    let run = |profile_flag: Option<&str>, env_profile: Option<&str>, version: &str| {
        let mut c = kit.cmd();
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", kit.path("no-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true");
        if let Some(p) = env_profile {
            c.env("AWS_PROFILE", p);
        }
        c.args([
            "publish",
            "--remote",
            "s3://npcnix-test/remotes/prod",
            "--endpoint",
            &endpoint,
            "--path-style",
            "--key",
            &key,
            "--version",
            version,
            "--src",
        ])
        .arg(&src);
        if let Some(p) = profile_flag {
            c.args(["--profile", p]);
        }
        let o = c.output().expect("run");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(Some("fleet-admin"), None, "1");
    assert_eq!(code, Some(0), "--profile: {err}");
    let (code, err) = run(None, Some("wrong"), "2");
    assert_eq!(code, Some(1), "AWS_PROFILE=wrong: {err}");
    assert!(err.contains("check the credentials"), "{err}");
    // --profile wins over AWS_PROFILE.
    let (code, err) = run(Some("fleet-admin"), Some("wrong"), "2");
    assert_eq!(code, Some(0), "--profile over AWS_PROFILE: {err}");
    // An SSO profile is read through the aws CLI: the error says how.
    let (code, err) = run(Some("sso"), None, "3");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("aws configure export-credentials"), "{err}");
}

/// Issue 33: `-vv` shows the S3 SDK's own events (as `aws --debug`:
/// credential source, endpoint, each request), through npcnix's lines;
/// without it they stay hidden.
#[test]
fn vv_shows_the_s3_sdks_own_events_and_default_output_does_not() {
    let kit = Kit::new();
    let Some(moto) = Moto::start(&kit.path("")) else {
        return;
    };
    let (key, pubkey) = kit.keygen("ci");
    let url = moto.url("prod");
    publish(&kit, &url, &moto.endpoint(), &key, &kit.flake("f", "x")).ok();
    let endpoint = moto.endpoint();
    let args = |extra: &'static [&'static str]| {
        let mut a = vec![
            "log",
            "--remote",
            url.as_str(),
            "--endpoint",
            endpoint.as_str(),
            "--path-style",
            "--trusted-key",
            pubkey.as_str(),
        ];
        a.extend_from_slice(extra);
        a
    };
    let r = run_s3(&kit, &args(&["-vv"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sdk: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("npcnix: debug: ") && l.contains("aws_"))
        .collect();
    assert!(!sdk.is_empty(), "{}", r.stderr);
    let r = run_s3(&kit, &args(&[]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("aws_"), "{}", r.stderr);
}
