//! 10,000 idle keep-alive client connections through `isthmus up` (loopback only):
//! every connection gets its first response, all of them stay open while the
//! gateway's resident memory is read from /proc, and every one of them then carries
//! a second request (the gateway kept them all). The RSS, in total and per
//! connection above the level before the connections, is printed, and bounded:
//! at most 6 KB per idle connection (Pingora's `ProxyHttp` held ~100 KB, the first
//! version of our core ~9 KB before its per-request work was boxed; now ~2.3 KB in
//! a debug build).
//!
//! A second test opens 10,000 connections from one client address against a
//! per-address limit of 1,000 (`--max-connections-per-ip`): the first 1,000 are
//! served, the other 9,000 are refused at once (reset), another address
//! (127.0.0.2) is served meanwhile, and the 1,000 kept connections still work.
//!
//! The upstream is this test's own minimal HTTP/1.1 server, and it answers with
//! `Connection: close`, so the gateway holds one descriptor per idle client from
//! the start (with a keep-alive upstream, an idle client gives its upstream
//! connection back to the pool after 50 ms: engine/src/h1.rs,
//! `HOLD_UPSTREAM_WHILE_IDLE`), and 10,000 clients fit a hard RLIMIT_NOFILE of
//! 20,000 (containers often have that). The load benchmarks (`idle-5k`,
//! `idle-10k`) measure the keep-alive upstream case.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_testkit::fixtures::{gateway, http_service, route_all, server};
use isthmus_testkit::{free_ports, ConfigDir, Up};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");
/// Idle client connections held at once.
const CONNECTIONS: usize = 10_000;
/// Connections being opened (or requests in flight) at a time.
const IN_FLIGHT: usize = 200;
/// Descriptors this process and the gateway need: the client connections, the
/// upstream connections of the requests in flight, and the rest.
const FDS_NEEDED: u64 = CONNECTIONS as u64 + 2_000;
/// Each round (open + first request, second request) ends within this.
const ROUND_DEADLINE: Duration = Duration::from_secs(120);
/// Resident memory of the gateway process with all connections open.
const RSS_LIMIT_KIB: u64 = 200 * 1024;
/// Resident memory per idle connection, above the level before.
const PER_CONNECTION_LIMIT_KIB: f64 = 6.0;
const BODY: &[u8] = b"idle upstream\n";

/// (soft, hard) RLIMIT_NOFILE of this process, from /proc/self/limits.
fn nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/self/limits");
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| match w {
            "unlimited" => Some(u64::MAX),
            w => w.parse().ok(),
        })
        .collect();
    (v[0], v[1])
}

/// Raise this process's soft RLIMIT_NOFILE to its hard limit (the gateway child
/// inherits it). The workspace forbids `unsafe` and has no rlimit crate among this
/// package's dependencies, so util-linux's `prlimit --pid` does the setrlimit.
fn raise_nofile() -> u64 {
    let (soft, hard) = nofile();
    assert!(
        hard >= FDS_NEEDED,
        "RLIMIT_NOFILE hard limit {hard} is below the {FDS_NEEDED} descriptors this test \
         (and the gateway it starts) needs for {CONNECTIONS} connections; raise it \
         (`ulimit -Hn {FDS_NEEDED}` as root, or the container's nofile limit)"
    );
    if soft >= FDS_NEEDED {
        return soft;
    }
    let target = hard.min(1 << 20);
    let out = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:{hard}"))
        .output()
        .expect("run prlimit (util-linux) to raise RLIMIT_NOFILE");
    assert!(
        out.status.success(),
        "prlimit --nofile={target}:{hard} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (soft, _) = nofile();
    assert!(soft >= FDS_NEEDED, "RLIMIT_NOFILE soft limit still {soft}");
    soft
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The PID of `up` (the gateway runs in that process; demo apps, none here, would be
/// children): from the runtime file it writes for `proxy-status`.
fn gateway_pid(up: &Up) -> u32 {
    let file = up
        .runtime_dir
        .as_ref()
        .expect("the test's runtime dir")
        .join("controller.json");
    let text =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("runtime file is JSON");
    let pid = v["pid"].as_u64().expect("pid in the runtime file") as u32;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("up"),
        "PID {pid} from {} is not `isthmus up`",
        file.display()
    );
    pid
}

/// The upstream: reads one request header per connection, answers 200 with
/// [`BODY`] and `Connection: close`, closes.
async fn upstream(listener: TcpListener) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                BODY.len()
            )
            .into_bytes();
            resp.extend_from_slice(BODY);
            let _ = tcp.write_all(&resp).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// One GET on `tcp` (HTTP/1.1, keep-alive); returns (status, body). Understands a
/// `Content-Length` or chunked body; fails on a response that closes the connection.
async fn get(tcp: &mut TcpStream, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Error, ErrorKind};
    let req = format!("GET {path} HTTP/1.1\r\nHost: idle.test\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, format!("{what}: {head:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
        return Err(bad("the gateway closes the connection"));
    }
    let mut rest = buf.split_off(head_end);
    let body = if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        fill(tcp, &mut rest, len).await?;
        rest.truncate(len);
        rest
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let more = rest.len() + 1;
                fill(tcp, &mut rest, more).await?;
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            // The chunk and its CRLF (the last chunk: the empty trailer's CRLF).
            let end = line_end + 2 + size + 2;
            fill(tcp, &mut rest, end).await?;
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..end);
            if size == 0 {
                break body;
            }
        }
    } else {
        return Err(bad("no content-length, not chunked"));
    };
    Ok((status, body))
}

/// Read from `tcp` until `buf` holds at least `want` bytes.
async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    while buf.len() < want {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed in the body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

fn check(i: usize, round: &str, got: std::io::Result<(u16, Vec<u8>)>) -> Result<(), String> {
    match got {
        Ok((200, body)) if body == BODY => Ok(()),
        Ok((status, body)) => Err(format!(
            "connection {i}, {round} request: status {status}, body {:?}",
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(format!("connection {i}, {round} request: {e}")),
    }
}

/// Run `work` for every item with at most [`IN_FLIGHT`] at a time, all of it
/// within [`ROUND_DEADLINE`]; panics on any failure. Returns the results in item
/// order.
async fn bounded<T, R, F, W>(round: &str, items: Vec<T>, work: W) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: std::future::Future<Output = Result<R, String>> + Send + 'static,
    W: Fn(usize, T) -> F,
{
    let started = Instant::now();
    let n = items.len();
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    let mut failures = Vec::new();
    let all = async {
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut tasks = JoinSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let permit = permits.clone().acquire_owned().await.expect("semaphore");
            let job = work(i, item);
            tasks.spawn(async move {
                let r = job.await;
                drop(permit);
                (i, r)
            });
            // Collect what finished, so failures show up early.
            while let Some(joined) = tasks.try_join_next() {
                match joined.expect("client task") {
                    (i, Ok(r)) => out[i] = Some(r),
                    (_, Err(e)) => failures.push(e),
                }
            }
        }
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("client task") {
                (i, Ok(r)) => out[i] = Some(r),
                (_, Err(e)) => failures.push(e),
            }
        }
    };
    let timed_out = tokio::time::timeout(ROUND_DEADLINE, all).await.is_err();
    let done = out.iter().filter(|o| o.is_some()).count();
    assert!(
        !timed_out,
        "{round}: {done} of {n} done, {} failed within {ROUND_DEADLINE:?}, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        failures.is_empty(),
        "{round}: {} of {n} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("{round}: {n} connections in {:.1?}", started.elapsed());
    out.into_iter().map(|o| o.expect("every result")).collect()
}

/// A config directory with one gateway port routing everything to [`upstream`],
/// which runs on the returned runtime: (directory, Gateway port, runtime).
fn gateway_to_upstream() -> (ConfigDir, u16, tokio::runtime::Runtime) {
    let ports = free_ports(2);
    let (gw_port, upstream_port) = (ports[0], ports[1]);
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &gateway("gw", &server(gw_port, "http", "HTTP", r#"["*"]"#, None)),
    );
    dir.write(
        "routes.yaml",
        &(route_all("all", "gw", "up.default.svc.cluster.local")
            + &http_service("up", "up", upstream_port)),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = rt
        .block_on(TcpListener::bind(("127.0.0.1", upstream_port)))
        .expect("bind the upstream");
    rt.spawn(upstream(listener));
    (dir, gw_port, rt)
}

#[test]
fn ten_thousand_idle_keep_alive_connections_are_kept_in_bounded_memory() {
    let limit = raise_nofile();
    let (dir, gw_port, rt) = gateway_to_upstream();

    let up = Up::start(Path::new(BIN), dir.path(), &["--no-demo-apps"]);
    let addr = up.addr(gw_port);
    let pid = gateway_pid(&up);
    let gw_limit = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let gw_limit = gw_limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("?")
        .to_string();
    eprintln!("RLIMIT_NOFILE: test {limit}; gateway: {gw_limit}");

    rt.block_on(async move {
        // Baseline after start-up and one request (routes resolved, first
        // allocations made).
        let mut warm = TcpStream::connect(addr).await.expect("connect");
        check(0, "warm-up", get(&mut warm, "/warm-up").await).unwrap();
        drop(warm);
        let base_kib = status_kib(pid, "VmRSS");

        // Round 1: open every connection and send its first request.
        let conns = bounded(
            "open + first request",
            vec![addr; CONNECTIONS],
            |i, addr| async move {
                let mut tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connection {i}: connect: {e}"))?;
                check(i, "first", get(&mut tcp, &format!("/first/{i}")).await)?;
                Ok(tcp)
            },
        )
        .await;

        // All open and idle: the gateway holds every one of them.
        let rss_kib = status_kib(pid, "VmRSS");
        let fds = open_fds(pid);
        let per_conn_kib = rss_kib.saturating_sub(base_kib) as f64 / CONNECTIONS as f64;
        eprintln!(
            "gateway (PID {pid}) VmRSS: {:.1} MB before, {:.1} MB with {CONNECTIONS} idle \
             keep-alive connections: {per_conn_kib:.2} KB per connection; VmHWM {:.1} MB; \
             {fds} open descriptors",
            base_kib as f64 / 1024.0,
            rss_kib as f64 / 1024.0,
            status_kib(pid, "VmHWM") as f64 / 1024.0,
        );
        assert!(
            fds >= CONNECTIONS,
            "the gateway has {fds} descriptors open: it did not keep {CONNECTIONS} connections"
        );

        // Round 2: every kept connection carries another request.
        let conns = bounded("second request", conns, |i, mut tcp| async move {
            check(i, "second", get(&mut tcp, &format!("/second/{i}")).await)?;
            Ok(tcp)
        })
        .await;
        drop(conns);

        assert!(
            rss_kib < RSS_LIMIT_KIB,
            "gateway VmRSS {:.1} MB with {CONNECTIONS} idle connections (limit {} MB)",
            rss_kib as f64 / 1024.0,
            RSS_LIMIT_KIB / 1024
        );
        assert!(
            per_conn_kib <= PER_CONNECTION_LIMIT_KIB,
            "{per_conn_kib:.2} KB per idle connection (limit {PER_CONNECTION_LIMIT_KIB} KB)"
        );
    });
    drop(up);
}

/// Connections a single client address may hold in the per-address test.
const PER_IP_LIMIT: usize = 1_000;

/// A connection to `to` from the local address `from`.
async fn connect_from(from: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("address"))?;
    socket.connect(to).await
}

/// Whether a new connection is refused: reset while connecting, or closed (EOF or
/// reset) without a byte of response within 2 s of sending a request.
async fn refused(to: std::net::SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut tcp = match connect_from("127.0.0.1", to).await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return Ok(started.elapsed());
        }
        Err(e) => return Err(format!("connect: {e}")),
        Ok(tcp) => tcp,
    };
    let _ = tcp
        .write_all(b"GET /over HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .await;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok(started.elapsed()),
        Ok(Ok(_)) => Err("served over the per-address limit".into()),
        Err(_) => Err("neither served nor closed within 2 s".into()),
    }
}

#[test]
fn ten_thousand_connections_from_one_address_stop_at_the_per_address_limit() {
    raise_nofile();
    let (dir, gw_port, rt) = gateway_to_upstream();
    let limit = PER_IP_LIMIT.to_string();
    let up = Up::start(
        Path::new(BIN),
        dir.path(),
        &["--no-demo-apps", "--max-connections-per-ip", &limit],
    );
    let addr = up.addr(gw_port);
    let pid = gateway_pid(&up);
    rt.block_on(async move {
        let held = bounded(
            "held connections",
            vec![addr; PER_IP_LIMIT],
            |i, addr| async move {
                let mut tcp = connect_from("127.0.0.1", addr)
                    .await
                    .map_err(|e| format!("connection {i}: connect: {e}"))?;
                check(i, "first", get(&mut tcp, &format!("/first/{i}")).await)?;
                Ok(tcp)
            },
        )
        .await;
        let over = CONNECTIONS - PER_IP_LIMIT;
        let times = bounded(
            "refused connections",
            vec![addr; over],
            |i, addr| async move {
                refused(addr)
                    .await
                    .map_err(|e| format!("connection {i}: {e}"))
            },
        )
        .await;
        let slowest = times.iter().max().copied().unwrap_or_default();
        let mut sorted = times.clone();
        sorted.sort();
        eprintln!(
            "{over} connections over the limit refused: median {:?}, slowest {slowest:?}",
            sorted[sorted.len() / 2]
        );
        assert!(
            slowest < Duration::from_secs(1),
            "a refusal took {slowest:?}"
        );

        // Another client address is served meanwhile.
        let mut other = connect_from("127.0.0.2", addr)
            .await
            .expect("connect from 127.0.0.2");
        check(0, "127.0.0.2", get(&mut other, "/other").await).unwrap();

        let rss = status_kib(pid, "VmRSS");
        eprintln!(
            "gateway VmRSS {:.1} MB after the flood",
            rss as f64 / 1024.0
        );
        assert!(rss < RSS_LIMIT_KIB, "gateway VmRSS {rss} KiB");

        // The kept connections still carry requests.
        let held = bounded("held, second request", held, |i, mut tcp| async move {
            check(i, "second", get(&mut tcp, &format!("/second/{i}")).await)?;
            Ok(tcp)
        })
        .await;
        drop(held);
    });
    drop(up);
}
