//! EnvoyFilter findings, as Istio's `envoyfilter.EnvoyPatchAnalyzer`: relative patch
//! operations without a priority (IST0151, or IST0155 when an earlier patch of the
//! same filter name sets a `proxyVersion`), and operations Envoy ignores for their
//! `applyTo` (REPLACE: IST0152; ADD: IST0153; REMOVE: IST0154). Also isthmus's own
//! ISM0002 on every EnvoyFilter, WasmPlugin, Telemetry, ProxyConfig and GRPCRoute: isthmus loads and
//! analyzes them but does not apply them.

use crate::diag::Diagnostic;
use crate::resources::extensions::EnvoyConfigPatch;

use super::finding;
use super::index::Index;

/// A kind isthmus analyzes but does not apply.
pub(super) const CODE_NOT_APPLIED: &str = "ISM0002";

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    // Filter names of the patches (of all EnvoyFilters so far) that set a proxyVersion.
    let mut versioned: Vec<String> = Vec::new();
    for (r, ef) in ix.store.envoy_filters() {
        let first = out.len();
        let priority = ef.priority.unwrap_or(0);
        for (i, cp) in ef.config_patches.iter().enumerate() {
            let Some(patch) = &cp.patch else { break };
            let name = instance_name(cp);
            let apply_to = cp.apply_to.as_deref().unwrap_or("");
            let route = matches!(apply_to, "ROUTE_CONFIGURATION" | "HTTP_ROUTE");
            let path = format!("spec.configPatches[{i}]");
            let relative = match patch.operation.as_deref().unwrap_or("") {
                "ADD" => {
                    if route {
                        out.push(finding(
                            "IST0153",
                            r,
                            &path,
                            "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, \
                             or HTTP_ROUTE.",
                        ));
                    }
                    false
                }
                "REMOVE" if route => {
                    out.push(finding(
                        "IST0154",
                        r,
                        &path,
                        "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, \
                         or HTTP_ROUTE.",
                    ));
                    false
                }
                "REPLACE"
                    if !matches!(apply_to, "NETWORK_FILTER" | "HTTP_FILTER" | "VIRTUAL_HOST") =>
                {
                    out.push(finding(
                        "IST0152",
                        r,
                        &path,
                        "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
                    ));
                    false
                }
                "REMOVE" | "REPLACE" | "INSERT_BEFORE" | "INSERT_AFTER" => true,
                _ => false,
            };
            if relative && priority == 0 {
                if versioned.contains(&name) {
                    out.push(finding(
                        "IST0155",
                        r,
                        &path,
                        "This EnvoyFilter does not have a priority and has a relative patch operation \
                         (INSERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause \
                         the EnvoyFilter not to be applied during an upgrade. Using the INSERT_FIRST or ADD \
                         option or setting the priority may help in ensuring the EnvoyFilter is applied \
                         correctly.",
                    ));
                } else {
                    out.push(finding(
                        "IST0151",
                        r,
                        &path,
                        "This EnvoyFilter does not have a priority and has a relative patch operation set \
                         which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD \
                         option or setting the priority may help in ensuring the EnvoyFilter is applied \
                         correctly.",
                    ));
                }
            }
            let proxy_version = cp
                .match_
                .as_ref()
                .and_then(|m| m["proxy"]["proxyVersion"].as_str())
                .is_some_and(|v| !v.is_empty());
            if proxy_version {
                versioned.push(name);
            }
        }
        // Each message's text is fixed: istioctl prints it once per EnvoyFilter, at
        // the first patch it concerns.
        let mut seen = std::collections::HashSet::new();
        let mut i = first;
        while i < out.len() {
            if seen.insert(out[i].code) {
                i += 1;
            } else {
                out.remove(i);
            }
        }
    }

    let not_applied = ix
        .store
        .envoy_filters()
        .map(|(r, _)| r)
        .chain(ix.store.wasm_plugins().map(|(r, _)| r))
        .chain(ix.store.telemetries().map(|(r, _)| r))
        .chain(ix.store.proxy_configs().map(|(r, _)| r))
        .chain(ix.store.grpc_routes().map(|(r, _)| r));
    for r in not_applied {
        out.push(finding(
            CODE_NOT_APPLIED,
            r,
            "spec",
            format!(
                "isthmus does not apply {} resources: this one is analyzed but has no effect on the \
                 proxies isthmus runs.",
                r.kind.name()
            ),
        ));
    }
}

/// The filter a patch is about, as Istio compares them: the patch value's `name`,
/// else (for a value without one) the listener filter chain's filter name.
fn instance_name(cp: &EnvoyConfigPatch) -> String {
    let Some(value) = cp
        .patch
        .as_ref()
        .and_then(|p| p.value.as_ref())
        .and_then(|v| v.as_object())
    else {
        return String::new();
    };
    if let Some(name) = value.get("name") {
        // Kept apart from plain filter names: Istio compares the value's text form.
        return format!("value:{name}");
    }
    cp.match_
        .as_ref()
        .and_then(|m| m["listener"]["filterChain"]["filter"]["name"].as_str())
        .unwrap_or("")
        .to_string()
}
