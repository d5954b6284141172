//! The ACME state directory in local mode. One account per issuer
//! (`accounts/<ClusterIssuer.name>.json`: the directory URL and instant-acme's
//! credentials, which hold the account's private key) and one issued certificate per
//! Certificate, written as the Kubernetes Secret it stands for
//! (`secrets/<namespace>.<secretName>.yaml`, `type: kubernetes.io/tls`, base64
//! `tls.crt` / `tls.key`): the controller loads that directory as configuration, so
//! the Gateway's `credentialName` serves it. Files are written whole (a hidden
//! temporary file, fsync, rename) with mode 0600; directories are 0700. Key material
//! is never logged. A `flock` per Secret (`locks/`) lets only one of several gateways
//! sharing the directory order; the challenges of its order are published in
//! `challenges/` so that every one of them answers the CA.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use instant_acme::AccountCredentials;
use isthmus_model::certs::{AcmeOrder, Issued, IssuerId};
use isthmus_model::load::load_str;
use isthmus_model::Spec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Annotations on a written Secret (cert-manager's own, plus the ACME server).
const ANN_CERTIFICATE: &str = "cert-manager.io/certificate-name";
const ANN_ISSUER_NAME: &str = "cert-manager.io/issuer-name";
const ANN_ISSUER_KIND: &str = "cert-manager.io/issuer-kind";
const ANN_ISSUER: &str = "isthmus.dev/issuer";
const ANN_SERVER: &str = "isthmus.dev/acme-server";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A certificate found in the state directory (or just written there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    pub issued: Issued,
    /// Serial number, hex.
    pub serial: String,
    /// Expiry as `YYYY-MM-DD HH:MM:SS UTC`.
    pub expires: String,
}

/// An account file: the directory it belongs to and instant-acme's credentials.
#[derive(Serialize, Deserialize)]
struct AccountFile {
    server: String,
    credentials: AccountCredentials,
}

/// The state directory (`isthmus up DIR --state-dir PATH`, default `DIR/.isthmus`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root`. Nothing is created until something is written.
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// The state directory at `root`, created now with its `accounts/` and
    /// `secrets/` (mode 0700).
    pub fn open(root: &Path) -> Result<StateDir, StoreError> {
        let dir = StateDir::new(root);
        for d in [dir.accounts_dir(), dir.secrets_dir()] {
            create_private_dir(&d)?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn accounts_dir(&self) -> PathBuf {
        self.root.join("accounts")
    }

    /// Where issued certificates are written as Secret YAML (a config source).
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// Where pending challenges are published for the replicas sharing this
    /// directory (`challenges/`, written and read by the engine's
    /// `acme_challenge::ChallengeDir`).
    pub fn challenges_dir(&self) -> PathBuf {
        self.root.join("challenges")
    }

    pub fn secret_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.secrets_dir().join(format!("{namespace}.{name}.yaml"))
    }

    pub fn account_path(&self, issuer: &IssuerId) -> PathBuf {
        self.accounts_dir()
            .join(format!("{}.json", issuer.file_key()))
    }

    /// The stored account of `issuer`, if it was created on `server` (an account
    /// belongs to one ACME server; a changed `server` needs a new one).
    pub fn load_account(
        &self,
        issuer: &IssuerId,
        server: &str,
    ) -> Result<Option<AccountCredentials>, StoreError> {
        let path = self.account_path(issuer);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let file: AccountFile = serde_json::from_slice(&text).map_err(|e| StoreError::Invalid {
            path: path.clone(),
            reason: format!("not an account file ({e})"),
        })?;
        Ok((file.server == server).then_some(file.credentials))
    }

    pub fn save_account(
        &self,
        issuer: &IssuerId,
        server: &str,
        credentials: AccountCredentials,
    ) -> Result<(), StoreError> {
        let path = self.account_path(issuer);
        let file = AccountFile {
            server: server.to_string(),
            credentials,
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_private(&path, &text)
    }

    /// The certificate stored for `order`'s Secret, if there is a usable one (a file
    /// that cannot be read as one is reported, and ordering again replaces it).
    pub fn load_issued(&self, order: &AcmeOrder) -> Result<Option<StoredCert>, StoreError> {
        let path = self.secret_path(&order.namespace, &order.secret_name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let invalid = |reason: String| StoreError::Invalid {
            path: path.clone(),
            reason,
        };
        let loaded = load_str(&path.display().to_string(), &text);
        let Some(r) = loaded.resources.first() else {
            return Err(invalid("no Secret in the file".into()));
        };
        let Spec::Secret(data) = &r.spec else {
            return Err(invalid("not a Secret".into()));
        };
        let (Some(chain), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
            return Err(invalid("no tls.crt and tls.key".into()));
        };
        let ann = |k: &str| r.meta.annotations.get(k).cloned().unwrap_or_default();
        let stored = inspect(&chain, &key, ann(ANN_ISSUER), ann(ANN_SERVER)).map_err(invalid)?;
        Ok(Some(stored))
    }

    /// Take the order lock of `order`'s Secret (`locks/<ns>.<secret>.lock`, `flock`),
    /// so that of several gateways sharing this directory only one orders; `None`
    /// while another process holds it. Released when the returned value is dropped.
    pub fn try_lock(&self, order: &AcmeOrder) -> Result<Option<OrderLock>, StoreError> {
        let dir = self.root.join("locks");
        create_private_dir(&dir)?;
        let path = dir.join(format!("{}.{}.lock", order.namespace, order.secret_name));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(OrderLock { _file: file })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(io_err(&path)(e.into())),
        }
    }

    /// Write the issued chain and key as `order`'s Secret; returns what was stored.
    pub fn save_issued(
        &self,
        order: &AcmeOrder,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<StoredCert, StoreError> {
        let path = self.secret_path(&order.namespace, &order.secret_name);
        let stored = inspect(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            order.issuer.display(),
            order.acme.server.clone(),
        )
        .map_err(|reason| StoreError::Invalid {
            path: path.clone(),
            reason: format!("the CA's certificate cannot serve: {reason}"),
        })?;
        write_private(&path, secret_yaml(order, chain_pem, key_pem).as_bytes())?;
        Ok(stored)
    }
}

/// An order lock held (see [`StateDir::try_lock`]); closing the file releases it.
#[derive(Debug)]
pub struct OrderLock {
    _file: fs::File,
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn secret_yaml(order: &AcmeOrder, chain_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let certificate_name = order
        .certificate
        .rsplit('/')
        .next()
        .unwrap_or(&order.certificate);
    let kind = match order.issuer.kind {
        isthmus_model::certs::IssuerKind::Issuer => "Issuer",
        isthmus_model::certs::IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    format!(
        "# Written by isthmus: the certificate issued over ACME for {cert} by {issuer}.\n\
         # Delete this file to order a new one.\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n    \
         {ANN_CERTIFICATE}: {cert_name}\n    {ANN_ISSUER_NAME}: {issuer_name}\n    \
         {ANN_ISSUER_KIND}: {kind}\n    {ANN_ISSUER}: {issuer_q}\n    {ANN_SERVER}: {server}\n\
         type: kubernetes.io/tls\n\
         data:\n  tls.crt: {crt}\n  tls.key: {key}\n",
        cert = order.certificate,
        issuer = order.issuer.display(),
        name = q(&order.secret_name),
        ns = q(&order.namespace),
        cert_name = q(certificate_name),
        issuer_name = q(&order.issuer.name),
        issuer_q = q(&order.issuer.display()),
        server = q(&order.acme.server),
        crt = b64(chain_pem),
        key = b64(key_pem),
    )
}

/// Check that `key` belongs to the first certificate of `chain` and read the
/// certificate's names, validity and serial.
pub(crate) fn inspect(
    chain: &[u8],
    key: &[u8],
    issuer: String,
    server: String,
) -> Result<StoredCert, String> {
    let certs = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    let Some(leaf) = certs.first().cloned() else {
        return Err("no certificate in tls.crt".into());
    };
    let private = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("the private key is not valid PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::sign::CertifiedKey::from_der(certs, private, &provider)
        .map_err(|e| format!("the key does not serve the certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("the certificate is not X.509: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let validity = cert.validity();
    // As `openssl x509 -serial` prints it (lower-case): no sign-padding zero byte.
    let raw = cert.tbs_certificate.raw_serial();
    let significant = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    let serial = raw[significant..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t = validity.not_after.to_datetime();
    let expires = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Ok(StoredCert {
        issued: Issued {
            names,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            issuer,
            server,
        },
        serial,
        expires,
    })
}

/// [`private_dir`], the error naming `dir`.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    private_dir(dir).map_err(io_err(dir))
}

/// [`write_whole`] in a directory created (0700) if needed, the error naming the
/// directory or the file that failed.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    write_whole(path, bytes).map_err(io_err(path))
}

pub(super) use isthmus_files::{private_dir, write_private as write_whole};

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use isthmus_model::certs::acme_orders;
    use isthmus_model::Store;
    use std::os::unix::fs::PermissionsExt;

    /// The order of Certificate `istio-system/c` (Secret `c-tls`, names `a.test`
    /// and `b.test`) from ClusterIssuer `le`; the status tests use it too.
    pub(in crate::acme) fn order() -> AcmeOrder {
        let yaml = r#"
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: le}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: le}
    solvers: [{http01: {ingress: {class: istio}}}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: c, namespace: istio-system}
spec:
  secretName: c-tls
  issuerRef: {name: le, kind: ClusterIssuer}
  dnsNames: [a.test, b.test]
"#;
        let (mut orders, diags) = acme_orders(&Store::new(load_str("t.yaml", yaml).resources));
        assert_eq!(diags, []);
        orders.remove(0)
    }

    /// A self-signed certificate for `names` and its key, by rcgen.
    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn issued_secrets_round_trip_with_private_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(&tmp.path().join("state"));
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let o = order();
        assert_eq!(state.load_issued(&o).expect("load"), None);
        assert!(!state.root().exists(), "nothing is created by reading");
        let (crt, key) = self_signed(&["a.test", "b.test"]);
        let saved = state.save_issued(&o, &crt, &key).expect("save");
        assert_eq!(mode(state.root()), 0o700);
        assert_eq!(mode(&state.secrets_dir()), 0o700);
        let path = state.secret_path("istio-system", "c-tls");
        assert!(path.ends_with("secrets/istio-system.c-tls.yaml"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(saved.issued.names, ["a.test", "b.test"]);
        assert_eq!(saved.issued.issuer, "ClusterIssuer le");
        assert!(saved.expires.ends_with(" UTC"), "{}", saved.expires);
        assert_eq!(state.load_issued(&o).expect("load"), Some(saved));

        // The file is a Secret the config loader accepts and the gateway can serve.
        let text = fs::read_to_string(&path).expect("read");
        let loaded = load_str("s.yaml", &text);
        assert_eq!(loaded.diagnostics, []);
        let r = &loaded.resources[0];
        assert_eq!(r.display_ref(), "Secret istio-system/c-tls");
        let Spec::Secret(data) = &r.spec else {
            panic!("{r:?}")
        };
        assert_eq!(data.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(data.get("tls.crt"), Some(crt.into_bytes()));
        assert!(!text.contains("PRIVATE KEY"), "the key is base64 in data");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(state.secrets_dir())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("istio-system.c-tls.yaml")]);
    }

    #[test]
    fn a_key_that_does_not_match_is_not_stored_and_a_broken_file_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("open");
        let o = order();
        let (crt, _) = self_signed(&["a.test"]);
        let (_, other_key) = self_signed(&["a.test"]);
        let e = state
            .save_issued(&o, &crt, &other_key)
            .expect_err("mismatch");
        assert!(
            e.to_string()
                .contains("the key does not serve the certificate"),
            "{e}"
        );
        assert!(!state.secret_path("istio-system", "c-tls").exists());

        fs::write(state.secret_path("istio-system", "c-tls"), "kind: [").expect("write");
        assert!(state.load_issued(&o).is_err());
    }

    #[test]
    fn one_order_lock_per_secret() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(tmp.path());
        let o = order();
        let held = state.try_lock(&o).expect("lock").expect("free");
        // flock locks belong to the open file: a second open conflicts, as another
        // process's would.
        assert!(state.try_lock(&o).expect("lock").is_none());
        drop(held);
        assert!(state.try_lock(&o).expect("lock").is_some());
    }

    #[test]
    fn the_order_lock_excludes_other_processes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(tmp.path());
        let o = order();
        // util-linux's flock(1) takes the same flock(2) lock from another process.
        let other = || {
            std::process::Command::new("flock")
                .args(["--nonblock", "--exclusive"])
                .arg(state.root().join("locks/istio-system.c-tls.lock"))
                .arg("true")
                .status()
                .expect("run flock")
        };
        let held = state.try_lock(&o).expect("lock").expect("free");
        assert_eq!(other().code(), Some(1), "held by this process");
        drop(held);
        assert!(other().success(), "released");
        // And the other way round: a lock held by another process is seen here.
        // --no-fork: flock(1) becomes `sleep`, so killing it releases the lock.
        let mut child = std::process::Command::new("flock")
            .args(["--exclusive", "--no-fork"])
            .arg(state.root().join("locks/istio-system.c-tls.lock"))
            .args(["sleep", "30"])
            .spawn()
            .expect("spawn flock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = false;
        while std::time::Instant::now() < deadline {
            match state.try_lock(&o).expect("lock") {
                None => {
                    seen = true;
                    break;
                }
                // The child has not taken it yet: release and look again.
                Some(l) => drop(l),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen, "the other process's lock was never seen");
        assert!(state.try_lock(&o).expect("lock").is_some(), "freed on exit");
    }

    #[test]
    fn accounts_are_kept_per_issuer_and_server() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("open");
        let o = order();
        assert!(state
            .load_account(&o.issuer, &o.acme.server)
            .expect("load")
            .is_none());
        // Credentials are opaque: build them from their serialized form.
        let creds: AccountCredentials = serde_json::from_value(serde_json::json!({
            "id": "https://127.0.0.1:14000/my-account/1",
            "key_pkcs8": "AAECAwQF",
            "directory": "https://127.0.0.1:14000/dir",
        }))
        .expect("credentials");
        state
            .save_account(&o.issuer, &o.acme.server, creds)
            .expect("save");
        let path = state.account_path(&o.issuer);
        assert!(path.ends_with("accounts/ClusterIssuer.le.json"));
        assert_eq!(
            fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        assert!(state
            .load_account(&o.issuer, &o.acme.server)
            .expect("load")
            .is_some());
        assert!(state
            .load_account(&o.issuer, "https://other.test/dir")
            .expect("load")
            .is_none());
    }
}
