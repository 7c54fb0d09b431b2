//! The check catalogue: every check `bulkhead verify` runs, with a stable
//! id, the control it proves and how to fix a failure.
//!
//! Ids never change meaning once published; retired checks keep their id
//! out of use. `MTB-*` ids are those of the Kubernetes multi-tenancy
//! benchmarks (kubectl-mtb), so a report can be read against that list;
//! upstream gives hostPath volumes and NodePort services the same id
//! (`MTB-PL1-BC-HI-1`), so the NodePort check carries a `-NODEPORT` suffix and
//! names the upstream id in `benchmark`. `BH-*` ids are bulkhead's own.

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// Stable id.
    pub id: &'static str,
    /// One-line title.
    pub title: &'static str,
    /// Benchmark category (Tenant Isolation, Host Isolation, ...).
    pub category: &'static str,
    /// The upstream benchmark id this check implements, if any.
    pub benchmark: Option<&'static str>,
    /// The control the check proves, and how.
    pub control: &'static str,
    /// What to do when it fails.
    pub remediation: &'static str,
}

macro_rules! ids {
    ($($name:ident = $id:literal;)*) => {
        $(#[doc = concat!("Check id `", $id, "`.")] pub const $name: &str = $id;)*
    };
}

ids! {
    CLUSTER_RESOURCES = "MTB-PL1-CC-CPI-1";
    QUOTA_IMMUTABLE = "MTB-PL1-CC-TI-1";
    OTHER_TENANTS = "MTB-PL1-CC-TI-2";
    RESOURCE_QUOTAS = "MTB-PL1-CC-FNS-1";
    OBJECT_QUOTAS = "MTB-PL1-CC-FNS-2";
    ADD_CAPABILITIES = "MTB-PL1-BC-CPI-3";
    RUN_AS_ROOT = "MTB-PL1-BC-CPI-4";
    PRIVILEGED = "MTB-PL1-BC-CPI-5";
    PRIVILEGE_ESCALATION = "MTB-PL1-BC-CPI-6";
    HOST_PATH = "MTB-PL1-BC-HI-1";
    NODE_PORT = "MTB-PL1-BC-HI-1-NODEPORT";
    HOST_NETWORK = "MTB-PL1-BC-HI-3";
    HOST_PID = "MTB-PL1-BC-HI-4";
    HOST_IPC = "MTB-PL1-BC-HI-5";
    ALWAYS_PULL = "MTB-PL1-CC-DI-1";
    SELF_SERVICE_RBAC = "MTB-PL2-BC-OPS-3";
    SELF_SERVICE_NETPOL = "MTB-PL2-BC-OPS-4";
    NAMESPACE_LABELS = "BH-NS-001";
    DEFAULT_DENY = "BH-NET-001";
    ALLOW_LIST = "BH-NET-002";
    CROSS_TENANT_TRAFFIC = "BH-NET-003";
    ACCESS_BINDINGS = "BH-RBAC-001";
    NO_FOREIGN_SUBJECTS = "BH-RBAC-002";
    PROFILE_ROLES = "BH-RBAC-003";
    PROFILE_RIGHTS = "BH-RBAC-004";
    MANAGED_OBJECTS = "BH-OBJ-001";
    KEYS_PRESENT = "BH-KEY-001";
    KEYS_DISTINCT = "BH-KEY-002";
    AUDIT_SIDECAR = "BH-AUDIT-001";
    DATA_RESIDENCY = "BH-RES-001";
    WEBHOOKS = "BH-ADM-001";
}

const CPI: &str = "Control Plane Isolation";
const TI: &str = "Tenant Isolation";
const HI: &str = "Host Isolation";
const FNS: &str = "Fairness";
const OPS: &str = "Self-Service Operations";
const NI: &str = "Network Isolation";
const DI: &str = "Data Isolation";

const POD_FIX: &str = "Keep podSecurity: restricted on the Tenant (the default) and make sure nobody relabelled the namespace's pod-security.kubernetes.io/enforce label; bulkhead's validating webhook adds the same rule where Pod Security Admission is exempted.";

/// Every check, in report order.
pub const CATALOGUE: &[Check] = &[
    Check {
        id: CLUSTER_RESOURCES,
        title: "Block access to cluster resources",
        category: CPI,
        benchmark: Some(CLUSTER_RESOURCES),
        control: "No subject of the tenant may get, list, watch, create, update, patch, delete or deletecollection cluster-scoped resources (namespaces, nodes, persistent volumes, cluster RBAC, CRDs, webhook configurations, Tenants); proved by one SubjectAccessReview per subject, resource and verb.",
        remediation: "Remove the ClusterRoleBinding or widened ClusterRole that grants the access shown in the evidence; bulkhead profiles never grant cluster-scoped rights beyond reading the tenant's own Tenant.",
    },
    Check {
        id: QUOTA_IMMUTABLE,
        title: "Block modification of resource quotas",
        category: TI,
        benchmark: Some(QUOTA_IMMUTABLE),
        control: "No subject of the tenant may create, update, patch or delete ResourceQuotas or LimitRanges in the tenant's namespaces; proved by SubjectAccessReview.",
        remediation: "Remove the Role or RoleBinding granting write access to resourcequotas or limitranges in the tenant's namespaces.",
    },
    Check {
        id: OTHER_TENANTS,
        title: "Block access to other tenant resources",
        category: TI,
        benchmark: Some(OTHER_TENANTS),
        control: "No subject of the tenant may read or write workloads, secrets or config in another tenant's namespaces, nor read another tenant's Tenant; proved by SubjectAccessReview in one other tenant's namespace (cluster-wide grants) and in every other tenant's namespace holding a RoleBinding that could reach the subject.",
        remediation: "Delete the RoleBinding or ClusterRoleBinding named in the evidence that lets this tenant's subject into another tenant.",
    },
    Check {
        id: RESOURCE_QUOTAS,
        title: "Configure namespace resource quotas",
        category: FNS,
        benchmark: Some(RESOURCE_QUOTAS),
        control: "Every namespace of the tenant has a ResourceQuota limiting cpu, memory and ephemeral-storage.",
        remediation: "Set spec.quota.hard (or tenantHard) on the Tenant with requests/limits for cpu, memory and ephemeral-storage.",
    },
    Check {
        id: OBJECT_QUOTAS,
        title: "Configure namespace object limits",
        category: FNS,
        benchmark: Some(OBJECT_QUOTAS),
        control: "Every namespace of the tenant has a ResourceQuota limiting the number of objects (pods, services, secrets, configmaps, persistentvolumeclaims or count/*).",
        remediation: "Add object counts such as pods, services and count/deployments.apps to spec.quota.hard on the Tenant.",
    },
    Check {
        id: ADD_CAPABILITIES,
        title: "Block add capabilities",
        category: CPI,
        benchmark: Some(ADD_CAPABILITIES),
        control: "A pod adding the SYS_ADMIN capability is rejected in every namespace of the tenant (server-side dry-run as the tenant's admin).",
        remediation: POD_FIX,
    },
    Check {
        id: RUN_AS_ROOT,
        title: "Require run as non-root user",
        category: CPI,
        benchmark: Some(RUN_AS_ROOT),
        control: "A pod running as root (runAsUser 0, runAsNonRoot false) is rejected in every namespace of the tenant (server-side dry-run).",
        remediation: POD_FIX,
    },
    Check {
        id: PRIVILEGED,
        title: "Block privileged containers",
        category: CPI,
        benchmark: Some(PRIVILEGED),
        control: "A privileged container is rejected in every namespace of the tenant (server-side dry-run).",
        remediation: POD_FIX,
    },
    Check {
        id: PRIVILEGE_ESCALATION,
        title: "Block privilege escalation",
        category: CPI,
        benchmark: Some(PRIVILEGE_ESCALATION),
        control: "A container with allowPrivilegeEscalation true is rejected in every namespace of the tenant (server-side dry-run).",
        remediation: POD_FIX,
    },
    Check {
        id: HOST_PATH,
        title: "Block use of host path volumes",
        category: HI,
        benchmark: Some(HOST_PATH),
        control: "A pod mounting a hostPath volume is rejected in every namespace of the tenant (server-side dry-run).",
        remediation: POD_FIX,
    },
    Check {
        id: NODE_PORT,
        title: "Block use of NodePort services",
        category: HI,
        benchmark: Some(HOST_PATH),
        control: "A Service of type NodePort is rejected in every namespace of the tenant (server-side dry-run). Only bulkhead's validating webhook enforces this: without it the check is not applicable and says so.",
        remediation: "Install bulkhead's admission webhooks (they reject NodePort services in tenant namespaces) and make sure their namespaceSelector covers the tenant.",
    },
    Check {
        id: HOST_NETWORK,
        title: "Block use of host networking and ports",
        category: HI,
        benchmark: Some(HOST_NETWORK),
        control: "Pods with hostNetwork or a hostPort are rejected in every namespace of the tenant (server-side dry-run).",
        remediation: POD_FIX,
    },
    Check {
        id: HOST_PID,
        title: "Block use of host PID",
        category: HI,
        benchmark: Some(HOST_PID),
        control: "A pod sharing the host's PID namespace is rejected in every namespace of the tenant (server-side dry-run).",
        remediation: POD_FIX,
    },
    Check {
        id: HOST_IPC,
        title: "Block use of host IPC",
        category: HI,
        benchmark: Some(HOST_IPC),
        control: "A pod sharing the host's IPC namespace is rejected in every namespace of the tenant (server-side dry-run).",
        remediation: POD_FIX,
    },
    Check {
        id: ALWAYS_PULL,
        title: "Require always imagePullPolicy",
        category: DI,
        benchmark: Some(ALWAYS_PULL),
        control: "A pod with imagePullPolicy IfNotPresent is rejected, or mutated to Always, so one tenant cannot run another's cached private image. Only an admission webhook enforces this: without one covering pods the check is not applicable and says so.",
        remediation: "Install an admission webhook that rejects or mutates pods without imagePullPolicy: Always in tenant namespaces.",
    },
    Check {
        id: SELF_SERVICE_RBAC,
        title: "Create Role Bindings",
        category: OPS,
        benchmark: Some(SELF_SERVICE_RBAC),
        control: "The tenant's admins can create Roles and RoleBindings inside their own namespaces (SubjectAccessReview and server-side dry-run).",
        remediation: "Bind the admin profile to the tenant's administrators (spec.access with profile: admin); check the bulkhead-profile-admin ClusterRole is intact.",
    },
    Check {
        id: SELF_SERVICE_NETPOL,
        title: "Create Network Policies",
        category: OPS,
        benchmark: Some(SELF_SERVICE_NETPOL),
        control: "The tenant's admins can create NetworkPolicies inside their own namespaces (SubjectAccessReview and server-side dry-run).",
        remediation: "Bind the admin profile to the tenant's administrators (spec.access with profile: admin); check the bulkhead-profile-admin ClusterRole is intact.",
    },
    Check {
        id: NAMESPACE_LABELS,
        title: "Namespace labels intact",
        category: TI,
        benchmark: None,
        control: "Every namespace of the tenant exists and carries the labels and annotations the plan gives it: bulkhead.dev/tenant, app.kubernetes.io/managed-by and the Pod Security Admission labels.",
        remediation: "Start the operator (it restores labels within a second) and find who relabelled the namespace: namespace labels decide Pod Security and ownership.",
    },
    Check {
        id: DEFAULT_DENY,
        title: "Default-deny in place in every namespace",
        category: NI,
        benchmark: None,
        control: "Every namespace of the tenant holds the bulkhead-default-deny NetworkPolicy exactly as planned (all pods, Ingress and Egress, no rule).",
        remediation: "Start the operator (it restores the policy), and set spec.network.isolation: Strict if it is None.",
    },
    Check {
        id: ALLOW_LIST,
        title: "Allow-list policies as planned",
        category: NI,
        benchmark: None,
        control: "Every namespace of the tenant holds the bulkhead-allow NetworkPolicy exactly as planned from spec.network: the tenant's own namespaces, DNS and the listed exceptions, nothing else.",
        remediation: "Start the operator (it restores the policy); change exceptions through spec.network, never by editing the policy.",
    },
    Check {
        id: CROSS_TENANT_TRAFFIC,
        title: "Cross-tenant network connectivity denied",
        category: NI,
        benchmark: None,
        control: "No connection, on any port or protocol, is allowed between a pod of the tenant and a pod of another tenant, in either direction, according to a NetworkPolicy evaluation over every live policy of both sides (all policies, including the tenants' own); the evaluator is tested against the independent engine sigs.k8s.io/kube-network-policies.",
        remediation: "Delete or narrow the NetworkPolicy named in the evidence; NetworkPolicies are additive, so any allow rule reopens traffic.",
    },
    Check {
        id: ACCESS_BINDINGS,
        title: "Access bindings as planned",
        category: TI,
        benchmark: None,
        control: "The RoleBindings of every access entry and the per-tenant ClusterRole and ClusterRoleBinding exist exactly as planned from spec.access.",
        remediation: "Start the operator (it restores the bindings); change access through spec.access.",
    },
    Check {
        id: NO_FOREIGN_SUBJECTS,
        title: "No access for other tenants' subjects",
        category: TI,
        benchmark: None,
        control: "No RoleBinding in the tenant's namespaces names a subject of another tenant (its access entries or service accounts) or a group every user belongs to (system:authenticated, system:unauthenticated, system:serviceaccounts).",
        remediation: "Delete the RoleBinding named in the evidence; grant access to people through spec.access of their own Tenant.",
    },
    Check {
        id: PROFILE_ROLES,
        title: "Profile ClusterRoles as documented",
        category: TI,
        benchmark: None,
        control: "The shared bulkhead-profile-* ClusterRoles hold exactly the documented rules: nobody widened a profile.",
        remediation: "Start the operator (it restores the profile roles) and find who edited them: a widened profile widens every tenant bound to it.",
    },
    Check {
        id: PROFILE_RIGHTS,
        title: "Each subject has exactly its profile's rights",
        category: TI,
        benchmark: None,
        control: "For the sensitive rights (secrets, exec/attach/port-forward, RBAC, NetworkPolicies, workloads, events, service account tokens) a SubjectAccessReview as each subject in each namespace answers exactly what its documented profile allows, after compliance profiles (PCI-DSS and GDPR remove exec).",
        remediation: "Remove the extra Role or RoleBinding that grants what the evidence shows, or restore the profile ClusterRole.",
    },
    Check {
        id: MANAGED_OBJECTS,
        title: "Service accounts, quotas and limits as planned",
        category: FNS,
        benchmark: None,
        control: "The default ServiceAccount (no token automount), ResourceQuota and LimitRange of every namespace exist exactly as planned (tenant-wide shares as the controller computes them).",
        remediation: "Start the operator (it restores them); change quotas through spec.quota and spec.limits.",
    },
    Check {
        id: KEYS_PRESENT,
        title: "Key material present in every namespace",
        category: DI,
        benchmark: None,
        control: "Every namespace holds the bulkhead-keys Secret with the current and previous key ids of the Tenant status and a 32-byte data-encryption and audit key for each, plus every generated credential; when the source Secret can be read (and unwrapped), the projections equal the plan exactly. Values are compared, never shown.",
        remediation: "Start the operator (it re-projects the keys from the source Secret); if the source Secret is lost, restore it from backup.",
    },
    Check {
        id: KEYS_DISTINCT,
        title: "Key material distinct per tenant",
        category: DI,
        benchmark: None,
        control: "No data-encryption or audit key of the tenant equals a key of another tenant, and every namespace of the tenant holds the same keys (compared by SHA-256 digest inside the verifier).",
        remediation: "Rotate the tenant's keys (annotate the Tenant with bulkhead.dev/rotate-keys) and find how another tenant's Secret was copied.",
    },
    Check {
        id: AUDIT_SIDECAR,
        title: "Audit sidecar in every pod where required",
        category: DI,
        benchmark: None,
        control: "Every pod in the tenant's namespaces carries the intact audit sidecar (a native sidecar in initContainers with bulkhead's image, arguments, environment, mounts and volumes, judged by the admission webhook's own rule) when the effective audit.mode is Required (set, or by PCI-DSS); under Optional, every pod that does not opt out with bulkhead.dev/audit-sidecar: disabled.",
        remediation: "Make sure bulkhead's mutating and validating webhooks cover the tenant's namespaces, then delete the pods named in the evidence so their controllers recreate them with the sidecar (never add the sidecar by hand).",
    },
    Check {
        id: DATA_RESIDENCY,
        title: "Data-residency affinity on every pod",
        category: DI,
        benchmark: None,
        control: "Every pod in the namespaces of a tenant with spec.dataResidency has a required node affinity whose every node selector term includes topology.kubernetes.io/region In a subset of the tenant's regions (the admission webhook's own rule), so it cannot be scheduled elsewhere.",
        remediation: "Make sure bulkhead's admission webhooks cover the tenant's namespaces, then delete the pods named in the evidence so they are recreated with the residency affinity merged in.",
    },
    Check {
        id: WEBHOOKS,
        title: "Webhook configurations present, scoped and trusted",
        category: CPI,
        benchmark: None,
        control: "bulkhead's webhook configurations exist, cover the tenant's namespaces, exempt kube-system and the operator's namespace, and carry a caBundle holding a currently valid X.509 certificate.",
        remediation: "Reinstall the operator's webhook configurations (helm upgrade) and restart it so it patches the caBundle.",
    },
];

/// The catalogue entry of `id`.
///
/// # Panics
/// When `id` is not in the catalogue: ids are constants of this module, so
/// that is a programming error caught by the unit tests.
pub fn get(id: &str) -> &'static Check {
    CATALOGUE.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("check {id} is not in the catalogue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CATALOGUE {
            assert!(seen.insert(c.id), "duplicate id {}", c.id);
            assert!(c.id.starts_with("MTB-") || c.id.starts_with("BH-"), "{}", c.id);
            assert!(c.id.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '-'), "{}", c.id);
            assert!(!c.title.is_empty() && !c.control.is_empty() && !c.remediation.is_empty(), "{}", c.id);
        }
    }

    #[test]
    fn every_benchmark_in_the_field_notes_is_covered() {
        // The kubectl-mtb list in the field notes, in its order.
        for id in [
            CLUSTER_RESOURCES,
            OTHER_TENANTS,
            QUOTA_IMMUTABLE,
            RESOURCE_QUOTAS,
            OBJECT_QUOTAS,
            ADD_CAPABILITIES,
            RUN_AS_ROOT,
            PRIVILEGED,
            PRIVILEGE_ESCALATION,
            HOST_PATH,
            HOST_NETWORK,
            HOST_PID,
            HOST_IPC,
            NODE_PORT,
            ALWAYS_PULL,
            SELF_SERVICE_RBAC,
            SELF_SERVICE_NETPOL,
            CROSS_TENANT_TRAFFIC,
        ] {
            assert_eq!(get(id).id, id);
        }
    }
}
