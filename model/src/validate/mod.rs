//! Schema validation of single resources, mirroring Istio's admission webhook
//! (`pkg/config/validation`): what the webhook rejects is an `Error IST0106`, what it
//! warns about is a `Warning IST0133`. Every finding names the resource, the field path
//! (`spec.http[0].route[1].weight`) and the line of that field. Cross-resource checks
//! (unknown gateways, subsets, secrets) are analyzers, not here.
//!
//! Submodules hold the checks per kind (`gateway`, `virtualservice`,
//! `destination`, `security`, `kube`); this module holds the dispatch, the
//! finding builder and the small parsers other modules share: [`parse_duration`] (Go /
//! proto JSON durations), [`compile_regex`] (RE2-style full-match regexes as Envoy runs
//! them), [`check_string_match`], [`check_wildcard_domain`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use crate::diag::{Diagnostic, Level};
use crate::resources::networking::{Percent, StringMatch, WorkloadSelector};
use crate::resources::{Resource, Spec, Store};

/// Validate every resource of the store.
pub fn validate(store: &Store) -> Vec<Diagnostic> {
    store.resources.iter().flat_map(validate_resource).collect()
}

/// Validate one resource: its schema errors (IST0106) and warnings (IST0133).
pub fn validate_resource(r: &Resource) -> Vec<Diagnostic> {
    let mut v = V { r, out: Vec::new() };
    match &r.spec {
        Spec::Gateway(s) => v.gateway(s),
        Spec::VirtualService(s) => v.virtual_service(s),
        Spec::DestinationRule(s) => v.destination_rule(s),
        Spec::ServiceEntry(s) => v.service_entry(s),
        Spec::WorkloadEntry(s) => v.workload_entry("spec", s, None),
        Spec::Sidecar(s) => v.sidecar(s),
        Spec::PeerAuthentication(s) => v.peer_authentication(s),
        Spec::AuthorizationPolicy(s) => v.authorization_policy(s),
        Spec::RequestAuthentication(s) => v.request_authentication(s),
        Spec::KubeGateway(s) => v.kube_gateway(s),
        Spec::HttpRoute(s) => v.http_route_k8s(s),
        Spec::Issuer(s) | Spec::ClusterIssuer(s) => v.issuer(s),
        Spec::Certificate(s) => v.certificate(s),
        Spec::Secret(s) => v.secret(s),
        Spec::ReferenceGrant(_)
        | Spec::Namespace(_)
        | Spec::Service(_)
        | Spec::Deployment(_)
        | Spec::Pod(_)
        | Spec::ServiceAccount(_)
        | Spec::ConfigMap(_)
        | Spec::Telemetry(_)
        | Spec::EnvoyFilter(_)
        | Spec::WasmPlugin(_)
        | Spec::ProxyConfig(_)
        | Spec::GrpcRoute(_)
        | Spec::CustomResourceDefinition(_)
        | Spec::MutatingWebhookConfiguration(_)
        | Spec::ValidatingWebhookConfiguration(_) => {}
    }
    v.out
}

mod destination;
mod gateway;
mod kube;
mod security;
mod virtualservice;

// ---------------------------------------------------------------- shared parsers

/// Istio's limit on regex length (Envoy's program-size limit, approximated).
pub const MAX_REGEX_LEN: usize = 1024;

/// Compile an RE2-style regex the way Envoy applies it: matching the whole input.
/// The error text says what is wrong and that the syntax is RE2.
pub fn compile_regex(re: &str) -> Result<regex::Regex, String> {
    if re.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regex is too large, max length allowed is {MAX_REGEX_LEN}"
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            let detail = match e {
                regex::Error::Syntax(s) => s.lines().last().unwrap_or("").trim().to_string(),
                other => other.to_string(),
            };
            format!("invalid regex {re:?}: {detail}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)")
        })
}

/// Check a `StringMatch`: at most one of exact / prefix / regex, no empty prefix or
/// regex, and a regex that compiles. `{}` (nothing set) is valid (presence match).
pub fn check_string_match(m: &StringMatch) -> Result<(), String> {
    let set = [&m.exact, &m.prefix, &m.regex]
        .iter()
        .filter(|f| f.is_some())
        .count();
    if set > 1 {
        return Err("only one of exact, prefix or regex may be set".into());
    }
    if m.prefix.as_deref() == Some("") {
        return Err("prefix string match should not be empty".into());
    }
    match m.regex.as_deref() {
        Some("") => Err("regex string match should not be empty".into()),
        Some(re) => compile_regex(re).map(|_| ()),
        None => Ok(()),
    }
}

/// Parse a duration as Istio accepts it: Go syntax (`1h30m`, `500ms`, `0.5s`, `10us`),
/// which includes the proto JSON form (`1.5s`). Negative durations are rejected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (use e.g. 500ms, 10s, 1m30s)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut rest = body;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * nanos_per;
        rest = next;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(format!("invalid duration {s:?}: too large"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// A duration Istio accepts in a config field: at least 1ms, millisecond precision.
pub fn check_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("duration {s:?} must be at least 1ms"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "duration {s:?}: only durations to ms precision are supported"
        ));
    }
    Ok(d)
}

fn check_port(n: u32) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("port number {n} must be in the range 1..65535"))
    }
}

/// RFC 1123 label as Istio checks it: 1-63 of `[A-Za-z0-9-]`, not starting or
/// ending with `-`.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_dns_labels(domain: &str, labels: &str) -> Result<(), String> {
    let parts: Vec<&str> = labels.split('.').collect();
    let last = parts.last().copied().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {last:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i + 1 == parts.len() && label.is_empty() && i > 0 {
            break; // trailing dot: `istio.io.`
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

fn check_domain_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    Ok(())
}

/// A fully qualified name (no wildcard).
pub fn check_fqdn(name: &str) -> Result<(), String> {
    check_domain_preconditions(name)?;
    check_dns_labels(name, name)
}

/// A host name whose first label may be `*` (or `*` alone).
pub fn check_wildcard_domain(name: &str) -> Result<(), String> {
    check_domain_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    let first_ok = first == "*" || {
        let l = first
            .strip_prefix("*-")
            .or(first.strip_prefix('*'))
            .unwrap_or(first);
        is_dns1123_label(l)
    };
    if !first_ok {
        return Err(format!(
            "domain name {name:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) => check_dns_labels(name, r),
        None => Ok(()),
    }
}

fn check_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address or a CIDR block.
fn check_ip_or_cidr(s: &str) -> Result<(), String> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (s, None),
    };
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not a valid IP address or CIDR block"))?;
    if let Some(bits) = bits {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match bits.parse::<u32>() {
            Ok(b) if b <= max => {}
            _ => return Err(format!("{s:?} is not a valid CIDR block")),
        }
    }
    Ok(())
}

/// Whether two host names overlap (equal, or one wildcard covers the other).
fn hosts_overlap(a: &str, b: &str) -> bool {
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    if a == b || a == "*" || b == "*" {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => false,
    }
}

/// Whether host `a` is within host `b` (`a.foo.com` in `*.foo.com`).
fn host_subset_of(a: &str, b: &str) -> bool {
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    if a == b || b == "*" {
        return true;
    }
    match b.strip_prefix('*') {
        Some(suffix) => a.ends_with(suffix) && a.len() > suffix.len(),
        None => false,
    }
}

/// Protocols Istio's `protocol.Parse` knows (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Https,
    Tls,
    Tcp,
    Udp,
    Other,
}

fn parse_protocol(p: &str) -> Option<Protocol> {
    Some(match p.to_ascii_lowercase().as_str() {
        "http" | "http2" | "grpc" | "grpc-web" | "http_proxy" => Protocol::Http,
        "https" => Protocol::Https,
        "tls" => Protocol::Tls,
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "mongo" | "redis" | "mysql" => Protocol::Other,
        _ => return None,
    })
}

const SUPPORTED_PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, UDP, MONGO, REDIS, MYSQL";

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

const REDIRECT_CODES: &[u32] = &[301, 302, 303, 307, 308];

fn is_jwt_claim_key(name: &str) -> bool {
    name.starts_with("@request.auth.claims.") || name.starts_with("@request.auth.claims[")
}

/// A header name in a match: lowercase token characters.
fn check_match_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_key(name) {
        return Ok(());
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(format!("header name {name:?} is not a valid header name"));
    }
    if name.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("header name {name:?} must be lowercase"));
    }
    Ok(())
}

fn check_header_value(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| (c as u32) < 0x20 && c != '\t' || c == '\u{7f}')
    {
        return Err("header value contains control characters".into());
    }
    Ok(())
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn check_percentage(p: &Percent) -> Result<(), String> {
    let v = p.value;
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        return Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- the validator

struct V<'a> {
    r: &'a Resource,
    out: Vec<Diagnostic>,
}

impl V<'_> {
    fn push(&mut self, level: Level, code: &'static str, path: &str, msg: String) {
        let d = Diagnostic::new(level, code, msg)
            .at(self.r.origin_at(path))
            .on(self.r)
            .field(path);
        self.out.push(d);
    }

    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.push(Level::Error, "IST0106", path, msg.into());
    }

    fn warn(&mut self, path: &str, msg: impl Into<String>) {
        self.push(Level::Warning, "IST0133", path, msg.into());
    }

    fn check(&mut self, path: &str, res: Result<(), String>) {
        if let Err(e) = res {
            self.err(path, e);
        }
    }

    fn duration(&mut self, path: &str, value: Option<&String>) {
        if let Some(s) = value {
            if let Err(e) = check_duration(s) {
                self.err(path, e);
            }
        }
    }

    fn string_match(&mut self, path: &str, m: &StringMatch) {
        let res = check_string_match(m);
        let field = match (&res, &m.regex) {
            (Err(_), Some(_)) if m.exact.is_none() && m.prefix.is_none() => format!("{path}.regex"),
            _ => path.to_string(),
        };
        self.check(&field, res);
    }

    fn workload_selector(&mut self, path: &str, s: Option<&WorkloadSelector>) {
        let Some(s) = s else { return };
        if s.match_labels.is_empty() {
            self.warn(path, "workload selector specified without labels");
        }
        for (k, val) in &s.match_labels {
            let p = format!("{path}.matchLabels.{k}");
            if k.is_empty() {
                self.err(&p, "empty key is not supported in selector");
            }
            if k.contains('*') || val.contains('*') {
                self.err(
                    &p,
                    format!("wildcard is not supported in selector: \"{k}={val}\""),
                );
            }
        }
    }
}

/// The YAML spelling of an enum value (`SIMPLE`, `DNS_ROUND_ROBIN`, `URLRewrite`).
fn enum_name<T: serde::Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut f = 3;
    while f * f <= n {
        if n.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1s"), Ok(ms(1000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("0.5s"), Ok(ms(500)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(check_duration("0s").is_err());
        assert!(check_duration("1500us").is_err());
        assert!(check_duration("1.5ms").is_err());
        assert!(check_duration("8ms").is_ok());
    }

    #[test]
    fn string_matches() {
        let m = |e: Option<&str>, p: Option<&str>, r: Option<&str>| StringMatch {
            exact: e.map(Into::into),
            prefix: p.map(Into::into),
            regex: r.map(Into::into),
        };
        assert!(check_string_match(&m(None, None, None)).is_ok());
        assert!(check_string_match(&m(Some("a"), Some("b"), None)).is_err());
        assert!(check_string_match(&m(None, None, Some("/v[0-9]+/.*"))).is_ok());
        let e = check_string_match(&m(None, None, Some("/(a"))).unwrap_err();
        assert!(e.contains("RE2"), "{e}");
        assert!(check_string_match(&m(None, Some(""), None)).is_err());
        assert!(compile_regex("a.c").unwrap().is_match("abc"));
        assert!(
            !compile_regex("a.c").unwrap().is_match("xabcx"),
            "full match"
        );
    }

    #[test]
    fn hosts() {
        assert!(check_wildcard_domain("*.example.com").is_ok());
        assert!(check_wildcard_domain("*").is_ok());
        assert!(check_wildcard_domain("reviews").is_ok());
        assert!(check_wildcard_domain("a.*.com").is_err());
        assert!(check_wildcard_domain("bad_name.com").is_err());
        assert!(check_wildcard_domain("foo.123").is_err());
        assert!(check_fqdn("*.a.com").is_err());
        assert!(hosts_overlap("*.foo.com", "a.foo.com"));
        assert!(!hosts_overlap("foo.com", "bar.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("foo.com", "*.foo.com"));
        assert!(check_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(check_ip_or_cidr("10.0.0.0/33").is_err());
        assert!(check_ip_or_cidr("::1").is_ok());
    }

    #[test]
    fn header_names() {
        assert!(check_match_header_name("end-user").is_ok());
        assert!(check_match_header_name("End-User")
            .unwrap_err()
            .contains("lowercase"));
        assert!(check_match_header_name("a b").is_err());
        assert!(check_match_header_name("@request.auth.claims.groups").is_ok());
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
    }
}
