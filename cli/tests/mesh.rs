//! The mesh under `isthmus up` in explicit-port mode: the seed's path internet ->
//! gateway -> mTLS -> sidecar -> app, with real processes (the controller and gateway
//! in `up`, one `isthmus proxy` per workload), real curl and openssl clients, and
//! `isthmus proxy-status`. Certificates the mesh CA would never issue (another CA,
//! expired, another trust domain) are made with openssl from the CA's own files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::pki::TestCa;
use isthmus_testkit::{free_ports, ConfigDir, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

/// The seed's scenario on free ports: Namespace with injection, the todolist
/// Service, two WorkloadEntries (demo apps) with their sidecars' ports pinned by
/// annotation, the 90/10 VirtualService on a Gateway, and a PeerAuthentication.
struct Mesh {
    dir: ConfigDir,
    up: Up,
    gateway: SocketAddr,
    admin: String,
    /// Inbound address of v1's and v2's sidecars.
    inbound: [SocketAddr; 2],
    /// Outbound address of v1's sidecar (the app's side).
    outbound_v1: SocketAddr,
}

fn workloads(apps: [u16; 2], inbound: [u16; 2], outbound: [u16; 2]) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels: {istio-injection: enabled}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: todolist}\nspec:\n  selector: {app: todolist}\n  ports:\n  - {name: http, port: 8000, targetPort: 8000}\n",
    );
    for (i, v) in ["v1", "v2"].iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: todolist-{v}\n  annotations:\n    isthmus.dev/demo-app: todolist\n    isthmus.dev/inbound-port: \"{}\"\n    isthmus.dev/outbound-port: \"{}\"\nspec:\n  address: 127.0.0.1\n  ports: {{http: {}}}\n  serviceAccount: todolist\n  labels: {{app: todolist, version: {v}}}\n",
            inbound[i], outbound[i], apps[i]
        ));
    }
    out
}

const ROUTES: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: todolist-gateway}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: todolist}\nspec:\n  hosts: ['*']\n  gateways: [todolist-gateway]\n  http:\n  - route:\n    - destination: {host: todolist, subset: v1, port: {number: 8000}}\n      weight: 90\n    - destination: {host: todolist, subset: v2, port: {number: 8000}}\n      weight: 10\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: todolist}\nspec:\n  host: todolist\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";

fn peer_authentication(mode: &str) -> String {
    format!("apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: mtls-mode, namespace: default}}\nspec:\n  mtls: {{mode: {mode}}}\n")
}

impl Mesh {
    fn start(mode: &str, extra: &[&str]) -> Mesh {
        let p = free_ports(7);
        let dir = ConfigDir::new();
        dir.write(
            "workloads.yaml",
            &workloads([p[1], p[2]], [p[3], p[4]], [p[5], p[6]]),
        );
        dir.write("routes.yaml", ROUTES);
        dir.write("mtls.yaml", &peer_authentication(mode));
        let offset = (p[0] - 80).to_string();
        let mut args = vec!["--port-offset", offset.as_str()];
        args.extend_from_slice(extra);
        let mut up = Up::start(Path::new(BIN), dir.path(), &args);
        let admin = up.proc.wait_for_line(Duration::from_secs(5), |l| {
            let rest = l.split_once("admin http://")?.1;
            Some(rest.split('/').next()?.to_string())
        });
        let gateway = up.addr(80);
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Mesh {
            dir,
            up,
            gateway,
            admin,
            inbound: [local(p[3]), local(p[4])],
            outbound_v1: local(p[5]),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join(".isthmus")
    }

    /// The mesh root `up` generated.
    fn root(&self) -> PathBuf {
        self.state().join("ca").join("root-cert.pem")
    }

    /// `isthmus proxy-status -o json`, parsed.
    fn status(&self) -> Vec<serde_json::Value> {
        let out = Command::new(BIN)
            .args(["proxy-status", "--controller", &self.admin, "-o", "json"])
            .output()
            .expect("proxy-status");
        assert!(
            out.status.success(),
            "proxy-status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("proxy-status prints JSON")
    }

    fn wait_synced(&self, version_at_least: u64) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = self.status();
            let synced = list.len() == 3
                && list.iter().all(|p| {
                    p["status"] == "SYNCED" && p["version"].as_u64() >= Some(version_at_least)
                });
            if synced {
                return list;
            }
            assert!(Instant::now() < deadline, "not all SYNCED: {list:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// curl's status code and body; status 0 when no HTTP answer came.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// An HTTPS request to a sidecar's inbound address, verifying its certificate as
/// the identity `todolist` (the DNS name derived from it), with `client` (PEM
/// cert and key files) as the client certificate.
fn to_inbound(mesh: &Mesh, i: usize, client: Option<(&Path, &Path)>) -> (u16, String) {
    let addr = mesh.inbound[i];
    let name = "todolist.default.sa.cluster.local";
    let url = format!("https://{name}:{}/", addr.port());
    let resolve = format!("{name}:{}:127.0.0.1", addr.port());
    let root = mesh.root().display().to_string();
    let mut args = vec!["--resolve", &resolve, "--cacert", &root];
    let (c, k);
    if let Some((cert, key)) = client {
        c = cert.display().to_string();
        k = key.display().to_string();
        args.extend_from_slice(&["--cert", &c, "--key", &k]);
    }
    args.push(&url);
    curl(&args)
}

fn write_pair(dir: &Path, name: &str, issued: &isthmus_testkit::pki::Issued) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, &issued.cert).expect("write cert");
    std::fs::write(&k, &issued.key).expect("write key");
    (c, k)
}

#[test]
fn the_seed_path_is_mtls_from_the_gateway_to_each_sidecar() {
    let mesh = Mesh::start("STRICT", &[]);
    let list = mesh.wait_synced(1);

    // proxy-status: the gateway and both sidecars with istioctl-like keys.
    let by_name = |n: &str| {
        list.iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{n} in {list:#?}"))
    };
    let gw = by_name("ingressgateway");
    assert_eq!(gw["role"], "gateway");
    assert_eq!(gw["namespace"], "istio-system");
    assert_eq!(
        gw["identity"],
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    );
    assert!(gw.get("inbound").is_none(), "{gw}");
    for (i, v) in ["v1", "v2"].iter().enumerate() {
        let s = by_name(&format!("todolist-{v}"));
        assert_eq!(s["role"], "sidecar");
        assert_eq!(s["namespace"], "default");
        assert_eq!(
            s["identity"],
            "spiffe://cluster.local/ns/default/sa/todolist"
        );
        assert_eq!(s["inbound"], mesh.inbound[i].to_string());
        // 24 h certificates.
        let expiry = s["certExpiry"].as_str().expect("certExpiry");
        assert!(expiry.ends_with('Z') && expiry.len() == 20, "{expiry}");
    }

    // Through the gateway: the 90/10 split, every hop to a sidecar over mTLS, the
    // app sees the gateway's identity (and plaintext HTTP, never a certificate).
    let n = 200;
    let url = format!("http://{}/[1-{n}]", mesh.gateway);
    let out = Command::new("curl")
        .args(["-s", "--max-time", "60", &url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let v1 = text.lines().filter(|l| *l == "todolist v1").count();
    let v2 = text.lines().filter(|l| *l == "todolist v2").count();
    assert_eq!(v1 + v2, n, "every request answered: {text}");
    assert!(v2 > 0 && v1 > v2 * 3, "v1 {v1} v2 {v2}");
    let gateway_id =
        "URI=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let by = "By=spiffe://cluster.local/ns/default/sa/todolist";
    let infos: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(infos.len(), n);
    assert!(
        infos
            .iter()
            .all(|l| l.contains(gateway_id) && l.contains(by)),
        "{}",
        infos[0]
    );

    // A client cannot claim an identity through the gateway.
    let (code, body) = curl(&[
        "-H",
        "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/default/sa/admin",
        &format!("http://{}/", mesh.gateway),
    ]);
    assert_eq!(code, 200);
    assert!(
        !body.contains("sa/admin") && body.contains(gateway_id),
        "{body}"
    );

    // The app's own sidecar routes its outbound requests by the mesh service names.
    for host in ["todolist:8000", "todolist.default.svc.cluster.local:8000"] {
        let (code, body) = curl(&[
            "-H",
            &format!("host: {host}"),
            &format!("http://{}/", mesh.outbound_v1),
        ]);
        assert_eq!(code, 200, "{host}: {body}");
        assert!(body.starts_with("todolist v"), "{body}");
        assert!(
            body.contains("URI=spiffe://cluster.local/ns/default/sa/todolist"),
            "{body}"
        );
    }
}

#[test]
fn a_strict_sidecar_refuses_plaintext_and_certificates_the_mesh_did_not_issue() {
    let mesh = Mesh::start("STRICT", &[]);
    mesh.wait_synced(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::adopt(&mesh.root(), &mesh.state().join("ca").join("root-key.pem"));

    // A workload certificate of the mesh: accepted, its identity passed on.
    let sleep = ca.workload(
        &["URI:spiffe://cluster.local/ns/default/sa/sleep"],
        10,
        None,
    );
    let (c, k) = write_pair(tmp.path(), "sleep", &sleep);
    let (code, body) = to_inbound(&mesh, 0, Some((&c, &k)));
    assert_eq!(code, 200, "{body}");
    // Istio's format: By= the sidecar's identity, Hash= the client certificate's
    // SHA-256 (as openssl computes it), URI= the client's identity.
    let fingerprint =
        isthmus_testkit::pki::x509(&sleep.cert, &["-noout", "-fingerprint", "-sha256"])
            .expect("fingerprint");
    let hash: String = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(hash.len(), 64, "{fingerprint}");
    let xfcc = format!(
        "\"xfcc\":\"By=spiffe://cluster.local/ns/default/sa/todolist;Hash={hash};URI=spiffe://cluster.local/ns/default/sa/sleep\""
    );
    assert!(
        body.starts_with("todolist v1") && body.contains(&xfcc),
        "{body}"
    );

    // Plaintext to a STRICT port never reaches the app (the sidecar says why).
    let (code, body) = curl(&[&format!("http://{}/", mesh.inbound[0])]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("HTTP request to an HTTPS server") && !body.contains("todolist"),
        "{body}"
    );
    // TLS without a client certificate.
    assert_eq!(to_inbound(&mesh, 0, None).0, 0);
    // A certificate from another CA.
    let foreign = TestCa::new().workload(
        &["URI:spiffe://cluster.local/ns/default/sa/sleep"],
        11,
        None,
    );
    let (c, k) = write_pair(tmp.path(), "foreign", &foreign);
    assert_eq!(to_inbound(&mesh, 0, Some((&c, &k))).0, 0);
    // An expired one from the mesh CA.
    let expired = ca.workload(
        &["URI:spiffe://cluster.local/ns/default/sa/sleep"],
        12,
        Some(("20200101000000Z", "20200102000000Z")),
    );
    let (c, k) = write_pair(tmp.path(), "expired", &expired);
    assert_eq!(to_inbound(&mesh, 0, Some((&c, &k))).0, 0);
    // One of another trust domain, and one with no SPIFFE identity at all.
    for (serial, name, san) in [
        (
            13,
            "other-td",
            "URI:spiffe://evil.example/ns/default/sa/sleep",
        ),
        (14, "no-id", "DNS:sleep.default.svc"),
    ] {
        let issued = ca.workload(&[san], serial, None);
        let (c, k) = write_pair(tmp.path(), name, &issued);
        assert_eq!(to_inbound(&mesh, 0, Some((&c, &k))).0, 0, "{name}");
    }
    // The sidecar's own certificate is the workload's: openssl shows its identity.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &mesh.inbound[1].to_string(),
            "-CAfile",
        ])
        .arg(mesh.root())
        .args([
            "-cert",
            &c.display().to_string(),
            "-key",
            &k.display().to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0"), "{text}");
    let leaf = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|r| r.split("-----END CERTIFICATE-----").next())
        .map(|b| format!("-----BEGIN CERTIFICATE-----{b}-----END CERTIFICATE-----\n"))
        .expect("a certificate in s_client's output");
    let sans =
        isthmus_testkit::pki::x509(&leaf, &["-noout", "-ext", "subjectAltName"]).expect("x509");
    assert!(
        sans.contains("URI:spiffe://cluster.local/ns/default/sa/todolist")
            && sans.contains("DNS:todolist.default.sa.cluster.local"),
        "{sans}"
    );
}

#[test]
fn permissive_takes_mtls_and_plaintext_on_one_port_and_disable_only_plaintext() {
    let mut mesh = Mesh::start("PERMISSIVE", &[]);
    mesh.wait_synced(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::adopt(&mesh.root(), &mesh.state().join("ca").join("root-key.pem"));
    let sleep = ca.workload(
        &["URI:spiffe://cluster.local/ns/default/sa/sleep"],
        20,
        None,
    );
    let (c, k) = write_pair(tmp.path(), "sleep", &sleep);
    let plain = format!("http://{}/", mesh.inbound[0]);

    let (code, body) = curl(&[&plain]);
    assert_eq!(code, 200, "plaintext under PERMISSIVE: {body}");
    assert!(
        body.contains("\"xfcc\":null"),
        "no identity in plaintext: {body}"
    );
    assert_eq!(to_inbound(&mesh, 0, Some((&c, &k))).0, 200);
    // Through the gateway (mTLS) too.
    assert_eq!(curl(&[&format!("http://{}/", mesh.gateway)]).0, 200);

    // DISABLE: plaintext only; the gateway then reaches the sidecar in plaintext
    // (auto-mTLS follows the destination's policy).
    mesh.dir.write("mtls.yaml", &peer_authentication("DISABLE"));
    mesh.up.proc.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("configuration applied").then_some(())
    });
    mesh.wait_synced(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while to_inbound(&mesh, 0, Some((&c, &k))).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "mTLS still accepted under DISABLE"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(curl(&[&plain]).0, 200);
    let (code, body) = curl(&[&format!("http://{}/", mesh.gateway)]);
    assert_eq!(code, 200, "{body}");
}

/// Istio's `cacerts` layout made with openssl: a root, and an intermediate signed
/// by it that the mesh CA signs with.
fn make_cacerts(dir: &Path) {
    let run = |args: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("openssl {args}")])
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root-key.pem -out root-cert.pem -days 30 -subj /O=Example/CN=example-root -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign");
    run("ecparam -name prime256v1 -genkey -noout -out ca-key.pem");
    run("req -new -key ca-key.pem -out ca.csr -subj /O=Example/CN=mesh-intermediate");
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\n",
    )
    .expect("write ca.ext");
    run("x509 -req -in ca.csr -CA root-cert.pem -CAkey root-key.pem -CAcreateserial -days 30 -extfile ca.ext -out ca-cert.pem");
    std::fs::copy(dir.join("ca-cert.pem"), dir.join("cert-chain.pem")).expect("copy");
    let root = std::fs::read_to_string(dir.join("root-cert.pem")).expect("read");
    let mut chain = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("cert-chain.pem"))
        .expect("open");
    std::io::Write::write_all(&mut chain, root.as_bytes()).expect("append");
}

#[test]
fn a_plugged_in_cacerts_intermediate_issues_the_workload_certificates() {
    let cacerts = tempfile::tempdir().expect("tempdir");
    make_cacerts(cacerts.path());
    let dir = cacerts.path().display().to_string();
    let mesh = Mesh::start("STRICT", &["--cacerts", &dir]);
    mesh.wait_synced(1);
    // The gateway reaches the sidecars over mTLS with certificates of the
    // intermediate.
    let (code, body) = curl(&[&format!("http://{}/", mesh.gateway)]);
    assert_eq!(code, 200, "{body}");
    // A sidecar's chain verifies against the user's root, via the intermediate.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &mesh.inbound[0].to_string(),
            "-showcerts",
        ])
        .args([
            "-servername",
            "todolist.default.sa.cluster.local",
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(cacerts.path().join("root-cert.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("CN = mesh-intermediate"), "{text}");
}

#[test]
fn a_destination_presenting_another_identity_is_refused_in_the_handshake() {
    let mut mesh = Mesh::start("STRICT", &[]);
    mesh.wait_synced(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::adopt(&mesh.root(), &mesh.state().join("ca").join("root-key.pem"));
    // An impostor on the port a third todolist pod's sidecar would use, with a mesh
    // certificate of another service account.
    let port = isthmus_testkit::free_port();
    let impostor = |name: &str, sa: &str, serial: u32| {
        let issued = ca.workload(
            &[
                &format!("URI:spiffe://cluster.local/ns/default/sa/{sa}"),
                &format!("DNS:{sa}.default.sa.cluster.local"),
            ],
            serial,
            None,
        );
        let (c, k) = write_pair(tmp.path(), name, &issued);
        let mut p = isthmus_testkit::Proc::spawn(
            Command::new("openssl")
                .args(["s_server", "-www", "-accept", &format!("127.0.0.1:{port}")])
                .arg("-cert")
                .arg(&c)
                .arg("-key")
                .arg(&k)
                .stdin(std::process::Stdio::piped()),
        );
        p.wait_for_line(Duration::from_secs(10), |l| {
            l.contains("ACCEPT").then_some(())
        });
        p
    };
    let evil = impostor("evil", "evil", 40);
    let v3 = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: todolist-v3\n  annotations: {{isthmus.dev/inbound-port: '{port}'}}\nspec: {{address: 127.0.0.1, ports: {{http: 9}}, serviceAccount: todolist, labels: {{app: todolist, version: v3}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: canary}}\nspec:\n  hosts: ['*']\n  gateways: [todolist-gateway]\n  http:\n  - match: [{{headers: {{x-canary: {{exact: v3}}}}}}]\n    route: [{{destination: {{host: todolist, subset: v3, port: {{number: 8000}}}}}}]\n"
    );
    let routes = ROUTES.replace(
        "  - {name: v2, labels: {version: v2}}\n",
        "  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n",
    );
    mesh.dir.write("routes.yaml", &(routes + &v3));
    let url = format!("http://{}/", mesh.gateway);
    let to_v3 = || curl(&["-H", "x-canary: v3", &url]);
    // Until the gateway has the new route (v1 and v2 answer before).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let r = to_v3();
        if !r.1.starts_with("todolist v") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 503, "the impostor must not be reached: {body}");
    mesh.up.proc.wait_for_all(
        Duration::from_secs(5),
        &[
            "upstream connect failed",
            "certificate not valid for name \"todolist.default.sa.cluster.local\"",
        ],
    );
    // The control: the same server with the identity the destination must have
    // is reached (the refusal was the identity, nothing else).
    drop(evil);
    let _good = impostor("right", "todolist", 41);
    let (code, body) = to_v3();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("s_server"), "{body}");
}
