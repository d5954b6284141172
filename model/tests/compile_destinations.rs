//! Gateway compilation: weighted destinations, clusters, subsets and endpoints
//! (istio-api.md 1.1.8, 1.3, 1.4), and the seed's canary.

use http::HeaderMap;
use isthmus_model::compile::{compile_gateway, GatewayWorkload};
use isthmus_model::load::load_str;
use isthmus_model::snapshot::{Endpoint, RequestView, RouteAction, WeightedClusters};
use isthmus_model::{Diagnostic, Level, Snapshot, Store};

fn compile(yaml: &str) -> (Snapshot, Vec<Diagnostic>) {
    let loaded = load_str("test.yaml", yaml);
    assert!(
        loaded.diagnostics.iter().all(|d| d.level == Level::Info),
        "test YAML does not load cleanly: {:?}",
        loaded.diagnostics
    );
    compile_gateway(&Store::new(loaded.resources), &GatewayWorkload::default())
}

/// The weighted clusters of the route a GET `/` to `authority` on port 80 takes.
fn action<'a>(snap: &'a Snapshot, authority: &str) -> &'a WeightedClusters {
    let headers = HeaderMap::new();
    let req = RequestView {
        authority,
        path: "/",
        method: "GET",
        scheme: "http",
        port: 80,
        headers: &headers,
    };
    let route = snap
        .listener(80)
        .unwrap()
        .router
        .route(&req)
        .expect("a route");
    let RouteAction::Forward(w) = &route.action;
    w
}

/// (cluster name, weight) of each target.
fn targets(snap: &Snapshot, w: &WeightedClusters) -> Vec<(String, u32)> {
    w.targets
        .iter()
        .map(|&(id, weight)| (snap.cluster(id).name.clone(), weight))
        .collect()
}

fn endpoints(snap: &Snapshot, cluster: &str) -> Vec<(String, u16)> {
    snap.cluster_by_name(cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster}"))
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.port))
        .collect()
}

fn warnings(diags: &[Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .filter(|d| d.level == Level::Warning)
        .map(|d| d.message.clone())
        .collect()
}

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP, targetPort: 9090}
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}, ports: {http: 7000}}
  - {address: 10.0.0.3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"#;

fn vs(http: &str) -> String {
    format!(
        "{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
{http}"
    )
}

#[test]
fn relative_weights_keep_their_ratio() {
    let (snap, _) = compile(&vs(r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 1}
    - {destination: {host: reviews, subset: v2}, weight: 3}
"#));
    let w = action(&snap, "x");
    assert_eq!(w.total, 4);
    assert_eq!(
        targets(&snap, w),
        [
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local".to_string(),
                1
            ),
            (
                "outbound|9080|v2|reviews.default.svc.cluster.local".to_string(),
                3
            ),
        ]
    );
    let picks: Vec<u32> = (0..4).map(|r| w.pick(r).0).collect();
    let first = w.targets[0].0 .0;
    assert_eq!(picks.iter().filter(|&&p| p == first).count(), 1);
}

#[test]
fn single_destination_gets_everything_whatever_its_weight() {
    for weight in ["", "weight: 0", "weight: 7"] {
        let (snap, diags) = compile(&vs(&format!(
            "  - route:\n    - destination: {{host: reviews, subset: v1}}\n      {weight}\n"
        )));
        let w = action(&snap, "x");
        assert_eq!(w.targets.len(), 1, "{weight}");
        assert_eq!(w.total, w.targets[0].1);
        assert!(w.total > 0);
        assert!(diags.iter().all(|d| d.level != Level::Error), "{diags:?}");
    }
}

#[test]
fn zero_weights_are_dropped_and_a_zero_total_drops_the_route() {
    let (snap, _) = compile(&vs(r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 0}
    - {destination: {host: reviews, subset: v2}, weight: 5}
"#));
    let w = action(&snap, "x");
    assert_eq!(w.total, 5);
    assert_eq!(targets(&snap, w).len(), 1);

    let (snap, diags) = compile(&vs(r#"
  - route:
    - {destination: {host: reviews, subset: v1}}
    - {destination: {host: reviews, subset: v2}, weight: 0}
"#));
    assert!(snap.listener(80).unwrap().router.vhosts.is_empty());
    let err = diags
        .iter()
        .find(|d| d.level == Level::Error)
        .expect("an error");
    assert_eq!(err.field.as_deref(), Some("spec.http[0].route"));
    assert!(
        err.message.contains("total destination weight = 0"),
        "{err}"
    );
}

#[test]
fn negative_weight_drops_the_route() {
    let (snap, diags) = compile(&vs(r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: -1}
    - {destination: {host: reviews, subset: v2}, weight: 2}
"#));
    assert!(snap.listener(80).unwrap().router.vhosts.is_empty());
    assert!(diags
        .iter()
        .any(|d| d.level == Level::Error
            && d.field.as_deref() == Some("spec.http[0].route[0].weight")));
}

#[test]
fn subsets_select_endpoints_by_labels_and_ports_resolve() {
    let (snap, diags) = compile(&vs(r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
"#));
    assert!(warnings(&diags).is_empty(), "{diags:?}");
    // targetPort applies when the endpoint names no port for `http`.
    assert_eq!(
        endpoints(&snap, "outbound|9080|v1|reviews.default.svc.cluster.local"),
        [("10.0.0.1".to_string(), 9090)]
    );
    // The endpoint's own `ports[http]` wins over targetPort.
    assert_eq!(
        endpoints(&snap, "outbound|9080|v2|reviews.default.svc.cluster.local"),
        [("10.0.0.2".to_string(), 7000)]
    );
}

#[test]
fn subsets_select_workload_entries() {
    let (snap, _) = compile(&format!(
        "{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: ratings}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-v1, namespace: default}}
spec: {{address: 127.0.0.1, ports: {{http: 18001}}, labels: {{app: ratings, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-v2, namespace: default}}
spec: {{address: 127.0.0.2, labels: {{app: ratings, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: elsewhere, namespace: other}}
spec: {{address: 127.0.0.9, labels: {{app: ratings, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: default}}
spec:
  host: ratings
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - route:
    - {{destination: {{host: ratings, subset: v1}}, weight: 90}}
    - {{destination: {{host: ratings, subset: v2}}, weight: 10}}
"
    ));
    assert_eq!(
        endpoints(&snap, "outbound|8000|v1|ratings.default.svc.cluster.local"),
        [("127.0.0.1".to_string(), 18001)]
    );
    assert_eq!(
        endpoints(&snap, "outbound|8000|v2|ratings.default.svc.cluster.local"),
        [("127.0.0.2".to_string(), 8000)]
    );
}

#[test]
fn dns_service_entry_without_endpoints_uses_its_host() {
    let (snap, diags) = compile(&format!(
        "{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.org]
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backends, namespace: default}}
spec:
  hosts: [backend.internal]
  resolution: DNS
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: b1.example.net}}, {{address: b2.example.net, ports: {{http: 9000}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /backend}}}}]
    route: [{{destination: {{host: backend.internal}}}}]
  - route: [{{destination: {{host: httpbin.org}}}}]
"
    ));
    assert!(warnings(&diags).is_empty(), "{diags:?}");
    assert_eq!(
        endpoints(&snap, "outbound|80||httpbin.org"),
        [("httpbin.org".to_string(), 80)]
    );
    assert_eq!(
        endpoints(&snap, "outbound|8080||backend.internal"),
        [
            ("b1.example.net".to_string(), 8080),
            ("b2.example.net".to_string(), 9000)
        ]
    );
}

/// Istio's two DNS resolutions: `DNS` is Envoy's STRICT_DNS (every address of the
/// answer is an endpoint), `DNS_ROUND_ROBIN` its LOGICAL_DNS (new connections go to
/// the first address of the latest answer).
#[test]
fn dns_round_robin_is_logical_dns_and_dns_is_strict() {
    let (snap, diags) = compile(&format!(
        "{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: strict, namespace: default}}
spec:
  hosts: [strict.example.com]
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: logical, namespace: default}}
spec:
  hosts: [logical.example.com]
  resolution: DNS_ROUND_ROBIN
  ports: [{{number: 80, name: http, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /logical}}}}]
    route: [{{destination: {{host: logical.example.com}}}}]
  - route: [{{destination: {{host: strict.example.com}}}}]
"
    ));
    assert!(warnings(&diags).is_empty(), "{diags:?}");
    let logical = |name: &str| {
        snap.cluster_by_name(name).map(|c| {
            c.endpoints
                .iter()
                .map(|e| e.logical_dns)
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        logical("outbound|80||logical.example.com"),
        Some(vec![true])
    );
    assert_eq!(
        logical("outbound|80||strict.example.com"),
        Some(vec![false])
    );
}

#[test]
fn missing_subset_or_service_compiles_to_a_cluster_without_endpoints() {
    let (snap, diags) = compile(&vs(r#"
  - match: [{uri: {prefix: /v9}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - route: [{destination: {host: unknown.example.com, port: {number: 80}}}]
"#));
    let v9 = snap
        .cluster_by_name("outbound|9080|v9|reviews.default.svc.cluster.local")
        .expect("a cluster for the undefined subset");
    assert!(v9.endpoints.is_empty());
    assert!(v9.next_endpoint().is_none());
    let unknown = snap
        .cluster_by_name("outbound|80||unknown.example.com")
        .unwrap();
    assert!(unknown.endpoints.is_empty());
    let w = warnings(&diags);
    assert!(
        w.iter()
            .any(|m| m.contains("subset \"v9\" is not defined in DestinationRule default/reviews")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|m| m.contains("no ServiceEntry declares host unknown.example.com")),
        "{w:?}"
    );
}

#[test]
fn destination_rule_in_the_virtual_service_namespace_wins() {
    let (snap, _) = compile(&format!(
        "{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-root, namespace: istio-system}}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{{name: v1, labels: {{version: v3}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
"
    ));
    assert_eq!(
        endpoints(&snap, "outbound|9080|v1|reviews.default.svc.cluster.local"),
        [("10.0.0.1".to_string(), 9090)]
    );
}

#[test]
fn round_robin_over_endpoints() {
    let (snap, _) = compile(&vs(r#"
  - route: [{destination: {host: reviews}}]
"#));
    let c = snap
        .cluster_by_name("outbound|9080||reviews.default.svc.cluster.local")
        .unwrap();
    let seen: Vec<&Endpoint> = (0..4).filter_map(|_| c.next_endpoint()).collect();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0], seen[3]);
    assert_ne!(seen[0], seen[1]);
}

/// The seed's canary (/work/shared/seed/istio-guide.txt): Gateway todolist-gateway,
/// VirtualService 90/10 over subsets v1/v2, DestinationRule with the subsets. The
/// seed's VirtualService has no `gateways` (so in Istio it would bind to sidecars
/// only); like configs/demo, it is bound to the gateway here.
#[test]
fn seed_canary_compiles_to_90_10() {
    let (snap, diags) = compile(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: todolist-gateway
spec:
  selector:
    istio: ingressgateway # use istio default controller
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: todolist
spec:
  host: todolist
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: todolist
spec:
  hosts:
  - "*"
  gateways:
  - todolist-gateway
  http:
  - route:
    - destination:
        host: todolist
        subset: v1
      weight: 90
    - destination:
        host: todolist
        subset: v2
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: todolist
spec:
  hosts: [todolist.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: TCP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 18001}, labels: {app: todolist, version: v1}}
  - {address: 127.0.0.1, ports: {http: 18002}, labels: {app: todolist, version: v2}}
"#,
    );
    assert!(warnings(&diags).is_empty(), "{diags:?}");
    let w = action(&snap, "todolist.example.com:80");
    assert_eq!(w.total, 100);
    assert_eq!(
        targets(&snap, w),
        [
            (
                "outbound|8000|v1|todolist.default.svc.cluster.local".to_string(),
                90
            ),
            (
                "outbound|8000|v2|todolist.default.svc.cluster.local".to_string(),
                10
            ),
        ]
    );
    assert_eq!(snap.cluster(w.pick(89)).subset.as_deref(), Some("v1"));
    assert_eq!(snap.cluster(w.pick(90)).subset.as_deref(), Some("v2"));
    assert_eq!(
        endpoints(&snap, "outbound|8000|v2|todolist.default.svc.cluster.local"),
        [("127.0.0.1".to_string(), 18002)]
    );
}

/// A DestinationRule's `connectionPool` reaches the cluster (Envoy's circuit
/// breakers): the top-level policy for every subset, a matching port-level entry
/// over it, a subset's own `connectionPool` over both; no policy, no limits.
#[test]
fn connection_pool_limits_reach_the_clusters() {
    let yaml = vs(r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
"#)
    .replace(
        "  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}",
        "  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool:
        tcp: {maxConnections: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool:
        tcp: {maxConnections: 1}
        http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}",
    );
    let (snap, diags) = compile(&yaml);
    assert!(warnings(&diags).is_empty(), "{diags:?}");
    let pool = |name: &str| snap.cluster_by_name(name).expect(name).pool;
    let v1 = pool("outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(
        v1.max_connections,
        Some(50),
        "the port-level entry wins whole"
    );
    assert_eq!(v1.http1_max_pending_requests, None);
    assert_eq!(
        v1.connect_timeout, None,
        "the port-level entry replaces it too"
    );
    let v2 = pool("outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(v2.max_connections, Some(1));
    assert_eq!(v2.http1_max_pending_requests, Some(1));
    assert_eq!(v2.http2_max_requests, None);
    assert_eq!(v2.max_requests_per_connection, Some(1));
    let (timed, _) = compile(&vs(r#"
  - route:
    - {destination: {host: reviews, subset: v3}}
"#)
    .replace(
        "  host: reviews\n  subsets:",
        "  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: 250ms}\n  subsets:",
    ));
    let v3 = timed
        .cluster_by_name("outbound|9080|v3|reviews.default.svc.cluster.local")
        .unwrap()
        .pool;
    assert_eq!(
        v3.connect_timeout,
        Some(std::time::Duration::from_millis(250))
    );
    assert!(!v3.is_limited(), "a connect timeout is no circuit breaker");

    let (plain, _) = compile(&vs(r#"
  - route:
    - {destination: {host: reviews, subset: v1}}
"#));
    assert!(!plain
        .cluster_by_name("outbound|9080|v1|reviews.default.svc.cluster.local")
        .unwrap()
        .pool
        .is_limited());
}
