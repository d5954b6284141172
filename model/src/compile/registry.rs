//! The services a proxy can reach and the endpoints behind them, shared by the
//! gateway and the sidecar compiles.
//!
//! **Services** by host, visible to the proxy's namespace: `ServiceEntry` hosts
//! (`exportTo`) and Kubernetes `Service`s as `NAME.NS.svc.cluster.local` (the
//! `networking.istio.io/exportTo` annotation). Short names in destinations reach them
//! through [`crate::host::expand_short_name`] (`todolist` written in `default` is
//! `todolist.default.svc.cluster.local`).
//!
//! **Endpoints** of a host and port: those of every ServiceEntry declaring the host
//! (inline `endpoints`, `WorkloadEntry`s picked by `workloadSelector` in the entry's
//! namespace, or for DNS resolution without endpoints the host itself), then those
//! of the Kubernetes Service of that name: the WorkloadEntries of its namespace its
//! `selector` matches. A ServiceEntry and a Service with the same host therefore
//! merge: the ports of both, the endpoints of both (an address and port already
//! listed is not repeated). The app port of a Service endpoint follows Istio: the
//! WorkloadEntry's `ports` entry named like the Service port, else the `targetPort`
//! (a name is looked up in the WorkloadEntry's `ports`), else the Service `port`.
//!
//! **Mesh mTLS** (istio-api.md 1.3): an endpoint whose WorkloadEntry has a sidecar
//! ([`crate::mesh`]) gets Istio's auto-mTLS ([`UpstreamMtls`]) unless the workload's
//! PeerAuthentication for that port is DISABLE or the ServiceEntry is
//! `MESH_EXTERNAL` (its default location; Istio sends plaintext to external
//! services). In explicit-port mode it is reached at its sidecar's inbound port,
//! whether mTLS or not, as a pod's port is captured by its sidecar. The
//! DestinationRule's `trafficPolicy.tls` (merged as Istio does: a matching
//! `portLevelSettings` entry replaces the top-level `tls`, a subset's `tls` overrides
//! both, the subset's own matching port entry replaces that) overrides the automatic
//! choice: `ISTIO_MUTUAL` is mTLS (an endpoint without a sidecar cannot be reached,
//! nor one whose PeerAuthentication is DISABLE), `DISABLE` (also `tls: {}`) is
//! plaintext. `SIMPLE` and `MUTUAL` are not originated yet: plaintext, reported.
//! A sidecar whose PeerAuthentication is STRICT is never sent plaintext: such an
//! endpoint is left out with [`CODE_MESH_ENDPOINT_LEFT_OUT`], naming the field that
//! chose plaintext. Inline ServiceEntry endpoints have no WorkloadEntry, so no
//! sidecar.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    diag, labels_subset, visible_to, Compiler, CODE_NOT_APPLIED, CODE_NO_ENDPOINTS, ROOT_NAMESPACE,
};
use crate::diag::{Diagnostic, Level};
use crate::host;
use crate::mesh::{effective_mtls, workload_labels};
use crate::resources::core::{IntOrString, ServiceSpec};
use crate::resources::networking::{
    DestinationRuleSpec, Labels, Location, Resolution, ServiceEntrySpec, Subset, TrafficPolicy,
    WorkloadEntrySpec,
};
use crate::resources::policy::{ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings};
use crate::resources::{Resource, Store};
use crate::snapshot::{ConnectionPool, Endpoint, InboundMtls, UpstreamMtls};

/// Warning: a mesh endpoint is left out because it cannot be reached with the TLS
/// chosen for it (DestinationRule `tls.mode` against the workload's
/// PeerAuthentication, or `ISTIO_MUTUAL` to a workload without a sidecar).
pub const CODE_MESH_ENDPOINT_LEFT_OUT: &str = "ISM0210";

/// Kubernetes Services' annotation restricting their visibility.
const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// Services known by host (lower-case), visible to the proxy's namespace.
pub(super) struct Registry<'s> {
    pub(super) services: HashMap<String, Service<'s>>,
}

pub(super) struct Service<'s> {
    /// The host, lower-case.
    pub(super) host: String,
    /// Namespace of the first ServiceEntry declaring the host, else the Service's.
    pub(super) namespace: &'s str,
    pub(super) entries: Vec<(&'s Resource, &'s ServiceEntrySpec)>,
    /// The Kubernetes Service of that name.
    pub(super) kube: Option<(&'s Resource, &'s ServiceSpec)>,
}

impl<'s> Service<'s> {
    /// Distinct port numbers over all entries then the Service, in declaration order.
    pub(super) fn port_numbers(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let se = self
            .entries
            .iter()
            .flat_map(|(_, se)| se.ports.iter().map(|p| p.number));
        let kube = self
            .kube
            .iter()
            .flat_map(|(_, s)| s.ports.iter().map(|p| p.port));
        for n in se.chain(kube) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    /// The resource findings about the service name: its first ServiceEntry, else
    /// the Service.
    pub(super) fn resource(&self) -> &'s Resource {
        match (self.entries.first(), self.kube) {
            (Some((r, _)), _) => r,
            (None, Some((r, _))) => r,
            // A Service always has one of them.
            (None, None) => unreachable!("a registry service without a resource"),
        }
    }

    /// The protocol a port is declared with, when it is one the sidecar cannot serve
    /// as HTTP (`TCP`, `TLS`, `HTTPS`, ...): the first declaration of the port
    /// decides. `None`: HTTP, HTTP2, gRPC, or undeclared (Istio sniffs it).
    pub(super) fn non_http_protocol(&self, port: u32) -> Option<String> {
        for (_, se) in &self.entries {
            if let Some(p) = se.ports.iter().find(|p| p.number == port) {
                return p
                    .protocol
                    .as_deref()
                    .filter(|proto| is_http(proto) == Some(false))
                    .map(str::to_ascii_uppercase);
            }
        }
        let (_, svc) = self.kube?;
        let p = svc.ports.iter().find(|p| p.port == port)?;
        if p.protocol
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case("UDP"))
        {
            return Some("UDP".to_string());
        }
        let declared = match p.app_protocol.as_deref().filter(|a| !a.is_empty()) {
            Some(a) => a.trim_start_matches("kubernetes.io/"),
            None => p.name.split('-').next().unwrap_or(""),
        };
        (is_http(declared) == Some(false)).then(|| declared.to_ascii_uppercase())
    }
}

/// Istio's protocol names: `Some(true)` served as HTTP, `Some(false)` a known
/// non-HTTP protocol, `None` unknown (sniffed: served as HTTP here).
fn is_http(protocol: &str) -> Option<bool> {
    match protocol.to_ascii_lowercase().as_str() {
        "http" | "http2" | "h2c" | "grpc" | "grpc-web" | "http_proxy" | "ws" => Some(true),
        "tcp" | "udp" | "sctp" | "tls" | "https" | "mongo" | "redis" | "mysql" => Some(false),
        _ => None,
    }
}

impl<'s> Registry<'s> {
    pub(super) fn new(store: &'s Store, proxy_ns: &str) -> Self {
        let mut services: HashMap<String, Service<'s>> = HashMap::new();
        for (r, se) in store.service_entries() {
            if !visible_to(&se.export_to, r.namespace(), proxy_ns) {
                continue;
            }
            for h in &se.hosts {
                let h = h.to_ascii_lowercase();
                services
                    .entry(h.clone())
                    .or_insert_with(|| Service {
                        host: h,
                        namespace: r.namespace(),
                        entries: Vec::new(),
                        kube: None,
                    })
                    .entries
                    .push((r, se));
            }
        }
        for (r, svc) in store.services() {
            let export_to: Vec<String> = r
                .meta
                .annotations
                .get(EXPORT_TO_ANNOTATION)
                .map(|a| {
                    a.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if !visible_to(&export_to, r.namespace(), proxy_ns) {
                continue;
            }
            let h = format!(
                "{}.{}.svc.{}",
                r.name(),
                r.namespace(),
                host::CLUSTER_DOMAIN
            )
            .to_ascii_lowercase();
            services
                .entry(h.clone())
                .or_insert_with(|| Service {
                    host: h,
                    namespace: r.namespace(),
                    entries: Vec::new(),
                    kube: None,
                })
                .kube
                .get_or_insert((r, svc));
        }
        Registry { services }
    }

    /// Every service, by host.
    pub(super) fn sorted(&self) -> Vec<&Service<'s>> {
        let mut out: Vec<&Service<'s>> = self.services.values().collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

/// DestinationRules that apply to the proxy, with hosts expanded and lower-cased.
pub(super) struct RuleIndex<'s> {
    rules: Vec<(&'s Resource, String, &'s DestinationRuleSpec)>,
}

pub(super) enum SubsetLookup<'s> {
    Found(&'s Subset),
    /// A DestinationRule for the host exists but does not define the subset.
    Undefined(&'s Resource),
    NoRule,
}

/// The client TLS a DestinationRule sets for a cluster.
pub(super) struct UpstreamTls<'s> {
    pub(super) dr: &'s Resource,
    /// Path of the deciding `tls.mode` (or of `tls` when the mode is left out).
    pub(super) field: String,
    pub(super) mode: ClientTlsMode,
}

impl<'s> RuleIndex<'s> {
    pub(super) fn new(store: &'s Store, proxy_ns: &str, proxy_labels: &Labels) -> Self {
        let mut rules = Vec::new();
        for (r, dr) in store.destination_rules() {
            let ns = r.namespace();
            if !visible_to(&dr.export_to, ns, proxy_ns) {
                continue;
            }
            if let Some(sel) = &dr.workload_selector {
                if ns != proxy_ns || !labels_subset(&sel.match_labels, proxy_labels) {
                    continue;
                }
            }
            let h = host::expand_short_name(&dr.host, ns).to_ascii_lowercase();
            rules.push((r, h, dr));
        }
        RuleIndex { rules }
    }

    /// The rules that decide for `hostname`: in the first namespace of `order` with a
    /// rule for the host, those for its most specific host (same-host rules merge),
    /// in store order.
    fn deciding(
        &self,
        hostname: &str,
        order: &[&str],
    ) -> Vec<(&'s Resource, &'s DestinationRuleSpec)> {
        let mut tried: Vec<&str> = Vec::new();
        for &ns in order {
            if tried.contains(&ns) {
                continue;
            }
            tried.push(ns);
            let best = self
                .rules
                .iter()
                .filter(|(r, h, _)| r.namespace() == ns && host::subset_of(hostname, h))
                .map(|(_, h, _)| h)
                .max_by_key(|h| (!host::is_wildcard(h), h.len()));
            let Some(best) = best else { continue };
            return self
                .rules
                .iter()
                .filter(|(r, h, _)| r.namespace() == ns && h == best)
                .map(|(r, _, dr)| (*r, *dr))
                .collect();
        }
        Vec::new()
    }

    /// The subset `name` of `hostname` (first definition wins among merged rules).
    pub(super) fn subset(&self, hostname: &str, name: &str, order: &[&str]) -> SubsetLookup<'s> {
        let rules = self.deciding(hostname, order);
        for (_, dr) in &rules {
            if let Some(s) = dr.subsets.iter().find(|s| s.name == name) {
                return SubsetLookup::Found(s);
            }
        }
        match rules.first() {
            Some((r, _)) => SubsetLookup::Undefined(r),
            None => SubsetLookup::NoRule,
        }
    }

    /// The `tls` the rules set for a cluster (see the module header), `None` when
    /// they set none (Istio's auto-mTLS decides).
    pub(super) fn upstream_tls(
        &self,
        hostname: &str,
        subset: Option<&str>,
        port: u16,
        order: &[&str],
    ) -> Option<UpstreamTls<'s>> {
        let rules = self.deciding(hostname, order);
        let mut chosen: Option<(&'s Resource, &'s ClientTlsSettings, String)> = None;
        if let Some((r, p)) = rules
            .iter()
            .find_map(|(r, dr)| dr.traffic_policy.as_ref().map(|p| (*r, p)))
        {
            if let Some(said) = policy_tls(p, "spec.trafficPolicy", port) {
                chosen = said.map(|(t, f)| (r, t, f));
            }
        }
        if let Some(name) = subset {
            let found = rules.iter().find_map(|(r, dr)| {
                dr.subsets
                    .iter()
                    .position(|s| s.name == name)
                    .map(|j| (*r, j, &dr.subsets[j]))
            });
            if let Some((r, j, s)) = found {
                if let Some(p) = &s.traffic_policy {
                    let base = format!("spec.subsets[{j}].trafficPolicy");
                    if let Some(said) = policy_tls(p, &base, port) {
                        chosen = said.map(|(t, f)| (r, t, f));
                    }
                }
            }
        }
        let (dr, tls, path) = chosen?;
        let (mode, field) = match tls.mode {
            Some(m) => (m, format!("{path}.mode")),
            None => (ClientTlsMode::Disable, path),
        };
        Some(UpstreamTls { dr, field, mode })
    }
}

impl<'s> RuleIndex<'s> {
    /// The `connectionPool` the rules set for a cluster: the top-level policy's,
    /// replaced by a matching `portLevelSettings` entry's, replaced by the subset's
    /// (Istio's merge: the most specific `connectionPool` wins whole).
    pub(super) fn connection_pool(
        &self,
        hostname: &str,
        subset: Option<&str>,
        port: u16,
        order: &[&str],
    ) -> ConnectionPool {
        let rules = self.deciding(hostname, order);
        let mut chosen = rules
            .iter()
            .find_map(|(_, dr)| dr.traffic_policy.as_ref())
            .and_then(|p| policy_pool(p, port));
        if let Some(name) = subset {
            let policy = rules.iter().find_map(|(_, dr)| {
                dr.subsets
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| s.traffic_policy.as_ref())
            });
            if let Some(p) = policy.and_then(|p| policy_pool(p, port)) {
                chosen = Some(p);
            }
        }
        let Some(cp) = chosen else {
            return ConnectionPool::default();
        };
        // Validation reports negative values; they mean no limit here.
        let limit = |v: Option<i32>| v.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
        ConnectionPool {
            max_connections: limit(cp.tcp.as_ref().and_then(|t| t.max_connections)),
            http1_max_pending_requests: limit(
                cp.http.as_ref().and_then(|h| h.http1_max_pending_requests),
            ),
            http2_max_requests: limit(cp.http.as_ref().and_then(|h| h.http2_max_requests)),
            max_requests_per_connection: limit(
                cp.http.as_ref().and_then(|h| h.max_requests_per_connection),
            ),
            // Validation reports a bad duration; it means the default here.
            connect_timeout: cp
                .tcp
                .as_ref()
                .and_then(|t| t.connect_timeout.as_deref())
                .and_then(|d| crate::validate::parse_duration(d).ok())
                .filter(|d| !d.is_zero()),
        }
    }
}

/// A traffic policy's `connectionPool` for `port` (a matching port-level entry's
/// wins).
fn policy_pool(p: &TrafficPolicy, port: u16) -> Option<&ConnectionPoolSettings> {
    p.port_level_settings
        .iter()
        .find(|pl| {
            pl.port
                .as_ref()
                .is_some_and(|s| s.number == u32::from(port))
        })
        .and_then(|pl| pl.connection_pool.as_ref())
        .or(p.connection_pool.as_ref())
}

/// What one traffic policy says about `tls` for `port`: `None` nothing; `Some(None)`
/// back to the default (a matching port entry without `tls`); `Some(Some(..))` the
/// settings and their path. A matching `portLevelSettings` entry replaces the
/// policy's `tls`.
fn policy_tls<'a>(
    p: &'a TrafficPolicy,
    base: &str,
    port: u16,
) -> Option<Option<(&'a ClientTlsSettings, String)>> {
    let level = p.port_level_settings.iter().position(|pl| {
        pl.port
            .as_ref()
            .is_some_and(|s| s.number == u32::from(port))
    });
    match level {
        Some(k) => Some(
            p.port_level_settings[k]
                .tls
                .as_ref()
                .map(|t| (t, format!("{base}.portLevelSettings[{k}].tls"))),
        ),
        None => p.tls.as_ref().map(|t| Some((t, format!("{base}.tls")))),
    }
}

fn mode_name(mode: ClientTlsMode) -> &'static str {
    match mode {
        ClientTlsMode::Disable => "DISABLE",
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
    }
}

/// An endpoint before the mesh decides how it is reached.
struct Candidate<'s> {
    address: String,
    /// The app port (or, for a DNS host, the port connected to).
    port: u16,
    /// The WorkloadEntry behind it, when there is one.
    workload: Option<&'s Resource>,
    /// The ServiceEntry or Service it comes from.
    source: &'s Resource,
    /// `location: MESH_EXTERNAL` (a ServiceEntry's default): no auto-mTLS.
    external: bool,
    /// `resolution: DNS_ROUND_ROBIN`: the engine uses the first address of each
    /// DNS answer (Envoy's LOGICAL_DNS).
    logical_dns: bool,
}

impl<'s> Compiler<'s> {
    /// The DestinationRule `connectionPool` of a cluster (none for a host no
    /// registry knows: it has no endpoints anyway).
    pub(super) fn connection_pool(
        &self,
        r: &Resource,
        hostname: &str,
        port: u16,
        subset: Option<&str>,
    ) -> ConnectionPool {
        let Some(service_ns) = self.registry.services.get(hostname).map(|s| s.namespace) else {
            return ConnectionPool::default();
        };
        let order = [r.namespace(), service_ns, ROOT_NAMESPACE];
        self.rules.connection_pool(hostname, subset, port, &order)
    }

    /// The endpoints of a cluster, with the mesh's TLS decided per endpoint. An
    /// unknown host, port or subset gives none, with a Warning.
    pub(super) fn endpoints(
        &mut self,
        r: &Resource,
        path: &str,
        hostname: &str,
        port: u16,
        subset: Option<&str>,
    ) -> Vec<Endpoint> {
        let warn = |msg: String| diag(Level::Warning, CODE_NO_ENDPOINTS, r, path, msg);
        let Some((service_ns, ports, entries, kube)) = self
            .registry
            .services
            .get(hostname)
            .map(|s| (s.namespace, s.port_numbers(), s.entries.clone(), s.kube))
        else {
            self.diags.push(warn(format!(
                "no ServiceEntry declares host {hostname} and no Service is named so: requests get 503"
            )));
            return Vec::new();
        };
        if !ports.contains(&u32::from(port)) {
            self.diags.push(warn(format!(
                "{hostname} has no port {port} (ports: {ports:?}): requests get 503"
            )));
            return Vec::new();
        }
        let order = [r.namespace(), service_ns, ROOT_NAMESPACE];
        let selector = match subset {
            None => None,
            Some(name) => match self.rules.subset(hostname, name, &order) {
                SubsetLookup::Found(s) => Some(&s.labels),
                SubsetLookup::Undefined(dr) => {
                    self.diags.push(warn(format!(
                        "subset {name:?} is not defined in {}: requests get 503",
                        dr.display_ref()
                    )));
                    return Vec::new();
                }
                SubsetLookup::NoRule => {
                    self.diags.push(warn(format!(
                        "no DestinationRule for {hostname} defines subset {name:?}: requests get 503"
                    )));
                    return Vec::new();
                }
            },
        };
        let mut found = Vec::new();
        for entry in &entries {
            self.entry_endpoints(entry, hostname, port, selector, &mut found);
        }
        if let Some(service) = kube {
            self.service_endpoints(service, port, selector, &mut found);
        }
        // An address and port listed twice (an entry and the Service selecting the
        // same workload) is one endpoint, internal to the mesh if either says so.
        let mut unique: Vec<Candidate<'s>> = Vec::with_capacity(found.len());
        for c in found {
            match unique
                .iter_mut()
                .find(|u| u.address == c.address && u.port == c.port)
            {
                Some(u) => u.external &= c.external,
                None => unique.push(c),
            }
        }
        let found = unique;
        let tls = self.rules.upstream_tls(hostname, subset, port, &order);
        let cluster = format!("outbound|{port}|{}|{hostname}", subset.unwrap_or(""));
        let mut out = Vec::new();
        for c in &found {
            if let Some(e) = self.mesh_endpoint(&cluster, c, tls.as_ref()) {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
        if out.is_empty() {
            let what = match subset {
                Some(name) => format!("subset {name:?} of {hostname}"),
                None => hostname.to_string(),
            };
            self.diags.push(warn(format!(
                "{what} has no endpoints on port {port}: requests get 503"
            )));
        }
        out
    }

    /// How one endpoint is reached: plaintext, or mTLS to its sidecar (module
    /// header). `None` (with a Warning) when it cannot be reached.
    fn mesh_endpoint(
        &mut self,
        cluster: &str,
        c: &Candidate<'s>,
        tls: Option<&UpstreamTls<'s>>,
    ) -> Option<Endpoint> {
        let mesh = &self.mesh;
        let sidecar = c
            .workload
            .and_then(|we| mesh.get(&format!("{}/{}", we.namespace(), we.name())))
            .filter(|w| w.sidecar);
        let Some(w) = sidecar else {
            if let Some(tls) = tls.filter(|t| t.mode == ClientTlsMode::IstioMutual) {
                let what = match c.workload {
                    Some(we) => format!("{} has no sidecar", we.display_ref()),
                    None => format!(
                        "it is not a mesh workload (an address of {})",
                        c.source.display_ref()
                    ),
                };
                self.diags.push(left_out(
                    tls.dr,
                    &tls.field,
                    format!(
                        "ISTIO_MUTUAL needs the peer's sidecar, but endpoint {}:{} of {} has none ({what}); the endpoint is left out",
                        c.address, c.port, cluster
                    ),
                ));
                return None;
            }
            return Some(Endpoint {
                logical_dns: c.logical_dns,
                ..Endpoint::plain(c.address.clone(), c.port)
            });
        };
        let we = c.workload?;
        let (peer, policy) = effective_mtls(self.store, &w.namespace, &w.labels, c.port);
        let mtls = match tls.map(|t| t.mode) {
            None => !c.external && peer != InboundMtls::Disable,
            Some(ClientTlsMode::IstioMutual) => true,
            Some(ClientTlsMode::Disable) => false,
            Some(other) => {
                if let Some(tls) = tls {
                    self.diags.push(diag(
                        Level::Info,
                        CODE_NOT_APPLIED,
                        tls.dr,
                        &tls.field,
                        format!(
                            "tls.mode {} is not applied yet to mesh workloads: {} is sent plaintext",
                            mode_name(other),
                            cluster
                        ),
                    ));
                }
                false
            }
        };
        let peer_text = format!("{} on port {} ({policy})", we.display_ref(), c.port);
        if mtls && peer == InboundMtls::Disable {
            // Only ISTIO_MUTUAL gets here: auto-mTLS follows the peer's DISABLE.
            if let Some(tls) = tls {
                self.diags.push(left_out(
                    tls.dr,
                    &tls.field,
                    format!(
                        "ISTIO_MUTUAL sends mTLS to {}, but {peer_text} accepts plaintext only (DISABLE); endpoint {}:{} is left out",
                        cluster, c.address, c.port
                    ),
                ));
            }
            return None;
        }
        if !mtls && peer == InboundMtls::Strict {
            let msg = |why: &str| {
                format!(
                    "{why} sends plaintext to {}, but {peer_text} accepts mTLS only (STRICT): it is never reached in plaintext; endpoint {}:{} is left out",
                    cluster, c.address, c.port
                )
            };
            let d = match tls {
                Some(tls) => left_out(
                    tls.dr,
                    &tls.field,
                    msg(&format!("tls.mode {}", mode_name(tls.mode))),
                ),
                None => left_out(
                    c.source,
                    "spec.location",
                    msg("location MESH_EXTERNAL (the default; set MESH_INTERNAL for mesh workloads)"),
                ),
            };
            self.diags.push(d);
            return None;
        }
        let Some((address, port)) = w.mesh_address(c.port, &self.mesh_options) else {
            self.diags.push(diag(
                Level::Warning,
                CODE_MESH_ENDPOINT_LEFT_OUT,
                we,
                "spec.ports",
                format!(
                    "{} sends to app port {} of this workload, which spec.ports does not declare: its sidecar has no inbound port for it; the endpoint is left out",
                    cluster, c.port
                ),
            ));
            return None;
        };
        let mtls = mtls.then(|| {
            Arc::new(UpstreamMtls {
                identity: w.identity.uri(),
                server_name: w.identity.dns_name(),
            })
        });
        Some(Endpoint {
            address,
            port,
            mtls,
            logical_dns: false,
        })
    }

    /// Endpoints one ServiceEntry gives a host and port, filtered by subset labels.
    fn entry_endpoints(
        &mut self,
        (r, se): &(&'s Resource, &'s ServiceEntrySpec),
        hostname: &str,
        port: u16,
        selector: Option<&Labels>,
        out: &mut Vec<Candidate<'s>>,
    ) {
        let Some(sp) = se.ports.iter().find(|p| p.number == u32::from(port)) else {
            return;
        };
        let external = se.location.unwrap_or(Location::MeshExternal) == Location::MeshExternal;
        let mut workloads: Vec<(Option<&'s Resource>, &'s WorkloadEntrySpec, &'s Labels)> =
            se.endpoints.iter().map(|w| (None, w, &w.labels)).collect();
        if let Some(sel) = &se.workload_selector {
            for (wr, we) in self.store.workload_entries() {
                let labels = workload_labels(wr, we);
                if wr.namespace() == r.namespace() && labels_subset(&sel.labels, labels) {
                    workloads.push((Some(wr), we, labels));
                }
            }
        }
        let resolution = se.resolution.unwrap_or(Resolution::None);
        let dns = matches!(
            resolution,
            Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns
        );
        let logical_dns = resolution == Resolution::DnsRoundRobin;
        if workloads.is_empty() && se.workload_selector.is_none() && dns {
            // DNS with no endpoints: the host itself, resolved by the engine.
            if !host::is_wildcard(hostname) && selector.is_none_or(|s| s.is_empty()) {
                let p = sp.target_port.filter(|&t| t != 0).unwrap_or(sp.number);
                if let Ok(p) = u16::try_from(p) {
                    out.push(Candidate {
                        address: hostname.to_string(),
                        port: p,
                        workload: None,
                        source: r,
                        external,
                        logical_dns,
                    });
                }
            }
            return;
        }
        if resolution == Resolution::None && !workloads.is_empty() {
            self.diags.push(
                Diagnostic::new(
                    Level::Info,
                    CODE_NOT_APPLIED,
                    "resolution NONE (the default) forwards to the original destination, which a gateway does not have; the listed endpoints are used as with STATIC",
                )
                .at(r.origin_at("spec.resolution"))
                .on(r)
                .field("spec.resolution"),
            );
        }
        for (wr, w, labels) in workloads {
            let Some(address) = w.address.as_deref().filter(|a| !a.is_empty()) else {
                continue;
            };
            if selector.is_some_and(|s| !labels_subset(s, labels)) {
                continue;
            }
            let p = w
                .ports
                .get(&sp.name)
                .copied()
                .filter(|&p| p != 0)
                .or(sp.target_port.filter(|&t| t != 0))
                .unwrap_or(sp.number);
            let Ok(p) = u16::try_from(p) else { continue };
            out.push(Candidate {
                address: address.to_string(),
                port: p,
                workload: wr,
                source: r,
                external,
                logical_dns,
            });
        }
    }

    /// Endpoints a Kubernetes Service gives a port: the WorkloadEntries of its
    /// namespace its selector matches, filtered by subset labels.
    fn service_endpoints(
        &mut self,
        (r, svc): (&'s Resource, &'s ServiceSpec),
        port: u16,
        selector: Option<&Labels>,
        out: &mut Vec<Candidate<'s>>,
    ) {
        let Some(service_selector) = svc.selector.as_ref().filter(|s| !s.is_empty()) else {
            return;
        };
        let Some(sp) = svc.ports.iter().find(|p| p.port == u32::from(port)) else {
            return;
        };
        for (wr, we) in self.store.workload_entries() {
            if wr.namespace() != r.namespace() {
                continue;
            }
            let labels = workload_labels(wr, we);
            if !labels_subset(service_selector, labels)
                || selector.is_some_and(|s| !labels_subset(s, labels))
            {
                continue;
            }
            let Some(address) = we.address.as_deref().filter(|a| !a.is_empty()) else {
                continue;
            };
            let named = |name: &str| we.ports.get(name).copied().filter(|&p| p != 0);
            let p = named(&sp.name).unwrap_or_else(|| match &sp.target_port {
                Some(IntOrString::Int(n)) if *n > 0 => u32::try_from(*n).unwrap_or(sp.port),
                Some(IntOrString::Str(name)) => named(name).unwrap_or(sp.port),
                _ => sp.port,
            });
            let Ok(p) = u16::try_from(p) else { continue };
            out.push(Candidate {
                address: address.to_string(),
                port: p,
                workload: Some(wr),
                source: r,
                external: false,
                logical_dns: false,
            });
        }
    }
}

fn left_out(r: &Resource, field: &str, msg: String) -> Diagnostic {
    diag(Level::Warning, CODE_MESH_ENDPOINT_LEFT_OUT, r, field, msg)
}
