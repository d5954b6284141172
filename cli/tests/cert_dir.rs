//! Certificates served from files, through a running `isthmus up` with the real
//! `curl` and `openssl s_client` as clients and certificates made by the `openssl`
//! command ([`TestCa`]):
//!
//! - `--cert-dir CERTS`: `NAME.crt` + `NAME.key` serve as Secret istio-system/NAME;
//!   replacing the files swaps the certificate for new handshakes while a keep-alive
//!   connection and a stream of new connections see no failure; a garbled key file is
//!   an error naming the file, and the other hosts keep serving.
//! - An expired certificate (ISM0104): `isthmus analyze` reports it, and the gateway
//!   logs it once as an ERROR while it serves it and the other hosts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::fixtures::{demo_backend, gateway, https_servers, route_all, tls_secret};
use isthmus_testkit::pki::{served_serial, Issued, TestCa};
use isthmus_testkit::{curl_https, free_port, loopback, wait_until, ConfigDir, Proc, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

/// A Gateway (default/gw) with one HTTPS server per (host, secret) on `port`, every
/// host routed to one demo app on `app_port`.
fn https_config(port: u16, app_port: u16, servers: &[(&str, &str)]) -> String {
    let tls = |secret: &str| format!("{{mode: SIMPLE, credentialName: {secret}}}");
    let servers = https_servers(port, servers.iter().map(|(h, s)| (*h, tls(s))));
    gateway("gw", &servers)
        + &route_all("all", "gw", "app.default.svc.cluster.local")
        + &demo_backend("app", app_port)
}

/// Secret istio-system/NAME in YAML with the certificate and key of `pair`.
fn secret_yaml(name: &str, pair: &Issued) -> String {
    tls_secret(name, &pair.cert, &pair.key)
}

/// Write `NAME.key` into `dir` with permissions `mode`, in place (as `cp` does).
fn write_key(dir: &Path, name: &str, pair: &Issued, mode: u32) {
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&key, &pair.key).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Write `NAME.key` (with permissions `key_mode`), then `NAME.crt`, into `dir`.
fn write_pair(dir: &Path, name: &str, pair: &Issued, key_mode: u32) {
    write_key(dir, name, pair, key_mode);
    std::fs::write(dir.join(format!("{name}.crt")), &pair.cert).expect("write cert");
}

/// `curl https://HOST:PORT/` to the listener on 127.0.0.1, verifying against `ca`
/// (or not, with `-k` in `extra`): the status, 0 when no response.
fn status(port: u16, host: &str, ca: &Path, extra: &[&str]) -> u16 {
    curl_https(ca, host, port, extra).status
}

/// The serial number (`serial=02`) of the certificate a new handshake for `host`
/// gets, verified against `ca`.
fn serial(port: u16, host: &str, ca: &Path) -> Result<String, String> {
    served_serial(loopback(port), host, Some(ca))
}

/// A curl process making `n` requests to `https://HOST:PORT/` at 20 a second; each
/// completed transfer prints a line `connections-opened status`.
fn client_loop(port: u16, host: &str, ca: &Path, n: u32, extra: &[&str]) -> Proc {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "60",
        "--rate",
        "20/s",
    ])
    .arg("--cacert")
    .arg(ca)
    .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
    // To stderr: unbuffered, so each line arrives as its transfer completes.
    .args(["-w", "%{stderr}%{num_connects} %{http_code}\n"])
    .args(extra)
    .arg(format!("https://{host}:{port}/[1-{n}]"));
    Proc::spawn(&mut cmd)
}

/// The lines of a client loop of `n` requests once it has ended.
fn finish(mut client: Proc, n: usize) -> Vec<String> {
    wait_until("the client loop to end", Duration::from_secs(60), || {
        (!client.is_running()).then_some(())
    });
    // Its last lines may still be on their way from the pipe reader: a short wait for
    // them (fewer lines fail the assertions after it).
    let deadline = Instant::now() + Duration::from_secs(2);
    while client.output().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    client.output().to_vec()
}

/// `isthmus up` on `dir` with `extra` arguments; waits for the HTTPS listener.
fn up(dir: &Path, port: u16, extra: &[&str]) -> Up {
    let mut up = Up::start(Path::new(BIN), dir, extra);
    up.wait_https_listener(port);
    up
}

#[test]
fn cert_dir_pairs_serve_https_and_swap_without_failures() {
    let ca = TestCa::new();
    let root = ca.root();
    let (one, two) = (ca.leaf(&["a.test"], 1), ca.leaf(&["a.test"], 2));
    let certs = tempfile::tempdir().expect("tempdir");
    write_pair(certs.path(), "a-cert", &one, 0o600);
    let (port, app) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &https_config(port, app, &[("a.test", "a-cert")]),
    );
    let certs_arg = certs.path().to_str().expect("utf-8 path");
    let mut up = up(dir.path(), port, &["--cert-dir", certs_arg]);
    assert_eq!(status(port, "a.test", &root, &[]), 200);
    assert_eq!(serial(port, "a.test", &root), Ok("serial=01".to_string()));
    up.proc.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("Secret istio-system/a-cert loaded from the certificate directory")
            .then_some(())
    });

    // One keep-alive connection, and a new connection (a new handshake) per request,
    // both running across the swap.
    let n = 100;
    let mut kept = client_loop(port, "a.test", &root, n, &[]);
    let close = ["--http1.1", "-H", "Connection: close"];
    let mut fresh = client_loop(port, "a.test", &root, n, &close);
    for client in [&mut kept, &mut fresh] {
        client.wait_for_line(Duration::from_secs(10), |_| Some(()));
    }

    // The new key first: the pair does not match until the certificate follows, and
    // the last good pair keeps serving meanwhile.
    write_key(certs.path(), "a-cert", &two, 0o600);
    let mismatch = format!(
        "{0}/a-cert.crt and {0}/a-cert.key: the private key does not match the certificate; \
         Secret istio-system/a-cert keeps its last good certificate",
        certs.path().display()
    );
    up.proc.wait_for_line(Duration::from_secs(5), |l| {
        (l.contains("ERROR") && l.ends_with(&mismatch)).then_some(())
    });
    assert_eq!(serial(port, "a.test", &root), Ok("serial=01".to_string()));
    std::fs::write(certs.path().join("a-cert.crt"), &two.cert).expect("write cert");
    wait_until(
        "new handshakes to get serial 02",
        Duration::from_secs(10),
        || (serial(port, "a.test", &root) == Ok("serial=02".to_string())).then_some(()),
    );
    let swapped_before_the_end = kept.output().len() < n as usize;
    let (kept_lines, fresh_lines) = (finish(kept, n as usize), finish(fresh, n as usize));

    assert!(
        swapped_before_the_end,
        "the swap came after the client loop"
    );
    assert_eq!(kept_lines.len(), n as usize, "{kept_lines:?}");
    assert_eq!(kept_lines[0], "1 200");
    assert!(
        kept_lines[1..].iter().all(|l| l == "0 200"),
        "one connection, every request answered: {kept_lines:?}"
    );
    assert_eq!(fresh_lines.len(), n as usize, "{fresh_lines:?}");
    assert!(
        fresh_lines.iter().all(|l| l == "1 200"),
        "a new connection per request, every handshake and request good: {fresh_lines:?}"
    );
    // The key is never logged.
    let key_line = two.key.lines().nth(1).expect("a key line").to_string();
    assert!(!up.proc.output().iter().any(|l| l.contains(&key_line)));
}

#[test]
fn cert_dir_garbled_key_is_reported_by_file_and_other_hosts_keep_serving() {
    let ca = TestCa::new();
    let root = ca.root();
    let (a, b) = (ca.leaf(&["a.test"], 1), ca.leaf(&["b.test"], 2));
    let certs = tempfile::tempdir().expect("tempdir");
    // a's key is readable by everyone: served, with a warning.
    write_pair(certs.path(), "a-cert", &a, 0o644);
    let garbled = b.key.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n%%");
    let b_garbled = Issued {
        cert: b.cert.clone(),
        key: garbled,
    };
    write_pair(certs.path(), "b-cert", &b_garbled, 0o600);
    let (port, app) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let servers = [("a.test", "a-cert"), ("b.test", "b-cert")];
    dir.write("gateway.yaml", &https_config(port, app, &servers));
    let certs_arg = certs.path().to_str().expect("utf-8 path");
    let mut up = up(dir.path(), port, &["--cert-dir", certs_arg]);

    let key_file = certs.path().join("b-cert.key");
    let error = up.proc.wait_for_line(Duration::from_secs(5), |l| {
        (l.contains("ERROR") && l.contains(&key_file.display().to_string())).then(|| l.to_string())
    });
    assert!(
        error.contains("b-cert.key is not valid PEM: the PRIVATE KEY block is not base64 DER")
            && error.contains("Secret istio-system/b-cert is not served"),
        "{error}"
    );
    let warning = up.proc.wait_for_line(Duration::from_secs(5), |l| {
        (l.contains("WARN") && l.contains("a-cert.key")).then(|| l.to_string())
    });
    assert!(
        warning.contains("permissions 0644 are too open: the private key is readable by others"),
        "{warning}"
    );
    assert_eq!(status(port, "a.test", &root, &[]), 200);
    assert!(serial(port, "b.test", &root).is_err(), "b.test is refused");

    // Fixed: b.test serves too.
    write_pair(certs.path(), "b-cert", &b, 0o600);
    wait_until("b.test to serve", Duration::from_secs(10), || {
        (status(port, "b.test", &root, &[]) == 200).then_some(())
    });
    assert_eq!(status(port, "a.test", &root, &[]), 200);
    for key in [&a.key, &b.key] {
        let line = key.lines().nth(1).expect("a key line").to_string();
        assert!(
            !up.proc.output().iter().any(|l| l.contains(&line)),
            "a key was logged"
        );
    }
}

#[test]
fn expired_tls_certificate_is_reported_by_analyze_and_logged_once_by_the_gateway() {
    let ca = TestCa::new();
    let root = ca.root();
    let old = ca.leaf_valid(&["old.test"], 1, "20250101000000Z", "20260102000000Z");
    let good = ca.leaf(&["new.test", "c.test"], 2);
    let (port, app) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let servers = [("old.test", "old-cert"), ("new.test", "new-cert")];
    dir.write("gateway.yaml", &https_config(port, app, &servers));
    dir.write(
        "secrets.yaml",
        &(secret_yaml("old-cert", &old) + &secret_yaml("new-cert", &good)),
    );

    let analyzed = Command::new(BIN)
        .arg("analyze")
        .arg(dir.path())
        .output()
        .expect("run analyze");
    let text = String::from_utf8_lossy(&analyzed.stdout);
    let secrets_file = dir.path().join("secrets.yaml").display().to_string();
    let expected = format!(
        "Warning [ISM0104] (Secret istio-system/old-cert {secrets_file}:7) stringData.tls.crt: \
         Secret istio-system/old-cert (credentialName of Gateway default/gw spec.servers[0]): \
         the certificate expired on 2026-01-02T00:00:00Z; clients will refuse it"
    );
    assert!(text.lines().any(|l| l == expected), "{text}");
    assert!(!text.contains("new-cert"), "{text}");
    // istioctl: an expired credential is IST0161, an Error (Istio grid case 17).
    assert_eq!(analyzed.status.code(), Some(79), "{text}");

    let mut up = up(dir.path(), port, &[]);
    assert_eq!(status(port, "new.test", &root, &[]), 200);
    // Still served: a client told to accept it gets its answer.
    assert_eq!(status(port, "old.test", &root, &["-k"]), 200);
    assert_eq!(status(port, "old.test", &root, &[]), 0, "curl refuses it");
    let logged = "ERROR Gateway port {port}: Secret istio-system/old-cert (Gateway default/gw \
                  spec.servers[0]): the certificate expired on 2026-01-02T00:00:00Z; clients will \
                  refuse it; it is still served until it is replaced"
        .replace("{port}", &port.to_string());
    up.proc.wait_for_line(Duration::from_secs(5), |l| {
        l.ends_with(&logged).then_some(())
    });

    // A new snapshot (a third server) does not log it again.
    let servers = [
        ("old.test", "old-cert"),
        ("new.test", "new-cert"),
        ("c.test", "new-cert"),
    ];
    dir.write("gateway.yaml", &https_config(port, app, &servers));
    wait_until("c.test to serve", Duration::from_secs(10), || {
        (status(port, "c.test", &root, &[]) == 200).then_some(())
    });
    let expired: Vec<&String> = up
        .proc
        .output()
        .iter()
        .filter(|l| l.contains("expired on"))
        .collect();
    assert_eq!(expired.len(), 1, "{expired:#?}");
}
