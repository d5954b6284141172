//! Policies whose workload selector picks Gateway API gateway pods, as Istio's
//! `k8sgateway.SelectorAnalyzer`: on such pods (label
//! `gateway.networking.k8s.io/gateway-name`) a selector has no effect, `targetRef`
//! must be used (IST0166). AuthorizationPolicy, RequestAuthentication, Telemetry and
//! WasmPlugin are checked; those with a `targetRef` are not. And as
//! `k8sgateway.CRDVersionAnalyzer`: a Gateway API CRD whose bundle version is below
//! the one Istio requires, so that istiod ignores its resources (IST0176).

use std::collections::BTreeSet;

use crate::diag::Diagnostic;
use crate::resources::networking::WorkloadSelector;
use crate::resources::Resource;

use super::finding;
use super::index::{Index, WorkloadKind};

const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    let store = ix.store;
    let policies = store
        .authorization_policies()
        .map(|(r, s)| (r, s.selector.as_ref(), s.target_ref.is_some()))
        .chain(
            store
                .request_authentications()
                .map(|(r, s)| (r, s.selector.as_ref(), s.target_ref.is_some())),
        )
        .chain(
            store
                .telemetries()
                .map(|(r, s)| (r, s.selector.as_ref(), s.target_ref.is_some())),
        )
        .chain(
            store
                .wasm_plugins()
                .map(|(r, s)| (r, s.selector.as_ref(), s.target_ref.is_some())),
        );
    for (r, selector, has_target_ref) in policies {
        if has_target_ref {
            continue;
        }
        let Some(selector) = selector else { continue };
        ineffective(ix, r, selector, out);
    }
    crd_versions(ix, out);
}

/// Minimum Gateway API bundle versions Istio needs, by CRD name.
const MINIMUM_CRD_VERSIONS: &[(&str, (u64, u64, u64))] = &[
    ("grpcroutes.gateway.networking.k8s.io", (1, 1, 0)),
    ("backendtlspolicies.gateway.networking.k8s.io", (1, 4, 0)),
    ("tlsroutes.gateway.networking.k8s.io", (1, 5, 0)),
    ("tcproutes.gateway.networking.k8s.io", (1, 6, 0)),
];

fn crd_versions(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, _) in ix.store.crds() {
        let Some((_, minimum)) = MINIMUM_CRD_VERSIONS.iter().find(|(n, _)| *n == r.name()) else {
            continue;
        };
        let Some(written) = r
            .meta
            .annotations
            .get("gateway.networking.k8s.io/bundle-version")
        else {
            continue;
        };
        let Some((installed, shown)) = semver(written) else {
            continue;
        };
        if installed < *minimum {
            let (a, b, c) = minimum;
            out.push(finding(
                "IST0176",
                r,
                "metadata.annotations",
                format!(
                    "Gateway API CRD {:?} is at version {shown:?} but Istio requires at least \"{a}.{b}.{c}\"; \
                     resources of this kind will not be processed. Upgrade the Gateway API CRDs to satisfy \
                     the minimum version.",
                    r.name()
                ),
            ));
        }
    }
}

/// A semantic version as the Masterminds library reads it (`v` prefix allowed,
/// missing minor or patch are 0): the numbers without pre-release, and the
/// version as it prints it. `None` when it does not parse.
fn semver(v: &str) -> Option<((u64, u64, u64), String)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let (core, metadata) = v.split_once('+').map_or((v, None), |(c, m)| (c, Some(m)));
    let (core, pre) = core
        .split_once('-')
        .map_or((core, None), |(c, p)| (c, Some(p)));
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut n = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n[i] = p.parse().ok()?;
    }
    let mut shown = format!("{}.{}.{}", n[0], n[1], n[2]);
    if let Some(p) = pre {
        shown.push_str(&format!("-{p}"));
    }
    if let Some(m) = metadata {
        shown.push_str(&format!("+{m}"));
    }
    Some(((n[0], n[1], n[2]), shown))
}

fn ineffective(ix: &Index, r: &Resource, selector: &WorkloadSelector, out: &mut Vec<Diagnostic>) {
    let mut gateways = BTreeSet::new();
    for w in &ix.workloads {
        if !matches!(w.kind, WorkloadKind::Pod | WorkloadKind::Deployment)
            || w.namespace != r.namespace()
        {
            continue;
        }
        let Some(gateway) = w.labels.get(GATEWAY_NAME_LABEL) else {
            continue;
        };
        let contained = selector
            .match_labels
            .iter()
            .all(|(k, v)| w.labels.get(k) == Some(v));
        if contained && gateways.insert(gateway.clone()) {
            out.push(finding(
                "IST0166",
                r,
                "spec.selector",
                format!("Ineffective selector on Kubernetes Gateway {gateway}. Use the TargetRef field instead."),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::semver;

    #[test]
    fn bundle_versions_parse_as_masterminds_semver() {
        assert_eq!(semver("v1.4.1"), Some(((1, 4, 1), "1.4.1".to_string())));
        assert_eq!(semver("1.5"), Some(((1, 5, 0), "1.5.0".to_string())));
        assert_eq!(
            semver("v1.5.0-rc.1"),
            Some(((1, 5, 0), "1.5.0-rc.1".to_string()))
        );
        assert_eq!(semver("latest"), None);
        assert_eq!(semver("1.2.3.4"), None);
        assert_eq!(semver(""), None);
    }
}
