//! The edge role: follows a stream of [`Snapshot`]s, swaps each into the engine's
//! snapshot holder (requests in flight finish on the old one; no connection is
//! closed), and starts or stops one listener per Gateway port as ports appear or
//! disappear (or change between HTTP and HTTPS). An HTTPS listener's servers (per SNI:
//! certificate, TLS mode and client CA, versions, cipher suites) are swapped with each
//! snapshot: new handshakes get the new ones, established connections keep theirs.
//! Locally a privileged Gateway port (below 1024) listens on port + 8000 (443 on
//! 8443). Every listener answers the ACME challenges of the maps it is given
//! ([`GatewayOptions::acme`], filled by an [`acme::AcmeManager`]), none without.

pub mod acme;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use isthmus_engine::Limits;
use isthmus_engine::{
    start_listener, AcmeChallenges, ListenerConfig, ListenerHandle, ListenerRole, SnapshotHolder,
    SniResolver, WorkloadCerts,
};
use isthmus_model::snapshot::{Snapshot, TlsTermination};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

pub use isthmus_engine::BoundListener;

/// Where the gateway listens.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Address every listener binds (default 127.0.0.1).
    pub bind: IpAddr,
    /// Added to Gateway ports below 1024 (default 8000: port 80 listens on 8080);
    /// 0 binds privileged ports as declared.
    pub port_offset: u16,
    /// Explicit Gateway port -> local port, applied before the offset. Local port 0
    /// takes an ephemeral port (tests read it from [`GatewayStatus::listeners`]).
    pub port_overrides: BTreeMap<u16, u16>,
    /// The gateway's workload certificate, presented to mesh endpoints (ISTIO_MUTUAL
    /// and auto-mTLS). Without one, such endpoints answer 503, never plaintext.
    pub certs: Option<WorkloadCerts>,
    /// The ACME challenges every listener of this gateway answers (HTTP-01 tokens
    /// before routing, TLS-ALPN-01 certificates in the handshake): the same value the
    /// ACME manager fills (`acme::AcmeOptions::new`). `None` (the default): no
    /// challenge is answered.
    pub acme: Option<AcmeChallenges>,
    /// The limits and timeouts every listener holds its clients to.
    pub limits: Arc<Limits>,
}

impl Default for GatewayOptions {
    fn default() -> GatewayOptions {
        GatewayOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_offset: 8000,
            port_overrides: BTreeMap::new(),
            certs: None,
            acme: None,
            limits: Arc::default(),
        }
    }
}

impl GatewayOptions {
    /// The local address for a Gateway port; `None` when port + offset exceeds 65535.
    pub fn bind_addr(&self, declared_port: u16) -> Option<SocketAddr> {
        let port = match self.port_overrides.get(&declared_port) {
            Some(&p) => p,
            None if declared_port < 1024 => declared_port.checked_add(self.port_offset)?,
            None => declared_port,
        };
        Some(SocketAddr::new(self.bind, port))
    }
}

/// What the gateway serves right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStatus {
    /// Version of the snapshot in the holder (set once its listeners are reconciled).
    pub version: u64,
    /// Listeners bound, ordered by Gateway port. A port that failed to bind is absent.
    pub listeners: Vec<BoundListener>,
}

/// A running gateway. Dropping it stops every listener (in-flight requests finish).
#[derive(Debug)]
pub struct Gateway {
    status: watch::Receiver<GatewayStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Serve the current snapshot of `snapshots` and follow its updates; returns
    /// once the listeners of the current snapshot are bound (or failed, logged).
    /// When the sender is dropped the last snapshot stays served (a fixed
    /// configuration). Run on a multi-threaded tokio runtime; listeners run on it.
    pub async fn start(snapshots: watch::Receiver<Arc<Snapshot>>, opts: GatewayOptions) -> Gateway {
        let (status_tx, mut status) = watch::channel(GatewayStatus::default());
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(follow(snapshots, opts, status_tx, stop_rx));
        // The first status is sent after the first reconciliation; an error means
        // the task ended (it only does on stop) and is reported by `shutdown`.
        let _ = status.changed().await;
        Gateway {
            status,
            stop: Some(stop),
            task,
        }
    }

    /// Snapshot version served and listeners bound, updated after each snapshot.
    pub fn status(&self) -> watch::Receiver<GatewayStatus> {
        self.status.clone()
    }

    /// The listeners bound now, ordered by Gateway port.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.status.borrow().listeners.clone()
    }

    /// Stop every listener and wait until their ports are released.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            error!(error = %e, "gateway task failed");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Dropping the task drops its listener handles, which stop accepting.
        self.task.abort();
    }
}

/// Run the gateway until this future is dropped (see [`Gateway::start`]). Each
/// listener is logged as it starts: `listening http://127.0.0.1:8080 (Gateway port 80)`,
/// `listening https://127.0.0.1:8443 (Gateway port 443)`.
pub async fn run(snapshots: watch::Receiver<Arc<Snapshot>>, opts: GatewayOptions) {
    let _gateway = Gateway::start(snapshots, opts).await;
    std::future::pending::<()>().await;
}

async fn follow(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    opts: GatewayOptions,
    status: watch::Sender<GatewayStatus>,
    mut stop: oneshot::Receiver<()>,
) {
    let holder = SnapshotHolder::new(snapshots.borrow_and_update().clone());
    let mut running = BTreeMap::new();
    let mut source_open = true;
    loop {
        let snapshot = holder.load();
        reconcile(&snapshot, &holder, &opts, &mut running).await;
        status.send_replace(GatewayStatus {
            version: snapshot.version,
            listeners: running.values().map(|r| r.handle.bound()).collect(),
        });
        drop(snapshot);
        tokio::select! {
            _ = &mut stop => break,
            changed = snapshots.changed(), if source_open => match changed {
                Ok(()) => holder.store(snapshots.borrow_and_update().clone()),
                Err(_) => {
                    info!("snapshot source closed; serving the last snapshot");
                    source_open = false;
                }
            },
        }
    }
    for (_, listener) in running {
        listener.handle.stop().await;
    }
}

/// A listener started by [`reconcile`], with the certificate resolver of an HTTPS one.
struct Running {
    handle: ListenerHandle,
    certificates: Option<Arc<SniResolver>>,
    /// The certificates served now that were logged as expired or not yet valid.
    out_of_date: OutOfDate,
}

/// (Gateway server, certificate chain PEM) of certificates logged as expired or not
/// yet valid, so that each is logged once while it is served.
type OutOfDate = Vec<(String, Vec<u8>)>;

/// Swap in the servers of `tls`, logging those that cannot serve.
fn update_certificates(
    resolver: &SniResolver,
    tls: &TlsTermination,
    port: u16,
    logged: &mut OutOfDate,
) {
    for e in resolver.update(tls) {
        error!("Gateway port {port}: {e}; handshakes for its names are refused until it is fixed");
    }
    log_out_of_date(tls, port, logged);
}

/// Log, once, each certificate of `tls` that is expired or not yet valid now, in the
/// words of `isthmus analyze` (ISM0104). It is still served, as Istio does: some
/// clients are told to accept it, and the ACME manager renews those it issued.
fn log_out_of_date(tls: &TlsTermination, port: u16, logged: &mut OutOfDate) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut current = OutOfDate::new();
    for server in &tls.servers {
        let Some(cred) = &server.credential else {
            continue;
        };
        let Some(why) = isthmus_model::pem::validity_problem(&cred.cert_chain_pem, now) else {
            continue;
        };
        let seen = (server.source.clone(), cred.cert_chain_pem.clone());
        if !logged.contains(&seen) && !current.contains(&seen) {
            error!(
                "Gateway port {port}: {} ({}): {why}; it is still served until it is replaced",
                cred.secret, server.source
            );
        }
        current.push(seen);
    }
    *logged = current;
}

/// Stop listeners whose port left the snapshot or changed between HTTP and HTTPS,
/// update the certificates of the HTTPS ones that stay, then start the new ones
/// (stopping first frees a local port a new mapping may reuse). Failures are logged
/// and the port skipped; it is tried again with the next snapshot.
async fn reconcile(
    snapshot: &Snapshot,
    holder: &SnapshotHolder,
    opts: &GatewayOptions,
    running: &mut BTreeMap<u16, Running>,
) {
    let wanted: BTreeMap<u16, Option<&TlsTermination>> = snapshot
        .listeners
        .iter()
        .map(|l| (l.port, l.protocol.tls()))
        .collect();
    let gone: BTreeSet<u16> = running
        .iter()
        .filter(|(p, r)| {
            wanted
                .get(p)
                .is_none_or(|tls| tls.is_some() != r.certificates.is_some())
        })
        .map(|(p, _)| *p)
        .collect();
    for port in gone {
        if let Some(listener) = running.remove(&port) {
            info!("stopping {}", listener.handle.bound());
            listener.handle.stop().await;
        }
    }
    for (&port, &tls) in &wanted {
        if let Some(r) = running.get_mut(&port) {
            if let (Some(resolver), Some(tls)) = (&r.certificates, tls) {
                update_certificates(resolver, tls, port, &mut r.out_of_date);
            }
            continue;
        }
        let Some(addr) = opts.bind_addr(port) else {
            error!(
                "Gateway port {port}: local port {port} + offset {} is above 65535; listener skipped",
                opts.port_offset
            );
            continue;
        };
        let mut out_of_date = OutOfDate::new();
        let certificates = tls.map(|tls| {
            let resolver = Arc::new(SniResolver::new());
            update_certificates(&resolver, tls, port, &mut out_of_date);
            resolver
        });
        let config = ListenerConfig {
            role: ListenerRole::Gateway,
            certs: opts.certs.clone(),
            mark: None,
            acme: opts.acme.clone(),
            limits: opts.limits.clone(),
        };
        let started = start_listener(holder.clone(), addr, port, certificates.clone(), config);
        match started {
            Ok(handle) => {
                info!("listening {}", handle.bound());
                running.insert(
                    port,
                    Running {
                        handle,
                        certificates,
                        out_of_date,
                    },
                );
            }
            Err(e) => error!("{e}; listener skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::snapshot::{Listener, ListenerProtocol, Router};

    fn one_listener(version: u64, https: bool) -> Arc<Snapshot> {
        let protocol = if https {
            ListenerProtocol::Https(TlsTermination::default())
        } else {
            ListenerProtocol::Http
        };
        Arc::new(Snapshot {
            version,
            listeners: vec![Listener {
                port: 443,
                protocol,
                router: Router::new(Vec::new()),
            }],
            clusters: Vec::new(),
            inbound: Vec::new(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_port_that_changes_protocol_is_restarted_with_its_scheme() {
        let opts = GatewayOptions {
            port_overrides: BTreeMap::from([(443, 0)]),
            ..GatewayOptions::default()
        };
        let (tx, rx) = watch::channel(one_listener(1, false));
        let gw = Gateway::start(rx, opts).await;
        let mut status = gw.status();
        assert!(!gw.listeners()[0].tls);
        for (version, https) in [(2, true), (3, true), (4, false)] {
            tx.send_replace(one_listener(version, https));
            while status.borrow_and_update().version != version {
                status.changed().await.expect("gateway running");
            }
            let l = status.borrow().listeners.clone();
            assert_eq!(l.len(), 1, "{l:?}");
            assert_eq!(l[0].tls, https);
            let scheme = if https { "https" } else { "http" };
            assert_eq!(
                l[0].to_string(),
                format!("{scheme}://{} (Gateway port 443)", l[0].local_addr)
            );
        }
        gw.shutdown().await;
    }

    #[test]
    fn port_mapping() {
        let mut opts = GatewayOptions::default();
        let port = |o: &GatewayOptions, p| o.bind_addr(p).map(|a| a.port());
        assert_eq!(port(&opts, 80), Some(8080));
        assert_eq!(port(&opts, 443), Some(8443));
        assert_eq!(port(&opts, 1023), Some(9023));
        assert_eq!(port(&opts, 1024), Some(1024));
        assert_eq!(port(&opts, 8080), Some(8080));
        assert_eq!(
            opts.bind_addr(80).map(|a| a.ip()),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );

        opts.port_overrides.insert(80, 0);
        assert_eq!(port(&opts, 80), Some(0));
        opts.port_offset = 65000;
        assert_eq!(port(&opts, 443), Some(65443));
        assert_eq!(port(&opts, 600), None);
        opts.port_offset = 0;
        assert_eq!(port(&opts, 443), Some(443));
    }
}
