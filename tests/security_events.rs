//! The operator's security event stream reaches a SIEM: a drift repair
//! produces the documented ECS line on stdout, the same line POSTed to a
//! local HTTP receiver, and a Kubernetes Event on the Tenant.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead::api::Tenant;
use common::*;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

#[tokio::test]
async fn drift_repair_reaches_stdout_the_siem_and_kubernetes_events() {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().extend(body.lines().map(str::to_string));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = admin().await;
    install_crd(&client).await;
    let shard = unique("s");
    let spool = std::env::temp_dir().join(unique("siem-spool-"));
    let op = Operator::start_with(
        &shard,
        &[
            ("BULKHEAD_SIEM_URL", &format!("http://{addr}/ingest")),
            ("BULKHEAD_SIEM_SPOOL_DIR", spool.to_str().unwrap()),
        ],
    );
    let name = unique("e");
    let mut t = tenant_from("metadata: {name: x}\nspec:\n  namespaces: [{name: agents}]\n", &name, &shard);
    t["apiVersion"] = json!("bulkhead.dev/v1alpha1");
    t["kind"] = json!("Tenant");
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants.patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&t)).await.unwrap();
    wait_for("the tenant to be Ready", Duration::from_secs(30), || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let s = tenants.get(&name).await.ok()?.status?;
            s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
        }
    })
    .await;

    let ns = format!("{name}-agents");
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .delete("bulkhead-default-deny", &DeleteParams::default())
        .await
        .unwrap();
    let is_repair = |e: &Value| {
        e["event"]["action"] == "drift-repaired"
            && e["bulkhead"]["tenant"] == name.as_str()
            && e["bulkhead"]["object"]["name"] == "bulkhead-default-deny"
    };
    let posted = wait_for("the SIEM to receive the drift repair", Duration::from_secs(30), || {
        let received = received.clone();
        async move {
            let lines = received.lock().unwrap().clone();
            lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|e| is_repair(e))
        }
    })
    .await;
    // The documented ECS schema.
    assert_eq!(posted["ecs"]["version"], "8.11.0");
    assert_eq!(posted["event"]["kind"], "event");
    assert_eq!(posted["event"]["category"][0], "configuration");
    assert_eq!(posted["event"]["reason"], "ObjectDeleted");
    assert_eq!(posted["bulkhead"]["object"]["kind"], "NetworkPolicy");
    assert_eq!(posted["bulkhead"]["object"]["namespace"], ns.as_str());
    assert_eq!(posted["observer"]["product"], "bulkhead");
    assert!(posted["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    // The same line on stdout.
    assert!(op.security_events().iter().any(is_repair), "stdout carries the same event");
    // And a Kubernetes Event on the Tenant.
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap();
    assert!(
        events.items.iter().any(|e| e.reason.as_deref() == Some("DriftRepaired")
            && e.message.as_deref().is_some_and(|m| m.contains("bulkhead-default-deny"))),
        "a DriftRepaired Event names the object"
    );
    let _ = tenants.delete(&name, &DeleteParams::default()).await;
}
