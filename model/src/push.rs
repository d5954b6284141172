//! The messages of the config-push protocol between the controller and its proxies
//! (types only; the controller serves them, the proxies speak them). One TLS
//! connection per proxy carries newline-delimited JSON, one message per line:
//!
//! ```text
//! proxy                                   controller
//!   hello {token | client cert, node, csr} ->
//!                                         <- certificate {chain, root, notAfter}
//!                                         <- config {version, resources}
//!   ack {version} | nack {version, rejected[]} ->
//!   csr {csr} (rotation at half life)     ->
//!                                         <- certificate {...}
//!                                         <- config {...} on every change
//! ```
//!
//! The controller pushes the resources a proxy needs (not a compiled form): the
//! proxy compiles them with the same model code the controller ran, as ztunnel feeds
//! its local config and xDS into one state. Each resource keeps its origin, so a
//! proxy's findings still name file and line.

use serde::{Deserialize, Serialize};

use crate::load::load_str;
use crate::resources::{Origin, Resource, Spec};

/// Who is connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// `gateway` or `sidecar`.
    pub role: String,
    /// The workload: a WorkloadEntry's name for a sidecar, a gateway's name.
    pub name: String,
    pub namespace: String,
}

/// A resource rejected by a proxy, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// `Kind ns/name`.
    pub resource: String,
    pub reason: String,
}

/// Proxy to controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ProxyMessage {
    /// The first message on a connection. `token`: the bootstrap token (first
    /// connection); a proxy that already has a certificate presents it in the TLS
    /// handshake instead. `csr`: a certificate request for its identity, if it
    /// needs a (new) certificate.
    Hello {
        node: NodeInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        csr: Option<String>,
        /// The config version the proxy serves now (0: none), so a controller that
        /// restarted knows what it has.
        #[serde(default)]
        version: u64,
    },
    /// A certificate request (rotation).
    Csr { csr: String },
    /// The config `version` is applied.
    Ack { version: u64 },
    /// The config `version` was applied without `rejected`.
    Nack {
        version: u64,
        rejected: Vec<Rejected>,
    },
}

/// Controller to proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ControllerMessage {
    /// A workload certificate: the chain (leaf first) and the mesh root(s).
    Certificate {
        chain: String,
        root: String,
        #[serde(rename = "notAfter")]
        not_after: i64,
    },
    /// The proxy's configuration, version `version`, and how the mesh is run (the
    /// proxy compiles with the same options as the controller).
    Config {
        version: u64,
        #[serde(rename = "trustDomain")]
        trust_domain: String,
        /// Explicit-port local mode: the base sidecar ports are allocated from.
        #[serde(rename = "portBase", default, skip_serializing_if = "Option::is_none")]
        port_base: Option<u16>,
        resources: Vec<WireResource>,
    },
    /// The request was refused; the connection closes.
    Error { message: String },
}

/// A resource on the wire: its document as JSON and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireResource {
    pub file: String,
    pub line: u32,
    pub document: serde_json::Value,
}

/// Why a wire resource could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct WireError {
    pub file: String,
    pub line: u32,
    pub reason: String,
}

fn spec_json(spec: &Spec) -> Result<serde_json::Value, serde_json::Error> {
    match spec {
        Spec::Gateway(s) => serde_json::to_value(s),
        Spec::VirtualService(s) => serde_json::to_value(s),
        Spec::DestinationRule(s) => serde_json::to_value(s),
        Spec::ServiceEntry(s) => serde_json::to_value(s),
        Spec::WorkloadEntry(s) => serde_json::to_value(s),
        Spec::Sidecar(s) => serde_json::to_value(s),
        Spec::PeerAuthentication(s) => serde_json::to_value(s),
        Spec::AuthorizationPolicy(s) => serde_json::to_value(s),
        Spec::RequestAuthentication(s) => serde_json::to_value(s),
        Spec::KubeGateway(s) => serde_json::to_value(s),
        Spec::HttpRoute(s) => serde_json::to_value(s),
        Spec::ReferenceGrant(s) => serde_json::to_value(s),
        Spec::Issuer(s) | Spec::ClusterIssuer(s) => serde_json::to_value(s),
        Spec::Certificate(s) => serde_json::to_value(s),
        Spec::Namespace(s) => serde_json::to_value(s),
        Spec::Service(s) => serde_json::to_value(s),
        Spec::Secret(s) => serde_json::to_value(s),
        Spec::Deployment(s) => serde_json::to_value(s),
        Spec::Pod(s) => serde_json::to_value(s),
        Spec::ServiceAccount(s) => serde_json::to_value(s),
        Spec::ConfigMap(s) => serde_json::to_value(s),
        Spec::Telemetry(s) => serde_json::to_value(s),
        Spec::EnvoyFilter(s) => serde_json::to_value(s),
        Spec::WasmPlugin(s) => serde_json::to_value(s),
        Spec::ProxyConfig(s) => serde_json::to_value(s),
        Spec::GrpcRoute(s) => serde_json::to_value(s),
        Spec::CustomResourceDefinition(s) => serde_json::to_value(s),
        Spec::MutatingWebhookConfiguration(s) | Spec::ValidatingWebhookConfiguration(s) => {
            serde_json::to_value(s)
        }
    }
}

impl WireResource {
    /// The wire form of `r`. Secrets are not pushed this way (they never leave the
    /// controller for a sidecar): `None`.
    pub fn of(r: &Resource) -> Option<WireResource> {
        if matches!(r.spec, Spec::Secret(_)) {
            return None;
        }
        let spec = spec_json(&r.spec).ok()?;
        let meta = serde_json::to_value(&r.meta).ok()?;
        let document = serde_json::json!({
            "apiVersion": r.api_version,
            "kind": r.kind.name(),
            "metadata": meta,
            "spec": spec,
        });
        Some(WireResource {
            file: r.origin.file.to_string(),
            line: r.origin.line,
            document,
        })
    }

    /// Read it back with the loader (so it is validated like a file), keeping its
    /// origin.
    pub fn to_resource(&self) -> Result<Resource, WireError> {
        let err = |reason: String| WireError {
            file: self.file.clone(),
            line: self.line,
            reason,
        };
        let text = serde_json::to_string(&self.document).map_err(|e| err(e.to_string()))?;
        let mut loaded = load_str(&self.file, &text);
        if let Some(d) = loaded
            .diagnostics
            .iter()
            .find(|d| d.level == crate::Level::Error)
        {
            return Err(err(d.message.clone()));
        }
        let mut r = loaded
            .resources
            .pop()
            .ok_or_else(|| err("no resource in the document".into()))?;
        r.origin = Origin {
            file: r.origin.file.clone(),
            line: self.line,
        };
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_round_trip_with_their_origin() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: ns, labels: {x: y}}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, subset: v1}\n      weight: 90\n    - destination: {host: a, subset: v2}\n      weight: 10\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n";
        let loaded = load_str("dir/a.yaml", text);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let wire: Vec<WireResource> = loaded
            .resources
            .iter()
            .filter_map(WireResource::of)
            .collect();
        assert_eq!(wire.len(), 1, "the Secret is not pushed");
        let json = serde_json::to_string(&ControllerMessage::Config {
            version: 3,
            trust_domain: "cluster.local".into(),
            port_base: None,
            resources: wire,
        })
        .unwrap();
        let ControllerMessage::Config { resources, .. } = serde_json::from_str(&json).unwrap()
        else {
            panic!("not a config")
        };
        let back = resources[0].to_resource().unwrap();
        assert_eq!(back.spec, loaded.resources[0].spec);
        assert_eq!(back.meta, loaded.resources[0].meta);
        assert_eq!(back.origin.to_string(), "dir/a.yaml:1");
    }

    #[test]
    fn messages_are_tagged_json() {
        let m = ProxyMessage::Ack { version: 7 };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"ack","version":7}"#
        );
        assert!(serde_json::from_str::<ProxyMessage>(r#"{"type":"bogus"}"#).is_err());
    }
}
