//! Admission latency and throughput of the pod webhooks over TLS on loopback,
//! measured with a load generator, not the apiserver (issue 9; target: p99
//! under 5 ms at 1,000 requests/s). `cargo bench --bench admission` (or `make bench`).
//!
//! The real operator binary serves the webhooks in local mode against the
//! local control plane, with two tenants in its caches (one PCI-DSS with data
//! residency, one Optional), and the load generator speaks AdmissionReview v1
//! over keep-alive HTTP/1.1 TLS connections that trust the CA the operator
//! published in its webhook configuration. Each hook and variant first runs
//! open-loop at a constant rate, latency counted from the intended send time
//! (so a stall delays every request scheduled behind it, no coordinated
//! omission), then closed-loop at maximum throughput.
//!
//! Environment: BENCH_ADMISSION_RATE (default 1000), BENCH_ADMISSION_SECS
//! (default 10, open loop per variant), BENCH_ADMISSION_MAX_SECS (default 5,
//! closed loop per variant), BENCH_ADMISSION_CONNECTIONS (default 32),
//! BENCH_OUT (default bench-results/), BENCH_KUBECONFIG, BENCH_OPERATOR_BIN
//! (another operator binary, e.g. the musl release build). Needs the local
//! control plane (`e2e/cluster up`).

mod measure;
use measure::{env_or, machine, percentile};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Client;
use kube::api::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

/// The integration tests' harness: cluster start, clients, CRD, operator process, polling.
#[path = "../tests/common/mod.rs"]
mod common;

use common::{Operator, SHARD_LABEL, admin, apply_tenant, install_crd, repo, tenant_from, wait_for};

const SHARD: &str = "bench-admission";
const CONFIGURATION: &str = "bulkhead-bench-admission";
const TARGET_P99: Duration = Duration::from_millis(5);
const PCI: &str = "bench-adm-pci";
const STD: &str = "bench-adm-std";

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// The operator's CPU seconds (0 when it is gone).
fn operator_cpu(op: &Operator) -> f64 {
    op.pid().map(measure::cpu_seconds).unwrap_or(0.0)
}

/// The operator's resident memory in MiB.
fn rss_mib(op: &Operator) -> f64 {
    op.pid().map(|pid| measure::status_kib(pid, "VmRSS:") as f64 / 1024.0).unwrap_or(0.0)
}

/// A contact-center tenant of the bench's shard whose namespace carries the label the webhooks are scoped to.
fn tenant(name: &str, extra: Value) -> Value {
    let mut t = tenant_from("metadata: {name: x}\nspec: {namespaces: []}", name, SHARD);
    t["spec"]["namespaces"] = json!([{"name": "agents", "labels": {SHARD_LABEL: SHARD}}]);
    t["spec"]["deletionPolicy"] = json!("Delete");
    t["spec"]["access"] = json!([{"kind": "User", "name": format!("{name}-admin"), "profile": "admin"}]);
    t["spec"]["images"] = json!({"allowedRegistries": ["registry.acme.example/"]});
    if let (Some(spec), Some(extra)) = (t["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    t
}

fn start_operator() -> Operator {
    let labels = format!("{SHARD_LABEL}={SHARD}");
    Operator::start_bench(
        SHARD,
        &[
            ("BULKHEAD_ADMISSION_LISTEN", "127.0.0.1:0"),
            ("BULKHEAD_ADMISSION_NAME", CONFIGURATION),
            ("BULKHEAD_ADMISSION_NAMESPACE_LABELS", &labels),
            ("BULKHEAD_VERIFY_INTERVAL", "0s"),
        ],
    )
}

/// A pod as a Deployment's ReplicaSet creates it (after the apiserver's defaulting): three containers and an
/// init container, env from values, Secrets, ConfigMaps and the downward API, five volumes, probes, resources
/// and a restricted security context.
fn pod(ns: &str, denied: bool) -> Value {
    let sc = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true, "runAsNonRoot": true});
    let resources = |cpu: &str, mem: &str| json!({"requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem, "ephemeral-storage": "1Gi"}});
    let mut env = vec![
        json!({"name": "TENANT_REGION", "value": "eu-west-1"}),
        json!({"name": "LOG_LEVEL", "value": "info"}),
        json!({"name": "CRM_URL", "value": "https://crm.acme.example/api/v2"}),
        json!({"name": "SIP_TRUNK", "value": "sip:trunk-1.acme.example:5061;transport=tls"}),
        json!({"name": "RECORDING_BUCKET", "value": "s3://acme-recordings-eu-west-1"}),
        json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4317"}),
        json!({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "crm-db", "key": "password"}}}),
        json!({"name": "FEATURE_FLAGS", "valueFrom": {"configMapKeyRef": {"name": "crm-agent", "key": "flags"}}}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}),
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}),
        json!({"name": "MEMORY_LIMIT", "valueFrom": {"resourceFieldRef": {"containerName": "agent", "resource": "limits.memory", "divisor": "1Mi"}}}),
    ];
    env.extend((0..6).map(|i| json!({"name": format!("QUEUE_{i}_WEIGHT"), "value": format!("{}", 10 * (i + 1))})));
    let mounts = json!([
        {"name": "config", "mountPath": "/etc/crm-agent", "readOnly": true},
        {"name": "tls", "mountPath": "/etc/tls", "readOnly": true},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true},
        {"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": true}
    ]);
    let probe = |path: &str| {
        json!({"httpGet": {"path": path, "port": 8080, "scheme": "HTTP"}, "initialDelaySeconds": 5, "periodSeconds": 10,
               "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
    };
    let container = |name: &str, image: &str, env: Value, port: i32| {
        json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "args": ["--config", "/etc/crm-agent/config.yaml", "--listen", format!(":{port}")],
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "env": env, "envFrom": [{"configMapRef": {"name": "crm-agent-env"}}],
            "resources": resources("500m", "512Mi"), "volumeMounts": mounts,
            "livenessProbe": probe("/healthz"), "readinessProbe": probe("/readyz"),
            "securityContext": sc, "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File"})
    };
    let mut spec = json!({
        "initContainers": [{"name": "migrate", "image": "registry.acme.example/crm-agent:4.18.2",
            "imagePullPolicy": "IfNotPresent", "command": ["/app/migrate", "--wait-for-db"],
            "env": [env[6].clone()], "resources": resources("100m", "128Mi"), "securityContext": sc,
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
        "containers": [
            container("agent", "registry.acme.example/crm-agent:4.18.2", json!(env), 8080),
            container("call-recorder", "registry.acme.example/call-recorder:2.3.0", json!(env[..6].to_vec()), 8081),
            container("metrics", "registry.acme.example/metrics-exporter:1.9.1", json!(env[..3].to_vec()), 9090)
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "crm-agent", "defaultMode": 420}},
            {"name": "tls", "secret": {"secretName": "crm-agent-tls", "defaultMode": 288}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}},
            {"name": "podinfo", "downwardAPI": {"defaultMode": 420, "items": [
                {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}}
            ]}}
        ],
        "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"}},
        "serviceAccountName": "default", "serviceAccount": "default", "automountServiceAccountToken": false,
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler", "enableServiceLinks": false, "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "crm-agent"}}}]
    });
    if denied {
        // Host access a compromised CI pipeline might try: node network, a privileged container, the node's disk.
        spec["hostNetwork"] = json!(true);
        spec["containers"][1]["securityContext"]["privileged"] = json!(true);
        spec["volumes"][2] = json!({"name": "tmp", "hostPath": {"path": "/var/lib", "type": "Directory"}});
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "crm-agent-7d9f8b6c5-", "namespace": ns,
            "labels": {"app.kubernetes.io/name": "crm-agent", "app.kubernetes.io/part-of": "contact-center",
                "app.kubernetes.io/version": "4.18.2", "pod-template-hash": "7d9f8b6c5", "tier": "backend"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T09:12:44Z",
                "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "crm-agent-7d9f8b6c5",
                "uid": "9f0e5c52-4c3f-4f0c-8c65-2b7a1d0e6f11", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": spec
    })
}

/// The AdmissionReview the apiserver sends for a pod created by the ReplicaSet controller.
fn review(pod: &Value, uid: &str) -> Bytes {
    let ns = pod["metadata"]["namespace"].clone();
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "3c4b3b8e-0d5e-4f7e-9a53-7c1f6f2d8a90",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    });
    Bytes::from(serde_json::to_vec(&body).expect("review encodes"))
}

/// Where the webhooks listen and whom to trust, from the configuration the operator registered.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    host: String,
    tls: tokio_rustls::TlsConnector,
}

impl Target {
    async fn read(client: &Client) -> Self {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let cc = wait_for("the operator's webhook configuration", Duration::from_secs(90), || {
            let api = api.clone();
            async move {
                let hook = api.get_opt(CONFIGURATION).await.ok()??.webhooks?.into_iter().next()?;
                hook.client_config.ca_bundle.is_some().then_some(hook.client_config)
            }
        })
        .await;
        let url = cc.url.expect("local mode registers a URL");
        let authority = url.trim_start_matches("https://").split('/').next().expect("URL has a host").to_string();
        let addr: std::net::SocketAddr = authority.parse().expect("local mode listens on an IP address");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&cc.ca_bundle.expect("caBundle").0) {
            roots.add(cert.expect("caBundle is PEM")).expect("CA certificate usable");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self { addr, host: addr.ip().to_string(), tls: tokio_rustls::TlsConnector::from(Arc::new(config)) }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(conn);
        Ok(send)
    }
}

/// One request and its answer: whether the HTTP exchange worked and what the webhook decided.
async fn post(conn: &mut SendRequest<Full<Bytes>>, target: &Target, path: &str, body: Bytes) -> Result<Value, String> {
    conn.ready().await.map_err(|e| format!("connection: {e}"))?;
    let req = http::Request::post(path)
        .header(http::header::HOST, target.addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("response JSON: {e}"))?;
    Ok(v["response"].clone())
}

/// One hook and body with the decision it must get.
#[derive(Clone)]
struct Variant {
    hook: &'static str,
    variant: &'static str,
    path: &'static str,
    body: Bytes,
    allowed: bool,
}

fn judged(v: &Variant, answer: Result<Value, String>) -> Result<(), String> {
    let r = answer?;
    match r["allowed"].as_bool() {
        Some(a) if a == v.allowed => Ok(()),
        _ => Err(format!("unexpected decision: {r}")),
    }
}

/// Keep-alive connections lent to one request at a time.
struct Pool {
    target: Target,
    idle: Mutex<mpsc::Receiver<SendRequest<Full<Bytes>>>>,
    back: mpsc::Sender<SendRequest<Full<Bytes>>>,
}

impl Pool {
    async fn open(target: &Target, n: usize) -> Arc<Self> {
        let (back, rx) = mpsc::channel(n);
        for _ in 0..n {
            back.send(target.connect().await.expect("connection to the webhook")).await.expect("pool");
        }
        Arc::new(Self { target: target.clone(), idle: Mutex::new(rx), back })
    }

    async fn send(&self, v: &Variant) -> Result<(), String> {
        let mut conn = self.idle.lock().await.recv().await.ok_or_else(|| "pool closed".to_string())?;
        let result = judged(v, post(&mut conn, &self.target, v.path, v.body.clone()).await);
        if conn.is_closed() {
            // A broken connection is replaced, so one error never starves the pool.
            match self.target.connect().await {
                Ok(c) => conn = c,
                Err(e) => return Err(e),
            }
        }
        let _ = self.back.send(conn).await;
        result
    }
}

#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    cpu_seconds: f64,
    /// How late the generator itself woke for each send (open loop): the machine's scheduling noise.
    wake_lag: Vec<Duration>,
}

impl Run {
    fn record(&mut self, latency: Duration, result: Result<(), String>) {
        self.latencies.push(latency);
        if let Err(e) = result {
            self.errors += 1;
            self.first_error.get_or_insert(e);
        }
    }

    fn summary(mut self, v: &Variant, mode: &str, rate: Option<u32>) -> Value {
        self.latencies.sort();
        let l = &self.latencies;
        let p99 = percentile(l, 0.99);
        json!({
            "hook": v.hook, "variant": v.variant, "mode": mode, "target_rps": rate,
            "requests": l.len(), "errors": self.errors, "first_error": self.first_error,
            "achieved_rps": (l.len() as f64 / self.elapsed.as_secs_f64()).round(),
            "p50_ms": ms(percentile(l, 0.5)), "p90_ms": ms(percentile(l, 0.9)), "p99_ms": ms(p99),
            "max_ms": ms(l.last().copied().unwrap_or_default()),
            "generator_wake_lag_p99_ms": (!self.wake_lag.is_empty()).then(|| ms(percentile(&self.wake_lag, 0.99))),
            "p99_to_target": (p99.as_secs_f64() / TARGET_P99.as_secs_f64() * 100.0).round() / 100.0,
            "operator_cpu_ms_per_request": (self.cpu_seconds * 1000.0 / l.len().max(1) as f64 * 1000.0).round() / 1000.0,
        })
    }
}

/// Sends at a constant rate whatever the answers do; each latency runs from the request's intended send time.
async fn open_loop(pool: &Arc<Pool>, v: &Variant, rate: u32, secs: u64, op: &Operator) -> Run {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = u64::from(rate) * secs;
    let cpu = operator_cpu(op);
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = tokio::task::JoinSet::new();
    let mut lag = Vec::with_capacity(total as usize);
    for i in 0..total {
        let intended = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(intended).await;
        lag.push(intended.elapsed());
        let (pool, v) = (pool.clone(), v.clone());
        tasks.spawn(async move {
            let result = pool.send(&v).await;
            (intended.elapsed(), result)
        });
    }
    lag.sort();
    let mut run = Run { wake_lag: lag, ..Default::default() };
    while let Some(done) = tasks.join_next().await {
        let (latency, result) = done.expect("request task");
        run.record(latency, result);
    }
    run.elapsed = start.elapsed();
    run.cpu_seconds = operator_cpu(op) - cpu;
    run
}

/// Each connection sends its next request as soon as the previous answer arrives.
async fn closed_loop(target: &Target, v: &Variant, connections: usize, secs: u64, op: &Operator) -> Run {
    let cpu = operator_cpu(op);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (target, v) = (target.clone(), v.clone());
        tasks.spawn(async move {
            let mut run = Run::default();
            let mut conn = target.connect().await.expect("connection to the webhook");
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = judged(&v, post(&mut conn, &target, v.path, v.body.clone()).await);
                run.record(sent.elapsed(), result);
                if conn.is_closed() {
                    conn = target.connect().await.expect("reconnect to the webhook");
                }
            }
            run
        });
    }
    let mut run = Run::default();
    while let Some(done) = tasks.join_next().await {
        let part = done.expect("worker");
        run.latencies.extend(part.latencies);
        run.errors += part.errors;
        run.first_error = run.first_error.or(part.first_error);
    }
    run.elapsed = start.elapsed();
    run.cpu_seconds = operator_cpu(op) - cpu;
    run
}

/// The four variants, checked once so a run measures the answers it claims to: the validated pod is the
/// mutated one (as the apiserver sends it), with the sidecar, the residency affinity and pull policies.
async fn variants(target: &Target) -> Vec<Variant> {
    let ns = format!("{PCI}-agents");
    let mutate_ok = Variant {
        hook: "mutate pods",
        variant: "allowed (patched)",
        path: "/mutate/pods",
        body: Bytes::new(),
        allowed: true,
    };
    let raw = pod(&ns, false);
    let first = Variant { body: review(&raw, "0b6a9d1e-bench-mutate-allowed"), ..mutate_ok };
    // The caches fill after the configuration is registered; until they know the namespace the answer is "retry".
    let response = wait_for("the webhooks to know the bench tenants", Duration::from_secs(60), || {
        let (target, first) = (target.clone(), first.clone());
        async move {
            let mut conn = target.connect().await.ok()?;
            let r = post(&mut conn, &target, first.path, first.body.clone()).await.ok()?;
            (r["allowed"] == json!(true) && r["patch"].is_string()).then_some(r)
        }
    })
    .await;
    let patch = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap_or_default());
    let patch: json_patch::Patch = serde_json::from_slice(&patch.expect("patch is base64")).expect("JSON patch");
    let mut mutated = raw.clone();
    json_patch::patch(&mut mutated, &patch).expect("patch applies to the pod");
    let sidecar = mutated["spec"]["initContainers"][0]["name"] == json!(bulkhead::admission::mutate::SIDECAR_NAME);
    assert!(sidecar, "the mutating webhook did not inject the sidecar: {patch:?}");
    let mut denied_mutated = pod(&ns, true);
    json_patch::patch(&mut denied_mutated, &patch).expect("patch applies to the denied pod");
    let all = vec![
        first,
        Variant {
            hook: "mutate pods",
            variant: "denied (unknown namespace)",
            path: "/mutate/pods",
            body: review(&pod(&format!("{SHARD_NS_PREFIX}-unknown"), false), "0b6a9d1e-bench-mutate-denied"),
            allowed: false,
        },
        Variant {
            hook: "validate pods",
            variant: "allowed",
            path: "/validate/pods",
            body: review(&mutated, "0b6a9d1e-bench-validate-allowed"),
            allowed: true,
        },
        Variant {
            hook: "validate pods",
            variant: "denied (host access)",
            path: "/validate/pods",
            body: review(&denied_mutated, "0b6a9d1e-bench-validate-denied"),
            allowed: false,
        },
    ];
    for v in &all {
        let mut conn = target.connect().await.expect("connection to the webhook");
        let answer = post(&mut conn, target, v.path, v.body.clone()).await;
        if let Err(e) = judged(v, answer) {
            panic!("{} {}: {e}", v.hook, v.variant);
        }
    }
    all
}

/// Namespaces with this prefix do not exist: the mutating webhook refuses pods in them until its caches know them.
const SHARD_NS_PREFIX: &str = "bench-adm-nowhere";

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not and must not start an operator.
    if !std::env::args().any(|a| a == "--bench") {
        println!("admission benchmark: run it with `cargo bench --bench admission` (or `make bench`)");
        return;
    }
    let rate: u32 = env_or("BENCH_ADMISSION_RATE", 1000);
    let secs: u64 = env_or("BENCH_ADMISSION_SECS", 10);
    let max_secs: u64 = env_or("BENCH_ADMISSION_MAX_SECS", 5);
    let connections: usize = env_or("BENCH_ADMISSION_CONNECTIONS", 32);
    let out_dir = PathBuf::from(
        std::env::var("BENCH_OUT").unwrap_or_else(|_| repo().join("bench-results").display().to_string()),
    );
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let m = machine();
    // Other work on the machine shows in the tail latencies: recorded with every result.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<f64> = load.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
    println!("# bulkhead admission benchmark — machine: {m}, load average at start: {load:?}");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (results, rss) = rt.block_on(async {
        let client = admin().await;
        install_crd(&client).await;
        for t in [
            tenant(
                PCI,
                json!({"compliance": ["PCI-DSS"], "dataResidency": {"regions": ["eu-west-1", "eu-central-1"]}}),
            ),
            tenant(STD, json!({"podSecurity": "baseline", "audit": {"sink": "https://siem.acme.example/ingest"}})),
        ] {
            apply_tenant(&client, &t).await;
        }
        let op = start_operator();
        let log = op.stderr.clone();
        wait_for(&format!("the operator's /readyz (log: {})", log.display()), Duration::from_secs(120), || {
            let op = &op;
            async move { matches!(op.http_get("/readyz").await, Some((200, _))).then_some(()) }
        })
        .await;
        let target = Target::read(&client).await;
        let variants = variants(&target).await;
        println!("webhooks at https://{}, {} bytes per allowed pod review", target.addr, variants[2].body.len());
        let pool = Pool::open(&target, connections).await;
        let mut results = Vec::new();
        for v in &variants {
            // A short warm-up so connection set-up and first-use allocations stay out of the numbers.
            open_loop(&pool, v, rate, 1, &op).await;
            let run = open_loop(&pool, v, rate, secs, &op).await;
            results.push(run.summary(v, "open-loop", Some(rate)));
        }
        for v in &variants {
            let run = closed_loop(&target, v, connections, max_secs, &op).await;
            results.push(run.summary(v, &format!("closed-loop, {connections} connections"), None));
        }
        let rss = rss_mib(&op);
        drop(op);
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let _ = api.delete(CONFIGURATION, &Default::default()).await;
        let api: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
            Api::all(client.clone());
        let _ = api.delete(CONFIGURATION, &Default::default()).await;
        (results, rss)
    });
    println!(
        "\n| hook | variant | mode | target rps | achieved rps | p50 ms | p90 ms | p99 ms | max ms | errors | p99 / 5 ms | operator CPU ms/req | generator wake lag p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.3} | {} |",
            r["hook"].as_str().unwrap_or_default(),
            r["variant"].as_str().unwrap_or_default(),
            r["mode"].as_str().unwrap_or_default(),
            r["target_rps"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "max".into()),
            r["achieved_rps"],
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p90_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["max_ms"].as_f64().unwrap_or(0.0),
            r["errors"],
            r["p99_to_target"].as_f64().unwrap_or(0.0),
            r["operator_cpu_ms_per_request"].as_f64().unwrap_or(0.0),
            r["generator_wake_lag_p99_ms"].as_f64().map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
        );
        if let Some(e) = r["first_error"].as_str() {
            println!("  first error: {e}");
        }
    }
    println!("\noperator RSS after the runs: {rss:.1} MiB; load generator and operator share the machine's cores");
    let report = json!({
        "machine": m,
        "load_average_at_start": load,
        "settings": {"rate": rate, "open_loop_seconds": secs, "closed_loop_seconds": max_secs,
            "connections": connections, "target_p99_ms": ms(TARGET_P99), "transport": "HTTP/1.1 keep-alive over TLS 1.3, loopback"},
        "operator_rss_mib": (rss * 10.0).round() / 10.0,
        "results": results,
    });
    let path = out_dir.join("admission.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()).expect("write results");
    println!("results written to {}", path.display());
}
