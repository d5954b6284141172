//! `istioctl analyze` equivalents: cross-resource findings over a whole [`Store`]
//! (references that do not resolve, rules that can never match, conflicts, TLS
//! credentials that will not load), with Istio's IST codes and levels, plus a few
//! isthmus `ISM` codes for mistakes Istio has no code for. Single-resource schema
//! checks (IST0106) belong to the loader and validator, not here.
//!
//! Submodules: [`index`] (what analyzers look things up in), [`virtualservice`],
//! [`rules`] and [`rules_istio`] (shadowed VirtualService rules), [`gateway`], [`certs`] (credential
//! secrets and cert-manager Certificates), [`destinationrule`], [`authz`].

mod authz;
mod certs;
mod destinationrule;
mod gateway;
mod index;
mod rules;
mod rules_istio;
mod virtualservice;

use crate::diag::{self, Diagnostic, Level};
use crate::resources::{Labels, Resource, Store};

use index::Index;

/// Every finding code isthmus can emit: (code, name, level). Istio codes keep Istio's
/// name and level (`pkg/config/analysis/msg/messages.yaml`); `ISM` codes are isthmus's.
pub const CODES: &[(&str, &str, Level)] = &[
    ("IST0101", "ReferencedResourceNotFound", Level::Error),
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

fn run(store: &Store, now: Option<i64>) -> Vec<Diagnostic> {
    let ix = Index::new(store);
    let mut out = Vec::new();
    virtualservice::check(&ix, &mut out);
    gateway::check(&ix, &mut out);
    certs::check_pairs(&ix, now, &mut out);
    destinationrule::check(&ix, &mut out);
    authz::check(&ix, &mut out);
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
