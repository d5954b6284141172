//! TLS credentials: whether a Secret holds a usable server certificate and key
//! (IST0161), whether a cert-manager `Certificate` will write a missing Secret, and the
//! hints when a Gateway's `credentialName` matches nothing: a Certificate writing a
//! secret no Gateway uses (ISM0101, the seed guide's slip) or writing the right secret
//! in the wrong namespace (ISM0102).

use crate::diag::Diagnostic;
use crate::host;
use crate::resources::certmanager::CertificateSpec;
use crate::resources::core::{decode_base64, SecretData};
use crate::resources::Resource;

use super::gateway::CredentialRef;
use super::index::Index;
use super::{finding, full_name};

/// Istio's `ExtractCertInfo` + `ValidateCertificate`, without X.509 parsing: `cert` +
/// `key` win over `tls.crt` + `tls.key`; both must be non-empty PEM (a certificate
/// block and a private-key block whose bodies are base64 DER).
pub(super) fn validate_server_secret(secret: &SecretData) -> Result<(), String> {
    let pair = [("cert", "key"), ("tls.crt", "tls.key")]
        .into_iter()
        .find(|(c, k)| {
            secret.get(c).is_some_and(|v| !v.is_empty())
                && secret.get(k).is_some_and(|v| !v.is_empty())
        });
    let Some((cert_key, key_key)) = pair else {
        let keys: Vec<&str> = secret.keys().collect();
        for (c, k) in [("cert", "key"), ("tls.crt", "tls.key")] {
            if keys.contains(&c) && keys.contains(&k) {
                return Err(format!(
                    "found keys {c:?} and {k:?}, but they were empty or not base64"
                ));
            }
        }
        return Err(format!(
            "found secret, but didn't have expected keys (cert and key) or (tls.crt and tls.key); \
             found: {}",
            if keys.is_empty() {
                "no keys".to_string()
            } else {
                keys.join(", ")
            }
        ));
    };
    let cert = secret.get(cert_key).unwrap_or_default();
    let key = secret.get(key_key).unwrap_or_default();
    if !has_pem_block(&cert, |label| label == "CERTIFICATE") {
        return Err(format!("{cert_key:?} is not a PEM certificate"));
    }
    if !has_pem_block(&key, |label| label.ends_with("PRIVATE KEY")) {
        return Err(format!("{key_key:?} is not a PEM private key"));
    }
    Ok(())
}

/// Whether `text` holds a PEM block with an accepted label whose body decodes to DER
/// (an ASN.1 SEQUENCE).
fn has_pem_block(text: &[u8], label_ok: impl Fn(&str) -> bool) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            return false;
        };
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_start.find(&end_marker) else {
            return false;
        };
        let body = &body_start[..body_end];
        if label_ok(label) && decode_base64(body).is_some_and(|der| der.first() == Some(&0x30)) {
            return true;
        }
        rest = &body_start[body_end + end_marker.len()..];
    }
    false
}

/// Whether a cert-manager Certificate in `namespace` writes Secret `name`: then the
/// secret is not missing, it will be issued.
pub(super) fn issued_by_certificate(ix: &Index, namespace: &str, name: &str) -> bool {
    ix.store
        .certificates()
        .any(|(r, c)| r.namespace() == namespace && c.secret_name == name)
}

/// Every secret name some Gateway's `credentialName(s)` mentions (namespace ignored).
fn used_secret_names(ix: &Index) -> Vec<String> {
    let mut out = Vec::new();
    for (_, gw) in ix.store.gateways() {
        for tls in gw.servers.iter().filter_map(|s| s.tls.as_ref()) {
            for c in tls
                .credential_name
                .iter()
                .chain(tls.credential_names.iter())
            {
                let name = c.rsplit('/').next().unwrap_or(c);
                out.push(name.to_string());
            }
        }
    }
    out
}

fn certificate_hosts(c: &CertificateSpec) -> impl Iterator<Item = &str> {
    c.dns_names
        .iter()
        .map(String::as_str)
        .chain(c.common_name.as_deref())
}

/// ISM0102 when a Certificate writes the named secret in another namespace; else
/// ISM0101 when a Certificate writes a secret no Gateway uses and serves the server's
/// hosts (or is the only unused one): the credentialName was probably meant to be it.
pub(super) fn missing_credential_hints(
    ix: &Index,
    r: &Resource,
    server_hosts: &[String],
    c: &CredentialRef<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let misplaced: Vec<&Resource> = ix
        .store
        .certificates()
        .filter(|(_, cert)| cert.secret_name == c.name)
        .map(|(cr, _)| cr)
        .collect();
    if let Some(cr) = misplaced.first() {
        out.push(finding(
            "ISM0102",
            r,
            &c.path,
            format!(
                "credentialName {:?}: Certificate {} writes secret {:?} in namespace {}, but Istio reads \
                 credentialName secrets from namespace {}, where the gateway workload runs: create the \
                 Certificate in namespace {}.",
                c.written,
                full_name(cr),
                c.name,
                cr.namespace(),
                c.namespace,
                c.namespace
            ),
        ));
        return;
    }

    let used = used_secret_names(ix);
    let unused: Vec<(&Resource, &CertificateSpec)> = ix
        .store
        .certificates()
        .filter(|(_, cert)| !cert.secret_name.is_empty() && !used.contains(&cert.secret_name))
        .collect();
    let serves_hosts = |cert: &CertificateSpec| {
        certificate_hosts(cert).any(|ch| {
            server_hosts.iter().any(|sh| {
                let sh = sh.rsplit('/').next().unwrap_or(sh);
                host::matches(ch, sh)
            })
        })
    };
    let candidates: Vec<&(&Resource, &CertificateSpec)> = match unused
        .iter()
        .filter(|(_, c)| serves_hosts(c))
        .collect::<Vec<_>>()
    {
        by_host if !by_host.is_empty() => by_host,
        _ if unused.len() == 1 => unused.iter().collect(),
        _ => return,
    };
    let Some((cr, cert)) = candidates.first() else {
        return;
    };
    let mut msg = format!(
        "credentialName {:?} matches no Secret and no Certificate; Certificate {} writes secret {:?}, \
         which no Gateway uses: did you mean credentialName: {}?",
        c.written,
        full_name(cr),
        cert.secret_name,
        cert.secret_name
    );
    if cr.namespace() != c.namespace {
        msg.push_str(&format!(
            " Note that Istio reads credentialName secrets from the gateway workload's namespace \
             ({}), and the Certificate writes its secret in namespace {}: move the Certificate to \
             namespace {} too.",
            c.namespace,
            cr.namespace(),
            c.namespace
        ));
    }
    if candidates.len() > 1 {
        let others: Vec<String> = candidates[1..]
            .iter()
            .map(|(o, oc)| format!("{} ({:?})", full_name(o), oc.secret_name))
            .collect();
        msg.push_str(&format!(
            " Other unused Certificates for these hosts: {}.",
            others.join(", ")
        ));
    }
    out.push(finding("ISM0101", r, &c.path, msg));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> SecretData {
        let mut s = SecretData::default();
        for (k, v) in pairs {
            s.string_data.insert(k.to_string(), v.to_string());
        }
        s
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n";

    #[test]
    fn secret_shapes() {
        assert!(validate_server_secret(&secret(&[("tls.crt", CERT), ("tls.key", KEY)])).is_ok());
        assert!(validate_server_secret(&secret(&[("cert", CERT), ("key", KEY)])).is_ok());
        let e = validate_server_secret(&secret(&[("tls.cert", CERT)])).unwrap_err();
        assert!(e.contains("found: tls.cert"), "{e}");
        let e = validate_server_secret(&secret(&[("cert", "hush"), ("key", KEY)])).unwrap_err();
        assert!(e.contains("not a PEM certificate"), "{e}");
        let e =
            validate_server_secret(&secret(&[("tls.crt", CERT), ("tls.key", CERT)])).unwrap_err();
        assert!(e.contains("not a PEM private key"), "{e}");
    }
}
