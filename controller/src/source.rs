//! The file sources: finds YAML files under the paths a user names and reads them,
//! and reads the `.crt`/`.key` files of a certificate directory as bytes (with their
//! permissions). The only module here that touches the file system for
//! configuration; [`crate::cert_dir`] makes Secrets of the certificate files.

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
    yaml_files_skipping(dir, &[])
}

/// [`yaml_files`] without the directories `skip` (canonical paths): the state and
/// certificate directories when they sit inside the config directory.
fn yaml_files_skipping(dir: &Path, skip: &[PathBuf]) -> Result<Vec<PathBuf>, SourceError> {
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
                let skipped = !skip.is_empty() && p.canonicalize().is_ok_and(|c| skip.contains(&c));
                if !skipped {
                    stack.push(p);
                }
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
    read_paths_skipping(paths, &[])
}

/// [`read_paths`], leaving out the directories `skip` wherever they appear below
/// the directories of `paths` (the state directory is not configuration, even
/// when it sits inside the config directory).
pub fn read_paths_skipping(
    paths: &[PathBuf],
    skip: &[PathBuf],
) -> Result<Vec<SourceFile>, SourceError> {
    let skip: Vec<PathBuf> = skip.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let mut files = Vec::new();
    for p in paths {
        let list = if p.is_dir() {
            yaml_files_skipping(p, &skip)?
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

/// One file of a certificate directory, as read. `Debug` shows no contents: a key
/// is read, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct CertFile {
    pub path: PathBuf,
    /// The subdirectory it is in (a namespace), or `None` at the top.
    pub subdir: Option<String>,
    /// The file name.
    pub name: String,
    pub bytes: Vec<u8>,
    /// Unix permission bits (`0o640`...); of the target of a symbolic link.
    pub mode: u32,
}

impl std::fmt::Debug for CertFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFile")
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

fn is_cert_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("crt") | Some("key")
    )
}

/// The `.crt` and `.key` files of a certificate directory: in `dir` itself and in its
/// direct subdirectories, hidden entries skipped (so a Kubernetes volume's `..data`
/// is read through the links beside it), sorted by path. Symbolic links are followed.
pub fn read_cert_dir(dir: &Path) -> Result<Vec<CertFile>, SourceError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Io { path, source }
    };
    let mut out = Vec::new();
    let mut dirs = vec![(dir.to_path_buf(), None)];
    while let Some((d, subdir)) = dirs.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let p = e.map_err(io(&d))?.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if hidden(&p) {
                continue;
            }
            if p.is_dir() {
                if subdir.is_none() {
                    dirs.push((p, Some(name)));
                }
                continue;
            }
            if !is_cert_file(&p) {
                continue;
            }
            // A file replaced by delete-and-write can be gone for a moment: it is read
            // again with the next change.
            let read = std::fs::metadata(&p).and_then(|m| Ok((m, std::fs::read(&p)?)));
            let (meta, bytes) = match read {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&p)(e)),
            };
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                meta.permissions().mode() & 0o7777
            };
            out.push(CertFile {
                path: p,
                subdir: subdir.clone(),
                name,
                bytes,
                mode,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
