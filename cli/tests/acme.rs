//! Certificates obtained by the gateway itself over ACME HTTP-01, against a real
//! pebble (`isthmus_testkit::pebble`; skipped with a message when pebble is not
//! installed): cert-manager ClusterIssuer + Certificate in, a served certificate out,
//! checked with the real `curl` (h2 and HTTP/1.1) and `openssl` against the issuing
//! root pebble reports; the stored files; a restart that places no new order;
//! `httpsRedirect` next to a pending challenge; an unknown issuer; configs/demo-tls.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isthmus_testkit::acme::{certificate, pebble_issuer, secret_value, start_pebble, Ports, Site};
use isthmus_testkit::pebble::{verify_chain, Pebble};
use isthmus_testkit::pki::{serial_of, served_serial};
use isthmus_testkit::{
    curl, curl_https, demo_app, free_ports, loopback, wait_until, ConfigDir, Up,
};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");
const WAIT: Duration = Duration::from_secs(30);

/// Gateway `gw`: HTTP on `ports.http` (redirecting to HTTPS when `redirect`) and
/// HTTPS on `ports.https` with secret `acme-tls`, for `hosts`; every host routed to
/// the demo app on `ports.app` (started by the test, so it outlives restarts of `up`).
fn gateway(ports: &Ports, redirect: bool, hosts: &str) -> String {
    Site {
        https_redirect: redirect,
        ..Site::new(ports.http, ports.https, hosts, ports.app)
    }
    .yaml()
}

/// ClusterIssuer `pebble` (trusting pebble through `caBundle`) and Certificate
/// `istio-system/acme-cert` writing `acme-tls` for `names` (the first is the CN).
fn issuer_and_certificate(pebble: &Pebble, names: &[&str]) -> String {
    let extra = format!(
        "  commonName: {}\n  duration: 2160h\n  renewBefore: 360h\n",
        names[0]
    );
    pebble_issuer(pebble, None) + &certificate(names, &extra)
}

/// `curl https://host:port/` through `--resolve`, verifying against `root`, with
/// `flag` (`--http2`, `--http1.1`): (status, HTTP version, first body line).
fn get(root: &Path, host: &str, port: u16, flag: &str) -> (u16, String, String) {
    let r = curl_https(root, host, port, &[flag]);
    (r.status, r.version, r.first_line)
}

/// The serial (`serial=...`) of the certificate served for `sni` on `port`, verified
/// against `root`; `None` when the handshake or the verification fails.
fn served(port: u16, sni: &str, root: &Path) -> Option<String> {
    served_serial(loopback(port), sni, Some(root)).ok()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// Wait for `up`'s output line containing every one of `needles`.
fn line(up: &mut Up, needles: &[&str]) -> String {
    up.proc.wait_for_all(WAIT, needles)
}

#[test]
fn http01_issues_a_certificate_that_serves_h2_and_http1_and_survives_a_restart() {
    let Some((mut pebble, ports, _app)) = start_pebble(Path::new(BIN), None) else {
        return;
    };
    let dir = ConfigDir::new();
    let hosts = "[acme.test, www.acme.test]";
    dir.write("gateway.yaml", &gateway(&ports, false, hosts));
    dir.write(
        "certificate.yaml",
        &issuer_and_certificate(&pebble, &["acme.test", "www.acme.test"]),
    );

    let started = Instant::now();
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let root = pebble.issuing_root_file();
    wait_until("the first HTTPS 200", WAIT, || {
        (get(&root, "acme.test", ports.https, "--http2").0 == 200).then_some(())
    });
    eprintln!(
        "first HTTPS 200 after {} ms (process start, ACME issuance included)",
        started.elapsed().as_millis()
    );
    line(&mut up, &["acme: ordering Secret istio-system/acme-tls for [acme.test, www.acme.test] from ClusterIssuer pebble"]);
    line(&mut up, &["acme: challenge served for acme.test"]);
    line(&mut up, &["acme: challenge served for www.acme.test"]);
    let issued = line(
        &mut up,
        &["acme: issued istio-system/acme-tls for [acme.test, www.acme.test], expires "],
    );
    assert!(!issued.contains("ERROR"), "{issued}");

    for host in ["acme.test", "www.acme.test"] {
        for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            assert_eq!(
                get(&root, host, ports.https, flag),
                (200, version.to_string(), "a v1".to_string()),
                "{host} {flag}"
            );
        }
    }

    // The stored chain verifies against pebble's issuing root and is what is served.
    let state = dir.path().join(".isthmus");
    let secret = state.join("secrets/istio-system.acme-tls.yaml");
    let account = state.join("accounts/ClusterIssuer.pebble.json");
    let chain = secret_value(&secret, "tls.crt");
    let key = secret_value(&secret, "tls.key");
    assert!(key.contains("BEGIN PRIVATE KEY"), "a PKCS#8 key");
    let blocks = chain.matches("-----END CERTIFICATE-----\n").count();
    assert!(blocks >= 2, "leaf and intermediate: {chain}");
    verify_chain(&root, &chain).unwrap_or_else(|e| panic!("chain does not verify: {e}"));
    let serial = serial_of(&chain).expect("serial");
    assert_eq!(
        served(ports.https, "www.acme.test", &root).as_deref(),
        Some(serial.as_str())
    );
    assert_eq!(mode(&secret), 0o600, "{}", secret.display());
    assert_eq!(mode(&account), 0o600, "{}", account.display());
    assert_eq!(mode(&state), 0o700);
    assert_eq!(pebble.orders(), 1);

    // Restart on the same state: the stored certificate serves, no new order.
    drop(up);
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let stored = line(
        &mut up,
        &["acme: Secret istio-system/acme-tls for [acme.test, www.acme.test] is stored"],
    );
    let hex = serial.trim_start_matches("serial=").to_ascii_lowercase();
    assert!(
        stored.contains(&format!("(serial {hex},")),
        "{stored} vs {serial}"
    );
    assert_eq!(get(&root, "acme.test", ports.https, "--http2").0, 200);
    assert_eq!(
        served(ports.https, "acme.test", &root).as_deref(),
        Some(serial.as_str())
    );
    assert!(
        !up.proc
            .output()
            .iter()
            .any(|l| l.contains("acme: ordering")),
        "{:#?}",
        up.proc.output()
    );
    assert_eq!(pebble.orders(), 1, "pebble saw no second order");
}

#[test]
fn https_redirect_leaves_the_challenge_to_the_gateway_and_redirects_the_rest() {
    let Some((pebble, ports, _app)) = start_pebble(Path::new(BIN), None) else {
        return;
    };
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway(&ports, true, "[redirect.test]"));
    dir.write(
        "certificate.yaml",
        &issuer_and_certificate(&pebble, &["redirect.test"]),
    );
    let state = ConfigDir::new();
    let state_arg = state.path().display().to_string();
    let mut up = Up::start(Path::new(BIN), dir.path(), &["--state-dir", &state_arg]);
    // The CA fetched the challenge over the redirecting HTTP server: it was answered.
    let served = line(&mut up, &["acme: challenge served for redirect.test ("]);
    assert!(!served.contains("(0 fetches"), "{served}");
    line(
        &mut up,
        &["acme: issued istio-system/acme-tls for [redirect.test]"],
    );
    assert!(state
        .path()
        .join("secrets/istio-system.acme-tls.yaml")
        .exists());
    let root = pebble.issuing_root_file();
    wait_until("HTTPS 200", WAIT, || {
        (get(&root, "redirect.test", ports.https, "--http1.1").0 == 200).then_some(())
    });
    // Everything else on HTTP, an unknown token included, is redirected.
    for path in ["/", "/.well-known/acme-challenge/no-such-token", "/x?y=1"] {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{redirect_url}\n%{http_code}",
            "--resolve",
            &format!("redirect.test:{}:127.0.0.1", ports.http),
            &format!("http://redirect.test:{}{path}", ports.http),
        ]);
        assert_eq!(out.status, 301, "{path}");
        assert_eq!(
            out.body.trim(),
            format!("https://redirect.test:{}{path}", ports.http),
            "{path}"
        );
    }
}

#[test]
fn an_unknown_issuer_is_reported_by_name_and_the_rest_is_issued() {
    let Some((pebble, ports, _app)) = start_pebble(Path::new(BIN), None) else {
        return;
    };
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway(&ports, false, "[good.test]"));
    dir.write(
        "certificate.yaml",
        &(issuer_and_certificate(&pebble, &["good.test"])
            + r#"---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: lost, namespace: istio-system}
spec:
  secretName: lost-tls
  issuerRef: {name: no-such-issuer, kind: ClusterIssuer}
  dnsNames: [lost.test]
"#),
    );
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let err = line(&mut up, &["ISM0301"]);
    assert!(
        err.contains("ERROR")
            && err.contains("Certificate istio-system/lost")
            && err.contains("certificate.yaml:")
            && err.contains("spec.issuerRef: no ClusterIssuer no-such-issuer")
            && err.contains("Secret istio-system/lost-tls is not issued"),
        "{err}"
    );
    line(
        &mut up,
        &["acme: issued istio-system/acme-tls for [good.test]"],
    );
    let root = pebble.issuing_root_file();
    wait_until("HTTPS 200", WAIT, || {
        (get(&root, "good.test", ports.https, "--http2").0 == 200).then_some(())
    });
    assert!(up.proc.is_running());
}

#[test]
fn demo_tls_gets_its_certificate_from_pebble_in_place_of_the_static_one() {
    let free = free_ports(4);
    let (http, https) = (free[0], free[1]);
    let Some(pebble) = Pebble::start(http) else {
        return;
    };
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo-tls");
    let read = |f: &str| std::fs::read_to_string(configs.join(f)).expect("read config");
    let dir = ConfigDir::new();
    // Gateway ports 80 and 443 on free local ports (ports above 1023 bind as
    // declared), the demo apps on free ports, the issuer on this pebble.
    dir.write(
        "todolist.yaml",
        &read("todolist.yaml").replace("number: 443\n", &format!("number: {https}\n")),
    );
    dir.write("secret.yaml", &read("secret.yaml"));
    dir.write(
        "workloads.yaml",
        &read("workloads.yaml")
            .replace("http: 18001", &format!("http: {}", free[2]))
            .replace("http: 18002", &format!("http: {}", free[3])),
    );
    let acme = read("acme.yaml");
    assert!(acme.contains("server: https://127.0.0.1:14000/dir"));
    dir.write(
        "acme.yaml",
        &acme
            .replace("https://127.0.0.1:14000/dir", &pebble.directory_url())
            .replace("number: 80\n", &format!("number: {http}\n")),
    );
    let ca = pebble.ca_path().display().to_string();
    let state = ConfigDir::new();
    let state_arg = state.path().display().to_string();
    let _apps = [
        demo_app(Path::new(BIN), "todolist", "v1", free[2]),
        demo_app(Path::new(BIN), "todolist", "v2", free[3]),
    ];
    let mut up = Up::start(
        Path::new(BIN),
        dir.path(),
        &[
            "--acme-ca-root",
            &ca,
            "--state-dir",
            &state_arg,
            "--no-demo-apps",
        ],
    );
    line(
        &mut up,
        &["acme: issued istio-system/todolist-tls for [example.domain.com]"],
    );
    let root = pebble.issuing_root_file();
    let serial = wait_until("the issued certificate to be served", WAIT, || {
        served(https, "example.domain.com", &root)
    });
    let stored = secret_value(
        &state.path().join("secrets/istio-system.todolist-tls.yaml"),
        "tls.crt",
    );
    assert_eq!(serial_of(&stored), Ok(serial));
    for flag in ["--http2", "--http1.1"] {
        let (status, _, body) = get(&root, "example.domain.com", https, flag);
        assert_eq!(status, 200, "{flag}");
        assert!(body.starts_with("todolist v"), "{body}");
    }
    // The static certificate no longer serves.
    let static_ca: PathBuf = configs.join("example.domain.com.crt");
    assert_eq!(served(https, "example.domain.com", &static_ca), None);
}

#[test]
fn renewal_replaces_the_certificate_under_a_client_loop_with_no_failed_request() {
    // Certificates valid 15 s: renewed when a third of that is left.
    let Some((mut pebble, ports, _app)) =
        start_pebble(Path::new(BIN), Some(Duration::from_secs(15)))
    else {
        return;
    };
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway(&ports, false, "[renew.test]"));
    dir.write(
        "certificate.yaml",
        &issuer_and_certificate(&pebble, &["renew.test"]),
    );
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    line(
        &mut up,
        &["acme: issued istio-system/acme-tls for [renew.test]"],
    );
    let root = pebble.issuing_root_file();
    let first = wait_until("the first certificate to be served", WAIT, || {
        served(ports.https, "renew.test", &root)
    });

    // New connections (each a full handshake) until a new serial is served.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut requests = 0;
    let renewed = loop {
        let (status, _, body) = get(&root, "renew.test", ports.https, "--http2");
        requests += 1;
        assert_eq!((status, body.as_str()), (200, "a v1"), "request {requests}");
        let serial = served(ports.https, "renew.test", &root).expect("verified handshake");
        if serial != first {
            break serial;
        }
        assert!(Instant::now() < deadline, "no renewal within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        requests > 10,
        "the loop ran across the renewal ({requests} requests)"
    );
    let ordered = line(&mut up, &["acme: ordering Secret istio-system/acme-tls"]);
    assert!(ordered.contains("no certificate yet"), "{ordered}");
    line(&mut up, &["(the stored certificate is due for renewal)"]);
    assert_eq!(pebble.orders(), 2);
    for _ in 0..5 {
        assert_eq!(get(&root, "renew.test", ports.https, "--http1.1").0, 200);
        assert_eq!(
            served(ports.https, "renew.test", &root).as_deref(),
            Some(renewed.as_str())
        );
    }
}

#[test]
fn a_stopped_ca_leaves_the_stored_certificate_serving_and_issuing_recovers_when_it_returns() {
    // Valid 20 s: renewal is due after about 13 s.
    let Some((mut pebble, ports, _app)) =
        start_pebble(Path::new(BIN), Some(Duration::from_secs(20)))
    else {
        return;
    };
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway(&ports, false, "[down.test]"));
    dir.write(
        "certificate.yaml",
        &issuer_and_certificate(&pebble, &["down.test"]),
    );
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    line(
        &mut up,
        &["acme: issued istio-system/acme-tls for [down.test]"],
    );
    let first_root = pebble.issuing_root_file();
    let first = wait_until("the first certificate to be served", WAIT, || {
        served(ports.https, "down.test", &first_root)
    });

    // The CA goes away; the renewal fails and is retried, the stored one serves on.
    pebble.stop();
    let failed = line(
        &mut up,
        &["acme: order for Secret istio-system/acme-tls", "failed:"],
    );
    assert!(
        failed.contains("ERROR")
            && failed.contains("Certificate istio-system/acme-cert")
            && failed.contains("Connection refused")
            && failed.contains("retrying in 2s")
            && failed.contains("the stored certificate keeps serving until "),
        "{failed}"
    );
    assert_eq!(get(&first_root, "down.test", ports.https, "--http2").0, 200);
    assert_eq!(
        served(ports.https, "down.test", &first_root).as_deref(),
        Some(first.as_str())
    );

    // It returns (empty: it forgot the account): a new account, a new certificate.
    pebble.restart();
    let root = pebble.issuing_root_file();
    let renewed = wait_until("a certificate from the restarted CA", WAIT, || {
        served(ports.https, "down.test", &root)
    });
    assert_ne!(renewed, first);
    line(
        &mut up,
        &["no longer knows the account of ClusterIssuer pebble; creating a new one"],
    );
    assert_eq!(get(&root, "down.test", ports.https, "--http1.1").0, 200);
}
