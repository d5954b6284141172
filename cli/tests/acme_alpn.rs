//! Certificates obtained by the gateway over ACME TLS-ALPN-01 (RFC 8737), against a
//! real pebble (skipped with a message when pebble is not installed): an issuer
//! annotated `isthmus.dev/acme-challenge: tls-alpn-01`, pebble validating on the
//! gateway's HTTPS port while its HTTP-01 port is closed, the issued chain checked
//! with `openssl verify` against pebble's issuing root and served to the real `curl`
//! over h2 and HTTP/1.1.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_model::resources::core::decode_base64;
use isthmus_testkit::pebble::{verify_chain, Pebble};
use isthmus_testkit::{free_ports, wait_for_port, wait_until, ConfigDir, Proc, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");
const WAIT: Duration = Duration::from_secs(30);

/// Gateway `gw` with HTTP on `http` and HTTPS on `https` (secret `acme-tls`) for
/// `alpn.test`, routed to the demo app on `app`; ClusterIssuer `pebble` annotated
/// with `challenge` (it also has an http01 solver: the annotation decides); and
/// Certificate `istio-system/acme-cert` writing `acme-tls`.
fn config(pebble: &Pebble, http: u16, https: u16, app: u16, challenge: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http}, name: http, protocol: HTTP}}
    hosts: [alpn.test]
  - port: {{number: {https}, name: https, protocol: HTTPS}}
    hosts: [alpn.test]
    tls: {{mode: SIMPLE, credentialName: acme-tls}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: all}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: a}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a}}
spec:
  hosts: [a.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {app}}}}}]
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: pebble
  annotations: {{isthmus.dev/acme-challenge: {challenge}}}
spec:
  acme:
    server: {server}
    privateKeySecretRef: {{name: pebble-account}}
    caBundle: {bundle}
    solvers:
    - http01: {{ingress: {{class: istio}}}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{name: acme-cert, namespace: istio-system}}
spec:
  secretName: acme-tls
  issuerRef: {{name: pebble, kind: ClusterIssuer}}
  dnsNames: [alpn.test]
"#,
        server = pebble.directory_url(),
        bundle = pebble.ca_bundle_base64(),
    )
}

/// `isthmus demo-app a v1` on `port`, killed when dropped.
fn demo_app(port: u16) -> Proc {
    let proc = Proc::spawn(Command::new(BIN).args([
        "demo-app",
        "--name",
        "a",
        "--version",
        "v1",
        "--port",
        &port.to_string(),
    ]));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), WAIT);
    proc
}

/// `curl https://alpn.test:port/` verifying against `root`, with `flag`
/// (`--http2`, `--http1.1`): (status, HTTP version, first body line).
fn get(root: &Path, port: u16, flag: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", flag, "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("alpn.test:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://alpn.test:{port}/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        status.parse().unwrap_or(0),
        version.to_string(),
        body.lines().next().unwrap_or("").to_string(),
    )
}

/// The value of `key` in the `data` of a Secret file written by isthmus, decoded.
fn secret_value(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).expect("read secret");
    let prefix = format!("  {key}: ");
    let b64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    String::from_utf8(decode_base64(b64).expect("base64")).expect("PEM text")
}

/// Files (not directories) under `dir`, recursively; none when it does not exist.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn acme_tls_alpn01_issues_on_the_https_port_with_the_http_port_closed() {
    // pebble's HTTP-01 port is a listener of the test that never accepts: any
    // connection pebble made would wait in its queue.
    let p = free_ports(4);
    let (http, https, app) = (p[0], p[1], p[2]);
    let http01 = TcpListener::bind(("127.0.0.1", p[3])).expect("bind");
    http01.set_nonblocking(true).expect("nonblocking");
    let Some(mut pebble) = Pebble::start_ports(p[3], https) else {
        return;
    };
    let _app = demo_app(app);
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &config(&pebble, http, https, app, "tls-alpn-01"),
    );
    let state = ConfigDir::new();
    let state_arg = state.path().display().to_string();
    let started = Instant::now();
    let mut up = Up::start(Path::new(BIN), dir.path(), &["--state-dir", &state_arg]);
    let mut line = |needles: &[&str]| {
        up.proc.wait_for_line(WAIT, |l| {
            needles.iter().all(|n| l.contains(n)).then(|| l.to_string())
        })
    };
    let issued = line(&["acme: issued istio-system/acme-tls for [alpn.test]"]);
    eprintln!(
        "issued over TLS-ALPN-01 {} ms after process start",
        started.elapsed().as_millis()
    );
    assert!(!issued.contains("ERROR"), "{issued}");
    let served = line(&["acme: challenge served for alpn.test (tls-alpn-01), validated ("]);
    assert!(!served.contains("(0 handshakes"), "{served}");
    let ordered = line(&["acme: ordering Secret istio-system/acme-tls"]);
    assert!(ordered.contains("from ClusterIssuer pebble"), "{ordered}");

    // The issued chain verifies against pebble's issuing root and serves h2 and
    // HTTP/1.1 to a verifying client.
    let root = pebble.issuing_root_file();
    let chain = secret_value(
        &state.path().join("secrets/istio-system.acme-tls.yaml"),
        "tls.crt",
    );
    verify_chain(&root, &chain).unwrap_or_else(|e| panic!("chain does not verify: {e}"));
    wait_until("HTTPS 200 with the issued certificate", WAIT, || {
        (get(&root, https, "--http2").0 == 200).then_some(())
    });
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        assert_eq!(
            get(&root, https, flag),
            (200, version.to_string(), "a v1".to_string()),
            "{flag}"
        );
    }

    // Validated on the HTTPS port only: pebble never connected to its HTTP-01
    // port, and the gateway answered no HTTP-01 token.
    match http01.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("pebble connected to the HTTP-01 port: {other:?}"),
    }
    assert!(
        !up.proc.output().iter().any(|l| l.contains("HTTP-01 token")),
        "{:#?}",
        up.proc.output()
    );
    assert_eq!(pebble.orders(), 1);
    // The challenge material is gone once the order is done.
    let left = files_under(&state.path().join("challenges"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn acme_an_invalid_challenge_annotation_is_reported_with_its_line_and_nothing_is_ordered() {
    let p = free_ports(3);
    let (http, https, app) = (p[0], p[1], p[2]);
    let Some(mut pebble) = Pebble::start_ports(http, https) else {
        return;
    };
    let dir = ConfigDir::new();
    let path = dir.write("all.yaml", &config(&pebble, http, https, app, "tls-alpn"));
    // `isthmus analyze` names the annotation's file:line.
    let out = Command::new(BIN)
        .arg("analyze")
        .arg(dir.path())
        .output()
        .expect("run analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let annotation_line = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .position(|l| l.contains("isthmus.dev/acme-challenge"))
        .expect("annotation")
        + 1;
    assert!(
        text.contains(&format!(
            "[ISM0304] (ClusterIssuer pebble {}:{annotation_line})",
            path.display()
        )) && text.contains("\"tls-alpn\" is not an ACME challenge type"),
        "{text}"
    );
    assert!(!out.status.success(), "an Error fails analyze: {text}");

    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let err = up
        .proc
        .wait_for_line(WAIT, |l| l.contains("ISM0303").then(|| l.to_string()));
    assert!(
        err.contains("Certificate istio-system/acme-cert")
            && err.contains("invalid isthmus.dev/acme-challenge annotation \"tls-alpn\""),
        "{err}"
    );
    assert!(up.proc.is_running());
    assert!(!up
        .proc
        .output()
        .iter()
        .any(|l| l.contains("acme: ordering")));
    assert_eq!(pebble.orders(), 0);
}
