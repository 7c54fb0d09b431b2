//! Namespace rules, pure: the labels that decide isolation (`bulkhead.dev/*`,
//! Pod Security, managed-by) are set and changed only by the operator. The
//! caller has already let the operator's own requests through.

use std::collections::BTreeMap;

use super::decision::{Violation, rule};
use crate::plan::namespaces::PSA_PREFIX;
use crate::plan::{LABEL_MANAGED_BY, LABEL_TENANT};

/// The rule guarding a label key, if bulkhead owns it.
pub fn protected(key: &str) -> Option<&'static str> {
    if key == LABEL_TENANT {
        Some(rule::NAMESPACE_TENANT_LABEL)
    } else if key.starts_with(PSA_PREFIX) {
        Some(rule::NAMESPACE_PSA_LABEL)
    } else if key == LABEL_MANAGED_BY || key.starts_with("bulkhead.dev/") {
        Some(rule::NAMESPACE_MANAGED_LABEL)
    } else {
        None
    }
}

/// Label rules for a namespace being created (`old` is None) or updated by someone other than the operator.
pub fn validate(name: &str, new: &BTreeMap<String, String>, old: Option<&BTreeMap<String, String>>) -> Vec<Violation> {
    let empty = BTreeMap::new();
    let before = old.unwrap_or(&empty);
    let mut keys: Vec<&String> = new.keys().chain(before.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let Some(rule_id) = protected(key) else {
            continue;
        };
        if new.get(key) == before.get(key) {
            continue;
        }
        let what = match (before.get(key), new.get(key)) {
            (None, Some(v)) => format!("setting {key}={v}"),
            (Some(_), None) => format!("removing {key}"),
            (Some(a), Some(b)) => format!("changing {key} from {a} to {b}"),
            (None, None) => continue,
        };
        let advice = if old.is_none() && key == LABEL_TENANT {
            "list the namespace in the Tenant's spec.namespaces and bulkhead creates it"
        } else {
            "only bulkhead manages it; change the Tenant instead"
        };
        out.push(Violation::new(
            rule_id,
            format!("metadata.labels[{key}]"),
            format!("{what} on namespace {name} is not allowed: {advice}"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn other_labels_are_free() {
        let old = labels(&[(LABEL_TENANT, "acme"), ("team", "a")]);
        let new = labels(&[(LABEL_TENANT, "acme"), ("team", "b"), ("cost-center", "7")]);
        assert!(validate("acme-a", &new, Some(&old)).is_empty());
    }

    #[test]
    fn tenant_psa_and_managed_labels_are_frozen() {
        let old = labels(&[
            (LABEL_TENANT, "acme"),
            (LABEL_MANAGED_BY, "bulkhead"),
            ("pod-security.kubernetes.io/enforce", "restricted"),
        ]);
        let new = labels(&[(LABEL_TENANT, "globex"), ("pod-security.kubernetes.io/enforce", "privileged")]);
        let out = validate("acme-a", &new, Some(&old));
        let got: Vec<(&str, &str)> = out.iter().map(|v| (v.rule, v.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (rule::NAMESPACE_MANAGED_LABEL, "metadata.labels[app.kubernetes.io/managed-by]"),
                (rule::NAMESPACE_TENANT_LABEL, "metadata.labels[bulkhead.dev/tenant]"),
                (rule::NAMESPACE_PSA_LABEL, "metadata.labels[pod-security.kubernetes.io/enforce]"),
            ]
        );
        assert!(out[1].message.contains("changing bulkhead.dev/tenant from acme to globex"));
        assert!(out[0].message.contains("removing app.kubernetes.io/managed-by"));
    }

    #[test]
    fn creating_a_namespace_with_a_tenant_label_is_refused() {
        let out = validate("acme-x", &labels(&[(LABEL_TENANT, "acme")]), None);
        assert_eq!(out.len(), 1);
        assert!(out[0].message.contains("spec.namespaces"));
    }
}
