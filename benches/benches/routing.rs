//! Route lookup on a snapshot with 1,000 virtual hosts and 10,000 routes, and
//! compilation of that configuration. See ../README.md for how to run and read them.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use http::HeaderMap;
use isthmus_benches::{get, request_host, routing_store, routing_yaml, BENCH_SHAPE};
use isthmus_model::compile::{compile_gateway, GatewayWorkload};
use isthmus_model::load::load_str;

fn lookup(c: &mut Criterion) {
    let store = routing_store(BENCH_SHAPE);
    let (snap, _) = compile_gateway(&store, &GatewayWorkload::default());
    let router = &snap.listener(80).expect("port 80").router;
    let headers = HeaderMap::new();
    let wildcard = request_host(499);
    let cases = [
        (
            "exact host, first route",
            "host-500.example.com",
            "/api/0/items",
        ),
        (
            "exact host, mixed case + port",
            "HOST-500.Example.COM:80",
            "/api/0/items",
        ),
        (
            "wildcard host, first route",
            wildcard.as_str(),
            "/api/0/items",
        ),
        (
            "exact host, last (10th) route",
            "host-500.example.com",
            "/last/page",
        ),
        ("miss: unknown host", "unknown.example.org", "/api/0/items"),
        (
            "miss: known host, no route",
            "host-500.example.com",
            "/nothing",
        ),
    ];
    let mut g = c.benchmark_group("route_lookup");
    for (name, authority, path) in cases {
        let req = get(authority, path, &headers);
        g.bench_function(name, |b| {
            b.iter(|| black_box(router.route(black_box(&req)).is_some()))
        });
    }
    g.finish();
}

fn compile(c: &mut Criterion) {
    let yaml = routing_yaml(BENCH_SHAPE);
    let store = routing_store(BENCH_SHAPE);
    let workload = GatewayWorkload::default();
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.bench_function("compile 1k vhosts / 10k routes from a Store", |b| {
        b.iter(|| black_box(compile_gateway(black_box(&store), &workload)))
    });
    g.bench_function("load the same config from YAML", |b| {
        b.iter(|| black_box(load_str("generated.yaml", black_box(&yaml))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = lookup, compile
}
criterion_main!(benches);
