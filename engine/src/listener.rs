//! Listener services started and stopped at run time on the caller's tokio runtime
//! (no Pingora `Server`). We bind the socket ourselves, so a port that cannot be
//! bound is an error naming the address instead of Pingora's panic, port 0 works,
//! and the actual address is known; the bound socket is handed to Pingora through
//! its listen-fd table. Each listener is one Pingora service with its own upstream
//! connection pool: plain HTTP/1.1 + h2c ([`start_http_listener`]), or TLS
//! ([`start_https_listener`]): a plain TCP listener whose app (`TlsApp`) makes the
//! handshake with the settings [`SniResolver`] picks by SNI (certificate, versions,
//! suites, client certificates; ALPN h2 and http/1.1), then hands the TLS stream to
//! the HTTP proxy. Pingora's own TLS listener takes one `TlsSettings` per port and
//! logs every refused handshake as an ERROR; ours logs a refusal as one DEBUG line
//! (`TLS handshake refused (SNI a.test): peer sent no certificates peer=...`).

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use isthmus_model::snapshot::InboundMtls;
use parking_lot::Mutex;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::proxy::{http_proxy, HttpProxy, ProxyServiceBuilder};
use pingora::server::configuration::ServerConf;
use pingora::server::{Fds, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::Service as _;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::acme_challenge::AcmeChallenges;
use crate::holder::SnapshotHolder;
use crate::mesh::{InboundMode, WorkloadCerts};
use crate::passthrough;
use crate::proxy::{ListenerRole, RouterProxy};
use crate::tls::{Accepted, SniResolver};

/// How long [`ListenerHandle::stop`] waits for the accept loop to end. Requests in
/// flight are not cut: they finish on their connections; idle keep-alive
/// connections are closed and HTTP/2 clients get a GOAWAY.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a client has to complete its TLS handshake (ClientHello included).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The Pingora settings of our services. Only `threads` (sharding of shutdown
/// notifications), the upstream pool size and the grace periods matter without a
/// `Server`; the grace periods are kept short should one ever host these services.
fn server_conf() -> Arc<ServerConf> {
    Arc::new(ServerConf {
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    })
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
}

impl Default for ListenerConfig {
    /// A gateway listener without a mesh identity, answering no ACME challenge.
    fn default() -> ListenerConfig {
        ListenerConfig {
            role: ListenerRole::Gateway,
            certs: None,
            mark: None,
            acme: None,
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
/// destination): bind `bind`, accept mesh traffic by `mode` (STRICT: mTLS with the handshakes of `tls`, PERMISSIVE: mTLS
/// or plaintext, DISABLE: plaintext) and proxy every request to the app at `app`,
/// with the peer's identity in `x-forwarded-client-cert` (and this workload's, from
/// `certs`).
pub fn start_inbound_listener(
    bind: SocketAddr,
    app: Option<SocketAddr>,
    certs: WorkloadCerts,
    mode: InboundMode,
    tls: Arc<SniResolver>,
    mark: Option<u32>,
) -> Result<ListenerHandle, ListenError> {
    let app_port = app.map_or(0, |a| a.port());
    let (runtime, fds, key, local_addr) =
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
    let (shutdown, shutdown_rx) = watch::channel(false);
    let proxy = RouterProxy::new(SnapshotHolder::default(), app_port)
        .with_role(ListenerRole::SidecarInbound { app }, Some(certs))
        .with_mark(mark);
    let app = InboundApp {
        http: Arc::new(http_proxy(&server_conf(), proxy)),
        tls,
        mode,
    };
    let mut service = Service::new(format!("inbound {bound}"), app);
    service.add_tcp(&key);
    let task = runtime.spawn(async move { service.start_service(fds, shutdown_rx, 1).await });
    Ok(ListenerHandle {
        bound,
        shutdown,
        task: Some(task),
    })
}

type Bound = (
    tokio::runtime::Handle,
    Option<Arc<Mutex<Fds>>>,
    String,
    SocketAddr,
);

/// Bind `bind` ourselves (errors name the address instead of Pingora's panic) and
/// put the socket in a listen-fd table for Pingora.
fn bind_socket(bind: SocketAddr, declared_port: u16) -> Result<Bound, ListenError> {
    let bind_err = |reason| ListenError::Bind {
        addr: bind,
        declared_port,
        reason,
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| ListenError::NoRuntime {
        addr: bind,
        declared_port,
    })?;
    let socket = std::net::TcpListener::bind(bind).map_err(bind_err)?;
    // Pingora adopts the fd as is: it must already be non-blocking.
    socket.set_nonblocking(true).map_err(bind_err)?;
    let local_addr = socket.local_addr().map_err(bind_err)?;
    let key = local_addr.to_string();
    let mut fds = Fds::new();
    fds.add(key.clone(), socket.into_raw_fd());
    Ok((runtime, Some(Arc::new(Mutex::new(fds))), key, local_addr))
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
    let (runtime, fds, key, local_addr) = bind_socket(bind, declared_port)?;
    let bound = BoundListener {
        declared_port,
        local_addr,
        tls: tls.is_some(),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let holder_for_tls = holder.clone();
    if let Some(servers) = &tls {
        servers.set_acme_challenges(config.acme.as_ref().map(|a| a.tls_alpn01.clone()));
    }
    let transparent_outbound = config.role == ListenerRole::SidecarOutbound { transparent: true };
    let proxy = RouterProxy::new(holder, declared_port)
        .with_role(config.role, config.certs)
        .with_mark(config.mark)
        .with_acme(config.acme.map(|a| a.http01));
    let task = match tls {
        None if transparent_outbound => {
            let mut http = http_proxy(&server_conf(), proxy);
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            http.server_options = Some(options);
            let app = OutboundApp {
                http: Arc::new(http),
                mark: config.mark,
            };
            let mut service = Service::new(bound.to_string(), app);
            service.add_tcp(&key);
            runtime.spawn(async move { service.start_service(fds, shutdown_rx, 1).await })
        }
        None => {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            let mut service = ProxyServiceBuilder::new(&server_conf(), proxy)
                .name(bound.to_string())
                .server_options(options)
                .build();
            service.add_tcp(&key);
            runtime.spawn(async move { service.start_service(fds, shutdown_rx, 1).await })
        }
        Some(servers) => {
            let app = TlsApp {
                http: Arc::new(http_proxy(&server_conf(), proxy.https())),
                servers,
                holder: holder_for_tls,
                port: declared_port,
            };
            let mut service = Service::new(bound.to_string(), app);
            service.add_tcp(&key);
            runtime.spawn(async move { service.start_service(fds, shutdown_rx, 1).await })
        }
    };
    Ok(ListenerHandle {
        bound,
        shutdown,
        task: Some(task),
    })
}

/// The app of a TLS listener: by SNI, the TLS handshake then the HTTP proxy on the
/// TLS stream for as long as the connection is reused, or a PASSTHROUGH forward.
struct TlsApp {
    http: Arc<HttpProxy<RouterProxy>>,
    servers: Arc<SniResolver>,
    holder: SnapshotHolder,
    /// The Gateway port, to find the listener's routes in the snapshot.
    port: u16,
}

#[async_trait]
impl ServerApp for TlsApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.servers.handshake(stream))
            .await
        {
            Ok(Ok(Accepted::Terminated(tls))) => tls,
            Ok(Ok(Accepted::Passthrough { tcp, hello, sni })) => {
                let snapshot = self.holder.load();
                passthrough::forward(&snapshot, self.port, tcp, hello, sni, shutdown).await;
                return None;
            }
            Ok(Err(refused)) => {
                debug!(%peer, "{refused}");
                return None;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake refused: not completed within {HANDSHAKE_TIMEOUT:?}");
                return None;
            }
        };
        // A reused connection is still TLS: keep it here rather than hand it back to
        // the service, which would start another handshake on it.
        let mut next = Some(tls);
        while let Some(stream) = next {
            next = self.http.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.http.cleanup().await;
    }
}

/// A sidecar's inbound listener app for one workload port.
struct InboundApp {
    http: Arc<HttpProxy<RouterProxy>>,
    tls: Arc<SniResolver>,
    mode: InboundMode,
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

#[async_trait]
impl ServerApp for InboundApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        // Transparent mode: the workload port the peer connected to.
        let port = stream
            .get_socket_digest()
            .and_then(|d| crate::proxy::redirected_to(&d))
            .map(|a| a.port());
        let mode = self.mode.get(port);
        let tls = match mode {
            InboundMtls::Disable => false,
            InboundMtls::Strict => true,
            InboundMtls::Permissive => {
                let mut tcp: Box<L4Stream> = stream.into_any().downcast().ok()?;
                let mut first = [0u8; 1];
                let n = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.read(&mut first)).await {
                    Ok(Ok(n)) => n,
                    _ => return None,
                };
                if n == 0 {
                    return None;
                }
                tcp.rewind(&first[..n]);
                let tls = first[0] == TLS_HANDSHAKE;
                return self.serve(tcp, tls, &peer, shutdown).await;
            }
        };
        self.serve(stream, tls, &peer, shutdown).await
    }

    async fn cleanup(&self) {
        self.http.cleanup().await;
    }
}

impl InboundApp {
    async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        tls: bool,
        peer: &str,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut next = if tls {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.handshake(stream)).await {
                Ok(Ok(Accepted::Terminated(tls))) => Some(tls),
                Ok(Ok(Accepted::Passthrough { .. })) => None,
                Ok(Err(refused)) => {
                    debug!(%peer, "inbound mTLS refused: {refused}");
                    None
                }
                Err(_) => {
                    debug!(%peer, "inbound mTLS refused: handshake not completed within {HANDSHAKE_TIMEOUT:?}");
                    None
                }
            }
        } else {
            Some(stream)
        };
        // Keep a reused connection here: handing it back would start over.
        while let Some(stream) = next {
            next = self.http.process_new(stream, shutdown).await;
        }
        None
    }
}

/// How long a transparent outbound connection may stay silent before it is taken
/// for a protocol where the server speaks first (it is then forwarded as TCP).
const SNIFF_TIMEOUT: Duration = Duration::from_millis(100);

/// A transparent sidecar's outbound listener (15001): a connection that starts like
/// HTTP/1 or HTTP/2 goes to the HTTP proxy (the app's requests, routed by the mesh);
/// anything else (TLS the app originates, a database protocol, a server-first
/// protocol that sends nothing within [`SNIFF_TIMEOUT`]) is forwarded as bytes to
/// its original destination, as Istio's protocol sniffing and TCP passthrough do.
struct OutboundApp {
    http: Arc<HttpProxy<RouterProxy>>,
    mark: Option<u32>,
}

#[async_trait]
impl ServerApp for OutboundApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let original = stream
            .get_socket_digest()
            .and_then(|d| crate::proxy::redirected_to(&d));
        let mut tcp: Box<L4Stream> = stream.into_any().downcast().ok()?;
        let mut first = [0u8; 16];
        let n = match tokio::time::timeout(SNIFF_TIMEOUT, tcp.read(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => n,
            Err(_) => 0,
        };
        let http = n > 0 && crate::tls::looks_like_plain_http(&first[..n]);
        if n > 0 {
            tcp.rewind(&first[..n]);
        }
        if http {
            let mut next: Option<Stream> = Some(tcp);
            while let Some(stream) = next {
                next = self.http.process_new(stream, shutdown).await;
            }
            return None;
        }
        let Some(dst) = original else {
            debug!("outbound: a non-HTTP connection that was not redirected; closed");
            return None;
        };
        match connect_marked(dst, self.mark).await {
            Ok(mut upstream) => {
                let mut downstream = tcp;
                match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                    Ok((up, down)) => debug!(%dst, up, down, "outbound TCP passthrough closed"),
                    Err(e) => debug!(%dst, error = %e, "outbound TCP passthrough ended"),
                }
            }
            Err(e) => warn!(%dst, error = %e, "outbound TCP passthrough: cannot connect"),
        }
        None
    }

    async fn cleanup(&self) {
        self.http.cleanup().await;
    }
}

/// A TCP connection to `dst`, its socket marked with `mark` (never redirected by
/// the interception rules), within the upstream connect timeout.
pub async fn connect_marked(
    dst: SocketAddr,
    mark: Option<u32>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if dst.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(m) = mark {
        socket2::SockRef::from(&socket).set_mark(m)?;
    }
    tokio::time::timeout(crate::proxy::CONNECT_TIMEOUT, socket.connect(dst))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}
