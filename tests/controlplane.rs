//! The local control plane is a real Kubernetes control plane: these tests
//! exercise the apiserver and controller-manager behaviour bulkhead relies on.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

async fn create_namespace(client: &kube::Client, name: &str, labels: serde_json::Value) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace created");
}

#[tokio::test]
async fn namespace_deletion_is_finalized_by_the_namespace_controller() {
    let client = admin().await;
    let name = unique("cp-ns-");
    create_namespace(&client, &name, json!({})).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete(&name, &DeleteParams::default()).await.unwrap();
    // Only the namespace controller empties the namespace and removes the kubernetes finalizer.
    wait_for("the namespace to be finalized and gone", Duration::from_secs(60), || {
        let nss = nss.clone();
        let name = name.clone();
        async move { matches!(nss.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn dependents_are_garbage_collected_with_their_owner() {
    let client = admin().await;
    let ns = unique("cp-gc-");
    create_namespace(&client, &ns, json!({})).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let uid = owner.metadata.uid.clone().unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dependent", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    ]}}))
    .unwrap();
    cms.create(&PostParams::default(), &dependent).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_for("the garbage collector to delete the dependent", Duration::from_secs(60), || {
        let cms = cms.clone();
        async move { matches!(cms.get_opt("dependent").await, Ok(None)).then_some(()) }
    })
    .await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn crd_cel_rules_reject_with_their_message() {
    let client = admin().await;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.e2e.bulkhead.dev"},
        "spec": {
            "group": "e2e.bulkhead.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object",
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}]}}
            }}}]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "widgets.e2e.bulkhead.dev",
        &kube::api::PatchParams::apply("bulkhead-tests").force(),
        &kube::api::Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("e2e.bulkhead.dev", "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "e2e.bulkhead.dev/v1", "kind": "Widget",
        "metadata": {"name": unique("w-")}, "spec": {"min": 5, "max": 1}
    }))
    .unwrap();
    // The CRD needs a moment to be served; retry until the answer is the CEL rejection.
    let message = wait_for("the CEL rule to reject the widget", Duration::from_secs(30), || {
        let widgets = widgets.clone();
        let bad = bad.clone();
        async move {
            match widgets.create(&PostParams { dry_run: true, ..Default::default() }, &bad).await {
                Err(kube::Error::Api(s)) if s.code == 422 => Some(s.message),
                _ => None,
            }
        }
    })
    .await;
    assert!(message.contains("min must not exceed max"), "{message}");
}

#[tokio::test]
async fn rbac_denies_until_a_role_binding_grants() {
    let client = admin().await;
    let ns = unique("cp-rbac-");
    create_namespace(&client, &ns, json!({})).await;
    let user = unique("nobody-");
    let as_nobody = as_user(&user, &[]).await;
    let secrets: Api<Secret> = Api::namespaced(as_nobody, &ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "read-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), &ns).create(&PostParams::default(), &role).await.unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "read-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns).create(&PostParams::default(), &rb).await.unwrap();
    wait_for("the RoleBinding to take effect", Duration::from_secs(10), || {
        let secrets = secrets.clone();
        async move { secrets.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn pod_security_admission_rejects_a_privileged_pod() {
    let client = admin().await;
    let ns = unique("cp-psa-");
    create_namespace(&client, &ns, json!({"pod-security.kubernetes.io/enforce": "restricted"})).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}
    }))
    .unwrap();
    let err = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams { dry_run: true, ..Default::default() }, &pod)
        .await
        .expect_err("a privileged pod must be rejected");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("violates PodSecurity \"restricted"), "{}", s.message);
        }
        other => panic!("unexpected error {other:?}"),
    }
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn new_namespaces_get_a_default_service_account() {
    let client = admin().await;
    let ns = unique("cp-sa-");
    create_namespace(&client, &ns, json!({})).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    wait_for("the service-account controller to create `default`", Duration::from_secs(30), || {
        let sas = sas.clone();
        async move { sas.get_opt("default").await.ok().flatten().map(|_| ()) }
    })
    .await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}
