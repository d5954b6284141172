//! The limits and timeouts a listener holds its clients to ([`Limits`], one value
//! per listener, set by the caller from flags or the mesh config), and the
//! connection gate that enforces the connection limits at accept
//! ([`ConnectionGate`]).
//!
//! Defaults are safe at the edge and match Envoy's (header size and count, HTTP/2
//! streams), nginx's (body and idle timeouts) or Istio's (connect timeout). The
//! optional limits (request body size, connections per listener or per client
//! address, requests per connection) are off unless configured, as in Envoy.
//! Nothing here costs a request anything: the timers are armed only when a read
//! waits, and the gate exists only on listeners with a connection limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::warn;

/// What a listener allows its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The time a client has to send a whole request head: from the connection's
    /// opening for its first request, from its first byte on a kept-alive
    /// connection (a slowloris client is closed after this).
    pub request_head_timeout: Duration,
    /// How long an idle keep-alive connection (HTTP/1.1), or an HTTP/2 connection
    /// without streams, is kept.
    pub idle_timeout: Duration,
    /// The time a client has to finish its TLS handshake, ClientHello included.
    pub handshake_timeout: Duration,
    /// The longest silence while a client sends a request body (nginx's
    /// `client_body_timeout`); the request ends then.
    pub body_timeout: Duration,
    /// Upstream TCP connect (and mesh mTLS handshake) timeout: Istio's
    /// `connectTimeout`.
    pub connect_timeout: Duration,
    /// The largest request head (request line and header fields), in bytes; above
    /// it: 431.
    pub max_request_head: usize,
    /// The most header fields in a request; above it: 431.
    pub max_request_headers: usize,
    /// The longest request target (path and query), in bytes; above it: 414.
    pub max_uri_length: usize,
    /// The largest request body, in bytes; above it: 413. `None`: unlimited.
    pub max_request_body: Option<u64>,
    /// Concurrent client connections on the listener; above it new connections
    /// are closed at once. `None`: unlimited.
    pub max_connections: Option<usize>,
    /// Concurrent client connections from one client address. `None`: unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// Requests on one client connection (HTTP/1.1: the last is answered with
    /// `Connection: close`; HTTP/2: streams, then GOAWAY). `None`: unlimited.
    pub max_requests_per_connection: Option<u64>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to clients.
    pub h2_max_concurrent_streams: u32,
    /// Istio's `gatewayTopology.numTrustedProxies`: how many proxies in front of
    /// the gateway are trusted. 0 (the edge): a client's `x-forwarded-proto`,
    /// `x-request-id` and `x-envoy-*` are not trusted.
    pub num_trusted_proxies: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_request_head: 60 * 1024,
            max_request_headers: 100,
            max_uri_length: 16 * 1024,
            max_request_body: None,
            max_connections: None,
            max_connections_per_ip: None,
            max_requests_per_connection: None,
            h2_max_concurrent_streams: 100,
            num_trusted_proxies: 0,
        }
    }
}

impl Limits {
    /// The gate for this listener's connection limits, if it has any.
    pub fn gate(&self) -> Option<Arc<ConnectionGate>> {
        (self.max_connections.is_some() || self.max_connections_per_ip.is_some()).then(|| {
            Arc::new(ConnectionGate {
                max: self.max_connections,
                max_per_ip: self.max_connections_per_ip,
                open: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
                refusals: RateLog::default(),
            })
        })
    }
}

/// Counts a listener's open client connections, in all and per client address,
/// and admits a new one only under the limits.
#[derive(Debug)]
pub struct ConnectionGate {
    max: Option<usize>,
    max_per_ip: Option<usize>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refusals: RateLog,
}

/// One log line per [`REPORT_EVERY`] for events that come in floods (refused
/// connections and requests), with the count since the last line.
#[derive(Debug, Default)]
pub(crate) struct RateLog {
    count: AtomicU64,
    last: Mutex<Option<std::time::Instant>>,
}

impl RateLog {
    /// Count one event: `Some(n)` when a line is due (`n` events since the last).
    pub(crate) fn due(&self) -> Option<u64> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|t| now.duration_since(t) < REPORT_EVERY) {
            return None;
        }
        *last = Some(now);
        self.count.store(0, Ordering::Relaxed);
        Some(n)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Listener,
    ClientAddress,
}

/// How often a listener says it refuses connections or requests: one line, with a
/// count, rather than one per refusal under a flood.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(10);

impl ConnectionGate {
    /// Admit a connection from `ip`: a permit that counts it until dropped, or
    /// why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        if let Some(max) = self.max {
            if self.open.fetch_add(1, Ordering::AcqRel) >= max {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::Listener);
            }
        } else {
            self.open.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(max) = self.max_per_ip {
            let mut per_ip = self.per_ip.lock();
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= max {
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::ClientAddress);
            }
            *n += 1;
        }
        Ok(Permit {
            gate: self.clone(),
            ip,
        })
    }

    /// Count a refusal and log one line (with the count) at most every
    /// [`REPORT_EVERY`] per listener.
    pub fn refused(&self, why: Refusal, ip: IpAddr, listener: &dyn std::fmt::Display) {
        let Some(n) = self.refusals.due() else {
            return;
        };
        let limit = match why {
            Refusal::Listener => format!("the listener's {} connections", self.max.unwrap_or(0)),
            Refusal::ClientAddress => format!(
                "{} connections per client address",
                self.max_per_ip.unwrap_or(0)
            ),
        };
        warn!(%listener, client = %ip, refused = n, "connection limit reached ({limit}): new connections closed at once");
    }

    /// Open connections on the listener.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.gate.max_per_ip.is_some() {
            let mut per_ip = self.gate.per_ip.lock();
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_gate_without_a_connection_limit() {
        assert!(Limits::default().gate().is_none());
    }

    #[test]
    fn per_address_limit_counts_each_address_and_frees_on_drop() {
        let gate = Limits {
            max_connections_per_ip: Some(2),
            ..Limits::default()
        }
        .gate()
        .unwrap();
        let a1 = gate.admit(ip("127.0.0.1")).unwrap();
        let _a2 = gate.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            gate.admit(ip("127.0.0.1")).unwrap_err(),
            Refusal::ClientAddress
        );
        let _b = gate.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(gate.open(), 3);
        drop(a1);
        let _a3 = gate.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            gate.open(),
            3,
            "a refusal is not counted; a dropped permit frees its place"
        );
    }

    #[test]
    fn listener_limit_refuses_above_it() {
        let gate = Limits {
            max_connections: Some(1),
            ..Limits::default()
        }
        .gate()
        .unwrap();
        let first = gate.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(gate.admit(ip("127.0.0.2")).unwrap_err(), Refusal::Listener);
        drop(first);
        assert!(gate.admit(ip("127.0.0.2")).is_ok());
    }
}
