//! A test certificate authority run with the real `openssl` command, in a temporary
//! directory: an EC P-256 root, and server certificates it signs with chosen DNS
//! names, serial numbers and, when asked, validity dates (`openssl ca` takes them
//! explicitly, so a certificate can be made already expired or not yet valid, which
//! `openssl x509 -days` cannot). [`self_signed`] makes a lone self-signed
//! certificate. [`served_serial`] and [`served_leaf`] tell which certificate a
//! listener serves; [`x509`] reads a certificate's fields.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `openssl ca` configuration: no database checks that would refuse a second
/// certificate for a name, extensions copied from the request (subjectAltName).
const CA_CONFIG: &str = "\
[ca]
default_ca = test
[test]
database = index.txt
new_certs_dir = issued
serial = serial.txt
default_md = sha256
policy = any
unique_subject = no
copy_extensions = copy
x509_extensions = leaf
[any]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
extendedKeyUsage = serverAuth,clientAuth
";

/// The key type of a leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKey {
    EcP256,
    Rsa2048,
}

/// A test CA. Its files live as long as it does.
pub struct TestCa {
    dir: tempfile::TempDir,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Run `openssl ARGS` in `dir`, panicking with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new root, `CN=isthmus test root`, valid ten years from now.
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::write(p.join("ca.cnf"), CA_CONFIG).expect("write ca.cnf");
        std::fs::write(p.join("index.txt"), "").expect("write index.txt");
        std::fs::create_dir(p.join("issued")).expect("mkdir issued");
        openssl(
            p,
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=isthmus test root",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "root.key",
                "-out",
                "root.crt",
            ],
        );
        TestCa { dir }
    }

    /// A CA over an existing root certificate and key (PEM files), e.g. the mesh CA
    /// `isthmus up` generated, to sign certificates it would not issue itself.
    pub fn adopt(cert: &Path, key: &Path) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::write(p.join("ca.cnf"), CA_CONFIG).expect("write ca.cnf");
        std::fs::write(p.join("index.txt"), "").expect("write index.txt");
        std::fs::create_dir(p.join("issued")).expect("mkdir issued");
        std::fs::copy(cert, p.join("root.crt")).expect("copy the root certificate");
        std::fs::copy(key, p.join("root.key")).expect("copy the root key");
        TestCa { dir }
    }

    /// A client (and server) certificate with the subjectAltNames `sans` written as
    /// openssl takes them (`URI:spiffe://...`, `DNS:...`), valid from `not_before` to
    /// `not_after` (`YYYYMMDDHHMMSSZ`), or 30 days from now when `None`.
    pub fn workload(&self, sans: &[&str], serial: u32, validity: Option<(&str, &str)>) -> Issued {
        let dates: Vec<&str> = match validity {
            Some((b, a)) => vec!["-startdate", b, "-enddate", a],
            None => vec!["-days", "30"],
        };
        self.issue_sans("workload", sans, serial, LeafKey::EcP256, &dates)
    }

    /// The root certificate's file (for `curl --cacert`, `openssl s_client -CAfile`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root.crt")
    }

    /// A server certificate for `dns` (the first is also its CN) with serial
    /// `serial`, valid from now for 30 days. EC P-256 key.
    pub fn leaf(&self, dns: &[&str], serial: u32) -> Issued {
        let cn = dns.first().copied().unwrap_or("leaf");
        self.issue(cn, dns, serial, LeafKey::EcP256, &["-days", "30"])
    }

    /// [`TestCa::leaf`] with subject `CN=cn` and the key type `key`.
    pub fn leaf_as(&self, cn: &str, dns: &[&str], serial: u32, key: LeafKey) -> Issued {
        self.issue(cn, dns, serial, key, &["-days", "30"])
    }

    /// [`TestCa::leaf`] valid from `not_before` to `not_after`, written as
    /// `YYYYMMDDHHMMSSZ` (`20260102000000Z`).
    pub fn leaf_valid(
        &self,
        dns: &[&str],
        serial: u32,
        not_before: &str,
        not_after: &str,
    ) -> Issued {
        let cn = dns.first().copied().unwrap_or("leaf");
        self.issue(
            cn,
            dns,
            serial,
            LeafKey::EcP256,
            &["-startdate", not_before, "-enddate", not_after],
        )
    }

    fn issue(
        &self,
        cn: &str,
        dns: &[&str],
        serial: u32,
        key_type: LeafKey,
        validity: &[&str],
    ) -> Issued {
        let sans: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
        self.issue_sans(cn, &sans, serial, key_type, validity)
    }

    fn issue_sans(
        &self,
        cn: &str,
        sans: &[&str],
        serial: u32,
        key_type: LeafKey,
        validity: &[&str],
    ) -> Issued {
        let p = self.dir.path();
        let base = format!("leaf-{serial}");
        let (key, csr, crt) = (
            format!("{base}.key"),
            format!("{base}.csr"),
            format!("{base}.crt"),
        );
        let cn = format!("/CN={cn}");
        let san = format!("subjectAltName={}", sans.join(","));
        let key_args: &[&str] = match key_type {
            LeafKey::EcP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            LeafKey::Rsa2048 => &["-newkey", "rsa:2048"],
        };
        let mut args = vec!["req", "-new", "-nodes", "-subj", &cn, "-addext", &san];
        args.extend_from_slice(key_args);
        args.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(p, &args);
        // The serial file wants an even number of hex digits.
        let hex = format!("{serial:X}");
        let hex = if hex.len() % 2 == 1 {
            format!("0{hex}")
        } else {
            hex
        };
        std::fs::write(p.join("serial.txt"), format!("{hex}\n")).expect("write serial");
        let mut args = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "root.crt", "-keyfile",
            "root.key", "-in", &csr, "-out", &crt,
        ];
        args.extend_from_slice(validity);
        openssl(p, &args);
        let read = |f: &str| std::fs::read_to_string(p.join(f)).expect("read PEM");
        Issued {
            cert: read(&crt),
            key: read(&key),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The certificate (PEM) a new TLS handshake with `addr` for SNI `sni` gets,
/// verified against `ca` when given. `Err` with openssl's output when no
/// certificate was shown, or when verifying and `openssl s_client` failed (the
/// handshake or the verification).
pub fn served_leaf(addr: SocketAddr, sni: &str, ca: Option<&Path>) -> Result<String, String> {
    let mut s_client = Command::new("openssl");
    s_client
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        s_client.args(["-verify_return_error", "-CAfile"]).arg(ca);
    }
    let hello = s_client.output().expect("run openssl s_client");
    let shown = String::from_utf8_lossy(&hello.stdout).into_owned();
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let leaf = shown.find(BEGIN).and_then(|start| {
        let end = shown[start..].find(END)? + start + END.len();
        Some(format!("{}\n", &shown[start..end]))
    });
    match leaf {
        Some(leaf) if ca.is_none() || hello.status.success() => Ok(leaf),
        _ => Err(format!("{shown}{}", String::from_utf8_lossy(&hello.stderr))),
    }
}

/// The serial number (`serial=02`, as `openssl x509 -serial` prints it) of the
/// certificate a new TLS handshake with `addr` for SNI `sni` gets, verified against
/// `ca` when given ([`served_leaf`]). `Err` with openssl's output when there is none.
pub fn served_serial(addr: SocketAddr, sni: &str, ca: Option<&Path>) -> Result<String, String> {
    serial_of(&served_leaf(addr, sni, ca)?)
}

/// `openssl x509 -noout ARGS` on the first certificate in `pem`: its output,
/// trimmed; `Err` with openssl's error output when it fails.
pub fn x509(pem: &str, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(pem.as_bytes()).expect("feed openssl x509");
    }
    let out = child.wait_with_output().expect("openssl x509");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "openssl x509 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `serial=...` of the first certificate in `pem`.
pub fn serial_of(pem: &str) -> Result<String, String> {
    let serial = x509(pem, &["-serial"])?;
    if serial.starts_with("serial=") {
        Ok(serial)
    } else {
        Err(format!("openssl x509 -serial printed {serial:?}"))
    }
}

/// A self-signed ECDSA P-256 certificate for `dns` with serial `serial`, valid two
/// days, written in `dir`: the paths of the certificate and of the key.
pub fn self_signed(dir: &Path, dns: &str, serial: u32) -> (PathBuf, PathBuf) {
    let crt = dir.join(format!("{dns}-{serial}.crt"));
    let key = dir.join(format!("{dns}-{serial}.key"));
    crate::run(
        Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .args([
                "-subj",
                &format!("/CN={dns}"),
                "-set_serial",
                &serial.to_string(),
            ])
            .args(["-addext", &format!("subjectAltName=DNS:{dns}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt),
    );
    (crt, key)
}
