//! Compilation of a [`Store`] into the [`Snapshot`] of one gateway workload, with
//! Istio's gateway semantics (`pilot/pkg/networking/core/gateway.go` and `route.go`).
//!
//! What is decided here, in order:
//! 1. **Gateways** whose `selector` is a subset of the workload's labels (nil or empty
//!    selector: every workload; Gateways of every namespace are considered). Servers
//!    with protocol HTTP, HTTP2, GRPC or GRPC-WEB become one HTTP [`Listener`] per port
//!    (servers of several Gateways on one port merge). HTTPS servers with
//!    `tls.mode` SIMPLE, MUTUAL or OPTIONAL_MUTUAL and a `credentialName` become
//!    HTTPS listeners the same way: the same virtual hosts and routes (Istio applies
//!    `http` rules to terminated HTTPS), plus per server its SNI names, certificate and
//!    [`TlsPolicy`] ([`TlsTermination`]). One router serves every server of the port,
//!    so a request's `Host` is not checked against its SNI here (Envoy's per-server
//!    route tables would 404 a mismatch). HTTP and HTTPS servers on one port
//!    conflict: the later ones are dropped with an Error. Other TLS modes, TLS, TCP
//!    and other protocols are skipped with an Info finding.
//!    **Certificates** follow Istio's `credentialName` rule: the Secret `name`
//!    (`kubernetes://name`) in the gateway workload's namespace, or `ns/name`
//!    (`kubernetes://ns/name`); keys `cert`/`key`, else `tls.crt`/`tls.key`. A missing
//!    secret (IST0101) or one without usable PEM (IST0161) is an Error; that server's
//!    certificate is left out (its handshakes are refused) and the rest still serves.
//!    A missing Secret that a cert-manager `Certificate` in that namespace will write
//!    (isthmus orders it over ACME) is an Info "pending" instead. On a Gateway
//!    annotated `isthmus.dev/acme-issuer`, a server without `credentialName` is served
//!    from the Secret isthmus orders for it (`certs::auto::generated_secret_name`, in
//!    the workload's namespace), and a missing Secret is pending too.
//!    **Client CAs** (MUTUAL, OPTIONAL_MUTUAL) as Istio's `GetCaCert`: the Secret named
//!    by `caCertCredentialName`, else `<credentialName>-cacert`, else the credential's
//!    own Secret; keys `cacert`, then `ca.crt`. Without one, or with a
//!    `verifyCertificate*` pin that cannot be read, the server refuses every handshake
//!    (an Error) rather than admit unauthenticated clients. **Versions**: TLS 1.2
//!    (default minimum) and 1.3; 1.0 and 1.1 are raised to 1.2 with a Warning.
//!    **Cipher suites**: OpenSSL (Envoy) or IANA names of the suites rustls offers;
//!    others are ignored with a Warning.
//! 2. **VirtualService binding**: top-level `gateways` entries `name` (the VS's
//!    namespace), `ns/name`, `./name` or the legacy `name.ns.svc...`; an empty list means
//!    `mesh` only, so the VS does not bind to any gateway. `match[].gateways` only
//!    narrows which match blocks apply, it does not bind. `exportTo` is checked against
//!    the workload's namespace (as istiod does, which uses the proxy's namespace).
//! 3. **Order**: VirtualServices are taken in store (load) order: files sorted by path,
//!    documents in file order. Istio sorts by creation time, which for `kubectl apply`
//!    of the same files is the same order. As in istiod, VirtualServices private to the
//!    workload's namespace come first, then those exported to it by name, then public
//!    ones. Per VirtualService, routes after its first catch-all are not emitted; on
//!    each virtual host the routes of all VirtualServices are concatenated and the
//!    catch-alls (Istio `IsCatchAllRoute`) moved last, keeping relative order.
//! 4. **Virtual hosts**: per server, the domains are the intersection of the server's
//!    hosts admitted for the VS's namespace (`[ns/]host`) with the VS's hosts (short
//!    names expanded with the VS's namespace); one vhost per domain and port.
//! 5. **Match blocks**: one [`Route`] per (rule x match block); a rule without `match` is
//!    one catch-all route. A block whose `port` is not the listener port is dropped. A
//!    block with `gateways` applies only when it names this Gateway; otherwise its
//!    `sourceLabels`/`sourceNamespace` are compared with the gateway workload's labels
//!    and namespace, as istiod does for gateways (`sourceMatchHTTP`): a block selecting
//!    application pods therefore never applies at a gateway.
//! 6. **Destinations**: relative weights; one destination gets all traffic whatever its
//!    weight; with several, zero weights are dropped, and a total of 0 drops the route.
//!    Clusters are named `outbound|PORT|SUBSET|HOST`. The port is
//!    `destination.port.number`, else the service's only port, else the listener port
//!    (istiod's fallback), reported as an error when the service lacks that port.
//! 7. **Endpoints** (`compile/registry.rs`) come from `ServiceEntry` (inline `endpoints` and
//!    `WorkloadEntry`s picked by `workloadSelector` in the entry's namespace) and from
//!    Kubernetes `Service`s (the WorkloadEntries their `selector` matches; `Pod`s are
//!    not read). Subsets come from the `DestinationRule` for the host, looked up in
//!    the VS's namespace, then the service's, then `istio-system`. An unknown host,
//!    port or subset still gives a cluster, without endpoints (the engine answers
//!    503), and a Warning. Endpoints whose workload has a sidecar are reached over
//!    mesh mTLS (Istio's auto-mTLS, or the DestinationRule's `tls`), in explicit-port
//!    mode at their sidecar's inbound port ([`crate::mesh`]).
//!
//! The sidecar compile ([`compile_sidecar`]) shares steps 3, 5, 6 and 7: see
//! [`sidecar`].
//!
//! Findings about what cannot be compiled use isthmus codes: [`CODE_SERVER_SKIPPED`],
//! [`CODE_ROUTE_INVALID`], [`CODE_NO_ENDPOINTS`], [`CODE_UNSUPPORTED`],
//! [`CODE_NOT_APPLIED`], [`CODE_MESH_ENDPOINT_LEFT_OUT`].

mod registry;
pub mod sidecar;

pub use registry::CODE_MESH_ENDPOINT_LEFT_OUT;
pub use sidecar::compile_sidecar;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::diag::{Diagnostic, Level};
use crate::host;
use crate::mesh::{MeshOptions, MeshWorkload};
use crate::resources::core::decode_base64;
use crate::resources::networking::{
    Destination, HttpMatchRequest, HttpRoute, Labels, Server, ServerTlsMode, ServerTlsSettings,
    StringMatch, TlsProtocol, VirtualServiceSpec,
};
use crate::resources::{Kind, Resource, Spec, Store};
use crate::snapshot::{
    CipherSuite, ClientCertificate, ClientVerification, Cluster, ClusterId, HeaderMatch, Listener,
    ListenerProtocol, PassthroughRoute, PathMatch, QueryMatch, Route, RouteAction, RouteMatch,
    Router, Snapshot, StrMatch, TlsCredential, TlsPolicy, TlsServer, TlsTermination, TlsVersion,
    VirtualHost, WeightedClusters,
};
use registry::{Registry, RuleIndex};

/// Info: a Gateway server is not served (its protocol is not supported yet).
pub const CODE_SERVER_SKIPPED: &str = "ISM0201";
/// Error: a route (or server) is dropped because a value cannot be compiled
/// (invalid regex or header name, negative or zero total weight, port out of range).
pub const CODE_ROUTE_INVALID: &str = "ISM0202";
/// Warning: a destination has no endpoints (unknown host, port or subset): 503.
pub const CODE_NO_ENDPOINTS: &str = "ISM0203";
/// Warning: a route uses a feature isthmus does not serve yet; the route is dropped.
pub const CODE_UNSUPPORTED: &str = "ISM0204";
/// Info: fields of a rule that are accepted but not applied yet.
pub const CODE_NOT_APPLIED: &str = "ISM0205";
/// Error: a `credentialName` names no Secret (Istio's code).
pub const CODE_CREDENTIAL_NOT_FOUND: &str = "IST0101";
/// Error: a `credentialName` Secret holds no usable certificate and key (Istio's code).
pub const CODE_CREDENTIAL_INVALID: &str = "IST0161";

/// The `gateways` entry binding a VirtualService to sidecars.
pub const MESH_GATEWAY: &str = "mesh";

/// Istio's root namespace: the last place a DestinationRule is looked up, and where
/// Istio's default gateways run.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The gateway proxy a snapshot is compiled for: its namespace and pod labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayWorkload {
    pub namespace: String,
    pub labels: Labels,
}

impl Default for GatewayWorkload {
    /// Istio's default ingress gateway: namespace `istio-system`,
    /// labels `istio: ingressgateway`.
    fn default() -> Self {
        GatewayWorkload {
            namespace: ROOT_NAMESPACE.to_string(),
            labels: Labels::from([("istio".to_string(), "ingressgateway".to_string())]),
        }
    }
}

impl GatewayWorkload {
    /// Whether a Gateway `selector` selects this workload.
    pub fn selected_by(&self, selector: Option<&Labels>) -> bool {
        selector.is_none_or(|s| labels_subset(s, &self.labels))
    }
}

/// One workload per distinct non-empty `Gateway.selector`, in store order (a local
/// `up` runs one gateway process per workload). Its labels are the selector; its
/// namespace is `istio-system` for Istio's own `istio: ingressgateway|egressgateway`,
/// else the namespace of the first Gateway with that selector. When every Gateway has
/// a nil or empty selector, the default workload ([`GatewayWorkload::default`]).
/// No Gateway at all: no workload.
pub fn gateway_workloads(store: &Store) -> Vec<GatewayWorkload> {
    let mut out: Vec<GatewayWorkload> = Vec::new();
    let mut any_gateway = false;
    for (r, gw) in store.gateways() {
        any_gateway = true;
        let Some(selector) = gw.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        if out.iter().any(|w| &w.labels == selector) {
            continue;
        }
        let istio_default = matches!(
            selector.get("istio").map(String::as_str),
            Some("ingressgateway" | "egressgateway")
        );
        out.push(GatewayWorkload {
            namespace: if istio_default {
                ROOT_NAMESPACE.to_string()
            } else {
                r.namespace().to_string()
            },
            labels: selector.clone(),
        });
    }
    if out.is_empty() && any_gateway {
        out.push(GatewayWorkload::default());
    }
    out
}

/// Compile the snapshot of one gateway workload. Never fails: what cannot be compiled
/// is left out and reported in the findings. Mesh endpoints are compiled for the
/// default [`MeshOptions`] (transparent mode); see [`compile_gateway_with`].
pub fn compile_gateway(store: &Store, workload: &GatewayWorkload) -> (Snapshot, Vec<Diagnostic>) {
    compile_gateway_with(store, workload, &MeshOptions::default())
}

/// [`compile_gateway`] for a mesh run with `opts`: endpoints with a sidecar get
/// auto-mTLS, and in explicit-port mode their sidecar's inbound address.
pub fn compile_gateway_with(
    store: &Store,
    workload: &GatewayWorkload,
    opts: &MeshOptions,
) -> (Snapshot, Vec<Diagnostic>) {
    let mut c = Compiler::new(store, workload, opts);
    let servers = c.http_servers();
    let vss = c.bound_virtual_services(false);
    let listeners = servers
        .into_iter()
        .map(|(port, p)| c.listener(port, p.https, &p.servers, &vss))
        .collect();
    let snapshot = Snapshot {
        version: 0,
        listeners,
        clusters: Vec::new(),
        inbound: Vec::new(),
    };
    c.finish(snapshot)
}

/// `a` is a subset of `b`: every label of `a` is in `b` with the same value.
fn labels_subset(a: &Labels, b: &Labels) -> bool {
    a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// `exportTo` visibility of a resource in `owner_ns` from namespace `ns`. Empty means
/// `*` (Istio's default).
fn visible_to(export_to: &[String], owner_ns: &str, ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == ns || (e == "." && owner_ns == ns))
}

/// A `gateways` entry as `ns/name` (Istio `resolveGatewayName`); `None` for `mesh`.
fn resolve_gateway_ref(entry: &str, vs_namespace: &str) -> Option<String> {
    if entry == MESH_GATEWAY {
        return None;
    }
    Some(match entry.split_once('/') {
        Some((".", name)) => format!("{vs_namespace}/{name}"),
        Some(_) => entry.to_string(),
        None => match entry.split_once('.') {
            None => format!("{vs_namespace}/{entry}"),
            // Legacy `name.ns[.svc.cluster.local]`.
            Some((name, rest)) => {
                let ns = rest.split('.').next().unwrap_or(rest);
                format!("{ns}/{name}")
            }
        },
    })
}

fn diag(level: Level, code: &'static str, r: &Resource, field: &str, msg: String) -> Diagnostic {
    Diagnostic::new(level, code, msg)
        .at(r.origin_at(field))
        .on(r)
        .field(field)
}

/// One HTTP, TLS-terminated HTTPS or TLS PASSTHROUGH server of a selected Gateway.
struct HttpServer<'s> {
    gateway: &'s Resource,
    /// `ns/name` of the Gateway, as VirtualServices refer to it.
    gateway_ref: String,
    server: &'s Server,
    /// Index in `spec.servers`.
    index: usize,
    /// `tls.mode` PASSTHROUGH (or no mode): routed by the VirtualService `tls`
    /// section, TLS not terminated.
    passthrough: bool,
}

/// The servers of one port: all plain HTTP, or all TLS (terminated or PASSTHROUGH).
struct PortServers<'s> {
    https: bool,
    servers: Vec<HttpServer<'s>>,
}

/// A VirtualService bound to at least one Gateway (or, for a sidecar, to the mesh),
/// with its resolved names.
struct BoundVs<'s> {
    resource: &'s Resource,
    spec: &'s VirtualServiceSpec,
    /// `ns/name` of the Gateways it binds to.
    gateways: Vec<String>,
    /// Hosts with short names expanded, lower-cased.
    hosts: Vec<String>,
}

/// The route action of one rule, computed on first use.
enum Action {
    NotYet,
    Failed,
    Ready(RouteAction),
}

/// The state of one compile, gateway or sidecar.
struct Compiler<'s> {
    store: &'s Store,
    /// The proxy compiled for: its namespace and labels (for a sidecar, its
    /// workload's).
    proxy: &'s GatewayWorkload,
    registry: Registry<'s>,
    rules: RuleIndex<'s>,
    /// Every WorkloadEntry's mesh view, by `ns/name`.
    mesh: HashMap<String, MeshWorkload>,
    mesh_options: MeshOptions,
    clusters: Vec<Cluster>,
    cluster_ids: HashMap<String, ClusterId>,
    /// Compiled regexes by pattern (the same pattern often repeats across routes).
    regexes: HashMap<String, Result<StrMatch, String>>,
    diags: Vec<Diagnostic>,
}

impl<'s> Compiler<'s> {
    fn new(store: &'s Store, proxy: &'s GatewayWorkload, opts: &MeshOptions) -> Self {
        let mesh = crate::mesh::mesh_workloads(store, opts)
            .into_iter()
            .map(|w| (w.key(), w))
            .collect();
        Compiler {
            store,
            proxy,
            registry: Registry::new(store, &proxy.namespace),
            rules: RuleIndex::new(store, &proxy.namespace, &proxy.labels),
            mesh,
            mesh_options: opts.clone(),
            clusters: Vec::new(),
            cluster_ids: HashMap::new(),
            regexes: HashMap::new(),
            diags: Vec::new(),
        }
    }

    /// The snapshot with the clusters built, and the findings without repeats.
    fn finish(self, mut snapshot: Snapshot) -> (Snapshot, Vec<Diagnostic>) {
        snapshot.clusters = self.clusters;
        let mut seen = HashSet::new();
        let mut diags = self.diags;
        diags.retain(|d| seen.insert(d.to_string()));
        (snapshot, diags)
    }

    /// HTTP and TLS-terminated HTTPS servers of the selected Gateways, by port, in
    /// store order.
    fn http_servers(&mut self) -> BTreeMap<u16, PortServers<'s>> {
        let mut out: BTreeMap<u16, PortServers<'s>> = BTreeMap::new();
        let store = self.store;
        for (r, gw) in store.gateways() {
            if !self.proxy.selected_by(gw.selector.as_ref()) {
                continue;
            }
            for (i, server) in gw.servers.iter().enumerate() {
                let protocol = server.port.protocol.to_ascii_uppercase();
                let (https, passthrough) = match protocol.as_str() {
                    "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => (false, false),
                    "HTTPS" | "TLS" => match self.tls_server_kind(r, i, server) {
                        Some(passthrough) => (true, passthrough),
                        None => continue,
                    },
                    _ => {
                        self.diags.push(diag(
                            Level::Info,
                            CODE_SERVER_SKIPPED,
                            r,
                            &format!("spec.servers[{i}].port.protocol"),
                            format!(
                                "protocol {:?} on port {} is not served by the gateway yet",
                                server.port.protocol, server.port.number
                            ),
                        ));
                        continue;
                    }
                };
                let port = match u16::try_from(server.port.number) {
                    Ok(p) if p != 0 => p,
                    _ => {
                        self.diags.push(diag(
                            Level::Error,
                            CODE_ROUTE_INVALID,
                            r,
                            &format!("spec.servers[{i}].port.number"),
                            format!(
                                "port {} is not in 1..65535; server skipped",
                                server.port.number
                            ),
                        ));
                        continue;
                    }
                };
                let on_port = out.entry(port).or_insert(PortServers {
                    https,
                    servers: Vec::new(),
                });
                if on_port.https != https {
                    let (first, this) = if https {
                        ("HTTP", "HTTPS")
                    } else {
                        ("HTTPS", "HTTP")
                    };
                    self.diags.push(diag(
                        Level::Error,
                        CODE_ROUTE_INVALID,
                        r,
                        &format!("spec.servers[{i}].port"),
                        format!(
                            "port {port} is already served as {first} by an earlier server; this {this} server is skipped (use another port)"
                        ),
                    ));
                    continue;
                }
                on_port.servers.push(HttpServer {
                    gateway: r,
                    gateway_ref: format!("{}/{}", r.namespace(), r.name()),
                    server,
                    index: i,
                    passthrough,
                });
            }
        }
        out
    }

    /// How an HTTPS or TLS server is served: `Some(true)` PASSTHROUGH (`tls.mode`
    /// PASSTHROUGH or no mode, as in Istio), `Some(false)` terminated here (HTTPS
    /// only; see [`Compiler::terminates_tls`]), `None` skipped with a finding.
    fn tls_server_kind(&mut self, r: &Resource, i: usize, server: &Server) -> Option<bool> {
        let port = server.port.number;
        let protocol = server.port.protocol.to_ascii_uppercase();
        let mode = server
            .tls
            .as_ref()
            .map(|t| t.mode.unwrap_or(ServerTlsMode::Passthrough));
        match mode {
            Some(ServerTlsMode::Passthrough) => Some(true),
            Some(ServerTlsMode::AutoPassthrough) => {
                self.diags.push(diag(
                    Level::Info,
                    CODE_SERVER_SKIPPED,
                    r,
                    &format!("spec.servers[{i}].tls.mode"),
                    format!("{protocol} server on port {port} with tls.mode AUTO_PASSTHROUGH (multi-network east-west) is not served yet"),
                ));
                None
            }
            Some(mode) if protocol == "TLS" => {
                self.diags.push(diag(
                    Level::Info,
                    CODE_SERVER_SKIPPED,
                    r,
                    &format!("spec.servers[{i}].tls.mode"),
                    format!(
                        "TLS server on port {port} with tls.mode {} (TLS terminated, then TCP routes) is not served yet; use protocol HTTPS for HTTP behind TLS, or PASSTHROUGH",
                        tls_mode_name(mode)
                    ),
                ));
                None
            }
            _ => self.terminates_tls(r, i, server).then_some(false),
        }
    }

    /// Whether an HTTPS server is terminated here: `tls.mode` SIMPLE, MUTUAL or
    /// OPTIONAL_MUTUAL with a `credentialName`. Anything else is reported and skipped.
    fn terminates_tls(&mut self, r: &Resource, i: usize, server: &Server) -> bool {
        let base = format!("spec.servers[{i}].tls");
        let port = server.port.number;
        let Some(tls) = &server.tls else {
            self.diags.push(diag(
                Level::Error,
                CODE_ROUTE_INVALID,
                r,
                &format!("spec.servers[{i}]"),
                format!("HTTPS server on port {port} has no tls settings; server skipped"),
            ));
            return false;
        };
        let mode = tls.mode.unwrap_or(ServerTlsMode::Passthrough);
        if !terminated_mode(mode) {
            self.diags.push(diag(
                Level::Info,
                CODE_SERVER_SKIPPED,
                r,
                &format!("{base}.mode"),
                format!(
                    "HTTPS server on port {port} with tls.mode {} is not served yet (SIMPLE, MUTUAL and OPTIONAL_MUTUAL are)",
                    tls_mode_name(mode)
                ),
            ));
            return false;
        }
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        // A Gateway annotated isthmus.dev/acme-issuer: isthmus orders the certificate
        // of a server without credentialName into a generated Secret.
        if set(&tls.credential_name) || crate::certs::auto::acme_issuer_annotation(r).is_some() {
            return true;
        }
        let (field, what) = if !tls.credential_names.is_empty() {
            ("credentialNames", "credentialNames")
        } else if !tls.tls_certificates.is_empty() {
            ("tlsCertificates", "tlsCertificates")
        } else if set(&tls.server_certificate) || set(&tls.private_key) {
            (
                "serverCertificate",
                "certificate files (serverCertificate/privateKey)",
            )
        } else {
            self.diags.push(diag(
                Level::Error,
                CODE_ROUTE_INVALID,
                r,
                &format!("{base}.credentialName"),
                format!(
                    "HTTPS server on port {port}: tls.mode {} needs credentialName; server skipped",
                    tls_mode_name(mode)
                ),
            ));
            return false;
        };
        self.diags.push(diag(
            Level::Warning,
            CODE_UNSUPPORTED,
            r,
            &format!("{base}.{field}"),
            format!(
                "{what} are not supported yet, use credentialName; the HTTPS server on port {port} is skipped"
            ),
        ));
        false
    }

    /// Per server of a TLS port: its SNI names and its certificate, or for
    /// PASSTHROUGH servers, the `tls` routes of the VirtualServices bound to them.
    fn tls_termination(
        &mut self,
        port: u16,
        servers: &[HttpServer<'s>],
        vss: &[BoundVs<'s>],
    ) -> TlsTermination {
        let mut out = Vec::with_capacity(servers.len());
        for s in servers.iter().filter(|s| !s.passthrough) {
            let gw_ns = s.gateway.namespace();
            let mut sni: Vec<String> = Vec::new();
            for entry in &s.server.hosts {
                let h = host::ServerHost::parse(entry, gw_ns)
                    .host
                    .to_ascii_lowercase();
                if !h.is_empty() && !sni.contains(&h) {
                    sni.push(h);
                }
            }
            let (secret, credential) = self.credential(s, &sni);
            let policy = self.tls_policy(s, &sni, credential.is_some());
            out.push(TlsServer {
                source: format!("{} spec.servers[{}]", s.gateway.display_ref(), s.index),
                sni,
                secret,
                credential,
                policy,
            });
        }
        let passthrough = servers
            .iter()
            .filter(|s| s.passthrough)
            .flat_map(|s| self.passthrough_routes(port, s, vss))
            .collect();
        TlsTermination {
            servers: out,
            passthrough,
        }
    }

    /// The `tls` routes of the VirtualServices bound to a PASSTHROUGH server (Istio
    /// `buildGatewayNetworkFiltersFromTLSRoutes`): per rule, the `sniHosts` of its
    /// matches for this Gateway and port, within the server's hosts. A server no
    /// route serves is reported: its names are refused.
    fn passthrough_routes(
        &mut self,
        port: u16,
        s: &HttpServer<'s>,
        vss: &[BoundVs<'s>],
    ) -> Vec<PassthroughRoute> {
        let gw_ns = s.gateway.namespace();
        let mut out = Vec::new();
        for vs in vss.iter().filter(|vs| vs.gateways.contains(&s.gateway_ref)) {
            let r = vs.resource;
            let vs_ns = r.namespace();
            let server_hosts = host::server_hosts_for_namespace(&s.server.hosts, gw_ns, vs_ns);
            if host::intersection(&server_hosts, &vs.hosts).is_empty() {
                continue;
            }
            for (i, rule) in vs.spec.tls.iter().enumerate() {
                let path = format!("spec.tls[{i}]");
                let mut sni: Vec<String> = Vec::new();
                for m in &rule.match_ {
                    let for_gateway = m.gateways.is_empty()
                        || m.gateways.iter().any(|g| {
                            resolve_gateway_ref(g, vs_ns).as_deref() == Some(&s.gateway_ref)
                        });
                    let for_port = m.port.is_none_or(|p| p == u32::from(port));
                    if !for_gateway || !for_port {
                        continue;
                    }
                    let names: Vec<String> =
                        m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
                    for h in host::intersection(&server_hosts, &names) {
                        if !sni.contains(&h) {
                            sni.push(h);
                        }
                    }
                }
                if sni.is_empty() {
                    continue;
                }
                if rule.route.is_empty() {
                    self.diags.push(diag(
                        Level::Error,
                        CODE_ROUTE_INVALID,
                        r,
                        &format!("{path}.route"),
                        "the tls rule has no destination; left out".to_string(),
                    ));
                    continue;
                }
                let dests: Vec<_> = rule
                    .route
                    .iter()
                    .map(|d| (&d.destination, d.weight))
                    .collect();
                let Some(action) = self.weighted(r, &dests, &path, port) else {
                    continue;
                };
                out.push(PassthroughRoute {
                    source: format!("{} {path}", r.display_ref()),
                    sni,
                    action,
                });
            }
        }
        if out.is_empty() {
            self.diags.push(diag(
                Level::Warning,
                CODE_NOT_APPLIED,
                s.gateway,
                &format!("spec.servers[{}].hosts", s.index),
                format!(
                    "PASSTHROUGH server on port {port}: no VirtualService bound to {} has a tls route whose sniHosts match {:?}; connections for these names are refused",
                    s.gateway_ref, s.server.hosts
                ),
            ));
        }
        out
    }

    /// The Secret named by a server's `credentialName` (as `Secret ns/name`) and its
    /// certificate and key, or `None` with an Error finding.
    fn credential(
        &mut self,
        s: &HttpServer<'s>,
        sni: &[String],
    ) -> (String, Option<TlsCredential>) {
        let r = s.gateway;
        let field = format!("spec.servers[{}].tls.credentialName", s.index);
        // On a Gateway annotated isthmus.dev/acme-issuer, a server without
        // credentialName is served from the Secret isthmus orders for it.
        let auto = crate::certs::auto::acme_issuer_annotation(r).is_some();
        let generated = crate::certs::auto::generated_secret_name(r, s.index);
        let written = match s
            .server
            .tls
            .as_ref()
            .and_then(|t| non_empty(&t.credential_name))
        {
            Some(w) => w,
            None if auto => generated.as_str(),
            None => "",
        };
        let refused = refused_handshakes(sni);
        let Some((ns, name)) = resolve_credential(written, &self.proxy.namespace) else {
            self.diags.push(diag(
                Level::Warning,
                CODE_UNSUPPORTED,
                r,
                &field,
                format!(
                    "credentialName {written:?}: only Secrets (`name`, `ns/name`, `kubernetes://...`) are supported; {refused}"
                ),
            ));
            return (format!("Secret {written}"), None);
        };
        let secret_ref = format!("Secret {ns}/{name}");
        let data = match self.store.find(Kind::Secret, &ns, &name).map(|x| &x.spec) {
            Some(Spec::Secret(data)) => data,
            _ if auto => {
                self.diags.push(diag(
                    Level::Info,
                    CODE_NOT_APPLIED,
                    r,
                    &field,
                    format!(
                        "{secret_ref} is pending: isthmus orders it (the Gateway's annotation {}); {refused} until then",
                        crate::certs::auto::ANN_ACME_ISSUER
                    ),
                ));
                return (secret_ref, None);
            }
            _ => {
                // A cert-manager Certificate will write this Secret (isthmus orders it
                // itself): pending, not an error.
                if let Some((cert, _)) = self
                    .store
                    .certificates()
                    .find(|(c, spec)| c.namespace() == ns && spec.secret_name == name)
                {
                    self.diags.push(diag(
                        Level::Info,
                        CODE_NOT_APPLIED,
                        r,
                        &field,
                        format!(
                            "credentialName {written:?}: {secret_ref} is pending: {} will write it once issued; {refused} until then",
                            cert.display_ref()
                        ),
                    ));
                    return (secret_ref, None);
                }
                let looked_in = if written.contains('/') {
                    format!("namespace {ns}, as written")
                } else {
                    format!(
                        "namespace {ns}, where the gateway workload runs (Istio reads credentialName secrets there, not in the Gateway's namespace)"
                    )
                };
                self.diags.push(diag(
                    Level::Error,
                    CODE_CREDENTIAL_NOT_FOUND,
                    r,
                    &field,
                    format!(
                        "credentialName {written:?}: no {secret_ref}; looked in {looked_in}; {refused}"
                    ),
                ));
                return (secret_ref, None);
            }
        };
        match server_cert_and_key(|k| data.get(k)) {
            Ok((cert_chain_pem, private_key_pem)) => (
                secret_ref.clone(),
                Some(TlsCredential {
                    secret: secret_ref,
                    cert_chain_pem,
                    private_key_pem,
                }),
            ),
            Err(why) => {
                self.diags.push(diag(
                    Level::Error,
                    CODE_CREDENTIAL_INVALID,
                    r,
                    &field,
                    format!("credentialName {written:?}: {secret_ref}: {why}; {refused}"),
                ));
                (secret_ref, None)
            }
        }
    }

    /// A server's protocol versions, cipher suites and client-certificate checks.
    /// What isthmus cannot honour is reported; a client-certificate check that cannot
    /// be set up leaves the server refusing every handshake.
    fn tls_policy(&mut self, s: &HttpServer<'s>, sni: &[String], has_cert: bool) -> TlsPolicy {
        let mut policy = TlsPolicy::default();
        let Some(tls) = &s.server.tls else {
            return policy;
        };
        let r = s.gateway;
        let base = format!("spec.servers[{}].tls", s.index);
        let min = self.tls_version(r, &base, "minProtocolVersion", tls.min_protocol_version);
        let max = self.tls_version(r, &base, "maxProtocolVersion", tls.max_protocol_version);
        let (min, max) = (
            min.unwrap_or(TlsVersion::Tls12),
            max.unwrap_or(TlsVersion::Tls13),
        );
        if min > max {
            self.diags.push(diag(
                Level::Error,
                CODE_ROUTE_INVALID,
                r,
                &format!("{base}.minProtocolVersion"),
                "minProtocolVersion is above maxProtocolVersion; both are ignored (TLS 1.2 and 1.3 are offered)".to_string(),
            ));
        } else {
            (policy.min_version, policy.max_version) = (min, max);
        }
        policy.cipher_suites = self.cipher_suites(r, &base, &tls.cipher_suites);
        if tls.insecure_skip_verify == Some(true) {
            self.diags.push(diag(
                Level::Warning,
                CODE_NOT_APPLIED,
                r,
                &format!("{base}.insecureSkipVerify"),
                "insecureSkipVerify is not applied: client certificates that fail verification are refused".to_string(),
            ));
        }
        let mode = tls.mode.unwrap_or(ServerTlsMode::Passthrough);
        policy.client_certificate = match mode {
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual if !has_cert => {
                // Already reported; the server refuses its handshakes anyway.
                ClientCertificate::Unavailable
            }
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                self.client_verification(s, tls, mode == ServerTlsMode::Mutual, sni)
            }
            _ => {
                let fields = [
                    ("subjectAltNames", tls.subject_alt_names.is_empty()),
                    (
                        "verifyCertificateHash",
                        tls.verify_certificate_hash.is_empty(),
                    ),
                    (
                        "verifyCertificateSpki",
                        tls.verify_certificate_spki.is_empty(),
                    ),
                ];
                if let Some((field, _)) = fields.iter().find(|(_, empty)| !empty) {
                    self.diags.push(diag(
                        Level::Warning,
                        CODE_NOT_APPLIED,
                        r,
                        &format!("{base}.{field}"),
                        format!(
                            "{field} checks client certificates, which tls.mode {} does not request (use MUTUAL or OPTIONAL_MUTUAL); ignored",
                            tls_mode_name(mode)
                        ),
                    ));
                }
                ClientCertificate::NotRequested
            }
        };
        policy
    }

    /// One of `minProtocolVersion` / `maxProtocolVersion`: `None` when unset or
    /// `TLS_AUTO`. rustls has no TLS 1.0 or 1.1: reported, and 1.2 used instead.
    fn tls_version(
        &mut self,
        r: &Resource,
        base: &str,
        field: &str,
        v: Option<TlsProtocol>,
    ) -> Option<TlsVersion> {
        match v? {
            TlsProtocol::TlsAuto => None,
            TlsProtocol::TlsV1_2 => Some(TlsVersion::Tls12),
            TlsProtocol::TlsV1_3 => Some(TlsVersion::Tls13),
            old @ (TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1) => {
                let name = if old == TlsProtocol::TlsV1_0 {
                    "TLSV1_0"
                } else {
                    "TLSV1_1"
                };
                self.diags.push(diag(
                    Level::Warning,
                    CODE_UNSUPPORTED,
                    r,
                    &format!("{base}.{field}"),
                    format!("{field} {name}: TLS 1.0 and 1.1 are not supported (rustls); TLSV1_2 is used"),
                ));
                Some(TlsVersion::Tls12)
            }
        }
    }

    /// `cipherSuites` as the suites rustls offers, in order, without repeats. BoringSSL
    /// equal-preference groups (`[A|B]`) count as their members. Other names are
    /// reported and ignored; when none is left, every suite is offered.
    fn cipher_suites(&mut self, r: &Resource, base: &str, names: &[String]) -> Vec<CipherSuite> {
        let mut out = Vec::new();
        for (j, written) in names.iter().enumerate() {
            let group = written.trim().trim_start_matches('[').trim_end_matches(']');
            for name in group.split('|').map(str::trim).filter(|n| !n.is_empty()) {
                match CipherSuite::from_name(name) {
                    Some(c) if !out.contains(&c) => out.push(c),
                    Some(_) => {}
                    None => {
                        let offered: Vec<&str> =
                            CipherSuite::ALL.iter().map(|c| c.openssl_name()).collect();
                        self.diags.push(diag(
                            Level::Warning,
                            CODE_UNSUPPORTED,
                            r,
                            &format!("{base}.cipherSuites[{j}]"),
                            format!(
                                "cipher suite {name:?} is not one isthmus (rustls) offers; ignored. Offered: {}",
                                offered.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        if out.is_empty() && !names.is_empty() {
            self.diags.push(diag(
                Level::Warning,
                CODE_UNSUPPORTED,
                r,
                &format!("{base}.cipherSuites"),
                "no cipher suite listed is offered by isthmus; the default suites are used"
                    .to_string(),
            ));
        }
        out
    }

    /// The client-certificate checks of a MUTUAL (`required`) or OPTIONAL_MUTUAL
    /// server, or `Unavailable` with an Error when they cannot be set up.
    fn client_verification(
        &mut self,
        s: &HttpServer<'s>,
        tls: &ServerTlsSettings,
        required: bool,
        sni: &[String],
    ) -> ClientCertificate {
        let r = s.gateway;
        let base = format!("spec.servers[{}].tls", s.index);
        let refused = refused_handshakes(sni);
        let mut usable = true;
        let mut certificate_sha256 = Vec::new();
        for (j, pin) in tls.verify_certificate_hash.iter().enumerate() {
            match parse_hex_sha256(pin) {
                Some(d) => certificate_sha256.push(d),
                None => {
                    usable = false;
                    self.diags.push(diag(
                        Level::Error,
                        CODE_ROUTE_INVALID,
                        r,
                        &format!("{base}.verifyCertificateHash[{j}]"),
                        format!("{pin:?} is not a hex SHA-256 digest (64 hex digits, colons allowed); {refused}"),
                    ));
                }
            }
        }
        let mut spki_sha256 = Vec::new();
        for (j, pin) in tls.verify_certificate_spki.iter().enumerate() {
            match decode_base64(pin).and_then(|d| <[u8; 32]>::try_from(d).ok()) {
                Some(d) => spki_sha256.push(d),
                None => {
                    usable = false;
                    self.diags.push(diag(
                        Level::Error,
                        CODE_ROUTE_INVALID,
                        r,
                        &format!("{base}.verifyCertificateSpki[{j}]"),
                        format!("{pin:?} is not a base64 SHA-256 digest; {refused}"),
                    ));
                }
            }
        }
        if tls
            .ca_certificates
            .as_deref()
            .is_some_and(|c| !c.is_empty())
        {
            self.diags.push(diag(
                Level::Warning,
                CODE_UNSUPPORTED,
                r,
                &format!("{base}.caCertificates"),
                "caCertificates (a file path) is not read; the client CA comes from caCertCredentialName, a <credentialName>-cacert Secret or the credential's ca.crt".to_string(),
            ));
        }
        let Some((ca_secret, ca_pem)) = self.client_ca(s, tls, &refused) else {
            return ClientCertificate::Unavailable;
        };
        if !usable {
            return ClientCertificate::Unavailable;
        }
        ClientCertificate::Verified(ClientVerification {
            required,
            ca_secret,
            ca_pem,
            subject_alt_names: tls
                .subject_alt_names
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            certificate_sha256,
            spki_sha256,
            spiffe_trust_domain: None,
        })
    }

    /// The client CA of a MUTUAL / OPTIONAL_MUTUAL server, as Istio's `GetCaCert`
    /// finds it: the Secret named by `caCertCredentialName`, else the Secret
    /// `<credentialName>-cacert`; when that Secret does not exist, the same name
    /// without the `-cacert` suffix (so the credential's own Secret). Keys `cacert`,
    /// then `ca.crt`. Returns `Secret ns/name` and the PEM, or `None` with an Error.
    fn client_ca(
        &mut self,
        s: &HttpServer<'s>,
        tls: &ServerTlsSettings,
        refused: &str,
    ) -> Option<(String, Vec<u8>)> {
        let r = s.gateway;
        let (field, written, suffix) = match non_empty(&tls.ca_cert_credential_name) {
            Some(w) => ("caCertCredentialName", w, ""),
            None => match non_empty(&tls.credential_name) {
                Some(w) => ("credentialName", w, "-cacert"),
                None => {
                    // Automatic ACME mode: the ordered certificate carries no CA.
                    self.diags.push(diag(
                        Level::Error,
                        CODE_CREDENTIAL_NOT_FOUND,
                        r,
                        &format!("spec.servers[{}].tls.caCertCredentialName", s.index),
                        format!(
                            "mode {} without credentialName needs caCertCredentialName naming the Secret with the client CA (the certificate ordered over ACME has none); {refused}",
                            tls_mode_name(tls.mode.unwrap_or(ServerTlsMode::Passthrough))
                        ),
                    ));
                    return None;
                }
            },
        };
        let field = format!("spec.servers[{}].tls.{field}", s.index);
        let Some((ns, name)) = resolve_credential(written, &self.proxy.namespace) else {
            self.diags.push(diag(
                Level::Warning,
                CODE_UNSUPPORTED,
                r,
                &field,
                format!("{written:?}: only Secrets (`name`, `ns/name`, `kubernetes://...`) hold client CAs here; {refused}"),
            ));
            return None;
        };
        let first = format!("{name}{suffix}");
        let mut candidates = vec![first.clone()];
        if let Some(stripped) = first.strip_suffix("-cacert") {
            candidates.push(stripped.to_string());
        }
        let store = self.store;
        let found = candidates.iter().find_map(|n| {
            match store.find(Kind::Secret, &ns, n).map(|x| &x.spec) {
                Some(Spec::Secret(data)) => Some((format!("Secret {ns}/{n}"), data)),
                _ => None,
            }
        });
        let Some((secret_ref, data)) = found else {
            let names: Vec<String> = candidates.iter().map(|n| format!("{ns}/{n}")).collect();
            self.diags.push(diag(
                Level::Error,
                CODE_CREDENTIAL_NOT_FOUND,
                r,
                &field,
                format!(
                    "no Secret with the client CA: looked for {}; {refused}",
                    names.join(" and ")
                ),
            ));
            return None;
        };
        match ca_certificates(|k| data.get(k)) {
            Ok(pem) => Some((secret_ref, pem)),
            Err(why) => {
                let hint = if suffix.is_empty() || secret_ref.ends_with(&first) {
                    String::new()
                } else {
                    format!(" (add one, create Secret {ns}/{first}, or set caCertCredentialName)")
                };
                self.diags.push(diag(
                    Level::Error,
                    CODE_CREDENTIAL_INVALID,
                    r,
                    &field,
                    format!(
                        "mode {} needs a CA for client certificates: {secret_ref}: {why}{hint}; {refused}",
                        tls_mode_name(tls.mode.unwrap_or(ServerTlsMode::Passthrough))
                    ),
                ));
                None
            }
        }
    }

    /// VirtualServices visible to the proxy and bound to some Gateway (`mesh`: bound
    /// to the mesh, i.e. `gateways` empty or naming `mesh`), in binding order
    /// (private to the proxy's namespace, exported to it, public; store order within
    /// each group).
    fn bound_virtual_services(&self, mesh: bool) -> Vec<BoundVs<'s>> {
        let ns = self.proxy.namespace.as_str();
        let mut out: Vec<(u8, BoundVs<'s>)> = Vec::new();
        for (r, vs) in self.store.virtual_services() {
            let owner = r.namespace();
            let e = &vs.export_to;
            let rank = if e.is_empty() || e.iter().any(|x| x == "*") {
                2
            } else if e.iter().any(|x| x == "~") {
                continue;
            } else if owner == ns && e.iter().any(|x| x == "." || x == owner) {
                0
            } else if visible_to(e, owner, ns) {
                1
            } else {
                continue;
            };
            let gateways: Vec<String> = vs
                .gateways
                .iter()
                .filter_map(|g| resolve_gateway_ref(g, owner))
                .collect();
            let bound = if mesh {
                vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == MESH_GATEWAY)
            } else {
                !gateways.is_empty()
            };
            if !bound {
                continue;
            }
            let hosts = vs
                .hosts
                .iter()
                .filter(|h| !h.is_empty())
                .map(|h| host::expand_short_name(h, owner).to_ascii_lowercase())
                .collect();
            out.push((
                rank,
                BoundVs {
                    resource: r,
                    spec: vs,
                    gateways,
                    hosts,
                },
            ));
        }
        out.sort_by_key(|(rank, _)| *rank);
        out.into_iter().map(|(_, vs)| vs).collect()
    }

    fn listener(
        &mut self,
        port: u16,
        https: bool,
        servers: &[HttpServer<'s>],
        vss: &[BoundVs<'s>],
    ) -> Listener {
        let mut vhosts: Vec<VirtualHost> = Vec::new();
        let mut by_domain: HashMap<String, usize> = HashMap::new();
        // Routes of one VS for one Gateway on this port (None: it produced none).
        let mut built: HashMap<(usize, &str), Option<Vec<Route>>> = HashMap::new();
        let mut appended: HashSet<(usize, usize, &str)> = HashSet::new();
        for s in servers.iter().filter(|s| !s.passthrough) {
            let gw_ns = s.gateway.namespace();
            // `httpsRedirect` only means something on plain HTTP (Envoy's
            // `require_tls` is already satisfied on a TLS connection).
            let redirect = !https && s.server.tls.as_ref().is_some_and(|t| t.https_redirect);
            for (vi, vs) in vss.iter().enumerate() {
                if !vs.gateways.contains(&s.gateway_ref) {
                    continue;
                }
                let server_hosts = host::server_hosts_for_namespace(
                    &s.server.hosts,
                    gw_ns,
                    vs.resource.namespace(),
                );
                let domains = host::intersection(&server_hosts, &vs.hosts);
                if domains.is_empty() {
                    continue;
                }
                let key = (vi, s.gateway_ref.as_str());
                let routes = match built.entry(key) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let routes = self.vs_routes(vs, port, &s.gateway_ref);
                        e.insert((!routes.is_empty()).then_some(routes))
                    }
                };
                let Some(routes) = routes else {
                    continue;
                };
                for d in domains {
                    let idx = vhost_index(&mut vhosts, &mut by_domain, d, port);
                    if redirect {
                        vhosts[idx].https_redirect = true;
                    }
                    if appended.insert((idx, vi, s.gateway_ref.as_str())) {
                        vhosts[idx].routes.extend(routes.iter().cloned());
                    }
                }
            }
            if redirect {
                for entry in &s.server.hosts {
                    let h = host::ServerHost::parse(entry, gw_ns)
                        .host
                        .to_ascii_lowercase();
                    if h.is_empty() {
                        continue;
                    }
                    let idx = vhost_index(&mut vhosts, &mut by_domain, h, port);
                    vhosts[idx].https_redirect = true;
                }
            }
        }
        for vh in &mut vhosts {
            // Stable: catch-alls last, everything else in order (Istio SortVHostRoutes).
            vh.routes.sort_by_key(|r| r.matcher.is_catch_all());
        }
        let protocol = if https {
            ListenerProtocol::Https(self.tls_termination(port, servers, vss))
        } else {
            ListenerProtocol::Http
        };
        Listener {
            port,
            protocol,
            router: Router::new(vhosts),
        }
    }

    /// Routes of one VirtualService for one Gateway and listener port (Istio
    /// `BuildHTTPRoutesForVirtualService`): nothing after the first catch-all.
    fn vs_routes(&mut self, vs: &BoundVs<'s>, port: u16, gateway_ref: &str) -> Vec<Route> {
        let r = vs.resource;
        let mut out = Vec::new();
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let rule_path = format!("spec.http[{i}]");
            let mut action = Action::NotYet;
            let name = rule.name.as_deref().filter(|n| !n.is_empty());
            if rule.match_.is_empty() {
                if let Some(a) = self.action(vs, rule, &rule_path, port, &mut action) {
                    out.push(Route {
                        source: Arc::from(format!("{} {rule_path}", r.display_ref())),
                        name: name.map(Arc::from),
                        matcher: RouteMatch::default(),
                        action: a,
                    });
                }
                break;
            }
            let mut catch_all = false;
            for (j, m) in rule.match_.iter().enumerate() {
                let path = format!("{rule_path}.match[{j}]");
                if m.port.is_some_and(|p| p != 0 && p != u32::from(port)) {
                    continue;
                }
                if !self.source_matches(m, r.namespace(), gateway_ref) {
                    continue;
                }
                let Some(matcher) = self.route_match(r, m, &path) else {
                    continue;
                };
                let Some(a) = self.action(vs, rule, &rule_path, port, &mut action) else {
                    break;
                };
                catch_all = matcher.is_catch_all();
                let route_name = match (name, m.name.as_deref().filter(|n| !n.is_empty())) {
                    (Some(n), Some(mn)) => Some(format!("{n}.{mn}")),
                    (Some(n), None) => Some(n.to_string()),
                    (None, Some(mn)) => Some(format!(".{mn}")),
                    (None, None) => None,
                };
                out.push(Route {
                    source: Arc::from(format!("{} {path}", r.display_ref())),
                    name: route_name.map(Arc::from),
                    matcher,
                    action: a,
                });
                if catch_all {
                    break;
                }
            }
            if catch_all {
                break;
            }
        }
        out
    }

    /// Istio `sourceMatchHTTP`: `gateway_ref` is the Gateway (`ns/name`) the routes
    /// are built for, or [`MESH_GATEWAY`] for a sidecar.
    fn source_matches(&self, m: &HttpMatchRequest, vs_ns: &str, gateway_ref: &str) -> bool {
        if !m.gateways.is_empty() {
            return m
                .gateways
                .iter()
                .any(|g| match resolve_gateway_ref(g, vs_ns) {
                    Some(g) => g == gateway_ref,
                    None => gateway_ref == MESH_GATEWAY,
                });
        }
        labels_subset(&m.source_labels, &self.proxy.labels)
            && m.source_namespace
                .as_deref()
                .is_none_or(|ns| ns.is_empty() || ns == self.proxy.namespace)
    }

    /// The action of a rule, computed once (its findings reported once).
    fn action(
        &mut self,
        vs: &BoundVs<'s>,
        rule: &HttpRoute,
        path: &str,
        port: u16,
        state: &mut Action,
    ) -> Option<RouteAction> {
        if let Action::NotYet = state {
            *state = match self.compile_action(vs, rule, path, port) {
                Some(a) => Action::Ready(a),
                None => Action::Failed,
            };
        }
        match state {
            Action::Ready(a) => Some(a.clone()),
            _ => None,
        }
    }

    fn compile_action(
        &mut self,
        vs: &BoundVs<'s>,
        rule: &HttpRoute,
        path: &str,
        port: u16,
    ) -> Option<RouteAction> {
        let r = vs.resource;
        for (set, field, what) in [
            (rule.delegate.is_some(), "delegate", "delegation"),
            (rule.redirect.is_some(), "redirect", "redirect"),
            (
                rule.direct_response.is_some(),
                "directResponse",
                "direct response",
            ),
        ] {
            if set {
                self.diags.push(diag(
                    Level::Warning,
                    CODE_UNSUPPORTED,
                    r,
                    &format!("{path}.{field}"),
                    format!("{what} is not supported yet; the rule is left out"),
                ));
                return None;
            }
        }
        let ignored: Vec<&str> = [
            (rule.rewrite.is_some(), "rewrite"),
            (rule.timeout.is_some(), "timeout"),
            (rule.retries.is_some(), "retries"),
            (rule.fault.is_some(), "fault"),
            (rule.mirror.is_some() || !rule.mirrors.is_empty(), "mirror"),
            (rule.cors_policy.is_some(), "corsPolicy"),
            (rule.headers.is_some(), "headers"),
        ]
        .into_iter()
        .filter_map(|(set, f)| set.then_some(f))
        .collect();
        if !ignored.is_empty() {
            self.diags.push(diag(
                Level::Info,
                CODE_NOT_APPLIED,
                r,
                path,
                format!("not applied yet: {}", ignored.join(", ")),
            ));
        }
        if rule.route.is_empty() {
            self.diags.push(diag(
                Level::Error,
                CODE_ROUTE_INVALID,
                r,
                &format!("{path}.route"),
                "the rule has no destination (route, redirect or directResponse is required); left out"
                    .to_string(),
            ));
            return None;
        }
        let dests: Vec<_> = rule
            .route
            .iter()
            .map(|d| (&d.destination, d.weight))
            .collect();
        let action = self.weighted(r, &dests, path, port)?;
        Some(RouteAction::Forward(action))
    }

    /// The weighted clusters of a rule's `route` (not empty): relative weights, zero
    /// weights dropped when there are several. `None` with an Error finding when the
    /// weights are unusable or a destination cannot be named.
    fn weighted(
        &mut self,
        r: &Resource,
        route: &[(&Destination, Option<i32>)],
        path: &str,
        port: u16,
    ) -> Option<WeightedClusters> {
        let several = route.len() > 1;
        let mut targets = Vec::with_capacity(route.len());
        let mut total: u64 = 0;
        for (k, &(destination, weight)) in route.iter().enumerate() {
            let dpath = format!("{path}.route[{k}]");
            let weight = weight.unwrap_or(0);
            let Ok(weight) = u32::try_from(weight) else {
                self.diags.push(diag(
                    Level::Error,
                    CODE_ROUTE_INVALID,
                    r,
                    &format!("{dpath}.weight"),
                    format!("weight {weight} is negative; the rule is left out"),
                ));
                return None;
            };
            if several && weight == 0 {
                continue;
            }
            let id = self.cluster_for(r, destination, &format!("{dpath}.destination"), port)?;
            let weight = if several { weight } else { 1 };
            total += u64::from(weight);
            targets.push((id, weight));
        }
        let total = match u32::try_from(total) {
            Ok(0) => {
                self.diags.push(diag(
                    Level::Error,
                    CODE_ROUTE_INVALID,
                    r,
                    &format!("{path}.route"),
                    "total destination weight = 0; the rule is left out".to_string(),
                ));
                return None;
            }
            Ok(t) => t,
            Err(_) => {
                self.diags.push(diag(
                    Level::Error,
                    CODE_ROUTE_INVALID,
                    r,
                    &format!("{path}.route"),
                    format!("total destination weight {total} is too large; the rule is left out"),
                ));
                return None;
            }
        };
        Some(WeightedClusters { targets, total })
    }

    /// The cluster of a destination, created on first use. `None` (with an error) only
    /// when the destination cannot be named at all.
    fn cluster_for(
        &mut self,
        r: &Resource,
        d: &Destination,
        path: &str,
        listener_port: u16,
    ) -> Option<ClusterId> {
        let vs_ns = r.namespace();
        let hostname = host::expand_short_name(d.host.trim(), vs_ns).to_ascii_lowercase();
        if hostname.is_empty() {
            self.diags.push(diag(
                Level::Error,
                CODE_ROUTE_INVALID,
                r,
                &format!("{path}.host"),
                "destination host is empty; the rule is left out".to_string(),
            ));
            return None;
        }
        let service = self.registry.services.get(&hostname);
        let explicit = d.port.as_ref().map(|p| p.number).filter(|&n| n != 0);
        let port = match explicit {
            Some(n) => match u16::try_from(n) {
                Ok(p) => p,
                Err(_) => {
                    self.diags.push(diag(
                        Level::Error,
                        CODE_ROUTE_INVALID,
                        r,
                        &format!("{path}.port.number"),
                        format!("port {n} is not in 1..65535; the rule is left out"),
                    ));
                    return None;
                }
            },
            None => match service.map(|s| s.port_numbers()) {
                Some(ports) if ports.len() == 1 => match u16::try_from(ports[0]) {
                    Ok(p) => p,
                    Err(_) => listener_port,
                },
                Some(ports) => {
                    if !ports.contains(&u32::from(listener_port)) {
                        self.diags.push(diag(
                            Level::Error,
                            CODE_ROUTE_INVALID,
                            r,
                            &format!("{path}.port"),
                            format!(
                                "destination.port is required: {hostname} declares ports {ports:?}, so the listener port {listener_port} is used and requests get 503"
                            ),
                        ));
                    }
                    listener_port
                }
                None => listener_port,
            },
        };
        let subset = d.subset.as_deref().filter(|s| !s.is_empty());
        Some(self.cluster(r, path, hostname, port, subset))
    }

    /// The cluster `outbound|PORT|SUBSET|HOST`, created on first use (findings about
    /// its endpoints go to `r` at `path`).
    fn cluster(
        &mut self,
        r: &Resource,
        path: &str,
        hostname: String,
        port: u16,
        subset: Option<&str>,
    ) -> ClusterId {
        let name = format!("outbound|{port}|{}|{hostname}", subset.unwrap_or(""));
        if let Some(&id) = self.cluster_ids.get(&name) {
            return id;
        }
        let endpoints = self.endpoints(r, path, &hostname, port, subset);
        let pool = self.connection_pool(r, &hostname, port, subset);
        let id = ClusterId(self.clusters.len() as u32);
        self.clusters.push(Cluster {
            name: name.clone(),
            host: hostname,
            port,
            subset: subset.map(str::to_string),
            endpoints,
            cursor: AtomicUsize::new(0),
            pool,
        });
        self.cluster_ids.insert(name, id);
        id
    }

    /// Compile one match block; `None` (with a finding) when it cannot be served.
    fn route_match(
        &mut self,
        r: &Resource,
        m: &HttpMatchRequest,
        path: &str,
    ) -> Option<RouteMatch> {
        let mut out = RouteMatch::default();
        if let Some(u) = &m.uri {
            let kind = self.str_match(r, u, &format!("{path}.uri"), m.ignore_uri_case)?;
            out.uri = kind.map(|kind| PathMatch {
                kind,
                ignore_case: m.ignore_uri_case,
            });
        }
        for (slot, sm, field) in [
            (&mut out.method, &m.method, "method"),
            (&mut out.authority, &m.authority, "authority"),
            (&mut out.scheme, &m.scheme, "scheme"),
        ] {
            if let Some(sm) = sm {
                if !is_presence(sm) {
                    *slot = self.str_match(r, sm, &format!("{path}.{field}"), false)?;
                }
            }
        }
        for (map, field, invert) in [
            (&m.headers, "headers", false),
            (&m.without_headers, "withoutHeaders", true),
        ] {
            for (name, sm) in map {
                let fpath = format!("{path}.{field}.{name}");
                let lower = name.to_ascii_lowercase();
                // Documented as ignored inside `headers` (they have their own fields).
                if matches!(lower.as_str(), "uri" | "scheme" | "method" | "authority") {
                    continue;
                }
                if lower.starts_with("@request.auth.claims") {
                    self.diags.push(diag(
                        Level::Warning,
                        CODE_UNSUPPORTED,
                        r,
                        &fpath,
                        "matching JWT claims is not supported yet; the match block is left out"
                            .to_string(),
                    ));
                    return None;
                }
                let Ok(header) = http::HeaderName::from_bytes(lower.as_bytes()) else {
                    self.diags.push(diag(
                        Level::Error,
                        CODE_ROUTE_INVALID,
                        r,
                        &fpath,
                        format!("{name:?} is not a valid header name; the match block is left out"),
                    ));
                    return None;
                };
                let value = if is_presence(sm) {
                    None
                } else {
                    self.str_match(r, sm, &fpath, false)?
                };
                out.headers.push(HeaderMatch {
                    name: header,
                    value,
                    invert,
                });
            }
        }
        for (name, sm) in &m.query_params {
            let value = if is_presence(sm) {
                None
            } else {
                self.str_match(r, sm, &format!("{path}.queryParams.{name}"), false)?
            };
            out.query_params.push(QueryMatch {
                name: name.clone(),
                value,
            });
        }
        Some(out)
    }

    /// Compile a `StringMatch` (exact, then prefix, then regex; `Ok(None)` when empty).
    /// `None` when the regex is invalid (reported).
    fn str_match(
        &mut self,
        r: &Resource,
        sm: &StringMatch,
        path: &str,
        lower: bool,
    ) -> Option<Option<StrMatch>> {
        let fold = |s: &str| {
            if lower {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        if let Some(e) = &sm.exact {
            return Some(Some(StrMatch::Exact(fold(e))));
        }
        if let Some(p) = &sm.prefix {
            return Some(Some(StrMatch::Prefix(fold(p))));
        }
        let Some(re) = &sm.regex else {
            return Some(None);
        };
        let compiled = match self.regexes.get(re.as_str()) {
            Some(c) => c.clone(),
            None => {
                let c = StrMatch::regex(re).map_err(|e| e.to_string());
                self.regexes.insert(re.clone(), c.clone());
                c
            }
        };
        match compiled {
            Ok(m) => Some(Some(m)),
            Err(e) => {
                self.diags.push(diag(
                    Level::Error,
                    CODE_ROUTE_INVALID,
                    r,
                    &format!("{path}.regex"),
                    format!("invalid regex {re:?}: {e}; the match block is left out"),
                ));
                None
            }
        }
    }
}

/// The modes whose TLS isthmus terminates.
fn terminated_mode(mode: ServerTlsMode) -> bool {
    matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    )
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// The end of a finding about a server that cannot serve: what happens to its names.
fn refused_handshakes(sni: &[String]) -> String {
    if sni.is_empty() {
        "this server's handshakes are refused".to_string()
    } else {
        format!("TLS handshakes for {} are refused", sni.join(", "))
    }
}

/// A SHA-256 digest written as 64 hex digits, colons allowed (Envoy's
/// `verify_certificate_hash` form).
fn parse_hex_sha256(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        let hex = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

fn tls_mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH (the default)",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

/// A `credentialName` as (namespace, name) (Istio `pilot/pkg/model/credentials`):
/// `name` and `kubernetes://name` are in `home` (the gateway workload's namespace),
/// `ns/name` and `kubernetes://ns/name` as written. `None` for other schemes
/// (`builtin://`, `configmap://`, `kubernetes-gateway://`) or an empty name.
fn resolve_credential(written: &str, home: &str) -> Option<(String, String)> {
    resolve_credential_with(written, home, false)
}

/// [`resolve_credential`], also taking Gateway API's `kubernetes-gateway://ns/name`
/// when `gateway_api` (the analyzers check such references exist; serving them needs
/// a ReferenceGrant, not implemented yet).
pub(crate) fn resolve_credential_with(
    written: &str,
    home: &str,
    gateway_api: bool,
) -> Option<(String, String)> {
    let rest = match written.strip_prefix("kubernetes://") {
        Some(rest) => rest,
        None => match written.strip_prefix("kubernetes-gateway://") {
            Some(rest) if gateway_api => rest,
            _ if written.contains("://") => return None,
            _ => written,
        },
    };
    let (ns, name) = rest.split_once('/').unwrap_or((home, rest));
    (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string()))
}

/// Istio's `extractCertInfo`: `cert` + `key` when both are non-empty, else `tls.crt` +
/// `tls.key`; then the PEM checks `isthmus analyze` makes too ([`crate::pem`]). Whether
/// the key matches the certificate is left to the engine, which parses them for real.
fn server_cert_and_key(
    get: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    crate::pem::server_pair(get)
        .map(|p| (p.cert_chain_pem, p.private_key_pem))
        .map_err(|e| e.to_string())
}

/// Istio's `ExtractRoot`: the client CA certificates of a Secret, key `cacert`, else
/// `ca.crt` (empty values count as absent), checked to hold CERTIFICATE PEM.
fn ca_certificates(get: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Vec<u8>, String> {
    crate::pem::ca_bundle(get).map_err(|e| e.to_string())
}

/// `{}` or `regex: "*"` (Istio `canBeConvertedToPresentMatch`).
fn is_presence(sm: &StringMatch) -> bool {
    (sm.exact.is_none() && sm.prefix.is_none() && sm.regex.is_none())
        || (sm.exact.is_none() && sm.prefix.is_none() && sm.regex.as_deref() == Some("*"))
}

fn vhost_index(
    vhosts: &mut Vec<VirtualHost>,
    by_domain: &mut HashMap<String, usize>,
    domain: String,
    port: u16,
) -> usize {
    if let Some(&i) = by_domain.get(&domain) {
        return i;
    }
    let i = vhosts.len();
    vhosts.push(VirtualHost {
        name: format!("{domain}:{port}"),
        domains: vec![domain.clone()],
        routes: Vec::new(),
        https_redirect: false,
    });
    by_domain.insert(domain, i);
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_refs() {
        assert_eq!(resolve_gateway_ref("gw", "ns"), Some("ns/gw".into()));
        assert_eq!(
            resolve_gateway_ref("other/gw", "ns"),
            Some("other/gw".into())
        );
        assert_eq!(resolve_gateway_ref("./gw", "ns"), Some("ns/gw".into()));
        assert_eq!(
            resolve_gateway_ref("gw.o.svc.cluster.local", "ns"),
            Some("o/gw".into())
        );
        assert_eq!(resolve_gateway_ref("mesh", "ns"), None);
    }

    #[test]
    fn credential_names() {
        let r = |w: &str| resolve_credential(w, "istio-system");
        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(r("c"), pair("istio-system", "c"));
        assert_eq!(r("kubernetes://c"), pair("istio-system", "c"));
        assert_eq!(r("ns/c"), pair("ns", "c"));
        assert_eq!(r("kubernetes://ns/c"), pair("ns", "c"));
        assert_eq!(r("builtin://"), None);
        assert_eq!(r("configmap://ns/c"), None);
        // Gateway API references need a ReferenceGrant: not served yet.
        assert_eq!(r("kubernetes-gateway://ns/c"), None);
        assert_eq!(r(""), None);
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQI=\n-----END PRIVATE KEY-----\n";

    fn pair(data: &[(&str, &str)]) -> Result<(Vec<u8>, Vec<u8>), String> {
        server_cert_and_key(|k| {
            data.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_bytes().to_vec())
        })
    }

    #[test]
    fn secret_keys_in_istio_order() {
        let ok = |c: &str, k: &str| Ok((c.as_bytes().to_vec(), k.as_bytes().to_vec()));
        assert_eq!(pair(&[("tls.crt", CERT), ("tls.key", KEY)]), ok(CERT, KEY));
        let other = CERT.replace("MAMCAQE=", "MAMCAQM=");
        // `cert`/`key` win over `tls.crt`/`tls.key`; empty ones are skipped.
        assert_eq!(
            pair(&[
                ("cert", &other),
                ("key", KEY),
                ("tls.crt", CERT),
                ("tls.key", KEY)
            ]),
            ok(&other, KEY)
        );
        assert_eq!(
            pair(&[
                ("cert", ""),
                ("key", ""),
                ("tls.crt", CERT),
                ("tls.key", KEY)
            ]),
            ok(CERT, KEY)
        );
        let e = pair(&[("cert", ""), ("key", "")]).unwrap_err();
        assert!(e.contains("present but empty"), "{e}");
        let e = pair(&[("ca.crt", CERT)]).unwrap_err();
        assert!(e.contains("neither keys"), "{e}");
        let e = pair(&[("tls.crt", "garbage"), ("tls.key", KEY)]).unwrap_err();
        assert!(
            e.contains("\"tls.crt\" is not valid PEM: no PEM block"),
            "{e}"
        );
        let cut = &CERT[..CERT.len() - 10];
        let e = pair(&[("tls.crt", cut), ("tls.key", KEY)]).unwrap_err();
        assert!(e.contains("no \"-----END CERTIFICATE-----\" line"), "{e}");
        let bad_body = CERT.replace("MAMCAQE=", "!!!!");
        let e = pair(&[("tls.crt", &bad_body), ("tls.key", KEY)]).unwrap_err();
        assert!(e.contains("not base64 DER"), "{e}");
        let e = pair(&[("tls.crt", KEY), ("tls.key", KEY)]).unwrap_err();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        let e = pair(&[("tls.crt", CERT), ("tls.key", CERT)]).unwrap_err();
        assert!(e.contains("no PRIVATE KEY"), "{e}");
        let enc = KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        let e = pair(&[("tls.crt", CERT), ("tls.key", &enc)]).unwrap_err();
        assert!(e.contains("encrypted"), "{e}");
    }

    /// A Gateway in `default` with two HTTPS servers on 443 and one HTTP server on 80,
    /// its secrets, and a VirtualService bound to it; `extra` is appended.
    fn tls_store(extra: &str) -> Store {
        let yaml = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-a, protocol: HTTPS}}
    hosts: [a.test, "ns1/b.test"]
    tls: {{mode: SIMPLE, credentialName: a-cert, httpsRedirect: true}}
  - port: {{number: 443, name: https-any, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: SIMPLE, credentialName: "kubernetes://other/any-cert"}}
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [a.test]
---
apiVersion: v1
kind: Secret
metadata: {{name: a-cert, namespace: istio-system}}
type: kubernetes.io/tls
stringData: {{tls.crt: "{cert}", tls.key: "{key}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: any-cert, namespace: other}}
stringData: {{cert: "{cert}", key: "{key}", tls.crt: x, tls.key: y}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [a.test]
  gateways: [gw]
  http:
  - match: [{{scheme: {{exact: https}}}}]
    route: [{{destination: {{host: secure.default.svc.cluster.local}}}}]
  - route: [{{destination: {{host: plain.default.svc.cluster.local}}}}]
{extra}"#,
            cert = CERT.replace('\n', "\\n"),
            key = KEY.replace('\n', "\\n"),
        );
        let loaded = crate::load::load_str("tls.yaml", &yaml);
        assert!(
            loaded.diagnostics.iter().all(|d| d.level == Level::Info),
            "{:?}",
            loaded.diagnostics
        );
        Store::new(loaded.resources)
    }

    fn errors(diags: &[Diagnostic]) -> Vec<String> {
        diags
            .iter()
            .filter(|d| d.level >= Level::Warning && d.code != CODE_NO_ENDPOINTS)
            .map(|d| d.to_string())
            .collect()
    }

    fn routed_to(snap: &Snapshot, port: u16, scheme: &str) -> Option<String> {
        let headers = http::HeaderMap::new();
        let req = crate::snapshot::RequestView {
            authority: "a.test",
            path: "/",
            method: "GET",
            scheme,
            port,
            headers: &headers,
        };
        let route = snap.listener(port)?.router.route(&req)?;
        let RouteAction::Forward(w) = &route.action;
        Some(snap.cluster(w.targets[0].0).host.clone())
    }

    #[test]
    fn https_simple_servers_become_an_https_listener() {
        let (snap, diags) = compile_gateway(&tls_store(""), &GatewayWorkload::default());
        assert_eq!(errors(&diags), Vec::<String>::new());
        let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [80, 443]);
        assert_eq!(
            snap.listener(80).map(|l| &l.protocol),
            Some(&ListenerProtocol::Http)
        );
        let l443 = snap.listener(443).expect("443");
        let tls = l443.protocol.tls().expect("HTTPS listener");
        assert_eq!(tls.servers.len(), 2);
        let (a, any) = (&tls.servers[0], &tls.servers[1]);
        assert_eq!(a.source, "Gateway default/gw spec.servers[0]");
        assert_eq!(a.sni, ["a.test", "b.test"]);
        assert_eq!(a.secret, "Secret istio-system/a-cert");
        let cred = a.credential.as_ref().expect("a-cert loaded");
        assert_eq!(cred.cert_chain_pem, CERT.as_bytes());
        assert_eq!(cred.private_key_pem, KEY.as_bytes());
        assert!(
            !format!("{cred:?}").contains("MAMCAQI"),
            "Debug hides the key"
        );
        assert_eq!(any.sni, ["*"]);
        assert_eq!(any.secret, "Secret other/any-cert");
        // `cert`/`key` win over `tls.crt`/`tls.key`.
        let cred = any.credential.as_ref().expect("any-cert loaded");
        assert_eq!(cred.cert_chain_pem, CERT.as_bytes());
        // Same routes on both listeners; scheme decides; no https redirect on TLS.
        assert!(!l443.router.vhosts.iter().any(|v| v.https_redirect));
        assert_eq!(
            routed_to(&snap, 443, "https").as_deref(),
            Some("secure.default.svc.cluster.local")
        );
        assert_eq!(
            routed_to(&snap, 80, "http").as_deref(),
            Some("plain.default.svc.cluster.local")
        );
    }

    #[test]
    fn missing_or_bad_secrets_leave_that_server_without_a_certificate() {
        // A workload in namespace `edge`, where `a-cert` exists with a cut PEM.
        let extra = r#"---
apiVersion: v1
kind: Secret
metadata: {name: a-cert, namespace: edge}
stringData: {tls.crt: "-----BEGIN CERTIFICATE-----\nMAMC", tls.key: "k"}
"#;
        let workload = GatewayWorkload {
            namespace: "edge".to_string(),
            ..GatewayWorkload::default()
        };
        let (snap, diags) = compile_gateway(&tls_store(extra), &workload);
        let tls = snap
            .listener(443)
            .and_then(|l| l.protocol.tls())
            .expect("443 still served");
        assert!(tls.servers[0].credential.is_none());
        assert_eq!(tls.servers[0].secret, "Secret edge/a-cert");
        // The explicit namespace does not depend on the workload.
        assert!(tls.servers[1].credential.is_some());
        let errs = errors(&diags);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("tls.yaml:")
                && errs[0].contains(CODE_CREDENTIAL_INVALID)
                && errs[0].contains("Secret edge/a-cert")
                && errs[0].contains("no \"-----END CERTIFICATE-----\" line")
                && errs[0].contains("TLS handshakes for a.test, b.test are refused"),
            "{}",
            errs[0]
        );
        let d = diags
            .iter()
            .find(|d| d.code == CODE_CREDENTIAL_INVALID)
            .expect("finding");
        assert_eq!(d.level, Level::Error);
        assert!(
            d.to_string().contains("spec.servers[0].tls.credentialName"),
            "{d}"
        );

        // No secret at all in the workload's namespace: IST0101 naming where it looked.
        let workload = GatewayWorkload {
            namespace: "nowhere".to_string(),
            ..GatewayWorkload::default()
        };
        let (snap, diags) = compile_gateway(&tls_store(""), &workload);
        assert!(snap
            .listener(443)
            .and_then(|l| l.protocol.tls())
            .is_some_and(|t| t.servers[0].credential.is_none()));
        let errs = errors(&diags);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains(CODE_CREDENTIAL_NOT_FOUND)
                && errs[0].contains("no Secret nowhere/a-cert"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn auto_acme_mutual_without_a_credential_name_needs_a_ca_secret() {
        // The certificate ordered for the server is there (issued); its client CA is not.
        let extra = r#"---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: le}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: le-account}
    solvers: [{http01: {ingress: {class: istio}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: auto, namespace: default, annotations: {isthmus.dev/acme-issuer: le}}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9443, name: mtls, protocol: HTTPS}
    hosts: [m.test]
    tls: {mode: MUTUAL}
"#;
        let secret = format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: isthmus-acme-default-auto-0, namespace: istio-system}}\nstringData: {{tls.crt: \"{}\", tls.key: \"{}\"}}\n",
            CERT.replace('\n', "\\n"),
            KEY.replace('\n', "\\n")
        );
        let (snap, diags) = compile_gateway(
            &tls_store(&format!("{extra}{secret}")),
            &GatewayWorkload::default(),
        );
        let tls = snap
            .listener(9443)
            .and_then(|l| l.protocol.tls())
            .expect("9443");
        assert!(tls.servers[0].credential.is_some(), "{diags:?}");
        assert_eq!(
            tls.servers[0].policy.client_certificate,
            ClientCertificate::Unavailable
        );
        let e = errors(&diags);
        assert!(
            e.iter().any(|d| d.contains("tls.caCertCredentialName")
                && d.contains("needs caCertCredentialName")),
            "{e:?}"
        );
    }

    #[test]
    fn passthrough_servers_route_by_sni_hosts() {
        let extra = r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: pass, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls-pass, protocol: TLS}
    hosts: [p.test, "*.wild.test"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9443, name: https-pass, protocol: HTTPS}
    hosts: ["*"]
    tls: {}
  - port: {number: 9444, name: tls-simple, protocol: TLS}
    hosts: [s.test]
    tls: {mode: SIMPLE, credentialName: a-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: [p.test, x.wild.test, q.test]
  gateways: [pass]
  tls:
  - match: [{sniHosts: [p.test], port: 443}, {sniHosts: [x.wild.test]}]
    route:
    - {destination: {host: backend-a.default.svc.cluster.local, port: {number: 8443}}, weight: 75}
    - {destination: {host: backend-b.default.svc.cluster.local, port: {number: 8443}}, weight: 25}
  - match: [{sniHosts: [q.test], gateways: [other]}]
    route: [{destination: {host: never.default.svc.cluster.local}}]
  - match: [{sniHosts: [q.test]}]
    route: [{destination: {host: q.default.svc.cluster.local, port: {number: 443}}}]
  http:
  - route: [{destination: {host: ignored.default.svc.cluster.local}}]
"#;
        let (snap, diags) = compile_gateway(&tls_store(extra), &GatewayWorkload::default());
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        // 443 mixes terminated servers (gw) and the PASSTHROUGH one (pass).
        let tls = snap
            .listener(443)
            .and_then(|l| l.protocol.tls())
            .expect("443");
        assert_eq!(tls.servers.len(), 2, "{text:?}");
        assert_eq!(tls.passthrough.len(), 1, "{:?}", tls.passthrough);
        let route = &tls.passthrough[0];
        assert_eq!(route.sni, ["p.test", "x.wild.test"]);
        assert_eq!(route.source, "VirtualService default/pass spec.tls[0]");
        let names: Vec<(&str, u32)> = route
            .action
            .targets
            .iter()
            .map(|&(id, w)| (snap.cluster(id).name.as_str(), w))
            .collect();
        assert_eq!(
            names,
            [
                ("outbound|8443||backend-a.default.svc.cluster.local", 75),
                ("outbound|8443||backend-b.default.svc.cluster.local", 25)
            ]
        );
        assert_eq!(
            tls.passthrough_for(Some("X.Wild.Test")).map(|r| &r.source),
            Some(&route.source)
        );
        assert!(tls.passthrough_for(Some("q.test")).is_none());
        // The HTTP routes of a VirtualService bound only to PASSTHROUGH servers are
        // not served: no vhost for p.test on 443.
        let l443 = snap.listener(443).expect("443");
        assert!(l443.router.vhost("p.test").is_none());
        // `*` server on 9443 (HTTPS, no mode): the `port` condition of the first match
        // leaves p.test out there; q.test's first rule is for another gateway.
        let t9443 = snap
            .listener(9443)
            .and_then(|l| l.protocol.tls())
            .expect("9443");
        let snis: Vec<&[String]> = t9443.passthrough.iter().map(|r| r.sni.as_slice()).collect();
        assert_eq!(
            snis,
            [
                &["x.wild.test".to_string()][..],
                &["q.test".to_string()][..]
            ]
        );
        assert!(snap
            .cluster_by_name("outbound|80||never.default.svc.cluster.local")
            .is_none());
        // TLS + SIMPLE (TCP behind termination) is not served yet.
        assert!(snap.listener(9444).is_none());
        assert!(
            diags.iter().any(|d| d.code == CODE_SERVER_SKIPPED
                && d.to_string()
                    .contains("TLS server on port 9444 with tls.mode SIMPLE")),
            "{text:?}"
        );
    }

    #[test]
    fn other_tls_modes_and_port_conflicts_are_skipped() {
        let extra = r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw2, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: mtls, protocol: HTTPS}
    hosts: [m.test]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 8444, name: pass, protocol: HTTPS}
    hosts: [p.test]
    tls: {}
  - port: {number: 80, name: clash, protocol: HTTPS}
    hosts: [c.test]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 8445, name: files, protocol: HTTPS}
    hosts: [f.test]
    tls: {mode: SIMPLE, serverCertificate: /etc/cert.pem, privateKey: /etc/key.pem}
"#;
        let (snap, diags) = compile_gateway(&tls_store(extra), &GatewayWorkload::default());
        let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
        // 8444: `tls: {}` is PASSTHROUGH, a TLS listener with nothing routed.
        assert_eq!(ports, [80, 443, 8444]);
        assert_eq!(
            snap.listener(80).map(|l| &l.protocol),
            Some(&ListenerProtocol::Http)
        );
        let pass = snap.listener(8444).and_then(|l| l.protocol.tls());
        assert_eq!(pass, Some(&TlsTermination::default()));
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        let has = |level: Level, code: &str, what: &str| {
            diags
                .iter()
                .any(|d| d.level == level && d.code == code && d.to_string().contains(what))
        };
        assert!(
            has(Level::Info, CODE_SERVER_SKIPPED, "tls.mode ISTIO_MUTUAL"),
            "{text:?}"
        );
        assert!(
            has(
                Level::Warning,
                CODE_NOT_APPLIED,
                "PASSTHROUGH server on port 8444: no VirtualService"
            ),
            "{text:?}"
        );
        assert!(
            has(
                Level::Error,
                CODE_ROUTE_INVALID,
                "port 80 is already served as HTTP"
            ),
            "{text:?}"
        );
        assert!(
            has(Level::Warning, CODE_UNSUPPORTED, "certificate files"),
            "{text:?}"
        );
    }

    /// HTTPS servers on port 443 of a Gateway `gw` in `default` (`servers`: one
    /// `(host, tls flow mapping body)` each), the Secrets `secrets` in istio-system
    /// (`(name, keys)`, all holding the test PEM), compiled for the default workload:
    /// the servers' TLS settings and the findings.
    fn compile_tls(
        servers: &[(&str, &str)],
        secrets: &[(&str, &[&str])],
    ) -> (Vec<TlsServer>, Vec<Diagnostic>) {
        let mut yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  servers:\n".to_string();
        for (i, (host, tls)) in servers.iter().enumerate() {
            yaml.push_str(&format!(
                "  - port: {{number: 443, name: s{i}, protocol: HTTPS}}\n    hosts: [{host}]\n    tls: {{{tls}}}\n"
            ));
        }
        for (name, keys) in secrets {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\nstringData:\n"
            ));
            for k in *keys {
                let pem = if k.contains("key") { KEY } else { CERT };
                yaml.push_str(&format!("  {k}: \"{}\"\n", pem.replace('\n', "\\n")));
            }
        }
        let loaded = crate::load::load_str("gw.yaml", &yaml);
        assert!(
            loaded.diagnostics.iter().all(|d| d.level == Level::Info),
            "{:?}",
            loaded.diagnostics
        );
        let (snap, diags) =
            compile_gateway(&Store::new(loaded.resources), &GatewayWorkload::default());
        let servers = snap
            .listener(443)
            .and_then(|l| l.protocol.tls())
            .map(|t| t.servers.clone())
            .unwrap_or_default();
        (servers, diags)
    }

    const PAIR: &[&str] = &["tls.crt", "tls.key"];
    const PAIR_CA: &[&str] = &["tls.crt", "tls.key", "ca.crt"];

    /// `(required, CA secret)` of a server, or what else its client checks are.
    fn ca_of(s: &TlsServer) -> Result<(bool, String), String> {
        match &s.policy.client_certificate {
            ClientCertificate::Verified(v) => {
                assert_eq!(v.ca_pem, CERT.as_bytes());
                Ok((v.required, v.ca_secret.clone()))
            }
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn client_cas_are_found_as_istio_finds_them() {
        let (servers, diags) = compile_tls(
            &[
                // `ca.crt` in the credential's own Secret.
                ("a.test", "mode: MUTUAL, credentialName: own"),
                // `<name>-cacert` wins over the credential's own `ca.crt`.
                ("b.test", "mode: MUTUAL, credentialName: both"),
                // caCertCredentialName wins over both.
                (
                    "c.test",
                    "mode: OPTIONAL_MUTUAL, credentialName: both, caCertCredentialName: clients",
                ),
                // No CA anywhere: refused, with an Error.
                ("d.test", "mode: MUTUAL, credentialName: plain"),
                // A caCertCredentialName that names nothing.
                (
                    "e.test",
                    "mode: MUTUAL, credentialName: plain, caCertCredentialName: nothing",
                ),
                // SIMPLE asks for no certificate; subjectAltNames are reported unused.
                (
                    "f.test",
                    "mode: SIMPLE, credentialName: own, subjectAltNames: [x]",
                ),
            ],
            &[
                ("own", PAIR_CA),
                ("both", PAIR_CA),
                ("both-cacert", &["cacert"]),
                ("clients", &["cacert"]),
                ("plain", PAIR),
            ],
        );
        let cas: Vec<_> = servers.iter().map(ca_of).collect();
        assert_eq!(cas[0], Ok((true, "Secret istio-system/own".into())));
        assert_eq!(cas[1], Ok((true, "Secret istio-system/both-cacert".into())));
        assert_eq!(cas[2], Ok((false, "Secret istio-system/clients".into())));
        assert_eq!(cas[3], Err("Unavailable".into()));
        assert_eq!(cas[4], Err("Unavailable".into()));
        assert_eq!(cas[5], Err("NotRequested".into()));
        let text: Vec<String> = errors(&diags);
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(
            text[0].starts_with("Error [IST0161] (Gateway default/gw gw.yaml:")
                && text[0].contains("spec.servers[3].tls.credentialName: mode MUTUAL needs a CA for client certificates: Secret istio-system/plain: it has no key \"cacert\" or \"ca.crt\" (add one, create Secret istio-system/plain-cacert, or set caCertCredentialName); TLS handshakes for d.test are refused"),
            "{}",
            text[0]
        );
        assert!(
            text[1].starts_with("Error [IST0101]")
                && text[1].contains("spec.servers[4].tls.caCertCredentialName: no Secret with the client CA: looked for istio-system/nothing; TLS handshakes for e.test are refused"),
            "{}",
            text[1]
        );
        assert!(
            text[2].starts_with("Warning [ISM0205]")
                && text[2].contains("spec.servers[5].tls.subjectAltNames: subjectAltNames checks client certificates, which tls.mode SIMPLE does not request"),
            "{}",
            text[2]
        );
    }

    #[test]
    fn client_checks_subject_alt_names_and_pins() {
        let hash = "AB:".repeat(31) + "AB";
        let spki = "q".repeat(43) + "=";
        let tls = format!(
            "mode: MUTUAL, credentialName: own, subjectAltNames: [\"spiffe://td/ns/a/sa/b\", \"\"], verifyCertificateHash: [\"{hash}\"], verifyCertificateSpki: [\"{spki}\"]"
        );
        let bad = "mode: MUTUAL, credentialName: own, verifyCertificateHash: [abc], verifyCertificateSpki: [\"bm90IDMyIGJ5dGVz\"]";
        let (servers, diags) =
            compile_tls(&[("a.test", &tls), ("b.test", bad)], &[("own", PAIR_CA)]);
        let ClientCertificate::Verified(v) = &servers[0].policy.client_certificate else {
            panic!("{:?}", servers[0].policy);
        };
        assert_eq!(v.subject_alt_names, ["spiffe://td/ns/a/sa/b"]);
        assert_eq!(v.certificate_sha256, [[0xab; 32]]);
        assert_eq!(v.spki_sha256, [[0xaa; 32]]);
        // Unreadable pins: refused rather than served without them.
        assert_eq!(
            servers[1].policy.client_certificate,
            ClientCertificate::Unavailable
        );
        let text = errors(&diags);
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text[0].contains(
                "spec.servers[1].tls.verifyCertificateHash[0]: \"abc\" is not a hex SHA-256 digest"
            ),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("spec.servers[1].tls.verifyCertificateSpki[0]"),
            "{}",
            text[1]
        );
    }

    #[test]
    fn protocol_versions_and_cipher_suites() {
        let (servers, diags) = compile_tls(
            &[
                ("a.test", "mode: SIMPLE, credentialName: own, minProtocolVersion: TLSV1_3"),
                ("b.test", "mode: SIMPLE, credentialName: own, maxProtocolVersion: TLSV1_2, minProtocolVersion: TLS_AUTO"),
                ("c.test", "mode: SIMPLE, credentialName: own, minProtocolVersion: TLSV1_1"),
                ("d.test", "mode: SIMPLE, credentialName: own, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2"),
                (
                    "e.test",
                    "mode: SIMPLE, credentialName: own, cipherSuites: [\"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]\", tls_aes_256_gcm_sha384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, AES128-SHA, ECDHE-ECDSA-AES128-GCM-SHA256]",
                ),
                (
                    "f.test",
                    "mode: SIMPLE, credentialName: own, cipherSuites: [DES-CBC3-SHA], insecureSkipVerify: true",
                ),
            ],
            &[("own", PAIR)],
        );
        let versions: Vec<_> = servers
            .iter()
            .map(|s| (s.policy.min_version, s.policy.max_version))
            .collect();
        use TlsVersion::{Tls12, Tls13};
        assert_eq!(
            versions,
            [
                (Tls13, Tls13),
                (Tls12, Tls12),
                (Tls12, Tls13),
                (Tls12, Tls13),
                (Tls12, Tls13),
                (Tls12, Tls13)
            ]
        );
        assert_eq!(
            servers[4].policy.cipher_suites,
            [
                CipherSuite::EcdheEcdsaAes128GcmSha256,
                CipherSuite::EcdheEcdsaChacha20Poly1305,
                CipherSuite::Tls13Aes256GcmSha384,
                CipherSuite::EcdheRsaAes128GcmSha256,
            ]
        );
        assert_eq!(servers[5].policy.cipher_suites, []);
        let text = errors(&diags);
        let at = |field: &str, level: &str, what: &str| {
            text.iter()
                .any(|t| t.starts_with(level) && t.contains(&format!("{field}: {what}")))
        };
        assert!(at("spec.servers[2].tls.minProtocolVersion", "Warning", "minProtocolVersion TLSV1_1: TLS 1.0 and 1.1 are not supported (rustls); TLSV1_2 is used"), "{text:#?}");
        assert!(
            at(
                "spec.servers[3].tls.minProtocolVersion",
                "Error",
                "minProtocolVersion is above maxProtocolVersion"
            ),
            "{text:#?}"
        );
        assert!(
            at(
                "spec.servers[4].tls.cipherSuites[3]",
                "Warning",
                "cipher suite \"AES128-SHA\" is not one isthmus (rustls) offers; ignored"
            ),
            "{text:#?}"
        );
        assert!(
            at(
                "spec.servers[5].tls.cipherSuites[0]",
                "Warning",
                "cipher suite \"DES-CBC3-SHA\""
            ),
            "{text:#?}"
        );
        assert!(
            at(
                "spec.servers[5].tls.cipherSuites",
                "Warning",
                "no cipher suite listed is offered"
            ),
            "{text:#?}"
        );
        assert!(
            at(
                "spec.servers[5].tls.insecureSkipVerify",
                "Warning",
                "insecureSkipVerify is not applied"
            ),
            "{text:#?}"
        );
        assert_eq!(text.len(), 6, "{text:#?}");
    }

    #[test]
    fn tls_server_for_an_sni() {
        let server = |sni: &[&str]| TlsServer {
            source: sni.join(","),
            sni: sni.iter().map(|s| s.to_string()).collect(),
            secret: String::new(),
            credential: None,
            policy: TlsPolicy::default(),
        };
        let tls = TlsTermination {
            servers: vec![
                server(&["a.test"]),
                server(&["*.test"]),
                server(&["*.b.test", "a.test"]),
                server(&["*"]),
            ],
            ..Default::default()
        };
        let pick = |sni: Option<&str>| tls.server_for(sni).map(|s| s.source.as_str());
        assert_eq!(pick(Some("A.test.")), Some("a.test"));
        assert_eq!(pick(Some("x.b.test")), Some("*.b.test,a.test"));
        assert_eq!(pick(Some("b.test")), Some("*.test"));
        assert_eq!(pick(Some("test")), Some("*"));
        assert_eq!(pick(None), Some("*"));
        let no_any = TlsTermination {
            servers: tls.servers[..1].to_vec(),
            ..Default::default()
        };
        assert!(no_any.server_for(Some("x.test")).is_none());
        assert!(no_any.server_for(None).is_none());
    }

    #[test]
    fn export_to() {
        assert!(visible_to(&[], "a", "b"));
        assert!(visible_to(&[".".into()], "a", "a"));
        assert!(!visible_to(&[".".into()], "a", "b"));
        assert!(visible_to(&["b".into()], "a", "b"));
        assert!(!visible_to(&["~".into()], "a", "b"));
    }
}
