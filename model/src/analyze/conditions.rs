//! Status conditions, as Istio's `conditions.ConditionAnalyzer`: a negative
//! condition written in a resource's status (IST0171): `istio.io/WaypointBound`
//! False on Services, ServiceEntries and WorkloadEntries; `ZtunnelAccepted` or
//! `WaypointAccepted` False (or `WaypointAccepted` with reason `PartiallyInvalid`)
//! on AuthorizationPolicies; `Accepted`, `Programmed` or `ResolvedRefs` False on
//! Gateway API Gateways, HTTPRoutes and GRPCRoutes.

use std::collections::BTreeSet;

use crate::diag::Diagnostic;
use crate::resources::{Kind, StatusCondition};

use super::finding;
use super::index::Index;

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for r in &ix.store.resources {
        let negative: &[&str] = match r.kind {
            Kind::Service | Kind::ServiceEntry | Kind::WorkloadEntry => &["istio.io/WaypointBound"],
            Kind::AuthorizationPolicy => &["ZtunnelAccepted", "WaypointAccepted"],
            Kind::KubeGateway | Kind::HttpRoute | Kind::GrpcRoute => {
                &["Accepted", "Programmed", "ResolvedRefs"]
            }
            _ => continue,
        };
        let mut seen = BTreeSet::new();
        for c in &r.conditions {
            let false_ = negative.contains(&c.type_.as_str()) && c.status == "False";
            let partially_invalid = r.kind == Kind::AuthorizationPolicy
                && c.type_ == "WaypointAccepted"
                && c.reason == "PartiallyInvalid";
            // Istio reports a PartiallyInvalid False condition twice, in the same words
            // (printed once).
            if (false_ || partially_invalid) && seen.insert(text(c)) {
                out.push(finding("IST0171", r, "status", text(c)));
            }
        }
    }
}

fn text(c: &StatusCondition) -> String {
    format!(
        "A condition with a negative status is present: type={}, reason={}, message={}.",
        c.type_, c.reason, c.message
    )
}
