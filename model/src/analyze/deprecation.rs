//! Deprecated fields, as Istio's `deprecation.FieldAnalyzer` (IST0002): a
//! VirtualService fault delay given as `percent` (replaced by `percentage`), and a
//! Sidecar `outboundTrafficPolicy.egressProxy` (ignored).

use crate::diag::Diagnostic;

use super::finding;
use super::index::Index;

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (r, vs) in ix.store.virtual_services() {
        // One fixed text: istioctl prints it once per VirtualService.
        let first = vs.http.iter().position(|h| {
            h.fault
                .as_ref()
                .and_then(|f| f.delay.as_ref())
                .and_then(|d| d.percent)
                .is_some_and(|p| p > 0)
        });
        if let Some(i) = first {
            out.push(finding(
                "IST0002",
                r,
                &format!("spec.http[{i}].fault.delay.percent"),
                "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
            ));
        }
    }
    for (r, sc) in ix.store.sidecars() {
        if sc
            .outbound_traffic_policy
            .as_ref()
            .is_some_and(|o| o.egress_proxy.is_some())
        {
            out.push(finding(
                "IST0002",
                r,
                "spec.outboundTrafficPolicy.egressProxy",
                "Deprecated: OutboundTrafficPolicy.EgressProxy ignored",
            ));
        }
    }
}
