//! Security policy findings: AuthorizationPolicy, PeerAuthentication and
//! RequestAuthentication whose selector (or namespace) has no workload (IST0127),
//! AuthorizationPolicy source namespaces that match no namespace (IST0101), and
//! PeerAuthentication selectors in the root namespace, which Istio ignores (ISM0103).
//!
//! Workloads are the loaded Pods, Deployment pod templates and WorkloadEntries, plus
//! Istio's default ingress gateway (see [`super::index`]). Unlike istioctl, pods count
//! whether or not they have a sidecar. IST0127 is reported even when the store holds no
//! workload at all (as istioctl does on files alone, and as the corpus expects for
//! IST0173); the message then says so, since the workloads may live in a cluster.

use crate::diag::Diagnostic;
use crate::resources::networking::WorkloadSelector;
use crate::resources::Resource;

use super::index::{Index, ROOT_NAMESPACE};
use super::{finding, selector_string, selects};

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, ap) in ix.store.authorization_policies() {
        if ap.target_ref.is_none() && ap.target_refs.is_empty() {
            no_matching_workloads(ix, r, ap.selector.as_ref(), out);
        }
        for (i, rule) in ap.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let Some(src) = &from.source else { continue };
                for (field, list) in [
                    ("namespaces", &src.namespaces),
                    ("notNamespaces", &src.not_namespaces),
                ] {
                    for (k, ns) in list.iter().enumerate() {
                        if !ix.namespace_exists(ns) {
                            out.push(finding(
                                "IST0101",
                                r,
                                &format!("spec.rules[{i}].from[{j}].source.{field}[{k}]"),
                                format!(
                                    "Referenced namespace not found: {ns:?} (no Namespace, and no loaded \
                                     resource, is in a namespace matching it)"
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    for (r, pa) in ix.store.peer_authentications() {
        let has_selector = pa
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if r.namespace() == ROOT_NAMESPACE && has_selector {
            out.push(finding(
                "ISM0103",
                r,
                "spec.selector",
                format!(
                    "PeerAuthentication with a workload selector in the root namespace {ROOT_NAMESPACE} is \
                     ignored by Istio: move it to the namespace of the workloads it selects, or remove the \
                     selector to make it mesh-wide."
                ),
            ));
            continue;
        }
        no_matching_workloads(ix, r, pa.selector.as_ref(), out);
    }
    for (r, ra) in ix.store.request_authentications() {
        if ra.target_ref.is_none() && ra.target_refs.is_empty() {
            no_matching_workloads(ix, r, ra.selector.as_ref(), out);
        }
    }
}

/// istioctl's rule: in the root namespace only a selector is checked, against every
/// namespace; elsewhere a selector is matched in the policy's namespace, and a
/// namespace-wide policy needs some workload in its namespace.
fn no_matching_workloads(
    ix: &Index,
    r: &Resource,
    selector: Option<&WorkloadSelector>,
    out: &mut Vec<Diagnostic>,
) {
    let ns = r.namespace();
    let sel = selector.map(|s| &s.match_labels);
    let matched = |in_ns: bool, labels: &crate::resources::Labels| {
        ix.workloads
            .iter()
            .any(|w| (!in_ns || w.namespace == ns) && selects(labels, &w.labels))
    };
    let (found, what) = match sel {
        _ if ns == ROOT_NAMESPACE => match sel {
            Some(s) => (matched(false, s), selector_string(s)),
            None => return,
        },
        Some(s) => (matched(true, s), selector_string(s)),
        None => (matched(true, &Default::default()), String::new()),
    };
    if found {
        return;
    }
    let mut msg =
        format!("No matching workloads for this resource with the following labels: {what}");
    if what.is_empty() {
        msg.push_str(&format!(
            "(none: the policy covers namespace {ns}, which has no workloads)"
        ));
    } else if ns != ROOT_NAMESPACE {
        msg.push_str(&format!(" (in namespace {ns})"));
    }
    if !ix.has_workloads {
        msg.push_str(
            ". No Pods, Deployments or WorkloadEntries are loaded at all: load them too, or ignore this \
             if the workloads live only in the cluster",
        );
    }
    out.push(finding(
        "IST0127",
        r,
        if what.is_empty() {
            "spec"
        } else {
            "spec.selector"
        },
        msg,
    ));
}
