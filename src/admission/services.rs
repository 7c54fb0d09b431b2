//! Service rules, pure: no externalIPs, no port opened on every node
//! (NodePort, or a LoadBalancer that allocates node ports), no ExternalName
//! that points into a namespace outside the tenant.

use k8s_openapi::api::core::v1::Service;

use super::decision::{Violation, rule};
use super::facts::{Direction, TenantFacts};

/// The namespace an in-cluster DNS name points into: `<svc>.<ns>.svc[.<cluster domain>]`.
pub fn external_name_namespace(name: &str) -> Option<String> {
    let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let svc = labels.iter().position(|l| *l == "svc")?;
    (svc >= 2).then(|| labels[svc - 1].to_string())
}

/// Every Service rule for a Service in one of the tenant's namespaces.
pub fn validate(svc: &Service, facts: &TenantFacts) -> Vec<Violation> {
    let tenant = &facts.name;
    let mut out = Vec::new();
    let Some(spec) = &svc.spec else {
        return out;
    };
    if spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
        out.push(Violation::new(
            rule::SERVICE_EXTERNAL_IPS,
            "spec.externalIPs",
            format!("Services of tenant {tenant} may not claim external IPs (they can intercept other tenants' traffic); remove externalIPs and use an Ingress"),
        ));
    }
    match spec.type_.as_deref() {
        Some("NodePort") => out.push(Violation::new(
            rule::SERVICE_NODE_PORT,
            "spec.type",
            format!("Services of tenant {tenant} may not open a port on every node; use type ClusterIP behind an Ingress"),
        )),
        Some("LoadBalancer") if spec.allocate_load_balancer_node_ports != Some(false) => out.push(Violation::new(
            rule::SERVICE_NODE_PORT,
            "spec.allocateLoadBalancerNodePorts",
            format!("a LoadBalancer Service of tenant {tenant} would open a port on every node; set allocateLoadBalancerNodePorts: false"),
        )),
        _ => {}
    }
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if p.node_port.is_some_and(|n| n != 0) && spec.type_.as_deref() != Some("NodePort") {
            out.push(Violation::new(
                rule::SERVICE_NODE_PORT,
                format!("spec.ports[{i}].nodePort"),
                format!("Services of tenant {tenant} may not open a port on every node; remove nodePort"),
            ));
        }
    }
    if spec.type_.as_deref() == Some("ExternalName")
        && let Some(target) = spec.external_name.as_deref()
        && let Some(ns) = external_name_namespace(target)
        && !facts.owns(&ns)
        && !facts.exception_namespaces(Direction::Egress).contains(&ns.as_str())
    {
        out.push(Violation::new(
            rule::SERVICE_EXTERNAL_NAME,
            "spec.externalName",
            format!("{target} points into namespace {ns}, which is neither one of tenant {tenant}'s namespaces nor listed in spec.network.egressTo"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::facts::testing::acme;
    use crate::plan::Config;
    use serde_json::{Value, json};

    fn check(spec: Value) -> Vec<Violation> {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).unwrap();
        validate(&svc, &f)
    }

    #[test]
    fn cluster_ip_and_own_external_names_pass() {
        assert!(check(json!({"ports": [{"port": 80}]})).is_empty());
        assert!(
            check(json!({"type": "ExternalName", "externalName": "db.acme-payments.svc.cluster.local"})).is_empty()
        );
        assert!(check(json!({"type": "ExternalName", "externalName": "db.shared-db.svc"})).is_empty());
        assert!(check(json!({"type": "ExternalName", "externalName": "api.example.com"})).is_empty());
        assert!(check(json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false})).is_empty());
    }

    #[test]
    fn exposure_and_cross_tenant_names_are_refused() {
        let rules = |v: Vec<Violation>| v.into_iter().map(|v| (v.rule, v.field)).collect::<Vec<_>>();
        assert_eq!(
            rules(check(json!({"externalIPs": ["198.51.100.1"]}))),
            vec![(rule::SERVICE_EXTERNAL_IPS, "spec.externalIPs".to_string())]
        );
        assert_eq!(
            rules(check(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))),
            vec![(rule::SERVICE_NODE_PORT, "spec.type".to_string())]
        );
        assert_eq!(
            rules(check(json!({"type": "LoadBalancer"}))),
            vec![(rule::SERVICE_NODE_PORT, "spec.allocateLoadBalancerNodePorts".to_string())]
        );
        let out = check(json!({"type": "ExternalName", "externalName": "db.globex-payments.svc.cluster.local."}));
        assert_eq!(out[0].rule, rule::SERVICE_EXTERNAL_NAME);
        assert!(out[0].message.contains("namespace globex-payments"));
    }

    #[test]
    fn external_names_are_parsed_like_cluster_dns() {
        assert_eq!(external_name_namespace("a.b.svc"), Some("b".into()));
        assert_eq!(external_name_namespace("A.B.SVC.cluster.local."), Some("b".into()));
        assert_eq!(external_name_namespace("x.y.z.svc.corp"), Some("z".into()));
        assert_eq!(external_name_namespace("b.svc"), None);
        assert_eq!(external_name_namespace("svc"), None);
        assert_eq!(external_name_namespace("example.com"), None);
    }
}
