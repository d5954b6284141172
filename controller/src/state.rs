//! The configuration state: the last good resources of every file. A resource whose
//! new version has an Error finding (load or validation) is rejected alone: its
//! previous good version, if any, keeps serving and the rest of the file applies. A
//! file that cannot be split into resources at all (broken YAML) is rejected whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use isthmus_model::load::load_str;
use isthmus_model::validate::validate_resource;
use isthmus_model::{Diagnostic, Level, Resource};

use crate::source::SourceFile;

#[derive(Debug, Default)]
struct FileState {
    text: String,
    good: Vec<Resource>,
}

/// What one [`ConfigState::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Files whose content changed and was accepted, at least in part.
    pub accepted: Vec<PathBuf>,
    /// Files whose new content was rejected whole (the previous version still applies).
    pub rejected: Vec<PathBuf>,
    /// Resources (`Kind ns/name`) whose new version was rejected.
    pub rejected_resources: Vec<String>,
    /// Files that disappeared.
    pub removed: Vec<PathBuf>,
    /// Every finding of the changed files.
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
        let present: BTreeSet<&PathBuf> = files.iter().map(|f| &f.path).collect();
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
            for r in &loaded.resources {
                diags.extend(validate_resource(r));
            }
            let errors: Vec<&Diagnostic> =
                diags.iter().filter(|d| d.level == Level::Error).collect();
            let whole_file = errors.iter().any(|d| d.resource.is_none());
            let bad: BTreeSet<String> = errors.iter().filter_map(|d| d.resource.clone()).collect();
            let entry = self.files.entry(f.path.clone()).or_default();
            // Remember the text either way, so an unchanged bad file is not re-reported.
            entry.text = f.text;
            if whole_file {
                report.rejected.push(f.path);
            } else {
                let mut old: BTreeMap<String, Resource> = entry
                    .good
                    .drain(..)
                    .map(|r| (r.display_ref(), r))
                    .filter(|(k, _)| bad.contains(k))
                    .collect();
                // In document order: a rejected resource keeps its last good version,
                // placed where its new (bad) document stands.
                let line_of_bad = |key: &str| {
                    errors
                        .iter()
                        .filter(|d| d.resource.as_deref() == Some(key))
                        .filter_map(|d| d.origin.as_ref().map(|o| o.line))
                        .min()
                        .unwrap_or(u32::MAX)
                };
                let mut good: Vec<(u32, Resource)> = Vec::with_capacity(loaded.resources.len());
                for r in loaded.resources {
                    let key = r.display_ref();
                    if !bad.contains(&key) {
                        good.push((r.origin.line, r));
                    } else if let Some(prev) = old.remove(&key) {
                        good.push((r.origin.line, prev));
                    }
                }
                good.extend(old.into_iter().map(|(k, r)| (line_of_bad(&k), r)));
                good.sort_by_key(|(line, _)| *line);
                let good: Vec<Resource> = good.into_iter().map(|(_, r)| r).collect();
                entry.good = good;
                report.rejected_resources.extend(bad);
                report.accepted.push(f.path);
            }
            report.diagnostics.extend(diags);
        }
        report
    }

    /// The resources in effect, in file order.
    pub fn store(&self) -> isthmus_model::Store {
        isthmus_model::Store::new(
            self.files
                .values()
                .flat_map(|f| f.good.iter().cloned())
                .collect(),
        )
    }
}
