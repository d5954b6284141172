//! `analyze` over the Istio corpus: every file of `testdata/istio-corpus/analyzer-cases`
//! must produce at least the IST codes INDEX.tsv says `istioctl analyze` reports for
//! it (the expectation is read from INDEX.tsv, not copied here), and every finding on
//! any corpus file must carry a code and level from `analyze::CODES`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use isthmus_model::analyze::{analyze, CODES};
use isthmus_model::load::load_str;
use isthmus_model::{Diagnostic, Level, Store};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/istio-corpus")
}

fn analyze_file(rel: &str) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let path = corpus().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let loaded = load_str(rel, &text);
    let store = Store::new(loaded.resources);
    (analyze(&store), loaded.diagnostics)
}

/// (file, expected codes) for every analyzer-cases row of INDEX.tsv.
fn expectations() -> Vec<(String, BTreeSet<String>)> {
    let index = std::fs::read_to_string(corpus().join("INDEX.tsv")).expect("INDEX.tsv");
    let mut out = Vec::new();
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(file), Some(what)) = (cols.first(), cols.get(3)) else {
            continue;
        };
        if !file.starts_with("analyzer-cases/") {
            continue;
        }
        let Some((_, expects)) = what.split_once("istioctl analyze expects:") else {
            panic!("{file}: INDEX.tsv row has no expectation");
        };
        let codes: BTreeSet<String> = expects
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| {
                w.len() == 7 && w.starts_with("IST") && w[3..].chars().all(|c| c.is_ascii_digit())
            })
            .map(str::to_string)
            .collect();
        assert!(!codes.is_empty(), "{file}: no IST code in {expects:?}");
        out.push((file.to_string(), codes));
    }
    out
}

#[test]
fn analyzer_cases_report_what_istioctl_reports() {
    let cases = expectations();
    let listed: BTreeSet<String> = std::fs::read_dir(corpus().join("analyzer-cases"))
        .expect("analyzer-cases")
        .filter_map(|e| e.ok())
        .map(|e| format!("analyzer-cases/{}", e.file_name().to_string_lossy()))
        .collect();
    let indexed: BTreeSet<String> = cases.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(
        listed, indexed,
        "every analyzer case must have an INDEX.tsv row"
    );

    let mut failures = Vec::new();
    for (file, expected) in &cases {
        let (findings, load) = analyze_file(file);
        let load_errors: Vec<String> = load
            .iter()
            .filter(|d| d.level == Level::Error)
            .map(|d| d.to_string())
            .collect();
        assert!(
            load_errors.is_empty(),
            "{file} did not load cleanly:\n{}",
            load_errors.join("\n")
        );
        let got: BTreeSet<&str> = findings.iter().map(|d| d.code).collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|c| !got.contains(c.as_str()))
            .collect();
        if !missing.is_empty() {
            let all: Vec<String> = findings.iter().map(|d| d.to_string()).collect();
            failures.push(format!(
                "{file}: missing {missing:?}; got:\n  {}",
                all.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_finding_has_a_registered_code_and_level() {
    let mut files = Vec::new();
    for dir in [
        "analyzer-cases",
        "istio-samples",
        "istio-io",
        "istio-testdata",
        "authz-builder",
    ] {
        let Ok(entries) = std::fs::read_dir(corpus().join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.sort();
    assert!(files.len() > 20, "corpus not found: {files:?}");
    let mut seen = 0;
    for file in &files {
        let (findings, _) = analyze_file(file);
        for d in &findings {
            println!("{d}"); // `--nocapture` shows what analyze says about the corpus
            seen += 1;
            let entry = CODES.iter().find(|(c, _, _)| *c == d.code);
            let Some((_, _, level)) = entry else {
                panic!("{file}: code {} is not in analyze::CODES: {d}", d.code);
            };
            assert_eq!(*level, d.level, "{file}: wrong level: {d}");
            assert!(
                d.resource.is_some() && d.origin.is_some() && d.field.is_some(),
                "{file}: {d}"
            );
        }
    }
    assert!(seen > 0, "no findings at all on the corpus");
}

#[test]
fn codes_table_is_consistent() {
    let mut codes = BTreeSet::new();
    for (code, name, _) in CODES {
        assert!(codes.insert(*code), "duplicate code {code}");
        assert!(
            (code.starts_with("IST") || code.starts_with("ISM")) && code.len() == 7,
            "bad code {code}"
        );
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "bad name {name}"
        );
    }
}
