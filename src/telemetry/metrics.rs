//! Prometheus metrics in the OpenMetrics text format.
//!
//! One [`Metrics`] per process, shared by the controller, the admission
//! server and the verifier through plain methods, so no caller needs to know
//! prometheus-client. Label values come from small fixed sets (kinds, verbs,
//! condition types, hooks, decisions) except `tenant`, which appears only on
//! per-tenant gauges that are bounded by the number of Tenants.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    condition: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: String,
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    hook: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// What a Tenant last reported: its conditions and key times (Unix seconds).
#[derive(Clone, Debug, Default, PartialEq)]
struct TenantState {
    conditions: Vec<(String, String)>,
    last_rotation: Option<i64>,
    next_rotation: Option<i64>,
}

/// Per-tenant state the tenant gauges are computed from at scrape time, so a
/// gauge can never drift from the state (no increments to get wrong) and key
/// age is exact at the moment of the scrape.
#[derive(Debug, Default)]
struct Tenants(Mutex<HashMap<String, TenantState>>);

impl Collector for Tenants {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(map) = self.0.lock() else {
            return Ok(());
        };
        let mut by_condition: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for state in map.values() {
            for (condition, status) in &state.conditions {
                *by_condition.entry((condition.as_str(), status.as_str())).or_default() += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "bulkhead_tenants",
            "Tenants by condition type and status, as last reconciled by this replica (the leader).",
            None,
            MetricType::Gauge,
        )?;
        for ((condition, status), n) in by_condition {
            let labels = ConditionLabels { condition: condition.into(), status: status.into() };
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        let now = jiff::Timestamp::now().as_second();
        let mut sorted: Vec<_> = map.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut family = encoder.encode_descriptor(
            "bulkhead_key_age",
            "Age of each tenant's current data-encryption and audit-signing key.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (tenant, state) in &sorted {
            if let Some(t) = state.last_rotation {
                ConstGauge::new(now.saturating_sub(t))
                    .encode(family.encode_family(&TenantLabels { tenant: tenant.to_string() })?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "bulkhead_key_next_rotation_timestamp",
            "When each tenant's keys are due to rotate (Unix time); overdue means rotation is failing.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (tenant, state) in &sorted {
            if let Some(t) = state.next_rotation {
                ConstGauge::new(t).encode(family.encode_family(&TenantLabels { tenant: tenant.to_string() })?)?;
            }
        }
        Ok(())
    }
}

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    tenants: std::sync::Arc<Tenants>,
    reconcile_duration: Family<ResultLabels, Histogram>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    api_writes: Family<WriteLabels, Counter>,
    drift_repairs: Family<KindLabels, Counter>,
    admission_requests: Family<DecisionLabels, Counter>,
    admission_duration: Family<HookLabels, Histogram>,
    verification_runs: Family<ResultLabels, Counter>,
    verification_failed_checks: Family<TenantLabels, Gauge>,
    verification_last_run: Gauge<f64, AtomicU64>,
    leader: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn reconcile_histogram() -> Histogram {
    // 5 ms .. ~10 s: a converged tenant takes milliseconds, a new one a few hundred.
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

fn admission_histogram() -> Histogram {
    // 0.25 ms .. ~0.5 s: the admission budget is a 5 ms p99.
    Histogram::new(exponential_buckets(0.00025, 2.0, 12))
}

impl Metrics {
    /// A fresh set of metrics with its own registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tenants = std::sync::Arc::new(Tenants::default());
        let reconcile_duration =
            Family::<ResultLabels, Histogram>::new_with_constructor(reconcile_histogram as fn() -> _);
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        let api_writes = Family::<WriteLabels, Counter>::default();
        let drift_repairs = Family::<KindLabels, Counter>::default();
        let admission_requests = Family::<DecisionLabels, Counter>::default();
        let admission_duration =
            Family::<HookLabels, Histogram>::new_with_constructor(admission_histogram as fn() -> _);
        let verification_runs = Family::<ResultLabels, Counter>::default();
        let verification_failed_checks = Family::<TenantLabels, Gauge>::default();
        let verification_last_run = Gauge::<f64, AtomicU64>::default();
        let leader = Gauge::default();
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);

        let r = registry.sub_registry_with_prefix("bulkhead");
        r.register("build_info", "Version of the running operator (always 1)", build_info);
        r.register("leader", "1 while this replica holds the leader Lease and reconciles, else 0", leader.clone());
        r.register_with_unit(
            "reconcile_duration",
            "Time one Tenant reconcile took, by result (success or error)",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        r.register("reconcile_errors", "Failed Tenant reconciles by reason", reconcile_errors.clone());
        r.register(
            "api_writes",
            "Write requests the operator sent to the apiserver, by object kind and verb (excludes Lease renewals)",
            api_writes.clone(),
        );
        r.register(
            "drift_repairs",
            "Managed objects found deleted or changed outside bulkhead and restored, by kind",
            drift_repairs.clone(),
        );
        r.register(
            "admission_requests",
            "Admission reviews answered, by webhook and decision (allowed, denied, patched, error)",
            admission_requests.clone(),
        );
        r.register_with_unit(
            "admission_duration",
            "Time to answer one admission review, by webhook",
            Unit::Seconds,
            admission_duration.clone(),
        );
        r.register(
            "verification_runs",
            "Isolation verification runs, by result (pass, fail, error)",
            verification_runs.clone(),
        );
        r.register(
            "verification_failed_checks",
            "Isolation checks failing per tenant in the last verification run",
            verification_failed_checks.clone(),
        );
        r.register_with_unit(
            "verification_last_run_timestamp",
            "When isolation verification last completed (Unix time)",
            Unit::Seconds,
            verification_last_run.clone(),
        );
        registry.register_collector(Box::new(tenants.clone()));
        Self {
            registry,
            tenants,
            reconcile_duration,
            reconcile_errors,
            api_writes,
            drift_repairs,
            admission_requests,
            admission_duration,
            verification_runs,
            verification_failed_checks,
            verification_last_run,
            leader,
        }
    }

    /// The metrics in the OpenMetrics text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records one write request sent to the apiserver (`verb`: apply, create, update, patch, delete).
    pub fn api_write(&self, kind: &str, verb: &str) {
        self.api_writes.get_or_create(&WriteLabels { kind: kind.into(), verb: verb.into() }).inc();
    }

    /// Total write requests sent so far, over every kind and verb.
    pub fn api_writes_total(&self) -> u64 {
        let mut total = 0;
        let text = self.encode();
        for line in text.lines().filter(|l| l.starts_with("bulkhead_api_writes_total{")) {
            total += line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        total
    }

    /// Records a finished reconcile and, when it failed, why.
    pub fn reconciled(&self, took: Duration, error_reason: Option<&str>) {
        let result = if error_reason.is_some() { "error" } else { "success" };
        self.reconcile_duration.get_or_create(&ResultLabels { result: result.into() }).observe(took.as_secs_f64());
        if let Some(reason) = error_reason {
            self.reconcile_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        }
    }

    /// Records a drift repair of an object of `kind`.
    pub fn drift_repaired(&self, kind: &str) {
        self.drift_repairs.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    /// Sets a tenant's conditions (type, status) as its latest reconcile computed them.
    pub fn tenant_conditions<'a>(&self, tenant: &str, conditions: impl IntoIterator<Item = (&'a str, &'a str)>) {
        if let Ok(mut map) = self.tenants.0.lock() {
            map.entry(tenant.to_string()).or_default().conditions =
                conditions.into_iter().map(|(t, s)| (t.to_string(), s.to_string())).collect();
        }
    }

    /// Sets when a tenant's current keys were made and when they are due to rotate (RFC 3339 strings).
    pub fn tenant_keys(&self, tenant: &str, last_rotation: &str, next_rotation: &str) {
        let secs = |s: &str| s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second());
        if let Ok(mut map) = self.tenants.0.lock() {
            let state = map.entry(tenant.to_string()).or_default();
            state.last_rotation = secs(last_rotation);
            state.next_rotation = secs(next_rotation);
        }
    }

    /// Forgets a tenant that is gone.
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut map) = self.tenants.0.lock() {
            map.remove(tenant);
        }
        self.verification_failed_checks.remove(&TenantLabels { tenant: tenant.into() });
    }

    /// Forgets every tenant: a replica that stops leading stops reporting them, so two replicas never both do.
    pub fn forget_all_tenants(&self) {
        if let Ok(mut map) = self.tenants.0.lock() {
            map.clear();
        }
        self.verification_failed_checks.clear();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records one admission review: `hook` names the webhook, `decision` is
    /// `allowed`, `denied`, `patched` or `error`.
    pub fn admission_request(&self, hook: &str, decision: &str, took: Duration) {
        self.admission_requests.get_or_create(&DecisionLabels { hook: hook.into(), decision: decision.into() }).inc();
        self.admission_duration.get_or_create(&HookLabels { hook: hook.into() }).observe(took.as_secs_f64());
    }

    /// Records one completed verification run: `result` is `pass`, `fail` or `error`.
    pub fn verification_run(&self, result: &str) {
        self.verification_runs.get_or_create(&ResultLabels { result: result.into() }).inc();
        self.verification_last_run.set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    }

    /// Records how many isolation checks of one tenant failed in the last run.
    pub fn verification_failures(&self, tenant: &str, failed: u64) {
        self.verification_failed_checks
            .get_or_create(&TenantLabels { tenant: tenant.into() })
            .set(i64::try_from(failed).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_openmetrics_with_the_documented_names() {
        let m = Metrics::new();
        m.api_write("NetworkPolicy", "apply");
        m.api_write("NetworkPolicy", "apply");
        m.api_write("Tenant", "patch-status");
        m.reconciled(Duration::from_millis(20), None);
        m.reconciled(Duration::from_millis(20), Some("ApiConflict"));
        m.drift_repaired("Secret");
        m.admission_request("pods", "denied", Duration::from_micros(700));
        m.verification_run("pass");
        m.verification_failures("acme", 0);
        m.set_leader(true);
        let text = m.encode();
        for expected in [
            "bulkhead_api_writes_total{kind=\"NetworkPolicy\",verb=\"apply\"} 2",
            "bulkhead_reconcile_errors_total{reason=\"ApiConflict\"} 1",
            "bulkhead_drift_repairs_total{kind=\"Secret\"} 1",
            "bulkhead_admission_requests_total{hook=\"pods\",decision=\"denied\"} 1",
            "bulkhead_admission_duration_seconds_bucket{le=\"0.001\",hook=\"pods\"} 1",
            "bulkhead_reconcile_duration_seconds_count{result=\"error\"} 1",
            "bulkhead_verification_runs_total{result=\"pass\"} 1",
            "bulkhead_leader 1",
            "bulkhead_build_info{version=",
            "# TYPE bulkhead_tenants gauge",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        assert_eq!(m.api_writes_total(), 3);
    }

    #[test]
    fn tenant_gauges_follow_the_latest_state() {
        let m = Metrics::new();
        m.tenant_conditions("a", [("Ready", "True"), ("SecretsReady", "True")]);
        m.tenant_conditions("b", [("Ready", "False")]);
        m.tenant_conditions("a", [("Ready", "True")]);
        m.tenant_keys("a", "2020-01-01T00:00:00Z", "2020-04-01T00:00:00Z");
        let text = m.encode();
        assert!(text.contains("bulkhead_tenants{condition=\"Ready\",status=\"True\"} 1"), "{text}");
        assert!(text.contains("bulkhead_tenants{condition=\"Ready\",status=\"False\"} 1"), "{text}");
        assert!(!text.contains("condition=\"SecretsReady\""), "{text}");
        assert!(text.contains("bulkhead_key_next_rotation_timestamp_seconds{tenant=\"a\"} 1585699200"), "{text}");
        let age_line = text.lines().find(|l| l.starts_with("bulkhead_key_age_seconds{tenant=\"a\"}")).unwrap();
        let age: i64 = age_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(age > 60 * 60 * 24 * 365, "age counts from the rotation time: {age}");
        m.forget_tenant("a");
        m.forget_all_tenants();
        assert!(!m.encode().contains("bulkhead_tenants{"));
    }
}
