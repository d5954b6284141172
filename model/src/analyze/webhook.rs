//! Webhook findings. As Istio's `webhook.Analyzer`, over Istio's sidecar injector
//! MutatingWebhookConfigurations (those with an `istio.io/rev` selector or label,
//! or a webhook named `*istio.io`): webhooks that would inject the same pod twice,
//! tried over the usual namespace and pod labels, and webhooks whose service is not
//! loaded (IST0139). As `externalcontrolplane.ExternalControlPlaneAnalyzer`, over
//! Istio's validation and injection webhooks: a client config with neither URL nor
//! service, or a URL that does not parse (IST0163), and a URL host that is an IP
//! address (IST0164).

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::Diagnostic;
use crate::resources::admission::{Webhook, WebhookConfiguration};
use crate::resources::core::LabelSelector;
use crate::resources::{Kind, Labels, Resource};

use super::finding;
use super::index::Index;

const REV_LABEL: &str = "istio.io/rev";

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    injector_overlaps(ix, out);
    external_control_plane(ix, out);
}

fn injector_overlaps(ix: &Index, out: &mut Vec<Diagnostic>) {
    // (configuration/webhook name, resource, webhook).
    let mut hooks: Vec<(String, &Resource, &Webhook)> = Vec::new();
    let mut revisions: BTreeSet<&str> = BTreeSet::new();
    for (r, wc) in ix.store.mutating_webhooks() {
        let revs = revisions_of(r, wc);
        let istio = wc.webhooks.iter().any(|w| w.name.ends_with("istio.io"));
        if revs.is_empty() && !istio {
            continue;
        }
        revisions.extend(revs);
        for w in &wc.webhooks {
            hooks.push((format!("{}/{}", r.name(), w.name), r, w));
        }
    }
    let permutations = |key: &str, values: [&str; 2]| -> Vec<Labels> {
        let base: Vec<Labels> = std::iter::once(Labels::default())
            .chain(
                values
                    .iter()
                    .map(|v| [(key.to_string(), v.to_string())].into()),
            )
            .collect();
        let mut all = base.clone();
        for rev in &revisions {
            for b in &base {
                let mut l = b.clone();
                l.insert(REV_LABEL.to_string(), rev.to_string());
                all.push(l);
            }
        }
        all
    };
    let namespace_labels = permutations("istio-injection", ["enabled", "disabled"]);
    let object_labels = permutations("sidecar.istio.io/inject", ["true", "false"]);
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    for nl in &namespace_labels {
        for ol in &object_labels {
            let matched: BTreeMap<&str, &Resource> = hooks
                .iter()
                .filter(|(_, _, w)| {
                    selector_matches(w.namespace_selector.as_ref(), nl)
                        && selector_matches(w.object_selector.as_ref(), ol)
                })
                .map(|(name, r, _)| (name.as_str(), *r))
                .collect();
            if matched.len() < 2 {
                continue;
            }
            for (name, r) in &matched {
                let others: Vec<&str> = matched.keys().filter(|n| *n != name).copied().collect();
                let message = format!(
                    "Webhook overlaps with others: [{}]. This may cause injection to occur twice.",
                    others.join(" ")
                );
                if reported.insert((name.to_string(), message.clone())) {
                    out.push(finding("IST0139", r, "webhooks", message));
                }
            }
        }
    }
    for (name, r, w) in &hooks {
        let Some(svc) = &w.client_config.service else {
            continue;
        };
        if ix
            .store
            .find(Kind::Service, &svc.namespace, &svc.name)
            .is_none()
        {
            let message = format!(
                "Injector refers to a control plane service that does not exist: {}/{}.",
                svc.namespace, svc.name
            );
            if reported.insert((name.clone(), message.clone())) {
                out.push(finding("IST0139", r, "webhooks", message));
            }
        }
    }
}

/// Revisions a configuration names: its `istio.io/rev` label and the values its
/// webhooks' selectors give that label.
fn revisions_of<'a>(r: &'a Resource, wc: &'a WebhookConfiguration) -> BTreeSet<&'a str> {
    let mut revs = BTreeSet::new();
    if let Some(rev) = r.meta.labels.get(REV_LABEL) {
        revs.insert(rev.as_str());
    }
    for w in &wc.webhooks {
        for sel in [&w.namespace_selector, &w.object_selector]
            .into_iter()
            .flatten()
        {
            if let Some(rev) = sel.match_labels.get(REV_LABEL) {
                revs.insert(rev.as_str());
            }
            for e in sel.match_expressions.iter().filter(|e| e.key == REV_LABEL) {
                revs.extend(e.values.iter().map(String::as_str));
            }
        }
    }
    revs
}

/// A webhook selector: absent matches everything.
fn selector_matches(selector: Option<&LabelSelector>, labels: &Labels) -> bool {
    selector.is_none_or(|s| s.matches(labels))
}

fn external_control_plane(ix: &Index, out: &mut Vec<Diagnostic>) {
    let validating = ix.store.validating_webhooks().filter(|(r, _)| {
        r.name() == "istiod-default-validator" || r.name().starts_with("istio-validator")
    });
    let mutating = ix
        .store
        .mutating_webhooks()
        .filter(|(r, _)| r.name().starts_with("istio-sidecar-injector"));
    for (r, wc) in validating.chain(mutating) {
        for (i, w) in wc.webhooks.iter().enumerate() {
            let path = format!("webhooks[{i}].clientConfig");
            match (&w.client_config.url, &w.client_config.service) {
                (Some(url), _) => match url_host(url) {
                    None => out.push(finding(
                        "IST0163",
                        r,
                        &path,
                        format!(
                            "The hostname ({url}) that was provided for the webhook ({}) to reach the ingress \
                             gateway on the external control plane cluster was provided in an invalid format. \
                             Traffic may not flow properly.",
                            w.name
                        ),
                    )),
                    Some(host) if host.parse::<std::net::IpAddr>().is_ok() => out.push(finding(
                        "IST0164",
                        r,
                        &path,
                        format!(
                            "The address ({url}) that was provided for the webhook ({}) to reach the ingress \
                             gateway on the external control plane cluster is an IP address. This is not \
                             recommended for a production environment.",
                            w.name
                        ),
                    )),
                    Some(_) => {}
                },
                (None, None) => out.push(finding(
                    "IST0163",
                    r,
                    &path,
                    format!(
                        "The hostname () that was provided for the webhook ({}) to reach the ingress gateway \
                         on the external control plane cluster is blank. Traffic may not flow properly.",
                        w.name
                    ),
                )),
                (None, Some(_)) => {}
            }
        }
    }
}

/// The host of a URL without port or IPv6 brackets (Go's `url.Hostname`); empty for
/// a URL without an authority; `None` when the URL cannot be parsed (control
/// characters, an unclosed `[`).
fn url_host(url: &str) -> Option<String> {
    if url.chars().any(|c| c.is_ascii_control()) {
        return None;
    }
    let Some((_, rest)) = url.split_once("://") else {
        return Some(String::new());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(inner) = host.strip_prefix('[') {
        let (ip, _) = inner.split_once(']')?;
        return Some(ip.to_string());
    }
    Some(host.split(':').next().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://test.com:15017/validate").as_deref(),
            Some("test.com")
        );
        assert_eq!(
            url_host("https://10.0.0.1/inject").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(url_host("https://[::1]:443/x").as_deref(), Some("::1"));
        assert_eq!(
            url_host("https://u@h.example").as_deref(),
            Some("h.example")
        );
        assert_eq!(url_host("no-scheme").as_deref(), Some(""));
        assert_eq!(url_host("https://[::1/x"), None);
        assert_eq!(url_host("https://a\u{7}b"), None);
    }
}
