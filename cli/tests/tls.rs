//! TLS termination on the gateway (Gateway servers `protocol: HTTPS`, `tls.mode:
//! SIMPLE`, certificates from `credentialName` Secrets), through a running
//! `isthmus up` with the real `curl` and `openssl s_client` as clients. Certificates
//! are made at test time by the `openssl` command: one test CA, leaf certificates
//! with chosen serial numbers, ECDSA P-256 and RSA keys.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use isthmus_testkit::pki::{LeafKey, TestCa};
use isthmus_testkit::{curl, free_port, free_ports, wait_until, ConfigDir, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

/// The test CA's root as a path string (`--cacert`, `-CAfile`).
fn ca_file(pki: &TestCa) -> String {
    pki.root().display().to_string()
}

/// PEM text as an indented YAML block scalar body.
fn block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    pem.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// A `kubernetes.io/tls` Secret in istio-system (where the default ingress gateway
/// workload runs), keys `tls.crt` / `tls.key`.
fn secret(name: &str, cert: &str, key: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        block(cert, 4),
        block(key, 4)
    )
}

/// Demo-app backends `a` and `b` (`X.default.svc.cluster.local`, answering `X v1`).
fn backends(ports: &[u16]) -> String {
    let mut y = String::new();
    for (name, port) in ["a", "b"].iter().zip(ports) {
        y.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, annotations: {{isthmus.dev/demo-app: {name}}}}}
spec: {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: {name}, version: v1}}}}
"#
        ));
    }
    y
}

/// One HTTPS server: its hosts and the secret it names.
fn https_server(port: u16, name: &str, hosts: &str, credential: &str) -> String {
    format!(
        "  - port: {{number: {port}, name: {name}, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {{mode: SIMPLE, credentialName: {credential}}}\n"
    )
}

fn gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

/// Every host to backend `a`.
const ALL_TO_A: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{destination: {host: a}}]
"#;

/// `isthmus up` on a directory; its HTTPS listener is the Gateway port `port`
/// (above 1023, so bound as declared).
struct Fixture {
    dir: ConfigDir,
    up: Up,
    addr: SocketAddr,
}

impl Fixture {
    fn start(port: u16, files: &[(&str, &str)]) -> Fixture {
        let dir = ConfigDir::new();
        for (name, text) in files {
            dir.write(name, text);
        }
        let up = Up::start(Path::new(BIN), dir.path(), &[]);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut fx = Fixture { dir, up, addr };
        fx.expect_https_listener(port);
        fx
    }

    /// `up` printed the listener as HTTPS, and the gateway logged it.
    fn expect_https_listener(&mut self, declared: u16) {
        let addr = self.addr;
        for line in [
            format!("Gateway port {declared} -> https://{addr}"),
            format!("listening https://{addr} (Gateway port {declared})"),
        ] {
            self.output_line(|l| l.contains(&line));
        }
    }

    /// The first output line of `up` (stdout or stderr) for which `f` holds; stderr
    /// may lag behind stdout, so wait for it.
    fn output_line(&mut self, f: impl Fn(&str) -> bool) -> String {
        self.up
            .proc
            .wait_for_line(Duration::from_secs(10), |l| f(l).then(|| l.to_string()))
    }

    /// `curl` over TLS to `https://host:PORT/path` with `--resolve` to the listener,
    /// verifying against `ca`; `extra` adds options. Returns (status, first body
    /// line, HTTP version).
    fn get(&self, ca: &str, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
        let port = self.addr.port();
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert", ca])
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_code} %{http_version}"])
            .args(extra)
            .arg(format!("https://{host}:{port}{path}"))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
        (
            status.parse().unwrap_or(0),
            body.lines().next().unwrap_or("").to_string(),
            version.to_string(),
        )
    }
}

/// The certificate a TLS handshake with `sni` (or none) gets: `(serial, subject)`
/// as `openssl x509` prints them (`serial=0A`, `subject=CN = a.test`), after
/// `openssl s_client` verified it against `ca`. `Err` with s_client's output when
/// the handshake fails.
fn handshake(
    addr: SocketAddr,
    sni: Option<&str>,
    ca: &str,
    extra: &[&str],
) -> Result<(String, String), String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile", ca])
        .args(["-verify_return_error"])
        .args(extra)
        .stdin(Stdio::null());
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.output().expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(text);
    }
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("feed openssl x509");
    let parsed = x509.wait_with_output().expect("openssl x509");
    let parsed = String::from_utf8_lossy(&parsed.stdout);
    let mut lines = parsed.lines().map(str::to_string);
    match (lines.next(), lines.next()) {
        (Some(serial), Some(subject)) => Ok((serial, subject)),
        _ => Err(text),
    }
}

#[test]
fn demo_tls_serves_the_canary_over_h2_and_http1() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("read config");
    // The copies in configs/demo-tls are the same as their originals.
    let crt = read("demo-tls/example.domain.com.crt");
    assert!(
        read("demo-tls/secret.yaml").contains(&block(&crt, 4)),
        "example.domain.com.crt is the secret's tls.crt"
    );
    let workloads = read("demo-tls/workloads.yaml");
    assert!(workloads.contains("http: 18001") && workloads.contains("http: 18002"));
    assert!(read("demo-tls/todolist.yaml").contains("credentialName: todolist-tls"));

    // Run a copy with the demo apps on free ports (configs/demo's test uses theirs)
    // and Gateway port 443 on a free local port.
    let ports = free_ports(3);
    let dir = ConfigDir::new();
    for f in ["todolist.yaml", "secret.yaml"] {
        dir.write(f, &read(&format!("demo-tls/{f}")));
    }
    dir.write(
        "workloads.yaml",
        &workloads
            .replace("http: 18001", &format!("http: {}", ports[1]))
            .replace("http: 18002", &format!("http: {}", ports[2])),
    );
    let offset = (ports[0] - 443).to_string();
    let up = Up::start(Path::new(BIN), dir.path(), &["--port-offset", &offset]);
    let mut fx = Fixture {
        dir,
        up,
        addr: SocketAddr::from(([127, 0, 0, 1], ports[0])),
    };
    fx.expect_https_listener(443);
    let ca = root
        .join("demo-tls/example.domain.com.crt")
        .display()
        .to_string();

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let (status, body, v) = fx.get(&ca, "example.domain.com", "/", &[flag]);
            assert_eq!((status, v.as_str()), (200, version), "{flag}: {body}");
            seen.insert(body);
        }
        assert!(
            seen.iter()
                .all(|b| b == "todolist v1" || b == "todolist v2"),
            "{seen:?}"
        );
    }
    // TLS 1.2 and 1.3 both; the certificate is the demo's.
    for v in ["-tls1_2", "-tls1_3"] {
        let (_, subject) =
            handshake(fx.addr, Some("example.domain.com"), &ca, &[v]).expect("handshake");
        assert!(subject.contains("example.domain.com"), "{subject}");
    }
    // The Gateway's only host: another name has no certificate.
    assert!(handshake(fx.addr, Some("other.test"), &ca, &[]).is_err());
}

#[test]
fn sni_selects_each_servers_certificate_and_unknown_names_are_refused() {
    let pki = TestCa::new();
    let a = pki.leaf_as("a.test", &["a.test"], 0xA1, LeafKey::EcP256);
    let b = pki.leaf_as("wild.b.test", &["*.b.test"], 0xB1, LeafKey::Rsa2048);
    let port = free_port();
    let servers = https_server(port, "https-a", "[a.test]", "a-cert")
        + &https_server(port, "https-b", "[\"*.b.test\"]", "b-cert");
    let fx = Fixture::start(
        port,
        &[
            ("gateway.yaml", &gateway(&servers)),
            (
                "secrets.yaml",
                &(secret("a-cert", &a.cert, &a.key) + &secret("b-cert", &b.cert, &b.key)),
            ),
            ("backends.yaml", &backends(&free_ports(2))),
            ("routes.yaml", ALL_TO_A),
        ],
    );
    let ca = ca_file(&pki);
    assert_eq!(
        handshake(fx.addr, Some("a.test"), &ca, &[]),
        Ok(("serial=A1".into(), "subject=CN = a.test".into()))
    );
    assert_eq!(
        handshake(fx.addr, Some("x.b.test"), &ca, &[]),
        Ok(("serial=B1".into(), "subject=CN = wild.b.test".into()))
    );
    for sni in [Some("unknown.test"), Some("b.test"), None] {
        let refused = handshake(fx.addr, sni, &ca, &[]).expect_err("no certificate for it");
        assert!(
            refused.contains("alert access denied"),
            "{sni:?}: {refused}"
        );
    }
    // Both certificates serve HTTP over h2 and HTTP/1.1.
    for host in ["a.test", "x.b.test"] {
        for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let got = fx.get(&ca, host, "/", &[flag]);
            assert_eq!(got, (200, "a v1".into(), version.into()), "{host} {flag}");
        }
    }
    // The gateway is still up after the refused handshakes.
    assert_eq!(fx.get(&ca, "a.test", "/", &[]).0, 200);
}

/// A backend that answers one request with 200 and hands over its request head.
fn capture_backend() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\ncaptured\n",
            );
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        }
    });
    (port, rx)
}

#[test]
fn https_routes_match_scheme_https_and_forward_proto_https() {
    let pki = TestCa::new();
    let a = pki.leaf_as("s.test", &["s.test"], 7, LeafKey::EcP256);
    let ports = free_ports(4);
    let (tls_port, http_port) = (ports[0], ports[1]);
    let (capture_port, head) = capture_backend();
    let servers = https_server(tls_port, "https", "[s.test]", "s-cert")
        + &format!(
            "  - port: {{number: {http_port}, name: http, protocol: HTTP}}\n    hosts: [s.test]\n"
        );
    // One VirtualService for both ports: scheme decides.
    let routes = format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: capture}}
spec:
  hosts: [capture.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {capture_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: s}}
spec:
  hosts: [s.test]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /capture}}}}]
    route: [{{destination: {{host: capture}}}}]
  - match: [{{scheme: {{exact: https}}}}]
    route: [{{destination: {{host: a}}}}]
  - route: [{{destination: {{host: b}}}}]
"#
    );
    let fx = Fixture::start(
        tls_port,
        &[
            ("gateway.yaml", &gateway(&servers)),
            ("secrets.yaml", &secret("s-cert", &a.cert, &a.key)),
            ("backends.yaml", &backends(&ports[2..])),
            ("routes.yaml", &routes),
        ],
    );
    let ca = ca_file(&pki);
    assert_eq!(
        fx.get(&ca, "s.test", "/", &[]).1,
        "a v1",
        "https matches scheme https"
    );
    let plain = curl(&[
        "-H",
        "Host: s.test",
        &format!("http://127.0.0.1:{http_port}/"),
    ]);
    assert_eq!(plain.body.lines().next(), Some("b v1"), "http does not");

    assert_eq!(fx.get(&ca, "s.test", "/capture", &[]).1, "captured");
    let head = head
        .recv_timeout(Duration::from_secs(10))
        .expect("request captured");
    let proto: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-proto:"))
        .collect();
    assert_eq!(proto, ["x-forwarded-proto: https"], "{head}");
}

#[test]
fn certificate_swap_keeps_h2_connections_and_new_handshakes_get_the_new_one() {
    let pki = TestCa::new();
    let one = pki.leaf_as("a.test", &["a.test"], 1, LeafKey::EcP256);
    let two = pki.leaf_as("a.test", &["a.test"], 2, LeafKey::Rsa2048);
    let port = free_port();
    let fx = Fixture::start(
        port,
        &[
            (
                "gateway.yaml",
                &gateway(&https_server(port, "https", "[a.test]", "a-cert")),
            ),
            ("secret.yaml", &secret("a-cert", &one.cert, &one.key)),
            ("backends.yaml", &backends(&free_ports(2))),
            ("routes.yaml", ALL_TO_A),
        ],
    );
    let ca = ca_file(&pki);
    let serial = || handshake(fx.addr, Some("a.test"), &ca, &[]).map(|(s, _)| s);
    assert_eq!(serial(), Ok("serial=01".to_string()));

    // One curl process, one HTTP/2 connection, 60 requests at 10 per second; each
    // transfer writes `connects status version` to stderr as it completes.
    let n = 60;
    let mut client = Command::new("curl")
        .args(["-s", "--http2", "--cacert", &ca, "--max-time", "60"])
        .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
        .args(["--rate", "10/s"])
        .args([
            "-w",
            "%{stderr}%{num_connects} %{http_code} %{http_version}\n",
        ])
        .arg(format!("https://a.test:{port}/[1-{n}]"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let (tx, rx) = mpsc::channel();
    let stderr = client.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = vec![rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first response")];

    fx.dir
        .write("secret.yaml", &secret("a-cert", &two.cert, &two.key));
    let started = Instant::now();
    wait_until(
        "new handshakes to get serial 02",
        Duration::from_secs(10),
        || (serial() == Ok("serial=02".to_string())).then_some(()),
    );
    let swapped_after = started.elapsed();
    lines.extend(rx.try_iter());
    let before_swap_seen = lines.len();

    let status = client.wait().expect("curl ends");
    // Every line curl wrote is read once the reader saw the end of its stderr.
    reader.join().expect("stderr reader");
    lines.extend(rx.try_iter());
    assert!(status.success(), "curl: {status:?}; {lines:?}");
    assert_eq!(lines.len(), n, "{lines:?}");
    assert!(
        before_swap_seen < n,
        "the connection outlived the swap ({swapped_after:?}): {lines:?}"
    );
    assert_eq!(lines[0], "1 200 2");
    assert!(
        lines[1..].iter().all(|l| l == "0 200 2"),
        "one connection for every request: {lines:?}"
    );
}

#[test]
fn unusable_credentials_are_reported_and_the_rest_serves() {
    let pki = TestCa::new();
    let good = pki.leaf_as("good.test", &["good.test"], 3, LeafKey::EcP256);
    let other = pki.leaf_as("m.test", &["m.test"], 4, LeafKey::EcP256);
    let port = free_port();
    // A certificate cut short, and a key that belongs to another certificate.
    let cut = &good.cert[..good.cert.len() / 2];
    let servers = https_server(port, "good", "[good.test]", "good-cert")
        + &https_server(port, "garbled", "[g.test]", "garbled-cert")
        + &https_server(port, "mismatched", "[m.test]", "mismatched-cert")
        + &https_server(port, "missing", "[x.test]", "missing-cert");
    let secrets = secret("good-cert", &good.cert, &good.key)
        + &secret("garbled-cert", cut, &good.key)
        + &secret("mismatched-cert", &other.cert, &good.key);
    let mut fx = Fixture::start(
        port,
        &[
            ("gateway.yaml", &gateway(&servers)),
            ("secrets.yaml", &secrets),
            ("backends.yaml", &backends(&free_ports(2))),
            ("routes.yaml", ALL_TO_A),
        ],
    );
    let mut error_line =
        |needle: &str| fx.output_line(|l| l.contains("ERROR") && l.contains(needle));
    let garbled = error_line("Secret istio-system/garbled-cert");
    assert!(
        garbled.contains("gateway.yaml:")
            && garbled.contains("IST0161")
            && garbled.contains("spec.servers[1].tls.credentialName")
            && garbled.contains("is not valid PEM")
            && garbled.contains("TLS handshakes for g.test are refused"),
        "{garbled}"
    );
    let mismatched = error_line("Secret istio-system/mismatched-cert");
    assert!(
        mismatched.contains("Gateway default/gw spec.servers[2]")
            && mismatched.contains("the private key does not match the certificate"),
        "{mismatched}"
    );
    let missing = error_line("missing-cert");
    assert!(
        missing.contains("IST0101") && missing.contains("no Secret istio-system/missing-cert"),
        "{missing}"
    );

    let ca = ca_file(&pki);
    for sni in ["g.test", "m.test", "x.test"] {
        assert!(
            handshake(fx.addr, Some(sni), &ca, &[]).is_err(),
            "{sni} refused"
        );
    }
    assert_eq!(fx.get(&ca, "good.test", "/", &[]).0, 200);
    assert!(fx.up.proc.is_running());
}
