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
    /// Write the CustomResourceDefinitions (one file per kind) into a folder, or print them.
    Crdgen {
        /// Folder to write `<plural>.<group>.yaml` files into.
        #[arg(long, default_value = "crds")]
        out: PathBuf,
        /// Print all CRDs as one multi-document YAML stream instead of writing files.
        #[arg(long)]
        stdout: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn crdgen(out: PathBuf, stdout: bool) -> Result<(), String> {
    let crds = oidc_operator::api::render_crds().map_err(|e| format!("rendering CRDs: {e}"))?;
    if stdout {
        let docs: Vec<String> = crds.into_iter().map(|(_, yaml)| yaml).collect();
        print!("{}", docs.join("---\n"));
        return Ok(());
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    for (name, yaml) in crds {
        let path = out.join(name);
        std::fs::write(&path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Crdgen { out, stdout } => crdgen(out, stdout),
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
