//! Fuzz target `route_matcher`: per-request routing on a compiled gateway snapshot,
//! as the engine's `RouterProxy::decide` does it (`proxy::select`): the listener of
//! the port, the virtual host of the authority (`Router::vhost`, the model's
//! `NameIndex`), `httpsRedirect`, the first route whose match block matches
//! (`RouteMatch::matches`: uri, method, scheme, authority, headers, query), then a
//! weighted pick of the destination.
//!
//! Two snapshots are compiled once: `fixtures/routes.yaml` (every kind of match,
//! split and zero weights, wildcard hosts, a redirect) and the demo configuration
//! (`configs/demo`).
//!
//! Input: an HTTP/1 request head, `METHOD SP TARGET [SP VERSION]` then `Name: value`
//! lines; the request is built as the codec would (invalid methods, targets and
//! header lines are dropped) and routed on every port of each snapshot.
//!
//! Asserted: no panic; the virtual host chosen is the one the unindexed best-match
//! scan (`host::best_match`) chooses; a matched route's destinations are sane
//! (weights sum to the total without overflow, no zero weight in a split, clusters
//! that exist) and every pick in `0..total` lands on one of them.

#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use isthmus_model::compile::{compile_gateway, GatewayWorkload};
use isthmus_model::host::{best_match, TrailingDot};
use isthmus_model::load::load_str;
use isthmus_model::snapshot::{strip_port, RequestView, Route, RouteAction, Router};
use isthmus_model::{Level, Snapshot, Store};
use libfuzzer_sys::fuzz_target;

const ROUTES: &str = include_str!("../fixtures/routes.yaml");
const DEMO: [(&str, &str); 2] = [
    (
        "configs/demo/workloads.yaml",
        include_str!("../../configs/demo/workloads.yaml"),
    ),
    (
        "configs/demo/todolist.yaml",
        include_str!("../../configs/demo/todolist.yaml"),
    ),
];

/// The snapshot of `files`; panics (at start-up, not per input) when they do not
/// load cleanly or give no routes, so the target never fuzzes an empty router.
fn compile(files: &[(&str, &str)]) -> Snapshot {
    let mut resources = Vec::new();
    for (name, text) in files {
        let loaded = load_str(name, text);
        if let Some(d) = loaded.diagnostics.iter().find(|d| d.level > Level::Info) {
            panic!("{name} does not load cleanly: {d}");
        }
        resources.extend(loaded.resources);
    }
    let (snapshot, _) = compile_gateway(&Store::new(resources), &GatewayWorkload::default());
    let routes: Vec<&Route> = snapshot
        .listeners
        .iter()
        .flat_map(|l| &l.router.vhosts)
        .flat_map(|v| &v.routes)
        .collect();
    assert!(!routes.is_empty(), "no routes compiled from {files:?}");
    for route in routes {
        check_destinations(&snapshot, route);
        check_shares(route);
    }
    snapshot
}

static SNAPSHOTS: LazyLock<[Snapshot; 2]> =
    LazyLock::new(|| [compile(&[("fixtures/routes.yaml", ROUTES)]), compile(&DEMO)]);

fuzz_target!(|data: &[u8]| {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else {
        return;
    };
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    // As the engine's `request_view`: the URI's authority, else Host.
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    for snapshot in SNAPSHOTS.iter() {
        for listener in &snapshot.listeners {
            let scheme = if listener.protocol.tls().is_some() {
                "https"
            } else {
                "http"
            };
            let view = RequestView {
                authority,
                path,
                method: method.as_str(),
                scheme,
                port: listener.port,
                headers: &headers,
            };
            route_on(snapshot, &listener.router, &view);
        }
    }
});

/// Route `view` on `router` (a listener of `snapshot`) and check the outcome.
fn route_on(snapshot: &Snapshot, router: &Router, view: &RequestView<'_>) {
    let vhost = router.vhost(view.authority);
    // The index and the unindexed scan agree (first claimant of a domain keeps it).
    let pairs = router
        .vhosts
        .iter()
        .enumerate()
        .flat_map(|(i, v)| v.domains.iter().map(move |d| (d.as_str(), i)));
    let scanned = best_match(pairs, Some(strip_port(view.authority)), TrailingDot::Kept);
    assert_eq!(
        vhost.map(|v| v.name.as_str()),
        scanned.map(|i| router.vhosts[i].name.as_str()),
        "authority {:?}",
        view.authority
    );
    let Some(vhost) = vhost else {
        return;
    };
    if vhost.https_redirect {
        return;
    }
    let route = vhost.routes.iter().find(|r| r.matcher.matches(view));
    let via_router = router.route(view);
    assert_eq!(
        route.map(|r| (&*r.source, r.name.as_deref())),
        via_router.map(|r| (&*r.source, r.name.as_deref()))
    );
    if let Some(route) = route {
        check_destinations(snapshot, route);
    }
}

fn check_destinations(snapshot: &Snapshot, route: &Route) {
    let RouteAction::Forward(weighted) = &route.action;
    let targets = &weighted.targets;
    if targets.is_empty() {
        return; // 503: nothing to pick.
    }
    let sum: u64 = targets.iter().map(|&(_, w)| u64::from(w)).sum();
    assert_eq!(sum, u64::from(weighted.total), "{}", route.source);
    if targets.len() > 1 {
        assert!(targets.iter().all(|&(_, w)| w > 0), "{}", route.source);
    }
    for &(id, _) in targets {
        assert!(
            (id.0 as usize) < snapshot.clusters.len(),
            "{} names cluster {}",
            route.source,
            id.0
        );
    }
    let total = weighted.total;
    let picks = [0, total / 2, total.saturating_sub(1)];
    for r in picks {
        let id = weighted.pick(r);
        assert!(targets.iter().any(|&(t, _)| t == id), "{}", route.source);
    }
}

/// Each destination of `route` is picked for exactly its share of `0..total`
/// (checked once per route at start-up: the routes are fixed).
fn check_shares(route: &Route) {
    let RouteAction::Forward(weighted) = &route.action;
    let targets = &weighted.targets;
    if targets.len() < 2 || weighted.total > 100_000 {
        return;
    }
    for &(id, w) in targets {
        let times = (0..weighted.total)
            .filter(|&r| weighted.pick(r) == id)
            .count();
        let expected: u32 = targets
            .iter()
            .filter(|&&(t, _)| t == id)
            .map(|&(_, w)| w)
            .sum();
        assert_eq!(times as u32, expected, "{} weight {w}", route.source);
    }
}
