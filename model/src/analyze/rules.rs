//! Shadowed VirtualService rules. IST0130 (VirtualServiceUnreachableRule) and
//! IST0131 (VirtualServiceIneffectiveMatch) come from [`super::rules_istio`], which
//! follows istioctl exactly; this module adds what istioctl misses, under isthmus
//! codes: ISM0107 (a rule never used) and ISM0108 (a match block never used).
//!
//! Rules are tried in order and the first match wins, so a match block is dead when
//! an earlier block matches every request it matches (the earlier block *covers* it),
//! and a whole rule is dead when every one of its blocks is covered by earlier rules.
//! A rule without `match` covers everything after it. This check decides coverage
//! field by field, so `prefix: /api/v1/product` in rule 0 also makes a rule whose
//! only block is `prefix: /api/v1/products` (same other conditions) unreachable.
//! Coverage is conservative: when unsure (regexes, `withoutHeaders`), it says no.
//!
//! On a Gateway, Istio moves catch-all routes (`prefix: /` or no match, and no header,
//! query, method, authority or scheme condition) behind all the others
//! (`SortVHostRoutes`), so for a VirtualService bound only to gateways a catch-all
//! shadows other catch-alls only.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;

use crate::diag::Diagnostic;
use crate::resources::networking::{HttpMatchRequest, StringMatch, VirtualServiceSpec};
use crate::resources::Resource;

use super::virtualservice::bound_to_mesh;
use super::{finding, rules_istio, selects};

/// A rule no request reaches, beyond istioctl's IST0130.
pub(super) const CODE_UNREACHABLE_RULE: &str = "ISM0107";
/// A match block no request reaches, beyond istioctl's IST0131.
pub(super) const CODE_INEFFECTIVE_MATCH: &str = "ISM0108";

pub(super) fn check(r: &Resource, vs: &VirtualServiceSpec, out: &mut Vec<Diagnostic>) {
    let istio = rules_istio::check(vs);
    let said: HashSet<String> = istio.iter().map(|f| f.path.clone()).collect();
    for f in istio {
        out.push(finding(f.code, r, &f.path, f.message));
    }
    let out = &mut Reporter { said: &said, out };
    let gateway_only = !bound_to_mesh(vs);
    let http: Vec<Vec<Option<&HttpMatchRequest>>> =
        vs.http.iter().map(|h| blocks(&h.match_)).collect();
    let names: Vec<String> = vs
        .http
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.name
                .as_ref()
                .map_or(format!("#{i}"), |n| format!("{n:?}"))
        })
        .collect();
    let match_name = |i: usize, j: usize| {
        vs.http[i]
            .match_
            .get(j)
            .and_then(|m| m.name.as_ref())
            .map_or(format!("#{j}"), |n| format!("{n:?}"))
    };
    let found = shadowing(&http, |a, b| {
        if gateway_only && is_catch_all(a) && !is_catch_all(b) {
            return false;
        }
        http_covers(a, b)
    });
    let matchless: Vec<bool> = vs.http.iter().map(|h| h.match_.is_empty()).collect();
    report(r, "http", &found, &matchless, &names, &match_name, out);

    let tls: Vec<Vec<_>> = vs.tls.iter().map(|t| blocks(&t.match_)).collect();
    let names: Vec<String> = (0..tls.len()).map(|i| format!("#{i}")).collect();
    let found = shadowing(&tls, |a, b| a.is_none() || a == b);
    let matchless: Vec<bool> = vs.tls.iter().map(|t| t.match_.is_empty()).collect();
    report(
        r,
        "tls",
        &found,
        &matchless,
        &names,
        &|_, j| format!("#{j}"),
        out,
    );

    let tcp: Vec<Vec<_>> = vs.tcp.iter().map(|t| blocks(&t.match_)).collect();
    let names: Vec<String> = (0..tcp.len()).map(|i| format!("#{i}")).collect();
    let found = shadowing(&tcp, |a, b| a.is_none() || a == b);
    let matchless: Vec<bool> = vs.tcp.iter().map(|t| t.match_.is_empty()).collect();
    report(
        r,
        "tcp",
        &found,
        &matchless,
        &names,
        &|_, j| format!("#{j}"),
        out,
    );
}

/// Where the findings go, and the paths istioctl's check already reported on.
struct Reporter<'a> {
    said: &'a HashSet<String>,
    out: &'a mut Vec<Diagnostic>,
}

/// The match blocks of a rule; a rule without `match` is one block matching all.
fn blocks<M>(matches: &[M]) -> Vec<Option<&M>> {
    if matches.is_empty() {
        vec![None]
    } else {
        matches.iter().map(Some).collect()
    }
}

/// Where a block is: (rule, block).
type At = (usize, usize);

#[derive(Debug, PartialEq)]
enum Shadow {
    /// Every block of the rule is covered by an earlier rule: (block, covering block).
    Rule(usize, Vec<(usize, At)>),
    /// One block of a reachable rule is covered by an earlier block.
    Match(At, At),
}

/// Find dead rules and dead blocks, given `covers(earlier, later)`.
fn shadowing<M>(
    rules: &[Vec<Option<&M>>],
    covers: impl Fn(Option<&M>, Option<&M>) -> bool,
) -> Vec<Shadow> {
    let mut found = Vec::new();
    for (i, blocks) in rules.iter().enumerate() {
        let cover_of = |j: usize, limit: At| {
            rules.iter().enumerate().find_map(|(k, earlier)| {
                earlier
                    .iter()
                    .enumerate()
                    .find_map(|(l, e)| ((k, l) < limit && covers(*e, blocks[j])).then_some((k, l)))
            })
        };
        let by_earlier_rules: Vec<(usize, At)> = (0..blocks.len())
            .filter_map(|j| cover_of(j, (i, 0)).map(|c| (j, c)))
            .collect();
        if by_earlier_rules.len() == blocks.len() {
            found.push(Shadow::Rule(i, by_earlier_rules));
            continue;
        }
        for j in 0..blocks.len() {
            if let Some(c) = cover_of(j, (i, j)) {
                found.push(Shadow::Match((i, j), c));
            }
        }
    }
    found
}

fn report(
    r: &Resource,
    section: &str,
    found: &[Shadow],
    matchless: &[bool],
    names: &[String],
    match_name: &dyn Fn(usize, usize) -> String,
    out: &mut Reporter<'_>,
) {
    for s in found {
        match s {
            Shadow::Rule(i, covers) => {
                let catch_all = covers.iter().find(|(_, (k, _))| matchless[*k]);
                let reason = match catch_all {
                    Some((_, (k, _))) if matchless[*i] => {
                        format!(
                            "only the last rule can have no matches; rule {} has none either",
                            names[*k]
                        )
                    }
                    Some((_, (k, _))) => format!(
                        "route without matches defined before: rule {} takes every request",
                        names[*k]
                    ),
                    None => {
                        let detail: Vec<String> = covers
                            .iter()
                            .map(|(j, (k, l))| {
                                format!(
                                    "match {} is covered by rule {} match {}",
                                    match_name(*i, *j),
                                    names[*k],
                                    match_name(*k, *l)
                                )
                            })
                            .collect();
                        format!("all matches used by prior rules: {}", detail.join(", "))
                    }
                };
                let path = format!("spec.{section}[{i}]");
                if out.said.contains(&path) {
                    continue;
                }
                out.out.push(finding(
                    CODE_UNREACHABLE_RULE,
                    r,
                    &path,
                    format!(
                        "VirtualService rule {} not used ({reason}). Remove it, or move it before the \
                         rule that takes its traffic.",
                        names[*i]
                    ),
                ));
            }
            Shadow::Match((i, j), (k, l)) => {
                let inner = if k == i { " (the same rule)" } else { "" };
                let path = format!("spec.{section}[{i}].match[{j}]");
                if out.said.contains(&path) || out.said.contains(&format!("spec.{section}[{i}]")) {
                    continue;
                }
                out.out.push(finding(
                    CODE_INEFFECTIVE_MATCH,
                    r,
                    &path,
                    format!(
                        "VirtualService rule {} match {} is not used (duplicate/overlapping match in rule \
                         {}{inner}: its match {} already takes every such request).",
                        names[*i],
                        match_name(*i, *j),
                        names[*k],
                        match_name(*k, *l)
                    ),
                ));
            }
        }
    }
}

/// A route Istio's `IsCatchAllRoute` would move last on a gateway: any path, and no
/// condition Envoy checks besides the path.
fn is_catch_all(m: Option<&HttpMatchRequest>) -> bool {
    let Some(m) = m else { return true };
    m.uri.as_ref().is_none_or(matches_every_path)
        && m.headers.is_empty()
        && m.query_params.is_empty()
        && m.without_headers.is_empty()
        && m.method.is_none()
        && m.authority.is_none()
        && m.scheme.is_none()
}

fn matches_every_path(s: &StringMatch) -> bool {
    s.prefix
        .as_deref()
        .is_some_and(|p| p.is_empty() || p == "/")
        || s.regex.as_deref() == Some(".*")
}

/// Whether every request block `b` matches is matched by block `a`.
fn http_covers(a: Option<&HttpMatchRequest>, b: Option<&HttpMatchRequest>) -> bool {
    let Some(a) = a else { return true };
    let any = HttpMatchRequest::default();
    let b = b.unwrap_or(&any);
    uri_covers(a, b)
        && field_covers(a.scheme.as_ref(), b.scheme.as_ref())
        && field_covers(a.method.as_ref(), b.method.as_ref())
        && field_covers(a.authority.as_ref(), b.authority.as_ref())
        && map_covers(&a.headers, &b.headers)
        && map_covers(&a.query_params, &b.query_params)
        && a.without_headers
            .iter()
            .all(|(k, v)| b.without_headers.get(k) == Some(v))
        && a.port.is_none_or(|p| b.port == Some(p))
        && selects(&a.source_labels, &b.source_labels)
        && (a.gateways.is_empty()
            || (!b.gateways.is_empty() && b.gateways.iter().all(|g| a.gateways.contains(g))))
        && a.source_namespace
            .as_ref()
            .is_none_or(|n| b.source_namespace.as_ref() == Some(n))
}

fn uri_covers(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    let Some(au) = &a.uri else { return true };
    if matches_every_path(au) {
        return true;
    }
    let Some(bu) = &b.uri else { return false };
    match (a.ignore_uri_case, b.ignore_uri_case) {
        (false, true) => false,
        (true, _) => string_covers(&lower(au), &lower(bu)),
        (false, false) => string_covers(au, bu),
    }
}

fn lower(s: &StringMatch) -> StringMatch {
    StringMatch {
        exact: s.exact.as_ref().map(|v| v.to_lowercase()),
        prefix: s.prefix.as_ref().map(|v| v.to_lowercase()),
        regex: s.regex.clone(),
    }
}

/// For `method`, `authority`, `scheme`: absent matches all.
fn field_covers(a: Option<&StringMatch>, b: Option<&StringMatch>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(a), _) if matches_anything(a) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => string_covers(a, b),
    }
}

/// Headers and query parameters: each condition of `a` must be implied by `b`'s
/// condition on the same key. An empty match `{}` is a presence check.
fn map_covers(a: &BTreeMap<String, StringMatch>, b: &BTreeMap<String, StringMatch>) -> bool {
    a.iter().all(|(k, am)| {
        b.get(k)
            .is_some_and(|bm| *am == StringMatch::default() || string_covers(am, bm))
    })
}

fn matches_anything(s: &StringMatch) -> bool {
    s.prefix.as_deref() == Some("") || s.regex.as_deref() == Some(".*")
}

/// Whether every string `b` matches is matched by `a`.
fn string_covers(a: &StringMatch, b: &StringMatch) -> bool {
    if matches_anything(a) {
        return true;
    }
    if let Some(x) = &a.exact {
        return b.exact.as_ref() == Some(x);
    }
    if let Some(p) = &a.prefix {
        return b
            .exact
            .as_ref()
            .or(b.prefix.as_ref())
            .is_some_and(|v| v.starts_with(p.as_str()));
    }
    if let Some(re) = &a.regex {
        if b.regex.as_ref() == Some(re) {
            return true;
        }
        return b
            .exact
            .as_ref()
            .is_some_and(|e| Regex::new(&format!("^(?:{re})$")).is_ok_and(|rx| rx.is_match(e)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(kind: &str, v: &str) -> StringMatch {
        let mut s = StringMatch::default();
        match kind {
            "exact" => s.exact = Some(v.into()),
            "prefix" => s.prefix = Some(v.into()),
            _ => s.regex = Some(v.into()),
        }
        s
    }

    fn uri(kind: &str, v: &str) -> HttpMatchRequest {
        HttpMatchRequest {
            uri: Some(sm(kind, v)),
            ..Default::default()
        }
    }

    #[test]
    fn string_coverage() {
        assert!(string_covers(
            &sm("prefix", "/api"),
            &sm("prefix", "/api/v1")
        ));
        assert!(string_covers(&sm("prefix", "/api"), &sm("exact", "/api")));
        assert!(!string_covers(
            &sm("prefix", "/api/v1"),
            &sm("prefix", "/api")
        ));
        assert!(!string_covers(&sm("exact", "/api"), &sm("prefix", "/api")));
        assert!(string_covers(&sm("regex", "/a.*"), &sm("exact", "/abc")));
        assert!(!string_covers(&sm("regex", "/a.*"), &sm("prefix", "/abc")));
    }

    #[test]
    fn block_coverage() {
        let get = HttpMatchRequest {
            method: Some(sm("exact", "GET")),
            ..uri("prefix", "/api/v1/products")
        };
        // No method condition covers a GET-only block, not the other way round.
        assert!(http_covers(Some(&uri("prefix", "/api")), Some(&get)));
        assert!(!http_covers(
            Some(&get),
            Some(&uri("prefix", "/api/v1/products"))
        ));
        // Header conditions narrow.
        let mut with_header = uri("prefix", "/api");
        with_header
            .headers
            .insert("end-user".into(), sm("exact", "jason"));
        assert!(http_covers(
            Some(&uri("prefix", "/api")),
            Some(&with_header)
        ));
        assert!(!http_covers(
            Some(&with_header),
            Some(&uri("prefix", "/api"))
        ));
        // `prefix: /` and no match at all cover everything.
        assert!(http_covers(Some(&uri("prefix", "/")), None));
        assert!(http_covers(None, Some(&with_header)));
    }

    #[test]
    fn dead_rule_and_dead_block() {
        let a = uri("prefix", "/a");
        let ab = uri("prefix", "/ab");
        let c = uri("prefix", "/c");
        let rules = vec![vec![Some(&a)], vec![Some(&ab)], vec![Some(&c), Some(&ab)]];
        let found = shadowing(&rules, http_covers);
        assert_eq!(
            found,
            vec![
                Shadow::Rule(1, vec![(0, (0, 0))]),
                Shadow::Match((2, 1), (0, 0))
            ]
        );
    }
}
