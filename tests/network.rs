//! Network isolation, proved by someone else's NetworkPolicy engine
//! (sigs.k8s.io/kube-network-policies, see e2e/netpol-oracle) over the
//! policies the operator actually wrote to the real apiserver, with one
//! modelled pod per namespace and a truth table of expected flows.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bulkhead::api::Tenant;
use common::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

fn evaluate(input: &Value) -> BTreeMap<String, bool> {
    let v = run_oracle(input);
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["allowed"].as_bool().unwrap()))
        .collect()
}

async fn wait_ready(client: &Client, name: &str) {
    wait_tenant(client, name, "Ready", Duration::from_secs(30), |t| {
        t.status.as_ref()?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await
}

#[tokio::test]
async fn only_the_intended_flows_are_allowed() {
    let client = admin().await;
    install_crd(&client).await;
    let op = Operator::start(&unique("s"));
    let a = unique("a");
    let b = unique("b");
    let ingress_ns = unique("ingress-");
    let monitoring_ns = unique("monitoring-");
    let plain_ns = unique("plain-");
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in [&ingress_ns, &monitoring_ns, &plain_ns] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        nss.create(&PostParams::default(), &n).await.unwrap();
    }
    let mut ta =
        tenant_from("metadata: {name: x}\nspec:\n  namespaces: [{name: agents}, {name: payments}]\n", &a, &op.shard);
    ta["spec"]["network"] = json!({
        "ingressFrom": [{"namespaces": [ingress_ns], "ports": [{"port": 8443}]}, {"cidr": "192.0.2.0/24"}],
        "egressTo": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}, {"namespaces": [monitoring_ns], "ports": [{"port": 9090}]}]
    });
    let tb = tenant_from(
        "metadata: {name: x}\nspec:\n  namespaces: [{name: agents}]\n  network: {allowDNS: false}\n",
        &b,
        &op.shard,
    );
    apply_tenant(&client, &ta).await;
    apply_tenant(&client, &tb).await;
    wait_ready(&client, &a).await;
    wait_ready(&client, &b).await;

    let (a1, a2, b1) = (format!("{a}-agents"), format!("{a}-payments"), format!("{b}-agents"));
    let modelled = [&a1, &a2, &b1, &ingress_ns, &monitoring_ns, &plain_ns, &"kube-system".to_string()];
    let namespaces: Vec<Value> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|n| modelled.contains(&&n.name_any()))
        .map(|n| json!({"name": n.name_any(), "labels": n.labels()}))
        .collect();
    assert_eq!(namespaces.len(), modelled.len());
    let policies: Vec<Value> = Api::<NetworkPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.namespace().is_some_and(|ns| modelled.contains(&&ns)))
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    assert_eq!(policies.len(), 6, "two policies in each of the three tenant namespaces");

    let mut pods = Vec::new();
    for (ip, ns) in (10..).zip(modelled) {
        let labels = if ns == "kube-system" { json!({"k8s-app": "kube-dns"}) } else { json!({"app": "p"}) };
        pods.push(json!({"namespace": ns, "name": "p", "labels": labels, "ip": format!("10.244.0.{ip}")}));
    }
    let pod = |ns: &str| json!({"pod": format!("{ns}/p")});
    let ext = |addr: &str| json!({"ip": addr});
    // id, from, to, port, protocol, expected
    let table: Vec<(&str, Value, Value, i32, &str, bool)> = vec![
        ("inside tenant a, one way", pod(&a1), pod(&a2), 8080, "TCP", true),
        ("inside tenant a, other way", pod(&a2), pod(&a1), 5432, "TCP", true),
        ("a to b", pod(&a1), pod(&b1), 8080, "TCP", false),
        ("b to a", pod(&b1), pod(&a1), 8080, "TCP", false),
        ("a to dns udp", pod(&a1), pod("kube-system"), 53, "UDP", true),
        ("a to dns tcp", pod(&a2), pod("kube-system"), 53, "TCP", true),
        ("a to kube-system other port", pod(&a1), pod("kube-system"), 443, "TCP", false),
        ("b has dns switched off", pod(&b1), pod("kube-system"), 53, "UDP", false),
        ("ingress controller to a on its port", pod(&ingress_ns), pod(&a1), 8443, "TCP", true),
        ("ingress controller to a on another port", pod(&ingress_ns), pod(&a1), 8080, "TCP", false),
        ("ingress controller to b", pod(&ingress_ns), pod(&b1), 8443, "TCP", false),
        ("listed source cidr into a", ext("192.0.2.50"), pod(&a2), 8080, "TCP", true),
        ("other source cidr into a", ext("198.51.100.7"), pod(&a2), 8080, "TCP", false),
        ("a to listed cidr 443", pod(&a1), ext("203.0.113.9"), 443, "TCP", true),
        ("a to listed cidr 80", pod(&a1), ext("203.0.113.9"), 80, "TCP", false),
        ("a to the internet", pod(&a1), ext("8.8.8.8"), 443, "TCP", false),
        ("a to monitoring 9090", pod(&a2), pod(&monitoring_ns), 9090, "TCP", true),
        ("a to monitoring other port", pod(&a2), pod(&monitoring_ns), 22, "TCP", false),
        ("b to monitoring", pod(&b1), pod(&monitoring_ns), 9090, "TCP", false),
        ("b to the internet", pod(&b1), ext("203.0.113.9"), 443, "TCP", false),
        ("unmanaged namespace into a", pod(&plain_ns), pod(&a1), 8080, "TCP", false),
        ("a to unmanaged namespace", pod(&a1), pod(&plain_ns), 8080, "TCP", false),
        ("unmanaged namespace into b", pod(&plain_ns), pod(&b1), 8080, "TCP", false),
    ];
    let queries: Vec<Value> = table
        .iter()
        .map(
            |(id, from, to, port, proto, _)| json!({"id": id, "from": from, "to": to, "port": port, "protocol": proto}),
        )
        .collect();
    let verdicts = evaluate(&json!({"namespaces": namespaces, "policies": policies, "pods": pods, "queries": queries}));
    let mut wrong = Vec::new();
    for (id, _, _, _, _, expected) in &table {
        if verdicts.get(*id) != Some(expected) {
            wrong.push(format!("{id}: expected {expected}, engine says {:?}", verdicts.get(*id)));
        }
    }
    assert!(wrong.is_empty(), "flows differ from the intended isolation:\n{}", wrong.join("\n"));

    for t in [&a, &b] {
        let _ = Api::<Tenant>::all(client.clone()).delete(t, &DeleteParams::default()).await;
    }
    for ns in [&ingress_ns, &monitoring_ns, &plain_ns] {
        let _ = nss.delete(ns, &DeleteParams::default()).await;
    }
}
