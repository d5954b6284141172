//! `gateway.networking.k8s.io` kinds. PLACEHOLDER: typed specs are being written.
pub type GatewaySpec = serde_json::Value;
pub type HttpRouteSpec = serde_json::Value;
pub type ReferenceGrantSpec = serde_json::Value;
