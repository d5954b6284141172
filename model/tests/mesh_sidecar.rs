//! The mesh side of the model: Kubernetes Services backed by WorkloadEntries, sidecar
//! workloads (injection, identity, explicit ports), auto-mTLS on endpoints at the
//! gateway and at sidecars, DestinationRule `tls` against PeerAuthentication, and the
//! sidecar compile (istio-api.md 1.3, 1.4, 1.6, 1.9, 1.10), on the seed's todo-list.

use std::sync::Arc;

use http::HeaderMap;
use isthmus_model::compile::{
    compile_gateway, compile_gateway_with, compile_sidecar, GatewayWorkload,
    CODE_MESH_ENDPOINT_LEFT_OUT,
};
use isthmus_model::load::load_str;
use isthmus_model::mesh::{mesh_workloads, mesh_workloads_checked, MeshOptions, MeshWorkload};
use isthmus_model::snapshot::{
    Endpoint, InboundListener, InboundMtls, RequestView, RouteAction, UpstreamMtls,
};
use isthmus_model::{Diagnostic, Level, Snapshot, Store};

/// The seed scenario with a Kubernetes Service instead of a ServiceEntry, in a
/// namespace with injection enabled and a STRICT namespace policy.
const SEED: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: Service
metadata: {name: todolist, namespace: default}
spec:
  selector: {app: todolist}
  ports:
  - {name: http, port: 8000}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: todolist-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 18001}
  labels: {app: todolist, version: v1}
  serviceAccount: todolist
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: todolist-v2, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 18002}
  labels: {app: todolist, version: v2}
  serviceAccount: todolist
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: todolist-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: todolist, namespace: default}
spec:
  hosts: ["*"]
  gateways: [todolist-gateway]
  http:
  - route:
    - destination: {host: todolist, subset: v1, port: {number: 8000}}
      weight: 90
    - destination: {host: todolist, subset: v2, port: {number: 8000}}
      weight: 10
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"#;

/// The seed's DestinationRule with `extra` appended to its spec (indented by 2).
fn dr(extra: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {{name: todolist, namespace: default}}
spec:
  host: todolist
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
{extra}"
    )
}

const HOST: &str = "todolist.default.svc.cluster.local";
const ID: &str = "spiffe://cluster.local/ns/default/sa/todolist";

fn store(yaml: &str) -> Store {
    let loaded = load_str("mesh.yaml", yaml);
    assert!(
        loaded.diagnostics.iter().all(|d| d.level == Level::Info),
        "test YAML does not load cleanly: {:?}",
        loaded.diagnostics
    );
    Store::new(loaded.resources)
}

fn seed() -> Store {
    store(&format!("{SEED}{}", dr("")))
}

fn explicit() -> MeshOptions {
    MeshOptions {
        port_base: Some(15100),
        ..MeshOptions::default()
    }
}

fn workload(store: &Store, opts: &MeshOptions, name: &str) -> MeshWorkload {
    mesh_workloads(store, opts)
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no workload {name}"))
}

fn bind(port: u16) -> (String, u16) {
    ("127.0.0.1".to_string(), port)
}

fn mtls() -> Option<Arc<UpstreamMtls>> {
    Some(Arc::new(UpstreamMtls {
        identity: ID.to_string(),
        server_name: "todolist.default.sa.cluster.local".to_string(),
    }))
}

fn mesh_endpoint(port: u16) -> Endpoint {
    Endpoint {
        address: "127.0.0.1".to_string(),
        port,
        mtls: mtls(),
        logical_dns: false,
    }
}

fn endpoints(snap: &Snapshot, cluster: &str) -> Vec<Endpoint> {
    snap.cluster_by_name(cluster)
        .unwrap_or_else(|| {
            let names: Vec<&str> = snap.clusters.iter().map(|c| c.name.as_str()).collect();
            panic!("no cluster {cluster} in {names:?}")
        })
        .endpoints
        .clone()
}

fn gateway(store: &Store, opts: &MeshOptions) -> (Snapshot, Vec<Diagnostic>) {
    compile_gateway_with(store, &GatewayWorkload::default(), opts)
}

fn with_code<'a>(diags: &'a [Diagnostic], code: &str) -> Vec<&'a Diagnostic> {
    diags.iter().filter(|d| d.code == code).collect()
}

/// (cluster name, weight) of the route a GET `/` to `authority` takes on `port`.
fn route(snap: &Snapshot, port: u16, authority: &str) -> Option<Vec<(String, u32)>> {
    let headers = HeaderMap::new();
    let req = RequestView {
        authority,
        path: "/",
        method: "GET",
        scheme: "http",
        port,
        headers: &headers,
    };
    let r = snap.listener(port)?.router.route(&req)?;
    let RouteAction::Forward(w) = &r.action;
    Some(
        w.targets
            .iter()
            .map(|&(id, weight)| (snap.cluster(id).name.clone(), weight))
            .collect(),
    )
}

#[test]
fn seed_workloads_are_sidecars_with_identities_and_ports() {
    let store = seed();
    let (ws, diags) = mesh_workloads_checked(&store, &explicit());
    assert!(diags.is_empty(), "{diags:?}");
    let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["todolist-v1", "todolist-v2"]);
    for w in &ws {
        assert!(w.sidecar, "{}", w.name);
        assert_eq!(w.identity.uri(), ID);
        assert_eq!(w.service_account, "todolist");
        assert_eq!(w.address, "127.0.0.1");
    }
    // In order: each sidecar's ports from the base, then its outbound port.
    assert_eq!(ws[0].inbound, [(18001, bind(15100))]);
    assert_eq!(ws[0].outbound, Some(bind(15101)));
    assert_eq!(ws[1].inbound, [(18002, bind(15102))]);
    assert_eq!(ws[1].outbound, Some(bind(15103)));
    assert_eq!(ws[1].mesh_address(18002, &explicit()), Some(bind(15102)));
    // Transparent mode: no binds; the mesh address is the workload's.
    let ws = mesh_workloads(&store, &MeshOptions::default());
    assert!(ws
        .iter()
        .all(|w| w.inbound.is_empty() && w.outbound.is_none()));
    assert_eq!(
        ws[0].mesh_address(18001, &MeshOptions::default()),
        Some(bind(18001))
    );
    // Another trust domain.
    let opts = MeshOptions {
        trust_domain: "example.org".to_string(),
        port_base: None,
    };
    assert_eq!(
        mesh_workloads(&store, &opts)[0].identity.uri(),
        "spiffe://example.org/ns/default/sa/todolist"
    );
}

#[test]
fn gateway_reaches_the_sidecars_over_mtls() {
    let store = seed();
    let (snap, diags) = gateway(&store, &explicit());
    assert!(diags.iter().all(|d| d.level == Level::Info), "{:#?}", diags);
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [mesh_endpoint(15100)]
    );
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v2|{HOST}")),
        [mesh_endpoint(15102)]
    );
    assert_eq!(
        route(&snap, 80, "todo.example.com"),
        Some(vec![
            (format!("outbound|8000|v1|{HOST}"), 90),
            (format!("outbound|8000|v2|{HOST}"), 10)
        ])
    );
    // Transparent mode (compile_gateway's default): the app address, still mTLS.
    let (snap, _) = compile_gateway(&store, &GatewayWorkload::default());
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [mesh_endpoint(18001)]
    );
}

#[test]
fn sidecar_snapshot_of_v1() {
    let store = seed();
    let opts = explicit();
    let v1 = workload(&store, &opts, "todolist-v1");
    let (snap, diags) = compile_sidecar(&store, &v1, &opts);
    assert!(diags.iter().all(|d| d.level == Level::Info), "{:#?}", diags);
    assert_eq!(
        snap.inbound,
        [InboundListener {
            app_port: 18001,
            app_address: "127.0.0.1".to_string(),
            bind: Some(bind(15100)),
            mtls: InboundMtls::Strict,
            policy: "PeerAuthentication default/default".to_string(),
        }]
    );
    // The VirtualService is bound to the gateway only: the default route.
    let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [8000]);
    let default = vec![(format!("outbound|8000||{HOST}"), 1)];
    for authority in [
        "todolist:8000",
        "todolist",
        "todolist.default:8000",
        "todolist.default.svc",
        "todolist.default.svc.cluster.local",
        "TODOLIST.default.svc.cluster.local:8000",
    ] {
        assert_eq!(
            route(&snap, 8000, authority),
            Some(default.clone()),
            "{authority}"
        );
    }
    assert_eq!(route(&snap, 8000, "other.example.com"), None);
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000||{HOST}")),
        [mesh_endpoint(15100), mesh_endpoint(15102)]
    );
    // Transparent mode: no bind, the same policy.
    let (snap, _) = compile_sidecar(
        &store,
        &workload(&store, &MeshOptions::default(), "todolist-v1"),
        &MeshOptions::default(),
    );
    assert_eq!(snap.inbound[0].bind, None);
    assert_eq!(snap.inbound[0].mtls, InboundMtls::Strict);
}

#[test]
fn mesh_virtual_services_route_at_sidecars() {
    let mesh_vs = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: todolist-mesh, namespace: default}
spec:
  hosts: [todolist]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: todolist, subset: v2}}]
  - route:
    - {destination: {host: todolist, subset: v1}, weight: 75}
    - {destination: {host: todolist, subset: v2}, weight: 25}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shadowed, namespace: default}
spec:
  hosts: [todolist.default.svc.cluster.local]
  gateways: [mesh, todolist-gateway]
  http:
  - route: [{destination: {host: todolist, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
"#;
    let store = store(&format!("{SEED}{}{mesh_vs}", dr("")));
    let opts = explicit();
    let v1 = workload(&store, &opts, "todolist-v1");
    let (snap, diags) = compile_sidecar(&store, &v1, &opts);
    let split = vec![
        (format!("outbound|8000|v1|{HOST}"), 75),
        (format!("outbound|8000|v2|{HOST}"), 25),
    ];
    for authority in ["todolist:8000", "todolist.default.svc.cluster.local"] {
        assert_eq!(
            route(&snap, 8000, authority),
            Some(split.clone()),
            "{authority}"
        );
    }
    let mut headers = HeaderMap::new();
    headers.insert("end-user", "jason".parse().unwrap());
    let req = RequestView {
        authority: "todolist:8000",
        path: "/",
        method: "GET",
        scheme: "http",
        port: 8000,
        headers: &headers,
    };
    let r = snap.listener(8000).unwrap().router.route(&req).unwrap();
    assert_eq!(
        &*r.source,
        "VirtualService default/todolist-mesh spec.http[0].match[0]"
    );
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v2|{HOST}")),
        [mesh_endpoint(15102)]
    );
    let infos: Vec<String> = with_code(&diags, "ISM0205")
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        infos
            .iter()
            .any(|t| t.contains("VirtualService default/shadowed")
                && t.contains("already routed by VirtualService default/todolist-mesh")),
        "{infos:#?}"
    );
    // The Sidecar (`./*`) applies: todolist is in its namespace, nothing reported.
    assert!(
        !infos.iter().any(|t| t.contains("Sidecar default/default")),
        "{infos:#?}"
    );
    // The gateway still routes by the gateway-bound VirtualServices only, merged.
    let (snap, _) = gateway(&store, &opts);
    assert_eq!(
        route(&snap, 80, "todo.example.com"),
        Some(vec![
            (format!("outbound|8000|v1|{HOST}"), 90),
            (format!("outbound|8000|v2|{HOST}"), 10)
        ])
    );
}

#[test]
fn inject_false_opts_out_and_is_plaintext_at_the_app_address() {
    let yaml = format!("{SEED}{}", dr("")).replace(
        "metadata: {name: todolist-v2, namespace: default}",
        "metadata:\n  name: todolist-v2\n  namespace: default\n  labels: {sidecar.istio.io/inject: \"false\"}",
    );
    let store = store(&yaml);
    let opts = explicit();
    let ws = mesh_workloads(&store, &opts);
    assert!(ws[0].sidecar);
    assert!(!ws[1].sidecar);
    assert!(ws[1].inbound.is_empty() && ws[1].outbound.is_none());
    // Only sidecars take ports.
    assert_eq!(ws[0].inbound, [(18001, bind(15100))]);
    let (snap, diags) = gateway(&store, &opts);
    assert!(
        with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT).is_empty(),
        "{diags:#?}"
    );
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [mesh_endpoint(15100)]
    );
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v2|{HOST}")),
        [Endpoint::plain("127.0.0.1", 18002)]
    );
}

#[test]
fn destination_rule_disable_never_reaches_a_strict_workload() {
    let store = store(&format!(
        "{SEED}{}",
        dr("  trafficPolicy:\n    tls: {mode: DISABLE}\n")
    ));
    let (snap, diags) = gateway(&store, &explicit());
    assert!(endpoints(&snap, &format!("outbound|8000|v1|{HOST}")).is_empty());
    let left: Vec<String> = with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT)
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(
        left[0].starts_with("Warning [ISM0210] (DestinationRule default/todolist mesh.yaml:")
            && left[0].contains(&format!(
                "spec.trafficPolicy.tls.mode: tls.mode DISABLE sends plaintext to outbound|8000|v1|{HOST}, but WorkloadEntry default/todolist-v1 on port 18001 (PeerAuthentication default/default) accepts mTLS only"
            )),
        "{}",
        left[0]
    );
    let d = with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT)[0];
    assert_eq!(d.field.as_deref(), Some("spec.trafficPolicy.tls.mode"));
    assert_eq!(
        d.resource.as_deref(),
        Some("DestinationRule default/todolist")
    );

    // PERMISSIVE: plaintext, still through the sidecar.
    let permissive = format!(
        "{SEED}{}",
        dr("  trafficPolicy:\n    tls: {mode: DISABLE}\n")
    )
    .replace("mtls: {mode: STRICT}", "mtls: {mode: PERMISSIVE}");
    let (snap, diags) = gateway(&store_of(&permissive), &explicit());
    assert!(with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT).is_empty());
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [Endpoint::plain("127.0.0.1", 15100)]
    );
}

fn store_of(yaml: &str) -> Store {
    store(yaml)
}

#[test]
fn port_and_subset_level_tls() {
    // Top-level DISABLE, replaced for port 8000 by ISTIO_MUTUAL; subset v2 DISABLE.
    let extra = "  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 8000}
      tls: {mode: ISTIO_MUTUAL}
";
    let yaml = format!("{SEED}{}", dr(extra)).replace(
        "    labels: {version: v2}\n",
        "    labels: {version: v2}\n    trafficPolicy:\n      tls: {mode: DISABLE}\n",
    );
    let (snap, diags) = gateway(&store(&yaml), &explicit());
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [mesh_endpoint(15100)]
    );
    assert!(endpoints(&snap, &format!("outbound|8000|v2|{HOST}")).is_empty());
    let left = with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT);
    assert_eq!(left.len(), 1, "{diags:#?}");
    assert_eq!(
        left[0].field.as_deref(),
        Some("spec.subsets[1].trafficPolicy.tls.mode")
    );
}

#[test]
fn istio_mutual_needs_a_sidecar() {
    let yaml = format!(
        "{SEED}{}",
        dr("  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n")
    )
    .replace(
        "  labels: {app: todolist, version: v2}",
        "  labels: {app: todolist, version: v2, sidecar.istio.io/inject: \"false\"}",
    );
    let (snap, diags) = gateway(&store(&yaml), &explicit());
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [mesh_endpoint(15100)]
    );
    assert!(endpoints(&snap, &format!("outbound|8000|v2|{HOST}")).is_empty());
    let left = with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT);
    assert_eq!(left.len(), 1, "{diags:#?}");
    assert!(
        left[0]
            .message
            .contains("WorkloadEntry default/todolist-v2 has no sidecar"),
        "{}",
        left[0]
    );
    // SIMPLE on mesh endpoints: plaintext (to the PERMISSIVE sidecar), reported.
    let yaml = format!(
        "{SEED}{}",
        dr("  trafficPolicy:\n    tls: {mode: SIMPLE}\n")
    )
    .replace("mtls: {mode: STRICT}", "mtls: {mode: PERMISSIVE}");
    let (snap, diags) = gateway(&store(&yaml), &explicit());
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [Endpoint::plain("127.0.0.1", 15100)]
    );
    assert!(
        diags.iter().any(|d| d.level == Level::Info
            && d.message
                .contains("tls.mode SIMPLE is not applied yet to mesh workloads")),
        "{diags:#?}"
    );
}

#[test]
fn service_ports_follow_istio_for_workload_entries() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 81, targetPort: admin-port}
  - {name: metrics, port: 82}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: a, namespace: shop}
spec: {address: 10.0.0.1, ports: {http: 9000, admin-port: 9100}, labels: {app: api}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: b, namespace: shop, labels: {app: api}}
spec: {address: 10.0.0.2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: c, namespace: other}
spec: {address: 10.0.0.3, labels: {app: api}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /admin}}]
    route: [{destination: {host: api, port: {number: 81}}}]
  - match: [{uri: {prefix: /metrics}}]
    route: [{destination: {host: api.shop.svc.cluster.local, port: {number: 82}}}]
  - route: [{destination: {host: api, port: {number: 80}}}]
"#;
    let (snap, diags) = compile_gateway(&store(yaml), &GatewayWorkload::default());
    assert!(diags.iter().all(|d| d.level == Level::Info), "{diags:#?}");
    let host = "api.shop.svc.cluster.local";
    let eps = |port: u16| -> Vec<(String, u16)> {
        endpoints(&snap, &format!("outbound|{port}||{host}"))
            .into_iter()
            .map(|e| {
                assert!(e.mtls.is_none(), "no sidecars here: {e:?}");
                (e.address, e.port)
            })
            .collect()
    };
    // By the Service port's name; else the targetPort number.
    assert_eq!(
        eps(80),
        [
            ("10.0.0.1".to_string(), 9000),
            ("10.0.0.2".to_string(), 8080)
        ]
    );
    // A named targetPort is looked up by that name; else the Service port.
    assert_eq!(
        eps(81),
        [("10.0.0.1".to_string(), 9100), ("10.0.0.2".to_string(), 81)]
    );
    assert_eq!(
        eps(82),
        [("10.0.0.1".to_string(), 82), ("10.0.0.2".to_string(), 82)]
    );
}

#[test]
fn service_entry_and_service_of_one_host_merge() {
    // The demo's ServiceEntry next to a Service of the same name: one set of
    // endpoints, without repeats.
    let yaml = format!(
        "{SEED}{}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: todolist, namespace: default}}
spec:
  hosts: [todolist.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8000, name: http, protocol: HTTP}}
  - {{number: 9000, name: grpc, protocol: GRPC}}
  workloadSelector:
    labels: {{app: todolist}}
",
        dr("")
    );
    let store = store(&yaml);
    let opts = explicit();
    let (snap, _) = gateway(&store, &opts);
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [mesh_endpoint(15100)]
    );
    let v1 = workload(&store, &opts, "todolist-v1");
    let (snap, _) = compile_sidecar(&store, &v1, &opts);
    let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [8000, 9000]);
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000||{HOST}")),
        [mesh_endpoint(15100), mesh_endpoint(15102)]
    );
    // A MESH_EXTERNAL entry (the default) gets no auto-mTLS; next to the Service
    // selecting the same workloads, the endpoints are the mesh's (mTLS).
    let external = yaml.replace("  location: MESH_INTERNAL\n", "");
    let (snap, diags) = gateway(&store_of(&external), &opts);
    assert!(
        with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT).is_empty(),
        "{diags:#?}"
    );
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [mesh_endpoint(15100)]
    );
    // Alone, it is never plaintext to a STRICT sidecar: left out, its location named.
    let alone = external.replace("kind: Service\n", "kind: ConfigMap\n");
    let loaded = load_str("mesh.yaml", &alone);
    let (snap, diags) = gateway(&Store::new(loaded.resources), &opts);
    assert!(endpoints(&snap, &format!("outbound|8000|v1|{HOST}")).is_empty());
    let left = with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT);
    assert!(
        !left.is_empty()
            && left
                .iter()
                .all(|d| d.field.as_deref() == Some("spec.location")
                    && d.resource.as_deref() == Some("ServiceEntry default/todolist")
                    && d.message.contains("location MESH_EXTERNAL")),
        "{diags:#?}"
    );
}

#[test]
fn port_annotations_override_the_allocation() {
    let yaml = format!("{SEED}{}", dr(""))
        .replace(
            "metadata: {name: todolist-v1, namespace: default}",
            "metadata:\n  name: todolist-v1\n  namespace: default\n  annotations: {isthmus.dev/inbound-port: \"15200\", isthmus.dev/outbound-port: \"15201\"}",
        )
        .replace(
            "metadata: {name: todolist-v2, namespace: default}\nspec:\n  address: 127.0.0.1\n  ports: {http: 18002}",
            "metadata:\n  name: todolist-v2\n  namespace: default\n  annotations: {isthmus.dev/inbound-port: \"15300\", isthmus.dev/outbound-port: nope}\nspec:\n  address: 127.0.0.1\n  ports: {http: 18002, admin: 18003}",
        );
    let store = store(&yaml);
    let (ws, diags) = mesh_workloads_checked(&store, &explicit());
    assert_eq!(ws[0].inbound, [(18001, bind(15200))]);
    assert_eq!(ws[0].outbound, Some(bind(15201)));
    // Two ports: the inbound annotation is refused; the outbound one is no number.
    assert_eq!(ws[1].inbound, [(18002, bind(15100)), (18003, bind(15101))]);
    assert_eq!(ws[1].outbound, Some(bind(15102)));
    let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(text
        .iter()
        .all(|t| t.starts_with("Warning [ISM0211] (WorkloadEntry default/todolist-v2 mesh.yaml:")));
    assert!(text[0].contains("metadata.annotations.isthmus.dev/inbound-port: only a WorkloadEntry with exactly one port"), "{}", text[0]);
    assert!(
        text[1].contains(
            "metadata.annotations.isthmus.dev/outbound-port: \"nope\" is not a port number"
        ),
        "{}",
        text[1]
    );
    // The sidecar compile reports its own workload's findings only.
    let opts = explicit();
    let (_, d1) = compile_sidecar(&store, &ws[0], &opts);
    assert!(with_code(&d1, "ISM0211").is_empty());
    let (snap, d2) = compile_sidecar(&store, &ws[1], &opts);
    assert_eq!(with_code(&d2, "ISM0211").len(), 2);
    assert_eq!(snap.inbound.len(), 2);
}

#[test]
fn gateway_only_virtual_services_do_not_reach_sidecars() {
    // No Namespace label: no sidecars, no mTLS anywhere (the demo as it is).
    let yaml =
        format!("{SEED}{}", dr("")).replace("labels: {istio-injection: enabled}", "labels: {}");
    let store = store(&yaml);
    assert!(mesh_workloads(&store, &explicit())
        .iter()
        .all(|w| !w.sidecar));
    let (snap, _) = gateway(&store, &explicit());
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [Endpoint::plain("127.0.0.1", 18001)]
    );
}

#[test]
fn every_corpus_file_compiles_for_sidecars() {
    use isthmus_model::identity::Identity;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/istio-corpus");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("corpus") {
        let dir = dir.expect("entry").path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).expect("corpus subdirectory") {
                let f = f.expect("file").path();
                if f.extension().is_some_and(|e| e == "yaml") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    assert!(files.len() >= 70, "{} corpus files", files.len());
    let opts = explicit();
    let mut listeners = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        let store = Store::new(load_str(&f.display().to_string(), &text).resources);
        let mut ws = mesh_workloads(&store, &opts);
        ws.push(MeshWorkload {
            namespace: "default".to_string(),
            name: "probe".to_string(),
            labels: [("app".to_string(), "productpage".to_string())].into(),
            address: "127.0.0.1".to_string(),
            ports: [("http".to_string(), 9080)].into(),
            service_account: "default".to_string(),
            identity: Identity::new("cluster.local", "default", "default"),
            sidecar: true,
            inbound: vec![(9080, bind(15999))],
            outbound: Some(bind(15998)),
        });
        for w in &ws {
            let (snap, _) = compile_sidecar(&store, w, &opts);
            listeners += snap.listeners.len();
            assert_eq!(snap.inbound.len(), w.app_ports().len(), "{}", f.display());
        }
        let _ = gateway(&store, &opts);
    }
    // Bookinfo's Services give the probe outbound listeners.
    assert!(listeners > 10, "{listeners} listeners");
}

#[test]
fn auto_mtls_follows_a_disabled_port_and_istio_mutual_cannot_reach_it() {
    let pa = r#"---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: v1-port, namespace: default}
spec:
  selector: {matchLabels: {version: v1}}
  portLevelMtls: {18001: {mode: DISABLE}}
"#;
    let opts = explicit();
    // Auto-mTLS: plaintext to v1's sidecar (its port is DISABLE), mTLS to v2.
    let store = store(&format!("{SEED}{}{pa}", dr("")));
    let (snap, _) = gateway(&store, &opts);
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v1|{HOST}")),
        [Endpoint::plain("127.0.0.1", 15100)]
    );
    assert_eq!(
        endpoints(&snap, &format!("outbound|8000|v2|{HOST}")),
        [mesh_endpoint(15102)]
    );
    let v1 = workload(&store, &opts, "todolist-v1");
    let (snap, _) = compile_sidecar(&store, &v1, &opts);
    assert_eq!(snap.inbound[0].mtls, InboundMtls::Disable);
    assert_eq!(snap.inbound[0].policy, "PeerAuthentication default/v1-port");
    // ISTIO_MUTUAL to a DISABLE port: left out.
    let store = store_of(&format!(
        "{SEED}{}{pa}",
        dr("  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n")
    ));
    let (snap, diags) = gateway(&store, &opts);
    assert!(endpoints(&snap, &format!("outbound|8000|v1|{HOST}")).is_empty());
    let left = with_code(&diags, CODE_MESH_ENDPOINT_LEFT_OUT);
    assert_eq!(left.len(), 1, "{diags:#?}");
    assert!(
        left[0].message.contains(
            "WorkloadEntry default/todolist-v1 on port 18001 (PeerAuthentication default/v1-port) accepts plaintext only (DISABLE)"
        ),
        "{}",
        left[0]
    );
}
