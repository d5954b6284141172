//! Reading Istio's MeshConfig YAML, for every command that takes one
//! (`--mesh-config` of the proxies, `--meshConfigFile` of `analyze`): the document
//! itself, or the `istio` ConfigMap holding it under `data.mesh`, decoded into the
//! caller's view of it. Errors name the line and the field
//! (`line 3: field isthmus.limits.idleTimeout: ...`; inside a ConfigMap they say
//! `in data.mesh`).

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The Istio ConfigMap form: the MeshConfig as text under `data.mesh`.
#[derive(Deserialize)]
struct ConfigMap {
    data: ConfigMapData,
}

#[derive(Deserialize)]
struct ConfigMapData {
    mesh: String,
}

/// Decode the MeshConfig in `text` as `T` (an empty document is `T::default()`).
pub fn parse<T: DeserializeOwned + Default>(text: &str) -> Result<T, String> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| located(&e, None))?;
    if value.is_null() {
        return Ok(T::default());
    }
    if !value.is_mapping() {
        return Err("line 1: a MeshConfig is a mapping".to_string());
    }
    if value.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
        let cm: ConfigMap = serde_yaml_ng::from_str(text).map_err(|e| located(&e, None))?;
        return decode(&cm.data.mesh).map_err(|e| format!("in data.mesh, {e}"));
    }
    decode(text)
}

fn decode<T: DeserializeOwned + Default>(text: &str) -> Result<T, String> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(de, &mut track);
    T::deserialize(de).map_err(|e| located(&e, Some(track.path().to_string())))
}

/// `line N: field a.b: message`.
fn located(e: &serde_yaml_ng::Error, field: Option<String>) -> String {
    let mut out = String::new();
    if let Some(loc) = e.location() {
        out.push_str(&format!("line {}: ", loc.line()));
    }
    if let Some(f) = field.filter(|f| !f.is_empty() && f != ".") {
        out.push_str(&format!("field {f}: "));
    }
    let msg = e.to_string();
    // serde_yaml_ng appends " at line L column C": said already.
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    out.push_str(msg);
    out
}
