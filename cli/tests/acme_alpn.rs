//! Certificates obtained by the gateway over ACME TLS-ALPN-01 (RFC 8737), against a
//! real pebble (skipped with a message when pebble is not installed): an issuer
//! annotated `isthmus.dev/acme-challenge: tls-alpn-01`, pebble validating on the
//! gateway's HTTPS port while its HTTP-01 port is closed, the issued chain checked
//! with `openssl verify` against pebble's issuing root and served to the real `curl`
//! over h2 and HTTP/1.1.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::acme::{certificate, pebble_issuer, secret_value, Site};
use isthmus_testkit::pebble::{verify_chain, Pebble};
use isthmus_testkit::{curl_https, demo_app, files_under, free_ports, wait_until, ConfigDir, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");
const WAIT: Duration = Duration::from_secs(30);

/// Gateway `gw` with HTTP on `http` and HTTPS on `https` (secret `acme-tls`) for
/// `alpn.test`, routed to the demo app on `app`; ClusterIssuer `pebble` annotated
/// with `challenge` (it also has an http01 solver: the annotation decides); and
/// Certificate `istio-system/acme-cert` writing `acme-tls`.
fn config(pebble: &Pebble, http: u16, https: u16, app: u16, challenge: &str) -> String {
    Site::new(http, https, "[alpn.test]", app).yaml()
        + &pebble_issuer(pebble, Some(challenge))
        + &certificate(&["alpn.test"], "")
}

/// `curl https://alpn.test:port/` verifying against `root`, with `flag`
/// (`--http2`, `--http1.1`): (status, HTTP version, first body line).
fn get(root: &Path, port: u16, flag: &str) -> (u16, String, String) {
    let r = curl_https(root, "alpn.test", port, &[flag]);
    (r.status, r.version, r.first_line)
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
    let _app = demo_app(Path::new(BIN), "a", "v1", app);
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &config(&pebble, http, https, app, "tls-alpn-01"),
    );
    let state = ConfigDir::new();
    let state_arg = state.path().display().to_string();
    let started = Instant::now();
    let mut up = Up::start(Path::new(BIN), dir.path(), &["--state-dir", &state_arg]);
    let mut line = |needles: &[&str]| up.proc.wait_for_all(WAIT, needles);
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
