//! Istio host-name semantics (`pkg/config/host` in Istio): wildcard matching,
//! subset and intersection of host lists, short-name expansion, and the
//! `[namespace/]host` form of `Gateway` `Server.hosts`. Also the one best-match
//! table of host patterns ([`NameIndex`], and [`best_match`] for unindexed lists):
//! an exact name, then the longest `*` suffix, then `*`. Virtual hosts
//! (`snapshot::Router`), the TLS servers and PASSTHROUGH routes of a port
//! (`snapshot::TlsTermination`) and the engine's handshake table all choose with it.
//!
//! Comparisons ignore ASCII case; results that build virtual-host domains are
//! lower-cased. A wildcard is a leading `*`: `*.foo.com` is a suffix match on
//! `.foo.com` (so it matches `a.b.foo.com` but not `foo.com`), and `*` matches all.

use std::borrow::Cow;
use std::collections::HashMap;
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

/// Whether a trailing dot of a looked-up name counts (the one difference between
/// the callers of [`NameIndex`] and [`best_match`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrailingDot {
    /// `a.test.` is another name than `a.test`: virtual-host domains, matched on
    /// the Host/`:authority` as sent (as Envoy does by default).
    #[default]
    Kept,
    /// One trailing dot is dropped before matching: SNI (RFC 6066 names carry none;
    /// `A.test.` is served as `a.test`).
    Ignored,
}

/// A pattern as the best-match table reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern<'a> {
    /// `*`: every name, and the only pattern for "no name" (a ClientHello without
    /// SNI).
    Any,
    /// `*suffix` (usually `*.suffix`): a name ending in `suffix` with a non-empty
    /// label in front (`*.a.test` is not `a.test`).
    Suffix(&'a str),
    /// Any other pattern: that name.
    Exact(&'a str),
}

impl Pattern<'_> {
    fn parse(pattern: &str) -> Pattern<'_> {
        match pattern.strip_prefix('*') {
            Some("") => Pattern::Any,
            Some(suffix) => Pattern::Suffix(suffix),
            None => Pattern::Exact(pattern),
        }
    }
}

/// How well a pattern fits a name: more is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Any,
    /// The suffix length: the longest suffix wins.
    Suffix(usize),
    Exact,
}

/// How `pattern` fits the lower-case `name` (`None`: no name), if at all. The
/// pattern is compared ignoring ASCII case.
fn rank(pattern: Pattern<'_>, name: Option<&str>) -> Option<Rank> {
    match (pattern, name) {
        (Pattern::Any, _) => Some(Rank::Any),
        (_, None) => None,
        (Pattern::Suffix(suffix), Some(name)) => (name.len() > suffix.len()
            && ends_with_ci(name, suffix))
        .then_some(Rank::Suffix(suffix.len())),
        (Pattern::Exact(exact), Some(name)) => {
            exact.eq_ignore_ascii_case(name).then_some(Rank::Exact)
        }
    }
}

/// Longest name lower-cased without allocating (DNS names are at most 253 bytes).
const MAX_STACK_NAME: usize = 256;

/// `f` of `name` without its trailing dot (when `trailing_dot` says so) and
/// lower-cased (ASCII), on the stack for names up to [`MAX_STACK_NAME`] bytes.
fn with_normalized<R>(name: &str, trailing_dot: TrailingDot, f: impl FnOnce(&str) -> R) -> R {
    let name = match trailing_dot {
        TrailingDot::Kept => name,
        TrailingDot::Ignored => name.strip_suffix('.').unwrap_or(name),
    };
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(name);
    }
    if name.len() <= MAX_STACK_NAME {
        let mut buf = [0u8; MAX_STACK_NAME];
        let buf = &mut buf[..name.len()];
        buf.copy_from_slice(name.as_bytes());
        buf.make_ascii_lowercase();
        // ASCII lower-casing keeps UTF-8 valid, so this always succeeds.
        if let Ok(lower) = std::str::from_utf8(buf) {
            return f(lower);
        }
    }
    f(&name.to_ascii_lowercase())
}

/// The one best-match table of host patterns: exact names, `*suffix` wildcards and
/// `*`, each mapped to a value. Built from (pattern, value) pairs in order; the
/// first claimant of a pattern keeps it (patterns are compared lower-cased).
///
/// [`NameIndex::get`] chooses, for a name (ASCII case ignored): the exact pattern;
/// else the longest `*` suffix with a non-empty label in front (`*.a.test` covers
/// `x.a.test` and `x.y.a.test`, not `a.test`; a `*suffix` without a dot after the
/// `*` is a plain suffix, so `*a.test` covers `xa.test`); else `*`. No name (a
/// ClientHello without SNI) gets `*` only. The one option, [`TrailingDot`], is the
/// one way the callers differ: virtual hosts keep a trailing dot significant, SNI
/// tables ignore it. Stripping a port is the caller's (virtual hosts strip it from
/// the authority, SNI has none). Lookups do not allocate for names up to 256 bytes.
#[derive(Debug, Clone)]
pub struct NameIndex<T> {
    trailing_dot: TrailingDot,
    exact: HashMap<Box<str>, T>,
    /// `*.suffix` patterns by their suffix (`.suffix`, starting with a dot): found
    /// by hashing each dot-suffix of the name.
    dot_suffixes: HashMap<Box<str>, T>,
    /// Other `*suffix` patterns (no dot after the `*`), longest first (stable).
    /// Usually empty.
    other_suffixes: Vec<(Box<str>, T)>,
    any: Option<T>,
}

impl<T> Default for NameIndex<T> {
    /// An empty table with [`TrailingDot::Kept`].
    fn default() -> NameIndex<T> {
        NameIndex::new(TrailingDot::default())
    }
}

impl<T> NameIndex<T> {
    /// An empty table.
    pub fn new(trailing_dot: TrailingDot) -> NameIndex<T> {
        NameIndex {
            trailing_dot,
            exact: HashMap::new(),
            dot_suffixes: HashMap::new(),
            other_suffixes: Vec::new(),
            any: None,
        }
    }

    /// A table of `pairs`, in order (the first claimant of a pattern keeps it).
    pub fn from_pairs<P: AsRef<str>>(
        trailing_dot: TrailingDot,
        pairs: impl IntoIterator<Item = (P, T)>,
    ) -> NameIndex<T> {
        let mut index = NameIndex::new(trailing_dot);
        for (pattern, value) in pairs {
            index.insert(pattern.as_ref(), value);
        }
        index
    }

    /// Map `pattern` (an exact name, `*suffix` or `*`) to `value`, unless an earlier
    /// insert claimed the same pattern (ASCII case ignored): then `value` is dropped
    /// and `false` returned.
    pub fn insert(&mut self, pattern: &str, value: T) -> bool {
        let pattern = pattern.to_ascii_lowercase();
        match Pattern::parse(&pattern) {
            Pattern::Any => {
                let free = self.any.is_none();
                self.any.get_or_insert(value);
                free
            }
            Pattern::Suffix(suffix) if suffix.starts_with('.') => {
                claim(&mut self.dot_suffixes, suffix.into(), value)
            }
            Pattern::Suffix(suffix) => {
                if self.other_suffixes.iter().any(|(s, _)| **s == *suffix) {
                    return false;
                }
                // After every suffix as long or longer: longest first, stable.
                let at = self
                    .other_suffixes
                    .iter()
                    .position(|(s, _)| s.len() < suffix.len())
                    .unwrap_or(self.other_suffixes.len());
                self.other_suffixes.insert(at, (suffix.into(), value));
                true
            }
            Pattern::Exact(_) => claim(&mut self.exact, pattern.into(), value),
        }
    }

    /// The value of the pattern that fits `name` best (see [`NameIndex`]); `None`
    /// as the name: the `*` value.
    pub fn get(&self, name: Option<&str>) -> Option<&T> {
        match name {
            None => self.any.as_ref(),
            Some(name) => with_normalized(name, self.trailing_dot, |n| self.get_lower(n)),
        }
    }

    /// [`NameIndex::get`] on a normalized (lower-case) name.
    fn get_lower(&self, name: &str) -> Option<&T> {
        if let Some(value) = self.exact.get(name) {
            return Some(value);
        }
        let mut best: Option<(usize, &T)> = None;
        if !self.dot_suffixes.is_empty() {
            // The first dot after a non-empty label gives the longest suffix.
            for (pos, b) in name.bytes().enumerate().skip(1) {
                if b == b'.' {
                    if let Some(value) = self.dot_suffixes.get(&name[pos..]) {
                        best = Some((name.len() - pos, value));
                        break;
                    }
                }
            }
        }
        for (suffix, value) in &self.other_suffixes {
            if best.is_some_and(|(len, _)| len >= suffix.len()) {
                break;
            }
            if name.len() > suffix.len() && name.ends_with(&**suffix) {
                best = Some((suffix.len(), value));
                break;
            }
        }
        best.map(|(_, value)| value).or(self.any.as_ref())
    }

    /// The patterns held (lower-case; exact names, then `*suffix`es, then `*`), for
    /// logs and `Debug`.
    pub fn patterns(&self) -> impl Iterator<Item = Cow<'_, str>> {
        let exact = self.exact.keys().map(|k| Cow::Borrowed(&**k));
        let dot = self.dot_suffixes.keys();
        let other = self.other_suffixes.iter().map(|(s, _)| s);
        let wild = dot.chain(other).map(|s| Cow::Owned(format!("*{s}")));
        exact
            .chain(wild)
            .chain(self.any.as_ref().map(|_| Cow::Borrowed("*")))
    }

    /// Whether no pattern is held.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.dot_suffixes.is_empty()
            && self.other_suffixes.is_empty()
            && self.any.is_none()
    }
}

/// Insert unless taken; whether it was inserted.
fn claim<T>(map: &mut HashMap<Box<str>, T>, key: Box<str>, value: T) -> bool {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(_) => false,
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(value);
            true
        }
    }
}

/// The choice of [`NameIndex::get`] made by scanning (pattern, value) pairs in order
/// instead of indexing them: for short lists that do not keep an index, such as the
/// servers of `snapshot::TlsTermination` (a plain data struct), looked up per
/// request. Same rules, same first-claimant order; does not allocate for names up to
/// 256 bytes.
pub fn best_match<'p, V>(
    pairs: impl IntoIterator<Item = (&'p str, V)>,
    name: Option<&str>,
    trailing_dot: TrailingDot,
) -> Option<V> {
    let scan = |name: Option<&str>| {
        let mut best: Option<(Rank, V)> = None;
        for (pattern, value) in pairs {
            let Some(rank) = rank(Pattern::parse(pattern), name) else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                best = Some((rank, value));
                if rank == Rank::Exact {
                    break;
                }
            }
        }
        best.map(|(_, value)| value)
    };
    match name {
        None => scan(None),
        Some(name) => with_normalized(name, trailing_dot, |n| scan(Some(n))),
    }
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

    #[test]
    fn name_index_chooses_exact_then_longest_suffix_then_any() {
        let index = NameIndex::from_pairs(
            TrailingDot::Kept,
            [
                ("a.example.com", 1),
                ("*.example.com", 2),
                ("*.b.example.com", 3),
                ("*", 4),
                // Claimed already: the first keeps them.
                ("A.Example.COM", 5),
                ("*.EXAMPLE.com", 6),
                ("*", 7),
                ("*le.com", 8),
            ],
        );
        let get = |name: Option<&str>| index.get(name).copied();
        assert_eq!(get(Some("a.example.com")), Some(1));
        assert_eq!(get(Some("A.EXAMPLE.com")), Some(1));
        assert_eq!(get(Some("x.example.com")), Some(2));
        assert_eq!(get(Some("x.y.example.com")), Some(2));
        assert_eq!(get(Some("x.b.example.com")), Some(3));
        // A wildcard needs a label in front.
        assert_eq!(get(Some("b.example.com")), Some(2));
        assert_eq!(get(Some("example.com")), Some(8), "plain suffix `le.com`");
        assert_eq!(get(Some("le.com")), Some(4));
        assert_eq!(get(Some("other.test")), Some(4));
        assert_eq!(get(None), Some(4));
        // Trailing dots are significant here; the port is the caller's.
        assert_eq!(get(Some("a.example.com.")), Some(4));
        assert_eq!(get(Some("a.example.com:80")), Some(4));
        let long = format!("{}.EXAMPLE.com", "X".repeat(300));
        assert_eq!(get(Some(&long)), Some(2), "longer than the stack buffer");
        let mut patterns: Vec<_> = index.patterns().collect();
        patterns.sort();
        assert_eq!(
            patterns,
            [
                "*",
                "*.b.example.com",
                "*.example.com",
                "*le.com",
                "a.example.com"
            ]
        );

        let sni = NameIndex::from_pairs(TrailingDot::Ignored, [("a.test", 1), ("*.a.test", 2)]);
        assert_eq!(sni.get(Some("A.test.")), Some(&1));
        assert_eq!(sni.get(Some("x.a.test.")), Some(&2));
        assert_eq!(sni.get(Some("a.test..")), None, "one dot only");
        assert_eq!(sni.get(None), None, "no `*`");
        assert!(NameIndex::<u8>::default().is_empty() && !sni.is_empty());
    }

    #[test]
    fn name_index_insert_says_whether_it_claimed() {
        let mut index = NameIndex::new(TrailingDot::Kept);
        assert!(index.insert("*.a", 1));
        assert!(!index.insert("*.A", 2));
        assert!(index.insert("*a", 3));
        assert!(!index.insert("*a", 4));
        assert!(index.insert("x", 5));
        assert!(!index.insert("X", 6));
        assert!(index.insert("*", 7));
        assert!(!index.insert("*", 8));
    }

    /// The scan and the index make the same choice on every combination of these
    /// patterns (in two orders) and names.
    #[test]
    fn best_match_scan_agrees_with_the_index() {
        let patterns = [
            "a.test",
            "A.test",
            "*.test",
            "*.a.test",
            "*a.test",
            "*test",
            "*.A.TEST",
            "*",
            "x.a.test",
            "*.b.a.test",
        ];
        let names = [
            None,
            Some("a.test"),
            Some("A.Test."),
            Some("x.a.test"),
            Some("X.A.TEST"),
            Some("xa.test"),
            Some("test"),
            Some(".test"),
            Some("b.a.test"),
            Some("c.b.a.test"),
            Some("*.a.test"),
            Some("*"),
            Some(""),
            Some("a.test.."),
            Some("é.a.test"),
        ];
        for trailing_dot in [TrailingDot::Kept, TrailingDot::Ignored] {
            for mask in 0u32..(1 << patterns.len()) {
                for reversed in [false, true] {
                    let mut chosen: Vec<(&str, usize)> = patterns
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(i, p)| (*p, i))
                        .collect();
                    if reversed {
                        chosen.reverse();
                    }
                    let index = NameIndex::from_pairs(trailing_dot, chosen.iter().copied());
                    for name in names {
                        assert_eq!(
                            index.get(name).copied(),
                            best_match(chosen.iter().copied(), name, trailing_dot),
                            "{trailing_dot:?} {chosen:?} {name:?}"
                        );
                    }
                }
            }
        }
    }
}
