//! `isthmus analyze PATH...`: load, validate and analyze, print findings like
//! `istioctl analyze`, and exit non-zero when a finding reaches the failure threshold.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use isthmus_model::{analyze, diag, validate, Level, Store};

/// istioctl's exit code when analyzers found issues at or above the threshold.
const EXIT_FOUND_ISSUES: u8 = 79;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories of YAML (directories are searched recursively; `-` is stdin).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Exit non-zero when a finding of this level or above is found (Info, Warning, Error).
    #[arg(long, default_value = "Error", value_parser = parse_level)]
    failure_threshold: Level,
    /// Print findings of this level or above.
    #[arg(long, default_value = "Info", value_parser = parse_level)]
    output_threshold: Level,
    /// A certificate directory as `isthmus up --cert-dir` reads it (`NAME.crt` +
    /// `NAME.key` -> Secret `istio-system/NAME`): its Secrets replace config Secrets
    /// of the same name; files that cannot serve are reported.
    #[arg(long, env = "ISTHMUS_CERT_DIR")]
    cert_dir: Option<PathBuf>,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s).ok_or_else(|| format!("{s:?} is not one of Info, Warning, Error"))
}

pub fn run(args: AnalyzeArgs) -> ExitCode {
    let mut cert_dir_failed = false;
    let loaded = match isthmus_controller::load_paths(&args.paths) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut findings = loaded.diagnostics;
    let mut resources = loaded.resources;
    if let Some(dir) = &args.cert_dir {
        let mut certs = isthmus_controller::cert_dir::CertDir::new(dir);
        match certs.reload() {
            Ok(report) => {
                // Printed like findings; an unusable pair fails the run as an Error does.
                for e in &report.errors {
                    let _ = writeln!(std::io::stdout(), "Error [cert-dir] {e}");
                }
                for w in &report.warnings {
                    let _ = writeln!(std::io::stdout(), "Warning [cert-dir] {w}");
                }
                cert_dir_failed = !report.errors.is_empty();
            }
            Err(e) => {
                eprintln!("Error: {e}");
                return ExitCode::from(1);
            }
        }
        resources = isthmus_controller::secrets_on_top(certs.secrets(), resources);
    }
    let store = Store::new(resources);
    findings.extend(validate::validate(&store));
    // With the clock: certificates expired or not yet valid are reported (ISM0104).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    findings.extend(analyze::analyze_at(&store, now));
    diag::sort(&mut findings);
    let shown: Vec<_> = findings
        .iter()
        .filter(|d| d.level >= args.output_threshold)
        .collect();
    let what = args
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // Written, not println!: a closed pipe (`isthmus analyze DIR | head -1`) ends the
    // output quietly instead of panicking.
    let mut stdout = std::io::stdout().lock();
    let written = if shown.is_empty() && !cert_dir_failed {
        writeln!(
            stdout,
            "\u{2714} No validation issues found when analyzing {what}."
        )
    } else {
        shown.iter().try_for_each(|d| writeln!(stdout, "{d}"))
    };
    let _ = written.and_then(|()| stdout.flush());
    if cert_dir_failed || findings.iter().any(|d| d.level >= args.failure_threshold) {
        ExitCode::from(EXIT_FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    }
}
