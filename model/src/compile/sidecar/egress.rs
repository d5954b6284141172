//! The `Sidecar` resource that scopes a sidecar's outbound configuration
//! (istio-api.md 1.5) and its egress `hosts`.
//!
//! **Selection**, for a workload in namespace `ns`: a Sidecar in `ns` whose
//! `workloadSelector` matches the workload's labels, else the selector-less Sidecar
//! of `ns`, else the selector-less Sidecar of the root namespace (the mesh default).
//! Several at the level that decides: the first in store order applies (Istio sorts
//! them by creation time), the others are reported (Info). A selector with no labels
//! counts as none.
//!
//! **Egress hosts**: the union over `egress[]` of the `namespace/dnsName` entries
//! (every entry without `egress` is `*/*`, as Istio's default egress listener).
//! The namespace is `*` (any), `.` (the Sidecar's own), `~` (none) or a literal one;
//! the dnsName `*`, `*.suffix` or an exact host, compared with
//! [`crate::host::matches`]. Entries without `/` are ignored (reported).
//! `egress[].port`, `bind`, `captureMode`, `ingress`, `inboundConnectionPool` and
//! `outboundTrafficPolicy` are not applied (Info each).

use super::super::{diag, labels_subset, CODE_NOT_APPLIED, ROOT_NAMESPACE};
use crate::diag::{Diagnostic, Level};
use crate::host;
use crate::resources::networking::SidecarSpec;
use crate::resources::{Labels, Resource, Store};

/// The namespace part of an egress host.
#[derive(Debug, Clone, PartialEq)]
enum EgressNs {
    Any,
    None,
    Named(String),
}

/// The Sidecar applied to one workload, reduced to its egress hosts.
pub(in crate::compile) struct SidecarScope {
    hosts: Vec<(EgressNs, String)>,
}

impl SidecarScope {
    /// The Sidecar that applies to a workload of `ns` with `labels`, and the
    /// findings about it (module header). `None`: no Sidecar, everything visible.
    pub(in crate::compile) fn select<'s>(
        store: &'s Store,
        ns: &str,
        labels: &Labels,
    ) -> (Option<Self>, Vec<Diagnostic>) {
        let all: Vec<(&'s Resource, &'s SidecarSpec)> = store.sidecars().collect();
        let levels: [Vec<(&'s Resource, &'s SidecarSpec)>; 3] = [
            all.iter()
                .copied()
                .filter(|(r, sc)| {
                    r.namespace() == ns && selector(sc).is_some_and(|s| labels_subset(s, labels))
                })
                .collect(),
            all.iter()
                .copied()
                .filter(|(r, sc)| r.namespace() == ns && selector(sc).is_none())
                .collect(),
            all.iter()
                .copied()
                .filter(|(r, sc)| r.namespace() == ROOT_NAMESPACE && selector(sc).is_none())
                .collect(),
        ];
        let Some(matching) = levels.into_iter().find(|l| !l.is_empty()) else {
            return (None, Vec::new());
        };
        let (r, sc) = matching[0];
        let mut diags: Vec<Diagnostic> = matching[1..]
            .iter()
            .map(|(other, _)| {
                diag(
                    Level::Info,
                    CODE_NOT_APPLIED,
                    other,
                    "spec",
                    format!(
                        "{} applies to this workload too and comes first: this Sidecar is not applied to it",
                        r.display_ref()
                    ),
                )
            })
            .collect();
        let scope = Self::of(r, sc, &mut diags);
        (Some(scope), diags)
    }

    /// The egress hosts of `sc`, reporting what is not applied.
    fn of(r: &Resource, sc: &SidecarSpec, diags: &mut Vec<Diagnostic>) -> Self {
        let mut info = |field: String, msg: &str| {
            diags.push(diag(
                Level::Info,
                CODE_NOT_APPLIED,
                r,
                &field,
                format!("{msg}: not applied yet"),
            ));
        };
        let mut hosts = Vec::new();
        for (i, e) in sc.egress.iter().enumerate() {
            if e.port.is_some() {
                info(
                    format!("spec.egress[{i}].port"),
                    "Sidecar egress port (the hosts apply to every port)",
                );
            }
            if e.bind.is_some() {
                info(format!("spec.egress[{i}].bind"), "Sidecar egress bind");
            }
            if e.capture_mode.is_some() {
                info(
                    format!("spec.egress[{i}].captureMode"),
                    "Sidecar egress captureMode",
                );
            }
            for (j, h) in e.hosts.iter().enumerate() {
                match parse_host(h, r.namespace()) {
                    Some(entry) => hosts.push(entry),
                    None => info(
                        format!("spec.egress[{i}].hosts[{j}]"),
                        &format!("egress host {h:?} is not of the form namespace/dnsName"),
                    ),
                }
            }
        }
        if sc.egress.is_empty() {
            hosts.push((EgressNs::Any, "*".to_string()));
        }
        if !sc.ingress.is_empty() {
            info("spec.ingress".to_string(), "Sidecar ingress listeners");
        }
        if sc.inbound_connection_pool.is_some() {
            info(
                "spec.inboundConnectionPool".to_string(),
                "Sidecar inboundConnectionPool",
            );
        }
        if let Some(p) = &sc.outbound_traffic_policy {
            if p.mode
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case("REGISTRY_ONLY"))
            {
                info(
                    "spec.outboundTrafficPolicy.mode".to_string(),
                    "outboundTrafficPolicy REGISTRY_ONLY",
                );
            }
            if p.egress_proxy.is_some() {
                info(
                    "spec.outboundTrafficPolicy.egressProxy".to_string(),
                    "outboundTrafficPolicy egressProxy",
                );
            }
        }
        SidecarScope { hosts }
    }

    /// Whether `host`, living in (or declared in) one of `namespaces`, is matched by
    /// some egress host.
    pub(in crate::compile) fn admits(&self, namespaces: &[&str], host: &str) -> bool {
        self.hosts.iter().any(|(ns, dns)| {
            let ns_ok = match ns {
                EgressNs::Any => true,
                EgressNs::None => false,
                EgressNs::Named(n) => namespaces.iter().any(|x| x == n),
            };
            ns_ok && host::matches(host, dns)
        })
    }
}

/// The labels of a Sidecar's `workloadSelector`; `None` without one or when empty.
fn selector(sc: &SidecarSpec) -> Option<&Labels> {
    sc.workload_selector
        .as_ref()
        .map(|s| &s.labels)
        .filter(|l| !l.is_empty())
}

/// `namespace/dnsName`, `.` resolved to `own_ns`, the dnsName lower-cased.
fn parse_host(entry: &str, own_ns: &str) -> Option<(EgressNs, String)> {
    let (ns, dns) = entry.split_once('/')?;
    if ns.is_empty() || dns.is_empty() {
        return None;
    }
    let ns = match ns {
        "*" => EgressNs::Any,
        "~" => EgressNs::None,
        "." => EgressNs::Named(own_ns.to_string()),
        other => EgressNs::Named(other.to_string()),
    };
    Some((ns, dns.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_egress_hosts() {
        assert_eq!(
            parse_host("./*", "default"),
            Some((EgressNs::Named("default".into()), "*".into()))
        );
        assert_eq!(
            parse_host("~/*", "default"),
            Some((EgressNs::None, "*".into()))
        );
        assert_eq!(
            parse_host("*/API.example.com", "default"),
            Some((EgressNs::Any, "api.example.com".into()))
        );
        assert_eq!(parse_host("api.example.com", "default"), None);
    }
}
