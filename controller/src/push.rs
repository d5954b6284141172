//! The push server: istiod's port 15012 for proxies in other processes. One TLS
//! connection per proxy, newline-delimited JSON ([`isthmus_model::push`]).
//!
//! - **Who is calling.** A proxy with a workload certificate presents it (mTLS,
//!   verified against the mesh root); a proxy without one yet sends the bootstrap
//!   token its starter handed it ([`Tokens`]). Either way the identity is the
//!   caller's, and a sidecar may only name a workload with that identity: the CA
//!   never signs an identity the caller does not own.
//! - **Certificates.** A `csr` in the hello or later (rotation) is signed for the
//!   caller's identity ([`MeshCa::sign_csr`] refuses any other SAN); the private key
//!   never leaves the proxy.
//! - **Config.** The current version on connect and every later one, coalesced (a
//!   burst of changes is one push: the publisher's `watch` keeps only the latest).
//!   The proxy answers `ack` or `nack` naming the rejected resources.
//! - **Status.** Every connected proxy is in the [`StatusTable`] that
//!   `isthmus proxy-status` reads: SYNCED (its last answer acknowledged the latest
//!   version), STALE (the latest is not answered yet), NACKED.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use isthmus_model::identity::Identity;
use isthmus_model::mesh::{mesh_workloads, MeshOptions};
use isthmus_model::push::{ControllerMessage, NodeInfo, ProxyMessage, Rejected, WireResource};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::ca::{MeshCa, Tokens};
use crate::publisher::Versioned;

/// The DNS name of the controller's certificate, as proxies verify it (istiod's).
pub const CONTROLLER_NAME: &str = "istiod.istio-system.svc";

/// Longest line accepted from a proxy (a CSR is about 1 KB).
const MAX_LINE: usize = 64 * 1024;

/// How long a proxy has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the push server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the controller's TLS certificate: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One connected proxy, as `isthmus proxy-status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProxyStatus {
    pub name: String,
    pub namespace: String,
    /// `gateway` or `sidecar`.
    pub role: String,
    pub identity: String,
    /// The config version the proxy applied (acknowledged, or applied in part).
    pub version: u64,
    /// `SYNCED`, `STALE` or `NACKED`.
    pub status: String,
    /// Sidecars: where they accept mesh traffic (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<String>,
    /// The workload certificate's expiry (RFC 3339).
    #[serde(
        rename = "certExpiry",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cert_expiry: Option<String>,
}

/// Per-proxy state the server keeps.
#[derive(Debug, Clone)]
struct Entry {
    status: ProxyStatus,
    sent: u64,
    /// The reasons of the last NACK.
    rejected: Vec<Rejected>,
}

/// The connected proxies (and in-process ones registered by their runner).
#[derive(Debug, Default)]
pub struct StatusTable {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl StatusTable {
    pub fn new() -> StatusTable {
        StatusTable::default()
    }

    /// Every proxy, ordered by namespace, name.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut out: Vec<ProxyStatus> = self
            .entries
            .lock()
            .values()
            .map(|e| e.status.clone())
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// The reasons of a proxy's last NACK (`ns/name`).
    pub fn rejected(&self, key: &str) -> Vec<Rejected> {
        self.entries
            .lock()
            .get(key)
            .map(|e| e.rejected.clone())
            .unwrap_or_default()
    }

    /// Record (or replace) a proxy.
    pub fn upsert(&self, key: &str, status: ProxyStatus) {
        let mut entries = self.entries.lock();
        let sent = entries.get(key).map_or(status.version, |e| e.sent);
        entries.insert(
            key.to_string(),
            Entry {
                status,
                sent,
                rejected: Vec::new(),
            },
        );
    }

    fn update(&self, key: &str, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.entries.lock().get_mut(key) {
            f(e);
        }
    }

    /// A version was sent to a proxy: STALE until it answers.
    pub fn sent(&self, key: &str, version: u64) {
        self.update(key, |e| {
            e.sent = version;
            if e.status.version != version {
                e.status.status = "STALE".into();
            }
        });
    }

    /// A proxy applied `version`, without `rejected` if any.
    pub fn answered(&self, key: &str, version: u64, rejected: Vec<Rejected>) {
        self.update(key, |e| {
            e.status.version = version;
            e.status.status = if !rejected.is_empty() {
                "NACKED"
            } else if version == e.sent {
                "SYNCED"
            } else {
                "STALE"
            }
            .into();
            e.rejected = rejected;
        });
    }

    /// A proxy's certificate expiry.
    pub fn cert_expiry(&self, key: &str, not_after: i64) {
        self.update(key, |e| {
            e.status.cert_expiry = Some(isthmus_model::der::format_utc(not_after));
        });
    }

    pub fn remove(&self, key: &str) {
        self.entries.lock().remove(key);
    }
}

/// What the push server needs.
pub struct PushContext {
    pub ca: Arc<MeshCa>,
    pub tokens: Arc<Tokens>,
    pub versioned: watch::Receiver<Arc<Versioned>>,
    pub mesh: MeshOptions,
    pub status: Arc<StatusTable>,
    /// Lifetime of workload certificates (24 h by default).
    pub cert_ttl: Duration,
}

/// A running push server.
pub struct PushServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PushServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for PushServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The controller's TLS settings: a server certificate from the mesh CA for
/// [`CONTROLLER_NAME`], client certificates verified against the mesh root when a
/// proxy presents one (a proxy bootstrapping with a token has none yet).
fn server_config(ca: &MeshCa, ttl: Duration) -> Result<rustls::ServerConfig, PushError> {
    let err = |e: String| PushError::Tls(e);
    let (issued, key_pem) = ca
        .issue_server(&[CONTROLLER_NAME.to_string()], ttl)
        .map_err(|e| err(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca.root_pem().as_bytes()) {
        roots
            .add(der.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| err(e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err(e.to_string()))
}

/// Listen on `bind` and serve proxies until the returned server is dropped.
pub async fn serve(bind: SocketAddr, ctx: PushContext) -> Result<PushServer, PushError> {
    let config = Arc::new(server_config(
        &ctx.ca,
        Duration::from_secs(365 * 24 * 3600),
    )?);
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| PushError::Bind { addr: bind, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| PushError::Bind { addr: bind, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let ctx = Arc::new(ctx);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    warn!("push server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(%peer, "push server: TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                let cert_identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| spiffe_of(c.as_ref()));
                if let Err(e) = session(tls, cert_identity, &ctx).await {
                    debug!(%peer, "push server: connection ended: {e}");
                }
            });
        }
    });
    Ok(PushServer { local_addr, task })
}

/// The SPIFFE ID of a certificate the handshake verified.
fn spiffe_of(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Identity::parse(u).ok(),
        _ => None,
    })
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, m: &ControllerMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// Read one message line; `None` at the end of the stream. Cancel-safe: a partial
/// line stays in `line` for the next call.
async fn recv<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<ProxyMessage>> {
    loop {
        let n = r.read_until(b'\n', line).await?;
        if n == 0 {
            return Ok(None);
        }
        if line.len() > MAX_LINE {
            return Err(std::io::Error::other("message too long"));
        }
        if line.last() == Some(&b'\n') {
            break;
        }
    }
    let msg = serde_json::from_slice(line)
        .map(Some)
        .map_err(|e| std::io::Error::other(format!("bad message: {e}")));
    line.clear();
    msg
}

/// The key of a proxy in the status table: `ns/name`.
fn key_of(node: &NodeInfo) -> String {
    format!("{}/{}", node.namespace, node.name)
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, why: String) -> std::io::Result<()> {
    warn!("push server: refused: {why}");
    send(
        w,
        &ControllerMessage::Error {
            message: why.clone(),
        },
    )
    .await?;
    Err(std::io::Error::other(why))
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    cert_identity: Option<Identity>,
    ctx: &PushContext,
) -> std::io::Result<()> {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, recv(&mut r, &mut line))
        .await
        .map_err(|_| std::io::Error::other("no hello"))??;
    let Some(ProxyMessage::Hello {
        node,
        token,
        csr,
        version: serving,
    }) = hello
    else {
        return refuse(&mut w, "the first message must be a hello".into()).await;
    };
    // Who is calling: the certificate, else the token.
    let identity = match (cert_identity, token) {
        (Some(id), _) => id,
        (None, Some(t)) => match ctx.tokens.identity_of(&t) {
            Some(id) => id,
            None => return refuse(&mut w, "unknown bootstrap token".into()).await,
        },
        (None, None) => {
            return refuse(
                &mut w,
                "no client certificate and no bootstrap token".into(),
            )
            .await
        }
    };
    // A sidecar may only be the workload its identity owns.
    let inbound = if node.role == "sidecar" {
        let store = ctx.versioned.borrow().store.clone();
        let workload = mesh_workloads(&store, &ctx.mesh)
            .into_iter()
            .find(|w| w.namespace == node.namespace && w.name == node.name);
        match workload {
            Some(wl) if wl.identity == identity => wl
                .inbound
                .first()
                .map(|(_, (h, p))| format!("{h}:{p}"))
                .or_else(|| {
                    wl.app_ports()
                        .first()
                        .map(|p| format!("{}:{p}", wl.address))
                }),
            Some(wl) => {
                let why = format!(
                    "{identity} may not act as WorkloadEntry {}/{} (its identity is {})",
                    node.namespace, node.name, wl.identity
                );
                return refuse(&mut w, why).await;
            }
            None => {
                let why = format!("no WorkloadEntry {}/{}", node.namespace, node.name);
                return refuse(&mut w, why).await;
            }
        }
    } else if node.role == "gateway" && identity.namespace == node.namespace {
        None
    } else {
        let why = format!(
            "{identity} may not act as {} {}/{}",
            node.role, node.namespace, node.name
        );
        return refuse(&mut w, why).await;
    };
    let key = key_of(&node);
    info!(proxy = %key, role = %node.role, %identity, "proxy connected");
    ctx.status.upsert(
        &key,
        ProxyStatus {
            name: node.name.clone(),
            namespace: node.namespace.clone(),
            role: node.role.clone(),
            identity: identity.uri(),
            version: serving,
            status: "STALE".into(),
            inbound,
            cert_expiry: None,
        },
    );
    let result = serve_proxy(&mut r, &mut w, &key, &identity, csr, ctx).await;
    ctx.status.remove(&key);
    info!(proxy = %key, "proxy disconnected");
    result
}

async fn sign<W: AsyncWrite + Unpin>(
    w: &mut W,
    key: &str,
    identity: &Identity,
    csr: &str,
    ctx: &PushContext,
) -> std::io::Result<()> {
    match ctx.ca.sign_csr(csr, identity, ctx.cert_ttl) {
        Ok(issued) => {
            ctx.status.cert_expiry(key, issued.not_after);
            info!(proxy = %key, %identity, serial = %issued.serial_hex, "workload certificate issued");
            send(
                w,
                &ControllerMessage::Certificate {
                    chain: issued.chain_pem,
                    root: ctx.ca.root_pem().to_string(),
                    not_after: issued.not_after,
                },
            )
            .await
        }
        Err(e) => refuse(w, format!("certificate request refused: {e}")).await,
    }
}

async fn serve_proxy<R, W>(
    r: &mut R,
    w: &mut W,
    key: &str,
    identity: &Identity,
    csr: Option<String>,
    ctx: &PushContext,
) -> std::io::Result<()>
where
    R: AsyncBufReadExt + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Some(csr) = csr {
        sign(w, key, identity, &csr, ctx).await?;
    }
    let mut versioned = ctx.versioned.clone();
    let mut push = true;
    let mut line = Vec::new();
    loop {
        if push {
            let current = versioned.borrow_and_update().clone();
            let resources: Vec<WireResource> = current
                .store
                .resources
                .iter()
                .filter_map(WireResource::of)
                .collect();
            ctx.status.sent(key, current.version);
            send(
                w,
                &ControllerMessage::Config {
                    version: current.version,
                    trust_domain: ctx.mesh.trust_domain.clone(),
                    port_base: ctx.mesh.port_base,
                    resources,
                },
            )
            .await?;
            debug!(proxy = %key, version = current.version, "config pushed");
        }
        push = false;
        tokio::select! {
            changed = versioned.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                push = true;
            }
            msg = recv(r, &mut line) => match msg? {
                None => return Ok(()),
                Some(ProxyMessage::Ack { version }) => ctx.status.answered(key, version, Vec::new()),
                Some(ProxyMessage::Nack { version, rejected }) => {
                    for x in &rejected {
                        warn!(proxy = %key, version, "NACK: {}: {}", x.resource, x.reason);
                    }
                    ctx.status.answered(key, version, rejected);
                }
                Some(ProxyMessage::Csr { csr }) => sign(w, key, identity, &csr, ctx).await?,
                Some(ProxyMessage::Hello { .. }) => {
                    return refuse(w, "hello sent twice".into()).await;
                }
            },
        }
    }
}
