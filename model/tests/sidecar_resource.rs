//! The `networking.istio.io` `Sidecar` resource at sidecars (istio-api.md 1.5):
//! selection (workload selector, namespace, root-namespace default), egress hosts
//! trimming the outbound configuration, and gateways ignoring it.

use http::HeaderMap;
use isthmus_model::compile::{compile_gateway_with, compile_sidecar, GatewayWorkload};
use isthmus_model::load::load_str;
use isthmus_model::mesh::{mesh_workloads, MeshOptions};
use isthmus_model::snapshot::{RequestView, RouteAction};
use isthmus_model::{Diagnostic, Level, Snapshot, Store};

const TODO: &str = "todolist.default.svc.cluster.local";
const NOTES: &str = "notes.other.svc.cluster.local";

/// Two namespaces with one Service each (todolist:8000 in `default`, notes:9000 in
/// `other`), workloads `web`, `web-special`, `lonely` in `default` and `reader` in
/// `other`, a mesh VirtualService for notes, and an ingress Gateway routing to both.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: Namespace
metadata:
  name: other
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
apiVersion: v1
kind: Service
metadata: {name: notes, namespace: other}
spec:
  selector: {app: notes}
  ports:
  - {name: http, port: 9000}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: todolist, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 18001}
  labels: {app: todolist}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: notes, namespace: other}
spec:
  address: 127.0.0.1
  ports: {http: 18002}
  labels: {app: notes}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 18003}
  labels: {app: web}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-special, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 18004}
  labels: {app: web, tier: special}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: lonely, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 18005}
  labels: {app: lonely}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reader, namespace: other}
spec:
  address: 127.0.0.1
  ports: {http: 18006}
  labels: {app: reader}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: notes-mesh, namespace: other}
spec:
  hosts: [notes.other.svc.cluster.local]
  http:
  - route: [{destination: {host: notes.other.svc.cluster.local}}]
---
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
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /notes}}]
    route: [{destination: {host: notes.other.svc.cluster.local}}]
  - route: [{destination: {host: todolist}}]
"#;

/// The Sidecar resources of the scenario.
const SIDECARS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: special, namespace: default}
spec:
  workloadSelector: {labels: {tier: special}}
  egress:
  - hosts: ["other/*"]
    port: {number: 9000, protocol: HTTP, name: http}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: lonely, namespace: default}
spec:
  workloadSelector: {labels: {app: lonely}}
  egress:
  - hosts: ["~/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress:
  - hosts: ["*/todolist.default.svc.cluster.local"]
"#;

fn store(yaml: &str) -> Store {
    let loaded = load_str("sidecar.yaml", yaml);
    assert!(
        loaded.diagnostics.iter().all(|d| d.level == Level::Info),
        "test YAML does not load cleanly: {:?}",
        loaded.diagnostics
    );
    Store::new(loaded.resources)
}

fn opts() -> MeshOptions {
    MeshOptions {
        port_base: Some(15100),
        ..Default::default()
    }
}

fn sidecar(store: &Store, name: &str) -> (Snapshot, Vec<Diagnostic>) {
    let opts = opts();
    let w = mesh_workloads(store, &opts)
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no workload {name}"));
    compile_sidecar(store, &w, &opts)
}

fn ports(snap: &Snapshot) -> Vec<u16> {
    snap.listeners.iter().map(|l| l.port).collect()
}

/// The clusters a GET `/` to `authority` on `port` is routed to.
fn route(snap: &Snapshot, port: u16, authority: &str) -> Option<Vec<String>> {
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
            .map(|&(id, _)| snap.cluster(id).name.clone())
            .collect(),
    )
}

fn infos(diags: &[Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .filter(|d| d.code == "ISM0205")
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn without_sidecar_resources_every_service_is_configured() {
    let store = store(BASE);
    for name in ["web", "reader"] {
        let (snap, _) = sidecar(&store, name);
        assert_eq!(ports(&snap), [8000, 9000], "{name}");
    }
}

#[test]
fn namespace_sidecar_keeps_its_own_namespace() {
    let store = store(&format!("{BASE}{SIDECARS}"));
    let (snap, diags) = sidecar(&store, "web");
    assert!(diags.iter().all(|d| d.level == Level::Info), "{diags:#?}");
    assert_eq!(ports(&snap), [8000]);
    assert_eq!(
        route(&snap, 8000, "todolist:8000"),
        Some(vec![format!("outbound|8000||{TODO}")])
    );
    // The mesh VirtualService names only the trimmed notes: nothing, not even on 80.
    assert_eq!(route(&snap, 9000, NOTES), None);
    assert_eq!(route(&snap, 80, NOTES), None);
    let infos = infos(&diags);
    assert!(
        !infos
            .iter()
            .any(|t| t.contains("Sidecar resources are not applied")),
        "{infos:#?}"
    );
}

#[test]
fn workload_selector_sidecar_beats_the_namespace_one() {
    let store = store(&format!("{BASE}{SIDECARS}"));
    let (snap, diags) = sidecar(&store, "web-special");
    assert_eq!(ports(&snap), [9000]);
    assert_eq!(
        route(&snap, 9000, "notes.other:9000"),
        Some(vec![format!("outbound|9000||{NOTES}")])
    );
    assert_eq!(route(&snap, 8000, "todolist"), None);
    // egress[].port is not applied: reported once.
    let infos = infos(&diags);
    assert!(
        infos
            .iter()
            .any(|t| t.contains("Sidecar default/special") && t.contains("egress port")),
        "{infos:#?}"
    );
}

#[test]
fn root_namespace_default_with_an_exact_host() {
    let store = store(&format!("{BASE}{SIDECARS}"));
    // `other` has no Sidecar: istio-system/default keeps todolist only.
    let (snap, _) = sidecar(&store, "reader");
    assert_eq!(ports(&snap), [8000]);
    assert_eq!(
        route(&snap, 8000, "todolist.default.svc.cluster.local:8000"),
        Some(vec![format!("outbound|8000||{TODO}")])
    );
    assert_eq!(route(&snap, 9000, "notes"), None);
}

#[test]
fn tilde_trims_all_outbound_config() {
    let store = store(&format!("{BASE}{SIDECARS}"));
    let (snap, _) = sidecar(&store, "lonely");
    assert!(snap.listeners.is_empty(), "{:?}", ports(&snap));
    assert!(snap.clusters.is_empty());
    assert_eq!(snap.inbound.len(), 1);
}

#[test]
fn unapplied_fields_are_reported() {
    let extra = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: other}
spec:
  ingress:
  - port: {number: 18006, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:18006
  egress:
  - hosts: ["*/*"]
    bind: 127.0.0.2
    captureMode: NONE
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;
    let store = store(&format!("{BASE}{extra}"));
    let (snap, diags) = sidecar(&store, "reader");
    assert_eq!(ports(&snap), [8000, 9000]);
    let infos = infos(&diags);
    for what in [
        "egress bind",
        "egress captureMode",
        "ingress listeners",
        "REGISTRY_ONLY",
    ] {
        assert!(
            infos
                .iter()
                .any(|t| t.contains("Sidecar other/default") && t.contains(what)),
            "{what}: {infos:#?}"
        );
    }
}

#[test]
fn gateways_ignore_sidecar_resources() {
    let without = store(BASE);
    let with = store(&format!(
        "{BASE}{SIDECARS}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: gw, namespace: default}}
spec:
  workloadSelector: {{labels: {{istio: ingressgateway}}}}
  egress: [{{hosts: [\"~/*\"]}}]
"
    ));
    let workload = GatewayWorkload::default();
    let (a, da) = compile_gateway_with(&without, &workload, &opts());
    let (b, db) = compile_gateway_with(&with, &workload, &opts());
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(
        da.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        db.iter().map(|d| d.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        route(&b, 80, "any.example.com"),
        Some(vec![format!("outbound|8000||{TODO}")])
    );
}
