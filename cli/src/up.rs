//! `isthmus up DIR`: the embedded default. Runs the local controller on the
//! directory with the control plane (mesh CA, push server, admin endpoint), one
//! gateway per gateway workload on loopback (in this process, registered in
//! `proxy-status` like any proxy), one sidecar child process (`isthmus proxy`) per
//! injected workload, started and stopped as the configuration asks, the demo apps
//! the directory declares (WorkloadEntries annotated `isthmus.dev/demo-app`), and the
//! ACME manager that issues the cert-manager Certificates of ACME issuers (and the
//! certificates of Gateways annotated `isthmus.dev/acme-issuer`) into the state
//! directory (whose `secrets/` the controller loads as configuration; `status/`
//! holds each certificate's status, which `isthmus certs` prints).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use isthmus_controller::push::ProxyStatus;
use isthmus_controller::{ExtraSources, LocalController, ProxyKind, ProxySet};
use isthmus_engine::{AcmeChallenges, WorkloadCerts};
use isthmus_gateway::acme::{load_ca_roots, AcmeManager, AcmeOptions, StateDir};
use isthmus_model::identity::Identity;
use isthmus_model::{Level, Store};
use tokio::sync::watch;

use crate::mesh::{start_control_plane, ControlPlane, MeshArgs};

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
    #[command(flatten)]
    mesh: MeshArgs,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
}

/// A demo app to start: (name, version, address, port).
fn demo_apps(store: &Store) -> Vec<(String, String, IpAddr, u16)> {
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
            let address = we
                .address
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .filter(IpAddr::is_loopback)
                .unwrap_or(IpAddr::from([127, 0, 0, 1]));
            Some((name.clone(), version, address, u16::try_from(port).ok()?))
        })
        .collect()
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let limits = args.limits.limits()?;
    let state = match &args.state_dir {
        Some(root) => StateDir::open(root).context("--state-dir")?,
        None => StateDir::new(&args.dir.join(".isthmus")),
    };
    // The ACME challenge maps: filled by the ACME manager, answered by every
    // in-process gateway's listeners.
    let challenges = AcmeChallenges::default();
    let mut acme = AcmeOptions::new(state.clone(), challenges.clone());
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
    let (controller, report) =
        LocalController::open_sources(&args.dir, sources, args.mesh.mesh_options())
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
    let control = Arc::new(
        start_control_plane(&controller, state.root(), &args.mesh)
            .await
            .context("starting the control plane")?,
    );
    println!(
        "controller: push {} (TLS), admin http://{}/debug/proxy-status",
        control.push_addr, control.admin_addr
    );

    // Demo workloads first, so the first request through the gateway finds them.
    let mut children = Vec::new();
    let exe = std::env::current_exe().context("locating the isthmus binary")?;
    if !args.no_demo_apps {
        for (name, version, address, port) in demo_apps(&controller.store()) {
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
                .args(["--bind", &address.to_string()])
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting demo app {name} {version}"))?;
            let addr = std::net::SocketAddr::new(address, port);
            println!("demo app {name} {version}: http://{addr}");
            children.push((child, addr));
        }
        for (child, addr) in &mut children {
            wait_for_demo_app(child, *addr).await?;
        }
    }

    let opts = isthmus_gateway::GatewayOptions {
        bind: args.bind,
        port_offset: args.port_offset,
        acme: Some(challenges),
        limits,
        ..Default::default()
    };
    let mut proxies = Proxies {
        gateways: BTreeMap::new(),
        sidecars: BTreeMap::new(),
        control: control.clone(),
        opts,
        exe: exe.clone(),
        limit_args: args.limits.to_args(),
    };
    let mut set = controller.proxies();
    let first = set.borrow_and_update().clone();
    proxies.reconcile(&first).await;
    proxies.wait_synced(&first, Duration::from_secs(30)).await;
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
    let follow = tokio::spawn(async move {
        // A sidecar process that ended is started again (a second later at most).
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = set.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = check.tick() => {
                    if !proxies.reap() {
                        continue;
                    }
                }
            }
            let next = set.borrow_and_update().clone();
            proxies.reconcile(&next).await;
        }
        proxies
    });
    crate::shutdown_signal().await;
    watch.abort();
    follow.abort();
    drop(acme);
    drop(children);
    Ok(())
}

/// The proxies `up` runs: in-process gateways and sidecar child processes.
struct Proxies {
    gateways: BTreeMap<String, RunningGateway>,
    sidecars: BTreeMap<String, tokio::process::Child>,
    control: Arc<ControlPlane>,
    opts: isthmus_gateway::GatewayOptions,
    exe: PathBuf,
    /// `up`'s limit flags, passed on to each sidecar.
    limit_args: Vec<std::ffi::OsString>,
}

struct RunningGateway {
    gateway: isthmus_gateway::Gateway,
    tasks: Tasks,
}

/// Tasks aborted when dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Proxies {
    /// Forget the sidecar processes that ended (logged); whether any did.
    fn reap(&mut self) -> bool {
        let mut ended = Vec::new();
        for (id, child) in &mut self.sidecars {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("{id}: its process ended ({status}); starting it again");
                ended.push(id.clone());
            }
        }
        for id in &ended {
            self.sidecars.remove(id);
        }
        !ended.is_empty()
    }

    /// Start what `set` has and is not running; stop what it no longer has.
    async fn reconcile(&mut self, set: &ProxySet) {
        let ids: Vec<String> = set.proxies.iter().map(|p| p.kind.id()).collect();
        let gone: Vec<String> = self
            .gateways
            .keys()
            .chain(self.sidecars.keys())
            .filter(|k| !ids.contains(k))
            .cloned()
            .collect();
        for id in gone {
            if let Some(g) = self.gateways.remove(&id) {
                println!("{id}: no longer in the configuration; stopped");
                let RunningGateway { gateway, tasks } = g;
                drop(tasks);
                gateway.shutdown().await;
            }
            if let Some(mut c) = self.sidecars.remove(&id) {
                println!("{id}: no longer in the configuration; stopped");
                let _ = c.kill().await;
            }
        }
        for feed in &set.proxies {
            let id = feed.kind.id();
            if self.gateways.contains_key(&id) || self.sidecars.contains_key(&id) {
                continue;
            }
            match &feed.kind {
                ProxyKind::Gateway(w) => {
                    let g = self.start_gateway(w, feed.snapshots.clone()).await;
                    self.gateways.insert(id, g);
                }
                ProxyKind::Sidecar(w) => match self.start_sidecar(w) {
                    Ok(child) => {
                        self.sidecars.insert(id, child);
                    }
                    Err(e) => eprintln!("{id}: {e:#}"),
                },
            }
        }
    }

    async fn start_gateway(
        &self,
        w: &isthmus_model::compile::GatewayWorkload,
        snapshots: watch::Receiver<Arc<isthmus_model::Snapshot>>,
    ) -> RunningGateway {
        let name = isthmus_controller::publisher::gateway_name(w);
        let kind = ProxyKind::Gateway(w.clone());
        let identity = kind.identity(&self.control.trust_domain);
        let certs = WorkloadCerts::new();
        let mut tasks = Vec::new();
        // The gateway's workload certificate, renewed at half its lifetime.
        let key = format!("{}/{}", w.namespace, kind.name());
        {
            let (control, certs, identity, key) = (
                self.control.clone(),
                certs.clone(),
                identity.clone(),
                key.clone(),
            );
            let first = issue_in_process(&control, &certs, &identity, &key);
            if let Err(e) = &first {
                eprintln!("gateway {name}: {e:#}; mesh endpoints answer 503 until it is fixed");
            }
            tasks.push(tokio::spawn(async move {
                let mut wait = first.unwrap_or(Duration::from_secs(5));
                loop {
                    tokio::time::sleep(wait).await;
                    wait = issue_in_process(&control, &certs, &identity, &key)
                        .unwrap_or(Duration::from_secs(5));
                }
            }));
        }
        let opts = isthmus_gateway::GatewayOptions {
            certs: Some(certs.clone()),
            ..self.opts.clone()
        };
        let mut pushed = snapshots.clone();
        let gw = isthmus_gateway::Gateway::start(snapshots, opts).await;
        for l in gw.listeners() {
            println!(
                "gateway {name}: Gateway port {} -> {}",
                l.declared_port,
                l.url()
            );
        }
        // In proxy-status like any proxy: the version its listeners serve.
        let status = self.control.status.clone();
        status.upsert(
            &key,
            ProxyStatus {
                name: kind.name(),
                namespace: w.namespace.clone(),
                role: "gateway".into(),
                identity: identity.uri(),
                version: 0,
                status: "STALE".into(),
                inbound: None,
                cert_expiry: certs
                    .current()
                    .map(|m| isthmus_model::der::format_utc(m.not_after)),
            },
        );
        // Sent: the version the publisher pushed; applied: the one whose listeners
        // the gateway serves (STALE in between, as for a remote proxy).
        let mut gw_status = gw.status();
        tasks.push(tokio::spawn(async move {
            loop {
                status.sent(&key, pushed.borrow_and_update().version);
                status.answered(&key, gw_status.borrow_and_update().version, Vec::new());
                if let Some(m) = certs.current() {
                    status.cert_expiry(&key, m.not_after);
                }
                tokio::select! {
                    c = pushed.changed() => if c.is_err() { return },
                    c = gw_status.changed() => if c.is_err() { return },
                }
            }
        }));
        RunningGateway {
            gateway: gw,
            tasks: Tasks(tasks),
        }
    }

    fn start_sidecar(
        &self,
        w: &isthmus_model::mesh::MeshWorkload,
    ) -> anyhow::Result<tokio::process::Child> {
        let token = self.control.tokens.issue(&w.identity);
        let child = tokio::process::Command::new(&self.exe)
            .args(["proxy", "--exit-with-stdin", "--controller"])
            .arg(self.control.push_addr.to_string())
            .arg("--root-cert")
            .arg(&self.control.root_file)
            .args(["--namespace", &w.namespace, "--name", &w.name])
            .args(&self.limit_args)
            .env("ISTHMUS_BOOTSTRAP_TOKEN", token)
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting its sidecar")?;
        Ok(child)
    }

    /// Wait (up to `timeout`) until every proxy of `set` applied `set.version`,
    /// then print each sidecar's inbound address and identity.
    async fn wait_synced(&self, set: &ProxySet, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let want = set.proxies.len();
        loop {
            let list = self.control.status.list();
            let synced = list
                .iter()
                .filter(|p| p.status == "SYNCED" && p.version >= set.version)
                .count();
            if synced >= want || tokio::time::Instant::now() > deadline {
                for p in list.iter().filter(|p| p.role == "sidecar") {
                    println!(
                        "sidecar {}/{}: inbound {} identity {} ({})",
                        p.namespace,
                        p.name,
                        p.inbound.as_deref().unwrap_or("-"),
                        p.identity,
                        p.status
                    );
                }
                if synced < want {
                    eprintln!("warning: {synced} of {want} proxies synced after {timeout:?}; see isthmus proxy-status");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Issue a workload certificate to an in-process proxy: the key is made here and
/// signed by the CA directly (no network hop). Returns when to renew (half life).
fn issue_in_process(
    control: &ControlPlane,
    certs: &WorkloadCerts,
    identity: &Identity,
    key: &str,
) -> anyhow::Result<Duration> {
    let k = isthmus_mesh_proxy::csr::new_key_and_csr(identity)?;
    let issued = control
        .ca
        .sign_csr(&k.csr_pem, identity, control.cert_ttl)?;
    let m = certs.update(
        issued.chain_pem.as_bytes(),
        k.key_pem.as_bytes(),
        control.ca.root_pem().as_bytes(),
    )?;
    control.status.cert_expiry(key, m.not_after);
    Ok(control.cert_ttl / 2)
}

/// Wait until a demo app accepts connections (it binds within milliseconds; the
/// deadline only guards against a port taken by something else).
async fn wait_for_demo_app(
    child: &mut tokio::process::Child,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("demo app on {addr} exited ({status}); is the port in use?");
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("demo app on {addr} did not start listening within 10 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
