//! A credentialName Secret that a cert-manager Certificate will write (isthmus
//! orders it over ACME) is pending, not missing: Info, not IST0101.

use isthmus_model::compile::{compile_gateway, GatewayWorkload};
use isthmus_model::load::load_str;
use isthmus_model::{Level, Store};

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [example.domain.com]
    tls: {mode: SIMPLE, credentialName: todolist-tls}
"#;

const CERTIFICATE: &str = r#"
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: todolist-cert, namespace: NS}
spec:
  secretName: todolist-tls
  issuerRef: {name: letsencrypt, kind: ClusterIssuer}
  dnsNames: [example.domain.com]
"#;

fn findings(yaml: &str) -> Vec<(Level, String)> {
    let loaded = load_str("gw.yaml", yaml);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (_, diags) = compile_gateway(&Store::new(loaded.resources), &GatewayWorkload::default());
    diags.iter().map(|d| (d.level, d.to_string())).collect()
}

#[test]
fn a_secret_a_certificate_will_write_is_pending() {
    let f = findings(&(GATEWAY.to_string() + &CERTIFICATE.replace("NS", "istio-system")));
    assert!(f.iter().all(|(l, _)| *l != Level::Error), "{f:#?}");
    assert!(
        f.iter().any(|(l, t)| *l == Level::Info
            && t.contains("Secret istio-system/todolist-tls is pending: Certificate istio-system/todolist-cert will write it")),
        "{f:#?}"
    );
}

#[test]
fn a_certificate_in_another_namespace_does_not_count() {
    // Istio reads the secret in the gateway workload's namespace (istio-system).
    let f = findings(&(GATEWAY.to_string() + &CERTIFICATE.replace("NS", "default")));
    assert!(
        f.iter()
            .any(|(l, t)| *l == Level::Error && t.contains("[IST0101]")),
        "{f:#?}"
    );
}
