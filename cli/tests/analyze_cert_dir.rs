//! `isthmus analyze --cert-dir`: the certificate directory `up --cert-dir` serves
//! from counts as a Secret source for the analyzers, and its unusable files fail
//! the run like an Error finding.

use std::process::Command;

use isthmus_testkit::pki::TestCa;
use isthmus_testkit::ConfigDir;

const BIN: &str = env!("CARGO_BIN_EXE_isthmus");

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.test]
    tls: {mode: SIMPLE, credentialName: a-cert}
"#;

fn analyze(dir: &ConfigDir, certs: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("analyze")
        .arg(dir.path())
        .env_remove("ISTHMUS_CERT_DIR");
    if let Some(c) = certs {
        cmd.arg("--cert-dir").arg(c);
    }
    let out = cmd.output().expect("run isthmus analyze");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn analyze_reads_the_cert_dir_as_a_secret_source() {
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", GATEWAY);
    // Without the directory the Secret is missing: IST0101, exit 79.
    let (code, out) = analyze(&dir, None);
    assert_eq!(code, 79, "{out}");
    assert!(out.contains("IST0101") && out.contains("a-cert"), "{out}");

    let ca = TestCa::new();
    let leaf = ca.leaf(&["a.test"], 5);
    let certs = tempfile::tempdir().expect("tempdir");
    std::fs::write(certs.path().join("a-cert.crt"), &leaf.cert).expect("crt");
    std::fs::write(certs.path().join("a-cert.key"), &leaf.key).expect("key");
    let (code, out) = analyze(&dir, Some(certs.path()));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("IST0101"), "{out}");

    // A key that is not PEM: reported naming the file, and the run fails.
    std::fs::write(certs.path().join("a-cert.key"), "garbled").expect("key");
    let (code, out) = analyze(&dir, Some(certs.path()));
    assert_eq!(code, 79, "{out}");
    assert!(
        out.contains("Error [cert-dir]") && out.contains("a-cert.key"),
        "{out}"
    );
}
