//! Automatic certificates and certificate status, against a real pebble
//! (`isthmus_testkit::pebble`; skipped with a message when pebble is not installed):
//! a Gateway annotated `isthmus.dev/acme-issuer` with an HTTPS server without
//! `credentialName` and no cert-manager Certificate gets both its hosts served over
//! HTTPS with a certificate that verifies against pebble's issuing root (real `curl`
//! and `openssl`); `isthmus certs` and the status file say Ready with the expiry.
//! An issuer whose ACME server is a closed port: Ready False with the error and the
//! next attempt, in the status file and in `isthmus certs`; an unknown issuer in the
//! annotation and a wildcard host are reported naming the Gateway.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::acme::{cluster_issuer, pebble_issuer, secret_value, start_pebble, Site};
use isthmus_testkit::pki::{served_leaf, x509};
use isthmus_testkit::{
    curl_https, demo_app, free_port, free_ports, loopback, wait_until, ConfigDir, Up,
};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");
const WAIT: Duration = Duration::from_secs(30);

/// Gateway `name` (namespace default, default ingress workload) annotated with
/// `isthmus.dev/acme-issuer: annotation`: HTTP on `http` and HTTPS (SIMPLE, no
/// credentialName) on `https`, both for `hosts`; a VirtualService sending all of it
/// to the demo app on `app_port`.
fn auto_gateway(
    name: &str,
    annotation: &str,
    http: u16,
    https: u16,
    hosts: &str,
    app_port: u16,
) -> String {
    Site {
        gateway: name,
        credential: None,
        acme_issuer: Some(annotation),
        ..Site::new(http, https, hosts, app_port)
    }
    .yaml()
}

/// `curl https://host:port/` through `--resolve`, verifying against `root`:
/// (status, first line of the body).
fn get(root: &Path, host: &str, port: u16) -> (u16, String) {
    let r = curl_https(root, host, port, &[]);
    (r.status, r.first_line)
}

/// `openssl x509 -noout ARGS` on `pem`: its output, trimmed.
fn x509_text(pem: &str, args: &[&str]) -> String {
    x509(pem, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `isthmus certs DIR --state-dir STATE`: (stdout, stderr), exit status checked.
fn certs(dir: &Path, state: &Path) -> (String, String) {
    let out = Command::new(BIN)
        .arg("certs")
        .arg(dir)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run isthmus certs");
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table row of `isthmus certs` output whose NAME is `name`, split in columns
/// (the MESSAGE column, last, keeps its spaces).
fn row(table: &str, name: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
    let header = table.lines().next().expect("header");
    let starts: Vec<usize> = [
        "NAMESPACE",
        "NAME",
        "READY",
        "SECRET",
        "ISSUER",
        "NOT-AFTER",
        "RENEWAL",
        "MESSAGE",
    ]
    .iter()
    .map(|h| {
        header
            .find(&format!("{h} "))
            .or_else(|| header.find(h))
            .expect(h)
    })
    .collect();
    (0..starts.len())
        .map(|k| {
            let end = starts
                .get(k + 1)
                .copied()
                .unwrap_or(line.len())
                .min(line.len());
            line.get(starts[k]..end).unwrap_or("").trim().to_string()
        })
        .collect()
}

/// Wait for `up`'s output line containing every one of `needles`.
fn line(up: &mut Up, needles: &[&str]) -> String {
    up.proc.wait_for_all(WAIT, needles)
}

#[test]
fn acme_issuer_annotation_gets_both_hosts_of_a_gateway_served_over_https_and_reported_ready() {
    let Some((pebble, ports, _app)) = start_pebble(Path::new(BIN), None) else {
        return;
    };
    let (http, https, app) = (ports.http, ports.https, ports.app);
    let dir = ConfigDir::new();
    dir.write("issuer.yaml", &pebble_issuer(&pebble, None));
    dir.write(
        "gateway.yaml",
        &auto_gateway("gw", "pebble", http, https, "[one.test, two.test]", app),
    );
    let state = ConfigDir::new();
    let state_arg = state.path().display().to_string();

    // Before `up` ever ran: listed, no status yet.
    let (out, _) = certs(dir.path(), state.path());
    let before = row(&out, "isthmus-acme-default-gw-1");
    assert_eq!(before[0], "istio-system", "{out}");
    assert_eq!(before[2], "Unknown", "{out}");
    assert!(before[7].starts_with("no status yet"), "{out}");

    let started = Instant::now();
    let mut up = Up::start(Path::new(BIN), dir.path(), &["--state-dir", &state_arg]);
    line(
        &mut up,
        &["acme: 1 certificate(s) kept issued; their status: isthmus certs"],
    );
    let root = pebble.issuing_root_file();
    for host in ["one.test", "two.test"] {
        wait_until(&format!("HTTPS 200 for {host}"), WAIT, || {
            (get(&root, host, https) == (200, "a v1".to_string())).then_some(())
        });
    }
    eprintln!(
        "both hosts served over HTTPS {} ms after process start",
        started.elapsed().as_millis()
    );
    // What a user sees at the default log level.
    line(
        &mut up,
        &[
            "INFO",
            "acme: ordering Secret istio-system/isthmus-acme-default-gw-1 for [one.test, two.test] from ClusterIssuer pebble",
            "(no certificate yet)",
        ],
    );
    line(&mut up, &["INFO", "acme: challenge served for one.test"]);
    line(&mut up, &["INFO", "acme: challenge served for two.test"]);
    let issued = line(
        &mut up,
        &["INFO", "acme: issued istio-system/isthmus-acme-default-gw-1 for [one.test, two.test], expires "],
    );
    assert!(issued.contains("; renewal at "), "{issued}");
    assert!(
        !up.proc
            .output()
            .iter()
            .any(|l| l.contains("needs credentialName")
                || l.contains("ERROR")
                || l.contains("WARN")),
        "{:#?}",
        up.proc.output()
    );

    // The served certificate: pebble's, for both names, the one stored.
    let secret = state
        .path()
        .join("secrets/istio-system.isthmus-acme-default-gw-1.yaml");
    let stored = secret_value(&secret, "tls.crt");
    let stored_serial = x509_text(&stored, &["-serial"]);
    for host in ["one.test", "two.test"] {
        let leaf = served_leaf(loopback(https), host, Some(&root)).expect("a verified handshake");
        assert_eq!(x509_text(&leaf, &["-serial"]), stored_serial, "{host}");
        let san = x509_text(&leaf, &["-ext", "subjectAltName"]);
        assert!(
            san.contains("DNS:one.test") && san.contains("DNS:two.test"),
            "{san}"
        );
    }
    // `notAfter=2030-11-26 06:25:00Z` -> RFC 3339.
    let not_after = x509_text(&stored, &["-enddate", "-dateopt", "iso_8601"])
        .trim_start_matches("notAfter=")
        .replace(' ', "T");

    // The status file: a cert-manager Certificate, Ready, with the validity.
    let status_path = state
        .path()
        .join("status/istio-system.isthmus-acme-default-gw-1.yaml");
    let status = std::fs::read_to_string(&status_path).expect("status file");
    for want in [
        "apiVersion: cert-manager.io/v1\nkind: Certificate\n",
        "  name: isthmus-acme-default-gw-1\n  namespace: istio-system\n",
        "    isthmus.dev/gateway: default/gw\n",
        "  secretName: isthmus-acme-default-gw-1\n  dnsNames:\n  - one.test\n  - two.test\n",
        "    name: pebble\n    kind: ClusterIssuer\n",
        "  - type: Ready\n    status: 'True'\n    reason: Issued\n",
        &format!("  notAfter: {not_after}\n"),
        "  renewalTime: ",
        "  notBefore: ",
    ] {
        assert!(status.contains(want), "{want:?} not in\n{status}");
    }
    assert!(!status.contains("failedIssuanceAttempts"), "{status}");
    assert!(!status.contains("PRIVATE KEY"), "{status}");

    // `isthmus certs` while `up` runs.
    let (out, err) = certs(dir.path(), state.path());
    let r = row(&out, "isthmus-acme-default-gw-1");
    assert_eq!(
        r[..6],
        [
            "istio-system",
            "isthmus-acme-default-gw-1",
            "True",
            "isthmus-acme-default-gw-1",
            "ClusterIssuer/pebble",
            not_after.as_str(),
        ],
        "{out}"
    );
    assert!(
        r[6].ends_with('Z') && r[6] < r[5],
        "renewal before expiry: {out}"
    );
    assert!(r[7].starts_with("Issued: "), "{out}");
    assert_eq!(err, "", "no findings");

    // And after it stopped.
    drop(up);
    let (after, _) = certs(dir.path(), state.path());
    assert_eq!(
        row(&after, "isthmus-acme-default-gw-1")[..6],
        r[..6],
        "{after}"
    );
}

#[test]
fn an_unreachable_acme_server_shows_ready_false_with_the_error_and_the_next_attempt() {
    // Nothing listens on `closed`: every order fails to connect. No pebble needed.
    let p = free_ports(5);
    let (http, https, app, other_https, closed) = (p[0], p[1], p[2], p[3], p[4]);
    let _app = demo_app(Path::new(BIN), "a", "v1", app);
    let dir = ConfigDir::new();
    dir.write(
        "issuer.yaml",
        &cluster_issuer(
            "down",
            &format!("https://127.0.0.1:{closed}/dir"),
            None,
            None,
        ),
    );
    dir.write(
        "gateway.yaml",
        &auto_gateway(
            "gw",
            "down",
            http,
            https,
            "[down.test, \"*.wild.test\"]",
            app,
        ),
    );
    // A second Gateway naming an issuer that does not exist.
    dir.write(
        "other.yaml",
        &auto_gateway(
            "other",
            "no-such-issuer",
            free_port(),
            other_https,
            "[other.test]",
            app,
        ),
    );
    let state = ConfigDir::new();
    let state_arg = state.path().display().to_string();
    let mut up = Up::start(
        Path::new(BIN),
        dir.path(),
        &["--state-dir", &state_arg, "--acme-retry-max", "1"],
    );
    let failed = line(
        &mut up,
        &[
            "ERROR",
            "acme: order for Secret istio-system/isthmus-acme-default-gw-1 for [down.test] (Gateway default/gw ",
            "failed: ",
        ],
    );
    assert!(
        failed.contains("Connection refused")
            && failed.contains("retrying in 1s (at ")
            && failed.contains("failed attempts: 1)")
            && failed.contains("no certificate issued for down.test yet"),
        "{failed}"
    );
    let unknown = line(&mut up, &["ISM0301", "Gateway default/other"]);
    assert!(
        unknown.contains("other.yaml:")
            && unknown.contains("metadata.annotations.isthmus.dev/acme-issuer: no ClusterIssuer no-such-issuer; no certificate is ordered for this Gateway"),
        "{unknown}"
    );
    let wildcard = line(&mut up, &["ISM0305", "Gateway default/gw"]);
    assert!(
        wildcard.contains("WARN")
            && wildcard.contains("spec.servers[1].hosts[1]: HTTPS server on port ")
            && wildcard.contains("*.wild.test is a wildcard"),
        "{wildcard}"
    );

    // The status file counts the failures as they are retried.
    let status_path = state
        .path()
        .join("status/istio-system.isthmus-acme-default-gw-1.yaml");
    let status = wait_until("a second failed attempt in the status", WAIT, || {
        let text = std::fs::read_to_string(&status_path).ok()?;
        (text.contains("  failedIssuanceAttempts: ")
            && !text.contains("  failedIssuanceAttempts: 1\n")
            && text.contains("reason: Failed"))
        .then_some(text)
    });
    for want in [
        "  - type: Ready\n    status: 'False'\n    reason: Failed\n",
        "Connection refused",
        "next attempt at ",
        "  lastFailureTime: ",
    ] {
        assert!(status.contains(want), "{want:?} not in\n{status}");
    }
    assert!(!status.contains("notAfter"), "{status}");

    let (out, err) = certs(dir.path(), state.path());
    let r = row(&out, "isthmus-acme-default-gw-1");
    assert_eq!(r[2], "False", "{out}");
    assert_eq!(r[4], "ClusterIssuer/down", "{out}");
    assert_eq!((r[5].as_str(), r[6].as_str()), ("", ""), "{out}");
    // The message of the last status written: Failed (between attempts) or
    // Ordering (during one).
    assert!(
        (r[7].starts_with("Failed: order failed: ") && r[7].contains("Connection refused"))
            || r[7].starts_with("Ordering: "),
        "{out}"
    );
    // The Gateway whose issuer is unknown orders nothing: its finding is printed.
    assert!(
        err.contains("[ISM0301] (Gateway default/other ")
            && err.contains("no ClusterIssuer no-such-issuer"),
        "{err}"
    );
    assert!(err.contains("[ISM0305] (Gateway default/gw "), "{err}");
    assert!(up.proc.is_running());
}
