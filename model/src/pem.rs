//! TLS credentials as Secrets and certificate files hold them, checked once for
//! everyone: the compiler (what the gateway serves), `isthmus analyze` and the
//! controller's certificate directory call the same functions, so they report the
//! same problem in the same words. [`server_pair`] picks a Secret's certificate and
//! key (Istio's key order) and [`parse_pair`] checks them: PEM whose blocks are
//! base64 DER, a certificate, an unencrypted private key; then
//! [`ServerPair::key_matches`] tells whether the key is the certificate's and
//! [`validity_problem`] whether the certificates are valid at a given time (handed
//! in: the model has no clock). [`ca_bundle`] is the same for a client CA.
//!
//! A certificate block that is DER but not X.509 passes the structural check (the
//! engine's rustls refuses it when loading); the key and time checks then have
//! nothing to say.

use crate::der;
use crate::resources::core::decode_base64;

/// One PEM block: its label (`CERTIFICATE`, `PRIVATE KEY`...) and its DER body.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub der: Vec<u8>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material never reaches a log through Debug.
        write!(f, "Block({}, {} bytes)", self.label, self.der.len())
    }
}

/// The PEM blocks in `text`, each body checked to be base64 of a DER structure (an
/// ASN.1 SEQUENCE). Text outside the blocks is ignored, as OpenSSL does. The error
/// says what is wrong (`no PEM block`, `no "-----END CERTIFICATE-----" line`...).
pub fn blocks(text: &[u8]) -> Result<Vec<Block>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not text".to_string())?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| "a BEGIN line is not closed".to_string())?;
        let label = &after[..label_end];
        let body = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body
            .find(&end_marker)
            .ok_or_else(|| format!("no \"{end_marker}\" line"))?;
        match decode_base64(&body[..body_end]) {
            Some(der) if der.first() == Some(&0x30) => out.push(Block {
                label: label.to_string(),
                der,
            }),
            _ => return Err(format!("the {label} block is not base64 DER")),
        }
        rest = &body[body_end + end_marker.len()..];
    }
    if out.is_empty() {
        return Err("no PEM block".to_string());
    }
    Ok(out)
}

/// Why a Secret (or a pair of files) holds no usable server certificate and key, or
/// no usable client CA. `name` is how the caller names the part: a Secret key
/// (`"tls.crt"`, quoted) or a file path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "it has neither keys \"cert\" and \"key\" nor \"tls.crt\" and \"tls.key\" (or their data is not base64)"
    )]
    NoKeys,
    #[error("keys {cert:?} and {key:?} are present but empty")]
    EmptyKeys {
        cert: &'static str,
        key: &'static str,
    },
    #[error("it has no key \"cacert\" or \"ca.crt\"")]
    NoCaKey,
    #[error("{name} is not valid PEM: {why}")]
    NotPem { name: String, why: String },
    #[error("{name} holds no CERTIFICATE PEM block")]
    NoCertificate { name: String },
    #[error("{name} holds no PRIVATE KEY PEM block")]
    NoPrivateKey { name: String },
    #[error("{name} is an encrypted private key, which cannot be used without its password")]
    EncryptedKey { name: String },
    /// The words the engine uses when rustls refuses such a pair.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
}

/// The Secret keys of a server certificate and key, in Istio's order
/// (`extractCertInfo`): `cert` + `key` win over `tls.crt` + `tls.key`.
pub const SERVER_KEYS: [(&str, &str); 2] = [("cert", "key"), ("tls.crt", "tls.key")];

/// The Secret keys of a client CA, in Istio's order (`ExtractRoot`).
pub const CA_KEYS: [&str; 2] = ["cacert", "ca.crt"];

/// A server certificate chain and its private key that passed [`parse_pair`].
#[derive(Clone, PartialEq, Eq)]
pub struct ServerPair {
    /// The leaf certificate first, then its chain (PEM, as given).
    pub cert_chain_pem: Vec<u8>,
    /// The private key (PEM, as given).
    pub private_key_pem: Vec<u8>,
    /// The DER of every CERTIFICATE block, in order.
    certificates: Vec<Vec<u8>>,
    key: Block,
}

impl std::fmt::Debug for ServerPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPair")
            .field("certificates", &self.certificates.len())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServerPair {
    /// Whether the private key is the leaf certificate's: `None` when that cannot be
    /// told without a crypto library (the leaf is not X.509, or the key does not
    /// carry its public half, as PKCS#8 v1 Ed25519 keys).
    pub fn key_matches(&self) -> Option<bool> {
        let leaf = der::certificate(self.certificates.first()?)?;
        let private = der::private_key(&self.key.label, &self.key.der)?;
        leaf.key.matches(&private)
    }

    /// [`ServerPair::key_matches`] as an error when the key is known not to match.
    pub fn check_key(&self) -> Result<(), CredentialError> {
        match self.key_matches() {
            Some(false) => Err(CredentialError::KeyMismatch),
            _ => Ok(()),
        }
    }

    /// [`validity_problem`] of this pair's chain.
    pub fn validity_problem(&self, now: i64) -> Option<String> {
        chain_validity_problem(&self.certificates, now)
    }
}

/// Istio's `extractCertInfo` on the keys of a Secret (`get` returns a key's bytes,
/// `None` when absent or not base64): `cert` + `key` when both are non-empty, else
/// `tls.crt` + `tls.key`; then [`parse_pair`].
pub fn server_pair(get: impl Fn(&str) -> Option<Vec<u8>>) -> Result<ServerPair, CredentialError> {
    let found = SERVER_KEYS
        .iter()
        .find_map(|&(c, k)| match (get(c), get(k)) {
            (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
                Some((c, cert, k, key))
            }
            _ => None,
        });
    let Some((cert_key, cert, key_key, key)) = found else {
        if let Some(&(cert, key)) = SERVER_KEYS
            .iter()
            .find(|(c, k)| get(c).is_some() && get(k).is_some())
        {
            return Err(CredentialError::EmptyKeys { cert, key });
        }
        return Err(CredentialError::NoKeys);
    };
    parse_pair(cert, key, &format!("{cert_key:?}"), &format!("{key_key:?}"))
}

/// Check `cert_pem` (a certificate chain, leaf first) and `key_pem` (its private
/// key): valid PEM, at least one CERTIFICATE block, a PRIVATE KEY block that is not
/// encrypted. Whether the key matches is asked separately
/// ([`ServerPair::key_matches`]). Errors name the parts `cert_name` and `key_name`.
pub fn parse_pair(
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    cert_name: &str,
    key_name: &str,
) -> Result<ServerPair, CredentialError> {
    let certificates = certificate_blocks(&cert_pem, cert_name)?;
    let not_pem = |why: String| CredentialError::NotPem {
        name: key_name.to_string(),
        why,
    };
    let encrypted = || CredentialError::EncryptedKey {
        name: key_name.to_string(),
    };
    // OpenSSL's legacy encryption keeps the label and adds headers to the body.
    if key_pem
        .windows(b"Proc-Type: 4,ENCRYPTED".len())
        .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(encrypted());
    }
    let key = blocks(&key_pem)
        .map_err(not_pem)?
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"));
    match key {
        None => Err(CredentialError::NoPrivateKey {
            name: key_name.to_string(),
        }),
        Some(b) if b.label.starts_with("ENCRYPTED") => Err(encrypted()),
        Some(key) => Ok(ServerPair {
            cert_chain_pem: cert_pem,
            private_key_pem: key_pem,
            certificates,
            key,
        }),
    }
}

/// Check that `pem` holds PEM certificates (at least one CERTIFICATE block): a CA
/// bundle, or a chain. Errors name it `name`.
pub fn check_certificates(pem: &[u8], name: &str) -> Result<(), CredentialError> {
    certificate_blocks(pem, name).map(|_| ())
}

/// The DER of the CERTIFICATE blocks of `pem`, at least one.
fn certificate_blocks(pem: &[u8], name: &str) -> Result<Vec<Vec<u8>>, CredentialError> {
    let certs: Vec<Vec<u8>> = blocks(pem)
        .map_err(|why| CredentialError::NotPem {
            name: name.to_string(),
            why,
        })?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der)
        .collect();
    if certs.is_empty() {
        return Err(CredentialError::NoCertificate {
            name: name.to_string(),
        });
    }
    Ok(certs)
}

/// Istio's `ExtractRoot`: the client CA certificates of a Secret, key `cacert`, else
/// `ca.crt` (empty values count as absent), checked to hold CERTIFICATE PEM.
pub fn ca_bundle(get: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Vec<u8>, CredentialError> {
    let Some((key, pem)) = CA_KEYS
        .into_iter()
        .find_map(|k| get(k).filter(|v| !v.is_empty()).map(|v| (k, v)))
    else {
        return Err(CredentialError::NoCaKey);
    };
    check_certificates(&pem, &format!("{key:?}"))?;
    Ok(pem)
}

/// Why the certificates of `cert_chain_pem` (leaf first) are refused by clients at
/// `now` (Unix seconds): the first one expired or not yet valid, as `the certificate
/// expired on 2026-01-02T00:00:00Z; clients will refuse it`. `None` when they are all
/// valid, or cannot be read (the structural checks report that).
pub fn validity_problem(cert_chain_pem: &[u8], now: i64) -> Option<String> {
    let certs: Vec<Vec<u8>> = blocks(cert_chain_pem)
        .ok()?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der)
        .collect();
    chain_validity_problem(&certs, now)
}

fn chain_validity_problem(certificates: &[Vec<u8>], now: i64) -> Option<String> {
    certificates.iter().enumerate().find_map(|(i, c)| {
        let cert = der::certificate(c)?;
        let which = if i == 0 {
            "the certificate".to_string()
        } else {
            format!("certificate {} of the chain", i + 1)
        };
        let why = if now > cert.not_after {
            format!("{which} expired on {}", der::format_utc(cert.not_after))
        } else if now < cert.not_before {
            format!(
                "{which} is not valid before {}",
                der::format_utc(cert.not_before)
            )
        } else {
            return None;
        };
        Some(format!("{why}; clients will refuse it"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test-only certificates and keys (testdata/pem/README.md): EC P-256 `a` valid
    // 2025-01-01..2026-01-02, EC `b` valid 2030..2031, an RSA 1024 pair, an Ed25519 pair.
    macro_rules! vector {
        ($file:literal) => {
            include_str!(concat!("../../testdata/pem/", $file))
        };
    }
    const EC_A_CERT: &str = vector!("ec-a.crt");
    const EC_A_KEY: &str = vector!("ec-a.key");
    const EC_A_KEY_SEC1: &str = vector!("ec-a.sec1.key");
    const EC_B_CERT: &str = vector!("ec-b.crt");
    const EC_B_KEY: &str = vector!("ec-b.key");
    const RSA_CERT: &str = vector!("rsa.crt");
    const RSA_KEY: &str = vector!("rsa.key");
    const RSA_KEY_PKCS1: &str = vector!("rsa.pkcs1.key");
    const ED25519_CERT: &str = vector!("ed25519.crt");
    const ED25519_KEY: &str = vector!("ed25519.key");

    const FAKE_CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    const FAKE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQI=\n-----END PRIVATE KEY-----\n";

    fn pair(cert: &str, key: &str) -> Result<ServerPair, CredentialError> {
        parse_pair(cert.into(), key.into(), "\"tls.crt\"", "\"tls.key\"")
    }

    fn secret(data: &[(&str, &str)]) -> Result<ServerPair, CredentialError> {
        server_pair(|k| {
            data.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_bytes().to_vec())
        })
    }

    #[test]
    fn keys_in_istio_order() {
        let p = secret(&[
            ("cert", EC_A_CERT),
            ("key", EC_A_KEY),
            ("tls.crt", FAKE_CERT),
            ("tls.key", FAKE_KEY),
        ])
        .expect("cert/key");
        assert_eq!(p.cert_chain_pem, EC_A_CERT.as_bytes());
        let p = secret(&[
            ("cert", ""),
            ("key", ""),
            ("tls.crt", FAKE_CERT),
            ("tls.key", FAKE_KEY),
        ])
        .expect("tls.crt/tls.key");
        assert_eq!(p.private_key_pem, FAKE_KEY.as_bytes());
        assert_eq!(
            secret(&[("cert", ""), ("key", "")]),
            Err(CredentialError::EmptyKeys {
                cert: "cert",
                key: "key"
            })
        );
        assert_eq!(
            secret(&[("ca.crt", FAKE_CERT)]),
            Err(CredentialError::NoKeys)
        );
    }

    #[test]
    fn structural_problems_name_the_part() {
        let msg = |r: Result<ServerPair, CredentialError>| r.expect_err("refused").to_string();
        assert_eq!(
            msg(pair("garbage", FAKE_KEY)),
            "\"tls.crt\" is not valid PEM: no PEM block"
        );
        let cut = &EC_A_CERT[..EC_A_CERT.len() / 2];
        assert_eq!(
            msg(pair(cut, FAKE_KEY)),
            "\"tls.crt\" is not valid PEM: no \"-----END CERTIFICATE-----\" line"
        );
        assert!(msg(pair(&FAKE_CERT.replace("MAMCAQE=", "!!!!"), FAKE_KEY))
            .ends_with("the CERTIFICATE block is not base64 DER"));
        assert_eq!(
            msg(pair(FAKE_KEY, FAKE_KEY)),
            "\"tls.crt\" holds no CERTIFICATE PEM block"
        );
        assert_eq!(
            msg(pair(FAKE_CERT, FAKE_CERT)),
            "\"tls.key\" holds no PRIVATE KEY PEM block"
        );
        let enc = FAKE_KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        assert!(msg(pair(FAKE_CERT, &enc)).contains("is an encrypted private key"));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMAMCAQI=\n-----END RSA PRIVATE KEY-----\n";
        assert!(msg(pair(FAKE_CERT, legacy)).contains("is an encrypted private key"));
        assert_eq!(
            parse_pair(b"\xff".to_vec(), vec![], "/certs/a.crt", "/certs/a.key")
                .expect_err("not text")
                .to_string(),
            "/certs/a.crt is not valid PEM: not text"
        );
    }

    #[test]
    fn key_belongs_to_the_certificate() {
        for (cert, key) in [
            (EC_A_CERT, EC_A_KEY),
            (EC_A_CERT, EC_A_KEY_SEC1),
            (EC_B_CERT, EC_B_KEY),
            (RSA_CERT, RSA_KEY),
            (RSA_CERT, RSA_KEY_PKCS1),
        ] {
            let p = pair(cert, key).expect("parses");
            assert_eq!(p.key_matches(), Some(true), "{cert}");
            assert_eq!(p.check_key(), Ok(()));
        }
        for (cert, key) in [
            (EC_A_CERT, EC_B_KEY),
            (EC_B_CERT, EC_A_KEY_SEC1),
            (RSA_CERT, EC_A_KEY),
            (EC_A_CERT, RSA_KEY),
            (ED25519_CERT, EC_A_KEY),
        ] {
            let p = pair(cert, key).expect("parses");
            assert_eq!(p.key_matches(), Some(false), "{cert} {key}");
            assert_eq!(
                p.check_key().map_err(|e| e.to_string()),
                Err("the private key does not match the certificate".to_string())
            );
        }
        // A PKCS#8 v1 Ed25519 key does not carry its public half; neither does a
        // DER body that is not X.509: nothing to say, the engine decides.
        assert_eq!(
            pair(ED25519_CERT, ED25519_KEY).expect("ok").key_matches(),
            None
        );
        assert_eq!(pair(FAKE_CERT, FAKE_KEY).expect("ok").key_matches(), None);
        assert_eq!(pair(FAKE_CERT, FAKE_KEY).expect("ok").check_key(), Ok(()));
    }

    #[test]
    fn validity_at_a_fixed_time() {
        let jan_2026 = 1_767_225_600; // 2026-01-01T00:00:00Z
        let a = pair(EC_A_CERT, EC_A_KEY).expect("a");
        assert_eq!(a.validity_problem(jan_2026), None);
        assert_eq!(
            a.validity_problem(jan_2026 + 86_401).as_deref(),
            Some("the certificate expired on 2026-01-02T00:00:00Z; clients will refuse it")
        );
        // notAfter itself is still valid (RFC 5280: inclusive).
        assert_eq!(a.validity_problem(jan_2026 + 86_400), None);
        assert_eq!(
            validity_problem(EC_B_CERT.as_bytes(), jan_2026).as_deref(),
            Some(
                "the certificate is not valid before 2030-01-01T00:00:00Z; clients will refuse it"
            )
        );
        // The chain is checked too: b behind a.
        let chain = format!("{EC_A_CERT}{EC_B_CERT}");
        assert_eq!(
            validity_problem(chain.as_bytes(), jan_2026).as_deref(),
            Some("certificate 2 of the chain is not valid before 2030-01-01T00:00:00Z; clients will refuse it")
        );
        assert_eq!(validity_problem(FAKE_CERT.as_bytes(), jan_2026), None);
        assert_eq!(validity_problem(b"garbage", jan_2026), None);
    }

    #[test]
    fn client_ca_bundles() {
        let get = |data: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                data.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.as_bytes().to_vec())
            }
        };
        assert_eq!(
            ca_bundle(get(&[("ca.crt", EC_A_CERT), ("cacert", "")])),
            Ok(EC_A_CERT.as_bytes().to_vec())
        );
        assert_eq!(
            ca_bundle(get(&[("tls.crt", EC_A_CERT)])),
            Err(CredentialError::NoCaKey)
        );
        assert_eq!(
            ca_bundle(get(&[("cacert", EC_A_KEY)])).map_err(|e| e.to_string()),
            Err("\"cacert\" holds no CERTIFICATE PEM block".to_string())
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let p = pair(EC_A_CERT, EC_A_KEY).expect("a");
        let dbg = format!("{p:?}");
        let body = EC_A_KEY.lines().nth(1).expect("a body line");
        assert!(!dbg.contains(body), "{dbg}");
        assert!(dbg.contains("PRIVATE KEY"), "{dbg}");
    }
}
