//! The state of each certificate isthmus keeps issued, shaped like cert-manager's
//! `Certificate` status, as pure data: what the gateway's ACME manager tracks per
//! order ([`Progress`]), the YAML document it writes to `STATE/status/` at each
//! change ([`render`], one file per Secret, [`file_name`]), and the
//! `kubectl get certificate`-like table `isthmus certs` prints from those files
//! ([`rows`], [`table`]).
//!
//! The document is a cert-manager `Certificate` (`apiVersion: cert-manager.io/v1`):
//! `metadata` names the Certificate (for a Gateway's automatic certificate, the
//! Secret's name, as cert-manager's ingress-shim names the Certificates it makes,
//! and the annotation `isthmus.dev/gateway`), `spec` has `secretName`, `dnsNames`
//! and `issuerRef`, and `status` has cert-manager's fields: `conditions`
//! (`type: Ready`; `type: Issuing` while an order runs), `notBefore`, `notAfter`,
//! `renewalTime`, `lastFailureTime`, `failedIssuanceAttempts`, times in RFC 3339 UTC.
//! `Ready` is `True` while a valid certificate for the current names is stored (so
//! also during a renewal, or after a failed one), `False` otherwise; its `reason`
//! says what the manager does: `Issued` (up to date), `Ordering`, `Failed` (retried,
//! the message says when) or `Pending` (another isthmus on the same state directory
//! orders it, or nothing was decided yet).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AcmeOrder, IssuerKind};
use crate::der::format_utc;
use crate::diag::Diagnostic;
use crate::resources::Store;

/// What the ACME manager is doing about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A valid certificate for the order's names is stored and not due for renewal.
    Issued,
    /// An order is being placed.
    Ordering,
    /// The last order failed; it is retried.
    Failed,
    /// Nothing decided yet, or another isthmus is ordering it.
    Pending,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Issued => "Issued",
            Reason::Ordering => "Ordering",
            Reason::Failed => "Failed",
            Reason::Pending => "Pending",
        }
    }
}

/// The status of one order as the manager tracks it; times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// A valid certificate for the order's names serves.
    pub ready: bool,
    pub reason: Reason,
    pub message: String,
    /// When `ready` last changed (cert-manager's `lastTransitionTime`: a condition's
    /// status, not its reason).
    pub last_transition: i64,
    /// The stored certificate's validity and when it is renewed.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub renewal_time: Option<i64>,
    /// The last failed order, and how many failed in a row (reset by a success).
    pub last_failure: Option<i64>,
    pub failed_attempts: u32,
}

impl Progress {
    /// Nothing known yet: `Ready` False, `Pending`.
    pub fn new(now: i64) -> Progress {
        Progress {
            ready: false,
            reason: Reason::Pending,
            message: "waiting for the ACME manager".to_string(),
            last_transition: now,
            not_before: None,
            not_after: None,
            renewal_time: None,
            last_failure: None,
            failed_attempts: 0,
        }
    }

    /// Set the `Ready` condition; its transition time moves when `ready` changes.
    pub fn set(&mut self, ready: bool, reason: Reason, message: impl Into<String>, now: i64) {
        if ready != self.ready {
            self.last_transition = now;
        }
        self.ready = ready;
        self.reason = reason;
        self.message = message.into();
    }

    /// Record the stored certificate's validity (`None`: nothing stored).
    pub fn set_validity(&mut self, validity: Option<(i64, i64, i64)>) {
        (self.not_before, self.not_after, self.renewal_time) = match validity {
            Some((nb, na, renew)) => (Some(nb), Some(na), Some(renew)),
            None => (None, None, None),
        };
    }
}

/// Annotation on a status document of a Gateway's automatic certificate: the
/// Gateway (`ns/name`).
pub const ANN_GATEWAY: &str = "isthmus.dev/gateway";

/// Annotation on every status document (value `"true"`), so that a status file read
/// as configuration (a `--state-dir` inside the config directory that is not hidden)
/// is not taken for a Certificate to order.
pub const ANN_STATUS_FILE: &str = "isthmus.dev/status-file";

/// Whether `r` is a status document (see [`ANN_STATUS_FILE`]).
pub fn is_status_file(r: &crate::Resource) -> bool {
    r.meta.annotations.contains_key(ANN_STATUS_FILE)
}

/// The status document, as written and read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    pub api_version: String,
    pub kind: String,
    pub metadata: DocMeta,
    pub spec: DocSpec,
    #[serde(default)]
    pub status: CertificateStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocMeta {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocSpec {
    pub secret_name: String,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub issuer_ref: DocIssuerRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocIssuerRef {
    pub name: String,
    pub kind: String,
    pub group: String,
}

/// cert-manager's `CertificateStatus` (the fields isthmus fills).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_issuance_attempts: Option<u32>,
}

impl CertificateStatus {
    /// The `Ready` condition.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Whether `order` comes from a Gateway's `isthmus.dev/acme-issuer` annotation
/// rather than a cert-manager Certificate.
fn from_gateway(order: &AcmeOrder) -> bool {
    order.certificate.starts_with("Gateway ")
}

/// The (namespace, name) the status document gives `order`: the Certificate's, or
/// for a Gateway's automatic certificate the Secret's.
pub fn certificate_name(order: &AcmeOrder) -> (String, String) {
    if let Some((ns, name)) = order
        .certificate
        .strip_prefix("Certificate ")
        .and_then(|r| r.split_once('/'))
    {
        return (ns.to_string(), name.to_string());
    }
    (order.namespace.clone(), order.secret_name.clone())
}

/// The status file of `order` in `STATE/status/`: `<namespace>.<secretName>.yaml`
/// (one order per Secret).
pub fn file_name(order: &AcmeOrder) -> String {
    format!("{}.{}.yaml", order.namespace, order.secret_name)
}

/// `ClusterIssuer/NAME` or `Issuer/NAME`, as the table prints it.
fn issuer_column(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

fn kind_name(kind: IssuerKind) -> &'static str {
    match kind {
        IssuerKind::ClusterIssuer => "ClusterIssuer",
        IssuerKind::Issuer => "Issuer",
    }
}

/// The status document of `order` (YAML, with a comment saying what wrote it).
pub fn render(order: &AcmeOrder, p: &Progress) -> String {
    let (namespace, name) = certificate_name(order);
    let mut annotations = BTreeMap::from([(ANN_STATUS_FILE.to_string(), "true".to_string())]);
    if from_gateway(order) {
        let gw = order
            .certificate
            .strip_prefix("Gateway ")
            .unwrap_or(&order.certificate);
        annotations.insert(ANN_GATEWAY.to_string(), gw.to_string());
    }
    let mut conditions = vec![Condition {
        type_: "Ready".into(),
        status: if p.ready { "True" } else { "False" }.into(),
        reason: p.reason.as_str().into(),
        message: p.message.clone(),
        last_transition_time: Some(format_utc(p.last_transition)),
    }];
    if p.reason == Reason::Ordering {
        conditions.push(Condition {
            type_: "Issuing".into(),
            status: "True".into(),
            reason: "Ordering".into(),
            message: p.message.clone(),
            last_transition_time: Some(format_utc(p.last_transition)),
        });
    }
    let doc = StatusDoc {
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        metadata: DocMeta {
            name,
            namespace,
            annotations,
        },
        spec: DocSpec {
            secret_name: order.secret_name.clone(),
            dns_names: order.names.clone(),
            issuer_ref: DocIssuerRef {
                name: order.issuer.name.clone(),
                kind: kind_name(order.issuer.kind).into(),
                group: "cert-manager.io".into(),
            },
        },
        status: CertificateStatus {
            conditions,
            not_before: p.not_before.map(format_utc),
            not_after: p.not_after.map(format_utc),
            renewal_time: p.renewal_time.map(format_utc),
            last_failure_time: p.last_failure.map(format_utc),
            failed_issuance_attempts: (p.failed_attempts > 0).then_some(p.failed_attempts),
        },
    };
    let body = serde_yaml_ng::to_string(&doc).unwrap_or_default();
    format!(
        "# Written by isthmus: the status of the certificate it keeps issued for {} ({}),\n\
         # as cert-manager reports a Certificate's. Rewritten at each change; read by `isthmus certs`.\n{body}",
        order.secret_ref(),
        order.certificate,
    )
}

/// Read a status document back.
pub fn parse(text: &str) -> Result<StatusDoc, String> {
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

/// One line of `isthmus certs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// `True`, `False`, or `Unknown` when no status was written yet.
    pub ready: String,
    pub secret: String,
    pub issuer: String,
    pub not_after: String,
    pub renewal: String,
    pub message: String,
}

/// The rows for the orders of a configuration (`acme_orders`' orders and findings)
/// and the status documents found for them (`status(order)`: `None` when there is no
/// file, `Err` when it cannot be read). Certificates that are not ordered follow,
/// `Ready` False with their finding as the message.
pub fn rows(
    store: &Store,
    orders: &[AcmeOrder],
    diags: &[Diagnostic],
    status: impl Fn(&AcmeOrder) -> Option<Result<StatusDoc, String>>,
) -> Vec<Row> {
    let mut out = Vec::new();
    for o in orders {
        let (namespace, name) = certificate_name(o);
        let mut row = Row {
            namespace,
            name,
            ready: "Unknown".into(),
            secret: o.secret_name.clone(),
            issuer: issuer_column(kind_name(o.issuer.kind), &o.issuer.name),
            not_after: String::new(),
            renewal: String::new(),
            message: String::new(),
        };
        match status(o) {
            None => {
                row.message =
                    "no status yet: `isthmus up` has not handled it with this state directory"
                        .into();
            }
            Some(Err(e)) => row.message = format!("status file unreadable: {e}"),
            Some(Ok(doc)) => {
                let s = &doc.status;
                if let Some(c) = s.ready() {
                    row.ready = c.status.clone();
                    row.message = if c.reason.is_empty() {
                        c.message.clone()
                    } else {
                        format!("{}: {}", c.reason, c.message)
                    };
                }
                row.not_after = s.not_after.clone().unwrap_or_default();
                row.renewal = s.renewal_time.clone().unwrap_or_default();
                if doc.spec.dns_names != o.names {
                    row.message.push_str(&format!(
                        " (status of an earlier configuration, for {}; `isthmus up` updates it)",
                        doc.spec.dns_names.join(", ")
                    ));
                }
            }
        }
        out.push(row);
    }
    for (r, c) in store.certificates() {
        if is_status_file(r) {
            continue;
        }
        let me = r.display_ref();
        if orders.iter().any(|o| o.certificate == me) {
            continue;
        }
        let why = diags
            .iter()
            .find(|d| d.resource.as_deref() == Some(me.as_str()))
            .map_or_else(
                || "not ordered by isthmus".to_string(),
                |d| format!("NotOrdered: [{}] {}", d.code, d.message),
            );
        let kind = c.issuer_ref.kind.as_deref().unwrap_or("Issuer");
        out.push(Row {
            namespace: r.namespace().to_string(),
            name: r.name().to_string(),
            ready: "False".into(),
            secret: c.secret_name.clone(),
            issuer: issuer_column(kind, &c.issuer_ref.name),
            not_after: String::new(),
            renewal: String::new(),
            message: why,
        });
    }
    out
}

/// The rows as `kubectl get` prints them: a header, columns padded to the widest
/// cell and three spaces apart, the message last and unpadded.
pub fn table(rows: &[Row]) -> String {
    const HEAD: [&str; 8] = [
        "NAMESPACE",
        "NAME",
        "READY",
        "SECRET",
        "ISSUER",
        "NOT-AFTER",
        "RENEWAL",
        "MESSAGE",
    ];
    let cells: Vec<[&str; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.as_str(),
                &r.name,
                &r.ready,
                &r.secret,
                &r.issuer,
                &r.not_after,
                &r.renewal,
                &r.message,
            ]
        })
        .collect();
    let mut width = HEAD.map(str::len);
    for c in &cells {
        for (w, v) in width.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(HEAD).chain(cells) {
        let mut text = String::new();
        for (k, v) in line.iter().enumerate() {
            if k + 1 == line.len() {
                text.push_str(v);
            } else {
                text.push_str(v);
                let pad = width[k] - v.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::acme_orders;
    use crate::load::load_str;

    const YAML: &str = r#"apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: pebble}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: pebble-account}
    solvers: [{http01: {ingress: {class: istio}}}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: site, namespace: istio-system}
spec:
  secretName: site-tls
  issuerRef: {name: pebble, kind: ClusterIssuer}
  dnsNames: [site.test]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: lost, namespace: istio-system}
spec:
  secretName: lost-tls
  issuerRef: {name: nope, kind: ClusterIssuer}
  dnsNames: [lost.test]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  annotations: {isthmus.dev/acme-issuer: pebble}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.test, b.test]
    tls: {mode: SIMPLE}
"#;

    fn setup() -> (Store, Vec<AcmeOrder>, Vec<Diagnostic>) {
        let store = Store::new(load_str("c.yaml", YAML).resources);
        let (orders, diags) = acme_orders(&store);
        assert_eq!(orders.len(), 2, "{orders:#?} {diags:#?}");
        (store, orders, diags)
    }

    #[test]
    fn a_status_file_read_as_configuration_is_not_a_certificate_to_order() {
        let (_, orders, _) = setup();
        let doc = render(&orders[0], &Progress::new(0));
        let with_status = Store::new(load_str("c.yaml", &format!("{YAML}---\n{doc}")).resources);
        assert_eq!(with_status.certificates().count(), 3);
        let (again, diags) = acme_orders(&with_status);
        assert_eq!(again, orders);
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(rows(&with_status, &again, &diags, |_| None).len(), 3);
    }

    #[test]
    fn an_issued_certificate_renders_as_a_ready_cert_manager_certificate() {
        let (_, orders, _) = setup();
        let mut p = Progress::new(100);
        p.set(
            false,
            Reason::Ordering,
            "ordering from ClusterIssuer pebble",
            100,
        );
        let ordering = render(&orders[0], &p);
        let doc = parse(&ordering).expect("parse");
        assert_eq!(doc.status.conditions.len(), 2, "{ordering}");
        assert_eq!(doc.status.conditions[1].type_, "Issuing");
        p.set(true, Reason::Issued, "up to date (serial 1f)", 200);
        p.set_validity(Some((200, 1_709_210_096, 1_700_000_000)));
        let text = render(&orders[0], &p);
        assert!(
            text.starts_with("# Written by isthmus: the status of the certificate it keeps issued for Secret istio-system/site-tls (Certificate istio-system/site),"),
            "{text}"
        );
        for line in [
            "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: site\n  namespace: istio-system\n",
            "  secretName: site-tls\n  dnsNames:\n  - site.test\n  issuerRef:\n    name: pebble\n    kind: ClusterIssuer\n    group: cert-manager.io\n",
            "  conditions:\n  - type: Ready\n    status: 'True'\n    reason: Issued\n    message: up to date (serial 1f)\n    lastTransitionTime: 1970-01-01T00:03:20Z\n",
            "  notAfter: 2024-02-29T12:34:56Z\n",
            "  renewalTime: 2023-11-14T22:13:20Z\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        assert!(!text.contains("lastFailureTime") && !text.contains("failedIssuanceAttempts"));
        let doc = parse(&text).expect("parse");
        let ready = doc.status.ready().expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Issued")
        );
        assert_eq!(doc.status.conditions.len(), 1);

        // A failure after that: still Ready (the stored one serves), counted.
        p.last_failure = Some(300);
        p.failed_attempts = 2;
        p.set(
            true,
            Reason::Failed,
            "connection refused; retry at 1970-01-01T00:05:04Z",
            300,
        );
        // Still Ready: the transition time stays.
        assert_eq!(p.last_transition, 200);
        let doc = parse(&render(&orders[0], &p)).expect("parse");
        assert_eq!(
            doc.status.last_failure_time.as_deref(),
            Some("1970-01-01T00:05:00Z")
        );
        assert_eq!(doc.status.failed_issuance_attempts, Some(2));
    }

    #[test]
    fn a_gateway_certificate_is_named_after_its_secret() {
        let (_, orders, _) = setup();
        let o = &orders[1];
        assert_eq!(
            certificate_name(o),
            (
                "istio-system".to_string(),
                "isthmus-acme-default-gw-0".to_string()
            )
        );
        assert_eq!(file_name(o), "istio-system.isthmus-acme-default-gw-0.yaml");
        let doc = parse(&render(o, &Progress::new(0))).expect("parse");
        assert_eq!(
            doc.metadata
                .annotations
                .get(ANN_GATEWAY)
                .map(String::as_str),
            Some("default/gw")
        );
        assert_eq!(doc.spec.dns_names, ["a.test", "b.test"]);
        let ready = doc.status.ready().expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Pending")
        );
    }

    #[test]
    fn the_table_shows_status_files_and_certificates_that_are_not_ordered() {
        let (store, orders, diags) = setup();
        let mut p = Progress::new(0);
        p.set(true, Reason::Issued, "up to date", 10);
        p.set_validity(Some((10, 1_709_210_096, 1_700_000_000)));
        let issued = render(&orders[0], &p);
        let all = rows(&store, &orders, &diags, |o| {
            (o.secret_name == "site-tls").then(|| parse(&issued))
        });
        let text = table(&all);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAMESPACE      NAME                        READY     SECRET                      ISSUER                 NOT-AFTER              RENEWAL                MESSAGE",
                "istio-system   site                        True      site-tls                    ClusterIssuer/pebble   2024-02-29T12:34:56Z   2023-11-14T22:13:20Z   Issued: up to date",
                "istio-system   isthmus-acme-default-gw-0   Unknown   isthmus-acme-default-gw-0   ClusterIssuer/pebble                                                 no status yet: `isthmus up` has not handled it with this state directory",
                "istio-system   lost                        False     lost-tls                    ClusterIssuer/nope                                                   NotOrdered: [ISM0301] no ClusterIssuer nope; Secret istio-system/lost-tls is not issued",
            ],
            "{text}"
        );

        // A status written for other names says so.
        let mut stale = parse(&issued).expect("parse");
        stale.spec.dns_names = vec!["old.test".into()];
        let one = rows(&store, &orders[..1], &[], |_| Some(Ok(stale.clone())));
        assert!(
            one[0].message.ends_with(
                "(status of an earlier configuration, for old.test; `isthmus up` updates it)"
            ),
            "{}",
            one[0].message
        );
    }
}
