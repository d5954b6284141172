//! The mesh commands: the control plane `up` and `controller` run (mesh CA, push
//! server, the admin endpoint `proxy-status` reads), `isthmus proxy` (a sidecar
//! taking everything from the controller) and `isthmus proxy-status`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use isthmus_controller::ca::{MeshCa, Tokens};
use isthmus_controller::push::{self, ProxyStatus, PushContext, PushServer, StatusTable};
use isthmus_controller::LocalController;
use isthmus_model::mesh::MeshOptions;
use isthmus_model::push::NodeInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The mesh settings `up` and `controller` share.
#[derive(clap::Args, Debug, Clone)]
pub struct MeshArgs {
    /// Port of the push server proxies connect to (istiod's 15012; TLS).
    #[arg(long, default_value_t = 15012, env = "ISTHMUS_XDS_PORT")]
    pub xds_port: u16,
    /// Address the push server listens on (proxies in other network namespaces
    /// or hosts need a reachable one).
    #[arg(long, default_value = "127.0.0.1")]
    pub xds_address: IpAddr,
    /// Transparent mode, as in pods: sidecars capture traffic with iptables
    /// (`isthmus proxy init`), mesh endpoints are the workloads' own addresses.
    /// Default: explicit loopback ports per sidecar.
    #[arg(long)]
    pub transparent: bool,
    /// Port of the admin endpoint on loopback (`/debug/proxy-status`; istiod's
    /// monitoring port 15014).
    #[arg(long, default_value_t = 15014, env = "ISTHMUS_ADMIN_PORT")]
    pub admin_port: u16,
    /// Istio's `cacerts` directory (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem): the mesh CA is this intermediate. Default: a root generated
    /// on first start in STATE/ca.
    #[arg(long, env = "ISTHMUS_CACERTS")]
    pub cacerts: Option<PathBuf>,
    /// `MeshConfig.trustDomain`.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// First loopback port of the sidecars' inbound and outbound listeners
    /// (explicit-port mode).
    #[arg(long, default_value_t = 15100, env = "ISTHMUS_SIDECAR_PORT_BASE")]
    pub sidecar_port_base: u16,
    /// Lifetime of workload certificates (`24h`, `90m`, `30s`); renewed at half.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
}

impl MeshArgs {
    pub fn mesh_options(&self) -> MeshOptions {
        MeshOptions {
            trust_domain: self.trust_domain.clone(),
            port_base: (!self.transparent).then_some(self.sidecar_port_base),
        }
    }
}

/// `30s`, `5m`, `24h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a duration like 30s, 5m, 24h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    if secs == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(Duration::from_secs(secs))
}

/// A running control plane.
pub struct ControlPlane {
    pub ca: Arc<MeshCa>,
    pub tokens: Arc<Tokens>,
    pub status: Arc<StatusTable>,
    pub push_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The mesh root as a file proxies are started with.
    pub root_file: PathBuf,
    pub cert_ttl: Duration,
    pub trust_domain: String,
    _push: PushServer,
    admin: tokio::task::JoinHandle<()>,
    runtime_file: Option<PathBuf>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.admin.abort();
        if let Some(f) = &self.runtime_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Where `up` says where its controller is, so `proxy-status` finds it.
pub fn runtime_file() -> PathBuf {
    let dir = std::env::var_os("ISTHMUS_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("isthmus"));
    dir.join("controller.json")
}

/// Start the CA, the push server and the admin endpoint for `ctl`.
pub async fn start_control_plane(
    ctl: &LocalController,
    state_root: &Path,
    args: &MeshArgs,
) -> anyhow::Result<ControlPlane> {
    let ca = match &args.cacerts {
        Some(dir) => MeshCa::from_cacerts(dir).context("--cacerts")?,
        None => MeshCa::load_or_create(state_root).context("the mesh CA")?,
    };
    let ca = Arc::new(ca);
    let root_file = state_root.join("ca").join("mesh-root.pem");
    if let Some(d) = root_file.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // The root certificate is public; written for the proxies `up` starts.
    std::fs::write(&root_file, ca.root_pem())
        .with_context(|| format!("writing {}", root_file.display()))?;
    let tokens = Arc::new(Tokens::new());
    let status = Arc::new(StatusTable::new());
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let push = push::serve(
        SocketAddr::new(args.xds_address, args.xds_port),
        PushContext {
            ca: ca.clone(),
            tokens: tokens.clone(),
            versioned: ctl.versioned(),
            mesh: args.mesh_options(),
            status: status.clone(),
            cert_ttl: args.cert_ttl,
        },
    )
    .await
    .context("the push server (--xds-port)")?;
    let admin_listener = tokio::net::TcpListener::bind(SocketAddr::new(loopback, args.admin_port))
        .await
        .with_context(|| {
            format!(
                "the admin endpoint 127.0.0.1:{} (--admin-port)",
                args.admin_port
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;
    let admin = tokio::spawn(serve_admin(admin_listener, status.clone()));
    let push_addr = push.local_addr();
    let runtime_file = runtime_file();
    let written = runtime_file
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| {
            let body = serde_json::json!({
                "admin": admin_addr.to_string(),
                "xds": push_addr.to_string(),
                "pid": std::process::id(),
            });
            std::fs::write(&runtime_file, body.to_string())
        });
    let runtime_file = match written {
        Ok(()) => Some(runtime_file),
        Err(e) => {
            tracing::warn!(
                "cannot write {}: {e}; proxy-status needs --controller",
                runtime_file.display()
            );
            None
        }
    };
    Ok(ControlPlane {
        ca,
        tokens,
        status,
        push_addr,
        admin_addr,
        root_file,
        cert_ttl: args.cert_ttl,
        trust_domain: args.trust_domain.clone(),
        _push: push,
        admin,
        runtime_file,
    })
}

/// A minimal HTTP/1.1 responder: `GET /debug/proxy-status` answers the status
/// table as JSON; anything else 404. Loopback only.
async fn serve_admin(listener: tokio::net::TcpListener, status: Arc<StatusTable>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(m)) => n += m,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (code, body) = if path == "/debug/proxy-status" {
                let list = status.list();
                (
                    "200 OK",
                    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()),
                )
            } else {
                ("404 Not Found", "{}".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// `isthmus controller DIR`: the control plane alone (no gateway, no sidecars of its
/// own): proxies started elsewhere connect to it. Each injected workload's bootstrap
/// token is written to `STATE/tokens/<namespace>.<name>` (mode 0600) for the proxy
/// started for it (`isthmus proxy --token-file`); a proxy that already has a
/// certificate reconnects with it, also to a restarted controller.
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Directory of Istio YAML.
    dir: PathBuf,
    /// Where the controller keeps its state (the mesh CA, tokens). Default: DIR/.isthmus.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    mesh: MeshArgs,
}

pub async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let state = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.dir.join(".isthmus"));
    let sources = isthmus_controller::ExtraSources {
        issued: None,
        cert_dir: None,
        state_dir: Some(&state),
    };
    let (controller, report) =
        LocalController::open_sources(&args.dir, sources, args.mesh.mesh_options())
            .with_context(|| format!("loading {}", args.dir.display()))?;
    for d in report
        .diagnostics
        .iter()
        .filter(|d| d.level >= isthmus_model::Level::Warning)
    {
        eprintln!("{d}");
    }
    let control = start_control_plane(&controller, &state, &args.mesh).await?;
    println!(
        "controller: push {} (TLS), admin http://{}/debug/proxy-status",
        control.push_addr, control.admin_addr
    );
    let tokens_dir = state.join("tokens");
    let write_tokens = |store: &isthmus_model::Store| -> anyhow::Result<()> {
        let mesh = args.mesh.mesh_options();
        for kind in isthmus_controller::publisher::wanted_proxies(store, &mesh) {
            let ns = match &kind {
                isthmus_controller::ProxyKind::Gateway(w) => &w.namespace,
                isthmus_controller::ProxyKind::Sidecar(w) => &w.namespace,
            };
            let path = tokens_dir.join(format!("{ns}.{}", kind.name()));
            if path.exists() {
                continue;
            }
            let identity = kind.identity(&mesh.trust_domain);
            write_private(&path, control.tokens.issue(&identity).as_bytes())?;
            println!(
                "{} {ns}/{}: bootstrap token in {}",
                kind.role(),
                kind.name(),
                path.display()
            );
        }
        Ok(())
    };
    // Tokens of an earlier run are stale: this process issues its own.
    let _ = std::fs::remove_dir_all(&tokens_dir);
    write_tokens(&controller.store())?;
    println!(
        "ready: watching {} for changes (Ctrl-C stops)",
        args.dir.display()
    );
    let mut stores = controller.stores();
    let watch = tokio::spawn(controller.watch());
    loop {
        tokio::select! {
            _ = crate::shutdown_signal() => break,
            changed = stores.changed() => {
                if changed.is_err() { break; }
                let store = stores.borrow_and_update().clone();
                if let Err(e) = write_tokens(&store) {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
    watch.abort();
    drop(control);
    Ok(())
}

/// Write `bytes` to `path` with mode 0600 (directories 0700), replacing it whole.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        isthmus_files::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    isthmus_files::write_private(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `isthmus proxy`: a sidecar whose configuration and certificate come from the
/// controller.
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// The controller's push address.
    #[arg(long, default_value = "127.0.0.1:15012", env = "ISTHMUS_CONTROLLER")]
    controller: String,
    /// The mesh root (PEM) the controller's certificate chains to.
    #[arg(long, env = "ISTHMUS_ROOT_CERT", required = true)]
    root_cert: Option<PathBuf>,
    /// The workload's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The workload (WorkloadEntry) name.
    #[arg(long, required = true)]
    name: Option<String>,
    /// Transparent mode, as in a pod after `isthmus proxy init`: inbound on the
    /// inbound capture port, outbound on the outbound capture port, the proxy's own
    /// connections marked. Default: the explicit ports the controller allocates.
    #[arg(long)]
    transparent: bool,
    #[command(flatten)]
    capture: CaptureArgs,
    /// A file holding the bootstrap token (else `ISTHMUS_BOOTSTRAP_TOKEN`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
}

/// The capture ports and mark shared by `proxy --transparent` and `proxy init`.
#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Where inbound connections are redirected.
    #[arg(long, default_value_t = 15006)]
    inbound_capture_port: u16,
    /// Where the app's outbound connections are redirected.
    #[arg(long, default_value_t = 15001)]
    outbound_capture_port: u16,
    /// `SO_MARK` of the proxy's own connections (never redirected).
    #[arg(long, default_value_t = 1337)]
    proxy_mark: u32,
}

/// `isthmus proxy init|cleanup`.
#[derive(clap::Subcommand, Debug)]
pub enum ProxyCommand {
    /// Install the iptables rules that redirect the workload's traffic to its
    /// sidecar (istio-init's job; run in the workload's network namespace, as root).
    Init {
        #[command(flatten)]
        capture: CaptureArgs,
        /// Inbound ports not redirected (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "15020,15021,15090")]
        exclude_inbound_ports: Vec<u16>,
        /// Print the rules instead of installing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the rules `init` installed.
    Cleanup,
}

pub fn run_proxy_command(cmd: ProxyCommand) -> std::process::ExitCode {
    use isthmus_mesh_proxy::intercept;
    match cmd {
        ProxyCommand::Init {
            capture,
            exclude_inbound_ports,
            dry_run,
        } => {
            let o = intercept::InterceptOptions {
                inbound_capture_port: capture.inbound_capture_port,
                outbound_capture_port: capture.outbound_capture_port,
                proxy_mark: capture.proxy_mark,
                exclude_inbound_ports,
            };
            if dry_run {
                let lines: Vec<String> = intercept::rules(&o)
                    .into_iter()
                    .map(|r| format!("iptables {}", r.join(" ")))
                    .collect();
                print_lines(&lines);
                return std::process::ExitCode::SUCCESS;
            }
            match intercept::apply(&o) {
                Ok(done) => {
                    for d in done {
                        println!("{d}");
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    intercept::remove();
                    std::process::ExitCode::FAILURE
                }
            }
        }
        ProxyCommand::Cleanup => {
            intercept::remove();
            std::process::ExitCode::SUCCESS
        }
    }
}

/// The bootstrap token: from `--token-file`, else `ISTHMUS_BOOTSTRAP_TOKEN` (from
/// the environment, never the command line, where `ps` would show it; removed from
/// the environment once read).
fn bootstrap_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("ISTHMUS_BOOTSTRAP_TOKEN").ok(),
    };
    std::env::remove_var("ISTHMUS_BOOTSTRAP_TOKEN");
    Ok(token)
}

pub async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let (Some(root_cert), Some(name)) = (args.root_cert.clone(), args.name.clone()) else {
        anyhow::bail!("--root-cert and --name are required");
    };
    let root_pem = std::fs::read(&root_cert)
        .with_context(|| format!("--root-cert {}", root_cert.display()))?;
    let token = bootstrap_token(args.token_file.as_deref())?;
    let limits = args.limits.limits()?;
    let opts = isthmus_mesh_proxy::ClientOptions {
        controller: args.controller,
        root_pem,
        node: NodeInfo {
            role: "sidecar".into(),
            name: name.clone(),
            namespace: args.namespace.clone(),
        },
        token,
        token_file: args.token_file.clone(),
        mark: args.transparent.then_some(args.capture.proxy_mark),
        service_account: None,
    };
    let interception = args
        .transparent
        .then_some(isthmus_mesh_proxy::Interception {
            inbound_port: args.capture.inbound_capture_port,
            outbound_port: args.capture.outbound_capture_port,
            mark: Some(args.capture.proxy_mark),
        });
    let key = format!("{}/{}", args.namespace, name);
    let mut last = String::new();
    let sidecar =
        isthmus_mesh_proxy::run_sidecar(opts, interception, limits, move |status, identity| {
            let inbound: Vec<String> = status
                .inbound
                .iter()
                .map(|(app, addr)| format!("{addr} (app port {app})"))
                .collect();
            let line = format!(
                "sidecar {key}: inbound {}; outbound {}; identity {}",
                inbound.join(", "),
                status
                    .outbound
                    .map_or_else(|| "none".to_string(), |a| a.to_string()),
                if identity.is_empty() {
                    "(pending)"
                } else {
                    identity
                }
            );
            if line != last {
                println!("{line}");
                last = line;
            }
        });
    tokio::select! {
        _ = sidecar => Ok(()),
        _ = crate::shutdown_signal() => Ok(()),
    }
}

/// `isthmus gateway`: a standalone gateway whose configuration and certificate come
/// from the controller (the same engine and listeners as `up`'s in-process one).
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// The controller's push address.
    #[arg(long, default_value = "127.0.0.1:15012", env = "ISTHMUS_CONTROLLER")]
    controller: String,
    /// The mesh root (PEM) the controller's certificate chains to.
    #[arg(long, env = "ISTHMUS_ROOT_CERT")]
    root_cert: PathBuf,
    /// The gateway workload's namespace.
    #[arg(long, default_value = "istio-system")]
    namespace: String,
    /// The gateway workload's labels (what Gateway `selector`s match).
    #[arg(long, value_delimiter = ',', default_value = "istio=ingressgateway")]
    labels: Vec<String>,
    /// A file holding the bootstrap token (else `ISTHMUS_BOOTSTRAP_TOKEN`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Address the listeners bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Added to Gateway ports below 1024.
    #[arg(long, default_value_t = 8000)]
    port_offset: u16,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
}

pub async fn run_gateway(args: GatewayArgs) -> anyhow::Result<()> {
    use isthmus_controller::ProxyKind;
    let root_pem = std::fs::read(&args.root_cert)
        .with_context(|| format!("--root-cert {}", args.root_cert.display()))?;
    let limits = args.limits.limits()?;
    let mut labels = isthmus_model::resources::Labels::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--labels {l}: not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let workload = isthmus_model::compile::GatewayWorkload {
        namespace: args.namespace.clone(),
        labels,
    };
    let kind = ProxyKind::Gateway(workload.clone());
    let token = bootstrap_token(args.token_file.as_deref())?;
    let opts = isthmus_mesh_proxy::ClientOptions {
        controller: args.controller.clone(),
        root_pem,
        node: NodeInfo {
            role: "gateway".into(),
            name: kind.name(),
            namespace: args.namespace.clone(),
        },
        token,
        token_file: args.token_file.clone(),
        mark: None,
        service_account: Some(
            isthmus_controller::publisher::gateway_service_account(&workload).to_string(),
        ),
    };
    let certs = isthmus_engine::WorkloadCerts::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let client = tokio::spawn(isthmus_mesh_proxy::client::run(opts, certs.clone(), tx));
    let (snapshots_tx, snapshots) =
        tokio::sync::watch::channel(Arc::new(isthmus_model::Snapshot::default()));
    let gw_opts = isthmus_gateway::GatewayOptions {
        bind: args.bind,
        port_offset: args.port_offset,
        certs: Some(certs.clone()),
        // No ACME manager runs here yet: no challenge is answered.
        acme: None,
        limits,
        ..Default::default()
    };
    let gateway = isthmus_gateway::Gateway::start(snapshots, gw_opts).await;
    let mut status = gateway.status();
    let name = isthmus_controller::publisher::gateway_name(&workload);
    let mut printed = Vec::new();
    let serve = async {
        while let Some(event) = rx.recv().await {
            let isthmus_mesh_proxy::Event::Config {
                version,
                mesh,
                store,
                rejected,
                reply,
            } = event
            else {
                continue;
            };
            let (mut snap, diags) =
                isthmus_model::compile::compile_gateway_with(&store, &workload, &mesh);
            for d in diags
                .iter()
                .filter(|d| d.level >= isthmus_model::Level::Warning)
            {
                tracing::warn!("{d}");
            }
            snap.version = version;
            snapshots_tx.send_replace(Arc::new(snap));
            // Applied once the listeners of this version are reconciled.
            while status.borrow_and_update().version < version {
                if status.changed().await.is_err() {
                    break;
                }
            }
            for l in gateway.listeners() {
                if !printed.contains(&l) {
                    println!(
                        "gateway {name}: Gateway port {} -> {}",
                        l.declared_port,
                        l.url()
                    );
                    printed.push(l);
                }
            }
            let _ = reply.send(rejected);
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = crate::shutdown_signal() => {}
    }
    client.abort();
    gateway.shutdown().await;
    Ok(())
}

/// `isthmus proxy-status`.
#[derive(clap::Args, Debug)]
pub struct ProxyStatusArgs {
    /// The controller's admin address (default: the one `isthmus up` started).
    #[arg(long)]
    controller: Option<String>,
    /// Output format: a table, or `json`.
    #[arg(short = 'o', long = "output", default_value = "table")]
    output: String,
}

/// Fetch the status list from the admin endpoint.
pub async fn fetch_status(admin: &str) -> anyhow::Result<Vec<ProxyStatus>> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(admin),
    )
    .await
    .context("connecting")?
    .with_context(|| format!("connecting to the controller at {admin}"))?;
    s.write_all(b"GET /debug/proxy-status HTTP/1.1\r\nhost: isthmus\r\nconnection: close\r\n\r\n")
        .await?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp))
        .await
        .context("reading the answer")??;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!(
            "the controller answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(serde_json::from_str(body)?)
}

pub async fn run_proxy_status(args: ProxyStatusArgs) -> anyhow::Result<()> {
    let admin = match args.controller {
        Some(a) => a,
        None => {
            let f = runtime_file();
            let text = std::fs::read_to_string(&f).with_context(|| {
                format!(
                    "no controller found ({} is missing: is `isthmus up` running? else pass --controller)",
                    f.display()
                )
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}", f.display()))?;
            v["admin"]
                .as_str()
                .context("no admin address in the runtime file")?
                .to_string()
        }
    };
    let list = fetch_status(&admin).await?;
    match args.output.as_str() {
        "json" => print_lines(&[serde_json::to_string_pretty(&list)?]),
        "table" => {
            let rows: Vec<[String; 8]> = list
                .iter()
                .map(|p| {
                    [
                        p.name.clone(),
                        p.namespace.clone(),
                        p.role.clone(),
                        p.identity.clone(),
                        p.version.to_string(),
                        p.status.clone(),
                        p.inbound.clone().unwrap_or_else(|| "-".into()),
                        p.cert_expiry.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let header = [
                "NAME",
                "NAMESPACE",
                "ROLE",
                "IDENTITY",
                "VERSION",
                "STATUS",
                "INBOUND",
                "CERT-EXPIRY",
            ];
            let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.len());
                }
            }
            let line = |cells: Vec<&str>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("   ")
                    .trim_end()
                    .to_string()
            };
            let mut out = vec![line(header.to_vec())];
            out.extend(
                rows.iter()
                    .map(|r| line(r.iter().map(String::as_str).collect())),
            );
            print_lines(&out);
        }
        other => anyhow::bail!("-o {other}: use table or json"),
    }
    Ok(())
}

/// Print `lines` to stdout; a reader that went away (`| head`) ends the output
/// quietly instead of a panic.
fn print_lines(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}
