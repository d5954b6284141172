//! `cert-manager.io` kinds: `Issuer` / `ClusterIssuer` (one spec) and `Certificate`.
//! isthmus honours them natively (ACME with HTTP-01, a CA from a Secret, self-signed),
//! so the ACME and certificate fields are typed in full; issuer types isthmus does not
//! run (Vault, Venafi) and DNS-01 provider blocks are kept as untyped values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::gatewayapi::ParentReference;
use super::Labels;

// ---------------------------------------------------------------- Issuer / ClusterIssuer

/// Exactly one of the issuer types is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    #[serde(default)]
    pub acme: Option<AcmeIssuer>,
    #[serde(default)]
    pub ca: Option<CaIssuer>,
    #[serde(default)]
    pub self_signed: Option<SelfSignedIssuer>,
    #[serde(default)]
    pub vault: Option<serde_json::Value>,
    #[serde(default)]
    pub venafi: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcmeIssuer {
    /// ACME directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub email: Option<String>,
    /// Secret holding the ACME account key (created when missing).
    #[serde(default)]
    pub private_key_secret_ref: SecretKeySelector,
    #[serde(default, rename = "skipTLSVerify")]
    pub skip_tls_verify: bool,
    /// Base64 PEM bundle to trust for the ACME server.
    #[serde(default)]
    pub ca_bundle: Option<String>,
    #[serde(default)]
    pub preferred_chain: Option<String>,
    #[serde(default)]
    pub external_account_binding: Option<ExternalAccountBinding>,
    #[serde(default)]
    pub disable_account_key_generation: bool,
    #[serde(default)]
    pub enable_duration_feature: bool,
    /// ACME profile (draft-aaron-acme-profiles).
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub solvers: Vec<AcmeSolver>,
}

/// A Secret and one key of it. `key` is optional where a default key exists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAccountBinding {
    #[serde(default, rename = "keyID")]
    pub key_id: String,
    #[serde(default)]
    pub key_secret_ref: SecretKeySelector,
    /// Deprecated; ignored by cert-manager.
    #[serde(default)]
    pub key_algorithm: Option<String>,
}

/// One solver; the first whose `selector` fits a domain is used (an absent selector
/// fits every domain).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcmeSolver {
    #[serde(default)]
    pub selector: Option<CertificateDnsNameSelector>,
    #[serde(default)]
    pub http01: Option<AcmeHttp01Solver>,
    #[serde(default)]
    pub dns01: Option<AcmeDns01Solver>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDnsNameSelector {
    #[serde(default)]
    pub match_labels: Labels,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub dns_zones: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcmeHttp01Solver {
    #[serde(default)]
    pub ingress: Option<AcmeHttp01Ingress>,
    #[serde(default, rename = "gatewayHTTPRoute")]
    pub gateway_http_route: Option<AcmeHttp01GatewayHttpRoute>,
}

/// HTTP-01 via an Ingress. With isthmus the gateway answers challenges itself; these
/// fields are accepted for compatibility (`class: istio` is the usual value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcmeHttp01Ingress {
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub ingress_class_name: Option<String>,
    /// Edit this existing Ingress instead of creating one.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub service_type: Option<String>,
    #[serde(default)]
    pub pod_template: Option<serde_json::Value>,
    #[serde(default)]
    pub ingress_template: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcmeHttp01GatewayHttpRoute {
    #[serde(default)]
    pub service_type: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub pod_template: Option<serde_json::Value>,
}

/// DNS-01: typed at the provider level only (each provider block is kept untyped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcmeDns01Solver {
    #[serde(default)]
    pub cname_strategy: Option<String>,
    #[serde(default, rename = "acmeDNS")]
    pub acme_dns: Option<serde_json::Value>,
    #[serde(default)]
    pub akamai: Option<serde_json::Value>,
    #[serde(default, rename = "azureDNS")]
    pub azure_dns: Option<serde_json::Value>,
    #[serde(default, rename = "cloudDNS")]
    pub cloud_dns: Option<serde_json::Value>,
    #[serde(default)]
    pub cloudflare: Option<serde_json::Value>,
    #[serde(default)]
    pub digitalocean: Option<serde_json::Value>,
    #[serde(default)]
    pub rfc2136: Option<serde_json::Value>,
    #[serde(default)]
    pub route53: Option<serde_json::Value>,
    #[serde(default)]
    pub webhook: Option<serde_json::Value>,
}

/// Sign with the CA key pair in a `kubernetes.io/tls` Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaIssuer {
    #[serde(default)]
    pub secret_name: String,
    #[serde(default)]
    pub crl_distribution_points: Vec<String>,
    #[serde(default)]
    pub ocsp_servers: Vec<String>,
    #[serde(default, rename = "issuingCertificateURLs")]
    pub issuing_certificate_urls: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfSignedIssuer {
    #[serde(default)]
    pub crl_distribution_points: Vec<String>,
}

// ---------------------------------------------------------------- Certificate

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// The `kubernetes.io/tls` Secret to write (in the Certificate's namespace).
    #[serde(default)]
    pub secret_name: String,
    #[serde(default)]
    pub issuer_ref: IssuerRef,
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub email_addresses: Vec<String>,
    #[serde(default)]
    pub other_names: Vec<serde_json::Value>,
    /// Go duration; absent means 90 days (2160h).
    #[serde(default)]
    pub duration: Option<String>,
    /// Go duration; absent means 1/3 of `duration`.
    #[serde(default)]
    pub renew_before: Option<String>,
    #[serde(default)]
    pub renew_before_percentage: Option<i32>,
    #[serde(default)]
    pub private_key: Option<CertificatePrivateKey>,
    /// `digital signature`, `key encipherment`, `server auth`, ...
    #[serde(default)]
    pub usages: Vec<String>,
    #[serde(default, rename = "isCA")]
    pub is_ca: bool,
    #[serde(default)]
    pub subject: Option<X509Subject>,
    #[serde(default)]
    pub literal_subject: Option<String>,
    #[serde(default)]
    pub secret_template: Option<CertificateSecretTemplate>,
    #[serde(default)]
    pub keystores: Option<serde_json::Value>,
    #[serde(default)]
    pub revision_history_limit: Option<i32>,
    #[serde(default)]
    pub additional_output_formats: Vec<serde_json::Value>,
    #[serde(default)]
    pub encode_usages_in_request: Option<bool>,
    #[serde(default)]
    pub name_constraints: Option<serde_json::Value>,
    #[serde(default)]
    pub signature_algorithm: Option<String>,
}

/// Which issuer signs: `kind` absent means `Issuer` (same namespace), `group` absent
/// means `cert-manager.io`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePrivateKey {
    /// `RSA` (default), `ECDSA`, `Ed25519`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// RSA bits or ECDSA curve size.
    #[serde(default)]
    pub size: Option<u32>,
    /// `Never` or `Always` (the default from cert-manager 1.18).
    #[serde(default)]
    pub rotation_policy: Option<String>,
    /// `PKCS1` (default) or `PKCS8`.
    #[serde(default)]
    pub encoding: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Subject {
    #[serde(default)]
    pub organizations: Vec<String>,
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub organizational_units: Vec<String>,
    #[serde(default)]
    pub localities: Vec<String>,
    #[serde(default)]
    pub provinces: Vec<String>,
    #[serde(default)]
    pub street_addresses: Vec<String>,
    #[serde(default)]
    pub postal_codes: Vec<String>,
    #[serde(default)]
    pub serial_number: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSecretTemplate {
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
