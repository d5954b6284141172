//! Findings: load errors, validation errors and analyzer messages, with Istio's IST
//! codes and levels, printed the way `istioctl analyze` prints them.

use std::fmt;

use crate::resources::{Origin, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Ordered so that `Error` is the most severe (largest).
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }

    /// Parse `--failure-threshold` / `--output-threshold` values (case-insensitive).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding. `code` is an Istio code (`IST0101`) or, for findings Istio has no
/// code for, an isthmus code (`ISM....`), documented in `analyze::CODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub code: &'static str,
    /// `Kind namespace/name`, when the finding is about one resource.
    pub resource: Option<String>,
    /// File and line of the offending field (or of the resource when no field applies).
    pub origin: Option<Origin>,
    /// Field path, e.g. `spec.http[2].route[0].weight`.
    pub field: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(level: Level, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            level,
            code,
            resource: None,
            origin: None,
            field: None,
            message: message.into(),
        }
    }

    /// Attach the resource (its `Kind ns/name` and its origin).
    pub fn on(mut self, r: &Resource) -> Self {
        self.resource = Some(r.display_ref());
        if self.origin.is_none() {
            self.origin = Some(r.origin.clone());
        }
        self
    }

    pub fn at(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    pub fn field(mut self, path: impl Into<String>) -> Self {
        self.field = Some(path.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    /// `Error [IST0101] (VirtualService default/reviews file.yaml:12) message`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level, self.code)?;
        match (&self.resource, &self.origin) {
            (Some(r), Some(o)) => write!(f, " ({r} {o})")?,
            (Some(r), None) => write!(f, " ({r})")?,
            (None, Some(o)) => write!(f, " ({o})")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, " {field}:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// Sort findings for stable output: by file, line, then code.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| (&a.origin, a.code, &a.message).cmp(&(&b.origin, b.code, &b.message)));
}
