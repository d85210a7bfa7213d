//! HTTPS trust an operator can configure (issue 17 item 9): a mirror behind a
//! private CA, served by a real TLS server (`openssl s_server -WWW`) on
//! 127.0.0.1 with a CA and certificate the test makes. Unknown CA: refused
//! with a message that says so. The same CA through SSL_CERT_FILE,
//! SSL_CERT_DIR, `--ca-file` or the host config's `remote.ca_file`:
//! accepted.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::host::Host;
use crate::common::s3::free_port;
use crate::common::{require_tool, wait_for, Kit, Run};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA (ca.pem) and a certificate for 127.0.0.1 it issued, in `dir`.
fn make_ca(dir: &Path) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=npcnix test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// `openssl s_server -WWW` serving `root` (GET of files relative to it).
fn serve(root: &Path, certs: &Path) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-WWW", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(certs.join("srv.pem"))
        .arg("-key")
        .arg(certs.join("srv.key"))
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let server = Server(child);
    wait_for("the TLS server", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}

#[test]
fn mirror_behind_a_private_ca_is_refused_until_the_ca_is_trusted() {
    if !require_tool("openssl") {
        return;
    }
    let kit = Kit::new();
    let (key, pubkey) = kit.keygen("k");
    kit.publish("prod", &key, &kit.flake("f", "one"), &[]).ok();
    let certs = kit.path("pki");
    make_ca(&certs);
    let (_server, port) = serve(&kit.path("store"), &certs);
    let url = format!("https://127.0.0.1:{port}/prod");
    let ca = certs.join("ca.pem");
    let pull = |dst: &str, extra: &[&str], env: &[(&str, &Path)]| -> Run {
        let dst = kit.path(dst);
        let mut c = kit.cmd();
        c.args(["pull", "--remote", &url, "--trusted-key", &pubkey, "--dst"])
            .arg(&dst)
            .args(extra)
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().expect("run"))
    };

    // Unknown issuer: refused, in one line that says why and what to do.
    let r = pull("d0", &[], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // One line (a retry notice first, if the freshly started s_server
    // refused the very first connection, is not part of the refusal).
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| !l.starts_with("npcnix: warning: retrying"))
            .count(),
        1,
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("UnknownIssuer"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: TLS failed"), "{}", r.stderr);
    assert!(!kit.path("d0").exists());

    // The same CA, trusted through each way an operator has.
    pull("d1", &[], &[("SSL_CERT_FILE", &ca)]).ok();
    let dir = certs.join("hashed");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::copy(&ca, dir.join("ca.pem")).expect("copy");
    openssl(&dir, &["rehash", "."]);
    pull("d2", &[], &[("SSL_CERT_DIR", &dir)]).ok();
    pull("d3", &["--ca-file", ca.to_str().expect("utf8")], &[]).ok();
    assert!(kit.path("d3/hosts/web.nix").is_file());

    // A CA file that holds no certificate is an error naming the file.
    let bogus = kit.path("bogus.pem");
    fs::write(&bogus, "not a certificate\n").expect("write");
    let r = pull("d4", &["--ca-file", bogus.to_str().expect("utf8")], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("holds no PEM certificate"),
        "{}",
        r.stderr
    );
}

#[test]
fn host_config_ca_file_lets_the_agent_follow_a_private_ca_mirror() {
    if !require_tool("openssl") {
        return;
    }
    let kit_certs = Kit::new();
    let certs = kit_certs.path("pki");
    make_ca(&certs);
    let ca = certs.join("ca.pem");
    // The store directory is served over TLS; the host follows the mirror.
    let h = Host::new();
    h.publish("one");
    let (_server, port) = serve(&h.kit.path("store"), &certs);
    let mut cfg = h.config();
    cfg["remote"]["url"] = format!("https://127.0.0.1:{port}/prod").into();
    h.set_config(&cfg);
    let once = || {
        let r = Run::from(
            h.agent_cmd(&["follow", "--once", "--json"])
                .env_remove("SSL_CERT_FILE")
                .env_remove("SSL_CERT_DIR")
                .output()
                .expect("run"),
        );
        let last: serde_json::Value =
            serde_json::from_str(r.stdout.lines().last().unwrap_or("{}")).expect("json");
        (last, r)
    };
    let (v, r) = once();
    assert_eq!(v["result"], "error", "unknown CA: {}", r.stdout);
    assert!(r.stdout.contains("UnknownIssuer"), "{}", r.stdout);
    cfg["remote"]["ca_file"] = ca.to_str().expect("utf8").into();
    h.set_config(&cfg);
    let (v, r) = once();
    assert_eq!(v["result"], "activated", "{}\n{}", r.stdout, r.stderr);
}
