//! The mesh over time, with real processes: certificate rotation under a steady
//! client loop, the controller killed and restarted while proxies keep serving, a
//! NACK from one proxy while the others apply, and bad mesh input (a `cacerts`
//! directory whose key does not match, an unknown PeerAuthentication mode).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::{free_ports, ConfigDir, Proc, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A client workload `sleep` and a server workload `web` (a demo app), both with
/// sidecars, STRICT mTLS, and (optionally) a gateway routing to `web`.
fn mesh_config(dir: &ConfigDir, web_app: u16, ports: [u16; 4], with_gateway: bool) {
    let [web_in, web_out, sleep_in, sleep_out] = ports;
    dir.write(
        "mesh.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{istio-injection: enabled}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 8000}}]\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: web\n  annotations: {{isthmus.dev/demo-app: web, isthmus.dev/inbound-port: '{web_in}', isthmus.dev/outbound-port: '{web_out}'}}\nspec: {{address: 127.0.0.1, ports: {{http: {web_app}}}, serviceAccount: web, labels: {{app: web, version: v1}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: sleep\n  annotations: {{isthmus.dev/inbound-port: '{sleep_in}', isthmus.dev/outbound-port: '{sleep_out}'}}\nspec: {{address: 127.0.0.1, ports: {{http: 9}}, serviceAccount: sleep, labels: {{app: sleep}}}}\n---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: default}}\nspec: {{mtls: {{mode: STRICT}}}}\n"
        ),
    );
    if with_gateway {
        dir.write(
            "gateway.yaml",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  http: [{route: [{destination: {host: web, port: {number: 8000}}}]}]\n",
        );
    }
}

/// `n` requests on one keep-alive connection; how many were answered 200 by web.
fn batch(url: &str, host: &str, n: usize) -> (usize, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-H", &format!("host: {host}")])
        .args(["-w", "\n%{http_code}\n", &format!("{url}/[1-{n}]")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let ok = text.lines().filter(|l| *l == "200").count();
    (ok, text)
}

fn status(admin: &str) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["proxy-status", "--controller", admin, "-o", "json"])
        .output()
        .expect("proxy-status");
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn wait_status(
    admin: &str,
    what: &str,
    mut ok: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = status(admin);
        if ok(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: {list:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn admin_of(proc: &mut Proc) -> String {
    proc.wait_for_line(Duration::from_secs(10), |l| {
        let rest = l.split_once("admin http://")?.1;
        Some(rest.split('/').next()?.to_string())
    })
}

#[test]
fn certificates_rotate_three_times_under_load_with_zero_failed_requests() {
    let p = free_ports(6);
    let dir = ConfigDir::new();
    mesh_config(&dir, p[1], [p[2], p[3], p[4], p[5]], true);
    let offset = (p[0] - 80).to_string();
    // 6 s certificates: renewed every 3 s.
    let mut up = Up::start(
        Path::new(BIN),
        dir.path(),
        &["--port-offset", &offset, "--cert-ttl", "6s"],
    );
    let admin = admin_of(&mut up.proc);
    let gateway = format!("http://{}", up.addr(80));
    let sleep_out = format!("http://{}", local(p[5]));
    let expiries = |list: &[serde_json::Value]| -> Vec<String> {
        list.iter()
            .map(|p| format!("{}={}", p["name"], p["certExpiry"]))
            .collect()
    };
    let first = expiries(&wait_status(&admin, "all SYNCED", |l| {
        l.len() == 3 && l.iter().all(|p| p["status"] == "SYNCED")
    }));
    let mut seen = vec![first];
    let (mut sent, mut answered) = (0, 0);
    let started = Instant::now();
    // Until every proxy has had three new certificates (at most 30 s).
    while seen.len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "rotations seen: {seen:#?}"
        );
        for (url, host) in [(&gateway, "web"), (&sleep_out, "web:8000")] {
            let (ok, text) = batch(url, host, 20);
            sent += 20;
            answered += ok;
            assert_eq!(ok, 20, "a request failed during rotation: {text}");
        }
        let now = expiries(&status(&admin));
        let all_new = now.len() == 3
            && now
                .iter()
                .all(|e| seen.last().is_some_and(|last| !last.contains(e)));
        if all_new {
            seen.push(now);
        }
    }
    assert_eq!(sent, answered);
    eprintln!(
        "{sent} requests, 0 failed, over {:?}: {seen:#?}",
        started.elapsed()
    );
}

#[test]
fn proxies_keep_serving_while_the_controller_is_away_and_resync_when_it_returns() {
    let p = free_ports(8);
    let dir = ConfigDir::new();
    mesh_config(&dir, p[1], [p[2], p[3], p[4], p[5]], false);
    let state = dir.path().join(".state");
    let controller = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("controller")
            .arg(dir.path())
            .args(["--state-dir", &state.display().to_string()])
            .args([
                "--xds-port",
                &p[6].to_string(),
                "--admin-port",
                &p[7].to_string(),
            ])
            .args(extra)
            .env("ISTHMUS_RUNTIME_DIR", isthmus_testkit::runtime_dir());
        let mut proc = Proc::spawn(&mut cmd);
        proc.wait_for_line(Duration::from_secs(20), |l| {
            l.starts_with("ready:").then_some(())
        });
        proc
    };
    let mut ctl = controller(&[]);
    let admin = admin_of(&mut ctl);
    // The web app, then both sidecars with the tokens the controller wrote.
    let _web = isthmus_testkit::demo_app(Path::new(BIN), "web", "v1", p[1]);
    let proxy = |name: &str| {
        let token = state.join("tokens").join(format!("default.{name}"));
        Proc::spawn(
            Command::new(BIN)
                .args(["proxy", "--controller", &local(p[6]).to_string()])
                .arg("--root-cert")
                .arg(state.join("ca").join("root-cert.pem"))
                .args(["--name", name, "--token-file"])
                .arg(&token),
        )
    };
    let _web_sidecar = proxy("web");
    let _sleep_sidecar = proxy("sleep");
    wait_status(&admin, "both SYNCED", |l| {
        l.len() == 2 && l.iter().all(|p| p["status"] == "SYNCED")
    });
    let url = format!("http://{}", local(p[5]));
    let (ok, text) = batch(&url, "web:8000", 10);
    assert_eq!(ok, 10, "{text}");

    // Away for 30 s: every request still answered (mTLS between the sidecars with
    // the certificates they hold).
    drop(ctl);
    let away = Instant::now();
    let (mut sent, mut answered) = (0, 0);
    while away.elapsed() < Duration::from_secs(30) {
        let (ok, text) = batch(&url, "web:8000", 20);
        sent += 20;
        answered += ok;
        assert_eq!(ok, 20, "failed while the controller was away: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Back (a new process, no tokens of the old one): the proxies reconnect with
    // their certificates and apply its version.
    let _ctl = controller(&[]);
    wait_status(&admin, "both SYNCED again", |l| {
        l.len() == 2 && l.iter().all(|p| p["status"] == "SYNCED")
    });
    let (ok, _) = batch(&url, "web:8000", 10);
    assert_eq!(ok, 10);
    eprintln!("{sent} requests while the controller was away, {answered} answered");
}

#[test]
fn a_proxy_that_cannot_apply_a_change_nacks_it_alone() {
    let p = free_ports(6);
    let dir = ConfigDir::new();
    mesh_config(&dir, p[1], [p[2], p[3], p[4], p[5]], false);
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let admin = admin_of(&mut up.proc);
    wait_status(&admin, "SYNCED", |l| {
        l.len() == 2 && l.iter().all(|p| p["status"] == "SYNCED")
    });
    // Move web's inbound port to one something else holds.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let text = std::fs::read_to_string(dir.path().join("mesh.yaml")).expect("read");
    dir.write(
        "mesh.yaml",
        &text.replace(
            &format!("isthmus.dev/inbound-port: '{}'", p[2]),
            &format!("isthmus.dev/inbound-port: '{taken_port}'"),
        ),
    );
    let list = wait_status(&admin, "web NACKED, sleep SYNCED at version 2", |l| {
        let get = |n: &str| l.iter().find(|p| p["name"] == n).cloned();
        matches!((get("web"), get("sleep")), (Some(w), Some(s))
            if w["status"] == "NACKED" && s["status"] == "SYNCED" && s["version"] == 2)
    });
    assert_eq!(list.len(), 2);
    up.proc.wait_for_all(
        Duration::from_secs(10),
        &[
            "NACK",
            "WorkloadEntry default/web",
            &format!("{taken_port}"),
        ],
    );
    // Its last good inbound keeps listening.
    assert!(std::net::TcpStream::connect(local(p[2])).is_ok());
    drop(taken);
}

#[test]
fn bad_mesh_input_is_a_clear_error_and_nothing_else_is_affected() {
    // A cacerts directory whose key is not the certificate's.
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl")
            .status
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    let mut root = vec![
        "req",
        "-x509",
        "-days",
        "30",
        "-subj",
        "/CN=root",
        "-keyout",
        "root-key.pem",
        "-out",
        "root-cert.pem",
    ];
    root.extend_from_slice(&ec);
    root.extend_from_slice(&ca_ext);
    openssl(&root);
    std::fs::copy(d.join("root-cert.pem"), d.join("ca-cert.pem")).expect("copy");
    std::fs::copy(d.join("root-cert.pem"), d.join("cert-chain.pem")).expect("copy");
    let mut other = vec![
        "req",
        "-x509",
        "-days",
        "30",
        "-subj",
        "/CN=other",
        "-keyout",
        "ca-key.pem",
        "-out",
        "other.pem",
    ];
    other.extend_from_slice(&ec);
    openssl(&other);
    let cfg = ConfigDir::new();
    cfg.write("empty.yaml", "");
    let out = Command::new(BIN)
        .arg("up")
        .arg(cfg.path())
        .args([
            "--cacerts",
            &d.display().to_string(),
            "--xds-port",
            "0",
            "--admin-port",
            "0",
        ])
        .env("ISTHMUS_RUNTIME_DIR", isthmus_testkit::runtime_dir())
        .output()
        .expect("up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--cacerts") && err.contains("ca-key.pem") && err.contains("does not match"),
        "{err}"
    );

    // An unknown PeerAuthentication mode: the error names file, line and field;
    // the rest of the mesh (and the gateway) is served.
    let p = free_ports(6);
    let dir = ConfigDir::new();
    mesh_config(&dir, p[1], [p[2], p[3], p[4], p[5]], true);
    let bad = dir.write(
        "bad-pa.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: typo, namespace: default}\nspec:\n  mtls:\n    mode: STRICTEST\n",
    );
    // And one whose `mtls` is not a mapping.
    let malformed = dir.write(
        "malformed-pa.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: flat, namespace: default}\nspec:\n  mtls: STRICT\n",
    );
    let offset = (p[0] - 80).to_string();
    let mut up = Up::start(Path::new(BIN), dir.path(), &["--port-offset", &offset]);
    let line = up.proc.wait_for_all(
        Duration::from_secs(5),
        &["PeerAuthentication default/typo", "spec.mtls.mode"],
    );
    assert!(line.contains(&bad.display().to_string()), "{line}");
    let line = up.proc.wait_for_all(
        Duration::from_secs(5),
        &["PeerAuthentication default/flat", "spec.mtls"],
    );
    assert!(
        line.contains(&format!("{}:5", malformed.display())),
        "{line}"
    );
    let (ok, text) = batch(&format!("http://{}", up.addr(80)), "web", 5);
    assert_eq!(ok, 5, "{text}");
}

#[test]
fn a_sidecar_process_that_dies_is_started_again_by_up() {
    let p = free_ports(6);
    let dir = ConfigDir::new();
    mesh_config(&dir, p[1], [p[2], p[3], p[4], p[5]], false);
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let admin = admin_of(&mut up.proc);
    wait_status(&admin, "SYNCED", |l| {
        l.len() == 2 && l.iter().all(|p| p["status"] == "SYNCED")
    });
    // This up's sleep sidecar only (other tests run theirs): by its controller.
    let push = up.proc.wait_for_line(Duration::from_secs(1), |l| {
        let rest = l.split_once("controller: push ")?.1;
        Some(rest.split(' ').next()?.to_string())
    });
    let pattern = format!("isthmus proxy .*--controller {push} .*--name sleep");
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", &pattern])
        .status()
        .expect("pkill");
    assert!(killed.success(), "the sleep sidecar was running");
    up.proc.wait_for_all(
        Duration::from_secs(5),
        &["sidecar default/sleep", "ended", "starting it again"],
    );
    wait_status(&admin, "SYNCED again", |l| {
        l.len() == 2 && l.iter().all(|p| p["status"] == "SYNCED")
    });
    let (ok, text) = batch(&format!("http://{}", local(p[5])), "web:8000", 5);
    assert_eq!(ok, 5, "{text}");
}

#[test]
fn a_proxy_whose_certificate_expired_while_the_controller_was_away_gets_a_new_one() {
    let p = free_ports(8);
    let dir = ConfigDir::new();
    mesh_config(&dir, p[1], [p[2], p[3], p[4], p[5]], false);
    let state = dir.path().join(".state");
    let controller = || {
        let mut cmd = Command::new(BIN);
        cmd.arg("controller")
            .arg(dir.path())
            .args(["--state-dir", &state.display().to_string()])
            .args([
                "--xds-port",
                &p[6].to_string(),
                "--admin-port",
                &p[7].to_string(),
            ])
            .args(["--cert-ttl", "4s"])
            .env("ISTHMUS_RUNTIME_DIR", isthmus_testkit::runtime_dir());
        let mut proc = Proc::spawn(&mut cmd);
        proc.wait_for_line(Duration::from_secs(20), |l| {
            l.starts_with("ready:").then_some(())
        });
        proc
    };
    let mut ctl = controller();
    let admin = admin_of(&mut ctl);
    let _web = isthmus_testkit::demo_app(Path::new(BIN), "web", "v1", p[1]);
    let proxy = |name: &str| {
        Proc::spawn(
            Command::new(BIN)
                .args(["proxy", "--controller", &local(p[6]).to_string()])
                .arg("--root-cert")
                .arg(state.join("ca").join("root-cert.pem"))
                .args(["--name", name, "--token-file"])
                .arg(state.join("tokens").join(format!("default.{name}"))),
        )
    };
    let _web_sidecar = proxy("web");
    let _sleep_sidecar = proxy("sleep");
    let list = wait_status(&admin, "both SYNCED", |l| {
        l.len() == 2 && l.iter().all(|p| p["status"] == "SYNCED")
    });
    let expiry = |l: &[serde_json::Value]| -> Vec<String> {
        l.iter()
            .map(|p| p["certExpiry"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let before = expiry(&list);
    // Away until every certificate the proxies hold has expired.
    drop(ctl);
    let latest = before.iter().max().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = String::from_utf8_lossy(
            &Command::new("date")
                .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
                .output()
                .expect("date")
                .stdout,
        )
        .trim()
        .to_string();
        if now > latest {
            break;
        }
        assert!(Instant::now() < deadline, "{now} not past {latest}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new controller (new tokens in the same files): the proxies cannot present
    // their expired certificates, so they use the token again and get new ones.
    let _ctl = controller();
    let list = wait_status(&admin, "both SYNCED with new certificates", |l| {
        l.len() == 2
            && l.iter().all(|p| p["status"] == "SYNCED")
            && expiry(l).iter().all(|e| e > &latest)
    });
    assert_eq!(list.len(), 2);
    let (ok, text) = batch(&format!("http://{}", local(p[5])), "web:8000", 5);
    assert_eq!(ok, 5, "{text}");
}

#[test]
fn proxy_init_dry_run_prints_istio_init_rules_and_ends_quietly_on_a_closed_pipe() {
    // A reader that is already gone: every write fails with EPIPE.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(BIN)
        .args(["proxy", "init", "--dry-run"])
        .stdout(writer)
        .output()
        .expect("proxy init");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
    let full = Command::new(BIN)
        .args(["proxy", "init", "--dry-run"])
        .output()
        .expect("proxy init");
    let rules = String::from_utf8_lossy(&full.stdout);
    assert!(
        rules.contains("iptables -t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006")
            && rules
                .contains("iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001")
            && rules.contains("iptables -t nat -A ISTIO_OUTPUT -m mark --mark 1337 -j RETURN"),
        "{rules}"
    );
}
