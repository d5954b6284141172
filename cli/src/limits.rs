//! The limits and timeouts every listener holds its clients to, from a mesh config
//! file (`--mesh-config`) and flags (a flag wins over the file), as the engine's
//! [`Limits`].
//!
//! The file is Istio's MeshConfig, as YAML (the `mesh` key of the `istio`
//! ConfigMap, or the ConfigMap itself): isthmus reads `connectTimeout` and
//! `defaultConfig.gatewayTopology.numTrustedProxies` with Istio's meaning, and its
//! own `isthmus.limits` section for the rest (names as the flags, camelCase).
//! Other MeshConfig fields are Istio's and ignored here; an unknown field in
//! `isthmus.limits` or a value that does not parse is an error naming the file,
//! line and field.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use isthmus_engine::Limits;
use serde::Deserialize;

/// Limits and timeouts (see the README's table for defaults).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Istio MeshConfig YAML (or the `istio` ConfigMap holding it): its
    /// `connectTimeout`, `defaultConfig.gatewayTopology.numTrustedProxies` and
    /// `isthmus.limits` set the limits below; a flag wins over the file.
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Time a client has to send a whole request head [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    request_head_timeout: Option<Duration>,
    /// Idle keep-alive (HTTP/1.1) or stream-less (HTTP/2) client connections are closed after this [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Time a client has to finish its TLS handshake [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    handshake_timeout: Option<Duration>,
    /// Longest silence while a client sends a request body [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    body_timeout: Option<Duration>,
    /// Upstream connect timeout (Istio's `connectTimeout`) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    connect_timeout: Option<Duration>,
    /// Largest request head in bytes (Ki/Mi suffixes allowed); above it: 431 [default: 60Ki].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_request_head: Option<u64>,
    /// Most header fields in a request; above it: 431 [default: 100].
    #[arg(long, value_name = "N")]
    max_request_headers: Option<usize>,
    /// Longest request target in bytes; above it: 414 [default: 16Ki].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_uri_length: Option<u64>,
    /// Largest request body in bytes; above it: 413 [default: unlimited].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_request_body: Option<u64>,
    /// Concurrent client connections per listener; more are closed at once [default: unlimited].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Concurrent client connections per client address; more are closed at once [default: unlimited].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// Requests per client connection (then `Connection: close`, or GOAWAY) [default: unlimited].
    #[arg(long, value_name = "N")]
    max_requests_per_connection: Option<u64>,
    /// HTTP/2 concurrent streams per client connection [default: 100].
    #[arg(long, value_name = "N")]
    h2_max_concurrent_streams: Option<u32>,
    /// Proxies trusted in front of the gateway (Istio's `gatewayTopology.numTrustedProxies`) [default: 0].
    #[arg(long, value_name = "N")]
    num_trusted_proxies: Option<u32>,
}

/// `isthmus.limits` in the mesh config: every field optional, none unknown.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileLimits {
    request_head_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    handshake_timeout: Option<Dur>,
    body_timeout: Option<Dur>,
    max_request_head: Option<Size>,
    max_request_headers: Option<usize>,
    max_uri_length: Option<Size>,
    max_request_body: Option<Size>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_requests_per_connection: Option<u64>,
    h2_max_concurrent_streams: Option<u32>,
}

/// The part of Istio's MeshConfig isthmus reads (other fields are ignored).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct MeshConfig {
    connect_timeout: Option<Dur>,
    default_config: Option<ProxyConfig>,
    isthmus: Option<IsthmusSection>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct ProxyConfig {
    gateway_topology: Option<GatewayTopology>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct GatewayTopology {
    num_trusted_proxies: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct IsthmusSection {
    limits: Option<FileLimits>,
}

/// A duration as Istio writes them (`10s`, `1.5s`, `500ms`, `1m`, `1h`).
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// A byte size: a number, or with a `Ki`/`Mi`/`Gi` suffix.
#[derive(Debug, Clone, Copy)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Size(n)),
            Raw::Text(t) => parse_size(&t).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// `10s`, `1.5s`, `500ms`, `2m`, `1h` (Istio's duration syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => return Err(format!("{text:?}: a duration needs a unit (ms, s, m, h)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a duration"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 365.0 * 86400.0 {
        return Err(format!("{text:?}: must be above 0 and at most a year"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `65536`, `64Ki`, `1Mi`, `1Gi`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, factor) = if let Some(n) = t.strip_suffix("Ki") {
        (n, 1u64 << 10)
    } else if let Some(n) = t.strip_suffix("Mi") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("Gi") {
        (n, 1 << 30)
    } else {
        (t, 1)
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{text:?}: not a size (bytes, or with Ki, Mi, Gi)"))
}

impl LimitArgs {
    /// The limits: defaults, then the mesh config file, then the flags.
    pub fn limits(&self) -> anyhow::Result<Arc<Limits>> {
        let mut limits = Limits::default();
        if let Some(path) = &self.mesh_config {
            apply_file(&mut limits, path)?;
        }
        macro_rules! flag {
            ($field:ident) => {
                if let Some(v) = self.$field {
                    limits.$field = v;
                }
            };
            ($field:ident, some) => {
                if let Some(v) = self.$field {
                    limits.$field = Some(v);
                }
            };
        }
        flag!(request_head_timeout);
        flag!(idle_timeout);
        flag!(handshake_timeout);
        flag!(body_timeout);
        flag!(connect_timeout);
        flag!(max_request_headers);
        flag!(max_request_body, some);
        flag!(max_connections, some);
        flag!(max_connections_per_ip, some);
        flag!(max_requests_per_connection, some);
        flag!(h2_max_concurrent_streams);
        flag!(num_trusted_proxies);
        if let Some(v) = self.max_request_head {
            limits.max_request_head = usize::try_from(v).context("--max-request-head")?;
        }
        if let Some(v) = self.max_uri_length {
            limits.max_uri_length = usize::try_from(v).context("--max-uri-length")?;
        }
        check(&limits)?;
        Ok(Arc::new(limits))
    }

    /// The same settings as arguments for a child process (`up`'s sidecars).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        if let Some(p) = &self.mesh_config {
            out.push("--mesh-config".into());
            out.push(p.clone().into_os_string());
        }
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push(flag.into());
                out.push(v.into());
            }
        };
        let ms = |d: Option<Duration>| d.map(|d| format!("{}ms", d.as_millis().max(1)));
        push("--request-head-timeout", ms(self.request_head_timeout));
        push("--idle-timeout", ms(self.idle_timeout));
        push("--handshake-timeout", ms(self.handshake_timeout));
        push("--body-timeout", ms(self.body_timeout));
        push("--connect-timeout", ms(self.connect_timeout));
        push(
            "--max-request-head",
            self.max_request_head.map(|v| v.to_string()),
        );
        push(
            "--max-request-headers",
            self.max_request_headers.map(|v| v.to_string()),
        );
        push(
            "--max-uri-length",
            self.max_uri_length.map(|v| v.to_string()),
        );
        push(
            "--max-request-body",
            self.max_request_body.map(|v| v.to_string()),
        );
        push(
            "--max-connections",
            self.max_connections.map(|v| v.to_string()),
        );
        push(
            "--max-connections-per-ip",
            self.max_connections_per_ip.map(|v| v.to_string()),
        );
        push(
            "--max-requests-per-connection",
            self.max_requests_per_connection.map(|v| v.to_string()),
        );
        push(
            "--h2-max-concurrent-streams",
            self.h2_max_concurrent_streams.map(|v| v.to_string()),
        );
        push(
            "--num-trusted-proxies",
            self.num_trusted_proxies.map(|v| v.to_string()),
        );
        out
    }
}

/// Values that would make a listener unusable.
fn check(l: &Limits) -> anyhow::Result<()> {
    if l.max_request_headers == 0 {
        bail!("max request headers must be at least 1");
    }
    if l.max_request_head < 64 {
        bail!("max request head must be at least 64 bytes");
    }
    if l.h2_max_concurrent_streams == 0 {
        bail!("HTTP/2 max concurrent streams must be at least 1");
    }
    for (name, v) in [
        ("max connections", l.max_connections),
        (
            "max connections per client address",
            l.max_connections_per_ip,
        ),
    ] {
        if v == Some(0) {
            bail!("{name} must be at least 1 (leave it unset for no limit)");
        }
    }
    if l.max_requests_per_connection == Some(0) {
        bail!("max requests per connection must be at least 1 (leave it unset for no limit)");
    }
    Ok(())
}

/// Apply the mesh config at `path` to `limits`.
fn apply_file(limits: &mut Limits, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--mesh-config {}", path.display()))?;
    let mesh = parse_mesh_config(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(d) = mesh.connect_timeout {
        limits.connect_timeout = d.0;
    }
    if let Some(n) = mesh
        .default_config
        .and_then(|c| c.gateway_topology)
        .and_then(|t| t.num_trusted_proxies)
    {
        limits.num_trusted_proxies = n;
    }
    let Some(f) = mesh.isthmus.and_then(|i| i.limits) else {
        return Ok(());
    };
    let dur = |v: Option<Dur>, into: &mut Duration| {
        if let Some(d) = v {
            *into = d.0;
        }
    };
    dur(f.request_head_timeout, &mut limits.request_head_timeout);
    dur(f.idle_timeout, &mut limits.idle_timeout);
    dur(f.handshake_timeout, &mut limits.handshake_timeout);
    dur(f.body_timeout, &mut limits.body_timeout);
    let to_usize = |s: Size, field: &str| {
        usize::try_from(s.0).with_context(|| format!("{}: isthmus.limits.{field}", path.display()))
    };
    if let Some(s) = f.max_request_head {
        limits.max_request_head = to_usize(s, "maxRequestHead")?;
    }
    if let Some(s) = f.max_uri_length {
        limits.max_uri_length = to_usize(s, "maxUriLength")?;
    }
    if let Some(n) = f.max_request_headers {
        limits.max_request_headers = n;
    }
    if let Some(s) = f.max_request_body {
        limits.max_request_body = Some(s.0);
    }
    if let Some(n) = f.max_connections {
        limits.max_connections = Some(n);
    }
    if let Some(n) = f.max_connections_per_ip {
        limits.max_connections_per_ip = Some(n);
    }
    if let Some(n) = f.max_requests_per_connection {
        limits.max_requests_per_connection = Some(n);
    }
    if let Some(n) = f.h2_max_concurrent_streams {
        limits.h2_max_concurrent_streams = n;
    }
    Ok(())
}

/// The MeshConfig in `text` (the document, or the `istio` ConfigMap holding it).
fn parse_mesh_config(text: &str) -> Result<MeshConfig, String> {
    crate::mesh_config::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_as_istio_writes_them() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10").unwrap_err().contains("unit"));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_size("60Ki").unwrap(), 61440);
        assert_eq!(parse_size("1Mi").unwrap(), 1 << 20);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("1Ti").is_err());
    }

    fn args_with_file(text: &str) -> (LimitArgs, tempfile_path::Guard) {
        let guard = tempfile_path::Guard::new(text);
        let args = LimitArgs {
            mesh_config: Some(guard.path.clone()),
            ..LimitArgs::default()
        };
        (args, guard)
    }

    /// A file under the system temp dir, removed on drop.
    mod tempfile_path {
        pub struct Guard {
            pub path: std::path::PathBuf,
        }
        impl Guard {
            pub fn new(text: &str) -> Guard {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "isthmus-mesh-config-{}-{}.yaml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, text).unwrap();
                Guard { path }
            }
        }
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    #[test]
    fn mesh_config_sets_istio_fields_and_isthmus_limits_and_flags_win() {
        let (mut args, _g) = args_with_file(
            "connectTimeout: 3s\n\
             accessLogFile: /dev/stdout\n\
             defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: 2\n  concurrency: 2\n\
             isthmus:\n  limits:\n    requestHeadTimeout: 4s\n    maxRequestBody: 1Mi\n    maxConnectionsPerIp: 1000\n",
        );
        let l = args.limits().unwrap();
        assert_eq!(l.connect_timeout, Duration::from_secs(3));
        assert_eq!(l.num_trusted_proxies, 2);
        assert_eq!(l.request_head_timeout, Duration::from_secs(4));
        assert_eq!(l.max_request_body, Some(1 << 20));
        assert_eq!(l.max_connections_per_ip, Some(1000));
        assert_eq!(l.idle_timeout, Limits::default().idle_timeout);
        args.request_head_timeout = Some(Duration::from_secs(2));
        assert_eq!(
            args.limits().unwrap().request_head_timeout,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn flags_passed_on_to_a_sidecar_give_the_same_limits() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cmd {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let given = Cmd::try_parse_from([
            "isthmus",
            "--request-head-timeout",
            "2.5s",
            "--max-request-body",
            "1Mi",
            "--max-connections-per-ip",
            "7",
            "--num-trusted-proxies",
            "1",
        ])
        .unwrap()
        .limits;
        let mut argv: Vec<std::ffi::OsString> = vec!["isthmus".into()];
        argv.extend(given.to_args());
        let passed = Cmd::try_parse_from(argv).unwrap().limits;
        assert_eq!(given.limits().unwrap(), passed.limits().unwrap());
        assert_eq!(
            passed.limits().unwrap().request_head_timeout,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn the_istio_configmap_form_is_read() {
        let (args, _g) = args_with_file(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\n\
             data:\n  mesh: |-\n    defaultConfig:\n      gatewayTopology:\n        numTrustedProxies: 1\n",
        );
        assert_eq!(args.limits().unwrap().num_trusted_proxies, 1);
    }

    #[test]
    fn a_bad_field_is_named_with_file_and_line() {
        let (args, g) = args_with_file("isthmus:\n  limits:\n    idleTimeout: 60\n");
        let e = format!("{:#}", args.limits().unwrap_err());
        assert!(e.contains(&g.path.display().to_string()), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("isthmus.limits.idleTimeout"), "{e}");
        assert!(e.contains("unit"), "{e}");
        let (args, _g) = args_with_file("isthmus:\n  limits:\n    maxBodySize: 10\n");
        let e = format!("{:#}", args.limits().unwrap_err());
        assert!(e.contains("maxBodySize"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }
}
