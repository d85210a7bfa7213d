//! The operator-facing contract of the CLI (issue 17): long help with an
//! example for every subcommand, exit codes, a closed stdout, `--json` on
//! every command that reports a result, readable store errors, log levels,
//! `--version`, completions and man pages, `config check`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::host::Host;
use crate::common::{Kit, Run, BIN};

fn npcnix(args: &[&str]) -> Run {
    Run::from(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run npcnix"),
    )
}

/// Every (visible) subcommand path, read from the binary's own help.
fn subcommands(path: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = npcnix(&args).ok().stdout;
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.is_empty() || name == "help" {
                continue;
            }
            let mut sub = path.to_vec();
            sub.push(name.to_owned());
            out.push(sub.clone());
            out.extend(subcommands(&sub));
        }
    }
    out
}

#[test]
fn every_subcommand_help_shows_its_long_help_with_an_example() {
    let all = subcommands(&[]);
    assert!(all.len() > 25, "found only {all:?}");
    for path in all {
        let shown = format!("npcnix {}", path.join(" "));
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let long = npcnix(&args).ok().stdout;
        // Only the long help has the example: it is text of `long_about`.
        assert!(
            long.contains("Example") && long.contains(&format!("\n  {shown}")),
            "`{shown} --help` shows no long help with an example:\n{long}"
        );
        *args.last_mut().expect("arg") = "-h";
        let short = npcnix(&args).ok().stdout;
        assert!(
            !short.contains("Example"),
            "`{shown} -h` should be the summary:\n{short}"
        );
    }
}

#[test]
fn version_names_the_git_commit() {
    let r = npcnix(&["--version"]).ok();
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let expect = std::env::var("NPCNIX_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or(head)
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        r.stdout.trim(),
        format!("npcnix {} (commit {expect})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    for (shell, marker) in [
        ("bash", "complete -F _npcnix"),
        ("zsh", "#compdef npcnix"),
        ("fish", "complete -c npcnix"),
    ] {
        let r = npcnix(&["completions", shell]).ok();
        assert!(r.stdout.contains(marker), "{shell}: {}", r.stdout);
        // Subcommands and their flags are completed.
        assert!(r.stdout.contains("publish") && r.stdout.contains("remote-name"));
    }
    assert_eq!(npcnix(&["completions", "tcsh"]).code, 2);
    let page = npcnix(&["man"]).ok().stdout;
    assert!(page.contains(".TH npcnix 1"), "{page}");
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        "NPCNIX_DATA_DIR",
    ] {
        assert!(page.contains(section), "{section}: {page}");
    }
    let kit = Kit::new();
    let dir = kit.path("man");
    npcnix(&["man", "--out", dir.to_str().expect("utf8")]).ok();
    for p in ["npcnix.1", "npcnix-publish.1", "npcnix-config-check.1"] {
        let text = fs::read_to_string(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(text.contains(".TH"), "{p}");
    }
    let publish = fs::read_to_string(dir.join("npcnix-publish.1")).expect("page");
    assert!(publish.contains(".SH \"EXIT STATUS\""), "{publish}");
    assert!(
        publish.contains("Example"),
        "the man page carries the long help"
    );
}

// ---- exit codes: 0 ok, 1 error, 2 usage, 3 refused, 4 lost race ----

#[test]
fn exit_2_for_every_usage_error() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("k");
    let flake = kit.flake("f", "one");
    let f = flake.to_str().expect("utf8");
    let url = kit.url("prod");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "pull",
                "--remote",
                "s4://bucket/prod",
                "--trusted-key",
                &pubkey,
                "--dst",
                "d",
            ],
            "unsupported remote URL",
        ),
        (
            vec![
                "publish",
                "--remote",
                "file://relative/x",
                "--key",
                &key,
                "--src",
                f,
            ],
            "unsupported remote URL",
        ),
        (vec!["pause", "--for", "banana"], "invalid duration"),
        (
            vec!["fleet", "status", "--remote", "s4://bucket/prod"],
            "unsupported remote URL",
        ),
        (
            vec![
                "release",
                "revert",
                "--remote",
                "s4://b/prod",
                "--key",
                &key,
                "--to",
                "1",
            ],
            "unsupported remote URL",
        ),
        (
            vec![
                "pull",
                "--remote",
                &url,
                "--trusted-key",
                &pubkey,
                "--dst",
                "d",
                "--retries",
                "10",
            ],
            "--retries",
        ),
        (
            vec![
                "publish",
                "--remote",
                &url,
                "--key",
                &key,
                "--src",
                f,
                "--expires",
                "soon",
            ],
            "invalid duration",
        ),
        (
            vec!["pack", "--src", f, "--out", "x", "--hash-only"],
            "cannot be used with",
        ),
        (vec!["pull", "--bogus"], "unexpected argument"),
        (
            vec![
                "pull",
                "--remote",
                &url,
                "--trusted-key",
                &pubkey,
                "--dst",
                "d",
                "--limit",
                "entries=lots",
            ],
            "is not a number",
        ),
        (
            vec![
                "publish",
                "--remote",
                &url,
                "--key",
                &key,
                "--src",
                f,
                "--remote-name",
                "no/slash",
            ],
            "--remote-name",
        ),
        (
            vec![
                "pull",
                "--remote",
                &url,
                "--trusted-key",
                "RWQsoTqmFsk3maEx4CQM6NtI0jp+NX1PXJpHxQy",
                "--dst",
                "d",
            ],
            "looks like a minisign public key (RW...) but does not decode",
        ),
        (
            vec!["state", "reset", "--remote", "prod", "--min-version", "1"],
            "unsupported remote URL",
        ),
    ];
    for (args, says) in cases {
        let r = kit.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

#[test]
fn exit_3_for_a_refused_release() {
    let kit = Kit::new();
    let (key, _) = kit.keygen("k");
    let (_, other) = kit.keygen("other");
    kit.publish("prod", &key, &kit.flake("f", "one"), &[]).ok();
    kit.pull("prod", &other, "dst", &[])
        .rejected("untrusted-key");
}

#[test]
fn exit_4_for_a_publish_that_lost_a_race() {
    let kit = Kit::new();
    let (key, _) = kit.keygen("k");
    kit.publish("prod", &key, &kit.flake("f", "one"), &[]).ok();
    // Another publisher took version 2 first.
    kit.publish("prod", &key, &kit.flake("g", "two"), &["--version", "2"])
        .ok();
    let r = kit.publish("prod", &key, &kit.flake("h", "three"), &["--version", "2"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
}

#[test]
fn exit_1_otherwise_with_a_message_that_names_the_problem() {
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("k");
    let url = kit.url("prod");
    // A --src that does not exist says so (not "has no flake.nix").
    let r = kit.run(&[
        "publish",
        "--remote",
        &url,
        "--key",
        &key,
        "--src",
        "no-such-dir",
    ]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        "npcnix: --src no-such-dir: no such directory"
    );
    // An empty remote: nothing published there yet.
    let r = kit.pull("prod", &pubkey, "dst", &[]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        format!("npcnix: no release published at {url} yet (check the URL and remote name)")
    );
    // A key argument that is neither a file nor a key.
    let r = kit.pull("prod", "keys/typo.pub", "dst", &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no such file"), "{}", r.stderr);
}

// ---- readable store errors ----

#[test]
fn store_errors_are_one_line_with_a_hint_and_the_chain_only_under_verbose() {
    let kit = Kit::new();
    let (_, pubkey) = kit.keygen("k");
    let refused = [
        vec!["--remote", "https://127.0.0.1:1/npcnix/prod"],
        vec![
            "--remote",
            "s3://bucket/npcnix/prod",
            "--endpoint",
            "http://127.0.0.1:1",
            "--path-style",
        ],
    ];
    for remote in refused {
        let mut args = vec!["pull", "--trusted-key", &pubkey, "--dst", "d"];
        args.extend(remote.iter().copied());
        let r = Run::from(
            kit.cmd()
                .args(&args)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()
                .expect("run"),
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        // Two announced retries (a refused connection is transient), then
        // the error: one line each.
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 3, "{}", r.stderr);
        assert!(
            lines[0].starts_with("npcnix: warning: retrying (attempt 2/3) in ")
                && lines[1].starts_with("npcnix: warning: retrying (attempt 3/3) in "),
            "{}",
            r.stderr
        );
        assert!(lines[2].contains("Connection refused"), "{}", r.stderr);
        assert!(!lines[2].contains("retrying"), "{}", r.stderr);
        assert!(
            r.stderr.contains("(hint: nothing accepts connections"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("DispatchFailure"), "{}", r.stderr);
        args.insert(0, "-v");
        args.extend(["--retries", "0"]);
        let v = Run::from(
            kit.cmd()
                .args(&args)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()
                .expect("run"),
        );
        assert!(v.stderr.contains("full error chain"), "{}", v.stderr);
        assert!(v.stderr.lines().count() > 2, "{}", v.stderr);
    }
}

// ---- config check ----

#[test]
fn config_check_reports_every_problem_in_one_run() {
    let h = Host::with(|c| {
        c["remote"]["treshold"] = 2.into();
        c["configuration"] = "web 1".into();
        c["poll"]["interval_secs"] = "often".into();
        c["state_dir"] = "relative/dir".into();
        c["trusted_keys"]
            .as_array_mut()
            .expect("keys")
            .push(serde_json::json!({"remotes": ["prod"]}));
    });
    let cfg = h.kit.path("config.json");
    let r = h.run(&["config", "check", cfg.to_str().expect("utf8")]);
    assert_eq!(r.code, 1);
    for says in [
        "(5 problem(s))",
        "remote: unknown field `treshold`",
        "trusted_keys[1]: missing field `public_key`",
        "poll: invalid type",
        "configuration: must be a nixosConfigurations attribute name",
        "state_dir: must be an absolute path",
    ] {
        assert!(r.stderr.contains(says), "missing {says:?}:\n{}", r.stderr);
    }
    let j = h.run(&["config", "check", cfg.to_str().expect("utf8"), "--json"]);
    assert_eq!(j.code, 1);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(5));
}

// ---- log levels ----

#[test]
fn quiet_verbose_and_journald_priorities() {
    let h = Host::new();
    h.publish("one");
    let r = h.run(&["follow", "--once"]).ok();
    assert!(r.stderr.contains("npcnix: following prod"), "{}", r.stderr);
    let q = h.run(&["-q", "follow", "--once"]).ok();
    assert_eq!(q.stderr, "", "-q shows only warnings and errors");
    let v = h.run(&["status", "-v"]).ok();
    assert!(v.stderr.contains("npcnix: debug: npcnix "), "{}", v.stderr);
    let env = Run::from(
        h.agent_cmd(&["status"])
            .env("RUST_LOG", "debug")
            .output()
            .expect("run"),
    );
    assert!(env.stderr.contains("npcnix: debug:"), "{}", env.stderr);
    // Under systemd: stderr is the stream JOURNAL_STREAM names.
    use std::os::unix::fs::MetadataExt;
    let log = h.kit.path("journal-stream");
    let file = fs::File::create(&log).expect("create");
    let m = file.metadata().expect("stat");
    let st = h
        .agent_cmd(&["-v", "follow", "--once"])
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .stderr(file)
        .output()
        .expect("run");
    assert!(st.status.success());
    let text = fs::read_to_string(&log).expect("read");
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
    // journald names the program (`npcnix[PID]:`): no second prefix.
    assert!(text.contains("<6>following prod"), "{text}");
    assert!(text.contains("<7>debug: "), "{text}");
    assert!(!text.contains("npcnix: "), "{text}");
}

/// Issue 33: a secret key given where a public key belongs is named as
/// such (it said "public key is too long"), as a file and as a line.
#[test]
fn secret_key_given_as_a_trusted_key_is_named_as_a_secret_key() {
    let kit = Kit::new();
    let (key, _pubkey) = kit.keygen("ci");
    let url = kit.url("prod");
    let r = kit.run(&["log", "--remote", &url, "--trusted-key", &key]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("this is a secret key, not a public key"),
        "{}",
        r.stderr
    );
    let line = fs::read_to_string(&key)
        .expect("key")
        .lines()
        .nth(1)
        .expect("line")
        .to_owned();
    let r = kit.run(&["log", "--remote", &url, "--trusted-key", &line]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("this is a secret key, not a public key"),
        "{}",
        r.stderr
    );
}

/// Issue 33: `log` on a remote that holds nothing (a mistyped URL) fails
/// and says so; it printed "0 releases; ... verified" and exited 0.
#[test]
fn log_of_an_empty_remote_exits_non_zero_and_says_why() {
    let kit = Kit::new();
    let (_key, pubkey) = kit.keygen("ci");
    let r = kit.run(&[
        "log",
        "--remote",
        &kit.url("prdo"),
        "--trusted-key",
        &pubkey,
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("is the remote URL right?"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("verified"), "{}", r.stdout);
}

// ---- --json on every command, and a closed stdout ----

/// How a scenario step's stdout is connected.
#[derive(Clone, Copy, PartialEq)]
enum Stdout {
    /// Captured and parsed as JSON.
    Json,
    /// A pipe whose reading end is already closed (`| head -0`).
    Closed,
}

fn step(h: &Host, mode: Stdout, args: &[&str]) -> Run {
    let mut c = h.agent_cmd(args);
    if mode == Stdout::Closed {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        c.stdout(writer);
    }
    let r = Run::from(c.output().expect("run"));
    assert_eq!(
        r.code, 0,
        "{args:?}\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    r
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// Every command that reports a result, in an order in which each one
/// works: in `Json` mode each output is parsed and checked against the
/// documented schema (docs/cli.md); in `Closed` mode each command must
/// still do its work (the next steps depend on it) and exit 0.
fn scenario(mode: Stdout) {
    let h = Host::new();
    let k = &h.kit;
    let p = |rel: &str| k.path(rel).to_str().expect("utf8").to_owned();
    let url = k.url("prod");
    let (key, pubkey) = (h.key.clone(), h.pubkey.clone());
    let f1 = k.flake("f1", "one");
    let f2 = k.flake("f2", "two");
    let (f1, f2) = (f1.to_str().expect("utf8"), f2.to_str().expect("utf8"));
    let check = |r: Run, f: &dyn Fn(&serde_json::Value)| {
        if mode == Stdout::Json {
            f(&json(&r));
        }
    };
    let j = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        v.push("--json".into());
        v
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        step(&h, mode, &a)
    };

    check(
        run(j(&["keygen", "--out", &p("k2"), "--unencrypted"])),
        &|v| {
            assert!(v["public_key"]
                .as_str()
                .is_some_and(|s| s.starts_with("RW")));
            assert_eq!(v["encrypted"], false);
        },
    );
    check(
        run(j(&["pack", "--src", f1, "--out", &p("a.tar.zst")])),
        &|v| {
            assert_eq!(v["blake3"].as_str().map(str::len), Some(64));
            assert!(v["size"].as_u64().is_some_and(|n| n > 0));
        },
    );
    check(
        run(j(&[
            "publish", "--remote", &url, "--key", &key, "--src", f1,
        ])),
        &|v| {
            assert_eq!(v["version"], 1);
            assert_eq!(v["remote"], "prod");
        },
    );
    check(
        run(j(&[
            "pull",
            "--remote",
            &url,
            "--trusted-key",
            &pubkey,
            "--dst",
            &p("out"),
        ])),
        &|v| {
            assert_eq!(v["version"], 1);
            assert_eq!(v["new"], true);
        },
    );
    let latest = k.store_path("prod", "latest");
    check(
        run(j(&[
            "verify",
            "--bundle",
            latest.to_str().expect("utf8"),
            "--archive",
            &p("a.tar.zst"),
            "--trusted-key",
            &pubkey,
        ])),
        &|v| {
            assert_eq!(v["ok"], true);
            assert_eq!(v["version"], 1);
        },
    );
    check(
        run(j(&["log", "--remote", &url, "--trusted-key", &pubkey])),
        &|v| {
            assert_eq!(v["ok"], true);
            assert_eq!(v["releases"].as_array().map(Vec::len), Some(1));
        },
    );
    check(
        run(j(&[
            "release",
            "prepare",
            "--remote",
            &url,
            "--src",
            f2,
            "--out",
            &p("rel"),
            "--signer",
            &pubkey,
        ])),
        &|v| {
            assert_eq!(v["version"], 2);
            assert!(v["signers"][0]["trusted_comment"].as_str().is_some());
        },
    );
    check(run(j(&["sign", &p("rel"), "--key", &key, "--yes"])), &|v| {
        assert_eq!(v["version"], 2);
        assert!(v["signature_file"]
            .as_str()
            .is_some_and(|f| f.ends_with(".minisig")));
    });
    check(
        run(j(&["release", "check", &p("rel"), "--src", f2])),
        &|v| {
            assert_eq!(v["ok"], true);
            assert_eq!(v["toplevels"], "none");
        },
    );
    check(
        run(j(&[
            "release",
            "publish",
            &p("rel"),
            "--trusted-key",
            &pubkey,
        ])),
        &|v| {
            assert_eq!(v["version"], 2);
        },
    );
    check(run(j(&["config", "check", &p("config.json")])), &|v| {
        assert_eq!(v["ok"], true);
        assert_eq!(v["remote"], "prod");
        assert_eq!(v["problems"], serde_json::json!([]));
    });
    check(run(vec!["config".into(), "show".into()]), &|v| {
        assert_eq!(v["configuration"], "web");
    });
    let r = run(j(&["follow", "--once"]));
    if mode == Stdout::Json {
        let last = r.stdout.lines().last().expect("a line");
        let v: serde_json::Value = serde_json::from_str(last).expect("json line");
        assert_eq!(v["result"], "activated", "{last}");
    }
    check(run(j(&["status"])), &|v| {
        assert_eq!(v["active_version"], 2);
    });
    check(run(j(&["pause", "--for", "1h"])), &|v| {
        assert_eq!(v["paused"], true);
        assert!(v["until"].as_u64().is_some());
    });
    check(run(j(&["unpause"])), &|v| {
        assert_eq!(v["paused"], false);
        assert_eq!(v["until"], serde_json::Value::Null);
    });
    check(run(j(&["audit"])), &|v| {
        assert_eq!(v["ok"], true);
        // v1 (pull) and v2 (follow) were verified with this data dir.
        assert_eq!(v["versions_checked"], 2);
    });
    check(run(j(&["activate", "--src", f2])), &|v| {
        assert_eq!(v["configuration"], "web");
        assert_eq!(v["mode"], "switch");
    });
    check(
        run(j(&[
            "probation",
            "expire",
            "--data-dir",
            &p("data"),
            "--remote-name",
            "prod",
            // Without it the command waits for the deadline (minutes).
            "--now",
        ])),
        &|v| {
            assert_eq!(v["remote"], "prod");
        },
    );
    check(
        run(j(&[
            "state",
            "reset",
            "--remote",
            &url,
            "--min-version",
            "2",
            "--force",
        ])),
        &|v| {
            assert_eq!(v["remote"], "prod");
            assert_eq!(v["min_version"], 2);
            assert_eq!(v["new_state"], false);
        },
    );
    check(
        run(j(&[
            "install",
            "--remote",
            &url,
            "--configuration",
            "web",
            "--trusted-key",
            &pubkey,
            "--config-out",
            &p("installed.json"),
            "--data-dir",
            &p("data2"),
            "--no-activate",
        ])),
        &|v| {
            assert_eq!(v["min_version"], 2, "pinned to the verified head");
            assert_eq!(v["activated"], false);
        },
    );
    check(
        run(j(&[
            "release", "revert", "--remote", &url, "--key", &key, "--to", "1",
        ])),
        &|v| {
            assert_eq!(v["version"], 3);
            assert_eq!(v["reverted_to"], 1);
            assert_eq!(v["archive"]["blake3"].as_str().map(str::len), Some(64));
        },
    );
    check(run(j(&["fleet", "status", "--remote", &url])), &|v| {
        assert_eq!(v["remote"], "prod");
        assert!(v["hosts"].is_array(), "{v}");
        assert!(v["summary"].is_array(), "{v}");
    });
    if mode == Stdout::Closed {
        for args in [
            vec!["completions", "bash"],
            vec!["man"],
            vec!["--help"],
            vec!["help", "publish"],
        ] {
            // clap prints help itself: a closed pipe is not an error there.
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader);
            let r = Run::from(h.agent_cmd(&args).stdout(writer).output().expect("run"));
            assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
            assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        }
        assert!(Path::new(&p("installed.json")).exists());
    }
}

#[test]
fn json_output_of_every_command_parses_to_the_documented_schema() {
    scenario(Stdout::Json);
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_its_own_exit_code() {
    scenario(Stdout::Closed);
}

#[test]
fn a_closed_stdout_keeps_a_refusal_exit_3() {
    let kit = Kit::new();
    let (key, _) = kit.keygen("k");
    let (_, other) = kit.keygen("other");
    kit.publish("prod", &key, &kit.flake("f", "one"), &[]).ok();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let url = kit.url("prod");
    let r = Run::from(
        kit.cmd()
            .args(["log", "--remote", &url, "--trusted-key", &other])
            .stdout(writer)
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
}
