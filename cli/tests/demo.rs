//! `isthmus up configs/demo` end to end: the seed's canary through the real `curl`.

use std::path::Path;
use std::process::Command;

use isthmus_testkit::Up;

#[test]
fn up_configs_demo_serves_the_90_10_canary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let up = Up::start(
        Path::new(env!("CARGO_BIN_EXE_isthmus")),
        &root.join("configs/demo"),
        &[],
    );
    // Gateway port 80 listens on 80 + 8000 locally.
    let addr = up.addr(80);
    assert_eq!(addr.port(), 8080);
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
}
