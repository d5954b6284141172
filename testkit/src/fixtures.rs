//! YAML documents the integration tests share.

/// A demo-app backend `NAME.default.svc.cluster.local` (ServiceEntry, HTTP port 80)
/// whose one WorkloadEntry `isthmus up` starts as the built-in demo app `NAME` on
/// 127.0.0.1:`port` (answering `NAME v1`).
pub fn demo_backend(name: &str, port: u16) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, annotations: {{isthmus.dev/demo-app: {name}}}}}
spec: {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: {name}, version: v1}}}}
"#
    )
}
