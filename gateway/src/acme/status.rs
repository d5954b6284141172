//! The ACME manager's status files: per order (one per Secret),
//! `STATE/status/<namespace>.<secretName>.yaml`, a cert-manager `Certificate` with its
//! `status` (`Ready` condition, `notBefore`, `notAfter`, `renewalTime`,
//! `lastFailureTime`, `failedIssuanceAttempts`; the shape and the rendering are
//! `isthmus_model::certs::status`). Rewritten whole (temporary file, rename; mode
//! 0600 in a 0700 directory) at each change of what the worker does, so a reader
//! (`isthmus certs`) never sees half a file; removed when the order leaves the
//! configuration. The files hold no key material.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use isthmus_model::certs::status::{self, Progress, StatusDoc};
use isthmus_model::certs::AcmeOrder;
use tracing::warn;

use super::store::StateDir;

/// `STATE/status`.
pub fn status_dir(state: &StateDir) -> PathBuf {
    state.root().join("status")
}

/// The status file of `order`.
pub fn status_path(state: &StateDir, order: &AcmeOrder) -> PathBuf {
    status_dir(state).join(status::file_name(order))
}

/// The status document written for `order`: `None` when there is none, `Err` when
/// it cannot be read or parsed.
pub fn read_status(state: &StateDir, order: &AcmeOrder) -> Option<Result<StatusDoc, String>> {
    let path = status_path(state, order);
    match fs::read_to_string(&path) {
        Ok(text) => Some(status::parse(&text).map_err(|e| format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!("{}: {e}", path.display()))),
    }
}

/// Remove `order`'s status file (the order is no longer configured).
pub fn remove_status(state: &StateDir, order: &AcmeOrder) {
    let path = status_path(state, order);
    if let Err(e) = fs::remove_file(&path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!("acme: removing {}: {e}", path.display());
        }
    }
}

/// One worker's status: what it tracks, and the file it keeps up to date.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    order: AcmeOrder,
    /// The status; change it, then [`StatusFile::write`].
    pub progress: Progress,
    /// The text last written (nothing is rewritten when it is unchanged).
    written: Option<String>,
    /// A write failure was logged (logged once until a write succeeds).
    failing: bool,
}

impl StatusFile {
    pub fn new(state: &StateDir, order: &AcmeOrder, now: i64) -> StatusFile {
        StatusFile {
            path: status_path(state, order),
            order: order.clone(),
            progress: Progress::new(now),
            written: None,
            failing: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the status when it changed. A failure is logged (once) and does not
    /// stop the worker: the status is informational.
    pub fn write(&mut self) {
        let text = status::render(&self.order, &self.progress);
        if self.written.as_deref() == Some(text.as_str()) {
            return;
        }
        match write_whole(&self.path, text.as_bytes()) {
            Ok(()) => {
                self.written = Some(text);
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    warn!("acme: cannot write the status {}: {e}", self.path.display());
                    self.failing = true;
                }
            }
        }
    }
}

/// Write `bytes` to `path` whole: a hidden temporary file in the same directory
/// (created 0700 if needed), mode 0600, synced, then renamed over `path`.
fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::certs::acme_orders;
    use isthmus_model::certs::status::Reason;
    use isthmus_model::load::load_str;
    use isthmus_model::Store;
    use std::os::unix::fs::PermissionsExt;

    fn order() -> AcmeOrder {
        let yaml = r#"
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: le}
spec:
  acme:
    server: https://127.0.0.1:14000/dir
    privateKeySecretRef: {name: le}
    solvers: [{http01: {ingress: {class: istio}}}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: c, namespace: istio-system}
spec:
  secretName: c-tls
  issuerRef: {name: le, kind: ClusterIssuer}
  dnsNames: [a.test]
"#;
        let (mut orders, _) = acme_orders(&Store::new(load_str("t.yaml", yaml).resources));
        orders.remove(0)
    }

    #[test]
    fn status_files_are_written_on_change_read_back_and_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(&tmp.path().join("state"));
        let o = order();
        assert!(read_status(&state, &o).is_none());
        let mut f = StatusFile::new(&state, &o, 0);
        f.progress.set(false, Reason::Ordering, "ordering", 5);
        f.write();
        assert!(f.path().ends_with("status/istio-system.c-tls.yaml"));
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(f.path()), 0o600);
        assert_eq!(mode(&status_dir(&state)), 0o700);
        let doc = read_status(&state, &o).expect("file").expect("parse");
        let ready = doc.status.ready().expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Ordering")
        );

        // Unchanged: not rewritten (a file put there meanwhile stays).
        fs::write(f.path(), "kind: [").expect("write");
        f.write();
        assert!(read_status(&state, &o).expect("file").is_err());
        f.progress.set(true, Reason::Issued, "up to date", 9);
        f.write();
        let doc = read_status(&state, &o).expect("file").expect("parse");
        assert_eq!(doc.status.ready().expect("Ready").status, "True");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(status_dir(&state))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("istio-system.c-tls.yaml")]);

        remove_status(&state, &o);
        assert!(read_status(&state, &o).is_none());
        remove_status(&state, &o);
    }
}
