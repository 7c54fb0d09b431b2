//! The Tenant status: conditions computed from what a reconcile found.
//!
//! kstatus-compatible: `observedGeneration`, a `Ready` condition, plus
//! `Reconciling`/`Stalled` only while they are true. Transition times only
//! move when a condition's status changes, so a converged tenant's status
//! never changes and is never written.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{KeysStatus, NamespaceStatus, QuotaUsage, TenantStatus};
use crate::plan::object::Kind;

/// What one reconcile found, in the terms the status reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The plan failed; the spec must change.
    pub plan_error: Option<String>,
    /// Namespaces and their phase.
    pub namespaces: Vec<NamespaceStatus>,
    /// Network isolation is switched off in the spec.
    pub isolation_disabled: bool,
    /// NetworkPolicies written.
    pub network_policies: usize,
    /// Distinct subjects bound.
    pub subjects: usize,
    /// ResourceQuotas written.
    pub quotas: usize,
    /// Tenant-wide quota use.
    pub quota_usage: BTreeMap<String, QuotaUsage>,
    /// Objects that could not be applied, with the reason.
    pub failures: Vec<(Kind, String)>,
    /// Erasure in progress: namespaces still terminating.
    pub erasing: Option<usize>,
    /// The tenant's keys, when they are in place.
    pub keys: Option<KeysStatus>,
    /// Why the keys are not in place (condition reason and message).
    pub keys_blocked: Option<(String, String)>,
    /// Generated credentials projected per namespace.
    pub credentials: usize,
}

/// Phase of a namespace the tenant holds.
pub const PHASE_READY: &str = "Ready";
/// Phase of a namespace someone else holds.
pub const PHASE_CONFLICT: &str = "Conflict";
/// Phase of a namespace being deleted.
pub const PHASE_TERMINATING: &str = "Terminating";

struct Cond {
    type_: &'static str,
    ok: Option<bool>,
    reason: String,
    message: String,
}

fn cond(type_: &'static str, ok: Option<bool>, reason: &str, message: impl Into<String>) -> Cond {
    Cond { type_, ok, reason: reason.into(), message: message.into() }
}

fn failures_of(report: &Report, kinds: &[Kind]) -> Vec<String> {
    report.failures.iter().filter(|(k, _)| kinds.contains(k)).map(|(_, m)| m.clone()).collect()
}

fn concerns(report: &Report) -> Vec<Cond> {
    if let Some(err) = &report.plan_error {
        return ["NamespacesReady", "NetworkIsolated", "AccessConfigured", "QuotaEnforced", "SecretsReady"]
            .into_iter()
            .map(|t| cond(t, None, "InvalidSpec", err.clone()))
            .collect();
    }
    let mut out = Vec::new();
    let conflicts: Vec<&str> =
        report.namespaces.iter().filter(|n| n.phase == PHASE_CONFLICT).map(|n| n.name.as_str()).collect();
    let terminating: Vec<&str> =
        report.namespaces.iter().filter(|n| n.phase == PHASE_TERMINATING).map(|n| n.name.as_str()).collect();
    let ns_failures = failures_of(report, &[Kind::Namespace, Kind::ServiceAccount]);
    out.push(if !conflicts.is_empty() {
        cond(
            "NamespacesReady",
            Some(false),
            "NamespaceConflict",
            format!(
                "namespace(s) {} already exist and belong to another tenant or to no tenant; bulkhead never takes them over: rename the entries or free the namespaces",
                conflicts.join(", ")
            ),
        )
    } else if !terminating.is_empty() {
        cond(
            "NamespacesReady",
            Some(false),
            "NamespaceTerminating",
            format!("waiting for namespace(s) {} to finish terminating", terminating.join(", ")),
        )
    } else if !ns_failures.is_empty() {
        cond("NamespacesReady", Some(false), "ApplyFailed", ns_failures.join("; "))
    } else {
        let ready = report.namespaces.len();
        cond("NamespacesReady", Some(true), "NamespacesReady", format!("{ready} namespace(s) ready"))
    });
    let net_failures = failures_of(report, &[Kind::NetworkPolicy]);
    out.push(if report.isolation_disabled {
        cond(
            "NetworkIsolated",
            Some(false),
            "IsolationDisabled",
            "spec.network.isolation is None: no NetworkPolicies isolate this tenant",
        )
    } else if !net_failures.is_empty() {
        cond("NetworkIsolated", Some(false), "ApplyFailed", net_failures.join("; "))
    } else {
        cond(
            "NetworkIsolated",
            Some(true),
            "DefaultDenyApplied",
            format!("default-deny and allow-list policies in place ({} NetworkPolicies)", report.network_policies),
        )
    });
    let rbac_failures = failures_of(report, &[Kind::RoleBinding, Kind::ClusterRole, Kind::ClusterRoleBinding]);
    out.push(if !rbac_failures.is_empty() {
        cond("AccessConfigured", Some(false), "ApplyFailed", rbac_failures.join("; "))
    } else if report.subjects == 0 {
        cond("AccessConfigured", Some(true), "NoSubjects", "no access entries: nobody has access to this tenant")
    } else {
        cond(
            "AccessConfigured",
            Some(true),
            "ProfilesBound",
            format!("{} subject(s) bound to their profiles", report.subjects),
        )
    });
    let quota_failures = failures_of(report, &[Kind::ResourceQuota, Kind::LimitRange]);
    out.push(if !quota_failures.is_empty() {
        cond("QuotaEnforced", Some(false), "ApplyFailed", quota_failures.join("; "))
    } else if report.quotas == 0 {
        cond("QuotaEnforced", Some(false), "NoQuota", "spec.quota is not set: the tenant's resource use is unlimited")
    } else {
        cond("QuotaEnforced", Some(true), "QuotaApplied", format!("ResourceQuota in {} namespace(s)", report.quotas))
    });
    let secret_failures = failures_of(report, &[Kind::Secret]);
    out.push(match (&report.keys_blocked, &report.keys) {
        (Some((reason, message)), _) => cond("SecretsReady", Some(false), reason, message.clone()),
        _ if !secret_failures.is_empty() => {
            cond("SecretsReady", Some(false), "ApplyFailed", secret_failures.join("; "))
        }
        (None, Some(k)) => cond(
            "SecretsReady",
            Some(true),
            "KeysReady",
            format!(
                "key {} current ({} previous kept), {} generated credential(s); next rotation {}",
                k.current_key_id,
                k.previous_key_ids.len(),
                report.credentials,
                k.next_rotation
            ),
        ),
        (None, None) => cond("SecretsReady", None, "Pending", "key material not yet created"),
    });
    out
}

fn status_str(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// Conditions set by other tasks (continuous verification), kept as they are.
pub const EXTERNAL_CONDITIONS: [&str; 1] = ["IsolationVerified"];

/// Builds the status for `generation`, keeping transition times of conditions whose status did not change.
pub fn build(generation: Option<i64>, previous: Option<&TenantStatus>, report: &Report, now: &Time) -> TenantStatus {
    let mut conds = concerns(report);
    // Which concerns block readiness: quota and disabled isolation are the user's choice.
    let blocking = conds.iter().find(|c| {
        (c.ok == Some(false) && !matches!(c.reason.as_str(), "NoQuota" | "IsolationDisabled")) || c.ok.is_none()
    });
    let ready = match (report.erasing, blocking) {
        (Some(n), _) => {
            cond("Ready", Some(false), "Erasing", format!("erasing the tenant: {n} namespace(s) still terminating"))
        }
        (None, Some(b)) => cond("Ready", Some(false), &b.reason.clone(), format!("{}: {}", b.type_, b.message)),
        (None, None) => cond("Ready", Some(true), "Converged", "every control of the tenant is in place"),
    };
    let stalled = report.plan_error.is_some()
        || conds.iter().any(|c| {
            matches!(
                c.reason.as_str(),
                "NamespaceConflict" | "ApplyFailed" | "SourceSecretLost" | "SourceSecretCorrupt" | "MasterKeyMismatch"
            )
        });
    let in_progress = ready.ok != Some(true) && !stalled;
    let mut all = vec![ready];
    all.append(&mut conds);
    if stalled {
        all.push(cond("Stalled", Some(true), &all[0].reason.clone(), all[0].message.clone()));
    }
    if in_progress {
        all.push(cond("Reconciling", Some(true), &all[0].reason.clone(), all[0].message.clone()));
    }
    let conditions = all
        .into_iter()
        .map(|c| {
            let status = status_str(c.ok).to_string();
            let since = previous
                .and_then(|p| p.conditions.iter().find(|pc| pc.type_ == c.type_))
                .filter(|pc| pc.status == status)
                .map(|pc| pc.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.into(),
                status,
                reason: c.reason,
                message: c.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        // Conditions other writers own are carried over untouched.
        .chain(
            previous
                .into_iter()
                .flat_map(|p| p.conditions.iter())
                .filter(|c| EXTERNAL_CONDITIONS.contains(&c.type_.as_str()))
                .cloned(),
        )
        .collect();
    TenantStatus {
        observed_generation: generation,
        conditions,
        namespace_count: report.namespaces.iter().filter(|n| n.phase == PHASE_READY).count() as i32,
        namespaces: report.namespaces.clone(),
        quota: report.quota_usage.clone(),
        // Never forget that keys existed: that memory is what stops a lost
        // source Secret from being silently replaced by new keys.
        keys: report.keys.clone().or_else(|| previous.and_then(|p| p.keys.clone())),
    }
}

/// Namespaces the Tenant's status records as held. Only bulkhead writes the
/// status, so this, not a namespace label anyone could copy, is the proof
/// needed before a namespace is released or deleted.
pub fn held_namespaces(status: Option<&TenantStatus>) -> std::collections::BTreeSet<String> {
    status
        .map(|s| {
            s.namespaces
                .iter()
                .filter(|n| n.phase == PHASE_READY || n.phase == PHASE_TERMINATING)
                .map(|n| n.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the tenant had converged at this generation: any change found now is drift.
pub fn was_converged(generation: Option<i64>, status: Option<&TenantStatus>) -> bool {
    status.is_some_and(|s| {
        s.observed_generation == generation && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    fn ready_report() -> Report {
        Report {
            namespaces: vec![NamespaceStatus { name: "a-x".into(), phase: PHASE_READY.into() }],
            network_policies: 2,
            subjects: 1,
            quotas: 1,
            keys: Some(KeysStatus {
                current_key_id: "k1".into(),
                previous_key_ids: vec![],
                last_rotation: "2026-01-01T00:00:00Z".into(),
                next_rotation: "2026-04-01T00:00:00Z".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn converged_tenant_is_ready_and_stable() {
        let first = build(Some(3), None, &ready_report(), &now(100));
        let ready = first.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert!(first.conditions.iter().all(|c| c.type_ != "Stalled" && c.type_ != "Reconciling"));
        // A later reconcile with the same findings produces the identical status: no write.
        let again = build(Some(3), Some(&first), &ready_report(), &now(999));
        assert_eq!(first, again);
        assert!(was_converged(Some(3), Some(&again)));
        assert!(!was_converged(Some(4), Some(&again)));
    }

    #[test]
    fn conflict_stalls_and_names_the_namespace() {
        let mut report = ready_report();
        report.namespaces.push(NamespaceStatus { name: "a-y".into(), phase: PHASE_CONFLICT.into() });
        let s = build(Some(1), None, &report, &now(1));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "NamespaceConflict");
        assert!(ready.message.contains("a-y"));
        assert!(s.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"));
        assert_eq!(s.namespace_count, 1);
    }

    #[test]
    fn no_quota_does_not_block_ready() {
        let mut report = ready_report();
        report.quotas = 0;
        let s = build(Some(1), None, &report, &now(1));
        assert!(s.conditions.iter().any(|c| c.type_ == "QuotaEnforced" && c.status == "False"));
        assert!(s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let first = build(Some(1), None, &ready_report(), &now(10));
        let mut broken = ready_report();
        broken.failures.push((Kind::NetworkPolicy, "denied".into()));
        let second = build(Some(1), Some(&first), &broken, &now(20));
        let t = |s: &TenantStatus, ty: &str| {
            s.conditions.iter().find(|c| c.type_ == ty).unwrap().last_transition_time.clone()
        };
        assert_eq!(t(&second, "NamespacesReady"), now(10));
        assert_eq!(t(&second, "NetworkIsolated"), now(20));
        assert_eq!(t(&second, "Ready"), now(20));
    }

    #[test]
    fn lost_keys_block_ready_and_are_remembered() {
        let first = build(Some(1), None, &ready_report(), &now(1));
        let lost =
            Report { keys: None, keys_blocked: Some(("SourceSecretLost".into(), "gone".into())), ..ready_report() };
        let s = build(Some(1), Some(&first), &lost, &now(2));
        assert!(s.conditions.iter().any(|c| c.type_ == "SecretsReady" && c.reason == "SourceSecretLost"));
        assert!(s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False"));
        assert_eq!(s.keys, first.keys, "the status still says keys existed");
    }

    #[test]
    fn conditions_of_other_writers_are_carried_over() {
        let mut first = build(Some(1), None, &ready_report(), &now(1));
        let verified = Condition {
            type_: "IsolationVerified".into(),
            status: "False".into(),
            reason: "ChecksFailed".into(),
            message: "failing: BH-NET-001".into(),
            observed_generation: Some(1),
            last_transition_time: now(5),
        };
        first.conditions.push(verified.clone());
        let again = build(Some(1), Some(&first), &ready_report(), &now(9));
        assert_eq!(again, first, "the reconciler neither drops nor rewrites IsolationVerified");
        assert!(again.conditions.contains(&verified));
    }

    #[test]
    fn invalid_spec_is_unknown_and_stalled() {
        let report = Report { plan_error: Some("bad".into()), ..Default::default() };
        let s = build(Some(1), None, &report, &now(1));
        assert!(s.conditions.iter().any(|c| c.type_ == "NetworkIsolated" && c.status == "Unknown"));
        assert!(s.conditions.iter().any(|c| c.type_ == "Stalled"));
        assert!(s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec"));
    }
}
