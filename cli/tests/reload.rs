//! Hot reload under load: clients on keep-alive connections see zero failed requests
//! while the canary weights change, the new split is in effect within one second, and
//! a broken change is rejected while the last good configuration keeps serving.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_testkit::fixtures::{gateway, server};
use isthmus_testkit::{free_ports, ConfigDir, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

fn config(gw_port: u16, v1: u16, v2: u16) -> String {
    let servers = server(gw_port, "http", "HTTP", r#"["*"]"#, None);
    gateway("gw", &servers)
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: todolist}}
spec:
  host: todolist
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: todolist}}
spec:
  hosts: [todolist.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: todolist}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: v1, annotations: {{isthmus.dev/demo-app: todolist}}}}
spec: {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{app: todolist, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: v2, annotations: {{isthmus.dev/demo-app: todolist}}}}
spec: {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{app: todolist, version: v2}}}}
"#
        )
}

fn canary(w1: u32, w2: u32) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: todolist}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {{host: todolist, subset: v1}}
      weight: {w1}
    - destination: {{host: todolist, subset: v2}}
      weight: {w2}
"#
    )
}

/// One request's outcome: when it started and what came back.
struct Sample {
    at: Instant,
    outcome: Result<String, String>,
}

/// Run `clients` threads of keep-alive GETs against `url` until `stop` is set (or a
/// hard cap of 60 s / 200k requests per client), collecting every outcome.
fn load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Sample>>> {
    (0..clients)
        .map(|_| {
            let url = url.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client");
                let hard_stop = Instant::now() + Duration::from_secs(60);
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < hard_stop
                    && out.len() < 200_000
                {
                    let at = Instant::now();
                    let outcome = match client.get(&url).send() {
                        Ok(r) if r.status().is_success() => match r.text() {
                            Ok(t) => Ok(t.lines().next().unwrap_or("").to_string()),
                            Err(e) => Err(format!("body: {e}")),
                        },
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e}")),
                    };
                    out.push(Sample { at, outcome });
                }
                out
            })
        })
        .collect()
}

fn share_v2(samples: &[&Sample]) -> f64 {
    let v2 = samples
        .iter()
        .filter(|s| s.outcome.as_deref() == Ok("todolist v2"))
        .count();
    v2 as f64 / samples.len() as f64
}

struct Canary {
    dir: ConfigDir,
    up: Up,
    gw_port: u16,
}

fn start() -> Canary {
    let ports = free_ports(3);
    let dir = ConfigDir::new();
    dir.write("base.yaml", &config(ports[0], ports[1], ports[2]));
    dir.write("canary.yaml", &canary(90, 10));
    let up = Up::start(Path::new(BIN), dir.path(), &[]);
    Canary {
        dir,
        up,
        gw_port: ports[0],
    }
}

#[test]
fn weights_change_under_load_with_zero_failed_requests() {
    let c = start();
    let url = format!("http://{}/", c.up.addr(c.gw_port));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(url, 4, stop.clone());

    // Let the clients run on the 90/10 split, then change it.
    std::thread::sleep(Duration::from_millis(1500));
    let changed_at = Instant::now();
    c.dir.write("canary.yaml", &canary(50, 50));
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::Relaxed);

    let samples: Vec<Sample> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let failures: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(5)]
    );

    let before: Vec<&Sample> = samples.iter().filter(|s| s.at < changed_at).collect();
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > changed_at + Duration::from_secs(1))
        .collect();
    assert!(
        before.len() >= 300 && after.len() >= 300,
        "too few samples: {} before, {} after",
        before.len(),
        after.len()
    );
    let (b, a) = (share_v2(&before), share_v2(&after));
    eprintln!(
        "v2 share: {b:.3} of {} before, {a:.3} of {} from 1 s after the change",
        before.len(),
        after.len()
    );
    assert!(
        (0.05..=0.15).contains(&b),
        "90/10 split before the change: v2 share {b}"
    );
    assert!(
        (0.42..=0.58).contains(&a),
        "50/50 split within 1 s of the change: v2 share {a}"
    );
}

#[test]
fn a_broken_change_is_rejected_and_the_last_good_config_keeps_serving() {
    let mut c = start();
    let url = format!("http://{}/", c.up.addr(c.gw_port));
    // Invalid: a weight that is not a number. The whole file is rejected.
    c.dir.write(
        "canary.yaml",
        &canary(90, 10).replace("weight: 10", "weight: ten"),
    );
    c.up.proc.wait_for_line(Duration::from_secs(10), |l| {
        (l.contains("canary.yaml") && l.contains("weight")).then_some(())
    });
    let client = reqwest::blocking::Client::new();
    for _ in 0..50 {
        let r = client.get(&url).send().expect("request");
        assert_eq!(r.status(), 200);
    }
    assert!(c.up.proc.is_running());
    // A good change after the bad one applies.
    c.dir.write("canary.yaml", &canary(0, 1));
    isthmus_testkit::wait_until("100% v2 after the fix", Duration::from_secs(5), || {
        let body = client.get(&url).send().ok()?.text().ok()?;
        body.starts_with("todolist v2").then_some(())
    });
}

#[test]
fn a_gateway_with_a_new_selector_added_while_running_gets_its_listener() {
    let p = free_ports(3);
    let dir = ConfigDir::new();
    dir.write("a.yaml", &config(p[0], p[1], p[2]));
    dir.write("canary.yaml", &canary(100, 0));
    let mut up = Up::start(Path::new(BIN), dir.path(), &[]);
    let edge = isthmus_testkit::free_port();
    // A second Gateway for another gateway workload (selector app=edge), and a
    // VirtualService bound to it.
    let servers = server(edge, "http", "HTTP", r#"["*"]"#, None);
    let gw = gateway("edge", &servers).replace("istio: ingressgateway", "app: edge");
    assert!(gw.contains("app: edge"), "{gw}");
    dir.write(
        "edge.yaml",
        &(gw + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: edge}\nspec:\n  hosts: ['*']\n  gateways: [edge]\n  http: [{route: [{destination: {host: todolist.default.svc.cluster.local, subset: v2}}]}]\n"),
    );
    let line = up.proc.wait_for_all(
        Duration::from_secs(10),
        &["gateway default/app=edge", &format!("Gateway port {edge}")],
    );
    assert!(line.contains(&format!("127.0.0.1:{edge}")), "{line}");
    let reply = isthmus_testkit::curl(&[&format!("http://127.0.0.1:{edge}/")]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with("todolist v2"), "{reply:?}");
}
