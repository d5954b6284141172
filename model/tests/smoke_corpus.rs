//! Temporary smoke check while the loader grows: every corpus file loads without errors.
#[test]
fn corpus_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/istio-corpus");
    let mut n = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() { continue; }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().map_or(true, |e| e != "yaml") { continue; }
            let text = std::fs::read_to_string(&f).unwrap();
            let l = isthmus_model::load::load_str(&f.display().to_string(), &text);
            for d in &l.diagnostics { println!("{d}"); }
            n += 1;
        }
    }
    assert!(n >= 70, "{n}");
}
