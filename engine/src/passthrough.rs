//! TLS PASSTHROUGH: a connection whose SNI names a VirtualService `tls` route is
//! forwarded to one of the route's weighted destinations without terminating TLS.
//! The ClientHello bytes the listener already read are written to the upstream
//! first, then bytes are copied both ways until either side closes, so the client
//! handshakes with the backend and sees the backend's own certificate. The route is
//! chosen on the snapshot current when the connection arrives; a connection keeps
//! its upstream for its lifetime. A connection with no byte in either direction for
//! [`IDLE_TIMEOUT`] is closed (Envoy's `tcp_proxy` default). Each connection is one
//! DEBUG line when it ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use isthmus_model::snapshot::Snapshot;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use crate::proxy::{pick_cluster, resolve, CONNECT_TIMEOUT};

/// A forwarded connection with no traffic either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Forward `client` (its first bytes `hello` already read) by the PASSTHROUGH route
/// of listener `port` in `snapshot` for `sni`. Returns when the connection ends;
/// a connection with no route or no endpoint is closed (the client sees its
/// handshake fail).
pub async fn forward(
    snapshot: &Snapshot,
    port: u16,
    client: Box<L4Stream>,
    hello: Vec<u8>,
    sni: Option<String>,
    shutdown: &ShutdownWatch,
) {
    let sni_text = sni.as_deref().unwrap_or("none");
    let route = snapshot
        .listener(port)
        .and_then(|l| l.protocol.tls())
        .and_then(|tls| tls.passthrough_for(sni.as_deref()));
    let Some(route) = route else {
        debug!(
            sni = sni_text,
            "passthrough: no tls route for this SNI; closed"
        );
        return;
    };
    let Some(cluster) =
        pick_cluster(&route.action).and_then(|id| snapshot.clusters.get(id.0 as usize))
    else {
        return;
    };
    let Some(endpoint) = cluster.next_endpoint() else {
        debug!(sni = sni_text, cluster = %cluster.name, route = %route.source, "passthrough: no endpoint; closed");
        return;
    };
    let connect = async {
        let addr = resolve(endpoint).await?;
        TcpStream::connect(addr).await
    };
    let timeout = cluster.pool.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
    let mut upstream = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(sni = sni_text, cluster = %cluster.name, "passthrough: connecting to {}:{}: {e}", endpoint.address, endpoint.port);
            return;
        }
        Err(_) => {
            debug!(sni = sni_text, cluster = %cluster.name, "passthrough: connecting to {}:{} timed out", endpoint.address, endpoint.port);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let started = Instant::now();
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    let mut shutdown = shutdown.clone();
    let activity = Activity::default();
    let mut client = Tracked {
        inner: client,
        activity: activity.clone(),
    };
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => r,
        _ = shutdown.changed() => Ok((0, 0)),
        _ = activity.idle_for(IDLE_TIMEOUT) => {
            debug!(sni = sni_text, cluster = %cluster.name, "passthrough: idle for {IDLE_TIMEOUT:?}; closed");
            return;
        }
    };
    match copied {
        Ok((up, down)) => debug!(
            sni = sni_text, cluster = %cluster.name, route = %route.source,
            "passthrough: {} B up, {} B down in {} ms", up as usize + hello.len(), down, started.elapsed().as_millis()
        ),
        Err(e) => debug!(sni = sni_text, cluster = %cluster.name, "passthrough: {e}"),
    }
}

/// When a connection last moved a byte, shared by its two directions.
#[derive(Clone)]
struct Activity {
    /// Tokio's clock, so tests can pause time.
    start: tokio::time::Instant,
    /// Milliseconds since `start` of the last read or write with data.
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The client side of a forwarded connection, recording activity. Every byte of
/// the connection passes through it (read: client to upstream; write: back).
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_is_measured_from_the_last_byte_either_way() {
        let (a, mut b) = tokio::io::duplex(64);
        let activity = Activity::default();
        let mut tracked = Tracked {
            inner: a,
            activity: activity.clone(),
        };
        let idle = Duration::from_secs(10);
        // Traffic at 6 s (read) and 12 s (write) pushes the deadline to 22 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        b.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        tracked.read_exact(&mut one).await.expect("read");
        tokio::time::sleep(Duration::from_secs(6)).await;
        tracked.write_all(b"y").await.expect("write back");
        let started = tokio::time::Instant::now();
        activity.idle_for(idle).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11),
            "{waited:?}"
        );
    }
}
