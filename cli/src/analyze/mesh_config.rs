//! `--meshConfigFile FILE`: the Istio MeshConfig `istioctl analyze` analyzes with.
//!
//! The file is a MeshConfig as YAML, or the `istio` ConfigMap holding it under
//! `data.mesh`. istioctl ignores a file it cannot read; isthmus refuses it, naming
//! the file, the line and the field. The fields the analysis depends on are typed
//! here: `rootNamespace` and `trustDomain` (strings), `ingressControllerMode` (one of
//! Istio's values), `ingressService` (a string); other MeshConfig fields are
//! accepted unread. isthmus' analyzers take mesh-wide policies from `istio-system`
//! (Istio's default root namespace) and use no trust domain, so another
//! `rootNamespace` is reported as a note rather than silently analyzed against the
//! default.

use std::path::Path;

use serde::Deserialize;

/// The MeshConfig fields the analysis depends on.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    pub root_namespace: Option<String>,
    // Typed so that a bad value is an error naming its field; isthmus' analyzers
    // do not depend on them (no trust domain check, no default ingress added).
    #[allow(dead_code)]
    pub trust_domain: Option<String>,
    #[allow(dead_code)]
    pub ingress_controller_mode: Option<IngressControllerMode>,
    #[allow(dead_code)]
    pub ingress_service: Option<String>,
    /// Read by the telemetry and ServiceEntry analyzers
    /// (`isthmus_model::analyze::MeshSettings`).
    pub default_providers: Option<serde_json::Value>,
    pub extension_providers: Option<serde_json::Value>,
    pub default_config: Option<serde_json::Value>,
}

/// `MeshConfig.ingressControllerMode`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum IngressControllerMode {
    Unspecified,
    Off,
    Default,
    Strict,
}

impl MeshConfig {
    /// The settings the analyzers read.
    pub fn settings(&self) -> isthmus_model::analyze::MeshSettings {
        let mut mesh = serde_json::Map::new();
        for (key, value) in [
            ("defaultProviders", &self.default_providers),
            ("extensionProviders", &self.extension_providers),
            ("defaultConfig", &self.default_config),
        ] {
            if let Some(v) = value {
                mesh.insert(key.to_string(), v.clone());
            }
        }
        isthmus_model::analyze::MeshSettings::from_mesh_config(&serde_json::Value::Object(mesh))
    }

    /// What the analysis does differently from the file, one sentence each.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(root) = self
            .root_namespace
            .as_deref()
            .filter(|r| *r != "istio-system")
        {
            notes.push(format!(
                "rootNamespace {root:?}: isthmus analyzes mesh-wide policies in \"istio-system\""
            ));
        }
        notes
    }
}

/// Read and check the mesh config at `path`. Errors read
/// `--meshConfigFile FILE: line N: field F: message`.
pub fn read(path: &Path) -> Result<MeshConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--meshConfigFile {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("--meshConfigFile {}: {e}", path.display()))
}

fn parse(text: &str) -> Result<MeshConfig, String> {
    crate::mesh_config::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_and_accepts_the_rest() {
        let m = parse("rootNamespace: istio-config\ntrustDomain: example.org\nenableTracing: true\ningressControllerMode: STRICT\n")
            .unwrap();
        assert_eq!(m.root_namespace.as_deref(), Some("istio-config"));
        assert_eq!(m.trust_domain.as_deref(), Some("example.org"));
        assert_eq!(
            m.ingress_controller_mode,
            Some(IngressControllerMode::Strict)
        );
        assert_eq!(m.notes().len(), 1);
        assert!(parse("").unwrap().notes().is_empty());
    }

    #[test]
    fn the_configmap_form_is_read() {
        let m = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |\n    trustDomain: td\n")
            .unwrap();
        assert_eq!(m.trust_domain.as_deref(), Some("td"));
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = parse("trustDomain: a\nrootNamespace: [x]\n").unwrap_err();
        assert!(e.starts_with("line 2: field rootNamespace:"), "{e}");
        let e = parse("trustDomain: a\n  bad: : indent\n").unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
        let e = parse("ingressControllerMode: SOMETIMES\n").unwrap_err();
        assert!(e.contains("ingressControllerMode"), "{e}");
    }
}
