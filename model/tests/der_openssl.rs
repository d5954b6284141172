//! The model's DER reader (`isthmus_model::der`) against certificates made by the
//! `openssl` command: the subjectAltNames it reads are the ones OpenSSL prints, the
//! SubjectPublicKeyInfo is the one `openssl pkey -pubout` writes, and damaged
//! certificates give `None` or a result, never a panic. (Moved here with the reader
//! from the engine's `tls/x509.rs`.)

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use isthmus_model::der::{self, San};
use isthmus_model::pem;

/// A directory under the system's temp dir, removed on drop (the model has no
/// `tempfile` dev-dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "isthmus-der-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create tempdir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

/// A self-signed P-256 certificate with `ext` as its extensions (`-addext`), made
/// by `openssl req -x509` in a tempdir: its DER, the DER of its public key as
/// `openssl pkey -pubout` writes it, and OpenSSL's text of its subjectAltName.
struct Made {
    der: Vec<u8>,
    spki: Vec<u8>,
    san_text: String,
}

fn openssl_cert(ext: &[&str]) -> Made {
    let dir = TempDir::new();
    let mut args = vec!["req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=c"];
    args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    args.extend(["-keyout", "c.key", "-out", "c.crt"]);
    for e in ext {
        args.extend(["-addext", e]);
    }
    openssl(&args, dir.path());
    let pem_text = std::fs::read(dir.path().join("c.crt")).expect("c.crt");
    let blocks = pem::blocks(&pem_text).expect("pem");
    assert_eq!(blocks[0].label, "CERTIFICATE");
    let spki = openssl(
        &["pkey", "-in", "c.key", "-pubout", "-outform", "DER"],
        dir.path(),
    );
    let san_text = openssl(
        &["x509", "-in", "c.crt", "-noout", "-ext", "subjectAltName"],
        dir.path(),
    );
    Made {
        der: blocks[0].der.clone(),
        spki,
        san_text: String::from_utf8(san_text).expect("text"),
    }
}

/// OpenSSL's printed subjectAltName entries of the kinds the reader returns, in
/// order (`X509v3 Subject Alternative Name:` then `DNS:a, IP Address:1.2.3.4, ...`),
/// and how many entries of other kinds it printed.
fn openssl_sans(text: &str) -> (Vec<San<'_>>, usize) {
    let mut lines = text.lines();
    let Some(_header) = lines.next() else {
        return (Vec::new(), 0);
    };
    let (mut known, mut other) = (Vec::new(), 0);
    for entry in lines.flat_map(|l| l.trim().split(", ")) {
        let san = if let Some(v) = entry.strip_prefix("DNS:") {
            San::Dns(v)
        } else if let Some(v) = entry.strip_prefix("URI:") {
            San::Uri(v)
        } else if let Some(v) = entry.strip_prefix("email:") {
            San::Email(v)
        } else if let Some(v) = entry.strip_prefix("IP Address:") {
            San::Ip(v.parse::<IpAddr>().expect("OpenSSL's IP text"))
        } else {
            other += 1;
            continue;
        };
        known.push(san);
    }
    (known, other)
}

#[test]
fn sans_are_the_ones_openssl_prints() {
    let made = openssl_cert(&[
        "basicConstraints=critical,CA:FALSE",
        "subjectAltName=DNS:a.test,URI:spiffe://td/ns/x/sa/y,IP:192.168.1.20,email:o@p.test,RID:1.2.3.4,DNS:*.w.test,IP:2001:db8::7,URI:https://u.test/p?q=1",
        "keyUsage=digitalSignature",
    ]);
    let (printed, other) = openssl_sans(&made.san_text);
    assert_eq!(other, 1, "the RID: {}", made.san_text);
    assert_eq!(printed.len(), 7, "{}", made.san_text);
    let read = der::subject_alt_names(&made.der).expect("read");
    assert_eq!(read, printed);
    assert_eq!(
        read.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "DNS:a.test",
            "URI:spiffe://td/ns/x/sa/y",
            "IP:192.168.1.20",
            "email:o@p.test",
            "DNS:*.w.test",
            "IP:2001:db8::7",
            "URI:https://u.test/p?q=1",
        ]
    );
    // The same reader still reads the rest of the certificate.
    let cert = der::certificate(&made.der).expect("certificate");
    assert_eq!(cert.not_after - cert.not_before, 86_400);
}

#[test]
fn reads_every_san_kind_and_the_public_key() {
    let made = openssl_cert(&[
        "subjectAltName=DNS:a.test,DNS:*.w.test,URI:spiffe://td/ns/x/sa/y,IP:10.0.0.1,IP:::1,email:o@p.test",
        "basicConstraints=critical,CA:FALSE",
    ]);
    let sans = der::subject_alt_names(&made.der).expect("parsed");
    assert_eq!(
        sans,
        [
            San::Dns("a.test"),
            San::Dns("*.w.test"),
            San::Uri("spiffe://td/ns/x/sa/y"),
            San::Ip("10.0.0.1".parse().expect("ip")),
            San::Ip("::1".parse().expect("ip")),
            San::Email("o@p.test"),
        ]
    );
    assert_eq!(
        der::subject_public_key_info(&made.der),
        Some(&made.spki[..])
    );
}

#[test]
fn no_san_extension_and_garbage() {
    let made = openssl_cert(&["basicConstraints=critical,CA:FALSE"]);
    assert_eq!(openssl_sans(&made.san_text), (Vec::new(), 0));
    assert_eq!(der::subject_alt_names(&made.der), Some(Vec::new()));
    assert_eq!(
        der::subject_public_key_info(&made.der),
        Some(&made.spki[..])
    );
    assert_eq!(der::subject_alt_names(b"\x30\x03\x02\x01"), None);
    assert_eq!(der::subject_alt_names(&[]), None);
    assert_eq!(
        der::subject_public_key_info(&made.der[..made.der.len() / 2]),
        None
    );
    // A length running past the end.
    assert_eq!(
        der::subject_public_key_info(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
        None
    );
}

#[test]
fn damaged_certificates_are_none_never_a_panic() {
    let made = openssl_cert(&["subjectAltName=DNS:a.test,URI:spiffe://td/x,IP:10.0.0.1"]);
    let der = &made.der;
    for len in 0..der.len() {
        let cut = &der[..len];
        assert_eq!(der::subject_alt_names(cut), None, "cut at {len}");
        assert_eq!(der::subject_public_key_info(cut), None, "cut at {len}");
        assert_eq!(der::certificate(cut), None, "cut at {len}");
    }
    for i in 0..der.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = der.clone();
            bad[i] ^= flip;
            // Any answer will do; what matters is that there is one.
            let _ = der::subject_alt_names(&bad);
            let _ = der::subject_public_key_info(&bad);
            let _ = der::certificate(&bad);
        }
    }
}
