//! The mesh as in a cluster, in network namespaces this test makes and removes:
//! a hub (the controller, and the bridge every namespace is plugged into), a
//! client, a gateway (`isthmus gateway`, config and certificate from the
//! controller), and app-v1 / app-v2, each with the demo app, `isthmus proxy init`'s
//! iptables rules and a transparent sidecar (`isthmus proxy --transparent`). The
//! seed's canary goes client -> gateway -> mTLS -> intercepted sidecar -> app; the
//! checks of `mesh.rs` hold here without any explicit port. Needs root, `ip` and
//! `iptables` (scripts/deps.sh installs it); without them the test fails under CI
//! and is skipped with a message elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::pki::TestCa;
use isthmus_testkit::{ConfigDir, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

/// The namespaces of one test run; deleted when dropped (also on failure).
struct Topology {
    prefix: String,
    names: Vec<String>,
}

impl Topology {
    fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// hub (bridge 10.77.0.1) and one namespace per (name, address).
    fn new(members: &[(&str, &str)]) -> Topology {
        let prefix = format!("ith{}", std::process::id() % 100_000);
        let mut t = Topology {
            prefix,
            names: Vec::new(),
        };
        let hub = t.ns("hub");
        Self::ip(&["netns", "add", &hub]);
        t.names.push(hub.clone());
        Self::ip(&["-n", &hub, "link", "set", "lo", "up"]);
        Self::ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        Self::ip(&["-n", &hub, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        Self::ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, (name, addr)) in members.iter().enumerate() {
            let ns = t.ns(name);
            Self::ip(&["netns", "add", &ns]);
            t.names.push(ns.clone());
            let port = format!("v{i}");
            Self::ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            Self::ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            Self::ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            Self::ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            Self::ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        t
    }

    /// `cmd` run inside namespace `short`.
    fn exec(&self, short: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(short), program]);
        c
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// Root, `ip` and `iptables` are here; else the reason.
fn missing_peer() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

const CONFIG: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: todolist}\nspec:\n  selector: {app: todolist}\n  ports: [{name: http, port: 8000, targetPort: 8000}]\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: todolist-v1}\nspec: {address: 10.77.0.11, ports: {http: 8000}, serviceAccount: todolist, labels: {app: todolist, version: v1}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: todolist-v2}\nspec: {address: 10.77.0.12, ports: {http: 8000}, serviceAccount: todolist, labels: {app: todolist, version: v2}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: todolist-gateway}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: todolist}\nspec:\n  hosts: ['*']\n  gateways: [todolist-gateway]\n  http:\n  - route:\n    - {destination: {host: todolist, subset: v1, port: {number: 8000}}, weight: 90}\n    - {destination: {host: todolist, subset: v2, port: {number: 8000}}, weight: 10}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: todolist}\nspec:\n  host: todolist\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n";

fn pa(mode: &str) -> String {
    format!("apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: mtls-mode, namespace: default}}\nspec: {{mtls: {{mode: {mode}}}}}\n")
}

/// curl inside namespace `ns`: (status, body); status 0 when no HTTP answer.
fn curl(t: &Topology, ns: &str, args: &[&str]) -> (u16, String) {
    let out = t
        .exec(ns, "curl")
        .args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn status(t: &Topology) -> Vec<serde_json::Value> {
    let out = t
        .exec("hub", BIN)
        .args([
            "proxy-status",
            "--controller",
            "127.0.0.1:15014",
            "-o",
            "json",
        ])
        .output()
        .expect("proxy-status");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn wait_synced(t: &Topology, n: usize, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = status(t);
        if list.len() == n
            && list
                .iter()
                .all(|p| p["status"] == "SYNCED" && p["version"].as_u64() >= Some(version))
        {
            return;
        }
        assert!(Instant::now() < deadline, "not SYNCED: {list:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pair(dir: &Path, name: &str, i: &isthmus_testkit::pki::Issued) -> (String, String) {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, &i.cert).expect("write");
    std::fs::write(&k, &i.key).expect("write");
    (c.display().to_string(), k.display().to_string())
}

#[test]
fn transparent_sidecars_in_network_namespaces_carry_the_canary_over_mtls() {
    if let Some(why) = missing_peer() {
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let t = Topology::new(&[
        ("gw", "10.77.0.2"),
        ("client", "10.77.0.3"),
        ("v1", "10.77.0.11"),
        ("v2", "10.77.0.12"),
    ]);
    let dir = ConfigDir::new();
    dir.write("mesh.yaml", CONFIG);
    dir.write("mtls.yaml", &pa("STRICT"));
    let state: PathBuf = dir.path().join(".state");
    let root = state.join("ca").join("root-cert.pem");
    let token = |name: &str| state.join("tokens").join(name);

    let mut procs: Vec<Proc> = Vec::new();
    let mut ctl = Proc::spawn(
        t.exec("hub", BIN)
            .arg("controller")
            .arg(dir.path())
            .args(["--state-dir", &state.display().to_string()])
            .args(["--transparent", "--xds-address", "10.77.0.1"])
            .args(["--xds-port", "15012", "--admin-port", "15014"])
            .env("ISTHMUS_RUNTIME_DIR", isthmus_testkit::runtime_dir()),
    );
    ctl.wait_for_line(Duration::from_secs(20), |l| {
        l.starts_with("ready:").then_some(())
    });
    procs.push(ctl);
    for (ns, version) in [("v1", "v1"), ("v2", "v2")] {
        let out = t
            .exec(ns, BIN)
            .args(["proxy", "init"])
            .output()
            .expect("proxy init");
        assert!(
            out.status.success(),
            "proxy init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        procs.push(Proc::spawn(t.exec(ns, BIN).args([
            "demo-app",
            "--name",
            "todolist",
            "--version",
            version,
            "--bind",
            "0.0.0.0",
            "--port",
            "8000",
        ])));
        procs.push(Proc::spawn(
            t.exec(ns, BIN)
                .args(["proxy", "--transparent", "--controller", "10.77.0.1:15012"])
                .arg("--root-cert")
                .arg(&root)
                .args(["--name", &format!("todolist-{version}"), "--token-file"])
                .arg(token(&format!("default.todolist-{version}"))),
        ));
    }
    procs.push(Proc::spawn(
        t.exec("gw", BIN)
            .args([
                "gateway",
                "--controller",
                "10.77.0.1:15012",
                "--bind",
                "0.0.0.0",
            ])
            .args(["--port-offset", "0", "--root-cert"])
            .arg(&root)
            .arg("--token-file")
            .arg(token("istio-system.ingressgateway")),
    ));
    wait_synced(&t, 3, 1);

    // client -> gateway -> mTLS -> intercepted sidecar -> app: the 90/10 split, the
    // app sees plaintext and the gateway's identity.
    let n = 200;
    let out = t
        .exec("client", "curl")
        .args([
            "-s",
            "--max-time",
            "60",
            &format!("http://10.77.0.2/[1-{n}]"),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let v1 = text.lines().filter(|l| *l == "todolist v1").count();
    let v2 = text.lines().filter(|l| *l == "todolist v2").count();
    assert_eq!(v1 + v2, n, "{text}");
    assert!(v2 > 0 && v1 > 3 * v2, "v1 {v1} v2 {v2}");
    let gw_id =
        "URI=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    assert!(
        text.lines()
            .filter(|l| l.starts_with('{'))
            .all(|l| l.contains(gw_id)),
        "{text}"
    );

    // Straight to a STRICT workload in plaintext: intercepted, refused.
    let (code, body) = curl(&t, "client", &["http://10.77.0.11:8000/"]);
    assert!(code != 200 && !body.contains("todolist"), "{code} {body}");

    // Client certificates: the mesh's is accepted; another CA's, an expired one and
    // another trust domain's are refused.
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::adopt(&root, &state.join("ca").join("root-key.pem"));
    let name = "todolist.default.sa.cluster.local";
    let resolve = format!("{name}:8000:10.77.0.11");
    let url = format!("https://{name}:8000/");
    let root_s = root.display().to_string();
    let with = |c: &str, k: &str| {
        curl(
            &t,
            "client",
            &[
                "--resolve",
                &resolve,
                "--cacert",
                &root_s,
                "--cert",
                c,
                "--key",
                k,
                &url,
            ],
        )
    };
    let good = ca.workload(
        &["URI:spiffe://cluster.local/ns/default/sa/sleep"],
        30,
        None,
    );
    let (c, k) = pair(tmp.path(), "good", &good);
    let (code, body) = with(&c, &k);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/default/sa/sleep"),
        "{body}"
    );
    let bad = [
        (
            "foreign",
            TestCa::new().workload(
                &["URI:spiffe://cluster.local/ns/default/sa/sleep"],
                31,
                None,
            ),
        ),
        (
            "expired",
            ca.workload(
                &["URI:spiffe://cluster.local/ns/default/sa/sleep"],
                32,
                Some(("20200101000000Z", "20200102000000Z")),
            ),
        ),
        (
            "other-td",
            ca.workload(&["URI:spiffe://evil.example/ns/default/sa/sleep"], 33, None),
        ),
    ];
    for (what, issued) in &bad {
        let (c, k) = pair(tmp.path(), what, issued);
        assert_eq!(with(&c, &k).0, 0, "{what} accepted");
    }

    // The app's own outbound call is intercepted too: routed by the service's port,
    // mTLS to the peer's sidecar, which passes the caller's identity on.
    let (code, body) = curl(
        &t,
        "v1",
        &[
            "-H",
            "host: todolist.default.svc.cluster.local:8000",
            "http://10.77.0.12:8000/",
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/default/sa/todolist"),
        "{body}"
    );

    // Traffic to outside the mesh leaves as it came: HTTP to a server no service
    // names (passthrough), and TLS the app originates itself (not HTTP: forwarded
    // as bytes to its original destination).
    procs.push(Proc::spawn(t.exec("client", BIN).args([
        "demo-app",
        "--name",
        "outside",
        "--version",
        "v9",
        "--bind",
        "10.77.0.3",
        "--port",
        "9080",
    ])));
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let outside_ca = TestCa::new();
    let leaf = outside_ca.leaf(&["outside.example"], 50);
    let (oc, ok) = pair(ca_dir.path(), "outside", &leaf);
    let mut tls_server = Proc::spawn(
        t.exec("client", "openssl")
            .args([
                "s_server",
                "-www",
                "-accept",
                "10.77.0.3:9443",
                "-cert",
                &oc,
                "-key",
                &ok,
            ])
            .stdin(std::process::Stdio::piped()),
    );
    tls_server.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("ACCEPT").then_some(())
    });
    procs.push(tls_server);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let r = curl(&t, "v1", &["http://10.77.0.3:9080/"]);
        if r.0 == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("outside v9") && body.contains("\"xfcc\":null"),
        "{body}"
    );
    let root_out = outside_ca.root().display().to_string();
    let (code, body) = curl(
        &t,
        "v1",
        &[
            "--cacert",
            &root_out,
            "--resolve",
            "outside.example:9443:10.77.0.3",
            "https://outside.example:9443/",
        ],
    );
    assert_eq!(code, 200, "TLS from the app passes through: {body}");
    assert!(body.contains("s_server"), "{body}");

    // PERMISSIVE: plaintext is accepted on the same port, without an identity.
    dir.write("mtls.yaml", &pa("PERMISSIVE"));
    wait_synced(&t, 3, 2);
    let (code, body) = curl(&t, "client", &["http://10.77.0.11:8000/"]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"xfcc\":null"), "{body}");
    assert_eq!(with(&c, &k).0, 200);
    drop(procs);
}
