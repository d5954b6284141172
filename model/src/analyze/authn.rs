//! Istio's `authn.BlockedCIDRsAnalyzer`: RequestAuthentications exist but an istiod
//! Deployment (label `app: istiod`) does not set `BLOCKED_CIDRS_IN_JWKS_URIS`, so
//! JWKS URIs may be fetched from any network (IST0175).

use crate::diag::Diagnostic;

use super::finding;
use super::index::Index;

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    let names: Vec<String> = ix
        .store
        .request_authentications()
        .map(|(r, _)| format!("{}/{}", r.namespace(), r.name()))
        .collect();
    if names.is_empty() {
        return;
    }
    const SHOWN: usize = 5;
    let listed = if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{}, and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    };
    for (r, d) in ix.store.deployments() {
        if r.meta.labels.get("app").map(String::as_str) != Some("istiod") {
            continue;
        }
        let configured = d.template.spec.containers.iter().any(|c| {
            c.env.iter().any(|e| {
                e.name == "BLOCKED_CIDRS_IN_JWKS_URIS"
                    && e.value.as_deref().is_some_and(|v| !v.is_empty())
            })
        });
        if !configured {
            out.push(finding(
                "IST0175",
                r,
                "spec.template.spec.containers",
                format!(
                    "BLOCKED_CIDRS_IN_JWKS_URIS is not configured but {} RequestAuthentication resource(s) \
                     exist ({listed}). Consider configuring it to restrict JWKS URI fetches to trusted networks.",
                    names.len()
                ),
            ));
        }
    }
}
