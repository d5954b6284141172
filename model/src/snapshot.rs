//! The compiled, immutable per-proxy configuration ([`Snapshot`]) and the request
//! routing over it (virtual host by authority, then first matching route). Built by
//! [`crate::compile`]; read by the engine behind an `ArcSwap`, so nothing here locks.
//! Virtual hosts by authority and TLS servers by SNI are chosen with the one
//! best-match table of host patterns, [`crate::host::NameIndex`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use regex::Regex;

use crate::host::{best_match, NameIndex, TrailingDot};

/// Everything one gateway (or, later, sidecar) serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Monotonic version assigned by the controller (0 for hand-built snapshots).
    pub version: u64,
    /// One listener per distinct Gateway port, sorted by port.
    pub listeners: Vec<Listener>,
    /// Upstream clusters referenced by routes, indexed by [`ClusterId`].
    pub clusters: Vec<Cluster>,
    /// A sidecar's mesh-facing side: one entry per workload port. Empty for a
    /// gateway. (A sidecar's `listeners` are its outbound side: one per service port,
    /// routing the app's requests by authority.)
    pub inbound: Vec<InboundListener>,
}

/// A sidecar's inbound side for one workload port: mesh traffic is accepted here
/// (mTLS per [`InboundMtls`]) and forwarded in plaintext to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundListener {
    /// The workload (container) port: where the app listens, and what
    /// `portLevelMtls` keys on.
    pub app_port: u16,
    /// The app's address (the WorkloadEntry's; loopback locally).
    pub app_address: String,
    /// Explicit-port mode: where the sidecar accepts mesh traffic for this port
    /// (host, port). `None`: transparent mode, the connection arrives redirected on
    /// the inbound capture port with the app port as its original destination.
    pub bind: Option<(String, u16)>,
    pub mtls: InboundMtls,
    /// What decided `mtls`: `PeerAuthentication ns/name` or `default`.
    pub policy: String,
}

/// The effective PeerAuthentication mode of one workload port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundMtls {
    /// mTLS with a client certificate chaining to the mesh root; plaintext refused.
    Strict,
    /// mTLS or plaintext on one port, told apart by the first bytes.
    Permissive,
    /// Plaintext only.
    Disable,
}

impl Snapshot {
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    pub fn cluster(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id.0 as usize]
    }

    /// A cluster by its Envoy-style name (`outbound|8000|v1|host`).
    pub fn cluster_by_name(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and h2c (HTTP, HTTP2, GRPC, GRPC-WEB server protocols).
    Http,
    /// A TLS port (`protocol: HTTPS` or `TLS`): by SNI, either a server terminating
    /// TLS here (`tls.mode` SIMPLE, MUTUAL or OPTIONAL_MUTUAL: its certificate and
    /// [`TlsPolicy`], then the same HTTP routing as [`ListenerProtocol::Http`] with
    /// scheme `https`), or a PASSTHROUGH route forwarding the bytes unchanged.
    Https(TlsTermination),
}

impl ListenerProtocol {
    /// The TLS settings of an HTTPS listener.
    pub fn tls(&self) -> Option<&TlsTermination> {
        match self {
            ListenerProtocol::Http => None,
            ListenerProtocol::Https(t) => Some(t),
        }
    }
}

/// The servers of one HTTPS listener: one entry per Gateway server on the port, in
/// store order. The engine picks the server for a handshake by SNI: an exact name
/// first, then the longest `*` suffix, then `*`; without SNI, the `*` server. When
/// several servers claim a name, the first one keeps it. Each server has its own
/// certificate and [`TlsPolicy`], so servers with different TLS modes, CAs, versions
/// or cipher suites can share a port.
///
/// PASSTHROUGH routes ([`PassthroughRoute`]) share the SNI choice: the engine puts
/// servers first, then routes, in one map; a name both claim stays with the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsTermination {
    pub servers: Vec<TlsServer>,
    /// Connections forwarded without terminating TLS, by SNI, in VirtualService
    /// order (the first route claiming a name keeps it).
    pub passthrough: Vec<PassthroughRoute>,
}

impl TlsTermination {
    /// The server a handshake with this SNI (or none) gets, by the rules above: an
    /// exact name (case-insensitive, a trailing dot ignored), then the longest `*`
    /// suffix with a non-empty label in front, then `*` ([`NameIndex`] with
    /// [`TrailingDot::Ignored`]). The engine indexes the same pairs for handshakes;
    /// this scan ([`best_match`]: a snapshot keeps no index of them) is for checks
    /// per request.
    pub fn server_for(&self, sni: Option<&str>) -> Option<&TlsServer> {
        best_match(
            sni_pairs(&self.servers, |s| &s.sni),
            sni,
            TrailingDot::Ignored,
        )
    }

    /// The PASSTHROUGH route a connection with this SNI is forwarded by, by the
    /// same rules (a connection without SNI only matches a `*` route).
    pub fn passthrough_for(&self, sni: Option<&str>) -> Option<&PassthroughRoute> {
        best_match(
            sni_pairs(&self.passthrough, |r| &r.sni),
            sni,
            TrailingDot::Ignored,
        )
    }
}

/// (pattern, item) for every SNI pattern of every item, in order.
fn sni_pairs<'a, T>(
    items: &'a [T],
    patterns: impl Fn(&'a T) -> &'a [String] + 'a,
) -> impl Iterator<Item = (&'a str, &'a T)> {
    items
        .iter()
        .flat_map(move |item| patterns(item).iter().map(move |p| (p.as_str(), item)))
}

/// One VirtualService `tls` route match on a PASSTHROUGH server: the connection is
/// forwarded to a weighted destination with its ClientHello and every byte after
/// it unchanged, so the client handshakes with the backend itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughRoute {
    /// `VirtualService ns/name spec.tls[i]`, for logs.
    pub source: String,
    /// SNI patterns, lower-case: the `sniHosts` within the server's hosts.
    pub sni: Vec<String>,
    pub action: WeightedClusters,
}

/// One Gateway server of an HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServer {
    /// `Gateway ns/name spec.servers[i]`, for logs.
    pub source: String,
    /// SNI patterns, lower-case: exact names, `*.suffix`, or `*` (the server's hosts
    /// without their namespace part).
    pub sni: Vec<String>,
    /// `Secret ns/name` named by `credentialName`, for logs.
    pub secret: String,
    /// `None` when the secret is missing or unusable (reported when compiling):
    /// handshakes for the server's names are refused.
    pub credential: Option<TlsCredential>,
    /// Protocol versions, cipher suites and client certificates.
    pub policy: TlsPolicy,
}

/// How a server's handshakes are negotiated, beyond its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    /// `minProtocolVersion` (default TLS 1.2, as Istio).
    pub min_version: TlsVersion,
    /// `maxProtocolVersion` (default TLS 1.3).
    pub max_version: TlsVersion,
    /// `cipherSuites`, those rustls offers. Empty: every suite. Otherwise the suites
    /// of a protocol version are restricted to the listed ones when at least one of
    /// that version is listed; a version none is listed for keeps all its suites
    /// (Envoy's `cipherSuites` never restricts TLS 1.3).
    pub cipher_suites: Vec<CipherSuite>,
    /// Client certificates (`tls.mode` MUTUAL or OPTIONAL_MUTUAL).
    pub client_certificate: ClientCertificate,
}

impl Default for TlsPolicy {
    fn default() -> TlsPolicy {
        TlsPolicy {
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            cipher_suites: Vec::new(),
            client_certificate: ClientCertificate::NotRequested,
        }
    }
}

/// The TLS protocol versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The cipher suites rustls offers (ring provider): AEAD with ECDHE for TLS 1.2, and
/// the three TLS 1.3 suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    Tls13Aes128GcmSha256,
    Tls13Aes256GcmSha384,
    Tls13Chacha20Poly1305Sha256,
    EcdheEcdsaAes128GcmSha256,
    EcdheEcdsaAes256GcmSha384,
    EcdheEcdsaChacha20Poly1305,
    EcdheRsaAes128GcmSha256,
    EcdheRsaAes256GcmSha384,
    EcdheRsaChacha20Poly1305,
}

impl CipherSuite {
    pub const ALL: [CipherSuite; 9] = [
        CipherSuite::Tls13Aes128GcmSha256,
        CipherSuite::Tls13Aes256GcmSha384,
        CipherSuite::Tls13Chacha20Poly1305Sha256,
        CipherSuite::EcdheEcdsaAes128GcmSha256,
        CipherSuite::EcdheEcdsaAes256GcmSha384,
        CipherSuite::EcdheEcdsaChacha20Poly1305,
        CipherSuite::EcdheRsaAes128GcmSha256,
        CipherSuite::EcdheRsaAes256GcmSha384,
        CipherSuite::EcdheRsaChacha20Poly1305,
    ];

    /// The OpenSSL/BoringSSL name Envoy and Istio use (TLS 1.3: the IANA name).
    pub fn openssl_name(self) -> &'static str {
        match self {
            CipherSuite::Tls13Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            CipherSuite::Tls13Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            CipherSuite::Tls13Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
            CipherSuite::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
            CipherSuite::EcdheEcdsaAes256GcmSha384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
            CipherSuite::EcdheEcdsaChacha20Poly1305 => "ECDHE-ECDSA-CHACHA20-POLY1305",
            CipherSuite::EcdheRsaAes128GcmSha256 => "ECDHE-RSA-AES128-GCM-SHA256",
            CipherSuite::EcdheRsaAes256GcmSha384 => "ECDHE-RSA-AES256-GCM-SHA384",
            CipherSuite::EcdheRsaChacha20Poly1305 => "ECDHE-RSA-CHACHA20-POLY1305",
        }
    }

    /// The IANA name (`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`).
    pub fn iana_name(self) -> &'static str {
        match self {
            CipherSuite::Tls13Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            CipherSuite::Tls13Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            CipherSuite::Tls13Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
            CipherSuite::EcdheEcdsaAes128GcmSha256 => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            CipherSuite::EcdheEcdsaAes256GcmSha384 => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            CipherSuite::EcdheEcdsaChacha20Poly1305 => {
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            }
            CipherSuite::EcdheRsaAes128GcmSha256 => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            CipherSuite::EcdheRsaAes256GcmSha384 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            CipherSuite::EcdheRsaChacha20Poly1305 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        }
    }

    /// A suite by its OpenSSL or IANA name, case-insensitively.
    pub fn from_name(name: &str) -> Option<CipherSuite> {
        CipherSuite::ALL.into_iter().find(|c| {
            name.eq_ignore_ascii_case(c.openssl_name()) || name.eq_ignore_ascii_case(c.iana_name())
        })
    }

    pub fn version(self) -> TlsVersion {
        match self {
            CipherSuite::Tls13Aes128GcmSha256
            | CipherSuite::Tls13Aes256GcmSha384
            | CipherSuite::Tls13Chacha20Poly1305Sha256 => TlsVersion::Tls13,
            _ => TlsVersion::Tls12,
        }
    }
}

/// Whether and how a server verifies client certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientCertificate {
    /// `SIMPLE`: no certificate is requested.
    #[default]
    NotRequested,
    /// `MUTUAL` (required) or `OPTIONAL_MUTUAL`.
    Verified(ClientVerification),
    /// Verification is asked for but cannot be set up (no CA, an unusable field;
    /// reported when compiling): every handshake of the server is refused rather
    /// than accepting unauthenticated clients.
    Unavailable,
}

/// The checks on a client certificate: a chain to one of the CA certificates, then,
/// when set, one of `subject_alt_names` among its SANs, and its SHA-256 (or its
/// public key's) among the pins.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientVerification {
    /// `MUTUAL`: a handshake without a certificate is refused. `OPTIONAL_MUTUAL`: it
    /// is accepted; a certificate presented must still pass every check.
    pub required: bool,
    /// `Secret ns/name`, where the CA certificates come from.
    pub ca_secret: String,
    /// The CA certificates (PEM) client certificates must chain to.
    pub ca_pem: Vec<u8>,
    /// `subjectAltNames`: the certificate must carry one of these (DNS, URI, IP or
    /// e-mail SAN, compared exactly; a `*.` DNS SAN covers one label). Empty: any.
    pub subject_alt_names: Vec<String>,
    /// `verifyCertificateHash`: SHA-256 digests of accepted certificates.
    pub certificate_sha256: Vec<[u8; 32]>,
    /// `verifyCertificateSpki`: SHA-256 digests of accepted public keys
    /// (SubjectPublicKeyInfo). With certificate pins, either kind may match; with
    /// none at all, any certificate that chains to the CA.
    pub spki_sha256: Vec<[u8; 32]>,
    /// Mesh inbound: the certificate must carry a SPIFFE ID of this trust domain
    /// (`spiffe://<trust-domain>/...`), as Istio validates peers. `None`: no check.
    pub spiffe_trust_domain: Option<String>,
}

impl std::fmt::Debug for ClientVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientVerification")
            .field("required", &self.required)
            .field("ca_secret", &self.ca_secret)
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("subject_alt_names", &self.subject_alt_names)
            .field("certificate_pins", &self.certificate_sha256.len())
            .field("spki_pins", &self.spki_sha256.len())
            .finish()
    }
}

/// A server certificate chain and its private key, as PEM (the model does no crypto;
/// the engine parses them). `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCredential {
    /// `Secret ns/name`, as errors name it.
    pub secret: String,
    /// The secret's `cert` or `tls.crt`: the leaf certificate first, then its chain.
    pub cert_chain_pem: Vec<u8>,
    /// The secret's `key` or `tls.key`.
    pub private_key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredential")
            .field("secret", &self.secret)
            .field(
                "cert_chain_pem",
                &format_args!("{} bytes", self.cert_chain_pem.len()),
            )
            .finish_non_exhaustive()
    }
}

/// One gateway port (as declared in the Gateway; the process may bind elsewhere).
#[derive(Debug)]
pub struct Listener {
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub router: Router,
}

/// Virtual hosts of one listener with a precomputed domain index.
#[derive(Debug, Default)]
pub struct Router {
    pub vhosts: Vec<VirtualHost>,
    /// Domain pattern -> vhost index; a trailing dot of the host is significant.
    domains: NameIndex<usize>,
}

impl Router {
    /// Build the domain index. Domains are lower-cased here; a domain that appears in
    /// more than one vhost keeps the first.
    pub fn new(vhosts: Vec<VirtualHost>) -> Router {
        let pairs = vhosts
            .iter()
            .enumerate()
            .flat_map(|(i, vh)| vh.domains.iter().map(move |d| (d, i)));
        let domains = NameIndex::from_pairs(TrailingDot::Kept, pairs);
        Router { vhosts, domains }
    }

    /// The virtual host for a Host/`:authority` value. The port is ignored and the
    /// comparison is case-insensitive; exact domain, then the longest wildcard
    /// suffix (Envoy's order), then `*`. `*.example.com` does not match
    /// `example.com`. Does not allocate for host names up to 256 bytes.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let host = strip_port(authority);
        self.domains.get(Some(host)).map(|&i| &self.vhosts[i])
    }

    /// Virtual host then first matching route, or `None` (the caller answers 404).
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.vhost(req.authority)?
            .routes
            .iter()
            .find(|r| r.matcher.matches(req))
    }
}

/// Strip `:port` from an authority, keeping IPv6 literals (`[::1]:80` -> `[::1]`).
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rfind(':') {
            Some(i) if authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &authority[..i],
            _ => authority,
        }
    }
}

#[derive(Debug)]
pub struct VirtualHost {
    /// For logs and debugging, e.g. `todolist.example.com:80`.
    pub name: String,
    /// Lower-case domains: exact names, `*.suffix`, or `*`.
    pub domains: Vec<String>,
    /// Ordered; first match wins. One entry per (rule x match block).
    pub routes: Vec<Route>,
    /// `tls.httpsRedirect` on the server: answer every request with a 301 to the
    /// `https` URL before looking at `routes` (Envoy `require_tls: ALL`). Such a vhost
    /// may have no routes at all.
    pub https_redirect: bool,
}

/// What a route is matched against. Built once per request by the engine.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Host header or `:authority`, as received (port included or not).
    pub authority: &'a str,
    /// Request target path including any query string.
    pub path: &'a str,
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The Gateway port the request arrived on (as declared, not the local bind).
    pub port: u16,
    pub headers: &'a http::HeaderMap,
}

impl RequestView<'_> {
    /// Path without the query string (what URI matches compare).
    pub fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// `VirtualService ns/name` and rule index, for logs.
    pub source: Arc<str>,
    /// The rule's `name`, when set.
    pub name: Option<Arc<str>>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
}

/// One compiled match block (all conditions ANDed). The default matches everything.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub uri: Option<PathMatch>,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
    /// Listener port condition. Gateway compilation drops routes whose `port` does
    /// not equal the listener's instead, so it leaves this `None`.
    pub port: Option<u16>,
}

/// The compiled form of the regex `.*`, Istio's catch-all regex.
const CATCH_ALL_REGEX: &str = "^(?:.*)$";

impl RouteMatch {
    /// A catch-all in Istio's sense (`IsCatchAllRoute`): no condition but a `/` prefix or
    /// `.*` regex on the path (or no path condition). Catch-alls are moved last on a
    /// gateway virtual host. `method`, `scheme` and `authority` are header matches in
    /// Envoy, so they make a route not catch-all.
    pub fn is_catch_all(&self) -> bool {
        let uri_catch_all = match &self.uri {
            None => true,
            Some(PathMatch {
                kind: StrMatch::Prefix(p),
                ..
            }) => p == "/",
            Some(PathMatch {
                kind: StrMatch::Regex(r),
                ..
            }) => r.as_str() == CATCH_ALL_REGEX,
            Some(_) => false,
        };
        uri_catch_all
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none()
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(p) = self.port {
            if p != req.port {
                return false;
            }
        }
        if let Some(u) = &self.uri {
            if !u.matches(req.path_only()) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(req.scheme) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority) {
                return false;
            }
        }
        if !self.headers.iter().all(|h| h.matches(req.headers)) {
            return false;
        }
        if !self.query_params.is_empty() {
            let q = req.query().unwrap_or("");
            if !self.query_params.iter().all(|m| m.matches(q)) {
                return false;
            }
        }
        true
    }
}

/// A compiled `StringMatch`. Regexes are anchored (full match, as Envoy's safe_regex):
/// compile them with [`StrMatch::regex`].
#[derive(Debug, Clone)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl StrMatch {
    /// Compile a user regex as a full match (`^(?:re)$`).
    pub fn regex(re: &str) -> Result<StrMatch, regex::Error> {
        Regex::new(&format!("^(?:{re})$")).map(StrMatch::Regex)
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// URI match: a string match with optional case folding (`ignoreUriCase`; the
/// compiled exact/prefix value is already lower-case then, regex is unaffected).
#[derive(Debug, Clone)]
pub struct PathMatch {
    pub kind: StrMatch,
    pub ignore_case: bool,
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        if !self.ignore_case {
            return self.kind.matches(path);
        }
        match &self.kind {
            StrMatch::Exact(e) => path.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => {
                path.len() >= p.len()
                    && path.is_char_boundary(p.len())
                    && path[..p.len()].eq_ignore_ascii_case(p)
            }
            StrMatch::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: http::HeaderName,
    /// `None`: presence match (`{}` or `regex: "*"`).
    pub value: Option<StrMatch>,
    /// `withoutHeaders`: the result is inverted.
    pub invert: bool,
}

impl HeaderMatch {
    /// Envoy's header matcher as Istio configures it: a value match on a missing
    /// header fails in `headers`, while `withoutHeaders` (inverted) treats the missing
    /// header as the empty string (`treat_missing_header_as_empty`). A header that is
    /// not valid visible ASCII never matches a value.
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        let found = match (&self.value, headers.get(&self.name)) {
            (None, h) => h.is_some(),
            (Some(m), None) => self.invert && m.matches(""),
            (Some(m), Some(v)) => v.to_str().map(|s| m.matches(s)).unwrap_or(false),
        };
        found != self.invert
    }
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    /// `None`: presence match (`{}` or `regex: "*"`).
    pub value: Option<StrMatch>,
}

impl QueryMatch {
    /// Match against the raw query string (`a=1&b=2`); the first parameter with the
    /// name decides, as in Envoy. Values are compared undecoded.
    pub fn matches(&self, query: &str) -> bool {
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == self.name {
                return self.value.as_ref().is_none_or(|m| m.matches(v));
            }
        }
        false
    }
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to one of the weighted clusters.
    Forward(WeightedClusters),
}

/// Destinations with relative weights (`weight / total`). Zero weights are dropped at
/// compile time unless there is only one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedClusters {
    pub targets: Vec<(ClusterId, u32)>,
    pub total: u32,
}

impl WeightedClusters {
    /// Pick with `r` uniform in `0..total` (the caller supplies randomness).
    pub fn pick(&self, r: u32) -> ClusterId {
        if self.targets.len() == 1 {
            return self.targets[0].0;
        }
        let mut acc = 0u32;
        for &(id, w) in &self.targets {
            acc += w;
            if r < acc {
                return id;
            }
        }
        self.targets[self.targets.len() - 1].0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u32);

/// An upstream: a service host, port and subset, with its endpoints.
#[derive(Debug)]
pub struct Cluster {
    /// Envoy-style name: `outbound|8000|v1|todolist.default.svc.cluster.local`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// Round-robin cursor (endpoint selection state; not part of equality).
    pub cursor: AtomicUsize,
    /// The DestinationRule's `connectionPool` limits (Envoy's circuit breakers).
    pub pool: ConnectionPool,
}

/// A DestinationRule's `trafficPolicy.connectionPool` as the proxy enforces it for
/// a cluster, as Envoy's circuit breakers: at most `max_connections` requests in
/// flight (HTTP/1.1 needs a connection each), up to `http1_max_pending_requests`
/// more waiting for one, at most `http2_max_requests` in flight in all; beyond
/// that a request is answered 503 at once (flag `UO`). `None`: no limit (Istio's
/// default, 2^32-1). `connect_timeout` (`tcp.connectTimeout`) replaces the
/// mesh-wide connect timeout for this cluster; `max_requests_per_connection`
/// bounds the requests of each upstream connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub connect_timeout: Option<std::time::Duration>,
    /// `http.maxRequestsPerConnection`: requests an upstream connection carries
    /// before it is closed (1: no keep-alive).
    pub max_requests_per_connection: Option<u32>,
}

impl ConnectionPool {
    /// Whether any circuit-breaker limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_connections.is_some()
            || self.http1_max_pending_requests.is_some()
            || self.http2_max_requests.is_some()
    }
}

impl Cluster {
    /// Next endpoint in round-robin order, `None` when there are none (503).
    pub fn next_endpoint(&self) -> Option<&Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(&self.endpoints[i])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address, or a host name resolved at connect time (DNS resolution).
    pub address: String,
    pub port: u16,
    /// Set when the endpoint is reached over mesh mTLS (ISTIO_MUTUAL, or auto-mTLS
    /// because it has a sidecar): the proxy presents its workload certificate and
    /// accepts only a peer with this identity. `None`: plaintext.
    pub mtls: Option<Arc<UpstreamMtls>>,
    /// A host name resolved as Envoy's LOGICAL_DNS (Istio's `resolution:
    /// DNS_ROUND_ROBIN`): new connections go to the first address of the latest
    /// answer. `false`: STRICT_DNS (Istio's `DNS`), every address round robin.
    pub logical_dns: bool,
}

impl Endpoint {
    /// A plaintext endpoint.
    pub fn plain(address: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            address: address.into(),
            port,
            mtls: None,
            logical_dns: false,
        }
    }
}

/// How an endpoint is reached over mesh mTLS: the identity its sidecar must present,
/// checked in the handshake through the DNS SAN derived from it
/// ([`crate::identity::Identity::dns_name`]) against the mesh root only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamMtls {
    /// `spiffe://cluster.local/ns/default/sa/todolist`.
    pub identity: String,
    /// `todolist.default.sa.cluster.local`: the name verified in the handshake (and
    /// sent as SNI).
    pub server_name: String,
}
