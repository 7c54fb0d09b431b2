//! One reconcile of one Tenant: claim namespaces, plan, apply what differs,
//! prune what is no longer wanted, and report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::api::{Isolation, NamespaceStatus, QuotaUsage, StoredTenant, Tenant};
use crate::plan::namespaces::Claim;
use crate::plan::object::Kind;
use crate::plan::quantity::Quantity;
use crate::plan::{self, FIELD_MANAGER, FINALIZER, ManagedObject, ObjectKey, namespace_name, quota};
use crate::telemetry::security::Action as SecurityAction;

use super::apply::{self, Applied};
use super::keys::{self, Keys};
use super::notify::{event, line, security};
use super::status::{self, PHASE_CONFLICT, PHASE_READY, PHASE_TERMINATING, Report};
use super::{Context, Error, finalize, prune};

/// Reconciles one Tenant.
pub async fn reconcile(stored: Arc<StoredTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", tenant = %stored.name_any());
    let started = std::time::Instant::now();
    let _busy = ctx.activity.busy();
    let result = async {
        let tenant = stored.tenant().map_err(|e| Error::Unreadable { tenant: stored.name_any(), source: e })?;
        if ctx.tenant_writes.store_behind(&tenant.name_any(), tenant.meta().resource_version.as_deref()) {
            return Ok(Action::requeue(STORE_CATCH_UP));
        }
        if tenant.meta().deletion_timestamp.is_some() {
            return finalize::finalize(&tenant, &ctx).await;
        }
        ensure_finalizer(&tenant, &ctx).await?;
        let (report, next) = converge(&tenant, &ctx).await?;
        write_status(&tenant, &ctx, &report).await?;
        Ok(next)
    }
    .instrument(span)
    .await;
    ctx.metrics.reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

/// How soon a reconcile that found the Tenant store behind our own write looks again.
const STORE_CATCH_UP: Duration = Duration::from_millis(100);

/// Retries a failed reconcile after a short pause.
pub fn error_policy(tenant: Arc<StoredTenant>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(tenant = %tenant.name_any(), error = %error, "reconcile failed; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
}

async fn ensure_finalizer(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    if tenant.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = tenant.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    // The resourceVersion makes this a compare-and-swap: a concurrent change fails it and we retry.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tenant.resource_version()}});
    ctx.metrics.api_write("Tenant", "patch");
    let api = Api::<Tenant>::all(ctx.client.clone());
    let name = tenant.name_any();
    let failed = |verb, e| Error::api_named(verb, format!("Tenant {name}"), e);
    match api.patch(&name, &field_manager(), &Patch::Merge(&patch)).await {
        Ok(written) => {
            ctx.tenant_writes.wrote(&name, written.metadata.resource_version.as_deref());
            ctx.own_tenant_writes.record(name, written.metadata.resource_version);
            Ok(())
        }
        // Our copy is older than the cluster's (the watch lags, e.g. after an
        // apiserver restart): if the finalizer is already there, go on.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let fresh = api.get(&name).await.map_err(|e| failed("read", e))?;
            if fresh.finalizers().iter().any(|f| f == FINALIZER) {
                Ok(())
            } else {
                Err(failed("add finalizer to", kube::Error::Api(status)))
            }
        }
        Err(e) => Err(failed("add finalizer to", e)),
    }
}

/// Plans the tenant without the namespaces it may not hold, and reports each namespace's phase.
fn claim_namespaces(tenant: &Tenant, ctx: &Context) -> (Tenant, Vec<NamespaceStatus>, BTreeSet<String>) {
    let name = tenant.name_any();
    let mut statuses = Vec::new();
    let mut blocked = BTreeSet::new();
    let mut keep = BTreeSet::new();
    let held = status::held_namespaces(tenant.status.as_ref());
    for ns in &tenant.spec.namespaces {
        let full = namespace_name(&name, &ns.name);
        let existing = ctx.caches.namespaces.existing(None, &full);
        let claim = Claim::of(&name, existing.as_ref(), held.contains(&full));
        let phase = match &claim {
            c if c.usable() => PHASE_READY,
            Claim::Terminating => PHASE_TERMINATING,
            _ => PHASE_CONFLICT,
        };
        if !claim.usable() {
            blocked.insert(full.clone());
        }
        keep.insert(full.clone());
        statuses.push(NamespaceStatus { name: full, phase: phase.into() });
    }
    (plan::namespaces::without(tenant, &blocked), statuses, keep)
}

fn observed_quotas(ctx: &Context, namespaces: &[String]) -> BTreeMap<String, quota::Observed> {
    namespaces
        .iter()
        .filter_map(|ns| {
            let rq = ctx.caches.resource_quotas.get(Some(ns), quota::QUOTA)?;
            Some((ns.clone(), quota::Observed::of(&rq)))
        })
        .collect()
}

async fn apply_all(ctx: &Context, objects: &[ManagedObject]) -> Vec<(ObjectKey, Result<Applied, Error>)> {
    // By index, not by reference: the plan is not copied for the writes in
    // flight, and the stream stays Send for the controller's future.
    futures::stream::iter(0..objects.len())
        .map(|i| async move { (objects[i].key(), apply::apply(ctx, &objects[i]).await) })
        .buffer_unordered(ctx.options.apply_concurrency)
        .collect()
        .await
}

async fn converge(tenant: &Tenant, ctx: &Context) -> Result<(Report, Action), Error> {
    let name = tenant.name_any();
    let (usable, namespaces, keep) = claim_namespaces(tenant, ctx);
    let previous = tenant.status.as_ref();
    let mut report = Report { namespaces, ..Default::default() };
    for ns in report.namespaces.iter().filter(|n| n.phase == PHASE_CONFLICT) {
        let known =
            previous.is_some_and(|p| p.namespaces.iter().any(|q| q.name == ns.name && q.phase == PHASE_CONFLICT));
        if !known {
            let key = ObjectKey { kind: Kind::Namespace, namespace: None, name: ns.name.clone() };
            security(
                ctx,
                tenant,
                SecurityAction::NamespaceConflict,
                Some(&key),
                "NamespaceHeldElsewhere",
                format!("namespace {} already exists outside this tenant and was not taken over", ns.name),
            )
            .await;
        }
    }
    let mut desired = match plan::plan(&usable, &ctx.options.plan) {
        Ok(d) => d,
        Err(e) => {
            let message = e.to_string();
            if previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
                .is_none_or(|c| c.message != message)
            {
                event(ctx, tenant, true, "InvalidSpec", "Plan", message.clone()).await;
            }
            report.plan_error = Some(message);
            return Ok((report, Action::await_change()));
        }
    };
    let keys = keys::ensure(ctx, tenant, &desired.effective).await?;
    let keys_ready = matches!(keys, Keys::Ready { .. });
    match keys {
        Keys::Ready { material, status, change } => {
            let projected = plan::secrets::projections(&name, &desired.namespaces, &material);
            report.credentials = material.generated.len();
            desired.objects.extend(projected);
            if change.rotated {
                security(
                    ctx,
                    tenant,
                    SecurityAction::KeyRotated,
                    None,
                    "Rotated",
                    format!(
                        "new current key {}; {} previous key(s) kept for decryption",
                        status.current_key_id,
                        status.previous_key_ids.len()
                    ),
                )
                .await;
            }
            report.keys = Some(status);
        }
        Keys::Blocked { reason, message } => {
            let known = previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == "SecretsReady"))
                .is_some_and(|c| c.reason == reason);
            if !known {
                security(ctx, tenant, SecurityAction::KeyMaterialUnavailable, None, reason, message.clone()).await;
            }
            report.keys_blocked = Some((reason.to_string(), message));
        }
    }
    let observed = observed_quotas(ctx, &desired.namespaces);
    quota::apply_rebalance(&mut desired.objects, &name, &usable.spec, &desired.namespaces, &observed)?;
    if let Some(q) = &usable.spec.quota {
        let tenant_hard = quota::parse_map(&q.tenant_hard, "spec.quota.tenantHard")?;
        report.quota_usage = quota::tenant_usage(&tenant_hard, &observed)
            .into_iter()
            .map(|(k, (hard, used))| {
                let q = |x: Quantity| k8s_openapi::apimachinery::pkg::api::resource::Quantity(x.to_string());
                (k, QuotaUsage { hard: q(hard), used: q(used) })
            })
            .collect();
    }

    // Namespaces first: everything else lives in them.
    let (ns_objects, rest): (Vec<_>, Vec<_>) =
        desired.objects.iter().cloned().partition(|o| o.kind() == Kind::Namespace);
    let mut results = apply_all(ctx, &ns_objects).await;
    results.extend(apply_all(ctx, &rest).await);

    let drift_possible = status::was_converged(tenant.meta().generation, previous);
    let mut changed = 0;
    let mut granted = BTreeSet::new();
    for (key, result) in results {
        match result {
            Ok(Applied::Unchanged) => {}
            Ok(outcome) => {
                changed += 1;
                if drift_possible {
                    ctx.metrics.drift_repaired(key.kind.as_str());
                    let what = if outcome == Applied::Created { "deleted" } else { "modified" };
                    security(
                        ctx,
                        tenant,
                        SecurityAction::DriftRepaired,
                        Some(&key),
                        if outcome == Applied::Created { "ObjectDeleted" } else { "ObjectModified" },
                        format!("{key} was {what} outside bulkhead and has been restored"),
                    )
                    .await;
                } else if key.kind == Kind::RoleBinding && outcome == Applied::Created {
                    granted.insert(key.name.clone());
                }
            }
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "apply failed");
                report.failures.push((key.kind, e.to_string()));
            }
        }
    }
    // One security line per grant for the SIEM; in Kubernetes, the grants are
    // named on the tenant's one created/updated Event, so a new tenant costs
    // the apiserver one Event, not one per subject.
    let mut grants = Vec::new();
    for binding in granted {
        let entry = desired.objects.iter().find_map(|o| match o {
            ManagedObject::RoleBinding(rb) if rb.metadata.name.as_deref() == Some(&binding) => Some(rb.clone()),
            _ => None,
        });
        if let Some(rb) = entry {
            let subject = rb
                .subjects
                .as_ref()
                .and_then(|s| s.first())
                .map(|s| format!("{} {}", s.kind, s.name))
                .unwrap_or_default();
            let message = format!("{subject} was granted {} in the tenant's namespaces", rb.role_ref.name);
            line(tenant, SecurityAction::AccessGranted, None, "AddedToSpec", message);
            grants.push(format!("{subject} ({})", rb.role_ref.name));
        }
    }
    grants.dedup();

    // Without key material, existing projections may be the only copy left: keep them.
    let pruned = prune::prune(ctx, tenant, &desired, &keep, keys_ready).await;
    match pruned {
        Ok(p) => changed += p.deleted.len() + p.released.len() + p.erased.len(),
        Err(e) => report.failures.push((Kind::Namespace, e.to_string())),
    }

    if changed > 0 && !drift_possible {
        let first = previous.is_none_or(|p| p.observed_generation.is_none());
        let (action, reason) =
            if first { (SecurityAction::TenantCreated, "Created") } else { (SecurityAction::TenantUpdated, "Updated") };
        let mut message = format!("tenant {name} applied: {changed} object(s) created, updated or removed");
        if !grants.is_empty() {
            message.push_str(&format!("; granted: {}", grants.join(", ")));
        }
        security(ctx, tenant, action, None, reason, message).await;
    }

    report.isolation_disabled = usable.spec.network.isolation == Isolation::Disabled;
    report.network_policies = desired.objects.iter().filter(|o| o.kind() == Kind::NetworkPolicy).count();
    report.quotas = desired.objects.iter().filter(|o| o.kind() == Kind::ResourceQuota).count();
    report.subjects = desired
        .objects
        .iter()
        .find_map(|o| match o {
            ManagedObject::ClusterRoleBinding(b) => Some(b.subjects.as_ref().map_or(0, Vec::len)),
            _ => None,
        })
        .unwrap_or(0);

    let waiting = report.namespaces.iter().any(|n| n.phase != PHASE_READY);
    let next = if !report.failures.is_empty() {
        Action::requeue(Duration::from_secs(10))
    } else if waiting {
        // Namespaces held elsewhere or terminating are not ours to watch; look again soon.
        Action::requeue(Duration::from_secs(15))
    } else {
        // Wake up for the next rotation without polling.
        let until_rotation = report
            .keys
            .as_ref()
            .and_then(|k| k.next_rotation.parse::<jiff::Timestamp>().ok())
            .and_then(|t| t.duration_since(jiff::Timestamp::now()).try_into().ok())
            .map(|d: Duration| d + Duration::from_secs(1));
        let resync = resync_period(&name);
        Action::requeue(until_rotation.map_or(resync, |d| d.min(resync)))
    };
    Ok((report, next))
}

/// About an hour, spread by tenant name so periodic checks never come in a burst.
fn resync_period(name: &str) -> Duration {
    let spread = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) % 600;
    Duration::from_secs(3300 + spread)
}

async fn write_status(tenant: &Tenant, ctx: &Context, report: &Report) -> Result<(), Error> {
    let now = Time(jiff::Timestamp::now());
    let status = status::build(tenant.meta().generation, tenant.status.as_ref(), report, &now);
    let name = tenant.name_any();
    ctx.metrics.tenant_conditions(&name, status.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())));
    if let Some(k) = &status.keys {
        ctx.metrics.tenant_keys(&name, &k.last_rotation, &k.next_rotation);
    }
    if tenant.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({"status": status});
    ctx.metrics.api_write("Tenant/status", "patch");
    let written = Api::<Tenant>::all(ctx.client.clone())
        .patch_status(&name, &field_manager(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::api_named("update status of", format!("Tenant {name}"), e))?;
    ctx.tenant_writes.wrote(&name, written.metadata.resource_version.as_deref());
    Ok(())
}

/// Patch parameters that record bulkhead as the writer.
pub fn field_manager() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}
