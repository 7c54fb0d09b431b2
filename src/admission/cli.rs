//! The admission flags of `bulkhead run`: off unless `--admission-listen` is given.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::mutate::SidecarConfig;
use super::{Mode, Options};
use crate::plan;

/// How the apiserver reaches the webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// `clientConfig.url: https://<listen address>`: a control plane on this host (development, tests).
    Local,
    /// `clientConfig.service`: a Service in front of the operator's pods (a real cluster).
    Service,
}

/// Admission flags of `bulkhead run` (boxed, so `run`'s arguments stay small beside the other commands).
#[derive(Args, Debug, Clone)]
pub struct AdmissionArgs {
    /// The flags.
    #[command(flatten)]
    pub flags: Box<AdmissionFlags>,
}

/// The admission flags themselves.
#[derive(Args, Debug, Clone)]
pub struct AdmissionFlags {
    /// Serve the admission webhooks on this address (127.0.0.1:9443 locally, 0.0.0.0:9443 in a pod; port 0 picks one in local mode). Webhooks are off when unset.
    #[arg(long, env = "BULKHEAD_ADMISSION_LISTEN")]
    pub admission_listen: Option<SocketAddr>,
    /// How the apiserver reaches the webhooks.
    #[arg(long, env = "BULKHEAD_ADMISSION_MODE", value_enum, default_value_t = ModeArg::Local)]
    pub admission_mode: ModeArg,
    /// Service in front of the operator (service mode), in the operator's namespace.
    #[arg(long, env = "BULKHEAD_ADMISSION_SERVICE", default_value = "bulkhead-webhook")]
    pub admission_service: String,
    /// Port of that Service.
    #[arg(long, env = "BULKHEAD_ADMISSION_SERVICE_PORT", default_value_t = 443)]
    pub admission_service_port: i32,
    /// Name of the Mutating- and ValidatingWebhookConfiguration; the TLS Secret is `<name>-webhook-tls`.
    #[arg(long, env = "BULKHEAD_ADMISSION_NAME", default_value = "bulkhead")]
    pub admission_name: String,
    /// Extra labels (k=v,...) a tenant namespace must carry for the webhooks to apply (sharding, canaries).
    #[arg(long, env = "BULKHEAD_ADMISSION_NAMESPACE_LABELS", value_parser = parse_labels)]
    pub admission_namespace_labels: Option<BTreeMap<String, String>>,
    /// Timeout of each webhook call, in seconds.
    #[arg(long, env = "BULKHEAD_ADMISSION_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=30))]
    pub admission_timeout_seconds: i32,
    /// How often TLS expiry and the webhook configurations are checked.
    #[arg(long, env = "BULKHEAD_ADMISSION_RESYNC", default_value = "60s", value_parser = crate::audit::cli::parse_duration)]
    pub admission_resync: Duration,
    /// The operator's own username, whose requests the webhooks never judge. Default: asked from the apiserver (SelfSubjectReview).
    #[arg(long, env = "BULKHEAD_OPERATOR_USERNAME")]
    pub operator_username: Option<String>,
    /// Image of the injected audit sidecar (the operator's own image, which holds `/bulkhead-audit-sidecar`).
    #[arg(long, env = "BULKHEAD_SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| format!("{p:?} is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(format!("{p:?} has no key"));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

impl AdmissionArgs {
    /// The admission options, or None when the webhooks are off.
    pub fn options(&self, plan: &plan::Config, tenant_selector: Option<&str>) -> Option<Options> {
        self.flags.options(plan, tenant_selector)
    }
}

impl AdmissionFlags {
    /// The admission options, or None when the webhooks are off.
    pub fn options(&self, plan: &plan::Config, tenant_selector: Option<&str>) -> Option<Options> {
        let listen = self.admission_listen?;
        let mode = match self.admission_mode {
            ModeArg::Local => Mode::Local,
            ModeArg::Service => {
                Mode::Service { name: self.admission_service.clone(), port: self.admission_service_port }
            }
        };
        let mut sidecar = SidecarConfig::default();
        if let Some(image) = &self.sidecar_image {
            sidecar.image = image.clone();
        }
        Some(Options {
            listen,
            mode,
            name: self.admission_name.clone(),
            plan: plan.clone(),
            operator_username: self.operator_username.clone(),
            namespace_labels: self.admission_namespace_labels.clone().unwrap_or_default(),
            tenant_selector: tenant_selector.map(str::to_string),
            sidecar,
            timeout_seconds: self.admission_timeout_seconds,
            resync: self.admission_resync,
            metrics: None,
            ready: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: AdmissionArgs,
    }

    #[test]
    fn off_unless_an_address_is_given() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(cli.a.options(&plan::Config::default(), None).is_none());
        let cli = Cli::try_parse_from([
            "x",
            "--admission-listen",
            "127.0.0.1:0",
            "--admission-namespace-labels",
            "shard=a, team=b",
            "--sidecar-image",
            "registry.example/bulkhead:1",
        ])
        .unwrap();
        let o = cli.a.options(&plan::Config::default(), Some("shard=a")).unwrap();
        assert_eq!(o.namespace_labels.len(), 2);
        assert_eq!(o.sidecar.image, "registry.example/bulkhead:1");
        assert_eq!(o.mode, Mode::Local);
        assert!(Cli::try_parse_from(["x", "--admission-namespace-labels", "oops"]).is_err());
        assert!(Cli::try_parse_from(["x", "--admission-timeout-seconds", "60"]).is_err());
    }
}
