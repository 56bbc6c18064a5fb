//! The `oidc-operator` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc returns freed memory to the system far better than glibc's per-thread arenas do
/// under the operator's pattern (a snapshot of every object rebuilt after each burst of changes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "oidc-operator",
    version,
    about = "An OpenID Connect identity provider for workloads and machines, configured by Kubernetes custom resources"
)]
struct Cli {
    /// Log format: human-readable text, or JSON lines for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "OIDC_OPERATOR_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve from manifests in a folder, without a cluster (keys and credentials in a state folder).
    Standalone(oidc_operator::standalone::Options),
    /// Run as a Kubernetes operator: watch the resources, keep Secrets and status, serve.
    Run(oidc_operator::controller::Options),
    /// DEVELOPMENT ONLY: a loopback OpenID issuer that mints JWTs for trying machine login.
    DevIssuer(oidc_operator::dev_issuer::Options),
    /// Write the generated files: the CRDs into crds/, the Helm chart and config/crd (with its
    /// kustomization), and the Argo CD health patch; or only the CRDs into one folder.
    Crdgen {
        /// Write only the CRDs (`<plural>.<group>.yaml`) into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Repository root the generated files are written under.
        #[arg(long, default_value = ".", conflicts_with = "out")]
        root: PathBuf,
        /// Print all CRDs as one multi-document YAML stream instead of writing files.
        #[arg(long)]
        stdout: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in a log file or a pod's log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn crdgen(out: Option<PathBuf>, root: PathBuf, stdout: bool) -> Result<(), String> {
    let crds = oidc_operator::api::render_crds().map_err(|e| format!("rendering CRDs: {e}"))?;
    if stdout {
        let docs: Vec<String> = crds.into_iter().map(|(_, yaml)| yaml).collect();
        print!("{}", docs.join("---\n"));
        return Ok(());
    }
    let files = match out {
        Some(dir) => crds.into_iter().map(|(name, yaml)| (dir.join(name), yaml)).collect::<Vec<_>>(),
        None => oidc_operator::api::generated::generated_files()
            .map_err(|e| format!("rendering generated files: {e}"))?
            .into_iter()
            .map(|(path, contents)| (root.join(path), contents))
            .collect(),
    };
    for (path, contents) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Crdgen { out, root, stdout } => crdgen(out, root, stdout),
        Command::Run(options) => oidc_operator::controller::main(options).map_err(|e| e.to_string()),
        Command::Standalone(options) => oidc_operator::standalone::main(options).map_err(|e| e.to_string()),
        Command::DevIssuer(options) => oidc_operator::dev_issuer::main(options).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
