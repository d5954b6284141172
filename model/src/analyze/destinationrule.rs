//! DestinationRule findings: TLS origination without `caCertificates` (IST0128
//! destination or subset level, IST0129 port level), subsets that select no workload
//! (IST0173), and hosts no service provides (IST0174).

use crate::diag::Diagnostic;
use crate::host;
use crate::resources::networking::DestinationRuleSpec;
use crate::resources::policy::{ClientTlsMode, ClientTlsSettings};
use crate::resources::{Labels, Resource};

use super::index::Index;
use super::{finding, full_name, selector_string};

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, dr) in ix.store.destination_rules() {
        ca_certificates(r, dr, out);
        subsets(ix, r, dr, out);
    }
}

/// `SIMPLE`/`MUTUAL` without `caCertificates` does not verify the server, unless
/// the credential comes from a secret (which may hold `ca.crt`) on a DR with a
/// workload selector, as istioctl allows.
fn unverified(tls: Option<&ClientTlsSettings>, dr: &DestinationRuleSpec) -> Option<&'static str> {
    let tls = tls?;
    let mode = match tls.mode? {
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        _ => return None,
    };
    let has_ca = tls
        .ca_certificates
        .as_deref()
        .is_some_and(|c| !c.is_empty());
    let secret_ca = tls
        .credential_name
        .as_deref()
        .is_some_and(|c| !c.is_empty())
        && dr.workload_selector.is_some();
    (!has_ca && !secret_ca).then_some(mode)
}

fn ca_certificates(r: &Resource, dr: &DestinationRuleSpec, out: &mut Vec<Diagnostic>) {
    let fix = "Set caCertificates (or credentialName with a ca.crt) so the server certificate is verified.";
    if let Some(tp) = &dr.traffic_policy {
        if let Some(mode) = unverified(tp.tls.as_ref(), dr) {
            out.push(finding(
                "IST0128",
                r,
                "spec.trafficPolicy.tls",
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates \
                     are set to validate server identity for host: {}. {fix}",
                    full_name(r),
                    r.namespace(),
                    dr.host
                ),
            ));
        }
        for (i, p) in tp.port_level_settings.iter().enumerate() {
            if let Some(mode) = unverified(p.tls.as_ref(), dr) {
                let port = p
                    .port
                    .as_ref()
                    .map_or("(unset)".to_string(), |p| p.number.to_string());
                out.push(finding(
                    "IST0129",
                    r,
                    &format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
                    format!(
                        "DestinationRule {} in namespace {} has TLS mode set to {mode} but no \
                         caCertificates are set to validate server identity for host: {} at port {port}. \
                         {fix}",
                        full_name(r),
                        r.namespace(),
                        dr.host
                    ),
                ));
            }
        }
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        let Some(tp) = &s.traffic_policy else {
            continue;
        };
        if let Some(mode) = unverified(tp.tls.as_ref(), dr) {
            out.push(finding(
                "IST0128",
                r,
                &format!("spec.subsets[{i}].trafficPolicy.tls"),
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates \
                     are set to validate server identity for host: {} (subset {}). {fix}",
                    full_name(r),
                    r.namespace(),
                    dr.host,
                    s.name
                ),
            ));
        }
    }
}

/// IST0174 for a host no Service or ServiceEntry provides (wildcard hosts are policy
/// for many services and are not checked); IST0173 for a subset whose labels select
/// none of the workloads behind the host (the Service's selector in its namespace,
/// a ServiceEntry's workloadSelector or inline endpoints).
fn subsets(ix: &Index, r: &Resource, dr: &DestinationRuleSpec, out: &mut Vec<Diagnostic>) {
    let fqdn = host::expand_short_name(&dr.host, r.namespace());
    if host::is_wildcard(&fqdn) {
        return;
    }
    let Some(svc) = ix.find_service(&fqdn, r.namespace()) else {
        out.push(finding(
            "IST0174",
            r,
            "spec.host",
            format!(
                "The host {} defined in the DestinationRule does not match any services in the mesh \
                 (no Service or ServiceEntry provides {fqdn}).",
                dr.host
            ),
        ));
        return;
    };
    let backing = ix.backing_labels(svc);
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.labels.is_empty() || backing.iter().any(|l| subset_selects(&s.labels, l)) {
            continue;
        }
        let seen = if backing.is_empty() {
            format!("no workload backs {} at all", svc.host)
        } else {
            let mut sets: Vec<String> = backing
                .iter()
                .map(|l| {
                    if l.is_empty() {
                        "(none)".to_string()
                    } else {
                        format!("{{{}}}", selector_string(l))
                    }
                })
                .collect();
            sets.sort();
            sets.dedup();
            format!("workloads of {} have labels {}", svc.host, sets.join(" "))
        };
        out.push(finding(
            "IST0173",
            r,
            &format!("spec.subsets[{i}].labels"),
            format!(
                "The Subset {} defined in the DestinationRule does not select any pods. Which may lead to \
                 503 UH (NoHealthyUpstream). It asks for {}; {seen}.",
                s.name,
                selector_string(&s.labels)
            ),
        ));
    }
}

/// Labels Istio adds to a pod's labels from its Node (locality and host name) before
/// matching subsets (`label.AugmentLabels`).
const NODE_TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
    "kubernetes.io/hostname",
];

/// `super::selects`, where a node topology label with a value is taken as satisfied:
/// isthmus does not read Nodes, and Istio matches it against the pod's Node. An
/// empty value never matches (Istio adds no empty topology label).
fn subset_selects(subset: &Labels, labels: &Labels) -> bool {
    subset.iter().all(|(k, v)| {
        if NODE_TOPOLOGY_LABELS.contains(&k.as_str()) && labels.get(k).is_none() {
            !v.is_empty()
        } else {
            labels.get(k) == Some(v)
        }
    })
}
