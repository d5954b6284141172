//! Compilation of a [`Store`] into the [`Snapshot`] of one sidecar (a
//! [`MeshWorkload`]), with Istio's sidecar semantics
//! (`pilot/pkg/networking/core/route/route.go` `BuildSidecarVirtualHostWrapper`,
//! `httproute.go` `generateVirtualHostDomains`). It shares the route, cluster and
//! endpoint compilers with the gateway compile ([`super`]).
//!
//! - **Inbound** ([`Snapshot::inbound`]): one [`InboundListener`] per distinct port of
//!   the WorkloadEntry, with its mode and deciding policy from
//!   [`crate::mesh::effective_mtls`], and in explicit-port mode its allocated bind.
//! - **Outbound** ([`Snapshot::listeners`]): one HTTP [`Listener`] per port number of
//!   the services visible to the workload's namespace (ServiceEntries and Services,
//!   with `exportTo`). Ports declared with a non-HTTP protocol (`TCP`, `TLS`,
//!   `HTTPS`, ...: SE `protocol`, Service `appProtocol` or port-name prefix) are not
//!   served yet (Info); undeclared ones are served as HTTP (Istio sniffs them).
//! - **VirtualServices** bound to the mesh (`gateways` empty or naming `mesh`; one
//!   with Gateways only does not apply to sidecars), visible to the namespace, in
//!   the gateway compile's binding order. A VS's hosts are split as Istio does: hosts
//!   naming a service (a wildcard host: every service it overlaps) and other hosts.
//!   On each port of its services, one virtual host per service with the VS's routes
//!   (built for that port: `match.port`, `match.gateways` naming `mesh`,
//!   `sourceLabels`/`sourceNamespace` against this workload), plus one per other host;
//!   a VS naming no service gets port 80 only. Sidecars do not merge VirtualServices:
//!   the first VS for a service on a port keeps it, later ones are reported (Info).
//! - **Default routes**: a service no VS claims on a port gets one virtual host
//!   routing everything to `outbound|PORT||HOST`.
//! - **Domains** of a service's virtual host: the host and `host:PORT`; for a
//!   cluster-local host `NAME.NS.svc.cluster.local` (a Service, or a ServiceEntry
//!   named so) also `NAME.NS.svc` and `NAME.NS`, and `NAME` when the service is in the
//!   workload's own namespace (Istio leaves the bare name out across namespaces,
//!   where it would mean the workload's own namespace), each with `:PORT`; a
//!   Service's cluster IP too. A domain claimed by two virtual hosts stays with the
//!   first ([`Router::new`]).
//! - **`Sidecar` resource** (istio-api.md 1.5, [`egress`]): the one applying to the
//!   workload (selector match in its namespace, else its namespace's, else the root
//!   namespace's) keeps only the services whose host and namespace (of any resource
//!   declaring the host) match one of its egress `hosts`; without one, every visible
//!   service is configured. A VirtualService's hosts naming trimmed services are
//!   dropped, its other hosts are kept when an egress host matches them in the
//!   VirtualService's namespace; a VirtualService left with no host contributes
//!   nothing (`~/*`: no outbound listener at all). Default routes only for kept
//!   services. Egress `port`, `bind`, `captureMode`, `ingress`,
//!   `inboundConnectionPool`, `outboundTrafficPolicy`: not applied (Info).

mod egress;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use egress::SidecarScope;

use super::{diag, BoundVs, Compiler, GatewayWorkload, CODE_NOT_APPLIED, MESH_GATEWAY};
use crate::diag::{Diagnostic, Level};
use crate::host;
use crate::mesh::{effective_mtls, mesh_workloads_checked, MeshOptions, MeshWorkload};
use crate::resources::{Resource, Store};
use crate::snapshot::{
    InboundListener, Listener, ListenerProtocol, Route, RouteAction, RouteMatch, Router, Snapshot,
    VirtualHost, WeightedClusters,
};

/// Compile the snapshot of one sidecar. Never fails: what cannot be compiled is left
/// out and reported in the findings.
pub fn compile_sidecar(
    store: &Store,
    workload: &MeshWorkload,
    opts: &MeshOptions,
) -> (Snapshot, Vec<Diagnostic>) {
    let proxy = GatewayWorkload {
        namespace: workload.namespace.clone(),
        labels: workload.labels.clone(),
    };
    let mut c = Compiler::new(store, &proxy, opts);
    let me = format!("WorkloadEntry {}", workload.key());
    let (_, mesh_diags) = mesh_workloads_checked(store, opts);
    c.diags.extend(
        mesh_diags
            .into_iter()
            .filter(|d| d.resource.as_deref() == Some(me.as_str())),
    );
    let (scope, scope_diags) = SidecarScope::select(store, &workload.namespace, &workload.labels);
    c.diags.extend(scope_diags);
    let inbound = inbound(store, workload);
    let vss = c.bound_virtual_services(true);
    let listeners = c.outbound_listeners(&vss, scope.as_ref());
    c.finish(Snapshot {
        version: 0,
        listeners,
        clusters: Vec::new(),
        inbound,
    })
}

/// One inbound listener per distinct workload port.
fn inbound(store: &Store, w: &MeshWorkload) -> Vec<InboundListener> {
    w.app_ports()
        .into_iter()
        .map(|port| {
            let (mtls, policy) = effective_mtls(store, &w.namespace, &w.labels, port);
            InboundListener {
                app_port: port,
                app_address: w.address.clone(),
                bind: w.inbound_bind(port).cloned(),
                mtls,
                policy,
            }
        })
        .collect()
}

/// A service as the outbound side sees it.
struct OutService<'s> {
    host: String,
    /// What findings about it name (its first ServiceEntry, else the Service).
    resource: &'s Resource,
    /// Ports served as HTTP.
    ports: Vec<u16>,
    /// Domains besides the host (short names, cluster IP), without ports.
    aliases: Vec<String>,
}

impl OutService<'_> {
    /// The virtual-host domains on `port`: every name, bare and with `:port`.
    fn domains(&self, port: u16) -> Vec<String> {
        std::iter::once(&self.host)
            .chain(&self.aliases)
            .flat_map(|n| [n.clone(), format!("{n}:{port}")])
            .collect()
    }
}

impl<'s> Compiler<'s> {
    /// The services of the registry the Sidecar resource keeps, with their HTTP ports
    /// (others reported), and the hosts of those it trims.
    fn out_services(&mut self, scope: Option<&SidecarScope>) -> (Vec<OutService<'s>>, Vec<String>) {
        let proxy_ns = self.proxy.namespace.clone();
        let mut out = Vec::new();
        let mut trimmed = Vec::new();
        let mut skipped: Vec<Diagnostic> = Vec::new();
        for s in self.registry.sorted() {
            if let Some(scope) = scope {
                let namespaces: Vec<&str> = s
                    .entries
                    .iter()
                    .map(|(r, _)| r.namespace())
                    .chain(s.kube.iter().map(|(r, _)| r.namespace()))
                    .chain([s.namespace])
                    .collect();
                if !scope.admits(&namespaces, &s.host) {
                    trimmed.push(s.host.clone());
                    continue;
                }
            }
            let r = s.resource();
            let mut ports = Vec::new();
            for n in s.port_numbers() {
                let Ok(p) = u16::try_from(n) else { continue };
                if p == 0 {
                    continue;
                }
                match s.non_http_protocol(n) {
                    None => ports.push(p),
                    Some(proto) => skipped.push(diag(
                        Level::Info,
                        CODE_NOT_APPLIED,
                        r,
                        "spec.ports",
                        format!(
                            "port {p} of {} is {proto}: sidecars serve HTTP only yet, so it gets no outbound listener",
                            s.host
                        ),
                    )),
                }
            }
            let mut aliases = short_names(&s.host, &proxy_ns);
            if let Some((_, svc)) = s.kube {
                let ip = svc.cluster_ip.as_deref().unwrap_or("");
                if !ip.is_empty() && !ip.eq_ignore_ascii_case("none") {
                    aliases.push(ip.to_string());
                }
            }
            out.push(OutService {
                host: s.host.clone(),
                resource: r,
                ports,
                aliases,
            });
        }
        self.diags.extend(skipped);
        (out, trimmed)
    }

    /// The outbound listeners (module header).
    fn outbound_listeners(
        &mut self,
        vss: &[BoundVs<'s>],
        scope: Option<&SidecarScope>,
    ) -> Vec<Listener> {
        let (services, trimmed) = self.out_services(scope);
        let by_host: HashMap<&str, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.host.as_str(), i))
            .collect();
        // Per VS: the services its hosts name, and its other hosts.
        let split: Vec<(Vec<usize>, Vec<String>)> = vss
            .iter()
            .map(|vs| {
                let mut named: Vec<usize> = Vec::new();
                let mut plain: Vec<String> = Vec::new();
                for h in &vs.hosts {
                    let found: Vec<usize> = if host::is_wildcard(h) {
                        services
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| host::matches(&s.host, h))
                            .map(|(i, _)| i)
                            .collect()
                    } else {
                        by_host.get(h.as_str()).copied().into_iter().collect()
                    };
                    let names_trimmed = || {
                        trimmed.iter().any(|t| {
                            if host::is_wildcard(h) {
                                host::matches(t, h)
                            } else {
                                t == h
                            }
                        })
                    };
                    let admitted =
                        || scope.is_none_or(|sc| sc.admits(&[vs.resource.namespace()], h));
                    if found.is_empty() && !plain.contains(h) && !names_trimmed() && admitted() {
                        plain.push(h.clone());
                    }
                    for i in found {
                        if !named.contains(&i) {
                            named.push(i);
                        }
                    }
                }
                (named, plain)
            })
            .collect();
        let ports: BTreeSet<u16> = services
            .iter()
            .flat_map(|s| s.ports.iter().copied())
            .collect();
        for (vs, (named, plain)) in vss.iter().zip(&split) {
            if named.is_empty() && !plain.is_empty() && !ports.contains(&80) {
                self.diags.push(diag(
                    Level::Info,
                    CODE_NOT_APPLIED,
                    vs.resource,
                    "spec.hosts",
                    format!(
                        "hosts {plain:?} name no service: sidecars serve them on port 80 only (as Istio), and no service has port 80"
                    ),
                ));
            }
        }
        let mut listeners = Vec::new();
        for port in ports {
            let mut vhosts: Vec<VirtualHost> = Vec::new();
            // Service index -> the VS that claimed it on this port.
            let mut claimed: HashMap<usize, String> = HashMap::new();
            for (vs, (named, plain)) in vss.iter().zip(&split) {
                let on_port: Vec<usize> = named
                    .iter()
                    .copied()
                    .filter(|&i| services[i].ports.contains(&port))
                    .collect();
                let applies = if named.is_empty() && plain.is_empty() {
                    // No host left (all trimmed by the Sidecar resource).
                    false
                } else if named.is_empty() {
                    port == 80
                } else {
                    !on_port.is_empty()
                };
                if !applies {
                    continue;
                }
                let mut routes = self.vs_routes(vs, port, MESH_GATEWAY);
                routes.sort_by_key(|r| r.matcher.is_catch_all());
                let this = vs.resource.display_ref();
                for i in on_port {
                    let s = &services[i];
                    if let Some(first) = claimed.get(&i) {
                        self.diags.push(diag(
                            Level::Info,
                            CODE_NOT_APPLIED,
                            vs.resource,
                            "spec.hosts",
                            format!(
                                "{} port {port} is already routed by {first}: sidecars use the first VirtualService for a host (they do not merge them as gateways do); this one is not applied there",
                                s.host
                            ),
                        ));
                        continue;
                    }
                    claimed.insert(i, this.clone());
                    vhosts.push(VirtualHost {
                        name: format!("{}:{port}", s.host),
                        domains: s.domains(port),
                        routes: routes.clone(),
                        https_redirect: false,
                    });
                }
                for h in plain {
                    vhosts.push(VirtualHost {
                        name: format!("{h}:{port}"),
                        domains: vec![h.clone(), format!("{h}:{port}")],
                        routes: routes.clone(),
                        https_redirect: false,
                    });
                }
            }
            for (i, s) in services.iter().enumerate() {
                if !s.ports.contains(&port) || claimed.contains_key(&i) {
                    continue;
                }
                let route = self.default_route(s, port);
                vhosts.push(VirtualHost {
                    name: format!("{}:{port}", s.host),
                    domains: s.domains(port),
                    routes: vec![route],
                    https_redirect: false,
                });
            }
            listeners.push(Listener {
                port,
                protocol: ListenerProtocol::Http,
                router: Router::new(vhosts),
            });
        }
        listeners
    }

    /// Everything to `outbound|PORT||HOST` (Istio's default route for a service
    /// without a VirtualService).
    fn default_route(&mut self, s: &OutService<'s>, port: u16) -> Route {
        let id = self.cluster(s.resource, "spec.ports", s.host.clone(), port, None);
        Route {
            source: Arc::from(format!("{} default route", s.resource.display_ref())),
            name: Some(Arc::from("default")),
            matcher: RouteMatch::default(),
            action: RouteAction::Forward(WeightedClusters {
                targets: vec![(id, 1)],
                total: 1,
            }),
        }
    }
}

/// The short names of a cluster-local host seen from `proxy_ns` (Istio
/// `generateAltVirtualHosts`): `NAME` (same namespace only), `NAME.NS.svc`, `NAME.NS`.
fn short_names(fqdn: &str, proxy_ns: &str) -> Vec<String> {
    let Some(rest) = fqdn
        .strip_suffix(host::CLUSTER_DOMAIN)
        .and_then(|r| r.strip_suffix(".svc."))
    else {
        return Vec::new();
    };
    let Some((name, ns)) = rest.split_once('.') else {
        return Vec::new();
    };
    if name.is_empty() || ns.is_empty() || ns.contains('.') {
        return Vec::new();
    }
    let mut out = Vec::new();
    if ns == proxy_ns {
        out.push(name.to_string());
    }
    out.push(format!("{name}.{ns}.svc"));
    out.push(format!("{name}.{ns}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_of_cluster_local_hosts() {
        assert_eq!(
            short_names("todolist.default.svc.cluster.local", "default"),
            ["todolist", "todolist.default.svc", "todolist.default"]
        );
        assert_eq!(
            short_names("todolist.default.svc.cluster.local", "other"),
            ["todolist.default.svc", "todolist.default"]
        );
        assert!(short_names("api.example.com", "default").is_empty());
        assert!(short_names("a.b.c.svc.cluster.local", "default").is_empty());
    }
}
