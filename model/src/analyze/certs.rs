//! TLS credentials: whether a Secret holds a usable server certificate and key
//! (IST0161), whether that key belongs to the certificate (ISM0105) and whether the
//! certificates are valid at the time of the analysis (ISM0104), whether a
//! cert-manager `Certificate` will write a missing Secret, and the hints when a
//! Gateway's `credentialName` matches nothing: a Certificate writing a secret no
//! Gateway uses (ISM0101, the seed guide's slip) or writing the right secret in the
//! wrong namespace (ISM0102). The checks of a Secret's PEM are [`crate::pem`]'s, the
//! ones the compiler (and so the running gateway) makes.

use crate::diag::Diagnostic;
use crate::host;
use crate::pem::{self, CredentialError};
use crate::resources::certmanager::CertificateSpec;
use crate::resources::core::SecretData;
use crate::resources::{Kind, Resource, Spec};

use super::gateway::{credential_refs, CredentialRef};
use super::index::Index;
use super::{finding, full_name, level_of};

/// Warning: a credential's certificate is expired or not yet valid at the time of the
/// analysis (`isthmus analyze` passes its clock; the model has none).
pub const CODE_NOT_CURRENTLY_VALID: &str = "ISM0104";
/// Error: a credential's private key is not its certificate's (the gateway refuses
/// the handshakes of the server; istioctl does not check this).
pub const CODE_KEY_MISMATCH: &str = "ISM0105";

/// Istio's `ExtractCertInfo` + `ValidateCertificate` (the PEM checks of
/// [`pem::server_pair`]): `cert` + `key` win over `tls.crt` + `tls.key`; both must be
/// PEM whose blocks are base64 DER, with a certificate and an unencrypted private key.
pub(super) fn validate_server_secret(secret: &SecretData) -> Result<(), String> {
    match pem::server_pair(|k| secret.get(k)) {
        Ok(_) => Ok(()),
        Err(e @ CredentialError::NoKeys) => {
            let keys: Vec<&str> = secret.keys().collect();
            let found = if keys.is_empty() {
                "no keys".to_string()
            } else {
                keys.join(", ")
            };
            Err(format!("{e}; found: {found}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// ISM0105 and ISM0104 for every usable credential a Gateway server names: a key that
/// is not the certificate's, and (with `now`, Unix seconds) a certificate expired or
/// not yet valid. Reported on the Secret (where the fix goes), once per server that
/// names it. Missing and unusable Secrets are IST0101 / IST0161, reported elsewhere.
pub(super) fn check_pairs(ix: &Index, now: Option<i64>, out: &mut Vec<Diagnostic>) {
    for (gw, spec) in ix.store.gateways() {
        let Some(home) = ix.gateway_home(gw, spec) else {
            continue;
        };
        for (i, server) in spec.servers.iter().enumerate() {
            let Some(tls) = &server.tls else { continue };
            let base = format!("spec.servers[{i}].tls");
            for c in credential_refs(tls, &base, home.namespace()) {
                let Some(secret) = ix.store.find(Kind::Secret, &c.namespace, &c.name) else {
                    continue;
                };
                let Spec::Secret(data) = &secret.spec else {
                    continue;
                };
                let Ok(pair) = pem::server_pair(|k| data.get(k)) else {
                    continue;
                };
                let named = format!(
                    "Secret {}/{} (credentialName of Gateway {} spec.servers[{i}])",
                    c.namespace,
                    c.name,
                    full_name(gw)
                );
                let field = certificate_field(data);
                if let Err(e) = pair.check_key() {
                    out.push(on_secret(CODE_KEY_MISMATCH, secret, &field, &named, e));
                }
                if let Some(why) = now.and_then(|now| pair.validity_problem(now)) {
                    // istioctl: a certificate expired or not yet valid makes the
                    // credential invalid (IST0161, on the Gateway, once per server).
                    let gw_ref = gw.display_ref();
                    let said = out.iter().any(|d| {
                        d.code == "IST0161"
                            && d.resource.as_deref() == Some(gw_ref.as_str())
                            && d.field.as_deref() == Some(c.path.as_str())
                    });
                    if !said {
                        out.push(finding(
                            "IST0161",
                            gw,
                            &c.path,
                            format!(
                                "The credential referenced by the Gateway {} in namespace {} is invalid, \
                                 which can cause the traffic not to work as expected. Secret {}/{}: {why}.",
                                gw.name(),
                                gw.namespace(),
                                c.namespace,
                                c.name
                            ),
                        ));
                    }
                    let code = CODE_NOT_CURRENTLY_VALID;
                    out.push(on_secret(code, secret, &field, &named, why));
                }
            }
        }
    }
}

/// A finding on `secret` at `field`: `Secret ns/name (credentialName of ...): why`.
fn on_secret(
    code: &'static str,
    secret: &Resource,
    field: &str,
    named: &str,
    why: impl std::fmt::Display,
) -> Diagnostic {
    Diagnostic::new(level_of(code), code, format!("{named}: {why}"))
        .at(secret.origin_at(field))
        .field(field)
        .on(secret)
}

/// The field holding a Secret's server certificate, as written (`stringData` wins
/// over `data`, `cert` over `tls.crt`, as [`pem::server_pair`] reads them).
fn certificate_field(data: &SecretData) -> String {
    let set = |k: &str| data.get(k).is_some_and(|v| !v.is_empty());
    let key = pem::SERVER_KEYS
        .iter()
        .find(|(c, k)| set(c) && set(k))
        .map_or("tls.crt", |(c, _)| *c);
    if data.string_data.contains_key(key) {
        format!("stringData.{key}")
    } else {
        format!("data.{key}")
    }
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
        assert!(
            e.contains("neither keys") && e.ends_with("; found: tls.cert"),
            "{e}"
        );
        let e = validate_server_secret(&secret(&[])).unwrap_err();
        assert!(e.ends_with("; found: no keys"), "{e}");
        let e = validate_server_secret(&secret(&[("cert", "hush"), ("key", KEY)])).unwrap_err();
        assert_eq!(e, "\"cert\" is not valid PEM: no PEM block");
        let e =
            validate_server_secret(&secret(&[("tls.crt", CERT), ("tls.key", CERT)])).unwrap_err();
        assert_eq!(e, "\"tls.key\" holds no PRIVATE KEY PEM block");
    }

    /// A Gateway naming Secret `name` in istio-system, which holds `cert` and `key`.
    fn gateway_with_secret(name: &str, cert: &str, key: &str) -> crate::Store {
        let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: web}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
             \x20 - port: {{number: 443, name: https, protocol: HTTPS}}\n\
             \x20   hosts: [a.test]\n\
             \x20   tls: {{mode: SIMPLE, credentialName: {name}}}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\n\
             type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(cert),
            indent(key)
        );
        let loaded = crate::load::load_str("tls.yaml", &yaml);
        assert!(
            loaded
                .diagnostics
                .iter()
                .all(|d| d.level != crate::Level::Error),
            "{:?}",
            loaded.diagnostics
        );
        crate::Store::new(loaded.resources)
    }

    fn pem(file: &str) -> String {
        let path = format!("{}/../testdata/pem/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn expired_and_mismatched_pairs_at_a_fixed_time() {
        // ec-a is valid from 2025-01-01 to 2026-01-02T00:00:00Z.
        let store = gateway_with_secret("a-cert", &pem("ec-a.crt"), &pem("ec-a.key"));
        let during = 1_767_225_600; // 2026-01-01
        let after = during + 2 * 86_400;
        assert_eq!(crate::analyze::analyze_at(&store, during), []);
        assert_eq!(crate::analyze::analyze(&store), []);
        let ds = crate::analyze::analyze_at(&store, after);
        // istioctl's IST0161 on the Gateway, and the detail on the Secret.
        let [invalid, d] = ds.as_slice() else {
            panic!("{ds:#?}")
        };
        assert_eq!(invalid.code, "IST0161", "{ds:#?}");
        assert_eq!(
            d.to_string(),
            "Warning [ISM0104] (Secret istio-system/a-cert tls.yaml:16) stringData.tls.crt: \
             Secret istio-system/a-cert (credentialName of Gateway web/gw spec.servers[0]): the \
             certificate expired on 2026-01-02T00:00:00Z; clients will refuse it"
        );

        let store = gateway_with_secret("m-cert", &pem("ec-a.crt"), &pem("ec-b.key"));
        let ds = crate::analyze::analyze(&store);
        let [d] = ds.as_slice() else {
            panic!("{ds:#?}")
        };
        assert_eq!(d.level, crate::Level::Error);
        assert_eq!(
            d.to_string(),
            "Error [ISM0105] (Secret istio-system/m-cert tls.yaml:16) stringData.tls.crt: \
             Secret istio-system/m-cert (credentialName of Gateway web/gw spec.servers[0]): the \
             private key does not match the certificate"
        );
    }
}
