//! `isthmus up DIR`: the embedded default. Runs the local controller on the
//! directory, one gateway per gateway workload on loopback, the demo apps the
//! directory declares (WorkloadEntries annotated `isthmus.dev/demo-app`), and the
//! ACME manager that issues the cert-manager Certificates of ACME issuers (and the
//! certificates of Gateways annotated `isthmus.dev/acme-issuer`) into the state
//! directory (whose `secrets/` the controller loads as configuration; `status/`
//! holds each certificate's status, which `isthmus certs` prints).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use isthmus_controller::{ExtraSources, LocalController};
use isthmus_gateway::acme::{load_ca_roots, AcmeManager, AcmeOptions, StateDir};
use isthmus_model::{Level, Store};

/// Annotation on a WorkloadEntry: start a built-in demo app (value: the app name)
/// at the entry's address and first port, reporting the entry's `version` label.
pub const DEMO_APP_ANNOTATION: &str = "isthmus.dev/demo-app";

#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory of Istio YAML.
    dir: PathBuf,
    /// Address the gateway listeners bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Added to Gateway ports below 1024 (80 -> 8080 by default).
    #[arg(long, default_value_t = 8000)]
    port_offset: u16,
    /// Do not start the demo apps the directory declares.
    #[arg(long)]
    no_demo_apps: bool,
    /// Proxy worker threads (default: one per CPU core).
    #[arg(long, env = "ISTHMUS_WORKERS")]
    pub workers: Option<usize>,
    /// Where isthmus keeps its state: ACME accounts and issued certificates (as
    /// Secret YAML in `secrets/`, served like configuration). Default: DIR/.isthmus,
    /// created when first needed.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory of PEM certificates made elsewhere (e.g. a mounted volume), served
    /// as Secrets: `NAME.crt` + `NAME.key` (+ `NAME.ca.crt` or `ca.crt`) is Secret
    /// istio-system/NAME, `NAMESPACE/NAME.crt` + `.key` is Secret NAMESPACE/NAME.
    /// Watched like DIR; a Secret of the same name in DIR is replaced.
    #[arg(long, env = "ISTHMUS_CERT_DIR")]
    cert_dir: Option<PathBuf>,
    /// PEM root certificate(s) to trust for ACME servers besides the system's (e.g.
    /// a local pebble's); an issuer with its own `caBundle` trusts only that.
    #[arg(long, env = "ISTHMUS_ACME_CA_ROOT")]
    acme_ca_root: Option<PathBuf>,
    /// Longest wait, in seconds, between retries of a failed ACME order (the first
    /// retry is after 2 s, doubling).
    #[arg(long, default_value_t = 3600)]
    acme_retry_max: u64,
}

/// A demo app to start: (name, version, port).
fn demo_apps(store: &Store) -> Vec<(String, String, u16)> {
    store
        .workload_entries()
        .filter_map(|(r, we)| {
            let name = r.meta.annotations.get(DEMO_APP_ANNOTATION)?;
            let port = *we.ports.values().next()?;
            let version = we
                .labels
                .get("version")
                .cloned()
                .unwrap_or_else(|| "v1".into());
            Some((name.clone(), version, u16::try_from(port).ok()?))
        })
        .collect()
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let state = match &args.state_dir {
        Some(root) => StateDir::open(root).context("--state-dir")?,
        None => StateDir::new(&args.dir.join(".isthmus")),
    };
    let mut acme = AcmeOptions::new(state.clone());
    if let Some(root) = &args.acme_ca_root {
        acme.extra_roots = load_ca_roots(root)
            .map_err(anyhow::Error::msg)
            .context("--acme-ca-root")?;
    }
    acme.retry.max = Duration::from_secs(args.acme_retry_max.max(1));
    acme.retry.first = acme.retry.first.min(acme.retry.max);
    let secrets_dir = state.secrets_dir();
    let sources = ExtraSources {
        issued: Some(&secrets_dir),
        cert_dir: args.cert_dir.as_deref(),
        state_dir: Some(state.root()),
    };
    let (controller, feeds, report) = LocalController::open_sources(&args.dir, sources)
        .with_context(|| format!("loading {}", args.dir.display()))?;
    for d in &report.diagnostics {
        if d.level >= Level::Warning {
            eprintln!("{d}");
        }
    }
    for p in &report.rejected {
        eprintln!(
            "rejected {}: fix the errors above; it is not served",
            p.display()
        );
    }
    for r in &report.rejected_resources {
        eprintln!("rejected {r}: fix the errors above; it is not served");
    }

    // Demo workloads first, so the first request through the gateway finds them.
    let mut children = Vec::new();
    if !args.no_demo_apps {
        let exe = std::env::current_exe().context("locating the isthmus binary")?;
        for (name, version, port) in demo_apps(&controller.store()) {
            let child = tokio::process::Command::new(&exe)
                .args([
                    "demo-app",
                    "--exit-with-stdin",
                    "--name",
                    &name,
                    "--version",
                    &version,
                ])
                .stdin(std::process::Stdio::piped())
                .args(["--port", &port.to_string()])
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting demo app {name} {version}"))?;
            println!("demo app {name} {version}: http://127.0.0.1:{port}");
            children.push((child, port));
        }
        for (child, port) in &mut children {
            wait_for_demo_app(child, *port).await?;
        }
    }

    let opts = isthmus_gateway::GatewayOptions {
        bind: args.bind,
        port_offset: args.port_offset,
        ..Default::default()
    };
    let mut gateways = Vec::new();
    for feed in feeds {
        let name = workload_name(&feed.workload);
        let gw = isthmus_gateway::Gateway::start(feed.snapshots, opts.clone()).await;
        for l in gw.listeners() {
            println!(
                "gateway {name}: Gateway port {} -> {}",
                l.declared_port,
                l.url()
            );
        }
        gateways.push(gw);
    }
    // After the listeners: HTTP-01 challenges are answered by them.
    let acme = AcmeManager::start(controller.stores(), acme);
    let managed = isthmus_model::certs::acme_orders(&controller.store())
        .0
        .len();
    if managed > 0 {
        let state_arg = match &args.state_dir {
            Some(s) => format!(" --state-dir {}", s.display()),
            None => String::new(),
        };
        println!(
            "acme: {managed} certificate(s) kept issued; their status: isthmus certs {}{state_arg}",
            args.dir.display()
        );
    }
    let watched = match &args.cert_dir {
        Some(c) => format!("{} and {}", args.dir.display(), c.display()),
        None => args.dir.display().to_string(),
    };
    println!("ready: watching {watched} for changes (Ctrl-C stops)");

    let watch = tokio::spawn(controller.watch());
    shutdown_signal().await;
    watch.abort();
    drop(acme);
    drop(gateways);
    drop(children);
    Ok(())
}

/// Wait until a demo app accepts connections (it binds within milliseconds; the
/// deadline only guards against a port taken by something else).
async fn wait_for_demo_app(child: &mut tokio::process::Child, port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("demo app on port {port} exited ({status}); is the port in use?");
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("demo app on port {port} did not start listening within 10 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `istio-system/istio=ingressgateway`: how `up` names a gateway workload.
fn workload_name(w: &isthmus_model::compile::GatewayWorkload) -> String {
    let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}/{}", w.namespace, labels.join(","))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
