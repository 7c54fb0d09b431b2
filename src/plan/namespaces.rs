//! Tenant namespaces and their default ServiceAccounts.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{SubjectKind, Tenant, TenantSpec};

use super::{
    Config, Effective, ManagedObject, PlanError, RESERVED_NAMESPACES, is_dns_label, namespace_name, owner_labels,
};

/// Pod Security Admission label prefix.
pub const PSA_PREFIX: &str = "pod-security.kubernetes.io/";

/// Full names of the tenant's namespaces, checked for clashes and reserved names.
pub fn names(tenant: &str, spec: &TenantSpec, config: &Config) -> Result<Vec<String>, PlanError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(spec.namespaces.len());
    for ns in &spec.namespaces {
        if !seen.insert(ns.name.as_str()) {
            return Err(PlanError::DuplicateNamespace(ns.name.clone()));
        }
        let full = namespace_name(tenant, &ns.name);
        if !is_dns_label(&ns.name) || !is_dns_label(&full) {
            return Err(PlanError::InvalidNamespace(full));
        }
        if RESERVED_NAMESPACES.contains(&full.as_str()) || full == config.operator_namespace {
            return Err(PlanError::ReservedNamespace(full));
        }
        out.push(full);
    }
    Ok(out)
}

/// The Pod Security Admission labels for a level.
pub fn psa_labels(effective: &Effective) -> BTreeMap<String, String> {
    let level = effective.pod_security.as_str();
    ["enforce", "audit", "warn"]
        .into_iter()
        .flat_map(|mode| {
            [
                (format!("{PSA_PREFIX}{mode}"), level.to_string()),
                (format!("{PSA_PREFIX}{mode}-version"), "latest".to_string()),
            ]
        })
        .collect()
}

/// Each namespace with its labels, and its default ServiceAccount with token automount off.
pub fn plan(tenant: &str, spec: &TenantSpec, effective: &Effective) -> Vec<ManagedObject> {
    let psa = psa_labels(effective);
    let mut out = Vec::with_capacity(spec.namespaces.len() * 2);
    for ns in &spec.namespaces {
        let name = namespace_name(tenant, &ns.name);
        // User labels first so ours win; the CRD already forbids overriding them.
        let mut labels = ns.labels.clone();
        labels.extend(psa.clone());
        labels.extend(owner_labels(tenant));
        out.push(ManagedObject::Namespace(Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                annotations: (!ns.annotations.is_empty()).then(|| ns.annotations.clone()),
                ..Default::default()
            },
            ..Default::default()
        }));
        // Pods that need an API token must ask for one explicitly.
        out.push(ManagedObject::ServiceAccount(ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(name),
                labels: Some(owner_labels(tenant)),
                ..Default::default()
            },
            automount_service_account_token: Some(false),
            ..Default::default()
        }));
    }
    out
}

/// The Tenant as planned when it may not hold `blocked` namespaces: those
/// namespaces and the ServiceAccount access entries living in them are left
/// out, and the status is dropped (the plan never reads it). The controller
/// plans exactly this, and verification compares the cluster with it.
pub fn without(tenant: &Tenant, blocked: &BTreeSet<String>) -> Tenant {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let mut usable = tenant.clone();
    usable.status = None;
    usable.spec.namespaces.retain(|n| !blocked.contains(&namespace_name(&name, &n.name)));
    usable.spec.access.retain(|a| {
        a.kind != SubjectKind::ServiceAccount || a.namespace.as_ref().is_none_or(|ns| !blocked.contains(ns))
    });
    usable
}

/// Whether a tenant may hold a namespace, given what the cluster has under that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No such namespace: bulkhead creates it.
    Free,
    /// Already this tenant's and managed.
    Ours,
    /// This tenant's, released earlier under `Retain`: taken back, data intact.
    Released,
    /// Being deleted; wait.
    Terminating,
    /// Held by another tenant.
    OtherTenant(String),
    /// Exists outside bulkhead.
    Foreign,
}

/// All a claim reads of a namespace that exists: whose tenant label it
/// carries, whether bulkhead's managed-by label is on it, and whether it is
/// being deleted. The controller's namespace cache, which the webhooks
/// share, keeps this much of every namespace in the cluster, not its labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    /// The value of its tenant label.
    pub holder: Option<String>,
    /// Whether it carries bulkhead's managed-by label.
    pub managed: bool,
    /// Whether it is being deleted.
    pub terminating: bool,
}

impl Existing {
    /// The facts of a namespace with these labels.
    pub fn of(labels: Option<&BTreeMap<String, String>>, terminating: bool) -> Self {
        let label = |key: &str| labels.and_then(|l| l.get(key));
        Self {
            holder: label(super::LABEL_TENANT).cloned(),
            managed: label(super::LABEL_MANAGED_BY).is_some_and(|v| v == super::MANAGED_BY),
            terminating,
        }
    }
}

impl Claim {
    /// Decides from the existing namespace (None when it does not exist) and
    /// whether the Tenant's own status records holding it. Labels can be
    /// edited by anyone with namespace rights, the Tenant status only by
    /// bulkhead, so a namespace the status records stays ours even if
    /// someone relabels it, and a relabelled namespace never becomes ours.
    pub fn of(tenant: &str, existing: Option<&Existing>, held: bool) -> Self {
        let Some(Existing { holder, managed, terminating }) = existing else {
            return Claim::Free;
        };
        let holder = holder.as_deref();
        match holder {
            _ if *terminating && (held || holder == Some(tenant)) => Claim::Terminating,
            _ if held && !terminating => Claim::Ours,
            Some(t) if t == tenant && *managed => Claim::Ours,
            Some(t) if t == tenant => Claim::Released,
            Some(t) => Claim::OtherTenant(t.to_string()),
            None => Claim::Foreign,
        }
    }

    /// Whether the tenant may manage the namespace now.
    pub fn usable(&self) -> bool {
        matches!(self, Claim::Free | Claim::Ours | Claim::Released)
    }
}
