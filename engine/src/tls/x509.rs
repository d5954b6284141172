//! Just enough DER to read two fields of a client certificate that webpki has
//! already verified: its subjectAltName entries and its SubjectPublicKeyInfo.
//! Malformed input gives `None`, never a panic.

use std::net::IpAddr;

use super::San;

/// `id-ce-subjectAltName` (2.5.29.17), DER-encoded.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

const SEQUENCE: u8 = 0x30;

/// One DER element: its tag, its contents, and the whole encoding.
#[derive(Clone, Copy)]
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
}

/// The DER element at the front of `input`, which moves past it.
fn element<'a>(input: &mut &'a [u8]) -> Option<Element<'a>> {
    let all = *input;
    let (&tag, rest) = all.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = all.len() - rest.len();
    *input = &rest[len..];
    Some(Element {
        tag,
        contents: &rest[..len],
        whole: &all[..header + len],
    })
}

/// The elements of a SEQUENCE's contents.
fn elements(mut contents: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !contents.is_empty() {
        out.push(element(&mut contents)?);
    }
    Some(out)
}

/// The fields of `tbsCertificate`, without the optional `[0]` version.
fn tbs_fields(cert: &[u8]) -> Option<Vec<Element<'_>>> {
    let certificate = sequence(cert)?;
    let mut fields = elements(sequence(certificate)?)?;
    if fields.first().is_some_and(|f| f.tag == 0xa0) {
        fields.remove(0);
    }
    Some(fields)
}

/// The contents of the SEQUENCE at the front of `input`.
fn sequence(mut input: &[u8]) -> Option<&[u8]> {
    let e = element(&mut input)?;
    (e.tag == SEQUENCE).then_some(e.contents)
}

/// The DER `SubjectPublicKeyInfo` (what `verifyCertificateSpki` hashes): the sixth
/// field after the version (serial, signature, issuer, validity, subject, key).
pub(super) fn spki(cert: &[u8]) -> Option<&[u8]> {
    let key = *tbs_fields(cert)?.get(5)?;
    (key.tag == SEQUENCE).then_some(key.whole)
}

/// The DNS, URI, e-mail and IP entries of the subjectAltName extension (other kinds
/// are skipped); empty when there is none.
pub(super) fn subject_alt_names(cert: &[u8]) -> Option<Vec<San>> {
    // `[3] EXPLICIT Extensions`.
    let Some(extensions) = tbs_fields(cert)?.into_iter().find(|f| f.tag == 0xa3) else {
        return Some(Vec::new());
    };
    for extension in elements(sequence(extensions.contents)?)? {
        // extnID, critical (optional BOOLEAN), extnValue (OCTET STRING).
        let parts = elements(extension.contents)?;
        let oid = parts.first().filter(|p| p.tag == 0x06)?;
        if oid.contents != SUBJECT_ALT_NAME {
            continue;
        }
        let value = parts.last().filter(|p| p.tag == 0x04)?;
        let mut out = Vec::new();
        for name in elements(sequence(value.contents)?)? {
            let bytes = name.contents;
            let text = || String::from_utf8(bytes.to_vec()).ok();
            match name.tag {
                0x81 => out.push(San::Email(text()?)),
                0x82 => out.push(San::Dns(text()?)),
                0x86 => out.push(San::Uri(text()?)),
                0x87 => out.push(San::Ip(match bytes.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
                    _ => return None,
                })),
                _ => {}
            }
        }
        return Some(out);
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::process::Command;

    /// A self-signed certificate with `ext` as its extensions, made by `openssl`;
    /// also the DER of its public key as `openssl pkey -pubout` writes it.
    fn openssl_cert(ext: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (crt, key) = (dir.path().join("c.crt"), dir.path().join("c.key"));
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=c"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt);
        for e in ext {
            cmd.args(["-addext", e]);
        }
        let out = cmd.output().expect("run openssl");
        assert!(out.status.success(), "{out:?}");
        let pem = std::fs::read(&crt).expect("crt");
        let der = CertificateDer::from_pem_slice(&pem).expect("pem").to_vec();
        let spki = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key)
            .output()
            .expect("run openssl pkey");
        assert!(spki.status.success(), "{spki:?}");
        (der, spki.stdout)
    }

    #[test]
    fn reads_every_san_kind_and_the_public_key() {
        let (der, spki_der) = openssl_cert(&[
            "subjectAltName=DNS:a.test,DNS:*.w.test,URI:spiffe://td/ns/x/sa/y,IP:10.0.0.1,IP:::1,email:o@p.test",
            "basicConstraints=critical,CA:FALSE",
        ]);
        let sans = subject_alt_names(&der).expect("parsed");
        assert_eq!(
            sans,
            [
                San::Dns("a.test".into()),
                San::Dns("*.w.test".into()),
                San::Uri("spiffe://td/ns/x/sa/y".into()),
                San::Ip("10.0.0.1".parse().expect("ip")),
                San::Ip("::1".parse().expect("ip")),
                San::Email("o@p.test".into()),
            ]
        );
        assert_eq!(spki(&der), Some(&spki_der[..]));
    }

    #[test]
    fn no_san_extension_and_garbage() {
        let (der, _) = openssl_cert(&["basicConstraints=critical,CA:FALSE"]);
        assert_eq!(subject_alt_names(&der), Some(Vec::new()));
        assert_eq!(subject_alt_names(b"\x30\x03\x02\x01"), None);
        assert_eq!(subject_alt_names(&[]), None);
        assert_eq!(spki(&der[..der.len() / 2]), None);
        // A length running past the end.
        assert_eq!(spki(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
