//! One ACME exchange with instant-acme: the HTTPS client that trusts what the issuer
//! says (`caBundle`, else the system roots plus `--acme-ca-root`; or nothing at all
//! with `skipTLSVerify`), the account (restored from its stored credentials, else
//! created once), and an order answered over HTTP-01 or TLS-ALPN-01 (the order's
//! [`ChallengeKind`], else the other one when the CA does not offer it): each
//! challenge's key authorization goes into the gateway's token map (HTTP-01), or a
//! self-signed certificate carrying its digest in the `acmeIdentifier` extension into
//! the gateway's TLS-ALPN-01 map ([`tls_alpn_certificate`]), for exactly as long as
//! the order waits for validation (the engine also publishes both in the shared
//! state directory, so replicas answer too; with the Kubernetes backend an HTTP-01
//! token is also published to the challenge ConfigMap, and the CA is told the
//! challenge is ready only once the other replicas' token sync has had time to pick
//! it up, [`KubeStore::token_propagation`]); the order is polled with short delays,
//! and finalized with a fresh ECDSA P-256 key.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use isthmus_engine::acme_challenge::{
    AcmeChallenges, AlpnChallenges, ChallengeTokens, PendingChallenge,
};
use isthmus_model::certs::{AcmeOrder, ChallengeKind};
use isthmus_model::resources::certmanager::AcmeIssuer;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::{debug, info, warn};

use super::kube::KubeStore;

/// Why an ACME exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{step}: {source}")]
    Acme {
        step: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl OrderError {
    /// The ACME server does not know the account (e.g. a test CA that restarted):
    /// a new one must be created.
    pub fn account_unknown(&self) -> bool {
        matches!(self, OrderError::Acme { source: instant_acme::Error::Api(p), .. }
            if p.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")))
    }
}

fn at(step: &'static str) -> impl FnOnce(instant_acme::Error) -> OrderError {
    move |source| OrderError::Acme { step, source }
}

/// How validation and issuance are polled.
#[derive(Debug, Clone, Copy)]
pub struct PollTiming {
    /// Delay before the first poll (then times `backoff` after each).
    pub first: Duration,
    pub backoff: f32,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for PollTiming {
    /// 50 ms, then x1.5: a local CA answers within the first polls, and a public CA
    /// still sees only about ten polls in the first five seconds.
    fn default() -> PollTiming {
        PollTiming {
            first: Duration::from_millis(50),
            backoff: 1.5,
            timeout: Duration::from_secs(90),
        }
    }
}

impl PollTiming {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::new()
            .initial_delay(self.first)
            .backoff(self.backoff)
            .timeout(self.timeout)
    }
}

/// PEM certificates in `pem` (a file given by flag, or a decoded `caBundle`).
pub fn parse_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// The HTTPS client for `acme`'s server. `extra_roots` are trusted besides the
/// system's (ignored when the issuer has its own `caBundle`).
pub fn http_client(
    acme: &AcmeIssuer,
    extra_roots: &[CertificateDer<'static>],
) -> Result<Box<dyn HttpClient>, OrderError> {
    let failed = |what: String| OrderError::Failed(format!("{}: {what}", acme.server));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?;
    let config = if acme.skip_tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match acme.ca_bundle.as_deref().filter(|b| !b.trim().is_empty()) {
            Some(bundle) => {
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(bundle.split_whitespace().collect::<String>())
                    .map_err(|e| failed(format!("spec.acme.caBundle is not base64: {e}")))?;
                let certs =
                    parse_roots(&pem).map_err(|e| failed(format!("spec.acme.caBundle: {e}")))?;
                roots.add_parsable_certificates(certs);
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                roots.add_parsable_certificates(extra_roots.iter().cloned());
            }
        }
        if roots.is_empty() {
            return Err(failed(
                "no trusted root certificate (no system roots, no caBundle, no --acme-ca-root)"
                    .into(),
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // TCP_NODELAY: a JWS POST is written as headers then body; with Nagle's
    // algorithm each exchange waits for the server's delayed ACK (40 ms here).
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let client: HyperClient<_, BodyWrapper<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(connector);
    Ok(Box::new(client))
}

/// `skipTLSVerify`: any server certificate is accepted (handshake signatures are
/// still checked, so the connection is at least consistent).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Restore the account from `stored` credentials.
pub async fn restore_account(
    http: Box<dyn HttpClient>,
    stored: AccountCredentials,
) -> Result<Account, OrderError> {
    Account::builder_with_http(http)
        .from_credentials(stored)
        .await
        .map_err(at("restoring the ACME account"))
}

/// Create an account on `acme.server` (terms of service agreed, `email` as contact).
pub async fn create_account(
    http: Box<dyn HttpClient>,
    acme: &AcmeIssuer,
) -> Result<(Account, AccountCredentials), OrderError> {
    if acme.external_account_binding.is_some() {
        return Err(OrderError::Failed(
            "spec.acme.externalAccountBinding is not supported yet".into(),
        ));
    }
    let contact: Vec<String> = acme
        .email
        .iter()
        .filter(|e| !e.is_empty())
        .map(|e| format!("mailto:{e}"))
        .collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.server.clone(),
            None,
        )
        .await
        .map_err(at("creating the ACME account"))
}

/// A certificate chain and its private key, PEM.
pub struct Issuance {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Where challenges are answered: the engine's maps (HTTP-01 tokens, TLS-ALPN-01
/// certificates), and, with the Kubernetes backend, its challenge ConfigMap (HTTP-01
/// tokens published for other replicas; best effort).
#[derive(Debug, Clone, Copy)]
pub struct Responders<'a> {
    pub http01: &'a ChallengeTokens,
    pub tls_alpn01: &'a AlpnChallenges,
    pub kube: Option<&'a KubeStore>,
}

impl<'a> Responders<'a> {
    /// The maps of `challenges` (those the gateway's listeners answer from), without
    /// Kubernetes.
    pub fn new(challenges: &'a AcmeChallenges) -> Responders<'a> {
        Responders {
            http01: &challenges.http01,
            tls_alpn01: &challenges.tls_alpn01,
            kube: None,
        }
    }

    /// These responders, also publishing HTTP-01 tokens through `kube`.
    pub fn with_kube(self, kube: Option<&'a KubeStore>) -> Responders<'a> {
        Responders { kube, ..self }
    }
}

/// Removes the challenges it holds from the maps when dropped: when the order is
/// done, failed, or its task was cancelled.
struct Held<'a> {
    responders: Responders<'a>,
    tokens: Vec<String>,
    domains: Vec<String>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.responders.http01.remove(t);
        }
        if let (Some(k), Ok(rt)) = (self.responders.kube, tokio::runtime::Handle::try_current()) {
            let (k, tokens) = (k.clone(), self.tokens.clone());
            rt.spawn(async move {
                for t in tokens {
                    if let Err(e) = k.withdraw_token(&t).await {
                        warn!("acme: {e}; the token stays published");
                    }
                }
            });
        }
        for d in &self.domains {
            self.responders.tls_alpn01.remove(d);
        }
    }
}

/// One challenge set ready: the name, how it is answered, and its answer count.
struct Pending {
    name: String,
    kind: ChallengeKind,
    token: String,
    served: Arc<PendingChallenge>,
}

fn acme_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// The TLS-ALPN-01 challenge certificate for `domain` (RFC 8737 §3): self-signed,
/// subjectAltName `domain` only, and the critical `acmeIdentifier` extension holding
/// `digest`, the SHA-256 of the key authorization. Returns (certificate PEM, fresh
/// ECDSA P-256 key PEM).
pub fn tls_alpn_certificate(domain: &str, digest: &[u8]) -> Result<(String, String), OrderError> {
    let failed =
        |e: String| OrderError::Failed(format!("building the TLS-ALPN-01 certificate: {e}"));
    if digest.len() != 32 {
        return Err(failed(format!(
            "the key authorization digest has {} bytes, not 32",
            digest.len()
        )));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| failed(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
        .map_err(|e| failed(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, domain);
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| failed(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Order a certificate for `order.names` on `account`, answering each authorization
/// through `responders` with the order's challenge type (or the other one when the CA
/// does not offer it). `on_validated` is called once per name whose challenge the CA
/// validated, with the type answered and the number of times the answer was fetched
/// (HTTP-01) or handshaken (TLS-ALPN-01), here or by a replica.
pub async fn order_certificate(
    account: &Account,
    order: &AcmeOrder,
    responders: Responders<'_>,
    timing: PollTiming,
    mut on_validated: impl FnMut(&str, ChallengeKind, u64),
) -> Result<Issuance, OrderError> {
    let identifiers: Vec<Identifier> = order
        .names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .collect();
    let started = std::time::Instant::now();
    let step = |what: &str| debug!("acme: {what} after {} ms", started.elapsed().as_millis());
    let mut acme_order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(at("placing the order"))?;
    step("order placed");
    let mut held = Held {
        responders,
        tokens: Vec::new(),
        domains: Vec::new(),
    };
    let mut pending: Vec<Pending> = Vec::new();
    {
        let mut authorizations = acme_order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(at("fetching an authorization"))?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(OrderError::Failed(format!(
                        "the authorization for {name} is {other:?}"
                    )))
                }
            }
            let offered: Vec<ChallengeKind> = authz
                .challenges
                .iter()
                .filter_map(|c| match c.r#type {
                    ChallengeType::Http01 => Some(ChallengeKind::Http01),
                    ChallengeType::TlsAlpn01 => Some(ChallengeKind::TlsAlpn01),
                    _ => None,
                })
                .collect();
            let Some(kind) = order.fallback(&offered) else {
                let types: Vec<String> = authz
                    .challenges
                    .iter()
                    .map(|c| format!("{:?}", c.r#type))
                    .collect();
                return Err(OrderError::Failed(format!(
                    "the CA offers neither HTTP-01 nor TLS-ALPN-01 for {name} (it offers [{}])",
                    types.join(", ")
                )));
            };
            if kind != order.challenge {
                info!(
                    "acme: the CA offers no {} challenge for {name}; answering {kind} instead",
                    order.challenge
                );
            }
            let mut challenge = authz.challenge(acme_type(kind)).ok_or_else(|| {
                OrderError::Failed(format!("the CA offers no {kind} challenge for {name}"))
            })?;
            let key_authorization = challenge.key_authorization();
            let served = match kind {
                ChallengeKind::Http01 => {
                    let served = responders
                        .http01
                        .insert(&challenge.token, key_authorization.as_str());
                    held.tokens.push(challenge.token.clone());
                    if let Some(k) = responders.kube {
                        match k
                            .publish_token(&challenge.token, key_authorization.as_str())
                            .await
                        {
                            // Every replica answers it before the CA asks.
                            Ok(()) => tokio::time::sleep(k.token_propagation()).await,
                            Err(e) => {
                                warn!("acme: {e}; answering {name} from this replica only")
                            }
                        }
                    }
                    served
                }
                ChallengeKind::TlsAlpn01 => {
                    let (cert, key) =
                        tls_alpn_certificate(&name, key_authorization.digest().as_ref())?;
                    let served = responders
                        .tls_alpn01
                        .insert(&name, cert.as_bytes(), key.as_bytes())
                        .map_err(|e| OrderError::Failed(e.to_string()))?;
                    held.domains.push(name.clone());
                    served
                }
            };
            challenge
                .set_ready()
                .await
                .map_err(at("telling the CA the challenge is ready"))?;
            pending.push(Pending {
                name,
                kind,
                token: challenge.token.clone(),
                served,
            });
        }
    }
    step("challenges ready");
    let status = acme_order
        .poll_ready(&timing.policy())
        .await
        .map_err(at("waiting for validation"))?;
    if status != OrderStatus::Ready {
        return Err(OrderError::Failed(
            validation_failure(&mut acme_order, &pending, responders.kube.is_some()).await,
        ));
    }
    step("validated");
    for p in &pending {
        on_validated(&p.name, p.kind, p.served.served());
    }
    drop(held);

    let (csr, key_pem) = csr(order)?;
    acme_order
        .finalize_csr(&csr)
        .await
        .map_err(at("finalizing the order"))?;
    step("finalized");
    let chain_pem = match acme_order
        .certificate()
        .await
        .map_err(at("fetching the certificate"))?
    {
        Some(chain) => chain,
        None => acme_order
            .poll_certificate(&timing.policy())
            .await
            .map_err(at("waiting for the certificate"))?,
    };
    step("certificate downloaded");
    Ok(Issuance { chain_pem, key_pem })
}

/// Why validation failed: the CA's problem per challenge, and a hint when the CA
/// never fetched the answer (it could not reach the gateway's listener). With
/// `replicas` (the Kubernetes backend) an HTTP-01 answer may have been fetched from
/// another replica, which this process does not count.
async fn validation_failure(
    acme_order: &mut instant_acme::Order,
    pending: &[Pending],
    replicas: bool,
) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = acme_order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        let problem = match authz.refresh().await {
            Ok(state) => state
                .challenges
                .iter()
                .find_map(|c| c.error.as_ref())
                .map(|p| p.to_string()),
            Err(e) => Some(format!("cannot fetch the authorization: {e}")),
        };
        if let Some(p) = problem {
            reasons.push(format!("{name}: {p}"));
        }
    }
    for p in pending.iter().filter(|p| p.served.served() == 0) {
        let name = &p.name;
        reasons.push(match p.kind {
            ChallengeKind::Http01 if replicas => format!(
                "this replica never answered http://{name}/.well-known/acme-challenge/{} (another replica may have): the CA must reach a Gateway HTTP listener (port 80)",
                p.token
            ),
            ChallengeKind::Http01 => format!(
                "the CA never fetched http://{name}/.well-known/acme-challenge/{}: it must reach a Gateway HTTP listener (port 80; locally 8080 unless mapped otherwise)",
                p.token
            ),
            ChallengeKind::TlsAlpn01 => format!(
                "the CA never completed a TLS-ALPN-01 handshake for {name}: it must reach a Gateway HTTPS listener (port 443; locally 8443 unless mapped otherwise)"
            ),
        });
    }
    if reasons.is_empty() {
        reasons.push("no reason given by the CA".into());
    }
    format!("validation failed: {}", reasons.join("; "))
}

/// A CSR for the order's names (`commonName` as the subject when set) and its fresh
/// ECDSA P-256 key (PKCS#8 PEM).
fn csr(order: &AcmeOrder) -> Result<(Vec<u8>, String), OrderError> {
    let failed = |e: rcgen::Error| OrderError::Failed(format!("building the CSR: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(order.names.clone()).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = &order.common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn.as_str());
    }
    let csr = params.serialize_request(&key).map_err(failed)?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    /// SHA-256("abc") (FIPS 180-2 test vector), standing in for a key
    /// authorization's digest.
    const DIGEST: [u8; 32] = [
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad,
    ];

    #[test]
    fn the_tls_alpn_certificate_carries_the_digest_in_a_critical_acme_identifier() {
        let (cert_pem, key_pem) = tls_alpn_certificate("alpn.test", &DIGEST).expect("cert");
        assert!(key_pem.contains("BEGIN PRIVATE KEY"));
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("PEM");
        let (_, cert) = X509Certificate::from_der(&der).expect("X.509");
        // Self-signed, for the domain alone.
        assert_eq!(cert.subject(), cert.issuer());
        let san = cert
            .subject_alternative_name()
            .expect("SAN parses")
            .expect("SAN present");
        assert_eq!(san.value.general_names, [GeneralName::DNSName("alpn.test")]);
        // id-pe-acmeIdentifier (RFC 8737 §6.1), critical, an OCTET STRING of the digest.
        let acme: Vec<_> = cert
            .extensions()
            .iter()
            .filter(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .collect();
        let [ext] = acme.as_slice() else {
            panic!("one acmeIdentifier extension: {:?}", cert.extensions())
        };
        assert!(ext.critical);
        let mut want = vec![0x04, 0x20];
        want.extend_from_slice(&DIGEST);
        assert_eq!(ext.value, want.as_slice());

        // The engine serves it (the key matches, ALPN acme-tls/1).
        let alpn = AlpnChallenges::default();
        alpn.insert("alpn.test", cert_pem.as_bytes(), key_pem.as_bytes())
            .expect("loads");
        let config = alpn.config_for("alpn.test").expect("pending");
        assert_eq!(config.alpn_protocols, [b"acme-tls/1".to_vec()]);
    }

    #[test]
    fn a_digest_of_the_wrong_size_is_an_error_not_a_panic() {
        let e = tls_alpn_certificate("alpn.test", &DIGEST[..31]).expect_err("31 bytes");
        assert!(e.to_string().contains("31 bytes, not 32"), "{e}");
    }
}
