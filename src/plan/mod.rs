//! The plan: a pure function from a Tenant and the operator's configuration
//! to every object the tenant needs. No I/O; the controller applies it,
//! admission and verification read it, so each rule is written once.

pub mod access;
pub mod compliance;
pub mod namespaces;
pub mod network;
pub mod object;
pub mod quantity;
pub mod quota;
pub mod secrets;

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::Tenant;
pub use compliance::Effective;
pub use object::{ManagedObject, ObjectKey};

/// Field manager for every server-side apply bulkhead makes.
pub const FIELD_MANAGER: &str = "bulkhead";
/// Label naming the tenant an object belongs to.
pub const LABEL_TENANT: &str = "bulkhead.dev/tenant";
/// Standard label marking objects bulkhead manages.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "bulkhead";
/// Label on cluster objects shared by all tenants (the profile ClusterRoles).
pub const LABEL_SHARED: &str = "bulkhead.dev/shared";
/// Label set on a namespace bulkhead has released under `deletionPolicy: Retain`.
pub const LABEL_RELEASED: &str = "bulkhead.dev/released";
/// Finalizer that lets bulkhead release or erase a tenant before it disappears.
pub const FINALIZER: &str = "bulkhead.dev/cleanup";

/// Operator-wide settings the plan depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Namespace the operator runs in; never part of any tenant.
    pub operator_namespace: String,
    /// Namespace of the cluster DNS service.
    pub dns_namespace: String,
    /// Labels selecting the cluster DNS pods.
    pub dns_pod_labels: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            operator_namespace: "bulkhead-system".into(),
            dns_namespace: "kube-system".into(),
            dns_pod_labels: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
        }
    }
}

/// Namespaces no tenant may ever claim.
pub const RESERVED_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Why a Tenant cannot be planned; each message says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// Missing or malformed name.
    #[error("the Tenant has no valid name: it must be a DNS label of at most 30 characters")]
    InvalidTenantName,
    /// Namespace listed twice.
    #[error("namespace '{0}' is listed twice in spec.namespaces")]
    DuplicateNamespace(String),
    /// Namespace name too long or not a DNS label.
    #[error("namespace '{0}' is not a valid name: '<tenant>-<name>' must be a DNS label of at most 63 characters")]
    InvalidNamespace(String),
    /// Namespace the cluster reserves.
    #[error("namespace '{0}' is reserved and cannot belong to a tenant")]
    ReservedNamespace(String),
    /// ServiceAccount outside the tenant.
    #[error(
        "access entry for ServiceAccount '{name}' names namespace '{namespace}', which is not one of this tenant's namespaces"
    )]
    ServiceAccountOutsideTenant {
        /// Account name.
        name: String,
        /// The namespace given.
        namespace: String,
    },
    /// ServiceAccount without namespace.
    #[error("access entry for ServiceAccount '{0}' needs a namespace")]
    ServiceAccountWithoutNamespace(String),
    /// Unreadable quantity.
    #[error("{field}: {source}")]
    Quantity {
        /// Where the quantity was written.
        field: String,
        /// The parse failure.
        source: quantity::QuantityError,
    },
    /// Unreadable CIDR.
    #[error("{field}: '{value}' is not a valid CIDR such as 203.0.113.0/24")]
    InvalidCidr {
        /// Where the CIDR was written.
        field: String,
        /// The rejected text.
        value: String,
    },
    /// Unreadable duration.
    #[error("{field}: '{value}' is not a duration such as 2160h, 30m or 90s")]
    InvalidDuration {
        /// Where it was written.
        field: &'static str,
        /// The rejected text.
        value: String,
    },
    /// A compliance profile forbids a setting.
    #[error("compliance profile {profile} forbids {what}")]
    Compliance {
        /// The profile.
        profile: &'static str,
        /// What it forbids.
        what: &'static str,
    },
}

/// Everything one tenant should have in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    /// The tenant's name.
    pub tenant: String,
    /// Full names of the tenant's namespaces, in spec order.
    pub namespaces: Vec<String>,
    /// Every object to apply, namespaces first.
    pub objects: Vec<ManagedObject>,
    /// The settings in force once compliance profiles are applied.
    pub effective: Effective,
}

impl DesiredState {
    /// Keys of every desired object, for pruning.
    pub fn keys(&self) -> std::collections::BTreeSet<ObjectKey> {
        self.objects.iter().map(ManagedObject::key).collect()
    }
}

/// Labels every object owned by `tenant` carries.
pub fn owner_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_TENANT.to_string(), tenant.to_string()),
    ])
}

/// Label selector for every object owned by `tenant`.
pub fn owner_selector(tenant: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_TENANT}={tenant}")
}

/// The full name of a tenant namespace.
pub fn namespace_name(tenant: &str, short: &str) -> String {
    format!("{tenant}-{short}")
}

/// Plans every object `tenant` needs.
pub fn plan(tenant: &Tenant, config: &Config) -> Result<DesiredState, PlanError> {
    let name = tenant.name_any();
    if !is_dns_label(&name) || name.len() > 30 {
        return Err(PlanError::InvalidTenantName);
    }
    let effective = Effective::of(&tenant.spec)?;
    let namespaces = namespaces::names(&name, &tenant.spec, config)?;
    let mut objects = Vec::new();
    objects.extend(namespaces::plan(&name, &tenant.spec, &effective));
    objects.extend(network::plan(&name, &namespaces, &tenant.spec.network, &effective, config)?);
    objects.extend(quota::plan(&name, &namespaces, &tenant.spec)?);
    objects.extend(access::plan(&name, &namespaces, &tenant.spec, &effective)?);
    Ok(DesiredState { tenant: name, namespaces, objects, effective })
}

/// Whether `name` is a name the plan gives objects of `kind` for `tenant`.
///
/// Pruning deletes only objects that pass this check as well as carrying the
/// tenant's labels: labels can be copied onto anything, names bulkhead chose
/// cannot be, so a relabelled `cluster-admin` or another tenant's namespace
/// is never pruned.
pub fn is_planned_name(kind: object::Kind, tenant: &str, name: &str) -> bool {
    use object::Kind;
    match kind {
        Kind::Namespace => name.strip_prefix(tenant).is_some_and(|rest| rest.starts_with('-')),
        Kind::ClusterRole | Kind::ClusterRoleBinding => name == access::tenant_role_name(tenant),
        Kind::NetworkPolicy | Kind::RoleBinding => name.starts_with("bulkhead-"),
        Kind::ResourceQuota => name == quota::QUOTA,
        Kind::LimitRange => name == quota::LIMITS,
        // The default ServiceAccount lives and dies with its namespace.
        Kind::ServiceAccount => false,
        // Generated credentials are named by the tenant; pruning only ever
        // looks inside the tenant's own namespaces.
        Kind::Secret => true,
    }
}

/// Whether `s` is a DNS-1123 label (what Kubernetes accepts as a namespace name).
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
pub(crate) mod tests;
