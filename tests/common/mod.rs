//! Shared harness of the integration tests: the real local control plane
//! (started on demand), clients (admin and impersonated), the Tenant CRD,
//! an operator process per test, and polling helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The admin kubeconfig the local control plane writes.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("BULKHEAD_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("e2e/.cluster/kubeconfig"))
}

static CLUSTER: OnceLock<()> = OnceLock::new();

/// Makes sure the local control plane runs: `e2e/cluster up` is idempotent
/// and returns at once when it already does. Tests never skip silently.
pub fn ensure_cluster() {
    CLUSTER.get_or_init(|| {
        let status = Command::new(repo().join("e2e/cluster"))
            .arg("up")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .expect("cannot run e2e/cluster; the integration tests need the local control plane");
        assert!(
            status.success(),
            "the local control plane could not be started: run `e2e/cluster up` by hand to see why"
        );
    });
}

async fn config() -> Config {
    ensure_cluster();
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig readable");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig valid")
}

/// A client with the cluster admin's rights.
pub async fn admin() -> Client {
    Client::try_from(config().await).expect("client")
}

/// A client that impersonates `user` in `groups` (plus system:authenticated),
/// so the apiserver's real RBAC decides.
pub async fn as_user(user: &str, groups: &[&str]) -> Client {
    let mut cfg = config().await;
    cfg.auth_info.impersonate = Some(user.to_string());
    let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    g.push("system:authenticated".into());
    cfg.auth_info.impersonate_groups = Some(g);
    Client::try_from(cfg).expect("client")
}

/// A client that impersonates a ServiceAccount.
pub async fn as_service_account(namespace: &str, name: &str) -> Client {
    as_user(
        &format!("system:serviceaccount:{namespace}:{name}"),
        &["system:serviceaccounts", &format!("system:serviceaccounts:{namespace}")],
    )
    .await
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses: `prefix` plus a short suffix.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let pid = std::process::id();
    let mix = (t as u64) ^ ((pid as u64) << 20) ^ ((n as u64) << 40);
    format!("{prefix}{:06x}", mix % 0xff_ffff)
}

/// Polls `f` every 100 ms until it returns Some, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Namespace the test operators keep key sources in.
pub const OPERATOR_NAMESPACE: &str = "bulkhead-system";

/// Installs (server-side applies) the Tenant CRD from `crds/`, waits until it
/// is served, and makes sure the operator's namespace exists.
pub async fn install_crd(client: &Client) {
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}});
    nss.patch(OPERATOR_NAMESPACE, &PatchParams::apply("bulkhead-tests"), &Patch::Apply(&ns))
        .await
        .expect("operator namespace");
    let text = std::fs::read_to_string(repo().join("crds/bulkhead.dev_tenants.yaml")).expect("crds/ present");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD parses");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("CRD has a name");
    // Tolerate a CRD left terminating by an earlier test: wait for it to go first.
    wait_for("an old Tenant CRD to finish deleting", Duration::from_secs(60), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            match api.get_opt(&name).await {
                Ok(Some(c)) if c.metadata.deletion_timestamp.is_some() => None,
                Ok(_) => Some(()),
                Err(_) => None,
            }
        }
    })
    .await;
    api.patch(&name, &PatchParams::apply("bulkhead-tests").force(), &Patch::Apply(&crd)).await.expect("CRD applies");
    wait_for("the Tenant CRD to be established", Duration::from_secs(30), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let crd = api.get(&name).await.ok()?;
            let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;
}

/// An operator process reconciling only the Tenants labelled with its shard.
pub struct Operator {
    child: Option<Child>,
    /// Label selector value of this operator's Tenants.
    pub shard: String,
    /// Where its stdout (the security event stream) goes.
    pub stdout: PathBuf,
    /// Where its logs go.
    pub stderr: PathBuf,
    extra_env: Vec<(String, String)>,
    extra_args: Vec<String>,
    binary: PathBuf,
}

/// Label that assigns a Tenant to one test's operator.
pub const SHARD_LABEL: &str = "e2e.bulkhead.dev/shard";

impl Operator {
    /// Starts `bulkhead run` for Tenants labelled `SHARD_LABEL=<shard>`.
    pub fn start(shard: &str) -> Self {
        Self::start_with(shard, &[])
    }

    /// Starts the operator with extra environment (e.g. RUST_LOG).
    pub fn start_with(shard: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(shard, Self::dir_of(shard), env, &[])
    }

    fn dir_of(shard: &str) -> &str {
        if shard.is_empty() { "all" } else { shard }
    }

    /// [`Operator::start_with`] for a benchmark: `BENCH_OPERATOR_BIN`, when
    /// set, names the binary to measure (the static musl build the image
    /// ships, or a profiler wrapping it); tests always run this build's own.
    pub fn start_bench(shard: &str, env: &[(&str, &str)]) -> Self {
        let mut op = Self::prepare(shard, Self::dir_of(shard), env, &[]);
        if let Some(bin) = std::env::var_os("BENCH_OPERATOR_BIN") {
            op.binary = bin.into();
        }
        op.spawn();
        op
    }

    fn launch(shard: &str, dir: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut op = Self::prepare(shard, dir, env, args);
        op.spawn();
        op
    }

    fn prepare(shard: &str, dir: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        ensure_cluster();
        let dir = std::env::temp_dir().join(format!("bulkhead-e2e-{dir}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            child: None,
            shard: shard.to_string(),
            stdout: dir.join("security.jsonl"),
            stderr: dir.join("operator.log"),
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            binary: env!("CARGO_BIN_EXE_bulkhead").into(),
        }
    }

    /// Starts an operator for every Tenant in the cluster (for tests that
    /// run alone, such as deleting the CRD).
    pub fn start_unsharded() -> Self {
        Self::start_with("", &[])
    }

    fn spawn(&mut self) {
        let append = |p: &PathBuf| std::fs::OpenOptions::new().create(true).append(true).open(p).expect("log file");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run");
        if !self.shard.is_empty() {
            cmd.arg("--tenant-selector").arg(format!("{SHARD_LABEL}={}", self.shard));
        }
        cmd.arg("--log-format")
            .arg("text")
            .env("KUBECONFIG", kubeconfig_path())
            .env("POD_NAME", format!("e2e-{}", self.shard))
            .stdin(Stdio::null())
            .stdout(append(&self.stdout))
            .stderr(append(&self.stderr));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.args(&self.extra_args);
        self.child = Some(cmd.spawn().expect("operator starts"));
    }

    /// The operator's process id while it runs (benchmarks read its CPU time and memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the operator at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again after [`Operator::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every security event line emitted so far, parsed.
    pub fn security_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The operator's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Operator {
    /// Starts one of several replicas of the same shard, with extra `run`
    /// arguments; each replica logs to its own files.
    pub fn start_replica(shard: &str, replica: &str, args: &[&str]) -> Self {
        Self::launch(shard, &format!("{shard}-{replica}"), &[], args)
    }

    /// [`Operator::start_replica`] with extra environment (e.g. a KUBECONFIG with other rights).
    pub fn start_replica_with(shard: &str, replica: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(shard, &format!("{shard}-{replica}"), env, args)
    }

    /// The address of the operator's metrics/probe server, once it has logged it.
    pub fn metrics_addr(&self) -> Option<String> {
        let logs = self.logs();
        // The last one: after a restart the log holds every earlier process's (stale) address too.
        let line = logs.lines().rev().find(|l| l.contains("operations server listening"))?;
        let tail = &line[line.find("addr=")? + 5..];
        let clean: String = tail.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
        (!clean.is_empty()).then_some(clean)
    }

    /// GETs `path` from the operator's metrics/probe server: status code and body.
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics_addr()?, path).await
    }

    /// The operator's current value of `metric` (the sum over every label set), from /metrics.
    pub async fn metric(&self, metric: &str) -> Option<f64> {
        let (status, body) = self.http_get("/metrics").await?;
        (status == 200).then(|| metric_sum(&body, metric))
    }

    /// Writes the operator counted for one kind and verb (`bulkhead_api_writes_total`).
    pub async fn writes(&self, kind: &str, verb: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await.expect("the operator's /metrics answers");
        let labels = format!("kind=\"{kind}\",verb=\"{verb}\"");
        let series: Vec<&str> = body.lines().filter(|l| l.contains(&labels)).collect();
        metric_sum(&series.join("\n"), "bulkhead_api_writes_total")
    }

    /// Whether the operator process is still alive (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until `bulkhead_api_writes_total` has not moved for `quiet` (polled every 250 ms),
    /// panicking after `timeout`; the settled value.
    pub async fn settled_writes(&self, quiet: Duration, timeout: Duration) -> f64 {
        let start = Instant::now();
        let mut last: Option<(f64, Instant)> = None;
        loop {
            let now = Instant::now();
            match (self.metric("bulkhead_api_writes_total").await, last) {
                (Some(v), Some((prev, since))) if v == prev => {
                    if now.duration_since(since) >= quiet {
                        return v;
                    }
                }
                (Some(v), _) => last = Some((v, now)),
                (None, _) => last = None,
            }
            assert!(start.elapsed() < timeout, "the operator's writes did not settle within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit; its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// The sum of every sample of `metric` (any labels) in an OpenMetrics/Prometheus text exposition.
pub fn metric_sum(exposition: &str, metric: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(metric).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A minimal HTTP/1.0 GET on loopback (no client library needed): status code and body.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), io).await.ok()?
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Tenant manifest `yaml` with its name replaced and the shard label added.
pub fn tenant_from(yaml: &str, name: &str, shard: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_yaml::from_str(yaml).expect("tenant yaml");
    v["metadata"]["name"] = serde_json::Value::String(name.into());
    v["metadata"]["labels"] = serde_json::json!({ SHARD_LABEL: shard });
    v
}

/// Server-side applies a Tenant manifest (as JSON) with field manager `e2e`.
pub async fn apply_tenant(client: &Client, tenant: &serde_json::Value) {
    let name = tenant["metadata"]["name"].as_str().expect("tenant name").to_string();
    let mut body = tenant.clone();
    body["apiVersion"] = serde_json::json!("bulkhead.dev/v1alpha1");
    body["kind"] = serde_json::json!("Tenant");
    Api::<bulkhead::api::Tenant>::all(client.clone())
        .patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("Tenant {name} rejected: {e}"));
}

/// Waits until `check` accepts the Tenant, naming `what` on timeout.
pub async fn wait_tenant<T>(
    client: &Client,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&bulkhead::api::Tenant) -> Option<T>,
) -> T {
    let api: Api<bulkhead::api::Tenant> = Api::all(client.clone());
    let check = &check;
    wait_for(&format!("Tenant {name}: {what}"), timeout, || {
        let api = api.clone();
        async move { check(&api.get(name).await.ok()?) }
    })
    .await
}

/// Deletes a Tenant and waits until its finalizer has run and it is gone.
pub async fn delete_tenant(client: &Client, name: &str) {
    let api: Api<bulkhead::api::Tenant> = Api::all(client.clone());
    let _ = api.delete(name, &kube::api::DeleteParams::default()).await;
    wait_for(&format!("Tenant {name} to be gone"), Duration::from_secs(90), || {
        let api = api.clone();
        async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
    })
    .await;
}

/// Path of the independent NetworkPolicy oracle (`e2e/oracle`), building it if needed.
pub fn oracle() -> String {
    if let Ok(path) = std::env::var("BULKHEAD_NETPOL_ORACLE") {
        return path;
    }
    let out = Command::new(repo().join("e2e/oracle"))
        .arg("build")
        .stderr(Stdio::inherit())
        .output()
        .expect("e2e/oracle runs");
    assert!(out.status.success(), "building the NetworkPolicy oracle failed");
    String::from_utf8(out.stdout).expect("utf-8 path").lines().last().expect("oracle path").to_string()
}

/// Sets one annotation on a Tenant (merge patch).
pub async fn annotate_tenant(client: &Client, name: &str, key: &str, value: &str) {
    Api::<bulkhead::api::Tenant>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot annotate Tenant {name}: {e}"));
}

/// Runs the independent NetworkPolicy oracle on `input` and returns its
/// answer, after checking it ran and names the engine it used.
pub fn run_oracle(input: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(oracle())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oracle starts");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("oracle input");
    let out = child.wait_with_output().expect("oracle output");
    assert!(out.status.success(), "oracle failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oracle JSON");
    assert!(v["engine"].as_str().is_some_and(|e| e.contains("kube-network-policies")), "engine: {}", v["engine"]);
    v
}
