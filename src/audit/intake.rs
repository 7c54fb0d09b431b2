//! Where the application's records come in: HTTP on loopback, and JSON-lines
//! files followed like `tail -F`.
//!
//! HTTP: `POST /v1/records` with one JSON object, or several (JSON lines, or
//! any whitespace between objects). The batch is sealed all or nothing; the
//! answer is `200 {"accepted":n,"first_seq":a,"last_seq":b}` once the records
//! are in the spool, `400` for a body that is not JSON objects (naming the
//! record), `413` for a body too large, `503` with `Retry-After` when the spool
//! is full. `GET /healthz` answers `ok`; `GET /metrics` serves counters.
//!
//! Files: each path is polled; a file replaced under the same name (rotation
//! by rename) is read to its end before the new one is opened from its start;
//! a file that shrinks (truncation, copytruncate) is read again from the
//! start. A line without its final newline waits for it, and is taken as a
//! record when the file is rotated or truncated. Read positions are kept in
//! the spool directory, so a restart resumes where the last run stopped. A
//! line that is not a JSON object is still sealed, as
//! `{"bulkhead_unparsed": "<the line>", "bulkhead_error": "<why>"}`, and logged.
//! Lines written to a rotated-away file after the sidecar has switched to its
//! successor (about one poll interval) are not read: writers must reopen
//! promptly after rotation.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use super::sink::SinkStats;

/// Sequence numbers given to one sealed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedRange {
    /// First seq of the batch.
    pub first: u64,
    /// Last seq of the batch.
    pub last: u64,
}

/// Why a batch was not sealed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum IntakeError {
    /// The spool is full; try again later.
    #[error("{0}")]
    Full(String),
    /// The batch is larger than the spool.
    #[error("{0}")]
    TooLarge(String),
    /// The sidecar failed to store the batch.
    #[error("{0}")]
    Internal(String),
    /// The sidecar is stopping.
    #[error("the audit sidecar is shutting down; retry against the restarted sidecar")]
    Closed,
}

/// A batch of records for the sealing task, and where to send the answer.
#[derive(Debug)]
pub struct ChainRequest {
    /// The application's records.
    pub records: Vec<Map<String, Value>>,
    /// Receives the seq range or the reason for refusal.
    pub reply: oneshot::Sender<Result<SealedRange, IntakeError>>,
}

/// Hands batches to the sealing task.
#[derive(Clone, Debug)]
pub struct Submitter {
    tx: mpsc::Sender<ChainRequest>,
}

impl Submitter {
    /// A submitter feeding `tx`.
    pub fn new(tx: mpsc::Sender<ChainRequest>) -> Self {
        Self { tx }
    }

    /// Seals `records` as consecutive records of the chain.
    pub async fn submit(&self, records: Vec<Map<String, Value>>) -> Result<SealedRange, IntakeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ChainRequest { records, reply }).await.map_err(|_| IntakeError::Closed)?;
        rx.await.map_err(|_| IntakeError::Closed)?
    }
}

/// Counters of the intake side.
#[derive(Debug, Default)]
pub struct IntakeStats {
    /// Records sealed from HTTP.
    pub http_records: AtomicU64,
    /// HTTP requests refused (bad body, full spool, shutting down).
    pub http_refused: AtomicU64,
    /// Records sealed from followed files.
    pub file_records: AtomicU64,
    /// File lines that were not JSON objects (sealed wrapped).
    pub file_unparsed: AtomicU64,
}

/// Request bodies read, parsed and sealed at once. Parsed records take several times their body's
/// size, so without a bound a few concurrent maximum-size posts outgrow the sidecar's memory limit
/// (measured: 8 concurrent 4 MiB posts, 190 MiB RSS). One task seals anyway, so more gains nothing.
pub const MAX_BODIES_IN_FLIGHT: usize = 2;

#[derive(Clone)]
struct HttpState {
    submitter: Submitter,
    sink: Arc<SinkStats>,
    intake: Arc<IntakeStats>,
    bodies: Arc<tokio::sync::Semaphore>,
}

/// A turn to read and seal one body; taken before the body is read, so waiting posts stay in the socket.
struct BodySlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl axum::extract::FromRequestParts<HttpState> for BodySlot {
    type Rejection = Response;

    async fn from_request_parts(_: &mut axum::http::request::Parts, s: &HttpState) -> Result<Self, Response> {
        match s.bodies.clone().acquire_owned().await {
            Ok(permit) => Ok(BodySlot(permit)),
            Err(_) => Err(error(StatusCode::SERVICE_UNAVAILABLE, IntakeError::Closed.to_string())),
        }
    }
}

/// The intake HTTP API (see the module documentation).
pub fn router(submitter: Submitter, sink: Arc<SinkStats>, intake: Arc<IntakeStats>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/records", post(post_records))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(HttpState {
            submitter,
            sink,
            intake,
            bodies: Arc::new(tokio::sync::Semaphore::new(MAX_BODIES_IN_FLIGHT)),
        })
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let mut text = s.sink.prometheus("bulkhead_audit");
    for (name, v) in [
        ("http_records_total", &s.intake.http_records),
        ("http_refused_total", &s.intake.http_refused),
        ("file_records_total", &s.intake.file_records),
        ("file_unparsed_lines_total", &s.intake.file_unparsed),
    ] {
        text.push_str(&format!("# TYPE bulkhead_audit_{name} counter\nbulkhead_audit_{name} {}\n", v.load(Relaxed)));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    let mut resp = (status, axum::Json(json!({ "error": message }))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

async fn post_records(State(s): State<HttpState>, _slot: BodySlot, body: Bytes) -> Response {
    let parsed = parse_body(&body);
    // The raw body is not needed once parsed; holding it through sealing costs its size again.
    drop(body);
    let records = match parsed {
        Ok(r) => r,
        Err(msg) => {
            s.intake.http_refused.fetch_add(1, Relaxed);
            return error(StatusCode::BAD_REQUEST, msg);
        }
    };
    let n = records.len() as u64;
    match s.submitter.submit(records).await {
        Ok(range) => {
            s.intake.http_records.fetch_add(n, Relaxed);
            axum::Json(json!({"accepted": n, "first_seq": range.first, "last_seq": range.last})).into_response()
        }
        Err(e) => {
            s.intake.http_refused.fetch_add(1, Relaxed);
            let status = match e {
                IntakeError::Full(_) | IntakeError::Closed => StatusCode::SERVICE_UNAVAILABLE,
                IntakeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                IntakeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}

/// The records in an HTTP body: JSON objects separated by whitespace.
pub fn parse_body(body: &[u8]) -> Result<Vec<Map<String, Value>>, String> {
    let mut out = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(body).into_iter::<Value>().enumerate() {
        match item {
            Ok(Value::Object(m)) => out.push(m),
            Ok(other) => {
                return Err(format!(
                    "record {} is a JSON {}, not an object; send objects, e.g. {{\"event\": ...}}",
                    i + 1,
                    kind(&other)
                ));
            }
            Err(e) => {
                return Err(format!(
                    "record {} is not valid JSON (line {}, column {}): {e}",
                    i + 1,
                    e.line(),
                    e.column()
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("the body holds no record: send one JSON object, or JSON lines".into());
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One file to follow.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// The file.
    pub path: PathBuf,
    /// Where its read position is kept across restarts.
    pub state_dir: PathBuf,
    /// How often to look for new lines, rotation and truncation.
    pub poll: Duration,
}

#[derive(serde::Serialize, serde::Deserialize, Default, PartialEq, Eq, Debug)]
struct FollowState {
    path: PathBuf,
    ino: u64,
    offset: u64,
}

const MAX_BATCH_LINES: usize = 500;
const READ_CHUNK: usize = 256 << 10;

struct Tail {
    cfg: FollowConfig,
    state_path: PathBuf,
    file: Option<(File, u64)>,
    /// Bytes of the current file sealed so far (always at a line boundary).
    offset: u64,
    /// Bytes read past `offset`, not yet a complete line or not yet sealed.
    buf: Vec<u8>,
    stats: Arc<IntakeStats>,
}

/// Follows one file until `stop` turns true, sealing its lines through `submitter`.
pub async fn follow(cfg: FollowConfig, submitter: Submitter, stats: Arc<IntakeStats>, mut stop: watch::Receiver<bool>) {
    let state_path = state_file_for(&cfg.state_dir, &cfg.path);
    let mut tail = Tail { cfg, state_path, file: None, offset: 0, buf: Vec::new(), stats };
    let mut waiting_logged = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut progressed = false;
        if tail.file.is_none() {
            match tail.open() {
                Ok(true) => waiting_logged = false,
                Ok(false) => {
                    if !waiting_logged {
                        tracing::info!(file = %tail.cfg.path.display(), "waiting for the audit file to appear");
                        waiting_logged = true;
                    }
                }
                Err(e) => {
                    tracing::error!(file = %tail.cfg.path.display(), "cannot open the audit file: {e}")
                }
            }
        }
        if tail.file.is_some() {
            match tail.step(&submitter).await {
                Ok(p) => progressed = p,
                Err(IntakeError::Closed) => return,
                Err(IntakeError::Full(_)) => {} // The spool logs it; keep the lines and retry.
                Err(e) => {
                    tracing::error!(file = %tail.cfg.path.display(), "cannot seal lines of the audit file: {e}")
                }
            }
        }
        if !progressed {
            tokio::select! {
                () = tokio::time::sleep(tail.cfg.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

impl Tail {
    /// Opens the file; resumes at the saved offset if it is the same file.
    fn open(&mut self) -> std::io::Result<bool> {
        let file = match File::open(&self.cfg.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let saved: FollowState =
            std::fs::read(&self.state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        self.offset = if saved.ino == meta.ino() && saved.offset <= meta.len() { saved.offset } else { 0 };
        self.buf.clear();
        tracing::info!(file = %self.cfg.path.display(), offset = self.offset, "following the audit file");
        self.file = Some((file, meta.ino()));
        Ok(true)
    }

    fn save(&self) {
        let Some((_, ino)) = self.file else { return };
        let state = FollowState { path: self.cfg.path.clone(), ino, offset: self.offset };
        if let Ok(bytes) = serde_json::to_vec(&state)
            && let Err(e) = super::spool::write_atomic(&self.state_path, &bytes)
        {
            tracing::warn!(file = %self.cfg.path.display(), "cannot save the read position (a restart may read lines again): {e}");
        }
    }

    fn read_more(&mut self) -> std::io::Result<usize> {
        let Some((file, _)) = &self.file else {
            return Ok(0);
        };
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let n = file.read_at(&mut self.buf[start..], self.offset + start as u64)?;
        self.buf.truncate(start + n);
        Ok(n)
    }

    /// Seals every complete line in `buf` (and the unfinished one if `flush`).
    async fn seal_buffered(&mut self, submitter: &Submitter, flush: bool) -> Result<(), IntakeError> {
        loop {
            let mut records = Vec::new();
            let mut consumed = 0;
            for chunk in self.buf.split_inclusive(|b| *b == b'\n') {
                if records.len() >= MAX_BATCH_LINES || (!chunk.ends_with(b"\n") && !flush) {
                    break;
                }
                consumed += chunk.len();
                if let Some(r) = self.line_record(chunk) {
                    records.push(r);
                }
            }
            if consumed == 0 {
                return Ok(());
            }
            let n = records.len() as u64;
            if !records.is_empty() {
                submitter.submit(records).await?;
            }
            self.stats.file_records.fetch_add(n, Relaxed);
            self.buf.drain(..consumed);
            self.offset += consumed as u64;
            self.save();
        }
    }

    fn line_record(&self, line: &[u8]) -> Option<Map<String, Value>> {
        let text = line.trim_ascii();
        if text.is_empty() {
            return None;
        }
        let problem = match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(m)) => return Some(m),
            Ok(other) => format!("the line is a JSON {}, not an object", kind(&other)),
            Err(e) => format!("the line is not valid JSON: {e}"),
        };
        self.stats.file_unparsed.fetch_add(1, Relaxed);
        tracing::warn!(file = %self.cfg.path.display(), "{problem}; sealing it as bulkhead_unparsed");
        let mut m = Map::new();
        m.insert("bulkhead_unparsed".into(), Value::String(String::from_utf8_lossy(text).into_owned()));
        m.insert("bulkhead_error".into(), Value::String(problem));
        Some(m)
    }

    /// Reads and seals what is new; handles rotation and truncation at EOF.
    /// Returns whether anything was read (so the caller polls again at once).
    async fn step(&mut self, submitter: &Submitter) -> Result<bool, IntakeError> {
        let path = self.cfg.path.clone();
        let io = |e: std::io::Error| IntakeError::Internal(format!("cannot read {}: {e}", path.display()));
        // Lines left from a refused submit go first.
        self.seal_buffered(submitter, false).await?;
        let n = self.read_more().map_err(io)?;
        if n > 0 {
            self.seal_buffered(submitter, false).await?;
            return Ok(true);
        }
        let Some((_, ino)) = self.file else {
            return Ok(false);
        };
        match std::fs::metadata(&self.cfg.path) {
            Ok(meta) if meta.ino() != ino => {
                // Rotated: finish the old file (including an unfinished last line), then switch.
                while self.read_more().map_err(io)? > 0 {
                    self.seal_buffered(submitter, false).await?;
                }
                self.seal_buffered(submitter, true).await?;
                tracing::info!(file = %self.cfg.path.display(), "audit file was rotated; following the new one");
                self.file = None;
                Ok(true)
            }
            Ok(meta) if meta.len() < self.offset + self.buf.len() as u64 => {
                self.seal_buffered(submitter, true).await?;
                tracing::warn!(file = %self.cfg.path.display(), "audit file was truncated; reading it again from the start");
                self.offset = 0;
                self.buf.clear();
                self.save();
                Ok(true)
            }
            // Moved away and not yet replaced: keep reading the open file.
            _ => Ok(false),
        }
    }
}

/// Where a follower keeps its state for `path` (exposed for tests and tooling).
pub fn state_file_for(state_dir: &Path, path: &Path) -> PathBuf {
    let digest = hex::encode(&Sha256::digest(path.as_os_str().as_encoded_bytes())[..8]);
    state_dir.join(format!("follow-{digest}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_with_one_or_many_objects_parse() {
        assert_eq!(parse_body(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(parse_body(b"{\"a\":1}\n{\"b\":2}\n\n{\"c\":\n 3}\n").unwrap().len(), 3);
        let err = parse_body(b"{\"a\":1}\n[1]\n").unwrap_err();
        assert!(err.contains("record 2 is a JSON array"), "{err}");
        let err = parse_body(b"{\"a\":1}\n{\"b\":").unwrap_err();
        assert!(err.contains("record 2 is not valid JSON"), "{err}");
        assert!(parse_body(b"  \n").unwrap_err().contains("no record"));
    }

    async fn collect(rx: &mut mpsc::Receiver<ChainRequest>, want: usize) -> Vec<Map<String, Value>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while out.len() < want {
            let req = tokio::time::timeout_at(deadline, rx.recv()).await.expect("timed out").expect("closed");
            let n = req.records.len() as u64;
            out.extend(req.records);
            let _ = req.reply.send(Ok(SealedRange { first: 1, last: n }));
        }
        out
    }

    #[tokio::test]
    async fn follows_appends_rotation_truncation_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        let cfg = FollowConfig { path: path.clone(), state_dir: state_dir.clone(), poll: Duration::from_millis(20) };
        let (tx, mut rx) = mpsc::channel(4);
        let (stop_tx, stop) = watch::channel(false);
        let stats = Arc::new(IntakeStats::default());
        let task = tokio::spawn(follow(cfg.clone(), Submitter::new(tx.clone()), stats.clone(), stop));

        let append = |p: &Path, s: &str| {
            use std::io::Write;
            std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
        };
        append(&path, "{\"n\":1}\n{\"n\":2}\n{\"n\":");
        let got = collect(&mut rx, 2).await;
        assert_eq!(got[1]["n"], 2);
        append(&path, "3}\nnot json\n");
        let got = collect(&mut rx, 2).await;
        assert_eq!(got[0]["n"], 3);
        assert_eq!(got[1]["bulkhead_unparsed"], "not json");

        // Rotation: the old file gets one more line (and an unfinished one) after the rename.
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(&dir.path().join("app.log.1"), "{\"n\":4}\n{\"n\":5}");
        append(&path, "{\"n\":6,\"pad\":\"xxxxxxxxxxxx\"}\n");
        let got = collect(&mut rx, 3).await;
        assert_eq!(got.iter().map(|r| r["n"].as_i64().unwrap()).collect::<Vec<_>>(), [4, 5, 6]);

        // Truncation, then a shorter content.
        std::fs::write(&path, "{\"n\":7}\n").unwrap();
        let got = collect(&mut rx, 1).await;
        assert_eq!(got[0]["n"], 7);

        stop_tx.send(true).unwrap();
        task.await.unwrap();
        // A restart resumes after line 7, not from the start.
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(cfg, Submitter::new(tx), stats, stop));
        append(&path, "{\"n\":8}\n");
        let got = collect(&mut rx, 1).await;
        assert_eq!(got[0]["n"], 8);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert!(state_file_for(&state_dir, &path).exists());
    }
}
