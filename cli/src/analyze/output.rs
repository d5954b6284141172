//! `-o log|json|yaml`: findings printed as `istioctl analyze` prints its messages.
//!
//! `log` is one line per finding (`Error [IST0101] (Kind ns/name file:line) ...`),
//! the level coloured as istioctl colours it when asked. `json` and `yaml` are a
//! list of istioctl's message objects (its `diag.Message` marshalling): `code`,
//! `level`, `message`, `documentationUrl` (Istio codes only), and for a finding
//! about a resource `origin` (`Kind namespace/name`) and `reference`
//! (`file:line`). isthmus adds `file`, `line` and `field` (the field path) where it
//! knows them. Keys are in alphabetical order, as Go writes a map; JSON is indented
//! with tabs, as istioctl's `json.MarshalIndent(.., "", "\t")`. No findings: `[]`.

use std::io::{self, Write};

use isthmus_model::{Diagnostic, Level};
use serde::Serialize;

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Log,
    Json,
    Yaml,
}

impl Format {
    /// Parse `-o`; case-insensitive, as istioctl lower-cases it.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "log" => Ok(Format::Log),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            _ => Err(format!(
                "{s} not a valid option for format: one of log, json, yaml"
            )),
        }
    }
}

/// Where istioctl's documentation of an analysis code is (`url.ConfigAnalysis`,
/// with the `?ref=istioctl-analyze` istioctl adds), for the latest Istio docs.
const DOCS: &str = "https://istio.io/latest/docs/reference/config/analysis";

/// One message as istioctl marshals it, plus isthmus' `field`, `file` and `line`.
/// Fields in alphabetical order of their keys (Go sorts map keys).
#[derive(Serialize, Debug)]
struct Message<'a> {
    code: &'a str,
    #[serde(rename = "documentationUrl", skip_serializing_if = "Option::is_none")]
    documentation_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

impl<'a> Message<'a> {
    fn of(d: &'a Diagnostic) -> Message<'a> {
        let is_istio = d.code.len() == 7
            && d.code.starts_with("IST")
            && d.code[3..].bytes().all(|b| b.is_ascii_digit());
        let file = d.origin.as_ref().map(|o| &*o.file);
        let line = d.origin.as_ref().map(|o| o.line).filter(|l| *l > 0);
        // istioctl writes `origin` and `reference` only for a message on a resource;
        // the reference leaves the line out for JSON files.
        let reference = match (&d.resource, &d.origin) {
            (Some(_), Some(o)) if o.file.ends_with(".json") || o.line == 0 => {
                Some(o.file.to_string())
            }
            (Some(_), Some(o)) => Some(o.to_string()),
            _ => None,
        };
        Message {
            code: d.code,
            documentation_url: is_istio.then(|| {
                format!(
                    "{DOCS}/{}/?ref=istioctl-analyze",
                    d.code.to_ascii_lowercase()
                )
            }),
            field: d.field.as_deref(),
            file,
            level: d.level.as_str(),
            line,
            message: &d.message,
            origin: d.resource.as_deref(),
            reference,
        }
    }
}

/// Whether log lines are coloured by default: standard output is a terminal and
/// `TERM` is not `dumb` (istioctl's `IstioctlColorDefault`).
pub fn color_default() -> bool {
    let dumb = std::env::var("TERM").is_ok_and(|t| t.eq_ignore_ascii_case("dumb"));
    !dumb && io::IsTerminal::is_terminal(&io::stdout())
}

/// Print `shown` to `out` in `format`.
pub fn print(
    out: &mut impl Write,
    shown: &[&Diagnostic],
    format: Format,
    color: bool,
) -> io::Result<()> {
    match format {
        Format::Log => shown.iter().try_for_each(|d| {
            if color {
                writeln!(out, "{}", colored(d))
            } else {
                writeln!(out, "{d}")
            }
        }),
        Format::Json => {
            let messages: Vec<Message<'_>> = shown.iter().map(|d| Message::of(d)).collect();
            let mut ser = serde_json::Serializer::with_formatter(
                &mut *out,
                serde_json::ser::PrettyFormatter::with_indent(b"\t"),
            );
            messages.serialize(&mut ser).map_err(io::Error::other)?;
            writeln!(out)
        }
        Format::Yaml => {
            let messages: Vec<Message<'_>> = shown.iter().map(|d| Message::of(d)).collect();
            let text = serde_yaml_ng::to_string(&messages).map_err(io::Error::other)?;
            out.write_all(text.as_bytes())
        }
    }
}

/// A log line with its level coloured: Warning yellow, Error bold red, Info plain.
fn colored(d: &Diagnostic) -> String {
    let plain = d.to_string();
    let prefix = match d.level {
        Level::Info => return plain,
        Level::Warning => "\x1b[33m",
        Level::Error => "\x1b[1;31m",
    };
    let level = d.level.as_str();
    format!("{prefix}{level}\x1b[0m{}", &plain[level.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::Origin;

    fn finding() -> Diagnostic {
        Diagnostic::new(
            Level::Error,
            "IST0101",
            "Referenced gateway not found: \"gw\"",
        )
        .at(Origin {
            file: "vs.yaml".into(),
            line: 12,
        })
        .field("spec.gateways[0]")
    }

    #[test]
    fn json_has_istioctls_keys_and_isthmus_extras() {
        let mut d = finding();
        d.resource = Some("VirtualService default/vs".into());
        let mut out = Vec::new();
        print(&mut out, &[&d], Format::Json, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("[\n\t{\n\t\t\"code\": \"IST0101\",\n"),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let m = &v[0];
        assert_eq!(m["origin"], "VirtualService default/vs");
        assert_eq!(m["reference"], "vs.yaml:12");
        assert_eq!(
            m["documentationUrl"],
            "https://istio.io/latest/docs/reference/config/analysis/ist0101/?ref=istioctl-analyze"
        );
        assert_eq!(m["field"], "spec.gateways[0]");
        assert_eq!(m["line"], 12);
    }

    #[test]
    fn no_resource_no_origin_or_reference_and_isthmus_codes_have_no_url() {
        let mut d = finding();
        d.code = "ISM0106";
        let m = serde_json::to_value(Message::of(&d)).unwrap();
        assert!(
            m.get("origin").is_none() && m.get("reference").is_none(),
            "{m}"
        );
        assert!(m.get("documentationUrl").is_none(), "{m}");
        assert_eq!(m["file"], "vs.yaml");
    }

    #[test]
    fn empty_is_an_empty_list() {
        for (f, want) in [(Format::Json, "[]\n"), (Format::Yaml, "[]\n")] {
            let mut out = Vec::new();
            print(&mut out, &[], f, false).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn color_wraps_only_the_level() {
        let d = finding();
        assert!(colored(&d).starts_with("\x1b[1;31mError\x1b[0m [IST0101]"));
    }
}
