//! Admission webhooks, in the operator's process: a mutating webhook that
//! injects the audit sidecar, enforces data residency and pull policy, and
//! validating webhooks that keep tenants inside their compartment where RBAC
//! alone cannot (host access, foreign subjects and roles, cross-tenant
//! NetworkPolicies and Services, namespaces and Tenants that collide, and
//! hands off bulkhead's own objects).
//!
//! One file per job: [`review`] decodes, the rule modules ([`pods`],
//! [`images`], [`rbac`], [`network`], [`services`], [`namespaces`],
//! [`tenants`], [`managed`]) and [`mutate`] decide, purely, from the Tenant
//! and what the plan derives from it ([`facts`]); [`handler`] dispatches;
//! [`tls`] keeps the CA and serving certificate; [`webhooks`] owns the
//! webhook configurations; [`server`] serves HTTPS; [`state`] watches the
//! cluster. `docs/admission.md` documents every rule and what each hook
//! does while the operator is down.

pub mod cli;
pub mod decision;
pub mod denials;
pub mod facts;
pub mod fuzzing;
pub mod handler;
pub mod images;
pub mod managed;
pub mod mutate;
pub mod namespaces;
pub mod network;
pub mod pods;
pub mod rbac;
pub mod review;
pub mod server;
pub mod services;
pub mod state;
pub mod tenants;
pub mod tls;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::plan;
use crate::telemetry::health::Gate;
use crate::telemetry::metrics::Metrics;
use handler::Settings;
use mutate::SidecarConfig;
use state::Namespaces;
use webhooks::{Target, WebhookOptions};

/// Readiness gate of the admission server: open once it serves with its TLS material loaded.
pub const READINESS_GATE: &str = "admission-tls";

/// How the apiserver reaches the webhook server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A URL on the listen address (a control plane on this host).
    Local,
    /// A Service in the operator's namespace.
    Service {
        /// The Service name.
        name: String,
        /// Its port.
        port: i32,
    },
}

/// Everything the admission server needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How the apiserver reaches it.
    pub mode: Mode,
    /// Name of the webhook configurations; the TLS Secret is `<name>-webhook-tls`.
    pub name: String,
    /// The plan configuration (operator namespace, DNS).
    pub plan: plan::Config,
    /// The operator's identity; None asks the apiserver.
    pub operator_username: Option<String>,
    /// Extra labels a tenant namespace must carry for the webhooks to apply.
    pub namespace_labels: BTreeMap<String, String>,
    /// The controller's Tenant selector, applied to the Tenant webhook.
    pub tenant_selector: Option<String>,
    /// The audit sidecar.
    pub sidecar: SidecarConfig,
    /// Timeout of each webhook call, seconds.
    pub timeout_seconds: i32,
    /// How often TLS and the configurations are checked.
    pub resync: Duration,
    /// Where request counts and latencies go (`bulkhead_admission_*`).
    pub metrics: Option<Arc<Metrics>>,
    /// Readiness gate opened once the server answers with its certificate.
    pub ready: Option<Gate>,
}

/// Why the admission server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address cannot be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The operator's identity is unknown.
    #[error("cannot learn the operator's own username (SelfSubjectReview): {0}; pass --operator-username")]
    WhoAmI(String),
    /// The caches did not fill.
    #[error("the Tenant and namespace caches did not fill within {0:?}")]
    CachesNotReady(Duration),
    /// TLS material.
    #[error(transparent)]
    TlsStore(#[from] tls::StoreError),
    /// rustls refused the material.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The Tenant selector cannot be expressed as a label selector.
    #[error("--tenant-selector: {0}")]
    Selector(String),
    /// The webhook configurations cannot be written.
    #[error("cannot write the webhook configurations: {0}")]
    Configurations(kube::Error),
}

/// The running admission server.
#[derive(Clone)]
pub struct Handle {
    /// Where it listens (the real port when 0 was asked).
    pub local_addr: SocketAddr,
    server: axum_server::Handle<SocketAddr>,
}

impl Handle {
    /// Stops accepting requests (the webhook configurations stay: fail closed).
    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

async fn whoami(client: &Client) -> Result<String, Error> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| Error::WhoAmI(e.to_string()))?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::WhoAmI("the apiserver returned no username".into()))
}

/// Starts the admission server: caches, TLS, HTTPS listener, then the webhook configurations
/// (only once the server answers), and a loop that keeps TLS and configurations current.
pub async fn start(client: Client, options: Options, namespaces: Arc<Namespaces>) -> Result<Handle, Error> {
    let operator_username = match &options.operator_username {
        Some(u) => u.clone(),
        None => whoami(&client).await?,
    };
    let tenant_selector =
        options.tenant_selector.as_deref().map(webhooks::parse_selector).transpose().map_err(Error::Selector)?;
    let state = state::State::start(&client, namespaces);
    const FILL: Duration = Duration::from_secs(60);
    if !state.wait_ready(FILL).await {
        return Err(Error::CachesNotReady(FILL));
    }
    let listener = std::net::TcpListener::bind(options.listen).map_err(|e| Error::Listen(options.listen, e))?;
    listener.set_nonblocking(true).map_err(|e| Error::Listen(options.listen, e))?;
    let local_addr = listener.local_addr().map_err(|e| Error::Listen(options.listen, e))?;
    let target = match &options.mode {
        Mode::Local => {
            let ip =
                if local_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { local_addr.ip().to_string() };
            Target::Url { host: ip, port: local_addr.port() }
        }
        Mode::Service { name, port } => {
            Target::Service { namespace: options.plan.operator_namespace.clone(), name: name.clone(), port: *port }
        }
    };
    let secret = format!("{}-webhook-tls", options.name);
    let sans = target.sans();
    let material = tls::ensure(&client, &options.plan.operator_namespace, &secret, &sans).await?;
    let rustls = RustlsConfig::from_config(material.server_config()?);
    let recorder = crate::telemetry::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter { controller: "bulkhead-admission".into(), instance: None },
    );
    let app = Arc::new(server::App {
        recorder: Some(Arc::new(recorder)),
        denial_events: denials::Throttle::default(),
        metrics: options.metrics.clone(),
        view: Arc::new(state),
        settings: Settings {
            operator_username: operator_username.clone(),
            plan: options.plan.clone(),
            sidecar: options.sidecar.clone(),
        },
    });
    let server_handle = axum_server::Handle::new();
    tokio::spawn({
        let (rustls, handle) = (rustls.clone(), server_handle.clone());
        async move {
            if let Err(e) = server::serve(listener, rustls, app, handle).await {
                tracing::error!(error = %e, "admission server stopped");
            }
        }
    });
    server_handle.listening().await;
    let webhook_options = WebhookOptions {
        name: options.name.clone(),
        target,
        operator_namespace: options.plan.operator_namespace.clone(),
        operator_username: operator_username.clone(),
        namespace_labels: options.namespace_labels.clone(),
        tenant_selector,
        timeout_seconds: options.timeout_seconds,
    };
    webhooks::apply(&client, &webhook_options, material.ca_bundle().as_bytes()).await.map_err(Error::Configurations)?;
    if let Some(gate) = &options.ready {
        gate.set(true);
    }
    tracing::info!(address = %local_addr, configuration = options.name, operator = operator_username,
        ca = material.ca_name(), "admission webhooks serving");
    tokio::spawn(maintain(client, webhook_options, secret, sans, rustls, material, options));
    Ok(Handle { local_addr, server: server_handle })
}

/// Keeps the TLS material fresh (hot-reloading the server) and the configurations as wanted.
async fn maintain(
    client: Client,
    webhook_options: WebhookOptions,
    secret: String,
    sans: Vec<String>,
    rustls: RustlsConfig,
    mut material: tls::Material,
    options: Options,
) {
    let mut tick = tokio::time::interval(options.resync.max(Duration::from_secs(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        match tls::ensure(&client, &options.plan.operator_namespace, &secret, &sans).await {
            Ok(fresh) if fresh != material => match fresh.server_config() {
                Ok(config) => {
                    rustls.reload_from_config(config);
                    tracing::info!(ca = fresh.ca_name(), cert_not_after = %fresh.cert_not_after(), "webhook TLS material reloaded");
                    material = fresh;
                }
                Err(e) => tracing::error!(error = %e, "new webhook TLS material cannot be loaded; keeping the old"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check the webhook TLS material; retrying"),
        }
        if let Err(e) = webhooks::apply(&client, &webhook_options, material.ca_bundle().as_bytes()).await {
            tracing::warn!(error = %e, "cannot restore the webhook configurations; retrying");
        }
    }
}
