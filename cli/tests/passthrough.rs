//! TLS PASSTHROUGH on the gateway: Gateway servers with `tls.mode: PASSTHROUGH` (or
//! a `tls` block without a mode) and VirtualService `tls` routes by `sniHosts`,
//! through a running `isthmus up`. The backends are real TLS servers (`openssl
//! s_server -www`) with their own self-signed certificates; the clients are `curl`
//! and `openssl s_client`, which must see the backend's certificate, not one of the
//! gateway's. The same port also terminates TLS for another name.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use isthmus_testkit::{free_ports, wait_for_port, ConfigDir, Proc, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed ECDSA P-256 certificate for `dns` with serial `serial`: paths of
/// the certificate and the key.
fn self_signed(dir: &Path, dns: &str, serial: u32) -> (PathBuf, PathBuf) {
    let crt = dir.join(format!("{dns}-{serial}.crt"));
    let key = dir.join(format!("{dns}-{serial}.key"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "2"])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .args([
            "-subj",
            &format!("/CN={dns}"),
            "-set_serial",
            &serial.to_string(),
        ])
        .args(["-addext", &format!("subjectAltName=DNS:{dns}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    (crt, key)
}

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
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    proc
}

/// The serial of the certificate a handshake with `sni` gets (`serial=0B`), or
/// `Err` with s_client's output. No verification: the caller checks the serial.
fn served_serial(addr: SocketAddr, sni: &str) -> Result<String, String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !stdout.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(stdout.as_bytes())
        .expect("feed openssl x509");
    let parsed = x509.wait_with_output().expect("openssl x509");
    Ok(String::from_utf8_lossy(&parsed.stdout).trim().to_string())
}

/// `curl https://host:PORT/` through the gateway, trusting only `ca`: the status
/// code (0 when the TLS handshake or the connection failed).
fn curl_status(addr: SocketAddr, host: &str, ca: &Path) -> u16 {
    let port = addr.port();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(format!("https://{host}:{port}/"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

fn service_entry(name: &str, port: u16) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {port}}}}}]
"#
    )
}

fn pem_block(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read PEM")
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect()
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

    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: tls-pass, protocol: TLS}}
    hosts: [p.test, "*.wild.test"]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {gw_port}, name: https, protocol: HTTPS}}
    hosts: [a.test]
    tls: {{mode: SIMPLE, credentialName: a-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass}}
spec:
  hosts: [p.test, "*.wild.test"]
  gateways: [gw]
  tls:
  - match: [{{sniHosts: [p.test]}}]
    route:
    - {{destination: {{host: a.default.svc.cluster.local, port: {{number: 443}}}}, weight: 50}}
    - {{destination: {{host: b.default.svc.cluster.local, port: {{number: 443}}}}, weight: 50}}
  - match: [{{sniHosts: ["*.wild.test"]}}]
    route: [{{destination: {{host: c.default.svc.cluster.local, port: {{number: 443}}}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: a-cert, namespace: istio-system}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}{}{}{}"#,
            pem_block(&g_crt),
            pem_block(&g_key),
            service_entry("a", a_port),
            service_entry("b", b_port),
            service_entry("c", c_port),
        ),
    );
    let up = Up::start(Path::new(BIN), dir.path(), &[]);
    let addr = up.addr(gw_port);

    // The backend's own certificate reaches the client, and curl trusting only
    // that backend's certificate gets the backend's 200.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let serial = served_serial(addr, "p.test").expect("passthrough handshake");
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
        served_serial(addr, "w.wild.test").as_deref(),
        Ok("serial=C3")
    );
    assert_eq!(curl_status(addr, "w.wild.test", &c_crt), 200);
    assert_eq!(served_serial(addr, "a.test").as_deref(), Ok("serial=99"));
    // No server and no route for the name: refused, nothing forwarded.
    assert!(served_serial(addr, "nope.test").is_err());
    assert!(served_serial(addr, "wild.test").is_err());
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
    let gateway = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: https, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{}}
{}{}"#,
        service_entry("a", a_port),
        service_entry("b", b_port)
    );
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
    assert_eq!(served_serial(addr, "p.test").as_deref(), Ok("serial=A1"));
    // Re-route to b: new connections go to b once the controller pushed it.
    dir.write("vs.yaml", &vs("b"));
    isthmus_testkit::wait_until("p.test routed to b", Duration::from_secs(10), || {
        (served_serial(addr, "p.test").as_deref() == Ok("serial=B2")).then_some(())
    });
    assert!(up.proc.is_running());
}
