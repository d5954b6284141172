//! `isthmus analyze` as a user runs it: istioctl-style lines, exit codes, thresholds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run `isthmus analyze args...` from the repository root; (exit code, stdout).
fn analyze(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_isthmus"))
        .current_dir(root())
        .arg("analyze")
        .args(args)
        .output()
        .expect("run isthmus analyze");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_seed_demo_gets_only_istios_port_name_note() {
    // The seed's Service names no port: istioctl says IST0118 (Info) for it too
    // (Istio's `portNameNotFollowConvention` case); nothing else is found.
    let (code, out) = analyze(&["configs/demo"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["Info [IST0118] (Service default/todolist configs/demo/workloads.yaml:34) spec.ports[0]: \
          Port name  (port: 8000, targetPort: 8000) doesn't follow the naming convention of Istio port."],
        "{out}"
    );
}

#[test]
fn missing_gateway_is_an_error_with_file_line_and_exit_79() {
    let f = "testdata/istio-corpus/analyzer-cases/virtualservice_gateways.yaml";
    let (code, out) = analyze(&[f]);
    assert_eq!(code, 79, "{out}");
    let want = format!(
        "Error [IST0101] (VirtualService default/httpbin-bogus {f}:38) spec.gateways[0]: Referenced gateway not found: \"httpbin-gateway-bogus\""
    );
    assert!(
        out.lines().any(|l| l == want),
        "missing line:\n{want}\nin:\n{out}"
    );
    assert!(out.contains("Warning [IST0132]"), "{out}");
}

#[test]
fn the_seeds_certificate_slip_is_named() {
    let (code, out) = analyze(&["testdata/seed/seed-tls.yaml"]);
    assert_eq!(code, 79, "{out}");
    let slip = out
        .lines()
        .find(|l| {
            l.starts_with(
                "Warning [ISM0101] (Gateway default/todolist-gateway testdata/seed/seed-tls.yaml:",
            )
        })
        .unwrap_or_else(|| panic!("no ISM0101 line in:\n{out}"));
    assert!(
        slip.contains("\"istio-test-cert\"") && slip.contains("\"todolist-tls\""),
        "{slip}"
    );
    assert!(slip.contains("istio-system/todolist-cert"), "{slip}");
    assert!(
        out.contains("Error [IST0101] (Gateway default/todolist-gateway"),
        "{out}"
    );
}

#[test]
fn warnings_fail_only_with_failure_threshold_warning() {
    // IST0128 (Warning) and IST0174 (Warning) only.
    let f = "testdata/istio-corpus/analyzer-cases/destinationrule-simple-destination.yaml";
    let (code, out) = analyze(&[f]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Warning [IST0128]"), "{out}");
    let (code, _) = analyze(&["--failure-threshold", "Warning", f]);
    assert_eq!(code, 79);
    let (code, out) = analyze(&["--output-threshold", "Error", f]);
    assert_eq!(code, 0);
    assert!(out.contains("No validation issues found"), "{out}");
}

#[test]
fn broken_yaml_names_file_line_resource_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n      weight: ten\n",
    )
    .expect("write");
    let (code, out) = analyze(&[f.to_str().expect("utf-8 path")]);
    assert_eq!(code, 79, "{out}");
    let want = format!(
        "Error [IST0106] (VirtualService default/reviews {}:11) spec.http[0].route[0].weight:",
        f.display()
    );
    assert!(
        out.lines().any(|l| l.starts_with(&want)),
        "want a line starting with\n{want}\nin:\n{out}"
    );
}

#[test]
fn a_missing_path_is_a_clear_error() {
    let (code, _) = analyze(&["no/such/dir"]);
    assert_eq!(code, 1);
}
