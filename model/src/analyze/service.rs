//! Service port names, as Istio's `service.PortNameAnalyzer`: a port whose protocol
//! cannot be told from its `appProtocol` or name prefix (IST0118), and, on
//! `ExternalName` Services, such a port or one named `tcp` (IST0150). Services of
//! the Istio control plane (label `istio`, or `release: istio`) and Services
//! Istio's gateway controllers manage are skipped.

use crate::diag::Diagnostic;
use crate::resources::core::{IntOrString, ServicePort};

use super::finding;
use super::index::Index;

/// Values of `gateway.istio.io/managed` on Services Istio creates itself.
const MANAGED: &[&str] = &[
    "istio.io-gateway-controller",
    "istio.io-mesh-controller",
    "istio.io-eastwest-controller",
];

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, svc) in ix.store.services() {
        let labels = &r.meta.labels;
        if labels.contains_key("istio") || labels.get("release").is_some_and(|v| v == "istio") {
            continue;
        }
        if labels
            .get("gateway.istio.io/managed")
            .is_some_and(|v| MANAGED.contains(&v.as_str()))
        {
            continue;
        }
        let external_name = svc.type_.as_deref() == Some("ExternalName");
        let mut external_name_reported = false;
        for (i, port) in svc.ports.iter().enumerate() {
            if !(unsupported(port) || (port.name == "tcp" && external_name)) {
                continue;
            }
            let path = format!("spec.ports[{i}]");
            if external_name {
                // One fixed text: istioctl prints it once per Service.
                if std::mem::replace(&mut external_name_reported, true) {
                    continue;
                }
                out.push(finding(
                    "IST0150",
                    r,
                    &path,
                    "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and \
                     unmatched traffic for ports serving TCP protocol from being forwarded correctly",
                ));
            } else {
                let target = match &port.target_port {
                    Some(IntOrString::Int(i)) => i.to_string(),
                    Some(IntOrString::Str(s)) => s.clone(),
                    None => "0".to_string(),
                };
                out.push(finding(
                    "IST0118",
                    r,
                    &path,
                    format!(
                        "Port name {} (port: {}, targetPort: {target}) doesn't follow the naming convention of \
                         Istio port.",
                        port.name, port.port
                    ),
                ));
            }
        }
    }
}

/// Istio's `ConvertProtocol(...).IsUnsupported()`: UDP ports are supported; else the
/// protocol comes from `appProtocol` (or the name), its prefix before `-`, with TCP
/// assumed on the well-known ports 25, 53, 3306 and 27017.
fn unsupported(port: &ServicePort) -> bool {
    if port.protocol.as_deref() == Some("UDP") {
        return false;
    }
    let name = match port.app_protocol.as_deref() {
        Some("kubernetes.io/h2c" | "kubernetes.io/ws" | "kubernetes.io/wss") => return false,
        Some(p) => p,
        None => port.name.as_str(),
    };
    if name
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("grpc-web"))
    {
        return false;
    }
    let prefix = name.split('-').next().unwrap_or("").to_ascii_lowercase();
    let known = [
        "tcp",
        "udp",
        "grpc",
        "grpc-web",
        "http",
        "http_proxy",
        "http2",
        "https",
        "tls",
        "mongo",
        "redis",
        "mysql",
    ]
    .contains(&prefix.as_str());
    !known && ![25, 53, 3306, 27017].contains(&port.port)
}
