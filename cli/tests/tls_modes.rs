//! Gateway TLS modes beyond SIMPLE through a running `isthmus up`, with the real
//! `curl` and `openssl s_client` as clients: MUTUAL and OPTIONAL_MUTUAL (client CAs
//! from `ca.crt`, `cacert`, `<name>-cacert` and `caCertCredentialName` Secrets,
//! `subjectAltNames`), `minProtocolVersion` / `maxProtocolVersion` and
//! `cipherSuites`, all as servers sharing one port; and how refused handshakes are
//! logged. Certificates are made at test time by `openssl`: a server CA (ECDSA
//! P-256 leaves), a client CA, a client certificate from another CA, and one whose
//! SAN is not the allowed one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use isthmus_testkit::fixtures::{self, demo_backend, https_servers, route_all, secret};
use isthmus_testkit::{free_port, free_ports, run, ConfigDir, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

/// The identity the `subjectAltNames` server admits.
const GOOD_ID: &str = "spiffe://cluster.local/ns/default/sa/good";

/// A CA made by `openssl`, and the leaf certificates it signs (ECDSA P-256).
struct Ca {
    dir: PathBuf,
    name: String,
}

/// A certificate and key: their files and PEM text.
struct Leaf {
    crt: PathBuf,
    key: PathBuf,
}

impl Leaf {
    fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.crt).expect("read certificate")
    }

    fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key).expect("read key")
    }
}

const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let ca = Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        run(Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN=isthmus test {name} CA"))
            .args(EC)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign"])
            .arg("-keyout")
            .arg(ca.file("ca.key"))
            .arg("-out")
            .arg(ca.file("ca.crt")));
        ca
    }

    fn file(&self, f: &str) -> PathBuf {
        self.dir.join(format!("{}-{f}", self.name))
    }

    fn crt(&self) -> String {
        self.file("ca.crt").display().to_string()
    }

    fn pem(&self) -> String {
        std::fs::read_to_string(self.file("ca.crt")).expect("read CA")
    }

    /// A leaf `CN=cn` with `san` (openssl syntax) for `usage` (serverAuth, clientAuth).
    fn leaf(&self, cn: &str, san: &str, usage: &str) -> Leaf {
        let f = |ext: &str| self.file(&format!("{cn}.{ext}"));
        run(Command::new("openssl")
            .args(["req", "-new", "-nodes", "-subj", &format!("/CN={cn}")])
            .args(EC)
            .arg("-keyout")
            .arg(f("key"))
            .arg("-out")
            .arg(f("csr")));
        std::fs::write(
            f("ext"),
            format!("subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage={usage}\n"),
        )
        .expect("write extensions");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(f("csr"))
            .arg("-CA")
            .arg(self.file("ca.crt"))
            .arg("-CAkey")
            .arg(self.file("ca.key"))
            .arg("-extfile")
            .arg(f("ext"))
            .arg("-out")
            .arg(f("crt")));
        Leaf {
            crt: f("crt"),
            key: f("key"),
        }
    }
}

/// A server certificate for `host` in a Secret named `<host's first label>-cert`,
/// plus `extra` keys.
fn server_secret(ca: &Ca, host: &str, extra: &[(&str, &str)]) -> String {
    let leaf = ca.leaf(host, &format!("DNS:{host}"), "serverAuth");
    let (crt, key) = (leaf.cert_pem(), leaf.key_pem());
    let mut keys = vec![("tls.crt", crt.as_str()), ("tls.key", key.as_str())];
    keys.extend_from_slice(extra);
    secret(&cred(host), &keys)
}

/// The credentialName of a host's server: `mutual.test` -> `mutual-cert`.
fn cred(host: &str) -> String {
    format!("{}-cert", host.split('.').next().unwrap_or(host))
}

/// A Gateway `gw` in `default` with one HTTPS server per (host, tls settings) on
/// `port`.
fn gateway(port: u16, servers: &[(&str, String)]) -> String {
    let tls = |host: &str, tls: &str| format!("{{{tls}, credentialName: {}}}", cred(host));
    let servers = https_servers(port, servers.iter().map(|(h, t)| (*h, tls(h, t))));
    fixtures::gateway("gw", &servers)
}

/// Every host to the demo app `a`, and the app itself.
fn backend(port: u16) -> String {
    route_all("all", "gw", "a.default.svc.cluster.local") + &demo_backend("a", port)
}

/// `isthmus up` on `files`, `ISTHMUS_LOG` set to `log` when given; waits until the
/// HTTPS listener on Gateway port `port` is up.
fn up(files: &[(&str, String)], port: u16, log: Option<&str>) -> (ConfigDir, Up) {
    let dir = ConfigDir::new();
    for (name, text) in files {
        dir.write(name, text);
    }
    let mut cmd = Command::new(BIN);
    cmd.arg("up").arg(dir.path());
    match log {
        Some(filter) => cmd.env("ISTHMUS_LOG", filter),
        None => cmd.env_remove("ISTHMUS_LOG"),
    };
    let mut up = Up::spawn(&mut cmd);
    up.wait_https_listener(port);
    (dir, up)
}

/// What one curl request got: the HTTP status (0 when there was no response), the
/// first body line, and curl's error message.
#[derive(Debug)]
struct Got {
    status: u16,
    body: String,
    error: String,
}

/// `curl https://host:port/` trusting `ca`, with the client certificate `client`
/// when given and `extra` options.
fn get(port: u16, ca: &str, host: &str, client: Option<&Leaf>, extra: &[&str]) -> Got {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert", ca])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code}"])
        .args(extra);
    if let Some(leaf) = client {
        cmd.arg("--cert").arg(&leaf.crt).arg("--key").arg(&leaf.key);
    }
    let out = cmd
        .arg(format!("https://{host}:{port}/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Got {
        status: code.trim().parse().unwrap_or(0),
        body: body.lines().next().unwrap_or("").to_string(),
        error: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// `openssl s_client` to `sni` on `port` with `extra` options: Ok with the
/// negotiated `(protocol, cipher)`, or Err with its output.
fn s_client(port: u16, ca: &str, sni: &str, extra: &[&str]) -> Result<(String, String), String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", sni, "-CAfile", ca, "-verify_return_error"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384`
    let negotiated = text.lines().find_map(|l| {
        let rest = l.strip_prefix("New, ")?;
        let (proto, cipher) = rest.split_once(", Cipher is ")?;
        Some((proto.to_string(), cipher.trim().to_string()))
    });
    match negotiated {
        Some(n) if out.status.success() && n.1 != "(NONE)" => Ok(n),
        _ => Err(text),
    }
}

#[test]
fn mutual_and_optional_mutual_verify_client_certificates_per_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let servers = Ca::new(tmp.path(), "server");
    let clients = Ca::new(tmp.path(), "client");
    let stranger = Ca::new(tmp.path(), "stranger");
    let good = clients.leaf(
        "good",
        &format!("URI:{GOOD_ID},DNS:good.client.test"),
        "clientAuth",
    );
    let other_san = clients.leaf(
        "other",
        "URI:spiffe://cluster.local/ns/default/sa/other",
        "clientAuth",
    );
    let foreign = stranger.leaf("foreign", &format!("URI:{GOOD_ID}"), "clientAuth");

    let ports = free_ports(2);
    let port = ports[0];
    let client_ca = clients.pem();
    let tls = |s: &str| s.to_string();
    let files = [
        (
            "gateway.yaml",
            gateway(
                port,
                &[
                    // CA in the credential's own Secret (`ca.crt`).
                    ("mutual.test", tls("mode: MUTUAL")),
                    // CA in `<name>-cacert`; only the good identity.
                    (
                        "san.test",
                        format!("mode: MUTUAL, subjectAltNames: [\"{GOOD_ID}\"]"),
                    ),
                    // CA by caCertCredentialName (`cacert` key).
                    (
                        "optional.test",
                        tls("mode: OPTIONAL_MUTUAL, caCertCredentialName: client-ca"),
                    ),
                    ("simple.test", tls("mode: SIMPLE")),
                ],
            ),
        ),
        (
            "secrets.yaml",
            server_secret(&servers, "mutual.test", &[("ca.crt", &client_ca)])
                + &server_secret(&servers, "san.test", &[])
                + &secret("san-cert-cacert", &[("ca.crt", &client_ca)])
                + &server_secret(&servers, "optional.test", &[])
                + &secret("client-ca", &[("cacert", &client_ca)])
                + &server_secret(&servers, "simple.test", &[]),
        ),
        ("backend.yaml", backend(ports[1])),
    ];
    let (_dir, mut up) = up(&files, port, None);
    let ca = servers.crt();
    let ok = |host: &str, client: Option<&Leaf>, what: &str| {
        for flag in ["--http2", "--http1.1"] {
            let got = get(port, &ca, host, client, &[flag]);
            assert_eq!(
                (got.status, got.body.as_str()),
                (200, "a v1"),
                "{what} {flag}: {got:?}"
            );
        }
    };
    // Refused with TLS 1.3 (the client certificate is checked after the client's
    // last flight: curl sees the alert when it reads) and with TLS 1.2.
    let refused = |host: &str, client: Option<&Leaf>, what: &str| {
        for extra in [&["--tlsv1.3"][..], &["--tls-max", "1.2"][..]] {
            let got = get(port, &ca, host, client, extra);
            assert_eq!(got.status, 0, "{what} {extra:?} must be refused: {got:?}");
            assert!(!got.error.is_empty(), "{what}: {got:?}");
        }
    };

    // MUTUAL: a certificate from the client CA, nothing else.
    ok("mutual.test", Some(&good), "MUTUAL, good certificate");
    ok(
        "mutual.test",
        Some(&other_san),
        "MUTUAL without subjectAltNames, any SAN",
    );
    refused("mutual.test", None, "MUTUAL, no certificate");
    refused("mutual.test", Some(&foreign), "MUTUAL, another CA");
    // subjectAltNames: the right identity only.
    ok("san.test", Some(&good), "subjectAltNames, good identity");
    refused(
        "san.test",
        Some(&other_san),
        "subjectAltNames, other identity",
    );
    refused("san.test", None, "subjectAltNames, no certificate");
    // OPTIONAL_MUTUAL: none or a valid one.
    ok("optional.test", None, "OPTIONAL_MUTUAL, no certificate");
    ok(
        "optional.test",
        Some(&good),
        "OPTIONAL_MUTUAL, good certificate",
    );
    refused(
        "optional.test",
        Some(&foreign),
        "OPTIONAL_MUTUAL, another CA",
    );
    // SIMPLE on the same port asks for nothing; an unknown name is refused.
    ok("simple.test", None, "SIMPLE");
    refused("unknown.test", None, "unknown SNI");
    // A handshake through the SIMPLE server does not open the MUTUAL server's routes:
    // Host mutual.test on a connection made for simple.test is misdirected (421).
    for flag in ["--http2", "--http1.1"] {
        let got = get(
            port,
            &ca,
            "simple.test",
            None,
            &[flag, "-H", "Host: mutual.test"],
        );
        assert_eq!(
            got.status, 421,
            "Host of a MUTUAL server over a SIMPLE handshake {flag}: {got:?}"
        );
    }

    // The refusals did not cost the gateway, and none was logged above DEBUG.
    assert!(up.proc.is_running());
    ok("mutual.test", Some(&good), "after the refusals");
    let noisy: Vec<&String> = up
        .proc
        .output()
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
}

#[test]
fn protocol_versions_and_cipher_suites_per_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let servers = Ca::new(tmp.path(), "server");
    let ports = free_ports(2);
    let port = ports[0];
    let tls = |s: &str| s.to_string();
    let files = [
        (
            "gateway.yaml",
            gateway(
                port,
                &[
                    ("modern.test", tls("mode: SIMPLE, minProtocolVersion: TLSV1_3")),
                    ("legacy.test", tls("mode: SIMPLE, maxProtocolVersion: TLSV1_2")),
                    (
                        "ciphers.test",
                        tls("mode: SIMPLE, cipherSuites: [ECDHE-ECDSA-CHACHA20-POLY1305, TLS_AES_256_GCM_SHA384, NO-SUCH-CIPHER]"),
                    ),
                    ("old.test", tls("mode: SIMPLE, minProtocolVersion: TLSV1_0")),
                    // MUTUAL without any client CA: refused, never served unverified.
                    ("noca.test", tls("mode: MUTUAL")),
                ],
            ),
        ),
        (
            "secrets.yaml",
            ["modern.test", "legacy.test", "ciphers.test", "old.test", "noca.test"]
                .iter()
                .map(|h| server_secret(&servers, h, &[]))
                .collect(),
        ),
        ("backend.yaml", backend(ports[1])),
    ];
    let (_dir, mut up) = up(&files, port, None);
    let ca = servers.crt();

    // Findings name the file, line and field.
    let mut finding = |needle: &str| {
        up.proc.wait_for_line(Duration::from_secs(10), |l| {
            l.contains(needle).then(|| l.to_string())
        })
    };
    let noca = finding("needs a CA for client certificates");
    assert!(
        noca.contains("ERROR")
            && noca.contains("IST0161")
            && noca.contains("gateway.yaml:")
            && noca.contains("spec.servers[4].tls.credentialName")
            && noca.contains("needs a CA for client certificates")
            && noca.contains("TLS handshakes for noca.test are refused"),
        "{noca}"
    );
    let unknown = finding("NO-SUCH-CIPHER");
    assert!(
        unknown.contains("WARN") && unknown.contains("spec.servers[2].tls.cipherSuites[2]"),
        "{unknown}"
    );
    let old = finding("TLSV1_0");
    assert!(
        old.contains("WARN") && old.contains("spec.servers[3].tls.minProtocolVersion"),
        "{old}"
    );

    // minProtocolVersion TLSV1_3: a client that stops at 1.2 is refused.
    let got = get(port, &ca, "modern.test", None, &["--tls-max", "1.2"]);
    assert_eq!(got.status, 0, "{got:?}");
    let got = get(port, &ca, "modern.test", None, &["--tlsv1.3"]);
    assert_eq!(got.status, 200, "{got:?}");
    assert!(s_client(port, &ca, "modern.test", &["-tls1_2"]).is_err());
    // maxProtocolVersion TLSV1_2: a TLS 1.3-only client is refused.
    let got = get(port, &ca, "legacy.test", None, &["--tlsv1.3"]);
    assert_eq!(got.status, 0, "{got:?}");
    assert!(s_client(port, &ca, "legacy.test", &["-tls1_3"]).is_err());
    assert_eq!(
        s_client(port, &ca, "legacy.test", &[]).map(|n| n.0),
        Ok("TLSv1.2".into())
    );
    // TLSV1_0 is raised to 1.2: both 1.2 and 1.3 work.
    for v in ["-tls1_2", "-tls1_3"] {
        assert!(s_client(port, &ca, "old.test", &[v]).is_ok(), "{v}");
    }

    // cipherSuites: only the listed TLS 1.2 and TLS 1.3 suites.
    let tls12 = |cipher: &str| s_client(port, &ca, "ciphers.test", &["-tls1_2", "-cipher", cipher]);
    assert_eq!(
        tls12("ECDHE-ECDSA-CHACHA20-POLY1305"),
        Ok(("TLSv1.2".into(), "ECDHE-ECDSA-CHACHA20-POLY1305".into()))
    );
    assert!(tls12("ECDHE-ECDSA-AES128-GCM-SHA256").is_err());
    let tls13 = |suite: &str| {
        s_client(
            port,
            &ca,
            "ciphers.test",
            &["-tls1_3", "-ciphersuites", suite],
        )
    };
    assert_eq!(
        tls13("TLS_AES_256_GCM_SHA384"),
        Ok(("TLSv1.3".into(), "TLS_AES_256_GCM_SHA384".into()))
    );
    assert!(tls13("TLS_AES_128_GCM_SHA256").is_err());
    // Other servers on the port keep every suite.
    assert!(s_client(
        port,
        &ca,
        "legacy.test",
        &["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    )
    .is_ok());

    // MUTUAL without a CA refuses even a client that has a certificate.
    let got = get(port, &ca, "noca.test", None, &[]);
    assert_eq!(got.status, 0, "{got:?}");
    assert!(up.proc.is_running());
}

#[test]
fn a_refused_handshake_is_one_debug_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let servers = Ca::new(tmp.path(), "server");
    let clients = Ca::new(tmp.path(), "client");
    let port = free_port();
    let client_ca = clients.pem();
    let files = [
        (
            "gateway.yaml",
            gateway(port, &[("mutual.test", "mode: MUTUAL".to_string())]),
        ),
        (
            "secrets.yaml",
            server_secret(&servers, "mutual.test", &[("ca.crt", &client_ca)]),
        ),
        ("backend.yaml", backend(free_port())),
    ];
    let (_dir, mut up) = up(
        &files,
        port,
        Some("info,pingora=warn,rustls=error,isthmus_engine=debug"),
    );
    let ca = servers.crt();
    assert_eq!(
        get(port, &ca, "mutual.test", None, &["--tlsv1.3"]).status,
        0
    );
    assert_eq!(get(port, &ca, "unknown.test", None, &[]).status, 0);
    let no_cert = up.proc.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("TLS handshake refused (SNI mutual.test)")
            .then(|| l.to_string())
    });
    assert!(
        no_cert.contains("DEBUG")
            && no_cert.contains("peer sent no certificates")
            && no_cert.contains("peer=127.0.0.1:"),
        "{no_cert}"
    );
    up.proc.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("TLS handshake refused (SNI unknown.test)")
            .then_some(())
    });
    let lines: Vec<&String> = up
        .proc
        .output()
        .iter()
        .filter(|l| l.contains("handshake") || l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per refusal, nothing else: {lines:#?}"
    );
}
