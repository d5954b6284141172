//! The effective `PeerAuthentication` mode of one workload port, with Istio's
//! semantics (istio-api.md 1.6; istio `pilot/pkg/model/policyattachment` and
//! `pilot/pkg/security/authn/policy_applier.go` `ComposePeerAuthentication`):
//!
//! - **levels**: mesh (no or empty selector, in the root namespace `istio-system`),
//!   namespace (no or empty selector, in the workload's namespace), workload (a
//!   selector matching the workload's labels, outside the root namespace). Selector
//!   policies in the root namespace are ignored (the api's package doc and the code
//!   agree; the `selector` field comment does not);
//! - among several policies of one level the **oldest** `metadata.creationTimestamp`
//!   wins; equal timestamps: the first by name, then namespace (Istio sorts configs
//!   so); policies without a timestamp (files, not a cluster) count as newer than any
//!   with one and keep store order among themselves;
//! - `UNSET` inherits: mesh, then namespace, then workload; nothing set anywhere is
//!   PERMISSIVE;
//! - `portLevelMtls` counts only on the workload-level policy, keyed by the workload
//!   (container) port; a port-level `UNSET` takes the workload-level result.

use std::cmp::Ordering;

use crate::compile::ROOT_NAMESPACE;
use crate::resources::networking::Labels;
use crate::resources::security::{MtlsMode, PeerAuthenticationSpec};
use crate::resources::{Resource, Store};
use crate::snapshot::InboundMtls;

/// The mTLS mode of `port` of a workload in `namespace` with `labels`, and what
/// decided it: `PeerAuthentication ns/name`, or `default` (nothing set: PERMISSIVE).
pub fn effective_mtls(
    store: &Store,
    namespace: &str,
    labels: &Labels,
    port: u16,
) -> (InboundMtls, String) {
    effective_mtls_in(store, ROOT_NAMESPACE, namespace, labels, port)
}

/// [`effective_mtls`] with another root namespace (`MeshConfig.rootNamespace`).
pub fn effective_mtls_in(
    store: &Store,
    root_namespace: &str,
    namespace: &str,
    labels: &Labels,
    port: u16,
) -> (InboundMtls, String) {
    let mut mesh: Option<Candidate<'_>> = None;
    let mut ns_level: Option<Candidate<'_>> = None;
    let mut workload: Option<Candidate<'_>> = None;
    for (index, (r, pa)) in store.peer_authentications().enumerate() {
        let owner = r.namespace();
        if owner != namespace && owner != root_namespace {
            continue;
        }
        let selector = pa
            .selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|m| !m.is_empty());
        let slot = match selector {
            None if owner == root_namespace => &mut mesh,
            None => &mut ns_level,
            Some(_) if owner == root_namespace => continue,
            Some(sel) if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) => &mut workload,
            Some(_) => continue,
        };
        let c = Candidate {
            resource: r,
            spec: pa,
            index,
        };
        if slot.as_ref().is_none_or(|best| c.older_than(best)) {
            *slot = Some(c);
        }
    }
    let mut mode = MtlsMode::Permissive;
    let mut by: Option<&Resource> = None;
    for c in [&mesh, &ns_level, &workload].into_iter().flatten() {
        let m = c.spec.mode();
        if m != MtlsMode::Unset {
            mode = m;
            by = Some(c.resource);
        }
    }
    if let Some(c) = &workload {
        let port_mode = c
            .spec
            .port_level_mtls
            .get(&u32::from(port))
            .and_then(|m| m.mode)
            .unwrap_or(MtlsMode::Unset);
        if port_mode != MtlsMode::Unset {
            mode = port_mode;
            by = Some(c.resource);
        }
    }
    let mode = match mode {
        MtlsMode::Strict => InboundMtls::Strict,
        MtlsMode::Disable => InboundMtls::Disable,
        MtlsMode::Permissive | MtlsMode::Unset => InboundMtls::Permissive,
    };
    let by = by.map_or_else(
        || "default".to_string(),
        |r| format!("PeerAuthentication {}/{}", r.namespace(), r.name()),
    );
    (mode, by)
}

struct Candidate<'s> {
    resource: &'s Resource,
    spec: &'s PeerAuthenticationSpec,
    /// Position in the store.
    index: usize,
}

impl Candidate<'_> {
    fn older_than(&self, other: &Candidate<'_>) -> bool {
        let key = |c: &Candidate<'_>| {
            c.resource
                .meta
                .creation_timestamp
                .as_deref()
                .and_then(parse_timestamp)
        };
        let ord = match (key(self), key(other)) {
            (Some(a), Some(b)) => a.cmp(&b).then_with(|| {
                (self.resource.name(), self.resource.namespace())
                    .cmp(&(other.resource.name(), other.resource.namespace()))
            }),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        ord.then(self.index.cmp(&other.index)) == Ordering::Less
    }
}

/// An RFC 3339 timestamp (`2024-05-01T10:00:00Z`, `...T10:00:00.5+02:00`) as
/// (seconds since 1970, nanoseconds). `None` when it is not one.
fn parse_timestamp(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i).filter(|f| !f.is_empty())?;
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let sign = if &tz[..1] == "-" { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_timestamp("2024-03-01T12:30:05.25Z"),
            Some((1_709_296_205, 250_000_000))
        );
        assert_eq!(
            parse_timestamp("2024-03-01T14:30:05+02:00"),
            parse_timestamp("2024-03-01T12:30:05Z")
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("2024-03-01T00:00:00"), None);
    }
}
