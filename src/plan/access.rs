//! Access profiles: fixed ClusterRoles shared by all tenants, bound per
//! namespace by one RoleBinding per access entry, and a per-tenant
//! ClusterRole that lets the tenant's subjects read their own Tenant.
//!
//! No profile has any cluster-scoped right beyond `get` on its own Tenant,
//! and none can touch ResourceQuotas or LimitRanges except to read them.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::api::{AccessEntry, Profile, SubjectKind, TenantSpec};

use super::{Effective, LABEL_MANAGED_BY, LABEL_SHARED, MANAGED_BY, ManagedObject, PlanError, owner_labels};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

/// Workload resources every profile reads and admins and developers write.
const WORKLOADS: &[(&str, &[&str])] = &[
    ("", &["pods", "services", "endpoints", "configmaps", "persistentvolumeclaims", "serviceaccounts"]),
    ("apps", &["deployments", "statefulsets", "replicasets", "daemonsets"]),
    ("batch", &["jobs", "cronjobs"]),
    ("autoscaling", &["horizontalpodautoscalers"]),
    ("policy", &["poddisruptionbudgets"]),
    ("networking.k8s.io", &["ingresses"]),
];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

fn workloads(verbs: &[&str]) -> Vec<PolicyRule> {
    WORKLOADS.iter().map(|(g, r)| rule(g, r, verbs)).collect()
}

/// Name of a profile's ClusterRole; `exec` selects the variant with pods/exec, attach and port-forward.
pub fn profile_role_name(profile: Profile, exec: bool) -> String {
    let exec = if exec && matches!(profile, Profile::Admin | Profile::Developer) { "" } else { "-noexec" };
    match profile {
        Profile::Admin | Profile::Developer => {
            format!("bulkhead-profile-{}{exec}", profile.as_str())
        }
        _ => format!("bulkhead-profile-{}", profile.as_str()),
    }
}

/// The rules of one profile: the single documented source of its rights.
pub fn profile_rules(profile: Profile, exec: bool) -> Vec<PolicyRule> {
    let namespace_get = rule("", &["namespaces"], &["get"]);
    let observe = vec![
        rule("", &["pods/log", "events", "resourcequotas", "limitranges"], READ),
        rule("events.k8s.io", &["events"], READ),
        rule("discovery.k8s.io", &["endpointslices"], READ),
    ];
    let exec_rules = || {
        vec![
            rule("", &["pods/exec", "pods/attach", "pods/portforward"], &["create", "get"]),
            rule("", &["pods/ephemeralcontainers"], &["patch", "update"]),
        ]
    };
    let mut rules = Vec::new();
    match profile {
        Profile::Admin | Profile::Developer => {
            rules.extend(workloads(WRITE));
            rules.push(rule("", &["secrets"], WRITE));
            rules.extend(observe);
            if profile == Profile::Admin {
                rules.push(rule("rbac.authorization.k8s.io", &["roles", "rolebindings"], WRITE));
                rules.push(rule("networking.k8s.io", &["networkpolicies"], WRITE));
            }
            if exec {
                rules.extend(exec_rules());
            }
        }
        Profile::Auditor => {
            rules.extend(workloads(READ));
            rules.extend(observe);
            rules.push(rule("rbac.authorization.k8s.io", &["roles", "rolebindings"], READ));
            rules.push(rule("networking.k8s.io", &["networkpolicies"], READ));
        }
        Profile::Viewer => {
            rules.extend(workloads(READ));
        }
    }
    rules.push(namespace_get);
    rules
}

/// The shared profile ClusterRoles, identical for every tenant.
pub fn profile_cluster_roles() -> Vec<ManagedObject> {
    let mut out = Vec::new();
    for profile in Profile::ALL {
        let variants: &[bool] = match profile {
            Profile::Admin | Profile::Developer => &[true, false],
            _ => &[false],
        };
        for &exec in variants {
            let labels = BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                (LABEL_SHARED.to_string(), "true".to_string()),
                ("bulkhead.dev/profile".to_string(), profile.as_str().to_string()),
            ]);
            out.push(ManagedObject::ClusterRole(ClusterRole {
                metadata: ObjectMeta {
                    name: Some(profile_role_name(profile, exec)),
                    labels: Some(labels),
                    ..Default::default()
                },
                rules: Some(profile_rules(profile, exec)),
                aggregation_rule: None,
            }));
        }
    }
    out
}

/// The RBAC subject for an access entry.
pub fn subject(entry: &AccessEntry) -> Subject {
    Subject {
        kind: entry.kind.as_str().to_string(),
        name: entry.name.clone(),
        namespace: entry.namespace.clone(),
        api_group: match entry.kind {
            SubjectKind::ServiceAccount => None,
            _ => Some("rbac.authorization.k8s.io".to_string()),
        },
    }
}

/// Stable name of the RoleBinding for one access entry: the role it grants
/// (roleRef is immutable, so a new profile means a new binding) and a digest of the subject.
pub fn binding_name(entry: &AccessEntry, exec: bool) -> String {
    let mut digest = Sha256::new();
    digest.update(entry.kind.as_str());
    digest.update([0]);
    digest.update(&entry.name);
    digest.update([0]);
    digest.update(entry.namespace.as_deref().unwrap_or(""));
    let hash = hex::encode(&digest.finalize()[..5]);
    format!("{}-{hash}", profile_role_name(entry.profile, exec).replacen("bulkhead-profile-", "bulkhead-", 1))
}

/// Name of the per-tenant ClusterRole and ClusterRoleBinding.
pub fn tenant_role_name(tenant: &str) -> String {
    format!("bulkhead-tenant-{tenant}")
}

/// RoleBindings per namespace and access entry, and the per-tenant read of its own Tenant.
pub fn plan(
    tenant: &str,
    namespaces: &[String],
    spec: &TenantSpec,
    effective: &Effective,
) -> Result<Vec<ManagedObject>, PlanError> {
    for entry in &spec.access {
        if entry.kind == SubjectKind::ServiceAccount {
            match &entry.namespace {
                None => {
                    return Err(PlanError::ServiceAccountWithoutNamespace(entry.name.clone()));
                }
                Some(ns) if !namespaces.contains(ns) => {
                    return Err(PlanError::ServiceAccountOutsideTenant {
                        name: entry.name.clone(),
                        namespace: ns.clone(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    // The same subject listed twice with the same profile is one binding.
    let mut entries = spec.access.clone();
    entries.sort();
    entries.dedup();
    let mut out = Vec::with_capacity(namespaces.len() * entries.len() + 2);
    for ns in namespaces {
        for entry in &entries {
            out.push(ManagedObject::RoleBinding(RoleBinding {
                metadata: ObjectMeta {
                    name: Some(binding_name(entry, effective.exec_allowed)),
                    namespace: Some(ns.clone()),
                    labels: Some(owner_labels(tenant)),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: profile_role_name(entry.profile, effective.exec_allowed),
                },
                subjects: Some(vec![subject(entry)]),
            }));
        }
    }
    let mut subjects: Vec<Subject> = Vec::new();
    for entry in &entries {
        let s = subject(entry);
        if !subjects.contains(&s) {
            subjects.push(s);
        }
    }
    if !subjects.is_empty() {
        let name = tenant_role_name(tenant);
        let meta = ObjectMeta { name: Some(name.clone()), labels: Some(owner_labels(tenant)), ..Default::default() };
        out.push(ManagedObject::ClusterRole(ClusterRole {
            metadata: meta.clone(),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec!["bulkhead.dev".into()]),
                resources: Some(vec!["tenants".into()]),
                resource_names: Some(vec![tenant.to_string()]),
                verbs: vec!["get".into()],
                ..Default::default()
            }]),
            aggregation_rule: None,
        }));
        out.push(ManagedObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta,
            role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name },
            subjects: Some(subjects),
        }));
    }
    Ok(out)
}
