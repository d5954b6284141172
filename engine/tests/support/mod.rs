//! Test support shared by the engine and gateway tests: a tiny HTTP/1.1 upstream
//! that answers its own name (and echoes what it saw in `x-seen-*` headers), and
//! builders for hand-made snapshots. Included by path from `gateway/tests`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_model::snapshot::{
    Cluster, ClusterId, Endpoint, Listener, ListenerProtocol, PathMatch, Route, RouteAction,
    RouteMatch, Router, Snapshot, StrMatch, VirtualHost, WeightedClusters,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A keep-alive HTTP/1.1 server on 127.0.0.1 whose body is its name.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        Upstream::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    pub async fn start_on(bind: SocketAddr, name: &'static str) -> Upstream {
        let listener = TcpListener::bind(bind).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, name, r.clone()));
            }
        });
        Upstream {
            name,
            addr,
            connections,
            requests,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, name: &'static str, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let mut seen = Vec::new();
        let mut body_len = 0usize;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                match k.as_str() {
                    "host"
                    | "x-forwarded-proto"
                    | "x-forwarded-for"
                    | "x-request-id"
                    | "x-forwarded-client-cert" => seen.push((k, v)),
                    k if k.starts_with("x-envoy-") => seen.push((k.to_string(), v)),
                    "content-length" => body_len = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        requests.fetch_add(1, Ordering::SeqCst);
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-seen-path: {path}\r\n",
            name.len()
        );
        for (k, v) in seen {
            resp.push_str(&format!("x-seen-{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(name);
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// An address nothing listens on (bound once, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Poll `cond` until it holds, failing the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn cluster(name: &str, endpoints: &[SocketAddr]) -> Cluster {
    cluster_of(
        name,
        endpoints
            .iter()
            .map(|a| Endpoint {
                address: a.ip().to_string(),
                port: a.port(),
                mtls: None,
                logical_dns: false,
            })
            .collect(),
    )
}

pub fn cluster_of(name: &str, endpoints: Vec<Endpoint>) -> Cluster {
    Cluster {
        name: format!("outbound|80||{name}"),
        host: name.to_string(),
        port: 80,
        subset: None,
        endpoints,
        cursor: AtomicUsize::new(0),
        pool: Default::default(),
    }
}

/// A route forwarding to `(cluster index, weight)` targets, optionally on a path prefix.
pub fn forward(prefix: Option<&str>, targets: &[(u32, u32)]) -> Route {
    Route {
        source: Arc::from("VirtualService default/test rule 0"),
        name: None,
        matcher: RouteMatch {
            uri: prefix.map(|p| PathMatch {
                kind: StrMatch::Prefix(p.to_string()),
                ignore_case: false,
            }),
            ..RouteMatch::default()
        },
        action: RouteAction::Forward(WeightedClusters {
            targets: targets.iter().map(|&(c, w)| (ClusterId(c), w)).collect(),
            total: targets.iter().map(|t| t.1).sum(),
        }),
    }
}

pub fn vhost(domain: &str, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: format!("{domain}:80"),
        domains: vec![domain.to_string()],
        routes,
        https_redirect: false,
    }
}

/// A snapshot with one HTTP listener per `(Gateway port, vhosts)`.
pub fn snapshot(
    version: u64,
    listeners: Vec<(u16, Vec<VirtualHost>)>,
    clusters: Vec<Cluster>,
) -> Snapshot {
    Snapshot {
        version,
        listeners: listeners
            .into_iter()
            .map(|(port, vhosts)| Listener {
                port,
                protocol: ListenerProtocol::Http,
                router: Router::new(vhosts),
            })
            .collect(),
        clusters,
        inbound: Vec::new(),
    }
}

/// A reqwest client sending `domain` requests to `proxy` (HTTP/1.1 keep-alive, or
/// HTTP/2 with prior knowledge).
pub fn client(domain: &str, proxy: SocketAddr, h2c: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .resolve(domain, proxy)
        .timeout(Duration::from_secs(10));
    let b = if h2c {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().expect("client")
}

/// `http://domain:port/path` for a proxy address.
pub fn url(domain: &str, proxy: SocketAddr, path: &str) -> String {
    format!("http://{domain}:{}{path}", proxy.port())
}

/// GET and return (status, body).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client.get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// The value of header `name` in a response head.
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Read one response with a content-length body: (head, body).
pub async fn read_response(conn: &mut TcpStream) -> (String, String) {
    read_response_to(conn, false).await
}

/// Read one response; a response to HEAD has no body whatever its content-length.
pub async fn read_response_to(conn: &mut TcpStream, head_request: bool) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = if head_request {
                0
            } else {
                header(&head, "content-length")
                    .and_then(|v| v.parse().ok())
                    .expect("content-length")
            };
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(buf.len(), end + 4 + len, "no extra bytes");
            return (head, String::from_utf8_lossy(&buf[end + 4..]).into_owned());
        }
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Echo each request's body back with a `Content-Length`; `x-saw-expect` says
/// whether the request carried `Expect`.
pub async fn echo_bodies(mut conn: TcpStream) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end + 4);
        let saw_expect = head.contains("\r\nexpect:");
        let mut body = Vec::new();
        if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            while buf.len() < len {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            body.extend(buf.drain(..len));
        } else if header(&head, "transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16)
                        .unwrap();
                buf.drain(..line_end + 2);
                while buf.len() < size + 2 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                body.extend(buf.drain(..size));
                buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-saw-expect: {}\r\n\r\n",
            body.len(),
            if saw_expect { "yes" } else { "no" }
        );
        if conn.write_all(resp.as_bytes()).await.is_err() || conn.write_all(&body).await.is_err() {
            return;
        }
    }
}

/// Send `request` on a new connection to `addr` and read one response (status line
/// and head, body by content-length) within 5 s.
pub async fn exchange_raw(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), read_response(&mut conn))
        .await
        .expect("an answer within 5 s")
}

/// Debian's python3 with hyperframe and hpack (the raw HTTP/2 frame scripts), or
/// `None` when they are missing: the caller skips, except under `CI`, where a
/// missing peer fails the test.
pub fn hyperframe_python() -> Option<&'static str> {
    let python = "/usr/bin/python3";
    let have = std::process::Command::new(python)
        .args(["-c", "import hyperframe, hpack"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-hyperframe and python3-hpack are missing (scripts/deps.sh installs them)"
        );
        eprintln!("skipped: python3-hyperframe / python3-hpack missing");
        return None;
    }
    Some(python)
}

/// Run tests/h2flood/attack.py in `mode` against the h2c listener at `addr`
/// (authority `a.example`) and return its one-line verdict (`goaway N ...`,
/// `closed ...`, `open ...`); the script failing fails the test.
pub async fn h2_attack(python: &str, addr: SocketAddr, mode: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2flood/attack.py");
    let out = tokio::process::Command::new(python)
        .args([script, &addr.to_string(), mode, "a.example"])
        .output()
        .await
        .expect("run the attack");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{mode}: {}", said.trim());
    assert!(
        out.status.success(),
        "{mode}: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}
