//! NetworkPolicy rules, pure: NetworkPolicies are additive, so a tenant's
//! own policy could reopen what bulkhead's deny-all closes. Peers may select
//! only the tenant's namespaces or its listed exceptions, by the
//! apiserver-set `kubernetes.io/metadata.name` label (the same selector the
//! plan writes); `ipBlock` only inside the CIDRs the Tenant lists for that
//! direction.

use std::collections::BTreeSet;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::decision::{Violation, rule};
use super::facts::{Direction, TenantFacts};
use crate::plan::network::NAMESPACE_NAME_LABEL;

/// The namespaces a selector can match, by name; `None` when it does not constrain the name
/// (then it can match any namespace, including another tenant's).
pub fn selected_names(selector: &LabelSelector) -> Option<BTreeSet<String>> {
    let mut constraints: Vec<BTreeSet<String>> = Vec::new();
    if let Some(name) = selector.match_labels.as_ref().and_then(|l| l.get(NAMESPACE_NAME_LABEL)) {
        constraints.push(BTreeSet::from([name.clone()]));
    }
    for e in selector.match_expressions.iter().flatten() {
        if e.key == NAMESPACE_NAME_LABEL && e.operator == "In" {
            constraints.push(e.values.iter().flatten().cloned().collect());
        }
    }
    let mut iter = constraints.into_iter();
    let first = iter.next()?;
    Some(iter.fold(first, |acc, c| acc.intersection(&c).cloned().collect()))
}

fn dns_peer(peer: &NetworkPolicyPeer, facts: &TenantFacts) -> bool {
    let wanted = &facts.config.dns_pod_labels;
    facts.spec().network.allow_dns
        && !wanted.is_empty()
        && peer
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|labels| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn check_peer(
    peer: &NetworkPolicyPeer,
    field: &str,
    direction: Direction,
    facts: &TenantFacts,
    out: &mut Vec<Violation>,
) {
    let tenant = &facts.name;
    let listed = match direction {
        Direction::Ingress => "spec.network.ingressFrom",
        Direction::Egress => "spec.network.egressTo",
    };
    if let Some(block) = &peer.ip_block {
        let allowed = facts.exception_cidrs(direction);
        let inside = block.cidr.parse::<IpNet>().is_ok_and(|net| allowed.iter().any(|a| a.contains(&net)));
        if !inside {
            let list = if allowed.is_empty() {
                "none are listed".to_string()
            } else {
                allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            out.push(Violation::new(
                rule::NETPOL_IP_BLOCK,
                format!("{field}.ipBlock.cidr"),
                format!(
                    "{} is outside the CIDRs tenant {tenant} lists in {listed} ({list}); ask for it to be added there",
                    block.cidr
                ),
            ));
        }
    }
    let Some(selector) = &peer.namespace_selector else {
        return;
    };
    let Some(names) = selected_names(selector) else {
        out.push(Violation::new(
            rule::NETPOL_NAMESPACE,
            format!("{field}.namespaceSelector"),
            format!("this selector can match namespaces of other tenants; select namespaces by {NAMESPACE_NAME_LABEL} with tenant {tenant}'s namespaces or those listed in {listed}"),
        ));
        return;
    };
    let exceptions = facts.exception_namespaces(direction);
    for name in names {
        let dns = direction == Direction::Egress && name == facts.config.dns_namespace && dns_peer(peer, facts);
        if !facts.owns(&name) && !exceptions.contains(&name.as_str()) && !dns {
            out.push(Violation::new(
                rule::NETPOL_NAMESPACE,
                format!("{field}.namespaceSelector"),
                format!("namespace {name} is neither one of tenant {tenant}'s namespaces nor listed in {listed}; traffic across tenants cannot be opened by a NetworkPolicy"),
            ));
        }
    }
}

/// Every NetworkPolicy rule for a policy in one of the tenant's namespaces.
pub fn validate(np: &NetworkPolicy, facts: &TenantFacts) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(spec) = &np.spec else {
        return out;
    };
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        for (j, p) in r.from.iter().flatten().enumerate() {
            check_peer(p, &format!("spec.ingress[{i}].from[{j}]"), Direction::Ingress, facts, &mut out);
        }
    }
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        for (j, p) in r.to.iter().flatten().enumerate() {
            check_peer(p, &format!("spec.egress[{i}].to[{j}]"), Direction::Egress, facts, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::facts::testing::acme;
    use crate::plan::Config;
    use serde_json::{Value, json};

    fn policy(spec: Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "mine", "namespace": "acme-agents"}, "spec": spec})).unwrap()
    }

    fn by_name(names: &[&str]) -> Value {
        json!({"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": names}]})
    }

    fn check(spec: Value) -> Vec<Violation> {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        validate(&policy(spec), &f)
    }

    #[test]
    fn the_plans_own_policies_pass() {
        let t = acme();
        let config = Config::default();
        let d = crate::plan::plan(&t, &config).unwrap();
        let f = TenantFacts::new(&t, &config).unwrap();
        for o in &d.objects {
            if let crate::plan::ManagedObject::NetworkPolicy(np) = o {
                assert!(validate(np, &f).is_empty(), "{np:?}");
            }
        }
    }

    #[test]
    fn own_namespaces_exceptions_and_pod_selectors_pass() {
        let spec = json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": by_name(&["acme-payments"])},
            {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "ingress-nginx"}}, "podSelector": {"matchLabels": {"app": "x"}}},
            {"podSelector": {"matchLabels": {"app": "y"}}},
            {"ipBlock": {"cidr": "192.0.2.128/25"}}
        ]}], "egress": [{"to": [
            {"namespaceSelector": by_name(&["shared-db", "acme-agents"])},
            {"ipBlock": {"cidr": "203.0.113.7/32"}},
            {"namespaceSelector": by_name(&["kube-system"]), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
        ]}]});
        assert_eq!(check(spec), vec![]);
    }

    #[test]
    fn other_tenants_and_open_selectors_are_refused() {
        let out = check(json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": by_name(&["globex-agents"])},
            {"namespaceSelector": {}},
            {"namespaceSelector": {"matchLabels": {"bulkhead.dev/tenant": "acme"}}},
            {"namespaceSelector": by_name(&["shared-db"])}
        ]}], "egress": [{"to": [{"namespaceSelector": by_name(&["kube-system"])}]}]}));
        let fields: Vec<&str> = out.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.ingress[0].from[0].namespaceSelector",
                "spec.ingress[0].from[1].namespaceSelector",
                "spec.ingress[0].from[2].namespaceSelector",
                "spec.ingress[0].from[3].namespaceSelector",
                "spec.egress[0].to[0].namespaceSelector",
            ]
        );
        assert!(out.iter().all(|v| v.rule == rule::NETPOL_NAMESPACE));
        assert!(out[0].message.contains("namespace globex-agents is neither"));
        assert!(out[1].message.contains("can match namespaces of other tenants"));
        // shared-db is an egress exception, not an ingress one.
        assert!(out[3].message.contains("spec.network.ingressFrom"));
    }

    #[test]
    fn ip_blocks_stay_inside_the_listed_cidrs() {
        let out = check(json!({"podSelector": {}, "egress": [{"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "203.0.112.0/23"}}, {"ipBlock": {"cidr": "not-a-cidr"}}
        ]}], "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]}));
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|v| v.rule == rule::NETPOL_IP_BLOCK));
        assert_eq!(out[0].field, "spec.ingress[0].from[0].ipBlock.cidr");
        assert!(out[1].message.contains("203.0.113.0/24"));
    }

    #[test]
    fn intersections_of_name_constraints_are_understood() {
        let s: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {NAMESPACE_NAME_LABEL: "a"},
            "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": ["a", "b"]},
                                 {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": ["c"]}]}))
        .unwrap();
        assert_eq!(selected_names(&s), Some(BTreeSet::from(["a".to_string()])));
        let open: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": ["c"]}]}))
        .unwrap();
        assert_eq!(selected_names(&open), None);
    }
}
