//! TLS termination for HTTPS listeners: the certificate for each handshake, chosen by
//! SNI ([`SniResolver`], a rustls `ResolvesServerCert` that Pingora's `TlsSettings`
//! uses instead of certificate files). The SNI map is built from a snapshot's
//! [`TlsTermination`] (PEM in, parsed here) and swapped atomically: new handshakes see
//! the new certificates, established connections keep theirs. Choice: an exact name,
//! then the longest `*` suffix, then `*`; no SNI: the `*` server. A name whose server
//! has no usable certificate, or no match at all, aborts the handshake (rustls sends
//! an `access_denied` alert).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use isthmus_model::snapshot::{TlsCredential, TlsTermination};
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::debug;

/// A credential that cannot serve: the secret, the Gateway server, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{secret} ({server}): {reason}")]
pub struct CertificateError {
    /// `Secret ns/name`.
    pub secret: String,
    /// `Gateway ns/name spec.servers[i]`.
    pub server: String,
    pub reason: String,
}

/// SNI pattern -> certificate. `None` values: the server claiming the name has no
/// usable certificate, so the handshake is refused rather than served by another one.
#[derive(Default)]
struct SniMap {
    exact: HashMap<String, Option<Arc<CertifiedKey>>>,
    /// `*suffix` patterns as (`suffix`, certificate), longest suffix first.
    wildcards: Vec<(String, Option<Arc<CertifiedKey>>)>,
    any: Option<Option<Arc<CertifiedKey>>>,
}

impl SniMap {
    fn insert(&mut self, pattern: &str, cert: Option<Arc<CertifiedKey>>) {
        if pattern == "*" {
            self.any.get_or_insert(cert);
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            if !self.wildcards.iter().any(|(s, _)| s == suffix) {
                self.wildcards.push((suffix.to_string(), cert));
            }
        } else {
            self.exact.entry(pattern.to_string()).or_insert(cert);
        }
    }

    fn lookup(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.any.as_ref()?.as_ref();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(cert) = self.exact.get(&name) {
            return cert.as_ref();
        }
        for (suffix, cert) in &self.wildcards {
            // A wildcard needs a non-empty label in front: `*.a.test` is not `a.test`.
            if name.len() > suffix.len() && name.ends_with(suffix.as_str()) {
                return cert.as_ref();
            }
        }
        self.any.as_ref()?.as_ref()
    }
}

/// A credential and what parsing it gave.
type Loaded = (TlsCredential, Result<Arc<CertifiedKey>, String>);

/// The certificate resolver of one HTTPS listener. One writer ([`SniResolver::update`]),
/// lock-free readers (the handshakes).
pub struct SniResolver {
    map: ArcSwap<SniMap>,
    provider: Arc<CryptoProvider>,
    /// Credentials parsed for the current map, so an unchanged one is neither parsed
    /// nor reported again.
    loaded: Mutex<Vec<Loaded>>,
}

impl SniResolver {
    /// A resolver that refuses every handshake until [`SniResolver::update`].
    pub fn new() -> SniResolver {
        SniResolver {
            map: ArcSwap::from_pointee(SniMap::default()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            loaded: Mutex::new(Vec::new()),
        }
    }

    /// Parse the certificates of `tls` and swap them in. Returns the credentials that
    /// cannot serve and were not reported by an earlier update (their names are
    /// refused); the other servers are served.
    pub fn update(&self, tls: &TlsTermination) -> Vec<CertificateError> {
        let mut loaded = self.loaded.lock();
        let mut next: Vec<Loaded> = Vec::new();
        let mut errors = Vec::new();
        let mut map = SniMap::default();
        for server in &tls.servers {
            let cert = server.credential.as_ref().and_then(|cred| {
                if let Some((_, done)) = next.iter().find(|(c, _)| c == cred) {
                    return done.as_ref().ok().cloned();
                }
                let done = match loaded.iter().find(|(c, _)| c == cred) {
                    Some((_, done)) => done.clone(),
                    None => {
                        let done = certified_key(cred, &self.provider);
                        if let Err(reason) = &done {
                            errors.push(CertificateError {
                                secret: cred.secret.clone(),
                                server: server.source.clone(),
                                reason: reason.clone(),
                            });
                        }
                        done
                    }
                };
                next.push((cred.clone(), done.clone()));
                done.ok()
            });
            for pattern in &server.sni {
                map.insert(pattern, cert.clone());
            }
        }
        // Longest suffix first; stable, so the first server keeps equal lengths.
        map.wildcards
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        self.map.store(Arc::new(map));
        *loaded = next;
        errors
    }

    /// The certificate a handshake with this SNI (or none) gets.
    pub fn certificate_for(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.map.load().lookup(sni).cloned()
    }
}

impl Default for SniResolver {
    fn default() -> SniResolver {
        SniResolver::new()
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.load();
        f.debug_struct("SniResolver")
            .field("exact", &map.exact.keys().collect::<Vec<_>>())
            .field(
                "wildcards",
                &map.wildcards.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            )
            .field("any", &map.any.is_some())
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.certificate_for(hello.server_name());
        if cert.is_none() {
            debug!(
                sni = hello.server_name(),
                "no certificate for this name: handshake refused"
            );
        }
        cert
    }
}

/// Parse a PEM chain and key into a `CertifiedKey`, checking that the key belongs to
/// the first certificate. ECDSA (P-256, P-384), RSA and Ed25519 keys, in PKCS#8,
/// PKCS#1 or SEC1 form.
fn certified_key(
    cred: &TlsCredential,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(&cred.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate PEM".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(&cred.private_key_pem)
        .map_err(|e| format!("the private key is not valid PEM: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "the private key does not match the certificate".to_string()
            }
            rustls::Error::InvalidCertificate(e) => {
                format!("the certificate is not a valid X.509 certificate ({e})")
            }
            e => format!("the private key cannot be used: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::snapshot::TlsServer;
    use std::path::Path;
    use std::process::Command;

    /// A self-signed certificate and key made by the `openssl` command.
    fn openssl_cert(dir: &Path, name: &str, key_args: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let status = Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .args(key_args)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("run openssl");
        assert!(status.status.success(), "{status:?}");
        (
            std::fs::read(crt).expect("crt"),
            std::fs::read(key).expect("key"),
        )
    }

    const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    const RSA: &[&str] = &["-newkey", "rsa:2048"];

    fn server(name: &str, sni: &[&str], pem: Option<&(Vec<u8>, Vec<u8>)>) -> TlsServer {
        TlsServer {
            source: format!("Gateway default/gw {name}"),
            sni: sni.iter().map(|s| s.to_string()).collect(),
            secret: format!("Secret istio-system/{name}"),
            credential: pem.map(|(c, k)| TlsCredential {
                secret: format!("Secret istio-system/{name}"),
                cert_chain_pem: c.clone(),
                private_key_pem: k.clone(),
            }),
        }
    }

    /// The CN-bearing leaf certificate a handshake with `sni` gets.
    fn served(r: &SniResolver, sni: Option<&str>) -> Option<Vec<u8>> {
        r.certificate_for(sni).map(|c| c.cert[0].to_vec())
    }

    fn der(pem: &[u8]) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem).expect("pem").to_vec()
    }

    #[test]
    fn selection_by_sni() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exact = openssl_cert(dir.path(), "exact", EC);
        let wide = openssl_cert(dir.path(), "wide", RSA);
        let narrow = openssl_cert(dir.path(), "narrow", EC);
        let any = openssl_cert(dir.path(), "any", EC);
        let r = SniResolver::new();
        assert_eq!(served(&r, Some("a.test")), None, "empty until updated");
        let errors = r.update(&TlsTermination {
            servers: vec![
                server("exact", &["a.example.com"], Some(&exact)),
                server("wide", &["*.example.com"], Some(&wide)),
                server("narrow", &["*.b.example.com"], Some(&narrow)),
                server("broken", &["broken.example.com"], None),
                // Claims a name an earlier server has: the first keeps it.
                server("any", &["*", "a.example.com"], Some(&any)),
            ],
        });
        assert_eq!(errors, []);
        assert_eq!(served(&r, Some("a.example.com")), Some(der(&exact.0)));
        assert_eq!(served(&r, Some("A.Example.COM.")), Some(der(&exact.0)));
        assert_eq!(served(&r, Some("x.example.com")), Some(der(&wide.0)));
        assert_eq!(served(&r, Some("x.y.example.com")), Some(der(&wide.0)));
        assert_eq!(served(&r, Some("x.b.example.com")), Some(der(&narrow.0)));
        // The wildcard needs a label in front; then `*` serves.
        assert_eq!(served(&r, Some("b.example.com")), Some(der(&wide.0)));
        assert_eq!(served(&r, Some("example.com")), Some(der(&any.0)));
        assert_eq!(served(&r, Some("other.test")), Some(der(&any.0)));
        assert_eq!(served(&r, None), Some(der(&any.0)));
        // A server without a certificate refuses its names; `*` does not step in.
        assert_eq!(served(&r, Some("broken.example.com")), None);

        // Without a `*` server: unknown names and a missing SNI are refused.
        r.update(&TlsTermination {
            servers: vec![server("exact", &["a.example.com"], Some(&exact))],
        });
        assert_eq!(served(&r, Some("a.example.com")), Some(der(&exact.0)));
        assert_eq!(served(&r, Some("other.test")), None);
        assert_eq!(served(&r, None), None);
    }

    #[test]
    fn unusable_credentials_are_reported_once_and_the_rest_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = openssl_cert(dir.path(), "good", EC);
        let other = openssl_cert(dir.path(), "other", EC);
        let mismatched = (good.0.clone(), other.1.clone());
        let garbled = (
            b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n".to_vec(),
            good.1.clone(),
        );
        let no_key = (good.0.clone(), b"no key here".to_vec());
        let tls = TlsTermination {
            servers: vec![
                server("mismatched", &["m.test"], Some(&mismatched)),
                server("garbled", &["g.test"], Some(&garbled)),
                server("nokey", &["k.test"], Some(&no_key)),
                server("good", &["good.test"], Some(&good)),
            ],
        };
        let r = SniResolver::new();
        let errors = r.update(&tls);
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            [
                "Secret istio-system/mismatched (Gateway default/gw mismatched): the private key does not match the certificate",
                "Secret istio-system/garbled (Gateway default/gw garbled): the certificate is not a valid X.509 certificate (BadEncoding)",
                "Secret istio-system/nokey (Gateway default/gw nokey): the private key is not valid PEM: no items found",
            ]
        );
        for sni in ["m.test", "g.test", "k.test"] {
            assert_eq!(served(&r, Some(sni)), None, "{sni}");
        }
        assert_eq!(served(&r, Some("good.test")), Some(der(&good.0)));
        // The same snapshot again: nothing new to report, same certificates.
        let before = r.certificate_for(Some("good.test")).expect("good");
        assert_eq!(r.update(&tls), []);
        let after = r.certificate_for(Some("good.test")).expect("good");
        assert!(
            Arc::ptr_eq(&before, &after),
            "unchanged credential not re-parsed"
        );
        // Fixed: served from the next update on.
        let fixed = TlsTermination {
            servers: vec![server("mismatched", &["m.test"], Some(&other))],
        };
        assert_eq!(r.update(&fixed), []);
        assert_eq!(served(&r, Some("m.test")), Some(der(&other.0)));
    }
}
