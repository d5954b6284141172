//! `isthmus up configs/demo` end to end: the seed's canary through the real `curl`,
//! every hop from the gateway to the todolist pods over mTLS to their sidecars.

use std::path::Path;
use std::process::Command;

use isthmus_testkit::Up;

#[test]
fn up_configs_demo_serves_the_90_10_canary_through_strict_mtls_sidecars() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let state = tempfile::tempdir().expect("tempdir");
    let mut up = Up::start(
        Path::new(env!("CARGO_BIN_EXE_isthmus")),
        &root.join("configs/demo"),
        &["--state-dir", &state.path().display().to_string()],
    );
    // Gateway port 80 listens on 80 + 8000 locally.
    let addr = up.addr(80);
    assert_eq!(addr.port(), 8080);
    // Each sidecar's inbound address and identity are printed.
    for (v, inbound) in [("v1", "127.0.0.1:15100"), ("v2", "127.0.0.1:15102")] {
        up.proc.wait_for_all(
            std::time::Duration::from_secs(1),
            &[
                &format!("sidecar default/todolist-{v}: inbound {inbound}"),
                "identity spiffe://cluster.local/ns/default/sa/todolist (SYNCED)",
            ],
        );
    }
    let n = 1000;
    let out = Command::new("curl")
        .args(["-s", "--max-time", "60", &format!("http://{addr}/[1-{n}]")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let v1 = text.lines().filter(|l| *l == "todolist v1").count();
    let v2 = text.lines().filter(|l| *l == "todolist v2").count();
    assert_eq!(v1 + v2, n, "every request answered by v1 or v2");
    let share = v2 as f64 / n as f64;
    // Binomial(1000, 0.1): sd 0.0095; 4 sd either side.
    assert!(
        (0.062..=0.138).contains(&share),
        "v2 share {share} (v1 {v1}, v2 {v2})"
    );
    // The pods saw the gateway's identity on every request (mTLS, STRICT).
    let gateway_id =
        "URI=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    assert_eq!(text.matches(gateway_id).count(), n);

    // `isthmus proxy-status` finds the controller `up` started, without flags.
    let out = Command::new(env!("CARGO_BIN_EXE_isthmus"))
        .arg("proxy-status")
        .env(
            "ISTHMUS_RUNTIME_DIR",
            up.runtime_dir.as_ref().expect("the test's runtime dir"),
        )
        .output()
        .expect("proxy-status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CERT-EXPIRY"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[1..].iter().all(|l| l.contains("SYNCED")), "{table}");
    assert!(
        table.contains("todolist-v1") && table.contains("127.0.0.1:15100"),
        "{table}"
    );
}
