//! The mesh side of the engine, shared by the sidecar and by a gateway forwarding
//! into the mesh:
//!
//! - [`WorkloadCerts`]: the proxy's own identity material (certificate chain, private
//!   key, mesh root), swapped whole on rotation. Outbound, it is presented to peers'
//!   sidecars (a rustls client built once per version verifies the DNS SAN derived
//!   from the destination's identity against the mesh root only). Inbound, it
//!   becomes a sidecar's server certificate with client certificates required and
//!   verified against the same root ([`WorkloadCerts::inbound_termination`]).
//! - [`InboundMode`]: the PeerAuthentication modes of a sidecar's inbound listener
//!   (per workload port), switched in place; the listener itself is
//!   `listener::serve_inbound`.
//!
//! Private keys are kept in memory only and never printed (`Debug` shows the
//! identity and expiry).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use isthmus_model::snapshot::{
    ClientCertificate, ClientVerification, InboundMtls, TlsCredential, TlsPolicy, TlsServer,
    TlsTermination,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why identity material cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("workload certificate: {0}")]
pub struct WorkloadCertError(pub String);

/// One version of a proxy's identity material.
pub struct WorkloadMaterial {
    /// The SPIFFE ID of the leaf certificate.
    pub identity: String,
    /// Leaf first, then intermediates (PEM).
    pub chain_pem: Vec<u8>,
    /// The mesh root(s) peers must chain to (PEM).
    pub root_pem: Vec<u8>,
    /// The leaf's notAfter, unix seconds.
    pub not_after: i64,
    key_pem: Vec<u8>,
    /// The TLS client of upstream mesh mTLS: this chain and key presented, the
    /// peer verified against the mesh roots only (and, per connection, as the DNS
    /// name derived from the destination's identity). Built once per version.
    client: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for WorkloadMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadMaterial")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadMaterial {
    /// Parse and check `chain_pem` + `key_pem` (the key must match the leaf, the
    /// leaf must carry one SPIFFE ID) and `root_pem`.
    pub fn new(
        chain_pem: &[u8],
        key_pem: &[u8],
        root_pem: &[u8],
    ) -> Result<WorkloadMaterial, WorkloadCertError> {
        let err = |m: String| WorkloadCertError(m);
        let cred = TlsCredential {
            secret: "workload certificate".into(),
            cert_chain_pem: chain_pem.to_vec(),
            private_key_pem: key_pem.to_vec(),
        };
        let provider = rustls::crypto::ring::default_provider();
        // Parses the chain and checks the key against the leaf.
        crate::tls::certified_key(&cred, &provider).map_err(err)?;
        let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(chain_pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("the chain is not valid PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| err("no certificate in the chain".into()))?;
        let identity = crate::tls::spiffe_id(leaf)
            .ok_or_else(|| err("the leaf carries no (single) spiffe:// URI SAN".into()))?;
        let leaf_info = isthmus_model::der::certificate(leaf)
            .ok_or_else(|| err("the leaf certificate cannot be read".into()))?;
        let not_after = leaf_info.not_after;
        // Every certificate is read by our own reader too, so a bad one is an error
        // naming what it is, here.
        for der in &chain {
            if isthmus_model::der::certificate(der).is_none() {
                return Err(err("a chain certificate cannot be read".into()));
            }
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| err(format!("the private key is not valid PEM: {e}")))?;
        let key_der = key.secret_der().to_vec();
        let mut roots = 0;
        for der in CertificateDer::pem_slice_iter(root_pem) {
            let der = der.map_err(|e| err(format!("the mesh root is not valid PEM: {e}")))?;
            if isthmus_model::der::certificate(&der).is_none() {
                return Err(err("a mesh root certificate cannot be read".into()));
            }
            roots += 1;
        }
        if roots == 0 {
            return Err(err("no mesh root certificate".into()));
        }
        let client = mesh_client_config(&chain, &key_der, root_pem, provider).map_err(err)?;
        Ok(WorkloadMaterial {
            identity,
            chain_pem: chain_pem.to_vec(),
            root_pem: root_pem.to_vec(),
            not_after,
            key_pem: key_pem.to_vec(),
            client,
        })
    }

    /// The TLS client configuration for upstream mesh mTLS.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The trust domain of this workload's identity.
    pub fn trust_domain(&self) -> Option<String> {
        isthmus_model::identity::Identity::parse(&self.identity)
            .ok()
            .map(|i| i.trust_domain)
    }

    /// A sidecar's inbound TLS server: this certificate for any SNI, client
    /// certificates required and chained to the mesh root.
    pub fn inbound_termination(&self, source: &str) -> TlsTermination {
        TlsTermination {
            servers: vec![TlsServer {
                source: source.to_string(),
                sni: vec!["*".into()],
                secret: format!("workload certificate of {}", self.identity),
                credential: Some(TlsCredential {
                    secret: format!("workload certificate of {}", self.identity),
                    cert_chain_pem: self.chain_pem.clone(),
                    private_key_pem: self.key_pem.clone(),
                }),
                policy: TlsPolicy {
                    client_certificate: ClientCertificate::Verified(ClientVerification {
                        required: true,
                        ca_secret: "mesh root".into(),
                        ca_pem: self.root_pem.clone(),
                        subject_alt_names: Vec::new(),
                        certificate_sha256: Vec::new(),
                        spki_sha256: Vec::new(),
                        spiffe_trust_domain: self.trust_domain(),
                    }),
                    ..TlsPolicy::default()
                },
            }],
            passthrough: Vec::new(),
        }
    }
}

/// A TLS client presenting `chain` + `key` and trusting the mesh roots of
/// `root_pem` alone (TLS 1.2 and 1.3, no ALPN: mesh hops are HTTP/1.1).
fn mesh_client_config(
    chain: &[Vec<u8>],
    key_der: &[u8],
    root_pem: &[u8],
    provider: rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(root_pem) {
        let der = der.map_err(|e| format!("the mesh root is not valid PEM: {e}"))?;
        roots
            .add(der)
            .map_err(|e| format!("the mesh root cannot be used: {e}"))?;
    }
    let certs = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(key_der.to_vec())
        .map_err(|e| format!("the private key cannot be used: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("the certificate cannot be presented: {e}"))?;
    Ok(Arc::new(config))
}

/// The proxy's current identity material; cheap to clone, lock-free to read.
#[derive(Debug, Clone, Default)]
pub struct WorkloadCerts {
    current: Arc<ArcSwapOption<WorkloadMaterial>>,
}

impl WorkloadCerts {
    pub fn new() -> WorkloadCerts {
        WorkloadCerts::default()
    }

    /// Check and swap in new material; on error the current one stays.
    pub fn update(
        &self,
        chain_pem: &[u8],
        key_pem: &[u8],
        root_pem: &[u8],
    ) -> Result<Arc<WorkloadMaterial>, WorkloadCertError> {
        let m = Arc::new(WorkloadMaterial::new(chain_pem, key_pem, root_pem)?);
        self.current.store(Some(m.clone()));
        Ok(m)
    }

    /// The material in use now, if any has been set.
    pub fn current(&self) -> Option<Arc<WorkloadMaterial>> {
        self.current.load_full()
    }
}

/// The effective PeerAuthentication modes of an inbound listener: per workload
/// port (transparent mode: one listener serves every port, told apart by the
/// connection's original destination) and for other ports. Changed in place when
/// a new snapshot changes them (new connections follow; established ones stay).
#[derive(Debug, Clone)]
pub struct InboundMode(Arc<arc_swap::ArcSwap<PortModes>>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct PortModes {
    ports: HashMap<u16, InboundMtls>,
    other: InboundMtls,
}

impl InboundMode {
    /// One mode for every connection.
    pub fn new(m: InboundMtls) -> InboundMode {
        InboundMode(Arc::new(arc_swap::ArcSwap::from_pointee(PortModes {
            ports: HashMap::new(),
            other: m,
        })))
    }

    /// One mode for every connection from now on.
    pub fn set(&self, m: InboundMtls) {
        self.set_ports(HashMap::new(), m);
    }

    /// A mode per destination port, and `other` for the rest.
    pub fn set_ports(&self, ports: HashMap<u16, InboundMtls>, other: InboundMtls) {
        self.0.store(Arc::new(PortModes { ports, other }));
    }

    /// The mode of a connection to `port` (its original destination's), or of any
    /// connection when `None`.
    pub fn get(&self, port: Option<u16>) -> InboundMtls {
        let m = self.0.load();
        port.and_then(|p| m.ports.get(&p).copied())
            .unwrap_or(m.other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_material_is_an_error_not_a_panic() {
        let w = WorkloadCerts::new();
        for (c, k, r) in [
            (&b""[..], &b""[..], &b""[..]),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                b"",
                b"",
            ),
        ] {
            assert!(w.update(c, k, r).is_err());
        }
        assert!(w.current().is_none());
    }

    #[test]
    fn inbound_modes_by_port() {
        let m = InboundMode::new(InboundMtls::Strict);
        for x in [
            InboundMtls::Permissive,
            InboundMtls::Disable,
            InboundMtls::Strict,
        ] {
            m.set(x);
            assert_eq!(m.get(None), x);
            assert_eq!(m.get(Some(80)), x);
        }
        m.set_ports(
            HashMap::from([(8000, InboundMtls::Disable)]),
            InboundMtls::Permissive,
        );
        assert_eq!(m.get(Some(8000)), InboundMtls::Disable);
        assert_eq!(m.get(Some(9000)), InboundMtls::Permissive);
        assert_eq!(m.get(None), InboundMtls::Permissive);
    }
}
