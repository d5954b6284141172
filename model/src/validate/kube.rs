//! Validation of the non-Istio kinds whose mistakes break the gateway: Gateway API
//! `Gateway` and `HTTPRoute`, cert-manager `Issuer`/`ClusterIssuer`/`Certificate`,
//! and `Secret` data (base64; values never printed).

use std::time::Duration;

use super::*;
use crate::resources::certmanager::{CertificateSpec, IssuerSpec};
use crate::resources::core::{decode_base64, SecretData};
use crate::resources::gatewayapi::{
    self, HttpRouteFilter, HttpRouteFilterType, PathMatchType, ValueMatchType,
};

impl V<'_> {
    pub(super) fn kube_gateway(&mut self, g: &gatewayapi::GatewaySpec) {
        if g.gateway_class_name.is_empty() {
            self.err("spec.gatewayClassName", "gatewayClassName is required");
        }
        let mut names = BTreeSet::new();
        for (i, l) in g.listeners.iter().enumerate() {
            let p = format!("spec.listeners[{i}]");
            if !names.insert(l.name.as_str()) {
                self.err(
                    &format!("{p}.name"),
                    format!("listener names must be unique: duplicate name {:?}", l.name),
                );
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
                    let terminate = tls
                        .mode
                        .is_none_or(|m| m == gatewayapi::TlsModeType::Terminate);
                    if terminate && tls.certificate_refs.is_empty() && tls.options.is_empty() {
                        self.err(
                            &format!("{p}.tls.certificateRefs"),
                            "tls mode Terminate needs at least one certificateRef",
                        );
                    }
                    if !tls_needed {
                        self.err(
                            &format!("{p}.tls"),
                            format!("tls settings are not allowed with protocol {}", l.protocol),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn http_route_k8s(&mut self, r: &gatewayapi::HttpRouteSpec) {
        for (i, h) in r.hostnames.iter().enumerate() {
            let p = format!("spec.hostnames[{i}]");
            if h == "*" || is_ip(h) {
                self.err(
                    &p,
                    format!(
                        "invalid hostname {h:?}: must be a DNS name, optionally with a leading *."
                    ),
                );
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
                        PathMatchType::RegularExpression => {
                            self.check(&pp, compile_regex(value).map(|_| ()))
                        }
                        PathMatchType::Exact | PathMatchType::PathPrefix => {
                            if !value.starts_with('/') {
                                self.err(&pp, "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']");
                            }
                            if value.contains("//")
                                || value.contains("/./")
                                || value.contains("/../")
                                || value.contains('#')
                                || value.contains("%2f")
                                || value.contains("%2F")
                            {
                                self.err(&pp, format!("path {value:?} must not contain '//', '/./', '/../', '#' or encoded '/'"));
                            }
                        }
                    }
                }
                for (k, h) in m.headers.iter().enumerate() {
                    if h.type_ == Some(ValueMatchType::RegularExpression) {
                        self.check(
                            &format!("{mp}.headers[{k}].value"),
                            compile_regex(&h.value).map(|_| ()),
                        );
                    }
                }
                for (k, q) in m.query_params.iter().enumerate() {
                    if q.type_ == Some(ValueMatchType::RegularExpression) {
                        self.check(
                            &format!("{mp}.queryParams[{k}].value"),
                            compile_regex(&q.value).map(|_| ()),
                        );
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
                        self.err(
                            &format!("{bp}.weight"),
                            format!("weight {w} must be in range 0..1000000"),
                        );
                    }
                }
                let is_service = b.kind.as_deref().is_none_or(|k| k == "Service")
                    && b.group.as_deref().is_none_or(str::is_empty);
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
                for (field, v) in [
                    ("request", &t.request),
                    ("backendRequest", &t.backend_request),
                ] {
                    if let Some(v) = v {
                        self.check(
                            &format!("{rp}.timeouts.{field}"),
                            parse_duration(v).map(|_| ()),
                        );
                    }
                }
            }
        }
    }

    pub(super) fn k8s_filter(&mut self, path: &str, f: &HttpRouteFilter) {
        use HttpRouteFilterType as T;
        let present = [
            (
                T::RequestHeaderModifier,
                "requestHeaderModifier",
                f.request_header_modifier.is_some(),
            ),
            (
                T::ResponseHeaderModifier,
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            (
                T::RequestMirror,
                "requestMirror",
                f.request_mirror.is_some(),
            ),
            (
                T::RequestRedirect,
                "requestRedirect",
                f.request_redirect.is_some(),
            ),
            (T::UrlRewrite, "urlRewrite", f.url_rewrite.is_some()),
            (T::Cors, "cors", f.cors.is_some()),
            (T::ExternalAuth, "externalAuth", f.external_auth.is_some()),
            (T::ExtensionRef, "extensionRef", f.extension_ref.is_some()),
        ];
        for (t, field, set) in present {
            if t == f.type_ && !set {
                self.err(
                    path,
                    format!(
                        "filter.{field} must be specified for type {}",
                        enum_name(&t)
                    ),
                );
            } else if t != f.type_ && set {
                self.err(
                    &format!("{path}.{field}"),
                    format!(
                        "filter.{field} must be nil if the filter type is not {}",
                        enum_name(&t)
                    ),
                );
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
                    self.err(
                        &format!("{path}.requestRedirect.scheme"),
                        "scheme must be \"http\" or \"https\"",
                    );
                }
            }
        }
    }

    // ------------------------------------------------------------ cert-manager, Secret

    pub(super) fn issuer(&mut self, s: &IssuerSpec) {
        let types = [
            s.acme.is_some(),
            s.ca.is_some(),
            s.self_signed.is_some(),
            s.vault.is_some(),
            s.venafi.is_some(),
        ];
        match types.iter().filter(|t| **t).count() {
            0 => self.err(
                "spec",
                "an issuer needs exactly one of acme, ca, selfSigned, vault or venafi",
            ),
            1 => {}
            _ => self.err(
                "spec",
                "an issuer may only have one of acme, ca, selfSigned, vault or venafi",
            ),
        }
        if let Some(a) = &s.acme {
            if a.server.is_empty() {
                self.err(
                    "spec.acme.server",
                    "the ACME directory URL (server) is required",
                );
            } else if !(a.server.starts_with("https://") || a.server.starts_with("http://"))
                || a.server.parse::<http::Uri>().is_err()
            {
                self.err(
                    "spec.acme.server",
                    format!("invalid ACME server URL {:?}", a.server),
                );
            }
            if a.private_key_secret_ref.name.is_empty() {
                self.err(
                    "spec.acme.privateKeySecretRef.name",
                    "privateKeySecretRef.name is required (the Secret for the ACME account key)",
                );
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

    pub(super) fn certificate(&mut self, c: &CertificateSpec) {
        if c.secret_name.is_empty() {
            self.err("spec.secretName", "secretName is required");
        }
        if c.issuer_ref.name.is_empty() {
            self.err("spec.issuerRef.name", "issuerRef.name is required");
        }
        if let Some(kind) = c.issuer_ref.kind.as_deref() {
            let cm_group = c
                .issuer_ref
                .group
                .as_deref()
                .is_none_or(|g| g.is_empty() || g == "cert-manager.io");
            if cm_group && kind != "Issuer" && kind != "ClusterIssuer" {
                self.err(
                    "spec.issuerRef.kind",
                    format!("issuerRef.kind must be Issuer or ClusterIssuer, not {kind:?}"),
                );
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
                self.err(
                    "spec.commonName",
                    "commonName must be at most 64 characters",
                );
            }
        }
        for (i, d) in c.dns_names.iter().enumerate() {
            self.check(&format!("spec.dnsNames[{i}]"), check_wildcard_domain(d));
        }
        for (i, ip) in c.ip_addresses.iter().enumerate() {
            if !is_ip(ip) {
                self.err(
                    &format!("spec.ipAddresses[{i}]"),
                    format!("{ip:?} is not a valid IP address"),
                );
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
                self.err(
                    "spec.renewBefore",
                    "renewBefore must be shorter than duration",
                );
            }
        }
        if let Some(pk) = &c.private_key {
            if let Some(alg) = pk.algorithm.as_deref() {
                if !matches!(alg, "RSA" | "ECDSA" | "Ed25519") {
                    self.err(
                        "spec.privateKey.algorithm",
                        format!("unknown algorithm {alg:?} (RSA, ECDSA or Ed25519)"),
                    );
                }
            }
            if let Some(p) = pk.rotation_policy.as_deref() {
                if p != "Never" && p != "Always" {
                    self.err(
                        "spec.privateKey.rotationPolicy",
                        format!("unknown rotationPolicy {p:?} (Never or Always)"),
                    );
                }
            }
            if let Some(e) = pk.encoding.as_deref() {
                if e != "PKCS1" && e != "PKCS8" {
                    self.err(
                        "spec.privateKey.encoding",
                        format!("unknown encoding {e:?} (PKCS1 or PKCS8)"),
                    );
                }
            }
        }
    }

    /// Secrets: `data` must be base64. Values are never printed.
    pub(super) fn secret(&mut self, s: &SecretData) {
        for (k, v) in &s.data {
            if decode_base64(v).is_none() {
                self.err(
                    &format!("data.{k}"),
                    format!("the value of key {k:?} is not valid base64"),
                );
            }
        }
    }
}
