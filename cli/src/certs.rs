//! `isthmus certs DIR [--state-dir S]`: the certificates isthmus keeps issued over
//! ACME for a configuration directory (cert-manager Certificates of ACME issuers, and
//! Gateways annotated `isthmus.dev/acme-issuer`), with the status `isthmus up` last
//! wrote for each in the state directory, printed like `kubectl get certificate`.
//! Reads files only: it works while `up` runs and after it stopped.

use std::path::PathBuf;
use std::process::ExitCode;

use isthmus_gateway::acme::status::read_status;
use isthmus_gateway::acme::StateDir;
use isthmus_model::certs::{acme_orders, status};
use isthmus_model::Store;

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Directory of Istio and cert-manager YAML (as given to `isthmus up`).
    dir: PathBuf,
    /// The state directory `isthmus up` uses (default: DIR/.isthmus).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

pub fn run(args: CertsArgs) -> ExitCode {
    let loaded = match isthmus_controller::load_paths(std::slice::from_ref(&args.dir)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = Store::new(loaded.resources);
    let (orders, diags) = acme_orders(&store);
    let root = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.dir.join(".isthmus"));
    let state = StateDir::new(&root);
    let rows = status::rows(&store, &orders, &diags, |o| read_status(&state, o));
    if rows.is_empty() {
        println!(
            "No certificates: {} has no cert-manager Certificate and no Gateway annotated isthmus.dev/acme-issuer.",
            args.dir.display()
        );
    } else {
        print!("{}", status::table(&rows));
    }
    // Findings about Certificates are in their rows; the others (annotated
    // Gateways, issuers) follow on stderr.
    for d in &diags {
        if !d
            .resource
            .as_deref()
            .is_some_and(|r| r.starts_with("Certificate "))
        {
            eprintln!("{d}");
        }
    }
    ExitCode::SUCCESS
}
