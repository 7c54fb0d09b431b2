//! Logs, security events, metrics, readiness and the operations HTTP server.

pub mod events;
pub mod health;
pub mod metrics;
pub mod security;
pub mod server;

use tracing_subscriber::{EnvFilter, Registry, fmt, prelude::*, reload};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (default; what log pipelines want).
    Json,
    /// Human-readable text.
    Text,
}

/// Changes the log filter of the running process (`PUT /debug/loglevel`).
#[derive(Clone)]
pub struct LogLevel(reload::Handle<EnvFilter, Registry>);

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogLevel({})", self.current())
    }
}

impl LogLevel {
    /// Replaces the filter with `directives` (RUST_LOG syntax, e.g. `debug` or `info,bulkhead=trace`).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives.trim()).map_err(|e| format!("invalid log filter: {e}"))?;
        self.0.reload(filter).map_err(|e| format!("cannot change the log filter: {e}"))
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.0.with_current(|f| f.to_string()).unwrap_or_default()
    }
}

/// Installs the global subscriber: logs go to stderr so stdout stays the
/// security event stream. `RUST_LOG` overrides `level`. The returned handle
/// changes the filter at run time.
pub fn init_logging(format: LogFormat, level: &str) -> LogLevel {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => {
            // Colours only for a person at a terminal, never into log files.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            registry.with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).try_init()
        }
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
    LogLevel(handle)
}
