//! Slow clients against `isthmus up` with real `slowhttptest` (Debian package):
//! slowloris (`-H`: a header line every second, never the end of the head) and
//! slow body (`-B`: a POST body sent a few bytes every 3 s), each a bounded run of
//! 300 connections. With `--request-head-timeout 2s` and `--body-timeout 2s` the
//! gateway closes every attacking connection at its timeout (read from
//! slowhttptest's per-second CSV), and a normal client's requests during the
//! attack, each on a new connection, all succeed (their p50/p99 are printed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::fixtures::{demo_backend, gateway, route_all, server};
use isthmus_testkit::{free_ports, ConfigDir, Up};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");
/// Attacking connections per run.
const CONNECTIONS: u32 = 300;
/// Length of each slowhttptest run, in seconds.
const RUN_SECS: u32 = 8;

fn have_slowhttptest() -> bool {
    let found = Command::new("slowhttptest")
        .arg("-h")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("slowhttptest"));
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "slowhttptest is missing (scripts/deps.sh installs it)"
        );
        eprintln!("skipped: slowhttptest is missing");
    }
    found
}

/// One row of slowhttptest's CSV (seconds, closed, pending, connected, ...).
#[derive(Debug)]
struct Row {
    seconds: u32,
    closed: u32,
    connected: u32,
}

fn read_csv(path: &Path) -> Vec<Row> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            Some(Row {
                seconds: f.first()?.parse().ok()?,
                closed: f.get(1)?.parse().ok()?,
                connected: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// GET `/` on a new connection every 50 ms while `running`, returning each
/// request's latency; any failure fails the test.
fn normal_client(addr: std::net::SocketAddr, until: Instant) -> Vec<Duration> {
    use std::io::{Read, Write};
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let mut tcp = std::net::TcpStream::connect(addr).expect("the normal client connects");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        tcp.read_to_end(&mut got)
            .expect("the normal client's response");
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "normal client during the attack: {got}"
        );
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// What one slowhttptest run showed.
struct Run {
    rows: Vec<Row>,
    /// Its closing lines: when and why the test ended.
    ended: String,
    /// The normal client's request latencies.
    latencies: Vec<Duration>,
}

/// Run slowhttptest in `mode` against `url`, a normal client beside it.
fn attack(mode: &str, url: &str, addr: std::net::SocketAddr, dir: &Path) -> Run {
    let prefix: PathBuf = dir.join(mode.trim_start_matches('-'));
    let mut cmd = Command::new("slowhttptest");
    cmd.arg(mode)
        .args([
            "-c",
            &CONNECTIONS.to_string(),
            "-r",
            "150",
            "-l",
            &RUN_SECS.to_string(),
        ])
        .args(["-p", "3", "-g", "-o"])
        .arg(&prefix)
        .args(["-u", url]);
    if mode == "-B" {
        cmd.args(["-i", "3", "-s", "10000"]);
    } else {
        cmd.args(["-i", "1"]);
    }
    let until = Instant::now() + Duration::from_secs(u64::from(RUN_SECS));
    let client = std::thread::spawn(move || normal_client(addr, until));
    let out = cmd.output().expect("run slowhttptest");
    let latencies = client.join().expect("the normal client");
    assert!(
        out.status.success(),
        "slowhttptest {mode}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ended = stdout
        .lines()
        .skip_while(|l| !l.contains("Test ended"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Run {
        rows: read_csv(&prefix.with_extension("csv")),
        ended,
        latencies,
    }
}

#[test]
fn slowloris_and_slow_body_are_closed_at_their_timeouts_and_others_are_served() {
    if !have_slowhttptest() {
        return;
    }
    let ports = free_ports(2);
    let (gw_port, app_port) = (ports[0], ports[1]);
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &gateway("gw", &server(gw_port, "http", "HTTP", r#"["*"]"#, None)),
    );
    dir.write(
        "routes.yaml",
        &(route_all("all", "gw", "slow.default.svc.cluster.local")
            + &demo_backend("slow", app_port)),
    );
    let up = Up::start(
        Path::new(BIN),
        dir.path(),
        &["--request-head-timeout", "2s", "--body-timeout", "2s"],
    );
    let addr = up.addr(gw_port);
    let url = format!("http://{addr}/");
    let out = tempfile::tempdir().expect("temp dir");

    for mode in ["-H", "-B"] {
        let Run {
            rows,
            ended,
            mut latencies,
        } = attack(mode, &url, addr, out.path());
        assert!(!rows.is_empty(), "{mode}: no statistics");
        let peak = rows.iter().map(|r| r.connected).max().unwrap_or(0);
        let last = rows.last().unwrap();
        let first_closed = rows.iter().find(|r| r.closed > 0).map(|r| r.seconds);
        latencies.sort();
        eprintln!(
            "slowhttptest {mode}: peak {peak} connected, first closed at {first_closed:?} s, \
             at {} s: {} closed, {} connected; {ended}; normal client: {} requests, \
             p50 {:?}, p99 {:?}",
            last.seconds,
            last.closed,
            last.connected,
            latencies.len(),
            percentile(&latencies, 50),
            percentile(&latencies, 99)
        );
        assert!(
            peak > CONNECTIONS / 2,
            "{mode}: the attack never got going ({rows:?})"
        );
        // Closed at the timeout: none before 2 s (the first opened at 0 s), and
        // every one of them well before the run's end (the last opened at about
        // 2 s): slowhttptest stops early, finding no open connection left.
        assert!(
            first_closed.is_some_and(|s| s >= 2),
            "{mode}: closed before the timeout ({rows:?})"
        );
        assert!(
            ended.contains("No open connections left"),
            "{mode}: attack connections left open: {ended:?} ({rows:?})"
        );
        assert!(
            last.seconds < RUN_SECS - 1,
            "{mode}: the attack lasted {} s ({rows:?})",
            last.seconds
        );
        assert!(
            latencies.len() >= 20,
            "{mode}: the normal client barely ran"
        );
    }
    drop(up);
}
