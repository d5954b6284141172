//! The upstream connection pool of one listener: idle HTTP/1.1 connections by
//! upstream address and mesh identity. Lean on purpose (the per-request cost of a
//! pool is what Pingora's connector spends most of its time on):
//! - no task per released connection and no syscall per reuse: a connection is
//!   checked when it is taken ([`idle_alive`]: a close or stray bytes that arrived
//!   while it was idle are seen by the reactor already), and the ones idle longer
//!   than [`IDLE_TIMEOUT`] are closed by one sweep per pool on a timer;
//! - one short `Mutex` section per take or put; a downstream connection keeps the
//!   upstream connection it used last and gives it back only when it ends or moves
//!   to another upstream, so a keep-alive client in steady state never touches the
//!   pool at all.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use isthmus_model::snapshot::UpstreamMtls;
use parking_lot::Mutex;
use pingora::protocols::Stream;
use tokio::time::Instant;

use crate::conn::idle_alive;

/// How long an upstream connection may stay idle in the pool (nginx's
/// `keepalive_timeout` for upstreams).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections kept per key beyond which released ones are closed.
const MAX_IDLE_PER_KEY: usize = 128;

/// What makes two upstream connections interchangeable: the address, and for mesh
/// mTLS the identity the peer proved (its DNS name under the mesh root).
#[derive(Clone, Debug)]
pub(crate) struct PoolKey {
    pub addr: SocketAddr,
    pub mtls: Option<Arc<UpstreamMtls>>,
}

impl PoolKey {
    fn server_name(&self) -> Option<&str> {
        self.mtls.as_deref().map(|m| m.server_name.as_str())
    }
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &PoolKey) -> bool {
        self.addr == other.addr && self.server_name() == other.server_name()
    }
}

impl Eq for PoolKey {}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
        self.server_name().hash(state);
    }
}

struct Idle {
    stream: Stream,
    since: Instant,
    /// Requests the connection has carried.
    uses: u32,
}

/// See the module header.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

impl Pool {
    /// A pool whose idle connections are swept every [`IDLE_TIMEOUT`] / 2 by a task
    /// on the current runtime that ends with the pool.
    pub(crate) fn new() -> Arc<Pool> {
        let pool = Arc::new(Pool::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_until_dropped(Arc::downgrade(&pool)));
        }
        pool
    }

    /// The most recently released live connection for `key`, if any, with since
    /// when it is idle and how many requests it carried; dead ones met on the way
    /// are closed.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<(Stream, Instant, u32)> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(key)?;
        while let Some(mut conn) = list.pop() {
            if idle_alive(&mut conn.stream) {
                return Some((conn.stream, conn.since, conn.uses));
            }
        }
        None
    }

    /// Keep `stream`, idle since `since` after carrying `uses` requests, for the
    /// next request to `key`.
    pub(crate) fn put(&self, key: PoolKey, stream: Stream, since: Instant, uses: u32) {
        let mut idle = self.idle.lock();
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(Idle {
                stream,
                since,
                uses,
            });
        }
    }

    /// Close the connections idle since before `deadline` or closed by their peer.
    fn sweep(&self, deadline: Instant) {
        let mut closed = Vec::new();
        {
            let mut idle = self.idle.lock();
            idle.retain(|_, list| {
                let mut i = 0;
                while i < list.len() {
                    if list[i].since < deadline || !idle_alive(&mut list[i].stream) {
                        closed.push(list.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                !list.is_empty()
            });
        }
        // Dropped outside the lock.
        drop(closed);
    }

    /// How many idle connections the pool holds.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().values().map(Vec::len).sum()
    }
}

async fn sweep_until_dropped(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep(Instant::now() - IDLE_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{connect, TcpConn};

    async fn conn_pair(listener: &tokio::net::TcpListener) -> (Stream, tokio::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(
            connect(addr, None, crate::proxy::CONNECT_TIMEOUT),
            listener.accept()
        );
        (Box::new(TcpConn::new(client.unwrap())), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_never_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = PoolKey {
            addr: listener.local_addr().unwrap(),
            mtls: None,
        };
        let pool = Pool::new();
        let (live, _live_peer) = conn_pair(&listener).await;
        let (dead, dead_peer) = conn_pair(&listener).await;
        let live_id = live.id();
        pool.put(key.clone(), live, Instant::now(), 0);
        pool.put(key.clone(), dead, Instant::now(), 0);
        drop(dead_peer);
        // Wait (bounded) until the close has reached the reactor, the way a pool
        // user would meet it later.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let closed_seen = {
                let mut probe = pool.idle.lock();
                let last = probe.get_mut(&key).and_then(|l| l.last_mut()).unwrap();
                !idle_alive(&mut last.stream)
            };
            if closed_seen {
                break;
            }
            assert!(Instant::now() < deadline, "close never seen");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (got, _, _) = pool.take(&key).expect("the live connection");
        assert_eq!(got.id(), live_id);
        assert!(pool.take(&key).is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn keys_separate_addresses_and_identities_and_sweep_closes_old_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let plain = PoolKey { addr, mtls: None };
        let mesh = PoolKey {
            addr,
            mtls: Some(Arc::new(UpstreamMtls {
                identity: "spiffe://cluster.local/ns/default/sa/a".into(),
                server_name: "a.default.sa.cluster.local".into(),
            })),
        };
        let pool = Pool::new();
        let (c, _p) = conn_pair(&listener).await;
        pool.put(plain.clone(), c, Instant::now(), 0);
        assert!(
            pool.take(&mesh).is_none(),
            "a plaintext connection is not mTLS"
        );
        let (c2, _p2) = conn_pair(&listener).await;
        pool.put(mesh.clone(), c2, Instant::now(), 0);
        assert_eq!(pool.idle_count(), 2);
        pool.sweep(Instant::now() - IDLE_TIMEOUT);
        assert_eq!(pool.idle_count(), 2, "fresh connections stay");
        pool.sweep(Instant::now() + Duration::from_secs(1));
        assert_eq!(pool.idle_count(), 0, "old connections are closed");
    }
}
