//! ACME challenges on real listeners: a listener answers the HTTP-01 tokens and the
//! TLS-ALPN-01 certificates of the maps its `ListenerConfig::acme` gives it, and
//! nothing else. A listener given none (as every sidecar listener is) does not
//! answer a challenge another listener of the process answers.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use isthmus_engine::{
    start_listener, AcmeChallenges, ListenerConfig, ListenerHandle, ListenerRole, SnapshotHolder,
    SniResolver,
};
use pingora::tls::TlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use support::*;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start(
    holder: &SnapshotHolder,
    tls: Option<Arc<SniResolver>>,
    role: ListenerRole,
    acme: Option<AcmeChallenges>,
) -> ListenerHandle {
    let config = ListenerConfig {
        role,
        certs: None,
        mark: None,
        acme,
        ..ListenerConfig::default()
    };
    start_listener(holder.clone(), any_port(), 80, tls, config).expect("listener")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_gateway_listener_given_the_map_answers_its_http01_tokens() {
    let app = Upstream::start("app").await;
    let s = snapshot(
        1,
        vec![(
            80,
            vec![vhost("a.example", vec![forward(Some("/app"), &[(0, 1)])])],
        )],
        vec![cluster("app", &[app.addr])],
    );
    let holder = SnapshotHolder::new(Arc::new(s));
    let challenges = AcmeChallenges::default();
    let pending = challenges.http01.insert("tok-1", "tok-1.thumb");

    let gateway = start(
        &holder,
        None,
        ListenerRole::Gateway,
        Some(challenges.clone()),
    );
    let bare_gateway = start(&holder, None, ListenerRole::Gateway, None);
    let sidecar = ListenerRole::SidecarOutbound { transparent: false };
    let sidecar_without = start(&holder, None, sidecar.clone(), None);
    // The role decides too: a sidecar listener never answers, even given a map.
    let sidecar_with = start(&holder, None, sidecar, Some(challenges.clone()));

    let path = "/.well-known/acme-challenge/tok-1";
    let ask = |l: &ListenerHandle, host: &str| {
        let (c, u) = (
            client(host, l.local_addr(), false),
            url(host, l.local_addr(), path),
        );
        async move { get(&c, &u).await }
    };
    let answered = (200, "tok-1.thumb".to_string());
    let not_answered = (404, "no route\n".to_string());
    // For any Host, before routing.
    assert_eq!(ask(&gateway, "a.example").await, answered);
    assert_eq!(ask(&gateway, "other.example").await, answered);
    for (what, l) in [
        ("a gateway listener without a map", &bare_gateway),
        ("a sidecar listener without a map", &sidecar_without),
        ("a sidecar listener given a map", &sidecar_with),
    ] {
        assert_eq!(ask(l, "a.example").await, not_answered, "{what}");
        assert_eq!(ask(l, "other.example").await, not_answered, "{what}");
    }
    assert_eq!(pending.served(), 2, "answered by the gateway listener only");
    assert_eq!(app.requests(), 0);

    // Withdrawn: routing goes on as for any request.
    challenges.http01.remove("tok-1");
    assert_eq!(ask(&gateway, "a.example").await, not_answered);
}

/// Any server certificate and signature: the validator of a TLS-ALPN-01 challenge
/// checks the certificate itself, not a chain (the test compares it), and webpki
/// refuses to parse its critical acmeIdentifier extension.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS-ALPN-01 challenge certificate for `name` (a critical acmeIdentifier
/// extension) and its key, by the `openssl` command.
fn challenge_cert(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let (crt, key) = (dir.join("challenge.crt"), dir.join("challenge.key"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-addext")
        .arg(format!(
            "1.3.6.1.5.5.7.1.31=critical,DER:0420{}",
            "00".repeat(32)
        ))
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{out:?}");
    (
        std::fs::read(crt).expect("crt"),
        std::fs::read(key).expect("key"),
    )
}

/// A TLS-ALPN-01 validation handshake (ALPN `acme-tls/1` only) for `sni`: the
/// certificate presented, or the handshake error.
async fn validate(addr: SocketAddr, sni: &str) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    let cert = conn.peer_certificates().expect("a certificate")[0].clone();
    Ok(cert.as_ref().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_listener_given_the_map_answers_its_tls_alpn01_challenges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_pem, key_pem) = challenge_cert(dir.path(), "alpn.test");
    let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(&cert_pem)
        .map(|c: CertificateDer<'_>| c.as_ref().to_vec())
        .expect("PEM");
    let challenges = AcmeChallenges::default();
    challenges
        .tls_alpn01
        .insert("alpn.test", &cert_pem, &key_pem)
        .expect("challenge");
    let holder = SnapshotHolder::default();
    let tls = || Some(Arc::new(SniResolver::new()));
    let gateway = start(&holder, tls(), ListenerRole::Gateway, Some(challenges));
    let bare_gateway = start(&holder, tls(), ListenerRole::Gateway, None);

    assert_eq!(
        validate(gateway.local_addr(), "alpn.test").await,
        Ok(cert_der)
    );
    assert!(validate(gateway.local_addr(), "other.test").await.is_err());
    let refused = validate(bare_gateway.local_addr(), "alpn.test").await;
    assert!(refused.is_err(), "{refused:?}");
}
