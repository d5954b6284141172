//! `analyze`: the exact resource, field, line and message of the main findings, on the
//! Istio analyzer cases and on small inline configurations (including the seed guide's
//! certificate slip), plus a clean configuration that must produce no error.

use std::collections::BTreeSet;
use std::path::Path;

use isthmus_model::analyze::analyze;
use isthmus_model::load::load_str;
use isthmus_model::{Diagnostic, Level, Store};

fn load(files: &[(&str, &str)]) -> Vec<Diagnostic> {
    let mut resources = Vec::new();
    for (name, text) in files {
        let loaded = load_str(name, text);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .map(|d| d.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{name} did not load:\n{}",
            errors.join("\n")
        );
        resources.extend(loaded.resources);
    }
    analyze(&Store::new(resources))
}

fn run(yaml: &str) -> Vec<Diagnostic> {
    load(&[("test.yaml", yaml)])
}

fn corpus_text(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/istio-corpus")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_corpus(rel: &str) -> Vec<Diagnostic> {
    load(&[(rel, &corpus_text(rel))])
}

fn with<'a>(ds: &'a [Diagnostic], code: &str) -> Vec<&'a Diagnostic> {
    ds.iter().filter(|d| d.code == code).collect()
}

/// The `Kind ns/name` of every finding with `code`.
fn resources(ds: &[Diagnostic], code: &str) -> BTreeSet<String> {
    with(ds, code)
        .iter()
        .filter_map(|d| d.resource.clone())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn dump(ds: &[Diagnostic]) -> String {
    ds.iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------- VirtualService rules

#[test]
fn overlapping_matches_unreachable_rule_and_ineffective_matches() {
    let ds = run_corpus("analyzer-cases/virtualservice_overlappingmatches.yaml");
    // Rule 1's only block (prefix /api/v1/products, GET) is covered by rule 0's
    // (prefix /api/v1/product, GET): the rule can never be used. istioctl says only
    // IST0131 for it (Istio grid case `dupmatches`), so the rule is isthmus's ISM0107.
    assert!(with(&ds, "IST0130").is_empty(), "{}", dump(&ds));
    let unreachable = with(&ds, "ISM0107");
    assert_eq!(unreachable.len(), 1, "{}", dump(&ds));
    let d = unreachable[0];
    assert_eq!(
        d.resource.as_deref(),
        Some("VirtualService default/overlapping-in-two-matches")
    );
    assert_eq!(d.field.as_deref(), Some("spec.http[1]"));
    assert_eq!(d.origin.as_ref().map(|o| o.line), Some(80));
    assert_eq!(d.level, Level::Warning);
    assert!(
        d.message.starts_with(
            "VirtualService rule \"send products to sample.bar\" not used (all matches used by prior rules: \
             match #0 is covered by rule \"send product to sample.foo\" match #0)"
        ),
        "{d}"
    );
    // istioctl's IST0131 set (Istio grid case `dupmatches`); `uri-with-prefix-exact`
    // (its `exact: /` GET block is covered by `prefix: /` in the same rule) is not
    // one: istioctl compares prefixes only, so isthmus says it under ISM0108.
    assert_eq!(
        resources(&ds, "IST0131"),
        set(&[
            "VirtualService default/non-method-get",
            "VirtualService default/overlapping-in-single-match",
            "VirtualService default/overlapping-in-two-matches",
            "VirtualService default/overlapping-mathes-with-different-methods",
        ])
    );
    assert_eq!(
        resources(&ds, "ISM0108"),
        set(&["VirtualService default/uri-with-prefix-exact"])
    );
    let d = with(&ds, "IST0131")
        .into_iter()
        .find(|d| {
            d.resource.as_deref()
                == Some("VirtualService default/overlapping-mathes-with-different-methods")
        })
        .expect("IST0131");
    assert_eq!(d.field.as_deref(), Some("spec.http[1].match[0]"));
    assert!(d.message.starts_with(
        "VirtualService rule \"send products to sample.bar\" match #0 of prefix /api/v1/product is not \
         used (duplicate/overlapping match in rule #0 of prefix /api/v1/prod on \"send product to sample.foo\""
    ), "{d}");
}

const CATCH_ALL_FIRST: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["GATEWAYS_HOST"]
  GATEWAYS
  http:
  - route: [{destination: {host: web}}]
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
"#;

#[test]
fn rule_after_catch_all_is_unreachable_on_sidecars_only() {
    let mesh = CATCH_ALL_FIRST
        .replace("GATEWAYS_HOST", "web")
        .replace("GATEWAYS", "");
    let ds = run(&mesh);
    let unreachable = with(&ds, "IST0130");
    assert_eq!(unreachable.len(), 2, "{}", dump(&ds));
    assert_eq!(unreachable[0].field.as_deref(), Some("spec.http[1]"));
    assert!(
        unreachable[0]
            .message
            .contains("route without matches defined before"),
        "{}",
        dump(&ds)
    );
    assert_eq!(unreachable[1].field.as_deref(), Some("spec.http[2]"));
    assert!(unreachable[1]
        .message
        .contains("only the last rule can have no matches"));

    // On a gateway Istio moves catch-all routes last, so /api stays reachable; but
    // istioctl's check does not know that and reports both rules (IST0130 means
    // what istioctl means, Istio grid case `dupmatches`). isthmus's own coverage
    // check (ISM0107) knows it: only the second catch-all is dead, and istioctl
    // already said so.
    let gateway = CATCH_ALL_FIRST
        .replace("GATEWAYS_HOST", "example.com")
        .replace("GATEWAYS", "gateways: [gw]");
    let ds = run(&gateway);
    let unreachable = with(&ds, "IST0130");
    assert_eq!(unreachable.len(), 2, "{}", dump(&ds));
    assert_eq!(unreachable[1].field.as_deref(), Some("spec.http[2]"));
    assert!(with(&ds, "ISM0107").is_empty(), "{}", dump(&ds));
}

// ---------------------------------------------------------------- VirtualService references

#[test]
fn missing_gateway_and_hosts_not_in_gateway() {
    let ds = run_corpus("analyzer-cases/virtualservice_gateways.yaml");
    let missing = with(&ds, "IST0101");
    assert_eq!(missing.len(), 1, "{}", dump(&ds));
    let d = missing[0];
    assert_eq!(
        d.resource.as_deref(),
        Some("VirtualService default/httpbin-bogus")
    );
    assert_eq!(
        d.message,
        "Referenced gateway not found: \"httpbin-gateway-bogus\""
    );
    assert_eq!(d.field.as_deref(), Some("spec.gateways[0]"));
    assert_eq!(d.origin.as_ref().map(|o| o.line), Some(38));
    assert_eq!(
        d.to_string(),
        "Error [IST0101] (VirtualService default/httpbin-bogus analyzer-cases/virtualservice_gateways.yaml:38) \
         spec.gateways[0]: Referenced gateway not found: \"httpbin-gateway-bogus\""
    );
    // Both bound Gateways have no servers, so no host of theirs matches; as istioctl
    // (Istio grid case `virtualServiceGateways`), a missing gateway serves no host
    // either.
    assert_eq!(
        resources(&ds, "IST0132"),
        set(&[
            "VirtualService default/httpbin",
            "VirtualService default/cross-test",
            "VirtualService default/httpbin-bogus",
        ])
    );
    let d = with(&ds, "IST0132")[0];
    assert!(
        d.message
            .starts_with("one or more host [*] defined in VirtualService"),
        "{d}"
    );
}

const BOOKINFO_PLATFORM: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: productpage, labels: {app: productpage}}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, labels: {app: ratings}}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: details, labels: {app: details}}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: productpage-v1}
spec:
  selector: {matchLabels: {app: productpage, version: v1}}
  template:
    metadata: {labels: {app: productpage, version: v1}}
    spec: {containers: [{name: productpage, image: docker.io/istio/examples-bookinfo-productpage-v1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: reviews, image: docker.io/istio/examples-bookinfo-reviews-v1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec: {containers: [{name: reviews, image: docker.io/istio/examples-bookinfo-reviews-v2}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v3}
spec:
  selector: {matchLabels: {app: reviews, version: v3}}
  template:
    metadata: {labels: {app: reviews, version: v3}}
    spec: {containers: [{name: reviews, image: docker.io/istio/examples-bookinfo-reviews-v3}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1}
spec:
  selector: {matchLabels: {app: ratings, version: v1}}
  template:
    metadata: {labels: {app: ratings, version: v1}}
    spec: {containers: [{name: ratings, image: docker.io/istio/examples-bookinfo-ratings-v1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details-v1}
spec:
  selector: {matchLabels: {app: details, version: v1}}
  template:
    metadata: {labels: {app: details, version: v1}}
    spec: {containers: [{name: details, image: docker.io/istio/examples-bookinfo-details-v1}]}
"#;

#[test]
fn clean_bookinfo_has_no_findings() {
    let gateway = corpus_text("istio-samples/bookinfo__networking__bookinfo-gateway.yaml");
    let dr = corpus_text("istio-samples/bookinfo__networking__destination-rule-reviews.yaml");
    let vs = corpus_text("istio-samples/bookinfo__networking__virtual-service-reviews-90-10.yaml");
    let ds = load(&[
        ("bookinfo.yaml", BOOKINFO_PLATFORM),
        ("bookinfo-gateway.yaml", &gateway),
        ("destination-rule-reviews.yaml", &dr),
        ("virtual-service-reviews-90-10.yaml", &vs),
    ]);
    assert!(
        ds.is_empty(),
        "expected a clean configuration:\n{}",
        dump(&ds)
    );

    // The same VirtualService against destination-rule-all.yaml: subsets for versions
    // with no Deployment (ratings v2, details v2...) select no pods, and nothing else.
    let all = corpus_text("istio-samples/bookinfo__networking__destination-rule-all.yaml");
    let ds = load(&[
        ("bookinfo.yaml", BOOKINFO_PLATFORM),
        ("destination-rule-all.yaml", &all),
        ("vs.yaml", &vs),
    ]);
    let codes: BTreeSet<&str> = ds.iter().map(|d| d.code).collect();
    assert_eq!(codes, BTreeSet::from(["IST0173"]), "{}", dump(&ds));
    let subsets: BTreeSet<(Option<String>, Option<String>)> = ds
        .iter()
        .map(|d| (d.resource.clone(), d.field.clone()))
        .collect();
    assert_eq!(
        subsets.len(),
        4,
        "ratings v2, v2-mysql, v2-mysql-vm and details v2:\n{}",
        dump(&ds)
    );
}

const DESTINATIONS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - match: [{uri: {prefix: /bogus}}]
    route: [{destination: {host: bogus}}]
  - match: [{uri: {prefix: /short}}]
    route: [{destination: {host: reviews.default}}]
  - match: [{uri: {prefix: /port}}]
    route: [{destination: {host: reviews, port: {number: 8080}}}]
  - route: [{destination: {host: multi}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: multi}
spec:
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-abc, labels: {app: reviews, version: v1}}
spec: {containers: [{name: reviews}]}
"#;

#[test]
fn destination_hosts_ports_and_subsets() {
    let ds = run(DESTINATIONS);
    let by_field = |field: &str| {
        ds.iter()
            .find(|d| d.field.as_deref() == Some(field))
            .unwrap_or_else(|| panic!("no finding at {field}:\n{}", dump(&ds)))
    };
    let d = by_field("spec.http[0].route[0].destination.subset");
    assert_eq!(d.code, "IST0101");
    assert!(
        d.message
            .starts_with("Referenced host+subset in destinationrule not found: \"reviews+v9\""),
        "{d}"
    );
    assert!(
        d.message
            .contains("DestinationRule default/reviews defines [v1]"),
        "{d}"
    );
    assert_eq!(d.origin.as_ref().map(|o| o.line), Some(9));

    let d = by_field("spec.http[1].route[0].destination.host");
    assert!(
        d.message
            .starts_with("Referenced host not found: \"bogus\""),
        "{d}"
    );
    assert!(d.message.contains("bogus.default.svc.cluster.local"), "{d}");

    let d = by_field("spec.http[2].route[0].destination.host");
    assert!(
        d.message
            .starts_with("Referenced host not found: \"reviews.default\""),
        "{d}"
    );
    assert!(
        d.message
            .contains("write \"reviews.default.svc.cluster.local\""),
        "{d}"
    );

    let d = by_field("spec.http[3].route[0].destination.port.number");
    assert_eq!(d.code, "IST0101");
    assert!(
        d.message
            .starts_with("Referenced host:port not found: \"reviews:8080\""),
        "{d}"
    );

    let d = by_field("spec.http[4].route[0].destination.host");
    assert_eq!(d.code, "IST0112");
    assert!(
        d.message.contains("exposes multiple ports [80 9090]"),
        "{d}"
    );

    assert_eq!(ds.len(), 5, "{}", dump(&ds));
}

#[test]
fn mesh_host_conflicts_respect_export_to() {
    let two = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: one}
spec:
  hosts: [web.shared.svc.cluster.local]
  EXPORT
  http: [{route: [{destination: {host: web.shared.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: two}
spec:
  hosts: [web.shared.svc.cluster.local]
  EXPORT
  http: [{route: [{destination: {host: web.shared.svc.cluster.local}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shared}
spec: {ports: [{name: http, port: 80}]}
"#;
    let ds = run(&two.replace("EXPORT", ""));
    assert_eq!(
        resources(&ds, "IST0109"),
        set(&["VirtualService one/a", "VirtualService two/b"]),
        "{}",
        dump(&ds)
    );
    assert!(with(&ds, "IST0109")[0].message.starts_with(
        "The VirtualServices one/a,two/b associated with mesh gateway define the same host \
         web.shared.svc.cluster.local"
    ));
    // Each visible only in its own namespace: no sidecar sees both.
    let ds = run(&two.replace("EXPORT", "exportTo: [\".\"]"));
    assert!(with(&ds, "IST0109").is_empty(), "{}", dump(&ds));
}

#[test]
fn jwt_claim_routing_needs_request_authentication_on_the_gateway() {
    let text = corpus_text("analyzer-cases/virtualservice_jwtclaimroute.yaml");
    let ds = load(&[("jwt.yaml", &text)]);
    let d = with(&ds, "IST0149");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert_eq!(d[0].resource.as_deref(), Some("VirtualService default/foo"));
    assert!(d[0].message.starts_with(
        "The virtual service uses the JWT claim based routing (key: @request.auth.claims.foo) but found no \
         request authentication for the gateway (default/foo-gateway) pod (istio-ingressgateway)."
    ));
    let ra = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules: [{issuer: "https://example.com", jwksUri: "https://example.com/jwks"}]
"#;
    let ds = load(&[("jwt.yaml", &text), ("ra.yaml", ra)]);
    assert!(with(&ds, "IST0149").is_empty(), "{}", dump(&ds));
}

// ---------------------------------------------------------------- Gateways and secrets

#[test]
fn gateway_secrets_are_read_in_the_gateway_workload_namespace() {
    let ds = run_corpus("analyzer-cases/gateway-secrets.yaml");
    assert_eq!(
        resources(&ds, "IST0101"),
        set(&[
            "Gateway default/defaultgateway-bogusCredentialName",
            "Gateway default/customgateway-wrongnamespace",
            "Gateway default/bogusgateway",
        ]),
        "{}",
        dump(&ds)
    );
    let d = with(&ds, "IST0101")
        .into_iter()
        .find(|d| d.field.as_deref() == Some("spec.servers[0].tls.credentialName"))
        .expect("credentialName finding");
    assert!(d
        .message
        .starts_with("Referenced credentialName not found: \"httpbin-credential-bogus\""));
    assert!(d.message.contains("namespace istio-system"), "{d}");
    assert_eq!(d.origin.as_ref().map(|o| o.line), Some(50));
    let d = with(&ds, "IST0101")
        .into_iter()
        .find(|d| d.resource.as_deref() == Some("Gateway default/bogusgateway"))
        .expect("selector finding");
    assert!(
        d.message
            .starts_with("Referenced selector not found: \"istio=custom-gateway\""),
        "{d}"
    );
    // httpbin-credential is a valid PEM pair.
    assert!(with(&ds, "IST0161").is_empty(), "{}", dump(&ds));
}

const CUSTOM_GATEWAY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: custom-gw-1, namespace: edge, labels: {istio: custom-gateway}}
spec: {containers: [{name: istio-proxy}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: custom-gateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: site-cert}
    hosts: [example.com]
---
apiVersion: v1
kind: Secret
metadata: {name: site-cert, namespace: SECRET_NS}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    -----BEGIN CERTIFICATE-----
    MAMCAQE=
    -----END CERTIFICATE-----
  KEY_NAME: |
    -----BEGIN PRIVATE KEY-----
    MAMCAQE=
    -----END PRIVATE KEY-----
"#;

#[test]
fn custom_gateway_secret_namespace_and_validity() {
    let ok = CUSTOM_GATEWAY
        .replace("SECRET_NS", "edge")
        .replace("KEY_NAME", "tls.key");
    let ds = run(&ok);
    assert!(ds.is_empty(), "{}", dump(&ds));

    // In the Gateway's namespace is not where the gateway pod reads it.
    let ds = run(&CUSTOM_GATEWAY
        .replace("SECRET_NS", "default")
        .replace("KEY_NAME", "tls.key"));
    let d = with(&ds, "IST0101");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert!(
        d[0].message
            .contains("namespace edge, where the gateway workload runs: Pod edge/custom-gw-1"),
        "{}",
        d[0]
    );

    // Present, but the key is under the wrong name.
    let ds = run(&CUSTOM_GATEWAY
        .replace("SECRET_NS", "edge")
        .replace("KEY_NAME", "tls.pem"));
    let d = with(&ds, "IST0161");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert_eq!(
        d[0].field.as_deref(),
        Some("spec.servers[0].tls.credentialName")
    );
    assert!(d[0].message.starts_with(
        "The credential referenced by the Gateway gw in namespace default is invalid, which can cause the \
         traffic not to work as expected."
    ));
    assert!(d[0].message.contains("found: tls.crt, tls.pem"), "{}", d[0]);

    // MUTUAL needs a CA for client certificates: in the secret or beside it.
    let mutual = ok.replace("mode: SIMPLE", "mode: MUTUAL");
    let ds = run(&mutual);
    let d = with(&ds, "IST0161");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert!(
        d[0].message
            .contains("needs a CA to verify client certificates"),
        "{}",
        d[0]
    );
    let ca = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: site-cert-cacert, namespace: edge}\n\
              stringData: {ca.crt: \"-----BEGIN CERTIFICATE-----\\nMAMCAQE=\\n-----END CERTIFICATE-----\\n\"}\n";
    let ds = run(&format!("{mutual}{ca}"));
    assert!(ds.is_empty(), "{}", dump(&ds));
}

#[test]
fn duplicate_certificates_as_istioctl() {
    let ds = run_corpus("analyzer-cases/gateway-duplicate-certificate.yaml");
    assert_eq!(
        resources(&ds, "IST0138"),
        set(&[
            "Gateway istio-system/gateway-01-test-01",
            "Gateway istio-system/gateway-02-test-01",
            "Gateway istio-system/gateway-01-test-02",
            "Gateway default/gateway-01-test-03",
        ]),
        "{}",
        dump(&ds)
    );
    // The secrets hold "hush hush hush", not PEM.
    assert!(!with(&ds, "IST0161").is_empty());
}

#[test]
fn conflicting_gateways() {
    let ds = run_corpus("analyzer-cases/conflicting-gateways.yaml");
    assert_eq!(
        resources(&ds, "IST0145"),
        set(&["Gateway default/alpha", "Gateway default/beta"])
    );
    let d = with(&ds, "IST0145")
        .into_iter()
        .find(|d| d.resource.as_deref() == Some("Gateway default/alpha"))
        .expect("alpha");
    assert_eq!(
        d.message,
        "Conflict with gateways default/beta (workload selector istio=ingressgateway, port 80, hosts foo.bar)."
    );
}

// ---------------------------------------------------------------- the seed guide's slip

/// The seed guide's YAML (its indentation restored): the Certificate writes
/// `todolist-tls`, the Gateway asks for `istio-test-cert`.
const SEED: &str = r#"apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: letsencrypt-prod
spec:
  acme:
    server: https://acme-v02.api.letsencrypt.org/directory
    email: your-email@example.com
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
  namespace: CERT_NS
spec:
  secretName: SECRET_NAME
  issuerRef:
    name: letsencrypt-prod
    kind: ClusterIssuer
  commonName: example.domain.com
  dnsNames:
  - example.domain.com
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: todolist-gateway
  namespace: default
spec:
  selector:
    istio: ingressgateway # Use Istio's default ingress controller
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: istio-test-cert # Secret created by Cert-Manager
    hosts:
    - example.domain.com
"#;

fn seed(cert_ns: &str, secret: &str) -> Vec<Diagnostic> {
    load(&[(
        "seed.yaml",
        &SEED
            .replace("CERT_NS", cert_ns)
            .replace("SECRET_NAME", secret),
    )])
}

#[test]
fn seed_slip_names_the_certificate_to_use() {
    let ds = seed("istio-system", "todolist-tls");
    let hint = with(&ds, "ISM0101");
    assert_eq!(hint.len(), 1, "{}", dump(&ds));
    let d = hint[0];
    assert_eq!(d.level, Level::Warning);
    assert_eq!(
        d.resource.as_deref(),
        Some("Gateway default/todolist-gateway")
    );
    assert_eq!(
        d.field.as_deref(),
        Some("spec.servers[0].tls.credentialName")
    );
    assert_eq!(d.origin.as_ref().map(|o| o.line), Some(45));
    assert_eq!(
        d.message,
        "credentialName \"istio-test-cert\" matches no Secret and no Certificate; Certificate \
         istio-system/todolist-cert writes secret \"todolist-tls\", which no Gateway uses: did you mean \
         credentialName: todolist-tls?"
    );
    assert!(d
        .to_string()
        .starts_with("Warning [ISM0101] (Gateway default/todolist-gateway seed.yaml:45)"));
    // istioctl's own finding stays.
    let missing = with(&ds, "IST0101");
    assert_eq!(missing.len(), 1, "{}", dump(&ds));
    assert!(missing[0]
        .message
        .starts_with("Referenced credentialName not found: \"istio-test-cert\""));
    assert!(
        missing[0].message.contains("namespace istio-system"),
        "{}",
        missing[0]
    );
}

#[test]
fn seed_slip_with_certificate_in_the_wrong_namespace() {
    // Right name in the wrong namespace: the secret will exist, but not where the
    // ingress gateway reads it.
    let ds = seed("default", "istio-test-cert");
    assert_eq!(with(&ds, "IST0101").len(), 1, "{}", dump(&ds));
    let d = with(&ds, "ISM0102");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert!(d[0].message.contains(
        "Certificate default/todolist-cert writes secret \"istio-test-cert\" in namespace default, but Istio \
         reads credentialName secrets from namespace istio-system"
    ));

    // Wrong name and wrong namespace: the hint says both.
    let ds = seed("default", "todolist-tls");
    let d = with(&ds, "ISM0101");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert!(d[0]
        .message
        .contains("did you mean credentialName: todolist-tls?"));
    assert!(
        d[0].message
            .contains("move the Certificate to namespace istio-system"),
        "{}",
        d[0]
    );

    // Name and namespace line up: the Certificate will issue the secret; until then
    // the gateway compiler's only note is that the secret is pending.
    let ds = seed("istio-system", "istio-test-cert");
    assert_eq!(ds.len(), 1, "{}", dump(&ds));
    assert_eq!((ds[0].level, ds[0].code), (Level::Info, "ISM0205"));
    assert!(
        ds[0]
            .message
            .contains("is pending: Certificate istio-system/todolist-cert will write it"),
        "{}",
        dump(&ds)
    );
}

// ---------------------------------------------------------------- DestinationRule

#[test]
fn destination_rule_tls_without_ca() {
    let ds = run_corpus("analyzer-cases/destinationrule-simple-destination.yaml");
    let d = with(&ds, "IST0128");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert_eq!(
        d[0].resource.as_deref(),
        Some("DestinationRule default/db-tls")
    );
    assert!(d[0].message.starts_with(
        "DestinationRule default/db-tls in namespace default has TLS mode set to SIMPLE but no caCertificates \
         are set to validate server identity for host: mydbserver.prod.svc.cluster.local."
    ));
    let port_level = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}
    - port: {number: 8443}
      tls: {mode: SIMPLE, caCertificates: /ca.pem}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 8443, name: tls2, protocol: TLS}]
  resolution: DNS
"#;
    let ds = run(port_level);
    assert_eq!(ds.len(), 1, "{}", dump(&ds));
    assert_eq!(ds[0].code, "IST0129");
    assert_eq!(
        ds[0].field.as_deref(),
        Some("spec.trafficPolicy.portLevelSettings[0].tls")
    );
    assert!(
        ds[0].message.contains("TLS mode set to MUTUAL") && ds[0].message.contains("at port 443")
    );
}

#[test]
fn subsets_must_select_workloads_of_the_host() {
    let text = corpus_text("analyzer-cases/destinationrule-subsets-not-select-pods.yaml");
    let ds = load(&[("dr.yaml", &text)]);
    let d = with(&ds, "IST0173");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert_eq!(
        d[0].resource.as_deref(),
        Some("DestinationRule default/subsets-not-select-pods")
    );
    assert!(d[0].message.starts_with(
        "The Subset fake defined in the DestinationRule does not select any pods. Which may lead to 503 UH \
         (NoHealthyUpstream)."
    ));
    // A v3 pod of another app does not count; one of httpbin does.
    let pod = |app: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{app: {app}, version: v3}}}}\n\
             spec: {{containers: [{{name: c}}]}}\n"
        )
    };
    let ds = load(&[("dr.yaml", &text), ("pod.yaml", &pod("other"))]);
    assert_eq!(with(&ds, "IST0173").len(), 1, "{}", dump(&ds));
    let ds = load(&[("dr.yaml", &text), ("pod.yaml", &pod("httpbin"))]);
    assert!(ds.is_empty(), "{}", dump(&ds));
}

// ---------------------------------------------------------------- security policies

#[test]
fn authorization_policies_as_istioctl() {
    let ds = run_corpus("analyzer-cases/authorizationpolicies.yaml");
    assert_eq!(
        resources(&ds, "IST0127"),
        set(&[
            "AuthorizationPolicy istio-system/meshwide-httpbin-v1",
            "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide",
            "AuthorizationPolicy httpbin/httpbin-nopods",
            "AuthorizationPolicy test-ambient/no-workload",
        ]),
        "{}",
        dump(&ds)
    );
    let missing = with(&ds, "IST0101");
    let got: Vec<(String, String)> = missing
        .iter()
        .map(|d| {
            (
                d.resource.clone().unwrap_or_default(),
                d.field.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns".to_string(),
                "spec.rules[0].from[1].source.notNamespaces[2]".to_string()
            ),
            (
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns".to_string(),
                "spec.rules[0].from[1].source.notNamespaces[3]".to_string()
            ),
            (
                "AuthorizationPolicy httpbin/httpbin-bogus-ns".to_string(),
                "spec.rules[0].from[1].source.namespaces[2]".to_string()
            ),
            (
                "AuthorizationPolicy httpbin/httpbin-bogus-ns".to_string(),
                "spec.rules[0].from[1].source.namespaces[3]".to_string()
            ),
        ]
    );
    assert!(missing[2]
        .message
        .starts_with("Referenced namespace not found: \"*-bogus\""));
    let d = with(&ds, "IST0127")
        .into_iter()
        .find(|d| d.resource.as_deref() == Some("AuthorizationPolicy httpbin/httpbin-nopods"))
        .expect("nopods");
    assert!(d
        .message
        .starts_with("No matching workloads for this resource with the following labels: app=bogus-label,version=v1"));
}

#[test]
fn security_policies_without_workloads() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict-web, namespace: istio-system}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  jwtRules: [{issuer: "https://example.com"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ingress-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules: [{issuer: "https://example.com"}]
"#;
    let ds = run(yaml);
    // The ingress gateway one selects Istio's default ingress gateway: no finding.
    assert_eq!(
        resources(&ds, "IST0127"),
        set(&[
            "AuthorizationPolicy shop/deny-all",
            "RequestAuthentication shop/jwt"
        ]),
        "{}",
        dump(&ds)
    );
    assert!(with(&ds, "IST0127").iter().all(|d| d
        .message
        .contains("No Pods, Deployments or WorkloadEntries are loaded at all")));
    let d = with(&ds, "ISM0103");
    assert_eq!(d.len(), 1, "{}", dump(&ds));
    assert_eq!(
        d[0].resource.as_deref(),
        Some("PeerAuthentication istio-system/strict-web")
    );
}

// ---------------------------------------------------------------- gateway compiler

#[test]
fn analyze_says_what_the_gateway_compiler_says() {
    // A PASSTHROUGH server nothing routes, and a route field not applied yet: `up`
    // logs both when it builds the snapshot; `analyze` reports them too, at the
    // Gateway's and the VirtualService's lines.
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [p.test]
    tls: {mode: PASSTHROUGH}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [h.test]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: h}
spec:
  hosts: [h.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: h}
spec:
  hosts: [h.test]
  gateways: [gw]
  http:
  - route: [{destination: {host: h.default.svc.cluster.local}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}
"#;
    let ds = load(&[("gw.yaml", yaml)]);
    let d = with(&ds, "ISM0205");
    assert_eq!(d.len(), 2, "{}", dump(&ds));
    let text: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("Gateway default/gw gw.yaml:8")
                && t.contains("PASSTHROUGH server on port 443")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("VirtualService default/h") && t.contains("fault")),
        "{text:?}"
    );
}
