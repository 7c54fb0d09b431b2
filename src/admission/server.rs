//! The HTTPS server the apiserver calls: axum on rustls (ring) through
//! axum-server, with a request body limit, a body read timeout, a header
//! read timeout and a TLS handshake timeout, so a slow or hostile client
//! cannot pin it. Every denial is logged and, unless it was a dry run, sent
//! to the security event stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;

use super::denials::Throttle;
use super::facts::View;
use super::handler::{self, Endpoint, Outcome, Settings};
use super::webhooks::{MUTATING_HOOKS, VALIDATING_HOOKS};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::security::{Action, ObjectRef, SecurityEvent};

/// Largest AdmissionReview accepted: an object and its old version at the apiserver's own limit, with room.
pub const MAX_BODY: usize = 8 << 20;
/// Time allowed for the request body to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share.
pub struct App {
    /// The cluster as the caches see it.
    pub view: Arc<dyn View>,
    /// Operator identity, plan configuration, sidecar.
    pub settings: Settings,
    /// Request counts and latencies, when the process exports metrics.
    pub metrics: Option<Arc<Metrics>>,
    /// Records a Kubernetes Event on the tenant for real (not dry-run) denials.
    pub recorder: Option<Arc<crate::telemetry::events::Recorder>>,
    /// How often those Events are published per tenant and rule.
    pub denial_events: Throttle,
}

/// The routes: `POST /mutate/<hook>`, `POST /validate/<hook>`, `GET /healthz`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/mutate/{*hook}", post(mutate))
        .route("/validate/{*hook}", post(validate))
        .route("/healthz", get(|| async { "ok" }))
        // The limit is enforced while reading the body, below, with a clear answer.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

async fn mutate(State(app): State<Arc<App>>, Path(hook): Path<String>, body: Body) -> Response {
    review(app, Endpoint::Mutate, hook, body).await
}

async fn validate(State(app): State<Arc<App>>, Path(hook): Path<String>, body: Body) -> Response {
    review(app, Endpoint::Validate, hook, body).await
}

async fn review(app: Arc<App>, endpoint: Endpoint, hook: String, body: Body) -> Response {
    let known = match endpoint {
        Endpoint::Mutate => MUTATING_HOOKS,
        Endpoint::Validate => VALIDATING_HOOKS,
    };
    // Only the paths bulkhead registers: metric labels stay a fixed set.
    let Some(hook) = known.iter().copied().find(|h| *h == hook) else {
        return (StatusCode::NOT_FOUND, "no such webhook\n").into_response();
    };
    let started = std::time::Instant::now();
    let (decision, response) = answer(&app, endpoint, hook, body).await;
    if let Some(m) = &app.metrics {
        let hook = match endpoint {
            Endpoint::Mutate => format!("mutate-{hook}"),
            Endpoint::Validate => hook.to_string(),
        };
        m.admission_request(&hook, decision, started.elapsed());
    }
    response
}

async fn answer(app: &App, endpoint: Endpoint, hook: &str, body: Body) -> (&'static str, Response) {
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => {
            return (
                "malformed",
                (StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time\n").into_response(),
            );
        }
        Ok(Err(e)) => {
            let too_big = e.into_inner().is::<http_body_util::LengthLimitError>();
            let response = if too_big {
                (StatusCode::PAYLOAD_TOO_LARGE, format!("an AdmissionReview may be at most {MAX_BODY} bytes\n"))
                    .into_response()
            } else {
                (StatusCode::BAD_REQUEST, "the request body could not be read\n").into_response()
            };
            return ("malformed", response);
        }
        Ok(Ok(b)) => b,
    };
    match handler::handle(endpoint, &bytes, app.view.as_ref(), &app.settings) {
        Ok(outcome) => {
            report(hook, &outcome);
            if let (Some(recorder), Some(tenant), false, false) =
                (&app.recorder, &outcome.tenant, outcome.response.allowed, outcome.dry_run)
            {
                let rule = outcome.violations.first().map(|v| v.rule).unwrap_or("denied");
                if let Some(earlier) = app.denial_events.admit(tenant, rule, std::time::Instant::now()) {
                    publish_denial(recorder.clone(), tenant.clone(), &outcome, earlier);
                }
            }
            let decision = match (&outcome.response, outcome.response.code) {
                (r, _) if r.allowed && r.patch.is_some() => "patched",
                (r, _) if r.allowed => "allowed",
                (_, 400) => "invalid",
                _ => "denied",
            };
            (decision, ([(header::CONTENT_TYPE, "application/json")], outcome.response.encode()).into_response())
        }
        Err(e) => {
            tracing::warn!(hook, error = %e, "malformed AdmissionReview refused");
            ("malformed", (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response())
        }
    }
}

fn report(hook: &str, o: &Outcome) {
    if o.response.allowed {
        tracing::debug!(hook, kind = o.kind, namespace = ?o.namespace, name = o.name, user = o.user,
            patched = o.response.patch.is_some(), "admitted");
        return;
    }
    let rules: Vec<&str> = o.violations.iter().map(|v| v.rule).collect();
    tracing::info!(hook, kind = o.kind, namespace = ?o.namespace, name = o.name, user = o.user, dry_run = o.dry_run,
        rules = ?rules, "admission denied");
    if o.dry_run {
        // Dry runs (bulkhead verify, kubectl --dry-run=server) change nothing: logged, not a security event.
        return;
    }
    let ns = o.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
    SecurityEvent {
        action: Action::AdmissionDenied,
        tenant: o.tenant.clone().unwrap_or_default(),
        object: Some(ObjectRef { kind: o.kind.clone(), namespace: o.namespace.clone(), name: o.name.clone() }),
        reason: rules.first().copied().unwrap_or("denied").to_string(),
        message: format!("{:?} of {} {ns}{} by {} denied: {}", o.operation, o.kind, o.name, o.user, o.response.message),
    }
    .emit();
}

/// A Warning Event on the Tenant, off the request path: the answer to the
/// apiserver never waits for it. Repeats are folded into one series by the recorder;
/// `earlier` counts the denials of the same rule the throttle kept from becoming Events.
fn publish_denial(recorder: Arc<crate::telemetry::events::Recorder>, tenant: String, o: &Outcome, earlier: u64) {
    use kube::runtime::events::{Event, EventType};
    let rules: Vec<&str> = o.violations.iter().map(|v| v.rule).collect();
    let ns = o.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
    let event = Event {
        type_: EventType::Warning,
        reason: "AdmissionDenied".into(),
        note: Some(format!(
            "{:?} of {} {ns}{} by {} denied: {}{}",
            o.operation,
            o.kind,
            o.name,
            o.user,
            o.response.message,
            if earlier > 0 {
                format!(" ({earlier} more denied by this rule since the last event)")
            } else {
                String::new()
            }
        )),
        action: rules.first().copied().unwrap_or("denied").to_string(),
        secondary: None,
    };
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("bulkhead.dev/v1alpha1".into()),
        kind: Some("Tenant".into()),
        name: Some(tenant),
        ..Default::default()
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "cannot publish the admission-denied event");
        }
    });
}

/// Serves until the handle shuts the server down.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: RustlsConfig,
    app: Arc<App>,
    handle: axum_server::Handle<SocketAddr>,
) -> std::io::Result<()> {
    let acceptor = RustlsAcceptor::new(tls).handshake_timeout(HANDSHAKE_TIMEOUT);
    let mut server = axum_server::from_tcp(listener)?.acceptor(acceptor).handle(handle);
    server.http_builder().http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    server
        .http_builder()
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(1000);
    server.serve(router(app).into_make_service()).await
}
