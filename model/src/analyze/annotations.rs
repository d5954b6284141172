//! Istio annotations on Kubernetes objects, as Istio's `annotations.K8sAnalyzer`:
//! on Namespaces, Services, Pods and Deployments (their own metadata), an annotation
//! in an `istio.io` domain (or `kubernetes.io/ingress.class`) that Istio does not
//! define (IST0108), one that is deprecated (IST0135), one placed on a kind it does
//! not apply to (IST0107), or one whose value Istio's injector rejects (IST0125).
//!
//! [`ANNOTATIONS`] lists the annotations Istio defines, with whether they are
//! deprecated and the kinds they apply to: data from `annotation/annotations.yaml`
//! of istio/api (Apache-2.0, Copyright Istio Authors). Values are checked only for
//! the annotations whose rules are simple (ports, CIDR lists, integers, booleans,
//! interception mode); the others are not checked.

use std::net::IpAddr;

use crate::diag::Diagnostic;
use crate::resources::{Kind, Resource};

use super::finding;
use super::index::Index;

/// (name, deprecated, kinds it applies to; `Any` for every kind).
const ANNOTATIONS: &[(&str, bool, &[&str])] = &[
    (
        "alpha.istio.io/canonical-serviceaccounts",
        true,
        &["Service"],
    ),
    (
        "alpha.istio.io/kubernetes-serviceaccounts",
        true,
        &["Service"],
    ),
    ("ambient.istio.io/bypass-inbound-capture", false, &["Pod"]),
    ("ambient.istio.io/dns-capture", false, &["Pod"]),
    ("ambient.istio.io/redirection", false, &["Pod"]),
    (
        "ambient.istio.io/waypoint-inbound-binding",
        false,
        &["GatewayClass", "Gateway"],
    ),
    ("galley.istio.io/analyze-suppress", false, &["Any"]),
    ("gateway.istio.io/controller-version", false, &["Any"]),
    ("gateway.istio.io/name-override", false, &["Gateway"]),
    ("gateway.istio.io/service-account", false, &["Gateway"]),
    ("inject.istio.io/templates", false, &["Pod"]),
    ("istio.io/autoRegistrationGroup", false, &["WorkloadEntry"]),
    ("istio.io/connectedAt", false, &["WorkloadEntry"]),
    ("istio.io/disconnectedAt", false, &["WorkloadEntry"]),
    ("istio.io/dry-run", false, &["AuthorizationPolicy"]),
    ("istio.io/reroute-virtual-interfaces", false, &["Pod"]),
    ("istio.io/rev", false, &["Pod"]),
    (
        "istio.io/use-waypoint-canary-weight",
        false,
        &["Service", "ServiceEntry", "Namespace"],
    ),
    ("istio.io/workloadController", false, &["WorkloadEntry"]),
    ("kubernetes.io/ingress.class", false, &["Ingress"]),
    ("networking.istio.io/exportTo", false, &["Service"]),
    ("networking.istio.io/service-type", false, &["Gateway"]),
    (
        "networking.istio.io/traffic-distribution",
        false,
        &["Namespace", "Service", "ServiceEntry"],
    ),
    ("prometheus.istio.io/merge-metrics", false, &["Pod"]),
    ("proxy.istio.io/config", false, &["Pod"]),
    ("proxy.istio.io/overrides", false, &["Pod"]),
    (
        "readiness.status.sidecar.istio.io/applicationPorts",
        false,
        &["Pod"],
    ),
    (
        "readiness.status.sidecar.istio.io/failureThreshold",
        false,
        &["Pod"],
    ),
    (
        "readiness.status.sidecar.istio.io/initialDelaySeconds",
        false,
        &["Pod"],
    ),
    (
        "readiness.status.sidecar.istio.io/periodSeconds",
        false,
        &["Pod"],
    ),
    ("sidecar.istio.io/agentLogLevel", false, &["Pod"]),
    ("sidecar.istio.io/bootstrapOverride", false, &["Pod"]),
    ("sidecar.istio.io/componentLogLevel", false, &["Pod"]),
    ("sidecar.istio.io/discoveryAddress", true, &["Pod"]),
    ("sidecar.istio.io/extraStatTags", true, &["Pod"]),
    ("sidecar.istio.io/inject", true, &["Pod"]),
    ("sidecar.istio.io/interceptionMode", false, &["Pod"]),
    ("sidecar.istio.io/logLevel", false, &["Pod"]),
    ("sidecar.istio.io/nativeSidecar", false, &["Pod"]),
    ("sidecar.istio.io/proxyCPU", false, &["Pod"]),
    ("sidecar.istio.io/proxyCPULimit", false, &["Pod"]),
    ("sidecar.istio.io/proxyImage", false, &["Pod"]),
    ("sidecar.istio.io/proxyImageType", false, &["Pod"]),
    ("sidecar.istio.io/proxyMemory", false, &["Pod"]),
    ("sidecar.istio.io/proxyMemoryLimit", false, &["Pod"]),
    ("sidecar.istio.io/rewriteAppHTTPProbers", false, &["Pod"]),
    ("sidecar.istio.io/statsCompression", true, &["Pod"]),
    ("sidecar.istio.io/statsEvictionInterval", false, &["Pod"]),
    ("sidecar.istio.io/statsFlushInterval", false, &["Pod"]),
    ("sidecar.istio.io/statsHistogramBins", false, &["Pod"]),
    ("sidecar.istio.io/statsHistogramBuckets", false, &["Pod"]),
    ("sidecar.istio.io/statsInclusionPrefixes", true, &["Pod"]),
    ("sidecar.istio.io/statsInclusionRegexps", true, &["Pod"]),
    ("sidecar.istio.io/statsInclusionSuffixes", true, &["Pod"]),
    ("sidecar.istio.io/status", false, &["Pod"]),
    ("sidecar.istio.io/userVolume", false, &["Pod"]),
    ("sidecar.istio.io/userVolumeMount", false, &["Pod"]),
    ("status.sidecar.istio.io/port", false, &["Pod"]),
    (
        "topology.istio.io/controlPlaneClusters",
        false,
        &["Namespace"],
    ),
    ("traffic.istio.io/nodeSelector", false, &["Service"]),
    (
        "traffic.sidecar.istio.io/excludeInboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/excludeInterfaces",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/includeInboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundPorts",
        false,
        &["Pod"],
    ),
    (
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        true,
        &["Pod"],
    ),
];

/// Annotations Istio sets itself: never reported.
const ALWAYS_IGNORED: &[&str] = &[
    "sidecar.istio.io/status",
    "gateway.istio.io/controller-version",
    "istio.io/rev",
];

pub(super) fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for r in &ix.store.resources {
        let kind = match r.kind {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            _ => continue,
        };
        for (name, value) in &r.meta.annotations {
            annotation(r, kind, name, value, out);
        }
    }
}

fn annotation(r: &Resource, kind: &str, name: &str, value: &str, out: &mut Vec<Diagnostic>) {
    let istio = name == "kubernetes.io/ingress.class"
        || name
            .split('/')
            .next()
            .is_some_and(|d| d.ends_with("istio.io"));
    if !istio || ALWAYS_IGNORED.contains(&name) {
        return;
    }
    let path = format!("metadata.annotations.{name}");
    let Some((_, deprecated, kinds)) = ANNOTATIONS.iter().find(|(n, _, _)| *n == name) else {
        out.push(finding(
            "IST0108",
            r,
            &path,
            format!("Unknown annotation: {name}"),
        ));
        return;
    };
    const INJECT: &str = "sidecar.istio.io/inject";
    if *deprecated && !(name == INJECT && r.meta.labels.contains_key(INJECT)) {
        let extra = if name == INJECT {
            " in favor of the \"sidecar.istio.io/inject\" label"
        } else {
            ""
        };
        out.push(finding(
            "IST0135",
            r,
            &path,
            format!(
                "Annotation {name:?} has been deprecated{extra} and may not work in future Istio versions."
            ),
        ));
    }
    if kinds.contains(&"Any") {
        return;
    }
    if !kinds.contains(&kind) {
        out.push(finding(
            "IST0107",
            r,
            &path,
            format!(
                "Misplaced annotation: {name} can only be applied to {}",
                kinds.join(", ")
            ),
        ));
        return;
    }
    if let Some(error) = invalid(name, value) {
        out.push(finding(
            "IST0125",
            r,
            &path,
            format!("Invalid annotation {name}: {error}"),
        ));
    }
}

/// Why Istio's injector rejects `value`, for the annotations checked here.
fn invalid(name: &str, value: &str) -> Option<String> {
    match name {
        "sidecar.istio.io/interceptionMode" => (!matches!(value, "REDIRECT" | "TPROXY" | "NONE"))
            .then(|| format!("interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}")),
        "status.sidecar.istio.io/port" => port(value).err(),
        "readiness.status.sidecar.istio.io/initialDelaySeconds"
        | "readiness.status.sidecar.istio.io/periodSeconds"
        | "readiness.status.sidecar.istio.io/failureThreshold" => {
            (!value.bytes().all(|b| b.is_ascii_digit())
                || value.is_empty()
                || value.parse::<u32>().is_err())
            .then(|| format!("invalid unsigned 32-bit integer: {value:?}"))
        }
        "traffic.sidecar.istio.io/includeOutboundIPRanges" if value == "*" => None,
        "traffic.sidecar.istio.io/includeOutboundIPRanges"
        | "traffic.sidecar.istio.io/excludeOutboundIPRanges" => cidrs(value).err(),
        "traffic.sidecar.istio.io/includeInboundPorts" if value == "*" => None,
        "traffic.sidecar.istio.io/includeInboundPorts"
        | "traffic.sidecar.istio.io/excludeInboundPorts"
        | "traffic.sidecar.istio.io/excludeOutboundPorts" => ports(value).err(),
        "prometheus.istio.io/merge-metrics" => (!matches!(
            value,
            "1" | "t"
                | "T"
                | "TRUE"
                | "true"
                | "True"
                | "0"
                | "f"
                | "F"
                | "FALSE"
                | "false"
                | "False"
        ))
        .then(|| format!("invalid boolean: {value:?}")),
        _ => None,
    }
}

fn port(value: &str) -> Result<u16, String> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("failed parsing port {value:?}"));
    }
    v.parse()
        .map_err(|_| format!("failed parsing port {value:?}"))
}

fn ports(value: &str) -> Result<(), String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(());
    }
    v.split(',').try_for_each(|p| port(p).map(|_| ()))
}

fn cidrs(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    for c in value.split(',') {
        let ok = c.split_once('/').is_some_and(|(ip, bits)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            !bits.is_empty()
                && bits.len() <= 3
                && bits.bytes().all(|b| b.is_ascii_digit())
                && !(bits.len() > 1 && bits.starts_with('0'))
                && bits.parse::<u32>().is_ok_and(|b| b <= max)
        });
        if !ok {
            return Err(format!("failed parsing cidr {c:?}"));
        }
    }
    Ok(())
}
