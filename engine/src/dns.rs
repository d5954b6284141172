//! The DNS cache of host-name upstream endpoints ([`DnsCache`]): Envoy's STRICT_DNS
//! (and Istio's LOGICAL_DNS uses) without a lookup on the request path. A name's first
//! request resolves it once (concurrent first requests share that one lookup); from then
//! on one task per name refreshes it as its TTL expires (floor 1 s, cap 300 s), requests
//! read the last answer (all A and AAAA addresses) lock-light and spread over them
//! round-robin. A refresh that fails keeps the last good addresses and is retried with
//! backoff; a name nobody asked for in 5 minutes is dropped and its task ends.
//!
//! Lookups and refresh tasks run on the cache's own single-threaded tokio runtime (a
//! thread named `isthmus-dns`), not on the caller's: Pingora runs each service on its
//! own runtime and listeners come and go, and a refresh task must outlive them.
//! `/etc/hosts` comes first as with glibc (`hosts: files dns`): a name listed there is
//! answered from it only (read once, at start).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use parking_lot::RwLock;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tracing::{debug, warn};

/// How long a request waits for a name's first lookup before it gives up (the lookup
/// goes on; the name's next request may find it done).
const FIRST_LOOKUP_WAIT: Duration = Duration::from_secs(10);

/// The refresh and retry schedule.
#[derive(Clone, Copy, Debug)]
struct Timings {
    /// The shortest time an answer is used before it is refreshed (a TTL of 0 included).
    min_ttl: Duration,
    /// The longest; also the refresh period of `/etc/hosts` answers.
    max_ttl: Duration,
    /// A name not asked for during this long is dropped.
    idle_after: Duration,
    /// The first retry after a failed lookup, doubled per failure up to `retry_max`.
    retry_base: Duration,
    retry_max: Duration,
}

const TIMINGS: Timings = Timings {
    min_ttl: Duration::from_secs(1),
    max_ttl: Duration::from_secs(300),
    idle_after: Duration::from_secs(300),
    retry_base: Duration::from_secs(1),
    retry_max: Duration::from_secs(10),
};

impl Timings {
    /// When a good answer with this remaining TTL is refreshed.
    fn refresh_after(&self, ttl: Duration) -> Duration {
        // Not `clamp`: it panics on a floor above the cap.
        ttl.max(self.min_ttl).min(self.max_ttl)
    }

    /// When a lookup is retried after `failures` failures in a row (1 or more).
    fn retry_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.retry_base
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }
}

/// A cache of host names' addresses, refreshed in the background as their TTLs expire.
/// Cheap to clone (one shared cache).
#[derive(Clone)]
pub struct DnsCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` if it could not be built (every DNS lookup then fails).
    resolver: Option<TokioResolver>,
    /// Consulted before DNS; empty for [`DnsCache::with_nameserver`].
    hosts: Hosts,
    names: RwLock<HashMap<Box<str>, Arc<Entry>>>,
    /// The cache's own runtime, where lookups and refresh tasks run; `None` when it
    /// could not be started (every first lookup then fails).
    runtime: Option<Handle>,
    timings: Timings,
    /// Dropped with the cache: ends the runtime's thread.
    _stop: Option<oneshot::Sender<()>>,
}

/// One name: its last answer and its round-robin cursor.
struct Entry {
    state: ArcSwap<State>,
    cursor: AtomicUsize,
    /// Set by requests, cleared by the refresh task at each wake.
    used: AtomicBool,
    /// Signalled when `state` leaves `Pending`.
    settled: Notify,
}

enum State {
    /// The first lookup is under way.
    Pending,
    /// The last good answer (never empty).
    Ready(Arc<[IpAddr]>),
    /// No good answer yet: the last lookup failed (retried in the background).
    Failed(Failure),
}

/// A failed lookup, kept to answer requests until a retry succeeds.
#[derive(Clone, Debug)]
struct Failure {
    kind: io::ErrorKind,
    message: Arc<str>,
}

impl Failure {
    fn new(kind: io::ErrorKind, message: String) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    fn from_net(host: &str, e: &NetError) -> Self {
        let kind = match e {
            NetError::Dns(DnsError::NoRecordsFound(_)) => io::ErrorKind::NotFound,
            NetError::Timeout => io::ErrorKind::TimedOut,
            NetError::Io(e) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        Failure::new(kind, format!("cannot resolve {host}: {e}"))
    }

    fn to_io(&self) -> io::Error {
        io::Error::new(self.kind, self.message.to_string())
    }
}

/// What a request finds in the cache.
enum Cached<R> {
    Hit(R),
    Failed(io::Error),
    /// The name's first lookup is under way.
    Wait(Arc<Entry>),
}

impl Entry {
    fn new() -> Self {
        Entry {
            state: ArcSwap::from_pointee(State::Pending),
            cursor: AtomicUsize::new(0),
            used: AtomicBool::new(true),
            settled: Notify::new(),
        }
    }

    fn read<R>(self: &Arc<Self>, pick: &impl Fn(&Entry, &Arc<[IpAddr]>) -> R) -> Cached<R> {
        // A load before the store keeps the cache line shared while the flag is set.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        match &**self.state.load() {
            State::Ready(addrs) => Cached::Hit(pick(self, addrs)),
            State::Failed(f) => Cached::Failed(f.to_io()),
            State::Pending => Cached::Wait(self.clone()),
        }
    }

    fn is_pending(&self) -> bool {
        matches!(**self.state.load(), State::Pending)
    }

    fn set(&self, state: State) {
        self.state.store(Arc::new(state));
        self.settled.notify_waiters();
    }

    /// Until the first lookup is done.
    async fn settle(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_pending() {
                return;
            }
            notified.await;
        }
    }

    /// The next address round-robin.
    fn next(&self, addrs: &[IpAddr]) -> Option<IpAddr> {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        i.checked_rem(addrs.len())
            .and_then(|i| addrs.get(i))
            .copied()
    }
}

/// Fails a first lookup whose task ends without an answer (its runtime shut down), so
/// that no request waits for it.
struct PendingGuard(Arc<Entry>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.is_pending() {
            self.0.set(State::Failed(Failure::new(
                io::ErrorKind::Other,
                "DNS resolver stopped".into(),
            )));
        }
    }
}

impl DnsCache {
    /// The process-wide cache: the servers, search domains and options of
    /// `/etc/resolv.conf` (127.0.0.1 when it names none, as glibc), `/etc/hosts` first.
    pub fn system() -> &'static DnsCache {
        static SYSTEM: OnceLock<DnsCache> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let builder = match TokioResolver::builder_tokio() {
                Ok(builder) => builder,
                Err(e) => {
                    warn!(error = %e, "cannot read the system DNS configuration; using 127.0.0.1");
                    let config =
                        ResolverConfig::from_name_servers(vec![NameServerConfig::udp_and_tcp(
                            IpAddr::from([127, 0, 0, 1]),
                        )]);
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                }
            };
            let hosts = Hosts::from_system().unwrap_or_else(|e| {
                debug!(error = %e, "no /etc/hosts");
                Hosts::default()
            });
            DnsCache::start(builder, hosts, TIMINGS)
        })
    }

    /// A cache asking only `server` (UDP, TCP on truncation), with no hosts file and no
    /// search domains, a 1 s query timeout and one retry: a server on a local network.
    pub fn with_nameserver(server: SocketAddr) -> DnsCache {
        let mut ns = NameServerConfig::new(
            server.ip(),
            true,
            vec![ConnectionConfig::udp(), ConnectionConfig::tcp()],
        );
        for c in &mut ns.connections {
            c.port = server.port();
        }
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(1);
        opts.attempts = 1;
        DnsCache::start(builder, Hosts::default(), TIMINGS)
    }

    fn start(
        mut builder: hickory_resolver::ResolverBuilder<TokioRuntimeProvider>,
        hosts: Hosts,
        timings: Timings,
    ) -> DnsCache {
        let opts: &mut ResolverOpts = builder.options_mut();
        // All addresses, A first; this cache is the only one (its TTLs are the answer's).
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        // Only a TLS configuration can fail to build, and none is asked for.
        let resolver = builder
            .build()
            .inspect_err(|e| warn!(error = %e, "cannot build the DNS resolver"))
            .ok();
        let (runtime, stop) = match start_runtime() {
            Ok((handle, stop)) => (Some(handle), Some(stop)),
            Err(e) => {
                warn!(error = %e, "cannot start the DNS runtime; host names will not resolve");
                (None, None)
            }
        };
        DnsCache {
            inner: Arc::new(Inner {
                resolver,
                hosts,
                names: RwLock::new(HashMap::new()),
                runtime,
                timings,
                _stop: stop,
            }),
        }
    }

    /// All addresses of `host` (A then AAAA), from the cache. Only a name's first
    /// request waits for a lookup; a failed first lookup is an error (retried in the
    /// background: later requests fail at once until a retry succeeds).
    pub async fn addresses(&self, host: &str) -> io::Result<Arc<[IpAddr]>> {
        self.get(host, |_, addrs| Some(addrs.clone())).await
    }

    /// The next address of `host` round-robin (so that requests spread over all of a
    /// name's addresses, as Envoy's STRICT_DNS), with `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<SocketAddr> {
        self.get(host, |entry, addrs| entry.next(addrs))
            .await
            .map(|ip| SocketAddr::new(ip, port))
    }

    /// The first address of `host`'s current answer, with `port`: Envoy's
    /// LOGICAL_DNS (Istio's `resolution: DNS_ROUND_ROBIN`), where new connections go
    /// to whatever address the latest answer puts first.
    pub async fn first(&self, host: &str, port: u16) -> io::Result<SocketAddr> {
        self.get(host, |_, addrs| addrs.first().copied())
            .await
            .map(|ip| SocketAddr::new(ip, port))
    }

    async fn get<R>(
        &self,
        host: &str,
        pick: impl Fn(&Entry, &Arc<[IpAddr]>) -> Option<R>,
    ) -> io::Result<R> {
        let entry = match self.cached(host, &pick)? {
            Cached::Hit(r) => return r.ok_or_else(no_address),
            Cached::Failed(e) => return Err(e),
            Cached::Wait(entry) => entry,
        };
        if tokio::time::timeout(FIRST_LOOKUP_WAIT, entry.settle())
            .await
            .is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {host} takes too long"),
            ));
        }
        match entry.read(&pick) {
            Cached::Hit(r) => r.ok_or_else(no_address),
            Cached::Failed(e) => Err(e),
            Cached::Wait(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {host} takes too long"),
            )),
        }
    }

    /// The name's cached state; a name seen for the first time gets an entry and its
    /// refresh task, which makes the first lookup.
    fn cached<R>(
        &self,
        host: &str,
        pick: &impl Fn(&Entry, &Arc<[IpAddr]>) -> R,
    ) -> io::Result<Cached<R>> {
        if let Some(entry) = self.inner.names.read().get(host) {
            return Ok(entry.read(pick));
        }
        let name = Name::from_str(host).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid host name {host:?}: {e}"),
            )
        })?;
        let mut names = self.inner.names.write();
        if let Some(entry) = names.get(host) {
            return Ok(entry.read(pick));
        }
        let entry = Arc::new(Entry::new());
        names.insert(host.into(), entry.clone());
        drop(names);
        let guard = PendingGuard(entry.clone());
        match &self.inner.runtime {
            Some(rt) => {
                let task = refresh(
                    Arc::downgrade(&self.inner),
                    host.into(),
                    name,
                    entry.clone(),
                    guard,
                );
                drop(rt.spawn(task));
            }
            None => {
                entry.set(State::Failed(Failure::new(
                    io::ErrorKind::Other,
                    "the DNS runtime is not running".into(),
                )));
                drop(guard);
            }
        }
        Ok(Cached::Wait(entry))
    }
}

fn no_address() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "name resolved to no address")
}

impl Inner {
    /// One lookup: `/etc/hosts`, else DNS. The addresses (deduplicated, never empty) and
    /// how long they are good for.
    async fn lookup(&self, host: &str, name: &Name) -> Result<(Arc<[IpAddr]>, Duration), Failure> {
        if let Some(addrs) = from_hosts(&self.hosts, name) {
            return Ok((addrs, self.timings.max_ttl));
        }
        let Some(resolver) = &self.resolver else {
            return Err(Failure::new(
                io::ErrorKind::Other,
                format!("cannot resolve {host}: no DNS resolver"),
            ));
        };
        let lookup = resolver
            .lookup_ip(name.clone())
            .await
            .map_err(|e| Failure::from_net(host, &e))?;
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        let mut addrs: Vec<IpAddr> = Vec::new();
        for ip in lookup.iter() {
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
        if addrs.is_empty() {
            return Err(Failure::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {host}: no address"),
            ));
        }
        Ok((addrs.into(), ttl))
    }
}

/// The name's addresses in the hosts file (A then AAAA), if it is listed there.
fn from_hosts(hosts: &Hosts, name: &Name) -> Option<Arc<[IpAddr]>> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        if let Some(lookup) = hosts.lookup_static_host(&Query::query(name.clone(), rtype)) {
            for ip in lookup.answers().iter().filter_map(|r| r.data.ip_addr()) {
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
    }
    (!addrs.is_empty()).then(|| addrs.into())
}

/// A name's task: the first lookup, then a refresh whenever the answer expires (a
/// retry with backoff after a failure, the last good answer kept), until the name is
/// idle or the cache is gone.
async fn refresh(
    cache: Weak<Inner>,
    host: Box<str>,
    name: Name,
    entry: Arc<Entry>,
    _guard: PendingGuard,
) {
    let mut failures: u32 = 0;
    let mut idle = Duration::ZERO;
    loop {
        let Some(inner) = cache.upgrade() else { return };
        let timings = inner.timings;
        let outcome = inner.lookup(&host, &name).await;
        drop(inner);
        let wait = match outcome {
            Ok((addrs, ttl)) => {
                if failures > 0 {
                    debug!(host = %host, "DNS lookup succeeds again");
                }
                failures = 0;
                let changed = match &**entry.state.load() {
                    State::Ready(old) => **old != *addrs,
                    _ => true,
                };
                if changed {
                    debug!(host = %host, addresses = ?addrs, ?ttl, "DNS answer");
                    entry.set(State::Ready(addrs));
                }
                timings.refresh_after(ttl)
            }
            Err(failure) => {
                failures = failures.saturating_add(1);
                let retry = timings.retry_after(failures);
                let keeps = matches!(**entry.state.load(), State::Ready(_));
                if failures == 1 {
                    warn!(host = %host, error = %failure.message, keeps_last_good = keeps, ?retry, "DNS lookup fails");
                } else {
                    debug!(host = %host, error = %failure.message, failures, ?retry, "DNS lookup fails again");
                }
                if !keeps {
                    entry.set(State::Failed(failure));
                }
                retry
            }
        };
        tokio::time::sleep(wait).await;
        if entry.used.swap(false, Ordering::Relaxed) {
            idle = Duration::ZERO;
        } else {
            idle = idle.saturating_add(wait);
            if idle >= timings.idle_after {
                if let Some(inner) = cache.upgrade() {
                    let mut names = inner.names.write();
                    if names.get(&*host).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                        names.remove(&*host);
                    }
                }
                debug!(host = %host, "DNS name idle, dropped");
                return;
            }
        }
    }
}

/// The cache's runtime on its own thread; dropping the sender ends it.
fn start_runtime() -> io::Result<(Handle, oneshot::Sender<()>)> {
    let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("isthmus-dns".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    if handle_tx.send(Ok(rt.handle().clone())).is_ok() {
                        rt.block_on(async {
                            // Ends when the cache is dropped.
                            let _ = stop_rx.await;
                        });
                    }
                }
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                }
            }
        })?;
    let handle = handle_rx
        .recv()
        .map_err(|_| io::Error::other("the DNS runtime thread ended"))??;
    Ok((handle, stop_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_and_retry_schedule() {
        let t = TIMINGS;
        assert_eq!(t.refresh_after(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            t.refresh_after(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            t.refresh_after(Duration::from_secs(86_400)),
            Duration::from_secs(300)
        );
        let retries: Vec<u64> = (1..=6).map(|n| t.retry_after(n).as_secs()).collect();
        assert_eq!(retries, [1, 2, 4, 8, 10, 10]);
        assert_eq!(t.retry_after(u32::MAX), Duration::from_secs(10));
    }

    fn hosts(text: &str) -> Hosts {
        let mut h = Hosts::default();
        h.read_hosts_conf(text.as_bytes()).expect("hosts parse");
        h
    }

    #[test]
    fn hosts_file_answers_alone() {
        let h = hosts("127.0.0.2 four\n::2 six\n127.0.0.3 both\n::3 both\n");
        let name = |n: &str| Name::from_str(n).expect("name");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            from_hosts(&h, &name("four")).as_deref(),
            Some(&[ip("127.0.0.2")][..])
        );
        assert_eq!(
            from_hosts(&h, &name("six")).as_deref(),
            Some(&[ip("::2")][..])
        );
        assert_eq!(
            from_hosts(&h, &name("both")).as_deref(),
            Some(&[ip("127.0.0.3"), ip("::3")][..])
        );
        assert_eq!(from_hosts(&h, &name("BOTH.")).map(|a| a.len()), Some(2));
        assert!(from_hosts(&h, &name("other")).is_none());
    }

    /// A name nobody asks for is dropped and its task ends; asking again resolves it
    /// anew. (Hosts-file answers: no DNS server needed.)
    #[tokio::test]
    async fn idle_names_are_dropped() {
        let builder = TokioResolver::builder_with_config(
            ResolverConfig::default(),
            TokioRuntimeProvider::default(),
        );
        let timings = Timings {
            min_ttl: Duration::from_millis(100),
            max_ttl: Duration::from_millis(200),
            idle_after: Duration::from_millis(600),
            ..TIMINGS
        };
        let cache = DnsCache::start(builder, hosts("127.0.0.9 idle.test\n"), timings);
        let got = cache.resolve("idle.test", 80).await.expect("resolves");
        assert_eq!(got, "127.0.0.9:80".parse().expect("addr"));
        assert_eq!(cache.inner.names.read().len(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cache.inner.names.read().is_empty() {
            assert!(Instant::now() < deadline, "idle name never dropped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = cache
            .resolve("idle.test", 81)
            .await
            .expect("resolves again");
        assert_eq!(got, "127.0.0.9:81".parse().expect("addr"));
    }

    /// Dropping the cache ends its runtime and with it the names' refresh tasks.
    #[tokio::test]
    async fn dropped_cache_ends_tasks() {
        let builder = TokioResolver::builder_with_config(
            ResolverConfig::default(),
            TokioRuntimeProvider::default(),
        );
        let cache = DnsCache::start(builder, hosts("127.0.0.9 gone.test\n"), TIMINGS);
        cache.resolve("gone.test", 80).await.expect("resolves");
        let entry = cache
            .inner
            .names
            .read()
            .get("gone.test")
            .cloned()
            .expect("entry");
        drop(cache);
        // The task held the entry; with the cache and its runtime gone, only we do.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&entry) > 1 {
            assert!(Instant::now() < deadline, "refresh task outlives its cache");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
