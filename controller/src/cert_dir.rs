//! The certificate directory (`isthmus up --cert-dir CERTS`, or `ISTHMUS_CERT_DIR`):
//! PEM certificates and keys made elsewhere (a mounted volume, another tool) served as
//! `kubernetes.io/tls` Secrets, so that a Gateway names them with `credentialName` as
//! it would in Istio.
//!
//! # The rule
//!
//! - `CERTS/<name>.crt` (the certificate, then its chain) and `CERTS/<name>.key` (its
//!   private key) make Secret `istio-system/<name>` with keys `tls.crt` and `tls.key`:
//!   `istio-system` is where the local gateway workload runs, and where Istio reads
//!   `credentialName` Secrets. `CERTS/<namespace>/<name>.crt` and `.key` make Secret
//!   `<namespace>/<name>` (for a gateway workload of another namespace). Deeper
//!   directories, hidden entries and other files are ignored.
//! - `<name>.ca.crt`, or else `ca.crt` of the same directory, is added to the Secret as
//!   `ca.crt` (the client CA of a MUTUAL server). A `<name>.ca.crt` alone makes a
//!   Secret holding only `ca.crt` (for `caCertCredentialName` or `<x>-cacert`).
//! - `<name>` must be a Secret name (lower-case letters, digits, `-` and `.`) and
//!   `<namespace>` a namespace name (no `.`); other names are ignored with a warning.
//!
//! Each pair is checked with [`isthmus_model::pem`], the checks `isthmus analyze` and
//! the compiler make, before it is taken: a file that is not PEM, a missing key file or
//! a key that is not the certificate's is an error naming the file, and the Secret
//! keeps its last good version, so a pair replaced one file at a time swaps once both
//! files are written (a Secret that was never good is not served). A key file readable
//! by group or others is warned about, as ssh does. Keys are read, never logged.
//! Which source wins when several hold the same Secret: see [`crate::local`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use isthmus_model::compile::ROOT_NAMESPACE;
use isthmus_model::pem;
use isthmus_model::resources::core::SecretData;
use isthmus_model::resources::ObjectMeta;
use isthmus_model::{Kind, Origin, Resource, Spec};

use crate::source::{read_cert_dir, CertFile, SourceError};

/// The Secrets of a certificate directory, with the last good version of each.
#[derive(Debug)]
pub struct CertDir {
    dir: PathBuf,
    /// By (namespace, name).
    entries: BTreeMap<(String, String), Entry>,
    /// Warnings about files that make no Secret, as last reported (reported once).
    ignored: BTreeSet<String>,
}

#[derive(Debug)]
struct Entry {
    /// The files as last looked at: unchanged files are not checked (nor reported)
    /// again.
    seen: Seen,
    good: Option<Resource>,
}

/// What an entry's check depends on. `Debug` shows sizes only.
#[derive(Clone, Default, PartialEq, Eq)]
struct Seen {
    crt: Option<(PathBuf, Vec<u8>)>,
    key: Option<(PathBuf, Vec<u8>, u32)>,
    ca: Option<(PathBuf, Vec<u8>)>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("crt", &self.crt.as_ref().map(|(p, _)| p))
            .field("key", &self.key.as_ref().map(|(p, _, _)| p))
            .field("ca", &self.ca.as_ref().map(|(p, _)| p))
            .finish()
    }
}

/// What one [`CertDir::apply`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertDirReport {
    /// Secrets added, replaced or removed.
    pub changed: Vec<String>,
    /// Files that cannot serve (each reported once, when it changes).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl CertDir {
    /// An empty state for directory `dir`; [`CertDir::reload`] reads it.
    pub fn new(dir: &Path) -> CertDir {
        CertDir {
            dir: dir.to_path_buf(),
            entries: BTreeMap::new(),
            ignored: BTreeSet::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read the directory and [`CertDir::apply`] its files.
    pub fn reload(&mut self) -> Result<CertDirReport, SourceError> {
        Ok(self.apply(read_cert_dir(&self.dir)?))
    }

    /// Take the full current list of files of the directory.
    pub fn apply(&mut self, files: Vec<CertFile>) -> CertDirReport {
        let mut report = CertDirReport::default();
        let (found, ignored) = group(&files);
        for w in &ignored {
            if !self.ignored.contains(w) {
                report.warnings.push(w.clone());
            }
        }
        self.ignored = ignored;

        let gone: Vec<(String, String)> = self
            .entries
            .keys()
            .filter(|k| !found.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(Entry { good: Some(_), .. }) = self.entries.remove(&k) {
                report.changed.push(format!("Secret {}/{}", k.0, k.1));
            }
        }
        for ((ns, name), seen) in found {
            let entry = self
                .entries
                .entry((ns.clone(), name.clone()))
                .or_insert(Entry {
                    seen: Seen::default(),
                    good: None,
                });
            if entry.seen == seen {
                continue;
            }
            let secret_ref = format!("Secret {ns}/{name}");
            match check(&ns, &name, &seen, &mut report.warnings) {
                Ok(secret) => {
                    if entry.good.as_ref() != Some(&secret) {
                        report.changed.push(secret_ref);
                    }
                    entry.good = Some(secret);
                }
                Err(why) => {
                    let then = if entry.good.is_some() {
                        format!("{secret_ref} keeps its last good certificate")
                    } else {
                        format!("{secret_ref} is not served")
                    };
                    report.errors.push(format!("{why}; {then}"));
                }
            }
            entry.seen = seen;
        }
        report
    }

    /// The Secrets in effect (the last good version of each), by namespace and name.
    pub fn secrets(&self) -> Vec<Resource> {
        self.entries
            .values()
            .filter_map(|e| e.good.clone())
            .collect()
    }
}

/// The files of `files` by the Secret they make, and warnings about the files that
/// make none.
fn group(files: &[CertFile]) -> (BTreeMap<(String, String), Seen>, BTreeSet<String>) {
    let mut ignored = BTreeSet::new();
    // The directory-wide `ca.crt`, by directory (`None`: the top).
    let mut dir_ca: BTreeMap<Option<&str>, &CertFile> = BTreeMap::new();
    let mut out: BTreeMap<(String, String), Seen> = BTreeMap::new();
    // The directory each Secret's files come from: one only. Subdirectories first, so
    // `istio-system/x.crt` wins over a top-level `x.crt`.
    let mut from: BTreeMap<(String, String), Option<&str>> = BTreeMap::new();
    let mut ordered: Vec<&CertFile> = files.iter().collect();
    ordered.sort_by_key(|f| (f.subdir.is_none(), &f.path));
    for f in ordered {
        let dir = f.subdir.as_deref();
        let ns = dir.unwrap_or(ROOT_NAMESPACE);
        if !is_namespace_name(ns) {
            ignored.insert(format!(
                "{}: {ns:?} is not a namespace name (lower-case letters, digits and '-'); ignored",
                f.path.display()
            ));
            continue;
        }
        if f.name == "ca.crt" {
            dir_ca.insert(dir, f);
            continue;
        }
        let (name, part) = if let Some(n) = f.name.strip_suffix(".ca.crt") {
            (n, Part::Ca)
        } else if let Some(n) = f.name.strip_suffix(".crt") {
            (n, Part::Crt)
        } else if let Some(n) = f.name.strip_suffix(".key") {
            (n, Part::Key)
        } else {
            continue;
        };
        if !is_secret_name(name) {
            ignored.insert(format!(
                "{}: {name:?} is not a Secret name (lower-case letters, digits, '-' and '.'); ignored",
                f.path.display()
            ));
            continue;
        }
        let k = (ns.to_string(), name.to_string());
        if from.get(&k).is_some_and(|d| *d != dir) {
            ignored.insert(format!(
                "{}: Secret {ns}/{name} is made by the files of subdirectory {ns}; ignored",
                f.path.display()
            ));
            continue;
        }
        from.insert(k.clone(), dir);
        let seen = out.entry(k).or_default();
        match part {
            Part::Crt => seen.crt = Some((f.path.clone(), f.bytes.clone())),
            Part::Key => seen.key = Some((f.path.clone(), f.bytes.clone(), f.mode)),
            Part::Ca => seen.ca = Some((f.path.clone(), f.bytes.clone())),
        }
    }
    for (k, seen) in &mut out {
        if seen.ca.is_none() && seen.crt.is_some() {
            let ca = from.get(k).and_then(|d| dir_ca.get(d));
            seen.ca = ca.map(|f| (f.path.clone(), f.bytes.clone()));
        }
    }
    (out, ignored)
}

#[derive(Clone, Copy)]
enum Part {
    Crt,
    Key,
    Ca,
}

/// The Secret the files `seen` make, or why they make none. Warnings (a key readable
/// by others) are added to `warnings`.
fn check(
    ns: &str,
    name: &str,
    seen: &Seen,
    warnings: &mut Vec<String>,
) -> Result<Resource, String> {
    let mut data = SecretData {
        type_: Some("kubernetes.io/tls".to_string()),
        ..SecretData::default()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let origin = match (&seen.crt, &seen.key) {
        (Some((crt, cert)), Some((key_path, key, mode))) => {
            let (c, k) = (crt.display().to_string(), key_path.display().to_string());
            let pair =
                pem::parse_pair(cert.clone(), key.clone(), &c, &k).map_err(|e| e.to_string())?;
            pair.check_key().map_err(|e| format!("{c} and {k}: {e}"))?;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "{k}: permissions {mode:04o} are too open: the private key is readable by {}; chmod 600 it",
                    if mode & 0o007 != 0 { "others" } else { "its group" }
                ));
            }
            data.string_data.insert("tls.crt".into(), text(cert));
            data.string_data.insert("tls.key".into(), text(key));
            crt.clone()
        }
        (Some((crt, _)), None) => {
            return Err(format!("{}: no {name}.key beside it", crt.display()))
        }
        (None, Some((key, _, _))) => {
            return Err(format!("{}: no {name}.crt beside it", key.display()))
        }
        (None, None) => match &seen.ca {
            Some((ca, _)) => ca.clone(),
            None => return Err(format!("no files for Secret {ns}/{name}")),
        },
    };
    if let Some((path, ca)) = &seen.ca {
        pem::check_certificates(ca, &path.display().to_string()).map_err(|e| e.to_string())?;
        data.string_data.insert("ca.crt".into(), text(ca));
    }
    let meta = ObjectMeta {
        name: name.to_string(),
        namespace: Some(ns.to_string()),
        ..ObjectMeta::default()
    };
    let origin = Origin {
        file: Arc::from(origin.display().to_string()),
        line: 1,
    };
    Ok(Resource::new(
        "v1",
        Kind::Secret,
        meta,
        Spec::Secret(data),
        origin,
    ))
}

/// A Kubernetes object name (RFC 1123 subdomain): lower-case letters, digits, `-`
/// and `.`, starting and ending with a letter or digit, at most 253 characters.
fn is_secret_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 253
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// A namespace name (RFC 1123 label): as [`is_secret_name`] without `.`, at most 63.
fn is_namespace_name(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_secret_name(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(file: &str) -> Vec<u8> {
        let path = format!("{}/../testdata/pem/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A file of `/certs` (in subdirectory `subdir`) with the bytes of `from`
    /// (a testdata/pem file, or literal bytes when it has no extension).
    fn file(subdir: Option<&str>, name: &str, from: &str, mode: u32) -> CertFile {
        let path = match subdir {
            Some(d) => format!("/certs/{d}/{name}"),
            None => format!("/certs/{name}"),
        };
        let bytes = if from.contains('.') {
            pem(from)
        } else {
            from.as_bytes().to_vec()
        };
        CertFile {
            path: PathBuf::from(path),
            subdir: subdir.map(str::to_string),
            name: name.to_string(),
            bytes,
            mode,
        }
    }

    fn secret<'a>(d: &'a CertDir, ns: &str, name: &str) -> Option<&'a SecretData> {
        d.entries
            .get(&(ns.to_string(), name.to_string()))
            .and_then(|e| e.good.as_ref())
            .and_then(|r| match &r.spec {
                Spec::Secret(s) => Some(s),
                _ => None,
            })
    }

    #[test]
    fn pairs_become_tls_secrets_by_the_naming_rule() {
        let mut d = CertDir::new(Path::new("/certs"));
        let r = d.apply(vec![
            file(None, "a.crt", "ec-a.crt", 0o644),
            file(None, "a.key", "ec-a.key", 0o600),
            file(None, "ca.crt", "ec-b.crt", 0o644),
            file(None, "r.crt", "rsa.crt", 0o644),
            file(None, "r.key", "rsa.pkcs1.key", 0o600),
            file(None, "r.ca.crt", "rsa.crt", 0o644),
            file(Some("web"), "b.crt", "ec-b.crt", 0o644),
            file(Some("web"), "b.key", "ec-b.key", 0o400),
            file(Some("web"), "clients.ca.crt", "ec-a.crt", 0o644),
            file(None, "README", "not a certificate", 0o644),
        ]);
        assert_eq!(r.errors, Vec::<String>::new());
        assert_eq!(r.warnings, Vec::<String>::new());
        assert_eq!(
            r.changed,
            [
                "Secret istio-system/a",
                "Secret istio-system/r",
                "Secret web/b",
                "Secret web/clients"
            ]
        );
        let a = secret(&d, "istio-system", "a").expect("a");
        assert_eq!(a.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(a.get("tls.crt"), Some(pem("ec-a.crt")));
        assert_eq!(a.get("tls.key"), Some(pem("ec-a.key")));
        // The directory's ca.crt, unless the pair has its own.
        assert_eq!(a.get("ca.crt"), Some(pem("ec-b.crt")));
        let r = secret(&d, "istio-system", "r").expect("r");
        assert_eq!(r.get("ca.crt"), Some(pem("rsa.crt")));
        let b = secret(&d, "web", "b").expect("b");
        assert_eq!(b.get("ca.crt"), None, "ca.crt of the top is not web's");
        let clients = secret(&d, "web", "clients").expect("CA only");
        assert_eq!(clients.keys().collect::<Vec<_>>(), ["ca.crt"]);
        let origins: Vec<String> = d.secrets().iter().map(|r| r.origin.to_string()).collect();
        assert_eq!(
            origins,
            [
                "/certs/a.crt:1",
                "/certs/r.crt:1",
                "/certs/web/b.crt:1",
                "/certs/web/clients.ca.crt:1"
            ]
        );

        // Files removed: their Secrets go; a loses the directory's ca.crt.
        let again = d.apply(vec![
            file(None, "a.crt", "ec-a.crt", 0o644),
            file(None, "a.key", "ec-a.key", 0o600),
        ]);
        assert_eq!(
            again.changed,
            [
                "Secret istio-system/r",
                "Secret web/b",
                "Secret web/clients",
                "Secret istio-system/a"
            ]
        );
        assert_eq!(
            secret(&d, "istio-system", "a").and_then(|a| a.get("ca.crt")),
            None
        );
        // Nothing changed: nothing reported.
        assert_eq!(
            d.apply(vec![
                file(None, "a.crt", "ec-a.crt", 0o644),
                file(None, "a.key", "ec-a.key", 0o600),
            ]),
            CertDirReport::default()
        );
    }

    #[test]
    fn a_bad_pair_is_reported_once_naming_the_file_and_the_last_good_one_serves() {
        let mut d = CertDir::new(Path::new("/certs"));
        let garbled = "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n";
        let files = |key: CertFile| {
            vec![
                file(None, "a.crt", "ec-a.crt", 0o644),
                key,
                file(None, "ok.crt", "ec-b.crt", 0o644),
                file(None, "ok.key", "ec-b.key", 0o600),
            ]
        };
        let r = d.apply(files(file(None, "a.key", garbled, 0o600)));
        assert_eq!(
            r.errors,
            [
                "/certs/a.key is not valid PEM: the PRIVATE KEY block is not base64 DER; \
              Secret istio-system/a is not served"
            ]
        );
        assert_eq!(r.changed, ["Secret istio-system/ok"]);
        assert!(secret(&d, "istio-system", "a").is_none());
        // Still garbled: not reported again.
        assert_eq!(
            d.apply(files(file(None, "a.key", garbled, 0o600))),
            CertDirReport::default()
        );

        let r = d.apply(files(file(None, "a.key", "ec-a.key", 0o600)));
        assert_eq!(
            (r.changed, r.errors),
            (vec!["Secret istio-system/a".to_string()], vec![])
        );

        // The key of another certificate (a pair replaced one file at a time): the
        // last good pair keeps serving.
        let r = d.apply(files(file(None, "a.key", "ec-b.key", 0o600)));
        assert_eq!(
            r.errors,
            [
                "/certs/a.crt and /certs/a.key: the private key does not match the certificate; \
              Secret istio-system/a keeps its last good certificate"
            ]
        );
        assert!(r.changed.is_empty());
        let a = secret(&d, "istio-system", "a").expect("last good");
        assert_eq!(a.get("tls.key"), Some(pem("ec-a.key")));
        // A key file gone for a moment: the same.
        let r = d.apply(vec![file(None, "a.crt", "ec-a.crt", 0o644)]);
        assert_eq!(
            r.errors,
            ["/certs/a.crt: no a.key beside it; Secret istio-system/a keeps its last good certificate"]
        );
        assert!(secret(&d, "istio-system", "a").is_some());
    }

    #[test]
    fn keys_open_to_others_and_odd_names_are_warned_about_once() {
        let mut d = CertDir::new(Path::new("/certs"));
        let files = || {
            vec![
                file(None, "a.crt", "ec-a.crt", 0o644),
                file(None, "a.key", "ec-a.key", 0o644),
                file(None, "Upper.crt", "ec-a.crt", 0o644),
                file(Some("a.b"), "x.crt", "ec-a.crt", 0o644),
                file(Some("istio-system"), "b.crt", "ec-b.crt", 0o644),
                file(Some("istio-system"), "b.key", "ec-b.key", 0o640),
                file(None, "b.crt", "ec-a.crt", 0o644),
            ]
        };
        let r = d.apply(files());
        assert_eq!(
            r.warnings,
            [
                "/certs/Upper.crt: \"Upper\" is not a Secret name (lower-case letters, digits, '-' and '.'); ignored",
                "/certs/a.b/x.crt: \"a.b\" is not a namespace name (lower-case letters, digits and '-'); ignored",
                "/certs/b.crt: Secret istio-system/b is made by the files of subdirectory istio-system; ignored",
                "/certs/a.key: permissions 0644 are too open: the private key is readable by others; chmod 600 it",
                "/certs/istio-system/b.key: permissions 0640 are too open: the private key is readable by its group; chmod 600 it",
            ]
        );
        assert_eq!(r.errors, Vec::<String>::new());
        let b = secret(&d, "istio-system", "b").expect("b");
        assert_eq!(b.get("tls.crt"), Some(pem("ec-b.crt")));
        assert_eq!(d.apply(files()), CertDirReport::default());
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let mut d = CertDir::new(Path::new("/certs"));
        let key = file(None, "a.key", "ec-a.key", 0o600);
        let body = String::from_utf8_lossy(&key.bytes)
            .lines()
            .nth(1)
            .expect("a body line")
            .to_string();
        assert!(!format!("{key:?}").contains(&body));
        d.apply(vec![file(None, "a.crt", "ec-a.crt", 0o644), key]);
        assert!(secret(&d, "istio-system", "a").is_some());
        assert!(!format!("{d:?}").contains(&body), "{d:?}");
    }
}
