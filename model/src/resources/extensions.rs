//! Istio kinds isthmus loads only to analyze, and does not serve: `Telemetry`
//! (`telemetry.istio.io`), `EnvoyFilter` (`networking.istio.io`) and `WasmPlugin`
//! (`extensions.istio.io`), `ProxyConfig` (`networking.istio.io`), the Gateway
//! API `GRPCRoute`, and `CustomResourceDefinition` (for its name and annotations). Only the fields the analyzers read are typed; other
//! fields are accepted unread (and not reported as unknown), and enum-like fields
//! stay strings, so that no valid resource fails to load.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::networking::WorkloadSelector;

/// `Telemetry.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<Value>,
    #[serde(default)]
    pub target_refs: Vec<Value>,
    #[serde(default)]
    pub tracing: Vec<Tracing>,
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogging {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// `EnvoyFilter.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyFilterSpec {
    #[serde(default)]
    pub workload_selector: Option<Value>,
    #[serde(default)]
    pub target_refs: Vec<Value>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub config_patches: Vec<EnvoyConfigPatch>,
}

/// One `configPatches` entry: `applyTo`, `match` and `patch` (`match` kept as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyConfigPatch {
    #[serde(default)]
    pub apply_to: Option<String>,
    #[serde(default, rename = "match")]
    pub match_: Option<Value>,
    #[serde(default)]
    pub patch: Option<EnvoyPatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyPatch {
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
}

/// `WasmPlugin.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<Value>,
    #[serde(default)]
    pub target_refs: Vec<Value>,
    #[serde(default)]
    pub url: Option<String>,
}

/// `ProxyConfig.spec`: the selector and the proxy image type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfigSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub image: Option<ProxyImage>,
}

/// `ProxyImage`: `imageType` (`default`, `debug`, `distroless`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyImage {
    #[serde(default)]
    pub image_type: String,
}

/// `GRPCRoute.spec`: the parents it attaches to (the rest is not read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<Value>,
}

/// `CustomResourceDefinition.spec`: only the group is typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrdSpec {
    #[serde(default)]
    pub group: String,
}
