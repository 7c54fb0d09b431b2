//! `bulkhead verify` and the verification flags of `bulkhead run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::controller::keys::MasterKey;
use crate::plan;

use super::report::{self, Format};
use super::{Settings, Verifier};

/// Exit code when a check failed or could not run.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when verification could not start (no cluster, no such tenant, bad flags).
pub const EXIT_UNUSABLE: u8 = 2;

/// Arguments of `bulkhead verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Verify only this Tenant (default: every Tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Namespace the operator runs in (where the tenants' key source Secrets live).
    #[arg(long, env = "BULKHEAD_NAMESPACE", default_value = "bulkhead-system")]
    pub operator_namespace: String,
    /// The operator's master key, to compare key projections value for value when the sources are wrapped.
    #[arg(long, env = "BULKHEAD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Pod network(s) of the cluster for NetworkPolicy ipBlocks (default: the nodes' podCIDRs, else 10.244.0.0/16).
    #[arg(long = "pod-cidr", value_delimiter = ',')]
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Count "not applicable" checks as failures for the exit code.
    #[arg(long)]
    pub strict: bool,
    /// Requests made at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The audit sidecar image the operator injects (its --sidecar-image); unset, BH-AUDIT-001 checks every other property of the sidecar.
    #[arg(long, env = "BULKHEAD_SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
}

/// Verification flags of `bulkhead run`.
#[derive(Args, Debug, Clone)]
pub struct ScheduleArgs {
    /// How often each Tenant's isolation is verified, spread over the interval (e.g. 1h, 15m); 0s disables it.
    #[arg(long, env = "BULKHEAD_VERIFY_INTERVAL", default_value = "1h")]
    pub verify_interval: String,
    /// Pod network(s) for the cross-tenant connectivity check (default: the nodes' podCIDRs, else 10.244.0.0/16).
    #[arg(long = "verify-pod-cidr", env = "BULKHEAD_VERIFY_POD_CIDR", value_delimiter = ',')]
    pub verify_pod_cidrs: Vec<ipnet::IpNet>,
}

impl ScheduleArgs {
    /// The interval, or None when disabled.
    pub fn interval(&self) -> Result<Option<Duration>, String> {
        let d: jiff::SignedDuration = self.verify_interval.parse().map_err(|_| {
            format!("--verify-interval: '{}' is not a duration such as 1h or 15m", self.verify_interval)
        })?;
        let d: Duration = d.try_into().map_err(|_| "--verify-interval must not be negative".to_string())?;
        Ok((!d.is_zero()).then_some(d))
    }
}

async fn verify(args: VerifyArgs) -> Result<bool, (u8, String)> {
    let unusable = |m: String| (EXIT_UNUSABLE, m);
    let master_key = match &args.master_key_file {
        Some(path) => Some(Arc::new(MasterKey::from_file(path).map_err(|e| unusable(e.to_string()))?)),
        None => None,
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| unusable(format!("cannot connect to Kubernetes (set KUBECONFIG): {e}")))?;
    let settings = Settings {
        plan: plan::Config { operator_namespace: args.operator_namespace.clone(), ..Default::default() },
        master_key,
        pod_cidrs: args.pod_cidrs.clone(),
        concurrency: args.concurrency.max(1),
        impersonate: true,
        lenient: false,
        sidecar_image: args.sidecar_image.clone(),
    };
    let report =
        Verifier::new(client, settings).verify(args.tenant.as_deref()).await.map_err(|e| unusable(e.to_string()))?;
    let text = report::render(&report, args.output);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes())
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err((EXIT_UNUSABLE, format!("cannot write to stdout: {e}")));
        }
    }
    if args.output != Format::Table {
        // Machine-readable formats keep stdout clean; the summary goes to stderr.
        eprint!("{}", report::summary_lines(&report));
    }
    Ok(report.summary().ok(args.strict))
}

/// Runs `bulkhead verify`: 0 when every check passed, 1 when one failed or errored, 2 when it could not run.
pub fn run(args: VerifyArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    match runtime.block_on(verify(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILED),
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
