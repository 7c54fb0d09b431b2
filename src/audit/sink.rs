//! JSON lines to a sink: the reusable shipping component.
//!
//! A [`Shipper`] takes single-line JSON strings, keeps them in a bounded
//! on-disk [`Spool`], and one background task delivers them in order to a
//! [`SinkTarget`]: stdout, a file, or an HTTP(S) endpoint (a SIEM), in batches,
//! retrying with exponential backoff until the sink takes them.
//!
//! Delivery is at-least-once: if the sink stored a batch but its answer was
//! lost, the same batch is sent again, byte for byte. A receiver removes
//! duplicates by a key inside the line (for audit records: tenant, namespace,
//! pod, container and `seq`).
//!
//! HTTP requests are `POST` with `Content-Type: application/x-ndjson`, the
//! lines as the body (each ending in `\n`), and `X-Bulkhead-Lines: <n>`; any
//! 2xx answer means delivered. Headers from files (tokens from mounted
//! Secrets) are re-read for every request so a rotated token is picked up;
//! their values are marked sensitive and never logged.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use bulkhead::audit::sink::{Shipper, ShipperConfig, SinkTarget};
//! use bulkhead::audit::spool::{FullPolicy, SpoolConfig};
//! let target: SinkTarget = "https://siem.example/ingest".parse()?;
//! let spool = SpoolConfig { dir: "/var/spool/events".into(), max_bytes: 64 << 20, when_full: FullPolicy::DropOldest };
//! let shipper = Shipper::start(ShipperConfig::new("security-events", target, spool))?;
//! shipper.append(&[r#"{"event":{"action":"tenant-created"}}"#])?;
//! shipper.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::spool::{Batch, Spool, SpoolConfig, SpoolError};

/// Counters of one shipper, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Lines accepted into the spool.
    pub spooled_lines: AtomicU64,
    /// Lines refused because the spool was full ([`super::spool::FullPolicy::Refuse`]).
    pub refused_lines: AtomicU64,
    /// Lines deleted unsent because the spool was full ([`super::spool::FullPolicy::DropOldest`]).
    pub dropped_lines: AtomicU64,
    /// Times the spool became full.
    pub full_events: AtomicU64,
    /// Lines the sink acknowledged.
    pub delivered_lines: AtomicU64,
    /// Failed delivery attempts.
    pub delivery_failures: AtomicU64,
    /// Bytes waiting in the spool.
    pub pending_bytes: AtomicU64,
}

impl SinkStats {
    /// The counters in Prometheus text format, names prefixed with `prefix`.
    pub fn prometheus(&self, prefix: &str) -> String {
        let rows: [(&str, &str, &AtomicU64, &str); 7] = [
            ("spooled_lines_total", "counter", &self.spooled_lines, "Lines accepted into the spool."),
            ("refused_lines_total", "counter", &self.refused_lines, "Lines refused because the spool was full."),
            ("dropped_lines_total", "counter", &self.dropped_lines, "Lines deleted unsent because the spool was full."),
            ("spool_full_total", "counter", &self.full_events, "Times the spool became full."),
            ("delivered_lines_total", "counter", &self.delivered_lines, "Lines acknowledged by the sink."),
            ("delivery_failures_total", "counter", &self.delivery_failures, "Failed delivery attempts."),
            ("spool_pending_bytes", "gauge", &self.pending_bytes, "Bytes waiting in the spool."),
        ];
        let mut out = String::new();
        for (name, kind, value, help) in rows {
            out.push_str(&format!(
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} {kind}\n{prefix}_{name} {}\n",
                value.load(Relaxed)
            ));
        }
        out
    }
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkTarget {
    /// Standard output (the cluster's log pipeline).
    Stdout,
    /// Appended to a file; re-opened if it is moved away (log rotation).
    File(PathBuf),
    /// POSTed to an HTTP(S) endpoint.
    Http(HttpTarget),
}

/// An HTTP(S) endpoint and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL lines are POSTed to.
    pub url: http::Uri,
    /// PEM file with the CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Request headers whose values are read from files (mounted Secrets).
    pub header_files: Vec<(http::HeaderName, PathBuf)>,
}

impl FromStr for SinkTarget {
    type Err = SinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "stdout" {
            return Ok(SinkTarget::Stdout);
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SinkError::BadTarget(s.into()));
            }
            return Ok(SinkTarget::File(path.into()));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let url: http::Uri = s.parse().map_err(|_| SinkError::BadTarget(s.into()))?;
            if url.host().is_none() {
                return Err(SinkError::BadTarget(s.into()));
            }
            return Ok(SinkTarget::Http(HttpTarget { url, ca_file: None, header_files: Vec::new() }));
        }
        Err(SinkError::BadTarget(s.into()))
    }
}

impl std::fmt::Display for SinkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkTarget::Stdout => f.write_str("stdout"),
            SinkTarget::File(p) => write!(f, "file:{}", p.display()),
            SinkTarget::Http(h) => write!(f, "{}", h.url),
        }
    }
}

/// Retry delays: `initial`, doubling up to `max`, each randomised to 50–100 %.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// Everything a [`Shipper`] needs.
#[derive(Clone, Debug)]
pub struct ShipperConfig {
    /// Label for log lines ("audit", "security-events").
    pub name: String,
    /// Where lines go.
    pub target: SinkTarget,
    /// The spool.
    pub spool: SpoolConfig,
    /// Most lines in one delivery.
    pub batch_max_lines: usize,
    /// About the most bytes in one delivery.
    pub batch_max_bytes: usize,
    /// Retry delays.
    pub backoff: Backoff,
    /// How long one HTTP request may take.
    pub request_timeout: Duration,
}

impl ShipperConfig {
    /// A configuration with the default batching (1000 lines / 1 MiB), backoff
    /// (250 ms to 30 s) and request timeout (10 s).
    pub fn new(name: &str, target: SinkTarget, spool: SpoolConfig) -> Self {
        Self {
            name: name.into(),
            target,
            spool,
            batch_max_lines: 1000,
            batch_max_bytes: 1 << 20,
            backoff: Backoff { initial: Duration::from_millis(250), max: Duration::from_secs(30) },
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a sink cannot be set up or did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink string is not one of the known forms.
    #[error("{0:?} is not a sink: use stdout, file:PATH, http://HOST/PATH or https://HOST/PATH")]
    BadTarget(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot use {path} as the sink CA: {reason} (give a PEM file with the SIEM's CA certificate)")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TLS cannot be set up.
    #[error("cannot set up TLS for the sink: {0}")]
    Tls(String),
    /// A header file cannot be used.
    #[error("cannot use {path} for header {name}: {reason}")]
    Header {
        /// The header.
        name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The sink answered with a non-2xx status.
    #[error("the sink answered HTTP {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// Start of the answer body.
        body: String,
    },
    /// The sink could not be reached.
    #[error("cannot reach the sink: {0}")]
    Transport(String),
    /// The sink did not answer in time.
    #[error("the sink did not answer within {0:?}")]
    Timeout(Duration),
    /// Writing to stdout or the file failed.
    #[error("cannot write to {target}: {source}")]
    Write {
        /// stdout or the file.
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

enum Deliverer {
    Stdout(tokio::io::Stdout),
    File { path: PathBuf, open: Option<(std::fs::File, u64)> },
    Http(Box<HttpDeliverer>),
}

struct HttpDeliverer {
    client: HttpsClient,
    target: HttpTarget,
    timeout: Duration,
}

impl Deliverer {
    fn new(config: &ShipperConfig) -> Result<Self, SinkError> {
        Ok(match &config.target {
            SinkTarget::Stdout => Deliverer::Stdout(tokio::io::stdout()),
            SinkTarget::File(path) => Deliverer::File { path: path.clone(), open: None },
            SinkTarget::Http(target) => {
                for (name, path) in &target.header_files {
                    header_value(name, path)?;
                }
                let tls = tls_config(target)?;
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .build();
                let client = Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(https);
                Deliverer::Http(Box::new(HttpDeliverer {
                    client,
                    target: target.clone(),
                    timeout: config.request_timeout,
                }))
            }
        })
    }

    async fn deliver(&mut self, data: &Bytes, lines: usize) -> Result<(), SinkError> {
        match self {
            Deliverer::Stdout(out) => {
                let write = async {
                    out.write_all(data).await?;
                    out.flush().await
                };
                write.await.map_err(|source| SinkError::Write { target: "stdout".into(), source })
            }
            Deliverer::File { path, open } => {
                use std::io::Write;
                use std::os::unix::fs::MetadataExt;
                let err = |source| SinkError::Write { target: path.display().to_string(), source };
                // Re-open when the file was moved away or replaced (log rotation).
                let current_ino = std::fs::metadata(&*path).ok().map(|m| m.ino());
                if open.as_ref().map(|(_, ino)| Some(*ino)) != Some(current_ino) {
                    let file = std::fs::OpenOptions::new().create(true).append(true).open(&*path).map_err(err)?;
                    let ino = file.metadata().map_err(err)?.ino();
                    *open = Some((file, ino));
                }
                let Some((file, _)) = open.as_mut() else { unreachable!("opened above") };
                if let Err(e) = file.write_all(data).and_then(|()| file.flush()) {
                    *open = None;
                    return Err(err(e));
                }
                Ok(())
            }
            Deliverer::Http(h) => {
                let HttpDeliverer { client, target, timeout } = &mut **h;
                let mut req = http::Request::post(target.url.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-ndjson")
                    .header("x-bulkhead-lines", lines);
                for (name, path) in &target.header_files {
                    req = req.header(name, header_value(name, path)?);
                }
                let req = req.body(Full::new(data.clone())).map_err(|e| SinkError::Transport(e.to_string()))?;
                let exchange = async {
                    let resp = client.request(req).await.map_err(|e| SinkError::Transport(error_chain(&e)))?;
                    let status = resp.status();
                    let body =
                        Limited::new(resp.into_body(), 4096).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    if status.is_success() {
                        Ok(())
                    } else {
                        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string();
                        Err(SinkError::Status { status: status.as_u16(), body: text })
                    }
                };
                tokio::time::timeout(*timeout, exchange).await.map_err(|_| SinkError::Timeout(*timeout))?
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn header_value(name: &http::HeaderName, path: &PathBuf) -> Result<http::HeaderValue, SinkError> {
    let fail = |reason: String| SinkError::Header { name: name.to_string(), path: path.clone(), reason };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let trimmed = bytes.trim_ascii_end();
    let mut value = http::HeaderValue::from_bytes(trimmed)
        .map_err(|_| fail("the file holds bytes that are not allowed in an HTTP header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn tls_config(target: &HttpTarget) -> Result<rustls::ClientConfig, SinkError> {
    use hyper_rustls::ConfigBuilderExt;
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls(e.to_string()))?;
    let https = target.url.scheme_str() == Some("https");
    let config = match &target.ca_file {
        Some(path) => {
            let ca_err = |reason: String| SinkError::Ca { path: path.clone(), reason };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))? {
                let cert = cert.map_err(|e| ca_err(e.to_string()))?;
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_err("it holds no certificate".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None if https => builder
            .with_native_roots()
            .map_err(|e| SinkError::Tls(format!("no system CA certificates ({e}); pass --sink-ca")))?
            .with_no_client_auth(),
        // Plain http: the TLS config is never used.
        None => builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth(),
    };
    Ok(config)
}

/// Ships JSON lines through a spool to a sink; see the module documentation.
pub struct Shipper {
    spool: Arc<Spool>,
    stats: Arc<SinkStats>,
    stop: watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").field("spool", &self.spool).finish_non_exhaustive()
    }
}

impl Shipper {
    /// Opens the spool and starts delivering (what the spool already holds
    /// from an earlier run goes first). Call inside a Tokio runtime.
    pub fn start(config: ShipperConfig) -> Result<Self, SinkError> {
        let stats = Arc::new(SinkStats::default());
        let spool = Arc::new(Spool::open(&config.name, &config.spool, stats.clone())?);
        let deliverer = Deliverer::new(&config)?;
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(deliver_loop(spool.clone(), deliverer, config, stop_rx, stats.clone()));
        Ok(Self { spool, stats, stop, task })
    }

    /// Queues lines (single-line JSON, no `\n`), all or none.
    pub fn append<S: AsRef<str>>(&self, lines: &[S]) -> Result<(), SpoolError> {
        self.spool.append(lines)
    }

    /// The spool behind this shipper.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// Delivers what it can within `grace`, then stops; returns the bytes left
    /// in the spool (they go out on the next start).
    pub async fn shutdown(self, grace: Duration) -> u64 {
        let _ = self.stop.send(Some(Instant::now() + grace));
        let mut task = self.task;
        if tokio::time::timeout(grace + Duration::from_secs(1), &mut task).await.is_err() {
            task.abort();
        }
        self.spool.pending_bytes()
    }
}

async fn deliver_loop(
    spool: Arc<Spool>,
    mut deliverer: Deliverer,
    config: ShipperConfig,
    mut stop: watch::Receiver<Option<Instant>>,
    stats: Arc<SinkStats>,
) {
    let name = config.name.as_str();
    let target = config.target.to_string();
    let mut delay = config.backoff.initial;
    let mut failing: Option<(Instant, Instant)> = None; // (since, last error log)
    let mut batch: Option<Batch> = None;
    loop {
        let deadline = *stop.borrow();
        if batch.is_none() {
            match spool.next_batch(config.batch_max_lines, config.batch_max_bytes) {
                Ok(Some(b)) => batch = Some(b),
                Ok(None) if deadline.is_some() => return,
                Ok(None) => {
                    tokio::select! {
                        () = spool.wait_for_lines() => {}
                        changed = stop.changed() => if changed.is_err() { return },
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(sink = %target, "{name} spool cannot be read: {e}; retrying");
                    pause(Duration::from_secs(1), deadline, &mut stop).await;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(b) = batch.as_ref() else { continue };
        match deliverer.deliver(&b.data, b.lines).await {
            Ok(()) => {
                if let Err(e) = spool.commit(b) {
                    tracing::error!(sink = %target, "{name} spool cannot record a delivery: {e} (the batch may be sent again)");
                }
                batch = None;
                delay = config.backoff.initial;
                if let Some((since, _)) = failing.take() {
                    tracing::warn!(sink = %target, down_for_ms = since.elapsed().as_millis() as u64, "{name} sink is taking lines again");
                }
            }
            Err(e) => {
                stats.delivery_failures.fetch_add(1, Relaxed);
                let now = Instant::now();
                let pending = spool.pending_bytes();
                match &mut failing {
                    None => {
                        tracing::warn!(sink = %target, pending_bytes = pending, "{name} sink did not take {} lines: {e}; retrying with backoff", b.lines);
                        failing = Some((now, now));
                    }
                    Some((since, last)) if now.duration_since(*last) >= Duration::from_secs(30) => {
                        *last = now;
                        tracing::error!(
                            sink = %target,
                            pending_bytes = pending,
                            max_bytes = spool.max_bytes(),
                            down_for_secs = now.duration_since(*since).as_secs(),
                            "{name} sink still failing: {e}; lines wait in the spool"
                        );
                    }
                    Some(_) => {}
                }
                if deadline.is_some_and(|d| now >= d) {
                    tracing::warn!(sink = %target, pending_bytes = pending, "{name} shipper stopping with undelivered lines; they stay in the spool for the next start");
                    return;
                }
                pause(jitter(delay), deadline, &mut stop).await;
                delay = (delay * 2).min(config.backoff.max);
            }
        }
    }
}

/// Sleeps `d`, never past `deadline`; without a deadline yet, a stop request wakes it early.
async fn pause(d: Duration, deadline: Option<Instant>, stop: &mut watch::Receiver<Option<Instant>>) {
    let mut until = tokio::time::Instant::now() + d;
    if let Some(deadline) = deadline {
        until = until.min(tokio::time::Instant::from_std(deadline));
        tokio::time::sleep_until(until).await;
        return;
    }
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        changed = stop.changed() => if changed.is_err() {
            // The Shipper was dropped without shutdown: finish the wait normally.
            tokio::time::sleep_until(until).await;
        },
    }
}

fn jitter(d: Duration) -> Duration {
    // Spread retries of many sidecars; clock nanoseconds are random enough for that.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_strings_parse() {
        assert_eq!("stdout".parse::<SinkTarget>().unwrap(), SinkTarget::Stdout);
        assert_eq!("file:/tmp/a.jsonl".parse::<SinkTarget>().unwrap(), SinkTarget::File("/tmp/a.jsonl".into()));
        let SinkTarget::Http(h) = "https://siem.example:8443/ingest?x=1".parse::<SinkTarget>().unwrap() else {
            panic!()
        };
        assert_eq!(h.url.host(), Some("siem.example"));
        for bad in ["", "file:", "ftp://x", "stderr", "http://"] {
            let err = bad.parse::<SinkTarget>().unwrap_err().to_string();
            assert!(err.contains("stdout, file:PATH"), "{bad}: {err}");
        }
    }

    #[test]
    fn header_files_are_trimmed_and_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "Bearer abc\n").unwrap();
        let v = header_value(&http::HeaderName::from_static("authorization"), &p).unwrap();
        assert_eq!(v.as_bytes(), b"Bearer abc");
        assert!(v.is_sensitive());
        std::fs::write(&p, "a\nb").unwrap();
        let err = header_value(&http::HeaderName::from_static("authorization"), &p).unwrap_err().to_string();
        assert!(err.contains("not allowed in an HTTP header") && !err.contains("a\nb"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let target = HttpTarget { url: "https://x/".parse().unwrap(), ca_file: Some(p), header_files: vec![] };
        let err = tls_config(&target).unwrap_err().to_string();
        assert!(err.contains("sink CA"), "{err}");
    }

    #[test]
    fn prometheus_lists_every_counter() {
        let s = SinkStats::default();
        s.refused_lines.store(3, Relaxed);
        let text = s.prometheus("bulkhead_audit");
        assert!(text.contains("bulkhead_audit_refused_lines_total 3\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 7);
    }
}
