//! cert-manager `Certificate`s that isthmus fulfils itself over ACME, as pure data:
//! which Certificates name an ACME `Issuer`/`ClusterIssuer` isthmus can answer for and
//! what to order for them ([`acme_orders`]), and whether a certificate already issued
//! still serves or is due for a new order ([`decide`], [`renewal_at`]). The gateway's
//! ACME manager does the I/O (account, order, storage); nothing here reads a clock:
//! times are Unix seconds handed in.
//!
//! # Challenge type
//!
//! The gateway answers HTTP-01 (RFC 8555 §8.3, on every plain-HTTP listener) and
//! TLS-ALPN-01 (RFC 8737, on every HTTPS listener). cert-manager has no TLS-ALPN-01
//! solver, so the choice ([`AcmeOrder::challenge`]) is made like this:
//!
//! 1. The issuer's annotation `isthmus.dev/acme-challenge: tls-alpn-01` (or
//!    `http-01`) forces the type, whatever its solvers say. Any other value is an
//!    Error (ISM0304, at the annotation's line) and the issuer's Certificates are not
//!    ordered (ISM0303 each): guessing could fail validation again and again against a
//!    rate-limited CA.
//! 2. Otherwise HTTP-01, when the issuer has an `http01` solver for every name
//!    (cert-manager's solver selection); a name without one is ISM0303.
//!
//! When the CA does not offer the chosen type for an authorization, the gateway uses
//! the other one ([`AcmeOrder::fallback`]; it answers both for any DNS name) and logs
//! it at INFO. Wildcard names need DNS-01: never ordered.
//!
//! # Gateways without a Certificate, and status
//!
//! A `Gateway` annotated `isthmus.dev/acme-issuer: NAME` (a ClusterIssuer;
//! `Issuer/NAME` for an Issuer in the Gateway's namespace) gets its certificates
//! without any cert-manager `Certificate`: [`acme_orders`] also returns one order per
//! Secret its HTTPS servers are served from ([`auto`], which documents the rules and
//! the generated Secret names). [`status`] is the cert-manager-shaped status the
//! gateway writes per order and `isthmus certs` prints.

use std::time::Duration;

use crate::diag::{Diagnostic, Level};
use crate::resources::certmanager::{AcmeIssuer, AcmeSolver, CertificateSpec, IssuerSpec};
use crate::resources::{Kind, Origin, Resource, Store};
use crate::validate::parse_duration;

pub mod auto;
pub mod status;

/// Error: a Certificate's `issuerRef` names no Issuer / ClusterIssuer.
pub const CODE_ISSUER_NOT_FOUND: &str = "ISM0301";
/// Info: the issuer is not an ACME issuer (CA, selfSigned, Vault...): isthmus does not
/// issue for it (yet); its Secret must come from elsewhere.
pub const CODE_NOT_ACME: &str = "ISM0302";
/// Error: an ACME Certificate isthmus cannot order (no HTTP-01 solver for a name, a
/// wildcard name, no DNS name at all, an issuer with an invalid ISM0304 annotation).
pub const CODE_CANNOT_ORDER: &str = "ISM0303";
/// Error: an Issuer/ClusterIssuer's `isthmus.dev/acme-challenge` annotation is neither
/// `http-01` nor `tls-alpn-01`.
pub const CODE_BAD_CHALLENGE_ANNOTATION: &str = "ISM0304";
/// Info: a Certificate's `duration` is not requested from the ACME server (its
/// issuer sets `enableDurationFeature`, which isthmus cannot send).
pub const CODE_DURATION_NOT_REQUESTED: &str = "ISM0306";

/// Annotation on an ACME Issuer/ClusterIssuer forcing the challenge type
/// (`http-01` or `tls-alpn-01`); see the module documentation.
pub const ANN_ACME_CHALLENGE: &str = "isthmus.dev/acme-challenge";

/// An ACME challenge type the gateway answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// RFC 8555 §8.3: a key authorization under `/.well-known/acme-challenge/` on a
    /// plain-HTTP listener (port 80).
    Http01,
    /// RFC 8737: a self-signed certificate with the `acmeIdentifier` extension in a
    /// handshake negotiating `acme-tls/1` on an HTTPS listener (port 443).
    TlsAlpn01,
}

impl ChallengeKind {
    /// The ACME name: `http-01`, `tls-alpn-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }

    /// An annotation value (ASCII case and surrounding blanks ignored).
    pub fn parse(value: &str) -> Option<ChallengeKind> {
        let v = value.trim();
        [ChallengeKind::Http01, ChallengeKind::TlsAlpn01]
            .into_iter()
            .find(|k| v.eq_ignore_ascii_case(k.as_str()))
    }

    /// The other type the gateway answers.
    pub fn other(self) -> ChallengeKind {
        match self {
            ChallengeKind::Http01 => ChallengeKind::TlsAlpn01,
            ChallengeKind::TlsAlpn01 => ChallengeKind::Http01,
        }
    }
}

impl std::fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the issuer is namespaced (`Issuer`, in the Certificate's namespace) or
/// cluster-scoped (`ClusterIssuer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssuerKind {
    Issuer,
    ClusterIssuer,
}

/// A resolved `issuerRef`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerId {
    pub kind: IssuerKind,
    /// Empty for a ClusterIssuer.
    pub namespace: String,
    pub name: String,
}

impl IssuerId {
    /// `ClusterIssuer letsencrypt-prod` or `Issuer ns/name`, as findings print it.
    pub fn display(&self) -> String {
        match self.kind {
            IssuerKind::ClusterIssuer => format!("ClusterIssuer {}", self.name),
            IssuerKind::Issuer => format!("Issuer {}/{}", self.namespace, self.name),
        }
    }

    /// A file-name-safe key: `ClusterIssuer.letsencrypt-prod`, `Issuer.ns.name`
    /// (Kubernetes names hold no `/`).
    pub fn file_key(&self) -> String {
        match self.kind {
            IssuerKind::ClusterIssuer => format!("ClusterIssuer.{}", self.name),
            IssuerKind::Issuer => format!("Issuer.{}.{}", self.namespace, self.name),
        }
    }
}

/// One Certificate to fulfil over ACME.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeOrder {
    /// `Certificate istio-system/todolist-cert`.
    pub certificate: String,
    pub origin: Origin,
    /// The Certificate's namespace: the Secret is written there.
    pub namespace: String,
    pub secret_name: String,
    pub common_name: Option<String>,
    /// The identifiers to order: `commonName` then `dnsNames`, lower-case, no repeats.
    pub names: Vec<String>,
    pub issuer: IssuerId,
    pub acme: AcmeIssuer,
    /// `spec.renewBefore`, when set and valid.
    pub renew_before: Option<Duration>,
    /// The challenge type answered (the rule is in the module documentation).
    pub challenge: ChallengeKind,
}

impl AcmeOrder {
    /// `Secret ns/name`, the Secret this order writes.
    pub fn secret_ref(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.secret_name)
    }

    /// The type answered for an authorization whose challenges the CA offers are
    /// `offered`: [`AcmeOrder::challenge`] when offered, else the other type the
    /// gateway answers when offered (logged at INFO by the gateway), else `None`.
    pub fn fallback(&self, offered: &[ChallengeKind]) -> Option<ChallengeKind> {
        [self.challenge, self.challenge.other()]
            .into_iter()
            .find(|k| offered.contains(k))
    }
}

fn finding(level: Level, code: &'static str, r: &Resource, field: &str, msg: String) -> Diagnostic {
    Diagnostic::new(level, code, msg)
        .at(r.origin_at(field))
        .on(r)
        .field(field)
}

/// The Certificates of `store` that isthmus orders over ACME, in store order, and a
/// finding for each Certificate it cannot (its issuer is missing, is not ACME, has
/// no HTTP-01 solver for a name, or an invalid challenge annotation), after one for
/// each issuer whose challenge annotation is invalid (ISM0304). Then the orders of
/// Gateways annotated `isthmus.dev/acme-issuer` and their findings ([`auto`]).
pub fn acme_orders(store: &Store) -> (Vec<AcmeOrder>, Vec<Diagnostic>) {
    let mut orders: Vec<AcmeOrder> = Vec::new();
    let mut diags = Vec::new();
    let issuers = store.issuers().chain(store.cluster_issuers());
    for (r, _) in issuers {
        if let Some(v) = r.meta.annotations.get(ANN_ACME_CHALLENGE) {
            if ChallengeKind::parse(v).is_none() {
                diags.push(finding(
                    Level::Error,
                    CODE_BAD_CHALLENGE_ANNOTATION,
                    r,
                    &format!("metadata.annotations.{ANN_ACME_CHALLENGE}"),
                    format!(
                        "{v:?} is not an ACME challenge type isthmus answers: use \"http-01\" or \"tls-alpn-01\"; the Certificates of {} are not issued",
                        r.display_ref()
                    ),
                ));
            }
        }
    }
    for (r, c) in store.certificates() {
        if status::is_status_file(r) {
            continue; // a status file read as configuration: not a Certificate
        }
        match acme_order(store, r, c) {
            Ok(o) => {
                if let Some(first) = orders
                    .iter()
                    .find(|x| x.namespace == o.namespace && x.secret_name == o.secret_name)
                {
                    diags.push(finding(
                        Level::Error,
                        CODE_CANNOT_ORDER,
                        r,
                        "spec.secretName",
                        format!(
                            "{} is already written by {}; this Certificate is not issued",
                            o.secret_ref(),
                            first.certificate
                        ),
                    ));
                } else {
                    if let Some(d) = duration_not_requested(r, c, &o) {
                        diags.push(d);
                    }
                    orders.push(o);
                }
            }
            Err(d) => diags.push(d),
        }
    }
    // Then the Gateways annotated isthmus.dev/acme-issuer (a Secret a Certificate
    // writes stays the Certificate's).
    auto::gateway_orders(store, &mut orders, &mut diags);
    (orders, diags)
}

/// `spec.duration` on an ACME Certificate: the CA chooses the lifetime. cert-manager
/// sends the duration only when the issuer sets `enableDurationFeature`; isthmus
/// cannot send it at all (instant-acme has no `notAfter` in its new-order request),
/// so that case is an Info finding. Renewal follows the issued certificate.
fn duration_not_requested(r: &Resource, c: &CertificateSpec, o: &AcmeOrder) -> Option<Diagnostic> {
    let duration = c.duration.as_deref().filter(|d| !d.trim().is_empty())?;
    if !o.acme.enable_duration_feature {
        return None;
    }
    Some(finding(
        Level::Info,
        CODE_DURATION_NOT_REQUESTED,
        r,
        "spec.duration",
        format!(
            "duration {duration} is not requested from the ACME server ({} sets enableDurationFeature, which isthmus does not implement): the CA's lifetime applies, and renewal follows it",
            o.issuer.display()
        ),
    ))
}

fn acme_order(store: &Store, r: &Resource, c: &CertificateSpec) -> Result<AcmeOrder, Diagnostic> {
    let cluster = c.issuer_ref.kind.as_deref() == Some("ClusterIssuer");
    let issuer = IssuerId {
        kind: if cluster {
            IssuerKind::ClusterIssuer
        } else {
            IssuerKind::Issuer
        },
        namespace: if cluster {
            String::new()
        } else {
            r.namespace().to_string()
        },
        name: c.issuer_ref.name.clone(),
    };
    let found = if cluster {
        store.find(Kind::ClusterIssuer, "", &issuer.name)
    } else {
        store.find(Kind::Issuer, &issuer.namespace, &issuer.name)
    };
    let (issuer_r, spec): (&Resource, &IssuerSpec) = match found.map(|x| (x, &x.spec)) {
        Some((x, crate::Spec::Issuer(s) | crate::Spec::ClusterIssuer(s))) => (x, s),
        _ => {
            let hint = if cluster {
                String::new()
            } else {
                format!(
                    " (an Issuer must be in the Certificate's namespace {}; use kind: ClusterIssuer for a cluster-wide one)",
                    r.namespace()
                )
            };
            return Err(finding(
                Level::Error,
                CODE_ISSUER_NOT_FOUND,
                r,
                "spec.issuerRef",
                format!(
                    "no {}{hint}; {} is not issued",
                    issuer.display(),
                    secret_ref(r, c)
                ),
            ));
        }
    };
    let Some(acme) = &spec.acme else {
        return Err(finding(
            Level::Info,
            CODE_NOT_ACME,
            r,
            "spec.issuerRef",
            format!(
                "{} is not an ACME issuer: isthmus only issues over ACME, so {} must be provided another way",
                issuer.display(),
                secret_ref(r, c)
            ),
        ));
    };
    let mut names: Vec<String> = Vec::new();
    for n in c.common_name.iter().chain(c.dns_names.iter()) {
        let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    let cannot = |field: &str, why: String| {
        finding(
            Level::Error,
            CODE_CANNOT_ORDER,
            r,
            field,
            format!("{why}; {} is not issued", secret_ref(r, c)),
        )
    };
    if names.is_empty() {
        return Err(cannot(
            "spec.dnsNames",
            "no DNS name to order (isthmus orders commonName and dnsNames only)".into(),
        ));
    }
    if let Some(w) = names.iter().find(|n| n.starts_with('*')) {
        return Err(cannot(
            "spec.dnsNames",
            format!(
                "{w}: a wildcard name needs DNS-01, and isthmus answers HTTP-01 and TLS-ALPN-01 only"
            ),
        ));
    }
    let challenge = match issuer_r.meta.annotations.get(ANN_ACME_CHALLENGE) {
        Some(v) => ChallengeKind::parse(v).ok_or_else(|| {
            cannot(
                "spec.issuerRef",
                format!(
                    "{} has an invalid {ANN_ACME_CHALLENGE} annotation {v:?} ({CODE_BAD_CHALLENGE_ANNOTATION})",
                    issuer.display()
                ),
            )
        })?,
        None => {
            for n in &names {
                if !acme
                    .solvers
                    .iter()
                    .any(|s| s.http01.is_some() && solver_fits(s, n, r))
                {
                    return Err(cannot(
                        "spec.issuerRef",
                        format!(
                            "{} has no http01 solver for {n} (isthmus answers HTTP-01, or TLS-ALPN-01 when the issuer is annotated {ANN_ACME_CHALLENGE}: tls-alpn-01)",
                            issuer.display()
                        ),
                    ));
                }
            }
            ChallengeKind::Http01
        }
    };
    Ok(AcmeOrder {
        certificate: r.display_ref(),
        origin: r.origin.clone(),
        namespace: r.namespace().to_string(),
        secret_name: c.secret_name.clone(),
        common_name: c.common_name.clone().filter(|cn| !cn.trim().is_empty()),
        names,
        issuer,
        acme: acme.clone(),
        renew_before: c
            .renew_before
            .as_deref()
            .and_then(|d| parse_duration(d).ok()),
        challenge,
    })
}

fn secret_ref(r: &Resource, c: &CertificateSpec) -> String {
    format!("Secret {}/{}", r.namespace(), c.secret_name)
}

/// cert-manager's solver selection, reduced to "does it apply": no selector applies
/// to every name; else its `dnsNames` must list the name or one of its `dnsZones` must
/// be the name or a parent of it, and its `matchLabels` must be on the Certificate.
fn solver_fits(s: &AcmeSolver, name: &str, cert: &Resource) -> bool {
    let Some(sel) = &s.selector else {
        return true;
    };
    let labels_ok = sel
        .match_labels
        .iter()
        .all(|(k, v)| cert.meta.labels.get(k) == Some(v));
    let names_ok = sel.dns_names.is_empty() && sel.dns_zones.is_empty()
        || sel.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name))
        || sel.dns_zones.iter().any(|z| {
            let z = z.trim_end_matches('.').to_ascii_lowercase();
            name == z || name.ends_with(&format!(".{z}"))
        });
    labels_ok && names_ok
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is
/// renewed: `renew_before` ahead of expiry, or, when that is unset or not shorter than
/// the lifetime, when a third of the lifetime is left (cert-manager's default).
pub fn renewal_at(not_before: i64, not_after: i64, renew_before: Option<Duration>) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    let ahead = match renew_before.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)) {
        Some(d) if d < lifetime => d,
        _ => lifetime / 3,
    };
    not_after.saturating_sub(ahead)
}

/// What a stored, issued certificate is, as far as [`decide`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// DNS names of its subjectAltName.
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// `ClusterIssuer letsencrypt-prod` (the issuer it was ordered from).
    pub issuer: String,
    /// The ACME directory URL it was ordered from.
    pub server: String,
}

/// What to do about one [`AcmeOrder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The stored certificate serves; look again at `renew_at` (Unix seconds).
    Keep { renew_at: i64 },
    /// Place an order, for this reason (`no certificate yet`, `due for renewal`...).
    Order(&'static str),
}

/// Whether the certificate stored for `order` (if any) still serves at `now`: it must
/// be for exactly the order's names, from the same issuer and ACME server, and not
/// due for renewal.
pub fn decide(order: &AcmeOrder, issued: Option<&Issued>, now: i64) -> Decision {
    let Some(i) = issued else {
        return Decision::Order("no certificate yet");
    };
    let mut want: Vec<&str> = order.names.iter().map(String::as_str).collect();
    let mut have: Vec<String> = i.names.iter().map(|n| n.to_ascii_lowercase()).collect();
    want.sort_unstable();
    have.sort_unstable();
    have.dedup();
    if want != have {
        return Decision::Order("the stored certificate is for other names");
    }
    if i.issuer != order.issuer.display() || i.server != order.acme.server {
        return Decision::Order("the stored certificate is from another issuer");
    }
    if now >= i.not_after {
        return Decision::Order("the stored certificate has expired");
    }
    let renew_at = renewal_at(i.not_before, i.not_after, order.renew_before);
    if now >= renew_at {
        return Decision::Order("the stored certificate is due for renewal");
    }
    Decision::Keep { renew_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_str;

    /// The resources of `yaml`, loaded as the file `file` without an Error finding
    /// (the tests of `auto` use it too).
    pub(super) fn store_in(file: &str, yaml: &str) -> Store {
        let loaded = load_str(file, yaml);
        assert!(
            loaded.diagnostics.iter().all(|d| d.level != Level::Error),
            "{:?}",
            loaded.diagnostics
        );
        Store::new(loaded.resources)
    }

    fn store(yaml: &str) -> Store {
        store_in("certs.yaml", yaml)
    }

    const SEED: &str = r#"
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: letsencrypt-prod
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    email: a@example.com
    privateKeySecretRef:
      name: letsencrypt-prod
    solvers:
    - http01:
        ingress:
          class: istio
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: todolist-cert
  namespace: istio-system
spec:
  secretName: todolist-tls
  issuerRef:
    name: letsencrypt-prod
    kind: ClusterIssuer
  commonName: Example.Domain.com
  dnsNames:
  - example.domain.com
  - www.example.domain.com
  renewBefore: 720h
"#;

    #[test]
    fn the_seeds_certificate_is_ordered_from_its_cluster_issuer() {
        let (orders, diags) = acme_orders(&store(SEED));
        assert_eq!(diags, []);
        let [o] = orders.as_slice() else {
            panic!("{orders:?}")
        };
        assert_eq!(o.certificate, "Certificate istio-system/todolist-cert");
        assert_eq!(o.secret_ref(), "Secret istio-system/todolist-tls");
        assert_eq!(o.names, ["example.domain.com", "www.example.domain.com"]);
        assert_eq!(o.issuer.display(), "ClusterIssuer letsencrypt-prod");
        assert_eq!(o.issuer.file_key(), "ClusterIssuer.letsencrypt-prod");
        assert_eq!(o.acme.server, "https://127.0.0.1:14000/dir");
        assert_eq!(o.renew_before, Some(Duration::from_secs(720 * 3600)));
    }

    #[test]
    fn a_duration_is_reported_only_when_the_issuer_asks_for_it() {
        let with_duration = SEED.replace(
            "  renewBefore: 720h",
            "  renewBefore: 720h\n  duration: 2160h",
        );
        // cert-manager ignores `duration` for ACME unless enableDurationFeature: so do we.
        let (orders, diags) = acme_orders(&store(&with_duration));
        assert_eq!((orders.len(), diags), (1, vec![]));
        let asked = with_duration.replace(
            "    email: a@example.com",
            "    email: a@example.com\n    enableDurationFeature: true",
        );
        let (orders, diags) = acme_orders(&store(&asked));
        assert_eq!(orders.len(), 1, "still ordered");
        let [d] = diags.as_slice() else {
            panic!("{diags:?}")
        };
        assert_eq!(
            (d.level, d.code),
            (Level::Info, CODE_DURATION_NOT_REQUESTED)
        );
        assert!(d.to_string().contains("spec.duration"), "{d}");
        assert!(
            d.to_string().contains("duration 2160h is not requested"),
            "{d}"
        );
    }

    #[test]
    fn certificates_that_cannot_be_ordered_get_a_finding_naming_the_issuer() {
        let yaml = format!(
            "{SEED}{}",
            r#"
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: lost, namespace: istio-system}
spec:
  secretName: lost-tls
  issuerRef: {name: nope, kind: ClusterIssuer}
  dnsNames: [lost.example.com]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: local, namespace: apps}
spec:
  secretName: local-tls
  issuerRef: {name: letsencrypt-prod}
  dnsNames: [local.example.com]
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: ca, namespace: apps}
spec:
  ca: {secretName: ca-key-pair}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: internal, namespace: apps}
spec:
  secretName: internal-tls
  issuerRef: {name: ca}
  dnsNames: [internal.example.com]
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: dns-only, namespace: apps}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: k}
    solvers:
    - selector: {dnsZones: [other.test]}
      http01: {ingress: {class: istio}}
    - dns01: {cloudflare: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: wild, namespace: apps}
spec:
  secretName: wild-tls
  issuerRef: {name: dns-only}
  dnsNames: ["*.example.com"]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: zoned, namespace: apps}
spec:
  secretName: zoned-tls
  issuerRef: {name: dns-only}
  dnsNames: [a.other.test, b.example.com]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: twin, namespace: istio-system}
spec:
  secretName: todolist-tls
  issuerRef: {name: letsencrypt-prod, kind: ClusterIssuer}
  dnsNames: [twin.example.com]
"#
        );
        let (orders, diags) = acme_orders(&store(&yaml));
        assert_eq!(orders.len(), 1, "only the seed's: {orders:?}");
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 6, "{text:#?}");
        assert!(
            text[0].starts_with("Error [ISM0301] (Certificate istio-system/lost certs.yaml:")
                && text[0].contains("spec.issuerRef: no ClusterIssuer nope;")
                && text[0].contains("Secret istio-system/lost-tls is not issued"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("no Issuer apps/letsencrypt-prod (an Issuer must be in the Certificate's namespace apps; use kind: ClusterIssuer"),
            "{}",
            text[1]
        );
        assert!(
            text[2].starts_with("Info [ISM0302] (Certificate apps/internal")
                && text[2].contains("Issuer apps/ca is not an ACME issuer"),
            "{}",
            text[2]
        );
        assert!(
            text[3].starts_with("Error [ISM0303] (Certificate apps/wild")
                && text[3].contains("*.example.com: a wildcard name needs DNS-01"),
            "{}",
            text[3]
        );
        assert!(
            text[4].contains("Issuer apps/dns-only has no http01 solver for b.example.com"),
            "{}",
            text[4]
        );
        assert!(
            text[5].starts_with("Error [ISM0303] (Certificate istio-system/twin")
                && text[5].contains("spec.secretName: Secret istio-system/todolist-tls is already written by Certificate istio-system/todolist-cert"),
            "{}",
            text[5]
        );
    }

    #[test]
    fn the_challenge_type_is_http01_unless_the_issuer_annotation_says_otherwise() {
        let issuers = r#"
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: alpn
  annotations:
    isthmus.dev/acme-challenge: " TLS-ALPN-01 "
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: k}
    solvers: [{dns01: {cloudflare: {}}}]
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: http
  annotations: {isthmus.dev/acme-challenge: http-01}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: k}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: a, namespace: istio-system}
spec:
  secretName: a-tls
  issuerRef: {name: alpn, kind: ClusterIssuer}
  dnsNames: [a.test]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: h, namespace: istio-system}
spec:
  secretName: h-tls
  issuerRef: {name: http, kind: ClusterIssuer}
  dnsNames: [h.test]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: w, namespace: istio-system}
spec:
  secretName: w-tls
  issuerRef: {name: alpn, kind: ClusterIssuer}
  dnsNames: ["*.w.test"]
"#;
        let (orders, diags) = acme_orders(&store(&format!("{SEED}---{issuers}")));
        let kinds: Vec<(&str, ChallengeKind)> = orders
            .iter()
            .map(|o| (o.secret_name.as_str(), o.challenge))
            .collect();
        // No annotation and an http01 solver: HTTP-01. An annotation wins over the
        // solvers (a dns01-only issuer, an issuer without any solver).
        assert_eq!(
            kinds,
            [
                ("todolist-tls", ChallengeKind::Http01),
                ("a-tls", ChallengeKind::TlsAlpn01),
                ("h-tls", ChallengeKind::Http01),
            ]
        );
        let [d] = diags.as_slice() else {
            panic!("{diags:#?}")
        };
        assert!(
            d.to_string()
                .starts_with("Error [ISM0303] (Certificate istio-system/w")
                && d.message.contains("wildcard name needs DNS-01"),
            "{d}"
        );

        // The choice and the fallback when the CA offers something else.
        let alpn = &orders[1];
        use ChallengeKind::{Http01, TlsAlpn01};
        assert_eq!(alpn.fallback(&[Http01, TlsAlpn01]), Some(TlsAlpn01));
        assert_eq!(alpn.fallback(&[Http01]), Some(Http01));
        assert_eq!(alpn.fallback(&[]), None);
        let http = &orders[0];
        assert_eq!(http.fallback(&[TlsAlpn01, Http01]), Some(Http01));
        assert_eq!(http.fallback(&[TlsAlpn01]), Some(TlsAlpn01));
        assert_eq!(ChallengeKind::parse("http-01"), Some(Http01));
        assert_eq!(ChallengeKind::parse("dns-01"), None);
        assert_eq!(TlsAlpn01.to_string(), "tls-alpn-01");
    }

    #[test]
    fn an_invalid_challenge_annotation_is_reported_at_its_line_and_nothing_is_ordered() {
        let yaml = r#"apiVersion: cert-manager.io/v1
kind: Issuer
metadata:
  name: le
  namespace: apps
  annotations:
    isthmus.dev/acme-challenge: tls-alpn
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: k}
    solvers: [{http01: {ingress: {class: istio}}}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: c, namespace: apps}
spec:
  secretName: c-tls
  issuerRef: {name: le}
  dnsNames: [c.test]
"#;
        let (orders, diags) = acme_orders(&store(yaml));
        assert_eq!(orders, []);
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert_eq!(diags[0].code, CODE_BAD_CHALLENGE_ANNOTATION);
        assert!(
            text[0].starts_with("Error [ISM0304] (Issuer apps/le certs.yaml:7)")
                && text[0].contains("\"tls-alpn\" is not an ACME challenge type")
                && text[0].contains("use \"http-01\" or \"tls-alpn-01\""),
            "{}",
            text[0]
        );
        assert!(
            text[1].starts_with("Error [ISM0303] (Certificate apps/c")
                && text[1].contains(
                    "invalid isthmus.dev/acme-challenge annotation \"tls-alpn\" (ISM0304)"
                )
                && text[1].contains("Secret apps/c-tls is not issued"),
            "{}",
            text[1]
        );
        // `isthmus analyze` knows the code and its level.
        assert_eq!(crate::analyze::level_of("ISM0304"), Level::Error);
        assert!(crate::analyze::CODES
            .iter()
            .any(|(c, _, _)| *c == CODE_BAD_CHALLENGE_ANNOTATION));
    }

    #[test]
    fn renewal_time() {
        let day = 86_400;
        // Default: a third of the lifetime ahead of expiry.
        assert_eq!(renewal_at(0, 90 * day, None), 60 * day);
        let h = |n: u64| Some(Duration::from_secs(n * 3600));
        assert_eq!(renewal_at(0, 90 * day, h(24)), 89 * day);
        // renewBefore not shorter than the lifetime: the default again.
        assert_eq!(renewal_at(0, 90 * day, h(90 * 24)), 60 * day);
        assert_eq!(renewal_at(10, 10, None), 10);
        assert_eq!(renewal_at(0, 10, Some(Duration::MAX)), 7);
    }

    #[test]
    fn decisions() {
        let (orders, _) = acme_orders(&store(SEED));
        let o = &orders[0];
        let day = 86_400;
        let issued = Issued {
            names: vec!["www.example.domain.com".into(), "EXAMPLE.domain.com".into()],
            not_before: 0,
            not_after: 90 * day,
            issuer: "ClusterIssuer letsencrypt-prod".into(),
            server: "https://127.0.0.1:14000/dir".into(),
        };
        assert_eq!(decide(o, None, 0), Decision::Order("no certificate yet"));
        // renewBefore 720h = 30 days.
        assert_eq!(
            decide(o, Some(&issued), day),
            Decision::Keep { renew_at: 60 * day }
        );
        assert_eq!(
            decide(o, Some(&issued), 60 * day),
            Decision::Order("the stored certificate is due for renewal")
        );
        assert_eq!(
            decide(o, Some(&issued), 90 * day),
            Decision::Order("the stored certificate has expired")
        );
        let fewer = Issued {
            names: vec!["example.domain.com".into()],
            ..issued.clone()
        };
        assert_eq!(
            decide(o, Some(&fewer), day),
            Decision::Order("the stored certificate is for other names")
        );
        let staging = Issued {
            server: "https://acme-staging-v02.api.letsencrypt.org/directory".into(),
            ..issued
        };
        assert_eq!(
            decide(o, Some(&staging), day),
            Decision::Order("the stored certificate is from another issuer")
        );
    }
}
