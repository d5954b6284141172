//! The workload's key and certificate signing request: a fresh ECDSA P-256 key made
//! in the proxy (it never leaves the proxy) and a PKCS#10 CSR asking the controller's
//! mesh CA for the workload's identity: the SPIFFE ID as a URI SAN and the DNS name
//! derived from it (see [`isthmus_model::identity`]) as a DNS SAN, no subject.

use std::fmt;

use isthmus_model::identity::Identity;
use rcgen::{
    string::Ia5String, CertificateParams, DistinguishedName, KeyPair, SanType,
    PKCS_ECDSA_P256_SHA256,
};

/// A workload's private key and the CSR made with it. `Debug` never shows the key.
#[derive(Clone)]
pub struct WorkloadKey {
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// The certificate signing request, PEM (`-----BEGIN CERTIFICATE REQUEST-----`).
    pub csr_pem: String,
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadKey")
            .field("key_pem", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Why no key or CSR could be made.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("generating the workload's ECDSA P-256 key: {0}")]
    Key(#[source] rcgen::Error),
    #[error("{value:?} cannot be a {kind} SAN of {identity}: {source}")]
    San {
        identity: String,
        kind: &'static str,
        value: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the CSR for {identity}: {source}")]
    Request {
        identity: String,
        #[source]
        source: rcgen::Error,
    },
}

/// A fresh ECDSA P-256 key (PKCS#8 PEM) and a CSR (PEM) for `identity`: URI SAN
/// `identity.uri()`, DNS SAN `identity.dns_name()`, an empty subject.
pub fn new_key_and_csr(identity: &Identity) -> Result<WorkloadKey, CsrError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CsrError::Key)?;
    let ia5 = |kind: &'static str, value: String| {
        Ia5String::try_from(value.as_str()).map_err(|source| CsrError::San {
            identity: identity.uri(),
            kind,
            value,
            source,
        })
    };
    let uri_san = ia5("URI", identity.uri())?;
    let dns_san = ia5("DNS", identity.dns_name())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri_san), SanType::DnsName(dns_san)];
    let request = |source| CsrError::Request {
        identity: identity.uri(),
        source,
    };
    let csr = params.serialize_request(&key).map_err(request)?;
    let csr_pem = csr.pem().map_err(request)?;
    Ok(WorkloadKey {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    #[test]
    fn csr_parses_and_carries_both_sans() {
        let id = Identity::parse("spiffe://cluster.local/ns/default/sa/todolist").unwrap();
        let wk = new_key_and_csr(&id).unwrap();
        assert!(wk.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // The key is a P-256 key usable for signing.
        let key = KeyPair::from_pem(&wk.key_pem).unwrap();
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);

        let (label, der) = x509_parser::pem::parse_x509_pem(wk.csr_pem.as_bytes()).unwrap();
        assert_eq!(label.len(), 0);
        assert_eq!(der.label, "CERTIFICATE REQUEST");
        let (rest, csr) = X509CertificationRequest::from_der(&der.contents).unwrap();
        assert!(rest.is_empty());
        csr.verify_signature().unwrap();
        // The CSR carries the key's public key.
        assert_eq!(
            csr.certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .as_ref(),
            key.public_key_raw()
        );
        assert_eq!(csr.certification_request_info.subject.iter().count(), 0);
        let mut names = Vec::new();
        for ext in csr.requested_extensions().unwrap() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    names.push(match n {
                        GeneralName::URI(u) => format!("URI:{u}"),
                        GeneralName::DNSName(d) => format!("DNS:{d}"),
                        other => format!("other:{other:?}"),
                    });
                }
            }
        }
        assert_eq!(
            names,
            [
                "URI:spiffe://cluster.local/ns/default/sa/todolist",
                "DNS:todolist.default.sa.cluster.local"
            ]
        );
    }

    #[test]
    fn each_call_makes_a_new_key_and_debug_hides_it() {
        let id = Identity::new("cluster.local", "ns1", "sa1");
        let a = new_key_and_csr(&id).unwrap();
        let b = new_key_and_csr(&id).unwrap();
        assert_ne!(a.key_pem, b.key_pem);
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.key_pem), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn a_non_ascii_identity_is_an_error_not_a_panic() {
        let id = Identity::new("cluster.local", "é", "sa");
        let err = new_key_and_csr(&id).unwrap_err();
        assert!(err.to_string().contains("SAN"), "{err}");
    }
}
