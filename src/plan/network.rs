//! NetworkPolicies for strict isolation: deny everything, then allow the
//! tenant's own traffic, DNS and the listed exceptions.
//!
//! Namespaces are always selected by `kubernetes.io/metadata.name`, which the
//! apiserver sets and nobody can change, never by a label a tenant could copy.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{Isolation, NetworkPeer, NetworkSpec, PortSpec, Protocol};

use super::{Config, Effective, ManagedObject, PlanError, owner_labels};

/// Name of the deny-all policy in every tenant namespace.
pub const DEFAULT_DENY: &str = "bulkhead-default-deny";
/// Name of the allow-list policy in every tenant namespace.
pub const ALLOW: &str = "bulkhead-allow";
/// The immutable, apiserver-set namespace name label.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Selects namespaces by their immutable name label.
pub fn namespaces_selector(names: &[String]) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "In".into(),
            values: Some(names.to_vec()),
        }]),
        match_labels: None,
    }
}

fn peer(p: &NetworkPeer, field: &str) -> Result<NetworkPolicyPeer, PlanError> {
    if let Some(cidr) = &p.cidr {
        let parsed: ipnet::IpNet =
            cidr.parse().map_err(|_| PlanError::InvalidCidr { field: field.to_string(), value: cidr.clone() })?;
        // NetworkPolicy wants the network address; normalising avoids a
        // server-side rejection for "10.1.2.3/8".
        return Ok(NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: parsed.trunc().to_string(), except: None }),
            ..Default::default()
        });
    }
    let names = p.namespaces.clone().unwrap_or_default();
    Ok(NetworkPolicyPeer { namespace_selector: Some(namespaces_selector(&names)), ..Default::default() })
}

fn ports(ports: &[PortSpec]) -> Option<Vec<NetworkPolicyPort>> {
    (!ports.is_empty()).then(|| {
        ports
            .iter()
            .map(|p| NetworkPolicyPort {
                port: Some(IntOrString::Int(p.port)),
                protocol: Some(p.protocol.as_str().into()),
                end_port: None,
            })
            .collect()
    })
}

fn policy(tenant: &str, namespace: &str, name: &str, spec: NetworkPolicySpec) -> ManagedObject {
    ManagedObject::NetworkPolicy(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(owner_labels(tenant)),
            ..Default::default()
        },
        spec: Some(spec),
    })
}

/// The ingress and egress rules shared by every namespace of the tenant.
pub fn allow_rules(
    namespaces: &[String],
    network: &NetworkSpec,
    config: &Config,
) -> Result<(Vec<NetworkPolicyIngressRule>, Vec<NetworkPolicyEgressRule>), PlanError> {
    let own = NetworkPolicyPeer { namespace_selector: Some(namespaces_selector(namespaces)), ..Default::default() };
    let mut ingress = vec![NetworkPolicyIngressRule { from: Some(vec![own.clone()]), ports: None }];
    for (i, p) in network.ingress_from.iter().enumerate() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![peer(p, &format!("spec.network.ingressFrom[{i}]"))?]),
            ports: ports(&p.ports),
        });
    }
    let mut egress = vec![NetworkPolicyEgressRule { to: Some(vec![own]), ports: None }];
    if network.allow_dns {
        let dns_ports = [Protocol::Udp, Protocol::Tcp].map(|protocol| PortSpec { port: 53, protocol });
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespaces_selector(std::slice::from_ref(&config.dns_namespace))),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(config.dns_pod_labels.clone()),
                    match_expressions: None,
                }),
                ip_block: None,
            }]),
            ports: ports(&dns_ports),
        });
    }
    for (i, p) in network.egress_to.iter().enumerate() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![peer(p, &format!("spec.network.egressTo[{i}]"))?]),
            ports: ports(&p.ports),
        });
    }
    Ok((ingress, egress))
}

/// Both policies in every namespace under `Strict`; nothing under `None`.
pub fn plan(
    tenant: &str,
    namespaces: &[String],
    network: &NetworkSpec,
    effective: &Effective,
    config: &Config,
) -> Result<Vec<ManagedObject>, PlanError> {
    if effective.isolation == Isolation::Disabled {
        return Ok(Vec::new());
    }
    let (ingress, egress) = allow_rules(namespaces, network, config)?;
    let both = Some(vec!["Ingress".to_string(), "Egress".to_string()]);
    let all_pods = LabelSelector::default();
    let mut out = Vec::with_capacity(namespaces.len() * 2);
    for ns in namespaces {
        out.push(policy(
            tenant,
            ns,
            DEFAULT_DENY,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: both.clone(),
                ingress: None,
                egress: None,
            },
        ));
        out.push(policy(
            tenant,
            ns,
            ALLOW,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: both.clone(),
                ingress: Some(ingress.clone()),
                egress: Some(egress.clone()),
            },
        ));
    }
    Ok(out)
}
