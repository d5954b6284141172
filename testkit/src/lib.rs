//! isthmus-testkit: what the integration tests share. Starts the real `isthmus`
//! binary as a child process (killed on drop), finds free loopback ports, waits for
//! readiness by polling with a deadline (never a fixed sleep), writes config
//! directories, and drives the real `curl`. YAML documents are in [`fixtures`], the
//! ACME set-up in [`acme`], certificates and `openssl` in [`pki`]. Only ever a
//! dev-dependency.

pub mod acme;
pub mod fixtures;
pub mod pebble;
pub mod pki;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768+), so a
/// client socket's automatic port can never take a server port between the moment
/// it is picked and the moment the server binds it.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// A port that was free a moment ago on 127.0.0.1. Each test process starts at its
/// own offset in [`PORT_RANGE`] (tests run as parallel processes) and never hands
/// out the same port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        // Spread processes 37 ports apart (pid-based), so two never probe in step.
        let start = (std::process::id().wrapping_mul(37)) % span;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let i = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORT_RANGE.start + i as u16;
        if reserve(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}");
}

/// Claim `port` for this process among the test processes running at once: an
/// exclusive lock on `$TMPDIR/isthmus-test-ports/PORT`, held until the process
/// ends (the kernel drops it then, also on a crash). Without it two processes can
/// both find a port free and both hand it out before either binds it. `true` also
/// when the lock directory cannot be used (then only the bind check remains).
fn reserve(port: u16) -> bool {
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("isthmus-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
        return true;
    };
    match file.try_lock() {
        Ok(()) => {
            if let Ok(mut held) = HELD.lock() {
                held.push(file);
            }
            true
        }
        Err(_) => false,
    }
}

/// `n` distinct free ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}

/// 127.0.0.1:`port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Run a command, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files (not directories) under `dir`, recursively; none when it does not exist.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Poll until `addr` accepts a TCP connection, or panic after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not accepting after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed when dropped. Its stdout and stderr lines are
/// collected; `wait_for_line` blocks until a line matching a predicate appears.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn child process");
        let (tx, rx) = mpsc::channel();
        fn pump<R: Read + Send + 'static>(r: R, tx: mpsc::Sender<String>) {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    eprintln!("  | {line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        pump(child.stdout.take().expect("stdout"), tx.clone());
        pump(child.stderr.take().expect("stderr"), tx);
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait for an output line for which `f` returns `Some`.
    pub fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> T {
        for l in &self.seen {
            if let Some(v) = f(l) {
                return v;
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = f(&l);
                    self.seen.push(l);
                    if let Some(v) = hit {
                        return v;
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "no expected output line within {timeout:?} (process status: {status:?}); output so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Wait for an output line containing every one of `needles`; returns it.
    pub fn wait_for_all(&mut self, timeout: Duration, needles: &[&str]) -> String {
        self.wait_for_line(timeout, |l| {
            needles.iter().all(|n| l.contains(n)).then(|| l.to_string())
        })
    }

    /// All output lines received so far (drains what is pending without blocking).
    pub fn output(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    /// SIGTERM first, so the process can stop what it started (`up` stops its demo
    /// apps); SIGKILL if it is still there after 2 s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary configuration directory.
pub struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write (or atomically replace) a file in the directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &path).expect("rename config");
        path
    }
}

impl Default for ConfigDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Result of one curl invocation.
#[derive(Debug)]
pub struct CurlOutput {
    pub status: u16,
    pub body: String,
}

/// Run the real `curl` with `args` plus `-s -w` and parse the status code.
pub fn curl(args: &[&str]) -> CurlOutput {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    CurlOutput {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// What `curl https://HOST:PORT/` got ([`curl_https`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status; 0 when there was no response (refused, failed handshake).
    pub status: u16,
    /// The HTTP version (`2`, `1.1`); `0` when there was no response.
    pub version: String,
    /// The first line of the body.
    pub first_line: String,
}

/// The real `curl https://HOST:PORT/` to 127.0.0.1:`port` (`--resolve`), trusting
/// `ca`, with `extra` options (`--http2`, `-k`, ...).
pub fn curl_https(ca: &Path, host: &str, port: u16, extra: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        version: version.trim().to_string(),
        first_line: body.lines().next().unwrap_or("").to_string(),
    }
}

/// `bin demo-app --name NAME --version VERSION --port PORT` (answering `NAME
/// VERSION`), once it accepts connections; killed when dropped.
pub fn demo_app(bin: &Path, name: &str, version: &str, port: u16) -> Proc {
    let proc = Proc::spawn(Command::new(bin).args([
        "demo-app",
        "--name",
        name,
        "--version",
        version,
        "--port",
        &port.to_string(),
    ]));
    wait_for_port(loopback(port), Duration::from_secs(30));
    proc
}

/// A running `isthmus up DIR` with the listener addresses it printed.
pub struct Up {
    pub proc: Proc,
    /// (declared Gateway port, local address) for every listener printed at start.
    pub listeners: Vec<(u16, SocketAddr)>,
    /// Where `up` wrote its runtime file (for `proxy-status` without flags), unless
    /// the command chose it.
    pub runtime_dir: Option<PathBuf>,
}

impl Up {
    /// Start `bin up dir extra...` and wait until it prints `ready:`.
    pub fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Up {
        let mut cmd = Command::new(bin);
        cmd.arg("up").arg(dir).args(extra);
        Up::spawn(&mut cmd)
    }

    /// Start `cmd` (an `isthmus up` command line) and wait until it prints `ready:`.
    /// Unless the command sets them, the controller's push and admin ports are
    /// ephemeral and its runtime file goes to a directory of this test's own, so
    /// tests running side by side do not collide.
    pub fn spawn(cmd: &mut Command) -> Up {
        let set: Vec<String> = cmd
            .get_envs()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        let runtime = runtime_dir();
        let own_runtime = !set.iter().any(|s| s == "ISTHMUS_RUNTIME_DIR");
        for (k, v) in [
            ("ISTHMUS_XDS_PORT", "0".to_string()),
            ("ISTHMUS_ADMIN_PORT", "0".to_string()),
            ("ISTHMUS_RUNTIME_DIR", runtime.display().to_string()),
        ] {
            if !set.iter().any(|s| s == k) {
                cmd.env(k, v);
            }
        }
        let mut proc = Proc::spawn(cmd);
        proc.wait_for_line(Duration::from_secs(20), |l| {
            l.starts_with("ready:").then_some(())
        });
        let listeners = proc
            .output()
            .iter()
            .filter_map(|l| parse_listener_line(l))
            .collect();
        Up {
            proc,
            listeners,
            runtime_dir: own_runtime.then_some(runtime),
        }
    }

    /// Wait until the HTTPS listener of Gateway port `port` (1024 and above: bound
    /// as declared) is up.
    pub fn wait_https_listener(&mut self, port: u16) {
        let listening = format!("listening https://127.0.0.1:{port} (Gateway port {port})");
        self.proc.wait_for_line(Duration::from_secs(10), |l| {
            l.contains(&listening).then_some(())
        });
    }

    /// The local address serving a declared Gateway port.
    pub fn addr(&self, gateway_port: u16) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(p, _)| *p == gateway_port)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| {
                panic!(
                    "no listener for Gateway port {gateway_port}: {:?}",
                    self.listeners
                )
            })
    }
}

/// A fresh directory for one `up`'s runtime file (under the system temp dir; left
/// for the OS to clean, like other test temp files named by process and count).
pub fn runtime_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "isthmus-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Parse `gateway NAME: Gateway port 80 -> http://127.0.0.1:8080` (or `https://`).
pub fn parse_listener_line(l: &str) -> Option<(u16, SocketAddr)> {
    let rest = l.split_once("Gateway port ")?.1;
    let (port, url) = rest.split_once(" -> ")?;
    let addr = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some((
        port.trim().parse().ok()?,
        addr.trim().trim_end_matches('/').parse().ok()?,
    ))
}
