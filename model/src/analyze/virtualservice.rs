//! VirtualService findings: gateways, destination hosts, ports and subsets that do
//! not resolve (IST0101, IST0112), hosts a bound Gateway does not serve (IST0132),
//! two mesh VirtualServices for one host (IST0109) and JWT-claim routing without a
//! RequestAuthentication on the gateway (IST0149). Shadowed rules: [`super::rules`].

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::Diagnostic;
use crate::host;
use crate::resources::networking::{Destination, GatewaySpec, VirtualServiceSpec};
use crate::resources::{Kind, Resource, Spec};

use super::index::{split_ref, Index, Workload, WorkloadKind, ROOT_NAMESPACE};
use super::{finding, full_name, rules, selects};

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, vs) in ix.store.virtual_services() {
        gateways(ix, r, vs, out);
        destinations(ix, r, vs, out);
        jwt_claim_routing(ix, r, vs, out);
        rules::check(r, vs, out);
    }
    mesh_host_conflicts(ix, out);
    ingress_subsets(ix, out);
}

/// IST0140, as istioctl: a VirtualService bound to gateways routes to a host without
/// a subset, while another VirtualService for that host splits it by subsets; those
/// subset rules do not apply to the gateway's requests. Hosts are compared as
/// written.
fn ingress_subsets(ix: &Index, out: &mut Vec<Diagnostic>) {
    // VirtualServices with a subset route to one of their own hosts: (name, hosts).
    let mut with_subsets: Vec<(String, Vec<&str>)> = Vec::new();
    for (r, vs) in ix.store.virtual_services() {
        let hosts: Vec<&str> = vs
            .http
            .iter()
            .flat_map(|h| h.route.iter())
            .map(|rd| &rd.destination)
            .filter(|d| d.subset.as_deref().is_some_and(|s| !s.is_empty()))
            .filter(|d| vs.hosts.contains(&d.host))
            .map(|d| d.host.as_str())
            .collect();
        if !hosts.is_empty() {
            with_subsets.push((full_name(r), hosts));
        }
    }
    for (r, vs) in ix.store.virtual_services() {
        if vs.gateways.is_empty() {
            continue;
        }
        let mut seen = BTreeSet::new();
        for (i, http) in vs.http.iter().enumerate() {
            for (j, rd) in http.route.iter().enumerate() {
                let d = &rd.destination;
                if d.subset.as_deref().is_some_and(|s| !s.is_empty()) {
                    continue;
                }
                for (other, hosts) in &with_subsets {
                    if hosts.contains(&d.host.as_str()) && seen.insert(other.clone()) {
                        out.push(finding(
                            "IST0140",
                            r,
                            &format!("spec.http[{i}].route[{j}].destination.host"),
                            format!(
                                "Subset in virtual service {other} has no effect on ingress gateway {} \
                                 requests",
                                full_name(r)
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// Whether the VirtualService applies to sidecars (`gateways` empty or has `mesh`).
pub(super) fn bound_to_mesh(vs: &VirtualServiceSpec) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// Every gateway reference with its field path: top-level, then per match block.
fn gateway_refs(vs: &VirtualServiceSpec) -> Vec<(String, &str)> {
    let mut refs: Vec<(String, &str)> = vs
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("spec.gateways[{i}]"), g.as_str()))
        .collect();
    for (i, rule) in vs.http.iter().enumerate() {
        for (j, m) in rule.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                refs.push((format!("spec.http[{i}].match[{j}].gateways[{k}]"), g));
            }
        }
    }
    for (i, rule) in vs.tls.iter().enumerate() {
        for (j, m) in rule.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                refs.push((format!("spec.tls[{i}].match[{j}].gateways[{k}]"), g));
            }
        }
    }
    for (i, rule) in vs.tcp.iter().enumerate() {
        for (j, m) in rule.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                refs.push((format!("spec.tcp[{i}].match[{j}].gateways[{k}]"), g));
            }
        }
    }
    refs
}

/// IST0101 for gateways that do not exist; IST0132 for a bound Gateway none of whose
/// servers accepts any host of the VirtualService.
fn gateways(ix: &Index, r: &Resource, vs: &VirtualServiceSpec, out: &mut Vec<Diagnostic>) {
    let vs_ns = r.namespace();
    for (path, g) in gateway_refs(vs) {
        if g == "mesh" {
            continue;
        }
        let top_level = path.starts_with("spec.gateways");
        if is_internal_gateway(g) {
            // Istio's own translation of a Kubernetes Gateway: not looked up.
            if top_level {
                out.push(finding(
                    "IST0165",
                    r,
                    &path,
                    format!(
                        "Gateway reference in VirtualService {} is to an implementation-generated \
                         internal Gateway: {g}.",
                        full_name(r)
                    ),
                ));
            }
            continue;
        }
        let (ns, name) = split_ref(g, vs_ns);
        if let Some(gw) = ix.store.find(Kind::Gateway, ns, name) {
            if let Spec::Gateway(spec) = &gw.spec {
                // Only the top-level list binds hosts; match-level entries narrow it.
                if path.starts_with("spec.gateways") {
                    gateway_hosts(r, vs, gw, spec, &path, out);
                }
            }
            continue;
        }
        if let Some(kgw) = ix.store.find(Kind::KubeGateway, ns, name) {
            if let (Spec::KubeGateway(spec), true) = (&kgw.spec, path.starts_with("spec.gateways"))
            {
                let hostnames: Option<Vec<&str>> = spec
                    .listeners
                    .iter()
                    .map(|l| l.hostname.as_deref())
                    .collect();
                // A listener without hostname accepts every host.
                let ok = hostnames.is_none_or(|hs| {
                    hs.iter()
                        .any(|h| vs.hosts.iter().any(|v| host::matches(h, v)))
                });
                if !ok {
                    out.push(host_not_in_gateway(
                        r,
                        vs,
                        kgw,
                        &path,
                        "its listeners' hostnames",
                    ));
                }
            }
            continue;
        }
        let mut msg = format!("Referenced gateway not found: {g:?}");
        let elsewhere: Vec<String> = ix
            .store
            .gateways()
            .filter(|(gw, _)| gw.name() == name)
            .map(|(gw, _)| full_name(gw))
            .collect();
        if let Some(other) = elsewhere.first() {
            msg.push_str(&format!(
                " (there is a Gateway {other}: write \"{other}\" to bind to it)"
            ));
        }
        if top_level {
            out.push(finding("IST0101", r, &path, msg));
            // As Istio: a gateway that does not exist serves none of the hosts.
            out.push(finding(
                "IST0132",
                r,
                &path,
                format!(
                    "one or more host [{}] defined in VirtualService {} not found in Gateway {ns}/{name}.",
                    vs.hosts.join(" "),
                    full_name(r),
                ),
            ));
        } else {
            // istioctl checks only spec.gateways; a match-level gateway that does
            // not exist makes the match never apply.
            out.push(finding(CODE_MATCH_GATEWAY_NOT_FOUND, r, &path, msg));
        }
    }
}

/// A match's gateway that does not exist (istioctl does not check match-level
/// gateways).
pub(super) const CODE_MATCH_GATEWAY_NOT_FOUND: &str = "ISM0106";

/// Istio's name for the Gateway it generates from a Kubernetes Gateway
/// (`ns/name~istio-autogenerated-k8s-gateway~listener`).
fn is_internal_gateway(g: &str) -> bool {
    let name = g.split_once('/').map_or(g, |(_, n)| n);
    name.contains("~istio-autogenerated-k8s-gateway~")
}

fn gateway_hosts(
    r: &Resource,
    vs: &VirtualServiceSpec,
    gw: &Resource,
    spec: &GatewaySpec,
    path: &str,
    out: &mut Vec<Diagnostic>,
) {
    let mut accepted: Vec<&str> = Vec::new();
    for server in &spec.servers {
        accepted.extend(host::server_hosts_for_namespace(
            &server.hosts,
            gw.namespace(),
            r.namespace(),
        ));
    }
    if accepted
        .iter()
        .any(|g| vs.hosts.iter().any(|h| host::matches(g, h)))
    {
        return;
    }
    let why = if spec.servers.is_empty() {
        "no servers".to_string()
    } else if accepted.is_empty() {
        format!("no server host open to namespace {}", r.namespace())
    } else {
        format!("servers accepting [{}]", accepted.join(" "))
    };
    out.push(host_not_in_gateway(r, vs, gw, path, &why));
}

fn host_not_in_gateway(
    r: &Resource,
    vs: &VirtualServiceSpec,
    gw: &Resource,
    path: &str,
    gateway_has: &str,
) -> Diagnostic {
    finding(
        "IST0132",
        r,
        path,
        format!(
            "one or more host [{}] defined in VirtualService {} not found in Gateway {}. \
             The Gateway has {gateway_has}: add a matching host to a server or fix spec.hosts.",
            vs.hosts.join(" "),
            full_name(r),
            full_name(gw),
        ),
    )
}

/// One destination with its path and what istioctl calls it in messages.
struct Dest<'v> {
    path: String,
    what: &'static str,
    d: &'v Destination,
}

fn all_destinations(vs: &VirtualServiceSpec) -> Vec<Dest<'_>> {
    let mut out = Vec::new();
    for (i, rule) in vs.http.iter().enumerate() {
        for (j, rd) in rule.route.iter().enumerate() {
            let path = format!("spec.http[{i}].route[{j}].destination");
            out.push(Dest {
                path,
                what: "host",
                d: &rd.destination,
            });
        }
        if let Some(m) = &rule.mirror {
            out.push(Dest {
                path: format!("spec.http[{i}].mirror"),
                what: "mirror host",
                d: m,
            });
        }
        for (j, m) in rule.mirrors.iter().enumerate() {
            let path = format!("spec.http[{i}].mirrors[{j}].destination");
            out.push(Dest {
                path,
                what: "mirror host",
                d: &m.destination,
            });
        }
    }
    for (i, rule) in vs.tls.iter().enumerate() {
        for (j, rd) in rule.route.iter().enumerate() {
            let path = format!("spec.tls[{i}].route[{j}].destination");
            out.push(Dest {
                path,
                what: "host",
                d: &rd.destination,
            });
        }
    }
    for (i, rule) in vs.tcp.iter().enumerate() {
        for (j, rd) in rule.route.iter().enumerate() {
            let path = format!("spec.tcp[{i}].route[{j}].destination");
            out.push(Dest {
                path,
                what: "host",
                d: &rd.destination,
            });
        }
    }
    out
}

/// IST0101 for hosts, ports and subsets that do not exist; IST0112 for a
/// multi-port destination without a port.
fn destinations(ix: &Index, r: &Resource, vs: &VirtualServiceSpec, out: &mut Vec<Diagnostic>) {
    let ns = r.namespace();
    // As istioctl: the host must be visible from a namespace the VirtualService is
    // exported to (its own when `exportTo` is empty).
    let scopes: Vec<&str> = if vs.export_to.is_empty() {
        vec![ns]
    } else {
        vs.export_to
            .iter()
            .map(|e| if e == "." { ns } else { e.as_str() })
            .collect()
    };
    for Dest { path, what, d } in all_destinations(vs) {
        let fqdn = host::expand_short_name(&d.host, ns);
        let found = scopes.iter().find_map(|s| ix.find_service(&fqdn, s));
        let Some(svc) = found else {
            let msg = format!(
                "Referenced {what} not found: {:?} ({}){}",
                d.host,
                if !vs.export_to.is_empty() && ix.find_service(&fqdn, ns).is_some() {
                    format!(
                        "{fqdn} is not visible from the namespaces this VirtualService is exported to: {}",
                        scopes.join(", ")
                    )
                } else if fqdn == d.host {
                    "no Service or ServiceEntry provides it".to_string()
                } else {
                    format!("no Service or ServiceEntry provides {fqdn}")
                },
                short_name_hint(ix, &d.host)
            );
            out.push(finding("IST0101", r, &format!("{path}.host"), msg));
            // As Istio: the subset is looked up even when the host is missing.
            if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
                subset_defined(ix, r, &fqdn, &d.host, subset, &path, what, out);
            }
            continue;
        };
        match &d.port {
            None if svc.ports.len() > 1 => {
                let ports: Vec<String> = svc.ports.iter().map(u32::to_string).collect();
                out.push(finding(
                    "IST0112",
                    r,
                    &format!("{path}.host"),
                    format!(
                        "This VirtualService routes to a service {:?} that exposes multiple ports \
                         [{}]. Specifying a port in the destination is required to disambiguate.",
                        d.host,
                        ports.join(" ")
                    ),
                ));
            }
            Some(p) if !svc.ports.is_empty() && !svc.ports.contains(&p.number) => {
                let ports: Vec<String> = svc.ports.iter().map(u32::to_string).collect();
                out.push(finding(
                    "IST0101",
                    r,
                    &format!("{path}.port.number"),
                    format!(
                        "Referenced host:port not found: \"{}:{}\" ({} exposes ports [{}])",
                        d.host,
                        p.number,
                        svc.host,
                        ports.join(" ")
                    ),
                ));
            }
            _ => {}
        }
        if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
            subset_defined(ix, r, &fqdn, &d.host, subset, &path, what, out);
        }
    }
}

/// `reviews.default` is an FQDN to Istio, not a short name: suggest the full name
/// when a Service `reviews` exists in namespace `default`.
fn short_name_hint(ix: &Index, h: &str) -> String {
    let Some((name, ns)) = h.split_once('.') else {
        return String::new();
    };
    if ns.contains('.') || ix.store.find(Kind::Service, ns, name).is_none() {
        return String::new();
    }
    format!(
        "; Istio expands only names without a dot, so write \"{name}.{ns}.svc.{}\"",
        host::CLUSTER_DOMAIN
    )
}

#[allow(clippy::too_many_arguments)]
fn subset_defined(
    ix: &Index,
    r: &Resource,
    fqdn: &str,
    written: &str,
    subset: &str,
    path: &str,
    what: &str,
    out: &mut Vec<Diagnostic>,
) {
    let mut known: Vec<(&Resource, Vec<&str>)> = Vec::new();
    for (dr_res, dr) in ix.store.destination_rules() {
        let dr_host = host::expand_short_name(&dr.host, dr_res.namespace());
        let applies = dr_host.eq_ignore_ascii_case(fqdn)
            || (host::is_wildcard(&dr_host) && host::subset_of(fqdn, &dr_host));
        if !applies {
            continue;
        }
        let names: Vec<&str> = dr.subsets.iter().map(|s| s.name.as_str()).collect();
        if names.contains(&subset) {
            return;
        }
        known.push((dr_res, names));
    }
    let kind = if what == "host" {
        "host+subset"
    } else {
        "mirror+subset"
    };
    let detail = if known.is_empty() {
        format!("no DestinationRule defines subsets for {fqdn}")
    } else {
        known
            .iter()
            .map(|(dr, names)| {
                format!(
                    "DestinationRule {} defines [{}]",
                    full_name(dr),
                    names.join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    out.push(finding(
        "IST0101",
        r,
        &format!("{path}.subset"),
        format!(
            "Referenced {kind} in destinationrule not found: \"{written}+{subset}\" ({detail})"
        ),
    ));
}

/// The first `@request.auth.claims...` key a match uses, with its path.
fn jwt_claim_key(vs: &VirtualServiceSpec) -> Option<(String, &str)> {
    let is_claim =
        |k: &str| k.starts_with("@request.auth.claims.") || k.starts_with("@request.auth.claims[");
    for (i, rule) in vs.http.iter().enumerate() {
        for (j, m) in rule.match_.iter().enumerate() {
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                if let Some(k) = map.keys().find(|k| is_claim(k)) {
                    return Some((format!("spec.http[{i}].match[{j}].{field}.{k}"), k));
                }
            }
        }
    }
    None
}

/// IST0149: claims are only available for routing when a RequestAuthentication (in
/// the root namespace or the workload's) validates the JWT on the gateway workload.
fn jwt_claim_routing(ix: &Index, r: &Resource, vs: &VirtualServiceSpec, out: &mut Vec<Diagnostic>) {
    let Some((path, key)) = jwt_claim_key(vs) else {
        return;
    };
    for g in vs.gateways.iter().filter(|g| *g != "mesh") {
        let (ns, name) = split_ref(g, r.namespace());
        let Some(gw) = ix.store.find(Kind::Gateway, ns, name) else {
            continue; // reported by `gateways`
        };
        let Spec::Gateway(spec) = &gw.spec else {
            continue;
        };
        let mut workloads: Vec<Workload> =
            ix.gateway_workloads(spec).into_iter().cloned().collect();
        if workloads.is_empty() && !ix.has_workloads {
            // No workloads loaded: stand in a workload with the selector's labels.
            workloads.push(Workload {
                namespace: gw.namespace().to_string(),
                name: gw.name().to_string(),
                kind: WorkloadKind::Pod,
                labels: spec.selector.clone().unwrap_or_default(),
            });
        }
        for w in workloads {
            let covered = ix.store.request_authentications().any(|(ra_res, ra)| {
                let in_scope =
                    ra_res.namespace() == ROOT_NAMESPACE || ra_res.namespace() == w.namespace;
                let sel = ra.selector.as_ref().map(|s| &s.match_labels);
                in_scope
                    && ra.target_ref.is_none()
                    && ra.target_refs.is_empty()
                    && sel.is_none_or(|s| selects(s, &w.labels))
            });
            if !covered {
                out.push(finding(
                    "IST0149",
                    r,
                    &path,
                    format!(
                        "The virtual service uses the JWT claim based routing (key: {key}) but found no \
                         request authentication for the gateway ({}) pod ({}). The request \
                         authentication must first be applied for the gateway pods to validate the JWT \
                         token and make the claims available for routing.",
                        full_name(gw),
                        w.name
                    ),
                ));
            }
        }
    }
}

/// One host of a mesh-bound VirtualService.
struct MeshHost<'a> {
    r: &'a Resource,
    /// Index in `spec.hosts`.
    index: usize,
    /// Namespaces it is exported to; `*` for all.
    scope: Vec<String>,
}

/// IST0109: VirtualServices bound to `mesh` that define the same host for the same
/// namespaces (their `exportTo` overlaps): the sidecar's choice is undefined.
fn mesh_host_conflicts(ix: &Index, out: &mut Vec<Diagnostic>) {
    let mut by_host: BTreeMap<String, Vec<MeshHost<'_>>> = BTreeMap::new();
    for (r, vs) in ix.store.virtual_services() {
        if !bound_to_mesh(vs) {
            continue;
        }
        let scope = super::export_scopes(&vs.export_to, r.namespace());
        for (i, h) in vs.hosts.iter().enumerate() {
            let fqdn = host::expand_short_name(h, r.namespace()).to_ascii_lowercase();
            let entry = MeshHost {
                r,
                index: i,
                scope: scope.clone(),
            };
            by_host.entry(fqdn).or_default().push(entry);
        }
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for (h, entries) in &by_host {
        for MeshHost { r, index: i, scope } in entries {
            let mut others: Vec<(&Resource, usize)> = entries
                .iter()
                .filter(|o| {
                    !std::ptr::eq(o.r, *r)
                        && o.scope
                            .iter()
                            .any(|a| a == "*" || scope.iter().any(|b| b == "*" || b == a))
                })
                .map(|o| (o.r, o.index))
                .collect();
            // As istioctl: a host exported to some namespaces also conflicts with the
            // hosts exported to all namespaces that overlap it (`*.d` and `*.c.d`).
            if scope.iter().any(|s| s != "*") {
                for (h2, entries2) in by_host.iter().filter(|(h2, _)| *h2 != h) {
                    if !host::matches(h, h2) {
                        continue;
                    }
                    others.extend(
                        entries2
                            .iter()
                            .filter(|o| !std::ptr::eq(o.r, *r) && o.scope.iter().any(|s| s == "*"))
                            .map(|o| (o.r, o.index)),
                    );
                }
            }
            if others.is_empty() {
                continue;
            }
            let mut names: Vec<String> = others.iter().map(|(o, _)| full_name(o)).collect();
            names.push(full_name(r));
            names.sort();
            names.dedup();
            for (vs, index) in std::iter::once((*r, *i)).chain(others.iter().copied()) {
                if !reported.insert(full_name(vs)) {
                    continue;
                }
                out.push(finding(
                    "IST0109",
                    vs,
                    &format!("spec.hosts[{index}]"),
                    format!(
                        "The VirtualServices {} associated with mesh gateway define the same host {h} which \
                         can lead to undefined behavior. This can be fixed by merging the conflicting \
                         VirtualServices into a single resource.",
                        names.join(",")
                    ),
                ));
            }
        }
    }
}
