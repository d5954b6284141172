//! The push server over real TLS on 127.0.0.1: who may get a certificate and a
//! configuration, and how ACK/NACK show in the status table. The client side is
//! written here line by line (the protocol's JSON lines) so that a misbehaving
//! proxy can be played.

use std::sync::Arc;
use std::time::Duration;

use isthmus_controller::ca::{MeshCa, Tokens};
use isthmus_controller::push::{self, PushContext, StatusTable};
use isthmus_controller::Publisher;
use isthmus_mesh_proxy::csr::new_key_and_csr;
use isthmus_model::identity::Identity;
use isthmus_model::load::load_str;
use isthmus_model::mesh::MeshOptions;
use isthmus_model::push::{ControllerMessage, NodeInfo, ProxyMessage, Rejected};
use isthmus_model::Store;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const CONFIG: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio-injection: enabled}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: app, namespace: default}\nspec: {address: 127.0.0.1, ports: {http: 18080}, serviceAccount: app}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: other, namespace: default}\nspec: {address: 127.0.0.1, ports: {http: 18081}, serviceAccount: other}\n";

fn store(text: &str) -> Store {
    Store::new(load_str("mesh.yaml", text).resources)
}

fn app() -> Identity {
    Identity::new("cluster.local", "default", "app")
}

struct Server {
    _dir: tempfile::TempDir,
    ca: Arc<MeshCa>,
    tokens: Arc<Tokens>,
    status: Arc<StatusTable>,
    publisher: Publisher,
    server: push::PushServer,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Arc::new(MeshCa::load_or_create(dir.path()).expect("CA"));
    let tokens = Arc::new(Tokens::new());
    let status = Arc::new(StatusTable::new());
    let mesh = MeshOptions {
        port_base: Some(15900),
        ..MeshOptions::default()
    };
    let publisher = Publisher::new(store(CONFIG), mesh.clone());
    let server = push::serve(
        "127.0.0.1:0".parse().expect("addr"),
        PushContext {
            ca: ca.clone(),
            tokens: tokens.clone(),
            versioned: publisher.versioned(),
            mesh,
            status: status.clone(),
            cert_ttl: Duration::from_secs(3600),
        },
    )
    .await
    .expect("push server");
    Server {
        _dir: dir,
        ca,
        tokens,
        status,
        publisher,
        server,
    }
}

struct Client {
    r: BufReader<ReadHalf<TlsStream<TcpStream>>>,
    w: WriteHalf<TlsStream<TcpStream>>,
}

impl Client {
    /// Connect, presenting `client` (chain PEM, key PEM) when given.
    async fn connect(s: &Server, client: Option<(&str, &str)>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(s.ca.root_pem().as_bytes()) {
            roots.add(der.expect("root PEM")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(chain.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("chain"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(s.server.local_addr())
            .await
            .expect("connect");
        let name = ServerName::try_from(push::CONTROLLER_NAME).expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("the controller's certificate verifies as istiod");
        let (r, w) = tokio::io::split(tls);
        Client {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, m: &ProxyMessage) {
        let mut line = serde_json::to_vec(m).expect("json");
        line.push(b'\n');
        self.w.write_all(&line).await.expect("write");
    }

    async fn recv(&mut self) -> Option<ControllerMessage> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
            .await
            .expect("an answer within 10 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        Some(serde_json::from_str(&line).expect("a controller message"))
    }

    async fn hello(&mut self, name: &str, token: Option<String>, csr: Option<String>) {
        self.send(&ProxyMessage::Hello {
            node: NodeInfo {
                role: "sidecar".into(),
                name: name.into(),
                namespace: "default".into(),
            },
            token,
            csr,
            version: 0,
        })
        .await;
    }
}

fn refusal(m: Option<ControllerMessage>) -> String {
    match m {
        Some(ControllerMessage::Error { message }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_or_missing_token_gets_nothing() {
    let s = server().await;
    let mut c = Client::connect(&s, None).await;
    c.hello("app", Some("00".repeat(32)), None).await;
    assert_eq!(refusal(c.recv().await), "unknown bootstrap token");
    assert!(c.recv().await.is_none(), "closed after the refusal");

    let mut c = Client::connect(&s, None).await;
    c.hello("app", None, None).await;
    assert!(refusal(c.recv().await).contains("no client certificate and no bootstrap token"));
    assert!(s.status.list().is_empty());
}

#[tokio::test]
async fn the_csr_api_never_signs_an_identity_the_caller_does_not_own() {
    let s = server().await;
    // A token of `app` naming the workload `other` (service account `other`).
    let mut c = Client::connect(&s, None).await;
    c.hello("other", Some(s.tokens.issue(&app())), None).await;
    let why = refusal(c.recv().await);
    assert!(
        why.contains("may not act as WorkloadEntry default/other"),
        "{why}"
    );

    // Its own workload, but a CSR for `other`.
    let theirs = new_key_and_csr(&Identity::new("cluster.local", "default", "other")).expect("csr");
    let mut c = Client::connect(&s, None).await;
    c.hello("app", Some(s.tokens.issue(&app())), Some(theirs.csr_pem))
        .await;
    let why = refusal(c.recv().await);
    assert!(why.starts_with("certificate request refused"), "{why}");
}

#[tokio::test]
async fn a_proxy_gets_its_certificate_and_config_and_acks_or_nacks() {
    let mut s = server().await;
    let key = new_key_and_csr(&app()).expect("csr");
    let mut c = Client::connect(&s, None).await;
    c.hello(
        "app",
        Some(s.tokens.issue(&app())),
        Some(key.csr_pem.clone()),
    )
    .await;
    let (chain, root) = match c.recv().await {
        Some(ControllerMessage::Certificate { chain, root, .. }) => (chain, root),
        other => panic!("expected a certificate, got {other:?}"),
    };
    assert_eq!(root, s.ca.root_pem());
    let Some(ControllerMessage::Config {
        version,
        port_base,
        resources,
        ..
    }) = c.recv().await
    else {
        panic!("expected the config")
    };
    assert_eq!((version, port_base, resources.len()), (1, Some(15900), 3));
    let st = &s.status.list()[0];
    assert_eq!(
        (st.name.as_str(), st.status.as_str(), st.inbound.as_deref()),
        ("app", "STALE", Some("127.0.0.1:15900"))
    );
    assert_eq!(st.identity, "spiffe://cluster.local/ns/default/sa/app");
    assert!(st.cert_expiry.is_some());
    c.send(&ProxyMessage::Ack { version: 1 }).await;

    // A new version is pushed; a NACK names what the proxy rejected.
    s.publisher
        .publish(store(&CONFIG.replace("18081", "18082")));
    let Some(ControllerMessage::Config { version: 2, .. }) = c.recv().await else {
        panic!("expected version 2")
    };
    let rejected = vec![Rejected {
        resource: "WorkloadEntry default/app".into(),
        reason: "inbound port 18080: address in use".into(),
    }];
    c.send(&ProxyMessage::Nack {
        version: 2,
        rejected: rejected.clone(),
    })
    .await;
    wait_for(|| {
        s.status
            .list()
            .first()
            .is_some_and(|p| p.status == "NACKED")
    })
    .await;
    assert_eq!(s.status.rejected("default/app"), rejected);
    assert_eq!(s.status.list()[0].version, 2);
    drop(c);

    // Reconnecting with the certificate needs no token (a restarted controller
    // has forgotten the tokens); the answer is the current config.
    wait_for(|| s.status.list().is_empty()).await;
    let mut c = Client::connect(&s, Some((&chain, &key.key_pem))).await;
    c.hello("app", None, None).await;
    let Some(ControllerMessage::Config { version: 2, .. }) = c.recv().await else {
        panic!("expected the current config")
    };
    c.send(&ProxyMessage::Ack { version: 2 }).await;
    wait_for(|| {
        s.status
            .list()
            .first()
            .is_some_and(|p| p.status == "SYNCED")
    })
    .await;
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
