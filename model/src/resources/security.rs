//! `security.istio.io` kinds. PLACEHOLDER: typed specs are being written.
pub type PeerAuthenticationSpec = serde_json::Value;
pub type AuthorizationPolicySpec = serde_json::Value;
pub type RequestAuthenticationSpec = serde_json::Value;
