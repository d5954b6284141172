//! The mesh's workloads: which `WorkloadEntry`s run with a sidecar (Istio's injection
//! decision, istio-api.md 1.10), their SPIFFE identities (1.9), and in explicit-port
//! local mode the loopback ports their sidecars listen on. Also the effective
//! `PeerAuthentication` mode of a workload port ([`effective_mtls`], 1.6).
//!
//! **Injection** follows the webhooks Istio installs, then the injector:
//! - the Namespace labelled `istio-injection=enabled` injects every workload that does
//!   not opt out; `istio-injection` with any other value (`disabled`) injects none;
//! - a Namespace without `istio-injection` but with `istio.io/rev` injects as
//!   `enabled` (isthmus has one control plane, so every revision is it);
//! - a Namespace with neither label injects only workloads labelled
//!   `sidecar.istio.io/inject=true` (or carrying `istio.io/rev`): Istio's object
//!   webhook selects on the label, so the annotation alone does not inject there;
//! - once a webhook applies, the label `sidecar.istio.io/inject` beats the annotation
//!   of the same name; only `"true"` and `"false"` count, anything else leaves the
//!   default (inject). `"false"` always opts out. Kubernetes' own namespaces
//!   (`kube-system`, `kube-public`, `kube-node-lease`, `local-path-storage`) are never
//!   injected.
//!
//! A WorkloadEntry's labels are its `spec.labels`, else its metadata labels (the same
//! rule the compiler uses to select it); the injection label is looked up in
//! `spec.labels`, then in the metadata labels.
//!
//! **Explicit-port mode** ([`MeshOptions::port_base`]): no iptables, so each sidecar
//! listens on loopback ports of its own. They are allocated deterministically: the
//! sidecar workloads in namespace/name order, for each its distinct ports in number
//! order, the next free port counting up from the base, then its outbound port. A
//! port is free when no earlier allocation, no override annotation and no
//! WorkloadEntry app port uses it. The annotations `isthmus.dev/inbound-port` (only
//! on a workload with one port) and `isthmus.dev/outbound-port` override the
//! allocation; an override does not consume a port of the sequence. Annotations that
//! cannot be used are reported ([`CODE_PORT_ANNOTATION`]) and ignored.

mod peer_auth;

pub use peer_auth::{effective_mtls, effective_mtls_in};

use std::collections::{BTreeMap, HashSet};

use crate::diag::{Diagnostic, Level};
use crate::identity::{Identity, DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN};
use crate::resources::networking::{Labels, WorkloadEntrySpec};
use crate::resources::{Resource, Store};

/// Warning: an `isthmus.dev/*-port` annotation cannot be used; it is ignored.
pub const CODE_PORT_ANNOTATION: &str = "ISM0211";

/// Pod (here: WorkloadEntry) label and annotation deciding injection.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// Namespace label enabling (`enabled`) or disabling injection.
pub const NAMESPACE_INJECTION: &str = "istio-injection";
/// Revision label (namespace or workload).
pub const REVISION: &str = "istio.io/rev";
/// WorkloadEntry annotation: the port the sidecar accepts mesh traffic on (explicit
/// mode, single-port workloads only).
pub const ANN_INBOUND_PORT: &str = "isthmus.dev/inbound-port";
/// WorkloadEntry annotation: the port the sidecar accepts the app's outbound
/// requests on (explicit mode).
pub const ANN_OUTBOUND_PORT: &str = "isthmus.dev/outbound-port";
/// Where explicit-mode sidecars listen.
pub const BIND_HOST: &str = "127.0.0.1";

/// Namespaces Istio's injector never injects.
const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// How the mesh is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshOptions {
    /// `MeshConfig.trustDomain` (default `cluster.local`).
    pub trust_domain: String,
    /// Explicit-port local mode: sidecar ports are allocated from here. `None`:
    /// transparent mode (as in a pod), the mesh address of a workload port is the
    /// workload's address and app port.
    pub port_base: Option<u16>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            port_base: None,
        }
    }
}

/// One WorkloadEntry as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshWorkload {
    pub namespace: String,
    pub name: String,
    /// `spec.labels`, else the metadata labels.
    pub labels: Labels,
    /// `spec.address` (empty when unset).
    pub address: String,
    /// `spec.ports`: port name -> number (values outside 1..65535 left out).
    pub ports: BTreeMap<String, u16>,
    /// `spec.serviceAccount`, default `default`.
    pub service_account: String,
    pub identity: Identity,
    /// Whether Istio would inject a sidecar (see the module header).
    pub sidecar: bool,
    /// Explicit-port mode, sidecar workloads: per app port (ascending), the address
    /// its sidecar accepts mesh traffic for that port on. Empty otherwise.
    pub inbound: Vec<(u16, (String, u16))>,
    /// Explicit-port mode, sidecar workloads: where its sidecar accepts the app's
    /// outbound requests.
    pub outbound: Option<(String, u16)>,
}

impl MeshWorkload {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The distinct app ports, ascending.
    pub fn app_ports(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self.ports.values().copied().collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Explicit-port mode: where the sidecar accepts mesh traffic for `app_port`.
    pub fn inbound_bind(&self, app_port: u16) -> Option<&(String, u16)> {
        self.inbound
            .iter()
            .find(|(p, _)| *p == app_port)
            .map(|(_, b)| b)
    }

    /// Where mesh traffic for `app_port` is sent: in explicit-port mode the
    /// sidecar's inbound bind (`None` when the port has none), else the workload's
    /// address and the app port (a pod's sidecar captures it there).
    pub fn mesh_address(&self, app_port: u16, opts: &MeshOptions) -> Option<(String, u16)> {
        if self.sidecar && opts.port_base.is_some() {
            return self.inbound_bind(app_port).cloned();
        }
        Some((self.address.clone(), app_port))
    }
}

/// Every WorkloadEntry, sorted by namespace/name (see [`mesh_workloads_checked`]).
pub fn mesh_workloads(store: &Store, opts: &MeshOptions) -> Vec<MeshWorkload> {
    mesh_workloads_checked(store, opts).0
}

/// [`mesh_workloads`], with the findings about the port annotations (explicit-port
/// mode only).
pub fn mesh_workloads_checked(
    store: &Store,
    opts: &MeshOptions,
) -> (Vec<MeshWorkload>, Vec<Diagnostic>) {
    let mut entries: Vec<(&Resource, &WorkloadEntrySpec)> = store.workload_entries().collect();
    entries.sort_by(|a, b| (a.0.namespace(), a.0.name()).cmp(&(b.0.namespace(), b.0.name())));
    let mut out: Vec<MeshWorkload> = entries
        .iter()
        .map(|(r, we)| workload(store, opts, r, we))
        .collect();
    let mut diags = Vec::new();
    if let Some(base) = opts.port_base {
        allocate(&entries, &mut out, base, &mut diags);
    }
    (out, diags)
}

fn workload(
    store: &Store,
    opts: &MeshOptions,
    r: &Resource,
    we: &WorkloadEntrySpec,
) -> MeshWorkload {
    let ns = r.namespace();
    let service_account = we
        .service_account
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_string();
    let trust_domain = if opts.trust_domain.is_empty() {
        DEFAULT_TRUST_DOMAIN
    } else {
        &opts.trust_domain
    };
    MeshWorkload {
        namespace: ns.to_string(),
        name: r.name().to_string(),
        labels: workload_labels(r, we).clone(),
        address: we.address.clone().unwrap_or_default(),
        ports: we
            .ports
            .iter()
            .filter_map(|(n, &p)| {
                u16::try_from(p)
                    .ok()
                    .filter(|&p| p != 0)
                    .map(|p| (n.clone(), p))
            })
            .collect(),
        identity: Identity::new(trust_domain, ns, service_account.as_str()),
        service_account,
        sidecar: injected(store, r, we),
        inbound: Vec::new(),
        outbound: None,
    }
}

/// A WorkloadEntry's labels: `spec.labels`, or its metadata labels when those are
/// empty.
pub fn workload_labels<'a>(r: &'a Resource, we: &'a WorkloadEntrySpec) -> &'a Labels {
    if we.labels.is_empty() {
        &r.meta.labels
    } else {
        &we.labels
    }
}

/// Whether Istio would inject a sidecar into this WorkloadEntry's workload.
pub fn injected(store: &Store, r: &Resource, we: &WorkloadEntrySpec) -> bool {
    let ns = r.namespace();
    let empty = Labels::new();
    let ns_labels = store
        .namespaces()
        .find(|(n, _)| n.name() == ns)
        .map_or(&empty, |(n, _)| &n.meta.labels);
    let label = |k: &str| {
        we.labels
            .get(k)
            .or_else(|| r.meta.labels.get(k))
            .map(String::as_str)
    };
    injection_decision(
        ns,
        ns_labels,
        label(INJECT),
        label(REVISION),
        r.meta.annotations.get(INJECT).map(String::as_str),
    )
}

/// Istio's injection decision (module header) from the namespace's name and labels
/// and the workload's `sidecar.istio.io/inject` label, `istio.io/rev` label and
/// `sidecar.istio.io/inject` annotation.
pub fn injection_decision(
    namespace: &str,
    namespace_labels: &Labels,
    inject_label: Option<&str>,
    revision_label: Option<&str>,
    inject_annotation: Option<&str>,
) -> bool {
    if IGNORED_NAMESPACES.contains(&namespace) {
        return false;
    }
    let webhook = match namespace_labels
        .get(NAMESPACE_INJECTION)
        .map(String::as_str)
    {
        Some("enabled") => true,
        Some(_) => false,
        None => {
            namespace_labels.contains_key(REVISION)
                || inject_label == Some("true")
                || revision_label.is_some()
        }
    };
    if !webhook {
        return false;
    }
    // The label beats the annotation even when its value is not a valid one.
    inject_label.or(inject_annotation) != Some("false")
}

/// Explicit-port allocation (module header).
fn allocate(
    entries: &[(&Resource, &WorkloadEntrySpec)],
    out: &mut [MeshWorkload],
    base: u16,
    diags: &mut Vec<Diagnostic>,
) {
    // Overrides first, so the sequence steps around them.
    let mut overrides: Vec<(Option<u16>, Option<u16>)> = Vec::with_capacity(out.len());
    let mut reserved: HashSet<u16> = HashSet::new();
    for w in out.iter() {
        reserved.extend(w.ports.values().copied());
    }
    for ((r, _), w) in entries.iter().zip(out.iter()) {
        if !w.sidecar {
            overrides.push((None, None));
            continue;
        }
        let inbound = annotation_port(r, ANN_INBOUND_PORT, diags).filter(|_| {
            let n = w.app_ports().len();
            if n != 1 {
                diags.push(annotation_diag(
                    r,
                    ANN_INBOUND_PORT,
                    format!(
                        "only a WorkloadEntry with exactly one port may set its inbound port (this one has {n}); ports are allocated instead"
                    ),
                ));
            }
            n == 1
        });
        let outbound = annotation_port(r, ANN_OUTBOUND_PORT, diags);
        reserved.extend(inbound);
        reserved.extend(outbound);
        overrides.push((inbound, outbound));
    }
    let mut taken: HashSet<u16> = HashSet::new();
    let mut next: u32 = u32::from(base);
    let mut alloc = |taken: &mut HashSet<u16>| -> Option<u16> {
        while let Ok(p) = u16::try_from(next) {
            next += 1;
            if !reserved.contains(&p) && !taken.contains(&p) {
                taken.insert(p);
                return Some(p);
            }
        }
        None
    };
    for (((r, _), w), (inbound, outbound)) in entries.iter().zip(out.iter_mut()).zip(overrides) {
        if !w.sidecar {
            continue;
        }
        let claim = |p: u16, ann: &str, taken: &mut HashSet<u16>, diags: &mut Vec<Diagnostic>| {
            if !taken.insert(p) {
                diags.push(annotation_diag(
                    r,
                    ann,
                    format!("port {p} is already used by another sidecar; both keep it, one of them cannot listen"),
                ));
            }
            p
        };
        for app in w.app_ports() {
            let port = match inbound {
                Some(p) => Some(claim(p, ANN_INBOUND_PORT, &mut taken, diags)),
                None => alloc(&mut taken),
            };
            match port {
                Some(p) => w.inbound.push((app, (BIND_HOST.to_string(), p))),
                None => diags.push(exhausted(r, base)),
            }
        }
        let port = match outbound {
            Some(p) => Some(claim(p, ANN_OUTBOUND_PORT, &mut taken, diags)),
            None => alloc(&mut taken),
        };
        match port {
            Some(p) => w.outbound = Some((BIND_HOST.to_string(), p)),
            None => diags.push(exhausted(r, base)),
        }
    }
}

fn exhausted(r: &Resource, base: u16) -> Diagnostic {
    Diagnostic::new(
        Level::Warning,
        CODE_PORT_ANNOTATION,
        format!("no free port left above {base} for this sidecar; it is not reachable"),
    )
    .at(r.origin_at("spec.ports"))
    .on(r)
    .field("spec.ports")
}

/// A port annotation's value, or `None` (with a finding when it is set but unusable).
fn annotation_port(r: &Resource, key: &str, diags: &mut Vec<Diagnostic>) -> Option<u16> {
    let v = r.meta.annotations.get(key)?;
    match v.trim().parse::<u16>() {
        Ok(p) if p != 0 => Some(p),
        _ => {
            diags.push(annotation_diag(
                r,
                key,
                format!("{v:?} is not a port number (1..65535); ignored"),
            ));
            None
        }
    }
}

fn annotation_diag(r: &Resource, key: &str, msg: String) -> Diagnostic {
    let field = format!("metadata.annotations.{key}");
    Diagnostic::new(Level::Warning, CODE_PORT_ANNOTATION, msg)
        .at(r.origin_at(&field))
        .on(r)
        .field(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn injection_follows_the_webhooks_then_the_injector() {
        let enabled = labels(&[(NAMESPACE_INJECTION, "enabled")]);
        let disabled = labels(&[(NAMESPACE_INJECTION, "disabled")]);
        let rev = labels(&[(REVISION, "canary")]);
        let none = Labels::new();
        let d = injection_decision;
        assert!(d("default", &enabled, None, None, None));
        assert!(!d("default", &enabled, Some("false"), None, None));
        assert!(!d("default", &enabled, None, None, Some("false")));
        // The label beats the annotation, even with a value that is not valid.
        assert!(d("default", &enabled, Some("true"), None, Some("false")));
        assert!(d("default", &enabled, Some("yes"), None, Some("false")));
        assert!(!d("default", &disabled, Some("true"), None, None));
        assert!(d("default", &rev, None, None, None));
        assert!(!d("default", &none, None, None, None));
        assert!(d("default", &none, Some("true"), None, None));
        // Istio's object webhook selects on the label: the annotation alone is not
        // enough in a namespace without injection labels.
        assert!(!d("default", &none, None, None, Some("true")));
        assert!(d("default", &none, None, Some("default"), None));
        assert!(!d("kube-system", &enabled, Some("true"), None, None));
    }
}
