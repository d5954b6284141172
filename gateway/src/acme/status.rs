//! The ACME manager's status files: per order (one per Secret),
//! `STATE/status/<namespace>.<secretName>.yaml`, a cert-manager `Certificate` with its
//! `status` (`Ready` condition, `notBefore`, `notAfter`, `renewalTime`,
//! `lastFailureTime`, `failedIssuanceAttempts`; the shape and the rendering are
//! `isthmus_model::certs::status`). Rewritten whole (temporary file, rename; mode
//! 0600 in a 0700 directory) at each change of what the worker does, so a reader
//! (`isthmus certs`) never sees half a file; removed when the order leaves the
//! configuration. The files hold no key material.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use isthmus_model::certs::status::{self, Progress, StatusDoc};
use isthmus_model::certs::AcmeOrder;
use tracing::warn;

use super::store::{private_dir, write_whole, StateDir};

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
        match write_status(&self.path, text.as_bytes()) {
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

/// Write `bytes` to `path` whole ([`write_whole`]), its directory created (0700) if
/// needed.
fn write_status(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    write_whole(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::store::tests::order;
    use isthmus_model::certs::status::Reason;
    use std::os::unix::fs::PermissionsExt;

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
