//! Listener services started and stopped at run time on the caller's tokio runtime
//! (no Pingora `Server`). We bind the socket ourselves, so a port that cannot be
//! bound is an error naming the address instead of Pingora's panic, port 0 works,
//! and the actual address is known; the bound socket is handed to Pingora through
//! its listen-fd table. Each listener is one Pingora service with its own upstream
//! connection pool: plain HTTP/1.1 + h2c ([`start_http_listener`]), or TLS 1.2/1.3
//! with ALPN h2 and http/1.1 and certificates from an [`SniResolver`]
//! ([`start_https_listener`]; Pingora never sees certificate files, whose loading
//! panics on error).

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::ServerConf;
use pingora::server::Fds;
use pingora::services::Service as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::holder::SnapshotHolder;
use crate::proxy::RouterProxy;
use crate::tls::SniResolver;

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
    #[error("cannot set up TLS on {addr} (Gateway port {declared_port}): {reason}")]
    Tls {
        addr: SocketAddr,
        declared_port: u16,
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
/// the Gateway port `declared_port`, routing on `holder`'s snapshot. Call from a
/// multi-threaded tokio runtime; the service runs on it.
pub fn start_http_listener(
    holder: SnapshotHolder,
    bind: SocketAddr,
    declared_port: u16,
) -> Result<ListenerHandle, ListenError> {
    start(holder, bind, declared_port, None)
}

/// Bind `bind` and terminate TLS on it (1.2 and 1.3, ALPN h2 then http/1.1) with the
/// certificates `certificates` picks by SNI, then route as [`start_http_listener`]
/// does with scheme `https`. Update the certificates with [`SniResolver::update`]:
/// new handshakes use them, established connections are not touched.
pub fn start_https_listener(
    holder: SnapshotHolder,
    bind: SocketAddr,
    declared_port: u16,
    certificates: Arc<SniResolver>,
) -> Result<ListenerHandle, ListenError> {
    start(holder, bind, declared_port, Some(certificates))
}

fn start(
    holder: SnapshotHolder,
    bind: SocketAddr,
    declared_port: u16,
    tls: Option<Arc<SniResolver>>,
) -> Result<ListenerHandle, ListenError> {
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

    let bound = BoundListener {
        declared_port,
        local_addr,
        tls: tls.is_some(),
    };
    let mut proxy = RouterProxy::new(holder, declared_port);
    let mut options = HttpServerOptions::default();
    if tls.is_some() {
        proxy = proxy.https();
    } else {
        options.h2c = true;
    }
    let mut service = ProxyServiceBuilder::new(&server_conf(), proxy)
        .name(bound.to_string())
        .server_options(options)
        .build();
    match tls {
        None => service.add_tcp(&key),
        Some(resolver) => {
            // No certificate paths: with a resolver set, `build()` reads no files.
            let mut settings = TlsSettings::intermediate("", "").map_err(|e| ListenError::Tls {
                addr: bind,
                declared_port,
                reason: e.to_string(),
            })?;
            settings.set_cert_resolver(resolver);
            settings.enable_h2();
            service.add_tls_with_settings(&key, None, settings);
        }
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = runtime.spawn(async move {
        service
            .start_service(Some(Arc::new(Mutex::new(fds))), shutdown_rx, 1)
            .await;
    });
    Ok(ListenerHandle {
        bound,
        shutdown,
        task: Some(task),
    })
}
