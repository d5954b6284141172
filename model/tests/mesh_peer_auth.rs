//! PeerAuthentication resolution (istio-api.md 1.6): workload > namespace > mesh,
//! selectors in the root namespace ignored, `portLevelMtls` keyed by the workload
//! port, UNSET inherited, the oldest policy of a level wins. Uses the istio.io
//! authn-policy examples of testdata/istio-corpus.

use std::path::Path;

use isthmus_model::load::load_str;
use isthmus_model::mesh::effective_mtls;
use isthmus_model::resources::Labels;
use isthmus_model::snapshot::InboundMtls::{self, Disable, Permissive, Strict};
use isthmus_model::{Level, Resource, Store};

fn corpus(name: &str) -> Vec<Resource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/istio-corpus/istio-io")
        .join(format!("authn-policy__{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let loaded = load_str(&path.display().to_string(), &text);
    assert!(
        loaded.diagnostics.iter().all(|d| d.level == Level::Info),
        "{:?}",
        loaded.diagnostics
    );
    loaded.resources
}

fn store(files: &[&str], yaml: &str) -> Store {
    let mut resources: Vec<Resource> = files.iter().flat_map(|f| corpus(f)).collect();
    let loaded = load_str("pa.yaml", yaml);
    assert!(
        loaded.diagnostics.iter().all(|d| d.level == Level::Info),
        "{:?}",
        loaded.diagnostics
    );
    resources.extend(loaded.resources);
    Store::new(resources)
}

fn labels(app: &str) -> Labels {
    Labels::from([("app".to_string(), app.to_string())])
}

fn mode(store: &Store, ns: &str, app: &str, port: u16) -> (InboundMtls, String) {
    effective_mtls(store, ns, &labels(app), port)
}

fn by(m: InboundMtls, policy: &str) -> (InboundMtls, String) {
    (m, policy.to_string())
}

#[test]
fn nothing_set_is_permissive() {
    let s = store(&[], "");
    assert_eq!(mode(&s, "foo", "httpbin", 80), by(Permissive, "default"));
}

#[test]
fn workload_beats_namespace_beats_mesh() {
    let s = store(&["mesh-strict"], "");
    assert_eq!(
        mode(&s, "foo", "httpbin", 80),
        by(Strict, "PeerAuthentication istio-system/default")
    );
    let s = store(
        &[
            "mesh-strict",
            "namespace-strict",
            "precedence-workload-disable",
        ],
        "",
    );
    // foo/overwrite-example selects app=httpbin: DISABLE.
    assert_eq!(
        mode(&s, "foo", "httpbin", 8000),
        by(Disable, "PeerAuthentication foo/overwrite-example")
    );
    // Other workloads in foo: the namespace policy.
    assert_eq!(
        mode(&s, "foo", "sleep", 8000),
        by(Strict, "PeerAuthentication foo/default")
    );
    // Other namespaces: the mesh policy.
    assert_eq!(
        mode(&s, "bar", "httpbin", 8000),
        by(Strict, "PeerAuthentication istio-system/default")
    );
    // A namespace DISABLE beats the mesh STRICT.
    let s = store(
        &["mesh-strict"],
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: off, namespace: bar}\nspec: {mtls: {mode: DISABLE}}\n",
    );
    assert_eq!(
        mode(&s, "bar", "x", 1),
        by(Disable, "PeerAuthentication bar/off")
    );
}

#[test]
fn port_level_mtls_keys_on_the_workload_port() {
    let s = store(&["workload-strict-port-disable"], "");
    assert_eq!(
        mode(&s, "bar", "httpbin", 80),
        by(Disable, "PeerAuthentication bar/httpbin")
    );
    assert_eq!(
        mode(&s, "bar", "httpbin", 8000),
        by(Strict, "PeerAuthentication bar/httpbin")
    );
    assert_eq!(mode(&s, "bar", "sleep", 80), by(Permissive, "default"));
}

#[test]
fn port_level_mtls_needs_a_selector_and_unset_inherits() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bar}
spec:
  mtls: {mode: STRICT}
  portLevelMtls: {80: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: app, namespace: bar}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: UNSET}
  portLevelMtls:
    80: {mode: UNSET}
    81: {mode: PERMISSIVE}
"#;
    let s = store(&[], yaml);
    // The namespace policy's portLevelMtls is not honoured (no selector).
    assert_eq!(
        mode(&s, "bar", "sleep", 80),
        by(Strict, "PeerAuthentication bar/default")
    );
    // Workload UNSET inherits the namespace's STRICT; port UNSET inherits that.
    assert_eq!(
        mode(&s, "bar", "httpbin", 80),
        by(Strict, "PeerAuthentication bar/default")
    );
    assert_eq!(
        mode(&s, "bar", "httpbin", 81),
        by(Permissive, "PeerAuthentication bar/app")
    );
    // UNSET at every level: PERMISSIVE.
    let yaml = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: bar}\nspec: {mtls: {mode: UNSET}}\n";
    assert_eq!(
        mode(&store(&[], yaml), "bar", "x", 1),
        by(Permissive, "default")
    );
    // Namespace UNSET inherits the mesh.
    let s = store(&["mesh-strict"], "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: bar}\nspec: {mtls: {}}\n");
    assert_eq!(
        mode(&s, "bar", "x", 1),
        by(Strict, "PeerAuthentication istio-system/default")
    );
}

#[test]
fn selectors_in_the_root_namespace_are_ignored() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: httpbin-off, namespace: istio-system}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: DISABLE}
"#;
    let s = store(&["mesh-strict"], yaml);
    assert_eq!(
        mode(&s, "foo", "httpbin", 80),
        by(Strict, "PeerAuthentication istio-system/default")
    );
    // Even for workloads in the root namespace itself.
    assert_eq!(
        mode(&s, "istio-system", "httpbin", 80),
        by(Strict, "PeerAuthentication istio-system/default")
    );
}

#[test]
fn the_oldest_policy_of_a_level_wins() {
    let policies = |first_ts: &str, second_ts: &str| {
        format!(
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: b-first, namespace: foo, creationTimestamp: "{first_ts}"}}
spec: {{mtls: {{mode: DISABLE}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: a-second, namespace: foo, creationTimestamp: "{second_ts}"}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: unstamped, namespace: foo}}
spec: {{mtls: {{mode: PERMISSIVE}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: w2, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: w1, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: DISABLE}}
"#
        )
    };
    let sleep = |yaml: &str| mode(&store(&[], yaml), "foo", "sleep", 1);
    // 21:00 at -02:00 is 23:00Z on the 1st: older than the first policy.
    let s = policies("2024-05-02T00:00:00Z", "2024-05-01T21:00:00-02:00");
    assert_eq!(sleep(&s), by(Strict, "PeerAuthentication foo/a-second"));
    // 23:00 at -02:00 is 01:00Z on the 2nd: newer.
    let s = policies("2024-05-02T00:00:00Z", "2024-05-01T23:00:00-02:00");
    assert_eq!(sleep(&s), by(Disable, "PeerAuthentication foo/b-first"));
    // The same time: by name, as Istio sorts.
    let s = policies("2024-05-02T00:00:00Z", "2024-05-02T00:00:00.000Z");
    assert_eq!(sleep(&s), by(Strict, "PeerAuthentication foo/a-second"));
    // Unstamped policies count as newer; among themselves, store order (w2 first).
    assert_eq!(
        mode(&store(&[], &s), "foo", "httpbin", 1),
        by(Permissive, "PeerAuthentication foo/w2")
    );
    let s = policies("", "").replace(", creationTimestamp: \"\"", "");
    assert_eq!(sleep(&s), by(Disable, "PeerAuthentication foo/b-first"));
}
