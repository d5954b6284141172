//! Validation of `VirtualService`: hosts and gateway names, HTTP rules (conflicting
//! actions, matches, header operations, CORS, faults, mirrors, redirects, retries,
//! rewrites, weights, timeouts), TLS and TCP rules, and catch-all rules that are not last.

use super::*;

/// A rule without matches that is not the last rule (the rules after it are
/// IST0130).
const CODE_CATCH_ALL_NOT_LAST: &str = "ISM0109";
use crate::resources::core::decode_base64;
use crate::resources::networking::{
    Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest, HttpRoute,
    HttpRouteDestination, RouteDestination, VirtualServiceSpec,
};

impl V<'_> {
    pub(super) fn virtual_service(&mut self, vs: &VirtualServiceSpec) {
        let delegate = vs.hosts.is_empty();
        if delegate {
            if !vs.gateways.is_empty() {
                self.err(
                    "spec.gateways",
                    "delegate virtual service must have no gateways specified",
                );
            }
            if !vs.tls.is_empty() {
                self.err(
                    "spec.tls",
                    "delegate virtual service must have no tls route specified",
                );
            }
            if !vs.tcp.is_empty() {
                self.err(
                    "spec.tcp",
                    "delegate virtual service must have no tcp route specified",
                );
            }
        }
        for (i, g) in vs.gateways.iter().enumerate() {
            self.gateway_name(&format!("spec.gateways[{i}]"), g);
        }
        let applies_to_gateway =
            !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
        let applies_to_mesh = !applies_to_gateway;
        if !applies_to_gateway {
            for (i, h) in vs.http.iter().enumerate() {
                for (j, m) in h.match_.iter().enumerate() {
                    for (kind, map) in [
                        ("headers", &m.headers),
                        ("withoutHeaders", &m.without_headers),
                    ] {
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
                            format!(
                                "duplicate hosts in virtual service: {} & {}",
                                vs.hosts[i], vs.hosts[j]
                            ),
                        );
                    }
                }
            }
        }
        if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
            self.err(
                "spec",
                "http, tcp or tls must be provided in virtual service",
            );
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
                    self.check(
                        &format!("{mp}.destinationSubnets[{k}]"),
                        check_ip_or_cidr(s),
                    );
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
                    self.check(
                        &format!("{mp}.destinationSubnets[{k}]"),
                        check_ip_or_cidr(s),
                    );
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
        // istioctl reports the rules after it (IST0130, `analyze::rules_istio`);
        // this names the catch-all itself, under an isthmus code.
        let last = vs.http.len().saturating_sub(1);
        for (i, h) in vs.http.iter().enumerate().take(last) {
            if h.match_.is_empty() {
                let name = h
                    .name
                    .as_deref()
                    .map_or(format!("#{i}"), |n| format!("{n:?}"));
                self.push(
                    Level::Warning,
                    CODE_CATCH_ALL_NOT_LAST,
                    &format!("spec.http[{i}]"),
                    format!("only the last rule can have no matches: rule {name} matches every request, so the {} rule(s) after it are never used", last - i),
                );
            }
        }
        let last = vs.tcp.len().saturating_sub(1);
        for (i, t) in vs.tcp.iter().enumerate().take(last) {
            if t.match_.is_empty() {
                self.push(
                    Level::Warning,
                    CODE_CATCH_ALL_NOT_LAST,
                    &format!("spec.tcp[{i}]"),
                    format!("only the last rule can have no matches: rule #{i} matches every connection, so the {} rule(s) after it are never used", last - i),
                );
            }
        }
    }

    /// `mesh`, `name`, `namespace/name` or the legacy `name.namespace...` form.
    pub(super) fn gateway_name(&mut self, path: &str, g: &str) {
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

    pub(super) fn http_route(&mut self, path: &str, h: &HttpRoute, delegate_vs: bool) {
        let root = !delegate_vs && h.delegate.is_some();
        if root {
            if h.redirect.is_some() {
                self.err(
                    &format!("{path}.redirect"),
                    "root HTTP route must not specify redirect",
                );
            }
            if !h.route.is_empty() {
                self.err(
                    &format!("{path}.route"),
                    "root HTTP route must not specify route",
                );
            }
        } else {
            if delegate_vs && h.delegate.is_some() {
                self.err(
                    &format!("{path}.delegate"),
                    "delegate HTTP route cannot contain delegate",
                );
            }
            if h.redirect.is_some() {
                if !h.route.is_empty() {
                    self.err(
                        &format!("{path}.redirect"),
                        "HTTP route cannot contain both route and redirect",
                    );
                }
                if h.fault.is_some() {
                    self.err(
                        &format!("{path}.redirect"),
                        "HTTP route cannot contain both fault and redirect",
                    );
                }
                if h.rewrite.is_some() {
                    self.err(
                        &format!("{path}.rewrite"),
                        "HTTP route rule cannot contain both rewrite and redirect",
                    );
                }
                if h.direct_response.is_some() {
                    self.err(
                        &format!("{path}.directResponse"),
                        "HTTP route cannot contain both redirect and directResponse",
                    );
                }
            } else if h.direct_response.is_some() {
                if !h.route.is_empty() {
                    self.err(
                        &format!("{path}.directResponse"),
                        "HTTP route cannot contain both route and directResponse",
                    );
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
                    self.err(
                        &format!("{p}.allowMethods[{i}]"),
                        format!("{m:?} is not a supported HTTP method"),
                    );
                }
            }
            for (field, list) in [
                ("allowHeaders", &cors.allow_headers),
                ("exposeHeaders", &cors.expose_headers),
            ] {
                for (i, name) in list.iter().enumerate() {
                    let ok = name == "*"
                        || (!name.is_empty()
                            && name
                                .bytes()
                                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
                    if !ok {
                        self.err(
                            &format!("{p}.{field}[{i}]"),
                            format!("header name {name:?} is not a valid header name"),
                        );
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
                self.err(
                    &format!("{path}.mirrorPercent"),
                    format!("mirror_percent must have a max value of 100 (it has {pct})"),
                );
            }
            self.warn(
                &format!("{path}.mirrorPercent"),
                "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            );
        }
        if let Some(p) = &h.mirror_percentage {
            if !(0.0..=100.0).contains(&p.value) {
                self.err(
                    &format!("{path}.mirrorPercentage"),
                    format!(
                        "mirror percentage must be in range 0..100 (it has {})",
                        p.value
                    ),
                );
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
                    self.err(
                        &format!("{mp}.percentage"),
                        format!(
                            "mirror percentage must be in range 0..100 (it has {})",
                            p.value
                        ),
                    );
                }
            }
        }
        if let Some(r) = &h.redirect {
            let p = format!("{path}.redirect");
            if r.uri.is_none()
                && r.authority.is_none()
                && r.port.is_none()
                && r.derive_port.is_none()
                && r.scheme.is_none()
                && r.prefix_rewrite.is_none()
            {
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
                    self.err(
                        &format!("{p}.scheme"),
                        "invalid redirect scheme, must be \"http\" or \"https\"",
                    );
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
                self.err(
                    &format!("{p}.status"),
                    format!("HTTP status {} is not in range 200-599", d.status),
                );
            }
            if let Some(b) = &d.body {
                if b.string.is_some() && b.bytes.is_some() {
                    self.err(
                        &format!("{p}.body"),
                        "body may only contain one of string or bytes",
                    );
                }
                if let Some(bytes) = &b.bytes {
                    if decode_base64(bytes).is_none() {
                        self.err(&format!("{p}.body.bytes"), "bytes must be base64");
                    }
                }
                let size = b
                    .string
                    .as_ref()
                    .or(b.bytes.as_ref())
                    .map_or(0, String::len);
                if size > 1 << 20 {
                    self.err(&format!("{p}.body"), "large direct_responses may impact control plane performance, must be less than 1MB");
                } else if size > 100 << 10 {
                    self.warn(
                        &format!("{p}.body"),
                        "large direct_responses may impact control plane performance",
                    );
                }
            }
        }
        if let Some(r) = &h.retries {
            let p = format!("{path}.retries");
            let attempts = r.attempts.unwrap_or(0);
            if attempts < 0 {
                self.err(&format!("{p}.attempts"), "attempts cannot be negative");
            }
            if attempts == 0
                && (r.per_try_timeout.is_some()
                    || r.retry_on.is_some()
                    || r.retry_remote_localities.is_some())
            {
                self.err(
                    &p,
                    "http retry policy configured when attempts are set to 0 (disabled)",
                );
            }
            self.duration(&format!("{p}.perTryTimeout"), r.per_try_timeout.as_ref());
            self.duration(&format!("{p}.backoff"), r.backoff.as_ref());
            if let Some(on) = &r.retry_on {
                for policy in on.split(',') {
                    let policy = policy.trim();
                    let status = policy.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
                    if !status && !RETRY_ON.contains(&policy) {
                        self.err(
                            &format!("{p}.retryOn"),
                            format!("{policy:?} is not a valid retryOn policy"),
                        );
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
                self.err(
                    &p,
                    "rewrite must specify at least one of URI, UriRegexRewrite, or authority",
                );
            }
            if let Some(rr) = &rw.uri_regex_rewrite {
                let rp = format!("{p}.uriRegexRewrite");
                if rr.match_.is_empty() || rr.rewrite.is_empty() {
                    self.err(
                        &rp,
                        "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                    );
                } else {
                    self.check(
                        &format!("{rp}.match"),
                        compile_regex(&rr.match_).map(|_| ()),
                    );
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

    pub(super) fn http_match(&mut self, path: &str, m: &HttpMatchRequest, delegating: bool) {
        for (field, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            let Some(sm) = sm else { continue };
            let p = format!("{path}.{field}");
            if delegating && sm.regex.is_some() {
                self.err(
                    &p,
                    format!("{field} match does not support regex match for delegating"),
                );
            } else {
                self.string_match(&p, sm);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (name, sm) in map {
                let p = format!("{path}.{field}.{name}");
                self.check(&p, check_match_header_name(name));
                if delegating && sm.regex.is_some() {
                    self.err(
                        &p,
                        format!("{field} match {name} does not support regex match for delegating"),
                    );
                } else {
                    self.string_match(&p, sm);
                }
            }
        }
        for (name, sm) in &m.query_params {
            let p = format!("{path}.queryParams.{name}");
            if delegating && sm.regex.is_some() {
                self.err(
                    &p,
                    format!("query param match {name} does not support regex match for delegating"),
                );
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
                self.err(
                    &format!("{path}.sourceNamespace"),
                    format!("sourceNamespace match {ns} is invalid"),
                );
            }
        }
    }

    pub(super) fn headers(&mut self, path: &str, h: Option<&Headers>) {
        let Some(h) = h else { return };
        if let Some(req) = &h.request {
            self.header_ops(&format!("{path}.request"), req, true);
        }
        if let Some(resp) = &h.response {
            self.header_ops(&format!("{path}.response"), resp, false);
        }
    }

    pub(super) fn header_ops(&mut self, path: &str, ops: &HeaderOperations, request: bool) {
        for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let p = format!("{path}.{op}.{name}");
                if name.is_empty() {
                    self.err(&p, "header name cannot be empty");
                } else if request {
                    // `:authority` / `host` become a host rewrite on requests.
                    if is_internal_header(name) && !is_authority_header(name) {
                        self.err(
                            &p,
                            format!("invalid header {name:?}: header cannot have \":\" prefix"),
                        );
                    }
                } else if name.eq_ignore_ascii_case("host") {
                    self.err(
                        &p,
                        format!("invalid header {name:?}: cannot set Host header"),
                    );
                } else if is_internal_header(name) {
                    self.err(
                        &p,
                        format!("invalid header {name:?}: header cannot have \":\" prefix"),
                    );
                }
                self.check(&p, check_header_value(value));
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            let p = format!("{path}.remove[{i}]");
            if name.is_empty() {
                self.err(&p, "header name cannot be empty");
            } else if name.eq_ignore_ascii_case("host") {
                self.err(
                    &p,
                    format!("invalid header {name:?}: cannot set Host header"),
                );
            } else if is_internal_header(name) {
                self.err(
                    &p,
                    format!("invalid header {name:?}: header cannot have \":\" prefix"),
                );
            }
        }
    }

    pub(super) fn fault(&mut self, path: &str, f: &HttpFaultInjection) {
        if f.abort.is_none() && f.delay.is_none() {
            self.err(
                path,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(a) = &f.abort {
            let p = format!("{path}.abort");
            if let Some(pct) = &a.percentage {
                self.check(&format!("{p}.percentage.value"), check_percentage(pct));
            }
            let types = [
                a.http_status.is_some(),
                a.grpc_status.is_some(),
                a.http2_error.is_some(),
            ];
            if types.iter().filter(|t| **t).count() > 1 {
                self.err(
                    &p,
                    "abort may only contain one of httpStatus, grpcStatus or http2Error",
                );
            }
            if let Some(status) = a.http_status {
                if !(200..=599).contains(&status) {
                    self.err(
                        &format!("{p}.httpStatus"),
                        format!("HTTP status {status} is not in range 200-599"),
                    );
                }
            } else if let Some(g) = &a.grpc_status {
                if !GRPC_STATUS.contains(&g.as_str()) {
                    self.err(&format!("{p}.grpcStatus"), format!("gRPC status {g:?} is not supported; use a code name such as NOT_FOUND or UNAVAILABLE"));
                }
            } else if a.http2_error.is_some() {
                self.err(
                    &format!("{p}.http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
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
                    self.err(
                        &format!("{p}.percent"),
                        format!("percentage {pct} is not in range 0..100"),
                    );
                }
            }
            if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
                self.err(
                    &p,
                    "delay may only contain one of fixedDelay or exponentialDelay",
                );
            }
            self.duration(&format!("{p}.fixedDelay"), d.fixed_delay.as_ref());
            if let Some(e) = &d.exponential_delay {
                self.duration(&format!("{p}.exponentialDelay"), Some(e));
                self.err(
                    &format!("{p}.exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            }
        }
    }

    pub(super) fn destination(&mut self, path: &str, d: &Destination) {
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
                self.err(
                    &format!("{path}.subset"),
                    format!("subset name is invalid: {s}"),
                );
            }
        }
        if let Some(port) = &d.port {
            self.check(&format!("{path}.port.number"), check_port(port.number));
        }
    }

    pub(super) fn weights(&mut self, path: &str, weights: &[(String, Option<i32>)]) {
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

    pub(super) fn http_destinations(&mut self, path: &str, route: &[HttpRouteDestination]) {
        let mut weights = Vec::new();
        for (i, d) in route.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.destination(&format!("{p}.destination"), &d.destination);
            self.headers(&format!("{p}.headers"), d.headers.as_ref());
            weights.push((p, d.weight));
        }
        self.weights(path, &weights);
    }

    pub(super) fn route_destinations(&mut self, path: &str, route: &[RouteDestination]) {
        let mut weights = Vec::new();
        for (i, d) in route.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.destination(&format!("{p}.destination"), &d.destination);
            weights.push((p, d.weight));
        }
        self.weights(path, &weights);
    }
}
