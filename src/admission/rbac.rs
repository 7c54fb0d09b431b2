//! RoleBinding rules, pure: in a tenant namespace a binding may name only
//! the tenant's own subjects (its access entries, or ServiceAccounts of its
//! namespaces) and only a Role or one of the bulkhead profile ClusterRoles
//! the tenant's compliance allows. RBAC's own escalation check runs first;
//! these rules hold even for a tenant admin who was given `bind`.

use k8s_openapi::api::rbac::v1::{RoleBinding, Subject};

use super::decision::{Violation, rule};
use super::facts::TenantFacts;
use crate::plan::access;

fn own_subject(s: &Subject, facts: &TenantFacts, binding_namespace: &str) -> bool {
    if s.kind == "ServiceAccount" {
        let ns = s.namespace.as_deref().unwrap_or(binding_namespace);
        return facts.owns(ns);
    }
    facts.spec().access.iter().map(access::subject).any(|own| own.kind == s.kind && own.name == s.name)
}

/// Every RoleBinding rule for a binding in one of the tenant's namespaces.
pub fn validate(rb: &RoleBinding, namespace: &str, facts: &TenantFacts) -> Vec<Violation> {
    let tenant = &facts.name;
    let mut out = Vec::new();
    for (i, s) in rb.subjects.iter().flatten().enumerate() {
        if !own_subject(s, facts, namespace) {
            let who = match &s.namespace {
                Some(ns) if s.kind == "ServiceAccount" => format!("ServiceAccount {ns}/{}", s.name),
                _ => format!("{} {}", s.kind, s.name),
            };
            out.push(Violation::new(
                rule::RBAC_SUBJECT,
                format!("subjects[{i}]"),
                format!("{who} is not one of tenant {tenant}'s subjects; only its access entries and ServiceAccounts of its own namespaces can be bound (add the subject to the Tenant's spec.access)"),
            ));
        }
    }
    let role = &rb.role_ref;
    if role.kind == "ClusterRole" {
        let allowed = facts.profile_roles();
        if !allowed.contains(&role.name) {
            let why = if role.name == "cluster-admin" {
                "cluster-admin can never be granted inside a tenant".to_string()
            } else {
                format!("ClusterRole {} is not a bulkhead profile role tenant {tenant} may use", role.name)
            };
            out.push(Violation::new(
                rule::RBAC_ROLE_REF,
                "roleRef.name",
                format!("{why}; bind one of {} or a Role of this namespace", allowed.join(", ")),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::facts::testing::{acme, tenant};
    use crate::plan::Config;
    use serde_json::json;

    fn binding(subjects: serde_json::Value, role_kind: &str, role: &str) -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "acme-agents"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects,
        }))
        .unwrap()
    }

    #[test]
    fn own_subjects_and_profile_roles_pass() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let rb = binding(
            json!([
                {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "Group", "name": "acme-devs"},
                {"kind": "ServiceAccount", "name": "anything", "namespace": "acme-payments"},
                {"kind": "ServiceAccount", "name": "local"}
            ]),
            "ClusterRole",
            "bulkhead-profile-developer",
        );
        assert!(validate(&rb, "acme-agents", &f).is_empty());
        assert!(validate(&binding(json!([]), "Role", "my-role"), "acme-agents", &f).is_empty());
    }

    #[test]
    fn other_tenants_subjects_are_refused() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let rb = binding(
            json!([
                {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "alice"},
                {"kind": "ServiceAccount", "name": "default", "namespace": "globex-agents"},
                {"kind": "Group", "name": "system:authenticated"}
            ]),
            "ClusterRole",
            "bulkhead-profile-viewer",
        );
        let out = validate(&rb, "acme-agents", &f);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|v| v.rule == rule::RBAC_SUBJECT));
        assert_eq!(out[0].field, "subjects[0]");
        assert!(out[0].message.contains("User bob is not one of tenant acme's subjects"));
        assert!(out[2].message.contains("ServiceAccount globex-agents/default"));
    }

    #[test]
    fn cluster_admin_and_foreign_cluster_roles_are_refused() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let me = json!([{"kind": "User", "name": "alice"}]);
        let out = validate(&binding(me.clone(), "ClusterRole", "cluster-admin"), "acme-agents", &f);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, rule::RBAC_ROLE_REF);
        assert!(out[0].message.contains("cluster-admin can never be granted"));
        assert_eq!(validate(&binding(me.clone(), "ClusterRole", "edit"), "acme-agents", &f).len(), 1);
        // Under GDPR the exec variants are out of reach.
        let g = tenant(
            "acme",
            "namespaces: [{name: agents}]\ncompliance: [GDPR]\naccess: [{kind: User, name: alice, profile: admin}]",
        );
        let f = TenantFacts::new(&g, &config).unwrap();
        assert_eq!(validate(&binding(me.clone(), "ClusterRole", "bulkhead-profile-admin"), "acme-agents", &f).len(), 1);
        assert!(validate(&binding(me, "ClusterRole", "bulkhead-profile-admin-noexec"), "acme-agents", &f).is_empty());
    }
}
