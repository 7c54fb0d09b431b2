//! What every admission rule returns: allow, or the broken rules, each naming
//! its id, the field and one sentence the tenant can act on.

use std::fmt;

/// The id of every rule, as it appears in denial messages, security events and docs/admission.md.
pub mod rule {
    /// Pod shares the node's network namespace.
    pub const HOST_NETWORK: &str = "pod.host-network";
    /// Pod shares the node's process namespace.
    pub const HOST_PID: &str = "pod.host-pid";
    /// Pod shares the node's IPC namespace.
    pub const HOST_IPC: &str = "pod.host-ipc";
    /// Pod mounts a directory of the node.
    pub const HOST_PATH: &str = "pod.host-path";
    /// Container binds a port on the node.
    pub const HOST_PORT: &str = "pod.host-port";
    /// Container runs privileged.
    pub const PRIVILEGED: &str = "pod.privileged";
    /// Container adds a Linux capability beyond the tenant's profile.
    pub const CAPABILITIES: &str = "pod.capabilities";
    /// Container image not pulled on every start.
    pub const PULL_POLICY: &str = "pod.image-pull-policy";
    /// Audit sidecar missing or altered under `audit.mode: Required`.
    pub const AUDIT_SIDECAR: &str = "pod.audit-sidecar";
    /// Opt-out annotation under `audit.mode: Required`.
    pub const AUDIT_OPT_OUT: &str = "pod.audit-opt-out";
    /// Pod may schedule outside the tenant's regions.
    pub const DATA_RESIDENCY: &str = "pod.data-residency";
    /// Image outside the tenant's allowed registries.
    pub const IMAGE_REGISTRY: &str = "image.registry";
    /// RoleBinding subject outside the tenant.
    pub const RBAC_SUBJECT: &str = "rbac.subject";
    /// RoleBinding to a ClusterRole that is not a bulkhead profile.
    pub const RBAC_ROLE_REF: &str = "rbac.role-ref";
    /// NetworkPolicy peer selecting namespaces outside the tenant.
    pub const NETPOL_NAMESPACE: &str = "netpol.peer-namespace";
    /// NetworkPolicy ipBlock outside the tenant's listed CIDRs.
    pub const NETPOL_IP_BLOCK: &str = "netpol.ip-block";
    /// Object bearing bulkhead's managed-by label changed by someone else.
    pub const MANAGED_OBJECT: &str = "managed.operator-only";
    /// Namespace tenant label set or changed by someone else.
    pub const NAMESPACE_TENANT_LABEL: &str = "namespace.tenant-label";
    /// Namespace Pod Security label set or changed by someone else.
    pub const NAMESPACE_PSA_LABEL: &str = "namespace.psa-label";
    /// Namespace managed-by or other bulkhead.dev/ label set or changed by someone else.
    pub const NAMESPACE_MANAGED_LABEL: &str = "namespace.managed-label";
    /// Service with externalIPs.
    pub const SERVICE_EXTERNAL_IPS: &str = "service.external-ips";
    /// Service that opens a port on every node.
    pub const SERVICE_NODE_PORT: &str = "service.node-port";
    /// ExternalName Service pointing into a namespace outside the tenant.
    pub const SERVICE_EXTERNAL_NAME: &str = "service.external-name";
    /// Tenant claims a namespace another Tenant holds or plans.
    pub const TENANT_NAMESPACE_CLAIMED: &str = "tenant.namespace-claimed";
    /// Tenant claims a namespace that exists outside bulkhead.
    pub const TENANT_NAMESPACE_FOREIGN: &str = "tenant.namespace-foreign";
    /// Tenant update removes a held namespace without confirmation.
    pub const TENANT_NAMESPACE_REMOVAL: &str = "tenant.namespace-removal";
    /// Tenant spec the plan cannot express.
    pub const TENANT_PLAN: &str = "tenant.plan";
    /// Tenant audit sink the sidecar cannot use.
    pub const TENANT_AUDIT_SINK: &str = "tenant.audit-sink";
    /// The namespace's Tenant cannot be planned, so nothing in it can be judged.
    pub const TENANT_INVALID: &str = "tenant.invalid";
    /// The object in the request cannot be read.
    pub const REQUEST_INVALID: &str = "request.invalid";

    /// Every rule id, for documentation checks.
    pub const ALL: &[&str] = &[
        HOST_NETWORK,
        HOST_PID,
        HOST_IPC,
        HOST_PATH,
        HOST_PORT,
        PRIVILEGED,
        CAPABILITIES,
        PULL_POLICY,
        AUDIT_SIDECAR,
        AUDIT_OPT_OUT,
        DATA_RESIDENCY,
        IMAGE_REGISTRY,
        RBAC_SUBJECT,
        RBAC_ROLE_REF,
        NETPOL_NAMESPACE,
        NETPOL_IP_BLOCK,
        MANAGED_OBJECT,
        NAMESPACE_TENANT_LABEL,
        NAMESPACE_PSA_LABEL,
        NAMESPACE_MANAGED_LABEL,
        SERVICE_EXTERNAL_IPS,
        SERVICE_NODE_PORT,
        SERVICE_EXTERNAL_NAME,
        TENANT_NAMESPACE_CLAIMED,
        TENANT_NAMESPACE_FOREIGN,
        TENANT_NAMESPACE_REMOVAL,
        TENANT_PLAN,
        TENANT_AUDIT_SINK,
        TENANT_INVALID,
        REQUEST_INVALID,
    ];
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Stable rule id (see [`rule`]).
    pub rule: &'static str,
    /// The offending field, as a path into the object (`spec.containers[0].image`).
    pub field: String,
    /// One sentence saying what is wrong and what to do instead.
    pub message: String,
}

impl Violation {
    /// A violation of `rule` at `field`.
    pub fn new(rule: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { rule, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.field, self.message)
    }
}

/// Most violations spelled out in one denial; the rest are counted.
const MAX_LISTED: usize = 8;

/// The verdict on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted.
    Allow,
    /// Refused, with every rule it breaks (never empty).
    Deny(Vec<Violation>),
}

impl Decision {
    /// Allow when `violations` is empty, deny otherwise.
    pub fn of(violations: Vec<Violation>) -> Self {
        if violations.is_empty() { Decision::Allow } else { Decision::Deny(violations) }
    }

    /// Whether the request is admitted.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// The broken rules (empty when allowed).
    pub fn violations(&self) -> &[Violation] {
        match self {
            Decision::Allow => &[],
            Decision::Deny(v) => v,
        }
    }

    /// The denial message: every broken rule, `; `-separated, at most eight spelled out.
    pub fn message(&self) -> String {
        let v = self.violations();
        let mut out: Vec<String> = v.iter().take(MAX_LISTED).map(Violation::to_string).collect();
        if v.len() > MAX_LISTED {
            out.push(format!("and {} more", v.len() - MAX_LISTED));
        }
        out.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_rule_field_and_sentence() {
        let d = Decision::of(vec![Violation::new(rule::HOST_NETWORK, "spec.hostNetwork", "remove it")]);
        assert_eq!(d.message(), "[pod.host-network] spec.hostNetwork: remove it");
        assert!(!d.is_allowed());
        assert!(Decision::of(Vec::new()).is_allowed());
    }

    #[test]
    fn long_denials_are_bounded() {
        let many = (0..20).map(|i| Violation::new(rule::HOST_PORT, format!("f{i}"), "x")).collect();
        let m = Decision::of(many).message();
        assert!(m.ends_with("and 12 more"), "{m}");
        assert_eq!(m.matches("[pod.host-port]").count(), 8);
    }

    #[test]
    fn every_rule_is_documented() {
        let doc = include_str!("../../docs/admission.md");
        for id in rule::ALL {
            assert!(doc.contains(&format!("`{id}`")), "docs/admission.md does not document rule {id}");
        }
    }

    #[test]
    fn rule_ids_are_unique() {
        let mut ids = rule::ALL.to_vec();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), rule::ALL.len());
    }
}
