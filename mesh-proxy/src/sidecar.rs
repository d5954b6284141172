//! The sidecar runtime: turns snapshots into running listeners. Inbound, one
//! listener per workload port (its PeerAuthentication mode switched in place, its
//! TLS server rebuilt when the workload certificate rotates: new handshakes get the
//! new certificate, established connections keep theirs). Outbound, one listener
//! for the app's requests, routed on the snapshot (explicit-port mode). A listener
//! that cannot be bound is reported back (the controller hears it as a NACK) and
//! tried again with the next snapshot.
//!
//! Transparent mode ([`Interception`]), as in a pod after `isthmus proxy init`: one
//! inbound listener on 15006 for every workload port (a connection's original
//! destination says which port, hence which mode and where the app is) and one
//! outbound listener on 15001 (routed by the original destination's port); the
//! proxy's own upstream sockets carry the mark the rules let through.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use isthmus_engine::Limits;
use isthmus_engine::{
    start_inbound_listener, start_listener, InboundMode, ListenerConfig, ListenerHandle,
    ListenerRole, SnapshotHolder, SniResolver, WorkloadCerts,
};
use isthmus_model::push::Rejected;
use isthmus_model::snapshot::{InboundListener, InboundMtls, Snapshot};
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

/// Traffic interception (transparent mode): the capture ports and the mark of the
/// proxy's own traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interception {
    /// Where inbound connections are redirected (Istio's 15006).
    pub inbound_port: u16,
    /// Where the app's outbound connections are redirected (Istio's 15001).
    pub outbound_port: u16,
    /// `SO_MARK` of the proxy's own upstream connections.
    pub mark: Option<u32>,
}

impl Default for Interception {
    fn default() -> Interception {
        Interception {
            inbound_port: INBOUND_CAPTURE_PORT,
            outbound_port: OUTBOUND_CAPTURE_PORT,
            mark: Some(PROXY_MARK),
        }
    }
}

/// Istio's outbound capture port.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// The mark of the proxy's own traffic (Istio's proxy uid, 1337).
pub const PROXY_MARK: u32 = 1337;

/// One workload's sidecar.
pub struct Sidecar {
    holder: SnapshotHolder,
    certs: WorkloadCerts,
    inbound: BTreeMap<u16, Inbound>,
    outbound: Option<ListenerHandle>,
    interception: Option<Interception>,
    limits: Arc<Limits>,
}

impl Sidecar {
    /// A sidecar in explicit-port mode (`interception` `None`) or transparent mode,
    /// its listeners holding clients to `limits`.
    pub fn new(
        certs: WorkloadCerts,
        interception: Option<Interception>,
        limits: Arc<Limits>,
    ) -> Sidecar {
        Sidecar {
            holder: SnapshotHolder::default(),
            certs,
            inbound: BTreeMap::new(),
            outbound: None,
            interception,
            limits,
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
        if let Some(i) = self.interception {
            self.apply_transparent(&snapshot, i, &mut rejected);
            return rejected;
        }
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
            let started = start_inbound_listener(
                bind,
                Some(app),
                self.certs.clone(),
                mode.clone(),
                tls.clone(),
                None,
                self.limits.clone(),
            );
            match started {
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
                    role: ListenerRole::SidecarOutbound { transparent: false },
                    certs: Some(self.certs.clone()),
                    mark: None,
                    acme: None,
                    limits: self.limits.clone(),
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

    /// Transparent mode: one inbound listener for every port (modes by port), one
    /// outbound listener, both started once.
    fn apply_transparent(
        &mut self,
        snapshot: &Snapshot,
        i: Interception,
        rejected: &mut Vec<Rejected>,
    ) {
        let modes: std::collections::HashMap<u16, InboundMtls> = snapshot
            .inbound
            .iter()
            .map(|l| (l.app_port, l.mtls))
            .collect();
        // Ports the workload does not declare: the strictest mode it has (a
        // namespace- or mesh-wide STRICT also covers them), PERMISSIVE without any.
        let other = [
            InboundMtls::Strict,
            InboundMtls::Permissive,
            InboundMtls::Disable,
        ]
        .into_iter()
        .find(|m| modes.values().any(|x| x == m))
        .unwrap_or(InboundMtls::Permissive);
        if let Some(running) = self.inbound.get(&0) {
            running.mode.set_ports(modes, other);
        } else {
            let bind = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), i.inbound_port);
            let tls = Arc::new(SniResolver::new());
            if let Some(m) = self.certs.current() {
                for e in tls.update(&m.inbound_termination("inbound")) {
                    error!("inbound: {e}");
                }
            }
            let mode = InboundMode::new(other);
            mode.set_ports(modes, other);
            match start_inbound_listener(
                bind,
                None,
                self.certs.clone(),
                mode.clone(),
                tls.clone(),
                i.mark,
                self.limits.clone(),
            ) {
                Ok(handle) => {
                    info!(
                        "inbound {} (intercepted, every workload port)",
                        handle.local_addr()
                    );
                    let key = (bind, bind);
                    self.inbound.insert(
                        0,
                        Inbound {
                            handle,
                            tls,
                            mode,
                            key,
                        },
                    );
                }
                Err(e) => rejected.push(Rejected {
                    resource: "inbound capture port".into(),
                    reason: e.to_string(),
                }),
            }
        }
        if self.outbound.is_none() {
            let bind = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), i.outbound_port);
            let config = ListenerConfig {
                role: ListenerRole::SidecarOutbound { transparent: true },
                certs: Some(self.certs.clone()),
                mark: i.mark,
                acme: None,
                limits: self.limits.clone(),
            };
            match start_listener(self.holder.clone(), bind, 0, None, config) {
                Ok(h) => {
                    info!("outbound {} (intercepted)", h.local_addr());
                    self.outbound = Some(h);
                }
                Err(e) => rejected.push(Rejected {
                    resource: "outbound capture port".into(),
                    reason: e.to_string(),
                }),
            }
        }
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
