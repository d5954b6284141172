//! The configuration state: the last good resources of every file. A file whose new
//! content has an Error finding (load or validation) is rejected as a whole and its
//! previous good version keeps serving; every other file's change applies.

use std::collections::BTreeMap;
use std::path::PathBuf;

use isthmus_model::load::load_str;
use isthmus_model::{validate, Diagnostic, Level, Resource, Store};

use crate::source::SourceFile;

#[derive(Debug, Default)]
struct FileState {
    text: String,
    good: Vec<Resource>,
}

/// What one [`ConfigState::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Files whose content changed and was accepted.
    pub accepted: Vec<PathBuf>,
    /// Files whose new content was rejected (the previous version, if any, still applies).
    pub rejected: Vec<PathBuf>,
    /// Files that disappeared.
    pub removed: Vec<PathBuf>,
    /// Every finding of the changed files (errors of rejected files included).
    pub diagnostics: Vec<Diagnostic>,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        !self.accepted.is_empty() || !self.removed.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct ConfigState {
    files: BTreeMap<PathBuf, FileState>,
}

impl ConfigState {
    /// Take the full current list of files; only files whose text changed are loaded.
    pub fn apply(&mut self, files: Vec<SourceFile>) -> ApplyReport {
        let mut report = ApplyReport::default();
        let present: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for p in gone {
            self.files.remove(&p);
            report.removed.push(p);
        }
        for f in files {
            if self.files.get(&f.path).is_some_and(|s| s.text == f.text) {
                continue;
            }
            let loaded = load_str(&f.display_name(), &f.text);
            let mut diags = loaded.diagnostics;
            diags.extend(validate::validate(&Store::new(loaded.resources.clone())));
            let bad = diags.iter().any(|d| d.level == Level::Error);
            report.diagnostics.extend(diags);
            let entry = self.files.entry(f.path.clone()).or_default();
            if bad {
                // Remember the text so an unchanged bad file is not re-reported, but
                // keep serving the last good resources.
                entry.text = f.text;
                report.rejected.push(f.path);
            } else {
                entry.text = f.text;
                entry.good = loaded.resources;
                report.accepted.push(f.path);
            }
        }
        report
    }

    /// The resources in effect, in file order.
    pub fn store(&self) -> Store {
        Store::new(
            self.files
                .values()
                .flat_map(|f| f.good.iter().cloned())
                .collect(),
        )
    }
}
