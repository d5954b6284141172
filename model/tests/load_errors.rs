//! Loader findings, asserted to the exact file:line, resource and field path: wrong
//! types, unknown fields, unknown enum values, missing fields, broken YAML, missing
//! names, and what still loads next to a bad document.

use isthmus_model::diag::Level;
use isthmus_model::load::load_str;
use isthmus_model::resources::core::IntOrString;
use isthmus_model::resources::security::MtlsMode;
use isthmus_model::resources::{Kind, Spec};

fn rendered(file: &str, yaml: &str) -> Vec<String> {
    load_str(file, yaml)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn wrong_type_names_file_line_and_field() {
    let yaml = "\
# Reviews routing
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: ten
";
    let loaded = load_str("reviews.yaml", yaml);
    assert!(
        loaded.resources.is_empty(),
        "a resource with a type error is rejected"
    );
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["Error [IST0106] (VirtualService default/reviews reviews.yaml:14) spec.http[0].route[0].weight: invalid type: string \"ten\", expected i32"]
    );
}

#[test]
fn lines_are_file_lines_in_later_documents() {
    let yaml = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: \"10\"
";
    assert_eq!(
        rendered("multi.yaml", yaml),
        ["Error [IST0106] (VirtualService shop/reviews multi.yaml:18) spec.http[0].route[1].weight: invalid type: string \"10\", expected i32"]
    );
    // The good document before it still loads.
    assert_eq!(load_str("multi.yaml", yaml).resources.len(), 1);
}

#[test]
fn unknown_field_is_a_warning_and_the_resource_loads() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews
  subsets:
  - name: v1
    lables:
      version: v1
";
    let loaded = load_str("dr.yaml", yaml);
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["Warning [IST0133] (DestinationRule shop/reviews dr.yaml:10) spec.subsets[0].lables: unknown field \"lables\" (ignored)"]
    );
    assert_eq!(loaded.resources.len(), 1);
    assert!(!loaded.has_errors());
}

#[test]
fn unknown_top_level_field_is_reported_but_status_is_not() {
    let yaml = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
specs:
  mtls: {mode: STRICT}
status:
  validationMessages: []
";
    assert_eq!(
        rendered("pa.yaml", yaml),
        ["Warning [IST0133] (PeerAuthentication istio-system/default pa.yaml:6) specs: unknown field \"specs\" (ignored)"]
    );
}

#[test]
fn unknown_enum_value_and_missing_field() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"*\"]
    tls:
      mode: SIMPEL
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts: [web]
  http:
  - route:
    - destination:
        subset: v1
";
    let got = rendered("bad.yaml", yaml);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("Error [IST0106] (Gateway default/edge bad.yaml:10) spec.servers[0].tls.mode: unknown variant `SIMPEL`, expected one of `PASSTHROUGH`, `SIMPLE`"),
        "{}",
        got[0]
    );
    assert_eq!(
        got[1],
        "Error [IST0106] (VirtualService default/web bad.yaml:20) spec.http[0].route[0].destination: missing field `host`"
    );
}

#[test]
fn broken_indentation_reports_the_parser_line_and_the_rest_loads() {
    let yaml = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
     hosts:
    - \"*\"
---
apiVersion: v1
kind: Namespace
metadata:
  name: other
";
    let loaded = load_str("gw.yaml", yaml);
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("Error [IST0106] (gw.yaml:16) invalid YAML: "),
        "{}",
        got[0]
    );
    // The parser's own line numbers are file lines too.
    assert!(got[0].contains("line 16"), "{}", got[0]);
    let names: Vec<&str> = loaded.resources.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["shop", "other"]);
}

#[test]
fn missing_name_is_an_error_at_metadata() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  namespace: shop
spec:
  host: reviews
";
    let loaded = load_str("dr.yaml", yaml);
    assert!(loaded.resources.is_empty());
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["Error [IST0106] (DestinationRule shop/<unnamed> dr.yaml:3) metadata.name: metadata.name is required"]
    );
    let no_metadata = "\n\napiVersion: v1\nkind: Service\nspec: {}\n";
    assert_eq!(
        rendered("svc.yaml", no_metadata),
        ["Error [IST0106] (Service default/<unnamed> svc.yaml:3) metadata.name: metadata.name is required"]
    );
}

#[test]
fn documents_that_are_not_resources() {
    let yaml = "\
- just
- a list
---
kind: VirtualService
metadata: {name: x}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
# only a comment
---
";
    assert_eq!(
        rendered("odd.yaml", yaml),
        [
            "Error [IST0106] (odd.yaml:1) a resource must be a YAML mapping with apiVersion, kind and metadata",
            "Error [IST0106] (odd.yaml:4) apiVersion: apiVersion is required",
            "Info [ISM0001] (odd.yaml:7) skipped: kind \"Widget\" of apiVersion \"example.com/v1\" is not one isthmus reads",
        ]
    );
}

#[test]
fn duplicate_keys_are_a_warning() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
spec:
  host: a
  host: b
";
    let loaded = load_str("dup.yaml", yaml);
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["Warning [IST0133] (DestinationRule default/r dup.yaml:7) spec.host: key written twice in the same mapping; the last value is used"]
    );
}

#[test]
fn secret_values_never_appear_in_findings() {
    let yaml = "\
apiVersion: v1
kind: Secret
metadata:
  name: creds
type: kubernetes.io/tls
data:
  tls.key: 424242424242
";
    let got = rendered("secret.yaml", yaml);
    assert_eq!(
        got,
        ["Error [IST0106] (Secret default/creds secret.yaml:7) data.tls.key: invalid value (not shown for Secrets), expected a string"]
    );
    assert!(!got[0].contains("4242"));
}

#[test]
fn secret_loads_with_type_data_and_string_data() {
    let yaml = "\
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: istio-system}
type: kubernetes.io/tls
data:
  tls.crt: Y2VydA==
stringData:
  tls.key: key
";
    let loaded = load_str("secret.yaml", yaml);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let Spec::Secret(s) = &loaded.resources[0].spec else {
        panic!("not a secret")
    };
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(s.get("tls.crt").as_deref(), Some(&b"cert"[..]));
    assert_eq!(s.get("tls.key").as_deref(), Some(&b"key"[..]));
    assert!(!format!("{s:?}").contains("Y2VydA"), "Debug hides values");
}

#[test]
fn core_kinds_accept_unknown_fields_and_pods_keep_their_status() {
    let yaml = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: todolist-v1
  labels: {app: todolist, version: v1}
spec:
  replicas: 2
  strategy: {type: RollingUpdate}
  selector:
    matchLabels: {app: todolist, version: v1}
  template:
    metadata:
      labels: {app: todolist, version: v1}
      annotations: {sidecar.istio.io/inject: \"true\"}
    spec:
      containers:
      - name: todolist
        image: example/todo:v1
        imagePullPolicy: IfNotPresent
        resources: {limits: {cpu: 100m}}
        ports:
        - containerPort: 8000
---
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: todolist}}
spec:
  serviceAccountName: todo
  containers:
  - name: app
    args:
status:
  phase: Running
  podIP: 10.1.2.3
  conditions: [{type: Ready, status: \"True\"}]
---
apiVersion: v1
kind: Service
metadata: {name: todolist}
spec:
  selector: {app: todolist}
  ports:
  - {name: http, port: 8000, targetPort: 8000}
  - {name: admin, port: 9000, targetPort: admin, appProtocol: http}
";
    let loaded = load_str("app.yaml", yaml);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let [dep, pod, svc] = &loaded.resources[..] else {
        panic!("three resources expected")
    };
    let Spec::Deployment(d) = &dep.spec else {
        panic!()
    };
    assert_eq!(d.replicas, Some(2));
    assert_eq!(d.template.spec.containers[0].ports[0].container_port, 8000);
    assert_eq!(
        d.template
            .metadata
            .annotations
            .get("sidecar.istio.io/inject")
            .map(String::as_str),
        Some("true")
    );
    let Spec::Pod(p) = &pod.spec else { panic!() };
    assert_eq!(p.service_account(), "todo");
    let status = p.status.as_ref().expect("pod status");
    assert_eq!(status.pod_ip.as_deref(), Some("10.1.2.3"));
    let Spec::Service(s) = &svc.spec else {
        panic!()
    };
    assert_eq!(s.ports[0].target_port, Some(IntOrString::Int(8000)));
    assert_eq!(
        s.ports[1].target_port,
        Some(IntOrString::Str("admin".into()))
    );
}

#[test]
fn security_gateway_api_and_cert_manager_kinds_are_typed() {
    let yaml = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: foo}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: DISABLE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw, sectionName: https}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: api, port: 80, weight: 3}]
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
";
    let loaded = load_str("mix.yaml", yaml);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let Spec::PeerAuthentication(pa) = &loaded.resources[0].spec else {
        panic!()
    };
    assert_eq!(pa.mode(), MtlsMode::Strict);
    assert_eq!(
        pa.port_level_mtls.get(&8080).and_then(|m| m.mode),
        Some(MtlsMode::Disable)
    );
    let Spec::HttpRoute(hr) = &loaded.resources[1].spec else {
        panic!()
    };
    assert_eq!(hr.rules[0].backend_refs[0].weight(), 3);
    let issuer = &loaded.resources[2];
    assert_eq!(issuer.kind, Kind::ClusterIssuer);
    assert_eq!(issuer.display_ref(), "ClusterIssuer letsencrypt-prod");
    let Spec::ClusterIssuer(ci) = &issuer.spec else {
        panic!()
    };
    let acme = ci.acme.as_ref().expect("acme");
    assert_eq!(acme.private_key_secret_ref.name, "letsencrypt-prod");
    let ingress = acme.solvers[0]
        .http01
        .as_ref()
        .and_then(|h| h.ingress.as_ref());
    assert_eq!(ingress.and_then(|i| i.class.as_deref()), Some("istio"));
}

#[test]
fn resources_carry_field_positions() {
    let yaml = "\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
";
    let loaded = load_str("vs.yaml", yaml);
    let r = &loaded.resources[0];
    assert_eq!(r.origin.line, 2);
    assert_eq!(r.origin_at("spec.http[0].route[1].weight").line, 13);
    assert_eq!(
        r.origin_at("spec.http[0].route[1].destination.host").line,
        12
    );
    // Paths that are not written fall back to the nearest parent.
    assert_eq!(r.origin_at("spec.http[0].timeout").line, 9);
    assert_eq!(r.origin_at("nowhere").line, 2);
    assert!(loaded.diagnostics.iter().all(|d| d.level < Level::Warning));
}

#[test]
fn required_fields_are_load_errors() {
    // A server without a port, a direct response without a status and a
    // DestinationRule without a host cannot be represented: the loader rejects them.
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - hosts: [\"*.example.com\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [vs]
  http:
  - directResponse:
      body: {string: gone}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  subsets: [{name: v1}]
";
    let loaded = load_str("req.yaml", yaml);
    assert!(loaded.resources.is_empty());
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "Error [IST0106] (Gateway default/gw req.yaml:6) spec.servers[0]: missing field `port`",
            "Error [IST0106] (VirtualService default/vs req.yaml:14) spec.http[0].directResponse: missing field `status`",
            "Error [IST0106] (DestinationRule default/dr req.yaml:20) spec: missing field `host`",
        ]
    );
}
