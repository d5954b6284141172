//! Circuit breakers per upstream cluster: a DestinationRule's `connectionPool`
//! (`tcp.maxConnections`, `http.http1MaxPendingRequests`, `http.http2MaxRequests`)
//! enforced as Envoy's circuit breakers, so a saturated upstream gets a fast 503
//! (flag `UO`, header `x-envoy-overloaded: true`) instead of a pile-up.
//!
//! A request to a limited cluster takes a [`Slot`] while it is in flight. Over
//! `maxConnections` it waits for one, if fewer than `http1MaxPendingRequests`
//! already wait (at most the connect timeout); over that, or over
//! `http2MaxRequests`, it is refused at once. The breakers are per process and
//! per cluster name, so every listener of a proxy shares them, as in Envoy.
//! Clusters without limits (the default) take nothing: one branch per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use isthmus_model::snapshot::ConnectionPool;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::warn;

use crate::limits::RateLog;

/// Envoy's body for a request refused by a circuit breaker.
pub(crate) const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow\n";

/// One cluster's counters.
#[derive(Debug, Default)]
struct Breaker {
    active: AtomicU32,
    pending: AtomicU32,
    freed: Notify,
    refusals: RateLog,
}

/// A request in flight to a limited cluster; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Breaker>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

/// The request is refused: the cluster is over its limits.
#[derive(Debug)]
pub(crate) struct Overflow;

fn breaker(cluster: &str) -> Arc<Breaker> {
    static BREAKERS: OnceLock<Mutex<HashMap<String, Arc<Breaker>>>> = OnceLock::new();
    let mut map = BREAKERS.get_or_init(Default::default).lock();
    if let Some(b) = map.get(cluster) {
        return b.clone();
    }
    let b = Arc::new(Breaker::default());
    map.insert(cluster.to_string(), b.clone());
    b
}

/// Admit a request to `cluster` under `pool`'s limits: `None` when the cluster
/// has none, a [`Slot`] to hold while the request is in flight, or [`Overflow`].
pub(crate) async fn admit(
    cluster: &str,
    pool: &ConnectionPool,
    wait: Duration,
) -> Result<Option<Slot>, Overflow> {
    if !pool.is_limited() {
        return Ok(None);
    }
    let b = breaker(cluster);
    let max_requests = pool.http2_max_requests.unwrap_or(u32::MAX);
    let max_connections = pool.max_connections.unwrap_or(u32::MAX);
    let max_pending = pool.http1_max_pending_requests.unwrap_or(u32::MAX);
    if let Some(slot) = try_take(&b, max_connections.min(max_requests)) {
        return Ok(Some(slot));
    }
    if b.active.load(Ordering::Acquire) >= max_requests {
        return Err(refuse(&b, cluster, "http2MaxRequests"));
    }
    // Over maxConnections: wait for a place, if the queue has room.
    if b.pending.fetch_add(1, Ordering::AcqRel) >= max_pending {
        b.pending.fetch_sub(1, Ordering::AcqRel);
        return Err(refuse(&b, cluster, "http1MaxPendingRequests"));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let taken = loop {
        let freed = b.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(slot) = try_take(&b, max_connections.min(max_requests)) {
            break Some(slot);
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            break None;
        }
    };
    b.pending.fetch_sub(1, Ordering::AcqRel);
    taken
        .map(Some)
        .ok_or_else(|| refuse(&b, cluster, "maxConnections (waited for a connection)"))
}

fn try_take(b: &Arc<Breaker>, max: u32) -> Option<Slot> {
    b.active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(b.clone()))
}

/// Count a refusal; one warning (with the count) per cluster every 10 s.
fn refuse(b: &Breaker, cluster: &str, limit: &str) -> Overflow {
    if let Some(n) = b.refusals.due() {
        warn!(
            cluster,
            flags = "UO",
            refused = n,
            "upstream overflow: DestinationRule connectionPool {limit} reached; answered 503"
        );
    }
    Overflow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(conns: u32, pending: u32) -> ConnectionPool {
        ConnectionPool {
            max_connections: Some(conns),
            http1_max_pending_requests: Some(pending),
            http2_max_requests: None,
            connect_timeout: None,
            max_requests_per_connection: None,
        }
    }

    #[tokio::test]
    async fn unlimited_clusters_take_nothing() {
        let got = admit("c0", &ConnectionPool::default(), Duration::from_secs(1)).await;
        assert!(matches!(got, Ok(None)));
    }

    #[tokio::test]
    async fn over_the_pending_queue_is_refused_at_once_and_a_waiter_gets_a_freed_place() {
        let p = pool(1, 1);
        let first = admit("c1", &p, Duration::from_secs(5)).await.unwrap();
        let waiter = tokio::spawn(async move { admit("c1", &p, Duration::from_secs(5)).await });
        // The waiter is queued; a third request finds the queue full.
        while breaker("c1").pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(admit("c1", &p, Duration::from_secs(5)).await.is_err());
        drop(first);
        let second = waiter.await.unwrap();
        assert!(matches!(second, Ok(Some(_))));
    }

    #[tokio::test]
    async fn http2_max_requests_refuses_without_queueing() {
        let p = ConnectionPool {
            http2_max_requests: Some(1),
            ..ConnectionPool::default()
        };
        let _first = admit("c2", &p, Duration::from_secs(5)).await.unwrap();
        let started = std::time::Instant::now();
        assert!(admit("c2", &p, Duration::from_secs(5)).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
