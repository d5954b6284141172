//! ServiceEntry findings, as Istio's `serviceentry.Analyzer`: a ServiceEntry without
//! `addresses` (and none allocated in its status) with a TCP or unnamed-protocol
//! port, unless the mesh config turns on DNS capture with address auto-allocation
//! (IST0134). And as `serviceentry.ConflictingServiceEntryProtocolAnalyzer`:
//! ServiceEntries visible in one scope that give the same host and port different
//! protocols (IST0177, once per ServiceEntry).

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::Diagnostic;
use crate::resources::Resource;

use super::index::Index;
use super::{finding, MeshSettings};

pub(super) fn check(ix: &Index, mesh: &MeshSettings, out: &mut Vec<Diagnostic>) {
    conflicting_protocols(ix, out);
    if mesh.service_entry_addresses_allocated {
        return;
    }
    for (r, se) in ix.store.service_entries() {
        if !se.addresses.is_empty() || se.status_addresses > 0 {
            continue;
        }
        // One fixed text: istioctl prints it once per ServiceEntry.
        let tcp = se.ports.iter().position(|p| {
            p.protocol
                .as_deref()
                .is_none_or(|proto| proto.is_empty() || proto.eq_ignore_ascii_case("TCP"))
        });
        if let Some(i) = tcp {
            out.push(finding(
                "IST0134",
                r,
                &format!("spec.ports[{i}]"),
                "ServiceEntry addresses are required for this protocol.",
            ));
        }
    }
}

/// (export scope, host, port).
type ScopedHostPort<'a> = (String, &'a str, u32);

fn conflicting_protocols(ix: &Index, out: &mut Vec<Diagnostic>) {
    // (scope, host, port) -> (protocol, ServiceEntry), in load order.
    let mut index: BTreeMap<ScopedHostPort<'_>, Vec<(String, &Resource)>> = BTreeMap::new();
    for (r, se) in ix.store.service_entries() {
        let mut scopes: BTreeSet<String> = super::export_scopes(&se.export_to, r.namespace())
            .into_iter()
            .collect();
        if scopes.contains("*") {
            scopes = ["*".to_string()].into();
        }
        for scope in &scopes {
            for h in &se.hosts {
                for p in &se.ports {
                    let protocol = p.protocol.clone().unwrap_or_default().to_ascii_uppercase();
                    index
                        .entry((scope.clone(), h.as_str(), p.number))
                        .or_default()
                        .push((protocol, r));
                }
            }
        }
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for ((scope, host, port), entries) in &index {
        let mut entries = entries.clone();
        if scope != "*" {
            if let Some(all) = index.get(&("*".to_string(), *host, *port)) {
                entries.extend(all.iter().cloned());
            }
        }
        let protocols: BTreeSet<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = entries
            .iter()
            .map(|(_, r)| format!("{}/{}", r.namespace(), r.name()))
            .collect();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        let protocols = protocols.into_iter().collect::<Vec<_>>().join(", ");
        for (_, r) in &entries {
            if !reported.insert(r.display_ref()) {
                continue;
            }
            out.push(finding(
                "IST0177",
                r,
                "metadata.name",
                format!(
                    "Multiple ServiceEntries ({names}) define the same host {host:?} and port {port} with \
                     conflicting protocols ({protocols})."
                ),
            ));
        }
    }
}
