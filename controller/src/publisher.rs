//! The publisher: blind to where resources come from. It takes each new `Store`
//! the sources produce, works out which proxies the mesh has now (one gateway per
//! distinct Gateway selector, one sidecar per injected workload), compiles a
//! snapshot for each and pushes it through that proxy's `watch` channel. The set of
//! proxies is dynamic and published too ([`Publisher::proxies`]): a Gateway with a
//! new selector or a newly injected workload appears in it without a restart, and a
//! proxy whose workload left is dropped from it (its channel closes; the proxy keeps
//! serving its last snapshot until whoever started it stops it).

use std::collections::BTreeMap;
use std::sync::Arc;

use isthmus_model::compile::compile_sidecar;
use isthmus_model::compile::{compile_gateway_with, gateway_workloads, GatewayWorkload};
use isthmus_model::identity::Identity;
use isthmus_model::mesh::{mesh_workloads, MeshOptions, MeshWorkload};
use isthmus_model::{Diagnostic, Level, Snapshot, Store};
use tokio::sync::watch;

/// What kind of proxy, with what it is compiled for. (Few exist and they are
/// cloned rarely: the size difference between the variants does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ProxyKind {
    Gateway(GatewayWorkload),
    Sidecar(MeshWorkload),
}

impl ProxyKind {
    /// `gateway` or `sidecar` (proxy-status's `role`).
    pub fn role(&self) -> &'static str {
        match self {
            ProxyKind::Gateway(_) => "gateway",
            ProxyKind::Sidecar(_) => "sidecar",
        }
    }

    /// The identity this proxy is issued: a sidecar's workload identity, a
    /// gateway's service account in its namespace (Istio's
    /// `istio-ingressgateway-service-account`, or the egress one).
    pub fn identity(&self, trust_domain: &str) -> Identity {
        match self {
            ProxyKind::Sidecar(w) => w.identity.clone(),
            ProxyKind::Gateway(w) => Identity::new(
                trust_domain,
                w.namespace.clone(),
                gateway_service_account(w),
            ),
        }
    }

    /// The name `proxy-status` shows: a sidecar's WorkloadEntry, a gateway's
    /// `istio`/`app` label (else its labels).
    pub fn name(&self) -> String {
        match self {
            ProxyKind::Sidecar(w) => w.name.clone(),
            ProxyKind::Gateway(w) => w
                .labels
                .get("istio")
                .or_else(|| w.labels.get("app"))
                .cloned()
                .unwrap_or_else(|| {
                    w.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                }),
        }
    }

    /// A stable key: `gateway istio-system/istio=ingressgateway`,
    /// `sidecar default/todolist-v1`.
    pub fn id(&self) -> String {
        match self {
            ProxyKind::Gateway(w) => format!("gateway {}", gateway_name(w)),
            ProxyKind::Sidecar(w) => format!("sidecar {}/{}", w.namespace, w.name),
        }
    }
}

/// The service account of a gateway workload: Istio's egress gateway's for
/// `istio: egressgateway`, else the ingress gateway's.
pub fn gateway_service_account(w: &GatewayWorkload) -> &'static str {
    match w.labels.get("istio").map(String::as_str) {
        Some("egressgateway") => "istio-egressgateway-service-account",
        _ => "istio-ingressgateway-service-account",
    }
}

/// `istio-system/istio=ingressgateway`: how a gateway workload is named.
pub fn gateway_name(w: &GatewayWorkload) -> String {
    let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}/{}", w.namespace, labels.join(","))
}

/// One proxy of the current set and the stream of its snapshots.
#[derive(Debug, Clone)]
pub struct ProxyFeed {
    pub kind: ProxyKind,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// The proxies the mesh has at one configuration version.
#[derive(Debug, Clone, Default)]
pub struct ProxySet {
    pub version: u64,
    pub proxies: Vec<ProxyFeed>,
}

/// The resources in effect at one version (what remote proxies are sent).
#[derive(Debug, Clone, Default)]
pub struct Versioned {
    pub version: u64,
    pub store: Arc<Store>,
}

/// Compiles and pushes per proxy; see the module header.
pub struct Publisher {
    mesh: MeshOptions,
    version: u64,
    proxies: BTreeMap<String, (ProxyKind, watch::Sender<Arc<Snapshot>>)>,
    set: watch::Sender<Arc<ProxySet>>,
    stores: watch::Sender<Arc<Store>>,
    versioned: watch::Sender<Arc<Versioned>>,
}

impl Publisher {
    /// A publisher whose first version is `store`.
    pub fn new(store: Store, mesh: MeshOptions) -> Publisher {
        let store = Arc::new(store);
        let (set, _) = watch::channel(Arc::new(ProxySet::default()));
        let (stores, _) = watch::channel(store.clone());
        let (versioned, _) = watch::channel(Arc::new(Versioned::default()));
        let mut p = Publisher {
            mesh,
            version: 0,
            proxies: BTreeMap::new(),
            set,
            stores,
            versioned,
        };
        p.publish_arc(store);
        p
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn mesh_options(&self) -> &MeshOptions {
        &self.mesh
    }

    /// The set of proxies, now and after every change.
    pub fn proxies(&self) -> watch::Receiver<Arc<ProxySet>> {
        self.set.subscribe()
    }

    /// The resources in effect, now and after every change.
    pub fn stores(&self) -> watch::Receiver<Arc<Store>> {
        self.stores.subscribe()
    }

    /// The resources in effect with their version, now and after every change.
    pub fn versioned(&self) -> watch::Receiver<Arc<Versioned>> {
        self.versioned.subscribe()
    }

    /// Publish a new version: recompute the set of proxies, compile and push each.
    pub fn publish(&mut self, store: Store) {
        self.publish_arc(Arc::new(store));
    }

    fn publish_arc(&mut self, store: Arc<Store>) {
        self.version += 1;
        let wanted = wanted_proxies(&store, &self.mesh);
        let mut next = BTreeMap::new();
        let mut feeds = Vec::new();
        for kind in wanted {
            let id = kind.id();
            let snap = Arc::new(self.compile(&store, &kind));
            let tx = match self.proxies.remove(&id) {
                Some((_, tx)) => {
                    tx.send_replace(snap);
                    tx
                }
                None => watch::channel(snap).0,
            };
            feeds.push(ProxyFeed {
                kind: kind.clone(),
                snapshots: tx.subscribe(),
            });
            next.insert(id, (kind, tx));
        }
        // What is left has no workload any more: dropping the senders closes them.
        self.proxies = next;
        self.stores.send_replace(store.clone());
        self.versioned.send_replace(Arc::new(Versioned {
            version: self.version,
            store,
        }));
        self.set.send_replace(Arc::new(ProxySet {
            version: self.version,
            proxies: feeds,
        }));
    }

    fn compile(&self, store: &Store, kind: &ProxyKind) -> Snapshot {
        let (mut snap, diags) = match kind {
            ProxyKind::Gateway(w) => compile_gateway_with(store, w, &self.mesh),
            ProxyKind::Sidecar(w) => compile_sidecar(store, w, &self.mesh),
        };
        log(&diags);
        snap.version = self.version;
        snap
    }
}

/// The proxies `store` asks for: one gateway per gateway workload (Istio's default
/// ingress gateway when Gateways name no selector), one sidecar per injected
/// workload.
pub fn wanted_proxies(store: &Store, mesh: &MeshOptions) -> Vec<ProxyKind> {
    let mut out: Vec<ProxyKind> = gateway_workloads(store)
        .into_iter()
        .map(ProxyKind::Gateway)
        .collect();
    let workloads = mesh_workloads(store, mesh);
    out.extend(
        workloads
            .into_iter()
            .filter(|w| w.sidecar)
            .map(ProxyKind::Sidecar),
    );
    out
}

fn log(diags: &[Diagnostic]) {
    for d in diags {
        match d.level {
            Level::Error => tracing::error!("{d}"),
            Level::Warning => tracing::warn!("{d}"),
            Level::Info => tracing::debug!("{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::load::load_str;

    fn store(text: &str) -> Store {
        let loaded = load_str("t.yaml", text);
        Store::new(loaded.resources)
    }

    const GW_A: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: a}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";
    const GW_B: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: b}\nspec:\n  selector: {app: edge}\n  servers: [{port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]\n";

    #[test]
    fn a_gateway_with_a_new_selector_joins_the_set_while_running() {
        let mut p = Publisher::new(store(GW_A), MeshOptions::default());
        let mut set = p.proxies();
        let ids = |s: &ProxySet| s.proxies.iter().map(|f| f.kind.id()).collect::<Vec<_>>();
        assert_eq!(
            ids(&set.borrow_and_update()),
            ["gateway istio-system/istio=ingressgateway"]
        );
        let first = set.borrow().proxies[0].snapshots.clone();
        p.publish(store(&format!("{GW_A}---\n{GW_B}")));
        assert!(set.has_changed().unwrap_or(false));
        assert_eq!(
            ids(&set.borrow_and_update()),
            [
                "gateway istio-system/istio=ingressgateway",
                "gateway default/app=edge"
            ]
        );
        // The first gateway's channel is the same one, with the new version.
        assert_eq!(first.borrow().version, 2);
        let edge = set.borrow().proxies[1].snapshots.clone();
        assert_eq!(edge.borrow().listeners[0].port, 81);

        // Gone again: its channel closes; the other stays.
        p.publish(store(GW_A));
        assert_eq!(ids(&set.borrow_and_update()).len(), 1);
        assert!(edge.has_changed().is_err(), "closed");
        assert_eq!(first.borrow().version, 3);
    }
}
