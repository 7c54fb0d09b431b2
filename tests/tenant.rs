//! The Tenant controller against the real control plane: validation,
//! convergence, RBAC as each profile, drift repair, conflicts, pruning,
//! deletion policies, tenant-wide quota and write-free idling.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bulkhead::api::Tenant;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, LimitRange, Namespace, Pod, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn dry() -> PostParams {
    PostParams { dry_run: true, ..Default::default() }
}

fn condition(t: &Tenant, type_: &str) -> Option<(String, String, String)> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the Tenant reports `Ready=<status>` for its current generation.
async fn wait_ready_is(client: &Client, name: &str, status: &str) -> Tenant {
    wait_tenant(client, name, &format!("Ready={status}"), WAIT, |t| {
        let current = t.status.as_ref()?.observed_generation == t.metadata.generation;
        (current && condition(t, "Ready")?.0 == status).then(|| t.clone())
    })
    .await
}

async fn wait_ready(client: &Client, name: &str) -> Tenant {
    wait_ready_is(client, name, "True").await
}

async fn setup() -> (Client, Operator) {
    let client = admin().await;
    install_crd(&client).await;
    let shard = unique("s");
    (client, Operator::start(&shard))
}

fn basic(name: &str, shard: &str, extra: Value) -> Value {
    let mut t = tenant_from(
        r#"
metadata: {name: x}
spec:
  namespaces: [{name: agents}, {name: payments}]
"#,
        name,
        shard,
    );
    if let (Some(spec), Some(extra)) = (t["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    t
}

fn api_status(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Ok(_) => (200, String::new()),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("unexpected client error {e}"),
    }
}

/// Malformed Tenants are rejected by the corpus in tests/corpus/bad-tenants (run by tests/faults.rs).
#[tokio::test]
async fn crd_fills_in_defaults_of_a_minimal_tenant() {
    let client = admin().await;
    install_crd(&client).await;
    let api: Api<Tenant> = Api::all(client.clone());
    let good: Tenant = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": unique("ok")},
        "spec": {"namespaces": [{"name": "a"}]}
    }))
    .unwrap();
    let created = api.create(&dry(), &good).await.expect("valid tenant accepted");
    assert_eq!(created.spec.network.isolation, bulkhead::api::Isolation::Strict);
    assert!(created.spec.network.allow_dns);
    assert_eq!(created.spec.deletion_policy, bulkhead::api::DeletionPolicy::Retain);
    // The sink's CA and headers from the pod's own namespace are accepted as documented.
    let siem: Tenant = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": unique("ok")},
        "spec": {"namespaces": [{"name": "a"}], "audit": {"sink": "https://siem.example/ingest",
            "sinkCA": {"configMap": "trust-bundle.example", "key": "ca.crt"},
            "sinkHeaders": [{"name": "Authorization", "secret": "siem-token", "key": "header"}]}}
    }))
    .unwrap();
    let created = api.create(&dry(), &siem).await.expect("https sink with CA and header accepted");
    assert_eq!(created.spec.audit.sink_headers[0].name, "Authorization");
}

#[tokio::test]
async fn tenant_converges_with_every_control() {
    let (client, op) = setup().await;
    let name = unique("t");
    let tenant = basic(
        &name,
        &op.shard,
        json!({
            "quota": {"hard": {"requests.cpu": "2", "requests.memory": "2048Mi", "pods": "10"}},
            "limits": {"default": {"cpu": "500m", "memory": "512Mi"}, "defaultRequest": {"cpu": "0.1"}},
            "access": [
                {"kind": "User", "name": format!("{name}-alice"), "profile": "admin"},
                {"kind": "Group", "name": format!("{name}-auditors"), "profile": "auditor"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": format!("{name}-agents"), "profile": "developer"}
            ]
        }),
    );
    apply_tenant(&client, &tenant).await;
    let t = wait_ready(&client, &name).await;
    let status = t.status.clone().unwrap();
    assert_eq!(status.namespace_count, 2);
    for c in ["NamespacesReady", "NetworkIsolated", "AccessConfigured", "QuotaEnforced"] {
        assert_eq!(condition(&t, c).unwrap().0, "True", "{c}");
    }
    assert!(t.finalizers().contains(&"bulkhead.dev/cleanup".to_string()));
    for short in ["agents", "payments"] {
        let ns = format!("{name}-{short}");
        let n = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
        let labels = n.labels();
        assert_eq!(labels["bulkhead.dev/tenant"], name);
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert!(n.metadata.owner_references.is_none(), "namespaces never belong to the Tenant for GC");
        let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns).list(&ListParams::default()).await.unwrap();
        let mut names: Vec<String> = nps.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        assert_eq!(names, vec!["bulkhead-allow", "bulkhead-default-deny"]);
        let rq = Api::<ResourceQuota>::namespaced(client.clone(), &ns).get("bulkhead-quota").await.unwrap();
        let hard = rq.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.memory"].0, "2Gi");
        let lr = Api::<LimitRange>::namespaced(client.clone(), &ns).get("bulkhead-limits").await.unwrap();
        assert_eq!(lr.spec.unwrap().limits[0].default_request.as_ref().unwrap()["cpu"].0, "100m");
        let rbs = Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
            .await
            .unwrap();
        assert_eq!(rbs.items.len(), 3);
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns).get("default").await.unwrap();
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
    let cr = Api::<ClusterRole>::all(client.clone()).get(&format!("bulkhead-tenant-{name}")).await.unwrap();
    assert_eq!(cr.rules.unwrap()[0].resource_names.as_deref(), Some(&[name.clone()][..]));
    let crb = Api::<ClusterRoleBinding>::all(client.clone()).get(&format!("bulkhead-tenant-{name}")).await.unwrap();
    assert_eq!(crb.subjects.unwrap().len(), 3);
    let events = op.security_events();
    assert!(
        events.iter().any(|e| e["event"]["action"] == "tenant-created" && e["bulkhead"]["tenant"] == name.as_str())
    );
    assert!(
        events.iter().any(|e| e["event"]["action"] == "access-granted" && e["bulkhead"]["tenant"] == name.as_str())
    );
    delete_tenant(&client, &name).await;
}

struct Profiles {
    tenant: String,
    users: BTreeMap<&'static str, String>,
}

fn with_profiles(name: &str, shard: &str, compliance: Value) -> (Value, Profiles) {
    let users: BTreeMap<&'static str, String> = ["admin", "developer", "auditor", "viewer"]
        .into_iter()
        .map(|p| (p, format!("{name}-{p}@example.com")))
        .collect();
    let access: Vec<Value> = users.iter().map(|(p, u)| json!({"kind": "User", "name": u, "profile": p})).collect();
    let tenant = basic(
        name,
        shard,
        json!({"access": access, "compliance": compliance, "quota": {"hard": {"pods": "5"}}, "limits": {"default": {"cpu": "1"}}}),
    );
    (tenant, Profiles { tenant: name.to_string(), users })
}

#[tokio::test]
async fn profiles_are_enforced_by_the_real_rbac() {
    let (client, op) = setup().await;
    let a = unique("a");
    let b = unique("b");
    let (ta, pa) = with_profiles(&a, &op.shard, json!([]));
    let (tb, _) = with_profiles(&b, &op.shard, json!(["PCI-DSS"]));
    apply_tenant(&client, &ta).await;
    apply_tenant(&client, &tb).await;
    wait_ready(&client, &a).await;
    wait_ready(&client, &b).await;
    let a_ns = format!("{a}-agents");
    let b_ns = format!("{b}-agents");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}})).unwrap();
    Api::<Secret>::namespaced(client.clone(), &a_ns).create(&PostParams::default(), &secret).await.unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]}}}
    }))
    .unwrap();

    for (profile, user) in &pa.users {
        let c = as_user(user, &[]).await;
        let writer = matches!(*profile, "admin" | "developer");
        // Work inside the own tenant.
        let (code, msg) = api_status(Api::<ConfigMap>::namespaced(c.clone(), &a_ns).create(&dry(), &cm).await);
        assert_eq!(code == 200, writer, "{profile} create configmap: {code} {msg}");
        let fresh: Secret =
            serde_json::from_value(json!({"metadata": {"name": "new"}, "stringData": {"k": "v"}})).unwrap();
        let (code, msg) = api_status(Api::<Secret>::namespaced(c.clone(), &a_ns).create(&dry(), &fresh).await);
        assert_eq!(code == 200, writer, "{profile} create secret: {code} {msg}");
        let (code, _) = api_status(Api::<Deployment>::namespaced(c.clone(), &a_ns).create(&dry(), &deploy).await);
        assert_eq!(code == 200, writer, "{profile} create deployment");
        let (code, _) = api_status(Api::<ConfigMap>::namespaced(c.clone(), &a_ns).list(&ListParams::default()).await);
        assert_eq!(code, 200, "{profile} lists configmaps in its own tenant");
        // Secret values only for those who need them.
        let (code, _) = api_status(Api::<Secret>::namespaced(c.clone(), &a_ns).get("s").await);
        assert_eq!(code == 200, writer, "{profile} reads a secret");
        // Nothing in the other tenant.
        for res in [
            api_status(Api::<ConfigMap>::namespaced(c.clone(), &b_ns).list(&ListParams::default()).await),
            api_status(Api::<Pod>::namespaced(c.clone(), &b_ns).list(&ListParams::default()).await),
            api_status(Api::<ConfigMap>::namespaced(c.clone(), &b_ns).create(&dry(), &cm).await),
            api_status(Api::<Tenant>::all(c.clone()).get(&b).await),
        ] {
            assert_eq!(res.0, 403, "{profile} reached tenant {b}: {res:?}");
        }
        // Nothing cluster-scoped but its own Tenant.
        assert_eq!(api_status(Api::<Tenant>::all(c.clone()).get(&a).await).0, 200, "{profile} reads its Tenant");
        assert_eq!(api_status(Api::<Namespace>::all(c.clone()).list(&ListParams::default()).await).0, 403);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": unique("x")}})).unwrap();
        assert_eq!(api_status(Api::<Namespace>::all(c.clone()).create(&dry(), &ns).await).0, 403);
        let cr: ClusterRole = serde_json::from_value(json!({"metadata": {"name": unique("x")}})).unwrap();
        assert_eq!(api_status(Api::<ClusterRole>::all(c.clone()).create(&dry(), &cr).await).0, 403);
        // Quota, limits and namespace labels are out of reach.
        let rqs = Api::<ResourceQuota>::namespaced(c.clone(), &a_ns);
        let patch = Patch::Merge(json!({"spec": {"hard": {"pods": "1000"}}}));
        assert_eq!(
            api_status(rqs.patch("bulkhead-quota", &PatchParams::default(), &patch).await).0,
            403,
            "{profile} edits quota"
        );
        assert_eq!(
            api_status(rqs.delete("bulkhead-quota", &DeleteParams::default()).await).0,
            403,
            "{profile} deletes quota"
        );
        let lrs = Api::<LimitRange>::namespaced(c.clone(), &a_ns);
        assert_eq!(api_status(lrs.delete("bulkhead-limits", &DeleteParams::default()).await).0, 403);
        let relabel = Patch::Merge(json!({"metadata": {"labels": {"bulkhead.dev/tenant": b}}}));
        let (code, _) =
            api_status(Api::<Namespace>::all(c.clone()).patch(&a_ns, &PatchParams::default(), &relabel).await);
        assert_eq!(code, 403, "{profile} relabels its namespace");
        // Events for the auditor, NetworkPolicies for the admin only.
        let (code, _) = api_status(Api::<Event>::namespaced(c.clone(), &a_ns).list(&ListParams::default()).await);
        assert_eq!(code == 200, matches!(*profile, "admin" | "developer" | "auditor"), "{profile} lists events");
        let np: NetworkPolicy =
            serde_json::from_value(json!({"metadata": {"name": "mine"}, "spec": {"podSelector": {}}})).unwrap();
        let (code, _) = api_status(Api::<NetworkPolicy>::namespaced(c.clone(), &a_ns).create(&dry(), &np).await);
        assert_eq!(code == 200, *profile == "admin", "{profile} creates a NetworkPolicy");
    }

    // Pod Security: restricted rejects a privileged pod even from the tenant admin.
    let admin_a = as_user(&pa.users["admin"], &[]).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}
    }))
    .unwrap();
    let (code, message) = api_status(Api::<Pod>::namespaced(admin_a, &a_ns).create(&dry(), &pod).await);
    assert_eq!(code, 403);
    assert!(message.contains("PodSecurity"), "{message}");
    // PCI-DSS: no exec for the admin of tenant b; tenant a's admin has it.
    let review = |user: String, ns: String| async move {
        let c = as_user(&user, &[]).await;
        let ssar: k8s_openapi::api::authorization::v1::SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"namespace": ns, "verb": "create", "resource": "pods", "subresource": "exec"}}
        }))
        .unwrap();
        Api::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>::all(c)
            .create(&PostParams::default(), &ssar)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    };
    assert!(review(pa.users["admin"].clone(), a_ns.clone()).await);
    assert!(!review(format!("{b}-admin@example.com"), b_ns.clone()).await, "PCI-DSS forbids exec");
    let _ = pa.tenant;
    delete_tenant(&client, &a).await;
    delete_tenant(&client, &b).await;
}

async fn rv_of<K>(api: &Api<K>, name: &str) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.ok().flatten().and_then(|o| o.meta().resource_version.clone())
}

#[tokio::test]
async fn drift_on_every_managed_kind_is_repaired() {
    let (client, op) = setup().await;
    let name = unique("d");
    let (tenant, profiles) = with_profiles(&name, &op.shard, json!([]));
    apply_tenant(&client, &tenant).await;
    wait_ready(&client, &name).await;
    let ns = format!("{name}-agents");
    let pp = PatchParams::default();

    // Deleted objects come back.
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    nps.delete("bulkhead-default-deny", &DeleteParams::default()).await.unwrap();
    let rqs: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    rqs.delete("bulkhead-quota", &DeleteParams::default()).await.unwrap();
    let lrs: Api<LimitRange> = Api::namespaced(client.clone(), &ns);
    lrs.delete("bulkhead-limits", &DeleteParams::default()).await.unwrap();
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    let rb_name = rbs.list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead")).await.unwrap().items
        [0]
    .name_any();
    rbs.delete(&rb_name, &DeleteParams::default()).await.unwrap();
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    crbs.delete(&format!("bulkhead-tenant-{name}"), &DeleteParams::default()).await.unwrap();
    let profile_roles: Api<ClusterRole> = Api::all(client.clone());
    profile_roles.delete("bulkhead-profile-viewer", &DeleteParams::default()).await.unwrap();
    wait_for("deleted objects to be restored", WAIT, || {
        let (nps, rqs, lrs, rbs, crbs, prs) =
            (nps.clone(), rqs.clone(), lrs.clone(), rbs.clone(), crbs.clone(), profile_roles.clone());
        let (rb_name, crb) = (rb_name.clone(), format!("bulkhead-tenant-{name}"));
        async move {
            rv_of(&nps, "bulkhead-default-deny").await?;
            rv_of(&rqs, "bulkhead-quota").await?;
            rv_of(&lrs, "bulkhead-limits").await?;
            rv_of(&rbs, &rb_name).await?;
            rv_of(&crbs, &crb).await?;
            rv_of(&prs, "bulkhead-profile-viewer").await?;
            Some(())
        }
    })
    .await;

    // Edited objects are put back.
    nps.patch("bulkhead-allow", &pp, &Patch::Merge(json!({"spec": {"ingress": [{}]}}))).await.unwrap();
    rqs.patch("bulkhead-quota", &pp, &Patch::Merge(json!({"spec": {"hard": {"pods": "999"}}}))).await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.patch(
        &ns,
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.patch("default", &pp, &Patch::Merge(json!({"automountServiceAccountToken": true}))).await.unwrap();
    profile_roles
        .patch(
            "bulkhead-profile-viewer",
            &pp,
            &Patch::Merge(json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})),
        )
        .await
        .unwrap();
    wait_for("edited objects to be restored", WAIT, || {
        let (nps, rqs, nss, sas, prs, ns) =
            (nps.clone(), rqs.clone(), nss.clone(), sas.clone(), profile_roles.clone(), ns.clone());
        async move {
            let allow = nps.get("bulkhead-allow").await.ok()?;
            let ingress = allow.spec?.ingress?;
            (ingress.len() == 1 && ingress[0].from.is_some()).then_some(())?;
            let hard = rqs.get("bulkhead-quota").await.ok()?.spec?.hard?;
            (hard["pods"].0 == "5").then_some(())?;
            let labels = nss.get(&ns).await.ok()?.metadata.labels?;
            (labels["pod-security.kubernetes.io/enforce"] == "restricted").then_some(())?;
            (sas.get("default").await.ok()?.automount_service_account_token == Some(false)).then_some(())?;
            let rules = prs.get("bulkhead-profile-viewer").await.ok()?.rules?;
            (!rules.iter().any(|r| r.verbs.contains(&"*".to_string()))).then_some(())
        }
    })
    .await;

    // The tenant's own admin deleting its isolation is repaired too.
    let admin = as_user(&profiles.users["admin"], &[]).await;
    Api::<NetworkPolicy>::namespaced(admin, &ns)
        .delete("bulkhead-allow", &DeleteParams::default())
        .await
        .expect("the tenant admin has NetworkPolicy rights; admission (not RBAC) will deny this later");
    wait_for("the admin-deleted policy to be restored", WAIT, || {
        let nps = nps.clone();
        async move { rv_of(&nps, "bulkhead-allow").await }
    })
    .await;

    let repaired: Vec<Value> = op
        .security_events()
        .into_iter()
        .filter(|e| e["event"]["action"] == "drift-repaired" && e["bulkhead"]["tenant"] == name.as_str())
        .collect();
    assert!(repaired.len() >= 8, "each repair is a security event: {repaired:#?}");
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap();
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("DriftRepaired")));
    delete_tenant(&client, &name).await;
}

#[tokio::test]
async fn namespaces_held_elsewhere_are_never_taken() {
    let (client, op) = setup().await;
    let name = unique("c");
    let foreign = format!("{name}-taken");
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": foreign, "labels": {"owner": "someone-else"}}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let mut tenant = basic(&name, &op.shard, json!({}));
    tenant["spec"]["namespaces"] = json!([{"name": "agents"}, {"name": "taken"}]);
    apply_tenant(&client, &tenant).await;
    let t = wait_ready_is(&client, &name, "False").await;
    let (_, reason, message) = condition(&t, "Ready").unwrap();
    assert_eq!(reason, "NamespaceConflict");
    assert!(message.contains(&foreign), "{message}");
    assert_eq!(condition(&t, "Stalled").unwrap().0, "True");
    // The rest converged; the foreign namespace is untouched.
    let agents = nss.get(&format!("{name}-agents")).await.unwrap();
    assert_eq!(agents.labels()["bulkhead.dev/tenant"], name);
    let taken = nss.get(&foreign).await.unwrap();
    assert!(taken.labels().get("bulkhead.dev/tenant").is_none());
    let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &foreign).list(&ListParams::default()).await.unwrap();
    assert!(nps.items.is_empty());
    // The allow-list never names the namespace it does not hold.
    let allow = Api::<NetworkPolicy>::namespaced(client.clone(), &format!("{name}-agents"))
        .get("bulkhead-allow")
        .await
        .unwrap();
    assert!(!serde_json::to_string(&allow.spec).unwrap().contains(&foreign));
    assert!(op.security_events().iter().any(|e| e["event"]["action"] == "namespace-conflict"));
    delete_tenant(&client, &name).await;
    nss.delete(&foreign, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_relabelled_namespace_is_repaired_and_never_pruned_by_another_tenant() {
    let (client, op) = setup().await;
    let keeper = unique("k");
    let eraser = unique("e");
    apply_tenant(&client, &basic(&keeper, &op.shard, json!({}))).await;
    apply_tenant(&client, &basic(&eraser, &op.shard, json!({"deletionPolicy": "Delete"}))).await;
    wait_ready(&client, &keeper).await;
    wait_ready(&client, &eraser).await;
    let victim = format!("{keeper}-agents");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.patch(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"bulkhead.dev/tenant": eraser}}})),
    )
    .await
    .unwrap();
    wait_for("the keeper to take its label back", WAIT, || {
        let nss = nss.clone();
        let (victim, keeper) = (victim.clone(), keeper.clone());
        async move {
            let ns = nss.get(&victim).await.ok()?;
            (ns.labels()["bulkhead.dev/tenant"] == keeper).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ns = nss.get(&victim).await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none(), "the other tenant must never delete it");
    delete_tenant(&client, &eraser).await;
    delete_tenant(&client, &keeper).await;
    assert!(nss.get(&victim).await.is_ok(), "Retain keeps the keeper's namespace");
}

#[tokio::test]
async fn namespaces_leaving_the_spec_follow_the_deletion_policy() {
    let (client, op) = setup().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    for policy in ["Retain", "Delete"] {
        let name = unique("p");
        let (mut tenant, _) = with_profiles(&name, &op.shard, json!([]));
        tenant["spec"]["deletionPolicy"] = json!(policy);
        apply_tenant(&client, &tenant).await;
        wait_ready(&client, &name).await;
        let leaving = format!("{name}-payments");
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "customer-data"}, "data": {"k": "v"}})).unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), &leaving).create(&PostParams::default(), &cm).await.unwrap();
        tenant["spec"]["namespaces"] = json!([{"name": "agents"}]);
        apply_tenant(&client, &tenant).await;
        let t = wait_ready(&client, &name).await;
        assert_eq!(t.status.unwrap().namespace_count, 1);
        if policy == "Retain" {
            let ns = wait_for("the namespace to be released", WAIT, || {
                let nss = nss.clone();
                let leaving = leaving.clone();
                async move {
                    let ns = nss.get(&leaving).await.ok()?;
                    ns.labels().get("app.kubernetes.io/managed-by").is_none().then_some(ns)
                }
            })
            .await;
            assert_eq!(ns.labels()["bulkhead.dev/tenant"], name, "the tenant label stays for the record");
            assert!(ns.metadata.deletion_timestamp.is_none());
            let data = Api::<ConfigMap>::namespaced(client.clone(), &leaving).get("customer-data").await;
            assert!(data.is_ok(), "data kept");
            let rbs =
                Api::<RoleBinding>::namespaced(client.clone(), &leaving).list(&ListParams::default()).await.unwrap();
            assert!(rbs.items.iter().all(|rb| !rb.name_any().starts_with("bulkhead-")), "access revoked");
            let nps =
                Api::<NetworkPolicy>::namespaced(client.clone(), &leaving).list(&ListParams::default()).await.unwrap();
            assert_eq!(nps.items.len(), 2, "isolation stays until an admin removes it");
            assert!(op.security_events().iter().any(|e| e["event"]["action"] == "namespace-released"));
        } else {
            wait_for("the namespace to be deleted", Duration::from_secs(90), || {
                let nss = nss.clone();
                let leaving = leaving.clone();
                async move { matches!(nss.get_opt(&leaving).await, Ok(None)).then_some(()) }
            })
            .await;
            assert!(op.security_events().iter().any(|e| e["event"]["action"] == "namespace-deleted"));
        }
        delete_tenant(&client, &name).await;
    }
}

#[tokio::test]
async fn deleting_a_tenant_retains_or_erases() {
    let (client, op) = setup().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let kept = unique("r");
    let erased = unique("x");
    apply_tenant(
        &client,
        &basic(&kept, &op.shard, json!({"access": [{"kind": "User", "name": "u", "profile": "viewer"}]})),
    )
    .await;
    apply_tenant(&client, &basic(&erased, &op.shard, json!({"deletionPolicy": "Delete"}))).await;
    wait_ready(&client, &kept).await;
    wait_ready(&client, &erased).await;
    delete_tenant(&client, &kept).await;
    delete_tenant(&client, &erased).await;
    for short in ["agents", "payments"] {
        let ns = nss.get(&format!("{kept}-{short}")).await.expect("Retain keeps namespaces");
        assert!(ns.metadata.deletion_timestamp.is_none());
        assert!(ns.labels().get("app.kubernetes.io/managed-by").is_none());
        assert!(matches!(nss.get_opt(&format!("{erased}-{short}")).await, Ok(None)), "Delete erases namespaces");
    }
    assert!(matches!(
        Api::<ClusterRole>::all(client.clone()).get_opt(&format!("bulkhead-tenant-{kept}")).await,
        Ok(None)
    ));
    let events = op.security_events();
    assert!(
        events.iter().any(|e| e["event"]["action"] == "tenant-released" && e["bulkhead"]["tenant"] == kept.as_str())
    );
    assert!(
        events.iter().any(|e| e["event"]["action"] == "tenant-erased" && e["bulkhead"]["tenant"] == erased.as_str())
    );
}

/// Resource versions of everything a tenant owns, plus the Tenant itself
/// (retried: a busy apiserver may drop a read, which says nothing about writes).
async fn versions(client: &Client, name: &str) -> BTreeMap<String, String> {
    wait_for("a consistent read of the tenant's objects", WAIT, || try_versions(client, name)).await
}

async fn try_versions(client: &Client, name: &str) -> Option<BTreeMap<String, String>> {
    let sel = ListParams::default().labels(&format!("bulkhead.dev/tenant={name}"));
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($t:ty) => {
            for o in Api::<$t>::all(client.clone()).list(&sel).await.ok()?.items {
                out.insert(
                    format!("{}/{}/{}", stringify!($t), o.namespace().unwrap_or_default(), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(Namespace);
    collect!(NetworkPolicy);
    collect!(RoleBinding);
    collect!(LimitRange);
    collect!(ServiceAccount);
    collect!(ClusterRole);
    collect!(ClusterRoleBinding);
    let t = Api::<Tenant>::all(client.clone()).get(name).await.ok()?;
    out.insert("Tenant".into(), t.resource_version().unwrap_or_default());
    Some(out)
}

#[tokio::test]
async fn a_converged_tenant_costs_no_writes_even_across_restarts() {
    let (client, mut op) = setup().await;
    let name = unique("i");
    let (tenant, _) = with_profiles(&name, &op.shard, json!(["GDPR"]));
    apply_tenant(&client, &tenant).await;
    wait_ready(&client, &name).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions(&client, &name).await;
    assert!(before.len() > 10);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions(&client, &name).await, before, "writes while idle");
    op.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(versions(&client, &name).await, before, "writes after a restart with nothing changed");
    delete_tenant(&client, &name).await;
}

fn restricted_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "registry.example/app:1", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn tenant_wide_quota_is_enforced_across_namespaces() {
    let (client, op) = setup().await;
    let name = unique("q");
    apply_tenant(&client, &basic(&name, &op.shard, json!({"quota": {"tenantHard": {"pods": "4"}}}))).await;
    wait_ready(&client, &name).await;
    let a: Api<Pod> = Api::namespaced(client.clone(), &format!("{name}-agents"));
    let b: Api<Pod> = Api::namespaced(client.clone(), &format!("{name}-payments"));
    // Keep creating pods in one namespace: the share moves to where it is needed,
    // until the tenant-wide limit is reached.
    let mut created = 0;
    for i in 0..6 {
        let pod = restricted_pod(&format!("p{i}"));
        let ok = wait_for_pod(&a, &pod).await;
        if ok {
            created += 1;
        }
    }
    let made_in_b = wait_for_pod(&b, &restricted_pod("p0")).await;
    let total = created + usize::from(made_in_b);
    assert!(created >= 3, "headroom moved to the busy namespace: {created} pods");
    assert!(total <= 4, "never more than the tenant-wide limit: {total}");
    let api: Api<Tenant> = Api::all(client.clone());
    wait_for("tenant-wide usage in status", WAIT, || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let t = api.get(&name).await.ok()?;
            let used = t.status?.quota.get("pods")?.used.0.clone();
            (used == total.to_string()).then_some(())
        }
    })
    .await;
    delete_tenant(&client, &name).await;
}

/// Creates a pod, retrying for a few seconds while the quota is rebalanced; false if it stays refused.
async fn wait_for_pod(api: &Api<Pod>, pod: &Pod) -> bool {
    for _ in 0..40 {
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("exceeded quota") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("unexpected pod error: {e}"),
        }
    }
    false
}

/// Objects of one tenant that bulkhead server-side applies (everything it
/// labels, except the key source Secret, which it creates).
async fn applied_objects(client: &Client, name: &str) -> BTreeSet<String> {
    let sel =
        ListParams::default().labels(&format!("bulkhead.dev/tenant={name},app.kubernetes.io/managed-by=bulkhead"));
    let mut out = BTreeSet::new();
    macro_rules! collect {
        ($t:ty) => {
            for o in Api::<$t>::all(client.clone()).list(&sel).await.expect("list").items {
                if o.labels().get("bulkhead.dev/role").map(String::as_str) != Some("key-source") {
                    out.insert(format!("{}/{}/{}", stringify!($t), o.namespace().unwrap_or_default(), o.name_any()));
                }
            }
        };
    }
    collect!(Namespace);
    collect!(NetworkPolicy);
    collect!(RoleBinding);
    collect!(LimitRange);
    collect!(ResourceQuota);
    collect!(ServiceAccount);
    collect!(ClusterRole);
    collect!(ClusterRoleBinding);
    collect!(Secret);
    out
}

#[tokio::test]
async fn a_new_tenant_costs_one_write_per_object() {
    const APPLIED: [&str; 9] = [
        "Namespace",
        "NetworkPolicy",
        "RoleBinding",
        "LimitRange",
        "ResourceQuota",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
    ];
    let client = admin().await;
    install_crd(&client).await;
    let shard = unique("s");
    // Verification writes status of its own; this test counts the reconciler's writes.
    let op = Operator::start_with(&shard, &[("BULKHEAD_VERIFY_INTERVAL", "0s")]);
    // Start-up writes (the shared profile ClusterRoles) are not the tenant's.
    op.settled_writes(Duration::from_secs(2), WAIT).await;
    let count = |kind: &'static str, verb: &'static str| op.writes(kind, verb);
    let applies =
        || async { futures::future::join_all(APPLIED.map(|k| count(k, "apply"))).await.into_iter().sum::<f64>() };
    let before = (applies().await, count("Tenant", "patch").await, count("Tenant/status", "patch").await);
    let before_other = (count("Secret", "create").await, count("Event", "create").await);

    let name = unique("w");
    let (tenant, _) = with_profiles(&name, &shard, json!(["GDPR"]));
    apply_tenant(&client, &tenant).await;
    wait_ready(&client, &name).await;
    op.settled_writes(Duration::from_secs(2), WAIT).await;
    let objects = applied_objects(&client, &name).await;
    assert!(objects.len() > 10, "the tenant's objects: {objects:?}");
    assert_eq!(applies().await - before.0, objects.len() as f64, "each object applied once: {objects:?}");
    assert_eq!(count("Tenant", "patch").await - before.1, 1.0, "one finalizer patch");
    assert_eq!(count("Tenant/status", "patch").await - before.2, 1.0, "one status write");
    assert_eq!(count("Secret", "create").await - before_other.0, 1.0, "one key source");
    assert_eq!(count("Event", "create").await - before_other.1, 1.0, "one Event for a new tenant");
    delete_tenant(&client, &name).await;
}
