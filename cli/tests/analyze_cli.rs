//! `isthmus analyze` as scripts use it: istioctl's command line (`-o json|yaml`,
//! `-S`, `-n`/`-A`, `-L`, `--meshConfigFile`, `--color`, `--use-kube=false`) and
//! exit codes, and output into a pipe closed early ending quietly (no panic, no
//! message on stderr).

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

// istioctl's command line (`istioctl analyze`, istioctl/pkg/analyze/analyze.go):
// -o, -S, -n/-A, -L, --meshConfigFile and its exit codes.

/// Three VirtualServices naming gateways that do not exist: `testing/reviews`,
/// `ratings` without a namespace, and `testing/quiet` whose annotation suppresses
/// IST0101 on it.
const VIRTUAL_SERVICES: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: testing
spec:
  hosts: [reviews.example.com]
  gateways: [missing-gw]
  http:
  - route:
    - destination:
        host: reviews
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings.example.com]
  gateways: [other-gw]
  http:
  - route:
    - destination:
        host: ratings
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: quiet
  namespace: testing
  annotations:
    galley.istio.io/analyze-suppress: IST0101
spec:
  hosts: [quiet.example.com]
  gateways: [quiet-gw]
  http:
  - route:
    - destination:
        host: quiet
";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `isthmus analyze ARGS...` in `dir`.
fn analyze_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_isthmus"))
        .current_dir(dir)
        .arg("analyze")
        .args(args)
        .env_remove("ISTHMUS_CERT_DIR")
        .output()
        .expect("run isthmus analyze");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary directory holding `vs.yaml`.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("vs.yaml"), VIRTUAL_SERVICES).expect("write");
    dir
}

/// (code, resource) of each log line.
fn pairs(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let code = l.split_once('[')?.1.split_once(']')?.0;
            let res = l.split_once('(')?.1.split_once(" vs.yaml")?.0;
            Some((code.to_string(), res.to_string()))
        })
        .collect()
}

fn has(stdout: &str, code: &str, resource: &str) -> bool {
    pairs(stdout)
        .iter()
        .any(|(c, r)| c == code && r == resource)
}

#[test]
fn json_output_has_istioctls_message_keys() {
    let dir = fixture();
    let run = analyze_in(dir.path(), &["-o", "json", "vs.yaml"]);
    // istioctl sets exit code 79 for log output only.
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("[\n\t{"),
        "tab-indented: {}",
        run.stdout
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let list = v.as_array().expect("a list");
    let m = list
        .iter()
        .find(|m| m["code"] == "IST0101" && m["origin"] == "VirtualService testing/reviews")
        .unwrap_or_else(|| panic!("no IST0101 on testing/reviews in {v:#}"));
    assert_eq!(m["level"], "Error");
    assert_eq!(m["message"], "Referenced gateway not found: \"missing-gw\"");
    assert_eq!(m["reference"], "vs.yaml:8");
    assert_eq!(
        m["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/?ref=istioctl-analyze"
    );
    // isthmus' extras.
    assert_eq!(m["file"], "vs.yaml");
    assert_eq!(m["line"], 8);
    assert_eq!(m["field"], "spec.gateways[0]");
    let keys: Vec<&String> = m.as_object().expect("object").keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys in Go's map order");
    // The annotation suppressed IST0101 on testing/quiet, not IST0132.
    assert!(!list
        .iter()
        .any(|m| m["code"] == "IST0101" && m["origin"] == "VirtualService testing/quiet"));
    assert!(list
        .iter()
        .any(|m| m["code"] == "IST0132" && m["origin"] == "VirtualService testing/quiet"));
}

#[test]
fn yaml_output_parses_back_to_the_same_messages() {
    let dir = fixture();
    let json = analyze_in(dir.path(), &["-o", "json", "vs.yaml"]);
    let yaml = analyze_in(dir.path(), &["--output", "YAML", "vs.yaml"]);
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    let from_yaml: serde_json::Value = serde_yaml_ng::from_str(&yaml.stdout).expect("YAML");
    let from_json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(from_yaml, from_json);
    assert!(yaml.stdout.starts_with("- code: "), "{}", yaml.stdout);
}

#[test]
fn no_findings_is_an_empty_list_and_the_note_goes_to_stderr() {
    for format in ["json", "yaml"] {
        // The seed's one Info (IST0118 on its unnamed Service port) suppressed.
        let run = analyze_in(
            &root(),
            &[
                "-o",
                format,
                "-S",
                "IST0118=Service todolist.default",
                "configs/demo",
            ],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout, "[]\n", "{format}");
        let parsed: serde_json::Value = if format == "json" {
            serde_json::from_str(&run.stdout).expect("JSON")
        } else {
            serde_yaml_ng::from_str(&run.stdout).expect("YAML")
        };
        assert_eq!(parsed, serde_json::json!([]));
        assert!(
            run.stderr.contains("No validation issues found"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn suppress_by_exact_name_istioctl_form_and_wildcard() {
    let dir = fixture();
    let all = analyze_in(dir.path(), &["vs.yaml"]);
    assert_eq!(all.code, 79);
    assert!(has(
        &all.stdout,
        "IST0101",
        "VirtualService testing/reviews"
    ));
    assert!(has(
        &all.stdout,
        "IST0101",
        "VirtualService default/ratings"
    ));
    for spelling in [
        "IST0101=VirtualService testing/reviews",
        "IST0101=VirtualService reviews.testing",
        "IST0101=VirtualService *.testing",
        "IST0101=VirtualService testing/*",
    ] {
        let run = analyze_in(dir.path(), &["-S", spelling, "vs.yaml"]);
        assert!(
            !has(&run.stdout, "IST0101", "VirtualService testing/reviews"),
            "{spelling}: {}",
            run.stdout
        );
        // Other codes on it and the code on other resources stay.
        assert!(has(
            &run.stdout,
            "IST0132",
            "VirtualService testing/reviews"
        ));
        assert!(has(
            &run.stdout,
            "IST0101",
            "VirtualService default/ratings"
        ));
    }
    // Every Error suppressed: the Warnings left do not fail the run.
    let run = analyze_in(
        dir.path(),
        &["--suppress", "IST0101=VirtualService *", "vs.yaml"],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(!run.stdout.contains("IST0101"), "{}", run.stdout);
    assert!(run.stdout.contains("IST0132"), "{}", run.stdout);
    // The code is matched exactly, as istioctl does (no wildcard there).
    let run = analyze_in(dir.path(), &["-S", "IST01*=VirtualService *", "vs.yaml"]);
    assert!(run.stdout.contains("IST0101"), "{}", run.stdout);
    assert!(
        run.stderr.contains("'IST01*' is an unknown message code"),
        "{}",
        run.stderr
    );
}

#[test]
fn namespace_flag_defaults_and_filters_and_all_namespaces_does_not() {
    let dir = fixture();
    // -n testing: `ratings` (no namespace) is analyzed in `testing`.
    let run = analyze_in(dir.path(), &["-n", "testing", "vs.yaml"]);
    assert_eq!(run.code, 79);
    assert!(has(
        &run.stdout,
        "IST0101",
        "VirtualService testing/ratings"
    ));
    assert!(has(
        &run.stdout,
        "IST0101",
        "VirtualService testing/reviews"
    ));
    assert!(!run.stdout.contains("default/"), "{}", run.stdout);
    // -n other: only `ratings`, now in `other`.
    let run = analyze_in(dir.path(), &["--namespace", "other", "vs.yaml"]);
    let resources: std::collections::BTreeSet<String> =
        pairs(&run.stdout).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        resources.into_iter().collect::<Vec<_>>(),
        ["VirtualService other/ratings"],
        "{}",
        run.stdout
    );
    // -A with -n: every namespace reported, namespace-less resources in the -n one.
    let run = analyze_in(dir.path(), &["-A", "-n", "other", "vs.yaml"]);
    assert!(has(&run.stdout, "IST0101", "VirtualService other/ratings"));
    assert!(has(
        &run.stdout,
        "IST0101",
        "VirtualService testing/reviews"
    ));
    // Neither: all namespaces, as isthmus always did.
    let run = analyze_in(dir.path(), &["vs.yaml"]);
    assert!(has(
        &run.stdout,
        "IST0101",
        "VirtualService default/ratings"
    ));
    assert!(has(
        &run.stdout,
        "IST0101",
        "VirtualService testing/reviews"
    ));
    // JSON shows the same namespace.
    let run = analyze_in(dir.path(), &["-n", "elsewhere", "-o", "json", "vs.yaml"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(v
        .as_array()
        .expect("list")
        .iter()
        .all(|m| m["origin"] == "VirtualService elsewhere/ratings"));
}

#[test]
fn list_analyzers_names_istioctls_analyzers_and_codes() {
    let run = analyze_in(&root(), &["-L"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let at = run
        .stdout
        .find("* virtualservice.DestinationHostAnalyzer:\n")
        .unwrap_or_else(|| panic!("{}", run.stdout));
    let block: Vec<&str> = run.stdout[at..].lines().take(3).collect();
    assert!(block[1].starts_with("    "), "{block:?}");
    assert!(block[2].contains("IST0101"), "{block:?}");
    assert!(run.stdout.contains("* gateway.SecretAnalyzer:"));
    // Sorted by name, as istioctl prints them.
    let names: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("* "))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn mesh_config_file_is_read_and_a_bad_one_names_file_and_line() {
    let dir = fixture();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "trustDomain: example.org\nrootNamespace: istio-system\nenableTracing: true\n",
    )
    .expect("write");
    let run = analyze_in(dir.path(), &["--meshConfigFile", "mesh.yaml", "vs.yaml"]);
    assert_eq!(run.code, 79, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    std::fs::write(
        dir.path().join("bad.yaml"),
        "trustDomain: example.org\nrootNamespace: [istio-system]\n",
    )
    .expect("write");
    let run = analyze_in(dir.path(), &["--meshConfigFile", "bad.yaml", "vs.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("--meshConfigFile bad.yaml: line 2: field rootNamespace:"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    let run = analyze_in(dir.path(), &["--meshConfigFile", "missing.yaml", "vs.yaml"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("missing.yaml"), "{}", run.stderr);
}

#[test]
fn exit_codes_are_istioctls() {
    let dir = fixture();
    // Issues at the threshold: 79 (log output).
    assert_eq!(analyze_in(dir.path(), &["vs.yaml"]).code, 79);
    // Only Warnings at or above it once Errors are suppressed; --failure-threshold
    // Warning makes them count.
    let s = ["-S", "IST0101=*", "vs.yaml"];
    assert_eq!(analyze_in(dir.path(), &s).code, 0);
    let mut w = vec!["--failure-threshold", "warning"];
    w.extend(s);
    assert_eq!(analyze_in(dir.path(), &w).code, 79);
    // A command line that does not parse: 64 (ExitIncorrectUsage).
    for bad in [
        &["--no-such-flag", "vs.yaml"][..],
        &["-o", "xml", "vs.yaml"],
        &["--failure-threshold", "Fatal", "vs.yaml"],
        &[],
    ] {
        let run = analyze_in(dir.path(), bad);
        assert_eq!(run.code, 64, "{bad:?}: {}", run.stderr);
    }
    // Other errors: 1.
    let run = analyze_in(dir.path(), &["-S", "IST0101", "vs.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("not a valid suppression value"),
        "{}",
        run.stderr
    );
    assert_eq!(analyze_in(dir.path(), &["no/such/file.yaml"]).code, 1);
    // istioctl's file-only switch is accepted.
    assert_eq!(
        analyze_in(dir.path(), &["--use-kube=false", "vs.yaml"]).code,
        79
    );
    assert_eq!(analyze_in(dir.path(), &["-k=false", "vs.yaml"]).code, 79);
}

#[test]
fn color_only_when_asked_or_on_a_terminal() {
    let dir = fixture();
    let plain = analyze_in(dir.path(), &["vs.yaml"]);
    assert!(!plain.stdout.contains('\x1b'), "{}", plain.stdout);
    let colored = analyze_in(dir.path(), &["--color", "vs.yaml"]);
    assert!(
        colored.stdout.contains("\x1b[1;31mError\x1b[0m [IST0101]"),
        "{}",
        colored.stdout
    );
    let off = analyze_in(dir.path(), &["--color=false", "vs.yaml"]);
    assert!(!off.stdout.contains('\x1b'));
}
