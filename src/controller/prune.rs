//! Removing what a tenant no longer wants, and letting go of namespaces.
//!
//! Only objects carrying both bulkhead's managed-by label and the tenant's
//! label are ever touched. Namespaces leave a tenant only by its
//! `deletionPolicy`: `Retain` releases them with their data (access revoked,
//! isolation kept), `Delete` deletes them.

use std::collections::BTreeSet;

use crate::api::{DeletionPolicy, Tenant};
use crate::plan::object::Kind;
use crate::plan::{DesiredState, ObjectKey, is_planned_name};
use crate::telemetry::security::Action;

use super::notify::{object_ref, security};
use super::{Context, Error, apply, status};

/// Releases one namespace: RoleBindings are deleted (the customer's access
/// ends), everything else is kept and released, namespace last so an
/// interrupted release is resumed.
pub async fn release_namespace(ctx: &Context, tenant: &str, namespace: &str) -> Result<(), Error> {
    let owned = ctx.caches.owned(tenant);
    let in_namespace = owned.iter().filter(|k| {
        k.namespace.as_deref() == Some(namespace)
            && (k.kind == Kind::ServiceAccount || is_planned_name(k.kind, tenant, &k.name))
    });
    for key in in_namespace {
        if key.kind == Kind::RoleBinding {
            apply::delete(ctx, key).await?;
        } else {
            apply::release(ctx, key).await?;
        }
    }
    let ns_key = ObjectKey { kind: Kind::Namespace, namespace: None, name: namespace.to_string() };
    apply::release(ctx, &ns_key).await
}

/// What pruning did, for events and status.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Stale objects deleted.
    pub deleted: Vec<ObjectKey>,
    /// Namespaces released (Retain).
    pub released: Vec<String>,
    /// Namespaces deleted (Delete).
    pub erased: Vec<String>,
}

/// Deletes stale objects and lets go of namespaces that left the spec.
pub async fn prune(
    ctx: &Context,
    tenant: &Tenant,
    desired: &DesiredState,
    keep_namespaces: &BTreeSet<String>,
    prune_secrets: bool,
) -> Result<Pruned, Error> {
    let name = &desired.tenant;
    let wanted = desired.keys();
    let wanted_ns: BTreeSet<&str> = desired.namespaces.iter().map(String::as_str).collect();
    let held = status::held_namespaces(tenant.status.as_ref());
    let mut pruned = Pruned::default();
    for key in ctx.caches.owned(name) {
        if wanted.contains(&key)
            || !is_planned_name(key.kind, name, &key.name)
            || (key.kind == Kind::Secret && !prune_secrets)
        {
            continue;
        }
        match (&key.kind, &key.namespace) {
            (Kind::Namespace, _) => {
                // Still in the spec but not planned right now (e.g. terminating),
                // or never recorded as ours: leave it.
                if keep_namespaces.contains(&key.name) || !held.contains(&key.name) {
                    continue;
                }
                match tenant.spec.deletion_policy {
                    DeletionPolicy::Retain => {
                        release_namespace(ctx, name, &key.name).await?;
                        pruned.released.push(key.name.clone());
                        security(
                            ctx,
                            tenant,
                            Action::NamespaceReleased,
                            Some(&key),
                            "RemovedFromSpec",
                            format!("namespace {} left the tenant and was kept with its data (deletionPolicy Retain); access bindings were removed", key.name),
                        )
                        .await;
                    }
                    DeletionPolicy::Delete => {
                        apply::delete(ctx, &key).await?;
                        pruned.erased.push(key.name.clone());
                        security(
                            ctx,
                            tenant,
                            Action::NamespaceDeleted,
                            Some(&key),
                            "RemovedFromSpec",
                            format!(
                                "namespace {} left the tenant and was deleted with its data (deletionPolicy Delete)",
                                key.name
                            ),
                        )
                        .await;
                    }
                }
            }
            // Objects inside a namespace that is leaving are handled with the namespace.
            (_, Some(ns)) if !wanted_ns.contains(ns.as_str()) => {}
            _ => {
                apply::delete(ctx, &key).await?;
                if key.kind == Kind::RoleBinding {
                    security(
                        ctx,
                        tenant,
                        Action::AccessRevoked,
                        Some(&key),
                        "RemovedFromSpec",
                        format!("access binding {} was removed", object_ref(&key).name),
                    )
                    .await;
                }
                pruned.deleted.push(key);
            }
        }
    }
    Ok(pruned)
}
