//! `isthmus analyze PATH...`: load, validate and analyze, print findings like
//! `istioctl analyze --use-kube=false` (its flags, output formats and exit codes),
//! and exit non-zero when a finding reaches the failure threshold.
//!
//! Submodules: [`output`] (`-o log|json|yaml`), [`filter`] (`-n`/`-A`,
//! `--suppress`, the `galley.istio.io/analyze-suppress` annotation), [`analyzers`]
//! (`-L`), [`mesh_config`] (`--meshConfigFile`).

mod analyzers;
mod filter;
mod mesh_config;
mod output;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use isthmus_model::{analyze, diag, validate, Diagnostic, Level, Store};

use filter::{NamespaceScope, Suppression};
use output::Format;

/// istioctl's exit code when analyzers found issues at or above the threshold.
const EXIT_FOUND_ISSUES: u8 = 79;
/// istioctl's exit code for a command line it cannot parse (`ExitIncorrectUsage`).
pub const EXIT_INCORRECT_USAGE: u8 = 64;
/// istioctl's exit code for any other error (a path that does not exist, a
/// suppression without `=`, a mesh config file that cannot be read).
const EXIT_ERROR: u8 = 1;

const AFTER_HELP: &str = "\
Exit codes (istioctl's): 0 no finding at or above --failure-threshold; 79 findings at or \
above it (log output only: with -o json or -o yaml istioctl, and isthmus, exit 0 whatever \
was found); 64 a flag or value that does not parse; 1 other errors (a missing path, a \
suppression without '=', a mesh config file that cannot be read).

Namespaces: istioctl analyzes only the namespace `default` unless -n or -A is given; \
isthmus analyzes all namespaces by default (as before, so existing scripts keep their \
findings). -n NS puts resources without a namespace into NS and reports only findings on \
NS (and on cluster-scoped resources, and findings without a resource), as istioctl does. \
With -A, istioctl leaves resources without a namespace in none (`Kind name`); isthmus \
puts them in `default` (or the -n namespace).

isthmus always analyzes files: --use-kube=false (-k=false) is accepted and changes nothing.";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP, args_override_self = true)]
pub struct AnalyzeArgs {
    /// Files or directories of YAML (directories are searched recursively; `-` is stdin).
    #[arg(required_unless_present = "list_analyzers")]
    paths: Vec<PathBuf>,
    /// Output format: one of log, json, yaml (istioctl's message fields; isthmus adds
    /// `file`, `line` and `field`).
    #[arg(short = 'o', long = "output", default_value = "log", value_parser = Format::parse)]
    output: Format,
    /// Suppress a message code on a resource: `CODE=RESOURCE`, the resource as
    /// findings print it (`Kind namespace/name`) or as istioctl documents it
    /// (`Kind name.namespace`); `*` matches any text in the resource (e.g.
    /// `IST0101=VirtualService *.default`). Can be repeated.
    #[arg(short = 'S', long = "suppress", value_name = "CODE=RESOURCE")]
    suppress: Vec<String>,
    /// Namespace for resources that name none; only findings on this namespace are
    /// reported (see below). Without it: all namespaces, unnamed ones in `default`.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Report findings of all namespaces (the isthmus default; see below).
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// List the analyzers isthmus runs (istioctl's names where they correspond) and
    /// their codes, then exit.
    #[arg(short = 'L', long = "list-analyzers")]
    list_analyzers: bool,
    /// Istio MeshConfig YAML (or the `istio` ConfigMap holding it) used for the
    /// analysis; it is checked and a bad file is an error naming file and line.
    #[arg(long = "meshConfigFile", value_name = "FILE")]
    mesh_config_file: Option<PathBuf>,
    /// Exit non-zero when a finding of this level or above is found (Info, Warning, Error).
    #[arg(long, default_value = "Error", value_parser = parse_level)]
    failure_threshold: Level,
    /// Print findings of this level or above.
    #[arg(long, default_value = "Info", value_parser = parse_level)]
    output_threshold: Level,
    /// Colour the level of each log line (default: when standard output is a
    /// terminal and TERM is not `dumb`, as istioctl).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    color: Option<bool>,
    /// istioctl's switch between a live cluster and files; isthmus analyzes files
    /// only, so `false` changes nothing and `true` is noted on stderr.
    #[arg(short = 'k', long = "use-kube", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    use_kube: Option<bool>,
    /// A certificate directory as `isthmus up --cert-dir` reads it (`NAME.crt` +
    /// `NAME.key` -> Secret `istio-system/NAME`): its Secrets replace config Secrets
    /// of the same name; files that cannot serve are reported.
    #[arg(long, env = "ISTHMUS_CERT_DIR")]
    cert_dir: Option<PathBuf>,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s).ok_or_else(|| format!("{s:?} is not one of Info, Warning, Error"))
}

/// The exit code for a command line clap rejected, when it is an `analyze` command
/// line: istioctl's 64. `None` for help and version output (exit 0 as clap does).
pub fn usage_exit_code(e: &clap::Error) -> Option<u8> {
    let analyze = std::env::args_os().nth(1).is_some_and(|a| a == "analyze");
    (analyze && e.use_stderr()).then_some(EXIT_INCORRECT_USAGE)
}

fn error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("Error: {message}");
    ExitCode::from(EXIT_ERROR)
}

pub fn run(args: AnalyzeArgs) -> ExitCode {
    if args.list_analyzers {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(analyzers::listing().as_bytes())
            .and_then(|()| stdout.flush());
        return ExitCode::SUCCESS;
    }
    if args.use_kube == Some(true) {
        eprintln!("Note: isthmus analyzes files only; --use-kube=true has no cluster to read.");
    }
    let mut suppressions = Vec::new();
    for s in &args.suppress {
        match Suppression::parse(s) {
            Ok(sup) => {
                if !sup.code_is_known() {
                    eprintln!(
                        "Warning: Supplied message code '{}' is an unknown message code and will not have any effect.",
                        sup.code
                    );
                }
                suppressions.push(sup);
            }
            Err(e) => return error(e),
        }
    }
    let mut mesh_settings = analyze::MeshSettings::default();
    if let Some(path) = &args.mesh_config_file {
        match mesh_config::read(path) {
            Ok(mesh) => {
                for note in mesh.notes() {
                    eprintln!("Warning: --meshConfigFile {}: {note}", path.display());
                }
                mesh_settings = mesh.settings();
            }
            Err(e) => return error(e),
        }
    }
    let scope = NamespaceScope::new(args.namespace.clone(), args.all_namespaces);

    let loaded = match isthmus_controller::load_paths(&args.paths) {
        Ok(l) => l,
        Err(e) => return error(e),
    };
    let mut findings = loaded.diagnostics;
    let mut resources = loaded.resources;
    scope.default_namespace(&mut resources, &mut findings);
    // Problems of the certificate directory: findings without a resource, listed
    // first; an unusable pair is an Error, so it fails the run as one does.
    let mut cert_dir_findings = Vec::new();
    if let Some(dir) = &args.cert_dir {
        let mut certs = isthmus_controller::cert_dir::CertDir::new(dir);
        match certs.reload() {
            Ok(report) => {
                for e in &report.errors {
                    cert_dir_findings.push(Diagnostic::new(
                        Level::Error,
                        "cert-dir",
                        e.to_string(),
                    ));
                }
                for w in &report.warnings {
                    cert_dir_findings.push(Diagnostic::new(
                        Level::Warning,
                        "cert-dir",
                        w.to_string(),
                    ));
                }
            }
            Err(e) => return error(e),
        }
        resources = isthmus_controller::secrets_on_top(certs.secrets(), resources);
    }
    let store = Store::new(resources);
    findings.extend(validate::validate(&store));
    // With the clock: certificates expired or not yet valid are reported (ISM0104).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    findings.extend(analyze::analyze_with(&store, Some(now), &mesh_settings));
    diag::sort(&mut findings);
    cert_dir_findings.append(&mut findings);
    // As istioctl: the namespace filter and both kinds of suppression apply before
    // the thresholds, so a suppressed finding neither prints nor fails the run.
    let findings = filter::apply(cert_dir_findings, &store, &scope, &suppressions);
    let shown: Vec<&Diagnostic> = findings
        .iter()
        .filter(|d| d.level >= args.output_threshold)
        .collect();

    let what = args
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let color = args.color.unwrap_or_else(output::color_default);
    // Written, not println!: a closed pipe (`isthmus analyze DIR | head -1`) ends the
    // output quietly instead of panicking.
    let mut stdout = std::io::stdout().lock();
    let written = output::print(&mut stdout, &shown, args.output, color);
    let _ = written.and_then(|()| stdout.flush());
    if shown.is_empty() {
        let ok = format!("\u{2714} No validation issues found when analyzing {what}.");
        match args.output {
            // isthmus has always printed this on stdout (istioctl: stderr).
            Format::Log => {
                let _ = writeln!(stdout, "{ok}").and_then(|()| stdout.flush());
            }
            // Standard output holds the (empty) document; the note goes to stderr,
            // as istioctl writes it.
            Format::Json | Format::Yaml => eprintln!("{ok}"),
        }
    }
    // istioctl sets the exit code from the findings only for log output.
    let failed = findings.iter().any(|d| d.level >= args.failure_threshold);
    if args.output == Format::Log && failed {
        ExitCode::from(EXIT_FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    }
}
