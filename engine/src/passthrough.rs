//! TLS PASSTHROUGH: a connection whose SNI names a VirtualService `tls` route is
//! forwarded to one of the route's weighted destinations without terminating TLS.
//! The ClientHello bytes the listener already read are written to the upstream
//! first, then bytes are copied both ways until either side closes, so the client
//! handshakes with the backend and sees the backend's own certificate. The route is
//! chosen on the snapshot current when the connection arrives; a connection keeps
//! its upstream for its lifetime. Each connection is one DEBUG line when it ends.

use std::time::Instant;

use isthmus_model::snapshot::Snapshot;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use crate::proxy::{pick_cluster, resolve, CONNECT_TIMEOUT};

/// Forward `client` (its first bytes `hello` already read) by the PASSTHROUGH route
/// of listener `port` in `snapshot` for `sni`. Returns when the connection ends;
/// a connection with no route or no endpoint is closed (the client sees its
/// handshake fail).
pub async fn forward(
    snapshot: &Snapshot,
    port: u16,
    mut client: Box<L4Stream>,
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
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
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
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut *client, &mut upstream) => r,
        _ = shutdown.changed() => Ok((0, 0)),
    };
    match copied {
        Ok((up, down)) => debug!(
            sni = sni_text, cluster = %cluster.name, route = %route.source,
            "passthrough: {} B up, {} B down in {} ms", up as usize + hello.len(), down, started.elapsed().as_millis()
        ),
        Err(e) => debug!(sni = sni_text, cluster = %cluster.name, "passthrough: {e}"),
    }
}
