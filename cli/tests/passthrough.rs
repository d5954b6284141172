//! TLS PASSTHROUGH on the gateway: Gateway servers with `tls.mode: PASSTHROUGH` (or
//! a `tls` block without a mode) and VirtualService `tls` routes by `sniHosts`,
//! through a running `isthmus up`. The backends are real TLS servers (`openssl
//! s_server -www`) with their own self-signed certificates; the clients are `curl`
//! and `openssl s_client`, which must see the backend's certificate, not one of the
//! gateway's. The same port also terminates TLS for another name.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use isthmus_testkit::fixtures::{gateway, server, tls_secret, tls_service};
use isthmus_testkit::pki::{self_signed, served_leaf, served_serial};
use isthmus_testkit::{curl_https, free_ports, loopback, wait_for_port, ConfigDir, Proc, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

/// `openssl s_server -www` on `port` with this certificate: answers `GET /` over
/// TLS with a status page.
fn tls_backend(port: u16, crt: &Path, key: &Path) -> Proc {
    let proc = Proc::spawn(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(crt)
            .arg("-key")
            .arg(key),
    );
    wait_for_port(loopback(port), Duration::from_secs(10));
    proc
}

/// The serial of the certificate a handshake with `sni` gets (`serial=0B`), or
/// `Err` with s_client's output. No verification: the caller checks the serial.
fn unverified_serial(addr: SocketAddr, sni: &str) -> Result<String, String> {
    served_serial(addr, sni, None)
}

/// `curl https://host:PORT/` through the gateway, trusting only `ca`: the status
/// code (0 when the TLS handshake or the connection failed).
fn curl_status(addr: SocketAddr, host: &str, ca: &Path) -> u16 {
    curl_https(ca, host, addr.port(), &[]).status
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read PEM")
}

#[test]
fn passthrough_forwards_the_backends_own_handshake_by_sni() {
    let pki = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(4);
    let (gw_port, a_port, b_port, c_port) = (ports[0], ports[1], ports[2], ports[3]);
    // Two backends for p.test (weights 50/50), one for w.wild.test; each its own
    // certificate (serials 0xA1, 0xB2, 0xC3). The gateway's own certificate for
    // a.test (serial 0x99) terminates TLS on the same port.
    let (a_crt, a_key) = self_signed(pki.path(), "p.test", 0xA1);
    let (b_crt, b_key) = self_signed(pki.path(), "p.test", 0xB2);
    let (c_crt, c_key) = self_signed(pki.path(), "w.wild.test", 0xC3);
    let (g_crt, g_key) = self_signed(pki.path(), "a.test", 0x99);
    let _a = tls_backend(a_port, &a_crt, &a_key);
    let _b = tls_backend(b_port, &b_crt, &b_key);
    let _c = tls_backend(c_port, &c_crt, &c_key);

    let servers = server(
        gw_port,
        "tls-pass",
        "TLS",
        r#"[p.test, "*.wild.test"]"#,
        Some("{mode: PASSTHROUGH}"),
    ) + &server(
        gw_port,
        "https",
        "HTTPS",
        "[a.test]",
        Some("{mode: SIMPLE, credentialName: a-cert}"),
    );
    let routes = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass}
spec:
  hosts: [p.test, "*.wild.test"]
  gateways: [gw]
  tls:
  - match: [{sniHosts: [p.test]}]
    route:
    - {destination: {host: a.default.svc.cluster.local, port: {number: 443}}, weight: 50}
    - {destination: {host: b.default.svc.cluster.local, port: {number: 443}}, weight: 50}
  - match: [{sniHosts: ["*.wild.test"]}]
    route: [{destination: {host: c.default.svc.cluster.local, port: {number: 443}}}]
"#;
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &(gateway("gw", &servers)
            + routes
            + &tls_secret("a-cert", &read(&g_crt), &read(&g_key))
            + &tls_service("a", a_port)
            + &tls_service("b", b_port)
            + &tls_service("c", c_port)),
    );
    let up = Up::start(Path::new(BIN), dir.path(), &[]);
    let addr = up.addr(gw_port);

    // The backend's own certificate reaches the client, and curl trusting only
    // that backend's certificate gets the backend's 200.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let serial = unverified_serial(addr, "p.test").expect("passthrough handshake");
        assert!(
            serial == "serial=A1" || serial == "serial=B2",
            "p.test got {serial}"
        );
        seen.insert(serial);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "both weighted backends serve p.test: {seen:?}"
    );
    let mut ok = 0;
    for _ in 0..20 {
        // Either backend; trust both (a bundle of the two self-signed certificates).
        let bundle = pki.path().join("p-bundle.pem");
        let mut text = std::fs::read_to_string(&a_crt).expect("a");
        text.push_str(&std::fs::read_to_string(&b_crt).expect("b"));
        std::fs::write(&bundle, text).expect("write bundle");
        if curl_status(addr, "p.test", &bundle) == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 20, "curl through PASSTHROUGH");

    // The wildcard route; the terminated server on the same port.
    assert_eq!(
        unverified_serial(addr, "w.wild.test").as_deref(),
        Ok("serial=C3")
    );
    assert_eq!(curl_status(addr, "w.wild.test", &c_crt), 200);
    assert_eq!(
        unverified_serial(addr, "a.test").as_deref(),
        Ok("serial=99")
    );
    // No server and no route for the name: refused, nothing forwarded.
    assert!(served_leaf(addr, "nope.test", None).is_err());
    assert!(served_leaf(addr, "wild.test", None).is_err());
    // Trusting only the gateway's certificate, the passthrough name fails
    // verification: the gateway never terminates it.
    assert_eq!(curl_status(addr, "p.test", &g_crt), 0);
}

#[test]
fn a_tls_block_without_mode_is_passthrough_and_routes_change_live() {
    let pki = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    let (gw_port, a_port, b_port) = (ports[0], ports[1], ports[2]);
    let (a_crt, a_key) = self_signed(pki.path(), "p.test", 0xA1);
    let (b_crt, b_key) = self_signed(pki.path(), "p.test", 0xB2);
    let _a = tls_backend(a_port, &a_crt, &a_key);
    let _b = tls_backend(b_port, &b_crt, &b_key);
    let gateway = gateway(
        "gw",
        &server(gw_port, "https", "HTTPS", r#"["*"]"#, Some("{}")),
    ) + &tls_service("a", a_port)
        + &tls_service("b", b_port);
    let vs = |backend: &str| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass}}
spec:
  hosts: [p.test]
  gateways: [gw]
  tls:
  - match: [{{sniHosts: [p.test]}}]
    route: [{{destination: {{host: {backend}.default.svc.cluster.local, port: {{number: 443}}}}}}]
"#
        )
    };
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &gateway);
    dir.write("vs.yaml", &vs("a"));
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let addr = up.addr(gw_port);
    assert_eq!(
        unverified_serial(addr, "p.test").as_deref(),
        Ok("serial=A1")
    );
    // Re-route to b: new connections go to b once the controller pushed it.
    dir.write("vs.yaml", &vs("b"));
    isthmus_testkit::wait_until("p.test routed to b", Duration::from_secs(10), || {
        (unverified_serial(addr, "p.test").as_deref() == Ok("serial=B2")).then_some(())
    });
    assert!(up.proc.is_running());
}
