//! Fault injection (issue 9) against the real control plane, bounded in time.
//!
//! Where each fault of the issue is tested:
//! - SIGKILL of the operator at random points while 50 tenants converge:
//!   [`killed_mid_convergence_ends_exactly_like_a_clean_run`] (seed printed; rerun with `BULKHEAD_FAULT_SEED`).
//! - kube-apiserver stopped and restarted mid-convergence (`e2e/cluster stop-apiserver` / `start-apiserver`):
//!   [`an_apiserver_restart_mid_convergence_is_survived_without_an_error_loop`].
//! - A conflicting writer on managed fields: [`a_conflicting_writer_is_undone_reported_and_never_fought`].
//! - Bad input at volume: [`every_malformed_tenant_of_the_corpus_is_rejected_clearly`] over
//!   `tests/corpus/bad-tenants/*.yaml`.
//! - A failing SIEM sink and a full spool: `tests/audit_sidecar.rs`
//!   (`a_siem_that_stops_and_restarts_mid_stream_gets_every_record`,
//!   `a_full_spool_refuses_new_records_loudly_and_loses_none`, and the slow-sink case there).
//! - The admission decoder fuzz run: `src/admission/fuzzing.rs`, run for a bounded time by `e2e/test-all`.
//!
//! The operators here run with periodic verification off: it writes status on a
//! timer of its own, which would make "no writes once converged" untestable and
//! the end state depend on when a snapshot is taken.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bulkhead::api::Tenant;
use bulkhead::plan::object::Kind;
use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// Held by every test of this file. The apiserver restart takes the shared
/// control plane away for seconds, so nothing else may run meanwhile; the
/// other tests are serialized too because they are heavy for two cores.
/// Other test binaries are safe: cargo runs test binaries one after another,
/// and this binary's tests run on its own threads only.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONVERGE: Duration = Duration::from_secs(120);

fn start_operator(shard: &str) -> Operator {
    Operator::start_with(shard, &[("BULKHEAD_VERIFY_INTERVAL", "0s")])
}

/// An operator reconciling 4 tenants at a time: at the default 64 the sets
/// here converge within a second or two, and the faults (five kills, an
/// apiserver outage) would mostly land on a converged cluster instead of
/// in the middle of convergence.
fn start_slow_operator(shard: &str) -> Operator {
    Operator::start_with(shard, &[("BULKHEAD_VERIFY_INTERVAL", "0s"), ("BULKHEAD_CONCURRENCY", "4")])
}

/// A tenant like the examples: two namespaces with extra metadata, every
/// access kind, ingress and egress exceptions with ports, quotas (also
/// tenant-wide), limits, a generated credential and a compliance profile.
fn realistic(name: &str, shard: &str) -> Value {
    let yaml = format!(
        r#"
metadata: {{name: x}}
spec:
  displayName: Customer {name}
  namespaces:
    - name: agents
      labels: {{team: ivr}}
    - name: payments
      annotations: {{example.com/data-owner: dpo@{name}.example}}
  network:
    ingressFrom:
      - namespaces: [ingress-nginx]
        ports: [{{port: 8443, protocol: TCP}}]
    egressTo:
      - cidr: 203.0.113.0/24
        ports: [{{port: 443, protocol: TCP}}]
  quota:
    hard: {{requests.cpu: "2", requests.memory: 4Gi, pods: "20", services: "10"}}
    tenantHard: {{pods: "30"}}
  limits:
    default: {{cpu: 500m, memory: 512Mi}}
    defaultRequest: {{cpu: 100m, memory: 128Mi}}
  access:
    - {{kind: User, name: alice@{name}.example, profile: admin}}
    - {{kind: User, name: bob@{name}.example, profile: developer}}
    - {{kind: Group, name: {name}-auditors, profile: auditor}}
    - {{kind: ServiceAccount, name: ci, namespace: {name}-agents, profile: developer}}
  secrets:
    generated: [{{name: db, keys: [username, password]}}]
  compliance: [GDPR]
  deletionPolicy: Retain
"#
    );
    tenant_from(&yaml, name, shard)
}

/// `n` tenants `<prefix>-00`.. of one shard, applied 8 at a time.
async fn apply_set(client: &Client, prefix: &str, shard: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:02}")).collect();
    futures::stream::iter(names.iter().map(|name| {
        let tenant = realistic(name, shard);
        async move { apply_tenant(client, &tenant).await }
    }))
    .buffer_unordered(8)
    .collect::<Vec<()>>()
    .await;
    names
}

fn is_ready(t: &Tenant) -> bool {
    let Some(status) = t.status.as_ref() else { return false };
    status.observed_generation == t.metadata.generation
        && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The Tenants of `shard` that are Ready for their current generation, and how many there are in all.
async fn ready_count(client: &Client, shard: &str) -> Option<(usize, usize)> {
    let list = Api::<Tenant>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{SHARD_LABEL}={shard}")))
        .await
        .ok()?;
    Some((list.items.iter().filter(|t| is_ready(t)).count(), list.items.len()))
}

async fn wait_all_ready(client: &Client, shard: &str, n: usize, timeout: Duration) {
    wait_for(&format!("all {n} Tenants of shard {shard} to be Ready"), timeout, || async move {
        ready_count(client, shard).await.filter(|&(ready, all)| ready == n && all == n).map(|_| ())
    })
    .await;
}

/// Deletes every Tenant of `names`, waits until each is gone (its finalizer
/// released its namespaces), then deletes what `Retain` kept without waiting:
/// erasing hundreds of namespaces takes the namespace controller minutes here,
/// and no test waits on it.
async fn delete_set(client: &Client, names: &[String]) {
    futures::stream::iter(names.iter().map(|n| delete_tenant(client, n)))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let selector = format!("{} in ({})", bulkhead::plan::LABEL_TENANT, names.join(","));
    let params = ListParams::default().labels(&selector);
    let namespaces = Api::<Namespace>::all(client.clone());
    let released = namespaces.list(&params).await.expect("list the released namespaces").items;
    futures::stream::iter(released.iter().map(|ns| {
        let (namespaces, name) = (namespaces.clone(), ns.name_any());
        // Best effort: whatever is left is unlabelled from bulkhead's view and harms no other test.
        async move {
            let _ = namespaces.delete(&name, &DeleteParams::background()).await;
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .delete_collection(&DeleteParams::background(), &params)
        .await
        .expect("delete the retained key sources");
}

/// A small deterministic generator (splitmix64), so a failing kill schedule can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number uniformly between `lo` and `hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    std::env::var("BULKHEAD_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    })
}

/// Everything bulkhead owns for the tenants whose names start with `prefix`,
/// normalized so two sets converged separately compare equal: keyed by
/// `Kind/namespace/name`, with the prefix, the shard and each tenant's key id
/// replaced by placeholders, and what the server or randomness decides
/// (uid, resourceVersion, timestamps, managedFields, status written by
/// Kubernetes controllers, the applied-content hash, secret values) removed.
/// Secret values become their lengths; key source Secrets become the shape of
/// their material (generations, credential names). Nothing secret is kept.
async fn snapshot(client: &Client, prefix: &str, shard: &str) -> BTreeMap<String, Value> {
    let owned = |v: &str| v.starts_with(&format!("{prefix}-"));
    let mut out = BTreeMap::new();
    // Generated values and names derived from them, most specific first.
    let mut replacements: Vec<(String, String)> = Vec::new();
    let tenants = Api::<Tenant>::all(client.clone()).list(&ListParams::default()).await.expect("list Tenants");
    for t in tenants.items.into_iter().filter(|t| owned(&t.name_any())) {
        if let Some(k) = t.status.as_ref().and_then(|s| s.keys.as_ref()) {
            replacements.push((k.current_key_id.clone(), "<key-id>".into()));
            replacements.push((k.next_rotation.clone(), "<time>".into()));
        }
        // RoleBinding names end in a digest of the subject, which names the tenant: name them by the subject.
        for entry in &t.spec.access {
            for exec in [true, false] {
                let name = bulkhead::plan::access::binding_name(entry, exec);
                let (base, _digest) = name.rsplit_once('-').expect("binding names end in a digest");
                let subject =
                    format!("{base}-{:?}:{}:{}", entry.kind, entry.name, entry.namespace.as_deref().unwrap_or(""));
                replacements.push((name, subject));
            }
        }
        let mut v = serde_json::to_value(&t).expect("Tenant serializes");
        strip_metadata(&mut v);
        if let Some(conditions) = v["status"]["conditions"].as_array_mut() {
            for c in conditions {
                c.as_object_mut().map(|c| c.remove("lastTransitionTime"));
            }
        }
        if let Some(keys) = v["status"]["keys"].as_object_mut() {
            keys.remove("lastRotation");
            keys.remove("nextRotation");
        }
        out.insert(format!("Tenant//{}", t.name_any()), v);
    }
    for kind in Kind::ALL {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
        let by_tenant = ListParams::default().labels(bulkhead::plan::LABEL_TENANT);
        let by_manager = ListParams::default().labels(&format!(
            "{}={}",
            bulkhead::plan::LABEL_MANAGED_BY,
            bulkhead::plan::MANAGED_BY
        ));
        let (tenant_label, managed) = futures::join!(api.list(&by_tenant), api.list(&by_manager));
        let objects = tenant_label.expect("list by tenant label").items.into_iter().chain(managed.expect("list").items);
        for o in objects {
            let tenant = o.labels().get(bulkhead::plan::LABEL_TENANT).cloned().unwrap_or_default();
            let namespace = o.namespace().unwrap_or_default();
            // Selected by the tenant label, or by living in one of the set's namespaces.
            if !owned(&tenant) && !owned(&namespace) {
                continue;
            }
            let key = format!("{}/{namespace}/{}", kind.as_str(), o.name_any());
            let mut v = serde_json::to_value(&o).expect("object serializes");
            strip_metadata(&mut v);
            if let Some(obj) = v.as_object_mut() {
                // Written by Kubernetes' own controllers (quota usage, namespace phase), on their schedule.
                obj.remove("status");
            }
            if kind == Kind::Secret {
                v["data"] = secret_shape(&o, &tenant);
            }
            // Both selectors list most objects; a key names one object, so inserting twice is harmless.
            out.insert(key, v);
        }
    }
    replacements.retain(|(from, _)| !from.is_empty());
    replacements.push((prefix.to_string(), "<set>".into()));
    replacements.push((shard.to_string(), "<shard>".into()));
    out.into_iter()
        .map(|(k, mut v)| {
            replace_all(&mut v, &replacements);
            (replace_str(&k, &replacements), v)
        })
        .collect()
}

fn strip_metadata(v: &mut Value) {
    let Some(meta) = v["metadata"].as_object_mut() else { return };
    for field in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink"] {
        meta.remove(field);
    }
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.remove(bulkhead::controller::diff::APPLIED_HASH);
    }
    if let Some(refs) = meta.get_mut("ownerReferences").and_then(Value::as_array_mut) {
        for r in refs {
            r.as_object_mut().map(|r| r.remove("uid"));
        }
    }
}

/// Key names and value lengths of a Secret; for a key source Secret, the shape
/// of its material (how many key generations, which credentials), never a value.
fn secret_shape(o: &DynamicObject, tenant: &str) -> Value {
    let secret: Secret = serde_json::from_value(serde_json::to_value(o).expect("object")).expect("a Secret");
    if o.labels().get(bulkhead::controller::keys::ROLE_LABEL).map(String::as_str) == Some("key-source") {
        let material = bulkhead::controller::keys::decode_source(None, tenant, &secret)
            .unwrap_or_else(|e| panic!("key source of {tenant} unreadable: {e}"));
        let generated: BTreeMap<&String, Vec<&String>> =
            material.generated.iter().map(|(name, keys)| (name, keys.keys().collect())).collect();
        return json!({"keyGenerations": material.keys.len(), "generated": generated});
    }
    let data = secret.data.unwrap_or_default();
    Value::Object(data.into_iter().map(|(k, v)| (k, json!(v.0.len()))).collect())
}

fn replace_str(s: &str, replacements: &[(String, String)]) -> String {
    replacements.iter().fold(s.to_string(), |acc, (from, to)| acc.replace(from, to))
}

fn replace_all(v: &mut Value, replacements: &[(String, String)]) {
    match v {
        Value::String(s) => *s = replace_str(s, replacements),
        Value::Array(items) => items.iter_mut().for_each(|i| replace_all(i, replacements)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut item) in entries {
                replace_all(&mut item, replacements);
                map.insert(replace_str(&k, replacements), item);
            }
        }
        _ => {}
    }
}

/// The differences between two snapshots, by key and field path, for a readable failure.
fn differences(clean: &BTreeMap<String, Value>, killed: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in clean {
        match killed.get(k) {
            None => out.push(format!("missing after kills: {k}")),
            Some(w) => field_differences(&format!("{k}:"), v, w, &mut out),
        }
    }
    out.extend(killed.keys().filter(|k| !clean.contains_key(*k)).map(|k| format!("orphan after kills: {k}")));
    out
}

fn field_differences(path: &str, clean: &Value, killed: &Value, out: &mut Vec<String>) {
    match (clean, killed) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                field_differences(&format!("{path}.{key}"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                field_differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("differs: {path}: clean {a} killed {b}")),
        _ => {}
    }
}

/// The key source Secrets in the operator namespace of the tenants starting with `prefix`, per tenant.
async fn key_sources(client: &Client, prefix: &str) -> BTreeMap<String, usize> {
    let list = Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .list(&ListParams::default().labels(&format!("{}=key-source", bulkhead::controller::keys::ROLE_LABEL)))
        .await
        .expect("list key sources");
    let mut per_tenant = BTreeMap::new();
    for s in list.items {
        let tenant = s.labels().get(bulkhead::plan::LABEL_TENANT).cloned().unwrap_or_default();
        if tenant.starts_with(&format!("{prefix}-")) {
            *per_tenant.entry(tenant).or_insert(0) += 1;
        }
    }
    per_tenant
}

#[tokio::test]
async fn killed_mid_convergence_ends_exactly_like_a_clean_run() {
    let _serial = SERIAL.lock().await;
    const N: usize = 50;
    let started = Instant::now();
    let seed = seed();
    eprintln!("faults: kill schedule seed {seed} (replay with BULKHEAD_FAULT_SEED={seed})");
    let mut rng = Rng(seed);
    let client = admin().await;
    install_crd(&client).await;

    // Two sets of 50 with different name prefixes, normalized away in the
    // snapshot, converge side by side: one under an operator that is never
    // killed, one under an operator killed five times. Side by side costs one
    // convergence of wall time instead of two, needs no wait for 100
    // namespaces to be erased before the names could be reused, and puts the
    // reference run under the same load as the killed one.
    let (clean_prefix, killed_prefix) = (unique("fc"), unique("fk"));
    let (clean_shard, killed_shard) = (unique("s"), unique("s"));
    let (clean_names, killed_names) = futures::join!(
        apply_set(&client, &clean_prefix, &clean_shard, N),
        apply_set(&client, &killed_prefix, &killed_shard, N)
    );
    let clean_op = start_slow_operator(&clean_shard);
    let mut killed_op = start_slow_operator(&killed_shard);
    for round in 1..=5 {
        // Each kill lands after a random number of this incarnation's own
        // writes: its start-up (cache sync) takes seconds here, a kill before
        // any write would test nothing, and at most 220 writes a round keep
        // all five kills inside the ~1,500 writes the set needs (a time-based
        // schedule let a faster operator converge before the fifth).
        let after = rng.between(20, 220) as f64;
        wait_for("the restarted operator's writes before the kill", CONVERGE, || async {
            let w = killed_op.metric("bulkhead_api_writes_total").await?;
            (w >= after).then_some(())
        })
        .await;
        let writes = killed_op.metric("bulkhead_api_writes_total").await.unwrap_or_default();
        killed_op.kill();
        let (ready, all) = ready_count(&client, &killed_shard).await.unwrap_or_default();
        eprintln!(
            "faults: kill {round} after {writes} writes of this incarnation (aimed at {after}): {ready}/{all} Ready"
        );
        killed_op.restart();
    }
    futures::join!(
        wait_all_ready(&client, &clean_shard, N, CONVERGE),
        wait_all_ready(&client, &killed_shard, N, CONVERGE)
    );
    // Ready is reported before the last writes of a reconcile may land; compare once both are idle.
    let quiet = Duration::from_secs(2);
    futures::join!(clean_op.settled_writes(quiet, CONVERGE), killed_op.settled_writes(quiet, CONVERGE));
    eprintln!("faults: both sets converged and idle after {:?}", started.elapsed());

    let (clean_snap, killed_snap) = futures::join!(
        snapshot(&client, &clean_prefix, &clean_shard),
        snapshot(&client, &killed_prefix, &killed_shard)
    );
    eprintln!("faults: snapshots taken after {:?}", started.elapsed());
    // 50 Tenants, 100 namespaces and their contents, 50 key sources, per-tenant cluster objects.
    assert!(clean_snap.len() > N * 10, "the clean snapshot holds only {} objects", clean_snap.len());
    let diff = differences(&clean_snap, &killed_snap);
    assert!(
        diff.is_empty(),
        "the killed run (seed {seed}) ends differently in {} places; the first 40:\n{}",
        diff.len(),
        diff.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );

    // No double first key: one source each, one key generation each, and
    // every projection of it carries that one key (checked via the snapshot).
    let sources = key_sources(&client, &killed_prefix).await;
    assert_eq!(sources.len(), N, "a key source per tenant: {sources:?}");
    assert!(sources.values().all(|&n| n == 1), "exactly one key source per tenant: {sources:?}");
    for (key, v) in killed_snap.iter().filter(|(k, _)| k.starts_with(&format!("Secret/{OPERATOR_NAMESPACE}/"))) {
        assert_eq!(v["data"]["keyGenerations"], 1, "{key}: one first key, not two");
    }
    for (key, v) in killed_snap.iter().filter(|(k, _)| k.starts_with("Tenant/")) {
        let previous = v["status"]["keys"]["previousKeyIds"].as_array().map_or(0, Vec::len);
        assert_eq!(previous, 0, "{key}: a first key was made and replaced");
    }
    eprintln!("faults: {} objects compared per set, total {:?}", clean_snap.len(), started.elapsed());

    let all: Vec<String> = clean_names.into_iter().chain(killed_names).collect();
    delete_set(&client, &all).await;
    eprintln!("faults: cleaned up after {:?}", started.elapsed());
}

/// Runs `e2e/cluster <command>` against this checkout's control plane.
fn cluster(command: &str) {
    let status = std::process::Command::new(repo().join("e2e/cluster"))
        .arg(command)
        .status()
        .unwrap_or_else(|e| panic!("cannot run e2e/cluster {command}: {e}"));
    assert!(status.success(), "e2e/cluster {command} failed");
}

/// kube-apiserver stopped; dropping this starts it again, so a failing test
/// never leaves the shared control plane without its apiserver.
struct ApiserverDown(bool);

impl ApiserverDown {
    fn stop() -> Self {
        cluster("stop-apiserver");
        Self(true)
    }

    fn start(mut self) {
        cluster("start-apiserver");
        self.0 = false;
    }
}

impl Drop for ApiserverDown {
    fn drop(&mut self) {
        if self.0 {
            cluster("start-apiserver");
        }
    }
}

/// Waits until a freshly (re)started operator has made its first write: it is past start-up, converging.
async fn wait_first_write(op: &Operator) {
    wait_for("the operator's first write", CONVERGE, || async {
        op.metric("bulkhead_api_writes_total").await.filter(|&w| w > 0.0)
    })
    .await;
}

/// The operator's write counter, one line per kind and verb (for failure messages).
async fn writes_by_kind(op: &Operator) -> String {
    let (_, text) = op.http_get("/metrics").await.unwrap_or_default();
    text.lines().filter(|l| l.starts_with("bulkhead_api_writes_total{")).collect::<Vec<_>>().join("\n")
}

/// Warning and error lines of a text-format operator log.
fn problems(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect()
}

#[tokio::test]
async fn an_apiserver_restart_mid_convergence_is_survived_without_an_error_loop() {
    let _serial = SERIAL.lock().await;
    const N: usize = 20;
    let started = Instant::now();
    let client = admin().await;
    install_crd(&client).await;
    let (prefix, shard) = (unique("fa"), unique("s"));
    let names = apply_set(&client, &prefix, &shard, N).await;
    let mut op = start_slow_operator(&shard);
    wait_first_write(&op).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (ready_before, _) = ready_count(&client, &shard).await.unwrap_or_default();
    let log_at_stop = op.logs().len();
    let down = ApiserverDown::stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(op.is_running(), "the operator exited while the apiserver was down:\n{}", op.logs());
    down.start();
    let outage_log = op.logs()[log_at_stop..].to_string();
    eprintln!(
        "faults: apiserver down about 6 s with {ready_before}/{N} Ready; the operator logged {} warnings meanwhile",
        problems(&outage_log).len()
    );

    wait_all_ready(&client, &shard, N, CONVERGE).await;
    assert!(op.is_running(), "the operator exited after the apiserver came back:\n{}", op.logs());
    let settled = op.settled_writes(Duration::from_secs(2), CONVERGE).await;
    let log_at_rest = op.logs().len();
    let writes_at_rest = writes_by_kind(&op).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        op.metric("bulkhead_api_writes_total").await,
        Some(settled),
        "the operator kept writing after every tenant converged; writes by kind and verb before:\n{writes_at_rest}\nafter:\n{}\nlog since:\n{}",
        writes_by_kind(&op).await,
        &op.logs()[log_at_rest..]
    );
    let logs = op.logs();
    let after = problems(&logs[log_at_rest..]);
    assert!(after.is_empty(), "warnings or errors after recovery (an error loop?):\n{}", after.join("\n"));
    assert!(op.is_running(), "the operator exited:\n{logs}");
    eprintln!("faults: recovered, converged and idle after {:?}", started.elapsed());
    delete_set(&client, &names).await;
}

/// Server-side applies done by the operator to objects of `kind`, from its /metrics.
async fn applies_of(op: &Operator, kind: Kind) -> f64 {
    op.writes(kind.as_str(), "apply").await
}

/// Whether `live` holds everything `planned` sets (what server-side apply
/// guarantees): maps by key, lists item by item with equal length, scalars equal.
fn holds(live: &Value, planned: &Value) -> bool {
    match (live, planned) {
        (Value::Object(l), Value::Object(p)) => p.iter().all(|(k, v)| l.get(k).is_some_and(|lv| holds(lv, v))),
        (Value::Array(l), Value::Array(p)) => l.len() == p.len() && l.iter().zip(p).all(|(a, b)| holds(a, b)),
        (l, p) => l == p,
    }
}

/// One intruded object, and the operator and tenant it belongs to.
struct Target<'a> {
    client: &'a Client,
    op: &'a Operator,
    tenant: &'a str,
    kind: Kind,
    namespace: &'a str,
    name: &'a str,
}

impl Target<'_> {
    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.namespace, &self.kind.api_resource())
    }

    async fn live(&self) -> Value {
        serde_json::to_value(self.api().get(self.name).await.expect("the object exists")).expect("object")
    }

    /// The object as the operator's own plan wants it.
    async fn planned(&self) -> Value {
        let tenant = Api::<Tenant>::all(self.client.clone()).get(self.tenant).await.expect("the Tenant");
        let desired = bulkhead::plan::plan(&tenant, &bulkhead::plan::Config::default()).expect("the Tenant plans");
        let object = desired
            .objects
            .into_iter()
            .find(|o| {
                o.key().kind == self.kind
                    && o.key().name == self.name
                    && o.key().namespace.as_deref() == Some(self.namespace)
            })
            .unwrap_or_else(|| panic!("the plan has no {} {}/{}", self.kind.as_str(), self.namespace, self.name));
        let mut v = object.to_json();
        // Metadata is compared through labels only; the rest is the content.
        let labels = v["metadata"]["labels"].clone();
        v["metadata"] = json!({"labels": labels});
        v
    }

    /// Drift repairs of this object reported on the operator's security event stream.
    fn reports(&self) -> usize {
        self.op
            .security_events()
            .iter()
            .filter(|e| {
                e["event"]["action"] == "drift-repaired"
                    && e["bulkhead"]["tenant"] == self.tenant
                    && e["bulkhead"]["object"]["name"] == self.name
                    && e["bulkhead"]["object"]["kind"] == self.kind.as_str()
            })
            .count()
    }

    /// Drift repairs on the Tenant counted by its Kubernetes Events (a repeated
    /// Event is one object with a series count), and how many of those name this object.
    async fn events(&self) -> (usize, usize) {
        let list = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .expect("list Events");
        let repairs = list.items.into_iter().filter(|e| {
            e.reason.as_deref() == Some("DriftRepaired")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(self.tenant)
        });
        let mut total = (0, 0);
        for e in repairs {
            let count = e.series.as_ref().map_or(1, |s| s.count.max(1) as usize);
            total.0 += count;
            if e.note.as_deref().is_some_and(|n| n.contains(&format!("{}/{}", self.namespace, self.name))) {
                total.1 += count;
            }
        }
        total
    }

    /// Runs `intrude`, then expects the plan back with exactly one apply of
    /// this kind, one security event and one Kubernetes Event more, and no
    /// write at all for several seconds afterwards.
    /// Returns whether a Kubernetes Event names this object (checked by the caller at the end, so one
    /// missing Event does not hide the other checks).
    async fn expect_undone_once(&self, what: &str, intrude: impl std::future::Future<Output = ()>) -> bool {
        let quiet = Duration::from_secs(2);
        let before = self.op.settled_writes(quiet, CONVERGE).await;
        let applies = applies_of(self.op, self.kind).await;
        let (reports, events) = (self.reports(), self.events().await);
        let planned = self.planned().await;
        assert!(holds(&self.live().await, &planned), "{what}: the object differs from the plan before the intrusion");
        intrude.await;
        wait_for(&format!("{what} to be undone"), CONVERGE, || async {
            holds(&self.live().await, &planned).then_some(())
        })
        .await;
        wait_for(&format!("{what} to be reported"), CONVERGE, || async {
            (self.reports() > reports && self.events().await.0 > events.0).then_some(())
        })
        .await;
        let after = self.op.settled_writes(quiet, CONVERGE).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            self.op.metric("bulkhead_api_writes_total").await,
            Some(after),
            "{what}: the operator kept writing after the repair"
        );
        assert_eq!(applies_of(self.op, self.kind).await - applies, 1.0, "{what}: one restoring apply, not a fight");
        assert_eq!(self.reports(), reports + 1, "{what}: reported once on the security event stream");
        assert!(holds(&self.live().await, &planned), "{what}: the repair did not stick");
        eprintln!("faults: {what}: undone with {} writes in all", after - before);
        self.events().await.1 > events.1
    }
}

#[tokio::test]
async fn a_conflicting_writer_is_undone_reported_and_never_fought() {
    let _serial = SERIAL.lock().await;
    let client = admin().await;
    install_crd(&client).await;
    let (prefix, shard) = (unique("fw"), unique("s"));
    let names = apply_set(&client, &prefix, &shard, 1).await;
    let tenant = names[0].as_str();
    let op = start_operator(&shard);
    wait_all_ready(&client, &shard, 1, CONVERGE).await;
    let ns = format!("{tenant}-agents");
    let intruder = PatchParams::apply("intruder").force();

    // Server-side apply with force: the intruder takes the ingress rule over and opens it to the world.
    let policy =
        Target { client: &client, op: &op, tenant, kind: Kind::NetworkPolicy, namespace: &ns, name: "bulkhead-allow" };
    // Repairs whose Kubernetes Event does not name the object; asserted last so the other checks still run.
    let mut unnamed = Vec::new();
    let named = policy
        .expect_undone_once("ingress opened by a forced apply", async {
            let body = json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "bulkhead-allow", "namespace": ns},
                "spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}
            });
            Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
                .patch("bulkhead-allow", &intruder, &Patch::Apply(&body))
                .await
                .expect("the intruder's apply");
        })
        .await;
    if !named {
        unnamed.push(format!("NetworkPolicy {ns}/bulkhead-allow"));
    }

    // A merge patch adds a subject of the intruder's choosing to a binding.
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &ns);
    let managed = ListParams::default().labels(&bulkhead::plan::owner_selector(tenant));
    let binding = bindings.list(&managed).await.expect("list RoleBindings").items[0].name_any();
    let target = Target { client: &client, op: &op, tenant, kind: Kind::RoleBinding, namespace: &ns, name: &binding };
    let named = target
        .expect_undone_once("a subject added by a merge patch", async {
            let subjects = json!({"subjects": [{"kind": "User", "name": "mallory@evil.example", "apiGroup": "rbac.authorization.k8s.io"}]});
            bindings.patch(&binding, &PatchParams::default(), &Patch::Merge(&subjects)).await.expect("the merge patch");
        })
        .await;
    if !named {
        unnamed.push(format!("RoleBinding {ns}/{binding}"));
    }

    // A plain update (read, modify, replace) raises a quota.
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &ns);
    let quota =
        Target { client: &client, op: &op, tenant, kind: Kind::ResourceQuota, namespace: &ns, name: "bulkhead-quota" };
    let named = quota
        .expect_undone_once("a quota raised by an update", async {
            let mut q = quotas.get("bulkhead-quota").await.expect("the quota");
            let hard = q.spec.get_or_insert_default().hard.get_or_insert_default();
            hard.insert("pods".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("999".into()));
            quotas.replace("bulkhead-quota", &PostParams::default(), &q).await.expect("the update");
        })
        .await;
    if !named {
        unnamed.push(format!("ResourceQuota {ns}/bulkhead-quota"));
    }

    // A label and an annotation bulkhead does not manage are the intruder's to keep: no repair, no write.
    let before = op.settled_writes(Duration::from_secs(2), CONVERGE).await;
    let reports = policy.reports();
    let extra = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bulkhead-allow", "namespace": ns,
                     "labels": {"intruder.example/team": "blue"}, "annotations": {"intruder.example/note": "mine"}}
    });
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .patch("bulkhead-allow", &PatchParams::apply("intruder"), &Patch::Apply(&extra))
        .await
        .expect("the intruder's label");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let live = policy.live().await;
    assert_eq!(live["metadata"]["labels"]["intruder.example/team"], "blue", "a foreign label was removed");
    assert_eq!(live["metadata"]["annotations"]["intruder.example/note"], "mine", "a foreign annotation was removed");
    assert_eq!(op.metric("bulkhead_api_writes_total").await, Some(before), "a foreign label caused writes");
    assert_eq!(policy.reports(), reports, "a foreign label was reported as drift");
    delete_set(&client, &names).await;
    assert!(
        unnamed.is_empty(),
        "no Kubernetes Event names these repaired objects (the security event line does): {unnamed:?}"
    );
}

#[tokio::test]
async fn every_malformed_tenant_of_the_corpus_is_rejected_clearly() {
    let _serial = SERIAL.lock().await;
    let client = admin().await;
    install_crd(&client).await;
    // Untyped, so the apiserver (not serde) judges values the Rust types could not even hold.
    let raw: Api<DynamicObject> = Api::all_with(client.clone(), &kube::core::ApiResource::erase::<Tenant>(&()));
    let dry = PostParams { dry_run: true, ..Default::default() };
    let dir = repo().join("tests/corpus/bad-tenants");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/corpus/bad-tenants exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus holds only {} cases", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let case = file.file_name().unwrap_or_default().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).expect("corpus file readable");
        let expected: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        assert!(!expected.is_empty(), "{case}: no `# expect: <fragment>` line");
        let body: DynamicObject = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{case} is not YAML: {e}"));
        match raw.create(&dry, &body).await {
            Ok(_) => failures.push(format!("{case}: accepted")),
            Err(kube::Error::Api(s)) if s.code == 422 => {
                for fragment in expected.iter().filter(|f| !s.message.contains(*f)) {
                    failures.push(format!("{case}: message {:?} lacks {fragment:?}", s.message));
                }
                // Every rule names the field to fix; the apiserver's own note that it skipped
                // the rules (after a schema error) is the one line it reports at no field.
                if s.message
                    .lines()
                    .any(|l| l.contains("<nil>") && !l.contains("some validation rules were not checked"))
                {
                    failures.push(format!("{case}: message {:?} names no field", s.message));
                }
            }
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), files.len(), failures.join("\n"));

    // The controls: the examples, and a minimal Tenant like the corpus' base, are accepted.
    let minimal = "metadata: {name: corpus}\nspec:\n  namespaces: [{name: a}]\n".to_string();
    let examples = ["examples/acme-insurance.yaml", "examples/globex-telecom.yaml"]
        .map(|p| std::fs::read_to_string(repo().join(p)).expect("example readable"));
    for text in examples.iter().chain([&minimal]) {
        let mut v: Value = serde_yaml::from_str(text).expect("control YAML");
        v["apiVersion"] = json!("bulkhead.dev/v1alpha1");
        v["kind"] = json!("Tenant");
        let body: DynamicObject = serde_json::from_value(v).expect("control object");
        // The names are kept (a ServiceAccount subject names its tenant); validation comes before the
        // existence check, so "already exists" also means the object was valid.
        match raw.create(&dry, &body).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("a valid control Tenant was rejected: {e}"),
        }
    }
}
