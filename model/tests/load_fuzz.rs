//! Robustness: `load_str` + `validate` never panic, whatever the bytes. Every corpus
//! file is fed truncated at every 7th byte and garbled with deterministic byte
//! substitutions (a small linear congruential generator; no `rand`).

use std::path::{Path, PathBuf};

use isthmus_model::load::load_str;
use isthmus_model::resources::Store;
use isthmus_model::validate::validate;

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/istio-corpus");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("corpus directory") {
            let path = entry.expect("corpus entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Load and validate; returns how many resources survived (to keep the work observable).
fn run(name: &str, bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let loaded = load_str(name, &text);
    let n = loaded.resources.len();
    let findings = validate(&Store::new(loaded.resources));
    // Rendering every finding exercises Display and the position lookups.
    let rendered: usize = findings.iter().map(|d| d.to_string().len()).sum();
    n + usize::from(rendered == usize::MAX)
}

/// Byte offsets where documents start (after each `---` / `...` line, and 0).
fn document_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    let mut line_start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            let line = String::from_utf8_lossy(&bytes[line_start..i]);
            let line = line.trim_end();
            if line == "---" || line.starts_with("--- ") || line == "..." {
                starts.push(i + 1);
            }
            line_start = i + 1;
        }
    }
    starts
}

/// Each cut is loaded from the start of the document it falls in: the documents
/// before it are byte-identical to the whole file's, which is loaded once in full.
/// This keeps the test fast in debug builds without losing any truncation point.
#[test]
fn truncated_files_never_panic() {
    let mut runs = 0;
    for f in corpus_files() {
        let bytes = std::fs::read(&f).expect("read corpus file");
        let name = f.display().to_string();
        run(&name, &bytes);
        let starts = document_starts(&bytes);
        for cut in (0..bytes.len()).step_by(7) {
            let start = starts
                .iter()
                .copied()
                .filter(|s| *s <= cut)
                .max()
                .unwrap_or(0);
            run(&name, &bytes[start..cut]);
            runs += 1;
        }
    }
    assert!(runs > 10_000, "only {runs} truncations");
}

/// Characters that change YAML structure when they land in the wrong place.
const NASTY: &[u8] = b":-\n #[]{},&*!|>'\"%@`?\t\\0\xff";

#[test]
fn garbled_files_never_panic() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut runs = 0;
    for f in corpus_files() {
        let original = std::fs::read(&f).expect("read corpus file");
        if original.is_empty() {
            continue;
        }
        let name = f.display().to_string();
        for round in 0..24 {
            let mut bytes = original.clone();
            for _ in 0..=(round % 4) {
                let at = next() % bytes.len();
                bytes[at] = NASTY[next() % NASTY.len()];
            }
            run(&name, &bytes);
            runs += 1;
        }
    }
    assert!(runs > 1_500, "only {runs} garbled inputs");
}
