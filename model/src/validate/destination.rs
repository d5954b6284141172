//! Validation of `DestinationRule` (traffic policies, subsets), `ServiceEntry`,
//! `WorkloadEntry` and `Sidecar`.

use super::*;
use crate::resources::networking::{
    DestinationRuleSpec, Resolution, ServiceEntrySpec, SidecarPort, SidecarSpec, TrafficPolicy,
    WorkloadEntrySpec,
};
use crate::resources::policy::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings,
    OutlierDetection,
};

impl V<'_> {
    pub(super) fn destination_rule(&mut self, dr: &DestinationRuleSpec) {
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
                self.err(
                    &format!("{p}.name"),
                    format!("duplicate subset names: {}", s.name),
                );
            }
            if s.name.is_empty() {
                self.err(&format!("{p}.name"), "subset name cannot be empty");
            } else if !is_dns1123_label(&s.name) {
                self.err(
                    &format!("{p}.name"),
                    format!("subset name is invalid: {}", s.name),
                );
            }
            if let Some(tp) = &s.traffic_policy {
                self.traffic_policy(&format!("{p}.trafficPolicy"), tp);
            }
        }
        self.workload_selector("spec.workloadSelector", dr.workload_selector.as_ref());
    }

    pub(super) fn traffic_policy(&mut self, path: &str, tp: &TrafficPolicy) {
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
                    self.err(
                        &format!("{p}.protocol"),
                        "tunnel protocol must be \"CONNECT\" or \"POST\"",
                    );
                }
            }
            if check_fqdn(&t.target_host).is_err() && !is_ip(&t.target_host) {
                self.err(
                    &format!("{p}.targetHost"),
                    "tunnel target host must be valid FQDN or IP address",
                );
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

    pub(super) fn policy_parts(
        &mut self,
        path: &str,
        od: Option<&OutlierDetection>,
        cp: Option<&ConnectionPoolSettings>,
        lb: Option<&LoadBalancerSettings>,
        tls: Option<&ClientTlsSettings>,
    ) {
        if let Some(od) = od {
            let p = format!("{path}.outlierDetection");
            self.duration(
                &format!("{p}.baseEjectionTime"),
                od.base_ejection_time.as_ref(),
            );
            self.duration(&format!("{p}.interval"), od.interval.as_ref());
            if od.consecutive_errors.is_some_and(|e| e != 0) {
                self.warn(&format!("{p}.consecutiveErrors"), "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead");
            }
            if !od.split_external_local_origin_errors.unwrap_or(false)
                && od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
            {
                self.err(&p, "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false");
            }
            for (field, v) in [
                ("maxEjectionPercent", od.max_ejection_percent),
                ("minHealthPercent", od.min_health_percent),
            ] {
                if let Some(v) = v {
                    if !(0..=100).contains(&v) {
                        self.err(
                            &format!("{p}.{field}"),
                            format!("percentage {v} is not in range 0..100"),
                        );
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
                        self.err(
                            &format!("{hp}.{field}"),
                            format!("{field} must be non-negative"),
                        );
                    }
                }
                self.duration(&format!("{hp}.idleTimeout"), h.idle_timeout.as_ref());
                if h.h2_upgrade_policy.as_deref() == Some("UPGRADE")
                    && h.use_client_protocol == Some(true)
                {
                    self.err(
                        &hp,
                        "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                    );
                }
            }
            if let Some(t) = &cp.tcp {
                let tp = format!("{p}.tcp");
                if t.max_connections.is_some_and(|v| v < 0) {
                    self.err(
                        &format!("{tp}.maxConnections"),
                        "max connections must be non-negative",
                    );
                }
                self.duration(&format!("{tp}.connectTimeout"), t.connect_timeout.as_ref());
                self.duration(
                    &format!("{tp}.maxConnectionDuration"),
                    t.max_connection_duration.as_ref(),
                );
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
                        self.err(
                            &format!("{p}.consistentHash.httpCookie.name"),
                            "name required for HttpCookie",
                        );
                    }
                    self.duration(
                        &format!("{p}.consistentHash.httpCookie.ttl"),
                        c.ttl.as_ref().filter(|t| *t != "0s" && *t != "0"),
                    );
                }
                if let Some(m) = &ch.maglev {
                    match m.table_size {
                        None | Some(0) => self.err(
                            &format!("{p}.consistentHash.maglev.tableSize"),
                            "tableSize must be set for maglev",
                        ),
                        Some(n) if n >= 5_000_011 => self.err(
                            &format!("{p}.consistentHash.maglev.tableSize"),
                            "tableSize must be less than 5000011 for maglev",
                        ),
                        Some(n) if !is_prime(n) => self.err(
                            &format!("{p}.consistentHash.maglev.tableSize"),
                            "tableSize must be a prime number for maglev",
                        ),
                        Some(_) => {}
                    }
                }
            }
            self.duration(
                &format!("{p}.warmupDurationSecs"),
                lb.warmup_duration_secs.as_ref(),
            );
            if let Some(loc) = &lb.locality_lb_setting {
                let lp = format!("{p}.localityLbSetting");
                for (i, d) in loc.distribute.iter().enumerate() {
                    let total: u64 = d.to.values().map(|v| u64::from(*v)).sum();
                    if total != 100 {
                        self.err(
                            &format!("{lp}.distribute[{i}].to"),
                            format!("total traffic weights must sum up to 100, got {total}"),
                        );
                    }
                }
                let set = [!loc.distribute.is_empty(), !loc.failover.is_empty()];
                if set.iter().all(|s| *s) {
                    self.err(
                        &lp,
                        "can not simultaneously specify 'distribute' and 'failover'",
                    );
                }
            }
        }
        if let Some(tls) = tls {
            self.client_tls(&format!("{path}.tls"), tls);
        }
    }

    pub(super) fn client_tls(&mut self, path: &str, tls: &ClientTlsSettings) {
        let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        let mode = tls.mode.unwrap_or(ClientTlsMode::Disable);
        if tls.insecure_skip_verify == Some(true) {
            if mode == ClientTlsMode::Simple
                && (has(&tls.ca_certificates)
                    || has(&tls.credential_name)
                    || !tls.subject_alt_names.is_empty())
            {
                self.err(path, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
            }
            if mode == ClientTlsMode::Mutual
                && (has(&tls.ca_certificates) || !tls.subject_alt_names.is_empty())
            {
                self.err(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
            }
        }
        if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
            && has(&tls.credential_name)
        {
            if has(&tls.client_certificate)
                || has(&tls.ca_certificates)
                || has(&tls.private_key)
                || has(&tls.ca_crl)
            {
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

    pub(super) fn service_entry(&mut self, se: &ServiceEntrySpec) {
        if let Some(sel) = &se.workload_selector {
            if sel.labels.is_empty() {
                self.warn("spec.workloadSelector", "service entry: workload selector specified without labels, will be applied to all services in namespace");
            }
            if !se.endpoints.is_empty() {
                self.err(
                    "spec.workloadSelector",
                    "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
                );
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
            self.err(
                "spec.addresses",
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
        if se.ports.is_empty() {
            self.err("spec.ports", "service entry must have at least one port");
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in se.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            if !names.insert(port.name.as_str()) {
                self.err(
                    &format!("{p}.name"),
                    format!("service entry port name {:?} already defined", port.name),
                );
            }
            if !numbers.insert(port.number) {
                self.err(
                    &format!("{p}.number"),
                    format!("service entry port {} already defined", port.number),
                );
            }
            if !is_dns1123_label(&port.name) {
                self.err(
                    &format!("{p}.name"),
                    format!("invalid port name: {:?}", port.name),
                );
            }
            if let Some(proto) = &port.protocol {
                if !proto.is_empty() && parse_protocol(proto).is_none() {
                    self.err(
                        &format!("{p}.protocol"),
                        format!("unsupported protocol: {proto}"),
                    );
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
                    self.err(
                        "spec.endpoints",
                        "no endpoints should be provided for resolution type NONE",
                    );
                }
                if se.workload_selector.is_some() {
                    self.warn(
                        "spec.workloadSelector",
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                }
            }
            Resolution::Static => {
                if se.endpoints.is_empty() && se.workload_selector.is_none() {
                    self.err(
                        "spec.resolution",
                        "STATIC resolution requires endpoints (or a workloadSelector)",
                    );
                }
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.workload_entry(
                        &format!("spec.endpoints[{i}]"),
                        e,
                        Some((&port_names, false)),
                    );
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
                    self.err(
                        "spec.endpoints",
                        "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                    );
                }
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.workload_entry(
                        &format!("spec.endpoints[{i}]"),
                        e,
                        Some((&port_names, true)),
                    );
                }
                if se.workload_selector.is_some() {
                    self.warn(
                        "spec.workloadSelector",
                        format!(
                            "workloadSelector should not be set when resolution mode is {}",
                            enum_name(&resolution)
                        ),
                    );
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
                self.err(
                    "spec.hosts",
                    "multiple hosts provided with non-HTTP, non-TLS ports",
                );
            }
        }
    }

    /// A WorkloadEntry, or an endpoint of a ServiceEntry (`ports` are the entry's
    /// port names, and whether host names are allowed as addresses).
    pub(super) fn workload_entry(
        &mut self,
        path: &str,
        we: &WorkloadEntrySpec,
        se: Option<(&BTreeSet<&str>, bool)>,
    ) {
        let addr = we.address.as_deref().unwrap_or("");
        let ap = format!("{path}.address");
        let allow_fqdn = se.is_none_or(|(_, dns)| dns);
        if addr.is_empty() {
            if we.network.as_deref().unwrap_or("").is_empty() {
                self.err(&ap, "address is required");
            } else {
                self.warn(
                    &ap,
                    format!(
                        "address is unset with network {:?}",
                        we.network.as_deref().unwrap_or("")
                    ),
                );
            }
        } else if let Some(uds) = addr.strip_prefix("unix://") {
            if !uds.starts_with('/') && !uds.starts_with('@') {
                self.err(&ap, format!("{uds:?} is not an absolute path to a file"));
            }
            if !we.ports.is_empty() {
                self.err(
                    &format!("{path}.ports"),
                    format!("unix endpoint {addr} must not include ports"),
                );
            }
        } else if !is_ip(addr) {
            if !allow_fqdn {
                self.err(
                    &ap,
                    format!("endpoint address {addr:?} is not a valid IP address"),
                );
            } else if check_fqdn(addr).is_err() {
                self.err(
                    &ap,
                    format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                );
            }
        }
        for (name, port) in &we.ports {
            let p = format!("{path}.ports.{name}");
            if let Some((names, _)) = se {
                if !names.contains(name.as_str()) {
                    self.err(
                        &p,
                        format!("endpoint port {name:?} is not defined by the service entry"),
                    );
                }
            }
            if !is_dns1123_label(name) {
                self.err(&p, format!("invalid port name: {name:?}"));
            }
            self.check(&p, check_port(*port));
        }
    }

    pub(super) fn sidecar(&mut self, s: &SidecarSpec) {
        if let Some(sel) = &s.workload_selector {
            if sel.labels.is_empty() {
                self.warn("spec.workloadSelector", "sidecar: workload selector specified without labels, will be applied to all services in namespace");
            }
        }
        if s.egress.is_empty()
            && s.ingress.is_empty()
            && s.outbound_traffic_policy.is_none()
            && s.inbound_connection_pool.is_none()
        {
            self.err("spec", "sidecar: empty configuration provided");
            return;
        }
        let mut ports = BTreeSet::new();
        for (i, l) in s.ingress.iter().enumerate() {
            let p = format!("spec.ingress[{i}]");
            self.check(&format!("{p}.port.number"), check_port(l.port.number));
            if !ports.insert(l.port.number) {
                self.err(
                    &format!("{p}.port.number"),
                    "sidecar: ports on IP bound listeners must be unique",
                );
            }
            if let Some(proto) = l.port.protocol.as_deref().filter(|p| !p.is_empty()) {
                if parse_protocol(proto).is_none() {
                    self.err(
                        &format!("{p}.port.protocol"),
                        format!("unsupported protocol: {proto}"),
                    );
                }
            }
        }
        let mut ports = BTreeSet::new();
        let last = s.egress.len().saturating_sub(1);
        for (i, l) in s.egress.iter().enumerate() {
            let p = format!("spec.egress[{i}]");
            match &l.port {
                None if i != last => self.err(&p, "sidecar: the egress listener with empty port should be the last listener in the list"),
                // Port 0: a Unix domain socket listener.
                None | Some(SidecarPort { number: 0, .. }) => {}
                Some(port) => {
                    self.check(&format!("{p}.port.number"), check_port(port.number));
                    if !ports.insert(port.number) {
                        self.err(&format!("{p}.port.number"), "sidecar: ports on IP bound listeners must be unique");
                    }
                }
            }
            if l.hosts.is_empty() {
                self.err(
                    &format!("{p}.hosts"),
                    "sidecar: egress listener must contain at least one host",
                );
            }
            for (j, h) in l.hosts.iter().enumerate() {
                let hp = format!("{p}.hosts[{j}]");
                match h.split_once('/') {
                    None => self.err(&hp, "host must be of form namespace/dnsName"),
                    Some((ns, dns)) => {
                        if ns.is_empty() || dns.is_empty() {
                            self.err(
                                &hp,
                                "config namespace and dnsName in host entry cannot be empty",
                            );
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
                    self.err(
                        "spec.outboundTrafficPolicy.mode",
                        format!("unknown mode {m:?} (use ALLOW_ANY or REGISTRY_ONLY)"),
                    );
                }
            }
        }
    }
}
