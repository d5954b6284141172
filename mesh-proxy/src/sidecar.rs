//! The sidecar runtime: turns snapshots into running listeners. Inbound, one
//! listener per workload port (its PeerAuthentication mode switched in place, its
//! TLS server rebuilt when the workload certificate rotates: new handshakes get the
//! new certificate, established connections keep theirs). Outbound, one listener
//! for the app's requests, routed on the snapshot (explicit-port mode). A listener
//! that cannot be bound is reported back (the controller hears it as a NACK) and
//! tried again with the next snapshot.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use isthmus_engine::{
    start_inbound_listener, start_listener, InboundMode, ListenerConfig, ListenerHandle,
    ListenerRole, SnapshotHolder, SniResolver, WorkloadCerts,
};
use isthmus_model::push::Rejected;
use isthmus_model::snapshot::{InboundListener, Snapshot};
use tracing::{error, info};

/// A running inbound listener.
struct Inbound {
    handle: ListenerHandle,
    tls: Arc<SniResolver>,
    mode: InboundMode,
    /// What it was started for (a change restarts it).
    key: (SocketAddr, SocketAddr),
}

/// What the sidecar listens on now (for logs and status).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SidecarStatus {
    /// (app port, local address) of each inbound listener.
    pub inbound: Vec<(u16, SocketAddr)>,
    pub outbound: Option<SocketAddr>,
}

/// One workload's sidecar.
pub struct Sidecar {
    holder: SnapshotHolder,
    certs: WorkloadCerts,
    inbound: BTreeMap<u16, Inbound>,
    outbound: Option<ListenerHandle>,
}

impl Sidecar {
    pub fn new(certs: WorkloadCerts) -> Sidecar {
        Sidecar {
            holder: SnapshotHolder::default(),
            certs,
            inbound: BTreeMap::new(),
            outbound: None,
        }
    }

    pub fn status(&self) -> SidecarStatus {
        SidecarStatus {
            inbound: self
                .inbound
                .iter()
                .map(|(p, i)| (*p, i.handle.local_addr()))
                .collect(),
            outbound: self.outbound.as_ref().map(ListenerHandle::local_addr),
        }
    }

    /// Serve `snapshot`, with the outbound listener on `outbound` (explicit-port
    /// mode). Returns what could not be applied.
    pub async fn apply(
        &mut self,
        snapshot: Arc<Snapshot>,
        outbound: Option<SocketAddr>,
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        self.holder.store(snapshot.clone());
        let wanted: BTreeMap<u16, &InboundListener> =
            snapshot.inbound.iter().map(|l| (l.app_port, l)).collect();
        // Ports no longer wanted stop; a port whose addresses changed gets its new
        // listener first and loses the old one only once that is bound, so a change
        // that cannot be applied leaves the last good listener serving.
        let gone: Vec<u16> = self
            .inbound
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(i) = self.inbound.remove(&p) {
                info!("stopping inbound {}", i.handle.bound());
                i.handle.stop().await;
            }
        }
        for (port, l) in wanted {
            let Some((bind, app)) = addresses(l) else {
                rejected.push(Rejected {
                    resource: format!("inbound port {port}"),
                    reason: format!(
                        "no usable bind or app address ({:?}, {})",
                        l.bind, l.app_address
                    ),
                });
                continue;
            };
            if let Some(running) = self.inbound.get(&port) {
                running.mode.set(l.mtls);
                if running.key == (bind, app) {
                    continue;
                }
            }
            let tls = Arc::new(SniResolver::new());
            if let Some(m) = self.certs.current() {
                for e in tls.update(&m.inbound_termination(&format!("inbound port {port}"))) {
                    error!("inbound port {port}: {e}");
                }
            }
            let mode = InboundMode::new(l.mtls);
            match start_inbound_listener(bind, app, self.certs.clone(), mode.clone(), tls.clone()) {
                Ok(handle) => {
                    info!(
                        "inbound {} -> app {app} (mTLS {:?}, {})",
                        handle.local_addr(),
                        l.mtls,
                        l.policy
                    );
                    let old = self.inbound.insert(
                        port,
                        Inbound {
                            handle,
                            tls,
                            mode,
                            key: (bind, app),
                        },
                    );
                    if let Some(old) = old {
                        info!("stopping inbound {}", old.handle.bound());
                        old.handle.stop().await;
                    }
                }
                Err(e) => rejected.push(Rejected {
                    resource: format!("inbound port {port}"),
                    reason: match self.inbound.get(&port) {
                        Some(old) => format!("{e}; {} keeps serving", old.handle.local_addr()),
                        None => e.to_string(),
                    },
                }),
            }
        }
        if self.outbound.is_none() {
            if let Some(bind) = outbound {
                let config = ListenerConfig {
                    role: ListenerRole::SidecarOutbound,
                    certs: Some(self.certs.clone()),
                };
                match start_listener(self.holder.clone(), bind, 0, None, config) {
                    Ok(h) => {
                        info!("outbound {} (the app's requests)", h.local_addr());
                        self.outbound = Some(h);
                    }
                    Err(e) => rejected.push(Rejected {
                        resource: "outbound".into(),
                        reason: e.to_string(),
                    }),
                }
            }
        }
        rejected
    }

    /// The workload certificate changed: new inbound handshakes use it.
    pub fn certificates_changed(&self) {
        let Some(m) = self.certs.current() else {
            return;
        };
        for (port, i) in &self.inbound {
            for e in i
                .tls
                .update(&m.inbound_termination(&format!("inbound port {port}")))
            {
                error!("inbound port {port}: {e}");
            }
        }
    }

    /// Stop every listener.
    pub async fn shutdown(mut self) {
        for (_, i) in std::mem::take(&mut self.inbound) {
            i.handle.stop().await;
        }
        if let Some(h) = self.outbound.take() {
            h.stop().await;
        }
    }
}

/// (bind, app) socket addresses of an inbound listener; transparent mode (no bind)
/// listens on Istio's inbound capture port 15006.
fn addresses(l: &InboundListener) -> Option<(SocketAddr, SocketAddr)> {
    let app_ip: IpAddr = l.app_address.parse().ok()?;
    let app = SocketAddr::new(app_ip, l.app_port);
    let bind = match &l.bind {
        Some((host, port)) => SocketAddr::new(host.parse().ok()?, *port),
        None => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), INBOUND_CAPTURE_PORT),
    };
    Some((bind, app))
}

/// Istio's inbound capture port.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
