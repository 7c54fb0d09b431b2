//! High availability against the real control plane: two operator
//! processes elect a leader on a Lease; only the leader writes; when it dies
//! the other takes over and converges new Tenants; SIGTERM finishes, releases
//! the Lease and exits cleanly. Also the probes and metrics every replica serves.

mod common;

use std::time::{Duration, Instant};

use bulkhead::api::Tenant;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(45);
/// Lease timing of the test replicas: a dead leader is replaced within about 4 s.
const LEASE_ARGS: [&str; 4] = ["--lease-duration", "4", "--lease-renew-margin", "2"];

fn replica_args(lease: &str) -> Vec<&str> {
    let mut args = vec!["--leader-election", "--leader-election-lease", lease];
    args.extend(LEASE_ARGS);
    args
}

async fn apply_tenant(client: &Client, name: &str, shard: &str) {
    let mut body = tenant_from(
        r#"
metadata: {name: x}
spec:
  namespaces: [{name: agents}, {name: payments}]
  access: [{kind: User, name: ha-admin@example.com, profile: admin}]
  quota: {hard: {pods: "10"}}
  secrets: {generated: [{name: db, keys: [password]}]}
"#,
        name,
        shard,
    );
    body["apiVersion"] = json!("bulkhead.dev/v1alpha1");
    body["kind"] = json!("Tenant");
    Api::<Tenant>::all(client.clone())
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("Tenant {name} rejected: {e}"));
}

async fn wait_ready(client: &Client, name: &str) {
    let api: Api<Tenant> = Api::all(client.clone());
    wait_for(&format!("Tenant {name} Ready"), WAIT, || {
        let api = api.clone();
        async move {
            let t = api.get(name).await.ok()?;
            let s = t.status.as_ref()?;
            let ready = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && s.observed_generation == t.metadata.generation).then_some(())
        }
    })
    .await;
}

async fn delete_tenant(client: &Client, name: &str) {
    let api: Api<Tenant> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_for(&format!("Tenant {name} to be gone"), WAIT, || {
        let api = api.clone();
        async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
    })
    .await;
}

/// Waits until exactly one replica reports `bulkhead_leader 1`; its index.
async fn wait_for_one_leader(ops: &[&Operator]) -> usize {
    wait_for("exactly one leader", WAIT, || async {
        let mut leaders = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.metric("bulkhead_leader").await? == 1.0 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

async fn writes(op: &Operator) -> f64 {
    op.metric("bulkhead_api_writes_total").await.expect("the operator serves /metrics")
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_from_a_killed_leader_and_never_writes_while_standing_by() {
    let client = admin().await;
    install_crd(&client).await;
    let shard = unique("ha");
    let lease = format!("{shard}-leader");
    let args = replica_args(&lease);
    let mut a = Operator::start_replica(&shard, "a", &args);
    let mut b = Operator::start_replica(&shard, "b", &args);

    let leader = wait_for_one_leader(&[&a, &b]).await;
    let (leader_op, standby_op) = if leader == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
    // Every replica is ready (caches filled), leader or not: both serve probes and webhooks.
    for op in [&*leader_op, &*standby_op] {
        wait_for("replica ready", WAIT, || async { (op.http_get("/readyz").await?.0 == 200).then_some(()) }).await;
        assert_eq!(op.http_get("/healthz").await.map(|r| r.0), Some(200));
    }

    let first = format!("{shard}-one");
    apply_tenant(&client, &first, &shard).await;
    wait_ready(&client, &first).await;
    // The reconciles that echo the leader's own first writes may still be in
    // flight under load; once they settle, nothing changes and nothing is written.
    let lines = |t: String| t.lines().filter(|l| l.starts_with("bulkhead_api_writes")).map(str::to_string).collect();
    let mut before: Vec<String> = lines(leader_op.http_get("/metrics").await.map(|r| r.1).unwrap_or_default());
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now: Vec<String> = lines(leader_op.http_get("/metrics").await.map(|r| r.1).unwrap_or_default());
        if now == before {
            break;
        }
        assert!(settle.elapsed() < Duration::from_secs(20), "the leader keeps writing: {before:?} -> {now:?}");
        before = now;
    }
    let leader_writes = writes(leader_op).await;
    assert!(leader_writes >= 10.0, "the leader converged the tenant with its own writes ({leader_writes})");
    assert_eq!(writes(standby_op).await, 0.0, "the standby wrote nothing while the leader ran");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writes(leader_op).await, leader_writes, "no writes while nothing changes");
    assert_eq!(writes(standby_op).await, 0.0);
    assert_eq!(
        standby_op.metric("bulkhead_tenants").await,
        Some(0.0),
        "only the leader reports tenants, so dashboards never count them twice"
    );

    // The leader dies without a chance to release the Lease.
    leader_op.kill();
    let killed = Instant::now();
    let second = format!("{shard}-two");
    apply_tenant(&client, &second, &shard).await;
    wait_ready(&client, &second).await;
    let took = killed.elapsed();
    assert_eq!(standby_op.metric("bulkhead_leader").await, Some(1.0));
    assert!(writes(standby_op).await >= 10.0, "the new leader converged the second tenant");
    assert!(took < Duration::from_secs(30), "takeover and convergence took {took:?}");
    eprintln!("takeover after SIGKILL and convergence of a new tenant: {took:?}");

    delete_tenant(&client, &first).await;
    delete_tenant(&client, &second).await;
    drop(a);
    drop(b);
    let _ = Api::<Lease>::namespaced(client, OPERATOR_NAMESPACE).delete(&lease, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_releases_the_lease_and_exits_cleanly() {
    let client = admin().await;
    install_crd(&client).await;
    let shard = unique("hb");
    let lease = format!("{shard}-leader");
    let args = replica_args(&lease);
    let mut a = Operator::start_replica(&shard, "a", &args);
    assert_eq!(wait_for_one_leader(&[&a]).await, 0);
    let name = format!("{shard}-t");
    apply_tenant(&client, &name, &shard).await;
    wait_ready(&client, &name).await;

    let status = a.terminate(Duration::from_secs(15)).expect("the operator exits within 15 s of SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}\n{}", a.logs());
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let holder = leases.get(&lease).await.expect("the Lease exists").spec.and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease was released, so a standby need not wait for it to expire");
    let logs = a.logs();
    assert!(logs.contains("SIGTERM") && logs.contains("leader Lease released"), "{logs}");

    // Another replica picks up where it left off.
    let b = Operator::start_replica(&shard, "b", &args);
    assert_eq!(wait_for_one_leader(&[&b]).await, 0);
    delete_tenant(&client, &name).await;
    drop(b);
    let _ = leases.delete(&lease, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_metrics_and_runtime_log_level() {
    let client = admin().await;
    install_crd(&client).await;
    let shard = unique("hm");
    let op = Operator::start_replica(&shard, "a", &[]);
    wait_for("/readyz 200", WAIT, || async { (op.http_get("/readyz").await?.0 == 200).then_some(()) }).await;
    let (status, body) = op.http_get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics exposition");
    // Families with samples so far; counters appear with their first sample.
    for family in ["bulkhead_leader", "bulkhead_tenants", "bulkhead_build_info", "bulkhead_key_age_seconds"] {
        assert!(body.contains(&format!("# TYPE {family} ")), "{family} missing:\n{body}");
    }
    assert_eq!(op.metric("bulkhead_leader").await, Some(1.0), "without leader election a replica always leads");

    // The tenant gauges, the reconcile histogram and the drift counter follow what the controller does.
    let name = format!("{shard}-m");
    apply_tenant(&client, &name, &shard).await;
    wait_ready(&client, &name).await;
    let (_, body) = op.http_get("/metrics").await.expect("metrics");
    assert_eq!(metric_sum(&body, "bulkhead_tenants{condition=\"Ready\",status=\"True\"}"), 1.0, "{body}");
    assert!(body.contains(&format!("bulkhead_key_age_seconds{{tenant=\"{name}\"}}")), "{body}");
    assert!(metric_sum(&body, "bulkhead_reconcile_duration_seconds_count") >= 1.0, "{body}");
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &format!("{name}-agents"));
    policies.delete("bulkhead-allow", &DeleteParams::default()).await.expect("delete a managed policy");
    wait_for("the drift repair counted", WAIT, || async {
        let (_, body) = op.http_get("/metrics").await?;
        (metric_sum(&body, "bulkhead_drift_repairs_total{kind=\"NetworkPolicy\"}") >= 1.0).then_some(())
    })
    .await;
    delete_tenant(&client, &name).await;
    assert_eq!(op.metric("bulkhead_tenants").await, Some(0.0), "a deleted tenant is no longer reported");

    let addr = op.metrics_addr().expect("address logged");
    let put = |level: &'static str| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let req = format!(
                "PUT /debug/loglevel HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{level}",
                level.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.unwrap();
            buf
        }
    };
    assert!(put("debug").await.starts_with("HTTP/1.0 200"));
    assert_eq!(op.http_get("/debug/loglevel").await.map(|r| r.1.trim().to_string()), Some("debug".into()));
    assert!(put("no such=level=x").await.starts_with("HTTP/1.0 400"), "an invalid filter is refused");
    assert!(put("info").await.starts_with("HTTP/1.0 200"));
}
