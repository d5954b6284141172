//! YAML loading: multi-document text -> typed [`Resource`]s with their origin
//! (file:line) and the line of every field, plus findings for everything that could
//! not be loaded. Pure: the caller hands in the bytes and the name to report.
//!
//! Findings (all carry file:line and, where one applies, the field path):
//! * `Error IST0106`: broken YAML (line from the parser), a document that is not a
//!   resource, missing `metadata.name`, a field of the wrong type or an unknown enum
//!   value (`spec.http[0].route[0].weight: invalid type: string "ten", expected i32`).
//!   The resource is not loaded; the rest of the file is.
//! * `Warning IST0133`: an unknown field of an Istio, Gateway API or cert-manager kind
//!   (core Kubernetes kinds accept unknown fields silently), or a key written twice.
//!   The resource still loads.
//! * `Info ISM0001`: a kind isthmus does not read; skipped.
//!
//! Values of Secrets never appear in findings.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Level};
use crate::position::{join_key, Positions};
use crate::resources::{
    Kind, ObjectMeta, Origin, Resource, Spec, StatusCondition, DEFAULT_NAMESPACE,
};

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
            start_line = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(2);
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
            return doc
                .first_line
                .saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }
    doc.first_line
}

/// Keys every resource may have at the top level besides `spec`.
const ENVELOPE: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Kinds whose unknown fields are reported (Istio, Gateway API, cert-manager). Core
/// Kubernetes objects carry many fields isthmus does not read.
fn reports_unknown_fields(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::Namespace
            | Kind::Service
            | Kind::Secret
            | Kind::Deployment
            | Kind::Pod
            | Kind::ServiceAccount
            | Kind::ConfigMap
            // Typed only in part (`resources::extensions`).
            | Kind::Telemetry
            | Kind::EnvoyFilter
            | Kind::WasmPlugin
            | Kind::ProxyConfig
            | Kind::GrpcRoute
            | Kind::CustomResourceDefinition
            | Kind::MutatingWebhookConfiguration
            | Kind::ValidatingWebhookConfiguration
    )
}

/// Per-document context for building findings.
struct Ctx<'a> {
    file: &'a Arc<str>,
    origin: Origin,
    positions: &'a Positions,
    resource: Option<String>,
    secret: bool,
}

impl Ctx<'_> {
    fn at(&self, path: &str) -> Origin {
        Origin {
            file: self.file.clone(),
            line: self.positions.line_of(path).unwrap_or(self.origin.line),
        }
    }

    fn finding(&self, level: Level, code: &'static str, path: &str, msg: String) -> Diagnostic {
        let mut d = Diagnostic::new(level, code, msg).at(self.at(path));
        d.resource = self.resource.clone();
        if !path.is_empty() {
            d = d.field(path);
        }
        d
    }

    fn error(&self, path: &str, msg: impl Into<String>) -> Diagnostic {
        let msg = msg.into();
        let msg = if self.secret { redact(&msg) } else { msg };
        self.finding(Level::Error, "IST0106", path, msg)
    }
}

fn load_document(file: &Arc<str>, doc: Document<'_>, out: &mut Loaded) {
    let origin = Origin {
        file: file.clone(),
        line: first_content_line(doc),
    };
    let offset = doc.first_line.saturating_sub(1);
    let value: Value = match serde_yaml_ng::from_str(doc.text) {
        Ok(v) => v,
        Err(e) => {
            let mut o = origin.clone();
            if let Some(loc) = e.location() {
                let line = u32::try_from(loc.line()).unwrap_or(u32::MAX);
                o.line = offset.saturating_add(line.max(1));
            }
            let msg = shift_lines(&e.to_string(), offset);
            out.diagnostics.push(
                Diagnostic::new(Level::Error, "IST0106", format!("invalid YAML: {msg}")).at(o),
            );
            return;
        }
    };
    if value.is_null() {
        return;
    }
    let positions = Positions::from_yaml(doc.text, doc.first_line);
    let mut ctx = Ctx {
        file,
        origin: origin.clone(),
        positions: &positions,
        resource: None,
        secret: false,
    };
    let Value::Object(mut obj) = value else {
        out.diagnostics.push(ctx.error(
            "",
            "a resource must be a YAML mapping with apiVersion, kind and metadata",
        ));
        return;
    };
    if is_list(&obj) {
        load_list_items(file, doc, &positions, &obj, out);
        return;
    }
    let (api_version, kind_str) = match (obj.get("apiVersion"), obj.get("kind")) {
        (Some(Value::String(a)), Some(Value::String(k))) => (a.clone(), k.clone()),
        (a, k) => {
            let (path, what) = match (a, k) {
                (Some(Value::String(_)), _) => ("kind", "kind"),
                _ => ("apiVersion", "apiVersion"),
            };
            let msg = if obj.contains_key(path) {
                format!("{what} must be a string")
            } else {
                format!("{what} is required")
            };
            out.diagnostics.push(ctx.error(path, msg));
            return;
        }
    };
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
    ctx.secret = kind == Kind::Secret;

    let meta: ObjectMeta = match obj.get("metadata") {
        None | Some(Value::Null) => ObjectMeta::default(),
        Some(m) => {
            let mut m = m.clone();
            strip_nulls(&mut m);
            match decode::<ObjectMeta>(&m) {
                Ok((m, _)) => m,
                Err((path, msg)) => {
                    let path = join_path("metadata", &path);
                    out.diagnostics.push(ctx.error(&path, msg));
                    return;
                }
            }
        }
    };
    ctx.resource = Some(display_ref(kind, &meta));
    let mut ok = true;
    if meta.name.is_empty() {
        let hint = if meta.generate_name.is_some() {
            " (generateName is not supported in files)"
        } else {
            ""
        };
        out.diagnostics
            .push(ctx.error("metadata.name", format!("metadata.name is required{hint}")));
        ok = false;
    }

    let mut warnings = envelope_warnings(&ctx, kind, &obj);

    let status = obj.remove("status");
    let (prefix, mut body) = take_body(kind, obj);
    strip_nulls(&mut body);
    let mut spec = match decode_spec(kind, &body) {
        Ok((spec, unknown)) => {
            if reports_unknown_fields(kind) {
                for rel in unknown {
                    let path = join_path(prefix, &rel);
                    let name = rel.rsplit(['.', '[']).next().unwrap_or(&rel);
                    warnings.push(ctx.finding(
                        Level::Warning,
                        "IST0133",
                        &path,
                        format!("unknown field {name:?} (ignored)"),
                    ));
                }
            }
            Some(spec)
        }
        Err((rel, msg)) => {
            let path = join_path(prefix, &rel);
            out.diagnostics.push(ctx.error(&path, msg));
            None
        }
    };
    // Status conditions (read by the analyzers only); unreadable ones are left out.
    let conditions = status
        .as_ref()
        .map(|s| status_conditions(kind, s))
        .unwrap_or_default();
    // Addresses Istio allocated to a ServiceEntry (read by the analyzers only).
    if let (Some(Spec::ServiceEntry(se)), Some(status)) = (spec.as_mut(), &status) {
        se.status_addresses = status
            .get("addresses")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
    }
    // A Pod's status sits beside its spec.
    if let (Some(Spec::Pod(pod)), Some(mut status)) = (spec.as_mut(), status) {
        strip_nulls(&mut status);
        match decode(&status) {
            Ok((s, _)) => pod.status = Some(s),
            Err((rel, msg)) => {
                out.diagnostics
                    .push(ctx.error(&join_path("status", &rel), msg));
                spec = None;
            }
        }
    }
    out.diagnostics.extend(warnings);
    let Some(spec) = spec else { return };
    if !ok {
        return;
    }
    out.resources.push(Resource {
        api_version,
        kind,
        meta,
        spec,
        origin,
        positions: Arc::new(positions),
        conditions,
    });
}

/// `status.conditions`, or for routes `status.parents[].conditions`.
fn status_conditions(kind: Kind, status: &Value) -> Vec<StatusCondition> {
    let lists: Vec<&Value> = if matches!(kind, Kind::HttpRoute | Kind::GrpcRoute) {
        status
            .get("parents")
            .and_then(Value::as_array)
            .map(|ps| ps.iter().filter_map(|p| p.get("conditions")).collect())
            .unwrap_or_default()
    } else {
        status.get("conditions").into_iter().collect()
    };
    lists
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|c| serde_json::from_value(c.clone()).ok())
        .collect()
}

/// `apiVersion: v1, kind: List` (what `kubectl get -o yaml` writes): a wrapper
/// whose `items` are resources.
fn is_list(obj: &Map<String, Value>) -> bool {
    obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && obj.get("kind").and_then(Value::as_str) == Some("List")
}

/// Load each item of a `kind: List` as a document of its own, cut out of the
/// document's text so that every item keeps its file lines.
fn load_list_items(
    file: &Arc<str>,
    doc: Document<'_>,
    positions: &Positions,
    obj: &Map<String, Value>,
    out: &mut Loaded,
) {
    let n = obj
        .get("items")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let lines: Vec<&str> = doc.text.split_inclusive('\n').collect();
    let starts: Vec<Option<u32>> = (0..n)
        .map(|i| positions.exact(&format!("items[{i}]")))
        .collect();
    for i in 0..n {
        let Some(start) = starts[i] else { continue };
        let end = starts[i + 1..]
            .iter()
            .flatten()
            .next()
            .copied()
            .unwrap_or_else(|| {
                doc.first_line
                    .saturating_add(u32::try_from(lines.len()).unwrap_or(u32::MAX))
            });
        let from = start.saturating_sub(doc.first_line) as usize;
        let to = (end.saturating_sub(doc.first_line) as usize).min(lines.len());
        let Some(block) = lines.get(from..to) else {
            continue;
        };
        let text = dedent_item(block);
        load_document(
            file,
            Document {
                text: &text,
                first_line: start,
            },
            out,
        );
    }
}

/// A sequence item's lines as a document of its own: the `- ` that opens it becomes
/// spaces, then the item's indentation is removed from every line.
fn dedent_item(block: &[&str]) -> String {
    let Some(first) = block.first() else {
        return String::new();
    };
    let dash = first.find('-').unwrap_or(0);
    let rest = &first[dash + 1..];
    let col = dash + 1 + (rest.len() - rest.trim_start_matches(' ').len());
    let mut text = first.get(col..).unwrap_or("").to_string();
    for l in &block[1..] {
        let indent = l.len() - l.trim_start_matches(' ').len();
        text.push_str(&l[indent.min(col)..]);
    }
    text
}

/// Unknown top-level keys (for kinds that report unknown fields) and keys written
/// twice anywhere in the document.
fn envelope_warnings(ctx: &Ctx<'_>, kind: Kind, obj: &Map<String, Value>) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    if reports_unknown_fields(kind) {
        for key in obj.keys().filter(|k| !ENVELOPE.contains(&k.as_str())) {
            warnings.push(ctx.finding(
                Level::Warning,
                "IST0133",
                key,
                format!("unknown field {key:?} (ignored)"),
            ));
        }
    }
    for (path, line) in ctx.positions.duplicates() {
        let mut d = ctx.finding(
            Level::Warning,
            "IST0133",
            path,
            "key written twice in the same mapping; the last value is used".to_string(),
        );
        d.origin = Some(Origin {
            file: ctx.file.clone(),
            line: *line,
        });
        warnings.push(d);
    }
    warnings
}

/// The part of the object a kind's typed spec is decoded from, and its path prefix:
/// `spec`, or for a Secret the whole object minus the envelope.
fn take_body(kind: Kind, mut obj: Map<String, Value>) -> (&'static str, Value) {
    match kind {
        Kind::Secret
        | Kind::ServiceAccount
        | Kind::ConfigMap
        | Kind::MutatingWebhookConfiguration
        | Kind::ValidatingWebhookConfiguration => {
            for k in ENVELOPE {
                obj.remove(*k);
            }
            ("", Value::Object(obj))
        }
        _ => match obj.remove("spec") {
            None | Some(Value::Null) => ("spec", Value::Object(Map::new())),
            Some(s) => ("spec", s),
        },
    }
}

/// Drop `key: null` entries everywhere: like Kubernetes and protobuf JSON, an explicit
/// null means the field is unset (`args:` with nothing after it).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// `Kind ns/name` (or `Kind name` for cluster-scoped kinds), as findings print it.
fn display_ref(kind: Kind, meta: &ObjectMeta) -> String {
    let name = if meta.name.is_empty() {
        "<unnamed>"
    } else {
        &meta.name
    };
    if kind.cluster_scoped() {
        format!("{} {}", kind.name(), name)
    } else {
        let ns = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        format!("{} {}/{}", kind.name(), ns, name)
    }
}

/// `prefix.rel`, `prefix[i]...`, or either alone when the other is empty.
fn join_path(prefix: &str, rel: &str) -> String {
    if rel.is_empty() || rel == "." {
        prefix.to_string()
    } else if rel.starts_with('[') {
        format!("{prefix}{rel}")
    } else {
        join_key(prefix, rel)
    }
}

/// Deserialize `v` into `T`, collecting the paths of fields `T` does not know. On
/// error: the path of the offending field (relative to `v`) and the message.
fn decode<T: DeserializeOwned>(v: &Value) -> Result<(T, Vec<String>), (String, String)> {
    let mut unknown = Vec::new();
    let mut note = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
    let de = serde_ignored::Deserializer::new(v, &mut note);
    let result = serde_path_to_error::deserialize::<_, T>(de);
    match result {
        Ok(t) => Ok((t, unknown)),
        Err(e) => Err((error_path(e.path()), e.inner().to_string())),
    }
}

fn decode_spec(kind: Kind, v: &Value) -> Result<(Spec, Vec<String>), (String, String)> {
    macro_rules! spec {
        ($variant:ident) => {
            decode(v).map(|(s, u)| (Spec::$variant(s), u))
        };
    }
    match kind {
        Kind::Gateway => spec!(Gateway),
        Kind::VirtualService => spec!(VirtualService),
        Kind::DestinationRule => spec!(DestinationRule),
        Kind::ServiceEntry => spec!(ServiceEntry),
        Kind::WorkloadEntry => spec!(WorkloadEntry),
        Kind::Sidecar => spec!(Sidecar),
        Kind::PeerAuthentication => spec!(PeerAuthentication),
        Kind::AuthorizationPolicy => spec!(AuthorizationPolicy),
        Kind::RequestAuthentication => spec!(RequestAuthentication),
        Kind::KubeGateway => spec!(KubeGateway),
        Kind::HttpRoute => spec!(HttpRoute),
        Kind::ReferenceGrant => spec!(ReferenceGrant),
        Kind::Issuer => spec!(Issuer),
        Kind::ClusterIssuer => spec!(ClusterIssuer),
        Kind::Certificate => spec!(Certificate),
        Kind::Namespace => spec!(Namespace),
        Kind::Service => spec!(Service),
        Kind::Secret => spec!(Secret),
        Kind::Deployment => spec!(Deployment),
        Kind::Pod => spec!(Pod),
        Kind::ServiceAccount => spec!(ServiceAccount),
        Kind::ConfigMap => spec!(ConfigMap),
        Kind::Telemetry => spec!(Telemetry),
        Kind::EnvoyFilter => spec!(EnvoyFilter),
        Kind::WasmPlugin => spec!(WasmPlugin),
        Kind::ProxyConfig => spec!(ProxyConfig),
        Kind::GrpcRoute => spec!(GrpcRoute),
        Kind::CustomResourceDefinition => spec!(CustomResourceDefinition),
        Kind::MutatingWebhookConfiguration => spec!(MutatingWebhookConfiguration),
        Kind::ValidatingWebhookConfiguration => spec!(ValidatingWebhookConfiguration),
    }
}

/// `a.b[0].c` from a `serde_path_to_error` path.
fn error_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// `a.b[0].c` from a `serde_ignored` path.
fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => join_key(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Rewrite `line N` in a YAML parser message (document lines) to file lines.
fn shift_lines(msg: &str, offset: u32) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("line ") {
        let (head, tail) = rest.split_at(i + "line ".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        match tail[..digits].parse::<u32>() {
            Ok(n) => out.push_str(&n.saturating_add(offset).to_string()),
            Err(_) => out.push_str(&tail[..digits]),
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Strip the offending value from a decoding message (used for Secrets).
fn redact(msg: &str) -> String {
    if msg.starts_with("missing field") || msg.starts_with("unknown field") {
        return msg.to_string();
    }
    match msg.find(", expected") {
        Some(i) => format!("invalid value (not shown for Secrets){}", &msg[i..]),
        None => "invalid value (not shown for Secrets)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_parser_lines() {
        assert_eq!(
            shift_lines(
                "bad at line 3 column 1, while parsing at line 1 column 2",
                10
            ),
            "bad at line 13 column 1, while parsing at line 11 column 2"
        );
        assert_eq!(shift_lines("no lines here", 5), "no lines here");
        assert_eq!(shift_lines("line x", 5), "line x");
    }

    #[test]
    fn redacts() {
        assert_eq!(
            redact("invalid type: integer `5`, expected a string"),
            "invalid value (not shown for Secrets), expected a string"
        );
        assert_eq!(redact("missing field `x`"), "missing field `x`");
    }

    #[test]
    fn list_items_load_with_their_lines() {
        let text = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: a\n  -   apiVersion: v1\n      kind: Namespace\n      metadata:\n        name: b\n";
        let l = load_str("f.yaml", text);
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        let names: Vec<(&str, u32)> = l
            .resources
            .iter()
            .map(|r| (r.name(), r.origin.line))
            .collect();
        assert_eq!(names, [("a", 4), ("b", 8)]);
        assert_eq!(l.resources[1].origin_at("metadata.name").line, 11);
    }

    #[test]
    fn joins() {
        assert_eq!(join_path("spec", ""), "spec");
        assert_eq!(join_path("spec", "a[0].b"), "spec.a[0].b");
        assert_eq!(join_path("", "data.x"), "data.x");
        assert_eq!(join_path("spec", "[1]"), "spec[1]");
    }
}
