use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use bulkhead::api::Tenant;
use bulkhead::controller::{self, Options};
use bulkhead::plan;
use bulkhead::telemetry::{self, LogFormat};

/// bulkhead: one Tenant becomes a sealed, verifiable compartment of a Kubernetes cluster.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Tenant CustomResourceDefinition as YAML.
    Crd,
    /// Print every object a Tenant manifest turns into, without touching a cluster.
    Plan(PlanArgs),
    /// Run the controller manager against the cluster in KUBECONFIG or in-cluster config.
    Run(RunArgs),
    /// Run the audit sidecar: seal the app's records into a signed chain and ship them.
    AuditSidecar(bulkhead::audit::cli::SidecarArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: bulkhead::audit::cli::AuditCommand,
    },
}

#[derive(Args)]
struct PlanArgs {
    /// Tenant manifest (YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Namespace the operator runs in (never part of a tenant).
    #[arg(long, env = "BULKHEAD_NAMESPACE", default_value = "bulkhead-system")]
    operator_namespace: String,
}

#[derive(Args)]
struct RunArgs {
    /// Namespace the operator runs in (never part of a tenant).
    #[arg(long, env = "BULKHEAD_NAMESPACE", default_value = "bulkhead-system")]
    operator_namespace: String,
    /// Tenants reconciled at once.
    #[arg(long, env = "BULKHEAD_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Objects of one tenant applied at once.
    #[arg(long, default_value_t = 8)]
    apply_concurrency: usize,
    /// Log format.
    #[arg(long, env = "BULKHEAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG overrides it.
    #[arg(long, env = "BULKHEAD_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Name of this replica on Events (defaults to the host name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Reconcile only Tenants matching this label selector (sharding, canaries).
    #[arg(long, env = "BULKHEAD_TENANT_SELECTOR")]
    tenant_selector: Option<String>,
    /// Master key (32 raw bytes or base64) that wraps every tenant's key material at rest.
    #[arg(long, env = "BULKHEAD_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

fn read_tenant(path: &PathBuf) -> Result<Tenant, String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}"))?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    serde_yaml::from_str(&text).map_err(|e| format!("{} is not a valid Tenant: {e}", path.display()))
}

fn plan_command(args: PlanArgs) -> Result<(), String> {
    let tenant = read_tenant(&args.file)?;
    let config = plan::Config { operator_namespace: args.operator_namespace, ..Default::default() };
    let desired = plan::plan(&tenant, &config).map_err(|e| format!("the Tenant cannot be planned: {e}"))?;
    let mut objects = plan::access::profile_cluster_roles();
    objects.extend(desired.objects);
    let mut out = String::new();
    for object in objects {
        let yaml =
            serde_yaml::to_string(&object.to_json()).map_err(|e| format!("cannot print {}: {e}", object.key()))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    write_stdout(&out)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<(), String> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write to stdout: {e}")),
        _ => Ok(()),
    }
}

async fn run_command(args: RunArgs) -> Result<(), String> {
    telemetry::init_logging(args.log_format, &args.log_level);
    let master_key = match &args.master_key_file {
        Some(path) => Some(std::sync::Arc::new(
            bulkhead::controller::keys::MasterKey::from_file(path).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot connect to Kubernetes (set KUBECONFIG or run in a pod): {e}"))?;
    let instance = args.instance.or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| "bulkhead".into());
    let options = Options {
        concurrency: args.concurrency,
        apply_concurrency: args.apply_concurrency.max(1),
        plan: plan::Config { operator_namespace: args.operator_namespace, ..Default::default() },
        instance,
        tenant_selector: args.tenant_selector,
        master_key,
        ..Default::default()
    };
    controller::run(client, options).await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => bulkhead::api::crd_yaml()
            .map_err(|e| format!("cannot render the CRD: {e}"))
            .and_then(|yaml| write_stdout(&yaml)),
        Command::Plan(args) => plan_command(args),
        Command::Run(args) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(run_command(args)),
            Err(e) => Err(format!("cannot start the async runtime: {e}")),
        },
        Command::AuditSidecar(args) => bulkhead::audit::cli::run_sidecar(args),
        Command::Audit { command } => bulkhead::audit::cli::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
