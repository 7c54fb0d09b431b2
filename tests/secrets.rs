//! Per-tenant keys and credentials against the real control plane: distinct
//! keys, who can read them, byte-for-byte repair, rotation, loss, master-key
//! wrapping, crypto-erasure, and no value ever in the operator's logs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bulkhead::api::Tenant;
use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn tenant(name: &str, shard: &str, spec: Value) -> Value {
    let mut t =
        tenant_from("metadata: {name: x}\nspec:\n  namespaces: [{name: agents}, {name: payments}]\n", name, shard);
    if let Some(extra) = spec.as_object() {
        for (k, v) in extra {
            t["spec"][k] = v.clone();
        }
    }
    t
}

fn condition(t: &Tenant, type_: &str) -> Option<(String, String)> {
    t.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_secrets(client: &Client, name: &str, status: &str, reason: &str) -> Tenant {
    wait_tenant(client, name, &format!("SecretsReady={status}/{reason}"), WAIT, |t| {
        (t.status.as_ref()?.observed_generation == t.metadata.generation
            && condition(t, "SecretsReady")? == (status.to_string(), reason.to_string()))
            .then(|| t.clone())
    })
    .await
}

/// Waits until the Tenant's current key id is no longer `old`.
async fn wait_new_key(
    client: &Client,
    name: &str,
    old: &str,
    what: &str,
    timeout: Duration,
) -> bulkhead::api::KeysStatus {
    wait_tenant(client, name, what, timeout, |t| {
        let k = t.status.as_ref()?.keys.clone()?;
        (k.current_key_id != old).then_some(k)
    })
    .await
}

/// The tenant's key source Secret in the operator namespace, if it exists.
async fn source_secret(client: &Client, tenant: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get_opt(&format!("bulkhead-keys-{tenant}"))
        .await
        .expect("reading the source Secret")
}

async fn keys_in(client: &Client, ns: &str) -> BTreeMap<String, ByteString> {
    Api::<Secret>::namespaced(client.clone(), ns).get("bulkhead-keys").await.unwrap().data.unwrap()
}

fn current_dek(keys: &BTreeMap<String, ByteString>) -> Vec<u8> {
    let id = String::from_utf8(keys["dek-id"].0.clone()).unwrap();
    keys[&format!("dek.{id}")].0.clone()
}

fn profiles(name: &str) -> Value {
    json!(
        ["admin", "developer", "auditor", "viewer"]
            .iter()
            .map(|p| json!({"kind": "User", "name": format!("{name}-{p}"), "profile": p}))
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn keys_are_distinct_per_tenant_and_readable_only_where_needed() {
    let client = admin().await;
    install_crd(&client).await;
    let op = Operator::start(&unique("s"));
    let a = unique("a");
    let b = unique("b");
    let creds = json!({"generated": [{"name": "crm-db", "keys": ["password"]}]});
    apply_tenant(&client, &tenant(&a, &op.shard, json!({"access": profiles(&a), "secrets": creds}))).await;
    apply_tenant(&client, &tenant(&b, &op.shard, json!({"access": profiles(&b)}))).await;
    wait_secrets(&client, &a, "True", "KeysReady").await;
    wait_secrets(&client, &b, "True", "KeysReady").await;

    let a1 = keys_in(&client, &format!("{a}-agents")).await;
    let a2 = keys_in(&client, &format!("{a}-payments")).await;
    let b1 = keys_in(&client, &format!("{b}-agents")).await;
    assert_eq!(a1, a2, "one tenant, the same keys in every namespace");
    assert_eq!(current_dek(&a1).len(), 32);
    assert_ne!(current_dek(&a1), current_dek(&b1), "tenants never share keys");
    let audit_id = String::from_utf8(a1["audit-key-id"].0.clone()).unwrap();
    assert_eq!(a1[&format!("audit-key.{audit_id}")].0.len(), 32);
    assert_ne!(a1[&format!("audit-key.{audit_id}")].0, current_dek(&a1));
    let pw = Api::<Secret>::namespaced(client.clone(), &format!("{a}-agents")).get("crm-db").await.unwrap();
    let pw = pw.data.unwrap()["password"].0.clone();
    assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&pw).unwrap().len(), 32);

    // Who may read what, decided by the real apiserver.
    for profile in ["admin", "developer", "auditor", "viewer"] {
        let as_b = as_user(&format!("{b}-{profile}"), &[]).await;
        let code = status_of(Api::<Secret>::namespaced(as_b, &format!("{a}-agents")).get("bulkhead-keys").await);
        assert_eq!(code, 403, "tenant {b}'s {profile} reads tenant {a}'s keys");
        let as_a = as_user(&format!("{a}-{profile}"), &[]).await;
        let own = status_of(Api::<Secret>::namespaced(as_a.clone(), &format!("{a}-agents")).get("bulkhead-keys").await);
        let expect = if matches!(profile, "admin" | "developer") { 200 } else { 403 };
        assert_eq!(own, expect, "{profile} reading its own tenant's keys");
        let source =
            status_of(Api::<Secret>::namespaced(as_a, OPERATOR_NAMESPACE).get(&format!("bulkhead-keys-{a}")).await);
        assert_eq!(source, 403, "{profile} reads the operator's source Secret");
    }

    // A namespace added later receives the very same keys.
    let mut t = tenant(&a, &op.shard, json!({"access": profiles(&a), "secrets": creds}));
    t["spec"]["namespaces"] = json!([{"name": "agents"}, {"name": "payments"}, {"name": "recordings"}]);
    apply_tenant(&client, &t).await;
    let recordings = format!("{a}-recordings");
    let late = wait_for("keys in the new namespace", WAIT, || {
        let client = client.clone();
        let recordings = recordings.clone();
        async move { Api::<Secret>::namespaced(client, &recordings).get("bulkhead-keys").await.ok()?.data }
    })
    .await;
    assert_eq!(late, a1);

    // Deleted or edited projections come back byte for byte.
    let ns = format!("{a}-agents");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets.delete("bulkhead-keys", &DeleteParams::default()).await.unwrap();
    secrets
        .patch("crm-db", &PatchParams::default(), &Patch::Merge(json!({"data": {"password": "AAAA"}})))
        .await
        .unwrap();
    wait_for("projections restored identically", WAIT, || {
        let secrets = secrets.clone();
        let (a1, pw) = (a1.clone(), pw.clone());
        async move {
            let keys = secrets.get("bulkhead-keys").await.ok()?.data?;
            let cred = secrets.get("crm-db").await.ok()?.data?;
            (keys == a1 && cred["password"].0 == pw).then_some(())
        }
    })
    .await;
    delete_tenant(&client, &a).await;
    delete_tenant(&client, &b).await;
}

fn status_of<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn keys_rotate_on_schedule_and_on_request_keeping_previous_ones() {
    let client = admin().await;
    install_crd(&client).await;
    let op = Operator::start(&unique("s"));
    let name = unique("r");
    apply_tenant(&client, &tenant(&name, &op.shard, json!({"secrets": {"rotationPeriod": "12s", "keepPrevious": 2}})))
        .await;
    let t = wait_secrets(&client, &name, "True", "KeysReady").await;
    let first = t.status.unwrap().keys.unwrap();
    let ns = format!("{name}-agents");
    let before = keys_in(&client, &ns).await;
    // The schedule rotates without any change to the Tenant: no polling, a timed requeue.
    let rotated =
        wait_new_key(&client, &name, &first.current_key_id, "a scheduled rotation", Duration::from_secs(40)).await;
    assert_eq!(rotated.previous_key_ids, vec![first.current_key_id.clone()]);
    let after = wait_for("the projection to carry the new key", WAIT, || {
        let client = client.clone();
        let (ns, id) = (ns.clone(), rotated.current_key_id.clone());
        async move {
            let k = keys_in(&client, &ns).await;
            (k["dek-id"].0 == id.as_bytes()).then_some(k)
        }
    })
    .await;
    let old = format!("dek.{}", first.current_key_id);
    assert_eq!(after[&old], before[&old], "the previous key stays, unchanged, for decryption");
    assert_ne!(current_dek(&after), current_dek(&before));

    // A manual trigger rotates at once.
    annotate_tenant(&client, &name, "bulkhead.dev/rotate-keys", "incident-42").await;
    let manual = wait_new_key(&client, &name, &rotated.current_key_id, "a manual rotation", WAIT).await;
    assert!(manual.previous_key_ids.len() <= 2, "keepPrevious bounds what is kept");
    assert!(op.security_events().iter().any(|e| e["event"]["action"] == "key-rotated"));
    delete_tenant(&client, &name).await;
}

#[tokio::test]
async fn a_lost_source_is_a_loud_error_never_a_new_key() {
    let client = admin().await;
    install_crd(&client).await;
    let op = Operator::start(&unique("s"));
    let name = unique("l");
    apply_tenant(&client, &tenant(&name, &op.shard, json!({}))).await;
    wait_secrets(&client, &name, "True", "KeysReady").await;
    let ns = format!("{name}-agents");
    let before = keys_in(&client, &ns).await;
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .delete(&format!("bulkhead-keys-{name}"), &DeleteParams::default())
        .await
        .unwrap();
    let t = wait_secrets(&client, &name, "False", "SourceSecretLost").await;
    assert_eq!(condition(&t, "Ready").unwrap().0, "False");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(keys_in(&client, &ns).await, before, "projections are neither replaced nor pruned");
    assert!(source_secret(&client, &name).await.is_none(), "no silent regeneration");
    assert!(op.security_events().iter().any(|e| e["event"]["action"] == "key-material-unavailable"));
    // Accepting new keys is an explicit act.
    annotate_tenant(&client, &name, "bulkhead.dev/regenerate-keys", "true").await;
    wait_secrets(&client, &name, "True", "KeysReady").await;
    assert_ne!(keys_in(&client, &ns).await, before);
    delete_tenant(&client, &name).await;
}

#[tokio::test]
async fn master_key_wraps_the_source_and_logs_never_hold_a_value() {
    let client = admin().await;
    install_crd(&client).await;
    let dir = std::env::temp_dir().join(unique("mk"));
    std::fs::create_dir_all(&dir).unwrap();
    let mk = dir.join("master.key");
    std::fs::write(&mk, base64::engine::general_purpose::STANDARD.encode([42u8; 32])).unwrap();
    let shard = unique("s");
    let op = Operator::start_with(&shard, &[("BULKHEAD_MASTER_KEY_FILE", mk.to_str().unwrap()), ("RUST_LOG", "trace")]);
    let name = unique("m");
    let spec = json!({"secrets": {"generated": [{"name": "crm-db", "keys": ["password", "user"]}]}, "deletionPolicy": "Delete"});
    apply_tenant(&client, &tenant(&name, &shard, spec)).await;
    wait_secrets(&client, &name, "True", "KeysReady").await;
    let ns = format!("{name}-agents");
    let keys = keys_in(&client, &ns).await;
    let creds = Api::<Secret>::namespaced(client.clone(), &ns).get("crm-db").await.unwrap().data.unwrap();
    let source = source_secret(&client, &name).await.expect("the source Secret exists");
    assert!(source.annotations().contains_key("bulkhead.dev/master-key-id"));
    let stored = &source.data.unwrap()["material"].0;

    // Every secret value in the forms it could leak in.
    let mut values: Vec<Vec<u8>> = Vec::new();
    for (k, v) in keys.iter().chain(creds.iter()) {
        if k.starts_with("dek.") || k.starts_with("audit-key.") || creds.contains_key(k) {
            values.push(v.0.clone());
        }
    }
    assert!(values.len() >= 4);
    let b64 = base64::engine::general_purpose::STANDARD;
    for v in &values {
        assert!(!stored.windows(v.len()).any(|w| w == v.as_slice()), "plaintext value in the wrapped source");
        let enc = b64.encode(v);
        assert!(!String::from_utf8_lossy(stored).contains(&enc), "base64 value in the wrapped source");
    }
    // Rotate, then erase, for a full lifecycle in the logs.
    annotate_tenant(&client, &name, "bulkhead.dev/rotate-keys", "1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    delete_tenant(&client, &name).await;
    assert!(source_secret(&client, &name).await.is_none(), "Delete destroys the key material (crypto-erasure)");
    let logs = op.logs() + &std::fs::read_to_string(&op.stdout).unwrap_or_default();
    assert!(logs.len() > 10_000, "trace logging was on ({} bytes)", logs.len());
    for v in &values {
        let forms = [
            hex::encode(v),
            b64.encode(v),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v),
            String::from_utf8_lossy(v).into_owned(),
        ];
        for form in forms.iter().filter(|f| f.len() >= 16) {
            assert!(!logs.contains(form.as_str()), "a secret value reached the operator's output");
        }
    }
    assert!(!logs.contains(&b64.encode([42u8; 32])), "the master key reached the logs");
}
