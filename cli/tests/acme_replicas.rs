//! Replicas: two `isthmus up` processes on one configuration directory and one
//! `--state-dir`, on different ports (`--port-offset`), against a real pebble
//! (skipped with a message when pebble is not installed). Exactly one of them orders
//! (the `flock` per Secret in the state directory), and the other one answers the
//! CA: pebble's validation port is a forwarder in this test that sends every
//! connection to the replica whose log has no `acme: ordering` line, so the order
//! only succeeds when the challenge published in `STATE/challenges/` is answered by
//! the replica that did not order. Both replicas then serve the issued certificate.

use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use isthmus_testkit::acme::{certificate, pebble_issuer, secret_value, Site};
use isthmus_testkit::pebble::{verify_chain, Pebble};
use isthmus_testkit::{
    curl_https, demo_app, files_under, free_port, loopback, wait_until, ConfigDir, Proc, Up,
};

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");
const WAIT: Duration = Duration::from_secs(30);
/// The host ordered.
const HOST: &str = "replicas.test";

/// Gateway ports 80 and 443 (each replica maps them with its own `--port-offset`)
/// for [`HOST`], routed to the demo app on `app`; ClusterIssuer `pebble` answering
/// `challenge`; Certificate `istio-system/acme-cert` writing `acme-tls`.
fn config(pebble: &Pebble, app: u16, challenge: &str) -> String {
    let hosts = format!("[{HOST}]");
    Site::new(80, 443, &hosts, app).yaml()
        + &pebble_issuer(pebble, Some(challenge))
        + &certificate(&[HOST], "")
}

/// A `--port-offset` under which Gateway ports 80 and 443 are both free.
fn free_offset() -> u16 {
    for _ in 0..200 {
        let http = free_port();
        let offset = http - 80;
        if TcpListener::bind(("127.0.0.1", 443 + offset)).is_ok() {
            return offset;
        }
    }
    panic!("no port offset with both 80 and 443 free");
}

/// The replicas, shared with the forwarder's threads.
type Replicas = Arc<Mutex<Vec<Up>>>;

fn ordered(up: &mut Up) -> bool {
    up.proc
        .output()
        .iter()
        .any(|l| l.contains("acme: ordering"))
}

/// Lines of replica `i` containing `needle`.
fn lines(replicas: &Replicas, i: usize, needle: &str) -> Vec<String> {
    let mut all = replicas.lock().expect("replicas");
    all[i]
        .proc
        .output()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// Wait until replica `i` prints a line containing `needle` (polling, so the
/// forwarder can read the logs meanwhile).
fn wait_line(replicas: &Replicas, i: usize, needle: &str) -> String {
    wait_until(&format!("replica {i}: {needle:?}"), WAIT, || {
        lines(replicas, i, needle).into_iter().next()
    })
}

/// A TCP forwarder on `listener` (pebble's validation port): each connection goes
/// to `ports[i]` of the replica `i` that has not ordered, chosen when it arrives.
struct Forwarder {
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// The replica each connection was sent to (`None`: none could be chosen).
    sent: Arc<Mutex<Vec<Option<usize>>>>,
}

impl Forwarder {
    fn start(listener: TcpListener, replicas: Replicas, ports: Vec<u16>) -> Forwarder {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                let target = {
                    let mut all = replicas.lock().expect("replicas");
                    let done: Vec<bool> = all.iter_mut().map(ordered).collect();
                    // Exactly one ordered: the other one answers.
                    (done.iter().filter(|d| **d).count() == 1)
                        .then(|| done.iter().position(|d| !d))
                        .flatten()
                };
                sent2.lock().expect("sent").push(target);
                if let Some(i) = target {
                    let port = ports[i];
                    std::thread::spawn(move || pipe(client, port));
                }
            }
        });
        Forwarder {
            stop,
            accept: Some(accept),
            sent,
        }
    }

    fn sent(&self) -> Vec<Option<usize>> {
        self.sent.lock().expect("sent").clone()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Copy bytes both ways between `client` and 127.0.0.1:`port` until both close
/// (each read gives up after 10 s).
fn pipe(client: TcpStream, port: u16) {
    client.set_nonblocking(false).expect("blocking");
    let Ok(upstream) = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(5)) else {
        return;
    };
    for s in [&client, &upstream] {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    }
    let (mut c_read, mut u_write) = (
        client.try_clone().expect("clone"),
        upstream.try_clone().expect("clone"),
    );
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = std::io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// `curl https://HOST:port/` verifying against `root`: (status, first body line).
fn get(root: &Path, port: u16) -> (u16, String) {
    let r = curl_https(root, HOST, port, &[]);
    (r.status, r.first_line)
}

/// Two replicas, one order, the challenge (`http-01` or `tls-alpn-01`) answered by
/// the replica that did not order.
fn replicas_share_the_challenge(challenge: &str) {
    // pebble validates on the forwarder; the other challenge port is a listener
    // that never accepts (nothing may connect to it).
    let forward = TcpListener::bind(("127.0.0.1", free_port())).expect("bind forwarder");
    let unused = TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
    unused.set_nonblocking(true).expect("nonblocking");
    let (f, u) = (
        forward.local_addr().expect("addr").port(),
        unused.local_addr().expect("addr").port(),
    );
    let tls = challenge == "tls-alpn-01";
    let started = if tls {
        Pebble::start_ports(u, f)
    } else {
        Pebble::start_ports(f, u)
    };
    let Some(mut pebble) = started else {
        return;
    };
    let app = free_port();
    let _app = demo_app(Path::new(BIN), "a", "v1", app);
    let dir = ConfigDir::new();
    dir.write("all.yaml", &config(&pebble, app, challenge));
    let state = ConfigDir::new();
    let state_arg = state.path().display().to_string();

    // Hold the Secret's order lock from outside (flock(1), the same flock(2) lock)
    // until both replicas run and wait for it: then either may take it.
    let locks = state.path().join("locks");
    std::fs::create_dir_all(&locks).expect("mkdir locks");
    let lock = locks.join("istio-system.acme-tls.lock");
    let holder = Proc::spawn(
        Command::new("flock")
            .args(["--exclusive", "--no-fork"])
            .arg(&lock)
            .args(["sleep", "60"]),
    );
    wait_until("flock(1) to hold the order lock", WAIT, || {
        let free = Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(&lock)
            .arg("true")
            .status()
            .expect("run flock");
        (!free.success()).then_some(())
    });

    let offsets = [free_offset(), free_offset()];
    let replicas: Replicas = Arc::new(Mutex::new(Vec::new()));
    for off in offsets {
        let up = Up::start(
            Path::new(BIN),
            dir.path(),
            &["--state-dir", &state_arg, "--port-offset", &off.to_string()],
        );
        replicas.lock().expect("replicas").push(up);
    }
    let validation_port = |off: u16| if tls { 443 + off } else { 80 + off };
    let forwarder = Forwarder::start(
        forward,
        replicas.clone(),
        offsets.iter().map(|o| validation_port(*o)).collect(),
    );
    for i in 0..2 {
        wait_line(&replicas, i, "acme: another isthmus is ordering");
    }
    drop(holder);

    // One of them takes the lock and orders; the other answers the CA.
    let issued = wait_until("one replica to issue", WAIT, || {
        for i in 0..2 {
            if let Some(failed) = lines(&replicas, i, "acme: order for").first() {
                panic!("replica {i}: {failed}");
            }
        }
        (0..2).find(|i| !lines(&replicas, *i, "acme: issued istio-system/acme-tls").is_empty())
    });
    let orderer = issued;
    let answerer = 1 - orderer;
    let answered = if tls {
        format!("acme: answering the TLS-ALPN-01 challenge for {HOST} published by a replica")
    } else {
        "acme: answered HTTP-01 token".to_string()
    };
    let by_answerer = lines(&replicas, answerer, &answered);
    assert!(
        !by_answerer.is_empty(),
        "replica {answerer} answered nothing"
    );
    assert!(
        lines(&replicas, orderer, &answered).is_empty(),
        "the ordering replica answered from the shared directory"
    );
    let served = wait_line(
        &replicas,
        orderer,
        "acme: challenge served for replicas.test",
    );
    assert!(
        served.contains(if tls {
            "(tls-alpn-01)"
        } else {
            "fetches by the CA"
        }) && !served.contains("(0 "),
        "{served}"
    );
    let sent = forwarder.sent();
    assert!(
        !sent.is_empty() && sent.iter().all(|t| *t == Some(answerer)),
        "every validation connection goes to replica {answerer}: {sent:?}"
    );
    match unused.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("pebble used the other challenge type's port: {other:?}"),
    }

    // Exactly one order, and both replicas serve its certificate.
    let root = pebble.issuing_root_file();
    for (i, off) in offsets.iter().enumerate() {
        wait_until(
            &format!("replica {i} to serve the certificate"),
            WAIT,
            || (get(&root, 443 + off) == (200, "a v1".to_string())).then_some(()),
        );
    }
    let orders: usize = (0..2)
        .map(|i| lines(&replicas, i, "acme: ordering").len())
        .sum();
    assert_eq!(orders, 1, "one order over both replicas");
    assert_eq!(pebble.orders(), 1, "pebble saw one order");
    let chain = secret_value(
        &state.path().join("secrets/istio-system.acme-tls.yaml"),
        "tls.crt",
    );
    verify_chain(&root, &chain).unwrap_or_else(|e| panic!("chain does not verify: {e}"));
    let left = files_under(&state.path().join("challenges"));
    assert!(left.is_empty(), "challenge files left: {left:?}");
    drop(forwarder);
}

#[test]
fn acme_replicas_share_http01_challenges_and_order_once() {
    replicas_share_the_challenge("http-01");
}

#[test]
fn acme_replicas_share_tls_alpn01_challenges_and_order_once() {
    replicas_share_the_challenge("tls-alpn-01");
}
