//! Telemetry findings, as Istio's `telemetry.SelectorAnalyzer`,
//! `telemetry.DefaultSelectorAnalyzer` and `telemetry.ProviderAnalyzer`: a selector
//! that matches no workload in the Telemetry's namespace (IST0101), several
//! Telemetries selecting the same workload (IST0159), several Telemetries without a
//! selector in one namespace (IST0160), and access logging without providers while
//! the mesh config names no default access log provider (IST0157).
//!
//! Workloads are matched as for Sidecars (see [`super::sidecar`]).

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::resources::Resource;

use super::index::Index;
use super::{finding, selector_string, MeshSettings};

pub(super) fn check(ix: &Index, mesh: &MeshSettings, out: &mut Vec<Diagnostic>) {
    let mut by_workload: BTreeMap<usize, Vec<&Resource>> = BTreeMap::new();
    let mut without_selector: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for (r, t) in ix.store.telemetries() {
        let Some(selector) = &t.selector else {
            without_selector.entry(r.namespace()).or_default().push(r);
            continue;
        };
        let labels = &selector.match_labels;
        if labels.is_empty() {
            continue;
        }
        let selected = ix.selected_in(r.namespace(), labels);
        for &i in &selected {
            by_workload.entry(i).or_default().push(r);
        }
        if selected.is_empty() {
            out.push(finding(
                "IST0101",
                r,
                "spec.selector",
                format!(
                    "Referenced selector not found: \"{}\" (no workload in namespace {} has these labels)",
                    selector_string(labels),
                    r.namespace()
                ),
            ));
        }
    }
    for (i, ts) in &by_workload {
        if ts.len() < 2 {
            continue;
        }
        let w = &ix.workloads[*i];
        let names = sorted_names(ts);
        for r in ts {
            out.push(finding(
                "IST0159",
                r,
                "metadata.name",
                format!(
                    "The Telemetries {names} in namespace {:?} select the same workload pod {:?}, which can \
                     lead to undefined behavior.",
                    w.namespace, w.name
                ),
            ));
        }
    }
    for (ns, ts) in &without_selector {
        if ts.len() < 2 {
            continue;
        }
        let names = sorted_names(ts);
        for r in ts {
            out.push(finding(
                "IST0160",
                r,
                "metadata.name",
                format!(
                    "The Telemetries {names} in namespace {ns:?} have no workload selector, which can lead to \
                     undefined behavior."
                ),
            ));
        }
    }
    if !mesh.default_access_log_providers {
        for (r, t) in ix.store.telemetries() {
            for (i, l) in t.access_logging.iter().enumerate() {
                if l.disabled == Some(true) || !l.providers.is_empty() {
                    continue;
                }
                out.push(finding(
                    "IST0157",
                    r,
                    &format!("spec.accessLogging[{i}]"),
                    format!(
                        "The Telemetry {} in namespace {:?} with empty providers will be ignored.",
                        r.name(),
                        r.namespace()
                    ),
                ));
                // One text per Telemetry: istioctl prints it once.
                break;
            }
        }
    }
    if !mesh.lightstep_providers.is_empty() {
        for (r, t) in ix.store.telemetries() {
            let mut seen = std::collections::HashSet::new();
            for (i, tr) in t.tracing.iter().enumerate() {
                for (j, p) in tr.providers.iter().enumerate() {
                    if mesh.lightstep_providers.contains(&p.name) && seen.insert(&p.name) {
                        out.push(finding(
                            "IST0002",
                            r,
                            &format!("spec.tracing[{i}].providers[{j}]"),
                            format!(
                                "Deprecated: The Lightstep provider {} is deprecated, please migrate to \
                                 OpenTelemetry provider.",
                                p.name
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// `[a b c]`, sorted, as Go prints a string slice.
fn sorted_names(rs: &[&Resource]) -> String {
    let mut v: Vec<&str> = rs.iter().map(|r| r.name()).collect();
    v.sort_unstable();
    format!("[{}]", v.join(" "))
}
