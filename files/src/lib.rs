//! isthmus-files: the one way isthmus writes a file that holds a secret or must
//! never be read half-written (private keys, issued certificates, bootstrap
//! tokens, ACME challenges and status): [`write_private`] writes a hidden temporary
//! file in the same directory with mode 0600, syncs it, renames it over the target
//! and syncs the directory, so a reader sees the old file or the new one, never a
//! part; [`private_dir`] creates directories with mode 0700. Used by the
//! controller (mesh CA, tokens), the gateway's ACME store and the engine's shared
//! challenge directory.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Create `dir` and its missing parents with mode 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write `bytes` to `path` whole, mode 0600 (see the crate header). The directory
/// must exist ([`private_dir`]); the temporary file is removed when any step fails.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // The process id keeps two writers (replicas sharing a directory) apart.
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A temporary file left behind keeps its mode through `open`: set it again.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is synced.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_with_mode_0600_and_no_temporary_file_left() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        private_dir(&sub).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = sub.join("key.pem");
        write_private(&f, b"one").unwrap();
        write_private(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["key.pem"]);
        // A missing directory is an error, and nothing is left behind.
        assert!(write_private(&dir.path().join("none/x"), b"x").is_err());
    }
}
