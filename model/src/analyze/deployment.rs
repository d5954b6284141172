//! Pod and Deployment findings, as Istio's `applicationUID.Analyzer`: an application
//! container (or the whole pod) running as UID 1337, the sidecar proxy's reserved
//! user (IST0144). Resources of the Istio control plane (label `istio`, or
//! `release: istio`) are skipped, and so are the `istio-proxy` and `istio-operator`
//! containers. And as `deployment.MultiServiceAnalyzer`, for Deployments in the mesh
//! (not waypoints): Services selecting its pods with one port under different
//! protocols (IST0116), or one targetPort behind different ports (IST0137).

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::resources::core::{DeploymentSpec, IntOrString, PodSpec, ServiceSpec};
use crate::resources::{Kind, Resource};

use super::selects;

use super::finding;
use super::index::Index;

const PROXY_UID: i64 = 1337;

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, p) in ix.store.pods() {
        application_uid(r, p, "spec", out);
    }
    for (r, d) in ix.store.deployments() {
        application_uid(r, &d.template.spec, "spec.template.spec", out);
        let waypoint = r
            .meta
            .labels
            .get("gateway.istio.io/managed")
            .is_some_and(|v| v == "istio.io-mesh-controller");
        if !waypoint && in_mesh(ix, r, d) {
            multiple_services(ix, r, d, out);
        }
    }
}

/// Istio's `DeploymentInMesh`: an `istio-proxy` container with an image, else the
/// template's `sidecar.istio.io/inject` label or annotation, else the namespace's
/// `istio-injection=enabled`.
fn in_mesh(ix: &Index, r: &Resource, d: &DeploymentSpec) -> bool {
    let t = &d.template;
    if t.spec
        .containers
        .iter()
        .find(|c| c.name == "istio-proxy")
        .is_some_and(|c| c.image.as_deref().is_some_and(|i| !i.is_empty()))
    {
        return true;
    }
    const INJECT: &str = "sidecar.istio.io/inject";
    if let Some(v) = t
        .metadata
        .labels
        .get(INJECT)
        .or_else(|| t.metadata.annotations.get(INJECT))
    {
        return v == "true";
    }
    ix.store
        .find(Kind::Namespace, "", r.namespace())
        .is_some_and(|ns| {
            ns.meta
                .labels
                .get("istio-injection")
                .is_some_and(|v| v == "enabled")
        })
}

fn multiple_services(ix: &Index, r: &Resource, d: &DeploymentSpec, out: &mut Vec<Diagnostic>) {
    let services: Vec<(String, &ServiceSpec)> =
        ix.store
            .services()
            .filter(|(s, spec)| {
                s.namespace() == r.namespace()
                    && spec.selector.as_ref().is_some_and(|sel| {
                        !sel.is_empty() && selects(sel, &d.template.metadata.labels)
                    })
            })
            .map(|(s, spec)| (format!("{}/{}", s.namespace(), s.name()), spec))
            .collect();
    // port -> protocol -> services.
    let mut protocols: BTreeMap<u32, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    // targetPort -> port -> service.
    let mut targets: BTreeMap<String, BTreeMap<u32, &str>> = BTreeMap::new();
    for (name, spec) in &services {
        for p in &spec.ports {
            let protocol = p
                .protocol
                .as_deref()
                .filter(|x| !x.is_empty())
                .unwrap_or("TCP");
            protocols
                .entry(p.port)
                .or_default()
                .entry(protocol)
                .or_default()
                .push(name);
            let target = match &p.target_port {
                Some(IntOrString::Int(i)) if *i != 0 => i.to_string(),
                Some(IntOrString::Str(s)) if !s.is_empty() && s != "0" => s.clone(),
                _ => p.port.to_string(),
            };
            targets.entry(target).or_default().insert(p.port, name);
        }
    }
    for (port, by_protocol) in &protocols {
        if by_protocol.len() < 2 {
            continue;
        }
        let mut names: Vec<&str> = by_protocol.values().flatten().copied().collect();
        names.sort_unstable();
        out.push(finding(
            "IST0116",
            r,
            "metadata.name",
            format!(
                "This deployment {} is associated with multiple services using port {port} but different \
                 protocols: [{}]",
                r.name(),
                names.join(" ")
            ),
        ));
    }
    for (target, by_port) in &targets {
        if by_port.len() < 2 {
            continue;
        }
        let mut names: Vec<&str> = by_port.values().copied().collect();
        names.sort_unstable();
        let ports: Vec<String> = by_port.keys().map(u32::to_string).collect();
        out.push(finding(
            "IST0137",
            r,
            "metadata.name",
            format!(
                "This deployment {} is associated with multiple services [{}] using targetPort {target:?} but \
                 different ports: [{}].",
                r.name(),
                names.join(" "),
                ports.join(" ")
            ),
        ));
    }
}

fn application_uid(r: &Resource, p: &PodSpec, base: &str, out: &mut Vec<Diagnostic>) {
    let labels = &r.meta.labels;
    if labels.contains_key("istio") || labels.get("release").is_some_and(|v| v == "istio") {
        return;
    }
    let pod_level = p
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .filter(|u| *u == PROXY_UID)
        .map(|_| format!("{base}.securityContext.runAsUser"));
    let container_level = p.containers.iter().enumerate().find_map(|(i, c)| {
        let app = c.name != "istio-proxy" && c.name != "istio-operator";
        let uid = c.security_context.as_ref().and_then(|s| s.run_as_user);
        (app && uid == Some(PROXY_UID))
            .then(|| format!("{base}.containers[{i}].securityContext.runAsUser"))
    });
    // istioctl prints the finding once per resource, however many places set the UID.
    if let Some(path) = pod_level.or(container_level) {
        out.push(finding(
            "IST0144",
            r,
            &path,
            "User ID (UID) 1337 is reserved for the sidecar proxy.",
        ));
    }
}
