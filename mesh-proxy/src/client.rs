//! The proxy's side of the push protocol ([`isthmus_model::push`]): one TLS
//! connection to the controller (verified against the mesh root as
//! `istiod.istio-system.svc`), authenticated by the bootstrap token the first time
//! and by the workload certificate afterwards. It asks for a certificate for the
//! workload's identity (the private key is made here and never sent), applies each
//! config version it is pushed and answers ACK or NACK, renews the certificate at
//! half its lifetime, and reconnects with backoff when the controller goes away,
//! while everything keeps serving the last good snapshot and certificate.

use std::sync::Arc;
use std::time::Duration;

use isthmus_engine::WorkloadCerts;
use isthmus_model::identity::Identity;
use isthmus_model::mesh::{mesh_workloads, MeshOptions};
use isthmus_model::push::{ControllerMessage, NodeInfo, ProxyMessage, Rejected};
use isthmus_model::{Resource, Store};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::csr::new_key_and_csr;

/// The controller's certificate name (istiod's).
pub const CONTROLLER_NAME: &str = "istiod.istio-system.svc";

/// Longest line accepted from the controller (a config can be large).
const MAX_LINE: u64 = 64 * 1024 * 1024;

/// What the client hands the proxy's runtime.
pub enum Event {
    /// A config version to apply; answer with what was rejected (empty: ACK).
    Config {
        version: u64,
        mesh: MeshOptions,
        store: Store,
        /// Resources that could not be read back (already rejected).
        rejected: Vec<Rejected>,
        reply: oneshot::Sender<Vec<Rejected>>,
    },
    /// The workload certificate changed (already swapped into the certificates).
    Certificate,
}

/// How to reach the controller and who this proxy is.
#[derive(Clone)]
pub struct ClientOptions {
    pub controller: String,
    /// PEM of the mesh root, to verify the controller.
    pub root_pem: Vec<u8>,
    pub node: NodeInfo,
    /// The bootstrap token (first connection).
    pub token: Option<String>,
    /// A file holding the bootstrap token, read again at every connection (a
    /// restarted controller writes new ones), before `token`.
    pub token_file: Option<std::path::PathBuf>,
    /// `SO_MARK` of the connection (under interception the proxy's own traffic
    /// must not be redirected to itself).
    pub mark: Option<u32>,
    /// A gateway's service account (its identity's last part); a sidecar's comes
    /// from its WorkloadEntry.
    pub service_account: Option<String>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("controller", &self.controller)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// State kept across connections.
struct State {
    certs: WorkloadCerts,
    /// The version applied now (0: none).
    version: u64,
    /// The key of the certificate in use, and of one requested but not issued yet.
    key_pem: Option<String>,
    pending_key: Option<String>,
    identity: Option<Identity>,
    /// When the current certificate should be renewed (half its lifetime).
    renew_at: Option<tokio::time::Instant>,
}

/// Run until `events` is closed: connect, serve, reconnect.
pub async fn run(opts: ClientOptions, certs: WorkloadCerts, events: mpsc::Sender<Event>) {
    let mut state = State {
        certs,
        version: 0,
        key_pem: None,
        pending_key: None,
        identity: None,
        renew_at: None,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect_and_serve(&opts, &mut state, &events).await {
            Ok(()) => return,
            Err(e) => {
                warn!(
                    "controller {}: {e}; serving the last configuration, reconnecting in {backoff:?}",
                    opts.controller
                );
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn tls_config(opts: &ClientOptions, state: &State) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&opts.root_pem) {
        roots
            .add(der.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    // With a certificate, present it: the controller then needs no token.
    let material = state
        .certs
        .current()
        .filter(|_| usable_certificate(state))
        .zip(state.key_pem.as_ref());
    match material {
        Some((m, key)) => {
            let chain = CertificateDer::pem_slice_iter(&m.chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

async fn send<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, m: &ProxyMessage) -> Result<(), String> {
    let mut line = serde_json::to_vec(m).map_err(|e| e.to_string())?;
    line.push(b'\n');
    w.write_all(&line).await.map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())
}

/// A new key and CSR for `identity`; the key is kept as the one pending, and no
/// renewal is due while it is (one request in flight at a time: a certificate is
/// matched with the key of the last request sent on this connection).
fn new_csr(state: &mut State, identity: &Identity) -> Result<String, String> {
    let k = new_key_and_csr(identity).map_err(|e| e.to_string())?;
    state.pending_key = Some(k.key_pem);
    state.renew_at = None;
    Ok(k.csr_pem)
}

async fn connect_and_serve(
    opts: &ClientOptions,
    state: &mut State,
    events: &mpsc::Sender<Event>,
) -> Result<(), String> {
    let config = tls_config(opts, state)?;
    let tcp = connect(&opts.controller, opts.mark)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(CONTROLLER_NAME).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (r, mut w) = tokio::io::split(tls);
    let mut r = BufReader::new(r);
    let have_cert = usable_certificate(state);
    // A restarted proxy knows its identity only from the config: the CSR follows it.
    // A request sent on a connection that broke will not be answered: ask again.
    if state.pending_key.take().is_some() && have_cert {
        state.renew_at = Some(tokio::time::Instant::now());
    }
    let csr = match (&state.identity, have_cert) {
        (Some(id), false) => Some(new_csr(state, &id.clone())?),
        _ => None,
    };
    send(
        &mut w,
        &ProxyMessage::Hello {
            node: opts.node.clone(),
            token: if have_cert { None } else { token(opts) },
            csr,
            version: state.version,
        },
    )
    .await?;
    info!("connected to the controller {}", opts.controller);
    // `read_until` is cancel-safe as long as the buffer is kept: a partial line
    // stays in it when the renewal timer wins the select.
    let mut line = Vec::new();
    loop {
        let renew = state.renew_at;
        tokio::select! {
            read = r.read_until(b'\n', &mut line) => {
                let n = read.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("the controller closed the connection".into());
                }
                if line.len() as u64 > MAX_LINE {
                    return Err("message too long".into());
                }
                if line.last() != Some(&b'\n') {
                    continue;
                }
            }
            _ = async {
                match renew {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(id) = state.identity.clone() {
                    let csr = new_csr(state, &id)?;
                    info!("renewing the workload certificate (half its lifetime)");
                    send(&mut w, &ProxyMessage::Csr { csr }).await?;
                }
                continue;
            }
        }
        let msg: ControllerMessage =
            serde_json::from_slice(&line).map_err(|e| format!("bad message: {e}"))?;
        line.clear();
        match msg {
            ControllerMessage::Error { message } => {
                return Err(format!("refused by the controller: {message}"));
            }
            ControllerMessage::Certificate {
                chain,
                root,
                not_after,
            } => {
                let Some(key) = state.pending_key.take() else {
                    warn!("a certificate arrived without a request; ignored");
                    continue;
                };
                match state
                    .certs
                    .update(chain.as_bytes(), key.as_bytes(), root.as_bytes())
                {
                    Ok(m) => {
                        state.key_pem = Some(key);
                        let now = unix_now();
                        let half = Duration::from_secs(
                            u64::try_from((not_after - now) / 2).unwrap_or(1).max(1),
                        );
                        state.renew_at = Some(tokio::time::Instant::now() + half);
                        info!(
                            identity = %m.identity,
                            expires = %isthmus_model::der::format_utc(not_after),
                            "workload certificate installed; renewal in {half:?}"
                        );
                        if events.send(Event::Certificate).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        warn!("{e}; keeping the current certificate, asking again in 5 s");
                        state.renew_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                    }
                }
            }
            ControllerMessage::Config {
                version,
                trust_domain,
                port_base,
                resources,
            } => {
                let mut rejected = Vec::new();
                let mut good: Vec<Resource> = Vec::with_capacity(resources.len());
                for wr in &resources {
                    match wr.to_resource() {
                        Ok(res) => good.push(res),
                        Err(e) => rejected.push(Rejected {
                            resource: format!("{}:{}", wr.file, wr.line),
                            reason: e.reason,
                        }),
                    }
                }
                let mesh = MeshOptions {
                    trust_domain: trust_domain.clone(),
                    port_base,
                };
                let store = Store::new(good);
                if state.identity.is_none() {
                    // A gateway's identity is its service account's; a sidecar's is
                    // its WorkloadEntry's, as the configuration says.
                    let own = match &opts.service_account {
                        Some(sa) => Some(Identity::new(
                            mesh.trust_domain.clone(),
                            opts.node.namespace.clone(),
                            sa.clone(),
                        )),
                        None => mesh_workloads(&store, &mesh)
                            .into_iter()
                            .find(|w| {
                                w.namespace == opts.node.namespace && w.name == opts.node.name
                            })
                            .map(|w| w.identity),
                    };
                    if let Some(own) = own {
                        state.identity = Some(own.clone());
                        if state.certs.current().is_none() {
                            let csr = new_csr(state, &own)?;
                            send(&mut w, &ProxyMessage::Csr { csr }).await?;
                        }
                    }
                }
                let (reply, answer) = oneshot::channel();
                let event = Event::Config {
                    version,
                    mesh,
                    store,
                    rejected,
                    reply,
                };
                if events.send(event).await.is_err() {
                    return Ok(());
                }
                let rejected = answer.await.unwrap_or_default();
                state.version = version;
                let m = if rejected.is_empty() {
                    ProxyMessage::Ack { version }
                } else {
                    ProxyMessage::Nack { version, rejected }
                };
                send(&mut w, &m).await?;
            }
        }
    }
}

/// Whether the certificate held can authenticate this proxy: present, with its
/// key, and valid for another minute (an expired one would only be refused: the
/// bootstrap token and a new CSR are used instead).
fn usable_certificate(state: &State) -> bool {
    state.key_pem.is_some()
        && state
            .certs
            .current()
            .is_some_and(|m| m.not_after > unix_now() + 60)
}

/// The bootstrap token: the token file's current content, else the one given.
fn token(opts: &ClientOptions) -> Option<String> {
    opts.token_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| opts.token.clone())
}

/// A TCP connection to `addr` (`host:port`), its socket marked with `mark`.
async fn connect(addr: &str, mark: Option<u32>) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        match isthmus_engine::connect_marked(a, mark).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the name resolved to no address")))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
