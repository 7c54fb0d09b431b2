//! Verification: proof, against the live cluster, that each tenant is
//! isolated. Every check reads the same Tenant types and the same plan the
//! controller applies ([`crate::plan::plan`], [`crate::plan::secrets::projections`],
//! compared with [`crate::controller::diff::contains`]); nothing here
//! re-states what a tenant should have.
//!
//! - [`checks`]: the catalogue (stable ids, titles, controls, remediation);
//! - [`view`]: what is read from the cluster, once per run and per tenant;
//! - [`packed`]: the compact, shared form the view keeps namespaces, policies and bindings in;
//! - [`access`]: SubjectAccessReviews and impersonated server-side dry-runs;
//! - [`controls`]: managed objects against the plan, keys, webhooks;
//! - [`network`]: a NetworkPolicy evaluator and the cross-tenant check;
//! - [`pods`]: the audit sidecar and data residency of every pod, by the admission webhook's own rules;
//! - [`report`]: table, JSON, Markdown and JUnit XML;
//! - [`schedule`]: the controller's periodic run and the `IsolationVerified` condition;
//! - [`cli`]: `bulkhead verify` and the verification flags of `bulkhead run`.

pub mod access;
pub mod checks;
pub mod cli;
pub mod controls;
pub mod network;
pub mod packed;
pub mod pods;
pub mod report;
pub mod schedule;
pub mod view;

use std::sync::Arc;

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::api::Tenant;
use crate::controller::keys::MasterKey;
use crate::plan;

pub use view::{ClusterView, TenantFacts, TenantOutline};

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The control is in place.
    Pass,
    /// The control is missing or broken; the evidence shows where.
    Fail,
    /// The check does not apply to this tenant or cluster; the reason says why.
    NotApplicable,
    /// The check could not be run (API error, inconclusive probe).
    Error,
}

impl Status {
    /// Upper-case label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotApplicable => "N/A",
            Status::Error => "ERROR",
        }
    }
}

/// One piece of evidence: a request made (or an object compared) and the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The subject the request was made as, if impersonated or reviewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The exact request or comparison.
    pub request: String,
    /// The apiserver's answer, or what was found.
    pub response: String,
    /// Whether this answer is what the control requires.
    pub ok: bool,
}

impl Evidence {
    /// Evidence about a subject.
    pub fn of(subject: impl Into<String>, request: impl Into<String>, response: impl Into<String>, ok: bool) -> Self {
        Self { subject: Some(subject.into()), request: request.into(), response: response.into(), ok }
    }

    /// Evidence not tied to a subject.
    pub fn plain(request: impl Into<String>, response: impl Into<String>, ok: bool) -> Self {
        Self { subject: None, request: request.into(), response: response.into(), ok }
    }
}

/// The result of one check for one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The catalogue entry.
    pub check: &'static checks::Check,
    /// The outcome.
    pub status: Status,
    /// One or two sentences: why it passed, failed or does not apply.
    pub reason: String,
    /// Requests and answers.
    pub evidence: Vec<Evidence>,
}

impl CheckResult {
    /// A result with an explicit status.
    pub fn new(id: &str, status: Status, reason: impl Into<String>, evidence: Vec<Evidence>) -> Self {
        Self { check: checks::get(id), status, reason: reason.into(), evidence }
    }

    /// Pass when every piece of evidence is ok, fail otherwise; `failing`
    /// names what failed, given the number of failing pieces.
    pub fn judge(
        id: &str,
        evidence: Vec<Evidence>,
        passing: impl Into<String>,
        failing: impl Fn(usize) -> String,
    ) -> Self {
        let bad = evidence.iter().filter(|e| !e.ok).count();
        if bad == 0 {
            Self::new(id, Status::Pass, passing, evidence)
        } else {
            Self::new(id, Status::Fail, failing(bad), evidence)
        }
    }

    /// Not applicable, with the reason.
    pub fn not_applicable(id: &str, reason: impl Into<String>) -> Self {
        Self::new(id, Status::NotApplicable, reason, Vec::new())
    }

    /// Could not be run.
    pub fn error(id: &str, reason: impl Into<String>) -> Self {
        Self::new(id, Status::Error, reason, Vec::new())
    }
}

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Checks that passed.
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Checks that do not apply.
    pub not_applicable: usize,
    /// Checks that could not be run.
    pub errors: usize,
}

impl Summary {
    /// Counts the outcomes of `results`.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a CheckResult>) -> Self {
        let mut s = Summary::default();
        for r in results {
            match r.status {
                Status::Pass => s.passed += 1,
                Status::Fail => s.failed += 1,
                Status::NotApplicable => s.not_applicable += 1,
                Status::Error => s.errors += 1,
            }
        }
        s
    }

    /// Adds another summary.
    pub fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.not_applicable += other.not_applicable;
        self.errors += other.errors;
    }

    /// `N passed, M failed`, then the not-applicable and error counts when any.
    pub fn line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.not_applicable > 0 {
            line.push_str(&format!(", {} not applicable", self.not_applicable));
        }
        if self.errors > 0 {
            line.push_str(&format!(", {} errors", self.errors));
        }
        line
    }

    /// Whether nothing failed or errored (and, when `strict`, nothing was not applicable).
    pub fn ok(&self, strict: bool) -> bool {
        self.failed == 0 && self.errors == 0 && (!strict || self.not_applicable == 0)
    }
}

/// Every check of one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantReport {
    /// The tenant's name.
    pub tenant: String,
    /// One result per catalogue entry, in catalogue order.
    pub results: Vec<CheckResult>,
}

impl TenantReport {
    /// Counts of outcomes.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.results)
    }

    /// The result of check `id`.
    pub fn result(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.check.id == id)
    }

    /// Ids of failed and errored checks, in catalogue order.
    pub fn failing(&self) -> Vec<&'static str> {
        self.results.iter().filter(|r| matches!(r.status, Status::Fail | Status::Error)).map(|r| r.check.id).collect()
    }
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// When the run finished (RFC 3339).
    pub generated_at: String,
    /// One report per tenant, by name.
    pub tenants: Vec<TenantReport>,
}

impl Report {
    /// Counts over all tenants.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for t in &self.tenants {
            s.add(t.summary());
        }
        s
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The apiserver refused or failed a request the whole run needs.
    #[error("cannot {what}: {source}")]
    Api {
        /// What was being read.
        what: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// `--tenant` names no Tenant.
    #[error("Tenant {0} does not exist")]
    NoSuchTenant(String),
}

impl VerifyError {
    pub(crate) fn api(what: impl Into<String>, source: kube::Error) -> Self {
        VerifyError::Api { what: what.into(), source }
    }
}

/// What verification needs besides a client.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The plan configuration the controller uses (operator namespace, DNS).
    pub plan: plan::Config,
    /// The master key, to compare key projections with the source Secret when it is wrapped.
    pub master_key: Option<Arc<MasterKey>>,
    /// Pod networks of the cluster, for NetworkPolicy ipBlocks; empty means "read the nodes' podCIDRs, else 10.244.0.0/16".
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Requests made at once.
    pub concurrency: usize,
    /// Whether dry-run probes may impersonate the tenant's subjects.
    pub impersonate: bool,
    /// Whether a right the verifier itself lacks (403) makes the checks needing it
    /// not applicable instead of errors: the controller runs with the least
    /// privilege the Helm chart grants; `bulkhead verify` with an auditor's
    /// credentials runs them all.
    pub lenient: bool,
    /// The audit sidecar image the operator injects; None checks every other property of the sidecar but not its image.
    pub sidecar_image: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            plan: plan::Config::default(),
            master_key: None,
            pod_cidrs: Vec::new(),
            concurrency: 16,
            impersonate: true,
            lenient: false,
            sidecar_image: None,
        }
    }
}

/// Runs the checks.
#[derive(Clone)]
pub struct Verifier {
    client: Client,
    settings: Settings,
}

impl Verifier {
    /// A verifier using `client` (the caller's credentials, or the operator's).
    pub fn new(client: Client, settings: Settings) -> Self {
        Self { client, settings }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Reads what every tenant's checks share (namespaces, policies, bindings,
    /// webhooks) with the Tenants already at hand, in outline.
    pub async fn cluster_view_of(&self, tenants: Vec<TenantOutline>) -> Result<ClusterView, VerifyError> {
        ClusterView::fetch(&self.client, &self.settings, tenants).await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, VerifyError> {
        view::list_all(&Api::<Tenant>::all(self.client.clone()), &ListParams::default())
            .await
            .map_err(|e| VerifyError::api("list Tenants", e))
    }

    /// Runs every check for `tenant` (the Tenant as read now; `view` may be a little older).
    pub async fn verify_tenant(&self, view: &ClusterView, tenant: &Tenant) -> TenantReport {
        let name = tenant.name_any();
        let facts = match TenantFacts::fetch(&self.client, &self.settings, view, tenant).await {
            Ok(f) => f,
            Err(reason) => {
                let results = checks::CATALOGUE.iter().map(|c| CheckResult::error(c.id, reason.clone())).collect();
                return TenantReport { tenant: name, results };
            }
        };
        let ctx = Ctx { client: &self.client, settings: &self.settings, view, facts: &facts };
        let (mut results, access) = futures::join!(controls::run(&ctx), access::run(&ctx));
        results.extend(access);
        // The connectivity model is CPU-bound for a while at a thousand tenants:
        // off the async workers, so reconciles (drift repair) are not held up.
        results.push(cpu_bound(|| network::run(&ctx)));
        results.extend(pods::run(&ctx));
        results.sort_by_key(|r| checks::CATALOGUE.iter().position(|c| c.id == r.check.id));
        TenantReport { tenant: name, results }
    }

    /// Runs every check for every Tenant, or only for `only`.
    pub async fn verify(&self, only: Option<&str>) -> Result<Report, VerifyError> {
        let all = self.tenants().await?;
        let view = self.cluster_view_of(all.iter().map(TenantOutline::of).collect()).await?;
        let mut tenants: Vec<&Tenant> = all.iter().filter(|t| only.is_none_or(|n| t.name_any() == n)).collect();
        if let (Some(n), true) = (only, tenants.is_empty()) {
            return Err(VerifyError::NoSuchTenant(n.to_string()));
        }
        tenants.sort_by_key(|t| t.name_any());
        let mut out = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            out.push(self.verify_tenant(&view, tenant).await);
        }
        Ok(Report { generated_at: jiff::Timestamp::now().to_string(), tenants: out })
    }
}

/// Everything one tenant's checks read.
pub struct Ctx<'a> {
    /// The client.
    pub client: &'a Client,
    /// The settings.
    pub settings: &'a Settings,
    /// The cluster as read at the start of the run.
    pub view: &'a ClusterView,
    /// The tenant's own objects, read now.
    pub facts: &'a TenantFacts,
}

/// Runs CPU-bound work where it does not stall other tasks: in place of a
/// worker of a multi-threaded runtime (its tasks move to other workers).
fn cpu_bound<T>(f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi { tokio::task::block_in_place(f) } else { f() }
}
