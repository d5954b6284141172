//! Listeners started and stopped at run time on the caller's tokio runtime (no
//! Pingora `Server`). We bind the socket ourselves, so a port that cannot be bound
//! is an error naming the address instead of Pingora's panic, port 0 works, and
//! the actual address is known; our accept loop gives each connection its own task
//! and the listener's app (`App`):
//! - plain HTTP ([`start_http_listener`]): HTTP/1.1 and h2c (prior knowledge) to
//!   our core ([`crate::h1`], `h2`);
//! - TLS ([`start_https_listener`]): the handshake with the settings
//!   [`SniResolver`] picks by SNI (certificate, versions, suites, client
//!   certificates; ALPN h2 and http/1.1), then HTTP as above, or a PASSTHROUGH
//!   forward. Pingora's own TLS listener takes one `TlsSettings` per port and logs
//!   every refused handshake as an ERROR; ours logs a refusal as one DEBUG line
//!   (`TLS handshake refused (SNI a.test): peer sent no certificates peer=...`);
//! - a transparent sidecar's outbound (protocol sniffing, TCP passthrough) and a
//!   sidecar's inbound (mTLS by PeerAuthentication mode).
//!
//! Each listener has its own upstream connection pool.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use isthmus_model::snapshot::InboundMtls;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::acme_challenge::AcmeChallenges;
use crate::conn::TcpConn;
use crate::h1::HttpCore;
use crate::holder::SnapshotHolder;
use crate::limits::{ConnectionGate, Limits};
use crate::mesh::{InboundMode, WorkloadCerts};
use crate::passthrough;
use crate::proxy::{ListenerRole, RouterProxy};
use crate::tls::{Accepted, SniResolver};

/// How long [`ListenerHandle::stop`] waits for the accept loop to end. Requests in
/// flight are not cut: they finish on their connections; idle keep-alive
/// connections are closed and HTTP/2 clients get a GOAWAY.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr} (Gateway port {declared_port}): {reason}")]
    Bind {
        addr: SocketAddr,
        declared_port: u16,
        reason: std::io::Error,
    },
    #[error("cannot start the listener on {addr} (Gateway port {declared_port}): not called from a tokio runtime")]
    NoRuntime {
        addr: SocketAddr,
        declared_port: u16,
    },
    /// A sidecar's inbound listener could not start (`app_port` 0: every port).
    #[error("cannot listen on {addr} (inbound for app port {app_port}): {reason}")]
    Inbound {
        addr: SocketAddr,
        app_port: u16,
        reason: String,
    },
}

/// A listener as bound: the Gateway port it serves, the local address, and whether
/// it terminates TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundListener {
    pub declared_port: u16,
    pub local_addr: SocketAddr,
    pub tls: bool,
}

impl BoundListener {
    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// `http://127.0.0.1:8080` or `https://127.0.0.1:8443`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.local_addr)
    }
}

impl fmt::Display for BoundListener {
    /// `http://127.0.0.1:8080 (Gateway port 80)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (Gateway port {})", self.url(), self.declared_port)
    }
}

/// A running listener. Dropping it stops accepting too; [`ListenerHandle::stop`]
/// also waits until the accept loop has ended and the port is released.
#[derive(Debug)]
pub struct ListenerHandle {
    bound: BoundListener,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ListenerHandle {
    pub fn bound(&self) -> BoundListener {
        self.bound
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr
    }

    pub fn declared_port(&self) -> u16 {
        self.bound.declared_port
    }

    /// Stop accepting, close idle connections, and wait (up to [`STOP_GRACE`]) for
    /// the service to wind down.
    pub async fn stop(mut self) {
        // Receivers live in the service; a send error means it already ended.
        let _ = self.shutdown.send(true);
        let Some(task) = self.task.take() else {
            return;
        };
        match tokio::time::timeout(STOP_GRACE, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(listener = %self.bound, error = %e, "listener task failed"),
            Err(_) => warn!(listener = %self.bound, "listener did not stop within {STOP_GRACE:?}"),
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Bind `bind` and serve HTTP/1.1 (keep-alive) and h2c (prior knowledge) on it for
/// the Gateway port `declared_port`, routing on `holder`'s snapshot, as a gateway
/// listener answering no ACME challenge ([`start_listener`] with an
/// [`AcmeChallenges`] answers them). Call from a multi-threaded tokio runtime; the
/// service runs on it.
pub fn start_http_listener(
    holder: SnapshotHolder,
    bind: SocketAddr,
    declared_port: u16,
) -> Result<ListenerHandle, ListenError> {
    start(holder, bind, declared_port, None, ListenerConfig::default())
}

/// What a listener is beyond its port and TLS: its role (which per-request steps
/// apply), the workload certificate it presents to mesh endpoints, and the ACME
/// challenges it answers.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub role: ListenerRole,
    pub certs: Option<WorkloadCerts>,
    /// `SO_MARK` for upstream sockets (a sidecar under traffic interception).
    pub mark: Option<u32>,
    /// The ACME challenges this listener answers: HTTP-01 tokens before routing
    /// (plain HTTP, Gateway role only), TLS-ALPN-01 certificates in the handshake
    /// (TLS: set on its [`SniResolver`]). `None`: it answers none, as sidecar
    /// listeners must.
    pub acme: Option<AcmeChallenges>,
    /// The limits and timeouts clients are held to.
    pub limits: Arc<Limits>,
}

impl Default for ListenerConfig {
    /// A gateway listener without a mesh identity, answering no ACME challenge.
    fn default() -> ListenerConfig {
        ListenerConfig {
            role: ListenerRole::Gateway,
            certs: None,
            mark: None,
            acme: None,
            limits: Arc::default(),
        }
    }
}

/// [`start_http_listener`] or [`start_https_listener`] (with `tls`) in the role,
/// with the mesh identity and answering the ACME challenges of `config` (a TLS
/// listener sets `tls`'s TLS-ALPN-01 map from `config.acme`).
pub fn start_listener(
    holder: SnapshotHolder,
    bind: SocketAddr,
    declared_port: u16,
    tls: Option<Arc<SniResolver>>,
    config: ListenerConfig,
) -> Result<ListenerHandle, ListenError> {
    start(holder, bind, declared_port, tls, config)
}

/// A sidecar's inbound listener for one workload port at `app` (`None`:
/// transparent mode, every port, the app at each connection's original
/// destination): bind `bind`, accept mesh traffic by `mode` (STRICT: mTLS with the
/// handshakes of `tls`, PERMISSIVE: mTLS or plaintext, DISABLE: plaintext) and proxy
/// every request to the app at `app`, with the peer's identity in
/// `x-forwarded-client-cert` (and this workload's, from `certs`).
pub fn start_inbound_listener(
    bind: SocketAddr,
    app: Option<SocketAddr>,
    certs: WorkloadCerts,
    mode: InboundMode,
    tls: Arc<SniResolver>,
    mark: Option<u32>,
    limits: Arc<Limits>,
) -> Result<ListenerHandle, ListenError> {
    let app_port = app.map_or(0, |a| a.port());
    let (runtime, listener, local_addr) =
        bind_socket(bind, app_port).map_err(|e| ListenError::Inbound {
            addr: bind,
            app_port,
            reason: match e {
                ListenError::Bind { reason, .. } => reason.to_string(),
                other => other.to_string(),
            },
        })?;
    let bound = BoundListener {
        declared_port: app_port,
        local_addr,
        tls: true,
    };
    let proxy = RouterProxy::new(SnapshotHolder::default(), app_port)
        .with_role(ListenerRole::SidecarInbound { app }, Some(certs))
        .with_mark(mark);
    let gate = limits.gate();
    let app = App::Inbound {
        http: Http::new(proxy, limits),
        tls,
        mode,
    };
    Ok(spawn_listener(runtime, listener, bound, app, gate))
}

/// The listen backlog: connections the kernel completes before we accept them.
/// Linux caps it at `net.core.somaxconn` (4096 by default); std's 128 overflows
/// under a burst of connections, and the clients of the dropped SYNs wait a
/// second for their retransmission.
const BACKLOG: i32 = 1024;

/// A non-blocking listening socket on `bind` (`SO_REUSEADDR`, as std sets it).
fn listen(bind: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&bind.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Bind `bind` ourselves (errors name the address instead of Pingora's panic).
fn bind_socket(
    bind: SocketAddr,
    declared_port: u16,
) -> Result<(tokio::runtime::Handle, std::net::TcpListener, SocketAddr), ListenError> {
    let bind_err = |reason| ListenError::Bind {
        addr: bind,
        declared_port,
        reason,
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| ListenError::NoRuntime {
        addr: bind,
        declared_port,
    })?;
    let socket = listen(bind).map_err(bind_err)?;
    let local_addr = socket.local_addr().map_err(bind_err)?;
    Ok((runtime, socket, local_addr))
}

/// Bind `bind` and terminate TLS on it (ALPN h2 then http/1.1) with the server
/// `certificates` picks by SNI, then route as [`start_http_listener`] does with
/// scheme `https` (answering no ACME challenge: `certificates` is given no
/// TLS-ALPN-01 map). Update the servers with [`SniResolver::update`]: new handshakes
/// use them, established connections are not touched.
pub fn start_https_listener(
    holder: SnapshotHolder,
    bind: SocketAddr,
    declared_port: u16,
    certificates: Arc<SniResolver>,
) -> Result<ListenerHandle, ListenError> {
    start(
        holder,
        bind,
        declared_port,
        Some(certificates),
        ListenerConfig::default(),
    )
}

fn start(
    holder: SnapshotHolder,
    bind: SocketAddr,
    declared_port: u16,
    tls: Option<Arc<SniResolver>>,
    config: ListenerConfig,
) -> Result<ListenerHandle, ListenError> {
    let (runtime, listener, local_addr) = bind_socket(bind, declared_port)?;
    let bound = BoundListener {
        declared_port,
        local_addr,
        tls: tls.is_some(),
    };
    if let Some(servers) = &tls {
        servers.set_acme_challenges(config.acme.as_ref().map(|a| a.tls_alpn01.clone()));
    }
    let transparent_outbound = config.role == ListenerRole::SidecarOutbound { transparent: true };
    let mark = config.mark;
    let limits = config.limits;
    let gate = limits.gate();
    let proxy = RouterProxy::new(holder.clone(), declared_port)
        .with_role(config.role, config.certs)
        .with_mark(config.mark)
        .with_acme(config.acme.map(|a| a.http01))
        .with_trusted_proxies(limits.num_trusted_proxies);
    let app = match tls {
        None if transparent_outbound => App::Outbound {
            http: Http::new(proxy, limits),
            mark,
        },
        None => App::Plain(Http::new(proxy, limits)),
        Some(servers) => App::Tls {
            http: Http::new(proxy.https(), limits),
            servers,
            holder,
            port: declared_port,
        },
    };
    Ok(spawn_listener(runtime, listener, bound, app, gate))
}

/// Accept connections on `listener` until the handle says stop, each served by
/// `app` in its own task. With a `gate`, a connection over the listener's or its
/// client address's limit is closed at once (one log line per listener every few
/// seconds says how many), so a flood from one address queues nothing and other
/// clients keep being served.
fn spawn_listener(
    runtime: tokio::runtime::Handle,
    listener: std::net::TcpListener,
    bound: BoundListener,
    app: App,
    gate: Option<Arc<ConnectionGate>>,
) -> ListenerHandle {
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let app = Arc::new(app);
    let task = runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                warn!(listener = %bound, error = %e, "cannot register the listening socket");
                return;
            }
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let permit = match &gate {
                            None => None,
                            Some(gate) => match gate.admit(peer.ip()) {
                                Ok(permit) => Some(permit),
                                Err(why) => {
                                    gate.refused(why, peer.ip(), &bound);
                                    refuse(tcp);
                                    continue;
                                }
                            },
                        };
                        let app = app.clone();
                        let shutdown = shutdown_rx.clone();
                        tokio::spawn(async move {
                            app.serve(tcp, shutdown).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: say so, let others finish.
                        warn!(listener = %bound, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown_rx.changed() => break,
            }
        }
    });
    ListenerHandle {
        bound,
        shutdown,
        task: Some(task),
    }
}

/// Close a connection over a limit at once, with a reset (`SO_LINGER` 0): the
/// client learns right away, and no socket lingers in `TIME_WAIT` here.
fn refuse(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

/// The HTTP proxy of one listener: our core, HTTP/1.1 and HTTP/2.
struct Http {
    core: Arc<HttpCore>,
}

impl Http {
    fn new(proxy: RouterProxy, limits: Arc<Limits>) -> Http {
        Http {
            core: Arc::new(HttpCore::new(proxy, limits)),
        }
    }

    fn limits(&self) -> &Limits {
        &self.core.limits
    }

    /// A plaintext connection: h2c (prior knowledge) or HTTP/1.1.
    async fn serve_plain(&self, tcp: TcpStream, shutdown: ShutdownWatch) {
        let conn = TcpConn::new(tcp);
        let mut first = [0u8; H2C_START.len()];
        let h2c = tokio::select! {
            peeked = conn.peek(&mut first) => match peeked {
                Ok(n) => n > 0 && first[..n] == H2C_START[..n] && n == H2C_START.len(),
                Err(_) => return,
            },
            _ = tokio::time::sleep(self.limits().request_head_timeout) => return,
        };
        if h2c {
            Box::pin(self.core.serve_h2(Box::new(conn), &shutdown)).await;
        } else {
            self.core.serve(Box::new(conn), &shutdown).await;
        }
    }

    /// A terminated TLS connection: by ALPN.
    async fn serve_tls(&self, tls: Stream, shutdown: ShutdownWatch) {
        if matches!(tls.selected_alpn_proto(), Some(ALPN::H2)) {
            Box::pin(self.core.serve_h2(tls, &shutdown)).await;
        } else {
            let gathered = crate::conn::Gathered::new(tls);
            self.core.serve(Box::new(gathered), &shutdown).await;
        }
    }
}

/// The start of the HTTP/2 connection preface.
const H2C_START: &[u8] = b"PRI * HTTP/2.0";

/// A Pingora L4 stream (no buffers) over the socket of `conn`, for the code that
/// wants one: the TLS handshake (ClientHello peek and replay) and HTTP/2.
fn l4_stream(conn: TcpConn) -> Stream {
    let digest = SocketDigest::from_raw_fd(conn.tcp().as_raw_fd());
    let mut l4 = L4Stream::from(conn.into_tcp());
    l4.set_socket_digest(digest);
    Box::new(l4)
}

/// What a listener does with each connection.
enum App {
    /// Plain HTTP/1.1 and h2c.
    Plain(Http),
    /// A transparent sidecar's outbound listener (15001): a connection that starts
    /// like HTTP/1 or HTTP/2 goes to the HTTP proxy (the app's requests, routed by
    /// the mesh); anything else (TLS the app originates, a database protocol, a
    /// server-first protocol that sends nothing within [`SNIFF_TIMEOUT`]) is
    /// forwarded as bytes to its original destination, as Istio's protocol sniffing
    /// and TCP passthrough do.
    Outbound { http: Http, mark: Option<u32> },
    /// TLS terminated by SNI (or a PASSTHROUGH forward), then HTTP.
    Tls {
        http: Http,
        servers: Arc<SniResolver>,
        holder: SnapshotHolder,
        /// The Gateway port, to find the listener's routes in the snapshot.
        port: u16,
    },
    /// A sidecar's inbound listener for one workload port.
    Inbound {
        http: Http,
        tls: Arc<SniResolver>,
        mode: InboundMode,
    },
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long a transparent outbound connection may stay silent before it is taken
/// for a protocol where the server speaks first (it is then forwarded as TCP).
const SNIFF_TIMEOUT: Duration = Duration::from_millis(100);

impl App {
    /// Serve one connection. Each arm runs boxed: a connection task is then the
    /// size of what its own kind of connection needs, not of the largest arm.
    async fn serve(&self, tcp: TcpStream, shutdown: ShutdownWatch) {
        match self {
            App::Plain(http) => http.serve_plain(tcp, shutdown).await,
            App::Outbound { http, mark } => Box::pin(outbound(http, *mark, tcp, shutdown)).await,
            App::Tls {
                http,
                servers,
                holder,
                port,
            } => Box::pin(serve_tls(http, servers, holder, *port, tcp, shutdown)).await,
            App::Inbound { http, tls, mode } => {
                Box::pin(serve_inbound(http, tls, mode, tcp, shutdown)).await
            }
        }
    }
}

/// A connection to a TLS listener: the handshake by SNI, then HTTP, or a
/// PASSTHROUGH forward.
async fn serve_tls(
    http: &Http,
    servers: &SniResolver,
    holder: &SnapshotHolder,
    port: u16,
    tcp: TcpStream,
    shutdown: ShutdownWatch,
) {
    let conn = TcpConn::new(tcp);
    let peer = peer_of(&conn);
    let stream = l4_stream(conn);
    let handshake_timeout = http.limits().handshake_timeout;
    let accepted = tokio::time::timeout(handshake_timeout, servers.handshake(stream)).await;
    match accepted {
        Ok(Ok(Accepted::Terminated(tls))) => http.serve_tls(tls, shutdown).await,
        Ok(Ok(Accepted::Passthrough { tcp, hello, sni })) => {
            let snapshot = holder.load();
            passthrough::forward(&snapshot, port, tcp, hello, sni, &shutdown).await;
        }
        Ok(Err(refused)) => debug!(%peer, "{refused}"),
        Err(_) => {
            debug!(%peer, "TLS handshake refused: not completed within {handshake_timeout:?}")
        }
    }
}

/// A connection to a sidecar's inbound listener: mTLS or plaintext by the
/// PeerAuthentication mode of the port, then HTTP to the app.
async fn serve_inbound(
    http: &Http,
    tls: &SniResolver,
    mode: &InboundMode,
    tcp: TcpStream,
    shutdown: ShutdownWatch,
) {
    let conn = TcpConn::new(tcp);
    let peer = peer_of(&conn);
    // Transparent mode: the workload port the peer connected to.
    let port = conn
        .get_socket_digest()
        .and_then(|d| crate::proxy::redirected_to(&d))
        .map(|a| a.port());
    let handshake_timeout = http.limits().handshake_timeout;
    let mtls = match mode.get(port) {
        InboundMtls::Disable => false,
        InboundMtls::Strict => true,
        InboundMtls::Permissive => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(handshake_timeout, conn.peek(&mut first)).await {
                Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
                _ => return,
            }
        }
    };
    if !mtls {
        return http.serve_plain(conn.into_tcp(), shutdown).await;
    }
    let stream = l4_stream(conn);
    match tokio::time::timeout(handshake_timeout, tls.handshake(stream)).await {
        Ok(Ok(Accepted::Terminated(tls))) => http.serve_tls(tls, shutdown).await,
        Ok(Ok(Accepted::Passthrough { .. })) => {}
        Ok(Err(refused)) => debug!(%peer, "inbound mTLS refused: {refused}"),
        Err(_) => debug!(
            %peer,
            "inbound mTLS refused: handshake not completed within {handshake_timeout:?}"
        ),
    }
}

/// The peer's address, for logs.
fn peer_of(conn: &TcpConn) -> String {
    conn.tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// A transparent outbound connection: HTTP to the proxy, anything else as bytes to
/// where the app was going.
async fn outbound(http: &Http, mark: Option<u32>, tcp: TcpStream, shutdown: ShutdownWatch) {
    let conn = TcpConn::new(tcp);
    let original = conn
        .get_socket_digest()
        .and_then(|d| crate::proxy::redirected_to(&d));
    let mut first = [0u8; 16];
    let n = match tokio::time::timeout(SNIFF_TIMEOUT, conn.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return,
        Ok(Ok(n)) => n,
        Err(_) => 0,
    };
    if n > 0 && crate::tls::looks_like_plain_http(&first[..n]) {
        return http.serve_plain(conn.into_tcp(), shutdown).await;
    }
    let Some(dst) = original else {
        debug!("outbound: a non-HTTP connection that was not redirected; closed");
        return;
    };
    match crate::conn::connect(dst, mark, http.limits().connect_timeout).await {
        Ok(mut upstream) => {
            let mut downstream = conn.into_tcp();
            match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                Ok((up, down)) => debug!(%dst, up, down, "outbound TCP passthrough closed"),
                Err(e) => debug!(%dst, error = %e, "outbound TCP passthrough ended"),
            }
        }
        Err(e) => warn!(%dst, error = %e, "outbound TCP passthrough: cannot connect"),
    }
}

/// A TCP connection to `dst`, its socket marked with `mark` (never redirected by
/// the interception rules), within the default upstream connect timeout.
pub async fn connect_marked(dst: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    crate::conn::connect(dst, mark, crate::proxy::CONNECT_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle keep-alive connection costs its task: the future of `App::serve`
    /// waiting for the next request. Keep it small (the per-request work is boxed
    /// while it runs), so 10,000 idle clients stay in the tens of MB.
    #[tokio::test]
    async fn an_idle_connection_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.unwrap();
        let (tcp, _) = accepted.unwrap();
        let (_tx, rx) = watch::channel(false);
        let app = App::Plain(Http::new(
            RouterProxy::new(SnapshotHolder::default(), 80),
            Arc::default(),
        ));
        let fut = app.serve(tcp, rx);
        let size = std::mem::size_of_val(&fut);
        eprintln!("App::serve future: {size} bytes");
        assert!(size <= 2048, "App::serve future is {size} bytes");
    }
}
