//! The real `bulkhead-audit-sidecar` process, end to end: records in over
//! loopback HTTP and a followed file, sealed lines out to a file or to a SIEM
//! (an HTTP receiver inside this test), and `bulkhead audit verify` on the result.
//! Every wait is bounded; only 127.0.0.1 is used.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `bulkhead`, for `audit verify`.
const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
/// The sidecar program the webhook injects into pods.
const SIDECAR: &str = env!("CARGO_BIN_EXE_bulkhead-audit-sidecar");
const WAIT: Duration = Duration::from_secs(30);

fn write_key(dir: &Path, id: &str, byte: u8) {
    std::fs::write(dir.join(format!("audit-key.{id}")), [byte; 32]).unwrap();
}

fn key_dir(root: &Path, name: &str, keys: &[(&str, u8)], current: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (id, b) in keys {
        write_key(&dir, id, *b);
    }
    std::fs::write(dir.join("audit-key-id"), format!("{current}\n")).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Sidecar {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Sidecar {
    fn start(root: &Path, keys: &Path, extra: &[&str]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stderr = root.join(format!("sidecar-{}.stderr", addr.port()));
        let child = Command::new(SIDECAR)
            .arg("--keys")
            .arg(keys)
            .args(["--listen", &addr.to_string()])
            .arg("--spool-dir")
            .arg(root.join("spool"))
            .args(["--container", "app", "--tenant", "acme", "--namespace", "acme-calls", "--pod", "ivr-0"])
            .args(["--poll", "50ms", "--key-reload", "100ms", "--log-format", "json"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("BULKHEAD_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the sidecar");
        let mut sidecar = Sidecar { child, addr, stderr };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = request(addr, "GET", "/healthz", "") {
                return sidecar;
            }
            if let Ok(Some(status)) = sidecar.child.try_wait() {
                panic!("sidecar exited with {status}: {}", sidecar.stderr_text());
            }
            assert!(Instant::now() < deadline, "sidecar did not come up: {}", sidecar.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn post(&self, body: &str) -> (u16, Value) {
        let (status, text) = request(self.addr, "POST", "/v1/records", body).expect("POST to the sidecar");
        let value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null);
        (status, value)
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sidecar ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; returns the status and the raw response.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, out))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

fn append(path: &Path, text: &str) {
    OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

fn verify(file: &Path, keys: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["audit", "verify"]).env_remove("BULKHEAD_AUDIT_KEYS");
    if let Some(k) = keys {
        cmd.arg("--keys").arg(k);
    }
    cmd.arg(file).output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn field(line: &str, name: &str) -> Value {
    serde_json::from_str::<Value>(line).unwrap()[name].clone()
}

#[test]
fn http_and_followed_file_records_come_out_chained_signed_and_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = key_dir(root, "keys", &[("k1", 1)], "k1");
    let out = root.join("audit.jsonl");
    let app_log = root.join("app.log");
    let sink = format!("file:{}", out.display());
    let follow = app_log.display().to_string();
    let sidecar = Sidecar::start(root, &keys, &["--sink", &sink, "--follow", &follow]);

    // HTTP: one record, then a JSON-lines batch.
    let (status, body) = sidecar.post(r#"{"n":1,"action":"read","object":"call/42"}"#);
    assert_eq!((status, body["first_seq"].as_u64(), body["last_seq"].as_u64()), (200, Some(1), Some(1)), "{body}");
    let (status, body) = sidecar.post("{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n");
    assert_eq!((status, body["accepted"].as_u64(), body["last_seq"].as_u64()), (200, Some(3), Some(4)), "{body}");
    let (status, body) = sidecar.post("{\"n\":5}\n[1,2]\n");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("record 2 is a JSON array"), "{body}");

    // A followed file: appends, a rotation by rename, then a truncation.
    append(&app_log, "{\"n\":5}\n{\"n\":6,\"pad\":\"................\"}\n");
    wait_until("6 records", || lines_of(&out).len() >= 6);
    std::fs::rename(&app_log, root.join("app.log.1")).unwrap();
    append(&root.join("app.log.1"), "{\"n\":7}\n");
    append(&app_log, "{\"n\":8,\"pad\":\"................................\"}\n");
    wait_until("8 records", || lines_of(&out).len() >= 8);
    std::fs::write(&app_log, "{\"n\":9}\n").unwrap();
    wait_until("9 records", || lines_of(&out).len() >= 9);

    let lines = lines_of(&out);
    let ns: Vec<i64> = lines.iter().map(|l| field(l, "record")["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (1..=9).collect::<Vec<_>>(), "every record exactly once, in order");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(field(l, "seq"), i as u64 + 1);
        assert_eq!(field(l, "tenant"), "acme");
        assert_eq!(field(l, "namespace"), "acme-calls");
        assert_eq!(field(l, "pod"), "ivr-0");
        assert_eq!(field(l, "container"), "app");
        assert_eq!(field(l, "key_id"), "k1");
        assert!(field(l, "time").as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(field(&lines[0], "prev"), "0".repeat(64));

    let ok = verify(&out, Some(&keys));
    assert!(ok.status.success(), "verify failed: {}", text(&ok.stderr));
    let summary = text(&ok.stdout);
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(summary.starts_with("OK: 9 records in 1 chain"), "{summary}");

    // Tampered copies: an edit, a removal, a reorder, an insertion.
    let check_broken = |name: &str, lines: &[String], want: &str| {
        let path = root.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let res = verify(&path, Some(&keys));
        let err = text(&res.stderr);
        assert!(!res.status.success(), "{name} passed verification");
        assert!(err.contains(want), "{name}: expected {want:?} in {err:?}");
    };
    let mut edited = lines.clone();
    edited[4] = edited[4].replace("\"n\":5", "\"n\":50");
    check_broken("edited.jsonl", &edited, "line 5 (seq 5): signature mismatch");
    let mut removed = lines.clone();
    removed.remove(2);
    check_broken("removed.jsonl", &removed, "line 3 (seq 4)");
    let mut reordered = lines.clone();
    reordered.swap(5, 6);
    check_broken("reordered.jsonl", &reordered, "line 6 (seq 7)");
    let mut inserted = lines.clone();
    inserted.insert(3, lines[7].clone());
    check_broken("inserted.jsonl", &inserted, "line 4 (seq 8)");

    // Crash and restart: the chain continues, the file is not read again.
    sidecar.kill();
    let sidecar = Sidecar::start(root, &keys, &["--sink", &sink, "--follow", &follow]);
    let (status, body) = sidecar.post(r#"{"n":10}"#);
    assert_eq!((status, body["first_seq"].as_u64()), (200, Some(10)), "{body}");
    wait_until("10 records", || lines_of(&out).len() >= 10);

    // Key rotation while running: new records carry the new key id.
    write_key(&keys, "k2", 2);
    std::fs::write(keys.join("audit-key-id"), "k2").unwrap();
    wait_until("the rotated key", || {
        let (status, _) = sidecar.post(r#"{"n":11}"#);
        assert_eq!(status, 200);
        wait_until("the record", || lines_of(&out).last().is_some_and(|l| field(l, "record")["n"] == 11));
        lines_of(&out).last().is_some_and(|l| field(l, "key_id") == "k2")
    });
    let status = sidecar.terminate();
    assert!(status.success(), "sidecar exit on SIGTERM: {status}");

    let lines = lines_of(&out);
    assert_eq!(
        lines.iter().filter(|l| field(l, "record")["n"] == 9).count(),
        1,
        "followed file was read again after restart"
    );
    let ok = verify(&out, Some(&keys));
    assert!(ok.status.success(), "verify after restart and rotation failed: {}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("key ids k1, k2"), "{}", text(&ok.stdout));

    // Only the new key: the first record signed with k1 is named.
    let new_only = key_dir(root, "keys-new-only", &[("k2", 2)], "k2");
    let res = verify(&out, Some(&new_only));
    assert!(!res.status.success());
    assert!(
        text(&res.stderr).contains("line 1 (seq 1): signed with key id \"k1\", which is not in the key directory"),
        "{}",
        text(&res.stderr)
    );
    // From standard input too.
    let res = Command::new(BIN)
        .args(["audit", "verify", "--keys"])
        .arg(&keys)
        .arg("-")
        .stdin(std::fs::File::open(&out).unwrap())
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", text(&res.stderr));
}

/// A SIEM on 127.0.0.1: stores every POSTed line; can be stopped and
/// restarted on the same port, and told to lose its next answer.
struct Siem {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    lose_next_answer: Arc<Mutex<bool>>,
    /// Answers still to be held back this long after storing the batch (a SIEM slower than the sink timeout).
    slow_answers: Arc<Mutex<(u32, Duration)>>,
    /// The only `Authorization` value answered with 2xx (others get 401).
    token: Arc<Mutex<String>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    running: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

/// A TLS listener for axum: the SIEM behind https.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that rejects our certificate just fails its handshake.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it;
/// returns the CA's PEM file and the server's TLS acceptor.
fn tls_siem_identity(root: &Path, name: &str) -> (PathBuf, tokio_rustls::TlsAcceptor) {
    use tokio_rustls::rustls;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let ca_file = root.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    (ca_file, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Siem {
    fn new(port: u16) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        Self {
            rt,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            received: Arc::default(),
            lose_next_answer: Arc::default(),
            slow_answers: Arc::default(),
            token: Arc::new(Mutex::new("Bearer siem-token".into())),
            tls: None,
            running: None,
        }
    }

    fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    fn start(&mut self) {
        use axum::http::{HeaderMap, StatusCode};
        let received = self.received.clone();
        let lose = self.lose_next_answer.clone();
        let slow = self.slow_answers.clone();
        let token = self.token.clone();
        let app = axum::Router::new().route(
            "/ingest",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let received = received.clone();
                let lose = lose.clone();
                let slow = slow.clone();
                let token = token.lock().unwrap().clone();
                async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(token.as_str()) {
                        return StatusCode::UNAUTHORIZED;
                    }
                    received.lock().unwrap().extend(body.lines().map(str::to_string));
                    // Stored, but the answer is "lost": the sidecar must send it again.
                    if std::mem::take(&mut *lose.lock().unwrap()) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let delay = {
                        let mut slow = slow.lock().unwrap();
                        (slow.0 > 0).then(|| {
                            slow.0 -= 1;
                            slow.1
                        })
                    };
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    StatusCode::OK
                }
            }),
        );
        let addr = self.addr;
        let listener = self.rt.block_on(async move {
            let deadline = Instant::now() + WAIT;
            loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => return l,
                    Err(e) => assert!(Instant::now() < deadline, "cannot bind the SIEM to {addr}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = rx.await;
        };
        let task = match self.tls.clone() {
            Some(acceptor) => self.rt.spawn(async move {
                let listener = TlsListener { tcp: listener, acceptor };
                let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
            }),
            None => self.rt.spawn(async move {
                let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
            }),
        };
        self.running = Some((tx, task));
    }

    fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            self.rt.block_on(async { tokio::time::timeout(WAIT, task).await }).expect("SIEM stops").unwrap();
        }
    }

    fn lines(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Distinct records by seq; panics if two copies of a seq differ.
    fn by_seq(&self) -> BTreeMap<u64, String> {
        let mut out = BTreeMap::new();
        for line in self.lines() {
            let seq = field(&line, "seq").as_u64().unwrap();
            if let Some(old) = out.insert(seq, line.clone()) {
                assert_eq!(old, line, "two different lines carry seq {seq}");
            }
        }
        out
    }
}

/// A sidecar shipping to `siem` with its bearer token, retrying fast, plus `extra` flags.
fn sidecar_to(root: &Path, keys: &Path, siem: &Siem, extra: &[&str]) -> Sidecar {
    let token = root.join("siem-token");
    std::fs::write(&token, "Bearer siem-token\n").unwrap();
    let sink = format!("http://{}/ingest", siem.addr);
    let header = format!("Authorization={}", token.display());
    let mut args =
        vec!["--sink", &sink, "--sink-header-file", &header, "--retry-initial", "50ms", "--retry-max", "300ms"];
    args.extend_from_slice(extra);
    Sidecar::start(root, keys, &args)
}

/// Checks that the SIEM holds records 1..=n once each, in order, and that they verify; the verifier's output.
fn assert_delivered(siem: &Siem, root: &Path, keys: &Path, n: u64) -> Output {
    let distinct = siem.by_seq();
    assert_eq!(distinct.keys().copied().collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
    for (seq, line) in &distinct {
        assert_eq!(field(line, "record")["n"].as_u64(), Some(*seq), "records keep their order");
    }
    let path = root.join("siem.jsonl");
    std::fs::write(&path, distinct.values().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let ok = verify(&path, Some(keys));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    ok
}

#[test]
fn a_siem_that_stops_and_restarts_mid_stream_gets_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = key_dir(root, "keys", &[("k1", 1)], "k1");
    let mut siem = Siem::new(free_port());
    siem.start();
    let sidecar = sidecar_to(root, &keys, &siem, &[]);

    for n in 1..=20 {
        assert_eq!(sidecar.post(&format!("{{\"n\":{n}}}")).0, 200);
    }
    wait_until("20 records at the SIEM", || siem.by_seq().len() >= 20);

    siem.stop();
    for n in 21..=35 {
        assert_eq!(sidecar.post(&format!("{{\"n\":{n}}}")).0, 200, "the sidecar spools while the SIEM is down");
    }
    let batch: String = (36..=50).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    assert_eq!(sidecar.post(&batch).0, 200);
    wait_until("a logged delivery failure", || sidecar.stderr_text().contains("sink did not take"));

    // Back up, but the first answer is lost after the batch was stored.
    *siem.lose_next_answer.lock().unwrap() = true;
    siem.start();
    wait_until("all 50 records at the SIEM", || siem.by_seq().len() >= 50);

    let ok = assert_delivered(&siem, root, &keys, 50);
    let all = siem.lines();
    assert!(all.len() > 50, "the lost answer should have caused byte-identical duplicates");
    // Duplicates are whole re-sent batches, so first arrivals are in seq order.
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<u64> = all.iter().map(|l| field(l, "seq").as_u64().unwrap()).filter(|s| seen.insert(*s)).collect();
    assert_eq!(firsts, (1..=50).collect::<Vec<_>>());
    assert!(text(&ok.stdout).starts_with("OK: 50 records"));
    let metrics = request(sidecar.addr, "GET", "/metrics", "").unwrap().1;
    assert!(metrics.contains("bulkhead_audit_delivered_lines_total"), "{metrics}");
    drop(sidecar);
    siem.stop();
}

#[test]
fn a_siem_slower_than_the_sink_timeout_gets_every_record_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = key_dir(root, "keys", &[("k1", 1)], "k1");
    let mut siem = Siem::new(free_port());
    // Three answers come after 2 s, well past the sidecar's 300 ms timeout.
    *siem.slow_answers.lock().unwrap() = (3, Duration::from_secs(2));
    siem.start();
    let sidecar = sidecar_to(root, &keys, &siem, &["--sink-timeout", "300ms"]);
    for n in 1..=20 {
        assert_eq!(sidecar.post(&format!("{{\"n\":{n}}}")).0, 200, "a slow SIEM never blocks the application");
    }
    wait_until("a logged sink timeout", || sidecar.stderr_text().contains("did not answer within"));
    // Every slow answer was met with a retry, and the records all arrived.
    wait_until("the slow answers used up and all 20 records at the SIEM", || {
        siem.slow_answers.lock().unwrap().0 == 0 && siem.by_seq().len() >= 20
    });
    assert_delivered(&siem, root, &keys, 20);
    drop(sidecar);
    siem.stop();
}

#[test]
fn a_full_spool_refuses_new_records_loudly_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = key_dir(root, "keys", &[("k1", 1)], "k1");
    let token = root.join("siem-token");
    std::fs::write(&token, "Bearer siem-token").unwrap();
    // The SIEM's port, with nothing listening yet: connections are refused.
    let mut siem = Siem::new(free_port());
    let sink = format!("http://{}/ingest", siem.addr);
    let header = format!("Authorization={}", token.display());
    let sidecar = Sidecar::start(
        root,
        &keys,
        &[
            "--sink",
            &sink,
            "--sink-header-file",
            &header,
            "--spool-max-bytes",
            "4096",
            "--retry-initial",
            "50ms",
            "--retry-max",
            "200ms",
        ],
    );

    let record = |n: u64| format!("{{\"n\":{n},\"detail\":\"{}\"}}", "x".repeat(100));
    let mut accepted = 0u64;
    let mut refused = None;
    for n in 1..=200u64 {
        let (status, body) = sidecar.post(&record(n));
        match status {
            200 => accepted += 1,
            _ => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("a 4 KiB spool must fill up");
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("spool is full"), "{body}");
    assert!(accepted >= 5, "only {accepted} records fitted in 4 KiB");
    let (_, raw) = request(sidecar.addr, "POST", "/v1/records", &record(999)).unwrap();
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");

    // Loud: an ERROR log line and counters.
    wait_until("the spool-full error line", || {
        sidecar.stderr_text().lines().any(|l| l.contains("\"ERROR\"") && l.contains("audit spool is full"))
    });
    let metrics = request(sidecar.addr, "GET", "/metrics", "").unwrap().1;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(counter("bulkhead_audit_refused_lines_total") >= 2, "{metrics}");
    assert!(counter("bulkhead_audit_spool_full_total") >= 1, "{metrics}");
    assert_eq!(counter("bulkhead_audit_delivered_lines_total"), 0, "{metrics}");

    // The SIEM comes up: everything accepted arrives, none of the refused.
    siem.start();
    wait_until("the spooled records at the SIEM", || siem.by_seq().len() as u64 >= accepted);
    let (status, body) = sidecar.post(r#"{"n":"after"}"#);
    assert_eq!((status, body["first_seq"].as_u64()), (200, Some(accepted + 1)), "{body}");
    wait_until("the last record", || siem.by_seq().len() as u64 > accepted);
    let distinct = siem.by_seq();
    assert_eq!(distinct.keys().copied().collect::<Vec<_>>(), (1..=accepted + 1).collect::<Vec<_>>());
    let path = root.join("siem.jsonl");
    std::fs::write(&path, distinct.values().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let ok = verify(&path, Some(&keys));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    drop(sidecar);
    siem.stop();
}

#[test]
fn an_https_siem_is_reached_with_the_given_ca_and_refused_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = key_dir(root, "keys", &[("k1", 1)], "k1");
    let token = root.join("siem-token");
    std::fs::write(&token, "Bearer siem-token").unwrap();
    let (ca_file, acceptor) = tls_siem_identity(root, "siem");
    let (other_ca, _) = tls_siem_identity(root, "other");
    let mut siem = Siem::new(free_port()).with_tls(acceptor);
    siem.start();
    let sink = format!("https://{}/ingest", siem.addr);
    let header = format!("Authorization={}", token.display());

    // Signed by a CA the sidecar was not told to trust: nothing is delivered, and it says why.
    let wrong_root = root.join("wrong");
    std::fs::create_dir(&wrong_root).unwrap();
    let wrong_ca = other_ca.display().to_string();
    let args = ["--sink", &sink, "--sink-ca", &wrong_ca, "--sink-header-file", &header, "--retry-max", "200ms"];
    let wrong = Sidecar::start(&wrong_root, &keys, &args);
    assert_eq!(wrong.post(r#"{"n":0}"#).0, 200);
    wait_until("the TLS failure in the log", || {
        let log = wrong.stderr_text();
        log.contains("sink did not take") && log.to_lowercase().contains("certificate")
    });
    assert!(siem.lines().is_empty(), "a sidecar that does not trust the SIEM's CA sent records");
    drop(wrong);

    let ca = ca_file.display().to_string();
    let args = ["--sink", &sink, "--sink-ca", &ca, "--sink-header-file", &header];
    let sidecar = Sidecar::start(root, &keys, &args);
    assert_eq!(sidecar.post(r#"{"n":1}"#).0, 200);
    assert_eq!(sidecar.post("{\"n\":2}\n{\"n\":3}\n").0, 200);
    wait_until("3 records over https", || siem.by_seq().len() >= 3);
    let distinct = siem.by_seq();
    assert_eq!(distinct.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    let path = root.join("siem.jsonl");
    std::fs::write(&path, distinct.values().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let ok = verify(&path, Some(&keys));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    drop(sidecar);
    siem.stop();
}

/// Writes `files` into `dir` the way the kubelet fills a projected volume: a timestamped
/// directory, `..data` pointing at it, and each file a symlink through `..data`. Called again,
/// it swaps `..data` atomically, as the kubelet does when a Secret changes.
fn kubelet_projection(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(dir).unwrap();
    let version = format!("..2026_01_01_00_00_{generation:02}.000000001");
    std::fs::create_dir(dir.join(&version)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&version).join(name), content).unwrap();
        if !dir.join(name).exists() {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
    symlink(&version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

#[test]
fn the_args_the_webhook_injects_reach_an_https_siem_and_follow_a_rotated_token() {
    use bulkhead::admission::facts::TenantFacts;
    use bulkhead::admission::mutate::{SIDECAR_COMMAND, SINK_DIR, SidecarConfig, sidecar_args};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = key_dir(root, "keys", &[("k1", 1)], "k1");
    let (ca_file, acceptor) = tls_siem_identity(root, "siem");
    let mut siem = Siem::new(free_port()).with_tls(acceptor);
    siem.start();

    // The sink part of exactly what the mutating webhook gives the sidecar, the mount moved under `root`.
    let tenant: bulkhead::api::Tenant = serde_json::from_value(serde_json::json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
        "spec": {"namespaces": [{"name": "calls"}], "audit": {"sink": format!("https://{}/ingest", siem.addr),
            "sinkCA": {"configMap": "trust-bundle", "key": "ca.crt"},
            "sinkHeaders": [{"name": "Authorization", "secret": "siem-token", "key": "header"}]}}
    }))
    .unwrap();
    let config = bulkhead::plan::Config::default();
    let facts = TenantFacts::new(&tenant, &config).unwrap();
    let injected = sidecar_args(&facts, "app", &SidecarConfig::default());
    // The pod runs this program: the image's copy of the one built here.
    assert_eq!(Path::new(SIDECAR_COMMAND).file_name(), Path::new(SIDECAR).file_name());
    let mount = root.join("audit-sink");
    let mut args = Vec::new();
    // Flag and value pairs.
    for pair in injected.chunks(2).filter(|p| p[0].starts_with("--sink")) {
        args.push(pair[0].clone());
        args.push(pair[1].replace(SINK_DIR, &mount.display().to_string()));
    }
    assert_eq!(args.iter().filter(|a| a.starts_with("--sink")).count(), 3, "{injected:?}");
    let ca = std::fs::read_to_string(&ca_file).unwrap();
    kubelet_projection(&mount, 1, &[("ca.pem", &ca), ("header-authorization", "Bearer siem-token\n")]);
    args.extend(["--retry-initial", "50ms", "--retry-max", "200ms"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sidecar = Sidecar::start(root, &keys, &args);

    assert_eq!(sidecar.post(r#"{"n":1}"#).0, 200);
    wait_until("record 1 over https with the token", || !siem.by_seq().is_empty());

    // The SIEM rotates its token first: deliveries fail until the kubelet swaps the Secret's file.
    *siem.token.lock().unwrap() = "Bearer rotated-token".into();
    assert_eq!(sidecar.post(r#"{"n":2}"#).0, 200);
    wait_until("the refused delivery in the log", || sidecar.stderr_text().contains("HTTP 401"));
    kubelet_projection(&mount, 2, &[("ca.pem", &ca), ("header-authorization", "Bearer rotated-token\n")]);
    wait_until("record 2 with the rotated token, no restart", || siem.by_seq().len() >= 2);
    assert_eq!(siem.by_seq().keys().copied().collect::<Vec<_>>(), [1, 2]);
    let log = sidecar.stderr_text();
    assert!(!log.contains("siem-token") && !log.contains("rotated-token"), "a header value was logged: {log}");
    drop(sidecar);
    siem.stop();
}
