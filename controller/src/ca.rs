//! The mesh certificate authority (istiod's CA job) and the proxies' bootstrap tokens.
//!
//! # Where the signing key comes from
//!
//! - [`MeshCa::load_or_create`]: `STATE/ca/root-cert.pem` + `root-key.pem`, a
//!   self-signed ECDSA P-256 root (CN "isthmus mesh root", 10 years) made on the first
//!   start and reused afterwards. The directory is 0700, both files 0600, each written
//!   whole (a temporary file renamed over it). The key is written first, so a root
//!   certificate on disk always has its key; a certificate without its key, or with a
//!   key that is not its own, is an error naming the file (never silently replaced:
//!   every workload trusts that root). A `flock` on `STATE/ca/.lock` keeps two
//!   controllers sharing a state directory from making two roots.
//! - [`MeshCa::from_cacerts`]: Istio's plugged-in CA layout (`cacerts`): `ca-cert.pem`
//!   signs, `ca-key.pem` is its key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM),
//!   `root-cert.pem` is the trust anchor and `cert-chain.pem` the chain from
//!   `ca-cert.pem` up to the root. Every file is checked; a problem is an error naming
//!   the file and what is wrong with it.
//!
//! # What is signed
//!
//! [`MeshCa::sign_csr`] signs a workload's CSR for the identity its caller was
//! authenticated as: the CSR's signature must verify, and it may ask for nothing but
//! that identity's URI SAN (SPIFFE ID) and DNS SAN. The leaf always carries both,
//! lives `ttl` (backdated one minute for clock skew), is a serverAuth + clientAuth
//! end-entity certificate with a random serial, and comes with the intermediate chain
//! of a plugged-in CA. [`MeshCa::issue_server`] makes the controller's own server
//! certificate and key.
//!
//! # Bootstrap tokens
//!
//! [`Tokens`]: one random token per started proxy, naming the identity the proxy may
//! ask a certificate for. Only the tokens' SHA-256 digests are kept.
//!
//! Keys are never logged: `Debug` of [`MeshCa`] shows where the CA came from and the
//! signing certificate's subject only.

use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use isthmus_model::identity::Identity;
use parking_lot::Mutex;
use rand::RngCore;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
    PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The lifetime callers give workload certificates (Istio's default).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The subdirectory of the state directory holding the generated root.
pub const CA_DIR: &str = "ca";
/// Istio's file names (`cacerts`), also used for the generated root.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const ROOT_KEY_FILE: &str = "root-key.pem";
pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// The generated root's common name.
const ROOT_COMMON_NAME: &str = "isthmus mesh root";
/// The generated root's lifetime: 10 years.
const ROOT_LIFETIME_SECS: i64 = 3652 * 24 * 3600;
/// How far an issued certificate's notBefore lies in the past (clock skew).
const BACKDATE_SECS: i64 = 60;

/// Why the CA could not be loaded, or a certificate not issued.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file or directory could not be read, written or locked.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A CA file is missing or its content is wrong.
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    /// The CSR could not be parsed, its signature does not verify, or its key type is
    /// not supported.
    #[error("the certificate signing request {0}")]
    Csr(String),
    /// The CSR asks for names the caller's identity does not have.
    #[error(
        "the certificate signing request asks for {} but may only ask for {}",
        requested.join(", "),
        allowed.join(", ")
    )]
    IdentityMismatch {
        /// Every SAN of the CSR (`URI:…`, `DNS:…`, `IP:…`, …).
        requested: Vec<String>,
        /// The SANs of the caller's identity.
        allowed: Vec<String>,
    },
    /// A lifetime or name given by the caller cannot go into a certificate.
    #[error("{0}")]
    Request(String),
    /// Key generation or signing failed.
    #[error("{what}: {source}")]
    Crypto {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// PEM: the leaf, then the intermediate chain of a plugged-in CA (the content of
    /// `cert-chain.pem`, as Istio sends it).
    pub chain_pem: String,
    /// The leaf's notAfter, unix seconds.
    pub not_after: i64,
    /// The leaf's serial number, lower-case hex as `openssl x509 -serial` shows it.
    pub serial_hex: String,
}

/// The mesh CA: the signing certificate and key, the trust anchors, the chain.
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
    /// The generated root's directory, or the `cacerts` directory.
    origin: PathBuf,
    /// The signing certificate's subject, for `Debug`.
    subject: String,
    root_pem: String,
    /// Appended after every leaf (empty for the generated root).
    chain_pem: String,
}

impl fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshCa")
            .field("origin", &self.origin)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl MeshCa {
    /// The mesh CA of `state_dir` (`STATE/ca/`): a self-signed root generated on the
    /// first start and written as `root-cert.pem` + `root-key.pem` (0600, directories
    /// 0700), reused afterwards. A key that does not match its certificate, or a
    /// certificate without its key, is an error naming the file.
    pub fn load_or_create(state_dir: &Path) -> Result<MeshCa, CaError> {
        let dir = state_dir.join(CA_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let _lock = lock_dir(&dir)?;
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        let have_cert = match fs::symlink_metadata(&cert_path) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(CaError::Io {
                    path: cert_path,
                    source,
                })
            }
        };
        if !have_cert {
            // No certificate was ever written, so nothing trusts a root of this
            // directory yet: a key left alone by an interrupted first start is
            // replaced.
            let (cert_pem, key_pem) = generate_root()?;
            write_private(&key_path, key_pem.as_bytes())?;
            write_private(&cert_path, cert_pem.as_bytes())?;
            tracing::info!(path = %cert_path.display(), "generated the mesh root CA");
        }
        let certs = read_certs(&cert_path)?;
        let [root] = certs.as_slice() else {
            return Err(file_err(
                &cert_path,
                format!("holds {} certificates, expected 1", certs.len()),
            ));
        };
        let key = read_key(&key_path, || {
            format!(
                "missing, but {ROOT_CERT_FILE} is there: restore the key, or remove both \
                 files to generate a new root (every workload certificate changes then)"
            )
        })?;
        let parsed = parse_cert(&cert_path, root)?;
        check_key_matches(&key_path, &key, &parsed, ROOT_CERT_FILE)?;
        check_signing_cert(&cert_path, &parsed)?;
        let subject = parsed.subject().to_string();
        let issuer = make_issuer(&cert_path, root, key)?;
        Ok(MeshCa {
            issuer,
            origin: dir,
            subject,
            root_pem: encode_certs(std::slice::from_ref(root)),
            chain_pem: String::new(),
        })
    }

    /// Istio's plugged-in `cacerts` layout: `ca-cert.pem` (the CA that signs),
    /// `ca-key.pem`, `root-cert.pem` (trust anchor), `cert-chain.pem` (the chain from
    /// `ca-cert.pem` up to the root). Every problem is an error naming the file.
    pub fn from_cacerts(dir: &Path) -> Result<MeshCa, CaError> {
        let ca_cert_path = dir.join(CA_CERT_FILE);
        let ca_key_path = dir.join(CA_KEY_FILE);
        let root_path = dir.join(ROOT_CERT_FILE);
        let chain_path = dir.join(CERT_CHAIN_FILE);

        let ca_certs = read_certs(&ca_cert_path)?;
        let key = read_key(&ca_key_path, || {
            format!("missing: Istio's cacerts layout needs {CA_KEY_FILE} next to {CA_CERT_FILE}")
        })?;
        let roots = read_certs(&root_path)?;
        let chain = read_certs(&chain_path)?;

        let Some(ca_der) = ca_certs.first() else {
            return Err(file_err(&ca_cert_path, "holds no certificate".into()));
        };
        let ca = parse_cert(&ca_cert_path, ca_der)?;
        check_key_matches(&ca_key_path, &key, &ca, CA_CERT_FILE)?;
        check_signing_cert(&ca_cert_path, &ca)?;
        let parsed_roots = roots
            .iter()
            .map(|der| parse_cert(&root_path, der))
            .collect::<Result<Vec<_>, _>>()?;
        let parsed_chain = chain
            .iter()
            .map(|der| parse_cert(&chain_path, der))
            .collect::<Result<Vec<_>, _>>()?;
        check_chain(&ca, &parsed_chain, &parsed_roots).map_err(|problem| {
            let by = format!("{CERT_CHAIN_FILE} or {ROOT_CERT_FILE}");
            file_err(
                &ca_cert_path,
                format!("not signed by a certificate of {by}: {problem}"),
            )
        })?;

        // The leaf's chain: ca-cert.pem (unless cert-chain.pem starts with it), then
        // cert-chain.pem as it is.
        let mut after_leaf = Vec::new();
        if chain.first() != Some(ca_der) {
            after_leaf.push(ca_der.clone());
        }
        after_leaf.extend(chain.iter().cloned());
        let subject = ca.subject().to_string();
        let issuer = make_issuer(&ca_cert_path, ca_der, key)?;
        Ok(MeshCa {
            issuer,
            origin: dir.to_path_buf(),
            subject,
            root_pem: encode_certs(&roots),
            chain_pem: encode_certs(&after_leaf),
        })
    }

    /// PEM of the trust anchor(s) proxies verify peers against.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Sign `csr_pem` for `identity`, valid for `ttl`. The CSR's signature must verify
    /// and its SANs must be a subset of `identity`'s URI and DNS SANs
    /// ([`CaError::IdentityMismatch`] otherwise); the certificate carries both.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<IssuedCert, CaError> {
        let block = pem::parse(csr_pem).map_err(|e| CaError::Csr(format!("is not PEM: {e}")))?;
        if !matches!(
            block.tag(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            return Err(CaError::Csr(format!(
                "is a PEM {:?} block, not a CERTIFICATE REQUEST",
                block.tag()
            )));
        }
        let (rest, csr) = X509CertificationRequest::from_der(block.contents())
            .map_err(|e| CaError::Csr(format!("is not a PKCS#10 request: {e}")))?;
        if !rest.is_empty() {
            return Err(CaError::Csr("has bytes after the request".into()));
        }
        csr.verify_signature()
            .map_err(|e| CaError::Csr(format!("signature does not verify: {e}")))?;

        let uri = identity.uri();
        let dns = identity.dns_name();
        let mut requested = Vec::new();
        let mut refused = false;
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::ParseError { error } = ext {
                return Err(CaError::Csr(format!(
                    "has an unreadable extension: {error}"
                )));
            }
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    let ok = match name {
                        GeneralName::URI(u) => *u == uri,
                        GeneralName::DNSName(d) => d.eq_ignore_ascii_case(&dns),
                        _ => false,
                    };
                    refused |= !ok;
                    requested.push(describe_name(name));
                }
            }
        }
        if refused {
            return Err(CaError::IdentityMismatch {
                requested,
                allowed: vec![format!("URI:{uri}"), format!("DNS:{dns}")],
            });
        }

        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CaError::Csr(format!("has a key this CA cannot certify: {e}")))?;
        let sans = vec![
            SanType::URI(ia5("URI SAN", &uri)?),
            SanType::DnsName(ia5("DNS SAN", &dns)?),
        ];
        self.issue(
            &public_key,
            DistinguishedName::new(),
            sans,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            ttl,
        )
    }

    /// A server certificate and its key (PKCS#8 PEM) for the controller's own TLS
    /// endpoint: a fresh ECDSA P-256 key, the given names as DNS SANs (an IP address
    /// becomes an IP SAN), CN the first name, signed by the CA, valid for `ttl`.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<(IssuedCert, String), CaError> {
        let Some(first) = dns_names.first() else {
            return Err(CaError::Request(
                "a server certificate needs at least one name".into(),
            ));
        };
        let mut sans = Vec::new();
        for name in dns_names {
            sans.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if valid_dns_name(name) => SanType::DnsName(ia5("DNS SAN", name)?),
                Err(_) => {
                    return Err(CaError::Request(format!(
                        "{name:?} is neither a DNS name nor an IP address"
                    )))
                }
            });
        }
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, first.as_str());
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Crypto {
                what: "generating the server key",
                source,
            })?;
        let issued = self.issue(
            &key,
            subject,
            sans,
            &[ExtendedKeyUsagePurpose::ServerAuth],
            ttl,
        )?;
        Ok((issued, key.serialize_pem()))
    }

    /// An end-entity certificate for `public_key`.
    fn issue(
        &self,
        public_key: &impl PublicKeyData,
        subject: DistinguishedName,
        sans: Vec<SanType>,
        ekus: &[ExtendedKeyUsagePurpose],
        ttl: Duration,
    ) -> Result<IssuedCert, CaError> {
        let now = unix_now();
        let not_after = i64::try_from(ttl.as_secs())
            .ok()
            .filter(|secs| *secs > 0)
            .and_then(|secs| now.checked_add(secs))
            .ok_or_else(|| {
                CaError::Request(format!(
                    "a certificate lifetime of {ttl:?} is not usable (at least one second)"
                ))
            })?;
        let serial = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.subject_alt_names = sans;
        params.not_before = datetime(now - BACKDATE_SECS)?;
        params.not_after = datetime(not_after)?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = ekus.to_vec();
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(public_key, &self.issuer)
            .map_err(|source| CaError::Crypto {
                what: "signing the certificate",
                source,
            })?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", leaf.pem(), self.chain_pem),
            not_after,
            serial_hex: hex(&serial),
        })
    }
}

/// A self-signed root: (certificate PEM, PKCS#8 key PEM).
fn generate_root() -> Result<(String, String), CaError> {
    let crypto = |what| move |source| CaError::Crypto { what, source };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(crypto("generating the mesh root key"))?;
    let now = unix_now();
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "isthmus");
    subject.push(DnType::CommonName, ROOT_COMMON_NAME);
    params.distinguished_name = subject;
    params.not_before = datetime(now - BACKDATE_SECS)?;
    params.not_after = datetime(now + ROOT_LIFETIME_SECS)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(crypto("signing the mesh root"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The signer of `cert_der` (the issuer name and key identifier from the certificate).
fn make_issuer(
    path: &Path,
    cert_der: &[u8],
    key: KeyPair,
) -> Result<Issuer<'static, KeyPair>, CaError> {
    Issuer::from_ca_cert_der(&cert_der.into(), key)
        .map_err(|e| file_err(path, format!("cannot sign with this certificate: {e}")))
}

/// Take an exclusive `flock` on `dir/.lock`, held until the returned file is dropped.
fn lock_dir(dir: &Path) -> Result<fs::File, CaError> {
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        CaError::Io {
            path: path.clone(),
            source: e.into(),
        }
    })?;
    Ok(file)
}

/// Write `bytes` to `path` whole, mode 0600 ([`isthmus_files::write_private`]), the
/// error naming the file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    isthmus_files::write_private(path, bytes).map_err(io_err(path))
}

/// The DER of every certificate of the PEM file `path` (at least one).
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CaError> {
    let text = read_file(path, || "missing".to_string())?;
    let blocks =
        pem::parse_many(&text).map_err(|e| file_err(path, format!("not valid PEM: {e}")))?;
    let mut certs = Vec::new();
    for block in blocks {
        match block.tag() {
            "CERTIFICATE" => certs.push(block.into_contents()),
            // `openssl` may put parameters or other objects alongside; a key in a
            // certificate file is worth a word.
            tag if tag.ends_with("PRIVATE KEY") => {
                return Err(file_err(
                    path,
                    format!("holds a {tag}: a certificate file must hold certificates only"),
                ))
            }
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(file_err(
            path,
            "not PEM: no -----BEGIN CERTIFICATE----- block".into(),
        ));
    }
    Ok(certs)
}

/// Parse one certificate of `path`.
fn parse_cert<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, CaError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(file_err(
            path,
            "a certificate has bytes after its end".into(),
        )),
        Err(e) => Err(file_err(
            path,
            format!("a CERTIFICATE block is not an X.509 certificate: {e}"),
        )),
    }
}

/// The private key of the PEM file `path`: PKCS#8, or PKCS#1 (RSA) and SEC1 (EC,
/// P-256 or P-384) rewrapped as PKCS#8.
fn read_key(path: &Path, missing: impl FnOnce() -> String) -> Result<KeyPair, CaError> {
    let text = read_file(path, missing)?;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "a CA key file is readable by group or others (chmod 600 it)"
            );
        }
    }
    let blocks =
        pem::parse_many(&text).map_err(|e| file_err(path, format!("not valid PEM: {e}")))?;
    let mut keys = blocks.iter().filter(|b| b.tag().ends_with("PRIVATE KEY"));
    let (Some(block), None) = (keys.next(), keys.next()) else {
        return Err(file_err(
            path,
            "must hold exactly one -----BEGIN PRIVATE KEY----- block".into(),
        ));
    };
    let unusable = |e: rcgen::Error| file_err(path, format!("not a usable private key: {e}"));
    match block.tag() {
        "PRIVATE KEY" => KeyPair::try_from(block.contents()).map_err(unusable),
        "RSA PRIVATE KEY" => {
            KeyPair::try_from(pkcs8(RSA_ALGORITHM, block.contents()).as_slice()).map_err(unusable)
        }
        "EC PRIVATE KEY" => [EC_P256_ALGORITHM, EC_P384_ALGORITHM]
            .iter()
            .find_map(|alg| KeyPair::try_from(pkcs8(alg, block.contents()).as_slice()).ok())
            .ok_or_else(|| {
                file_err(
                    path,
                    "not a usable private key: only P-256 and P-384 EC keys are supported".into(),
                )
            }),
        "ENCRYPTED PRIVATE KEY" => Err(file_err(
            path,
            "the key is encrypted: store it unencrypted (openssl pkey -in KEY -out KEY)".into(),
        )),
        other => Err(file_err(path, format!("unsupported key type {other:?}"))),
    }
}

/// Read `path` as text; a missing file is a [`CaError::File`] saying `missing()`.
fn read_file(path: &Path, missing: impl FnOnce() -> String) -> Result<String, CaError> {
    match fs::read(path) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| file_err(path, "not PEM: not text".into()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(file_err(path, missing())),
        Err(source) => Err(CaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `key` must be the key of `cert` (named `cert_file` in the error on `key_path`).
fn check_key_matches(
    key_path: &Path,
    key: &KeyPair,
    cert: &X509Certificate<'_>,
    cert_file: &str,
) -> Result<(), CaError> {
    if key.public_key_raw() == cert.public_key().subject_public_key.data.as_ref() {
        Ok(())
    } else {
        Err(file_err(
            key_path,
            format!("the key does not match {cert_file}"),
        ))
    }
}

/// A certificate that signs: a CA (basicConstraints), keyCertSign when it has a
/// keyUsage, valid now.
fn check_signing_cert(path: &Path, cert: &X509Certificate<'_>) -> Result<(), CaError> {
    if !cert.is_ca() {
        return Err(file_err(
            path,
            "not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
        ));
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return Err(file_err(
                path,
                "its keyUsage does not allow signing certificates (keyCertSign)".into(),
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(file_err(path, format!("unreadable keyUsage: {e}"))),
    }
    let now = unix_now();
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(file_err(
            path,
            format!("not valid before {}", validity.not_before),
        ));
    }
    if now >= validity.not_after.timestamp() {
        return Err(file_err(path, format!("expired on {}", validity.not_after)));
    }
    Ok(())
}

/// A path of signatures from `ca` through `chain` to one of `roots`.
fn check_chain(
    ca: &X509Certificate<'_>,
    chain: &[X509Certificate<'_>],
    roots: &[X509Certificate<'_>],
) -> Result<(), String> {
    let signed_by = |child: &X509Certificate<'_>, parent: &X509Certificate<'_>| {
        child.verify_signature(Some(parent.public_key())).is_ok()
    };
    let mut current = ca;
    for _ in 0..=chain.len() {
        if roots
            .iter()
            .any(|r| r.as_raw() == current.as_raw() || signed_by(current, r))
        {
            return Ok(());
        }
        match chain
            .iter()
            .find(|c| c.as_raw() != current.as_raw() && signed_by(current, c))
        {
            Some(next) => current = next,
            None => {
                return Err(format!(
                    "no issuer found for \"{}\" (issued by \"{}\")",
                    current.subject(),
                    current.issuer()
                ))
            }
        }
    }
    Err("the chain does not reach a root".into())
}

/// PEM of DER certificates, LF line endings.
fn encode_certs(ders: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = ders
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A SAN as `openssl x509 -text` names it.
fn describe_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(raw) => match raw.len() {
            4 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(raw);
                format!("IP:{}", IpAddr::from(b))
            }
            16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(raw);
                format!("IP:{}", IpAddr::from(b))
            }
            _ => format!("IP:{}", hex(raw)),
        },
        other => format!("{other}"),
    }
}

fn ia5(what: &str, value: &str) -> Result<Ia5String, CaError> {
    Ia5String::try_from(value)
        .map_err(|e| CaError::Request(format!("{value:?} cannot be a {what}: {e}")))
}

/// A host name: dot-separated labels of ASCII letters, digits and `-` (a leading
/// `*.` allowed).
fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn datetime(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| CaError::Request(format!("{unix} is not a certificate date: {e}")))
}

/// 16 random bytes, the first in 0x40..=0x7f: positive and always 16 bytes long.
fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_err(path: &Path, problem: String) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        problem,
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The content of the AlgorithmIdentifier of an RSA key: rsaEncryption
/// (1.2.840.113549.1.1.1), NULL parameters.
const RSA_ALGORITHM: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// id-ecPublicKey (1.2.840.10045.2.1) on prime256v1 (1.2.840.10045.3.1.7).
const EC_P256_ALGORITHM: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
    0x03, 0x01, 0x07,
];
/// id-ecPublicKey on secp384r1 (1.3.132.0.34).
const EC_P384_ALGORITHM: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,
];

/// A PKCS#8 PrivateKeyInfo (RFC 5208): version 0, the algorithm, the inner key.
fn pkcs8(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend(der_tlv(0x30, algorithm));
    body.extend(der_tlv(0x04, key));
    der_tlv(0x30, &body)
}

/// A DER tag-length-value.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Per-workload bootstrap tokens (locally `isthmus up` hands one to each proxy it
/// starts): 32 random bytes, hex. Only the SHA-256 of a token is kept; a lookup
/// compares it with every digest in constant time. An identity may hold several
/// tokens (one per started proxy); [`Tokens::revoke`] drops them all.
#[derive(Default)]
pub struct Tokens {
    entries: Mutex<Vec<([u8; 32], Identity)>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.lock().len())
            .finish()
    }
}

impl Tokens {
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// A new token for `identity` (64 lower-case hex characters).
    pub fn issue(&self, identity: &Identity) -> String {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = hex(&secret);
        self.entries.lock().push((digest(&token), identity.clone()));
        token
    }

    /// The identity `token` was issued for, unless it was revoked.
    pub fn identity_of(&self, token: &str) -> Option<Identity> {
        let wanted = digest(token);
        let entries = self.entries.lock();
        let mut found = None;
        // No early exit: every digest is compared.
        for (d, identity) in entries.iter() {
            if constant_time_eq(d, &wanted) {
                found = Some(identity);
            }
        }
        found.cloned()
    }

    /// Forget every token of `identity`.
    pub fn revoke(&self, identity: &Identity) {
        self.entries.lock().retain(|(_, id)| id != identity);
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_mesh_proxy::csr::new_key_and_csr;
    use std::process::Command;

    fn todolist() -> Identity {
        Identity::parse("spiffe://cluster.local/ns/default/sa/todolist").unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Run `openssl ARGS` (split at spaces) in `dir`: (success, stdout + stderr).
    fn openssl(dir: &Path, args: &str) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("run openssl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn openssl_ok(dir: &Path, args: &str) -> String {
        let (ok, text) = openssl(dir, args);
        assert!(ok, "openssl {args} failed:\n{text}");
        text
    }

    /// The first certificate of `chain`, PEM.
    fn first_cert(chain: &str) -> String {
        let blocks = pem::parse_many(chain).unwrap();
        encode_certs(&[blocks[0].contents().to_vec()])
    }

    fn blocks(pem: impl AsRef<[u8]>) -> Vec<pem::Pem> {
        pem::parse_many(pem).unwrap()
    }

    #[test]
    fn root_is_created_once_then_reloaded() {
        let state = tempfile::tempdir().unwrap();
        let ca = MeshCa::load_or_create(state.path()).unwrap();
        let dir = state.path().join("ca");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("root-cert.pem")), 0o600);
        assert_eq!(mode(&dir.join("root-key.pem")), 0o600);
        assert!(ca.root_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(
            fs::read_to_string(dir.join("root-cert.pem")).unwrap(),
            ca.root_pem()
        );
        let again = MeshCa::load_or_create(state.path()).unwrap();
        assert_eq!(again.root_pem(), ca.root_pem());

        // What a user sees of the root.
        let text = openssl_ok(&dir, "x509 -in root-cert.pem -noout -text");
        assert!(
            text.contains("Subject: O = isthmus, CN = isthmus mesh root"),
            "{text}"
        );
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("Certificate Sign"), "{text}");
        assert!(text.contains("prime256v1"), "{text}");
        // Valid for ten years: still in nine, gone in eleven.
        let checkend = |years: i64| {
            openssl(
                &dir,
                &format!(
                    "x509 -in root-cert.pem -noout -checkend {}",
                    years * 365 * 86400
                ),
            )
            .0
        };
        assert!(checkend(9));
        assert!(!checkend(11));

        // Debug shows no key.
        let key = fs::read_to_string(dir.join("root-key.pem")).unwrap();
        let shown = format!("{ca:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(!shown.contains(key.lines().nth(1).unwrap()), "{shown}");
    }

    #[test]
    fn concurrent_first_starts_make_one_root() {
        let state = tempfile::tempdir().unwrap();
        let load = || {
            MeshCa::load_or_create(state.path())
                .unwrap()
                .root_pem()
                .to_string()
        };
        let roots: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(load)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(roots.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(load(), roots[0]);
    }

    #[test]
    fn a_bad_root_key_is_an_error_naming_the_file() {
        let state = tempfile::tempdir().unwrap();
        let ca = MeshCa::load_or_create(state.path()).unwrap();
        let key_path = state.path().join("ca/root-key.pem");
        let good_key = fs::read_to_string(&key_path).unwrap();
        let err = || {
            MeshCa::load_or_create(state.path())
                .unwrap_err()
                .to_string()
        };

        // Another key.
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        write_private(&key_path, other.serialize_pem().as_bytes()).unwrap();
        let e = err();
        assert!(
            e.contains("root-key.pem: the key does not match root-cert.pem"),
            "{e}"
        );

        // A tampered key.
        let mut lines: Vec<String> = good_key.lines().map(String::from).collect();
        lines[1] = lines[1].replace(|c: char| c.is_ascii_alphabetic(), "A");
        write_private(&key_path, lines.join("\n").as_bytes()).unwrap();
        let e = err();
        assert!(e.contains("root-key.pem"), "{e}");

        // Not PEM at all.
        write_private(&key_path, b"hello").unwrap();
        let e = err();
        assert!(e.contains("root-key.pem"), "{e}");

        // Missing: the root is kept, not replaced.
        fs::remove_file(&key_path).unwrap();
        let e = err();
        assert!(e.contains("root-key.pem: missing"), "{e}");

        // The good key back: the same root as before.
        write_private(&key_path, good_key.as_bytes()).unwrap();
        let back = MeshCa::load_or_create(state.path()).unwrap();
        assert_eq!(back.root_pem(), ca.root_pem());

        // A garbage certificate names the certificate file.
        fs::write(state.path().join("ca/root-cert.pem"), "garbage").unwrap();
        let e = err();
        assert!(e.contains("root-cert.pem: not PEM"), "{e}");
    }

    #[test]
    fn a_key_without_its_certificate_is_replaced() {
        // An interrupted first start leaves the key only: nothing trusts it yet.
        let state = tempfile::tempdir().unwrap();
        let load = || {
            MeshCa::load_or_create(state.path())
                .unwrap()
                .root_pem()
                .to_string()
        };
        let first = load();
        fs::remove_file(state.path().join("ca/root-cert.pem")).unwrap();
        let second = load();
        assert_ne!(first, second);
        assert_eq!(load(), second);
    }

    #[test]
    fn signs_a_proxy_csr_that_openssl_verifies() {
        let state = tempfile::tempdir().unwrap();
        let ca = MeshCa::load_or_create(state.path()).unwrap();
        let id = todolist();
        let wk = new_key_and_csr(&id).unwrap();
        let before = unix_now();
        let issued = ca.sign_csr(&wk.csr_pem, &id, DEFAULT_CERT_TTL).unwrap();
        assert!((before + 86400..=unix_now() + 86400).contains(&issued.not_after));
        // The generated root: the leaf only.
        assert_eq!(blocks(&issued.chain_pem).len(), 1);

        let dir = state.path();
        fs::write(dir.join("root.pem"), ca.root_pem()).unwrap();
        fs::write(dir.join("leaf.pem"), &issued.chain_pem).unwrap();
        fs::write(dir.join("leaf-key.pem"), &wk.key_pem).unwrap();
        let out = openssl_ok(dir, "verify -CAfile root.pem leaf.pem");
        assert!(out.contains("leaf.pem: OK"), "{out}");
        for purpose in ["sslserver", "sslclient"] {
            openssl_ok(
                dir,
                &format!("verify -purpose {purpose} -CAfile root.pem leaf.pem"),
            );
        }

        let text = openssl_ok(dir, "x509 -in leaf.pem -noout -text");
        for want in [
            "URI:spiffe://cluster.local/ns/default/sa/todolist",
            "DNS:todolist.default.sa.cluster.local",
            "CA:FALSE",
            "TLS Web Server Authentication, TLS Web Client Authentication",
            "Digital Signature, Key Encipherment",
            "Issuer: O = isthmus, CN = isthmus mesh root",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }

        // Expires in 24 h (give or take the test's runtime), not earlier, not later.
        openssl_ok(dir, "x509 -in leaf.pem -noout -checkend 86000");
        let (ok, _) = openssl(dir, "x509 -in leaf.pem -noout -checkend 86500");
        assert!(!ok, "the leaf outlives 24 h");

        // The serial as openssl prints it.
        let serial = openssl_ok(dir, "x509 -in leaf.pem -noout -serial");
        assert_eq!(
            serial.trim().to_lowercase(),
            format!("serial={}", issued.serial_hex)
        );
        assert_eq!(issued.serial_hex.len(), 32);

        // The certificate is for the proxy's own key.
        assert_eq!(
            openssl_ok(dir, "x509 -in leaf.pem -noout -pubkey"),
            openssl_ok(dir, "pkey -in leaf-key.pem -pubout")
        );

        // Two signatures of the same CSR get different serials.
        let again = ca.sign_csr(&wk.csr_pem, &id, DEFAULT_CERT_TTL).unwrap();
        assert_ne!(again.serial_hex, issued.serial_hex);
    }

    #[test]
    fn signs_an_openssl_rsa_csr() {
        // Another tool's CSR: RSA, a subject (ignored), the identity's names.
        let state = tempfile::tempdir().unwrap();
        let ca = MeshCa::load_or_create(state.path()).unwrap();
        let dir = state.path();
        openssl_ok(
            dir,
            "req -new -newkey rsa:2048 -nodes -keyout k.pem -out r.csr -subj /CN=whatever \
             -addext subjectAltName=URI:spiffe://cluster.local/ns/default/sa/todolist",
        );
        let csr = fs::read_to_string(dir.join("r.csr")).unwrap();
        let issued = ca.sign_csr(&csr, &todolist(), DEFAULT_CERT_TTL).unwrap();
        fs::write(dir.join("root.pem"), ca.root_pem()).unwrap();
        fs::write(dir.join("leaf.pem"), &issued.chain_pem).unwrap();
        openssl_ok(dir, "verify -CAfile root.pem leaf.pem");
        assert_eq!(
            openssl_ok(dir, "x509 -in leaf.pem -noout -pubkey"),
            openssl_ok(dir, "pkey -in k.pem -pubout")
        );
        let subject = openssl_ok(dir, "x509 -in leaf.pem -noout -subject");
        assert!(!subject.contains("whatever"), "{subject}");
    }

    /// A CSR with these SANs, made with rcgen directly.
    fn csr_with(sans: Vec<SanType>) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn sans_of(chain: &str) -> Vec<String> {
        let blocks = blocks(chain);
        let (_, cert) = X509Certificate::from_der(blocks[0].contents()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value.general_names.iter().map(describe_name).collect()
    }

    #[test]
    fn refuses_other_identities_and_extra_names() {
        let state = tempfile::tempdir().unwrap();
        let ca = MeshCa::load_or_create(state.path()).unwrap();
        let a = todolist();
        let b = Identity::new("cluster.local", "default", "payments");

        // A's CSR signed as B.
        let wk = new_key_and_csr(&a).unwrap();
        match ca.sign_csr(&wk.csr_pem, &b, DEFAULT_CERT_TTL) {
            Err(CaError::IdentityMismatch { requested, allowed }) => {
                assert_eq!(
                    requested,
                    [
                        "URI:spiffe://cluster.local/ns/default/sa/todolist",
                        "DNS:todolist.default.sa.cluster.local"
                    ]
                );
                assert_eq!(
                    allowed,
                    [
                        "URI:spiffe://cluster.local/ns/default/sa/payments",
                        "DNS:payments.default.sa.cluster.local"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }

        // One name too many.
        let uri = SanType::URI(Ia5String::try_from(a.uri()).unwrap());
        let dns = SanType::DnsName(Ia5String::try_from(a.dns_name()).unwrap());
        let extra = SanType::DnsName(Ia5String::try_from("evil.example").unwrap());
        let csr = csr_with(vec![uri.clone(), dns.clone(), extra]);
        let err = ca.sign_csr(&csr, &a, DEFAULT_CERT_TTL).unwrap_err();
        assert!(matches!(err, CaError::IdentityMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("DNS:evil.example"), "{err}");
        let ip = SanType::IpAddress("10.0.0.1".parse().unwrap());
        let csr = csr_with(vec![uri.clone(), ip]);
        let err = ca.sign_csr(&csr, &a, DEFAULT_CERT_TTL).unwrap_err();
        assert!(err.to_string().contains("IP:10.0.0.1"), "{err}");

        // A subset (or nothing) is fine: the leaf carries both names anyway.
        let both = [
            "URI:spiffe://cluster.local/ns/default/sa/todolist",
            "DNS:todolist.default.sa.cluster.local",
        ];
        for sans in [vec![uri], vec![dns], vec![]] {
            let issued = ca.sign_csr(&csr_with(sans), &a, DEFAULT_CERT_TTL).unwrap();
            assert_eq!(sans_of(&issued.chain_pem), both);
        }
    }

    #[test]
    fn garbage_csrs_are_errors() {
        let state = tempfile::tempdir().unwrap();
        let ca = MeshCa::load_or_create(state.path()).unwrap();
        let id = todolist();
        let csr_err = |pem: &str| match ca.sign_csr(pem, &id, DEFAULT_CERT_TTL) {
            Err(CaError::Csr(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(csr_err("").contains("not PEM"));
        assert!(csr_err("hello\u{0}\u{1}").contains("not PEM"));
        let junk = pem::Pem::new("CERTIFICATE REQUEST", vec![0x30, 0x03, 1, 2, 3]);
        assert!(csr_err(&pem::encode(&junk)).contains("PKCS#10"));
        assert!(csr_err(ca.root_pem()).contains("not a CERTIFICATE REQUEST"));

        // A CSR whose signature was tampered with.
        let wk = new_key_and_csr(&id).unwrap();
        let mut der = pem::parse(&wk.csr_pem).unwrap().into_contents();
        let last = der.len() - 3;
        der[last] ^= 0x55;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let m = csr_err(&tampered);
        assert!(m.contains("signature") || m.contains("PKCS#10"), "{m}");

        // Lifetimes that cannot be.
        for ttl in [Duration::ZERO, Duration::from_millis(500), Duration::MAX] {
            let err = ca.sign_csr(&wk.csr_pem, &id, ttl).unwrap_err();
            assert!(matches!(err, CaError::Request(_)), "{err:?}");
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum KeyForm {
        /// RSA, `openssl genpkey` (PKCS#8).
        RsaPkcs8,
        /// RSA, `openssl rsa -traditional` (PKCS#1).
        RsaPkcs1,
        /// P-256, `openssl ecparam -genkey` (SEC1).
        EcSec1,
    }

    /// Istio's cacerts made with the openssl CLI: a P-256 root, an intermediate with
    /// a key of `form`, cert-chain.pem = ca-cert.pem + root-cert.pem (as Istio's
    /// tools/certs makes them).
    fn make_cacerts(dir: &Path, form: KeyForm) {
        openssl_ok(
            dir,
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout root-key.pem -out root-cert.pem -days 3650 -subj /O=Istio/CN=root-ca \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign",
        );
        let (keygen, label) = match form {
            KeyForm::RsaPkcs8 | KeyForm::RsaPkcs1 => (
                "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca-key.pem",
                "-----BEGIN PRIVATE KEY-----",
            ),
            KeyForm::EcSec1 => (
                "ecparam -name prime256v1 -genkey -noout -out ca-key.pem",
                "-----BEGIN EC PRIVATE KEY-----",
            ),
        };
        openssl_ok(dir, keygen);
        let label = if let KeyForm::RsaPkcs1 = form {
            openssl_ok(dir, "rsa -in ca-key.pem -traditional -out ca-key.pem");
            "-----BEGIN RSA PRIVATE KEY-----"
        } else {
            label
        };
        let key = fs::read_to_string(dir.join("ca-key.pem")).unwrap();
        assert!(key.starts_with(label), "{form:?}: {key}");
        openssl_ok(
            dir,
            "req -new -key ca-key.pem -out ca.csr -subj /O=Istio/CN=intermediate-ca/L=cluster1",
        );
        fs::write(
            dir.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE,pathlen:0\n\
             keyUsage=critical,digitalSignature,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\n\
             authorityKeyIdentifier=keyid:always\n",
        )
        .unwrap();
        openssl_ok(
            dir,
            "x509 -req -in ca.csr -CA root-cert.pem -CAkey root-key.pem -CAcreateserial \
             -out ca-cert.pem -days 730 -extfile ca.ext",
        );
        let chain = format!(
            "{}{}",
            fs::read_to_string(dir.join("ca-cert.pem")).unwrap(),
            fs::read_to_string(dir.join("root-cert.pem")).unwrap()
        );
        fs::write(dir.join("cert-chain.pem"), chain).unwrap();
    }

    #[test]
    fn plugged_in_cacerts_sign_what_openssl_verifies() {
        for form in [KeyForm::RsaPkcs8, KeyForm::RsaPkcs1, KeyForm::EcSec1] {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            make_cacerts(dir, form);
            let ca = MeshCa::from_cacerts(dir).unwrap();
            let file = |name: &str| fs::read(dir.join(name)).unwrap();
            assert_eq!(blocks(ca.root_pem()), blocks(file("root-cert.pem")));

            let id = todolist();
            let wk = new_key_and_csr(&id).unwrap();
            let issued = ca.sign_csr(&wk.csr_pem, &id, DEFAULT_CERT_TTL).unwrap();
            // The leaf, then cert-chain.pem (ca-cert.pem, root-cert.pem) as Istio sends it.
            assert_eq!(
                blocks(&issued.chain_pem)[1..],
                blocks(file("cert-chain.pem"))
            );
            fs::write(dir.join("leaf.pem"), first_cert(&issued.chain_pem)).unwrap();
            fs::write(dir.join("chain.pem"), &issued.chain_pem).unwrap();
            let out = openssl_ok(
                dir,
                "verify -CAfile root-cert.pem -untrusted cert-chain.pem leaf.pem",
            );
            assert!(out.contains("leaf.pem: OK"), "{form:?}: {out}");
            // The chain handed to the proxy is enough on its own.
            openssl_ok(
                dir,
                "verify -CAfile root-cert.pem -untrusted chain.pem leaf.pem",
            );
            // Without the intermediate it does not verify: the leaf is the intermediate's.
            let (ok, _) = openssl(dir, "verify -CAfile root-cert.pem leaf.pem");
            assert!(!ok, "{form:?}");
            let text = openssl_ok(dir, "x509 -in leaf.pem -noout -issuer");
            assert!(text.contains("CN = intermediate-ca"), "{text}");

            let names = ["isthmusd.istio-system.svc".to_string(), "127.0.0.1".into()];
            let (server, key) = ca.issue_server(&names, DEFAULT_CERT_TTL).unwrap();
            fs::write(dir.join("server.pem"), &server.chain_pem).unwrap();
            fs::write(dir.join("server-key.pem"), key).unwrap();
            openssl_ok(
                dir,
                "verify -purpose sslserver -CAfile root-cert.pem -untrusted server.pem server.pem",
            );
        }
    }

    #[test]
    fn cacerts_problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        make_cacerts(dir, KeyForm::EcSec1);
        MeshCa::from_cacerts(dir).unwrap();
        let err = || MeshCa::from_cacerts(dir).unwrap_err().to_string();
        let saved = |name: &str| fs::read(dir.join(name)).unwrap();
        let put = |name: &str, bytes: &[u8]| fs::write(dir.join(name), bytes).unwrap();

        // A key that is not ca-cert.pem's; an encrypted key.
        let key = saved("ca-key.pem");
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        put("ca-key.pem", other.serialize_pem().as_bytes());
        let e = err();
        assert!(
            e.contains("ca-key.pem: the key does not match ca-cert.pem"),
            "{e}"
        );
        put(
            "ca-key.pem",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let e = err();
        assert!(e.contains("ca-key.pem") && e.contains("encrypted"), "{e}");
        put("ca-key.pem", &key);

        // Each file missing, then not PEM.
        for name in [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ] {
            let bytes = saved(name);
            fs::remove_file(dir.join(name)).unwrap();
            let e = err();
            assert!(e.contains(&format!("{name}: missing")), "{e}");
            put(name, b"not pem");
            let e = err();
            assert!(e.contains(name), "{e}");
            put(name, &bytes);
        }

        // ca-cert.pem not a CA: a leaf the intermediate signed, with the leaf's key.
        let (ca_cert, ca_key) = (saved("ca-cert.pem"), saved("ca-key.pem"));
        let ca = MeshCa::from_cacerts(dir).unwrap();
        let (leaf, leaf_key) = ca
            .issue_server(&["x.test".into()], DEFAULT_CERT_TTL)
            .unwrap();
        put("ca-cert.pem", first_cert(&leaf.chain_pem).as_bytes());
        put("ca-key.pem", leaf_key.as_bytes());
        let e = err();
        assert!(e.contains("ca-cert.pem: not a CA certificate"), "{e}");
        put("ca-cert.pem", &ca_cert);
        put("ca-key.pem", &ca_key);

        // ca-cert.pem of another root.
        let other = tempfile::tempdir().unwrap();
        make_cacerts(other.path(), KeyForm::EcSec1);
        let other_root = fs::read(other.path().join("root-cert.pem")).unwrap();
        let (root, chain) = (saved("root-cert.pem"), saved("cert-chain.pem"));
        put("root-cert.pem", &other_root);
        put("cert-chain.pem", &other_root);
        let e = err();
        assert!(
            e.contains(
                "ca-cert.pem: not signed by a certificate of cert-chain.pem or root-cert.pem"
            ),
            "{e}"
        );
        put("root-cert.pem", &root);
        put("cert-chain.pem", &chain);
        MeshCa::from_cacerts(dir).unwrap();
    }

    #[test]
    fn server_certificates() {
        let state = tempfile::tempdir().unwrap();
        let ca = MeshCa::load_or_create(state.path()).unwrap();
        let names = ["isthmusd.local".to_string(), "127.0.0.1".into()];
        let (issued, key) = ca.issue_server(&names, Duration::from_secs(3600)).unwrap();
        let dir = state.path();
        fs::write(dir.join("root.pem"), ca.root_pem()).unwrap();
        fs::write(dir.join("server.pem"), &issued.chain_pem).unwrap();
        fs::write(dir.join("server-key.pem"), &key).unwrap();
        openssl_ok(dir, "verify -purpose sslserver -CAfile root.pem server.pem");
        let text = openssl_ok(dir, "x509 -in server.pem -noout -text");
        assert!(
            text.contains("DNS:isthmusd.local, IP Address:127.0.0.1"),
            "{text}"
        );
        assert!(text.contains("Subject: CN = isthmusd.local"), "{text}");
        assert_eq!(
            openssl_ok(dir, "x509 -in server.pem -noout -pubkey"),
            openssl_ok(dir, "pkey -in server-key.pem -pubout")
        );
        let (ok, _) = openssl(dir, "x509 -in server.pem -noout -checkend 3700");
        assert!(!ok);

        let err = ca.issue_server(&[], DEFAULT_CERT_TTL).unwrap_err();
        assert!(matches!(err, CaError::Request(_)), "{err:?}");
        let err = ca
            .issue_server(&["bad name".into()], DEFAULT_CERT_TTL)
            .unwrap_err();
        assert!(err.to_string().contains("\"bad name\""), "{err}");
    }

    #[test]
    fn tokens() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Tokens>();
        send_sync::<MeshCa>();

        let tokens = Tokens::new();
        let a = todolist();
        let b = Identity::new("cluster.local", "shop", "payments");
        let ta = tokens.issue(&a);
        let ta2 = tokens.issue(&a);
        let tb = tokens.issue(&b);
        assert_eq!(ta.len(), 64);
        assert!(ta
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(ta, ta2);
        assert_eq!(tokens.identity_of(&ta), Some(a.clone()));
        assert_eq!(tokens.identity_of(&ta2), Some(a.clone()));
        assert_eq!(tokens.identity_of(&tb), Some(b.clone()));
        assert_eq!(tokens.identity_of(""), None);
        assert_eq!(tokens.identity_of(&ta.to_uppercase()), None);
        let mut wrong = ta.clone().into_bytes();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        assert_eq!(tokens.identity_of(&String::from_utf8(wrong).unwrap()), None);

        tokens.revoke(&a);
        assert_eq!(tokens.identity_of(&ta), None);
        assert_eq!(tokens.identity_of(&ta2), None);
        assert_eq!(tokens.identity_of(&tb), Some(b));
        let shown = format!("{tokens:?}");
        assert!(!shown.contains(&tb), "{shown}");
    }
}
