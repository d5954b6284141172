//! Core Kubernetes kinds as far as the mesh reads them. PLACEHOLDER: typed specs are being written.
pub type NamespaceSpec = serde_json::Value;
pub type ServiceSpec = serde_json::Value;
pub type SecretData = serde_json::Value;
pub type DeploymentSpec = serde_json::Value;
pub type PodSpec = serde_json::Value;
