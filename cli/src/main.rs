//! The `isthmus` binary: parses arguments and calls into the library crates.

mod analyze;
mod certs;
mod demo_app;
mod limits;
mod mesh;
mod mesh_config;
mod up;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: Pingora allocates per request (header maps,
/// buffers, boxed futures), and glibc's allocator was about 10% of the gateway's CPU
/// in profiles (see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "isthmus",
    version,
    about = "Istio-compatible edge gateway and service mesh on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller, gateway(s) and sidecars for a directory of Istio YAML on loopback (the embedded default).
    Up(up::UpArgs),
    /// Validate and analyze Istio YAML files or directories, like `istioctl analyze`.
    Analyze(analyze::AnalyzeArgs),
    /// Show the certificates isthmus keeps issued over ACME and their status, like
    /// `kubectl get certificate` (reads DIR and the state directory).
    Certs(certs::CertsArgs),
    /// The built-in demo workload: answers every request with its name and version.
    DemoApp {
        /// Version to report (e.g. v1).
        #[arg(long)]
        version: String,
        /// Port to listen on.
        #[arg(long)]
        port: u16,
        /// App name to report.
        #[arg(long, default_value = "todolist")]
        name: String,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Exit when standard input closes (`up` passes a pipe, so its demo apps end
        /// with it even when it is killed with SIGKILL).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
    },
    /// A sidecar: inbound and outbound listeners for one workload, configuration and
    /// certificate from the controller (`isthmus up` starts one per injected workload).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Proxy {
        #[command(subcommand)]
        command: Option<mesh::ProxyCommand>,
        #[command(flatten)]
        args: mesh::ProxyArgs,
        /// Exit when standard input closes (`up` passes a pipe).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
    },
    /// A standalone gateway: configuration and certificate from the controller.
    Gateway(mesh::GatewayArgs),
    /// Run the control plane alone (mesh CA, config push, status) for a directory of
    /// Istio YAML; proxies started elsewhere connect to it.
    Controller(mesh::ControllerArgs),
    /// List the proxies connected to the controller, like `istioctl proxy-status`.
    ProxyStatus(mesh::ProxyStatusArgs),
    /// Print the version.
    Version,
}

/// Logs to stderr, filtered by `ISTHMUS_LOG` (an `EnvFilter`). The default keeps
/// Pingora to warnings and rustls to errors: rustls warns about every alert it sends,
/// and a refused TLS handshake is the gateway's one DEBUG line, not a warning.
/// Logs to stderr. `ISTHMUS_LOG` takes `EnvFilter` directives; without it a plain
/// target filter (info, Pingora warnings, rustls errors) does the same without
/// compiling `EnvFilter`'s directive regexes in every sidecar.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(fmt);
    match tracing_subscriber::EnvFilter::try_from_env("ISTHMUS_LOG") {
        Ok(filter) => registry.with(filter).init(),
        Err(_) => registry
            .with(
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::Level::INFO)
                    .with_target("pingora", tracing::Level::WARN)
                    .with_target("rustls", tracing::Level::ERROR),
            )
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `analyze` exits as istioctl does on a bad command line (64).
            let code = analyze::usage_exit_code(&e)
                .unwrap_or_else(|| u8::try_from(e.exit_code()).unwrap_or(2));
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Version => {
            println!("isthmus {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::DemoApp {
            version,
            port,
            name,
            bind,
            exit_with_stdin,
        } => {
            init_tracing();
            if exit_with_stdin {
                demo_app::exit_when_stdin_closes();
            }
            run_async(None, async move {
                demo_app::DemoApp { name, version }
                    .serve(SocketAddr::new(bind, port))
                    .await
            })
        }
        Command::Proxy {
            command: Some(command),
            ..
        } => mesh::run_proxy_command(command),
        Command::Proxy {
            command: None,
            args,
            exit_with_stdin,
        } => {
            init_tracing();
            if exit_with_stdin {
                demo_app::exit_when_stdin_closes();
            }
            run_async(Some(1), mesh::run_proxy(args))
        }
        Command::Gateway(args) => {
            init_tracing();
            run_async(None, mesh::run_gateway(args))
        }
        Command::Controller(args) => {
            init_tracing();
            run_async(None, mesh::run_controller(args))
        }
        Command::ProxyStatus(args) => run_async(Some(1), mesh::run_proxy_status(args)),
        Command::Up(args) => {
            init_tracing();
            run_async(args.workers, up::run(args))
        }
    }
}

/// Run `f` on a multi-threaded runtime with `workers` threads (default: one per
/// core); one worker is the calling thread itself (a current-thread runtime: one
/// thread less, the sidecar's case).
fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(
    workers: Option<usize>,
    f: F,
) -> ExitCode {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
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
