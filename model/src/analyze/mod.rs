//! `istioctl analyze` equivalents: cross-resource findings over a whole [`Store`]
//! (references that do not resolve, rules that can never match, conflicts, TLS
//! credentials that will not load), with Istio's IST codes and levels, plus a few
//! isthmus `ISM` codes for mistakes Istio has no code for. Single-resource schema
//! checks (IST0106) belong to the loader and validator, not here.
//!
//! Submodules: [`index`] (what analyzers look things up in), [`virtualservice`],
//! [`rules`] and [`rules_istio`] (shadowed VirtualService rules), [`gateway`], [`certs`] (credential
//! secrets and cert-manager Certificates), [`destinationrule`], [`authz`], [`sidecar`],
//! [`service`] (port names), [`deployment`] (application UID), [`injection`],
//! [`telemetry`], [`serviceentry`], [`webhook`], [`conditions`], [`k8sgateway`],
//! [`envoyfilter`], [`deprecation`], [`authn`], [`annotations`] (patch operations; kinds isthmus does not apply).

mod annotations;
mod authn;
mod authz;
mod certs;
mod conditions;
mod deployment;
mod deprecation;
mod destinationrule;
mod envoyfilter;
mod gateway;
mod index;
mod injection;
mod k8sgateway;
mod rules;
mod rules_istio;
mod service;
mod serviceentry;
mod sidecar;
mod telemetry;
mod virtualservice;
mod webhook;

use crate::diag::{self, Diagnostic, Level};
use crate::resources::{Labels, Resource, Store};

use index::Index;

/// Every finding code isthmus can emit: (code, name, level). Istio codes keep Istio's
/// name and level (`pkg/config/analysis/msg/messages.yaml`); `ISM` codes are isthmus's.
pub const CODES: &[(&str, &str, Level)] = &[
    ("IST0101", "ReferencedResourceNotFound", Level::Error),
    ("IST0102", "NamespaceNotInjected", Level::Info),
    ("IST0103", "PodMissingProxy", Level::Warning),
    (
        "IST0110",
        "ConflictingSidecarWorkloadSelectors",
        Level::Error,
    ),
    (
        "IST0111",
        "MultipleSidecarsWithoutWorkloadSelectors",
        Level::Error,
    ),
    ("IST0118", "PortNameIsNotUnderNamingConvention", Level::Info),
    (
        "IST0123",
        "NamespaceMultipleInjectionLabels",
        Level::Warning,
    ),
    ("IST0144", "InvalidApplicationUID", Level::Warning),
    (
        "IST0116",
        "DeploymentAssociatedToMultipleServices",
        Level::Warning,
    ),
    ("IST0137", "DeploymentConflictingPorts", Level::Warning),
    ("IST0148", "NamespaceInjectionEnabledByDefault", Level::Info),
    (
        "IST0150",
        "ExternalNameServiceTypeInvalidPortName",
        Level::Warning,
    ),
    ("IST0167", "IneffectivePolicy", Level::Warning),
    ("IST0002", "Deprecated", Level::Warning),
    (
        "IST0151",
        "EnvoyFilterUsesRelativeOperation",
        Level::Warning,
    ),
    (
        "IST0152",
        "EnvoyFilterUsesReplaceOperationIncorrectly",
        Level::Error,
    ),
    (
        "IST0153",
        "EnvoyFilterUsesAddOperationIncorrectly",
        Level::Error,
    ),
    (
        "IST0154",
        "EnvoyFilterUsesRemoveOperationIncorrectly",
        Level::Error,
    ),
    (
        "IST0155",
        "EnvoyFilterUsesRelativeOperationWithProxyVersion",
        Level::Warning,
    ),
    ("IST0157", "InvalidTelemetryProvider", Level::Warning),
    ("IST0134", "ServiceEntryAddressesRequired", Level::Warning),
    ("IST0162", "GatewayPortNotDefinedOnService", Level::Warning),
    ("IST0139", "InvalidWebhook", Level::Error),
    ("IST0140", "IngressRouteRulesNotAffected", Level::Warning),
    ("IST0107", "MisplacedAnnotation", Level::Warning),
    ("IST0108", "UnknownAnnotation", Level::Warning),
    ("IST0125", "InvalidAnnotation", Level::Warning),
    ("IST0135", "DeprecatedAnnotation", Level::Info),
    (
        "IST0176",
        "GatewayAPICRDVersionBelowMinimum",
        Level::Warning,
    ),
    ("IST0175", "JwksUriFetchUnrestricted", Level::Warning),
    (
        "IST0146",
        "ImageAutoWithoutInjectionWarning",
        Level::Warning,
    ),
    ("IST0147", "ImageAutoWithoutInjectionError", Level::Error),
    ("IST0166", "IneffectiveSelector", Level::Warning),
    ("IST0177", "ConflictingServiceEntryProtocol", Level::Warning),
    ("IST0171", "NegativeConditionStatus", Level::Warning),
    (
        "IST0163",
        "InvalidExternalControlPlaneConfig",
        Level::Warning,
    ),
    (
        "IST0164",
        "ExternalControlPlaneAddressIsNotAHostname",
        Level::Info,
    ),
    (
        "IST0158",
        "PodsIstioProxyImageMismatchInNamespace",
        Level::Warning,
    ),
    (
        "IST0159",
        "ConflictingTelemetryWorkloadSelectors",
        Level::Error,
    ),
    (
        "IST0160",
        "MultipleTelemetriesWithoutWorkloadSelectors",
        Level::Error,
    ),
    // Emitted by the loader and the validator.
    ("IST0106", "SchemaValidationError", Level::Error),
    ("IST0133", "SchemaWarning", Level::Warning),
    (
        "IST0109",
        "ConflictingMeshGatewayVirtualServiceHosts",
        Level::Error,
    ),
    (
        "IST0112",
        "VirtualServiceDestinationPortSelectorRequired",
        Level::Error,
    ),
    ("IST0127", "NoMatchingWorkloadsFound", Level::Warning),
    (
        "IST0128",
        "NoServerCertificateVerificationDestinationLevel",
        Level::Warning,
    ),
    (
        "IST0129",
        "NoServerCertificateVerificationPortLevel",
        Level::Warning,
    ),
    ("IST0130", "VirtualServiceUnreachableRule", Level::Warning),
    ("IST0131", "VirtualServiceIneffectiveMatch", Level::Info),
    (
        "IST0132",
        "VirtualServiceHostNotFoundInGateway",
        Level::Warning,
    ),
    ("IST0138", "GatewayDuplicateCertificate", Level::Warning),
    ("IST0165", "ReferencedInternalGateway", Level::Warning),
    ("IST0145", "ConflictingGateways", Level::Error),
    (
        "IST0149",
        "JwtClaimBasedRoutingWithoutRequestAuthN",
        Level::Error,
    ),
    ("IST0161", "InvalidGatewayCredential", Level::Error),
    (
        "IST0173",
        "DestinationRuleSubsetNotSelectPods",
        Level::Error,
    ),
    ("IST0174", "UnknownDestinationRuleHost", Level::Warning),
    // Emitted by the loader: a document of a kind isthmus does not read.
    ("ISM0001", "SkippedUnknownKind", Level::Info),
    // An EnvoyFilter, WasmPlugin, Telemetry, ProxyConfig or GRPCRoute: analyzed, but isthmus does not apply
    // it (`envoyfilter::CODE_NOT_APPLIED`).
    ("ISM0002", "KindNotApplied", Level::Warning),
    // A Gateway credentialName that matches nothing, next to a cert-manager
    // Certificate whose secret no Gateway uses (the likely intended name).
    (
        "ISM0101",
        "GatewayCredentialCertificateMismatch",
        Level::Warning,
    ),
    // credentialName matches a Certificate's secretName, but the Certificate writes
    // its Secret in another namespace than the one the gateway workload reads.
    (
        "ISM0102",
        "CertificateSecretOutsideGatewayNamespace",
        Level::Warning,
    ),
    // PeerAuthentication with a workload selector in the root namespace: Istio
    // ignores it.
    ("ISM0103", "IgnoredRootNamespaceSelector", Level::Warning),
    // A credential's certificate is expired or not yet valid when analyzed
    // (`certs::CODE_NOT_CURRENTLY_VALID`); the gateway logs it when loading it.
    (
        "ISM0104",
        "GatewayCertificateNotCurrentlyValid",
        Level::Warning,
    ),
    // A credential's private key is not its certificate's (`certs::CODE_KEY_MISMATCH`).
    ("ISM0105", "GatewayCredentialKeyMismatch", Level::Error),
    // A gateway in a match block that does not exist (istioctl checks only
    // spec.gateways): `virtualservice::CODE_MATCH_GATEWAY_NOT_FOUND`.
    ("ISM0106", "MatchGatewayNotFound", Level::Warning),
    // Shadowed VirtualService rules and match blocks istioctl's check misses
    // (`rules::CODE_*`): coverage decided field by field, not only identical blocks.
    ("ISM0107", "VirtualServiceRuleNeverUsed", Level::Warning),
    ("ISM0108", "VirtualServiceMatchNeverUsed", Level::Info),
    // A rule without matches before other rules (emitted by the validator,
    // `validate::virtualservice::CODE_CATCH_ALL_NOT_LAST`).
    ("ISM0109", "VirtualServiceCatchAllNotLast", Level::Warning),
    // Emitted by the gateway compiler (`compile::CODE_*`), logged when a snapshot is built.
    ("ISM0201", "GatewayServerNotServed", Level::Info),
    ("ISM0202", "RouteNotCompiled", Level::Error),
    ("ISM0203", "DestinationWithoutEndpoints", Level::Warning),
    ("ISM0204", "RouteFeatureNotServed", Level::Warning),
    ("ISM0205", "RouteFieldsNotApplied", Level::Info),
    // Mesh (`compile::CODE_MESH_ENDPOINT_LEFT_OUT`): an endpoint left out because the
    // TLS chosen for it cannot reach it (DestinationRule tls.mode DISABLE against a
    // STRICT PeerAuthentication, ISTIO_MUTUAL to a workload without a sidecar).
    ("ISM0210", "MeshEndpointUnreachable", Level::Warning),
    // An `isthmus.dev/inbound-port` / `outbound-port` annotation that cannot be used
    // (`mesh::CODE_PORT_ANNOTATION`).
    ("ISM0211", "MeshPortAnnotationInvalid", Level::Warning),
    // cert-manager Certificates fulfilled over ACME (`certs::CODE_*`).
    ("ISM0301", "CertificateIssuerNotFound", Level::Error),
    ("ISM0302", "CertificateIssuerNotAcme", Level::Info),
    ("ISM0303", "CertificateCannotBeOrdered", Level::Error),
    ("ISM0304", "IssuerChallengeAnnotationInvalid", Level::Error),
    // A host of a Gateway annotated isthmus.dev/acme-issuer left out of its
    // certificate (`certs::auto`).
    ("ISM0305", "GatewayHostNotOrdered", Level::Warning),
    ("ISM0306", "CertificateDurationNotRequested", Level::Info),
];

/// The level of a code in [`CODES`]; unknown codes count as errors.
pub fn level_of(code: &str) -> Level {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(Level::Error, |(_, _, l)| *l)
}

/// Run every analyzer over the store. Findings are sorted with [`diag::sort`]. The
/// checks that need a clock are left out: see [`analyze_at`].
pub fn analyze(store: &Store) -> Vec<Diagnostic> {
    run(store, None)
}

/// [`analyze`], plus the checks against the time `now` (Unix seconds): credential
/// certificates expired or not yet valid (ISM0104).
pub fn analyze_at(store: &Store, now: i64) -> Vec<Diagnostic> {
    run(store, Some(now))
}

/// The MeshConfig settings analyzers depend on (`istioctl analyze --meshConfigFile`).
/// The default is Istio's built-in mesh config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshSettings {
    /// `defaultProviders.accessLogging` names at least one provider.
    pub default_access_log_providers: bool,
    /// Names of `extensionProviders` of the deprecated `lightstep` type.
    pub lightstep_providers: Vec<String>,
    /// `defaultConfig.proxyMetadata` turns on DNS capture with address
    /// auto-allocation, so ServiceEntries need no `addresses`.
    pub service_entry_addresses_allocated: bool,
    /// `defaultConfig.image.imageType` (the proxy image variant), if set.
    pub proxy_image_type: Option<String>,
}

impl MeshSettings {
    /// Read the settings from a MeshConfig as JSON; fields absent or of another shape
    /// keep Istio's defaults.
    pub fn from_mesh_config(mesh: &serde_json::Value) -> Self {
        let default_access_log_providers = mesh["defaultProviders"]["accessLogging"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let lightstep_providers = mesh["extensionProviders"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p.get("lightstep").is_some_and(|l| !l.is_null()))
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let meta = &mesh["defaultConfig"]["proxyMetadata"];
        let is_true = |k: &str| meta[k].as_str() == Some("true");
        let service_entry_addresses_allocated = is_true("ISTIO_META_DNS_CAPTURE")
            && (is_true("ISTIO_META_DNS_AUTO_ALLOCATE") || is_true("PILOT_ENABLE_IP_AUTOALLOCATE"));
        let proxy_image_type = mesh["defaultConfig"]["image"]["imageType"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        MeshSettings {
            proxy_image_type,
            default_access_log_providers,
            lightstep_providers,
            service_entry_addresses_allocated,
        }
    }
}

/// [`analyze_at`] (or [`analyze`] when `now` is `None`) with the mesh config's
/// settings instead of Istio's defaults.
pub fn analyze_with(store: &Store, now: Option<i64>, mesh: &MeshSettings) -> Vec<Diagnostic> {
    run_with(store, now, mesh)
}

fn run(store: &Store, now: Option<i64>) -> Vec<Diagnostic> {
    run_with(store, now, &MeshSettings::default())
}

fn run_with(store: &Store, now: Option<i64>, mesh: &MeshSettings) -> Vec<Diagnostic> {
    let ix = Index::new(store);
    let mut out = Vec::new();
    virtualservice::check(&ix, &mut out);
    gateway::check(&ix, &mut out);
    certs::check_pairs(&ix, now, &mut out);
    destinationrule::check(&ix, &mut out);
    authz::check(&ix, &mut out);
    sidecar::check(&ix, &mut out);
    service::check(&ix, &mut out);
    deployment::check(&ix, &mut out);
    injection::check(&ix, &mut out);
    injection::check_images(&ix, mesh, &mut out);
    injection::check_image_auto(&ix, &mut out);
    telemetry::check(&ix, mesh, &mut out);
    envoyfilter::check(&ix, &mut out);
    serviceentry::check(&ix, mesh, &mut out);
    webhook::check(&ix, &mut out);
    conditions::check(&ix, &mut out);
    k8sgateway::check(&ix, &mut out);
    deprecation::check(&ix, &mut out);
    authn::check(&ix, &mut out);
    annotations::check(&ix, &mut out);
    // cert-manager Certificates isthmus orders itself: issuer references and what
    // cannot be ordered (the gateway's ACME manager logs the same findings).
    out.extend(crate::certs::acme_orders(store).1);
    // What the gateway compiler says when it builds each gateway's snapshot (servers
    // not served, routes left out, fields not applied yet): the same ISM02xx lines `up` logs. Left out: the compiler's IST
    // codes (the analyzers above report them with Istio's wording) and ISM0203
    // (no endpoints), which is about the local run, not about the configuration:
    // Kubernetes Services have endpoints in a cluster.
    let mut seen: std::collections::HashSet<String> = out.iter().map(|d| d.to_string()).collect();
    for w in crate::compile::gateway_workloads(store) {
        for d in crate::compile::compile_gateway(store, &w).1 {
            let wanted = d.code.starts_with("ISM02") && d.code != crate::compile::CODE_NO_ENDPOINTS;
            if wanted && seen.insert(d.to_string()) {
                out.push(d);
            }
        }
    }
    diag::sort(&mut out);
    out
}

/// A finding about the field at `path` of `r` (file:line of that field when known).
fn finding(code: &'static str, r: &Resource, path: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic::new(level_of(code), code, message)
        .at(r.origin_at(path))
        .field(path)
        .on(r)
}

/// The namespaces a resource's `exportTo` names: `.` is its own namespace, and
/// an empty list means every namespace (`*`).
fn export_scopes(export_to: &[String], own: &str) -> Vec<String> {
    if export_to.is_empty() {
        return vec!["*".to_string()];
    }
    export_to
        .iter()
        .map(|e| if e == "." { own.to_string() } else { e.clone() })
        .collect()
}

/// Kubernetes label-selector semantics: every selector label is present with the
/// same value; an empty selector matches everything.
fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `k1=v1,k2=v2`, as Kubernetes prints a label selector.
fn selector_string(selector: &Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `ns/name` of a resource.
fn full_name(r: &Resource) -> String {
    format!("{}/{}", r.namespace(), r.name())
}

#[cfg(test)]
mod tests {
    use super::MeshSettings;

    #[test]
    fn mesh_settings_from_mesh_config() {
        assert_eq!(
            MeshSettings::from_mesh_config(&serde_json::json!({})),
            MeshSettings::default()
        );
        let m = MeshSettings::from_mesh_config(&serde_json::json!({
            "defaultProviders": {"accessLogging": ["envoy"]},
            "extensionProviders": [
                {"name": "ls", "lightstep": {"service": "x", "port": 443}},
                {"name": "otel", "opentelemetry": {"service": "y", "port": 4317}}
            ],
            "defaultConfig": {
                "image": {"imageType": "distroless"},
                "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}
            }
        }));
        assert!(m.default_access_log_providers);
        assert_eq!(m.lightstep_providers, ["ls"]);
        assert!(m.service_entry_addresses_allocated);
        assert_eq!(m.proxy_image_type.as_deref(), Some("distroless"));
        // Auto-allocation without DNS capture does not count.
        let m = MeshSettings::from_mesh_config(&serde_json::json!({
            "defaultConfig": {"proxyMetadata": {"ISTIO_META_DNS_AUTO_ALLOCATE": "true"}}
        }));
        assert!(!m.service_entry_addresses_allocated);
    }

    #[test]
    fn kinds_isthmus_does_not_apply_are_loaded_and_noted() {
        let yaml = "\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef, namespace: default}
spec:
  someFieldIsthmusDoesNotType: 1
  configPatches:
  - applyTo: HTTP_ROUTE
    patch: {operation: ADD, value: {name: x}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: wp, namespace: default}
spec: {url: oci://example/plugin}
";
        let loaded = crate::load::load_str("x.yaml", yaml);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let ds = super::analyze(&crate::resources::Store::new(loaded.resources));
        let codes: Vec<(&str, Option<&str>)> = ds
            .iter()
            .filter(|d| d.code == "ISM0002" || d.code == "IST0153")
            .map(|d| (d.code, d.resource.as_deref()))
            .collect();
        assert_eq!(
            codes,
            [
                ("ISM0002", Some("EnvoyFilter default/ef")),
                ("IST0153", Some("EnvoyFilter default/ef")),
                ("ISM0002", Some("WasmPlugin default/wp")),
            ],
            "{ds:#?}"
        );
    }
}
