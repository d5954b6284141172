//! Gateway findings: selectors that select no workload and `credentialName` secrets
//! that are missing or unusable (IST0101, IST0161, with the cert-manager hints of
//! [`super::certs`]), one certificate on several Gateways (IST0138), and Gateways that
//! claim the same port and host on the same workloads (IST0145); server ports their
//! workloads' Services do not offer (IST0162).

use std::collections::BTreeSet;

use crate::diag::Diagnostic;
use crate::resources::core::{IntOrString, SecretData};
use crate::resources::networking::{GatewaySpec, Server, ServerTlsMode, ServerTlsSettings};
use crate::resources::{Kind, Labels, Resource, Spec};

use super::index::{describe_selector, GatewayHome, Index, WorkloadKind};
use super::{certs, finding, full_name, selector_string, selects};

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, gw) in ix.store.gateways() {
        credentials(ix, r, gw, out);
        service_ports(ix, r, gw, out);
    }
    duplicate_certificates(ix, out);
    conflicts(ix, out);
}

/// IST0162, as istioctl's `gateway.IngressGatewayPortAnalyzer`: a server port that no
/// TCP port (or targetPort) of the Services selecting the Gateway's workloads
/// offers. Not reported when no loaded Service selects those workloads at all, or
/// when the workload is the assumed default ingress gateway (their Services are
/// then unknown, not missing).
fn service_ports(ix: &Index, r: &Resource, gw: &GatewaySpec, out: &mut Vec<Diagnostic>) {
    let empty = Labels::default();
    let sel = gw.selector.as_ref().unwrap_or(&empty);
    let mut offered: BTreeSet<u32> = BTreeSet::new();
    let mut any_workload = false;
    let mut any_service = false;
    for w in ix.workloads.iter().filter(|w| selects(sel, &w.labels)) {
        any_workload = true;
        if w.kind == WorkloadKind::ImplicitIngress {
            // Assumed, not loaded: its Service (and where it sends each port) is
            // unknown. Istio's stand-in Service maps 80 to 80, but installed ingress
            // gateways listen on 8080 and 8443.
            return;
        }
        for (s, svc) in ix.store.services() {
            if s.namespace() != w.namespace
                || !selects(svc.selector.as_ref().unwrap_or(&empty), &w.labels)
            {
                continue;
            }
            any_service = true;
            for p in &svc.ports {
                // Kubernetes defaults the protocol to TCP.
                if p.protocol.as_deref().is_some_and(|x| x != "TCP") {
                    continue;
                }
                let target = match &p.target_port {
                    Some(IntOrString::Int(i)) => u32::try_from(*i).unwrap_or(0),
                    Some(IntOrString::Str(s)) => s.parse().unwrap_or(0),
                    None => 0,
                };
                offered.insert(p.port);
                if target != 0 {
                    offered.insert(target);
                }
            }
        }
    }
    if !any_workload || !any_service {
        return;
    }
    for (i, server) in gw.servers.iter().enumerate() {
        let port = server.port.number;
        if !offered.contains(&port) {
            out.push(finding(
                "IST0162",
                r,
                &format!("spec.servers[{i}].port.number"),
                format!(
                    "The gateway is listening on a target port (port {port}) that is not defined in the \
                     Service associated with its workload instances (Pod selector {}). If you need to \
                     access the gateway port through the gateway Service, it will not be available.",
                    selector_string(sel)
                ),
            ));
        }
    }
}

/// A `credentialName` as written, and the Secret it names once resolved.
pub(super) struct CredentialRef<'a> {
    pub path: String,
    pub written: &'a str,
    pub namespace: String,
    pub name: String,
}

/// The secret references of a server's TLS settings, resolved against the namespace
/// the gateway workload runs in. `builtin://` and ConfigMap references are skipped.
pub(super) fn credential_refs<'a>(
    tls: &'a ServerTlsSettings,
    base: &str,
    home: &str,
) -> Vec<CredentialRef<'a>> {
    let mut written: Vec<(String, &str)> = Vec::new();
    if let Some(c) = tls.credential_name.as_deref().filter(|c| !c.is_empty()) {
        written.push((format!("{base}.credentialName"), c));
    }
    for (k, c) in tls.credential_names.iter().enumerate() {
        written.push((format!("{base}.credentialNames[{k}]"), c));
    }
    written
        .into_iter()
        .filter_map(|(path, w)| {
            let (namespace, name) = resolve_credential(w, home)?;
            Some(CredentialRef {
                path,
                written: w,
                namespace,
                name,
            })
        })
        .collect()
}

/// `name`, `kubernetes://name`, `kubernetes://ns/name` and
/// `kubernetes-gateway://ns/name` -> (namespace, name): the compiler's rule.
fn resolve_credential(written: &str, home: &str) -> Option<(String, String)> {
    crate::compile::resolve_credential_with(written, home, true)
}

fn credentials(ix: &Index, r: &Resource, gw: &GatewaySpec, out: &mut Vec<Diagnostic>) {
    let Some(home) = ix.gateway_home(r, gw) else {
        let sel = gw.selector.clone().unwrap_or_default();
        out.push(finding(
            "IST0101",
            r,
            "spec.selector",
            format!(
                "Referenced selector not found: {:?} (no loaded Pod, Deployment or WorkloadEntry has \
                 these labels, so this Gateway configures no proxy and its credentialName secrets \
                 cannot be located)",
                selector_string(&sel)
            ),
        ));
        return;
    };
    for (i, server) in gw.servers.iter().enumerate() {
        let Some(tls) = &server.tls else { continue };
        let base = format!("spec.servers[{i}].tls");
        for c in credential_refs(tls, &base, home.namespace()) {
            credential(ix, r, &home, server, &c, out);
        }
    }
}

fn credential(
    ix: &Index,
    r: &Resource,
    home: &GatewayHome<'_>,
    server: &Server,
    c: &CredentialRef<'_>,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(secret) = ix.store.find(Kind::Secret, &c.namespace, &c.name) {
        if let Spec::Secret(data) = &secret.spec {
            let checked =
                certs::validate_server_secret(data).and_then(|()| client_ca(ix, server, c, data));
            if let Err(why) = checked {
                out.push(finding(
                    "IST0161",
                    r,
                    &c.path,
                    format!(
                        "The credential referenced by the Gateway {} in namespace {} is invalid, which can \
                         cause the traffic not to work as expected. Secret {}/{}: {why}.",
                        r.name(),
                        r.namespace(),
                        c.namespace,
                        c.name
                    ),
                ));
            }
        }
        return;
    }
    if certs::issued_by_certificate(ix, &c.namespace, &c.name)
        || crate::certs::auto::acme_issuer_annotation(r).is_some()
    {
        return; // cert-manager (or isthmus) will write it
    }
    let looked_in = if c.written.contains('/') {
        format!("namespace {}, as written", c.namespace)
    } else {
        home.explain()
    };
    let hint = "Create the Secret there, or fix the name";
    out.push(finding(
        "IST0101",
        r,
        &c.path,
        format!(
            "Referenced credentialName not found: {:?}. Looked for it in {looked_in}. {hint}.",
            c.written
        ),
    ));
    certs::missing_credential_hints(ix, r, &server.hosts, c, out);
}

/// `MUTUAL` / `OPTIONAL_MUTUAL` verify client certificates against a CA: `caCertificates`,
/// `caCertCredentialName`, `ca.crt`/`cacert` in the credential, or a `<name>-cacert`
/// Secret next to it. Without one the listener cannot be built.
fn client_ca(
    ix: &Index,
    server: &Server,
    c: &CredentialRef<'_>,
    data: &SecretData,
) -> Result<(), String> {
    let Some(tls) = &server.tls else {
        return Ok(());
    };
    if !matches!(
        tls.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    ) {
        return Ok(());
    }
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let in_secret = ["ca.crt", "cacert"]
        .iter()
        .any(|k| data.get(k).is_some_and(|v| !v.is_empty()));
    let side_secret = format!("{}-cacert", c.name);
    if set(&tls.ca_certificates)
        || set(&tls.ca_cert_credential_name)
        || in_secret
        || ix
            .store
            .find(Kind::Secret, &c.namespace, &side_secret)
            .is_some()
    {
        return Ok(());
    }
    Err(format!(
        "mode MUTUAL needs a CA to verify client certificates, and there is none: add ca.crt to the \
         secret, create Secret {}/{side_secret}, or set caCertCredentialName",
        c.namespace
    ))
}

fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    match (a.credential_name.as_deref(), b.credential_name.as_deref()) {
        (Some(x), Some(y)) if !x.is_empty() && !y.is_empty() => x == y,
        (None | Some(""), None | Some("")) => {
            let cert =
                |t: &ServerTlsSettings| t.server_certificate.clone().filter(|s| !s.is_empty());
            let key = |t: &ServerTlsSettings| t.private_key.clone().filter(|s| !s.is_empty());
            cert(a).is_some() && cert(a) == cert(b) && key(a).is_some() && key(a) == key(b)
        }
        _ => false,
    }
}

/// IST0138, as istioctl: Gateway A is reported when another Gateway B, whose selector
/// includes all of A's labels, serves the same certificate.
fn duplicate_certificates(ix: &Index, out: &mut Vec<Diagnostic>) {
    let empty = Labels::new();
    for (a, ga) in ix.store.gateways() {
        let sel_a = ga.selector.as_ref().unwrap_or(&empty);
        let mut seen = BTreeSet::new();
        for (b, gb) in ix.store.gateways() {
            if std::ptr::eq(a, b) || !selects(sel_a, gb.selector.as_ref().unwrap_or(&empty)) {
                continue;
            }
            let hit = ga.servers.iter().enumerate().find_map(|(i, sa)| {
                let ta = sa.tls.as_ref()?;
                gb.servers
                    .iter()
                    .filter_map(|sb| sb.tls.as_ref())
                    .any(|tb| same_certificate(ta, tb))
                    .then_some(i)
            });
            let Some(i) = hit else { continue };
            if !seen.insert(full_name(b)) {
                continue;
            }
            out.push(finding(
                "IST0138",
                a,
                &format!("spec.servers[{i}].tls"),
                format!(
                    "Duplicate certificate in multiple gateways [{} {}] may cause 404s if clients re-use \
                     HTTP2 connections. Give each Gateway its own certificate, or serve these hosts from \
                     one Gateway.",
                    full_name(a),
                    full_name(b)
                ),
            ));
        }
    }
}

/// Whether two Gateways configure the same proxies: equal selectors, or a loaded
/// (or the implicit ingress) workload both select.
fn same_workloads(ix: &Index, a: &GatewaySpec, b: &GatewaySpec) -> bool {
    let empty = Labels::new();
    let sa = a.selector.as_ref().unwrap_or(&empty);
    let sb = b.selector.as_ref().unwrap_or(&empty);
    sa == sb
        || ix
            .workloads
            .iter()
            .any(|w| selects(sa, &w.labels) && selects(sb, &w.labels))
}

/// IST0145: two Gateways on the same workloads with a server on the same port (and
/// bind address) listing the same host.
fn conflicts(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (a, ga) in ix.store.gateways() {
        for (i, sa) in ga.servers.iter().enumerate() {
            let mut with: Vec<String> = Vec::new();
            for (b, gb) in ix.store.gateways() {
                if std::ptr::eq(a, b) || !same_workloads(ix, ga, gb) {
                    continue;
                }
                let clash = gb.servers.iter().any(|sb| {
                    sb.port.number == sa.port.number
                        && sb.bind == sa.bind
                        && sb.hosts.iter().any(|h| sa.hosts.contains(h))
                });
                if clash {
                    with.push(full_name(b));
                }
            }
            if with.is_empty() {
                continue;
            }
            with.sort();
            out.push(finding(
                "IST0145",
                a,
                &format!("spec.servers[{i}]"),
                format!(
                    "Conflict with gateways {} (workload selector {}, port {}, hosts {}).",
                    with.join(","),
                    describe_selector(ga.selector.as_ref()),
                    sa.port.number,
                    sa.hosts.join(",")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_forms() {
        let r = |w: &str| resolve_credential(w, "istio-system");
        assert_eq!(r("cert"), Some(("istio-system".into(), "cert".into())));
        assert_eq!(
            r("kubernetes://cert"),
            Some(("istio-system".into(), "cert".into()))
        );
        assert_eq!(
            r("kubernetes://ns/cert"),
            Some(("ns".into(), "cert".into()))
        );
        assert_eq!(
            r("kubernetes-gateway://ns/cert"),
            Some(("ns".into(), "cert".into()))
        );
        assert_eq!(r("builtin://"), None);
    }
}
