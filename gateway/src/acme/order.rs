//! One ACME exchange with instant-acme: the HTTPS client that trusts what the issuer
//! says (`caBundle`, else the system roots plus `--acme-ca-root`; or nothing at all
//! with `skipTLSVerify`), the account (restored from its stored credentials, else
//! created once), and an order answered over HTTP-01: each challenge's key
//! authorization goes into the gateway's token map for exactly as long as the order
//! waits for validation, the order is polled with short delays, and finalized with a
//! fresh ECDSA P-256 key.

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
use isthmus_engine::acme_challenge::{ChallengeTokens, PendingChallenge};
use isthmus_model::certs::AcmeOrder;
use isthmus_model::resources::certmanager::AcmeIssuer;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::debug;

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

/// Removes the tokens it holds from the map when dropped: when the order is done,
/// failed, or its task was cancelled.
struct Tokens<'a> {
    map: &'a ChallengeTokens,
    held: Vec<String>,
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        for t in &self.held {
            self.map.remove(t);
        }
    }
}

/// Order a certificate for `order.names` on `account`, answering HTTP-01 through
/// `tokens`. `on_validated` is called once per name whose challenge the CA
/// validated, with the number of times the answer was fetched.
pub async fn order_certificate(
    account: &Account,
    order: &AcmeOrder,
    tokens: &ChallengeTokens,
    timing: PollTiming,
    mut on_validated: impl FnMut(&str, u64),
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
    let mut held = Tokens {
        map: tokens,
        held: Vec::new(),
    };
    let mut pending: Vec<(String, String, Arc<PendingChallenge>)> = Vec::new();
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
            let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                OrderError::Failed(format!("the CA offers no HTTP-01 challenge for {name}"))
            })?;
            let key_authorization = challenge.key_authorization();
            let served = tokens.insert(&challenge.token, key_authorization.as_str());
            held.held.push(challenge.token.clone());
            challenge
                .set_ready()
                .await
                .map_err(at("telling the CA the challenge is ready"))?;
            pending.push((name, challenge.token.clone(), served));
        }
    }
    step("challenges ready");
    let status = acme_order
        .poll_ready(&timing.policy())
        .await
        .map_err(at("waiting for validation"))?;
    if status != OrderStatus::Ready {
        return Err(OrderError::Failed(
            validation_failure(&mut acme_order, &pending).await,
        ));
    }
    step("validated");
    for (name, _, served) in &pending {
        on_validated(name, served.served());
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
/// never fetched the answer (it could not reach the gateway's HTTP listener).
async fn validation_failure(
    acme_order: &mut instant_acme::Order,
    pending: &[(String, String, Arc<PendingChallenge>)],
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
    for (name, token, served) in pending {
        if served.served() == 0 {
            reasons.push(format!(
                "the CA never fetched http://{name}/.well-known/acme-challenge/{token}: it must reach a Gateway HTTP listener (port 80; locally 8080 unless mapped otherwise)"
            ));
        }
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
