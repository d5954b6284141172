//! Schema validation of single resources, mirroring Istio's admission webhook
//! (`pkg/config/validation`): what the webhook rejects is an `Error IST0106`, what it
//! warns about is a `Warning IST0133`. Every finding names the resource, the field path
//! (`spec.http[0].route[1].weight`) and the line of that field. Cross-resource checks
//! (unknown gateways, subsets, secrets) are analyzers, not here.
//!
//! Also home of the small parsers other modules share: [`parse_duration`] (Go / proto
//! JSON durations), [`compile_regex`] (RE2-style full-match regexes as Envoy runs
//! them) and [`check_string_match`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use crate::diag::{Diagnostic, Level};
use crate::resources::certmanager::{CertificateSpec, IssuerSpec};
use crate::resources::core::{decode_base64, SecretData};
use crate::resources::gatewayapi::{
    self, HttpRouteFilter, HttpRouteFilterType, PathMatchType, ValueMatchType,
};
use crate::resources::networking::{
    Destination, DestinationRuleSpec, GatewaySpec, HeaderOperations, Headers, HttpFaultInjection,
    HttpMatchRequest, HttpRoute, HttpRouteDestination, Percent, Resolution, RouteDestination,
    Server, ServerTlsMode, ServerTlsSettings, ServiceEntrySpec, SidecarSpec, StringMatch,
    TlsProtocol, TrafficPolicy, VirtualServiceSpec, WorkloadEntrySpec,
};
use crate::resources::policy::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
};
use crate::resources::security::{
    AuthorizationAction, AuthorizationPolicySpec, PeerAuthenticationSpec, PolicyTargetReference,
    RequestAuthenticationSpec,
};
use crate::resources::networking::WorkloadSelector;
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
        | Spec::Pod(_) => {}
    }
    v.out
}

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
        return Err(format!("duration {s:?}: only durations to ms precision are supported"));
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
            return Err(format!("domain name {domain:?} invalid (label {label:?} invalid)"));
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
        let l = first.strip_prefix("*-").or(first.strip_prefix('*')).unwrap_or(first);
        is_dns1123_label(l)
    };
    if !first_ok {
        return Err(format!("domain name {name:?} invalid (label {first:?} invalid)"));
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

const SUPPORTED_PROTOCOLS: &str = "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, UDP, MONGO, REDIS, MYSQL";

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
    if value.chars().any(|c| (c as u32) < 0x20 && c != '\t' || c == '\u{7f}') {
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
                self.err(&p, format!("wildcard is not supported in selector: \"{k}={val}\""));
            }
        }
    }

    // ------------------------------------------------------------ Gateway

    fn gateway(&mut self, g: &GatewaySpec) {
        if !is_dns1123_label(self.r.name()) {
            self.err(
                "metadata.name",
                format!("invalid gateway name {:?}: must be a DNS label (no dots)", self.r.name()),
            );
        }
        if g.servers.is_empty() {
            self.err("spec.servers", "gateway must have at least one server");
        }
        let mut server_names = BTreeSet::new();
        let mut port_names = BTreeSet::new();
        for (i, s) in g.servers.iter().enumerate() {
            let path = format!("spec.servers[{i}]");
            self.server(&path, s);
            if let Some(name) = &s.name {
                if !server_names.insert(name.as_str()) {
                    self.err(
                        &format!("{path}.name"),
                        format!("server names must be unique: duplicate name {name:?}"),
                    );
                }
            }
            if !s.port.name.is_empty() && !port_names.insert(s.port.name.as_str()) {
                self.err(
                    &format!("{path}.port.name"),
                    format!("port names in servers must be unique: duplicate name {:?}", s.port.name),
                );
            }
        }
    }

    fn server(&mut self, path: &str, s: &Server) {
        if s.hosts.is_empty() {
            self.err(&format!("{path}.hosts"), "server config must contain at least one host");
        }
        for (i, h) in s.hosts.iter().enumerate() {
            let p = format!("{path}.hosts[{i}]");
            self.gateway_host(&p, h);
        }
        let port_path = format!("{path}.port");
        let protocol = parse_protocol(&s.port.protocol);
        if protocol.is_none() {
            self.err(
                &format!("{port_path}.protocol"),
                format!(
                    "invalid protocol {:?}, supported protocols are {SUPPORTED_PROTOCOLS}",
                    s.port.protocol
                ),
            );
        }
        let unix = s.bind.as_deref().is_some_and(|b| b.starts_with("unix://"));
        if s.port.number > 0 || !unix {
            self.check(&format!("{port_path}.number"), check_port(s.port.number));
        }
        if s.port.target_port.is_some_and(|t| t > 0) {
            self.err(&format!("{port_path}.targetPort"), "targetPort has no impact on Gateways");
        }
        if s.port.name.is_empty() {
            self.err(&format!("{port_path}.name"), "port name must be set");
        }
        if let Some(bind) = s.bind.as_deref() {
            let p = format!("{path}.bind");
            if let Some(addr) = bind.strip_prefix("unix://") {
                if !addr.starts_with('/') && !addr.starts_with('@') {
                    self.err(&p, format!("{addr:?} is not an absolute path to a file"));
                }
                if s.port.number != 0 {
                    self.err(&p, "port number must be 0 for unix domain socket");
                }
            } else if !is_ip(bind) {
                self.err(&p, format!("{bind:?} is not a valid IP address"));
            }
        }
        let tls_path = format!("{path}.tls");
        if let Some(tls) = &s.tls {
            self.server_tls(&tls_path, tls);
        }
        match (protocol, &s.tls) {
            (Some(Protocol::Https | Protocol::Tls), None) => {
                self.err(path, "server must have TLS settings for HTTPS/TLS protocols");
            }
            (Some(Protocol::Http), Some(tls)) => {
                let passthrough = matches!(
                    tls.mode,
                    None | Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
                );
                let has_certs = tls.ca_certificates.is_some()
                    || tls.private_key.is_some()
                    || tls.server_certificate.is_some();
                if !passthrough || has_certs {
                    self.err(&tls_path, "server cannot have TLS settings for plain text HTTP ports");
                }
            }
            (Some(Protocol::Tcp | Protocol::Udp | Protocol::Other), Some(_)) => {
                self.err(&tls_path, "server cannot have TLS settings for non HTTPS/TLS ports");
            }
            _ => {}
        }
        if protocol != Some(Protocol::Http) && s.tls.as_ref().is_some_and(|t| t.https_redirect) {
            self.warn(
                &format!("{tls_path}.httpsRedirect"),
                "tls.httpsRedirect should only be used with http servers",
            );
        }
    }

    /// `[namespace/]dnsName` of a Gateway server.
    fn gateway_host(&mut self, path: &str, host: &str) {
        let dns = match host.split_once('/') {
            None => host,
            Some((ns, dns)) => {
                if ns.is_empty() || dns.is_empty() {
                    self.err(path, "config namespace and dnsName in host entry cannot be empty");
                    return;
                }
                if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                    self.err(path, format!("invalid namespace value {ns:?} in gateway (use *, . or a namespace name)"));
                }
                dns
            }
        };
        if dns != "*" && !dns.contains('.') {
            self.err(path, format!("short names (non FQDN) are not allowed: {dns:?}"));
        }
        if let Err(e) = check_wildcard_domain(dns) {
            if !is_ip(dns) {
                self.err(path, e);
            }
        }
        self.check(path, check_partial_wildcard(dns));
    }

    fn server_tls(&mut self, path: &str, tls: &ServerTlsSettings) {
        let mode = tls.mode.unwrap_or(ServerTlsMode::Passthrough);
        if matches!(tls.min_protocol_version, Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1))
            && tls.cipher_suites.is_empty()
        {
            self.warn(
                &format!("{path}.minProtocolVersion"),
                "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers",
            );
        }
        let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        let credential = has(&tls.credential_name)
            || !tls.credential_names.is_empty()
            || !tls.tls_certificates.is_empty();
        match mode {
            ServerTlsMode::IstioMutual => {
                for (field, set) in [
                    ("serverCertificate", has(&tls.server_certificate)),
                    ("privateKey", has(&tls.private_key)),
                    ("caCertificates", has(&tls.ca_certificates)),
                    ("credentialName", has(&tls.credential_name)),
                ] {
                    if set {
                        self.err(
                            &format!("{path}.{field}"),
                            format!("ISTIO_MUTUAL TLS cannot have an associated {field}"),
                        );
                    }
                }
                return;
            }
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
                if has(&tls.ca_crl)
                    || has(&tls.server_certificate)
                    || has(&tls.private_key)
                    || has(&tls.ca_certificates)
                    || has(&tls.credential_name)
                {
                    self.warn(path, format!("{} mode does not use certificates, they will be ignored", enum_name(&mode)));
                }
            }
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if !credential {
                    let name = if mode == ServerTlsMode::Simple { "SIMPLE" } else { "MUTUAL" };
                    if !has(&tls.server_certificate) {
                        self.err(path, format!("{name} TLS requires a server certificate (credentialName or serverCertificate)"));
                    }
                    if !has(&tls.private_key) {
                        self.err(path, format!("{name} TLS requires a private key (credentialName or privateKey)"));
                    }
                    if mode != ServerTlsMode::Simple && !has(&tls.ca_certificates) {
                        self.err(path, "MUTUAL TLS requires a client CA bundle (caCertificates)");
                    }
                }
            }
        }
        if has(&tls.ca_crl) {
            if has(&tls.credential_name) {
                self.err(
                    &format!("{path}.caCrl"),
                    "CRL is not supported with credentialName. CRL has to be specified in the credential",
                );
            }
            if mode == ServerTlsMode::Simple {
                self.err(&format!("{path}.caCrl"), "CRL is not supported with SIMPLE TLS");
            }
        }
    }

    // ------------------------------------------------------------ VirtualService

    fn virtual_service(&mut self, vs: &VirtualServiceSpec) {
        let delegate = vs.hosts.is_empty();
        if delegate {
            if !vs.gateways.is_empty() {
                self.err("spec.gateways", "delegate virtual service must have no gateways specified");
            }
            if !vs.tls.is_empty() {
                self.err("spec.tls", "delegate virtual service must have no tls route specified");
            }
            if !vs.tcp.is_empty() {
                self.err("spec.tcp", "delegate virtual service must have no tcp route specified");
            }
        }
        for (i, g) in vs.gateways.iter().enumerate() {
            self.gateway_name(&format!("spec.gateways[{i}]"), g);
        }
        let applies_to_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
        let applies_to_mesh = !applies_to_gateway;
        if !applies_to_gateway {
            for (i, h) in vs.http.iter().enumerate() {
                for (j, m) in h.match_.iter().enumerate() {
                    for (kind, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
                        for key in map.keys().filter(|k| is_jwt_claim_key(k)) {
                            self.err(
                                &format!("spec.http[{i}].match[{j}].{kind}.{key}"),
                                "JWT claim based routing is only supported for gateways (add a gateway to spec.gateways)",
                            );
                        }
                    }
                }
            }
        }
        let mut all_valid = true;
        for (i, h) in vs.hosts.iter().enumerate() {
            let p = format!("spec.hosts[{i}]");
            if h == "*" {
                if applies_to_mesh {
                    self.err(&p, "wildcard host * is not allowed for virtual services bound to the mesh gateway");
                    all_valid = false;
                }
            } else if let Err(e) = check_wildcard_domain(h) {
                if !is_ip(h) {
                    self.err(&p, e);
                    all_valid = false;
                }
            }
        }
        if all_valid {
            for i in 0..vs.hosts.len() {
                for j in i + 1..vs.hosts.len() {
                    if hosts_overlap(&vs.hosts[i], &vs.hosts[j]) {
                        self.err(
                            &format!("spec.hosts[{j}]"),
                            format!("duplicate hosts in virtual service: {} & {}", vs.hosts[i], vs.hosts[j]),
                        );
                    }
                }
            }
        }
        if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
            self.err("spec", "http, tcp or tls must be provided in virtual service");
        }
        for (i, h) in vs.http.iter().enumerate() {
            self.http_route(&format!("spec.http[{i}]"), h, delegate);
        }
        for (i, t) in vs.tls.iter().enumerate() {
            let path = format!("spec.tls[{i}]");
            if t.match_.is_empty() {
                self.err(&path, "TLS route must have at least one match condition");
            }
            for (j, m) in t.match_.iter().enumerate() {
                let mp = format!("{path}.match[{j}]");
                if m.sni_hosts.is_empty() {
                    self.err(&mp, "TLS match must have at least one SNI host");
                }
                for (k, sni) in m.sni_hosts.iter().enumerate() {
                    let sp = format!("{mp}.sniHosts[{k}]");
                    if sni != "*" {
                        if let Err(e) = check_wildcard_domain(sni) {
                            if is_ip(sni) {
                                self.warn(&sp, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
                            } else {
                                self.err(&sp, e);
                            }
                            continue;
                        }
                    }
                    if !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
                        self.err(
                            &sp,
                            format!("SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]", vs.hosts.join(", ")),
                        );
                    }
                }
                for (k, s) in m.destination_subnets.iter().enumerate() {
                    self.check(&format!("{mp}.destinationSubnets[{k}]"), check_ip_or_cidr(s));
                }
                if let Some(port) = m.port {
                    self.check(&format!("{mp}.port"), check_port(port));
                }
                for (k, g) in m.gateways.iter().enumerate() {
                    self.gateway_name(&format!("{mp}.gateways[{k}]"), g);
                }
            }
            if t.route.is_empty() {
                self.err(&path, "TLS route is required");
            }
            self.route_destinations(&format!("{path}.route"), &t.route);
        }
        for (i, t) in vs.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            for (j, m) in t.match_.iter().enumerate() {
                let mp = format!("{path}.match[{j}]");
                for (k, s) in m.destination_subnets.iter().enumerate() {
                    self.check(&format!("{mp}.destinationSubnets[{k}]"), check_ip_or_cidr(s));
                }
                if let Some(s) = &m.source_subnet {
                    self.check(&format!("{mp}.sourceSubnet"), check_ip_or_cidr(s));
                }
                if let Some(port) = m.port {
                    self.check(&format!("{mp}.port"), check_port(port));
                }
                for (k, g) in m.gateways.iter().enumerate() {
                    self.gateway_name(&format!("{mp}.gateways[{k}]"), g);
                }
            }
            if t.route.is_empty() {
                self.err(&path, "TCP route is required");
            }
            self.route_destinations(&format!("{path}.route"), &t.route);
        }
        // A rule without matches catches everything: whatever follows it is dead.
        let catch_all_not_last = |n: usize, no_match: &dyn Fn(usize) -> bool| {
            (0..n.saturating_sub(1)).filter(|i| no_match(*i)).collect::<Vec<_>>()
        };
        for i in catch_all_not_last(vs.http.len(), &|i| vs.http[i].match_.is_empty()) {
            let name = vs.http[i].name.as_deref().map_or(format!("#{i}"), |n| format!("{n:?}"));
            self.warn(
                &format!("spec.http[{i}]"),
                format!("only the last rule can have no matches: rule {name} matches every request, so the {} rule(s) after it are never used", vs.http.len() - i - 1),
            );
        }
        for i in catch_all_not_last(vs.tcp.len(), &|i| vs.tcp[i].match_.is_empty()) {
            self.warn(
                &format!("spec.tcp[{i}]"),
                format!("only the last rule can have no matches: rule #{i} matches every connection, so the {} rule(s) after it are never used", vs.tcp.len() - i - 1),
            );
        }
    }

    /// `mesh`, `name`, `namespace/name` or the legacy `name.namespace...` form.
    fn gateway_name(&mut self, path: &str, g: &str) {
        match g.split_once('/') {
            None => {
                if g.contains('.') {
                    let mut parts = g.split('.');
                    let name = parts.next().unwrap_or("");
                    let ns = parts.next().unwrap_or("");
                    self.warn(
                        path,
                        format!("using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{ns}/{name}\""),
                    );
                }
                self.check(path, check_fqdn(g));
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    self.err(path, "config namespace and gateway name cannot be empty");
                    return;
                }
                if !is_dns1123_label(ns) {
                    self.err(path, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(name) {
                    self.err(path, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
    }

    fn http_route(&mut self, path: &str, h: &HttpRoute, delegate_vs: bool) {
        let root = !delegate_vs && h.delegate.is_some();
        if root {
            if h.redirect.is_some() {
                self.err(&format!("{path}.redirect"), "root HTTP route must not specify redirect");
            }
            if !h.route.is_empty() {
                self.err(&format!("{path}.route"), "root HTTP route must not specify route");
            }
        } else {
            if delegate_vs && h.delegate.is_some() {
                self.err(&format!("{path}.delegate"), "delegate HTTP route cannot contain delegate");
            }
            if h.redirect.is_some() {
                if !h.route.is_empty() {
                    self.err(&format!("{path}.redirect"), "HTTP route cannot contain both route and redirect");
                }
                if h.fault.is_some() {
                    self.err(&format!("{path}.redirect"), "HTTP route cannot contain both fault and redirect");
                }
                if h.rewrite.is_some() {
                    self.err(&format!("{path}.rewrite"), "HTTP route rule cannot contain both rewrite and redirect");
                }
                if h.direct_response.is_some() {
                    self.err(&format!("{path}.directResponse"), "HTTP route cannot contain both redirect and directResponse");
                }
            } else if h.direct_response.is_some() {
                if !h.route.is_empty() {
                    self.err(&format!("{path}.directResponse"), "HTTP route cannot contain both route and directResponse");
                }
            } else if h.route.is_empty() {
                self.err(path, "HTTP route, redirect or directResponse is required");
            }
        }
        for (i, m) in h.match_.iter().enumerate() {
            self.http_match(&format!("{path}.match[{i}]"), m, root || delegate_vs);
        }
        self.headers(&format!("{path}.headers"), h.headers.as_ref());
        if let Some(cors) = &h.cors_policy {
            let p = format!("{path}.corsPolicy");
            for (i, o) in cors.allow_origins.iter().enumerate() {
                let op = format!("{p}.allowOrigins[{i}]");
                if o.exact.is_none() && o.prefix.is_none() && o.regex.is_none() {
                    self.err(&op, "an allowOrigins entry needs exact, prefix or regex");
                } else {
                    self.string_match(&op, o);
                }
            }
            for (i, m) in cors.allow_methods.iter().enumerate() {
                if !HTTP_METHODS.contains(&m.as_str()) {
                    self.err(&format!("{p}.allowMethods[{i}]"), format!("{m:?} is not a supported HTTP method"));
                }
            }
            for (field, list) in [("allowHeaders", &cors.allow_headers), ("exposeHeaders", &cors.expose_headers)] {
                for (i, name) in list.iter().enumerate() {
                    let ok = name == "*"
                        || (!name.is_empty()
                            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
                    if !ok {
                        self.err(&format!("{p}.{field}[{i}]"), format!("header name {name:?} is not a valid header name"));
                    }
                }
            }
            if let Some(age) = &cors.max_age {
                match check_duration(age) {
                    Ok(d) if d.subsec_nanos() != 0 => self.err(
                        &format!("{p}.maxAge"),
                        "max_age duration is accurate only to seconds precision",
                    ),
                    Ok(_) => {}
                    Err(e) => self.err(&format!("{p}.maxAge"), e),
                }
            }
        }
        if let Some(f) = &h.fault {
            self.fault(&format!("{path}.fault"), f);
        }
        if let Some(pct) = h.mirror_percent {
            if pct > 100 {
                self.err(&format!("{path}.mirrorPercent"), format!("mirror_percent must have a max value of 100 (it has {pct})"));
            }
            self.warn(&format!("{path}.mirrorPercent"), "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead");
        }
        if let Some(p) = &h.mirror_percentage {
            if !(0.0..=100.0).contains(&p.value) {
                self.err(&format!("{path}.mirrorPercentage"), format!("mirror percentage must be in range 0..100 (it has {})", p.value));
            }
        }
        if let Some(m) = &h.mirror {
            self.destination(&format!("{path}.mirror"), m);
        }
        for (i, m) in h.mirrors.iter().enumerate() {
            let mp = format!("{path}.mirrors[{i}]");
            self.destination(&format!("{mp}.destination"), &m.destination);
            if let Some(p) = &m.percentage {
                if !(0.0..=100.0).contains(&p.value) {
                    self.err(&format!("{mp}.percentage"), format!("mirror percentage must be in range 0..100 (it has {})", p.value));
                }
            }
        }
        if let Some(r) = &h.redirect {
            let p = format!("{path}.redirect");
            if r.uri.is_none() && r.authority.is_none() && r.port.is_none() && r.derive_port.is_none() && r.scheme.is_none() && r.prefix_rewrite.is_none() {
                self.err(&p, "redirect must specify URI, authority, scheme, or port");
            }
            if r.uri.is_some() && r.prefix_rewrite.is_some() {
                self.err(&p, "redirect may only contain one of uri or prefixRewrite");
            }
            if let Some(code) = r.redirect_code {
                if code != 0 && !REDIRECT_CODES.contains(&code) {
                    self.err(&format!("{p}.redirectCode"), format!("{code} is not a valid redirect code, must be one of 301, 302, 303, 307, 308"));
                }
            }
            if let Some(s) = &r.scheme {
                if s != "http" && s != "https" {
                    self.err(&format!("{p}.scheme"), "invalid redirect scheme, must be \"http\" or \"https\"");
                }
            }
            if r.port.is_some() && r.derive_port.is_some() {
                self.err(&p, "redirect may only contain one of port or derivePort");
            }
            if let Some(port) = r.port {
                self.check(&format!("{p}.port"), check_port(port));
            }
        }
        if let Some(d) = &h.direct_response {
            let p = format!("{path}.directResponse");
            if !(200..=599).contains(&d.status) {
                self.err(&format!("{p}.status"), format!("HTTP status {} is not in range 200-599", d.status));
            }
            if let Some(b) = &d.body {
                if b.string.is_some() && b.bytes.is_some() {
                    self.err(&format!("{p}.body"), "body may only contain one of string or bytes");
                }
                if let Some(bytes) = &b.bytes {
                    if decode_base64(bytes).is_none() {
                        self.err(&format!("{p}.body.bytes"), "bytes must be base64");
                    }
                }
                let size = b.string.as_ref().or(b.bytes.as_ref()).map_or(0, String::len);
                if size > 1 << 20 {
                    self.err(&format!("{p}.body"), "large direct_responses may impact control plane performance, must be less than 1MB");
                } else if size > 100 << 10 {
                    self.warn(&format!("{p}.body"), "large direct_responses may impact control plane performance");
                }
            }
        }
        if let Some(r) = &h.retries {
            let p = format!("{path}.retries");
            let attempts = r.attempts.unwrap_or(0);
            if attempts < 0 {
                self.err(&format!("{p}.attempts"), "attempts cannot be negative");
            }
            if attempts == 0 && (r.per_try_timeout.is_some() || r.retry_on.is_some() || r.retry_remote_localities.is_some()) {
                self.err(&p, "http retry policy configured when attempts are set to 0 (disabled)");
            }
            self.duration(&format!("{p}.perTryTimeout"), r.per_try_timeout.as_ref());
            self.duration(&format!("{p}.backoff"), r.backoff.as_ref());
            if let Some(on) = &r.retry_on {
                for policy in on.split(',') {
                    let policy = policy.trim();
                    let status = policy.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
                    if !status && !RETRY_ON.contains(&policy) {
                        self.err(&format!("{p}.retryOn"), format!("{policy:?} is not a valid retryOn policy"));
                    }
                }
            }
        }
        if let Some(rw) = &h.rewrite {
            let p = format!("{path}.rewrite");
            if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
                self.err(&p, "rewrite may only contain one of URI or UriRegexRewrite");
            }
            if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
                self.err(&p, "rewrite must specify at least one of URI, UriRegexRewrite, or authority");
            }
            if let Some(rr) = &rw.uri_regex_rewrite {
                let rp = format!("{p}.uriRegexRewrite");
                if rr.match_.is_empty() || rr.rewrite.is_empty() {
                    self.err(&rp, "UriRegexRewrite requires both Rewrite and Match fields to be specified");
                } else {
                    self.check(&format!("{rp}.match"), compile_regex(&rr.match_).map(|_| ()));
                }
            }
        }
        // Authority may be rewritten in one place only.
        let mut authority = h.rewrite.as_ref().and_then(|r| r.authority.clone());
        if let Some(req) = h.headers.as_ref().and_then(|hd| hd.request.as_ref()) {
            for (op, map) in [("set", &req.set), ("add", &req.add)] {
                for (k, val) in map.iter().filter(|(k, _)| is_authority_header(k)) {
                    if let Some(cur) = &authority {
                        self.err(
                            &format!("{path}.headers.request.{op}.{k}"),
                            format!("authority header cannot be set multiple times: have {cur:?}, attempting to set {val:?}"),
                        );
                    }
                    authority = Some(val.clone());
                }
            }
        }
        self.http_destinations(&format!("{path}.route"), &h.route);
        self.duration(&format!("{path}.timeout"), h.timeout.as_ref());
    }

    fn http_match(&mut self, path: &str, m: &HttpMatchRequest, delegating: bool) {
        for (field, sm) in [("uri", &m.uri), ("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
            let Some(sm) = sm else { continue };
            let p = format!("{path}.{field}");
            if delegating && sm.regex.is_some() {
                self.err(&p, format!("{field} match does not support regex match for delegating"));
            } else {
                self.string_match(&p, sm);
            }
        }
        for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
            for (name, sm) in map {
                let p = format!("{path}.{field}.{name}");
                self.check(&p, check_match_header_name(name));
                if delegating && sm.regex.is_some() {
                    self.err(&p, format!("{field} match {name} does not support regex match for delegating"));
                } else {
                    self.string_match(&p, sm);
                }
            }
        }
        for (name, sm) in &m.query_params {
            let p = format!("{path}.queryParams.{name}");
            if delegating && sm.regex.is_some() {
                self.err(&p, format!("query param match {name} does not support regex match for delegating"));
            } else {
                self.string_match(&p, sm);
            }
        }
        if let Some(port) = m.port {
            self.check(&format!("{path}.port"), check_port(port));
        }
        for (i, g) in m.gateways.iter().enumerate() {
            self.gateway_name(&format!("{path}.gateways[{i}]"), g);
        }
        if let Some(ns) = &m.source_namespace {
            if !is_dns1123_label(ns) {
                self.err(&format!("{path}.sourceNamespace"), format!("sourceNamespace match {ns} is invalid"));
            }
        }
    }

    fn headers(&mut self, path: &str, h: Option<&Headers>) {
        let Some(h) = h else { return };
        if let Some(req) = &h.request {
            self.header_ops(&format!("{path}.request"), req, true);
        }
        if let Some(resp) = &h.response {
            self.header_ops(&format!("{path}.response"), resp, false);
        }
    }

    fn header_ops(&mut self, path: &str, ops: &HeaderOperations, request: bool) {
        for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let p = format!("{path}.{op}.{name}");
                if name.is_empty() {
                    self.err(&p, "header name cannot be empty");
                } else if request {
                    // `:authority` / `host` become a host rewrite on requests.
                    if is_internal_header(name) && !is_authority_header(name) {
                        self.err(&p, format!("invalid header {name:?}: header cannot have \":\" prefix"));
                    }
                } else if name.eq_ignore_ascii_case("host") {
                    self.err(&p, format!("invalid header {name:?}: cannot set Host header"));
                } else if is_internal_header(name) {
                    self.err(&p, format!("invalid header {name:?}: header cannot have \":\" prefix"));
                }
                self.check(&p, check_header_value(value));
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            let p = format!("{path}.remove[{i}]");
            if name.is_empty() {
                self.err(&p, "header name cannot be empty");
            } else if name.eq_ignore_ascii_case("host") {
                self.err(&p, format!("invalid header {name:?}: cannot set Host header"));
            } else if is_internal_header(name) {
                self.err(&p, format!("invalid header {name:?}: header cannot have \":\" prefix"));
            }
        }
    }

    fn fault(&mut self, path: &str, f: &HttpFaultInjection) {
        if f.abort.is_none() && f.delay.is_none() {
            self.err(path, "HTTP fault injection must have an abort and/or a delay");
        }
        if let Some(a) = &f.abort {
            let p = format!("{path}.abort");
            if let Some(pct) = &a.percentage {
                self.check(&format!("{p}.percentage.value"), check_percentage(pct));
            }
            let types = [a.http_status.is_some(), a.grpc_status.is_some(), a.http2_error.is_some()];
            if types.iter().filter(|t| **t).count() > 1 {
                self.err(&p, "abort may only contain one of httpStatus, grpcStatus or http2Error");
            }
            if let Some(status) = a.http_status {
                if !(200..=599).contains(&status) {
                    self.err(&format!("{p}.httpStatus"), format!("HTTP status {status} is not in range 200-599"));
                }
            } else if let Some(g) = &a.grpc_status {
                if !GRPC_STATUS.contains(&g.as_str()) {
                    self.err(&format!("{p}.grpcStatus"), format!("gRPC status {g:?} is not supported; use a code name such as NOT_FOUND or UNAVAILABLE"));
                }
            } else if a.http2_error.is_some() {
                self.err(&format!("{p}.http2Error"), "HTTP/2 abort fault injection not supported yet");
            } else {
                self.warn(&p, "abort configured, but error type not set");
            }
        }
        if let Some(d) = &f.delay {
            let p = format!("{path}.delay");
            if let Some(pct) = &d.percentage {
                self.check(&format!("{p}.percentage.value"), check_percentage(pct));
            }
            if let Some(pct) = d.percent {
                if !(0..=100).contains(&pct) {
                    self.err(&format!("{p}.percent"), format!("percentage {pct} is not in range 0..100"));
                }
            }
            if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
                self.err(&p, "delay may only contain one of fixedDelay or exponentialDelay");
            }
            self.duration(&format!("{p}.fixedDelay"), d.fixed_delay.as_ref());
            if let Some(e) = &d.exponential_delay {
                self.duration(&format!("{p}.exponentialDelay"), Some(e));
                self.err(&format!("{p}.exponentialDelay"), "exponentialDelay not supported yet");
            }
        }
    }

    fn destination(&mut self, path: &str, d: &Destination) {
        let hp = format!("{path}.host");
        if d.host.is_empty() {
            self.err(&hp, "destination host is required");
        } else if d.host == "*" {
            self.err(&hp, "invalid destination host *");
        } else if let Err(e) = check_wildcard_domain(&d.host) {
            self.err(&hp, e);
        }
        if let Some(s) = &d.subset {
            if s.is_empty() {
                self.err(&format!("{path}.subset"), "subset name cannot be empty");
            } else if !is_dns1123_label(s) {
                self.err(&format!("{path}.subset"), format!("subset name is invalid: {s}"));
            }
        }
        if let Some(port) = &d.port {
            self.check(&format!("{path}.port.number"), check_port(port.number));
        }
    }

    fn weights(&mut self, path: &str, weights: &[(String, Option<i32>)]) {
        let mut total: i64 = 0;
        for (p, w) in weights {
            let w = w.unwrap_or(0);
            if w < 0 {
                self.err(&format!("{p}.weight"), format!("weight {w} < 0"));
            }
            total += i64::from(w);
        }
        if weights.len() > 1 && total == 0 {
            self.err(path, "total destination weight = 0");
        }
    }

    fn http_destinations(&mut self, path: &str, route: &[HttpRouteDestination]) {
        let mut weights = Vec::new();
        for (i, d) in route.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.destination(&format!("{p}.destination"), &d.destination);
            self.headers(&format!("{p}.headers"), d.headers.as_ref());
            weights.push((p, d.weight));
        }
        self.weights(path, &weights);
    }

    fn route_destinations(&mut self, path: &str, route: &[RouteDestination]) {
        let mut weights = Vec::new();
        for (i, d) in route.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.destination(&format!("{p}.destination"), &d.destination);
            weights.push((p, d.weight));
        }
        self.weights(path, &weights);
    }

    // ------------------------------------------------------------ DestinationRule

    fn destination_rule(&mut self, dr: &DestinationRuleSpec) {
        if dr.host.is_empty() {
            self.err("spec.host", "DestinationRule host is required");
        } else {
            self.check("spec.host", check_wildcard_domain(&dr.host));
        }
        if let Some(tp) = &dr.traffic_policy {
            self.traffic_policy("spec.trafficPolicy", tp);
        }
        let mut names = BTreeSet::new();
        for (i, s) in dr.subsets.iter().enumerate() {
            let p = format!("spec.subsets[{i}]");
            if !names.insert(s.name.as_str()) {
                self.err(&format!("{p}.name"), format!("duplicate subset names: {}", s.name));
            }
            if s.name.is_empty() {
                self.err(&format!("{p}.name"), "subset name cannot be empty");
            } else if !is_dns1123_label(&s.name) {
                self.err(&format!("{p}.name"), format!("subset name is invalid: {}", s.name));
            }
            if let Some(tp) = &s.traffic_policy {
                self.traffic_policy(&format!("{p}.trafficPolicy"), tp);
            }
        }
        self.workload_selector("spec.workloadSelector", dr.workload_selector.as_ref());
    }

    fn traffic_policy(&mut self, path: &str, tp: &TrafficPolicy) {
        if tp.outlier_detection.is_none()
            && tp.connection_pool.is_none()
            && tp.load_balancer.is_none()
            && tp.tls.is_none()
            && tp.port_level_settings.is_empty()
            && tp.tunnel.is_none()
            && tp.proxy_protocol.is_none()
            && tp.retry_budget.is_none()
        {
            self.err(path, "traffic policy must have at least one field");
            return;
        }
        if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
            self.err(path, "tunnel and proxyProtocol must not be set together");
        }
        if let Some(t) = &tp.tunnel {
            let p = format!("{path}.tunnel");
            if let Some(proto) = &t.protocol {
                if proto != "CONNECT" && proto != "POST" {
                    self.err(&format!("{p}.protocol"), "tunnel protocol must be \"CONNECT\" or \"POST\"");
                }
            }
            if check_fqdn(&t.target_host).is_err() && !is_ip(&t.target_host) {
                self.err(&format!("{p}.targetHost"), "tunnel target host must be valid FQDN or IP address");
            }
            self.check(&format!("{p}.targetPort"), check_port(t.target_port));
        }
        self.policy_parts(
            path,
            tp.outlier_detection.as_ref(),
            tp.connection_pool.as_ref(),
            tp.load_balancer.as_ref(),
            tp.tls.as_ref(),
        );
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            let p = format!("{path}.portLevelSettings[{i}]");
            match &pl.port {
                None => self.err(&p, "portTrafficPolicy must have valid port"),
                Some(port) => self.check(&format!("{p}.port.number"), check_port(port.number)),
            }
            if pl.outlier_detection.is_none()
                && pl.connection_pool.is_none()
                && pl.load_balancer.is_none()
                && pl.tls.is_none()
            {
                self.err(&p, "port traffic policy must have at least one field");
            } else {
                self.policy_parts(
                    &p,
                    pl.outlier_detection.as_ref(),
                    pl.connection_pool.as_ref(),
                    pl.load_balancer.as_ref(),
                    pl.tls.as_ref(),
                );
            }
        }
    }

    fn policy_parts(
        &mut self,
        path: &str,
        od: Option<&OutlierDetection>,
        cp: Option<&ConnectionPoolSettings>,
        lb: Option<&LoadBalancerSettings>,
        tls: Option<&ClientTlsSettings>,
    ) {
        if let Some(od) = od {
            let p = format!("{path}.outlierDetection");
            self.duration(&format!("{p}.baseEjectionTime"), od.base_ejection_time.as_ref());
            self.duration(&format!("{p}.interval"), od.interval.as_ref());
            if od.consecutive_errors.is_some_and(|e| e != 0) {
                self.warn(&format!("{p}.consecutiveErrors"), "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead");
            }
            if !od.split_external_local_origin_errors.unwrap_or(false)
                && od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
            {
                self.err(&p, "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false");
            }
            for (field, v) in [("maxEjectionPercent", od.max_ejection_percent), ("minHealthPercent", od.min_health_percent)] {
                if let Some(v) = v {
                    if !(0..=100).contains(&v) {
                        self.err(&format!("{p}.{field}"), format!("percentage {v} is not in range 0..100"));
                    }
                }
            }
        }
        if let Some(cp) = cp {
            let p = format!("{path}.connectionPool");
            if cp.http.is_none() && cp.tcp.is_none() {
                self.err(&p, "connection pool must have at least one field");
            }
            if let Some(h) = &cp.http {
                let hp = format!("{p}.http");
                for (field, v) in [
                    ("http1MaxPendingRequests", h.http1_max_pending_requests),
                    ("http2MaxRequests", h.http2_max_requests),
                    ("maxRequestsPerConnection", h.max_requests_per_connection),
                    ("maxRetries", h.max_retries),
                    ("maxConcurrentStreams", h.max_concurrent_streams),
                ] {
                    if v.is_some_and(|v| v < 0) {
                        self.err(&format!("{hp}.{field}"), format!("{field} must be non-negative"));
                    }
                }
                self.duration(&format!("{hp}.idleTimeout"), h.idle_timeout.as_ref());
                if h.h2_upgrade_policy.as_deref() == Some("UPGRADE") && h.use_client_protocol == Some(true) {
                    self.err(&hp, "use client protocol must not be true when H2UpgradePolicy is UPGRADE");
                }
            }
            if let Some(t) = &cp.tcp {
                let tp = format!("{p}.tcp");
                if t.max_connections.is_some_and(|v| v < 0) {
                    self.err(&format!("{tp}.maxConnections"), "max connections must be non-negative");
                }
                self.duration(&format!("{tp}.connectTimeout"), t.connect_timeout.as_ref());
                self.duration(&format!("{tp}.maxConnectionDuration"), t.max_connection_duration.as_ref());
                self.duration(&format!("{tp}.idleTimeout"), t.idle_timeout.as_ref());
                if let Some(ka) = &t.tcp_keepalive {
                    self.duration(&format!("{tp}.tcpKeepalive.time"), ka.time.as_ref());
                    self.duration(&format!("{tp}.tcpKeepalive.interval"), ka.interval.as_ref());
                }
            }
        }
        if let Some(lb) = lb {
            let p = format!("{path}.loadBalancer");
            if lb.simple.is_some() && lb.consistent_hash.is_some() {
                self.err(&p, "only one of simple or consistentHash may be set");
            }
            if let Some(ch) = &lb.consistent_hash {
                let keys = [
                    ch.http_header_name.is_some(),
                    ch.http_cookie.is_some(),
                    ch.use_source_ip.unwrap_or(false),
                    ch.http_query_parameter_name.is_some(),
                ];
                if keys.iter().filter(|k| **k).count() > 1 {
                    self.err(&format!("{p}.consistentHash"), "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set");
                }
                if let Some(c) = &ch.http_cookie {
                    if c.name.is_empty() {
                        self.err(&format!("{p}.consistentHash.httpCookie.name"), "name required for HttpCookie");
                    }
                    self.duration(&format!("{p}.consistentHash.httpCookie.ttl"), c.ttl.as_ref().filter(|t| *t != "0s" && *t != "0"));
                }
                if let Some(m) = &ch.maglev {
                    match m.table_size {
                        None | Some(0) => self.err(&format!("{p}.consistentHash.maglev.tableSize"), "tableSize must be set for maglev"),
                        Some(n) if n >= 5_000_011 => self.err(&format!("{p}.consistentHash.maglev.tableSize"), "tableSize must be less than 5000011 for maglev"),
                        Some(n) if !is_prime(n) => self.err(&format!("{p}.consistentHash.maglev.tableSize"), "tableSize must be a prime number for maglev"),
                        Some(_) => {}
                    }
                }
            }
            self.duration(&format!("{p}.warmupDurationSecs"), lb.warmup_duration_secs.as_ref());
            if let Some(loc) = &lb.locality_lb_setting {
                let lp = format!("{p}.localityLbSetting");
                for (i, d) in loc.distribute.iter().enumerate() {
                    let total: u64 = d.to.values().map(|v| u64::from(*v)).sum();
                    if total != 100 {
                        self.err(&format!("{lp}.distribute[{i}].to"), format!("total traffic weights must sum up to 100, got {total}"));
                    }
                }
                let set = [!loc.distribute.is_empty(), !loc.failover.is_empty()];
                if set.iter().all(|s| *s) {
                    self.err(&lp, "can not simultaneously specify 'distribute' and 'failover'");
                }
            }
        }
        if let Some(tls) = tls {
            self.client_tls(&format!("{path}.tls"), tls);
        }
    }

    fn client_tls(&mut self, path: &str, tls: &ClientTlsSettings) {
        let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        let mode = tls.mode.unwrap_or(ClientTlsMode::Disable);
        if tls.insecure_skip_verify == Some(true) {
            if mode == ClientTlsMode::Simple
                && (has(&tls.ca_certificates) || has(&tls.credential_name) || !tls.subject_alt_names.is_empty())
            {
                self.err(path, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
            }
            if mode == ClientTlsMode::Mutual && (has(&tls.ca_certificates) || !tls.subject_alt_names.is_empty()) {
                self.err(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
            }
        }
        if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && has(&tls.credential_name) {
            if has(&tls.client_certificate) || has(&tls.ca_certificates) || has(&tls.private_key) || has(&tls.ca_crl) {
                self.err(path, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
            }
            return;
        }
        if mode == ClientTlsMode::Mutual {
            if !has(&tls.client_certificate) {
                self.err(path, "client certificate required for mutual tls");
            }
            if !has(&tls.private_key) {
                self.err(path, "private key required for mutual tls");
            }
        }
    }

    // ------------------------------------------------------------ ServiceEntry / WorkloadEntry / Sidecar

    fn service_entry(&mut self, se: &ServiceEntrySpec) {
        if let Some(sel) = &se.workload_selector {
            if sel.labels.is_empty() {
                self.warn("spec.workloadSelector", "service entry: workload selector specified without labels, will be applied to all services in namespace");
            }
            if !se.endpoints.is_empty() {
                self.err("spec.workloadSelector", "only one of WorkloadSelector or Endpoints is allowed in Service Entry");
            }
        }
        if se.hosts.is_empty() {
            self.err("spec.hosts", "service entry must have at least one host");
        }
        for (i, h) in se.hosts.iter().enumerate() {
            let p = format!("spec.hosts[{i}]");
            if h == "*" {
                self.err(&p, "invalid host *");
            } else {
                self.check(&p, check_wildcard_domain(h));
                if let Err(e) = check_partial_wildcard(h) {
                    self.warn(&p, e);
                }
            }
        }
        let resolution = se.resolution.unwrap_or(Resolution::None);
        let mut cidr = false;
        for (i, a) in se.addresses.iter().enumerate() {
            cidr |= a.contains('/');
            self.check(&format!("spec.addresses[{i}]"), check_ip_or_cidr(a));
        }
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            self.err("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types");
        }
        if se.ports.is_empty() {
            self.err("spec.ports", "service entry must have at least one port");
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in se.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            if !names.insert(port.name.as_str()) {
                self.err(&format!("{p}.name"), format!("service entry port name {:?} already defined", port.name));
            }
            if !numbers.insert(port.number) {
                self.err(&format!("{p}.number"), format!("service entry port {} already defined", port.number));
            }
            if !is_dns1123_label(&port.name) {
                self.err(&format!("{p}.name"), format!("invalid port name: {:?}", port.name));
            }
            if let Some(proto) = &port.protocol {
                if !proto.is_empty() && parse_protocol(proto).is_none() {
                    self.err(&format!("{p}.protocol"), format!("unsupported protocol: {proto}"));
                }
            }
            self.check(&format!("{p}.number"), check_port(port.number));
            if let Some(t) = port.target_port.filter(|t| *t != 0) {
                self.check(&format!("{p}.targetPort"), check_port(t));
            }
        }
        let port_names: BTreeSet<&str> = se.ports.iter().map(|p| p.name.as_str()).collect();
        match resolution {
            Resolution::None => {
                if !se.endpoints.is_empty() {
                    self.err("spec.endpoints", "no endpoints should be provided for resolution type NONE");
                }
                if se.workload_selector.is_some() {
                    self.warn("spec.workloadSelector", "workloadSelector should not be set when resolution mode is NONE");
                }
            }
            Resolution::Static => {
                if se.endpoints.is_empty() && se.workload_selector.is_none() {
                    self.err("spec.resolution", "STATIC resolution requires endpoints (or a workloadSelector)");
                }
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.workload_entry(&format!("spec.endpoints[{i}]"), e, Some((&port_names, false)));
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if se.endpoints.is_empty() {
                    for (i, h) in se.hosts.iter().enumerate() {
                        if check_fqdn(h).is_err() {
                            self.err(
                                &format!("spec.hosts[{i}]"),
                                format!("hosts must be FQDN if no endpoints are provided for resolution mode {}", enum_name(&resolution)),
                            );
                        }
                    }
                }
                if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                    self.err("spec.endpoints", "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN");
                }
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.workload_entry(&format!("spec.endpoints[{i}]"), e, Some((&port_names, true)));
                }
                if se.workload_selector.is_some() {
                    self.warn("spec.workloadSelector", format!("workloadSelector should not be set when resolution mode is {}", enum_name(&resolution)));
                }
            }
            Resolution::DynamicDns => {}
        }
        if resolution != Resolution::None && se.hosts.len() > 1 {
            let plain = se.ports.iter().any(|p| {
                !matches!(
                    p.protocol.as_deref().and_then(parse_protocol),
                    Some(Protocol::Http | Protocol::Https | Protocol::Tls)
                )
            });
            if plain {
                self.err("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports");
            }
        }
    }

    /// A WorkloadEntry, or an endpoint of a ServiceEntry (`ports` are the entry's
    /// port names, and whether host names are allowed as addresses).
    fn workload_entry(&mut self, path: &str, we: &WorkloadEntrySpec, se: Option<(&BTreeSet<&str>, bool)>) {
        let addr = we.address.as_deref().unwrap_or("");
        let ap = format!("{path}.address");
        let allow_fqdn = se.is_none_or(|(_, dns)| dns);
        if addr.is_empty() {
            if we.network.as_deref().unwrap_or("").is_empty() {
                self.err(&ap, "address is required");
            } else {
                self.warn(&ap, format!("address is unset with network {:?}", we.network.as_deref().unwrap_or("")));
            }
        } else if let Some(uds) = addr.strip_prefix("unix://") {
            if !uds.starts_with('/') && !uds.starts_with('@') {
                self.err(&ap, format!("{uds:?} is not an absolute path to a file"));
            }
            if !we.ports.is_empty() {
                self.err(&format!("{path}.ports"), format!("unix endpoint {addr} must not include ports"));
            }
        } else if !is_ip(addr) {
            if !allow_fqdn {
                self.err(&ap, format!("endpoint address {addr:?} is not a valid IP address"));
            } else if check_fqdn(addr).is_err() {
                self.err(&ap, format!("endpoint address {addr:?} is not a valid FQDN or an IP address"));
            }
        }
        for (name, port) in &we.ports {
            let p = format!("{path}.ports.{name}");
            if let Some((names, _)) = se {
                if !names.contains(name.as_str()) {
                    self.err(&p, format!("endpoint port {name:?} is not defined by the service entry"));
                }
            }
            if !is_dns1123_label(name) {
                self.err(&p, format!("invalid port name: {name:?}"));
            }
            self.check(&p, check_port(*port));
        }
    }

    fn sidecar(&mut self, s: &SidecarSpec) {
        if let Some(sel) = &s.workload_selector {
            if sel.labels.is_empty() {
                self.warn("spec.workloadSelector", "sidecar: workload selector specified without labels, will be applied to all services in namespace");
            }
        }
        if s.egress.is_empty() && s.ingress.is_empty() && s.outbound_traffic_policy.is_none() && s.inbound_connection_pool.is_none() {
            self.err("spec", "sidecar: empty configuration provided");
            return;
        }
        let mut ports = BTreeSet::new();
        for (i, l) in s.ingress.iter().enumerate() {
            let p = format!("spec.ingress[{i}]");
            self.check(&format!("{p}.port.number"), check_port(l.port.number));
            if !ports.insert(l.port.number) {
                self.err(&format!("{p}.port.number"), "sidecar: ports on IP bound listeners must be unique");
            }
            if let Some(proto) = l.port.protocol.as_deref().filter(|p| !p.is_empty()) {
                if parse_protocol(proto).is_none() {
                    self.err(&format!("{p}.port.protocol"), format!("unsupported protocol: {proto}"));
                }
            }
        }
        let mut ports = BTreeSet::new();
        let last = s.egress.len().saturating_sub(1);
        for (i, l) in s.egress.iter().enumerate() {
            let p = format!("spec.egress[{i}]");
            match &l.port {
                None if i != last => self.err(&p, "sidecar: the egress listener with empty port should be the last listener in the list"),
                None => {}
                Some(port) => {
                    if port.number != 0 {
                        self.check(&format!("{p}.port.number"), check_port(port.number));
                        if !ports.insert(port.number) {
                            self.err(&format!("{p}.port.number"), "sidecar: ports on IP bound listeners must be unique");
                        }
                    }
                }
            }
            if l.hosts.is_empty() {
                self.err(&format!("{p}.hosts"), "sidecar: egress listener must contain at least one host");
            }
            for (j, h) in l.hosts.iter().enumerate() {
                let hp = format!("{p}.hosts[{j}]");
                match h.split_once('/') {
                    None => self.err(&hp, "host must be of form namespace/dnsName"),
                    Some((ns, dns)) => {
                        if ns.is_empty() || dns.is_empty() {
                            self.err(&hp, "config namespace and dnsName in host entry cannot be empty");
                            continue;
                        }
                        let ns = ns.strip_prefix('~').filter(|n| !n.is_empty()).unwrap_or(ns);
                        if !matches!(ns, "*" | "." | "~") && !is_dns1123_label(ns) {
                            self.err(&hp, format!("invalid namespace value {ns:?} in sidecar"));
                        }
                        if dns != "*" {
                            if !dns.contains('.') {
                                self.err(&hp, "short names (non FQDN) are not allowed");
                            }
                            self.check(&hp, check_wildcard_domain(dns));
                            self.check(&hp, check_partial_wildcard(dns));
                        }
                    }
                }
            }
        }
        if let Some(otp) = &s.outbound_traffic_policy {
            if otp.egress_proxy.is_some() && otp.mode.as_deref() != Some("ALLOW_ANY") {
                self.err("spec.outboundTrafficPolicy.egressProxy", "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
            }
            if let Some(m) = otp.mode.as_deref() {
                if m != "ALLOW_ANY" && m != "REGISTRY_ONLY" {
                    self.err("spec.outboundTrafficPolicy.mode", format!("unknown mode {m:?} (use ALLOW_ANY or REGISTRY_ONLY)"));
                }
            }
        }
    }

    // ------------------------------------------------------------ security

    fn peer_authentication(&mut self, pa: &PeerAuthenticationSpec) {
        let empty_selector = pa.selector.as_ref().is_none_or(|s| s.match_labels.is_empty());
        if empty_selector && !pa.port_level_mtls.is_empty() {
            self.err("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS (add a selector)");
        }
        for port in pa.port_level_mtls.keys() {
            if let Err(e) = check_port(*port) {
                self.err(&format!("spec.portLevelMtls.{port}"), e);
            }
        }
        self.workload_selector("spec.selector", pa.selector.as_ref());
    }

    fn target_refs(&mut self, selector: bool, one: Option<&PolicyTargetReference>, many: &[PolicyTargetReference]) {
        if [selector, one.is_some(), !many.is_empty()].iter().filter(|s| **s).count() > 1 {
            self.err("spec", "only one of targetRefs or workloadSelector can be set");
        }
        let refs = one.map(|r| ("spec.targetRef".to_string(), r)).into_iter().chain(
            many.iter().enumerate().map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)),
        );
        for (p, r) in refs {
            if r.name.is_empty() {
                self.err(&format!("{p}.name"), "targetRef name must be set");
            }
            if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
                self.err(&format!("{p}.namespace"), "targetRef namespace must not be set; cross namespace referencing is not supported");
            }
            let allowed = matches!(
                (r.group.as_str(), r.kind.as_str()),
                ("" | "core", "Service")
                    | ("networking.istio.io", "ServiceEntry")
                    | ("gateway.networking.k8s.io", "Gateway")
            );
            if !allowed {
                self.err(&p, format!("targetRef must be to a Service, ServiceEntry or Gateway, but was {}/{}", r.group, r.kind));
            }
        }
    }

    fn authorization_policy(&mut self, ap: &AuthorizationPolicySpec) {
        self.target_refs(ap.selector.is_some(), ap.target_ref.as_ref(), &ap.target_refs);
        self.workload_selector("spec.selector", ap.selector.as_ref());
        let action = ap.action();
        if action == AuthorizationAction::Custom {
            if ap.rules.is_empty() {
                self.err("spec.rules", "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
            } else if ap.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                self.err("spec.provider", "`provider.name` must not be empty");
            }
        }
        if ap.provider.is_some() && action != AuthorizationAction::Custom {
            self.err("spec.provider", format!("`provider` must not be with non CUSTOM action, found {}", enum_name(&action)));
        }
        if action == AuthorizationAction::Deny && ap.rules.is_empty() {
            self.err("spec.rules", "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
        }
        for (i, rule) in ap.rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            for (j, from) in rule.from.iter().enumerate() {
                let fp = format!("{rp}.from[{j}]");
                let Some(src) = &from.source else {
                    self.err(&fp, "`from.source` must not be nil");
                    continue;
                };
                let lists: [(&str, &Vec<String>); 14] = [
                    ("principals", &src.principals),
                    ("notPrincipals", &src.not_principals),
                    ("requestPrincipals", &src.request_principals),
                    ("notRequestPrincipals", &src.not_request_principals),
                    ("namespaces", &src.namespaces),
                    ("notNamespaces", &src.not_namespaces),
                    ("serviceAccounts", &src.service_accounts),
                    ("notServiceAccounts", &src.not_service_accounts),
                    ("ipBlocks", &src.ip_blocks),
                    ("notIpBlocks", &src.not_ip_blocks),
                    ("remoteIpBlocks", &src.remote_ip_blocks),
                    ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
                    ("trustDomains", &src.trust_domains),
                    ("notTrustDomains", &src.not_trust_domains),
                ];
                if lists.iter().all(|(_, l)| l.is_empty()) {
                    self.err(&format!("{fp}.source"), "`from.source` must not be empty");
                }
                if action == AuthorizationAction::Custom {
                    for (name, l) in &lists[..6] {
                        if !l.is_empty() {
                            self.err(&format!("{fp}.source.{name}"), format!("{name} is currently not supported with CUSTOM action"));
                        }
                    }
                }
                for (name, l) in lists {
                    for (k, v) in l.iter().enumerate() {
                        let p = format!("{fp}.source.{name}[{k}]");
                        if v.is_empty() {
                            self.err(&p, format!("empty value not allowed in {name}"));
                        } else if name.ends_with("pBlocks") || name.ends_with("IpBlocks") {
                            self.check(&p, check_ip_or_cidr(v));
                        }
                    }
                }
            }
            for (j, to) in rule.to.iter().enumerate() {
                let tp = format!("{rp}.to[{j}]");
                let Some(op) = &to.operation else {
                    self.err(&tp, "`to.operation` must not be nil");
                    continue;
                };
                let lists: [(&str, &Vec<String>); 8] = [
                    ("hosts", &op.hosts),
                    ("notHosts", &op.not_hosts),
                    ("ports", &op.ports),
                    ("notPorts", &op.not_ports),
                    ("methods", &op.methods),
                    ("notMethods", &op.not_methods),
                    ("paths", &op.paths),
                    ("notPaths", &op.not_paths),
                ];
                if lists.iter().all(|(_, l)| l.is_empty()) {
                    self.err(&format!("{tp}.operation"), "`to.operation` must not be empty");
                }
                for (name, l) in lists {
                    for (k, v) in l.iter().enumerate() {
                        let p = format!("{tp}.operation.{name}[{k}]");
                        if v.is_empty() {
                            self.err(&p, format!("empty value not allowed in {name}"));
                        } else if name.ends_with("orts") {
                            match v.parse::<u32>() {
                                Ok(n) => self.check(&p, check_port(n)),
                                Err(_) => self.err(&p, format!("invalid port {v:?}: ports must be numbers")),
                            }
                        }
                    }
                }
            }
            for (j, c) in rule.when.iter().enumerate() {
                let cp = format!("{rp}.when[{j}]");
                if c.key.is_empty() {
                    self.err(&format!("{cp}.key"), "`key` must not be empty");
                } else if c.values.is_empty() && c.not_values.is_empty() {
                    self.err(&cp, format!("at least one of `values` or `notValues` must be set for key {}", c.key));
                } else if c.key == "source.ip" || c.key == "remote.ip" || c.key == "destination.ip" {
                    for (k, v) in c.values.iter().enumerate() {
                        self.check(&format!("{cp}.values[{k}]"), check_ip_or_cidr(v));
                    }
                    for (k, v) in c.not_values.iter().enumerate() {
                        self.check(&format!("{cp}.notValues[{k}]"), check_ip_or_cidr(v));
                    }
                }
                if action == AuthorizationAction::Custom
                    && (c.key == "source.namespace" || c.key == "source.principal" || c.key.starts_with("request.auth."))
                {
                    self.err(&format!("{cp}.key"), format!("{} is currently not supported with CUSTOM action", c.key));
                }
            }
        }
    }

    fn request_authentication(&mut self, ra: &RequestAuthenticationSpec) {
        self.target_refs(ra.selector.is_some(), ra.target_ref.as_ref(), &ra.target_refs);
        self.workload_selector("spec.selector", ra.selector.as_ref());
        for (i, rule) in ra.jwt_rules.iter().enumerate() {
            let p = format!("spec.jwtRules[{i}]");
            if rule.issuer.is_empty() {
                self.err(&format!("{p}.issuer"), "issuer must be set");
            }
            if rule.audiences.iter().any(String::is_empty) {
                self.err(&format!("{p}.audiences"), "audience must be non-empty string");
            }
            if let Some(uri) = rule.jwks_uri.as_deref().filter(|u| !u.is_empty()) {
                if !(uri.starts_with("http://") || uri.starts_with("https://")) || uri.parse::<http::Uri>().is_err() {
                    self.err(&format!("{p}.jwksUri"), format!("invalid jwksUri {uri:?}: must be an http or https URL"));
                }
            }
            if let Some(jwks) = rule.jwks.as_deref().filter(|j| !j.is_empty()) {
                if !matches!(serde_json::from_str::<serde_json::Value>(jwks), Ok(serde_json::Value::Object(_))) {
                    self.err(&format!("{p}.jwks"), "jwks parse error: not a JSON Web Key Set object");
                }
            }
            for (j, h) in rule.from_headers.iter().enumerate() {
                if h.name.is_empty() {
                    self.err(&format!("{p}.fromHeaders[{j}].name"), "location header name must be non-empty string");
                }
            }
            if rule.from_params.iter().any(String::is_empty) {
                self.err(&format!("{p}.fromParams"), "location query must be non-empty string");
            }
            if rule.from_cookies.iter().any(String::is_empty) {
                self.err(&format!("{p}.fromCookies"), "cookie name must be non-empty string");
            }
            for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
                let cp = format!("{p}.outputClaimToHeaders[{j}]");
                if c.claim.is_empty() || c.header.is_empty() {
                    self.err(&cp, "outputClaimToHeaders header and claim value must be non-empty string");
                } else if !c.header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    self.err(&format!("{cp}.header"), format!("header name {} is not a valid header name", c.header));
                }
            }
            self.duration(&format!("{p}.timeout"), rule.timeout.as_ref());
        }
    }

    // ------------------------------------------------------------ Gateway API

    fn kube_gateway(&mut self, g: &gatewayapi::GatewaySpec) {
        if g.gateway_class_name.is_empty() {
            self.err("spec.gatewayClassName", "gatewayClassName is required");
        }
        let mut names = BTreeSet::new();
        for (i, l) in g.listeners.iter().enumerate() {
            let p = format!("spec.listeners[{i}]");
            if !names.insert(l.name.as_str()) {
                self.err(&format!("{p}.name"), format!("listener names must be unique: duplicate name {:?}", l.name));
            }
            self.check(&format!("{p}.port"), check_port(l.port));
            if let Some(h) = &l.hostname {
                if let Err(e) = check_wildcard_domain(h) {
                    self.err(&format!("{p}.hostname"), e);
                } else if h == "*" || is_ip(h) {
                    self.err(&format!("{p}.hostname"), format!("invalid hostname {h:?}: must be a DNS name, optionally with a leading *."));
                }
            }
            let tls_needed = l.protocol == "HTTPS" || l.protocol == "TLS";
            match (&l.tls, tls_needed) {
                (None, true) if l.protocol == "HTTPS" => {
                    self.err(&p, "an HTTPS listener must have tls settings");
                }
                (Some(tls), _) => {
                    let terminate = tls.mode.is_none_or(|m| m == gatewayapi::TlsModeType::Terminate);
                    if terminate && tls.certificate_refs.is_empty() && tls.options.is_empty() {
                        self.err(&format!("{p}.tls.certificateRefs"), "tls mode Terminate needs at least one certificateRef");
                    }
                    if !tls_needed {
                        self.err(&format!("{p}.tls"), format!("tls settings are not allowed with protocol {}", l.protocol));
                    }
                }
                _ => {}
            }
        }
    }

    fn http_route_k8s(&mut self, r: &gatewayapi::HttpRouteSpec) {
        for (i, h) in r.hostnames.iter().enumerate() {
            let p = format!("spec.hostnames[{i}]");
            if h == "*" || is_ip(h) {
                self.err(&p, format!("invalid hostname {h:?}: must be a DNS name, optionally with a leading *."));
            } else {
                self.check(&p, check_wildcard_domain(h));
            }
        }
        for (i, rule) in r.rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            for (j, m) in rule.matches.iter().enumerate() {
                let mp = format!("{rp}.matches[{j}]");
                if let Some(path) = &m.path {
                    let value = path.value.as_deref().unwrap_or("/");
                    let pp = format!("{mp}.path.value");
                    match path.type_.unwrap_or(PathMatchType::PathPrefix) {
                        PathMatchType::RegularExpression => self.check(&pp, compile_regex(value).map(|_| ())),
                        PathMatchType::Exact | PathMatchType::PathPrefix => {
                            if !value.starts_with('/') {
                                self.err(&pp, "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']");
                            }
                            if value.contains("//") || value.contains("/./") || value.contains("/../") || value.contains('#') || value.contains("%2f") || value.contains("%2F") {
                                self.err(&pp, format!("path {value:?} must not contain '//', '/./', '/../', '#' or encoded '/'"));
                            }
                        }
                    }
                }
                for (k, h) in m.headers.iter().enumerate() {
                    if h.type_ == Some(ValueMatchType::RegularExpression) {
                        self.check(&format!("{mp}.headers[{k}].value"), compile_regex(&h.value).map(|_| ()));
                    }
                }
                for (k, q) in m.query_params.iter().enumerate() {
                    if q.type_ == Some(ValueMatchType::RegularExpression) {
                        self.check(&format!("{mp}.queryParams[{k}].value"), compile_regex(&q.value).map(|_| ()));
                    }
                }
            }
            for (j, f) in rule.filters.iter().enumerate() {
                self.k8s_filter(&format!("{rp}.filters[{j}]"), f);
            }
            for (j, b) in rule.backend_refs.iter().enumerate() {
                let bp = format!("{rp}.backendRefs[{j}]");
                if let Some(w) = b.weight {
                    if !(0..=1_000_000).contains(&w) {
                        self.err(&format!("{bp}.weight"), format!("weight {w} must be in range 0..1000000"));
                    }
                }
                let is_service = b.kind.as_deref().is_none_or(|k| k == "Service") && b.group.as_deref().is_none_or(str::is_empty);
                if is_service && b.port.is_none() {
                    self.err(&bp, "port is required when referring to a Service");
                }
                if let Some(port) = b.port {
                    self.check(&format!("{bp}.port"), check_port(port));
                }
                for (k, f) in b.filters.iter().enumerate() {
                    self.k8s_filter(&format!("{bp}.filters[{k}]"), f);
                }
            }
            if let Some(t) = &rule.timeouts {
                for (field, v) in [("request", &t.request), ("backendRequest", &t.backend_request)] {
                    if let Some(v) = v {
                        self.check(&format!("{rp}.timeouts.{field}"), parse_duration(v).map(|_| ()));
                    }
                }
            }
        }
    }

    fn k8s_filter(&mut self, path: &str, f: &HttpRouteFilter) {
        use HttpRouteFilterType as T;
        let present = [
            (T::RequestHeaderModifier, "requestHeaderModifier", f.request_header_modifier.is_some()),
            (T::ResponseHeaderModifier, "responseHeaderModifier", f.response_header_modifier.is_some()),
            (T::RequestMirror, "requestMirror", f.request_mirror.is_some()),
            (T::RequestRedirect, "requestRedirect", f.request_redirect.is_some()),
            (T::UrlRewrite, "urlRewrite", f.url_rewrite.is_some()),
            (T::Cors, "cors", f.cors.is_some()),
            (T::ExternalAuth, "externalAuth", f.external_auth.is_some()),
            (T::ExtensionRef, "extensionRef", f.extension_ref.is_some()),
        ];
        for (t, field, set) in present {
            if t == f.type_ && !set {
                self.err(path, format!("filter.{field} must be specified for type {}", enum_name(&t)));
            } else if t != f.type_ && set {
                self.err(&format!("{path}.{field}"), format!("filter.{field} must be nil if the filter type is not {}", enum_name(&t)));
            }
        }
        if let Some(r) = &f.request_redirect {
            if let Some(code) = r.status_code {
                if !REDIRECT_CODES.contains(&code) {
                    self.err(&format!("{path}.requestRedirect.statusCode"), format!("{code} is not a valid redirect code, must be one of 301, 302, 303, 307, 308"));
                }
            }
            if let Some(s) = &r.scheme {
                if s != "http" && s != "https" {
                    self.err(&format!("{path}.requestRedirect.scheme"), "scheme must be \"http\" or \"https\"");
                }
            }
        }
    }

    // ------------------------------------------------------------ cert-manager, Secret

    fn issuer(&mut self, s: &IssuerSpec) {
        let types = [s.acme.is_some(), s.ca.is_some(), s.self_signed.is_some(), s.vault.is_some(), s.venafi.is_some()];
        match types.iter().filter(|t| **t).count() {
            0 => self.err("spec", "an issuer needs exactly one of acme, ca, selfSigned, vault or venafi"),
            1 => {}
            _ => self.err("spec", "an issuer may only have one of acme, ca, selfSigned, vault or venafi"),
        }
        if let Some(a) = &s.acme {
            if a.server.is_empty() {
                self.err("spec.acme.server", "the ACME directory URL (server) is required");
            } else if !(a.server.starts_with("https://") || a.server.starts_with("http://")) || a.server.parse::<http::Uri>().is_err() {
                self.err("spec.acme.server", format!("invalid ACME server URL {:?}", a.server));
            }
            if a.private_key_secret_ref.name.is_empty() {
                self.err("spec.acme.privateKeySecretRef.name", "privateKeySecretRef.name is required (the Secret for the ACME account key)");
            }
            for (i, solver) in a.solvers.iter().enumerate() {
                let p = format!("spec.acme.solvers[{i}]");
                match (solver.http01.is_some(), solver.dns01.is_some()) {
                    (false, false) => self.err(&p, "a solver needs one of http01 or dns01"),
                    (true, true) => self.err(&p, "a solver may only have one of http01 or dns01"),
                    _ => {}
                }
            }
            if let Some(ca) = a.ca_bundle.as_deref() {
                if decode_base64(ca).is_none() {
                    self.err("spec.acme.caBundle", "caBundle must be base64");
                }
            }
        }
        if let Some(ca) = &s.ca {
            if ca.secret_name.is_empty() {
                self.err("spec.ca.secretName", "secretName is required");
            }
        }
    }

    fn certificate(&mut self, c: &CertificateSpec) {
        if c.secret_name.is_empty() {
            self.err("spec.secretName", "secretName is required");
        }
        if c.issuer_ref.name.is_empty() {
            self.err("spec.issuerRef.name", "issuerRef.name is required");
        }
        if let Some(kind) = c.issuer_ref.kind.as_deref() {
            let cm_group = c.issuer_ref.group.as_deref().is_none_or(|g| g.is_empty() || g == "cert-manager.io");
            if cm_group && kind != "Issuer" && kind != "ClusterIssuer" {
                self.err("spec.issuerRef.kind", format!("issuerRef.kind must be Issuer or ClusterIssuer, not {kind:?}"));
            }
        }
        let has_name = c.common_name.as_deref().is_some_and(|n| !n.is_empty())
            || !c.dns_names.is_empty()
            || !c.ip_addresses.is_empty()
            || !c.uris.is_empty()
            || !c.email_addresses.is_empty()
            || !c.other_names.is_empty()
            || c.literal_subject.is_some();
        if !has_name {
            self.err("spec", "at least one of commonName, dnsNames, uris, ipAddresses, emailAddresses or otherNames must be set");
        }
        if let Some(cn) = &c.common_name {
            if cn.len() > 64 {
                self.err("spec.commonName", "commonName must be at most 64 characters");
            }
        }
        for (i, d) in c.dns_names.iter().enumerate() {
            self.check(&format!("spec.dnsNames[{i}]"), check_wildcard_domain(d));
        }
        for (i, ip) in c.ip_addresses.iter().enumerate() {
            if !is_ip(ip) {
                self.err(&format!("spec.ipAddresses[{i}]"), format!("{ip:?} is not a valid IP address"));
            }
        }
        let duration = c.duration.as_ref().map(|d| ("spec.duration", d));
        let renew = c.renew_before.as_ref().map(|d| ("spec.renewBefore", d));
        let mut parsed = [None, None];
        for (slot, item) in parsed.iter_mut().zip([duration, renew]) {
            if let Some((p, v)) = item {
                match parse_duration(v) {
                    Ok(d) => *slot = Some(d),
                    Err(e) => self.err(p, e),
                }
            }
        }
        if let Some(d) = parsed[0] {
            if d < Duration::from_secs(3600) {
                self.err("spec.duration", "certificate duration must be at least 1h");
            }
        }
        if let (Some(d), Some(r)) = (parsed[0], parsed[1]) {
            if r >= d {
                self.err("spec.renewBefore", "renewBefore must be shorter than duration");
            }
        }
        if let Some(pk) = &c.private_key {
            if let Some(alg) = pk.algorithm.as_deref() {
                if !matches!(alg, "RSA" | "ECDSA" | "Ed25519") {
                    self.err("spec.privateKey.algorithm", format!("unknown algorithm {alg:?} (RSA, ECDSA or Ed25519)"));
                }
            }
            if let Some(p) = pk.rotation_policy.as_deref() {
                if p != "Never" && p != "Always" {
                    self.err("spec.privateKey.rotationPolicy", format!("unknown rotationPolicy {p:?} (Never or Always)"));
                }
            }
            if let Some(e) = pk.encoding.as_deref() {
                if e != "PKCS1" && e != "PKCS8" {
                    self.err("spec.privateKey.encoding", format!("unknown encoding {e:?} (PKCS1 or PKCS8)"));
                }
            }
        }
    }

    /// Secrets: `data` must be base64. Values are never printed.
    fn secret(&mut self, s: &SecretData) {
        for (k, v) in &s.data {
            if decode_base64(v).is_none() {
                self.err(&format!("data.{k}"), format!("the value of key {k:?} is not valid base64"));
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
    if n % 2 == 0 {
        return false;
    }
    let mut f = 3;
    while f * f <= n {
        if n % f == 0 {
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
        assert!(!compile_regex("a.c").unwrap().is_match("xabcx"), "full match");
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
        assert!(check_match_header_name("End-User").unwrap_err().contains("lowercase"));
        assert!(check_match_header_name("a b").is_err());
        assert!(check_match_header_name("@request.auth.claims.groups").is_ok());
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
    }
}
