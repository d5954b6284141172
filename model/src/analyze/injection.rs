//! Sidecar injection findings, as Istio's `injection.Analyzer`, over the loaded
//! Namespaces, Pods and injector ConfigMaps: a namespace with no injection label
//! (IST0102, or IST0148 when the injector injects every namespace by default), a
//! namespace with more than one kind of injection label (IST0123), and a pod in an
//! injection-enabled namespace without the `istio-proxy` container (IST0103).
//! `istio-system` and ambient namespaces are not checked for labels. Also Istio's
//! `injection.ImageAnalyzer` ([`check_images`], IST0158) and
//! `injection.ImageAutoAnalyzer` ([`check_image_auto`], IST0146/IST0147).

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::Diagnostic;
use crate::resources::core::ConfigMapData;
use crate::resources::extensions::ProxyConfigSpec;
use crate::resources::{Kind, Labels, Resource};

use super::index::{Index, ROOT_NAMESPACE};
use super::{finding, selects, MeshSettings};

const INJECTION_LABEL: &str = "istio-injection";
const REV_LABEL: &str = "istio.io/rev";
const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
const INJECT: &str = "sidecar.istio.io/inject";

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    // As in Istio, the setting read for one namespace carries over to the next ones
    // when their revision has no injector ConfigMap.
    let mut enabled_by_default = false;
    let mut injected: BTreeSet<&str> = BTreeSet::new();
    for (r, _) in ix.store.namespaces() {
        let ns = r.name();
        if ns == "istio-system" {
            continue;
        }
        let labels = &r.meta.labels;
        let injection = labels.get(INJECTION_LABEL);
        let revision = labels.get(REV_LABEL);
        let mut istio_labels = Vec::new();
        if let Some(v) = injection {
            istio_labels.push(format!("{INJECTION_LABEL}={v}"));
        }
        for l in [REV_LABEL, DATAPLANE_MODE_LABEL] {
            if let Some(v) = labels.get(l) {
                if injection.is_none_or(|i| i == "enabled") {
                    istio_labels.push(format!("{l}={v}"));
                }
            }
        }
        if istio_labels.len() > 1 {
            out.push(finding(
                "IST0123",
                r,
                "metadata.labels",
                format!(
                    "The namespace has more than one type of injection labels [{}], which may lead to \
                     undefined behavior. Make sure only one injection label exists.",
                    istio_labels.join(" ")
                ),
            ));
        }
        if labels
            .get(DATAPLANE_MODE_LABEL)
            .is_some_and(|v| v == "ambient")
        {
            continue;
        }
        let cm_name = match revision.map(String::as_str) {
            None | Some("" | "default") => "istio-sidecar-injector".to_string(),
            Some(rev) => format!("istio-sidecar-injector-{rev}"),
        };
        if let Some((_, cm)) = ix.store.config_maps().find(|(c, _)| c.name() == cm_name) {
            enabled_by_default = namespaces_by_default(cm);
        }
        let injection = injection.map_or("", String::as_str);
        if injection.is_empty() && revision.is_none() {
            if enabled_by_default {
                out.push(finding(
                    "IST0148",
                    r,
                    "metadata.name",
                    "The namespace is enabled for Istio injection, as Istio is installed with \
                     enableNamespacesByDefault as true.",
                ));
            } else {
                out.push(finding(
                    "IST0102",
                    r,
                    "metadata.name",
                    format!(
                        "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {ns} \
                         istio-injection=enabled' to enable it, or 'kubectl label namespace {ns} \
                         istio-injection=disabled' to explicitly mark it as not needing injection."
                    ),
                ));
            }
            continue;
        }
        if injection == "enabled" {
            injected.insert(ns);
        }
    }

    for (r, pod) in ix.store.pods() {
        if !injected.contains(r.namespace()) {
            continue;
        }
        let inject = r
            .meta
            .labels
            .get(INJECT)
            .or_else(|| r.meta.annotations.get(INJECT));
        if inject.is_some_and(|v| v.eq_ignore_ascii_case("false")) || pod.host_network {
            continue;
        }
        let proxy_image = pod
            .containers
            .iter()
            .chain(&pod.init_containers)
            .find(|c| c.name == "istio-proxy")
            .and_then(|c| c.image.as_deref())
            .unwrap_or("");
        if proxy_image.is_empty() {
            out.push(finding(
                "IST0103",
                r,
                "spec.containers",
                format!(
                    "The pod {}/{} is missing the Istio proxy. This can often be resolved by restarting or \
                     redeploying the workload.",
                    r.namespace(),
                    r.name()
                ),
            ));
        }
    }
}

/// `sidecarInjectorWebhook.enableNamespacesByDefault` in the injector ConfigMap's
/// `values` (JSON); false when absent or unreadable.
fn namespaces_by_default(cm: &ConfigMapData) -> bool {
    let Some(values) = cm.data.get("values") else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(values)
        .ok()
        .and_then(|v| v["sidecarInjectorWebhook"]["enableNamespacesByDefault"].as_bool())
        .unwrap_or(false)
}

/// Istio's `injection.ImageAnalyzer`: pods in injection-enabled namespaces whose
/// `istio-proxy` image is not the one their injector ConfigMap
/// (`istio-sidecar-injector[-REVISION]`) names, with the image variant of the
/// effective proxy config (IST0158, once per namespace).
pub(super) fn check_images(ix: &Index, mesh: &MeshSettings, out: &mut Vec<Diagnostic>) {
    let images: BTreeMap<&str, String> = ix
        .store
        .config_maps()
        .filter(|(r, _)| r.name().starts_with("istio-sidecar-injector"))
        .map(|(r, cm)| (r.name(), proxy_image(cm)))
        .collect();
    if images.is_empty() {
        return;
    }
    // Namespace -> injector revision.
    let mut injected: BTreeMap<&str, (&Resource, &str)> = BTreeMap::new();
    for (r, _) in ix.store.namespaces() {
        let labels = &r.meta.labels;
        if let Some(rev) = labels.get(REV_LABEL) {
            injected.insert(r.name(), (r, rev));
        } else if labels.get(INJECTION_LABEL).is_some_and(|v| v == "enabled") {
            injected.insert(r.name(), (r, "default"));
        }
    }
    let mut mismatched: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (r, pod) in ix.store.pods() {
        let Some((_, rev)) = injected.get(r.namespace()) else {
            continue;
        };
        let cm_name = match *rev {
            "" | "default" => "istio-sidecar-injector".to_string(),
            rev => format!("istio-sidecar-injector-{rev}"),
        };
        if r.meta
            .annotations
            .get("sidecar.istio.io/proxyImage")
            .is_some_and(|v| !v.is_empty())
        {
            continue;
        }
        let variant = image_type(ix, mesh, r);
        let Some(proxy) = pod
            .containers
            .iter()
            .chain(&pod.init_containers)
            .find(|c| c.name == "istio-proxy")
        else {
            continue;
        };
        let Some(expected) = images.get(cm_name.as_str()) else {
            continue;
        };
        let image = proxy.image.as_deref().unwrap_or("");
        if image != expected && image != format!("{expected}-{variant}") {
            mismatched.entry(r.namespace()).or_default().push(r.name());
        }
    }
    for (ns, mut pods) in mismatched {
        let Some((r, _)) = injected.get(ns) else {
            continue;
        };
        pods.sort_unstable();
        out.push(finding(
            "IST0158",
            r,
            "metadata.name",
            format!(
                "The Istio proxy images of the pods running in the namespace do not match the image defined \
                 in the injection configuration (pod names: [{}]). This often happens after upgrading the \
                 Istio control-plane and can be fixed by redeploying the pods.",
                pods.join(" ")
            ),
        ));
    }
}

/// The proxy image an injector ConfigMap's `values` name: `global.proxy.image` when
/// it holds a `/`, else `HUB/IMAGE:TAG`; empty when `values` cannot be read.
fn proxy_image(cm: &ConfigMapData) -> String {
    let Some(values) = cm.data.get("values") else {
        return String::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(values) else {
        return String::new();
    };
    let global = &v["global"];
    // Go decodes these as strings: another type fails the whole decode.
    let field = |x: &serde_json::Value| -> Option<String> {
        match x {
            serde_json::Value::Null => Some(String::new()),
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        }
    };
    let (Some(hub), Some(tag), Some(image)) = (
        field(&global["hub"]),
        field(&global["tag"]),
        field(&global["proxy"]["image"]),
    ) else {
        return String::new();
    };
    if image.contains('/') {
        image
    } else {
        format!("{hub}/{image}:{tag}")
    }
}

/// Istio's effective proxy image type for a pod: the mesh default, then the root
/// namespace ProxyConfig, the namespace one, a selecting one, and the pod's
/// `proxy.istio.io/config` annotation; `default` counts as none.
fn image_type(ix: &Index, mesh: &MeshSettings, pod: &Resource) -> String {
    let mut variant = mesh.proxy_image_type.clone().unwrap_or_default();
    let of = |pc: &ProxyConfigSpec| {
        pc.image
            .as_ref()
            .map(|i| i.image_type.clone())
            .filter(|t| !t.is_empty())
    };
    let ns = pod.namespace();
    let mut root = None;
    let mut namespace = None;
    let mut workload = None;
    for (r, pc) in ix.store.proxy_configs() {
        if r.namespace() == ROOT_NAMESPACE {
            root = Some(pc);
        } else if pc.selector.is_none() {
            if r.namespace() == ns {
                namespace = Some(pc);
            }
        } else if format!("{}/{}", r.namespace(), r.name()).starts_with(ns)
            && pc
                .selector
                .as_ref()
                .is_some_and(|s| selects(&s.match_labels, &pod.meta.labels))
        {
            if let Some(t) = of(pc) {
                workload = Some(t);
            }
        }
    }
    for t in [root.and_then(of), namespace.and_then(of), workload]
        .into_iter()
        .flatten()
    {
        variant = t;
    }
    if let Some(a) = pod.meta.annotations.get("proxy.istio.io/config") {
        if let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(a) {
            if let Some(t) = v["image"]["imageType"].as_str().filter(|t| !t.is_empty()) {
                variant = t.to_string();
            }
        }
    }
    if variant == "default" {
        variant.clear();
    }
    variant
}

/// Istio's `injection.ImageAutoAnalyzer`: an `istio-proxy` container with
/// `image: auto` (filled in only by injection) in a Pod, which was then not injected
/// (IST0147), or in a Deployment whose pods no Istio injection webhook (a webhook
/// named `*istio.io`) selects (IST0146).
pub(super) fn check_image_auto(ix: &Index, out: &mut Vec<Diagnostic>) {
    let auto = |p: &crate::resources::core::PodSpec| {
        p.containers
            .iter()
            .any(|c| c.name == "istio-proxy" && c.image.as_deref() == Some("auto"))
    };
    let message = |kind: &str, name: &str| {
        format!(
            "{kind} {name} contains `image: auto` but does not match any Istio injection webhook selectors."
        )
    };
    for (r, pod) in ix.store.pods() {
        if auto(pod) {
            out.push(finding(
                "IST0147",
                r,
                "spec.containers",
                message("Pod", r.name()),
            ));
        }
    }
    let webhooks: Vec<_> = ix
        .store
        .mutating_webhooks()
        .flat_map(|(_, wc)| wc.webhooks.iter())
        .filter(|w| w.name.ends_with("istio.io"))
        .collect();
    let empty = Labels::default();
    for (r, d) in ix.store.deployments() {
        if !auto(&d.template.spec) {
            continue;
        }
        let ns_labels = ix
            .store
            .find(Kind::Namespace, "", r.namespace())
            .map_or(&empty, |ns| &ns.meta.labels);
        let injected = webhooks.iter().any(|w| {
            w.namespace_selector
                .as_ref()
                .is_none_or(|s| s.matches(ns_labels))
                && w.object_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&d.template.metadata.labels))
        });
        if !injected {
            out.push(finding(
                "IST0146",
                r,
                "spec.template.spec.containers",
                message("Deployment", r.name()),
            ));
        }
    }
}
