//! istioctl's own unreachable-rule check, rule for rule, so that IST0130
//! (VirtualServiceUnreachableRule) and IST0131 (VirtualServiceIneffectiveMatch) are
//! reported exactly where and as often as istioctl reports them (Istio's
//! `pkg/config/validation`, read, not copied):
//!
//! * a rule without matches after another rule without matches: IST0130 ("only the
//!   last rule can have no matches");
//! * any rule with matches after a rule without matches: IST0130 ("route without
//!   matches defined before");
//! * a match block identical (its name aside) to an earlier one: IST0131, and the
//!   rule IST0130 when all its blocks are such duplicates;
//! * HTTP only: a block with a URI *prefix* whose prefix, port, method, authority,
//!   headers, query parameters and `withoutHeaders` are covered by an earlier
//!   prefix block: IST0131 (only prefixes are compared: an exact URI is never
//!   covered by this check).
//!
//! isthmus's finer coverage analysis ([`super::rules`]) reports what this misses
//! under ISM codes.

use std::collections::{BTreeMap, HashMap};

use crate::resources::networking::{HttpMatchRequest, StringMatch, VirtualServiceSpec};

/// One istioctl finding: code, field path, message.
pub(super) struct Found {
    pub code: &'static str,
    pub path: String,
    pub message: String,
}

fn unused(section: &str, i: usize, rule: &str, reason: &str) -> Found {
    Found {
        code: "IST0130",
        path: format!("spec.{section}[{i}]"),
        message: format!("VirtualService rule {rule} not used ({reason})."),
    }
}

fn ineffective(section: &str, i: usize, j: usize, rule: &str, m: &str, dup: &str) -> Found {
    Found {
        code: "IST0131",
        path: format!("spec.{section}[{i}].match[{j}]"),
        message: format!(
            "VirtualService rule {rule} match {m} is not used (duplicate/overlapping match in rule {dup})."
        ),
    }
}

fn quoted_or_index(name: Option<&String>, i: usize) -> String {
    name.map_or(format!("#{i}"), |n| format!("{n:?}"))
}

/// The three sections of a VirtualService.
pub(super) fn check(vs: &VirtualServiceSpec) -> Vec<Found> {
    let mut out = Vec::new();
    http(vs, &mut out);
    let tcp: Vec<Vec<_>> = vs.tcp.iter().map(|t| t.match_.iter().collect()).collect();
    plain("tcp", &tcp, &mut out);
    let tls: Vec<Vec<_>> = vs.tls.iter().map(|t| t.match_.iter().collect()).collect();
    plain("tls", &tls, &mut out);
    out
}

/// TCP and TLS: rules without matches and identical blocks.
fn plain<M: PartialEq>(section: &str, rules: &[Vec<&M>], out: &mut Vec<Found>) {
    let mut seen: Vec<(&M, usize)> = Vec::new();
    let mut matchless: Option<usize> = None;
    for (i, blocks) in rules.iter().enumerate() {
        let name = format!("#{i}");
        if blocks.is_empty() {
            if matchless.is_some() {
                out.push(unused(
                    section,
                    i,
                    &name,
                    "only the last rule can have no matches",
                ));
            }
            matchless = Some(i);
            continue;
        }
        if matchless.is_some() {
            out.push(unused(
                section,
                i,
                &name,
                "route without matches defined before",
            ));
            continue;
        }
        let mut dups = 0;
        for (j, m) in blocks.iter().enumerate() {
            if let Some((_, k)) = seen.iter().find(|(s, _)| s == m) {
                out.push(ineffective(
                    section,
                    i,
                    j,
                    &name,
                    &format!("#{j}"),
                    &format!("#{k}"),
                ));
                dups += 1;
            } else {
                seen.push((m, i));
            }
        }
        if dups == blocks.len() {
            out.push(unused(section, i, &name, "all matches used by prior rules"));
        }
    }
}

/// A prefix block as istioctl's overlap check sees it.
struct PrefixBlock {
    rule: String,
    block: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    without: BTreeMap<String, String>,
}

/// `exact:v`, `prefix:v` or empty (regexes count as nothing).
fn exact_or_prefix(s: Option<&StringMatch>) -> String {
    let Some(s) = s else { return String::new() };
    match (s.exact.as_deref(), s.prefix.as_deref()) {
        (Some(e), _) if !e.is_empty() => format!("exact:{e}"),
        (_, Some(p)) if !p.is_empty() => format!("prefix:{p}"),
        _ => String::new(),
    }
}

fn condition_map(m: &BTreeMap<String, StringMatch>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), exact_or_prefix(Some(v))))
        .collect()
}

fn prefix_block(m: &HttpMatchRequest, rule: String, block: String) -> Option<PrefixBlock> {
    let prefix = m.uri.as_ref()?.prefix.clone().filter(|p| !p.is_empty())?;
    let mut method = exact_or_prefix(m.method.as_ref());
    if method.is_empty() {
        method = "exact:GET".to_string();
    }
    Some(PrefixBlock {
        rule,
        block,
        prefix,
        port: m.port.unwrap_or(0),
        method,
        authority: exact_or_prefix(m.authority.as_ref()),
        headers: condition_map(&m.headers),
        query: condition_map(&m.query_params),
        without: condition_map(&m.without_headers),
    })
}

/// Same keys, and each of `a`'s values equal to `b`'s or starting with it (the
/// direction istioctl compares them in).
fn maps_covered(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, av)| {
            b.get(k)
                .is_some_and(|bv| av == bv || av.starts_with(bv.as_str()))
        })
}

fn covered(a: &PrefixBlock, b: &PrefixBlock) -> bool {
    b.prefix.starts_with(a.prefix.as_str())
        && a.port == b.port
        && (a.method == b.method || a.method.starts_with(b.method.as_str()))
        && (a.authority == b.authority || a.authority.starts_with(b.authority.as_str()))
        && maps_covered(&a.headers, &b.headers)
        && maps_covered(&a.query, &b.query)
        && maps_covered(&a.without, &b.without)
}

fn http(vs: &VirtualServiceSpec, out: &mut Vec<Found>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut matchless: Option<usize> = None;
    let mut prefixes: Vec<(usize, usize, PrefixBlock)> = Vec::new();
    let rule_name = |i: usize| quoted_or_index(vs.http[i].name.as_ref(), i);
    for (i, rule) in vs.http.iter().enumerate() {
        let name = rule_name(i);
        if rule.match_.is_empty() {
            if matchless.is_some() {
                out.push(unused(
                    "http",
                    i,
                    &name,
                    "only the last rule can have no matches",
                ));
            }
            matchless = Some(i);
            continue;
        }
        if matchless.is_some() {
            // istioctl reports it once per block, in identical messages it dedups.
            out.push(unused(
                "http",
                i,
                &name,
                "route without matches defined before",
            ));
            continue;
        }
        let mut dups = 0;
        for (j, m) in rule.match_.iter().enumerate() {
            let block = quoted_or_index(m.name.as_ref(), j);
            let key = identity_key(m);
            if let Some(k) = seen.get(&key) {
                out.push(ineffective("http", i, j, &name, &block, &rule_name(*k)));
                dups += 1;
                continue;
            }
            seen.insert(key, i);
            if let Some(p) = prefix_block(m, name.clone(), block) {
                prefixes.push((i, j, p));
            }
        }
        if dups == rule.match_.len() {
            out.push(unused("http", i, &name, "all matches used by prior rules"));
        }
    }
    for (x, (_, _, a)) in prefixes.iter().enumerate() {
        for (i, j, b) in &prefixes[x + 1..] {
            if a.prefix == b.prefix || !covered(a, b) {
                continue;
            }
            out.push(ineffective(
                "http",
                *i,
                *j,
                &b.rule,
                &format!("{} of prefix {}", b.block, b.prefix),
                &format!("{} of prefix {} on {}", a.block, a.prefix, a.rule),
            ));
        }
    }
}

/// A block's conditions without its name, for identity comparison.
fn identity_key(m: &HttpMatchRequest) -> String {
    let unnamed = HttpMatchRequest {
        name: None,
        ..m.clone()
    };
    format!("{unnamed:?}")
}
