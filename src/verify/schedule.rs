//! Continuous verification in the controller: every Tenant is verified once
//! per interval (default hourly), at an offset from its name's hash so the
//! apiserver sees a steady trickle, never a burst; one tenant at a time.
//!
//! The result is the `IsolationVerified` condition (failing check ids in its
//! message) and one `check-failed` security event per newly failing check.
//! The task patches only that condition, with the Tenant's resourceVersion as
//! a precondition, and writes nothing when a run changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::api::{StoredTenant, Tenant};
use crate::controller::Context;
use crate::controller::notify::security;
use crate::controller::reconcile::field_manager;
use crate::telemetry::security::Action;

use super::{ClusterView, Settings, Status, TenantOutline, TenantReport, Verifier, checks};

/// Requests in flight for the tenant being verified (the CLI defaults to 16).
const VERIFY_CONCURRENCY: usize = 4;

/// The condition type this task owns.
pub const CONDITION: &str = "IsolationVerified";

/// Offset of a tenant's checks inside the interval, from its name. Never in
/// the first 30 s (or half interval): a starting operator converges first.
pub fn offset(name: &str, interval: Duration) -> Duration {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    let floor = (interval / 2).min(Duration::from_secs(30));
    let span = (interval - floor).as_millis().max(1) as u64;
    floor + Duration::from_millis(h % span)
}

/// Status, reason and message of the condition for a report.
pub fn condition_for(report: &TenantReport) -> (&'static str, &'static str, String) {
    let summary = report.summary();
    let failing = report.failing();
    if !report.results.is_empty() && report.results.iter().all(|r| r.status == Status::Error) {
        let why = report.results.first().map(|r| r.reason.clone()).unwrap_or_default();
        return ("Unknown", "VerificationError", format!("the checks could not run: {why}"));
    }
    if failing.is_empty() {
        return ("True", "ChecksPassed", format!("all applicable isolation checks passed ({})", summary.line()));
    }
    let reason = if summary.failed > 0 { "ChecksFailed" } else { "VerificationIncomplete" };
    (
        "False",
        reason,
        format!(
            "failing: {}; {}. Run `bulkhead verify --tenant {}` for the evidence",
            failing.join(", "),
            summary.line(),
            report.tenant
        ),
    )
}

/// The failing check ids a condition message names.
pub fn failing_in(message: &str) -> BTreeSet<String> {
    message
        .strip_prefix("failing: ")
        .and_then(|rest| rest.split(';').next())
        .map(|ids| ids.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}

fn current(tenant: &Tenant) -> Option<&Condition> {
    tenant.status.as_ref()?.conditions.iter().find(|c| c.type_ == CONDITION)
}

/// The conditions with `IsolationVerified` set; None when nothing would change.
pub fn updated_conditions(
    tenant: &Tenant,
    (status, reason, message): (&str, &str, String),
    now: &Time,
) -> Option<Vec<Condition>> {
    let generation = tenant.meta().generation;
    let existing = current(tenant);
    if existing.is_some_and(|c| {
        c.status == status && c.reason == reason && c.message == message && c.observed_generation == generation
    }) {
        return None;
    }
    let since =
        existing.filter(|c| c.status == status).map(|c| c.last_transition_time.clone()).unwrap_or_else(|| now.clone());
    let cond = Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    };
    let mut conditions = tenant.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == CONDITION) {
        Some(c) => *c = cond,
        None => conditions.push(cond),
    }
    Some(conditions)
}

fn ready(tenant: &Tenant) -> bool {
    let Some(status) = &tenant.status else {
        return false;
    };
    status.observed_generation == tenant.meta().generation
        && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn write(ctx: &Context, tenant: &Tenant, conditions: Vec<Condition>) -> Result<(), kube::Error> {
    // The resourceVersion makes this a compare-and-swap with the reconciler's status writes.
    let patch =
        json!({"metadata": {"resourceVersion": tenant.resource_version()}, "status": {"conditions": conditions}});
    // Its own verb: the bench and dashboards tell a verification result from a reconcile's write.
    ctx.metrics.api_write("Tenant/status", "patch-condition");
    Api::<Tenant>::all(ctx.client.clone())
        .patch_status(&tenant.name_any(), &field_manager(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Verifies one tenant and records the outcome; returns when to look again.
async fn verify_one(
    ctx: &Context,
    verifier: &Verifier,
    view: &ClusterView,
    name: &str,
    known_failing: &mut BTreeMap<String, BTreeSet<String>>,
    interval: Duration,
) -> Duration {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let tenant = match api.get_opt(name).await {
        Ok(Some(t)) => t,
        Ok(None) => return interval,
        Err(e) => {
            tracing::warn!(tenant = name, error = %e, "cannot read the Tenant to verify it");
            return interval.min(Duration::from_secs(30));
        }
    };
    if tenant.meta().deletion_timestamp.is_some() {
        return interval;
    }
    if !ready(&tenant) {
        // Verifying a tenant still converging would only report what the controller is about to do.
        return interval.min(Duration::from_secs(30));
    }
    let report = verifier.verify_tenant(view, &tenant).await;
    let summary = report.summary();
    ctx.metrics.verification_run(if summary.errors > 0 && summary.failed == 0 {
        "error"
    } else if summary.failed > 0 {
        "fail"
    } else {
        "pass"
    });
    ctx.metrics.verification_failures(name, (summary.failed + summary.errors) as u64);
    let before = known_failing
        .remove(name)
        .unwrap_or_else(|| current(&tenant).map(|c| failing_in(&c.message)).unwrap_or_default());
    let now_failing: BTreeSet<String> =
        report.results.iter().filter(|r| r.status == Status::Fail).map(|r| r.check.id.to_string()).collect();
    for r in report.results.iter().filter(|r| r.status == Status::Fail && !before.contains(r.check.id)) {
        let bad = r
            .evidence
            .iter()
            .find(|e| !e.ok)
            .map(|e| format!(" First evidence: {} → {}", e.request, e.response))
            .unwrap_or_default();
        security(
            ctx,
            &tenant,
            Action::CheckFailed,
            None,
            r.check.id,
            format!("isolation check {} ({}) failed: {}.{bad}", r.check.id, r.check.title, r.reason),
        )
        .await;
    }
    for id in before.difference(&now_failing) {
        if checks::CATALOGUE.iter().any(|c| c.id == id) {
            tracing::info!(tenant = name, check = %id, "isolation check passes again");
        }
    }
    known_failing.insert(name.to_string(), now_failing);
    let now = Time(jiff::Timestamp::now());
    if let Some(conditions) = updated_conditions(&tenant, condition_for(&report), &now)
        && let Err(e) = write(ctx, &tenant, conditions).await
    {
        tracing::warn!(tenant = name, error = %e, "cannot set the IsolationVerified condition; retrying soon");
        known_failing.remove(name);
        return interval.min(Duration::from_secs(30));
    }
    interval
}

/// Whether the operator may impersonate users (the Helm chart grants no impersonation by default).
async fn may_impersonate(client: &kube::Client) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("impersonate".into()),
                resource: Some("users".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let allowed = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&Default::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed);
    if !allowed {
        tracing::info!(
            "the operator may not impersonate users: dry-run isolation checks are left to `bulkhead verify`"
        );
    }
    allowed
}

/// Runs until the future is dropped (the end of the leadership term); never
/// returns when disabled. `tenants` is the controller's store: the Tenants
/// to verify, read without listing them again.
pub async fn run(ctx: Arc<Context>, tenants: Store<StoredTenant>) {
    let Some(interval) = ctx.options.verify_interval.filter(|d| !d.is_zero()) else {
        return futures::future::pending().await;
    };
    let settings = Settings {
        plan: ctx.options.plan.clone(),
        master_key: ctx.options.master_key.clone(),
        pod_cidrs: ctx.options.verify_pod_cidrs.clone(),
        sidecar_image: ctx.options.verify_sidecar_image.clone(),
        impersonate: may_impersonate(&ctx.client).await,
        lenient: true,
        // A tenant's hundreds of access reviews go out a few at a time: it is
        // no longer held off by every reconcile, and a burst of 16 in flight
        // put the drift repairs that ran into it behind them (p99 ~70 → 360 ms).
        concurrency: VERIFY_CONCURRENCY,
    };
    let verifier = Verifier::new(ctx.client.clone(), settings);
    let list_every = interval.min(Duration::from_secs(60));
    let view_max_age = interval.min(Duration::from_secs(300));
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    let mut known_failing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut view: Option<ClusterView> = None;
    let mut listed: Option<Instant> = None;
    if tenants.wait_until_ready().await.is_err() {
        return futures::future::pending().await;
    }
    tracing::info!(interval = ?interval, "continuous isolation verification started");
    loop {
        let now = Instant::now();
        if listed.is_none_or(|t| now.duration_since(t) >= list_every) {
            let names: BTreeSet<String> = tenants.state().iter().map(|t| t.name_any()).collect();
            due.retain(|n, _| names.contains(n));
            known_failing.retain(|n, _| names.contains(n));
            for n in names {
                due.entry(n.clone()).or_insert_with(|| now + offset(&n, interval));
            }
            listed = Some(now);
        }
        let next_list = listed.map_or(now, |t| t + list_every);
        let Some((name, at)) = due.iter().min_by_key(|(_, at)| **at).map(|(n, at)| (n.clone(), *at)) else {
            tokio::time::sleep_until(next_list).await;
            continue;
        };
        if at > now {
            tokio::time::sleep_until(at.min(next_list)).await;
            continue;
        }
        // Verification yields to convergence: it competes for the same
        // apiserver, and a cluster being written would only show transients.
        // A trickle of short reconciles (quota usage following pods) is not
        // convergence, and must not hold it off for as long as it lasts.
        ctx.activity.settled().await;
        if view.as_ref().is_none_or(|v| v.fetched_at.elapsed() >= view_max_age) {
            // The old view goes first: two at once would be the largest
            // thing in the operator's memory.
            view = None;
            match verifier.cluster_view_of(outlines(&tenants.state())).await {
                Ok(v) => view = Some(v),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster for verification; retrying");
                    ctx.metrics.verification_run("error");
                    due.insert(name, now + interval.min(Duration::from_secs(30)));
                    continue;
                }
            }
        }
        let Some(v) = view.as_ref() else { continue };
        let again = verify_one(&ctx, &verifier, v, &name, &mut known_failing, interval).await;
        due.insert(name, Instant::now() + again);
    }
}

/// The outlines of the store's Tenants, decoded one at a time.
fn outlines(stored: &[Arc<StoredTenant>]) -> Vec<TenantOutline> {
    stored.iter().filter_map(|s| s.decoded()).map(|t| TenantOutline::of(&t)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{CheckResult, TenantReport, checks::CATALOGUE};
    use super::*;

    fn report(fail: &[&str]) -> TenantReport {
        TenantReport {
            tenant: "acme".into(),
            results: CATALOGUE
                .iter()
                .map(|c| {
                    if fail.contains(&c.id) {
                        CheckResult::new(c.id, Status::Fail, "x", vec![])
                    } else {
                        CheckResult::new(c.id, Status::Pass, "ok", vec![])
                    }
                })
                .collect(),
        }
    }

    fn tenant_with(cond: Option<Condition>) -> Tenant {
        let mut t = Tenant::new("acme", serde_json::from_value(json!({"namespaces": [{"name": "a"}]})).unwrap());
        t.metadata.generation = Some(2);
        t.status = Some(crate::api::TenantStatus { conditions: cond.into_iter().collect(), ..Default::default() });
        t
    }

    #[test]
    fn offsets_spread_within_the_interval() {
        let hour = Duration::from_secs(3600);
        let offsets: BTreeSet<u64> = (0..100).map(|i| offset(&format!("tenant-{i}"), hour).as_secs()).collect();
        assert!(offsets.iter().all(|o| (30..3600).contains(o)));
        assert!(offsets.len() > 90, "names spread over the hour");
    }

    #[test]
    fn failing_ids_round_trip_through_the_message() {
        let (status, reason, message) = condition_for(&report(&["BH-NET-001", "MTB-PL1-CC-TI-2"]));
        assert_eq!((status, reason), ("False", "ChecksFailed"));
        assert_eq!(failing_in(&message), BTreeSet::from(["MTB-PL1-CC-TI-2".to_string(), "BH-NET-001".to_string()]));
        let (status, _, message) = condition_for(&report(&[]));
        assert_eq!(status, "True");
        assert!(failing_in(&message).is_empty());
    }

    #[test]
    fn unchanged_results_write_nothing_and_keep_the_transition_time() {
        let t0 = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(jiff::Timestamp::from_second(2_000).unwrap());
        let fresh = tenant_with(None);
        let first = updated_conditions(&fresh, condition_for(&report(&[])), &t0).unwrap();
        assert_eq!(first[0].last_transition_time, t0);
        let again = tenant_with(first.first().cloned());
        assert!(
            updated_conditions(&again, condition_for(&report(&[])), &t1).is_none(),
            "a passing run that changes nothing writes nothing"
        );
        let failed = updated_conditions(&again, condition_for(&report(&["BH-NET-001"])), &t1).unwrap();
        assert_eq!(failed[0].last_transition_time, t1);
        let still = tenant_with(failed.first().cloned());
        let other = updated_conditions(&still, condition_for(&report(&["BH-NET-001", "BH-NS-001"])), &t0).unwrap();
        assert_eq!(other[0].last_transition_time, t1, "status unchanged: transition time kept");
    }
}
