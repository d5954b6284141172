//! What the analyzers look things up in, built once per [`super::analyze`] call:
//! workloads and their labels, services by host, namespaces, and the namespace a
//! Gateway's workload runs in (where Istio reads its `credentialName` secrets).

use std::collections::BTreeSet;

use crate::host;
use crate::resources::networking::GatewaySpec;
use crate::resources::{Kind, Labels, Resource, Store};

use super::{selector_string, selects};

/// Istio's default root namespace (`MeshConfig.rootNamespace`): mesh-wide policies
/// live here, and so does the default ingress gateway.
pub(super) const ROOT_NAMESPACE: &str = "istio-system";

/// Labels of Istio's default ingress gateway pods.
const INGRESS_LABEL: (&str, &str) = ("istio", "ingressgateway");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkloadKind {
    Pod,
    /// The pod template of a Deployment (its pods, whether or not they are loaded).
    Deployment,
    WorkloadEntry,
    /// Istio's default ingress gateway, assumed in `istio-system` when no loaded
    /// workload carries `istio=ingressgateway`. `istioctl analyze` adds the same
    /// stand-in pod to every analysis.
    ImplicitIngress,
}

/// Something a selector can select: a pod, a Deployment's pods, a WorkloadEntry.
#[derive(Debug, Clone)]
pub(super) struct Workload {
    pub namespace: String,
    pub name: String,
    pub kind: WorkloadKind,
    pub labels: Labels,
}

impl Workload {
    /// `Pod ns/name`, `Deployment ns/name`, ...
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::WorkloadEntry => "WorkloadEntry",
            WorkloadKind::ImplicitIngress => "default ingress gateway",
        };
        format!("{kind} {}/{}", self.namespace, self.name)
    }
}

/// A host a destination can name: a Kubernetes Service or one host of a ServiceEntry.
#[derive(Debug)]
pub(super) struct Service<'a> {
    pub resource: &'a Resource,
    /// FQDN, or a wildcard from a ServiceEntry.
    pub host: String,
    /// Namespaces that see it; `*` for all.
    pub export_to: Vec<String>,
    pub ports: Vec<u32>,
    /// Which workloads back it: the Service selector or the ServiceEntry
    /// `workloadSelector`, matched in the service's namespace.
    pub selector: Option<Labels>,
    /// Labels of ServiceEntry inline endpoints.
    pub endpoints: Vec<Labels>,
}

impl Service<'_> {
    fn visible_from(&self, namespace: &str) -> bool {
        self.export_to.iter().any(|e| e == "*" || e == namespace)
    }
}

/// Where a Gateway's workload runs, which decides where its secrets are read.
#[derive(Debug)]
pub(super) enum GatewayHome<'a> {
    /// A loaded (or the implicit default) workload matches the selector.
    Workload(&'a Workload),
    /// The store holds no workloads at all: assume the Gateway's own namespace.
    Assumed(String),
}

impl GatewayHome<'_> {
    pub fn namespace(&self) -> &str {
        match self {
            GatewayHome::Workload(w) => &w.namespace,
            GatewayHome::Assumed(ns) => ns,
        }
    }

    /// Why this namespace, for messages: "namespace X, where ...".
    pub fn explain(&self) -> String {
        match self {
            GatewayHome::Workload(w) if w.kind == WorkloadKind::ImplicitIngress => format!(
                "namespace {}, where the gateway workload runs: Istio's default ingress gateway, \
                 assumed because no loaded workload carries istio=ingressgateway",
                w.namespace
            ),
            GatewayHome::Workload(w) => format!(
                "namespace {}, where the gateway workload runs: {}",
                w.namespace,
                w.describe()
            ),
            GatewayHome::Assumed(ns) => format!(
                "namespace {ns}, the Gateway's own: no workloads are loaded, so where the gateway \
                 workload runs is unknown"
            ),
        }
    }
}

pub(super) struct Index<'a> {
    pub store: &'a Store,
    /// Pods, Deployments, WorkloadEntries, then the implicit ingress gateway if any.
    pub workloads: Vec<Workload>,
    /// Whether the store holds any workload at all (the implicit one aside).
    pub has_workloads: bool,
    pub services: Vec<Service<'a>>,
    /// Declared Namespaces, namespaces any resource lives in, `default` and the root.
    pub namespaces: BTreeSet<String>,
}

impl<'a> Index<'a> {
    pub fn new(store: &'a Store) -> Self {
        let mut workloads = Vec::new();
        for (r, _) in store.pods() {
            workloads.push(workload(r, WorkloadKind::Pod, r.meta.labels.clone()));
        }
        for (r, d) in store.deployments() {
            let labels = d.template.metadata.labels.clone();
            workloads.push(workload(r, WorkloadKind::Deployment, labels));
        }
        for (r, we) in store.workload_entries() {
            workloads.push(workload(r, WorkloadKind::WorkloadEntry, we.labels.clone()));
        }
        let has_workloads = !workloads.is_empty();
        let (k, v) = INGRESS_LABEL;
        if !workloads
            .iter()
            .any(|w| w.labels.get(k).is_some_and(|l| l == v))
        {
            workloads.push(Workload {
                namespace: ROOT_NAMESPACE.to_string(),
                name: "istio-ingressgateway".to_string(),
                kind: WorkloadKind::ImplicitIngress,
                labels: [(k.to_string(), v.to_string())].into(),
            });
        }

        let mut namespaces: BTreeSet<String> = ["default", ROOT_NAMESPACE]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for r in &store.resources {
            if r.kind == Kind::Namespace {
                namespaces.insert(r.name().to_string());
            } else if !r.kind.cluster_scoped() {
                namespaces.insert(r.namespace().to_string());
            }
        }

        Index {
            store,
            workloads,
            has_workloads,
            services: services(store),
            namespaces,
        }
    }

    /// The service a destination host names, as seen from `from_namespace`: an exact
    /// host first, then a wildcard ServiceEntry host covering it.
    pub fn find_service(&self, host: &str, from_namespace: &str) -> Option<&Service<'a>> {
        let visible = |s: &&Service<'a>| s.visible_from(from_namespace);
        self.services
            .iter()
            .filter(visible)
            .find(|s| s.host.eq_ignore_ascii_case(host))
            .or_else(|| {
                self.services
                    .iter()
                    .filter(visible)
                    .find(|s| host::is_wildcard(&s.host) && host::subset_of(host, &s.host))
            })
    }

    /// Labels of every workload that backs `service` (its endpoints).
    pub fn backing_labels<'s>(&'s self, service: &'s Service<'_>) -> Vec<&'s Labels> {
        let mut out: Vec<&Labels> = service.endpoints.iter().collect();
        if let Some(sel) = &service.selector {
            let ns = service.resource.namespace();
            out.extend(
                self.workloads
                    .iter()
                    .filter(|w| w.namespace == ns && selects(sel, &w.labels))
                    .map(|w| &w.labels),
            );
        }
        out
    }

    /// The indexes (in `workloads`) of the workloads of `namespace` that
    /// `selector` selects: a Sidecar's or Telemetry's `workloadSelector`.
    pub fn selected_in(&self, namespace: &str, selector: &Labels) -> Vec<usize> {
        self.workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| w.namespace == namespace && selects(selector, &w.labels))
            .map(|(i, _)| i)
            .collect()
    }

    /// Workloads a Gateway selector selects, in any namespace (Istio's default; a nil
    /// selector selects all). The implicit ingress gateway comes last.
    pub fn gateway_workloads(&self, gateway: &GatewaySpec) -> Vec<&Workload> {
        let empty = Labels::new();
        let sel = gateway.selector.as_ref().unwrap_or(&empty);
        self.workloads
            .iter()
            .filter(|w| selects(sel, &w.labels))
            .collect()
    }

    /// Where the Gateway's workload runs: the first selected workload (as istioctl
    /// does), or, when the store holds no workloads at all, the Gateway's namespace.
    /// `None` when workloads are loaded but none matches the selector.
    pub fn gateway_home(&self, r: &Resource, gateway: &GatewaySpec) -> Option<GatewayHome<'_>> {
        if let Some(w) = self.gateway_workloads(gateway).into_iter().next() {
            return Some(GatewayHome::Workload(w));
        }
        if self.has_workloads {
            None
        } else {
            Some(GatewayHome::Assumed(r.namespace().to_string()))
        }
    }

    /// Whether an AuthorizationPolicy namespace expression (`ns`, `prefix*`,
    /// `*suffix`, `*`) matches a known namespace.
    pub fn namespace_exists(&self, expr: &str) -> bool {
        self.namespaces.iter().any(|ns| namespace_match(ns, expr))
    }
}

fn workload(r: &Resource, kind: WorkloadKind, labels: Labels) -> Workload {
    Workload {
        namespace: r.namespace().to_string(),
        name: r.name().to_string(),
        kind,
        labels,
    }
}

/// The hosts destinations can name: ServiceEntry hosts (with `exportTo`) and
/// Kubernetes Services as `name.ns.svc.cluster.local` (with the
/// `networking.istio.io/exportTo` annotation).
fn services(store: &Store) -> Vec<Service<'_>> {
    let mut out = Vec::new();
    for (r, se) in store.service_entries() {
        let export_to = export_to(&se.export_to, r.namespace());
        let selector = se.workload_selector.as_ref().map(|s| s.labels.clone());
        let endpoints: Vec<Labels> = se.endpoints.iter().map(|e| e.labels.clone()).collect();
        for h in &se.hosts {
            out.push(Service {
                resource: r,
                host: host::expand_short_name(h, r.namespace()).into_owned(),
                export_to: export_to.clone(),
                ports: se.ports.iter().map(|p| p.number).collect(),
                selector: selector.clone(),
                endpoints: endpoints.clone(),
            });
        }
    }
    for (r, svc) in store.services() {
        let anno: Vec<String> = r
            .meta
            .annotations
            .get("networking.istio.io/exportTo")
            .map(|a| a.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        out.push(Service {
            resource: r,
            host: format!(
                "{}.{}.svc.{}",
                r.name(),
                r.namespace(),
                host::CLUSTER_DOMAIN
            ),
            export_to: export_to(&anno, r.namespace()),
            ports: svc.ports.iter().map(|p| p.port).collect(),
            selector: svc.selector.clone().filter(|s| !s.is_empty()),
            endpoints: Vec::new(),
        });
    }
    out
}

/// `exportTo` with `.` resolved; empty means everywhere.
fn export_to(list: &[String], own_namespace: &str) -> Vec<String> {
    if list.is_empty() {
        return vec!["*".to_string()];
    }
    list.iter()
        .map(|e| {
            if e == "." {
                own_namespace.to_string()
            } else {
                e.clone()
            }
        })
        .collect()
}

/// Istio's AuthorizationPolicy namespace matching: `*`, `*suffix`, `prefix*`, exact.
fn namespace_match(ns: &str, expr: &str) -> bool {
    if expr == "*" {
        true
    } else if let Some(suffix) = expr.strip_prefix('*') {
        ns.ends_with(suffix)
    } else if let Some(prefix) = expr.strip_suffix('*') {
        ns.starts_with(prefix)
    } else {
        ns.eq_ignore_ascii_case(expr)
    }
}

/// `(namespace, name)` of a `[ns/]name` reference written in `own_namespace`.
pub(super) fn split_ref<'s>(reference: &'s str, own_namespace: &'s str) -> (&'s str, &'s str) {
    reference
        .split_once('/')
        .unwrap_or((own_namespace, reference))
}

/// `"sel"` for messages, `(all workloads)` for an empty selector.
pub(super) fn describe_selector(selector: Option<&Labels>) -> String {
    match selector {
        Some(s) if !s.is_empty() => selector_string(s),
        _ => "(all workloads)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_expressions() {
        assert!(namespace_match("prod-httpbin", "prod-*"));
        assert!(namespace_match("httpbin-test", "*-test"));
        assert!(!namespace_match("httpbin", "*-bogus"));
        assert!(namespace_match("anything", "*"));
        assert!(!namespace_match("httpbin", "bogus-*"));
    }

    #[test]
    fn references() {
        assert_eq!(split_ref("gw", "default"), ("default", "gw"));
        assert_eq!(split_ref("other/gw", "default"), ("other", "gw"));
    }
}
