//! isthmus-mesh-proxy: the sidecar role. Runs the engine's inbound (mesh mTLS in,
//! plaintext to the app) and outbound (the app's requests routed by mesh
//! VirtualServices, mTLS to the peer's sidecar) listeners ([`sidecar`]), keeps the
//! workload's private key and certificate ([`csr`]: the key is made here and never
//! leaves; renewal at half life), and takes its configuration only from the
//! controller ([`client`]).

pub mod client;
pub mod csr;
pub mod intercept;
pub mod sidecar;

use std::net::SocketAddr;
use std::sync::Arc;

use isthmus_engine::WorkloadCerts;
use isthmus_model::compile::compile_sidecar;
use isthmus_model::mesh::mesh_workloads;
use isthmus_model::push::Rejected;
use isthmus_model::Level;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

pub use client::{ClientOptions, Event};
pub use sidecar::{Interception, Sidecar, SidecarStatus};

/// Run a sidecar for the workload `opts.node` until the process ends: its config
/// and certificate come from the controller; `on_status` is called after each
/// applied version (for the CLI's output).
pub async fn run_sidecar(
    opts: ClientOptions,
    interception: Option<Interception>,
    limits: Arc<isthmus_engine::Limits>,
    mut on_status: impl FnMut(&SidecarStatus, &str),
) {
    let certs = WorkloadCerts::new();
    let (tx, mut rx) = mpsc::channel(4);
    let node = opts.node.clone();
    let client = tokio::spawn(client::run(opts, certs.clone(), tx));
    let mut sidecar = Sidecar::new(certs.clone(), interception, limits);
    while let Some(event) = rx.recv().await {
        match event {
            Event::Certificate => {
                sidecar.certificates_changed();
                let identity = certs
                    .current()
                    .map(|m| m.identity.clone())
                    .unwrap_or_default();
                on_status(&sidecar.status(), &identity);
            }
            Event::Config {
                version,
                mesh,
                store,
                mut rejected,
                reply,
            } => {
                let own = mesh_workloads(&store, &mesh)
                    .into_iter()
                    .find(|w| w.namespace == node.namespace && w.name == node.name);
                let Some(own) = own else {
                    warn!(
                        version,
                        "WorkloadEntry {}/{} is not in the configuration; serving the last one",
                        node.namespace,
                        node.name
                    );
                    rejected.push(Rejected {
                        resource: format!("WorkloadEntry {}/{}", node.namespace, node.name),
                        reason: "not in the configuration".into(),
                    });
                    let _ = reply.send(rejected);
                    continue;
                };
                let (mut snapshot, diags) = compile_sidecar(&store, &own, &mesh);
                for d in &diags {
                    match d.level {
                        Level::Error => error!("{d}"),
                        Level::Warning => warn!("{d}"),
                        Level::Info => tracing::debug!("{d}"),
                    }
                }
                snapshot.version = version;
                let outbound: Option<SocketAddr> = own
                    .outbound
                    .as_ref()
                    .and_then(|(h, p)| Some(SocketAddr::new(h.parse().ok()?, *p)));
                let failed = sidecar.apply(Arc::new(snapshot), outbound).await;
                // A listener that cannot start is the WorkloadEntry's fault here.
                rejected.extend(failed.into_iter().map(|r| Rejected {
                    resource: format!("WorkloadEntry {}/{}", own.namespace, own.name),
                    reason: format!("{}: {}", r.resource, r.reason),
                }));
                if rejected.is_empty() {
                    info!(version, "configuration applied");
                } else {
                    for r in &rejected {
                        error!(version, "rejected {}: {}", r.resource, r.reason);
                    }
                }
                let identity = certs
                    .current()
                    .map(|m| m.identity.clone())
                    .unwrap_or_default();
                on_status(&sidecar.status(), &identity);
                let _ = reply.send(rejected);
            }
        }
    }
    client.abort();
    sidecar.shutdown().await;
}
