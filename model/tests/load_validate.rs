//! Schema validation (what Istio's webhook rejects or warns about), asserted to the
//! exact file:line and field path.

use isthmus_model::load::load_str;
use isthmus_model::resources::Store;
use isthmus_model::validate::validate;

/// Load + validate, every finding rendered; the YAML must load without findings.
fn validate_yaml(file: &str, yaml: &str) -> Vec<String> {
    let loaded = load_str(file, yaml);
    assert!(
        loaded.diagnostics.is_empty(),
        "load: {:?}",
        loaded.diagnostics
    );
    validate(&Store::new(loaded.resources))
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Whether some finding is `level [code]` at `file:line` on `field`, with `msg` in it.
fn has(findings: &[String], head: &str, field: &str, msg: &str) -> bool {
    findings
        .iter()
        .any(|f| f.starts_with(head) && f.contains(&format!(" {field}: ")) && f.contains(msg))
}

#[test]
fn bad_regex() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api.example.com]
  gateways: [edge]
  http:
  - match:
    - uri:
        regex: \"/v[0-9]+/(users\"
    route:
    - destination:
        host: api
";
    let got = validate_yaml("api.yaml", yaml);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("Error [IST0106] (VirtualService default/api api.yaml:11) spec.http[0].match[0].uri.regex: invalid regex \"/v[0-9]+/(users\": "),
        "{}",
        got[0]
    );
    assert!(got[0].contains("RE2"), "{}", got[0]);
}

#[test]
fn total_weight_zero_and_negative_weight() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    route:
    - destination: {host: reviews, subset: v1}
      weight: 0
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -5
    - destination: {host: reviews, subset: v2}
      weight: 10
";
    assert_eq!(
        validate_yaml("w.yaml", yaml),
        [
            "Error [IST0106] (VirtualService default/reviews w.yaml:9) spec.http[0].route: total destination weight = 0",
            "Error [IST0106] (VirtualService default/reviews w.yaml:15) spec.http[1].route[0].weight: weight -5 < 0",
        ]
    );
}

#[test]
fn http_rule_conflicts_and_matches() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: shop
spec:
  hosts: [web.example.com]
  gateways: [shop/edge]
  http:
  - match:
    - headers:
        End-User: {exact: jason}
      uri: {exact: /a, prefix: /a}
    redirect: {uri: /b, redirectCode: 399}
    rewrite: {uri: /c}
  - match: [{uri: {prefix: /d}}]
    directResponse: {status: 0, body: {string: gone}}
    route: [{destination: {host: web}}]
  - match: [{uri: {prefix: /e}}]
    route: [{destination: {host: \"\"}}]
    timeout: 1x
    fault:
      abort: {httpStatus: 503, percentage: {value: 150}}
  - route: [{destination: {host: web}}]
  - route: [{destination: {host: web2}}]
";
    let got = validate_yaml("web.yaml", yaml);
    let e = "Error [IST0106] (VirtualService shop/web web.yaml:";
    let cases = [
        (
            "12) ",
            "spec.http[0].match[0].headers.End-User",
            "must be lowercase",
        ),
        (
            "13) ",
            "spec.http[0].match[0].uri",
            "only one of exact, prefix or regex",
        ),
        (
            "14) ",
            "spec.http[0].redirect.redirectCode",
            "399 is not a valid redirect code",
        ),
        (
            "15) ",
            "spec.http[0].rewrite",
            "cannot contain both rewrite and redirect",
        ),
        (
            "17) ",
            "spec.http[1].directResponse",
            "cannot contain both route and directResponse",
        ),
        (
            "17) ",
            "spec.http[1].directResponse.status",
            "HTTP status 0 is not in range 200-599",
        ),
        (
            "20) ",
            "spec.http[2].route[0].destination.host",
            "destination host is required",
        ),
        ("21) ", "spec.http[2].timeout", "invalid duration \"1x\""),
        (
            "23) ",
            "spec.http[2].fault.abort.percentage.value",
            "percentage 150 is neither 0.0, nor in range",
        ),
    ];
    for (line, field, msg) in cases {
        assert!(
            has(&got, &format!("{e}{line}"), field, msg),
            "missing {line}{field}: {msg}\n{got:#?}"
        );
    }
    assert!(
        has(
            &got,
            // istioctl says IST0130 on the rules after it, no IST0133 (Istio grid
            // case `dupmatches`): the catch-all itself is isthmus's ISM0109.
            "Warning [ISM0109] (VirtualService shop/web web.yaml:24) ",
            "spec.http[3]",
            "only the last rule can have no matches"
        ),
        "{got:#?}"
    );
    assert_eq!(got.len(), cases.len() + 1, "{got:#?}");
}

#[test]
fn gateway_servers() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  selector: {istio: ingressgateway}
  servers:
  - name: web
    port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"shop/*.example.com\", \"a/b/c.com\", \"localhost\"]
  - name: web
    port: {number: 70000, name: https, protocol: HTTPS}
    hosts: [\"*\"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: []
";
    let got = validate_yaml("gw.yaml", yaml);
    let e = "Error [IST0106] (Gateway default/edge gw.yaml:";
    let cases = [
        ("10) ", "spec.servers[0].hosts[1]", "invalid"),
        (
            "10) ",
            "spec.servers[0].hosts[2]",
            "short names (non FQDN) are not allowed",
        ),
        (
            "11) ",
            "spec.servers[1].name",
            "server names must be unique: duplicate name \"web\"",
        ),
        (
            "12) ",
            "spec.servers[1].port.number",
            "port number 70000 must be in the range 1..65535",
        ),
        (
            "16) ",
            "spec.servers[2].hosts",
            "server config must contain at least one host",
        ),
        (
            "15) ",
            "spec.servers[2]",
            "server must have TLS settings for HTTPS/TLS protocols",
        ),
    ];
    for (line, field, msg) in cases {
        assert!(
            has(&got, &format!("{e}{line}"), field, msg),
            "missing {line}{field}: {msg}\n{got:#?}"
        );
    }
    assert_eq!(got.len(), cases.len(), "{got:#?}");
}

#[test]
fn destination_rules_service_entries_and_durations() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: \"\"
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 0.5s}
      http: {idleTimeout: \"10\"}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v1, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: []
  resolution: STATIC
";
    let got = validate_yaml("dr.yaml", yaml);
    let cases = [
        (
            "DestinationRule default/dr dr.yaml:5) ",
            "spec.host",
            "DestinationRule host is required",
        ),
        (
            "DestinationRule default/dr dr.yaml:9) ",
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "invalid duration \"10\"",
        ),
        (
            "DestinationRule default/dr dr.yaml:12) ",
            "spec.subsets[1].name",
            "duplicate subset names: v1",
        ),
        (
            "ServiceEntry default/se dr.yaml:18) ",
            "spec.hosts",
            "service entry must have at least one host",
        ),
        (
            "ServiceEntry default/se dr.yaml:17) ",
            "spec.ports",
            "service entry must have at least one port",
        ),
        (
            "ServiceEntry default/se dr.yaml:19) ",
            "spec.resolution",
            "STATIC resolution requires endpoints",
        ),
    ];
    for (head, field, msg) in cases {
        let head = format!("Error [IST0106] ({head}");
        assert!(
            has(&got, &head, field, msg),
            "missing {head}{field}: {msg}\n{got:#?}"
        );
    }
    assert_eq!(got.len(), cases.len(), "{got:#?}");
}

#[test]
fn security_policies() {
    let yaml = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-nothing, namespace: foo}
spec:
  action: DENY
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ports, namespace: foo}
spec:
  rules:
  - to:
    - operation: {ports: [\"http\"]}
    from:
    - source: {ipBlocks: [\"10.0.0.0/40\"]}
";
    let got = validate_yaml("sec.yaml", yaml);
    let cases = [
        (
            "AuthorizationPolicy foo/deny-nothing sec.yaml:4) ",
            "spec.rules",
            "DENY action without `rules`",
        ),
        (
            "PeerAuthentication foo/default sec.yaml:12) ",
            "spec.portLevelMtls",
            "cannot have port level mTLS",
        ),
        (
            "AuthorizationPolicy foo/ports sec.yaml:21) ",
            "spec.rules[0].to[0].operation.ports[0]",
            "ports must be numbers",
        ),
        (
            "AuthorizationPolicy foo/ports sec.yaml:23) ",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "not a valid CIDR block",
        ),
    ];
    for (head, field, msg) in cases {
        let head = format!("Error [IST0106] ({head}");
        assert!(
            has(&got, &head, field, msg),
            "missing {head}{field}: {msg}\n{got:#?}"
        );
    }
    assert_eq!(got.len(), cases.len(), "{got:#?}");
}

#[test]
fn seed_guide_resources_validate() {
    // The seed guide's gateway and canary (its VirtualService gains the gateway: a
    // `*` host bound to the mesh is rejected by Istio), issuer and certificate.
    let yaml = "\
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: todolist-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: todolist-tls}
    hosts: [example.domain.com]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: todolist
spec:
  hosts: [\"*\"]
  gateways: [todolist-gateway]
  http:
  - route:
    - destination: {host: todolist, subset: v1}
      weight: 90
    - destination: {host: todolist, subset: v2}
      weight: 10
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: letsencrypt-prod
spec:
  acme:
    server: https://acme-v02.api.letsencrypt.org/directory
    email: ops@example.com
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
  commonName: example.domain.com
  dnsNames:
  - example.domain.com
";
    assert_eq!(validate_yaml("seed.yaml", yaml), Vec::<String>::new());
    // Without the gateway the same VirtualService binds to the mesh.
    let mesh = yaml.replace("  gateways: [todolist-gateway]\n", "");
    let got = validate_yaml("seed.yaml", &mesh);
    assert_eq!(
        got,
        ["Error [IST0106] (VirtualService default/todolist seed.yaml:20) spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"]
    );
}
