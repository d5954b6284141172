//! YAML loading: multi-document text -> typed [`Resource`]s with their origin
//! (file:line), plus findings for everything that could not be loaded. Pure: the
//! caller hands in the bytes and the name to report.

use std::sync::Arc;

use crate::diag::{Diagnostic, Level};
use crate::resources::{Kind, ObjectMeta, Origin, Resource, Spec};

/// Result of loading one or more files: what loaded, and what did not.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn extend(&mut self, other: Loaded) {
        self.resources.extend(other.resources);
        self.diagnostics.extend(other.diagnostics);
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.level == Level::Error)
    }
}

/// One YAML document of a multi-document file: its text and the 1-based line where
/// it starts in the file.
#[derive(Debug, Clone, Copy)]
pub struct Document<'a> {
    pub text: &'a str,
    pub first_line: u32,
}

/// Split a multi-document YAML text on `---` lines.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u32;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_sep = trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "...";
        if is_sep {
            docs.push(Document {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset + line.len();
            start_line = i as u32 + 2;
        }
        offset += line.len();
    }
    docs.push(Document {
        text: &text[start..],
        first_line: start_line,
    });
    docs.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Load every document of one file.
pub fn load_str(file: &str, text: &str) -> Loaded {
    let file: Arc<str> = Arc::from(file);
    let mut out = Loaded::default();
    for doc in split_documents(text) {
        load_document(&file, doc, &mut out);
    }
    out
}

fn first_content_line(doc: Document<'_>) -> u32 {
    for (i, l) in doc.text.lines().enumerate() {
        let t = l.trim();
        if !t.is_empty() && !t.starts_with('#') {
            return doc.first_line + i as u32;
        }
    }
    doc.first_line
}

fn load_document(file: &Arc<str>, doc: Document<'_>, out: &mut Loaded) {
    let origin = Origin {
        file: file.clone(),
        line: first_content_line(doc),
    };
    let value: serde_json::Value = match serde_yaml_ng::from_str(doc.text) {
        Ok(v) => v,
        Err(e) => {
            let mut o = origin.clone();
            if let Some(loc) = e.location() {
                o.line = doc.first_line + loc.line() as u32 - 1;
            }
            out.diagnostics.push(
                Diagnostic::new(Level::Error, "IST0106", format!("invalid YAML: {e}")).at(o),
            );
            return;
        }
    };
    if value.is_null() {
        return;
    }
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let kind_str = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let Some(kind) = Kind::from_type(&api_version, &kind_str) else {
        out.diagnostics.push(
            Diagnostic::new(
                Level::Info,
                "ISM0001",
                format!("skipped: kind {kind_str:?} of apiVersion {api_version:?} is not one isthmus reads"),
            )
            .at(origin),
        );
        return;
    };
    let meta: ObjectMeta = match value.get("metadata") {
        Some(m) => match serde_json::from_value(m.clone()) {
            Ok(m) => m,
            Err(e) => {
                out.diagnostics.push(
                    Diagnostic::new(Level::Error, "IST0106", format!("metadata: {e}")).at(origin),
                );
                return;
            }
        },
        None => ObjectMeta::default(),
    };
    let spec_value = match kind {
        Kind::Secret => value.clone(),
        _ => value
            .get("spec")
            .cloned()
            .unwrap_or(serde_json::Value::Object(Default::default())),
    };
    let spec = match decode_spec(kind, spec_value) {
        Ok(s) => s,
        Err(e) => {
            out.diagnostics.push(
                Diagnostic::new(Level::Error, "IST0106", format!("spec: {e}"))
                    .at(origin.clone())
                    .field("spec"),
            );
            return;
        }
    };
    out.resources.push(Resource {
        api_version,
        kind,
        meta,
        spec,
        origin,
    });
}

fn decode_spec(kind: Kind, v: serde_json::Value) -> Result<Spec, serde_json::Error> {
    use serde_json::from_value as f;
    Ok(match kind {
        Kind::Gateway => Spec::Gateway(f(v)?),
        Kind::VirtualService => Spec::VirtualService(f(v)?),
        Kind::DestinationRule => Spec::DestinationRule(f(v)?),
        Kind::ServiceEntry => Spec::ServiceEntry(f(v)?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(f(v)?),
        Kind::Sidecar => Spec::Sidecar(f(v)?),
        Kind::PeerAuthentication => Spec::PeerAuthentication(f(v)?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(f(v)?),
        Kind::RequestAuthentication => Spec::RequestAuthentication(f(v)?),
        Kind::KubeGateway => Spec::KubeGateway(f(v)?),
        Kind::HttpRoute => Spec::HttpRoute(f(v)?),
        Kind::ReferenceGrant => Spec::ReferenceGrant(f(v)?),
        Kind::Issuer => Spec::Issuer(f(v)?),
        Kind::ClusterIssuer => Spec::ClusterIssuer(f(v)?),
        Kind::Certificate => Spec::Certificate(f(v)?),
        Kind::Namespace => Spec::Namespace(f(v)?),
        Kind::Service => Spec::Service(f(v)?),
        Kind::Secret => Spec::Secret(f(v)?),
        Kind::Deployment => Spec::Deployment(f(v)?),
        Kind::Pod => Spec::Pod(f(v)?),
    })
}
