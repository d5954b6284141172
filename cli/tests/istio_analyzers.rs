//! Istio's own analyzer test grid (`cli/tests/istio_analyzers/`, see its README)
//! run through the analysis `isthmus analyze` does (`load_paths`, `validate`,
//! `analyze_at`), with the Istio harness's semantics: a case's files at once, no
//! default namespace (`Kind name`), system namespaces dropped, Istio's default
//! ingress gateway Pod and Service added in `istio-system`.
//!
//! Per case only the IST findings of codes that case's analyzer can emit are
//! compared, as a multiset of (code, resource); ISM codes never are. The test
//! prints a line per case and the totals, writes them to `RESULTS.md`, and is a
//! ratchet: every case listed in `passing.txt` must still pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use isthmus_model::{analyze, load::load_str, validate, Diagnostic, Store};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/istio_analyzers")
}

/// Codes an analyzer emits beyond those its grid cases expect (from Istio's
/// analyzer sources, `analyze-codes.md`).
const EXTRA_CODES: &[(&str, &[&str])] = &[
    ("gateway.ConflictingGatewayAnalyzer", &["IST0101"]),
    (
        "schemaValidation.CollectionValidationAnalyzer(collections.VirtualService)",
        &["IST0106", "IST0133"],
    ),
    (
        "virtualservice.GatewayAnalyzer",
        &["IST0101", "IST0132", "IST0165"],
    ),
    (
        "destinationrule.PodNotSelectedAnalyzer",
        &["IST0173", "IST0174"],
    ),
];

/// Istio's analyzer for an IST0101 finding of isthmus (several analyzers emit it),
/// told by the resource kind and the field; `None` when isthmus cannot say.
fn ist0101_analyzer(d: &Diagnostic) -> Option<&'static str> {
    let kind = d.resource.as_deref()?.split(' ').next()?;
    let field = d.field.as_deref().unwrap_or("");
    Some(match kind {
        "VirtualService" if field.contains("gateways") => "virtualservice.GatewayAnalyzer",
        "VirtualService" if field.ends_with(".subset") => "virtualservice.DestinationRuleAnalyzer",
        "VirtualService" => "virtualservice.DestinationHostAnalyzer",
        "Gateway" if field.contains("credentialName") => "gateway.SecretAnalyzer",
        "Gateway" => "gateway.IngressGatewayPortAnalyzer",
        "AuthorizationPolicy" => "authz.AuthorizationPoliciesAnalyzer",
        "Sidecar" => "sidecar.SelectorAnalyzer",
        "Telemetry" => "telemetry.SelectorAnalyzer",
        _ => return None,
    })
}

/// Whether isthmus's finding `d` can come from Istio analyzer `analyzer`.
fn from_analyzer(d: &Diagnostic, analyzer: &str) -> bool {
    if d.code == "IST0002" {
        // Telemetry: the Lightstep analyzer; other kinds: the deprecated fields one.
        let telemetry = d
            .resource
            .as_deref()
            .is_some_and(|r| r.starts_with("Telemetry "));
        return if telemetry {
            analyzer == "telemetry.LightstepAnalyzer"
        } else {
            analyzer == "deprecation.FieldAnalyzer"
        };
    }
    if d.code != "IST0101" {
        return true;
    }
    match ist0101_analyzer(d) {
        Some(a) => {
            a == analyzer
                // Three of Istio's gateway analyzers report a selector that
                // matches no workload, in the same words (istioctl prints it once).
                || (d.field.as_deref() == Some("spec.selector")
                    && [
                        "gateway.ConflictingGatewayAnalyzer",
                        "gateway.SecretAnalyzer",
                        "gateway.IngressGatewayPortAnalyzer",
                    ]
                    .contains(&analyzer))
        }
        None => true,
    }
}

const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// What Istio's `AddDefaultResources` adds: the ingress gateway Pod and Service.
const DEFAULT_INGRESS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-dummypod
  namespace: istio-system
  labels:
    istio: ingressgateway
spec:
  containers:
  - name: istio-proxy
    image: proxyv2
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  ports:
  - name: http2
    port: 80
    targetPort: 80
  - name: https
    port: 443
    targetPort: 443
  - name: tcp
    port: 31400
    targetPort: 31400
  - name: tls
    port: 15443
    targetPort: 15443
";

struct Outcome {
    index: u64,
    name: String,
    analyzer: String,
    implemented: bool,
    skipped: Option<&'static str>,
    expected: usize,
    reported: usize,
    missing: Vec<(String, String)>,
    extra: Vec<(String, String)>,
}

impl Outcome {
    fn key(&self) -> String {
        format!("{:03} {}", self.index, self.name)
    }
    fn passes(&self) -> bool {
        self.skipped.is_none() && self.missing.is_empty() && self.extra.is_empty()
    }
}

/// The (code, resource) pairs isthmus reports for a case's files.
fn run_case(files: &[PathBuf], mesh: &analyze::MeshSettings) -> Vec<Diagnostic> {
    let loaded = isthmus_controller::load_paths(files).expect("read case files");
    let mut resources = loaded.resources;
    let mut findings = loaded.diagnostics;
    let defaults = load_str("<istio defaults>", DEFAULT_INGRESS);
    assert!(
        defaults.diagnostics.is_empty(),
        "{:?}",
        defaults.diagnostics
    );
    resources.extend(defaults.resources);
    resources.retain(|r| !SYSTEM_NAMESPACES.contains(&r.namespace()));
    // No default namespace in Istio's harness: namespace-less resources print as
    // `Kind name`. isthmus puts them in `default`; map their names back.
    let unnamespaced: BTreeSet<String> = resources
        .iter()
        .filter(|r| r.meta.namespace.is_none() && !r.kind.cluster_scoped())
        .map(|r| r.display_ref())
        .collect();
    let store = Store::new(resources);
    findings.extend(validate::validate(&store));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    findings.extend(analyze::analyze_with(&store, Some(now), mesh));
    for d in &mut findings {
        if let Some(r) = &d.resource {
            if unnamespaced.contains(r) {
                if let Some((kind, rest)) = r.split_once(' ') {
                    let name = rest.strip_prefix("default/").unwrap_or(rest);
                    d.resource = Some(format!("{kind} {name}"));
                }
            }
        }
        if let Some(r) = &d.resource {
            let ns = r
                .split_once(' ')
                .and_then(|(_, n)| n.split_once('/'))
                .map(|(ns, _)| ns);
            if ns.is_some_and(|ns| SYSTEM_NAMESPACES.contains(&ns)) {
                d.code = "ISM-DROPPED";
            }
        }
    }
    findings
}

/// (code, resource).
type Pair = (String, String);

/// (expected found, expected missing, reported but not expected).
fn multiset_diff(expected: &[Pair], reported: &[Pair]) -> (usize, Vec<Pair>, Vec<Pair>) {
    let mut left: BTreeMap<&Pair, usize> = BTreeMap::new();
    for r in reported {
        *left.entry(r).or_default() += 1;
    }
    let mut found = 0;
    let mut missing = Vec::new();
    for e in expected {
        match left.get_mut(e) {
            Some(n) if *n > 0 => {
                *n -= 1;
                found += 1;
            }
            _ => missing.push(e.clone()),
        }
    }
    let mut extra = Vec::new();
    for (k, n) in left {
        for _ in 0..n {
            extra.push(k.clone());
        }
    }
    (found, missing, extra)
}

#[test]
fn istio_analyzer_grid() {
    let base = dir();
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(base.join("cases.json")).unwrap()).unwrap();
    let tsv = std::fs::read_to_string(base.join("analyzers.tsv")).unwrap();
    let mut codes_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let set = codes_of.entry(cols[0].to_string()).or_default();
        set.extend(
            cols[1]
                .split(',')
                .filter(|c| c.starts_with("IST"))
                .map(String::from),
        );
    }
    for (a, extra) in EXTRA_CODES {
        codes_of
            .entry((*a).to_string())
            .or_default()
            .extend(extra.iter().map(|c| (*c).to_string()));
    }
    let isthmus_codes: BTreeSet<&str> = analyze::CODES.iter().map(|(c, _, _)| *c).collect();
    // Implemented: isthmus emits one of the analyzer's codes (IST0101 and IST0002
    // are shared by many analyzers, so they count only for the analyzers isthmus
    // reports them for).
    let implemented = |analyzer: &str| -> bool {
        let shared_ok = [
            "virtualservice.GatewayAnalyzer",
            "virtualservice.DestinationHostAnalyzer",
            "virtualservice.DestinationRuleAnalyzer",
            "gateway.SecretAnalyzer",
            "gateway.IngressGatewayPortAnalyzer",
            "authz.AuthorizationPoliciesAnalyzer",
            "sidecar.SelectorAnalyzer",
            "telemetry.SelectorAnalyzer",
            "telemetry.LightstepAnalyzer",
            "deprecation.FieldAnalyzer",
        ]
        .contains(&analyzer);
        codes_of.get(analyzer).is_some_and(|codes| {
            codes.iter().any(|c| {
                isthmus_codes.contains(c.as_str())
                    && (shared_ok || (c != "IST0101" && c != "IST0002"))
            })
        })
    };

    let mut outcomes = Vec::new();
    for case in &cases {
        let index = case["index"].as_u64().unwrap();
        let name = case["name"].as_str().unwrap().to_string();
        let analyzer = case["analyzer"].as_str().unwrap().to_string();
        let expected: Vec<(String, String)> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["code"].as_str().unwrap().to_string(),
                    e["resource"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let skipped = if case["skip_all"].as_bool() == Some(true) {
            Some("skipAll in Istio's grid (AlphaAnalyzer is not in analyzers.All())")
        } else if !case["mesh_networks_file"].is_null() {
            Some("needs mesh networks (istioctl has no flag for them either)")
        } else {
            None
        };
        let mut o = Outcome {
            index,
            name,
            analyzer: analyzer.clone(),
            implemented: implemented(&analyzer),
            skipped,
            expected: expected.len(),
            reported: 0,
            missing: Vec::new(),
            extra: Vec::new(),
        };
        if skipped.is_none() {
            let files: Vec<PathBuf> = case["input_files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| base.join(f.as_str().unwrap()))
                .collect();
            let codes = codes_of.get(&analyzer).cloned().unwrap_or_default();
            // The case's mesh config, as `istioctl analyze --meshConfigFile` reads it.
            let mesh = case["mesh_config_file"].as_str().map_or_else(
                analyze::MeshSettings::default,
                |f| {
                    let text = std::fs::read_to_string(base.join(f)).expect("read mesh config");
                    let value: Value = serde_yaml_ng::from_str(&text).expect("mesh config YAML");
                    analyze::MeshSettings::from_mesh_config(&value)
                },
            );
            let reported: Vec<(String, String)> = run_case(&files, &mesh)
                .iter()
                .filter(|d| codes.contains(d.code) && from_analyzer(d, &analyzer))
                .map(|d| (d.code.to_string(), d.resource.clone().unwrap_or_default()))
                .collect();
            let (found, missing, extra) = multiset_diff(&expected, &reported);
            o.reported = found;
            o.missing = missing;
            o.extra = extra;
        }
        outcomes.push(o);
    }

    // Totals.
    let (mut imp_expected, mut imp_reported, mut imp_extra) = (0, 0, 0);
    let mut not_imp_expected = 0;
    let mut not_imp_codes = BTreeSet::new();
    for o in outcomes.iter().filter(|o| o.skipped.is_none()) {
        if o.implemented {
            imp_expected += o.expected;
            imp_reported += o.reported;
            imp_extra += o.extra.len();
        } else {
            not_imp_expected += o.expected;
            for (c, _) in &o.missing {
                not_imp_codes.insert(c.clone());
            }
        }
    }
    let summary = format!(
        "implemented analyzers: {imp_reported} of {imp_expected} expected findings reported, \
         {imp_extra} extra IST findings; not implemented: {not_imp_expected} expected findings \
         (codes {})",
        not_imp_codes.into_iter().collect::<Vec<_>>().join(", ")
    );

    let mut lines = Vec::new();
    for o in &outcomes {
        let status = match (o.skipped, o.passes()) {
            (Some(_), _) => "SKIP",
            (None, true) => "pass",
            (None, false) => "FAIL",
        };
        let mut line = format!(
            "{status} {} [{}{}] {}/{} reported",
            o.key(),
            o.analyzer,
            if o.implemented {
                ""
            } else {
                ", not implemented"
            },
            o.reported,
            o.expected
        );
        if let Some(why) = o.skipped {
            line.push_str(&format!("; skipped: {why}"));
        }
        if !o.missing.is_empty() {
            let m: Vec<String> = o.missing.iter().map(|(c, r)| format!("{c} {r}")).collect();
            line.push_str(&format!("; missing: {}", m.join(", ")));
        }
        if !o.extra.is_empty() {
            let m: Vec<String> = o.extra.iter().map(|(c, r)| format!("{c} {r}")).collect();
            line.push_str(&format!("; extra: {}", m.join(", ")));
        }
        println!("{line}");
        lines.push(line);
    }
    println!("{summary}");

    let mut md = String::from(
        "# Istio analyzer grid: isthmus results\n\n\
         Generated by `cargo nextest run -p isthmus --test istio_analyzers` \
         (`cli/tests/istio_analyzers.rs`); do not edit by hand.\n\n",
    );
    md.push_str(&format!("**{summary}**\n\n"));
    let passing_now: Vec<String> = outcomes
        .iter()
        .filter(|o| o.passes())
        .map(Outcome::key)
        .collect();
    md.push_str(&format!(
        "Cases passing: {} of {} ({} skipped).\n\n```\n",
        passing_now.len(),
        outcomes.len(),
        outcomes.iter().filter(|o| o.skipped.is_some()).count()
    ));
    for l in &lines {
        md.push_str(l);
        md.push('\n');
    }
    md.push_str("```\n");
    std::fs::write(base.join("RESULTS.md"), md).expect("write RESULTS.md");

    // The ratchet.
    let listed: BTreeSet<String> = std::fs::read_to_string(base.join("passing.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for k in &passing_now {
        if !listed.contains(k) {
            println!("newly passing: add it to passing.txt: {k}");
        }
    }
    let now: BTreeSet<&String> = passing_now.iter().collect();
    let regressed: Vec<&String> = listed.iter().filter(|k| !now.contains(k)).collect();
    assert!(
        regressed.is_empty(),
        "cases listed in passing.txt fail now: {regressed:?}"
    );
}
