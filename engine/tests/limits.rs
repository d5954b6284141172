//! The listener limits on real sockets (`Limits` given to `start_listener`): the
//! request target (absolute form, length), request body size, requests per
//! connection, connection limits per listener and per client address, idle
//! timeouts for HTTP/1.1 and HTTP/2, trusted proxies at the gateway, and HTTP/2
//! control-frame and HPACK floods (raw frames from Debian's python3-hyperframe).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_engine::{start_listener, Limits, ListenerConfig, ListenerHandle, SnapshotHolder};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A gateway listener whose one route sends every `a.example` request to
/// `upstream`, holding clients to `limits`.
fn serve_limited(upstream: SocketAddr, limits: Limits) -> ListenerHandle {
    serve_cluster(cluster("up", &[upstream]), limits)
}

/// A gateway listener whose one route sends every `a.example` request to `up`
/// (a cluster the test shaped: its DestinationRule settings), under `limits`.
fn serve_cluster(up: isthmus_model::snapshot::Cluster, limits: Limits) -> ListenerHandle {
    let holder = SnapshotHolder::new(Arc::new(snapshot(
        1,
        vec![(80, vec![vhost("a.example", vec![forward(None, &[(0, 1)])])])],
        vec![up],
    )));
    let config = ListenerConfig {
        limits: Arc::new(limits),
        ..ListenerConfig::default()
    };
    start_listener(holder, "127.0.0.1:0".parse().unwrap(), 80, None, config).expect("listener")
}

/// An upstream echoing request bodies (Content-Length or chunked).
async fn echo_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(echo_bodies(conn));
        }
    });
    addr
}

/// A connection to `to` from the local address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether a new connection from `from` to `to` is refused at once: reset while
/// connecting, or closed (EOF or reset) within a second.
async fn refused_at_once(from: IpAddr, to: SocketAddr) -> bool {
    let started = Instant::now();
    let refused = match connect_from(from, to).await {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(mut conn) => closed_within(&mut conn, Duration::from_secs(2)).await,
    };
    refused && started.elapsed() < Duration::from_secs(1)
}

/// Whether the server closed `conn` (EOF or reset) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, conn.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// RFC 9112 3.2.2: an absolute-form target's authority is the request's host and
/// the request goes upstream in origin form. A `Host` that differs from it,
/// userinfo and schemes other than http(s) are refused with a 400 that says why;
/// a target over the length limit gets 414. None of the refused requests reaches
/// the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_and_long_uris() {
    let one = Upstream::start("one").await;
    let l = serve_limited(one.addr, Limits::default());
    let addr = l.local_addr();

    let (head, body) = exchange_raw(
        addr,
        b"GET http://a.example/p?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "one");
    assert_eq!(header(&head, "x-seen-path"), Some("/p?q=1"), "{head}");
    assert_eq!(header(&head, "x-seen-host"), Some("a.example"), "{head}");
    assert_eq!(one.requests(), 1);

    for (what, request, says) in [
        (
            "Host differs",
            &b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"[..],
            "Host header differs from request-target authority",
        ),
        (
            "ftp scheme",
            b"GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "scheme is not http or https",
        ),
        (
            "userinfo",
            b"GET http://user:pw@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "userinfo",
        ),
    ] {
        let (head, body) = exchange_raw(addr, request).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{what}: {head}");
        assert!(body.contains(says), "{what}: {body}");
    }
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let (head, body) = exchange_raw(addr, long.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 414"), "{head}");
    assert_eq!(body, "URI too long\n");
    assert_eq!(one.requests(), 1, "no refused request reached the upstream");
}

/// With a body limit: a declared length over it is refused with 413 before
/// anything goes upstream (also behind `Expect: 100-continue`, without the 100);
/// a chunked body that grows over it ends with 413; bodies under it pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413() {
    let limits = || Limits {
        max_request_body: Some(1000),
        ..Limits::default()
    };
    let one = Upstream::start("one").await;
    let counted = serve_limited(one.addr, limits());
    let (head, body) = exchange_raw(
        counted.local_addr(),
        b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(body, "request body too large\n");
    assert_eq!(one.requests(), 0, "nothing went upstream");

    let l = serve_limited(echo_upstream().await, limits());
    let addr = l.local_addr();
    let small = format!(
        "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 500\r\n\r\n{}",
        "x".repeat(500)
    );
    let (head, body) = exchange_raw(addr, small.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), 500);

    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(chunked.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got))
        .await
        .expect("answered and closed")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
}

/// `max_requests_per_connection`: HTTP/1.1 answers the last request with
/// `Connection: close` and closes; HTTP/2 answers the last stream and sends
/// GOAWAY, and a client opens a new connection for more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_connection_are_limited() {
    let one = Upstream::start("one").await;
    let l = serve_limited(
        one.addr,
        Limits {
            max_requests_per_connection: Some(2),
            ..Limits::default()
        },
    );
    let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
    for i in 0..2 {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "one");
        let close = header(&head, "connection") == Some("close");
        assert_eq!(close, i == 1, "request {i}: {head}");
    }
    assert!(closed_within(&mut conn, Duration::from_secs(5)).await);

    // HTTP/2: two streams on one connection, then GOAWAY.
    let mut h2 = TcpStream::connect(l.local_addr()).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    for stream in [1u8, 3] {
        // GET http://a.example/ from HPACK's static table, END_STREAM|END_HEADERS.
        let block = b"\x82\x86\x84\x01\x09a.example";
        out.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, stream]);
        out.extend_from_slice(block);
    }
    h2.write_all(&out).await.unwrap();
    let frames = tokio::time::timeout(Duration::from_secs(5), read_until_goaway(&mut h2, 2))
        .await
        .expect("GOAWAY within 5 s");
    assert!(frames.goaway, "GOAWAY after the second stream");
    let mut answered = frames.responses.clone();
    answered.sort();
    assert_eq!(answered, vec![1, 3], "both streams answered");
    // (Whether a client then retries on a new connection a request it raced onto
    // the GOAWAY'd one is the client's business: RFC 9113 6.8 says it may.)
}

/// Connection limits: above the per-address limit a client's new connections are
/// closed at once while another address is still served, and a freed place is
/// usable again; the listener-wide limit works the same for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_close_new_connections_at_once() {
    let one = Upstream::start("one").await;
    let l = serve_limited(
        one.addr,
        Limits {
            max_connections_per_ip: Some(3),
            ..Limits::default()
        },
    );
    let addr = l.local_addr();
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(local, addr).await.unwrap());
    }
    // Each held connection is served (a request on the first proves the count).
    held[0]
        .write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut held[0]).await.1, "one");
    assert!(
        refused_at_once(local, addr).await,
        "a fourth connection from one address is refused at once"
    );

    let mut from_other = connect_from(other, addr).await.unwrap();
    from_other
        .write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut from_other).await.1, "one");

    // A place freed is a place to take.
    drop(held.pop());
    eventually(Duration::from_secs(5), "a freed place", || async {
        let Ok(mut c) = connect_from(local, addr).await else {
            return false;
        };
        if c.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 12];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), c.read_exact(&mut buf)).await,
            Ok(Ok(_)) if &buf == b"HTTP/1.1 200"
        )
    })
    .await;

    let l = serve_limited(
        one.addr,
        Limits {
            max_connections: Some(1),
            ..Limits::default()
        },
    );
    let _first = connect_from(local, l.local_addr()).await.unwrap();
    assert!(refused_at_once(other, l.local_addr()).await);
}

/// Idle timeouts: an HTTP/1.1 keep-alive connection and an HTTP/2 connection
/// without streams are closed after the configured idle time (HTTP/2 with a
/// GOAWAY), not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let one = Upstream::start("one").await;
    let idle = Duration::from_millis(600);
    let l = serve_limited(
        one.addr,
        Limits {
            idle_timeout: idle,
            ..Limits::default()
        },
    );
    let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut conn).await;
    let answered = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(5)).await);
    let after = answered.elapsed();
    assert!(after >= idle - Duration::from_millis(50), "{after:?}");

    let mut h2 = TcpStream::connect(l.local_addr()).await.unwrap();
    let opened = Instant::now();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let frames = tokio::time::timeout(Duration::from_secs(5), read_until_goaway(&mut h2, 0))
        .await
        .expect("GOAWAY within 5 s");
    assert!(frames.goaway, "the server sent GOAWAY");
    let after = opened.elapsed();
    assert!(after >= idle - Duration::from_millis(50), "{after:?}");
}

/// What a raw HTTP/2 client saw: whether a GOAWAY came, and the streams that got
/// a response HEADERS frame.
struct Frames {
    goaway: bool,
    responses: Vec<u8>,
}

/// Read HTTP/2 frames until a GOAWAY and `responses` response HEADERS, or the end
/// of the connection.
async fn read_until_goaway(conn: &mut TcpStream, responses: usize) -> Frames {
    let mut seen = Frames {
        goaway: false,
        responses: Vec::new(),
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            match buf[3] {
                0x1 => seen.responses.push(buf[8]),
                0x7 => {
                    seen.goaway = true;
                }
                _ => {}
            }
            buf.drain(..9 + len);
        }
        if seen.goaway && seen.responses.len() >= responses {
            return seen;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Istio's `numTrustedProxies`: at 0 (the edge) a client's `x-forwarded-proto`
/// and `x-request-id` are replaced; behind a trusted proxy they are kept. A
/// client's `x-envoy-*` and `x-forwarded-client-cert` never pass; the client's
/// address is appended to `x-forwarded-for` in both cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_decide_which_forwarded_headers_are_kept() {
    let one = Upstream::start("one").await;
    let request = b"GET / HTTP/1.1\r\nHost: a.example\r\nx-forwarded-proto: https\r\nx-request-id: from-the-lb\r\nx-forwarded-for: 203.0.113.7\r\nx-envoy-retry-on: 5xx\r\nx-forwarded-client-cert: URI=spiffe://cluster.local/ns/x/sa/y\r\n\r\n";
    for trusted in [0, 1] {
        let l = serve_limited(
            one.addr,
            Limits {
                num_trusted_proxies: trusted,
                ..Limits::default()
            },
        );
        let (head, _) = exchange_raw(l.local_addr(), request).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let proto = header(&head, "x-seen-x-forwarded-proto");
        let id = header(&head, "x-seen-x-request-id");
        if trusted == 0 {
            assert_eq!(proto, Some("http"), "{head}");
            assert_ne!(id, Some("from-the-lb"), "{head}");
        } else {
            assert_eq!(proto, Some("https"), "{head}");
            assert_eq!(id, Some("from-the-lb"), "{head}");
        }
        assert_eq!(header(&head, "x-seen-x-envoy-retry-on"), None, "{head}");
        assert_eq!(
            header(&head, "x-seen-x-forwarded-client-cert"),
            None,
            "{head}"
        );
        assert_eq!(
            header(&head, "x-seen-x-forwarded-for"),
            Some("203.0.113.7, 127.0.0.1"),
            "{head}"
        );
    }
}

/// The resident memory of this process (the listener runs in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// HTTP/2 control-frame floods and malformed frames (Debian's python3-hyperframe):
/// 200,000 PINGs or SETTINGS never read back queue nothing without bound (the
/// server stops reading: backpressure), a frame above the frame size limit and a
/// dynamic table size update above the allowed table end the connection with
/// GOAWAY (FRAME_SIZE_ERROR; PROTOCOL_ERROR from the h2 crate), an HPACK bomb never reaches the
/// upstream. Memory stays bounded and another client is served after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_control_frame_floods_and_malformed_frames() {
    let Some(python) = hyperframe_python() else {
        return;
    };
    let one = Upstream::start("one").await;
    let l = serve_limited(one.addr, Limits::default());
    let addr = l.local_addr();
    let before = rss_kib();
    for (mode, expect) in [
        ("ping-flood", None),
        ("settings-flood", None),
        ("oversized-frame", Some("goaway 6")),
        // The h2 crate ends it with PROTOCOL_ERROR (1) rather than RFC 7541's
        // COMPRESSION_ERROR (9); either way the connection is gone.
        ("hpack-table", Some("goaway")),
        ("hpack-bomb", None),
    ] {
        let said = h2_attack(python, addr, mode).await;
        if let Some(expect) = expect {
            assert!(said.starts_with(expect), "{mode}: {said}");
        }
        let grown = rss_kib().saturating_sub(before);
        assert!(grown < 64 * 1024, "{mode}: RSS grew by {grown} KiB");
        let c = client("a.example", addr, true);
        assert_eq!(
            get(&c, &url("a.example", addr, "/")).await,
            (200, "one".into()),
            "after {mode}"
        );
    }
    assert_eq!(
        one.requests(),
        5,
        "only the normal client's requests reached the upstream"
    );
}

/// An upstream that reads each request head, counts it in `heads`, and answers
/// only once `open` is set.
async fn gated_upstream(
    open: tokio::sync::watch::Receiver<bool>,
    heads: Arc<std::sync::atomic::AtomicUsize>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut open = open.clone();
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    heads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if open.wait_for(|o| *o).await.is_err() {
                        return;
                    }
                    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow";
                    if conn.write_all(resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A DestinationRule `connectionPool` (maxConnections 1, http1MaxPendingRequests
/// 1): with one request in flight, of two more one waits and the other is answered
/// 503 at once with `x-envoy-overloaded` (Envoy's `UO`), not queued; the waiting
/// one completes when the upstream answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_upstream_gets_a_fast_503_uo() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let heads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream = gated_upstream(gate, heads.clone()).await;
    let mut up = cluster("up", &[upstream]);
    up.pool = isthmus_model::snapshot::ConnectionPool {
        max_connections: Some(1),
        http1_max_pending_requests: Some(1),
        http2_max_requests: None,
        connect_timeout: None,
        max_requests_per_connection: None,
    };
    let l = serve_cluster(up, Limits::default());
    let addr = l.local_addr();
    let request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let in_flight = tokio::spawn(exchange_raw_within(addr, request, 30));
    eventually(Duration::from_secs(5), "the first request upstream", || {
        let n = heads.load(std::sync::atomic::Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
    let started = Instant::now();
    let mut b = tokio::spawn(exchange_raw_within(addr, request, 30));
    let mut c = tokio::spawn(exchange_raw_within(addr, request, 30));
    // The upstream answers nothing yet: the first answer is the refusal.
    let (refused, waiting) = tokio::select! {
        r = &mut b => (r.unwrap(), c),
        r = &mut c => (r.unwrap(), b),
    };
    let (head, body) = refused;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
    assert_eq!(header(&head, "x-envoy-overloaded"), Some("true"), "{head}");
    assert!(body.contains("overflow"), "{body}");
    assert_eq!(
        heads.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream"
    );
    open.send_replace(true);
    for task in [in_flight, waiting] {
        let (head, body) = task.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "slow");
    }
}

/// [`exchange_raw`] with a longer wait, for requests held by the upstream.
async fn exchange_raw_within(addr: SocketAddr, request: &[u8], secs: u64) -> (String, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(secs), read_response(&mut conn))
        .await
        .expect("an answer")
}

/// DestinationRule `connectionPool.tcp.connectTimeout` replaces the mesh-wide
/// connect timeout for its cluster: an upstream whose accept queue is full (its
/// SYNs dropped) gets a 503 after the cluster's 300 ms, not the default 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_connect_timeout_replaces_the_default() {
    // A listener that never accepts, its queue filled: new connects hang.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let full: SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(full));
        match attempt.await {
            Ok(Ok(conn)) => fillers.push(conn),
            _ => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let mut up = cluster("up", &[full]);
    up.pool.connect_timeout = Some(Duration::from_millis(300));
    let l = serve_cluster(up, Limits::default());
    let started = Instant::now();
    let (head, _) =
        exchange_raw(l.local_addr(), b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "503 after {took:?}"
    );
}

/// DestinationRule `http.maxRequestsPerConnection`: an upstream connection carries
/// at most that many requests (1 turns upstream keep-alive off); the client's own
/// connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_carry_at_most_max_requests_per_connection() {
    for (max, want) in [(1u32, 4usize), (2, 2)] {
        let one = Upstream::start("one").await;
        let mut up = cluster("up", &[one.addr]);
        up.pool.max_requests_per_connection = Some(max);
        let l = serve_cluster(up, Limits::default());
        let mut conn = TcpStream::connect(l.local_addr()).await.unwrap();
        for _ in 0..4 {
            conn.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
                .await
                .unwrap();
            let (head, body) = read_response(&mut conn).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, "one");
        }
        assert_eq!(one.requests(), 4);
        assert_eq!(
            one.connections(),
            want,
            "maxRequestsPerConnection {max}: upstream connections for 4 requests"
        );
    }
}
