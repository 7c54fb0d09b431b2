//! Command-line arguments of `bulkhead-audit-sidecar` and `bulkhead audit …`.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::chain::{ChainState, Verifier};
use super::keys::{KeyRing, SigningKey};
use super::record::Identity;
use super::sidecar::{self, SidecarConfig};
use super::sink::{Backoff, ShipperConfig, SinkTarget};
use super::spool::{FullPolicy, SpoolConfig};
use super::verify;
use crate::telemetry::{self, LogFormat};

/// The options of `bulkhead-audit-sidecar`.
#[derive(Args, Debug)]
pub struct SidecarOptions {
    /// Directory of the mounted bulkhead-keys Secret (audit-key-id, audit-key.<id>).
    #[arg(long, env = "BULKHEAD_AUDIT_KEYS", default_value = "/var/run/bulkhead/keys")]
    pub keys: PathBuf,
    /// Loopback address for `POST /v1/records`.
    #[arg(long, env = "BULKHEAD_AUDIT_LISTEN", default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// JSON-lines file to follow like `tail -F` (repeatable).
    #[arg(long = "follow", value_name = "FILE")]
    pub follow: Vec<PathBuf>,
    /// Where sealed records go: stdout, file:PATH, http://URL or https://URL.
    #[arg(long, env = "BULKHEAD_AUDIT_SINK", default_value = "stdout", value_parser = parse_sink)]
    pub sink: SinkTarget,
    /// PEM file with the CA certificates of an https sink (instead of the system's).
    #[arg(long, value_name = "FILE")]
    pub sink_ca: Option<PathBuf>,
    /// HTTP header for the sink whose value is read from a file, e.g. Authorization=/secrets/siem/token (repeatable).
    #[arg(long = "sink-header-file", value_name = "NAME=PATH", value_parser = parse_header_file)]
    pub sink_header_file: Vec<(http::HeaderName, PathBuf)>,
    /// Directory for the spool, the chain state and file read positions (an emptyDir).
    #[arg(long, env = "BULKHEAD_AUDIT_SPOOL_DIR", default_value = "/var/run/bulkhead/audit-spool")]
    pub spool_dir: PathBuf,
    /// Bound on undelivered bytes in the spool (suffixes Ki, Mi, Gi allowed).
    #[arg(long, default_value = "64Mi", value_parser = parse_size)]
    pub spool_max_bytes: u64,
    /// What happens when the spool is full: refuse new records (HTTP 503, followers pause) or drop the oldest.
    #[arg(long, value_enum, default_value_t = FullPolicy::Refuse)]
    pub spool_full: FullPolicy,
    /// Name of the container whose records these are.
    #[arg(long, env = "BULKHEAD_CONTAINER")]
    pub container: String,
    /// Tenant name (downward API).
    #[arg(long, env = "BULKHEAD_TENANT")]
    pub tenant: String,
    /// Pod namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Pod name (downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod: String,
    /// Most records in one delivery to the sink.
    #[arg(long, default_value_t = 1000)]
    pub batch_max_lines: usize,
    /// About the most bytes in one delivery to the sink.
    #[arg(long, default_value = "1Mi", value_parser = parse_size)]
    pub batch_max_bytes: u64,
    /// First retry delay after a failed delivery.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub retry_initial: Duration,
    /// Largest retry delay (the delay doubles up to it).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// Timeout of one HTTP request to the sink.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sink_timeout: Duration,
    /// Largest HTTP body accepted on the intake.
    #[arg(long, default_value = "4Mi", value_parser = parse_size)]
    pub max_body_bytes: u64,
    /// How often followed files are checked.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub poll: Duration,
    /// How often the key directory is re-read to pick up a rotated key.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub key_reload: Duration,
    /// Time allowed on shutdown to deliver the backlog (the rest stays spooled).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format (logs go to stderr).
    #[arg(long, env = "BULKHEAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG overrides it.
    #[arg(long, env = "BULKHEAD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// `bulkhead audit …` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Prove an audit log untampered: every hash link, signature and sequence number.
    Verify(VerifyArgs),
    /// Measure sealing and verification speed on this machine (one core).
    #[command(hide = true)]
    Bench(BenchArgs),
}

/// Arguments of `bulkhead audit verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Directory with the tenant's audit keys (audit-key.<id> files); without it only links and seq are checked.
    #[arg(long, env = "BULKHEAD_AUDIT_KEYS")]
    pub keys: Option<PathBuf>,
    /// Accept chains that start after seq 1 (an excerpt of a longer log).
    #[arg(long)]
    pub partial: bool,
    /// The log (JSON lines); `-` reads standard input.
    #[arg(default_value = "-")]
    pub file: PathBuf,
}

/// Arguments of `bulkhead audit bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Records to seal and verify.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
}

fn parse_sink(s: &str) -> Result<SinkTarget, String> {
    s.parse().map_err(|e: super::sink::SinkError| e.to_string())
}

fn parse_header_file(s: &str) -> Result<(http::HeaderName, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=PATH"))?;
    let name = http::HeaderName::try_from(name).map_err(|_| format!("{name:?} is not an HTTP header name"))?;
    if path.is_empty() {
        return Err(format!("no file given for header {name}"));
    }
    Ok((name, PathBuf::from(path)))
}

/// Parses a byte count: `1048576`, `512Ki`, `64Mi`, `1Gi`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s {
        _ if s.ends_with("Ki") => (&s[..s.len() - 2], 1u64 << 10),
        _ if s.ends_with("Mi") => (&s[..s.len() - 2], 1 << 20),
        _ if s.ends_with("Gi") => (&s[..s.len() - 2], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a byte count: use a positive number with an optional Ki, Mi or Gi suffix"))
}

/// Parses a duration: `250ms`, `30s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration =
        s.parse().map_err(|_| format!("{s:?} is not a duration: use e.g. 250ms, 30s or 2m"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

/// Runs `bulkhead-audit-sidecar` until SIGTERM or Ctrl-C.
pub fn run_sidecar(args: SidecarOptions) -> Result<(), String> {
    telemetry::init_logging(args.log_format, &args.log_level);
    let mut target = args.sink;
    if let SinkTarget::Http(h) = &mut target {
        h.ca_file = args.sink_ca;
        h.header_files = args.sink_header_file;
    } else if args.sink_ca.is_some() || !args.sink_header_file.is_empty() {
        return Err("--sink-ca and --sink-header-file only apply to an http(s) sink".into());
    }
    let spool = SpoolConfig { dir: args.spool_dir, max_bytes: args.spool_max_bytes, when_full: args.spool_full };
    let mut shipper = ShipperConfig::new("audit", target, spool);
    shipper.batch_max_lines = args.batch_max_lines.max(1);
    shipper.batch_max_bytes = usize::try_from(args.batch_max_bytes).unwrap_or(usize::MAX);
    shipper.backoff = Backoff { initial: args.retry_initial, max: args.retry_max.max(args.retry_initial) };
    shipper.request_timeout = args.sink_timeout;
    let config = SidecarConfig {
        identity: Identity { tenant: args.tenant, namespace: args.namespace, pod: args.pod, container: args.container },
        keys_dir: args.keys,
        listen: args.listen,
        follow: args.follow,
        shipper,
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        poll: args.poll,
        key_reload: args.key_reload,
        shutdown_grace: args.shutdown_grace,
    };
    // One thread: the sidecar is I/O-bound and small RSS matters in every pod.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(sidecar::run(config, shutdown_signal())).map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs a `bulkhead audit …` subcommand.
pub fn run(command: AuditCommand) -> Result<(), String> {
    match command {
        AuditCommand::Verify(args) => run_verify(args),
        AuditCommand::Bench(args) => {
            println!("{}", bench(args.records));
            Ok(())
        }
    }
}

fn run_verify(args: VerifyArgs) -> Result<(), String> {
    let keys = match &args.keys {
        Some(dir) => Some(KeyRing::load(dir).map_err(|e| e.to_string())?),
        None => None,
    };
    let name = args.file.display().to_string();
    let result = if name == "-" {
        verify::verify_reader(std::io::stdin().lock(), keys.as_ref(), args.partial)
    } else {
        let file = std::fs::File::open(&args.file).map_err(|e| format!("cannot open {name}: {e}"))?;
        verify::verify_reader(BufReader::new(file), keys.as_ref(), args.partial)
    };
    match result {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(e) => Err(format!("{name}: {e}")),
    }
}

/// Seals and verifies `n` typical records on one thread; returns the figures.
pub fn bench(n: u64) -> String {
    let Ok(key) = SigningKey::new("bench", [7; 32]) else {
        return "cannot build the bench key".into();
    };
    let who = Identity {
        tenant: "acme".into(),
        namespace: "acme-calls".into(),
        pod: "ivr-5f7d9c8b6-x2x4q".into(),
        container: "ivr".into(),
    };
    let record = serde_json::json!({
        "action": "read", "actor": {"id": "agent-1742", "role": "agent"},
        "object": {"kind": "call-recording", "id": "rec-20250131-000042"},
        "fields": ["customer.name", "payment.last4"], "outcome": "allowed", "reason": "active call"
    });
    let Some(record) = record.as_object().cloned() else {
        return String::new();
    };
    let mut state = ChainState::default();
    let mut lines = Vec::with_capacity(n as usize);
    let mut bytes = 0usize;
    let start = Instant::now();
    for _ in 0..n {
        let s = state.seal(&who, &key, jiff::Timestamp::now(), record.clone());
        bytes += s.line.len() + 1;
        lines.push(s.line);
    }
    let seal = start.elapsed();
    let Ok(ring) = KeyRing::from_keys(Some("bench"), [key]) else {
        return String::new();
    };
    let mut verifier = Verifier::new(Some(&ring), false);
    let start = Instant::now();
    for line in &lines {
        if let Err(e) = verifier.check(line) {
            return format!("bench chain did not verify: {e}");
        }
    }
    let check = start.elapsed();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    format!(
        "{n} records of {} bytes: seal (hash link + HMAC-SHA256) {:.0} records/s ({:.2} µs each); verify {:.0} records/s ({:.2} µs each)",
        bytes / n.max(1) as usize,
        rate(seal),
        seal.as_secs_f64() * 1e6 / n as f64,
        rate(check),
        check.as_secs_f64() * 1e6 / n as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert!(parse_size("0").is_err() && parse_size("12MB").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("soon").unwrap_err().contains("250ms"));
        assert!(parse_header_file("Authorization=/s/token").is_ok());
        assert!(parse_header_file("Bad Name=/x").is_err());
    }

    #[test]
    fn bench_reports_figures() {
        let out = bench(50);
        assert!(out.contains("records/s") && !out.contains("did not verify"), "{out}");
    }
}
