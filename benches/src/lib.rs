//! Generated configurations for the benches and the allocation test: a gateway with
//! many virtual hosts and routes, built as YAML and loaded through the ordinary
//! loader, so the benches measure what a real configuration costs.

use http::HeaderMap;
use isthmus_model::compile::{compile_gateway, GatewayWorkload};
use isthmus_model::load::load_str;
use isthmus_model::snapshot::RequestView;
use isthmus_model::{Level, Snapshot, Store};

/// Shape of the generated routing configuration.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// VirtualServices, one host each (every tenth a wildcard `*.wild-N.example.com`).
    pub vhosts: usize,
    /// Rules per VirtualService, one match block each; the last is `prefix: /last`.
    pub routes_per_vhost: usize,
    /// ServiceEntries with subsets v1/v2 the routes point at (90/10).
    pub services: usize,
}

/// 1,000 virtual hosts, 10,000 routes, 100 services.
pub const BENCH_SHAPE: Shape = Shape {
    vhosts: 1_000,
    routes_per_vhost: 10,
    services: 100,
};

/// The host of virtual host `i` as a request names it (wildcards get an `a.` label).
pub fn request_host(i: usize) -> String {
    if is_wildcard(i) {
        format!("a.wild-{i}.example.com")
    } else {
        format!("host-{i}.example.com")
    }
}

fn is_wildcard(i: usize) -> bool {
    i % 10 == 9
}

/// The configuration as multi-document YAML.
pub fn routing_yaml(shape: Shape) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
",
    );
    for s in 0..shape.services {
        y.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{s}, namespace: bench}}
spec:
  hosts: [svc-{s}.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 10.1.{a}.{b}, labels: {{version: v1}}}}
  - {{address: 10.2.{a}.{b}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-{s}, namespace: bench}}
spec:
  host: svc-{s}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
",
            a = s / 250,
            b = s % 250 + 1,
        ));
    }
    for i in 0..shape.vhosts {
        let host = if is_wildcard(i) {
            format!("\"*.wild-{i}.example.com\"")
        } else {
            format!("host-{i}.example.com")
        };
        y.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs-{i}, namespace: bench}}
spec:
  hosts: [{host}]
  gateways: [istio-system/bench-gw]
  http:
"
        ));
        for j in 0..shape.routes_per_vhost {
            let m = if j + 1 == shape.routes_per_vhost {
                "{uri: {prefix: /last}}".to_string()
            } else {
                match j % 3 {
                    0 => format!("{{uri: {{prefix: /api/{j}/}}}}"),
                    1 => format!("{{uri: {{exact: /exact/{j}}}, method: {{exact: GET}}}}"),
                    _ => format!("{{uri: {{regex: \"/re/[0-9]+/{j}\"}}}}"),
                }
            };
            let svc = (i + j) % shape.services.max(1);
            y.push_str(&format!(
                "  - match: [{m}]
    route:
    - {{destination: {{host: svc-{svc}, subset: v1}}, weight: 90}}
    - {{destination: {{host: svc-{svc}, subset: v2}}, weight: 10}}
"
            ));
        }
    }
    y
}

/// The configuration loaded into a store. Panics if the generated YAML does not load
/// cleanly (a bug in this generator).
pub fn routing_store(shape: Shape) -> Store {
    let loaded = load_str("generated.yaml", &routing_yaml(shape));
    if let Some(d) = loaded.diagnostics.iter().find(|d| d.level > Level::Info) {
        panic!("generated configuration does not load: {d}");
    }
    Store::new(loaded.resources)
}

/// The compiled snapshot of the default ingress gateway.
pub fn routing_snapshot(shape: Shape) -> Snapshot {
    compile_gateway(&routing_store(shape), &GatewayWorkload::default()).0
}

/// A GET request on port 80.
pub fn get<'a>(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        authority,
        path,
        method: "GET",
        scheme: "http",
        port: 80,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_has_the_advertised_shape() {
        let snap = routing_snapshot(BENCH_SHAPE);
        let router = &snap.listener(80).expect("port 80").router;
        assert_eq!(router.vhosts.len(), 1_000);
        let routes: usize = router.vhosts.iter().map(|v| v.routes.len()).sum();
        assert_eq!(routes, 10_000);
        assert_eq!(snap.clusters.len(), 200);
        assert!(snap.clusters.iter().all(|c| c.endpoints.len() == 1));
        let h = HeaderMap::new();
        let last = router
            .route(&get("host-500.example.com", "/last/x", &h))
            .expect("last route");
        assert_eq!(
            &*last.source,
            "VirtualService bench/vs-500 spec.http[9].match[0]"
        );
        let wild = router
            .route(&get(&request_host(9), "/api/0/x", &h))
            .expect("wildcard");
        assert_eq!(
            &*wild.source,
            "VirtualService bench/vs-9 spec.http[0].match[0]"
        );
    }
}
