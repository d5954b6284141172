//! Istio host-name semantics (`pkg/config/host` in Istio): wildcard matching,
//! subset and intersection of host lists, short-name expansion, and the
//! `[namespace/]host` form of `Gateway` `Server.hosts`.
//!
//! Comparisons ignore ASCII case; results that build virtual-host domains are
//! lower-cased. A wildcard is a leading `*`: `*.foo.com` is a suffix match on
//! `.foo.com` (so it matches `a.b.foo.com` but not `foo.com`), and `*` matches all.

use std::borrow::Cow;
use std::net::IpAddr;

/// The DNS domain of the (possibly simulated) cluster, used to expand short names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// `true` for `*` and `*.suffix` (and any other name that starts with `*`).
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.is_char_boundary(s.len() - suffix.len())
        && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Symmetric overlap (Istio `Name.Matches`): some name is matched by both `a` and `b`.
/// `*.foo.com` matches `bar.foo.com` and `*.bar.foo.com`; it does not match `foo.com`.
pub fn matches(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => {
            if a.len() < b.len() {
                ends_with_ci(&b[1..], &a[1..])
            } else {
                ends_with_ci(&a[1..], &b[1..])
            }
        }
        (true, false) => ends_with_ci(b, &a[1..]),
        (false, true) => ends_with_ci(a, &b[1..]),
        (false, false) => a.eq_ignore_ascii_case(b),
    }
}

/// One-directional (Istio `Name.SubsetOf`): every name `a` matches is matched by `b`.
/// `foo.com` is a subset of `*.com` and of `*`; `*.com` is not a subset of `foo.com`.
pub fn subset_of(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => a.len() >= b.len() && ends_with_ci(&a[1..], &b[1..]),
        (true, false) => false,
        (false, true) => ends_with_ci(a, &b[1..]),
        (false, false) => a.eq_ignore_ascii_case(b),
    }
}

/// The names two host lists have in common (Istio `Names.Intersection`), lower-cased,
/// in the order of `left`, without duplicates. For each pair the narrower name is
/// kept: server `*.example.com` and VirtualService `dev.example.com` give
/// `dev.example.com`; `*` and `*.x.com` give `*.x.com`.
pub fn intersection<L: AsRef<str>, R: AsRef<str>>(left: &[L], right: &[R]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in left {
        let l = l.as_ref();
        for r in right {
            let r = r.as_ref();
            let kept = if subset_of(l, r) {
                l
            } else if subset_of(r, l) {
                r
            } else {
                continue;
            };
            if !out.iter().any(|h| h.eq_ignore_ascii_case(kept)) {
                out.push(kept.to_ascii_lowercase());
            }
        }
    }
    out
}

/// Expand a short name (Istio `ResolveShortnameToFQDN`): a name without a dot becomes
/// `<name>.<namespace>.svc.cluster.local`. `*`, IP addresses and any name with a dot
/// (`reviews.default` included) are returned unchanged. `namespace` is the namespace
/// of the resource the name is written in, not of the service.
pub fn expand_short_name<'a>(host: &'a str, namespace: &str) -> Cow<'a, str> {
    if host.is_empty() || host == "*" || host.contains('.') || host.parse::<IpAddr>().is_ok() {
        return Cow::Borrowed(host);
    }
    Cow::Owned(format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}"))
}

/// The namespace a cluster-local host belongs to: `ns` for `name.ns.svc.cluster.local`.
pub fn cluster_local_namespace(host: &str) -> Option<&str> {
    let rest = host.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix(".svc.")?;
    let (_, ns) = rest.rsplit_once('.')?;
    (!ns.is_empty()).then_some(ns)
}

/// Which VirtualService namespaces an entry of `Server.hosts` admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceFilter<'a> {
    /// `*/host` or a bare `host`.
    Any,
    /// `ns/host`, or `./host` resolved to the Gateway's namespace.
    Only(&'a str),
}

/// One parsed entry of `Server.hosts`: `[namespace/]dnsName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHost<'a> {
    pub namespace: NamespaceFilter<'a>,
    pub host: &'a str,
}

impl<'a> ServerHost<'a> {
    /// Parse `entry`; `.` as namespace means `gateway_namespace`.
    pub fn parse(entry: &'a str, gateway_namespace: &'a str) -> ServerHost<'a> {
        match entry.split_once('/') {
            None => ServerHost {
                namespace: NamespaceFilter::Any,
                host: entry,
            },
            Some(("*", host)) => ServerHost {
                namespace: NamespaceFilter::Any,
                host,
            },
            Some((".", host)) => ServerHost {
                namespace: NamespaceFilter::Only(gateway_namespace),
                host,
            },
            Some((ns, host)) => ServerHost {
                namespace: NamespaceFilter::Only(ns),
                host,
            },
        }
    }

    /// Whether a VirtualService in `namespace` may bind this host.
    pub fn admits(&self, namespace: &str) -> bool {
        match self.namespace {
            NamespaceFilter::Any => true,
            NamespaceFilter::Only(ns) => ns == namespace,
        }
    }
}

/// The DNS names of `Server.hosts` a VirtualService in `vs_namespace` may bind
/// (Istio `NamesForNamespace`, after `.` is replaced by the Gateway's namespace).
pub fn server_hosts_for_namespace<'a>(
    entries: &'a [String],
    gateway_namespace: &'a str,
    vs_namespace: &str,
) -> Vec<&'a str> {
    entries
        .iter()
        .map(|e| ServerHost::parse(e, gateway_namespace))
        .filter(|h| !h.host.is_empty() && h.admits(vs_namespace))
        .map(|h| h.host)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(matches("*.foo.com", "a.b.foo.com"));
        assert!(!matches("*.foo.com", "foo.com"));
        assert!(matches("*", "anything.at.all"));
        assert!(matches("*.com", "foo.com"));
        assert!(matches("*.foo.com", "*.bar.foo.com"));
        assert!(matches("*.bar.foo.com", "*.foo.com"));
        assert!(!matches("*.foo.com", "*.bar.com"));
        assert!(matches("Foo.COM", "foo.com"));
    }

    #[test]
    fn subset() {
        assert!(subset_of("a.com", "*"));
        assert!(subset_of("*.x.com", "*"));
        assert!(!subset_of("*", "*.x.com"));
        assert!(subset_of("*.a.x.com", "*.x.com"));
        assert!(!subset_of("*.x.com", "a.x.com"));
        assert!(!subset_of("x.com", "*.x.com"));
    }

    #[test]
    fn intersections() {
        assert_eq!(
            intersection(&["*.example.com"], &["dev.example.com"]),
            ["dev.example.com"]
        );
        assert_eq!(intersection(&["a.com"], &["*"]), ["a.com"]);
        assert_eq!(intersection(&["*"], &["*.x.com"]), ["*.x.com"]);
        assert!(intersection(&["*.example.com"], &["example.com"]).is_empty());
        assert_eq!(intersection(&["*", "A.com"], &["a.com"]), ["a.com"]);
    }

    #[test]
    fn short_names() {
        assert_eq!(
            expand_short_name("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(expand_short_name("reviews.default", "x"), "reviews.default");
        assert_eq!(expand_short_name("*", "x"), "*");
        assert_eq!(expand_short_name("10.0.0.1", "x"), "10.0.0.1");
        assert_eq!(expand_short_name("::1", "x"), "::1");
        assert_eq!(cluster_local_namespace("a.b.svc.cluster.local"), Some("b"));
        assert_eq!(cluster_local_namespace("a.example.com"), None);
    }

    #[test]
    fn server_host_namespaces() {
        let hosts = vec![
            "*/a.com".to_string(),
            "./b.com".to_string(),
            "ns1/c.com".to_string(),
            "d.com".to_string(),
        ];
        assert_eq!(
            server_hosts_for_namespace(&hosts, "gw", "gw"),
            ["a.com", "b.com", "d.com"]
        );
        assert_eq!(
            server_hosts_for_namespace(&hosts, "gw", "ns1"),
            ["a.com", "c.com", "d.com"]
        );
        assert_eq!(
            server_hosts_for_namespace(&hosts, "gw", "other"),
            ["a.com", "d.com"]
        );
    }
}
