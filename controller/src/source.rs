//! The file source: finds YAML files under the paths a user names and reads them.
//! The only module here that touches the file system for configuration.

use std::path::{Path, PathBuf};

use isthmus_model::load::{load_str, Loaded};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a YAML file or directory")]
    NotYaml { path: PathBuf },
}

/// One configuration file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The name findings print (the path as the user spelled it).
    pub fn display_name(&self) -> String {
        self.path.display().to_string()
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Every YAML file under `dir` (recursively, hidden entries skipped), sorted by path
/// so that load order, and with it route order across files, is stable.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| SourceError::Io {
            path: d.clone(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| SourceError::Io {
                path: d.clone(),
                source,
            })?;
            let p = e.path();
            if hidden(&p) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if is_yaml(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Read the files named by `paths` (files, or directories searched recursively).
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<SourceFile>, SourceError> {
    let mut files = Vec::new();
    for p in paths {
        let list = if p.is_dir() {
            yaml_files(p)?
        } else if p.is_file() || p.as_os_str() == "-" {
            vec![p.clone()]
        } else if !p.exists() {
            return Err(SourceError::Io {
                path: p.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        } else {
            return Err(SourceError::NotYaml { path: p.clone() });
        };
        for path in list {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&path)
            }
            .map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
            files.push(SourceFile { path, text });
        }
    }
    Ok(files)
}

/// Read and load everything under `paths` (as `isthmus analyze` does).
pub fn load_paths(paths: &[PathBuf]) -> Result<Loaded, SourceError> {
    let mut loaded = Loaded::default();
    for f in read_paths(paths)? {
        loaded.extend(load_str(&f.display_name(), &f.text));
    }
    Ok(loaded)
}
