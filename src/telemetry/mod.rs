//! Logs, security events and (later) metrics.

pub mod security;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (default; what log pipelines want).
    Json,
    /// Human-readable text.
    Text,
}

/// Installs the global subscriber: logs go to stderr so stdout stays the
/// security event stream. `RUST_LOG` overrides `level`.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}
