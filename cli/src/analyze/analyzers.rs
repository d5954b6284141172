//! `-L/--list-analyzers`: the checks `isthmus analyze` runs, under the names
//! `istioctl analyze -L` prints (the analyzers' metadata names,
//! `pkg/config/analysis/analyzers`) where an Istio analyzer does the same job, and
//! under `isthmus.*` names for checks Istio has none for. Printed as istioctl prints
//! its list (`* NAME:` then an indented description, sorted by name), with a line
//! of the codes each one reports. Every code in `analyze::CODES` is listed (a test
//! keeps it so).

/// (name, description, codes).
const ANALYZERS: &[(&str, &str, &[&str])] = &[
    (
        "annotations.K8sAnalyzer",
        "Istio annotations on Namespaces, Services, Pods and Deployments: unknown, deprecated, misplaced or invalid",
        &["IST0107", "IST0108", "IST0125", "IST0135"],
    ),
    (
        "applicationUID.Analyzer",
        "Application containers or pods running as UID 1337, reserved for the sidecar proxy",
        &["IST0144"],
    ),
    (
        "authn.BlockedCIDRsAnalyzer",
        "RequestAuthentications while istiod does not restrict where JWKS URIs are fetched from",
        &["IST0175"],
    ),
    (
        "auth.AuthorizationPoliciesAnalyzer",
        "Authorization policies: selectors that match no workload, sources naming missing namespaces",
        &["IST0101", "IST0127"],
    ),
    (
        "conditions.ConditionAnalyzer",
        "Negative conditions written in resources' status",
        &["IST0171"],
    ),
    (
        "deprecation.FieldAnalyzer",
        "Deprecated fields: fault delay percent, Sidecar egressProxy",
        &["IST0002"],
    ),
    (
        "deployment.MultiServiceAnalyzer",
        "Deployments in the mesh behind Services that give one port different protocols, or one targetPort different ports",
        &["IST0116", "IST0137"],
    ),
    (
        "destinationrule.CaCertificateAnalyzer",
        "Destination rules with SIMPLE or MUTUAL TLS but no CA certificate to verify the server",
        &["IST0128", "IST0129"],
    ),
    (
        "destinationrule.SubsetSelectPodAnalyzer",
        "Destination rule subsets that select no pod, and hosts that match no service",
        &["IST0173", "IST0174"],
    ),
    (
        "envoyfilter.EnvoyPatchAnalyzer",
        "EnvoyFilter patch operations that depend on filter order without a priority, or that Envoy ignores",
        &["IST0151", "IST0152", "IST0153", "IST0154", "IST0155"],
    ),
    (
        "externalcontrolplane.ExternalControlPlaneAnalyzer",
        "Istio webhooks of an external control plane: blank or unparsable URLs, IP addresses for hostnames",
        &["IST0163", "IST0164"],
    ),
    (
        "gateway.CertificateAnalyzer",
        "Gateway servers on different hosts sharing one certificate",
        &["IST0138"],
    ),
    (
        "gateway.ConflictingGatewayAnalyzer",
        "Gateways selecting the same workload with the same port and host",
        &["IST0145", "IST0101"],
    ),
    (
        "gateway.IngressGatewayPortAnalyzer",
        "Gateway selectors that match no gateway workload; server ports the workload's Services do not offer",
        &["IST0101", "IST0162"],
    ),
    (
        "gateway.SecretAnalyzer",
        "Gateway TLS credentials: missing, unusable or expired secrets",
        &["IST0101", "IST0161"],
    ),
    (
        "injection.ImageAutoAnalyzer",
        "`image: auto` proxies in pods that were not injected, or in Deployments no injection webhook selects",
        &["IST0146", "IST0147"],
    ),
    (
        "injection.ImageAnalyzer",
        "Pods whose proxy image is not the one their namespace's injector configuration names",
        &["IST0158"],
    ),
    (
        "injection.Analyzer",
        "Namespaces without (or with conflicting) injection labels, pods in injected namespaces without the proxy",
        &["IST0102", "IST0103", "IST0123", "IST0148"],
    ),
    (
        "isthmus.AcmeCertificateAnalyzer",
        "cert-manager Certificates isthmus orders over ACME: issuers, what cannot be ordered, hosts of auto-certificate gateways",
        &[
            "ISM0301", "ISM0302", "ISM0303", "ISM0304", "ISM0305", "ISM0306",
        ],
    ),
    (
        "isthmus.CredentialAnalyzer",
        "Gateway credentials against cert-manager Certificates and their key pairs; certificates not valid now",
        &["ISM0101", "ISM0102", "ISM0104", "ISM0105"],
    ),
    (
        "isthmus.GatewayCompileAnalyzer",
        "What the gateway compiler leaves out or cannot serve when it builds each gateway",
        &["ISM0201", "ISM0202", "ISM0203", "ISM0204", "ISM0205"],
    ),
    (
        "isthmus.Loader",
        "Documents of kinds isthmus does not read (skipped)",
        &["ISM0001"],
    ),
    (
        "isthmus.KindNotAppliedAnalyzer",
        "EnvoyFilters, WasmPlugins, Telemetries, ProxyConfigs and GRPCRoutes: analyzed, but not applied by isthmus",
        &["ISM0002"],
    ),
    (
        "isthmus.MeshAnalyzer",
        "Mesh endpoints that chosen TLS settings cannot reach; port annotations that cannot be used",
        &["ISM0210", "ISM0211"],
    ),
    (
        "isthmus.PeerAuthenticationAnalyzer",
        "PeerAuthentication with a workload selector in the root namespace (ignored by Istio)",
        &["ISM0103"],
    ),
    (
        "isthmus.VirtualServiceRulesAnalyzer",
        "Gateways named in match blocks, rules and matches never used (field-by-field coverage), catch-all rules before others",
        &["ISM0106", "ISM0107", "ISM0108", "ISM0109"],
    ),
    (
        "k8sgateway.CRDVersionAnalyzer",
        "Gateway API CRDs older than the version Istio needs",
        &["IST0176"],
    ),
    (
        "k8sgateway.SelectorAnalyzer",
        "Policy selectors that pick Gateway API gateway pods (use targetRef instead)",
        &["IST0166"],
    ),
    (
        "schema.ValidationAnalyzer.AuthorizationPolicy",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "schema.ValidationAnalyzer.DestinationRule",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "schema.ValidationAnalyzer.Gateway",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "schema.ValidationAnalyzer.PeerAuthentication",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "schema.ValidationAnalyzer.RequestAuthentication",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "schema.ValidationAnalyzer.ServiceEntry",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "schema.ValidationAnalyzer.Sidecar",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "schema.ValidationAnalyzer.VirtualService",
        "Schema validation of VirtualServices, and rules or matches that can never be used",
        &["IST0106", "IST0133", "IST0130", "IST0131"],
    ),
    (
        "schema.ValidationAnalyzer.WorkloadEntry",
        SCHEMA,
        &["IST0106", "IST0133"],
    ),
    (
        "serviceentry.Analyzer",
        "ServiceEntries with TCP ports but no addresses (unless the mesh allocates them)",
        &["IST0134"],
    ),
    (
        "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
        "ServiceEntries giving one host and port different protocols",
        &["IST0177"],
    ),
    (
        "service.PortNameAnalyzer",
        "Service port names that do not tell Istio the protocol",
        &["IST0118", "IST0150"],
    ),
    (
        "sidecar.SelectorAnalyzer",
        "Sidecar selectors that match no workload or overlap; several namespace-wide Sidecars; Sidecars in ambient mode",
        &["IST0101", "IST0110", "IST0111", "IST0167"],
    ),
    (
        "telemetry.DefaultSelectorAnalyzer",
        "Several Telemetries without a selector in one namespace",
        &["IST0160"],
    ),
    (
        "telemetry.LightstepAnalyzer",
        "Telemetries tracing to a Lightstep provider (deprecated)",
        &["IST0002"],
    ),
    (
        "telemetry.ProviderAnalyzer",
        "Telemetry access logging without providers when the mesh has no default provider",
        &["IST0157"],
    ),
    (
        "telemetry.SelectorAnalyzer",
        "Telemetry selectors that match no workload, or overlap",
        &["IST0101", "IST0159"],
    ),
    (
        "webhook.Analyzer",
        "Sidecar injector webhooks that overlap, or whose service is not loaded",
        &["IST0139"],
    ),
    (
        "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        "Virtual services bound to the mesh gateway with overlapping hosts",
        &["IST0109"],
    ),
    (
        "virtualservice.DestinationHostAnalyzer",
        "Route destinations: hosts that resolve to no service, ports required but not given; gateway routes without subsets next to subset routes",
        &["IST0101", "IST0112", "IST0140"],
    ),
    (
        "virtualservice.DestinationRuleAnalyzer",
        "Route destination subsets that no destination rule defines",
        &["IST0101"],
    ),
    (
        "virtualservice.GatewayAnalyzer",
        "Gateways a virtual service names: missing, internal, or not serving its hosts",
        &["IST0101", "IST0132", "IST0165"],
    ),
    (
        "virtualservice.JWTClaimRouteAnalyzer",
        "Routing on JWT claims without a RequestAuthentication for the workload",
        &["IST0149"],
    ),
];

const SCHEMA: &str = "Schema validation (field types, required fields, values)";

/// The listing `-L` prints.
pub fn listing() -> String {
    let mut rows: Vec<_> = ANALYZERS.iter().collect();
    rows.sort_by_key(|(name, _, _)| *name);
    let mut out = String::new();
    for (name, description, codes) in rows {
        out.push_str(&format!(
            "* {name}:\n    {description}\n    codes: {}\n",
            codes.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_isthmus_emits_is_listed_and_none_else() {
        let listed: std::collections::BTreeSet<&str> = ANALYZERS
            .iter()
            .flat_map(|(_, _, codes)| codes.iter().copied())
            .collect();
        for (code, _, _) in isthmus_model::analyze::CODES {
            assert!(listed.contains(code), "{code} is in no analyzer of -L");
        }
        for code in &listed {
            assert!(
                isthmus_model::analyze::CODES
                    .iter()
                    .any(|(c, _, _)| c == code),
                "{code} is listed but not in analyze::CODES"
            );
        }
    }
}
