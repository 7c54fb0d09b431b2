//! The operations HTTP server every replica runs: `/metrics` (OpenMetrics),
//! `/healthz` (the process serves requests), `/readyz` (every readiness gate
//! open) and `/debug/loglevel` (GET the log filter, PUT a new one).
//!
//! Plain HTTP: it carries no secrets (metrics and logs never hold key
//! values) and the chart's NetworkPolicy limits who reaches it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::LogLevel;
use super::health::Readiness;
use super::metrics::{CONTENT_TYPE, Metrics};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address is not host:port.
    #[error("invalid listen address {addr:?}: expected host:port, e.g. 0.0.0.0:8080")]
    Address {
        /// What was given.
        addr: String,
    },
    /// The socket could not be bound or served.
    #[error("operations server on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// What the endpoints serve.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The process's readiness gates.
    pub readiness: Readiness,
    /// The log filter; `None` disables `PUT /debug/loglevel`.
    pub log_level: Option<LogLevel>,
}

/// Binds the listen address (`host:port`; port 0 picks a free one).
pub async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    let parsed: SocketAddr = addr.parse().map_err(|_| ServerError::Address { addr: addr.to_string() })?;
    TcpListener::bind(parsed).await.map_err(|source| ServerError::Io { addr: addr.to_string(), source })
}

/// The router of the operations endpoints.
pub fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/debug/loglevel", get(get_log_level).put(put_log_level))
        .with_state(endpoints)
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    axum::serve(listener, router(endpoints))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServerError::Io { addr, source })
}

async fn metrics(State(e): State<Endpoints>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], e.metrics.encode()).into_response()
}

async fn readyz(State(e): State<Endpoints>) -> Response {
    match e.readiness.check() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(closed) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", closed.join(", "))).into_response(),
    }
}

async fn get_log_level(State(e): State<Endpoints>) -> Response {
    match &e.log_level {
        Some(l) => format!("{}\n", l.current()).into_response(),
        None => (StatusCode::NOT_FOUND, "runtime log level changes are disabled\n").into_response(),
    }
}

async fn put_log_level(State(e): State<Endpoints>, body: String) -> Response {
    let Some(level) = &e.log_level else {
        return (StatusCode::NOT_FOUND, "runtime log level changes are disabled\n").into_response();
    };
    match level.set(&body) {
        Ok(()) => {
            tracing::warn!(filter = %level.current(), "log filter changed at run time");
            format!("{}\n", level.current()).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    }
}
