//! Deleting the Tenant CRD (an uninstall gone wrong, a reinstall) must never
//! delete customer data, whatever the tenants' deletion policy. Its own test
//! binary: it removes the CRD every other test needs, and cargo runs test
//! binaries one after another.

mod common;

use std::time::Duration;

use bulkhead::api::Tenant;
use common::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn deleting_the_crd_keeps_every_tenant_namespace() {
    let client = admin().await;
    install_crd(&client).await;
    let shard = unique("s");
    // Every Tenant goes with the CRD, including leftovers of earlier tests, so
    // this operator serves them all.
    let _op = Operator::start_unsharded();
    let name = unique("g");
    let mut tenant = tenant_from(
        "metadata: {name: x}\nspec:\n  namespaces: [{name: agents}]\n  deletionPolicy: Delete\n",
        &name,
        &shard,
    );
    tenant["apiVersion"] = json!("bulkhead.dev/v1alpha1");
    tenant["kind"] = json!("Tenant");
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants.patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&tenant)).await.unwrap();
    let ns = format!("{name}-agents");
    let nss: Api<Namespace> = Api::all(client.clone());
    wait_for("the tenant namespace", Duration::from_secs(30), || {
        let (nss, ns) = (nss.clone(), ns.clone());
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            nss.get_opt(&ns).await.ok().flatten()?;
            let t = tenants.get(&name).await.ok()?;
            t.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
        }
    })
    .await;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("tenants.bulkhead.dev", &DeleteParams::default()).await.unwrap();
    wait_for("the CRD to be gone", Duration::from_secs(60), || {
        let crds = crds.clone();
        async move { matches!(crds.get_opt("tenants.bulkhead.dev").await, Ok(None)).then_some(()) }
    })
    .await;
    let kept = nss.get(&ns).await.expect("the namespace survives the CRD");
    assert!(kept.metadata.deletion_timestamp.is_none(), "and is not being deleted");
    assert_eq!(kept.labels()["bulkhead.dev/tenant"], name);
    install_crd(&client).await;
    nss.delete(&ns, &DeleteParams::default()).await.unwrap();
}
