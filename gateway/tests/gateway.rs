//! The gateway role on real sockets: listeners follow the snapshot stream, bind
//! failures are skipped, and a snapshot swap under keep-alive load loses nothing.

#[path = "../../engine/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use isthmus_gateway::{Gateway, GatewayOptions, GatewayStatus};
use isthmus_model::snapshot::Snapshot;
use support::*;
use tokio::net::TcpStream;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);

/// Every Gateway port in `ports` on an ephemeral local port.
fn ephemeral(ports: &[u16]) -> GatewayOptions {
    GatewayOptions {
        port_overrides: ports.iter().map(|&p| (p, 0)).collect::<BTreeMap<_, _>>(),
        ..GatewayOptions::default()
    }
}

/// Wait until the gateway serves `version`, and return its status.
async fn served(status: &mut watch::Receiver<GatewayStatus>, version: u64) -> GatewayStatus {
    let s = tokio::time::timeout(WAIT, status.wait_for(|s| s.version == version))
        .await
        .expect("gateway applied the snapshot in time")
        .expect("gateway running");
    s.clone()
}

fn addr_of(s: &GatewayStatus, port: u16) -> Option<SocketAddr> {
    s.listeners
        .iter()
        .find(|l| l.declared_port == port)
        .map(|l| l.local_addr)
}

fn routed(version: u64, ports: &[u16], target: u32, upstreams: &[&Upstream]) -> Snapshot {
    snapshot(
        version,
        ports
            .iter()
            .map(|&p| {
                (
                    p,
                    vec![vhost("a.example", vec![forward(None, &[(target, 1)])])],
                )
            })
            .collect(),
        upstreams
            .iter()
            .map(|u| cluster(u.name, &[u.addr]))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_snapshots() {
    let one = Upstream::start("one").await;
    let (tx, rx) = watch::channel(Arc::new(routed(1, &[80], 0, &[&one])));
    let gw = Gateway::start(rx, ephemeral(&[80, 81])).await;
    let mut status = gw.status();

    let s1 = served(&mut status, 1).await;
    assert_eq!(s1.listeners.len(), 1);
    let a80 = addr_of(&s1, 80).expect("port 80 bound");
    assert_eq!(
        s1.listeners[0].to_string(),
        format!("http://{a80} (Gateway port 80)")
    );
    assert_eq!(
        get(
            &client("a.example", a80, false),
            &url("a.example", a80, "/")
        )
        .await,
        (200, "one".into())
    );

    // Port 81 appears; 80 keeps its listener (same address, no restart).
    tx.send(Arc::new(routed(2, &[80, 81], 0, &[&one]))).unwrap();
    let s2 = served(&mut status, 2).await;
    assert_eq!(addr_of(&s2, 80), Some(a80));
    let a81 = addr_of(&s2, 81).expect("port 81 bound");
    assert_eq!(
        get(
            &client("a.example", a81, false),
            &url("a.example", a81, "/")
        )
        .await,
        (200, "one".into())
    );

    // Port 80 disappears: its socket is closed once the status says so.
    tx.send(Arc::new(routed(3, &[81], 0, &[&one]))).unwrap();
    let s3 = served(&mut status, 3).await;
    assert_eq!(
        s3.listeners
            .iter()
            .map(|l| l.declared_port)
            .collect::<Vec<_>>(),
        [81]
    );
    assert!(
        TcpStream::connect(a80).await.is_err(),
        "port 80's listener stopped"
    );
    assert_eq!(
        get(
            &client("a.example", a81, false),
            &url("a.example", a81, "/")
        )
        .await,
        (200, "one".into())
    );

    gw.shutdown().await;
    assert!(
        TcpStream::connect(a81).await.is_err(),
        "all listeners stopped on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_failure_is_skipped_and_retried_with_the_next_snapshot() {
    let one = Upstream::start("one").await;
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap();
    let mut opts = ephemeral(&[81]);
    opts.port_overrides.insert(80, taken.port());

    let (tx, rx) = watch::channel(Arc::new(routed(1, &[80, 81], 0, &[&one])));
    let gw = Gateway::start(rx, opts).await;
    let mut status = gw.status();
    let s1 = served(&mut status, 1).await;
    assert_eq!(addr_of(&s1, 80), None, "taken port skipped");
    let a81 = addr_of(&s1, 81).expect("other listener bound");
    assert_eq!(
        get(
            &client("a.example", a81, false),
            &url("a.example", a81, "/")
        )
        .await,
        (200, "one".into())
    );

    // Once the port is free, the next snapshot binds it.
    drop(blocker);
    tx.send(Arc::new(routed(2, &[80, 81], 0, &[&one]))).unwrap();
    let s2 = served(&mut status, 2).await;
    assert_eq!(addr_of(&s2, 80), Some(taken));
    assert_eq!(addr_of(&s2, 81), Some(a81));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_port_offset_applies() {
    // Gateway port 1 + offset 0 = port 1 would need privileges; instead map a
    // privileged Gateway port onto a port we know is free.
    let free = closed_port();
    let opts = GatewayOptions {
        port_offset: free.port() - 80,
        ..GatewayOptions::default()
    };
    let (_tx, rx) = watch::channel(Arc::new(snapshot(1, vec![(80, vec![])], vec![])));
    let gw = Gateway::start(rx, opts).await;
    // `start` returns once the first snapshot's listeners are bound.
    let bound = gw.listeners();
    assert_eq!(bound.len(), 1);
    assert_eq!((bound[0].declared_port, bound[0].local_addr), (80, free));
    gw.shutdown().await;
}

/// Clients loop over keep-alive connections while the route moves from `one` to
/// `two`: no request fails, and the first request after the swap sees `two`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_swap_under_keep_alive_load_loses_nothing() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let (tx, rx) = watch::channel(Arc::new(routed(1, &[80], 0, &[&one, &two])));
    let gw = Gateway::start(rx, ephemeral(&[80])).await;
    let mut status = gw.status();
    let addr = addr_of(&served(&mut status, 1).await, 80).expect("bound");
    let u = url("a.example", addr, "/");

    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for i in 0..6 {
        // Half HTTP/1.1 keep-alive, half h2c.
        let c = client("a.example", addr, i % 2 == 1);
        let (u, stop) = (u.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut seen_two) = (0u32, Vec::new(), 0u32);
            while !stop.load(Ordering::Relaxed) || seen_two < 20 {
                match c.get(&u).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(b) if b == "two" => {
                            ok += 1;
                            seen_two += 1;
                        }
                        Ok(b) if b == "one" => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    },
                    other => failed.push(format!("{other:?}")),
                }
                if failed.len() > 10 {
                    break;
                }
            }
            (ok, failed)
        }));
    }
    eventually(WAIT, "traffic on the old snapshot", || async {
        one.requests() >= 300
    })
    .await;

    tx.send(Arc::new(routed(2, &[80], 1, &[&one, &two])))
        .unwrap();
    let s2 = served(&mut status, 2).await;
    assert_eq!(
        addr_of(&s2, 80),
        Some(addr),
        "listener kept across the swap"
    );
    let fresh = client("a.example", addr, false);
    assert_eq!(
        get(&fresh, &u).await,
        (200, "two".into()),
        "new routing right after the swap"
    );
    let before = one.requests();
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for l in loops {
        let (ok, failed) = tokio::time::timeout(WAIT, l)
            .await
            .expect("client loop ends")
            .unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total >= 300 + 6 * 20, "{total} requests");
    // At most the requests already in flight at the swap reached `one` afterwards.
    assert!(
        one.requests() <= before + 6,
        "one: {} after swap vs {before}",
        one.requests()
    );
    gw.shutdown().await;
}
