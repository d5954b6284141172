//! Automatic certificates (Caddy-style): a `Gateway` annotated
//! `isthmus.dev/acme-issuer` gets a certificate for the hosts of each of its HTTPS
//! servers with `tls.mode` SIMPLE, MUTUAL or OPTIONAL_MUTUAL, ordered by isthmus over
//! ACME, with no cert-manager `Certificate` written by hand. This module turns such
//! Gateways into [`AcmeOrder`]s (pure; [`super::acme_orders`] returns them after the
//! Certificates' orders).
//!
//! The annotation value names the issuer:
//! - `NAME` or `ClusterIssuer/NAME`: the ClusterIssuer `NAME`;
//! - `Issuer/NAME`: the Issuer `NAME` in the Gateway's namespace.
//!
//! The Secret of a server is its `credentialName` when set (resolved as Istio does:
//! `name` in the gateway workload's namespace, `ns/name` as written), else the
//! generated `isthmus-acme-<gateway namespace>-<gateway name>-<server index>` in the
//! gateway workload's namespace ([`generated_secret_name`]); `compile` serves that
//! name for a server without `credentialName` on an annotated Gateway. Servers that
//! share a Secret share one order (their hosts together). The order's names are the
//! server's hosts without their `ns/` prefix; a wildcard or `*` host, an IP address,
//! or a host no solver of the issuer fits cannot be ordered (Warning ISM0305 naming
//! the Gateway, server and host; the other hosts are still ordered). A Secret an
//! explicit cert-manager `Certificate` writes is left to it (its hosts missing from
//! that Certificate: ISM0305). An unknown or malformed issuer is ISM0301 at the
//! annotation's line; a non-ACME one, or a Secret another Gateway already orders
//! from another issuer, ISM0303.

use crate::compile::{gateway_workloads, resolve_credential_with};
use crate::diag::{Diagnostic, Level};
use crate::host;
use crate::resources::certmanager::AcmeIssuer;
use crate::resources::networking::{Server, ServerTlsMode};
use crate::resources::{Kind, Resource, Spec, Store};

use super::{
    finding, solver_fits, AcmeOrder, ChallengeKind, IssuerId, IssuerKind, ANN_ACME_CHALLENGE,
    CODE_CANNOT_ORDER, CODE_ISSUER_NOT_FOUND,
};

/// The Gateway annotation that turns on automatic certificates.
pub const ANN_ACME_ISSUER: &str = "isthmus.dev/acme-issuer";

/// Warning: a host of an annotated Gateway's server is not in its certificate (a
/// wildcard, an IP address, no solver for it, or an explicit Certificate writing the
/// Secret does not list it).
pub const CODE_HOST_NOT_ORDERED: &str = "ISM0305";

/// The annotation's value, when the Gateway has a non-blank one.
pub fn acme_issuer_annotation(gateway: &Resource) -> Option<&str> {
    gateway
        .meta
        .annotations
        .get(ANN_ACME_ISSUER)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// The issuer an annotation value names (see the module documentation), or why it
/// names none.
pub fn parse_issuer(value: &str, gateway_namespace: &str) -> Result<IssuerId, String> {
    let v = value.trim();
    let (kind, name) = match v.split_once('/') {
        None => (IssuerKind::ClusterIssuer, v),
        Some(("ClusterIssuer", name)) => (IssuerKind::ClusterIssuer, name),
        Some(("Issuer", name)) => (IssuerKind::Issuer, name),
        Some(_) => {
            return Err(format!(
                "{v:?} is not an issuer reference: write NAME or ClusterIssuer/NAME for a ClusterIssuer, Issuer/NAME for an Issuer in the Gateway's namespace {gateway_namespace}"
            ))
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "{v:?} is not an issuer reference: write NAME or ClusterIssuer/NAME for a ClusterIssuer, Issuer/NAME for an Issuer in the Gateway's namespace {gateway_namespace}"
        ));
    }
    Ok(IssuerId {
        kind,
        namespace: match kind {
            IssuerKind::ClusterIssuer => String::new(),
            IssuerKind::Issuer => gateway_namespace.to_string(),
        },
        name: name.to_string(),
    })
}

/// The Secret isthmus orders for server `index` of `gateway` when the server has no
/// `credentialName`: `isthmus-acme-<gateway namespace>-<gateway name>-<index>`,
/// in the gateway workload's namespace.
pub fn generated_secret_name(gateway: &Resource, index: usize) -> String {
    format!(
        "isthmus-acme-{}-{}-{index}",
        gateway.namespace(),
        gateway.name()
    )
}

/// Whether server `server` of an annotated Gateway gets its certificate from the
/// annotation: protocol HTTPS, `tls.mode` SIMPLE, MUTUAL or OPTIONAL_MUTUAL.
pub fn server_is_ordered(server: &Server) -> bool {
    server.port.protocol.eq_ignore_ascii_case("HTTPS")
        && server.tls.as_ref().is_some_and(|t| {
            matches!(
                t.mode,
                Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
            )
        })
}

/// The Secret (namespace, name) server `index` of an annotated `gateway` is served
/// from on a gateway workload in `workload_namespace`: its `credentialName`, else the
/// generated name. `None` for a `credentialName` that is not a Secret reference.
pub fn server_secret(
    gateway: &Resource,
    server: &Server,
    index: usize,
    workload_namespace: &str,
) -> Option<(String, String)> {
    let written = server
        .tls
        .as_ref()
        .and_then(|t| t.credential_name.as_deref())
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match written {
        Some(w) => resolve_credential_with(w, workload_namespace, false),
        None => Some((
            workload_namespace.to_string(),
            generated_secret_name(gateway, index),
        )),
    }
}

/// Whether an annotated Gateway's automatic certificates write Secret `ns/name`.
pub fn writes_secret(store: &Store, namespace: &str, name: &str) -> bool {
    let workloads = gateway_workloads(store);
    store.gateways().any(|(r, gw)| {
        acme_issuer_annotation(r).is_some()
            && workloads
                .iter()
                .filter(|w| w.selected_by(gw.selector.as_ref()))
                .any(|w| {
                    gw.servers.iter().enumerate().any(|(i, s)| {
                        server_is_ordered(s)
                            && server_secret(r, s, i, &w.namespace)
                                .is_some_and(|(n, s)| n == namespace && s == name)
                    })
                })
    })
}

/// The ACME issuer an annotated Gateway uses, with the challenge type to answer, or
/// the finding that stops every order of the Gateway.
fn gateway_issuer(
    store: &Store,
    r: &Resource,
    value: &str,
) -> Result<(IssuerId, AcmeIssuer, ChallengeKind, bool), Diagnostic> {
    let field = format!("metadata.annotations.{ANN_ACME_ISSUER}");
    let not_ordered = "no certificate is ordered for this Gateway";
    let issuer = parse_issuer(value, r.namespace()).map_err(|why| {
        finding(
            Level::Error,
            CODE_ISSUER_NOT_FOUND,
            r,
            &field,
            format!("{why}; {not_ordered}"),
        )
    })?;
    let found = match issuer.kind {
        IssuerKind::ClusterIssuer => store.find(Kind::ClusterIssuer, "", &issuer.name),
        IssuerKind::Issuer => store.find(Kind::Issuer, &issuer.namespace, &issuer.name),
    };
    let Some((ir, spec)) = found.and_then(|x| match &x.spec {
        Spec::Issuer(s) | Spec::ClusterIssuer(s) => Some((x, s)),
        _ => None,
    }) else {
        let hint = match issuer.kind {
            IssuerKind::ClusterIssuer if store.issuers().any(|(i, _)| i.name() == issuer.name) => {
                format!(
                    " (an Issuer {} exists: write Issuer/{} for an Issuer in the Gateway's namespace)",
                    issuer.name, issuer.name
                )
            }
            IssuerKind::ClusterIssuer => String::new(),
            IssuerKind::Issuer => format!(
                " (an Issuer must be in the Gateway's namespace {}; write the name alone for a ClusterIssuer)",
                r.namespace()
            ),
        };
        return Err(finding(
            Level::Error,
            CODE_ISSUER_NOT_FOUND,
            r,
            &field,
            format!("no {}{hint}; {not_ordered}", issuer.display()),
        ));
    };
    let Some(acme) = &spec.acme else {
        return Err(finding(
            Level::Error,
            CODE_CANNOT_ORDER,
            r,
            &field,
            format!(
                "{} is not an ACME issuer (isthmus only orders over ACME); {not_ordered}",
                issuer.display()
            ),
        ));
    };
    let challenge = match ir.meta.annotations.get(ANN_ACME_CHALLENGE) {
        None => ChallengeKind::Http01,
        Some(v) => ChallengeKind::parse(v).ok_or_else(|| {
            finding(
                Level::Error,
                CODE_CANNOT_ORDER,
                r,
                &field,
                format!(
                    "{} has an invalid {ANN_ACME_CHALLENGE} annotation {v:?} (ISM0304); {not_ordered}",
                    issuer.display()
                ),
            )
        })?,
    };
    // The issuer's annotation forces the type for every name; otherwise each name
    // needs an http01 solver (checked per host).
    let check_solvers = !ir.meta.annotations.contains_key(ANN_ACME_CHALLENGE);
    Ok((issuer, acme.clone(), challenge, check_solvers))
}

/// One Secret being gathered: the order and who asked for it.
struct Pending {
    order: AcmeOrder,
    /// `Gateway ns/name spec.servers[i]` of every server contributing names.
    servers: Vec<(usize, String)>,
}

/// Append the orders of annotated Gateways to `orders` (after the Certificates',
/// which were made first) and their findings to `diags`.
pub(super) fn gateway_orders(
    store: &Store,
    orders: &mut Vec<AcmeOrder>,
    diags: &mut Vec<Diagnostic>,
) {
    let workloads = gateway_workloads(store);
    // By (namespace, secret), in first-seen order.
    let mut pending: Vec<Pending> = Vec::new();
    for (r, gw) in store.gateways() {
        let Some(value) = acme_issuer_annotation(r) else {
            continue;
        };
        let (issuer, acme, challenge, check_solvers) = match gateway_issuer(store, r, value) {
            Ok(x) => x,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let mut homes: Vec<&str> = Vec::new();
        for w in workloads
            .iter()
            .filter(|w| w.selected_by(gw.selector.as_ref()))
        {
            if !homes.contains(&w.namespace.as_str()) {
                homes.push(&w.namespace);
            }
        }
        for (i, server) in gw.servers.iter().enumerate() {
            if !server_is_ordered(server) {
                continue;
            }
            let names = server_names(r, i, server, &issuer, &acme, check_solvers, diags);
            if names.is_empty() {
                continue;
            }
            for home in &homes {
                let Some((ns, secret)) = server_secret(r, server, i, home) else {
                    continue; // not a Secret reference: compile reports it
                };
                let here = format!("{} spec.servers[{i}]", r.display_ref());
                if let Some(p) = pending
                    .iter_mut()
                    .find(|p| p.order.namespace == ns && p.order.secret_name == secret)
                {
                    if p.order.issuer != issuer || p.order.acme != acme {
                        diags.push(finding(
                            Level::Error,
                            CODE_CANNOT_ORDER,
                            r,
                            &format!("spec.servers[{i}].tls.credentialName"),
                            format!(
                                "Secret {ns}/{secret} is already ordered by {} from {}; this server's hosts ({}) are not added to it",
                                p.servers[0].1,
                                p.order.issuer.display(),
                                names.join(", ")
                            ),
                        ));
                        continue;
                    }
                    for n in &names {
                        if !p.order.names.contains(n) {
                            p.order.names.push(n.clone());
                        }
                    }
                    p.servers.push((i, here));
                    continue;
                }
                pending.push(Pending {
                    order: AcmeOrder {
                        certificate: r.display_ref(),
                        origin: r.origin_at(&format!("spec.servers[{i}]")),
                        namespace: ns,
                        secret_name: secret,
                        common_name: None,
                        names: names.clone(),
                        issuer: issuer.clone(),
                        acme: acme.clone(),
                        renew_before: None,
                        challenge,
                    },
                    servers: vec![(i, here)],
                });
            }
        }
    }
    for p in pending {
        let o = p.order;
        // A Secret a cert-manager Certificate writes is that Certificate's.
        if let Some((cr, c)) = store
            .certificates()
            .find(|(cr, c)| cr.namespace() == o.namespace && c.secret_name == o.secret_name)
        {
            let listed: Vec<&str> = c
                .common_name
                .iter()
                .chain(c.dns_names.iter())
                .map(|n| n.trim().trim_end_matches('.'))
                .collect();
            let missing: Vec<&String> = o
                .names
                .iter()
                .filter(|n| !listed.iter().any(|l| host::matches(l, n)))
                .collect();
            if !missing.is_empty() {
                let gw = store
                    .gateways()
                    .find(|(g, _)| g.display_ref() == o.certificate)
                    .map(|(g, _)| g);
                let (index, server) = &p.servers[0];
                let d = Diagnostic::new(
                    Level::Warning,
                    CODE_HOST_NOT_ORDERED,
                    format!(
                        "{server}: {} writes {}, the Secret this server is served from, and does not list {}: isthmus orders no certificate of its own for it; add them to the Certificate's dnsNames",
                        cr.display_ref(),
                        o.secret_ref(),
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                let field = format!("spec.servers[{index}].hosts");
                diags.push(match gw {
                    Some(g) => d.at(g.origin_at(&field)).on(g).field(field),
                    None => d,
                });
            }
            continue;
        }
        if let Some(first) = orders
            .iter()
            .find(|x| x.namespace == o.namespace && x.secret_name == o.secret_name)
        {
            // Only possible through a Certificate, handled above; kept as a guard.
            diags.push(
                Diagnostic::new(
                    Level::Error,
                    CODE_CANNOT_ORDER,
                    format!(
                        "{} is already written by {}; {} orders nothing for it",
                        o.secret_ref(),
                        first.certificate,
                        o.certificate
                    ),
                )
                .at(o.origin.clone()),
            );
            continue;
        }
        orders.push(o);
    }
}

/// The names to order for server `i`: its hosts without `ns/`, lower-case, without
/// a trailing dot, each once; a finding for each host that cannot be ordered.
fn server_names(
    r: &Resource,
    i: usize,
    server: &Server,
    issuer: &IssuerId,
    acme: &AcmeIssuer,
    check_solvers: bool,
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (j, entry) in server.hosts.iter().enumerate() {
        let h = host::ServerHost::parse(entry, r.namespace())
            .host
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if h.is_empty() || names.contains(&h) {
            continue;
        }
        let why = if h.starts_with('*') {
            Some(format!(
                "{h} is a wildcard: it needs DNS-01, and isthmus answers HTTP-01 and TLS-ALPN-01 only"
            ))
        } else if h.parse::<std::net::IpAddr>().is_ok() {
            Some(format!(
                "{h} is an IP address: isthmus orders DNS names only"
            ))
        } else if check_solvers
            && !acme
                .solvers
                .iter()
                .any(|s| s.http01.is_some() && solver_fits(s, &h, r))
        {
            Some(format!(
                "{} has no http01 solver for {h} (isthmus answers HTTP-01, or TLS-ALPN-01 when the issuer is annotated {ANN_ACME_CHALLENGE}: tls-alpn-01)",
                issuer.display()
            ))
        } else {
            None
        };
        match why {
            Some(why) => diags.push(finding(
                Level::Warning,
                CODE_HOST_NOT_ORDERED,
                r,
                &format!("spec.servers[{i}].hosts[{j}]"),
                format!(
                    "HTTPS server on port {}: {why}; it is left out of the certificate isthmus orders (the server's other hosts are ordered)",
                    server.port.number
                ),
            )),
            None => names.push(h),
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::acme_orders;
    use crate::certs::tests::store_in;

    fn store(yaml: &str) -> Store {
        store_in("auto.yaml", yaml)
    }

    /// The 1-based line of the first line of `yaml` starting with `start`.
    fn line_of(yaml: &str, start: &str) -> usize {
        yaml.lines()
            .position(|l| l.starts_with(start))
            .expect(start)
            + 1
    }

    const ISSUERS: &str = r#"apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: pebble}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: pebble-account}
    solvers: [{http01: {ingress: {class: istio}}}]
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: local, namespace: apps}
spec:
  acme:
    server: https://127.0.0.1:14001/dir
    privateKeySecretRef: {name: local-account}
    solvers:
    - selector: {dnsZones: [apps.test]}
      http01: {ingress: {class: istio}}
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: internal-ca}
spec:
  ca: {secretName: ca}
"#;

    fn gateway(ns: &str, annotation: &str, servers: &str) -> String {
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: {ns}
  annotations:
    isthmus.dev/acme-issuer: {annotation}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}"#
        )
    }

    const TWO_HOSTS: &str = r#"  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.test, b.test]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["./A.test", "*/b.test."]
    tls: {mode: SIMPLE}
"#;

    #[test]
    fn an_annotated_gateway_orders_its_https_hosts_into_a_generated_secret() {
        let yaml = format!("{ISSUERS}{}", gateway("default", "pebble", TWO_HOSTS));
        let s = store(&yaml);
        let (orders, diags) = acme_orders(&s);
        assert_eq!(diags, []);
        let [o] = orders.as_slice() else {
            panic!("{orders:#?}")
        };
        assert_eq!(o.certificate, "Gateway default/gw");
        // Istio's rule: the gateway workload's namespace (istio-system here).
        assert_eq!(
            o.secret_ref(),
            "Secret istio-system/isthmus-acme-default-gw-1"
        );
        assert_eq!(o.names, ["a.test", "b.test"]);
        assert_eq!(o.issuer.display(), "ClusterIssuer pebble");
        assert_eq!(o.challenge, ChallengeKind::Http01);
        assert_eq!(o.common_name, None);
        // At the server's line.
        assert_eq!(
            o.origin.to_string(),
            format!("auto.yaml:{}", line_of(&yaml, "  - port: {number: 443"))
        );
        assert!(writes_secret(
            &s,
            "istio-system",
            "isthmus-acme-default-gw-1"
        ));
        assert!(!writes_secret(&s, "default", "isthmus-acme-default-gw-1"));
    }

    #[test]
    fn issuer_references() {
        let ns = "apps";
        let c = |n: &str| {
            Ok(IssuerId {
                kind: IssuerKind::ClusterIssuer,
                namespace: String::new(),
                name: n.into(),
            })
        };
        assert_eq!(parse_issuer("le", ns), c("le"));
        assert_eq!(parse_issuer(" ClusterIssuer/le ", ns), c("le"));
        assert_eq!(
            parse_issuer("Issuer/le", ns),
            Ok(IssuerId {
                kind: IssuerKind::Issuer,
                namespace: "apps".into(),
                name: "le".into(),
            })
        );
        for bad in ["Issuer/", "Issuer/x/y", "issuer/le", "apps/le", "/le"] {
            let e = parse_issuer(bad, ns).expect_err(bad);
            assert!(e.contains("write NAME or ClusterIssuer/NAME"), "{e}");
        }
    }

    #[test]
    fn wildcards_and_other_unorderable_hosts_are_reported_and_the_rest_ordered() {
        let servers = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*", "*.wild.test", 192.0.2.1, ok.test, ok.test]
    tls: {mode: SIMPLE, credentialName: shared}
  - port: {number: 8443, name: https-2, protocol: HTTPS}
    hosts: [two.test]
    tls: {mode: MUTUAL, credentialName: shared, caCertCredentialName: ca}
  - port: {number: 9443, name: https-3, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: OPTIONAL_MUTUAL}
  - port: {number: 9444, name: pass, protocol: HTTPS}
    hosts: [pass.test]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9445, name: tls, protocol: TLS}
    hosts: [tls.test]
    tls: {mode: SIMPLE}
"#;
        let (orders, diags) = acme_orders(&store(&format!(
            "{ISSUERS}{}",
            gateway("default", "pebble", servers)
        )));
        // Two servers naming one Secret share one order.
        let [o] = orders.as_slice() else {
            panic!("{orders:#?}")
        };
        assert_eq!(o.secret_ref(), "Secret istio-system/shared");
        assert_eq!(o.names, ["ok.test", "two.test"]);
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(
            text[0].starts_with("Warning [ISM0305] (Gateway default/gw auto.yaml:")
                && text[0].contains("spec.servers[0].hosts[0]: HTTPS server on port 443: * is a wildcard: it needs DNS-01")
                && text[0].contains("(the server's other hosts are ordered)"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains(
                "spec.servers[0].hosts[1]: HTTPS server on port 443: *.wild.test is a wildcard"
            ),
            "{}",
            text[1]
        );
        assert!(
            text[2].contains(
                "spec.servers[0].hosts[2]: HTTPS server on port 443: 192.0.2.1 is an IP address"
            ),
            "{}",
            text[2]
        );
        assert!(
            text[3]
                .contains("spec.servers[2].hosts[0]: HTTPS server on port 9443: * is a wildcard"),
            "{}",
            text[3]
        );
    }

    #[test]
    fn an_unknown_issuer_is_reported_at_the_annotation() {
        for (annotation, want) in [
            (
                "nope",
                "no ClusterIssuer nope; no certificate is ordered for this Gateway",
            ),
            (
                "local",
                "no ClusterIssuer local (an Issuer local exists: write Issuer/local",
            ),
            (
                "Issuer/local",
                "no Issuer default/local (an Issuer must be in the Gateway's namespace default",
            ),
            ("Foo/bar", "\"Foo/bar\" is not an issuer reference"),
        ] {
            let yaml = format!("{ISSUERS}{}", gateway("default", annotation, TWO_HOSTS));
            let at = line_of(&yaml, "    isthmus.dev/acme-issuer:");
            let (orders, diags) = acme_orders(&store(&yaml));
            assert_eq!(orders, [], "{annotation}");
            let [d] = diags.as_slice() else {
                panic!("{annotation}: {diags:#?}")
            };
            let text = d.to_string();
            // The annotation's own line in the Gateway.
            assert!(
                text.starts_with(&format!("Error [ISM0301] (Gateway default/gw auto.yaml:{at}) metadata.annotations.isthmus.dev/acme-issuer: "))
                    && text.contains(want),
                "{text}"
            );
        }
        let yaml = format!("{ISSUERS}{}", gateway("default", "internal-ca", TWO_HOSTS));
        let at = line_of(&yaml, "    isthmus.dev/acme-issuer:");
        let (_, diags) = acme_orders(&store(&yaml));
        assert!(
            diags[0].to_string().starts_with(&format!(
                "Error [ISM0303] (Gateway default/gw auto.yaml:{at})"
            )) && diags[0]
                .message
                .contains("ClusterIssuer internal-ca is not an ACME issuer"),
            "{diags:#?}"
        );
    }

    #[test]
    fn a_namespaced_issuer_and_its_solver_selectors() {
        let servers = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [www.apps.test, other.test]
    tls: {mode: SIMPLE, credentialName: "kubernetes://apps/site"}
"#;
        let (orders, diags) = acme_orders(&store(&format!(
            "{ISSUERS}{}",
            gateway("apps", "Issuer/local", servers)
        )));
        let [o] = orders.as_slice() else {
            panic!("{orders:#?}")
        };
        assert_eq!(o.issuer.display(), "Issuer apps/local");
        assert_eq!(o.secret_ref(), "Secret apps/site");
        assert_eq!(o.names, ["www.apps.test"]);
        let [d] = diags.as_slice() else {
            panic!("{diags:#?}")
        };
        assert!(
            d.message
                .contains("Issuer apps/local has no http01 solver for other.test"),
            "{d}"
        );
    }

    #[test]
    fn a_secret_an_explicit_certificate_writes_is_not_ordered_twice() {
        let servers = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.test, b.test]
    tls: {mode: SIMPLE, credentialName: site}
  - port: {number: 8443, name: https-2, protocol: HTTPS}
    hosts: [a.test]
    tls: {mode: SIMPLE, credentialName: covered}
"#;
        let certs = r#"---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: site, namespace: istio-system}
spec:
  secretName: site
  issuerRef: {name: pebble, kind: ClusterIssuer}
  dnsNames: [a.test]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: covered, namespace: istio-system}
spec:
  secretName: covered
  issuerRef: {name: internal-ca, kind: ClusterIssuer}
  dnsNames: ["*.test"]
"#;
        let (orders, diags) = acme_orders(&store(&format!(
            "{ISSUERS}{}{certs}",
            gateway("default", "pebble", servers)
        )));
        // Whatever its issuer, a Certificate owns its Secret (`covered`'s CA issuer
        // is not isthmus's to fulfil: ISM0302), and a wildcard it lists covers a host.
        let made: Vec<&str> = orders.iter().map(|o| o.certificate.as_str()).collect();
        assert_eq!(made, ["Certificate istio-system/site"]);
        let [ca, d] = diags.as_slice() else {
            panic!("{diags:#?}")
        };
        assert_eq!(ca.code, "ISM0302");
        let text = d.to_string();
        assert!(
            text.starts_with("Warning [ISM0305] (Gateway default/gw auto.yaml:")
                && text.contains("spec.servers[0].hosts: Gateway default/gw spec.servers[0]: Certificate istio-system/site writes Secret istio-system/site")
                && text.contains("does not list b.test"),
            "{text}"
        );
    }

    /// The TLS servers of port 443 (Gateway port) of the default workload:
    /// (secret, has a credential), and the findings.
    fn compiled(yaml: &str) -> (Vec<(String, bool)>, Vec<String>) {
        let s = store(yaml);
        let (snap, diags) =
            crate::compile::compile_gateway(&s, &crate::compile::GatewayWorkload::default());
        let servers = snap
            .listeners
            .iter()
            .filter(|l| l.port == 443)
            .filter_map(|l| l.protocol.tls())
            .flat_map(|t| t.servers.iter())
            .map(|t| (t.secret.clone(), t.credential.is_some()))
            .collect();
        (servers, diags.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn compile_serves_a_server_without_credential_name_from_the_generated_secret() {
        let yaml = format!("{ISSUERS}{}", gateway("default", "pebble", TWO_HOSTS));
        // Not issued yet: pending (Info), not "needs credentialName".
        let (servers, diags) = compiled(&yaml);
        assert_eq!(
            servers,
            [(
                "Secret istio-system/isthmus-acme-default-gw-1".to_string(),
                false
            )]
        );
        assert!(
            diags.iter().any(|d| d.starts_with("Info [ISM0205]")
                && d.contains("Secret istio-system/isthmus-acme-default-gw-1 is pending: isthmus orders it (the Gateway's annotation isthmus.dev/acme-issuer); TLS handshakes for a.test")),
            "{diags:#?}"
        );
        assert!(!diags.iter().any(|d| d.starts_with("Error")), "{diags:#?}");

        // Issued (the state directory's Secret): served.
        let secret = r#"---
apiVersion: v1
kind: Secret
metadata: {name: isthmus-acme-default-gw-1, namespace: istio-system}
type: kubernetes.io/tls
stringData:
  tls.crt: "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
  tls.key: "-----BEGIN PRIVATE KEY-----\nMAMCAQI=\n-----END PRIVATE KEY-----\n"
"#;
        let (servers, _) = compiled(&format!("{yaml}{secret}"));
        assert_eq!(
            servers,
            [(
                "Secret istio-system/isthmus-acme-default-gw-1".to_string(),
                true
            )]
        );

        // Without the annotation the server still needs a credentialName.
        let plain = yaml.replace("    isthmus.dev/acme-issuer: pebble\n", "");
        let (servers, diags) = compiled(&plain);
        assert_eq!(servers, []);
        assert!(
            diags.iter().any(|d| d.contains("needs credentialName")),
            "{diags:#?}"
        );
    }

    #[test]
    fn analyze_does_not_report_a_secret_the_annotation_orders() {
        let servers = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.test]
    tls: {mode: SIMPLE, credentialName: site}
"#;
        let yaml = format!("{ISSUERS}{}", gateway("default", "pebble", servers));
        let found = crate::analyze::analyze(&store(&yaml));
        assert!(!found.iter().any(|d| d.code == "IST0101"), "{found:#?}");
        let plain = yaml.replace("    isthmus.dev/acme-issuer: pebble\n", "");
        let found = crate::analyze::analyze(&store(&plain));
        assert!(found.iter().any(|d| d.code == "IST0101"), "{found:#?}");
        assert_eq!(
            crate::analyze::level_of(CODE_HOST_NOT_ORDERED),
            Level::Warning
        );
    }

    #[test]
    fn a_gateway_without_the_annotation_orders_nothing() {
        let plain = format!("{ISSUERS}{}", gateway("default", "pebble", TWO_HOSTS))
            .replace("    isthmus.dev/acme-issuer: pebble\n", "    other: x\n");
        let s = store(&plain);
        assert_eq!(acme_orders(&s), (vec![], vec![]));
        assert!(!writes_secret(
            &s,
            "istio-system",
            "isthmus-acme-default-gw-1"
        ));
    }
}
