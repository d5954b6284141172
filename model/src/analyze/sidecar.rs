//! Sidecar findings, as Istio's `sidecar.SelectorAnalyzer`: a workload selector that
//! matches no workload in the Sidecar's namespace (IST0101), several Sidecars
//! selecting the same workload (IST0110), several Sidecars without a selector in one
//! namespace (IST0111), and Sidecars that cannot apply because the workload or
//! namespace runs in ambient mode (IST0167).
//!
//! Workloads are the loaded Pods, Deployment pod templates and WorkloadEntries (and
//! Istio's default ingress gateway), as for the security policies: istioctl matches
//! Pods only, which a file-only analysis seldom holds.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::Diagnostic;
use crate::resources::{Kind, Resource};

use super::index::{Index, Workload, WorkloadKind};
use super::{finding, selector_string};

const AMBIENT_REDIRECTION: &str = "ambient.istio.io/redirection";

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    // Workload (index into ix.workloads) -> the Sidecars selecting it.
    let mut by_workload: BTreeMap<usize, Vec<&Resource>> = BTreeMap::new();
    let mut namespace_wide: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for (r, s) in ix.store.sidecars() {
        let labels = match &s.workload_selector {
            Some(sel) if !sel.labels.is_empty() => &sel.labels,
            _ => {
                namespace_wide.entry(r.namespace()).or_default().push(r);
                continue;
            }
        };
        let selected = ix.selected_in(r.namespace(), labels);
        for &i in &selected {
            by_workload.entry(i).or_default().push(r);
        }
        if selected.is_empty() {
            out.push(finding(
                "IST0101",
                r,
                "spec.workloadSelector",
                format!(
                    "Referenced selector not found: \"{}\" (no workload in namespace {} has these labels)",
                    selector_string(labels),
                    r.namespace()
                ),
            ));
        }
    }

    let mut ineffective: BTreeSet<String> = BTreeSet::new();
    for (i, sidecars) in &by_workload {
        let w = &ix.workloads[*i];
        let ambient = workload_in_ambient(ix, w);
        if sidecars.len() == 1 && !ambient {
            continue;
        }
        let names = names(sidecars);
        for r in sidecars {
            if ambient {
                if ineffective.insert(r.display_ref()) {
                    out.push(finding(
                        "IST0167",
                        r,
                        "spec.workloadSelector",
                        "The policy has no impact: selected workload is in ambient mode, the policy has no impact.",
                    ));
                }
                continue;
            }
            out.push(finding(
                "IST0110",
                r,
                "metadata.name",
                format!(
                    "The Sidecars {names} in namespace {:?} select the same workload pod {:?}, which can \
                     lead to undefined behavior.",
                    w.namespace, w.name
                ),
            ));
        }
    }

    for (ns, sidecars) in &namespace_wide {
        if namespace_in_ambient(ix, ns) {
            for r in sidecars {
                if ineffective.insert(r.display_ref()) {
                    out.push(finding(
                        "IST0167",
                        r,
                        "metadata.name",
                        "The policy has no impact: namespace is in ambient mode, the policy has no impact.",
                    ));
                }
            }
            continue;
        }
        if sidecars.len() > 1 {
            let names = names(sidecars);
            for r in sidecars {
                out.push(finding(
                    "IST0111",
                    r,
                    "metadata.name",
                    format!(
                        "The Sidecars {names} in namespace {ns:?} have no workload selector, which can lead \
                         to undefined behavior."
                    ),
                ));
            }
        }
    }
}

/// `[a b c]`, as Go prints a string slice.
fn names(rs: &[&Resource]) -> String {
    let v: Vec<&str> = rs.iter().map(|r| r.name()).collect();
    format!("[{}]", v.join(" "))
}

/// Istio's `PodInAmbientMode`: the pod carries `ambient.istio.io/redirection: enabled`.
fn workload_in_ambient(ix: &Index, w: &Workload) -> bool {
    let annotations = match w.kind {
        WorkloadKind::Pod => ix
            .store
            .find(Kind::Pod, &w.namespace, &w.name)
            .map(|r| &r.meta.annotations),
        WorkloadKind::Deployment => ix
            .store
            .deployments()
            .find(|(r, _)| r.namespace() == w.namespace && r.name() == w.name)
            .map(|(_, d)| &d.template.metadata.annotations),
        _ => None,
    };
    annotations.is_some_and(|a| a.get(AMBIENT_REDIRECTION).is_some_and(|v| v == "enabled"))
}

/// Istio's `NamespaceInAmbientMode`: `istio.io/dataplane-mode: ambient`, unless the
/// namespace is labelled for sidecar injection (`istio-injection=enabled` or a
/// non-empty `istio.io/rev`).
pub(super) fn namespace_in_ambient(ix: &Index, ns: &str) -> bool {
    let Some(r) = ix.store.find(Kind::Namespace, "", ns) else {
        return false;
    };
    let l = &r.meta.labels;
    if l.get("istio-injection").is_some_and(|v| v == "enabled") {
        return false;
    }
    if l.get("istio.io/rev").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    l.get("istio.io/dataplane-mode")
        .is_some_and(|v| v == "ambient")
}
