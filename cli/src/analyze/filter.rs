//! Which findings `isthmus analyze` reports, with istioctl's rules
//! (`pkg/config/analysis/local`, `filterMessages`):
//!
//! * `-n NS` (without `-A`): resources that name no namespace are put in `NS`, and
//!   only findings on `NS` are kept, plus findings on cluster-scoped resources
//!   (a `Namespace` counts as being in itself) and findings on no resource.
//! * The `galley.istio.io/analyze-suppress` annotation of the finding's resource:
//!   a comma-separated list of codes, or `*` for all.
//! * `--suppress CODE=RESOURCE`: the code matches exactly (istioctl has no wildcard
//!   there), the resource is a glob (`*` matches any text, nothing else is
//!   special) over the finding's `Kind namespace/name` (what istioctl really
//!   matches), or over istioctl's documented form `Kind name.namespace`, turned into
//!   `Kind namespace/name` at the last dot (namespaces have no dots). A finding on
//!   no resource is never suppressed.

use std::collections::{HashMap, HashSet};

use isthmus_model::resources::DEFAULT_NAMESPACE;
use isthmus_model::{analyze, Diagnostic, Resource, Store};

/// istioctl's (galley's) annotation: codes not to report on this resource.
pub const SUPPRESS_ANNOTATION: &str = "galley.istio.io/analyze-suppress";

/// `-n` and `-A`.
pub struct NamespaceScope {
    /// Namespace of resources that name none.
    default: String,
    /// Only findings on this namespace are kept; `None`: all.
    only: Option<String>,
}

impl NamespaceScope {
    /// isthmus' default (neither flag): all namespaces, unnamed ones `default`.
    pub fn new(namespace: Option<String>, all_namespaces: bool) -> NamespaceScope {
        let only = if all_namespaces {
            None
        } else {
            namespace.clone()
        };
        NamespaceScope {
            default: namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            only,
        }
    }

    /// Put namespace-less resources into the selected namespace, and rename them in
    /// the loader's findings (the loader wrote `Kind default/name`).
    pub fn default_namespace(&self, resources: &mut [Resource], findings: &mut [Diagnostic]) {
        if self.default == DEFAULT_NAMESPACE {
            return;
        }
        // Findings about `Kind default/name` are about a namespace-less document
        // unless a document really names `default` for that resource.
        let explicit: HashSet<String> = resources
            .iter()
            .filter(|r| r.meta.namespace.as_deref() == Some(DEFAULT_NAMESPACE))
            .map(Resource::display_ref)
            .collect();
        for r in resources.iter_mut() {
            if r.meta.namespace.is_none() && !r.kind.cluster_scoped() {
                r.meta.namespace = Some(self.default.clone());
            }
        }
        for d in findings {
            let Some(res) = &d.resource else { continue };
            if explicit.contains(res) {
                continue;
            }
            if let Some((kind, name)) = res
                .split_once(' ')
                .and_then(|(k, rest)| Some((k, rest.strip_prefix("default/")?)))
            {
                d.resource = Some(format!("{kind} {}/{name}", self.default));
            }
        }
    }

    fn keeps(&self, d: &Diagnostic) -> bool {
        let (Some(only), Some(res)) = (&self.only, &d.resource) else {
            return true;
        };
        match namespace_of(res) {
            Some(ns) => ns == only,
            None => true,
        }
    }
}

/// The namespace of a finding's resource (`Kind ns/name`); a `Namespace`'s is its
/// name; `None` for other cluster-scoped resources.
fn namespace_of(resource: &str) -> Option<&str> {
    let (kind, rest) = resource.split_once(' ')?;
    if kind == "Namespace" {
        return Some(rest);
    }
    rest.split_once('/').map(|(ns, _)| ns)
}

/// One `--suppress CODE=RESOURCE`.
#[derive(Debug)]
pub struct Suppression {
    pub code: String,
    /// Globs over `Kind namespace/name`: as written, and converted from
    /// `Kind name.namespace` when written that way.
    patterns: Vec<String>,
}

impl Suppression {
    /// istioctl's parsing: exactly one `=`.
    pub fn parse(s: &str) -> Result<Suppression, String> {
        let parts: Vec<&str> = s.split('=').collect();
        let [code, resource] = parts[..] else {
            return Err(format!(
                "{s} is not a valid suppression value. See isthmus analyze --help"
            ));
        };
        let mut patterns = vec![resource.to_string()];
        if let Some((kind, rest)) = resource.split_once(' ') {
            if !rest.contains('/') {
                if let Some((name, ns)) = rest.rsplit_once('.') {
                    patterns.push(format!("{kind} {ns}/{name}"));
                }
            }
        }
        Ok(Suppression {
            code: code.to_string(),
            patterns,
        })
    }

    /// A code isthmus emits, or any Istio code (`ISTnnnn`): suppressing an Istio
    /// code isthmus does not implement is no mistake in a script shared with
    /// istioctl.
    pub fn code_is_known(&self) -> bool {
        let c = self.code.as_str();
        analyze::CODES.iter().any(|(k, _, _)| *k == c)
            || c == "cert-dir"
            || (c.len() == 7 && c.starts_with("IST") && c[3..].bytes().all(|b| b.is_ascii_digit()))
    }

    fn matches(&self, d: &Diagnostic) -> bool {
        let Some(res) = &d.resource else { return false };
        d.code == self.code && self.patterns.iter().any(|p| glob(p, res))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters
/// (also none) and every other character itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        // No `*`: the whole text.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The findings to report, in their order.
pub fn apply(
    findings: Vec<Diagnostic>,
    store: &Store,
    scope: &NamespaceScope,
    suppressions: &[Suppression],
) -> Vec<Diagnostic> {
    let mut annotated: HashMap<String, Vec<String>> = HashMap::new();
    for r in &store.resources {
        if let Some(v) = r.meta.annotations.get(SUPPRESS_ANNOTATION) {
            annotated
                .entry(r.display_ref())
                .or_default()
                .extend(v.split(',').map(|c| c.trim().to_string()));
        }
    }
    findings
        .into_iter()
        .filter(|d| scope.keeps(d))
        .filter(|d| {
            let codes = d.resource.as_ref().and_then(|r| annotated.get(r));
            !codes.is_some_and(|cs| cs.iter().any(|c| c == "*" || c == d.code))
        })
        .filter(|d| !suppressions.iter().any(|s| s.matches(d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::Level;

    fn on(code: &'static str, resource: &str) -> Diagnostic {
        let mut d = Diagnostic::new(Level::Error, code, "m");
        d.resource = Some(resource.to_string());
        d
    }

    #[test]
    fn glob_is_star_only_and_whole_text() {
        assert!(glob("*", ""));
        assert!(glob("Pod *", "Pod testing/a"));
        assert!(glob("Pod testing/*", "Pod testing/a"));
        assert!(!glob("Pod testing/*", "Pod other/a"));
        assert!(glob("*/a", "Pod testing/a"));
        assert!(glob("P*t*g/a", "Pod testing/a"));
        assert!(!glob("Pod testing/a", "Pod testing/ab"));
        assert!(!glob("a*a", "a"));
        assert!(glob("a*a", "aa"));
        assert!(glob("Pod [x]?", "Pod [x]?"));
    }

    #[test]
    fn suppression_in_both_spellings() {
        let f = on("IST0101", "VirtualService testing/reviews");
        for s in [
            "IST0101=VirtualService testing/reviews",
            "IST0101=VirtualService reviews.testing",
            "IST0101=VirtualService *.testing",
            "IST0101=VirtualService testing/*",
            "IST0101=*",
        ] {
            assert!(Suppression::parse(s).unwrap().matches(&f), "{s}");
        }
        for s in [
            "IST0102=VirtualService testing/reviews",
            "IST0101=VirtualService reviews.default",
            "IST0101=DestinationRule *",
        ] {
            assert!(!Suppression::parse(s).unwrap().matches(&f), "{s}");
        }
        assert!(Suppression::parse("IST0101").is_err());
        assert!(Suppression::parse("IST0101=a=b").is_err());
        // Never a finding without a resource.
        let bare = Diagnostic::new(Level::Error, "IST0101", "m");
        assert!(!Suppression::parse("IST0101=*").unwrap().matches(&bare));
    }

    #[test]
    fn known_codes() {
        assert!(Suppression::parse("IST0103=Pod *").unwrap().code_is_known());
        assert!(Suppression::parse("ISM0101=Gateway *")
            .unwrap()
            .code_is_known());
        assert!(!Suppression::parse("ISM9999=Gateway *")
            .unwrap()
            .code_is_known());
        assert!(!Suppression::parse("IST01=Gateway *")
            .unwrap()
            .code_is_known());
    }

    #[test]
    fn namespace_filter_keeps_cluster_scoped_and_resourceless_findings() {
        let scope = NamespaceScope::new(Some("a".into()), false);
        assert!(scope.keeps(&on("IST0101", "Gateway a/gw")));
        assert!(!scope.keeps(&on("IST0101", "Gateway b/gw")));
        assert!(scope.keeps(&on("IST0101", "ClusterIssuer le")));
        assert!(scope.keeps(&on("IST0101", "Namespace a")));
        assert!(!scope.keeps(&on("IST0101", "Namespace b")));
        assert!(scope.keeps(&Diagnostic::new(Level::Error, "IST0101", "m")));
        let all = NamespaceScope::new(Some("a".into()), true);
        assert!(all.keeps(&on("IST0101", "Gateway b/gw")));
    }
}
