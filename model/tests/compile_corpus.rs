//! Every file of testdata/istio-corpus compiles, for every gateway workload it
//! declares and for the default one, without panicking; the Bookinfo gateway sample
//! compiles to the routes its YAML describes.

use std::path::{Path, PathBuf};

use http::HeaderMap;
use isthmus_model::compile::{compile_gateway, gateway_workloads, GatewayWorkload};
use isthmus_model::load::load_str;
use isthmus_model::snapshot::{RequestView, RouteAction};
use isthmus_model::Store;

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/istio-corpus");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("corpus directory") {
        let dir = dir.expect("corpus entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("corpus subdirectory") {
            let f = f.expect("corpus file").path();
            if f.extension().is_some_and(|e| e == "yaml") {
                files.push(f);
            }
        }
    }
    files.sort();
    files
}

fn load(path: &Path) -> Store {
    let text = std::fs::read_to_string(path).expect("readable corpus file");
    Store::new(load_str(&path.display().to_string(), &text).resources)
}

#[test]
fn every_corpus_file_compiles() {
    let files = corpus_files();
    assert!(files.len() >= 70, "{} corpus files", files.len());
    let mut all = Store::default();
    let mut listeners = 0;
    for f in &files {
        let store = load(f);
        all.resources.extend(store.resources.iter().cloned());
        let mut workloads = gateway_workloads(&store);
        workloads.push(GatewayWorkload::default());
        for w in &workloads {
            let (snap, _) = compile_gateway(&store, w);
            listeners += snap.listeners.len();
            for l in &snap.listeners {
                for vh in &l.router.vhosts {
                    for r in &vh.routes {
                        let RouteAction::Forward(wc) = &r.action;
                        assert!(wc.total > 0, "{}: {}", f.display(), r.source);
                        assert!(wc
                            .targets
                            .iter()
                            .all(|&(id, _)| (id.0 as usize) < snap.clusters.len()));
                    }
                }
            }
        }
    }
    assert!(
        listeners > 10,
        "only {listeners} listeners compiled from the corpus"
    );
    // Everything at once, too (names collide across files; nothing may panic).
    for w in gateway_workloads(&all) {
        compile_gateway(&all, &w);
    }
}

#[test]
fn bookinfo_gateway_sample_routes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/istio-corpus/istio-samples/bookinfo__networking__bookinfo-gateway.yaml");
    let store = load(&path);
    let (snap, _) = compile_gateway(&store, &GatewayWorkload::default());
    let listener = snap.listener(8080).expect("port 8080");
    let headers = HeaderMap::new();
    let route = |path: &'static str| {
        let req = RequestView {
            authority: "bookinfo.example.com",
            path,
            method: "GET",
            scheme: "http",
            port: 8080,
            headers: &headers,
        };
        listener.router.route(&req).map(|r| {
            let RouteAction::Forward(w) = &r.action;
            snap.cluster(w.pick(0)).name.clone()
        })
    };
    for p in [
        "/productpage",
        "/static/x.css",
        "/login",
        "/api/v1/products/1",
    ] {
        assert_eq!(
            route(p).as_deref(),
            Some("outbound|9080||productpage.default.svc.cluster.local"),
            "{p}"
        );
    }
    assert_eq!(route("/productpage/extra"), None);
    assert_eq!(route("/"), None);
}
