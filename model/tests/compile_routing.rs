//! Gateway compilation: binding, virtual hosts and route matching, with Istio's
//! semantics (istio-api.md 1.1 and 1.2). Pure: YAML in, snapshot and routing out.

use http::HeaderMap;
use isthmus_model::compile::{compile_gateway, gateway_workloads, GatewayWorkload};
use isthmus_model::load::load_str;
use isthmus_model::snapshot::{RequestView, RouteAction};
use isthmus_model::{Diagnostic, Level, Snapshot, Store};

fn store(yaml: &str) -> Store {
    let loaded = load_str("test.yaml", yaml);
    assert!(
        loaded.diagnostics.iter().all(|d| d.level == Level::Info),
        "test YAML does not load cleanly: {:?}",
        loaded.diagnostics
    );
    Store::new(loaded.resources)
}

fn compile(yaml: &str) -> (Snapshot, Vec<Diagnostic>) {
    compile_gateway(&store(yaml), &GatewayWorkload::default())
}

/// The host of the destination the request is routed to on `port`, or `None` (404).
fn route_host(snap: &Snapshot, port: u16, authority: &str, path: &str) -> Option<String> {
    route_host_with(snap, port, authority, path, "GET", &HeaderMap::new())
}

fn route_host_with(
    snap: &Snapshot,
    port: u16,
    authority: &str,
    path: &str,
    method: &str,
    headers: &HeaderMap,
) -> Option<String> {
    let req = RequestView {
        authority,
        path,
        method,
        scheme: "http",
        port,
        headers,
    };
    let route = snap.listener(port)?.router.route(&req)?;
    let RouteAction::Forward(w) = &route.action;
    Some(snap.cluster(w.pick(0)).host.clone())
}

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

fn with_gateway(rest: &str) -> String {
    format!("{GATEWAY}---\n{rest}")
}

#[test]
fn first_match_wins() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: first.example.com, port: {number: 80}}}]
  - match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: second.example.com, port: {number: 80}}}]
  - route: [{destination: {host: fallback.example.com, port: {number: 80}}}]
"#,
    ));
    assert_eq!(
        route_host(&snap, 80, "x", "/api/v2/items").as_deref(),
        Some("first.example.com")
    );
    assert_eq!(
        route_host(&snap, 80, "x", "/other").as_deref(),
        Some("fallback.example.com")
    );
}

#[test]
fn catch_all_moved_last_across_two_virtual_services() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: istio-system}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: web.example.com, port: {number: 80}}}]
  - match: [{uri: {prefix: /unreachable}}]
    route: [{destination: {host: never.example.com, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: istio-system}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: api.example.com, port: {number: 80}}}]
  - match: [{uri: {regex: ".*"}}]
    route: [{destination: {host: regex-all.example.com, port: {number: 80}}}]
"#,
    ));
    // b's /api comes before a's catch-all although a was loaded first.
    assert_eq!(
        route_host(&snap, 80, "shop.example.com", "/api/x").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(
        route_host(&snap, 80, "shop.example.com", "/").as_deref(),
        Some("web.example.com")
    );
    // Routes after a VirtualService's catch-all are not emitted (they were unreachable).
    assert_eq!(
        route_host(&snap, 80, "shop.example.com", "/unreachable").as_deref(),
        Some("web.example.com")
    );
    let vh = snap
        .listener(80)
        .unwrap()
        .router
        .vhost("shop.example.com")
        .unwrap();
    let order: Vec<&str> = vh.routes.iter().map(|r| &*r.source).collect();
    assert_eq!(
        order,
        [
            "VirtualService istio-system/b spec.http[0].match[0]",
            "VirtualService istio-system/a spec.http[0]",
            "VirtualService istio-system/b spec.http[1].match[0]",
        ]
    );
}

#[test]
fn prefix_is_a_plain_string_prefix_and_regex_is_anchored() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /foo}}]
    route: [{destination: {host: foo.example.com, port: {number: 80}}}]
  - match: [{uri: {regex: "/v[0-9]+"}}]
    route: [{destination: {host: regex.example.com, port: {number: 80}}}]
  - match: [{uri: {exact: /Exact}, ignoreUriCase: true}]
    route: [{destination: {host: exact.example.com, port: {number: 80}}}]
"#,
    ));
    assert_eq!(
        route_host(&snap, 80, "x", "/foobar").as_deref(),
        Some("foo.example.com")
    );
    assert_eq!(
        route_host(&snap, 80, "x", "/foo?q=1").as_deref(),
        Some("foo.example.com")
    );
    assert_eq!(
        route_host(&snap, 80, "x", "/v12").as_deref(),
        Some("regex.example.com")
    );
    assert_eq!(route_host(&snap, 80, "x", "/v12/more"), None);
    assert_eq!(route_host(&snap, 80, "x", "/x/v12"), None);
    assert_eq!(
        route_host(&snap, 80, "x", "/eXaCt").as_deref(),
        Some("exact.example.com")
    );
    assert_eq!(route_host(&snap, 80, "x", "/Fo"), None);
}

#[test]
fn wildcard_host_does_not_match_its_parent_domain() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  http:
  - route: [{destination: {host: web.example.com, port: {number: 80}}}]
"#,
    ));
    assert!(route_host(&snap, 80, "a.example.com", "/").is_some());
    assert!(route_host(&snap, 80, "a.b.example.com", "/").is_some());
    assert_eq!(route_host(&snap, 80, "example.com", "/"), None);
    assert_eq!(route_host(&snap, 80, "example.org", "/"), None);
}

#[test]
fn host_match_ignores_port_and_case() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: [Dev.Example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: web.example.com, port: {number: 80}}}]
"#,
    ));
    for authority in [
        "dev.example.com",
        "DEV.EXAMPLE.COM:8080",
        "dev.example.com:80",
    ] {
        assert!(
            route_host(&snap, 80, authority, "/").is_some(),
            "{authority}"
        );
    }
    assert_eq!(route_host(&snap, 80, "dev.example.com.evil", "/"), None);
}

#[test]
fn vhost_domains_are_the_intersection_of_server_and_virtual_service_hosts() {
    let (snap, _) = compile(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: [dev.example.com, example.com, other.org]
  gateways: [gw]
  http:
  - route: [{destination: {host: web.example.com, port: {number: 80}}}]
"#,
    );
    let router = &snap.listener(80).unwrap().router;
    let domains: Vec<&str> = router
        .vhosts
        .iter()
        .flat_map(|v| v.domains.iter().map(String::as_str))
        .collect();
    assert_eq!(domains, ["dev.example.com"]);
    assert_eq!(route_host(&snap, 80, "prod.example.com", "/"), None);
}

#[test]
fn header_query_method_and_authority_matches() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{headers: {X-Canary: {}}}]
    route: [{destination: {host: present.example.com, port: {number: 80}}}]
  - match: [{headers: {end-user: {exact: jason}, uri: {exact: /ignored-key}}}]
    route: [{destination: {host: jason.example.com, port: {number: 80}}}]
  - match: [{headers: {x-any: {regex: "*"}}}]
    route: [{destination: {host: regex-star.example.com, port: {number: 80}}}]
  - match: [{queryParams: {debug: {exact: "1"}}}]
    route: [{destination: {host: debug.example.com, port: {number: 80}}}]
  - match: [{method: {exact: POST}}]
    route: [{destination: {host: post.example.com, port: {number: 80}}}]
  - match: [{authority: {prefix: api.}}]
    route: [{destination: {host: api.example.com, port: {number: 80}}}]
  - match: [{uri: {prefix: /nobeta}, withoutHeaders: {x-beta: {exact: "yes"}}}]
    route: [{destination: {host: nobeta.example.com, port: {number: 80}}}]
"#,
    ));
    let mut h = HeaderMap::new();
    let r = |h: &HeaderMap, path: &str, method: &str, authority: &str| {
        route_host_with(&snap, 80, authority, path, method, h)
    };
    assert_eq!(r(&h, "/", "GET", "x"), None);
    h.insert("x-canary", "".parse().unwrap());
    assert_eq!(
        r(&h, "/", "GET", "x").as_deref(),
        Some("present.example.com")
    );
    h.clear();
    // `uri` inside `headers` is ignored, so only end-user decides.
    h.insert("end-user", "jason".parse().unwrap());
    assert_eq!(
        r(&h, "/anything", "GET", "x").as_deref(),
        Some("jason.example.com")
    );
    h.clear();
    h.insert("x-any", "whatever".parse().unwrap());
    assert_eq!(
        r(&h, "/", "GET", "x").as_deref(),
        Some("regex-star.example.com")
    );
    h.clear();
    assert_eq!(
        r(&h, "/p?a=2&debug=1", "GET", "x").as_deref(),
        Some("debug.example.com")
    );
    assert_eq!(r(&h, "/p?debug=10", "GET", "x"), None);
    assert_eq!(r(&h, "/", "POST", "x").as_deref(), Some("post.example.com"));
    assert_eq!(
        r(&h, "/", "GET", "api.example.com").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(
        r(&h, "/nobeta", "GET", "x").as_deref(),
        Some("nobeta.example.com")
    );
    h.insert("x-beta", "yes".parse().unwrap());
    assert_eq!(r(&h, "/nobeta", "GET", "x"), None);
    h.insert("x-beta", "no".parse().unwrap());
    assert_eq!(
        r(&h, "/nobeta", "GET", "x").as_deref(),
        Some("nobeta.example.com")
    );
}

#[test]
fn missing_header_fails_a_value_match() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{headers: {x-opt: {regex: ".*"}}}]
    route: [{destination: {host: opt.example.com, port: {number: 80}}}]
"#,
    ));
    assert_eq!(route_host(&snap, 80, "x", "/"), None);
    let mut h = HeaderMap::new();
    h.insert("x-opt", "".parse().unwrap());
    assert!(route_host_with(&snap, 80, "x", "/", "GET", &h).is_some());
}

#[test]
fn match_port_and_match_gateways_narrow_routes() {
    let (snap, _) = compile(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8080, name: http-alt, protocol: http2}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9090, name: http, protocol: GRPC}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw, other]
  http:
  - match: [{port: 8080}]
    route: [{destination: {host: alt.example.com, port: {number: 80}}}]
  - match: [{gateways: [other]}]
    route: [{destination: {host: other.example.com, port: {number: 80}}}]
  - match: [{sourceLabels: {app: reviews}}]
    route: [{destination: {host: sidecars-only.example.com, port: {number: 80}}}]
  - route: [{destination: {host: default.example.com, port: {number: 80}}}]
"#,
    );
    let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [80, 8080, 9090]);
    assert_eq!(
        route_host(&snap, 8080, "x", "/").as_deref(),
        Some("alt.example.com")
    );
    assert_eq!(
        route_host(&snap, 80, "x", "/").as_deref(),
        Some("default.example.com")
    );
    assert_eq!(
        route_host(&snap, 9090, "x", "/").as_deref(),
        Some("other.example.com")
    );
    // sourceLabels select application pods, never this gateway.
    let vh = snap.listener(80).unwrap().router.vhost("x").unwrap();
    assert!(vh.routes.iter().all(|r| !r.source.contains("http[2]")));
}

#[test]
fn virtual_service_without_gateways_does_not_bind() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: istio-system}
spec:
  hosts: ["*"]
  http:
  - route: [{destination: {host: web.example.com, port: {number: 80}}}]
"#,
    ));
    let listener = snap
        .listener(80)
        .expect("the listener exists without routes");
    assert!(listener.router.vhosts.is_empty());
    assert_eq!(route_host(&snap, 80, "x", "/"), None);
}

#[test]
fn namespaced_gateway_reference_binds_across_namespaces() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: qualified, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: a, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: short, namespace: default}
spec:
  hosts: [b.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: b, port: {number: 80}}}]
"#,
    ));
    assert_eq!(
        route_host(&snap, 80, "a.example.com", "/").as_deref(),
        Some("a.default.svc.cluster.local")
    );
    // `gw` from namespace default means default/gw, which does not exist.
    assert_eq!(route_host(&snap, 80, "b.example.com", "/"), None);
}

#[test]
fn server_namespace_prefix_restricts_binding() {
    let (snap, _) = compile(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["team-a/*", "./edge.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: team-a}
spec:
  hosts: [a.example.com]
  gateways: [edge/gw]
  http:
  - route: [{destination: {host: a, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: team-b}
spec:
  hosts: [b.example.com, edge.example.com]
  gateways: [edge/gw]
  http:
  - route: [{destination: {host: b, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: e, namespace: edge}
spec:
  hosts: [edge.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: e, port: {number: 80}}}]
"#,
    );
    assert_eq!(
        route_host(&snap, 80, "a.example.com", "/").as_deref(),
        Some("a.team-a.svc.cluster.local")
    );
    assert_eq!(route_host(&snap, 80, "b.example.com", "/"), None);
    assert_eq!(
        route_host(&snap, 80, "edge.example.com", "/").as_deref(),
        Some("e.edge.svc.cluster.local")
    );
}

#[test]
fn export_to_is_checked_against_the_workload_namespace() {
    let (snap, _) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private, namespace: default}
spec:
  hosts: [private.example.com]
  gateways: [istio-system/gw]
  exportTo: ["."]
  http:
  - route: [{destination: {host: a, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: exported, namespace: default}
spec:
  hosts: [exported.example.com]
  gateways: [istio-system/gw]
  exportTo: [istio-system]
  http:
  - route: [{destination: {host: a, port: {number: 80}}}]
"#,
    ));
    assert_eq!(route_host(&snap, 80, "private.example.com", "/"), None);
    assert!(route_host(&snap, 80, "exported.example.com", "/").is_some());
}

#[test]
fn invalid_regex_drops_only_that_route_with_an_error() {
    let (snap, diags) = compile(&with_gateway(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {regex: "/(unclosed"}}]
    route: [{destination: {host: bad.example.com, port: {number: 80}}}]
  - route: [{destination: {host: good.example.com, port: {number: 80}}}]
"#,
    ));
    assert_eq!(
        route_host(&snap, 80, "x", "/(unclosed").as_deref(),
        Some("good.example.com")
    );
    let d = diags
        .iter()
        .find(|d| d.level == Level::Error)
        .expect("an error finding");
    assert_eq!(d.field.as_deref(), Some("spec.http[0].match[0].uri.regex"));
    assert_eq!(
        d.resource.as_deref(),
        Some("VirtualService istio-system/vs")
    );
    assert!(d.origin.as_ref().is_some_and(|o| o.line > 1), "{d}");
}

#[test]
fn gateway_selection_and_workloads() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: apps}
spec:
  selector: {app: internal-gw}
  servers:
  - port: {number: 81, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: everywhere, namespace: apps}
spec:
  servers:
  - port: {number: 82, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cert}
"#;
    let store = store(yaml);
    let workloads = gateway_workloads(&store);
    assert_eq!(workloads.len(), 2);
    assert_eq!(workloads[0], GatewayWorkload::default());
    assert_eq!(workloads[1].namespace, "apps");
    let ports = |w: &GatewayWorkload| -> Vec<u16> {
        compile_gateway(&store, w)
            .0
            .listeners
            .iter()
            .map(|l| l.port)
            .collect()
    };
    assert_eq!(ports(&workloads[0]), [80, 82, 443]);
    assert_eq!(ports(&workloads[1]), [81, 82, 443]);
    // The HTTPS listener starts without its certificate: Secret `cert` is missing.
    let (_, diags) = compile_gateway(&store, &workloads[0]);
    let missing = diags
        .iter()
        .find(|d| d.level == Level::Error)
        .expect("credential not found");
    assert_eq!(missing.code, "IST0101");
    assert_eq!(
        missing.field.as_deref(),
        Some("spec.servers[1].tls.credentialName")
    );
    assert!(gateway_workloads(&Store::default()).is_empty());
}

#[test]
fn https_redirect_marks_the_server_hosts() {
    let (snap, _) = compile(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [secure.example.com]
    tls: {httpsRedirect: true}
"#,
    );
    let vh = snap
        .listener(80)
        .unwrap()
        .router
        .vhost("secure.example.com")
        .unwrap();
    assert!(vh.https_redirect);
    assert!(vh.routes.is_empty());
}
