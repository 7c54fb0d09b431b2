//! The audit sidecar at load: the real `bulkhead-audit-sidecar` process
//! (BENCH_SIDECAR_BIN, e.g. the static musl binary the image ships, else
//! this checkout's build), fed over its loopback intake until it is
//! saturated, its sealed output delivered to a file sink and proved with
//! `bulkhead audit verify`. Reports records/s end to end and per CPU-second,
//! its RSS idle, at peak and after the load, and the sealing and
//! verification speed of the chain alone in one thread (`bulkhead audit
//! bench`, BENCH_OPERATOR_BIN, else this checkout's `bulkhead`).
//! `cargo bench --bench sidecar` (or `make bench`); no cluster needed.
//!
//! Environment: BENCH_SIDECAR_SECS (default 10, the closed loop),
//! BENCH_SIDECAR_CONNECTIONS (default 4), BENCH_SIDECAR_BATCH (default 20
//! records per POST), BENCH_OUT (default bench-results/).

mod measure;
use measure::{cpu_seconds, env_or, machine, percentile, status_kib};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The sidecar program pods run.
fn sidecar_binary() -> String {
    std::env::var("BENCH_SIDECAR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead-audit-sidecar").to_string())
}

/// The CLI: `audit verify` and `audit bench`.
fn cli_binary() -> String {
    std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead").to_string())
}

/// One record as a contact-center application writes it: who touched which
/// call recording, why, and what was decided (~480 bytes of JSON).
fn record(conn: usize, n: u64) -> String {
    json!({
        "event": "recording.accessed",
        "call_id": format!("c-{conn}-{n:09}"),
        "queue": "billing-de",
        "agent": "agent-0172@acme.example",
        "actor": {"user": "supervisor-0031@acme.example", "role": "supervisor", "session": "s-5f1c2a9e7b3d4e60"},
        "resource": format!("recordings/2026/11/28/c-{conn}-{n:09}.opus"),
        "decision": "allow",
        "reason": "quality review requested by ticket QA-48213",
        "client_ip": "10.42.7.19",
        "card": "**** **** **** 4242",
        "retention_days": 90,
        "ts": "2026-11-28T12:00:00.123Z"
    })
    .to_string()
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// RSS now: total, anonymous (heap and stacks), file-backed (the binary's pages).
fn rss(pid: u32) -> Value {
    json!({
        "rss_mib": mib(status_kib(pid, "VmRSS:")),
        "anonymous_mib": mib(status_kib(pid, "RssAnon:")),
        "file_mib": mib(status_kib(pid, "RssFile:")),
    })
}

struct Sidecar {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, keys: &Path, sink: &Path) -> Sidecar {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(sidecar_binary())
        .arg("--keys")
        .arg(keys)
        .args(["--listen", &addr.to_string()])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--sink")
        .arg(format!("file:{}", sink.display()))
        .args(["--container", "ivr", "--tenant", "acme", "--namespace", "acme-calls", "--pod", "ivr-0"])
        .args(["--log-format", "json", "--log-level", "warn"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sidecar.stderr")).expect("stderr file"))
        .spawn()
        .expect("the sidecar starts");
    let sidecar = Sidecar { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = || Conn::open(addr).and_then(|mut c| c.get("/healthz")).is_ok_and(|(status, _)| status == 200);
    while !healthy() {
        assert!(Instant::now() < deadline, "the sidecar did not come up: see {}/sidecar.stderr", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    sidecar
}

/// A keep-alive HTTP/1.1 connection to the intake.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        write!(
            self.writer,
            "{method} {path} HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        self.writer.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }

    fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        self.send("GET", path, b"")
    }
}

/// What one connection saw: records accepted, batches refused (503, spool
/// full), and the latency of every accepted POST.
#[derive(Default)]
struct Seen {
    accepted: u64,
    refused: u64,
    latencies: Vec<Duration>,
}

/// Posts batches on one connection until `until`.
fn load(addr: SocketAddr, conn_no: usize, batch: u64, until: Instant) -> Seen {
    let mut conn = Conn::open(addr).expect("connect to the intake");
    let mut seen = Seen::default();
    let mut n = 0;
    while Instant::now() < until {
        let body: String = (0..batch).map(|i| record(conn_no, n + i) + "\n").collect();
        n += batch;
        let sent = Instant::now();
        let (status, answer) = conn.send("POST", "/v1/records", body.as_bytes()).expect("POST to the intake");
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        match status {
            200 => {
                seen.latencies.push(sent.elapsed());
                seen.accepted += answer["accepted"].as_u64().unwrap_or(0);
            }
            // A full spool pushes back (Retry-After), as an application would see it.
            503 => {
                seen.refused += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => panic!("the intake answered {status}: {answer}"),
        }
    }
    seen
}

/// Complete lines of a growing file, counted from where the last look
/// stopped: while the sidecar still delivers, rereading hundreds of MB every
/// 50 ms would take the CPU its throughput is measured on.
struct Lines {
    path: PathBuf,
    offset: u64,
    count: u64,
}

impl Lines {
    fn of(path: &Path) -> Self {
        Lines { path: path.to_path_buf(), offset: 0, count: 0 }
    }

    fn now(&mut self) -> u64 {
        use std::io::{Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.count;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.count;
        }
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            self.count += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
        self.count
    }
}

/// The real process under load: throughput, CPU and RSS, its output proved.
fn process_bench(dir: &Path) -> Value {
    let secs = env_or("BENCH_SIDECAR_SECS", 10u64);
    let connections = env_or("BENCH_SIDECAR_CONNECTIONS", 4usize).max(1);
    let batch = env_or("BENCH_SIDECAR_BATCH", 20u64).max(1);
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).expect("key dir");
    std::fs::write(keys.join("audit-key.k1"), [7u8; 32]).expect("key");
    std::fs::write(keys.join("audit-key-id"), "k1\n").expect("key id");
    let sink = dir.join("sealed.jsonl");

    let sidecar = start(dir, &keys, &sink);
    let pid = sidecar.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss(pid);

    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let addr = sidecar.addr;
    let workers: Vec<_> = (0..connections).map(|c| std::thread::spawn(move || load(addr, c, batch, until))).collect();
    let mut peak_kib = 0;
    while Instant::now() < until {
        peak_kib = peak_kib.max(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen = Seen::default();
    for w in workers {
        let s = w.join().expect("load thread");
        seen.accepted += s.accepted;
        seen.refused += s.refused;
        seen.latencies.extend(s.latencies);
    }
    let Seen { accepted, refused, mut latencies } = seen;
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delivered = Lines::of(&sink);
    while delivered.now() < accepted {
        assert!(Instant::now() < deadline, "the sink holds {} of {accepted} accepted records", delivered.count);
        peak_kib = peak_kib.max(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let delivered_in = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let peak = mib(peak_kib.max(status_kib(pid, "VmHWM:")));
    std::thread::sleep(Duration::from_secs(5));
    let after = rss(pid);
    drop(sidecar);

    // Every record counted must be in the sink, sealed and signed.
    let proof = Command::new(cli_binary())
        .args(["audit", "verify", "--keys"])
        .arg(&keys)
        .arg(&sink)
        .env_remove("BULKHEAD_AUDIT_KEYS")
        .output()
        .expect("audit verify runs");
    let verdict = String::from_utf8_lossy(&proof.stdout).trim().to_string();
    assert!(proof.status.success(), "the sealed output does not verify: {verdict}");
    assert!(verdict.starts_with(&format!("OK: {accepted} records")), "{verdict}");

    let rate = accepted as f64 / delivered_in;
    let per_cpu = accepted as f64 / cpu.max(0.01);
    println!("sidecar idle: {idle}");
    println!(
        "sidecar under load: {accepted} records ({batch} per POST, {connections} connections, {secs} s) sealed and delivered in {delivered_in:.1} s: {rate:.0} records/s end to end, {per_cpu:.0} records per CPU-second ({cpu:.1} CPU-s); POST p50 {:.2} ms, p99 {:.2} ms; {refused} batches refused (spool full); peak RSS {peak} MiB",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0
    );
    println!("sidecar after the load: {after}; `audit verify`: {verdict}");
    json!({
        "records": accepted,
        "batch": batch,
        "connections": connections,
        "load_seconds": secs,
        "delivered_seconds": delivered_in,
        "records_per_second": rate.round(),
        "records_per_cpu_second": per_cpu.round(),
        "batches_refused": refused,
        "post_ms": {"p50": p50.as_secs_f64() * 1000.0, "p99": p99.as_secs_f64() * 1000.0},
        "cpu_seconds": cpu,
        "rss_idle": idle,
        "rss_peak_mib": peak,
        "rss_after_load": after,
        "verify": verdict,
    })
}

/// Sealing and verification alone, in one thread (`bulkhead audit bench`).
fn chain_bench() -> Value {
    let out = Command::new(cli_binary()).args(["audit", "bench", "--records", "200000"]).output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            println!("chain alone (one thread, `bulkhead audit bench`): {text}");
            json!(text)
        }
        _ => json!(null),
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets without --bench: not a load test then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sidecar benchmark: run it with `cargo bench --bench sidecar` (or `make bench`)");
        return;
    }
    let out_dir = PathBuf::from(
        std::env::var("BENCH_OUT")
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results").display().to_string()),
    );
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let work = std::env::temp_dir().join(format!("bulkhead-sidecar-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let m = machine();
    println!("# bulkhead audit sidecar benchmark — machine: {m}; sidecar: {}", sidecar_binary());
    let process = process_bench(&work);
    let chain = chain_bench();
    let _ = std::fs::remove_dir_all(&work);
    let report =
        json!({"machine": m, "sidecar": sidecar_binary(), "cli": cli_binary(), "process": process, "chain": chain});
    let path = out_dir.join("sidecar.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()).expect("write results");
    println!("\nresults written to {}", path.display());
}
