//! The ACME fixture the integration tests share: a real pebble ([`crate::pebble`])
//! with the demo app behind the gateway ([`start_pebble`]), the configuration that
//! orders from it (a Gateway serving HTTP and HTTPS for some hosts: [`Site`]; a
//! ClusterIssuer: [`cluster_issuer`], [`pebble_issuer`]; a Certificate:
//! [`certificate`]) and the Secrets `isthmus up` writes ([`secret_value`]).

use std::path::Path;
use std::time::Duration;

use isthmus_model::resources::core::decode_base64;

use crate::fixtures::{annotated_gateway, http_service, route_all, server};
use crate::pebble::Pebble;
use crate::{demo_app, free_ports, Proc};

/// The Secret [`certificate`] writes and [`Site::new`]'s HTTPS server serves.
pub const SECRET: &str = "acme-tls";

/// A Gateway's HTTP and HTTPS ports and the port of the demo app behind it.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub app: u16,
}

impl Ports {
    /// Three free ports.
    pub fn free() -> Ports {
        let p = free_ports(3);
        Ports {
            http: p[0],
            https: p[1],
            app: p[2],
        }
    }
}

/// Free [`Ports`], a pebble validating HTTP-01 on the HTTP one (its certificates
/// valid for `validity` when given, [`Pebble::start_with`]) and `bin demo-app a v1`
/// on the app one. `None` (the test is skipped) when pebble is not installed.
pub fn start_pebble(bin: &Path, validity: Option<Duration>) -> Option<(Pebble, Ports, Proc)> {
    let ports = Ports::free();
    let pebble = Pebble::start_with(ports.http, validity)?;
    let app = demo_app(bin, "a", "v1", ports.app);
    Some((pebble, ports, app))
}

/// Gateway `gateway` (default ingress workload) with an HTTP and an HTTPS server
/// (`tls.mode: SIMPLE`) for `hosts`, and every request routed to the demo app on
/// 127.0.0.1:`app` (VirtualService `GATEWAY-all`, ServiceEntry `GATEWAY-a` for
/// `a.default.svc.cluster.local`).
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    pub gateway: &'a str,
    pub http: u16,
    pub https: u16,
    /// A YAML flow sequence: `[a.test, b.test]`.
    pub hosts: &'a str,
    pub app: u16,
    /// The HTTPS server's `credentialName`; `None` leaves it out (a certificate
    /// ordered for the Gateway, see `acme_issuer`).
    pub credential: Option<&'a str>,
    /// The HTTP server redirects to HTTPS (`tls.httpsRedirect`).
    pub https_redirect: bool,
    /// The Gateway's `isthmus.dev/acme-issuer` annotation.
    pub acme_issuer: Option<&'a str>,
}

impl<'a> Site<'a> {
    /// Gateway `gw` serving Secret [`SECRET`] over HTTPS, no redirect, no annotation.
    pub fn new(http: u16, https: u16, hosts: &'a str, app: u16) -> Site<'a> {
        Site {
            gateway: "gw",
            http,
            https,
            hosts,
            app,
            credential: Some(SECRET),
            https_redirect: false,
            acme_issuer: None,
        }
    }

    pub fn yaml(&self) -> String {
        let Site { gateway, hosts, .. } = *self;
        let redirect = self.https_redirect.then_some("{httpsRedirect: true}");
        let tls = match self.credential {
            Some(c) => format!("{{mode: SIMPLE, credentialName: {c}}}"),
            None => "{mode: SIMPLE}".to_string(),
        };
        let servers = server(self.http, "http", "HTTP", hosts, redirect)
            + &server(self.https, "https", "HTTPS", hosts, Some(&tls));
        let annotations: Vec<(&str, &str)> = self
            .acme_issuer
            .map(|i| ("isthmus.dev/acme-issuer", i))
            .into_iter()
            .collect();
        annotated_gateway(gateway, &annotations, &servers)
            + &route_all(&format!("{gateway}-all"), gateway, "a")
            + &http_service(&format!("{gateway}-a"), "a", self.app)
    }
}

/// ClusterIssuer `name` on the ACME directory `server` with an http01 solver and the
/// account key in Secret `NAME-account`; trusting `bundle` (base64 PEM) when given;
/// annotated `isthmus.dev/acme-challenge: CHALLENGE` when given. Starts with `---`.
pub fn cluster_issuer(
    name: &str,
    server: &str,
    bundle: Option<&str>,
    challenge: Option<&str>,
) -> String {
    let meta = match challenge {
        Some(c) => {
            format!("\n  name: {name}\n  annotations: {{isthmus.dev/acme-challenge: {c}}}")
        }
        None => format!(" {{name: {name}}}"),
    };
    let bundle = bundle
        .map(|b| format!("\n    caBundle: {b}"))
        .unwrap_or_default();
    format!(
        r#"---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:{meta}
spec:
  acme:
    server: {server}
    email: ops@acme.test
    privateKeySecretRef: {{name: {name}-account}}{bundle}
    solvers:
    - http01: {{ingress: {{class: istio}}}}
"#
    )
}

/// ClusterIssuer `pebble` on `pebble`'s directory, trusting its HTTPS certificate
/// (see [`cluster_issuer`]).
pub fn pebble_issuer(pebble: &Pebble, challenge: Option<&str>) -> String {
    cluster_issuer(
        "pebble",
        &pebble.directory_url(),
        Some(&pebble.ca_bundle_base64()),
        challenge,
    )
}

/// Certificate `istio-system/acme-cert` from ClusterIssuer `pebble`, writing Secret
/// [`SECRET`] for `names`, with `extra` lines in its `spec` (`  duration: 2160h\n`).
/// Starts with `---`.
pub fn certificate(names: &[&str], extra: &str) -> String {
    format!(
        r#"---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{name: acme-cert, namespace: istio-system}}
spec:
  secretName: {SECRET}
  issuerRef: {{name: pebble, kind: ClusterIssuer}}
  dnsNames: [{names}]
{extra}"#,
        names = names.join(", "),
    )
}

/// The value of `key` (`tls.crt`) in the `data` of a Secret file written by
/// `isthmus up`, decoded.
pub fn secret_value(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).expect("read secret");
    let prefix = format!("  {key}: ");
    let b64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    String::from_utf8(decode_base64(b64).expect("base64")).expect("PEM text")
}
