//! The managed-object guard, pure: objects bearing bulkhead's managed-by
//! label (NetworkPolicies, RoleBindings, Secrets, quotas, LimitRanges, the
//! default ServiceAccount) are changed only by the operator, which repairs
//! them anyway; refusing the change closes the window before the repair.
//! Deletion stays possible for the namespace controller and the garbage
//! collector, and inside a terminating namespace, so a namespace never hangs
//! in Terminating because of bulkhead.

use std::collections::BTreeMap;

use super::decision::{Violation, rule};
use crate::plan::{LABEL_MANAGED_BY, MANAGED_BY};

/// Identities that delete namespace contents on their own.
pub const SYSTEM_DELETERS: &[&str] = &[
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:kube-controller-manager",
];

/// Whether labels mark an object as bulkhead's.
pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(LABEL_MANAGED_BY).is_some_and(|v| v == MANAGED_BY)
}

/// Create or update by someone other than the operator.
pub fn guard_write(
    kind: &str,
    name: &str,
    new: &BTreeMap<String, String>,
    old: Option<&BTreeMap<String, String>>,
) -> Vec<Violation> {
    if !is_managed(new) && !old.is_some_and(is_managed) {
        return Vec::new();
    }
    let what = if old.is_none() {
        format!(
            "{kind} {name} may not be created with label {LABEL_MANAGED_BY}={MANAGED_BY}: that label is bulkhead's; remove it"
        )
    } else {
        format!(
            "{kind} {name} is managed by bulkhead and can be changed only by the operator; change the Tenant instead"
        )
    };
    vec![Violation::new(rule::MANAGED_OBJECT, format!("metadata.labels[{LABEL_MANAGED_BY}]"), what)]
}

/// Delete by someone other than the operator.
pub fn guard_delete(
    kind: &str,
    name: &str,
    old: &BTreeMap<String, String>,
    namespace_terminating: bool,
    user: &str,
) -> Vec<Violation> {
    if !is_managed(old) || namespace_terminating || SYSTEM_DELETERS.contains(&user) {
        return Vec::new();
    }
    vec![Violation::new(
        rule::MANAGED_OBJECT,
        "metadata.name",
        format!(
            "{kind} {name} is managed by bulkhead and can be deleted only by the operator; change the Tenant instead"
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed() -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())])
    }

    #[test]
    fn managed_objects_are_frozen_for_everyone_else() {
        let plain = BTreeMap::new();
        assert!(guard_write("Secret", "mine", &plain, Some(&plain)).is_empty());
        let out = guard_write("NetworkPolicy", "bulkhead-default-deny", &managed(), Some(&managed()));
        assert_eq!(out[0].rule, rule::MANAGED_OBJECT);
        assert!(out[0].message.contains("NetworkPolicy bulkhead-default-deny is managed by bulkhead"));
        // Stripping the label is a change too; so is forging it on a new object.
        assert_eq!(guard_write("RoleBinding", "b", &plain, Some(&managed())).len(), 1);
        assert!(guard_write("Secret", "s", &managed(), None)[0].message.contains("may not be created"));
    }

    #[test]
    fn deletion_is_left_to_system_controllers_and_terminating_namespaces() {
        assert_eq!(guard_delete("NetworkPolicy", "n", &managed(), false, "alice").len(), 1);
        assert!(guard_delete("NetworkPolicy", "n", &managed(), true, "alice").is_empty());
        assert!(guard_delete("NetworkPolicy", "n", &managed(), false, SYSTEM_DELETERS[0]).is_empty());
        assert!(guard_delete("NetworkPolicy", "n", &BTreeMap::new(), false, "alice").is_empty());
    }
}
