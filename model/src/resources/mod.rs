//! Resource envelope shared by every kind: `apiVersion`/`kind`/`metadata`, the typed
//! spec, and where the resource came from. Also the [`Store`]: the set of loaded
//! resources that validation, analyzers and compilation read.

pub mod admission;
pub mod certmanager;
pub mod core;
pub mod extensions;
pub mod gatewayapi;
pub mod networking;
pub mod policy;
pub mod security;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::position::Positions;
pub use networking::Labels;

/// Where a resource (or a finding) comes from: a file and a 1-based line, or a
/// cluster object (`file` then holds e.g. `k8s://ns/name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The subset of Kubernetes `ObjectMeta` the mesh reads. Other metadata fields
/// Kubernetes sets (uid, resourceVersion, ...) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    #[serde(default)]
    pub finalizers: Vec<String>,
    #[serde(default)]
    pub owner_references: Vec<serde_json::Value>,
    #[serde(default)]
    pub managed_fields: Vec<serde_json::Value>,
}

/// The kinds isthmus understands. Anything else is skipped with a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    KubeGateway,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant,
    Issuer,
    ClusterIssuer,
    Certificate,
    Namespace,
    Service,
    Secret,
    Deployment,
    Pod,
    ServiceAccount,
    ConfigMap,
    Telemetry,
    EnvoyFilter,
    WasmPlugin,
    ProxyConfig,
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
    CustomResourceDefinition,
}

impl Kind {
    /// Resolve `apiVersion` + `kind` to a known kind. `None` for anything unknown.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let version = api_version.rsplit('/').next().unwrap_or("");
        Some(match (group, kind) {
            ("networking.istio.io", "Gateway") => Kind::Gateway,
            ("networking.istio.io", "VirtualService") => Kind::VirtualService,
            ("networking.istio.io", "DestinationRule") => Kind::DestinationRule,
            ("networking.istio.io", "ServiceEntry") => Kind::ServiceEntry,
            ("networking.istio.io", "WorkloadEntry") => Kind::WorkloadEntry,
            ("networking.istio.io", "Sidecar") => Kind::Sidecar,
            ("networking.istio.io", "EnvoyFilter") => Kind::EnvoyFilter,
            ("networking.istio.io", "ProxyConfig") => Kind::ProxyConfig,
            ("telemetry.istio.io", "Telemetry") => Kind::Telemetry,
            ("extensions.istio.io", "WasmPlugin") => Kind::WasmPlugin,
            ("security.istio.io", "PeerAuthentication") => Kind::PeerAuthentication,
            ("security.istio.io", "AuthorizationPolicy") => Kind::AuthorizationPolicy,
            ("security.istio.io", "RequestAuthentication") => Kind::RequestAuthentication,
            ("gateway.networking.k8s.io", "Gateway") => Kind::KubeGateway,
            ("gateway.networking.k8s.io", "HTTPRoute") => Kind::HttpRoute,
            ("gateway.networking.k8s.io", "GRPCRoute") => Kind::GrpcRoute,
            ("gateway.networking.k8s.io", "ReferenceGrant") => Kind::ReferenceGrant,
            ("cert-manager.io", "Issuer") => Kind::Issuer,
            ("cert-manager.io", "ClusterIssuer") => Kind::ClusterIssuer,
            ("cert-manager.io", "Certificate") => Kind::Certificate,
            ("", "Namespace") if version == "v1" => Kind::Namespace,
            ("", "Service") if version == "v1" => Kind::Service,
            ("", "Secret") if version == "v1" => Kind::Secret,
            ("", "Pod") if version == "v1" => Kind::Pod,
            ("", "ServiceAccount") if version == "v1" => Kind::ServiceAccount,
            ("", "ConfigMap") if version == "v1" => Kind::ConfigMap,
            ("apps", "Deployment") => Kind::Deployment,
            ("apiextensions.k8s.io", "CustomResourceDefinition") => Kind::CustomResourceDefinition,
            ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
                Kind::MutatingWebhookConfiguration
            }
            ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
                Kind::ValidatingWebhookConfiguration
            }
            _ => return None,
        })
    }

    /// The `kind:` string as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway | Kind::KubeGateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Issuer => "Issuer",
            Kind::ClusterIssuer => "ClusterIssuer",
            Kind::Certificate => "Certificate",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::ConfigMap => "ConfigMap",
            Kind::Telemetry => "Telemetry",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::WasmPlugin => "WasmPlugin",
            Kind::ProxyConfig => "ProxyConfig",
            Kind::CustomResourceDefinition => "CustomResourceDefinition",
            Kind::MutatingWebhookConfiguration => "MutatingWebhookConfiguration",
            Kind::ValidatingWebhookConfiguration => "ValidatingWebhookConfiguration",
        }
    }

    /// Cluster-scoped kinds have no namespace.
    pub fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::ClusterIssuer
                | Kind::Namespace
                | Kind::MutatingWebhookConfiguration
                | Kind::ValidatingWebhookConfiguration
                | Kind::CustomResourceDefinition
        )
    }
}

/// The typed spec of a resource.
// Specs are stored once per resource and matched everywhere: boxing the big ones
// would cost every consumer a deref for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Gateway(networking::GatewaySpec),
    VirtualService(networking::VirtualServiceSpec),
    DestinationRule(networking::DestinationRuleSpec),
    ServiceEntry(networking::ServiceEntrySpec),
    WorkloadEntry(networking::WorkloadEntrySpec),
    Sidecar(networking::SidecarSpec),
    PeerAuthentication(security::PeerAuthenticationSpec),
    AuthorizationPolicy(security::AuthorizationPolicySpec),
    RequestAuthentication(security::RequestAuthenticationSpec),
    KubeGateway(gatewayapi::GatewaySpec),
    HttpRoute(gatewayapi::HttpRouteSpec),
    ReferenceGrant(gatewayapi::ReferenceGrantSpec),
    Issuer(certmanager::IssuerSpec),
    ClusterIssuer(certmanager::IssuerSpec),
    Certificate(certmanager::CertificateSpec),
    Namespace(core::NamespaceSpec),
    Service(core::ServiceSpec),
    Secret(core::SecretData),
    Deployment(core::DeploymentSpec),
    Pod(core::PodSpec),
    ServiceAccount(core::ServiceAccountSpec),
    ConfigMap(core::ConfigMapData),
    Telemetry(extensions::TelemetrySpec),
    EnvoyFilter(extensions::EnvoyFilterSpec),
    WasmPlugin(extensions::WasmPluginSpec),
    ProxyConfig(extensions::ProxyConfigSpec),
    GrpcRoute(extensions::GrpcRouteSpec),
    CustomResourceDefinition(extensions::CrdSpec),
    MutatingWebhookConfiguration(admission::WebhookConfiguration),
    ValidatingWebhookConfiguration(admission::WebhookConfiguration),
}

/// One loaded resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub api_version: String,
    pub kind: Kind,
    pub meta: ObjectMeta,
    pub spec: Spec,
    /// First line of the document (the line of `apiVersion`/`kind`, 1-based).
    pub origin: Origin,
    /// Line of every field of the document, for findings about one field. Empty for
    /// resources that did not come from YAML text.
    pub positions: Arc<Positions>,
    /// The conditions of its `status` (`status.conditions`, or for routes
    /// `status.parents[].conditions`), as written; read by the analyzers only.
    pub conditions: Vec<StatusCondition>,
}

/// One status condition (`metav1.Condition`, or Istio's `IstioCondition`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// Default namespace for resources that do not name one (as `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";

impl Resource {
    /// A resource without field positions (built in code, or from a cluster object).
    pub fn new(
        api_version: impl Into<String>,
        kind: Kind,
        meta: ObjectMeta,
        spec: Spec,
        origin: Origin,
    ) -> Self {
        Resource {
            api_version: api_version.into(),
            kind,
            meta,
            spec,
            origin,
            positions: Arc::new(Positions::empty()),
            conditions: Vec::new(),
        }
    }

    /// Where the field at `path` (`spec.http[0].route[1].weight`) is written: its file
    /// and line, or the nearest parent's, or the resource's first line.
    pub fn origin_at(&self, path: &str) -> Origin {
        Origin {
            file: self.origin.file.clone(),
            line: self.positions.line_of(path).unwrap_or(self.origin.line),
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// The resource's namespace, `default` when unset; empty for cluster-scoped kinds.
    pub fn namespace(&self) -> &str {
        if self.kind.cluster_scoped() {
            ""
        } else {
            self.meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
        }
    }

    /// `Kind namespace/name`, as findings print it.
    pub fn display_ref(&self) -> String {
        if self.kind.cluster_scoped() {
            format!("{} {}", self.kind.name(), self.name())
        } else {
            format!("{} {}/{}", self.kind.name(), self.namespace(), self.name())
        }
    }
}

/// All loaded resources, in load order (files sorted by path, documents in file order).
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub resources: Vec<Resource>,
}

macro_rules! typed_iter {
    ($fn:ident, $variant:ident, $ty:ty) => {
        /// Every resource of this kind with its typed spec.
        pub fn $fn(&self) -> impl Iterator<Item = (&Resource, &$ty)> {
            self.resources.iter().filter_map(|r| match &r.spec {
                Spec::$variant(s) => Some((r, s)),
                _ => None,
            })
        }
    };
}

impl Store {
    pub fn new(resources: Vec<Resource>) -> Self {
        Store { resources }
    }

    pub fn find(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.kind == kind && r.name() == name && r.namespace() == namespace)
    }

    typed_iter!(gateways, Gateway, networking::GatewaySpec);
    typed_iter!(
        virtual_services,
        VirtualService,
        networking::VirtualServiceSpec
    );
    typed_iter!(
        destination_rules,
        DestinationRule,
        networking::DestinationRuleSpec
    );
    typed_iter!(service_entries, ServiceEntry, networking::ServiceEntrySpec);
    typed_iter!(
        workload_entries,
        WorkloadEntry,
        networking::WorkloadEntrySpec
    );
    typed_iter!(sidecars, Sidecar, networking::SidecarSpec);
    typed_iter!(
        peer_authentications,
        PeerAuthentication,
        security::PeerAuthenticationSpec
    );
    typed_iter!(
        authorization_policies,
        AuthorizationPolicy,
        security::AuthorizationPolicySpec
    );
    typed_iter!(
        request_authentications,
        RequestAuthentication,
        security::RequestAuthenticationSpec
    );
    typed_iter!(kube_gateways, KubeGateway, gatewayapi::GatewaySpec);
    typed_iter!(http_routes, HttpRoute, gatewayapi::HttpRouteSpec);
    typed_iter!(
        reference_grants,
        ReferenceGrant,
        gatewayapi::ReferenceGrantSpec
    );
    typed_iter!(issuers, Issuer, certmanager::IssuerSpec);
    typed_iter!(cluster_issuers, ClusterIssuer, certmanager::IssuerSpec);
    typed_iter!(certificates, Certificate, certmanager::CertificateSpec);
    typed_iter!(namespaces, Namespace, core::NamespaceSpec);
    typed_iter!(service_accounts, ServiceAccount, core::ServiceAccountSpec);
    typed_iter!(services, Service, core::ServiceSpec);
    typed_iter!(secrets, Secret, core::SecretData);
    typed_iter!(deployments, Deployment, core::DeploymentSpec);
    typed_iter!(pods, Pod, core::PodSpec);
    typed_iter!(config_maps, ConfigMap, core::ConfigMapData);
    typed_iter!(telemetries, Telemetry, extensions::TelemetrySpec);
    typed_iter!(envoy_filters, EnvoyFilter, extensions::EnvoyFilterSpec);
    typed_iter!(wasm_plugins, WasmPlugin, extensions::WasmPluginSpec);
    typed_iter!(proxy_configs, ProxyConfig, extensions::ProxyConfigSpec);
    typed_iter!(grpc_routes, GrpcRoute, extensions::GrpcRouteSpec);
    typed_iter!(crds, CustomResourceDefinition, extensions::CrdSpec);
    typed_iter!(
        mutating_webhooks,
        MutatingWebhookConfiguration,
        admission::WebhookConfiguration
    );
    typed_iter!(
        validating_webhooks,
        ValidatingWebhookConfiguration,
        admission::WebhookConfiguration
    );
}
