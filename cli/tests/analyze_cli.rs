//! `isthmus analyze` as a shell pipeline uses it: output into a pipe closed early
//! ends quietly (no panic, no message on stderr).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // The Istio grid's testdata: many findings, more than a pipe's first read.
    let mut child = Command::new(env!("CARGO_BIN_EXE_isthmus"))
        .current_dir(root())
        .args(["analyze", "cli/tests/istio_analyzers/testdata"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run isthmus analyze");
    // Read one byte, then close our end, as `head -c 1` does.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let status = child.wait().expect("wait");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "stderr: {err}");
    // Findings at Error level: istioctl's exit code for issues found.
    assert_eq!(status.code(), Some(79), "{err}");
}
