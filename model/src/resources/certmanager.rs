//! `cert-manager.io` kinds. PLACEHOLDER: typed specs are being written.
pub type IssuerSpec = serde_json::Value;
pub type CertificateSpec = serde_json::Value;
