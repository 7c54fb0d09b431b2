//! Tenant deletion: release (`Retain`) or erase (`Delete`), then let the
//! Tenant go. A Tenant deleted because its CRD is being deleted is always
//! released, never erased: erasure needs the Tenant itself to be deleted.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;

use crate::api::{DeletionPolicy, NamespaceStatus, Tenant};
use crate::plan::object::Kind;
use crate::plan::{FINALIZER, is_planned_name};
use crate::telemetry::security::Action as SecurityAction;

use super::cache::Lookup;
use super::notify::security;
use super::reconcile::field_manager;
use super::status::{self, Report};
use super::{Context, Error, apply, keys, prune};

async fn crd_is_being_deleted(ctx: &Context) -> Result<bool, Error> {
    let name = Tenant::crd_name();
    match Api::<CustomResourceDefinition>::all(ctx.client.clone()).get_opt(name).await {
        Ok(Some(crd)) => Ok(crd.metadata.deletion_timestamp.is_some()),
        // No CRD at all: the Tenant is on its way out with it.
        Ok(None) => Ok(true),
        Err(e) => Err(Error::api_named("read", format!("CustomResourceDefinition {name}"), e)),
    }
}

async fn remove_finalizer(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    let finalizers: Vec<&String> = tenant.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tenant.resource_version()}});
    ctx.metrics.api_write("Tenant", "patch");
    ctx.metrics.forget_tenant(&tenant.name_any());
    // A finalizer patch whose echo never came (the Tenant went first) must not linger.
    ctx.own_tenant_writes.forget(&tenant.name_any());
    match Api::<Tenant>::all(ctx.client.clone())
        .patch(&tenant.name_any(), &field_manager(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::api_named("remove finalizer from", format!("Tenant {}", tenant.name_any()), e)),
    }
}

/// Handles a Tenant that is being deleted.
pub async fn finalize(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    if !tenant.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = tenant.name_any();
    let crd_going = crd_is_being_deleted(ctx).await?;
    let policy = if crd_going { DeletionPolicy::Retain } else { tenant.spec.deletion_policy };
    let owned = ctx.caches.owned(&name);
    // The per-tenant read of its own Tenant goes in both cases.
    for key in owned.iter().filter(|k| {
        matches!(k.kind, Kind::ClusterRole | Kind::ClusterRoleBinding) && is_planned_name(k.kind, &name, &k.name)
    }) {
        apply::delete(ctx, key).await?;
    }
    // Only namespaces the Tenant's status records as held are released or
    // erased: a label copied onto someone else's namespace proves nothing.
    let held = status::held_namespaces(tenant.status.as_ref());
    let namespaces: Vec<String> =
        owned.iter().filter(|k| k.kind == Kind::Namespace && held.contains(&k.name)).map(|k| k.name.clone()).collect();
    match policy {
        DeletionPolicy::Retain => {
            for ns in &namespaces {
                prune::release_namespace(ctx, &name, ns).await?;
            }
            let why = if crd_going && tenant.spec.deletion_policy == DeletionPolicy::Delete {
                "the Tenant CRD is being deleted, so the tenant was released instead of erased"
            } else {
                "deletionPolicy Retain"
            };
            security(
                ctx,
                tenant,
                SecurityAction::TenantReleased,
                None,
                if crd_going { "CrdDeleted" } else { "Retain" },
                format!(
                    "tenant {name} deleted: {} namespace(s) kept with their data, access bindings removed ({why})",
                    namespaces.len()
                ),
            )
            .await;
            remove_finalizer(tenant, ctx).await?;
            Ok(Action::await_change())
        }
        DeletionPolicy::Delete => {
            let remaining: Vec<String> = ctx
                .caches
                .namespaces
                .managed_of_tenant(&name)
                .into_iter()
                .map(|(_, ns)| ns)
                .filter(|ns| held.contains(ns))
                .collect();
            for ns in &remaining {
                let key = crate::plan::ObjectKey { kind: Kind::Namespace, namespace: None, name: ns.clone() };
                let terminating = ctx.caches.namespaces.existing(None, ns).is_some_and(|e| e.terminating);
                if !terminating {
                    apply::delete(ctx, &key).await?;
                }
            }
            if !remaining.is_empty() {
                // Keep listing them: the status is what proves they are ours to erase.
                let namespaces = remaining
                    .iter()
                    .map(|n| NamespaceStatus { name: n.clone(), phase: status::PHASE_TERMINATING.into() })
                    .collect();
                let report = Report { erasing: Some(remaining.len()), namespaces, ..Default::default() };
                let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
                let status = status::build(tenant.metadata.generation, tenant.status.as_ref(), &report, &now);
                if tenant.status.as_ref() != Some(&status) {
                    let patch = json!({"status": status});
                    ctx.metrics.api_write("Tenant/status", "patch");
                    // The status is informative here; erasure goes on even if it cannot be written.
                    let _ = Api::<Tenant>::all(ctx.client.clone())
                        .patch_status(&name, &field_manager(), &Patch::Merge(&patch))
                        .await;
                }
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            keys::erase(ctx, &name).await?;
            security(
                ctx,
                tenant,
                SecurityAction::TenantErased,
                None,
                "Delete",
                format!(
                    "tenant {name} erased: all of its namespaces and the data in them were deleted, and its key material was destroyed so anything encrypted with it is unreadable (deletionPolicy Delete)"
                ),
            )
            .await;
            remove_finalizer(tenant, ctx).await?;
            Ok(Action::await_change())
        }
    }
}
