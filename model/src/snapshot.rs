//! The compiled, immutable per-proxy configuration ([`Snapshot`]) and the request
//! routing over it (virtual host by authority, then first matching route). Built by
//! [`crate::compile`]; read by the engine behind an `ArcSwap`, so nothing here locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use regex::Regex;

/// Everything one gateway (or, later, sidecar) serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Monotonic version assigned by the controller (0 for hand-built snapshots).
    pub version: u64,
    /// One listener per distinct Gateway port, sorted by port.
    pub listeners: Vec<Listener>,
    /// Upstream clusters referenced by routes, indexed by [`ClusterId`].
    pub clusters: Vec<Cluster>,
}

impl Snapshot {
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    pub fn cluster(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id.0 as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and h2c (HTTP, HTTP2, GRPC, GRPC-WEB server protocols).
    Http,
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
    /// Exact (lower-cased) domain -> vhost index.
    exact: HashMap<String, usize>,
    /// `*.suffix` domains as (".suffix", vhost index), longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// The `*` vhost, if any.
    any: Option<usize>,
}

impl Router {
    /// Build the domain index. Domains must be lower-case; a domain that appears in
    /// more than one vhost keeps the first.
    pub fn new(vhosts: Vec<VirtualHost>) -> Router {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut any = None;
        for (i, vh) in vhosts.iter().enumerate() {
            for d in &vh.domains {
                if d == "*" {
                    any.get_or_insert(i);
                } else if let Some(rest) = d.strip_prefix('*') {
                    if !suffixes.iter().any(|(s, _): &(String, usize)| s == rest) {
                        suffixes.push((rest.to_string(), i));
                    }
                } else {
                    exact.entry(d.clone()).or_insert(i);
                }
            }
        }
        // Longest suffix wins (Envoy's wildcard order); stable for equal lengths.
        suffixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        Router {
            vhosts,
            exact,
            suffixes,
            any,
        }
    }

    /// The virtual host for a Host/`:authority` value. The port is ignored and the
    /// comparison is case-insensitive. `*.example.com` does not match `example.com`.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let host = strip_port(authority);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if let Some(&i) = self.exact.get(host) {
            return Some(&self.vhosts[i]);
        }
        for (suffix, i) in &self.suffixes {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return Some(&self.vhosts[*i]);
            }
        }
        self.any.map(|i| &self.vhosts[i])
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

#[derive(Debug)]
pub struct Route {
    /// `VirtualService ns/name` and rule index, for logs.
    pub source: Arc<str>,
    /// The rule's `name`, when set.
    pub name: Option<Arc<str>>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
}

/// One compiled match block (all conditions ANDed). The default matches everything.
#[derive(Debug, Default)]
pub struct RouteMatch {
    pub uri: Option<PathMatch>,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
    pub port: Option<u16>,
}

impl RouteMatch {
    /// A catch-all in Istio's sense (`IsCatchAllRoute`): no condition but a `/` prefix or
    /// `.*` regex on the path. Catch-alls are moved last on a gateway virtual host.
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
            }) => r.as_str() == "^(?:.*)$" || r.as_str() == "^(?:.*)$",
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

/// A compiled `StringMatch`. Regexes are anchored (full match, as Envoy's safe_regex).
#[derive(Debug, Clone)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl StrMatch {
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
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        let found = match (&self.value, headers.get(&self.name)) {
            (None, h) => h.is_some(),
            // A missing header is matched as the empty string (Istio/Envoy semantics).
            (Some(m), None) => m.matches(""),
            (Some(m), Some(v)) => v.to_str().map(|s| m.matches(s)).unwrap_or(false),
        };
        found != self.invert
    }
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    pub value: StrMatch,
}

impl QueryMatch {
    /// Match against the raw query string (`a=1&b=2`); the first parameter with the
    /// name decides, as in Envoy.
    pub fn matches(&self, query: &str) -> bool {
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == self.name {
                return self.value.matches(v);
            }
        }
        false
    }
}

#[derive(Debug)]
pub enum RouteAction {
    /// Forward to one of the weighted clusters.
    Forward(WeightedClusters),
}

/// Destinations with relative weights (`weight / total`). Zero weights are dropped at
/// compile time unless there is only one destination.
#[derive(Debug, Clone)]
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
}
