//! bulkhead at scale, measured against the physical floor of the same API
//! server in the same run. `cargo bench --bench scale` (or `make bench`).
//!
//! Environment: BENCH_SIZES (default "100,1000"), BENCH_IDLE_SECS (default
//! 300), BENCH_DRIFT (default 100), BENCH_OUT (default bench-results/).
//! BENCH_KUBECONFIG points at another cluster than this checkout's;
//! BENCH_OPERATOR_BIN another operator binary (e.g. the musl release build);
//! BENCH_OPERATOR_ARGS extra operator flags (ablations).
//! Needs the local control plane (`e2e/cluster up`); use a fresh one
//! (`e2e/cluster down && e2e/cluster up`) on a quiet machine.

mod measure;
use measure::{cpu_seconds, env_or, machine, percentile, status_kib};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead::api::Tenant;
use bulkhead::controller::diff;
use bulkhead::plan::secrets::{self, Entropy, Key};
use bulkhead::plan::{self, ManagedObject};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

const CONCURRENCY: usize = 64;
const OPERATOR_NS: &str = "bulkhead-system";
/// The operator's counter of continuous verification runs, by result.
const VERIFICATIONS: &str = "bulkhead_verification_runs_total";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster to measure: `BENCH_KUBECONFIG`, else the local control plane of this checkout.
fn kubeconfig() -> PathBuf {
    std::env::var_os("BENCH_KUBECONFIG").map(PathBuf::from).unwrap_or_else(|| repo().join("e2e/.cluster/kubeconfig"))
}

async fn client() -> Client {
    let path = kubeconfig();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{}: {e}; run e2e/cluster up", path.display()));
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig");
    cfg.read_timeout = Some(Duration::from_secs(120));
    Client::try_from(cfg).expect("client")
}

/// A realistic contact-center tenant: two namespaces, four subjects, quotas, limits, one credential;
/// compliant, so continuous verification finds nothing to report about it.
fn tenant_spec(name: &str) -> Value {
    json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name, "labels": {"bench.bulkhead.dev/run": "1"}},
        "spec": {
            "namespaces": [{"name": "agents"}, {"name": "payments"}],
            "network": {"ingressFrom": [{"namespaces": ["ingress-nginx"], "ports": [{"port": 8443}]}],
                        "egressTo": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}]},
            "quota": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi", "requests.ephemeral-storage": "20Gi", "pods": "40"}},
            "limits": {"default": {"cpu": "500m", "memory": "512Mi"}},
            "access": [
                {"kind": "User", "name": format!("{name}-admin"), "profile": "admin"},
                {"kind": "User", "name": format!("{name}-dev"), "profile": "developer"},
                {"kind": "Group", "name": format!("{name}-auditors"), "profile": "auditor"},
                {"kind": "User", "name": format!("{name}-viewer"), "profile": "viewer"}
            ],
            "secrets": {"generated": [{"name": "crm-db", "keys": ["password"]}]}
        }
    })
}

struct Fake(u64);
impl Entropy for Fake {
    fn key(&mut self) -> Key {
        self.0 += 1;
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&self.0.to_le_bytes());
        Key(k)
    }
    fn id(&mut self) -> String {
        self.0 += 1;
        format!("k{}", self.0)
    }
}

/// Exactly what the operator writes for one tenant: the plan, the key
/// projections and the source Secret.
fn floor_objects(name: &str) -> Vec<(plan::ObjectKey, Value)> {
    let t: Tenant = serde_json::from_value(tenant_spec(name)).expect("tenant");
    let desired = plan::plan(&t, &plan::Config::default()).expect("plan");
    let (material, _) = secrets::evolve(
        None,
        &t.spec.secrets,
        desired.effective.rotation_period,
        None,
        jiff::Timestamp::now(),
        &mut Fake(0),
    );
    let mut objects: Vec<ManagedObject> = desired.objects.clone();
    objects.extend(secrets::projections(name, &desired.namespaces, &material));
    let mut out: Vec<(plan::ObjectKey, Value)> = objects
        .iter()
        .map(|o| {
            let mut v = o.to_json();
            diff::stamp(&mut v);
            floor_label(&mut v);
            (o.key(), v)
        })
        .collect();
    let source = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secrets::source_name(name), "namespace": OPERATOR_NS, "labels": plan::owner_labels(name)},
        "data": {"material": base64_of(&serde_json::to_vec(&material).unwrap_or_default())}});
    let mut source = source;
    floor_label(&mut source);
    out.push((
        plan::ObjectKey {
            kind: plan::object::Kind::Secret,
            namespace: Some(OPERATOR_NS.into()),
            name: secrets::source_name(name),
        },
        source,
    ));
    out
}

/// The floor's objects are the operator's, byte for byte, except for the
/// managed-by value: the operator under test watches `managed-by=bulkhead`
/// and must not carry the floor's N tenants in its caches (only the floor's
/// namespaces, as metadata, like every namespace of a cluster).
fn floor_label(v: &mut Value) {
    v["metadata"]["labels"][plan::LABEL_MANAGED_BY] = json!(FLOOR_MANAGER);
}

const FLOOR_MANAGER: &str = "bench-floor";

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn ssa(client: &Client, key: &plan::ObjectKey, body: &Value) {
    let api = key.api(client);
    for attempt in 0..5 {
        match api.patch(&key.name, &PatchParams::apply("bench-floor").force(), &Patch::Apply(body)).await {
            Ok(_) => return,
            Err(e) if attempt < 4 => {
                eprintln!("retrying {key}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("floor apply {key}: {e}"),
        }
    }
}

/// A tight, maximally concurrent client applying the same objects: the
/// floor; its time, and the keys of what it applied besides namespaces.
async fn floor(client: &Client, names: &[String]) -> (Duration, Vec<plan::ObjectKey>) {
    let all: Vec<(plan::ObjectKey, Value)> = names.iter().flat_map(|n| floor_objects(n)).collect();
    let (namespaces, rest): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|(k, _)| k.kind == plan::object::Kind::Namespace);
    let start = Instant::now();
    futures::stream::iter(namespaces.iter())
        .for_each_concurrent(CONCURRENCY, |(k, v)| async move { ssa(client, k, v).await })
        .await;
    futures::stream::iter(rest.iter())
        .for_each_concurrent(CONCURRENCY, |(k, v)| async move { ssa(client, k, v).await })
        .await;
    (start.elapsed(), rest.into_iter().map(|(k, _)| k).collect())
}

/// Deletes the floor's objects (its namespaces stay, emptied): the
/// operator's run then starts in a cluster holding N tenants' objects, not
/// 2N. Its continuous verification reads every NetworkPolicy and
/// RoleBinding in the cluster, and left in place, the floor's 27,000
/// objects at N = 1,000 doubled that part of its memory.
async fn remove_floor_objects(client: &Client, keys: &[plan::ObjectKey]) -> Duration {
    let start = Instant::now();
    futures::stream::iter(keys.iter())
        .for_each_concurrent(CONCURRENCY, |key| async move {
            match key.api(client).delete(&key.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => panic!("floor object {key} not deleted: {e}"),
            }
        })
        .await;
    start.elapsed()
}

/// apiserver_request_total by verb, from the apiserver's own /metrics.
async fn requests_by_verb(client: &Client) -> BTreeMap<String, f64> {
    requests_by(client, "verb").await
}

/// apiserver_request_total summed by the value of one of its labels (verb, resource).
async fn requests_by(client: &Client, label: &str) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = BTreeMap::new();
    let key = format!("{label}=\"");
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let value_of = line.split(key.as_str()).nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(value_of.to_string()).or_insert(0.0) += value;
    }
    out
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).unwrap_or(&0.0)).max(0.0) as u64))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn writes(d: &BTreeMap<String, u64>) -> u64 {
    ["POST", "PUT", "PATCH", "DELETE", "APPLY"].iter().filter_map(|v| d.get(*v)).sum()
}

/// The name of the webhook configurations of the bench's operator, when BENCH_OPERATOR_ARGS turns them on.
const WEBHOOKS: &str = "bulkhead-scale-bench";

struct Proc {
    child: Child,
}

/// CPU seconds of each local control-plane process (etcd, kube-apiserver,
/// kube-controller-manager), from the pid files `e2e/cluster up` writes;
/// empty for another cluster. On two cores the operator and the control
/// plane share the CPU: where a phase's CPU goes explains its time.
fn control_plane_cpu() -> BTreeMap<String, f64> {
    if std::env::var_os("BENCH_KUBECONFIG").is_some() {
        return BTreeMap::new();
    }
    ["etcd", "kube-apiserver", "kube-controller-manager"]
        .into_iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(repo().join(format!("e2e/.cluster/pids/{name}.pid"))).ok()?;
            Some((name.to_string(), cpu_seconds(pid.trim().parse().ok()?)))
        })
        .collect()
}

fn cpu_delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after.iter().map(|(k, v)| (k.clone(), ((v - before.get(k).unwrap_or(&0.0)) * 10.0).round() / 10.0)).collect()
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
    fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole process group: a wrapper given as BENCH_OPERATOR_BIN (a
        // profiler, say) must not leave its operator running into the next
        // run, watching and skewing it.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.pid())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // With the webhooks on (BENCH_OPERATOR_ARGS), a killed operator's
        // configurations stay registered and fail closed: every later write
        // to the cluster would be refused. Only the bench's own, by name.
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args([
                "delete",
                "validatingwebhookconfiguration,mutatingwebhookconfiguration",
                WEBHOOKS,
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .status();
    }
}

/// A free loopback port for the operator's /metrics.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18099)
}

/// The operator's own count of API writes (`bulkhead_api_writes_total`), by kind and verb.
fn operator_writes(port: u16) -> Option<BTreeMap<String, f64>> {
    operator_counter(port, "bulkhead_api_writes_total")
}

/// One counter family of the operator's /metrics, by its labels.
fn operator_counter(port: u16, family: &str) -> Option<BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).ok()?;
    Some(
        body.lines()
            .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
            .filter_map(|l| {
                let (labels, value) = l.rsplit_once("} ")?;
                Some((labels.replace('"', ""), value.parse::<f64>().ok()?))
            })
            .collect(),
    )
}

fn start_operator(selector: &str, log: &std::path::Path, metrics_port: u16) -> Proc {
    // BENCH_OPERATOR_BIN measures another build, e.g. the static musl binary the image ships (`make release`).
    let bin = std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead").to_string());
    let child = Command::new(bin)
        .args(["run", "--log-format", "json", "--log-level", "warn", "--tenant-selector", selector])
        // Ablations (e.g. `--verify-interval 0s`) for before/after figures.
        .args(std::env::var("BENCH_OPERATOR_ARGS").unwrap_or_default().split_whitespace())
        .env("KUBECONFIG", kubeconfig())
        .env("BULKHEAD_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("BULKHEAD_ADMISSION_NAME", WEBHOOKS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .process_group(0)
        .spawn()
        .expect("operator starts");
    Proc { child }
}

fn is_ready(t: &Tenant) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.observed_generation == t.metadata.generation
            && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Follows the run's Tenants with a watch until all `n` are Ready, sampling
/// the operator's RSS meanwhile; the highest sample. Polling with a LIST of
/// a thousand Tenants (managedFields and all) every 200 ms would itself be a
/// large share of the apiserver's work during the convergence it measures.
/// Also returns when each quarter (and 90 %) of the tenants was Ready,
/// counted from `start`, the convergence clock's start.
async fn wait_all_ready(client: &Client, selector: &str, n: usize, op: &Proc, start: Instant) -> (u64, Vec<String>) {
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<Tenant> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default().labels(selector)).default_backoff().applied_objects();
    let mut stream = std::pin::pin!(stream);
    let mut ready: BTreeMap<String, bool> = BTreeMap::new();
    let mut peak_rss = op.status_kib("VmRSS:");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(1800);
    // When each quarter of the tenants was Ready: a straight line means the
    // apiserver's throughput bounds convergence, a long tail means latency.
    let mut marks = vec![n / 4, n / 2, 3 * n / 4, n * 9 / 10];
    let mut progress = Vec::new();
    loop {
        let done = ready.values().filter(|r| **r).count();
        while marks.first().is_some_and(|m| done >= *m) {
            progress.push(format!("{}% at {:.1}s", marks.remove(0) * 100 / n.max(1), start.elapsed().as_secs_f64()));
        }
        if done >= n {
            break;
        }
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(t)) => {
                    ready.insert(t.name_any(), is_ready(&t));
                }
                Some(Err(e)) => eprintln!("watching Tenants: {e}; retrying"),
                None => panic!("the Tenant watch ended"),
            },
            _ = tick.tick() => {
                peak_rss = peak_rss.max(op.status_kib("VmRSS:"));
                assert!(Instant::now() < deadline, "convergence did not finish in 30 minutes");
            }
        }
    }
    println!("ready: {}", progress.join(", "));
    (peak_rss, progress)
}

async fn drift(client: &Client, names: &[String], rounds: usize) -> BTreeMap<&'static str, (Duration, Duration)> {
    let mut out = BTreeMap::new();
    for kind in ["NetworkPolicy", "RoleBinding", "Secret"] {
        let mut lat = Vec::new();
        for i in 0..rounds {
            let t = &names[(i * 7919) % names.len()];
            let ns = format!("{t}-agents");
            let start;
            match kind {
                "NetworkPolicy" => {
                    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
                    start = Instant::now();
                    api.delete("bulkhead-allow", &DeleteParams::default()).await.expect("delete");
                    while api.get_opt("bulkhead-allow").await.ok().flatten().is_none() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                "RoleBinding" => {
                    let api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
                    let rb = api
                        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
                        .await
                        .expect("list")
                        .items[0]
                        .name_any();
                    start = Instant::now();
                    api.delete(&rb, &DeleteParams::default()).await.expect("delete");
                    while api.get_opt(&rb).await.ok().flatten().is_none() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                _ => {
                    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                    start = Instant::now();
                    api.delete("bulkhead-keys", &DeleteParams::default()).await.expect("delete");
                    while api.get_opt("bulkhead-keys").await.ok().flatten().is_none() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            lat.push(start.elapsed());
        }
        lat.sort();
        out.insert(kind, (percentile(&lat, 0.5), percentile(&lat, 0.99)));
    }
    out
}

/// Deletes a run's Tenants while its operator still runs (the default Retain
/// policy releases their objects) and waits until they are gone, so the next
/// size starts with caches that hold only its own tenants.
async fn remove_tenants(client: &Client, names: &[String]) {
    let api: Api<Tenant> = Api::all(client.clone());
    futures::stream::iter(names.iter())
        .for_each_concurrent(CONCURRENCY, |n| {
            let api = api.clone();
            async move {
                let _ = api.delete(n, &DeleteParams::default()).await;
            }
        })
        .await;
    let start = Instant::now();
    for n in names {
        while api.get_opt(n).await.ok().flatten().is_some() && start.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until the apiserver takes fewer than 25 writes/s over 2 s, at most
/// 2 minutes; the time waited. The floor's 2,000 namespaces set
/// kube-controller-manager to work (ServiceAccounts, root CA ConfigMaps,
/// quota status) after the floor's clock stopped; left running, that work
/// would be charged to the operator's convergence.
async fn settle(client: &Client) -> Duration {
    let start = Instant::now();
    let mut last = requests_by_verb(client).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = requests_by_verb(client).await;
        if writes(&delta(&now, &last)) < 50 || start.elapsed() > Duration::from_secs(120) {
            return start.elapsed();
        }
        last = now;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

async fn prepare(client: &Client) {
    let text = std::fs::read_to_string(repo().join("crds/bulkhead.dev_tenants.yaml")).expect("crd");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("crd yaml");
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch("tenants.bulkhead.dev", &PatchParams::apply("bench").force(), &Patch::Apply(&crd))
        .await
        .expect("crd applies");
    for ns in [OPERATOR_NS, "ingress-nginx"] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        Api::<Namespace>::all(client.clone())
            .patch(ns, &PatchParams::apply("bench"), &Patch::Apply(&body))
            .await
            .expect("namespace");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn run_size(client: &Client, n: usize, idle_secs: u64, drift_rounds: usize, out_dir: &std::path::Path) -> Value {
    let run = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) % 0xfffff
    );
    let floor_names: Vec<String> = (0..n).map(|i| format!("f{run}-{i}")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("c{run}-{i}")).collect();
    println!("\n## N = {n} tenants x 2 namespaces");

    let floor_cpu0 = control_plane_cpu();
    let (floor_time, floor_keys) = floor(client, &floor_names).await;
    let floor_cpu = cpu_delta(&control_plane_cpu(), &floor_cpu0);
    let objects_per_tenant = floor_objects("x").len();
    println!(
        "floor: {} objects applied in {:.2}s; control-plane CPU s {floor_cpu:?}",
        n * objects_per_tenant,
        floor_time.as_secs_f64()
    );

    let removed = remove_floor_objects(client, &floor_keys).await;
    println!("floor's objects deleted (its namespaces kept) in {:.1}s", removed.as_secs_f64());
    let settled = settle(client).await;
    println!("floor's follow-up settled after {:.1}s", settled.as_secs_f64());

    let selector = format!("bench.bulkhead.dev/shard={run}");
    let metrics_port = free_port();
    let op = start_operator(&selector, &out_dir.join(format!("operator-{n}.log")), metrics_port);
    // Let the operator fill its caches before the clock starts, as a running operator would have.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = requests_by_verb(client).await;
    let cpu0 = op.cpu_seconds();
    let conv_cp_cpu0 = control_plane_cpu();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kube::core::ApiResource::erase::<Tenant>(&()));
    let start = Instant::now();
    futures::stream::iter(names.iter())
        .for_each_concurrent(CONCURRENCY, |name| {
            let api = api.clone();
            let run = run.clone();
            async move {
                let mut body = tenant_spec(name);
                body["metadata"]["labels"] = json!({"bench.bulkhead.dev/shard": run});
                let obj: DynamicObject = serde_json::from_value(body).expect("tenant");
                api.create(&PostParams::default(), &obj).await.expect("tenant created");
            }
        })
        .await;
    // The creates share the apiserver with the convergence they start.
    let created = start.elapsed();
    println!("tenants created: all {n} at {:.1}s", created.as_secs_f64());
    let (peak_rss, progress) = wait_all_ready(client, &selector, n, &op, start).await;
    let converge = start.elapsed();
    let after = requests_by_verb(client).await;
    let conv_requests = delta(&after, &before);
    let conv_cpu = op.cpu_seconds() - cpu0;
    let conv_cp_cpu = cpu_delta(&control_plane_cpu(), &conv_cp_cpu0);
    let ratio = converge.as_secs_f64() / floor_time.as_secs_f64();
    println!(
        "convergence: {:.2}s to all Ready; ratio to floor {ratio:.2} (target <= 1.3); operator CPU {conv_cpu:.1}s; control-plane CPU s {conv_cp_cpu:?}; requests {conv_requests:?}",
        converge.as_secs_f64()
    );

    let idle_before = requests_by_verb(client).await;
    let idle_resources_before = requests_by(client, "resource").await;
    let idle_cpu0 = op.cpu_seconds();
    let own_before = operator_writes(metrics_port);
    let verified_before = operator_counter(metrics_port, VERIFICATIONS);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let own_idle_by_kind = own_before.zip(operator_writes(metrics_port)).map(|(a, b)| delta(&b, &a));
    let own_idle_writes = own_idle_by_kind.as_ref().map(|m| m.values().sum::<u64>());
    let verified = verified_before
        .zip(operator_counter(metrics_port, VERIFICATIONS))
        .map(|(a, b)| delta(&b, &a).values().sum::<u64>())
        .unwrap_or(0);
    let idle_requests = delta(&requests_by_verb(client).await, &idle_before);
    let idle_resources = delta(&requests_by(client, "resource").await, &idle_resources_before);
    let idle_writes = writes(&idle_requests);
    let idle_cpu = op.cpu_seconds() - idle_cpu0;
    let steady_rss = op.status_kib("VmRSS:");
    // Heap and stacks versus the binary's own pages (file-backed, shared, reclaimable).
    let (steady_anon, steady_file) = (op.status_kib("RssAnon:"), op.status_kib("RssFile:"));
    let hwm = op.status_kib("VmHWM:").max(peak_rss);
    println!(
        "idle {idle_secs}s: operator's own API writes {own_idle_writes:?} (target 0) {own_idle_by_kind:?}; whole apiserver {idle_writes} writes incl. kube-controller-manager and access reviews; operator CPU {idle_cpu:.2}s; requests {idle_requests:?}"
    );
    // What verifying one tenant costs: the operator's CPU and the apiserver
    // requests of the idle phase (kube-controller-manager's few included),
    // per verification run, so the load at another interval or N is a product.
    let per_run = |total: f64| if verified == 0 { 0.0 } else { total / verified as f64 };
    let count = |map: &BTreeMap<String, u64>, key: &str| map.get(key).copied().unwrap_or(0) as f64;
    let (reviews, gets, lists, cpu) = (
        per_run(count(&idle_resources, "subjectaccessreviews")),
        per_run(count(&idle_requests, "GET")),
        per_run(count(&idle_requests, "LIST")),
        per_run(idle_cpu),
    );
    println!(
        "continuous verification in idle: {verified} tenants verified; per tenant {reviews:.0} SubjectAccessReviews, {gets:.0} GET, {lists:.1} LIST, {cpu:.2} operator CPU-s"
    );
    let verification_cost = json!({
        "runs": verified,
        "operator_cpu_seconds": cpu,
        "subjectaccessreviews": reviews,
        "get": gets,
        "list": lists,
    });
    println!(
        "memory: peak {:.1} MiB, steady {:.1} MiB (anonymous {:.1}, file-backed {:.1}) (target < 40 MiB at 1,000)",
        hwm as f64 / 1024.0,
        steady_rss as f64 / 1024.0,
        steady_anon as f64 / 1024.0,
        steady_file as f64 / 1024.0
    );

    let drift = drift(client, &names, drift_rounds).await;
    for (kind, (p50, p99)) in &drift {
        println!(
            "drift repair {kind}: p50 {} ms, p99 {} ms over {drift_rounds} deletions (target p99 < 1000 ms)",
            ms(*p50),
            ms(*p99)
        );
    }
    // The drift phase reconciles and verifies at once; the high-water mark
    // after it is the peak over the whole run, not only convergence and idle.
    let hwm_run = op.status_kib("VmHWM:").max(hwm);
    println!("memory: peak over the whole run, drift repair included: {:.1} MiB", hwm_run as f64 / 1024.0);
    remove_tenants(client, &names).await;
    drop(op);
    json!({
        "tenants": n,
        "namespaces": 2 * n,
        "objects": n * objects_per_tenant,
        "floor_seconds": floor_time.as_secs_f64(),
        "convergence_seconds": converge.as_secs_f64(),
        "ratio_to_floor": ratio,
        "convergence_requests_by_verb": conv_requests,
        "operator_cpu_seconds_convergence": conv_cpu,
        "idle_seconds": idle_secs,
        "idle_operator_writes": own_idle_writes,
        "idle_operator_writes_by_kind": own_idle_by_kind,
        "idle_apiserver_writes": idle_writes,
        "idle_requests_by_verb": idle_requests,
        "operator_cpu_seconds_idle": idle_cpu,
        "idle_requests_by_resource": idle_resources,
        "verification_per_tenant": verification_cost,
        "rss_peak_mib": hwm as f64 / 1024.0,
        "rss_peak_whole_run_mib": hwm_run as f64 / 1024.0,
        "rss_steady_mib": steady_rss as f64 / 1024.0,
        "rss_steady_anonymous_mib": steady_anon as f64 / 1024.0,
        "rss_steady_file_mib": steady_file as f64 / 1024.0,
        "control_plane_cpu_seconds_floor": floor_cpu,
        "control_plane_cpu_seconds_convergence": conv_cp_cpu,
        "tenants_created_seconds": created.as_secs_f64(),
        "ready_progress": progress,
        "floor_follow_up_settled_seconds": settled.as_secs_f64(),
        "drift_ms": drift.iter().map(|(k, (a, b))| (k.to_string(), json!({"p50": ms(*a), "p99": ms(*b)}))).collect::<BTreeMap<_, _>>(),
    })
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // a test run must never start a thousand tenants.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale benchmark: run it with `cargo bench --bench scale` (or `make bench`)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let idle = env_or("BENCH_IDLE_SECS", 300u64);
    let drift_rounds = env_or("BENCH_DRIFT", 100usize);
    let out_dir = PathBuf::from(
        std::env::var("BENCH_OUT").unwrap_or_else(|_| repo().join("bench-results").display().to_string()),
    );
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let m = machine();
    println!("# bulkhead scale benchmark — machine: {m}");
    let results = rt.block_on(async {
        let client = client().await;
        prepare(&client).await;
        let mut results = Vec::new();
        for n in &sizes {
            results.push(run_size(&client, *n, idle, drift_rounds, &out_dir).await);
        }
        results
    });
    let report = json!({"machine": m, "results": results});
    let path = out_dir.join("scale.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()).expect("write results");
    println!(
        "\n| N | floor s | converge s | ratio | idle operator writes | CPU conv s | RSS peak MiB (whole run) | RSS steady MiB | drift p99 ms (NP/RB/Secret) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in results.iter() {
        let d = &r["drift_ms"];
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} ({:.1}) | {:.1} | {}/{}/{} |",
            r["tenants"],
            r["floor_seconds"].as_f64().unwrap_or(0.0),
            r["convergence_seconds"].as_f64().unwrap_or(0.0),
            r["ratio_to_floor"].as_f64().unwrap_or(0.0),
            r["idle_operator_writes"],
            r["operator_cpu_seconds_convergence"].as_f64().unwrap_or(0.0),
            r["rss_peak_mib"].as_f64().unwrap_or(0.0),
            r["rss_peak_whole_run_mib"].as_f64().unwrap_or(0.0),
            r["rss_steady_mib"].as_f64().unwrap_or(0.0),
            d["NetworkPolicy"]["p99"],
            d["RoleBinding"]["p99"],
            d["Secret"]["p99"]
        );
    }
    println!("\nresults written to {}", path.display());
}
