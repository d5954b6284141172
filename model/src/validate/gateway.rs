//! Validation of `networking.istio.io` `Gateway`: servers, ports, hosts
//! (`[namespace/]dnsName`), TLS settings against the port protocol.

use super::*;
use crate::resources::networking::{
    GatewaySpec, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol,
};

impl V<'_> {
    pub(super) fn gateway(&mut self, g: &GatewaySpec) {
        if !is_dns1123_label(self.r.name()) {
            self.err(
                "metadata.name",
                format!(
                    "invalid gateway name {:?}: must be a DNS label (no dots)",
                    self.r.name()
                ),
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
                    format!(
                        "port names in servers must be unique: duplicate name {:?}",
                        s.port.name
                    ),
                );
            }
        }
    }

    pub(super) fn server(&mut self, path: &str, s: &Server) {
        if s.hosts.is_empty() {
            self.err(
                &format!("{path}.hosts"),
                "server config must contain at least one host",
            );
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
            self.err(
                &format!("{port_path}.targetPort"),
                "targetPort has no impact on Gateways",
            );
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
                self.err(
                    path,
                    "server must have TLS settings for HTTPS/TLS protocols",
                );
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
                    self.err(
                        &tls_path,
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            }
            (Some(Protocol::Tcp | Protocol::Udp | Protocol::Other), Some(_)) => {
                self.err(
                    &tls_path,
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
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
    pub(super) fn gateway_host(&mut self, path: &str, host: &str) {
        let dns = match host.split_once('/') {
            None => host,
            Some((ns, dns)) => {
                if ns.is_empty() || dns.is_empty() {
                    self.err(
                        path,
                        "config namespace and dnsName in host entry cannot be empty",
                    );
                    return;
                }
                if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                    self.err(path, format!("invalid namespace value {ns:?} in gateway (use *, . or a namespace name)"));
                }
                dns
            }
        };
        if dns != "*" && !dns.contains('.') {
            self.err(
                path,
                format!("short names (non FQDN) are not allowed: {dns:?}"),
            );
        }
        if let Err(e) = check_wildcard_domain(dns) {
            if !is_ip(dns) {
                self.err(path, e);
            }
        }
        self.check(path, check_partial_wildcard(dns));
    }

    pub(super) fn server_tls(&mut self, path: &str, tls: &ServerTlsSettings) {
        let mode = tls.mode.unwrap_or(ServerTlsMode::Passthrough);
        if matches!(
            tls.min_protocol_version,
            Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
        ) && tls.cipher_suites.is_empty()
        {
            self.warn(
                &format!("{path}.minProtocolVersion"),
                "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers",
            );
        }
        let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        // A Gateway annotated isthmus.dev/acme-issuer gets its certificate from
        // isthmus (`certs::auto`): no credentialName needed.
        let credential = has(&tls.credential_name)
            || !tls.credential_names.is_empty()
            || !tls.tls_certificates.is_empty()
            || crate::certs::auto::acme_issuer_annotation(self.r).is_some();
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
                    self.warn(
                        path,
                        format!(
                            "{} mode does not use certificates, they will be ignored",
                            enum_name(&mode)
                        ),
                    );
                }
            }
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if !credential {
                    let name = if mode == ServerTlsMode::Simple {
                        "SIMPLE"
                    } else {
                        "MUTUAL"
                    };
                    if !has(&tls.server_certificate) {
                        self.err(path, format!("{name} TLS requires a server certificate (credentialName or serverCertificate)"));
                    }
                    if !has(&tls.private_key) {
                        self.err(
                            path,
                            format!(
                                "{name} TLS requires a private key (credentialName or privateKey)"
                            ),
                        );
                    }
                    if mode != ServerTlsMode::Simple && !has(&tls.ca_certificates) {
                        self.err(
                            path,
                            "MUTUAL TLS requires a client CA bundle (caCertificates)",
                        );
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
                self.err(
                    &format!("{path}.caCrl"),
                    "CRL is not supported with SIMPLE TLS",
                );
            }
        }
    }
}
