//! YAML documents the integration tests share: a Gateway and its servers, a
//! VirtualService sending everything to one service, backends (the built-in demo
//! app, or a static endpoint on 127.0.0.1) and Secrets holding PEM text.

/// Gateway `name` (namespace default) on the default ingress workload
/// (`istio: ingressgateway`) with `servers`: the YAML lines of its `spec.servers`
/// list, as [`server`] writes them.
pub fn gateway(name: &str, servers: &str) -> String {
    annotated_gateway(name, &[], servers)
}

/// [`gateway`] with `metadata.annotations` (key, value).
pub fn annotated_gateway(name: &str, annotations: &[(&str, &str)], servers: &str) -> String {
    let meta = if annotations.is_empty() {
        format!(" {{name: {name}}}\n")
    } else {
        let mut meta = format!("\n  name: {name}\n  annotations:\n");
        for (k, v) in annotations {
            meta.push_str(&format!("    {k}: {v}\n"));
        }
        meta
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:{meta}spec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

/// One item of a Gateway's `spec.servers`: `port` (`number`, `name`, `protocol`),
/// `hosts` (a YAML flow sequence, `[a.test, b.test]`) and, when given, `tls` (a flow
/// mapping, `{mode: SIMPLE, credentialName: a-cert}`).
pub fn server(port: u16, name: &str, protocol: &str, hosts: &str, tls: Option<&str>) -> String {
    let tls = tls.map(|t| format!("    tls: {t}\n")).unwrap_or_default();
    format!("  - port: {{number: {port}, name: {name}, protocol: {protocol}}}\n    hosts: {hosts}\n{tls}")
}

/// One HTTPS server per (host, tls) on `port`, named `https-0`, `https-1`, ...
/// (`tls` as in [`server`]).
pub fn https_servers<'a>(
    port: u16,
    servers: impl IntoIterator<Item = (&'a str, String)>,
) -> String {
    servers
        .into_iter()
        .enumerate()
        .map(|(i, (host, tls))| {
            let (name, hosts) = (format!("https-{i}"), format!("[{host}]"));
            server(port, &name, "HTTPS", &hosts, Some(&tls))
        })
        .collect()
}

/// VirtualService `name` on Gateway `gateway`: every host and every request to the
/// service `host`.
pub fn route_all(name: &str, gateway: &str, host: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: ["*"]
  gateways: [{gateway}]
  http:
  - route: [{{destination: {{host: {host}}}}}]
"#
    )
}

/// A demo-app backend `NAME.default.svc.cluster.local` (ServiceEntry, HTTP port 80)
/// whose one WorkloadEntry `isthmus up` starts as the built-in demo app `NAME` on
/// 127.0.0.1:`port` (answering `NAME v1`).
pub fn demo_backend(name: &str, port: u16) -> String {
    let selector = format!("workloadSelector: {{labels: {{app: {name}}}}}");
    service_entry(name, name, HTTP_80, &selector)
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, annotations: {{isthmus.dev/demo-app: {name}}}}}
spec: {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: {name}, version: v1}}}}
"#
        )
}

/// ServiceEntry `name` for `SERVICE.default.svc.cluster.local` on HTTP port 80, its
/// one endpoint 127.0.0.1:`port` (a process the test runs).
pub fn http_service(name: &str, service: &str, port: u16) -> String {
    let endpoint = format!("endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]");
    service_entry(name, service, HTTP_80, &endpoint)
}

/// ServiceEntry `NAME.default.svc.cluster.local` on TLS port 443, its one endpoint
/// 127.0.0.1:`port` (a TLS server the test runs).
pub fn tls_service(name: &str, port: u16) -> String {
    let endpoint = format!("endpoints: [{{address: 127.0.0.1, ports: {{tls: {port}}}}}]");
    service_entry(name, name, TLS_443, &endpoint)
}

/// A service port: number, name, protocol.
type ServicePort = (u16, &'static str, &'static str);
const HTTP_80: ServicePort = (80, "http", "HTTP");
const TLS_443: ServicePort = (443, "tls", "TLS");

/// ServiceEntry `name` for `SERVICE.default.svc.cluster.local` (MESH_INTERNAL,
/// STATIC) with one service port, its workloads found by `workloads` (the
/// `endpoints` or `workloadSelector` line of its spec).
fn service_entry(name: &str, service: &str, port: ServicePort, workloads: &str) -> String {
    let (number, port_name, protocol) = port;
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{service}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {number}, name: {port_name}, protocol: {protocol}}}]
  {workloads}
"#
    )
}

/// Secret `istio-system/NAME` (where the default ingress gateway runs) with these
/// `stringData` keys, each value a PEM block.
pub fn secret(name: &str, keys: &[(&str, &str)]) -> String {
    secret_doc(name, None, keys)
}

/// A `kubernetes.io/tls` Secret `istio-system/NAME` with `tls.crt` and `tls.key`.
pub fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    secret_doc(
        name,
        Some("kubernetes.io/tls"),
        &[("tls.crt", cert), ("tls.key", key)],
    )
}

fn secret_doc(name: &str, kind: Option<&str>, keys: &[(&str, &str)]) -> String {
    let mut y = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\n"
    );
    if let Some(kind) = kind {
        y.push_str(&format!("type: {kind}\n"));
    }
    y.push_str("stringData:\n");
    for (k, v) in keys {
        y.push_str(&format!("  {k}: |\n{}", block(v, 4)));
    }
    y
}

/// Text as the body of a YAML block scalar, each line indented by `indent`.
pub fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}
