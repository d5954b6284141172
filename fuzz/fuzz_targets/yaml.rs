//! Fuzz target `yaml`: what `isthmus analyze FILE` runs on a file's text: the YAML
//! loader (`isthmus_model::load::load_str`: documents, typed resources, positions),
//! then schema validation (`validate::validate`) and the analyzers at a fixed time
//! (`analyze::analyze_at`, which also compiles every gateway's snapshot).
//!
//! Input: the text of one YAML file (not UTF-8: skipped, as the CLI refuses such a
//! file before loading). Run with `-max_len=65536`: longer configurations are
//! legitimately slow to analyze.
//!
//! Asserted: no panic; every finding names the file it was given, at a line of the
//! text (or the one after its end), and prints; every resource loaded comes from
//! that file, at a line of the text.

#![no_main]

use isthmus_model::{analyze, load, validate, Store};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz/input.yaml";

/// 2026-01-02T00:00:00Z: the analyzers' clock (certificate validity).
const NOW: i64 = 1_767_312_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Lines as YAML 1.1 counts them: LF, CRLF, a lone CR, NEL, LS and PS each end
    // one. A finding may point at the line after the last one: the YAML parser
    // places the end of a text without a final line break there.
    let breaks = text
        .replace("\r\n", "\n")
        .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .count();
    let lines = u32::try_from(breaks).unwrap_or(u32::MAX);
    let max_line = lines.saturating_add(2);

    let loaded = load::load_str(FILE, text);
    for r in &loaded.resources {
        assert_eq!(&*r.origin.file, FILE);
        assert!(
            r.origin.line >= 1 && r.origin.line <= max_line,
            "{}",
            r.origin
        );
    }
    let mut findings = loaded.diagnostics;
    let store = Store::new(loaded.resources);
    findings.extend(validate::validate(&store));
    findings.extend(analyze::analyze_at(&store, NOW));
    for d in &findings {
        let origin = d.origin.as_ref();
        assert!(origin.is_some(), "a finding without its file: {d}");
        if let Some(o) = origin {
            assert_eq!(&*o.file, FILE, "{d}");
            assert!(
                o.line >= 1 && o.line <= max_line,
                "line {} of {lines}: {d}",
                o.line
            );
        }
        assert!(!d.to_string().is_empty());
    }
});
