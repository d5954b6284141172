//! The DNS cache of host-name endpoints against a real DNS server on 127.0.0.1 that
//! each test starts: a small authoritative UDP server written here, answering A and
//! AAAA queries from a table the test changes at run time, with the TTL the test sets,
//! and switches to answer SERVFAIL, to stay silent, or to answer late. It logs every
//! query it receives, so a test can tell a cached answer from a fresh lookup.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isthmus_engine::dns::DnsCache;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Answer,
    ServFail,
    Silent,
}

struct Zone {
    /// Name (lower case, no final dot) -> addresses and TTL.
    records: HashMap<String, (Vec<IpAddr>, u32)>,
    mode: Mode,
    /// How long the server waits before answering.
    delay: Duration,
    /// Every query received: name, type, when.
    log: Vec<(String, u16, Instant)>,
}

struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    async fn start() -> DnsServer {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = socket.local_addr().expect("addr");
        let zone = Arc::new(Mutex::new(Zone {
            records: HashMap::new(),
            mode: Mode::Answer,
            delay: Duration::ZERO,
            log: Vec::new(),
        }));
        let task = tokio::spawn(serve(socket, zone.clone()));
        DnsServer { addr, zone, task }
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone.lock().expect("zone lock")
    }

    fn set(&self, name: &str, addrs: &[&str], ttl: u32) {
        let addrs = addrs.iter().map(|a| a.parse().expect("ip")).collect();
        self.zone().records.insert(name.into(), (addrs, ttl));
    }

    fn mode(&self, mode: Mode) {
        self.zone().mode = mode;
    }

    fn delay(&self, delay: Duration) {
        self.zone().delay = delay;
    }

    /// When the A queries for `name` arrived.
    fn a_queries(&self, name: &str) -> Vec<Instant> {
        self.zone()
            .log
            .iter()
            .filter(|(n, t, _)| n == name && *t == TYPE_A)
            .map(|(_, _, at)| *at)
            .collect()
    }
}

async fn serve(socket: Arc<UdpSocket>, zone: Arc<Mutex<Zone>>) {
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some((name, qtype, question)) = parse_query(&buf[..n]) else {
            continue;
        };
        let (reply, delay) = {
            let mut z = zone.lock().expect("zone lock");
            z.log.push((name.clone(), qtype, Instant::now()));
            let reply = match z.mode {
                Mode::Silent => None,
                Mode::ServFail => Some(response(&buf[..n], question, 2, &[], 0)),
                Mode::Answer => Some(match z.records.get(&name) {
                    None => response(&buf[..n], question, 3, &[], 0),
                    Some((addrs, ttl)) => {
                        let of_type: Vec<IpAddr> = addrs
                            .iter()
                            .copied()
                            .filter(|a| match qtype {
                                TYPE_A => a.is_ipv4(),
                                TYPE_AAAA => a.is_ipv6(),
                                _ => false,
                            })
                            .collect();
                        response(&buf[..n], question, 0, &of_type, *ttl)
                    }
                }),
            };
            (reply, z.delay)
        };
        if let Some(reply) = reply {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&reply, peer).await;
            });
        }
    }
}

/// The question's name (lower case, no final dot), type, and the end of the question
/// section.
fn parse_query(msg: &[u8]) -> Option<(String, u16, usize)> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let end = i + 4;
    if msg.len() < end {
        return None;
    }
    Some((labels.join("."), qtype, end))
}

/// An authoritative answer to `query` (its question echoed) with `rcode` and an A or
/// AAAA record per address.
fn response(query: &[u8], question_end: usize, rcode: u8, addrs: &[IpAddr], ttl: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&query[0..2]); // ID
    let opcode = query[2] & 0x78;
    let rd = query[2] & 0x01;
    r.push(0x80 | opcode | 0x04 | rd); // QR, opcode, AA, RD
    r.push(0x80 | rcode); // RA, RCODE
    r.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    r.extend_from_slice(&(addrs.len() as u16).to_be_bytes()); // ANCOUNT
    r.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    r.extend_from_slice(&query[12..question_end]);
    for addr in addrs {
        r.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        let (rtype, rdata) = match addr {
            IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes()); // IN
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    r
}

/// Every test is bounded in time.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test took over 60 s");
}

/// Polls `check` until it holds, failing after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

async fn resolve_ip(cache: &DnsCache, host: &str) -> IpAddr {
    cache.resolve(host, 8080).await.expect("resolves").ip()
}

/// (a) All addresses of a name (A then AAAA) are cached, and `resolve` spreads over
/// them round-robin.
#[tokio::test]
async fn all_addresses_are_used() {
    bounded(async {
        let server = DnsServer::start().await;
        server.set("multi.test", &["10.0.0.1", "10.0.0.2", "fd00::1"], 300);
        let cache = DnsCache::with_nameserver(server.addr);

        let all = cache.addresses("multi.test").await.expect("resolves");
        assert_eq!(&*all, &[ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1")]);

        let mut seen = Vec::new();
        for _ in 0..6 {
            let got = cache.resolve("multi.test", 8080).await.expect("resolves");
            assert_eq!(got.port(), 8080);
            seen.push(got.ip());
        }
        for a in all.iter() {
            assert_eq!(seen.iter().filter(|s| *s == a).count(), 2, "{seen:?}");
        }
        assert_eq!(seen[0..3], seen[3..6], "round-robin: {seen:?}");
        assert_eq!(server.a_queries("multi.test").len(), 1, "one lookup");
    })
    .await;
}

/// LOGICAL_DNS (Istio's `DNS_ROUND_ROBIN`): every new connection goes to the first
/// address of the current answer, the next answer's first once it changes.
#[tokio::test]
async fn logical_dns_uses_the_first_address_of_the_answer() {
    bounded(async {
        let server = DnsServer::start().await;
        server.set("logical.test", &["10.0.2.1", "10.0.2.2"], 1);
        let cache = DnsCache::with_nameserver(server.addr);
        for _ in 0..4 {
            let got = cache.first("logical.test", 80).await.expect("resolves");
            assert_eq!(got, SocketAddr::new(ip("10.0.2.1"), 80));
        }
        server.set("logical.test", &["10.0.2.3", "10.0.2.1"], 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = cache.first("logical.test", 80).await.expect("resolves");
            if got.ip() == ip("10.0.2.3") {
                break;
            }
            assert!(Instant::now() < deadline, "the new answer never came");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// (b) An answer is served from the cache until its TTL expires (no query reaches the
/// server), then the refreshed one is.
#[tokio::test]
async fn ttl_expiry_serves_the_new_answer() {
    bounded(async {
        let server = DnsServer::start().await;
        server.set("ttl.test", &["10.0.1.1"], 2);
        let cache = DnsCache::with_nameserver(server.addr);

        let t0 = Instant::now();
        assert_eq!(resolve_ip(&cache, "ttl.test").await, ip("10.0.1.1"));
        assert_eq!(server.a_queries("ttl.test").len(), 1);

        // Changed on the server; the cached answer has ~2 s to live.
        server.set("ttl.test", &["10.0.1.2"], 1);
        for _ in 0..100 {
            assert_eq!(resolve_ip(&cache, "ttl.test").await, ip("10.0.1.1"));
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "too slow to be conclusive"
        );
        assert_eq!(server.a_queries("ttl.test").len(), 1, "served from cache");

        eventually(Duration::from_secs(10), "new address after TTL", || async {
            resolve_ip(&cache, "ttl.test").await == ip("10.0.1.2")
        })
        .await;
        assert!(
            t0.elapsed() >= Duration::from_millis(1900),
            "refreshed before the 2 s TTL: {:?}",
            t0.elapsed()
        );
        assert_eq!(server.a_queries("ttl.test").len(), 2, "one refresh");

        // And again with the 1 s TTL now in force.
        server.set("ttl.test", &["10.0.1.3"], 1);
        eventually(Duration::from_secs(10), "second refresh", || async {
            resolve_ip(&cache, "ttl.test").await == ip("10.0.1.3")
        })
        .await;
    })
    .await;
}

/// A TTL of 0 is refreshed every second (the floor), not in a loop.
#[tokio::test]
async fn zero_ttl_is_floored_to_one_second() {
    bounded(async {
        let server = DnsServer::start().await;
        server.set("zero.test", &["10.0.2.1"], 0);
        let cache = DnsCache::with_nameserver(server.addr);
        assert_eq!(resolve_ip(&cache, "zero.test").await, ip("10.0.2.1"));
        eventually(Duration::from_secs(10), "a refresh", || async {
            server.a_queries("zero.test").len() >= 3
        })
        .await;
        let q = server.a_queries("zero.test");
        for pair in q.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(900), "refreshed after {gap:?}");
        }
    })
    .await;
}

/// Waits until a refresh of `name` started after `since` has failed and been retried:
/// two consecutive A queries at least ~1 s apart. One lookup's queries (hickory's retry,
/// its UDP retransmissions) are closer together than that, and the cache's task starts
/// the next lookup only after the last one ended, backing off 1 s after a failure.
async fn wait_for_failed_refresh(server: &DnsServer, name: &str, since: Instant) {
    eventually(
        Duration::from_secs(20),
        "a failed refresh and its retry",
        || async {
            let q: Vec<Instant> = server
                .a_queries(name)
                .into_iter()
                .filter(|at| *at >= since)
                .collect();
            q.windows(2)
                .any(|w| w[1] - w[0] >= Duration::from_millis(900))
        },
    )
    .await;
}

/// (c) A refresh answered SERVFAIL keeps the last good addresses; a later good answer
/// replaces them.
#[tokio::test]
async fn servfail_keeps_the_last_good_addresses() {
    bounded(async {
        let server = DnsServer::start().await;
        server.set("fail.test", &["10.0.3.1", "10.0.3.2"], 1);
        let cache = DnsCache::with_nameserver(server.addr);
        assert_eq!(resolve_ip(&cache, "fail.test").await, ip("10.0.3.1"));

        let switched = Instant::now();
        server.mode(Mode::ServFail);
        wait_for_failed_refresh(&server, "fail.test", switched).await;
        let all = cache.addresses("fail.test").await.expect("last good kept");
        assert_eq!(&*all, &[ip("10.0.3.1"), ip("10.0.3.2")]);
        assert_eq!(resolve_ip(&cache, "fail.test").await, ip("10.0.3.2"));

        server.set("fail.test", &["10.0.3.9"], 1);
        server.mode(Mode::Answer);
        eventually(Duration::from_secs(20), "recovery", || async {
            resolve_ip(&cache, "fail.test").await == ip("10.0.3.9")
        })
        .await;
    })
    .await;
}

/// (c) A refresh that times out (the server went silent) keeps the last good
/// addresses too.
#[tokio::test]
async fn silence_keeps_the_last_good_addresses() {
    bounded(async {
        let server = DnsServer::start().await;
        server.set("quiet.test", &["10.0.4.1"], 1);
        let cache = DnsCache::with_nameserver(server.addr);
        assert_eq!(resolve_ip(&cache, "quiet.test").await, ip("10.0.4.1"));

        let switched = Instant::now();
        server.mode(Mode::Silent);
        wait_for_failed_refresh(&server, "quiet.test", switched).await;
        assert_eq!(resolve_ip(&cache, "quiet.test").await, ip("10.0.4.1"));

        server.set("quiet.test", &["10.0.4.2"], 1);
        server.mode(Mode::Answer);
        eventually(Duration::from_secs(30), "recovery", || async {
            resolve_ip(&cache, "quiet.test").await == ip("10.0.4.2")
        })
        .await;
    })
    .await;
}

/// (d) A first lookup that fails (NXDOMAIN, SERVFAIL) is an error to the caller; the
/// next request fails at once instead of waiting for another lookup, and the name
/// resolves once its retry succeeds.
#[tokio::test]
async fn first_lookup_failure_is_an_error() {
    bounded(async {
        let server = DnsServer::start().await;
        let cache = DnsCache::with_nameserver(server.addr);

        let e = cache
            .resolve("unknown.test", 80)
            .await
            .expect_err("NXDOMAIN");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let t = Instant::now();
        let e = cache
            .addresses("unknown.test")
            .await
            .expect_err("still none");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(t.elapsed() < Duration::from_millis(100), "waited for DNS");

        server.mode(Mode::ServFail);
        let e = cache
            .resolve("broken.test", 80)
            .await
            .expect_err("SERVFAIL");
        assert!(e.to_string().contains("broken.test"), "{e}");

        // The failed name is retried in the background: it resolves once it exists.
        server.mode(Mode::Answer);
        server.set("unknown.test", &["10.0.5.1"], 60);
        eventually(Duration::from_secs(20), "retry after NXDOMAIN", || async {
            cache.resolve("unknown.test", 80).await.ok().map(|a| a.ip()) == Some(ip("10.0.5.1"))
        })
        .await;
    })
    .await;
}

/// (e) Concurrent first requests for a name share one lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_lookups_make_one_query() {
    bounded(async {
        let server = DnsServer::start().await;
        server.set("burst.test", &["10.0.6.1", "10.0.6.2"], 60);
        server.delay(Duration::from_millis(300));
        let cache = DnsCache::with_nameserver(server.addr);

        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let cache = cache.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    cache.resolve("burst.test", 80).await
                })
            })
            .collect();
        let mut per_addr: HashMap<IpAddr, usize> = HashMap::new();
        for t in tasks {
            let addr = t.await.expect("task").expect("resolves");
            *per_addr.entry(addr.ip()).or_default() += 1;
        }
        assert_eq!(server.a_queries("burst.test").len(), 1, "one query");
        assert_eq!(per_addr.get(&ip("10.0.6.1")), Some(&16), "{per_addr:?}");
        assert_eq!(per_addr.get(&ip("10.0.6.2")), Some(&16), "{per_addr:?}");
    })
    .await;
}

/// The process-wide cache reads the system configuration, /etc/hosts included:
/// `localhost` resolves to loopback addresses only.
#[tokio::test]
async fn system_cache_resolves_localhost() {
    bounded(async {
        let all = DnsCache::system()
            .addresses("localhost")
            .await
            .expect("localhost resolves");
        assert!(!all.is_empty());
        assert!(all.iter().all(IpAddr::is_loopback), "{all:?}");
        assert!(all.contains(&ip("127.0.0.1")), "{all:?}");
        let got = DnsCache::system()
            .resolve("localhost", 443)
            .await
            .expect("cached");
        assert!(all.contains(&got.ip()) && got.port() == 443);
    })
    .await;
}
