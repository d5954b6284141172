//! Istio routing semantics (istio-api.md section 1.1), each checked through a running
//! `isthmus up` with the real `curl` as the client and built-in demo apps as the
//! upstreams. Every test starts its own gateway on free loopback ports.

use std::path::Path;

use isthmus_testkit::{curl, free_ports, ConfigDir, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

/// Backends `a`, `b`, `c`: one ServiceEntry each (`X.default.svc.cluster.local`),
/// backed by a demo app that answers `X v1`.
fn backends(ports: &[u16]) -> String {
    let mut y = String::new();
    for (name, port) in ["a", "b", "c"].iter().zip(ports) {
        y.push_str(&format!(
            r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector:
    labels: {{app: {name}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  annotations: {{isthmus.dev/demo-app: {name}}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: {name}, version: v1}}
"#
        ));
    }
    y
}

fn gateway(port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["*"]
"#
    )
}

struct Fixture {
    _dir: ConfigDir,
    up: Up,
    port: u16,
}

impl Fixture {
    /// Start `isthmus up` on a directory holding the gateway, the backends and `vs`.
    fn start(vs: &str) -> Fixture {
        let ports = free_ports(4);
        let dir = ConfigDir::new();
        dir.write("gateway.yaml", &gateway(ports[0]));
        dir.write("backends.yaml", &backends(&ports[1..]));
        dir.write("routes.yaml", vs);
        let up = Up::start(Path::new(BIN), dir.path(), &[]);
        Fixture {
            _dir: dir,
            up,
            port: ports[0],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.up.addr(self.port), path)
    }

    /// GET `path` with `Host: host`; returns (status, first body line).
    fn get(&self, host: &str, path: &str) -> (u16, String) {
        let out = curl(&["-H", &format!("Host: {host}"), &self.url(path)]);
        (
            out.status,
            out.body.lines().next().unwrap_or("").to_string(),
        )
    }
}

fn vs(name: &str, hosts: &str, gateways: &str, http: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http:\n{http}\n"
    )
}

fn route_to(backend: &str) -> String {
    format!("    route:\n    - destination: {{host: {backend}}}\n")
}

#[test]
fn first_match_wins_in_list_order() {
    let http = format!(
        "  - match: [{{uri: {{prefix: /api}}}}]\n{}  - match: [{{uri: {{prefix: /api/v2}}}}]\n{}  - name: rest\n{}",
        route_to("a"),
        route_to("b"),
        route_to("c")
    );
    let f = Fixture::start(&vs("first", "[first.test]", "[gw]", &http));
    // /api/v2 also matches the more specific second rule, but the first one wins.
    assert_eq!(f.get("first.test", "/api/v2/items"), (200, "a v1".into()));
    assert_eq!(f.get("first.test", "/api"), (200, "a v1".into()));
    assert_eq!(f.get("first.test", "/other"), (200, "c v1".into()));
}

#[test]
fn catch_all_moves_last_across_virtual_services_on_one_host() {
    // Load order puts the catch-all VirtualService first; Istio's gateway merge moves
    // catch-all routes behind the specific ones.
    let y = vs(
        "v1-catchall",
        "[merge.test]",
        "[gw]",
        &format!("  -\n{}", route_to("a")),
    ) + &vs(
        "v2-specific",
        "[merge.test]",
        "[gw]",
        &format!(
            "  - match: [{{uri: {{prefix: /special}}}}]\n{}",
            route_to("b")
        ),
    );
    let f = Fixture::start(&y);
    assert_eq!(f.get("merge.test", "/special/x"), (200, "b v1".into()));
    assert_eq!(f.get("merge.test", "/"), (200, "a v1".into()));
}

#[test]
fn uri_prefix_is_a_raw_string_prefix() {
    let http = format!(
        "  - match: [{{uri: {{prefix: /foo}}}}]\n{}  - match: [{{uri: {{exact: /exact}}}}]\n{}",
        route_to("a"),
        route_to("b")
    );
    let f = Fixture::start(&vs("p", "[prefix.test]", "[gw]", &http));
    assert_eq!(f.get("prefix.test", "/foobar"), (200, "a v1".into()));
    assert_eq!(f.get("prefix.test", "/foo/bar"), (200, "a v1".into()));
    assert_eq!(f.get("prefix.test", "/exact"), (200, "b v1".into()));
    // Neither rule matches: no route, 404.
    assert_eq!(f.get("prefix.test", "/exact/more").0, 404);
    assert_eq!(f.get("prefix.test", "/fo").0, 404);
}

#[test]
fn wildcard_host_does_not_match_the_bare_domain_and_port_is_ignored() {
    let f = Fixture::start(&vs(
        "w",
        "[\"*.example.com\"]",
        "[gw]",
        &format!("  -\n{}", route_to("a")),
    ));
    assert_eq!(f.get("www.example.com", "/"), (200, "a v1".into()));
    assert_eq!(f.get("a.b.example.com", "/"), (200, "a v1".into()));
    assert_eq!(f.get("WWW.Example.COM", "/"), (200, "a v1".into()));
    // The port in Host is ignored.
    assert_eq!(f.get("www.example.com:31337", "/"), (200, "a v1".into()));
    // `*.example.com` is a suffix match on `.example.com`: not example.com itself.
    assert_eq!(f.get("example.com", "/").0, 404);
    // No virtual host at all.
    assert_eq!(f.get("unknown.test", "/").0, 404);
}

#[test]
fn virtual_service_without_gateways_does_not_bind_to_the_gateway() {
    let y = vs("bound", "[bound.test]", "[gw]", &format!("  -\n{}", route_to("a")))
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: meshonly\nspec:\n  hosts: [mesh.test]\n  http:\n  - route:\n    - destination: {host: b}\n";
    let f = Fixture::start(&y);
    assert_eq!(f.get("bound.test", "/"), (200, "a v1".into()));
    assert_eq!(f.get("mesh.test", "/").0, 404);
}

#[test]
fn destination_without_endpoints_is_503() {
    let f = Fixture::start(&vs(
        "e",
        "[empty.test]",
        "[gw]",
        &format!("  -\n{}", route_to("nowhere")),
    ));
    assert_eq!(f.get("empty.test", "/").0, 503);
}

/// Count first lines `X v1` over `n` keep-alive requests made by one curl process
/// (URL globbing reuses the connection).
fn split(f: &Fixture, host: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let url = f.url(&format!("/[1-{n}]"));
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "60",
            "-H",
            &format!("Host: {host}"),
            &url,
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counts = std::collections::BTreeMap::new();
    for l in text.lines().filter(|l| l.ends_with(" v1")) {
        *counts.entry(l.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().sum::<usize>(),
        n,
        "every request answered: {counts:?}"
    );
    counts
}

#[test]
fn weights_are_relative() {
    // 1:3 does not add up to 100; Istio uses weight / sum.
    let http = "  - route:\n    - destination: {host: a}\n      weight: 1\n    - destination: {host: b}\n      weight: 3\n";
    let f = Fixture::start(&vs("wt", "[weights.test]", "[gw]", http));
    let n = 2000;
    let c = split(&f, "weights.test", n);
    let a = *c.get("a v1").unwrap_or(&0) as f64 / n as f64;
    // Binomial(2000, 0.25): sd = 0.0097; 4 sd either side.
    assert!((0.21..=0.29).contains(&a), "share of a = {a}, counts {c:?}");
}

#[test]
fn a_single_destination_gets_all_traffic_whatever_its_weight() {
    let http = "  - route:\n    - destination: {host: a}\n      weight: 10\n";
    let f = Fixture::start(&vs("single", "[single.test]", "[gw]", http));
    let c = split(&f, "single.test", 200);
    assert_eq!(c.get("a v1"), Some(&200), "{c:?}");
}

#[test]
fn header_query_method_and_without_headers_matches() {
    let http = format!(
        "  - match: [{{headers: {{x-user: {{exact: jason}}}}}}]\n{}  - match: [{{queryParams: {{beta: {{exact: \"1\"}}}}, method: {{exact: POST}}}}]\n{}  - match: [{{withoutHeaders: {{x-debug: {{}}}}}}]\n{}",
        route_to("a"),
        route_to("b"),
        route_to("c")
    );
    let f = Fixture::start(&vs("h", "[h.test]", "[gw]", &http));
    let get = |args: &[&str]| {
        let mut a = vec!["-H", "Host: h.test"];
        a.extend_from_slice(args);
        let o = curl(&a);
        (o.status, o.body.lines().next().unwrap_or("").to_string())
    };
    let u = f.url("/");
    let uq = f.url("/?beta=1");
    assert_eq!(get(&["-H", "x-user: jason", &u]), (200, "a v1".into()));
    assert_eq!(get(&["-X", "POST", &uq]), (200, "b v1".into()));
    // GET with the query does not satisfy the method condition: falls to withoutHeaders.
    assert_eq!(get(&[&uq]), (200, "c v1".into()));
    // x-debug present: withoutHeaders fails, nothing else matches.
    assert_eq!(get(&["-H", "x-debug: 1", &u]).0, 404);
}

#[test]
fn h2c_prior_knowledge_is_served() {
    let f = Fixture::start(&vs(
        "h2",
        "[h2.test]",
        "[gw]",
        &format!("  -\n{}", route_to("a")),
    ));
    let out = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: h2.test",
        &f.url("/"),
    ]);
    assert_eq!((out.status, out.body.lines().next()), (200, Some("a v1")));
}
