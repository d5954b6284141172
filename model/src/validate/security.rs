//! Validation of `security.istio.io`: `PeerAuthentication`, `AuthorizationPolicy`,
//! `RequestAuthentication` (selectors and target references, rules, JWT rules).

use super::*;
use crate::resources::security::{
    AuthorizationAction, AuthorizationPolicySpec, PeerAuthenticationSpec, PolicyTargetReference,
    RequestAuthenticationSpec,
};

impl V<'_> {
    pub(super) fn peer_authentication(&mut self, pa: &PeerAuthenticationSpec) {
        let empty_selector = pa
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty());
        if empty_selector && !pa.port_level_mtls.is_empty() {
            self.err(
                "spec.portLevelMtls",
                "mesh/namespace peer authentication cannot have port level mTLS (add a selector)",
            );
        }
        for port in pa.port_level_mtls.keys() {
            if let Err(e) = check_port(*port) {
                self.err(&format!("spec.portLevelMtls.{port}"), e);
            }
        }
        self.workload_selector("spec.selector", pa.selector.as_ref());
    }

    pub(super) fn target_refs(
        &mut self,
        selector: bool,
        one: Option<&PolicyTargetReference>,
        many: &[PolicyTargetReference],
    ) {
        if [selector, one.is_some(), !many.is_empty()]
            .iter()
            .filter(|s| **s)
            .count()
            > 1
        {
            self.err(
                "spec",
                "only one of targetRefs or workloadSelector can be set",
            );
        }
        let refs = one
            .map(|r| ("spec.targetRef".to_string(), r))
            .into_iter()
            .chain(
                many.iter()
                    .enumerate()
                    .map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)),
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
                self.err(
                    &p,
                    format!(
                        "targetRef must be to a Service, ServiceEntry or Gateway, but was {}/{}",
                        r.group, r.kind
                    ),
                );
            }
        }
    }

    pub(super) fn authorization_policy(&mut self, ap: &AuthorizationPolicySpec) {
        self.target_refs(
            ap.selector.is_some(),
            ap.target_ref.as_ref(),
            &ap.target_refs,
        );
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
            self.err(
                "spec.provider",
                format!(
                    "`provider` must not be with non CUSTOM action, found {}",
                    enum_name(&action)
                ),
            );
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
                            self.err(
                                &format!("{fp}.source.{name}"),
                                format!("{name} is currently not supported with CUSTOM action"),
                            );
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
                    self.err(
                        &format!("{tp}.operation"),
                        "`to.operation` must not be empty",
                    );
                }
                for (name, l) in lists {
                    for (k, v) in l.iter().enumerate() {
                        let p = format!("{tp}.operation.{name}[{k}]");
                        if v.is_empty() {
                            self.err(&p, format!("empty value not allowed in {name}"));
                        } else if name.ends_with("orts") {
                            match v.parse::<u32>() {
                                Ok(n) => self.check(&p, check_port(n)),
                                Err(_) => self
                                    .err(&p, format!("invalid port {v:?}: ports must be numbers")),
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
                    self.err(
                        &cp,
                        format!(
                            "at least one of `values` or `notValues` must be set for key {}",
                            c.key
                        ),
                    );
                } else if c.key == "source.ip" || c.key == "remote.ip" || c.key == "destination.ip"
                {
                    for (k, v) in c.values.iter().enumerate() {
                        self.check(&format!("{cp}.values[{k}]"), check_ip_or_cidr(v));
                    }
                    for (k, v) in c.not_values.iter().enumerate() {
                        self.check(&format!("{cp}.notValues[{k}]"), check_ip_or_cidr(v));
                    }
                }
                if action == AuthorizationAction::Custom
                    && (c.key == "source.namespace"
                        || c.key == "source.principal"
                        || c.key.starts_with("request.auth."))
                {
                    self.err(
                        &format!("{cp}.key"),
                        format!("{} is currently not supported with CUSTOM action", c.key),
                    );
                }
            }
        }
    }

    pub(super) fn request_authentication(&mut self, ra: &RequestAuthenticationSpec) {
        self.target_refs(
            ra.selector.is_some(),
            ra.target_ref.as_ref(),
            &ra.target_refs,
        );
        self.workload_selector("spec.selector", ra.selector.as_ref());
        for (i, rule) in ra.jwt_rules.iter().enumerate() {
            let p = format!("spec.jwtRules[{i}]");
            if rule.issuer.is_empty() {
                self.err(&format!("{p}.issuer"), "issuer must be set");
            }
            if rule.audiences.iter().any(String::is_empty) {
                self.err(
                    &format!("{p}.audiences"),
                    "audience must be non-empty string",
                );
            }
            if let Some(uri) = rule.jwks_uri.as_deref().filter(|u| !u.is_empty()) {
                if !(uri.starts_with("http://") || uri.starts_with("https://"))
                    || uri.parse::<http::Uri>().is_err()
                {
                    self.err(
                        &format!("{p}.jwksUri"),
                        format!("invalid jwksUri {uri:?}: must be an http or https URL"),
                    );
                }
            }
            if let Some(jwks) = rule.jwks.as_deref().filter(|j| !j.is_empty()) {
                if !matches!(
                    serde_json::from_str::<serde_json::Value>(jwks),
                    Ok(serde_json::Value::Object(_))
                ) {
                    self.err(
                        &format!("{p}.jwks"),
                        "jwks parse error: not a JSON Web Key Set object",
                    );
                }
            }
            for (j, h) in rule.from_headers.iter().enumerate() {
                if h.name.is_empty() {
                    self.err(
                        &format!("{p}.fromHeaders[{j}].name"),
                        "location header name must be non-empty string",
                    );
                }
            }
            if rule.from_params.iter().any(String::is_empty) {
                self.err(
                    &format!("{p}.fromParams"),
                    "location query must be non-empty string",
                );
            }
            if rule.from_cookies.iter().any(String::is_empty) {
                self.err(
                    &format!("{p}.fromCookies"),
                    "cookie name must be non-empty string",
                );
            }
            for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
                let cp = format!("{p}.outputClaimToHeaders[{j}]");
                if c.claim.is_empty() || c.header.is_empty() {
                    self.err(
                        &cp,
                        "outputClaimToHeaders header and claim value must be non-empty string",
                    );
                } else if !c
                    .header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    self.err(
                        &format!("{cp}.header"),
                        format!("header name {} is not a valid header name", c.header),
                    );
                }
            }
            self.duration(&format!("{p}.timeout"), rule.timeout.as_ref());
        }
    }
}
