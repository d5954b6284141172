//! The engine on real sockets: listeners started with `start_http_listener` on
//! 127.0.0.1:0 in front of in-process upstreams, driven by reqwest, raw TCP and curl.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use isthmus_engine::{start_http_listener, ListenError, ListenerHandle, SnapshotHolder};
use isthmus_model::snapshot::{Endpoint, Snapshot};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A listener whose one route sends every request for `a.example` to `upstream`.
fn serve_to(upstream: SocketAddr) -> (SnapshotHolder, ListenerHandle) {
    serve(snapshot(
        1,
        vec![(80, vec![vhost("a.example", vec![forward(None, &[(0, 1)])])])],
        vec![cluster("up", &[upstream])],
    ))
}

fn serve(s: Snapshot) -> (SnapshotHolder, ListenerHandle) {
    let holder = SnapshotHolder::new(Arc::new(s));
    let listener = start_http_listener(holder.clone(), any_port(), 80).expect("listener");
    (holder, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_and_unmatched_route_get_404() {
    let one = Upstream::start("one").await;
    let s = snapshot(
        1,
        vec![(
            80,
            vec![vhost("a.example", vec![forward(Some("/api"), &[(0, 1)])])],
        )],
        vec![cluster("one", &[one.addr])],
    );
    let (_h, l) = serve(s);
    let addr = l.local_addr();
    let c = client("a.example", addr, false);
    assert_eq!(
        get(&c, &url("a.example", addr, "/api/x")).await,
        (200, "one".into())
    );
    assert_eq!(
        get(&c, &url("a.example", addr, "/other")).await,
        (404, "no route\n".into())
    );
    let other = client("b.example", addr, false);
    assert_eq!(
        get(&other, &url("b.example", addr, "/api")).await,
        (404, "no route\n".into())
    );
    assert_eq!(one.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_port_missing_from_snapshot_gets_404() {
    let s = snapshot(
        1,
        vec![(
            443,
            vec![vhost("a.example", vec![forward(None, &[(0, 1)])])],
        )],
        vec![cluster("one", &[closed_port()])],
    );
    let (_h, l) = serve(s); // serves Gateway port 80, which the snapshot lacks
    let c = client("a.example", l.local_addr(), false);
    assert_eq!(
        get(&c, &url("a.example", l.local_addr(), "/")).await,
        (404, "no route\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_endpoints_gets_503() {
    let s = snapshot(
        1,
        vec![(80, vec![vhost("a.example", vec![forward(None, &[(0, 1)])])])],
        vec![cluster("empty", &[])],
    );
    let (_h, l) = serve(s);
    let c = client("a.example", l.local_addr(), false);
    let r = get(&c, &url("a.example", l.local_addr(), "/")).await;
    assert_eq!(r, (503, "no healthy upstream\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connect_failure_gets_503_and_listener_keeps_serving() {
    let one = Upstream::start("one").await;
    let s = snapshot(
        1,
        vec![(
            80,
            vec![
                vhost("dead.example", vec![forward(None, &[(0, 1)])]),
                vhost("a.example", vec![forward(None, &[(1, 1)])]),
            ],
        )],
        vec![
            cluster("dead", &[closed_port()]),
            cluster("one", &[one.addr]),
        ],
    );
    let (_h, l) = serve(s);
    let addr = l.local_addr();
    let dead = client("dead.example", addr, false);
    for _ in 0..3 {
        let r = get(&dead, &url("dead.example", addr, "/")).await;
        assert_eq!(r, (503, "upstream connect error\n".into()));
    }
    // The 503 is a whole answer: the client's connection carries the next request
    // (as Envoy's local replies; no race between a close and the next request).
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: dead.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(header(&head, "connection"), Some("keep-alive"));
    assert_eq!(body, "upstream connect error\n");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "one");

    let c = client("a.example", addr, false);
    assert_eq!(
        get(&c, &url("a.example", addr, "/")).await,
        (200, "one".into())
    );
}

/// Several requests on one downstream TCP connection, and one pooled upstream
/// connection for all of them; Host preserved, x-forwarded-* set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_both_sides() {
    let one = Upstream::start("one").await;
    let (_h, l) = serve_to(one.addr);
    let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
    for i in 0..5 {
        let req = format!(
            "GET /p{i}?q=1 HTTP/1.1\r\nHost: A.Example:8080\r\nx-forwarded-for: 10.9.9.9\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "one");
        let path = format!("/p{i}?q=1");
        assert_eq!(header(&head, "x-seen-path"), Some(path.as_str()), "{head}");
        assert_eq!(
            header(&head, "x-seen-host"),
            Some("A.Example:8080"),
            "{head}"
        );
        assert_eq!(
            header(&head, "x-seen-x-forwarded-proto"),
            Some("http"),
            "{head}"
        );
        assert_eq!(
            header(&head, "x-seen-x-forwarded-for"),
            Some("10.9.9.9, 127.0.0.1"),
            "{head}"
        );
    }
    // An unrouted request on the same connection is answered locally, and the
    // connection stays usable.
    conn.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(body, "no route\n");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut conn).await.1, "one");

    assert_eq!(one.requests(), 6);
    assert_eq!(
        one.connections(),
        1,
        "upstream connection pooled and reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirect_vhost_gets_301_and_head_gets_no_body() {
    let one = Upstream::start("one").await;
    let mut s = snapshot(
        1,
        vec![(
            80,
            vec![
                vhost("secure.example", vec![forward(None, &[(0, 1)])]),
                vhost("a.example", vec![forward(Some("/api"), &[(0, 1)])]),
            ],
        )],
        vec![cluster("one", &[one.addr])],
    );
    s.listeners[0].router.vhosts[0].https_redirect = true;
    let (_h, l) = serve(s);
    let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
    conn.write_all(b"GET /p?q=1 HTTP/1.1\r\nHost: secure.example:8080\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert_eq!(
        header(&head, "location"),
        Some("https://secure.example:8080/p?q=1")
    );
    assert_eq!(body, "");

    conn.write_all(b"HEAD / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response_to(&mut conn, true).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(body, "");
    // Nothing else was written: the next response starts cleanly.
    conn.write_all(b"GET /api HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "one");
    assert_eq!(one.requests(), 1, "redirected request not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_with_curl() {
    let one = Upstream::start("one").await;
    let s = snapshot(
        1,
        vec![(
            80,
            vec![vhost("a.example", vec![forward(Some("/"), &[(0, 1)])])],
        )],
        vec![cluster("one", &[one.addr])],
    );
    let (_h, l) = serve(s);
    let port = l.local_addr().port();
    let curl = |host: &'static str, http2: bool| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "|%{http_code}|%{http_version}",
        ]);
        if http2 {
            cmd.arg("--http2-prior-knowledge");
        }
        cmd.arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg(format!("http://{host}:{port}/x"));
        tokio::task::spawn_blocking(move || {
            let out = cmd.output().expect("run curl");
            assert!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    assert_eq!(curl("a.example", true).await.unwrap(), "one|200|2");
    assert_eq!(curl("b.example", true).await.unwrap(), "no route\n|404|2");
    assert_eq!(curl("a.example", false).await.unwrap(), "one|200|1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_multiplexed_with_reqwest() {
    let one = Upstream::start("one").await;
    let (_h, l) = serve_to(one.addr);
    let addr = l.local_addr();
    let c = client("a.example", addr, true);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (c, u) = (c.clone(), url("a.example", addr, &format!("/{i}")));
        tasks.push(tokio::spawn(async move {
            let r = c.get(&u).send().await.expect("request");
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            let seen_host = r.headers().get("x-seen-host").cloned();
            (r.status().as_u16(), seen_host, r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, host, body) = t.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "one"));
        // :authority becomes the upstream Host.
        assert_eq!(
            host.unwrap().to_str().unwrap(),
            format!("a.example:{}", addr.port())
        );
    }
}

/// Weights 1:3 over 4000 requests: the weight-3 cluster gets 75% +- 3%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_pick_one_to_three() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let s = snapshot(
        1,
        vec![(
            80,
            vec![vhost("a.example", vec![forward(None, &[(0, 1), (1, 3)])])],
        )],
        vec![cluster("one", &[one.addr]), cluster("two", &[two.addr])],
    );
    let (_h, l) = serve(s);
    let addr = l.local_addr();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client("a.example", addr, false);
        let u = url("a.example", addr, "/");
        tasks.push(tokio::spawn(async move {
            let mut n_two = 0u32;
            for _ in 0..500 {
                match get(&c, &u).await {
                    (200, b) if b == "two" => n_two += 1,
                    (200, b) if b == "one" => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            n_two
        }));
    }
    let mut n_two = 0;
    for t in tasks {
        n_two += t.await.unwrap();
    }
    let share = f64::from(n_two) / 4000.0;
    assert!((0.72..=0.78).contains(&share), "weight-3 share {share}");
    assert_eq!(one.requests() + two.requests(), 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_round_robin_and_host_names_resolve() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let named = Endpoint {
        address: "localhost".into(),
        port: two.addr.port(),
        mtls: None,
        logical_dns: false,
    };
    let first = Endpoint {
        address: one.addr.ip().to_string(),
        port: one.addr.port(),
        mtls: None,
        logical_dns: false,
    };
    let s = snapshot(
        1,
        vec![(80, vec![vhost("a.example", vec![forward(None, &[(0, 1)])])])],
        vec![cluster_of("both", vec![first, named])],
    );
    let (_h, l) = serve(s);
    let c = client("a.example", l.local_addr(), false);
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(&c, &url("a.example", l.local_addr(), "/")).await;
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert_eq!(bodies, ["one", "two", "one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_swap_reroutes_next_request() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let v = |n, target| {
        snapshot(
            n,
            vec![(
                80,
                vec![vhost("a.example", vec![forward(None, &[(target, 1)])])],
            )],
            vec![cluster("one", &[one.addr]), cluster("two", &[two.addr])],
        )
    };
    let (holder, l) = serve(v(1, 0));
    let c = client("a.example", l.local_addr(), false);
    let u = url("a.example", l.local_addr(), "/");
    assert_eq!(get(&c, &u).await.1, "one");
    holder.store(Arc::new(v(2, 1)));
    assert_eq!(holder.load().version, 2);
    assert_eq!(get(&c, &u).await.1, "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_conflict_is_an_error_and_stop_releases_the_port() {
    let (holder, l) = serve(Snapshot::default());
    let addr = l.local_addr();
    match start_http_listener(holder.clone(), addr, 443) {
        Err(e @ ListenError::Bind { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&addr.to_string()) && msg.contains("Gateway port 443"),
                "{msg}"
            );
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    // Still serving after the failed attempt.
    let c = client("a.example", addr, false);
    assert_eq!(get(&c, &url("a.example", addr, "/")).await.0, 404);

    l.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "port released after stop"
    );
    // And it can be bound again.
    let again = start_http_listener(holder, addr, 80).expect("rebind after stop");
    let fresh = client("a.example", addr, false);
    assert_eq!(get(&fresh, &url("a.example", addr, "/")).await.0, 404);
    again.stop().await;
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let r = start_http_listener(SnapshotHolder::default(), any_port(), 80);
    assert!(
        matches!(
            r,
            Err(ListenError::NoRuntime {
                declared_port: 80,
                ..
            })
        ),
        "{r:?}"
    );
}

/// An upstream connection the pool hands out after a second of idleness, that the
/// upstream closes just as the request arrives (the keep-alive race: it closed
/// without a response): the request goes out again on a new connection and the
/// client never sees the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_pooled_connection_the_upstream_dropped_is_sent_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The upstream: answers the first request of each connection (keep-alive) and
    // closes on the second one without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let mut answered = false;
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        if answered {
                            return; // closed without an answer
                        }
                        answered = true;
                        buf.clear();
                        let _ = conn
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    let (_h, l) = serve_to(upstream);
    let addr = l.local_addr();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    // Idle long enough for the proxy to keep a copy of the next request (a pooled
    // connection that old may have been closed by its upstream): the scenario, not
    // a wait for readiness.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    conn.write_all(b"GET /2 HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the second request went out again on a new connection"
    );
}

/// A WebSocket-style upgrade: the 101 passes, then bytes flow both ways through the
/// proxy until the client closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_passes_and_relays_bytes_both_ways() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("connection: upgrade"), "{head}");
        conn.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        // Echo, upper-cased, until the client closes.
        loop {
            let n = conn.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let echoed = chunk[..n].to_ascii_uppercase();
            if conn.write_all(&echoed).await.is_err() {
                return;
            }
        }
    });
    let (_h, l) = serve_to(upstream);
    let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
    conn.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = std::time::Duration::from_secs(5);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(deadline, conn.read(&mut chunk))
            .await
            .expect("101 in time")
            .unwrap();
        assert!(n > 0, "closed before the 101");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for word in ["ping", "pong"] {
        conn.write_all(word.as_bytes()).await.unwrap();
        let mut got = vec![0u8; word.len()];
        tokio::time::timeout(deadline, conn.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(got, word.to_ascii_uppercase().as_bytes());
    }
}

/// Request bodies reach the upstream whole: a large `Content-Length` body behind
/// `Expect: 100-continue` (answered by the proxy, not forwarded) and a chunked one
/// on the same client connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_with_expect_and_chunked_reach_the_upstream() {
    // The upstream echoes each request's body (Content-Length or chunked).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(echo_bodies(conn));
        }
    });
    let (_h, l) = serve_to(upstream);
    let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    conn.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The client waits for 100 Continue before it sends the body.
    let mut interim = [0u8; 25];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.read_exact(&mut interim),
    )
    .await
    .expect("100 Continue in time")
    .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(&body).await.unwrap();
    let (head, echoed) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "x-saw-expect"), Some("no"));
    assert_eq!(echoed.as_bytes(), &body[..]);
    assert_eq!(
        header(&head, "connection"),
        Some("keep-alive"),
        "the connection stays usable after a 100 Continue"
    );

    conn.write_all(
        b"POST /chunks HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, echoed) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echoed, "hello world");
}

/// The edge refuses, at once and with the RFC's status, what Pingora's parser
/// lets through or answers with nothing; the upstream never sees those requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused_and_never_forwarded() {
    let one = Upstream::start("one").await;
    let (_h, l) = serve_to(one.addr);
    let addr = l.local_addr();

    let (head, _) = exchange_raw(addr, b"GARBAGE\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "garbage: {head}");

    for version in ["HTTP/2.0", "HTTP/3.0"] {
        let request = format!("GET / {version}\r\nHost: a.example\r\n\r\n");
        let (head, _) = exchange_raw(addr, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 505"), "{version}: {head}");
    }
    let (head, _) = exchange_raw(addr, b"GET / FOO/1.1\r\nHost: a.example\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "not HTTP: {head}");

    let (head, body) = exchange_raw(addr, b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "no Host: {head}");
    assert!(body.contains("Host"), "{body}");

    let smuggle = b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (head, body) = exchange_raw(addr, smuggle).await;
    assert!(head.starts_with("HTTP/1.1 400"), "CL + TE: {head}");
    assert!(
        body.contains("Content-Length and Transfer-Encoding"),
        "{body}"
    );

    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.example\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let (head, _) = exchange_raw(addr, big.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "200 KB head: {head}");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: a.example\r\n");
    for i in 0..120 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (head, _) = exchange_raw(addr, many.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "121 fields: {head}");

    assert_eq!(one.requests(), 0, "none of them reached the upstream");
    // A well-formed request still goes through.
    let (head, body) = exchange_raw(addr, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "one");
}

/// At the edge a client cannot claim a mesh identity or steer Envoy-style
/// behaviour: its `x-forwarded-client-cert` and `x-envoy-*` headers are dropped,
/// its `x-request-id` replaced by a fresh UUID, its `x-forwarded-for` extended
/// with the address it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_claims_are_not_forwarded_at_the_edge() {
    let one = Upstream::start("one").await;
    let (_h, l) = serve_to(one.addr);
    let request = b"GET / HTTP/1.1\r\nHost: a.example\r\nx-forwarded-client-cert: By=spiffe://cluster.local/ns/default/sa/admin;URI=spiffe://cluster.local/ns/x/sa/y\r\nx-envoy-upstream-rq-timeout-ms: 1\r\nx-request-id: chosen-by-client\r\nx-forwarded-for: 10.9.9.9\r\n\r\n";
    let (head, body) = exchange_raw(l.local_addr(), request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "one");
    assert_eq!(
        header(&head, "x-seen-x-forwarded-client-cert"),
        None,
        "{head}"
    );
    assert_eq!(
        header(&head, "x-seen-x-envoy-upstream-rq-timeout-ms"),
        None,
        "{head}"
    );
    let id = header(&head, "x-seen-x-request-id").expect("x-request-id set");
    assert_ne!(id, "chosen-by-client");
    let uuid = regex_lite_uuid(id);
    assert!(uuid, "not a v4 UUID: {id}");
    assert_eq!(
        header(&head, "x-seen-x-forwarded-for"),
        Some("10.9.9.9, 127.0.0.1"),
        "{head}"
    );
}

/// `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`, lowercase hex.
fn regex_lite_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    lens == [8, 4, 4, 4, 12]
        && s.chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && parts[2].starts_with('4')
        && matches!(parts[3].chars().next(), Some('8' | '9' | 'a' | 'b'))
}

/// A connection that never sends a byte is closed after the request-head
/// timeout (slowloris), not held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_head_timeout() {
    let s = snapshot(1, vec![(80, vec![])], vec![]);
    let (_h, l) = serve(s);
    let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), conn.read(&mut buf))
        .await
        .expect("closed within 20 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let after = started.elapsed();
    assert!(
        after >= std::time::Duration::from_secs(9) && after <= std::time::Duration::from_secs(15),
        "closed after {after:?} (head timeout 10 s)"
    );
}

/// HTTP/2 floods from one client (Debian's python3-hyperframe): rapid reset
/// (CVE-2023-44487) and a CONTINUATION flood. The connection is ended by the
/// server (GOAWAY or close), the flood never turns into a pile of upstream
/// requests, and another client is served right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_and_continuation_floods_end_the_connection_only() {
    let Some(python) = hyperframe_python() else {
        return;
    };
    let one = Upstream::start("one").await;
    let (_h, l) = serve_to(one.addr);
    let addr = l.local_addr();
    for mode in ["rapid-reset", "continuation"] {
        let said = h2_attack(python, addr, mode).await;
        assert!(
            said.starts_with("goaway") || said.starts_with("closed"),
            "{mode}: the server kept the connection open: {said}"
        );
        // Another client right after.
        let c = client("a.example", addr, true);
        assert_eq!(
            get(&c, &url("a.example", addr, "/")).await,
            (200, "one".into()),
            "after {mode}"
        );
    }
    eprintln!("upstream requests: {}", one.requests());
    assert!(
        one.requests() < 1000,
        "{} upstream requests from 5,000 reset streams",
        one.requests()
    );
}

/// RFC 9112's parsing rules at the edge: whitespace before a header's colon,
/// obsolete line folding, a bare CR or a NUL in a header, and an invalid chunk size
/// are refused with 400; the header cases never reach the upstream (a bad chunk
/// is found after the head went upstream: that connection is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_and_header_syntax_get_400() {
    let one = Upstream::start("one").await;
    let (_h, l) = serve_to(one.addr);
    let addr = l.local_addr();
    let cases: [(&str, &[u8]); 5] = [
        ("space before colon", b"GET / HTTP/1.1\r\nHost: a.example\r\nX-A : 1\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r\n 2\r\n\r\n"),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r2\r\n\r\n"),
        ("NUL", b"GET / HTTP/1.1\r\nHost: a.example\r\nX-A: 1\x002\r\n\r\n"),
        (
            "chunk size",
            b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(request).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            conn.read_to_end(&mut got),
        )
        .await
        .expect("answered and closed within 5 s");
        let head = String::from_utf8_lossy(&got);
        assert!(head.starts_with("HTTP/1.1 400"), "{what}: {head:?}");
        if what != "chunk size" {
            assert_eq!(one.requests(), 0, "{what} reached the upstream");
        }
    }
    // The body is streamed, so the bad chunk's request head went upstream before
    // the chunk was read (nginx, which buffers bodies, would not have sent it); its
    // connection was then dropped, the request never completed.
    assert!(one.requests() <= 1);
}
