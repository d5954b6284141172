//! The routing decision every request gets, whatever its HTTP version:
//! [`RouterProxy::decide`] loads the snapshot once (the request finishes on the
//! snapshot it started on), runs the role's steps (ACME answers, the inbound app,
//! transparent passthrough), routes by authority and match, picks a cluster by
//! weight and an endpoint round-robin and resolves it (DNS names from the DNS
//! cache); [`RouterProxy::upstream_headers`] shapes the upstream request for the
//! role (`x-forwarded-*` at the edge, XFCC inbound). Local answers are Envoy-like:
//! 404 `no route`, 301 to `https://` for a vhost with `https_redirect`, 421 for a
//! host of another TLS server, 503 `no healthy upstream`. No locks and no
//! allocation on this path but the `x-forwarded-for` value. The cores that carry
//! requests are `h1.rs` and `h2.rs`.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderName, HeaderValue};
use isthmus_model::snapshot::{
    Cluster, ClusterId, Endpoint, RequestView, RouteAction, Snapshot, UpstreamMtls,
    WeightedClusters,
};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};
use tracing::{debug, warn};

use crate::acme_challenge::ChallengeTokens;
use crate::holder::SnapshotHolder;
use crate::mesh::WorkloadCerts;

/// Upstream connect timeout (Envoy's default `connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const NO_ROUTE: &str = "no route\n";

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A random UUID (version 4) for `x-request-id`, from the per-thread generator,
/// written as hex by hand (`format!` cost more than the rest of the edge steps).
fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = (random_u64() & !0xf000) | 0x4000; // version 4
    let lo = (random_u64() & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    let mut out = [0u8; 36];
    let mut i = 0;
    for word in [hi, lo] {
        for nibble in (0..16).rev() {
            if matches!(i, 8 | 13 | 18 | 23) {
                out[i] = b'-';
                i += 1;
            }
            out[i] = HEX[((word >> (nibble * 4)) & 0xf) as usize];
            i += 1;
        }
    }
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}
const MISDIRECTED: &str = "misdirected request\n";
const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream\n";

/// What a listener is, as data: which per-request steps apply. One request path
/// serves all three; the role only switches steps on or off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerRole {
    /// A gateway listener at the edge: ACME HTTP-01 answers before routing (from
    /// the map the listener was given, if any), the client address appended to
    /// `x-forwarded-for`, `x-forwarded-proto` set.
    Gateway,
    /// A sidecar's outbound listener: the app's requests, routed on the snapshot
    /// listener of the service port, as Istio's outbound route configuration per
    /// port. Explicit-port mode: the authority's port (80 when none). Transparent
    /// mode (`transparent`, the connection was redirected to 15001): the original
    /// destination's port, and a request no route claims goes to that original
    /// destination as it is (Istio's PassthroughCluster, `ALLOW_ANY`).
    SidecarOutbound { transparent: bool },
    /// A sidecar's inbound listener: every request goes to the app at `app` (`None`:
    /// transparent mode, the app on loopback at the original destination's port,
    /// as Istio before 1.10); the peer's
    /// verified identity is passed in `x-forwarded-client-cert` (Istio's format), a
    /// client's own such header is never passed on.
    SidecarInbound { app: Option<SocketAddr> },
}

/// The proxy of one listener: the snapshot holder, the port whose snapshot
/// listener it serves (a Gateway port as declared, not the local bind port), its
/// scheme, its role, the identity it presents to mesh peers, and the HTTP-01 tokens
/// it answers.
#[derive(Clone)]
pub struct RouterProxy {
    holder: SnapshotHolder,
    port: u16,
    /// `http`, or `https` behind TLS termination: what routes match as `scheme` and
    /// what `x-forwarded-proto` says.
    scheme: &'static str,
    role: ListenerRole,
    /// The workload certificate for mTLS to mesh endpoints; none: such endpoints
    /// answer 503 (never plaintext).
    certs: Option<WorkloadCerts>,
    /// Sets `SO_MARK` on every upstream socket, so that the interception rules let
    /// the proxy's own traffic through (`isthmus proxy init --proxy-mark`).
    mark: Option<u32>,
    /// The pending HTTP-01 tokens this listener answers before routing, in the
    /// Gateway role only; none: no ACME challenge is answered.
    http01: Option<Arc<ChallengeTokens>>,
    /// Istio's `gatewayTopology.numTrustedProxies` (Gateway role).
    trusted_proxies: u32,
}

/// The original destination of a connection iptables redirected to this socket
/// (`SO_ORIGINAL_DST`), `None` when it was not redirected. The one place this is
/// read, for the inbound (mode by port, the app) and the outbound (route port,
/// passthrough) listeners.
pub(crate) fn redirected_to(digest: &pingora::protocols::SocketDigest) -> Option<SocketAddr> {
    let inet = |a: &pingora::protocols::l4::socket::SocketAddr| {
        a.as_inet().map(|a| SocketAddr::new(a.ip(), a.port()))
    };
    let dst = inet(digest.original_dst()?)?;
    let local = digest.local_addr().and_then(inet);
    // With conntrack on, every connection reports one: a connection made to the
    // listener itself was not redirected.
    (Some(dst) != local).then_some(dst)
}

impl RouterProxy {
    pub fn new(holder: SnapshotHolder, declared_port: u16) -> RouterProxy {
        RouterProxy {
            holder,
            port: declared_port,
            scheme: "http",
            role: ListenerRole::Gateway,
            certs: None,
            mark: None,
            http01: None,
            trusted_proxies: 0,
        }
    }

    /// Trust `n` proxies in front of this gateway (Istio's
    /// `gatewayTopology.numTrustedProxies`): their `x-forwarded-proto` and
    /// `x-request-id` are kept.
    pub fn with_trusted_proxies(self, n: u32) -> RouterProxy {
        RouterProxy {
            trusted_proxies: n,
            ..self
        }
    }

    /// Answer the HTTP-01 challenges pending in `tokens` before routing (in the
    /// Gateway role only); `None`: answer none.
    pub fn with_acme(self, tokens: Option<Arc<ChallengeTokens>>) -> RouterProxy {
        RouterProxy {
            http01: tokens,
            ..self
        }
    }

    /// Mark every upstream socket with `mark` (`SO_MARK`).
    pub fn with_mark(self, mark: Option<u32>) -> RouterProxy {
        RouterProxy { mark, ..self }
    }

    /// The proxy of a listener that terminated TLS (scheme `https`).
    pub fn https(self) -> RouterProxy {
        RouterProxy {
            scheme: "https",
            ..self
        }
    }

    /// The same proxy in `role`, presenting `certs` to mesh endpoints.
    pub fn with_role(self, role: ListenerRole, certs: Option<WorkloadCerts>) -> RouterProxy {
        RouterProxy {
            role,
            certs,
            ..self
        }
    }

    /// The HTTP-01 tokens answered on this listener: its own map, in the Gateway
    /// role only.
    fn acme_tokens(&self) -> Option<&ChallengeTokens> {
        match self.role {
            ListenerRole::Gateway => self.http01.as_deref(),
            _ => None,
        }
    }

    /// The snapshot listener a request is routed on.
    fn route_port(&self, authority: &str, original: Option<SocketAddr>) -> u16 {
        match self.role {
            ListenerRole::SidecarOutbound { transparent: true } => original
                .map(|a| a.port())
                .or_else(|| authority_port(authority))
                .unwrap_or(80),
            ListenerRole::SidecarOutbound { transparent: false } => {
                authority_port(authority).unwrap_or(80)
            }
            _ => self.port,
        }
    }
}

/// The port of an authority (`host:port`, `[v6]:port`), if it names one.
fn authority_port(authority: &str) -> Option<u16> {
    let (host, port) = authority.rsplit_once(':')?;
    if host.contains(':') && !host.ends_with(']') {
        return None; // a bare IPv6 address
    }
    port.parse().ok()
}

/// Outcome of routing one request on one snapshot.
#[derive(Debug)]
pub(crate) enum Selection<'s> {
    /// No listener for the port, no virtual host, or no matching route: 404.
    NoRoute,
    /// The virtual host requires TLS (`tls.httpsRedirect`): 301 to `https://`.
    HttpsRedirect,
    /// The picked cluster has no endpoint (or does not exist): 503.
    NoEndpoint(Option<&'s Cluster>),
    Endpoint(ClusterId, &'s Cluster, &'s Endpoint),
}

/// Route `req` on the listener of `port` and pick cluster and endpoint.
pub(crate) fn select<'s>(
    snapshot: &'s Snapshot,
    port: u16,
    req: &RequestView<'_>,
) -> Selection<'s> {
    let Some(vhost) = snapshot
        .listener(port)
        .and_then(|l| l.router.vhost(req.authority))
    else {
        return Selection::NoRoute;
    };
    if vhost.https_redirect {
        return Selection::HttpsRedirect;
    }
    let Some(route) = vhost.routes.iter().find(|r| r.matcher.matches(req)) else {
        return Selection::NoRoute;
    };
    let RouteAction::Forward(weighted) = &route.action;
    let Some(id) = pick_cluster(weighted) else {
        return Selection::NoEndpoint(None);
    };
    let Some(cluster) = snapshot.clusters.get(id.0 as usize) else {
        warn!(cluster = id.0, route = %route.source, "route names a cluster missing from the snapshot");
        return Selection::NoEndpoint(None);
    };
    match cluster.next_endpoint() {
        Some(ep) => Selection::Endpoint(id, cluster, ep),
        None => Selection::NoEndpoint(Some(cluster)),
    }
}

pub(crate) fn pick_cluster(w: &WeightedClusters) -> Option<ClusterId> {
    match w.targets.len() {
        0 => None,
        1 => Some(w.targets[0].0),
        _ => Some(w.pick(random_below(w.total))),
    }
}

/// A uniform value in `0..n` (0 when `n` is 0) from a per-thread xorshift64.
fn random_below(n: u32) -> u32 {
    (((random_u64() >> 32) * u64::from(n)) >> 32) as u32
}

/// The next value of a per-thread xorshift64 seeded from the OS.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// The endpoint's socket address: an IP literal as is, a host name from the process's
/// DNS cache ([`crate::dns::DnsCache::system`]): all its addresses round-robin, refreshed
/// in the background as their TTLs expire; only a name's first request waits for DNS.
pub(crate) async fn resolve(ep: &Endpoint) -> io::Result<SocketAddr> {
    let host = ep
        .address
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&ep.address);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, ep.port));
    }
    let dns = crate::dns::DnsCache::system();
    if ep.logical_dns {
        dns.first(host, ep.port).await
    } else {
        dns.resolve(host, ep.port).await
    }
}

/// The request as the router sees it. The authority is the URI's (HTTP/2
/// `:authority`, HTTP/1.1 absolute form), else the Host header.
fn request_view<'a>(req: &'a RequestHeader, port: u16, scheme: &'a str) -> RequestView<'a> {
    let authority = match req.uri.authority() {
        Some(a) => a.as_str(),
        None => req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    };
    RequestView {
        authority,
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        method: req.method.as_str(),
        scheme,
        port,
        headers: &req.headers,
    }
}

/// Whether the TLS connection `tls` was set up for servers other than the one
/// `authority` belongs to on this port.
fn misdirected(
    tls: Option<&crate::tls::TlsConnection>,
    snapshot: &Snapshot,
    port: u16,
    authority: &str,
) -> bool {
    tls.zip(snapshot.listener(port).and_then(|l| l.protocol.tls()))
        .is_some_and(|(conn, tls)| !conn.admits(tls, authority))
}

/// Edge semantics as Envoy's `use_remote_address`: Host is preserved as received
/// (Istio's default), the peer is appended to XFF. Istio's SANITIZE at the edge
/// (nobody claims a mesh identity from outside) is done by the caller.
///
/// `trusted_proxies` is Istio's `gatewayTopology.numTrustedProxies`. At 0 (the
/// edge) a client's `x-forwarded-proto` is replaced by ours and every request
/// gets a fresh `x-request-id` (`preserve_external_request_id` off, Istio's
/// gateway default). Behind trusted proxies their `x-forwarded-proto` and
/// `x-request-id` are kept (set when absent). `x-envoy-*` headers steer retries,
/// timeouts and more: dropped in every case.
fn edge_forwarding_headers(
    client_ip: Option<IpAddr>,
    upstream: &mut RequestHeader,
    scheme: &'static str,
    trusted_proxies: u32,
) -> Result<()> {
    let trusted = trusted_proxies > 0;
    if !trusted || !upstream.headers.contains_key(&X_FORWARDED_PROTO) {
        upstream.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(scheme))?;
    }
    let envoy: Vec<HeaderName> = upstream
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for name in &envoy {
        upstream.remove_header(name);
    }
    if !trusted || !upstream.headers.contains_key(&X_REQUEST_ID) {
        upstream.insert_header(X_REQUEST_ID, request_id())?;
    }
    if let Some(ip) = client_ip {
        use std::fmt::Write as _;
        let mut xff = String::with_capacity(48);
        for v in upstream.headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(v) = v.to_str() {
                xff.push_str(v);
                xff.push_str(", ");
            }
        }
        let _ = write!(xff, "{ip}");
        let value = HeaderValue::from_str(&xff)
            .map_err(|e| Error::because(ErrorType::InternalError, "x-forwarded-for", e))?;
        upstream.insert_header(X_FORWARDED_FOR, value)?;
    }
    Ok(())
}

/// What one request gets, decided on the request header and its connection, the
/// same for every HTTP version and both proxy cores.
pub(crate) enum Decision {
    /// Answer locally with a short `text/plain` body.
    Local(u16, &'static str),
    /// 301 to this location (`tls.httpsRedirect`).
    Redirect(String),
    /// An ACME HTTP-01 key authorization to answer with.
    Acme(String),
    /// Forward to this upstream.
    Forward(Target),
}

/// Where a request goes.
#[derive(Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    /// The endpoint's mesh identity when it is reached over mTLS.
    pub mtls: Option<Arc<UpstreamMtls>>,
    /// The snapshot and cluster it was picked on (for logs).
    pub snapshot: Option<Arc<Snapshot>>,
    pub cluster: Option<ClusterId>,
}

impl Target {
    /// Straight to `addr` (the inbound app, a passthrough destination): no mesh
    /// identity, no cluster.
    fn direct(addr: SocketAddr) -> Target {
        Target {
            addr,
            mtls: None,
            snapshot: None,
            cluster: None,
        }
    }

    /// Whether an upstream connection that carried `uses` requests may carry
    /// another (DestinationRule `http.maxRequestsPerConnection`; 1 turns
    /// keep-alive off).
    pub(crate) fn may_reuse_after(&self, uses: u32) -> bool {
        let Some(cluster) = self
            .snapshot
            .as_ref()
            .zip(self.cluster)
            .and_then(|(s, id)| s.clusters.get(id.0 as usize))
        else {
            return true;
        };
        cluster
            .pool
            .max_requests_per_connection
            .is_none_or(|max| uses < max)
    }

    /// The cluster's own connect timeout (DestinationRule
    /// `connectionPool.tcp.connectTimeout`), if it sets one.
    pub(crate) fn connect_timeout(&self) -> Option<std::time::Duration> {
        let cluster = self
            .snapshot
            .as_ref()?
            .clusters
            .get(self.cluster?.0 as usize)?;
        cluster.pool.connect_timeout
    }

    /// The cluster's name and `connectionPool` limits, when it has any.
    pub(crate) fn limited_pool(&self) -> Option<(&str, &isthmus_model::snapshot::ConnectionPool)> {
        let cluster = self
            .snapshot
            .as_ref()?
            .clusters
            .get(self.cluster?.0 as usize)?;
        cluster
            .pool
            .is_limited()
            .then_some((cluster.name.as_str(), &cluster.pool))
    }

    pub(crate) fn cluster_name(&self) -> &str {
        match (&self.snapshot, self.cluster) {
            (Some(s), Some(id)) => s.clusters.get(id.0 as usize).map_or("?", |c| &c.name),
            _ => "?",
        }
    }
}

/// What a request's connection says about it: where iptables meant it to go, the
/// TLS it came over, the client's address.
#[derive(Default, Clone)]
pub(crate) struct ConnInfo {
    pub original: Option<SocketAddr>,
    pub ssl: Option<Arc<pingora::protocols::tls::SslDigest>>,
    pub client_ip: Option<IpAddr>,
}

impl ConnInfo {
    /// From a connection's digest; the original destination is read only for the
    /// roles that use it (`needs_original`).
    pub(crate) fn of(digest: &pingora::protocols::Digest, needs_original: bool) -> ConnInfo {
        let socket = digest.socket_digest.as_deref();
        ConnInfo {
            original: socket.filter(|_| needs_original).and_then(redirected_to),
            ssl: digest.ssl_digest.clone(),
            client_ip: socket
                .and_then(|d| d.peer_addr())
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        }
    }

    /// The TLS connection the request came over, when its listener terminated TLS.
    pub(crate) fn tls(&self) -> Option<&crate::tls::TlsConnection> {
        self.ssl
            .as_ref()?
            .extension
            .get::<crate::tls::TlsConnection>()
    }
}

impl RouterProxy {
    /// Whether this listener's requests are routed on the original destination of
    /// their connection.
    pub(crate) fn needs_original(&self) -> bool {
        matches!(
            self.role,
            ListenerRole::SidecarOutbound { transparent: true }
                | ListenerRole::SidecarInbound { app: None }
        )
    }

    /// Route one request: the role's steps, then the snapshot.
    pub(crate) async fn decide(&self, req: &RequestHeader, conn: &ConnInfo) -> Decision {
        if let ListenerRole::SidecarInbound { app } = &self.role {
            // Everything to the app; the peer's identity is added upstream.
            // Transparent mode: the app on loopback at the port the peer connected
            // to (so the sidecar's own calls to its pod address can be redirected
            // to its inbound without looping).
            let app = app.or_else(|| {
                conn.original
                    .map(|d| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), d.port()))
            });
            return match app {
                Some(addr) => Decision::Forward(Target::direct(addr)),
                None => Decision::Local(404, NO_ROUTE),
            };
        }
        // ACME HTTP-01 answers come first: before routing and before httpsRedirect.
        if let Some(tokens) = self.acme_tokens() {
            if let Some(answer) = crate::acme_challenge::answer(self.scheme, req, tokens) {
                return Decision::Acme(answer);
            }
        }
        let snapshot = self.holder.load();
        let transparent = self.role == ListenerRole::SidecarOutbound { transparent: true };
        let original = if transparent { conn.original } else { None };
        let mut view = request_view(req, self.port, self.scheme);
        let port = self.route_port(view.authority, original);
        view.port = port;
        // One router serves the whole port: a request whose Host belongs to a server
        // with other TLS settings (e.g. MUTUAL) than the one this connection's
        // handshake went through must not reach that server's routes (421, RFC 9110).
        if self.scheme == "https" && misdirected(conn.tls(), &snapshot, port, view.authority) {
            return Decision::Local(421, MISDIRECTED);
        }
        let (id, cluster, endpoint) = match select(&snapshot, port, &view) {
            Selection::NoRoute => {
                return match original {
                    // Not a mesh service: to where the app was going (passthrough).
                    Some(addr) => Decision::Forward(Target::direct(addr)),
                    None => Decision::Local(404, NO_ROUTE),
                };
            }
            Selection::HttpsRedirect => {
                // As Envoy's `require_tls: ALL`: same authority (port kept) and path.
                return Decision::Redirect(format!("https://{}{}", view.authority, view.path));
            }
            Selection::NoEndpoint(cluster) => {
                debug!(
                    cluster = cluster.map_or("?", |c| c.name.as_str()),
                    "no healthy upstream"
                );
                return Decision::Local(503, NO_HEALTHY_UPSTREAM);
            }
            Selection::Endpoint(id, cluster, endpoint) => (id, cluster, endpoint),
        };
        let addr = match resolve(endpoint).await {
            Ok(addr) => addr,
            Err(e) => {
                warn!(
                    cluster = %cluster.name,
                    endpoint = %endpoint.address,
                    error = %e,
                    "cannot resolve upstream endpoint"
                );
                return Decision::Local(503, NO_HEALTHY_UPSTREAM);
            }
        };
        let mtls = endpoint.mtls.clone();
        Decision::Forward(Target {
            addr,
            mtls,
            snapshot: Some(snapshot),
            cluster: Some(id),
        })
    }

    /// The upstream request's headers as the role wants them: at the edge
    /// `x-forwarded-*`, inbound the peer's identity in `x-forwarded-client-cert`;
    /// nobody passes on a client's own XFCC.
    pub(crate) fn upstream_headers(
        &self,
        upstream: &mut RequestHeader,
        conn: &ConnInfo,
    ) -> Result<()> {
        if upstream.headers.contains_key(&XFCC) {
            upstream.remove_header(&XFCC);
        }
        match &self.role {
            ListenerRole::Gateway => {
                edge_forwarding_headers(conn.client_ip, upstream, self.scheme, self.trusted_proxies)
            }
            // A client cannot claim a mesh identity: only the inbound sets it.
            ListenerRole::SidecarOutbound { .. } => Ok(()),
            ListenerRole::SidecarInbound { .. } => {
                let Some(peer) = conn.tls().and_then(|c| c.peer_identity.as_deref()) else {
                    return Ok(());
                };
                // Istio's format: By= this workload, Hash= the peer certificate's
                // SHA-256, URI= the verified peer.
                let own = self.certs.as_ref().and_then(WorkloadCerts::current);
                let by = own.as_ref().map_or("", |m| m.identity.as_str());
                let hash = conn.tls().and_then(|c| c.peer_cert_sha256.as_deref());
                let xfcc = match hash {
                    Some(h) => format!("By={by};Hash={h};URI={peer}"),
                    None => format!("By={by};URI={peer}"),
                };
                let value = HeaderValue::from_str(&xfcc).map_err(|e| {
                    Error::because(ErrorType::InternalError, "x-forwarded-client-cert", e)
                })?;
                upstream.insert_header(XFCC, value)
            }
        }
    }

    /// The TLS client and the name to verify for mesh mTLS to `target` (`None`:
    /// no workload certificate yet, or no name: never connect then).
    pub(crate) fn mesh_client<'t>(
        &self,
        target: &'t Target,
    ) -> Option<(Arc<rustls::ClientConfig>, &'t str)> {
        let mtls = target.mtls.as_deref()?;
        if mtls.server_name.is_empty() {
            return None;
        }
        let material = self.certs.as_ref().and_then(WorkloadCerts::current)?;
        Some((material.client_config(), mtls.server_name.as_str()))
    }

    /// `SO_MARK` of this listener's upstream sockets.
    pub(crate) fn mark(&self) -> Option<u32> {
        self.mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::snapshot::{
        Listener, ListenerProtocol, Route, RouteMatch, Router, VirtualHost,
    };
    use std::sync::atomic::AtomicUsize;

    fn cluster(name: &str, endpoints: Vec<Endpoint>) -> Cluster {
        Cluster {
            name: name.to_string(),
            host: name.to_string(),
            port: 80,
            subset: None,
            endpoints,
            cursor: AtomicUsize::new(0),
            pool: Default::default(),
        }
    }

    fn snapshot(targets: Vec<(ClusterId, u32)>, clusters: Vec<Cluster>) -> Snapshot {
        let total = targets.iter().map(|t| t.1).sum();
        let route = Route {
            source: Arc::from("VirtualService default/t rule 0"),
            name: None,
            matcher: RouteMatch::default(),
            action: RouteAction::Forward(WeightedClusters { targets, total }),
        };
        let vh = VirtualHost {
            name: "a.example:80".into(),
            domains: vec!["a.example".into()],
            routes: vec![route],
            https_redirect: false,
        };
        Snapshot {
            version: 1,
            listeners: vec![Listener {
                port: 80,
                protocol: ListenerProtocol::Http,
                router: Router::new(vec![vh]),
            }],
            clusters,
            inbound: Vec::new(),
        }
    }

    fn view<'a>(authority: &'a str, headers: &'a http::HeaderMap, port: u16) -> RequestView<'a> {
        RequestView {
            authority,
            path: "/",
            method: "GET",
            scheme: "http",
            port,
            headers,
        }
    }

    #[test]
    fn selection_outcomes() {
        let h = http::HeaderMap::new();
        let ep = Endpoint {
            address: "10.0.0.1".into(),
            port: 8000,
            mtls: None,
            logical_dns: false,
        };
        let s = snapshot(
            vec![(ClusterId(0), 1)],
            vec![cluster("c0", vec![ep.clone()])],
        );
        assert!(
            matches!(select(&s, 80, &view("a.example:80", &h, 80)), Selection::Endpoint(ClusterId(0), _, e) if *e == ep)
        );
        assert!(matches!(
            select(&s, 80, &view("b.example", &h, 80)),
            Selection::NoRoute
        ));
        assert!(matches!(
            select(&s, 443, &view("a.example", &h, 443)),
            Selection::NoRoute
        ));

        let empty = snapshot(vec![(ClusterId(0), 1)], vec![cluster("c0", vec![])]);
        assert!(
            matches!(select(&empty, 80, &view("a.example", &h, 80)), Selection::NoEndpoint(Some(c)) if c.name == "c0")
        );
        let dangling = snapshot(vec![(ClusterId(7), 1)], vec![]);
        assert!(matches!(
            select(&dangling, 80, &view("a.example", &h, 80)),
            Selection::NoEndpoint(None)
        ));
        let mut redirecting = snapshot(
            vec![(ClusterId(0), 1)],
            vec![cluster("c0", vec![ep.clone()])],
        );
        redirecting.listeners[0].router.vhosts[0].https_redirect = true;
        assert!(matches!(
            select(&redirecting, 80, &view("a.example", &h, 80)),
            Selection::HttpsRedirect
        ));
        let no_targets = snapshot(vec![], vec![]);
        assert!(matches!(
            select(&no_targets, 80, &view("a.example", &h, 80)),
            Selection::NoEndpoint(None)
        ));
    }

    #[test]
    fn random_below_is_in_range_and_spread() {
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            let r = random_below(4);
            assert!(r < 4);
            counts[r as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(random_below(0), 0);
    }

    #[tokio::test]
    async fn resolves_literals_and_names() {
        let lit = |a: &str| Endpoint {
            address: a.into(),
            port: 9,
            mtls: None,
            logical_dns: false,
        };
        assert_eq!(
            resolve(&lit("10.1.2.3")).await.ok(),
            Some("10.1.2.3:9".parse().unwrap())
        );
        assert_eq!(
            resolve(&lit("[::1]")).await.ok(),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(
            resolve(&lit("::1")).await.ok(),
            Some("[::1]:9".parse().unwrap())
        );
        // Host names through the system DNS cache (/etc/hosts first): every address of
        // localhost is a loopback one, served round-robin.
        let local = resolve(&lit("localhost"))
            .await
            .expect("localhost resolves");
        assert!(local.ip().is_loopback());
        assert_eq!(local.port(), 9);
        let all = crate::dns::DnsCache::system()
            .addresses("localhost")
            .await
            .expect("cached");
        assert!(all.contains(&local.ip()), "{all:?}");
        for _ in 0..all.len() * 2 {
            let again = resolve(&lit("localhost")).await.expect("cached");
            assert!(all.contains(&again.ip()), "{again} not in {all:?}");
        }
        // RFC 6761: .invalid never resolves (answered locally, no query sent).
        assert!(resolve(&lit("no-such-host.invalid")).await.is_err());
    }
}
