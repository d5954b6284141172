//! Every YAML file of the Istio corpus (`testdata/istio-corpus`) loads with no error
//! and no schema warning (the types know every field Istio, Gateway API and the core
//! kinds use there), and validates with exactly the findings Istio gives those files.

use std::path::{Path, PathBuf};

use isthmus_model::diag::Level;
use isthmus_model::load::load_str;
use isthmus_model::resources::Store;
use isthmus_model::validate::validate;

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/istio-corpus");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("corpus directory") {
            let path = entry.expect("corpus entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Validation findings the corpus is expected to produce: each is what Istio's own
/// webhook says about that file (analyzer test cases are deliberately incomplete).
/// (file suffix, field path, message fragment).
const EXPECTED: &[(&str, &str, &str)] = &[
    // `*.kiali.io` with resolution DNS and no endpoints: Istio rejects it too.
    (
        "analyzer-cases/authorizationpolicies.yaml",
        "spec.hosts[1]",
        "hosts must be FQDN",
    ),
    // A SIMPLE server with neither credentialName nor certificate files.
    (
        "analyzer-cases/gateway-secrets.yaml",
        "spec.servers[0].tls",
        "requires a server certificate",
    ),
    (
        "analyzer-cases/gateway-secrets.yaml",
        "spec.servers[0].tls",
        "requires a private key",
    ),
    // Stub Gateways and VirtualServices that only exist to be referenced.
    (
        "analyzer-cases/virtualservice_gateways.yaml",
        "spec.servers",
        "at least one server",
    ),
    (
        "analyzer-cases/virtualservice_gateways.yaml",
        "spec",
        "http, tcp or tls must be provided",
    ),
    (
        "analyzer-cases/virtualservice_gateways.yaml",
        "spec.hosts[0]",
        "wildcard host * is not allowed",
    ),
    // Istio warns about the deprecated field, and about two catch-all rules.
    (
        "istio-io/mirroring__mirror-v2.yaml",
        "spec.http[0].mirrorPercent",
        "deprecated",
    ),
    (
        "istio-samples/bookinfo__networking__fault-injection-details-v1.yaml",
        "spec.http[0]",
        "only the last rule can have no matches",
    ),
];

#[test]
fn corpus_loads_clean() {
    let files = corpus_files();
    assert!(files.len() >= 70, "corpus has {} files", files.len());
    let mut bad = Vec::new();
    let mut resources = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read corpus file");
        let loaded = load_str(&f.display().to_string(), &text);
        resources += loaded.resources.len();
        bad.extend(
            loaded
                .diagnostics
                .iter()
                .filter(|d| d.level == Level::Error || d.code == "IST0133")
                .map(ToString::to_string),
        );
    }
    assert!(
        bad.is_empty(),
        "{} findings:\n{}",
        bad.len(),
        bad.join("\n")
    );
    // 188 documents, one of them a TCPRoute (a kind isthmus does not read).
    assert!(resources >= 187, "only {resources} resources loaded");
}

#[test]
fn corpus_validates_as_istio_does() {
    let mut unexpected = Vec::new();
    let mut seen = vec![false; EXPECTED.len()];
    for f in corpus_files() {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(&f).expect("read corpus file");
        let store = Store::new(load_str(&name, &text).resources);
        for d in validate(&store) {
            let field = d.field.as_deref().unwrap_or("");
            let known = EXPECTED.iter().position(|(file, path, msg)| {
                name.ends_with(file) && field == *path && d.message.contains(msg)
            });
            match known {
                Some(i) => seen[i] = true,
                None => unexpected.push(d.to_string()),
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "unexpected findings:\n{}",
        unexpected.join("\n")
    );
    let missing: Vec<_> = EXPECTED
        .iter()
        .zip(&seen)
        .filter(|(_, s)| !**s)
        .map(|(e, _)| e)
        .collect();
    assert!(
        missing.is_empty(),
        "expected findings not produced: {missing:?}"
    );
}
