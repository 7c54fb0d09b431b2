//! The objects a plan produces, as one enum so apply, prune, admission and
//! verify can treat every kind alike.

use std::fmt;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::{Api, Client, Resource};

/// A kind of object bulkhead manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// core/v1 ResourceQuota.
    ResourceQuota,
    /// core/v1 LimitRange.
    LimitRange,
    /// rbac.authorization.k8s.io/v1 RoleBinding.
    RoleBinding,
    /// rbac.authorization.k8s.io/v1 ClusterRole.
    ClusterRole,
    /// rbac.authorization.k8s.io/v1 ClusterRoleBinding.
    ClusterRoleBinding,
    /// core/v1 Secret (key projections and generated credentials).
    Secret,
}

impl Kind {
    /// Every managed kind, in apply order (namespaces before their contents).
    pub const ALL: [Kind; 9] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::NetworkPolicy,
        Kind::ResourceQuota,
        Kind::LimitRange,
        Kind::ClusterRole,
        Kind::RoleBinding,
        Kind::ClusterRoleBinding,
    ];

    /// The API resource, for dynamic clients.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Kind::Namespace => ApiResource::erase::<Namespace>(&()),
            Kind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            Kind::ResourceQuota => ApiResource::erase::<ResourceQuota>(&()),
            Kind::LimitRange => ApiResource::erase::<LimitRange>(&()),
            Kind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
            Kind::ClusterRole => ApiResource::erase::<ClusterRole>(&()),
            Kind::ClusterRoleBinding => ApiResource::erase::<ClusterRoleBinding>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::ClusterRole | Kind::ClusterRoleBinding)
    }

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::ResourceQuota => "ResourceQuota",
            Kind::LimitRange => "LimitRange",
            Kind::RoleBinding => "RoleBinding",
            Kind::ClusterRole => "ClusterRole",
            Kind::ClusterRoleBinding => "ClusterRoleBinding",
            Kind::Secret => "Secret",
        }
    }
}

/// Identity of one object: kind, namespace (if namespaced) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A dynamic client for this object's kind, in its namespace (cluster-wide for cluster-scoped kinds).
    pub fn api(&self, client: &Client) -> Api<DynamicObject> {
        let ar = self.kind.api_resource();
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind.as_str(), ns, self.name),
            None => write!(f, "{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// One object the plan wants in the cluster.
///
/// `Debug` is written by hand so a Secret's data never reaches a log line.
#[derive(Clone, PartialEq)]
pub enum ManagedObject {
    /// A tenant namespace.
    Namespace(Namespace),
    /// The default ServiceAccount of a tenant namespace (token automount off).
    ServiceAccount(ServiceAccount),
    /// A NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// A ResourceQuota.
    ResourceQuota(ResourceQuota),
    /// A LimitRange.
    LimitRange(LimitRange),
    /// A RoleBinding for one access entry.
    RoleBinding(RoleBinding),
    /// A ClusterRole (profile or per-tenant).
    ClusterRole(ClusterRole),
    /// A ClusterRoleBinding (per-tenant read of its own Tenant).
    ClusterRoleBinding(ClusterRoleBinding),
    /// A Secret projected into a tenant namespace. Holds key material: never log it.
    Secret(Secret),
}

macro_rules! each {
    ($self:expr, $o:ident => $body:expr) => {
        match $self {
            ManagedObject::Namespace($o) => $body,
            ManagedObject::ServiceAccount($o) => $body,
            ManagedObject::NetworkPolicy($o) => $body,
            ManagedObject::ResourceQuota($o) => $body,
            ManagedObject::LimitRange($o) => $body,
            ManagedObject::RoleBinding($o) => $body,
            ManagedObject::ClusterRole($o) => $body,
            ManagedObject::ClusterRoleBinding($o) => $body,
            ManagedObject::Secret($o) => $body,
        }
    };
}

impl ManagedObject {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            ManagedObject::Namespace(_) => Kind::Namespace,
            ManagedObject::ServiceAccount(_) => Kind::ServiceAccount,
            ManagedObject::NetworkPolicy(_) => Kind::NetworkPolicy,
            ManagedObject::ResourceQuota(_) => Kind::ResourceQuota,
            ManagedObject::LimitRange(_) => Kind::LimitRange,
            ManagedObject::RoleBinding(_) => Kind::RoleBinding,
            ManagedObject::ClusterRole(_) => Kind::ClusterRole,
            ManagedObject::ClusterRoleBinding(_) => Kind::ClusterRoleBinding,
            ManagedObject::Secret(_) => Kind::Secret,
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        each!(self, o => o.meta())
    }

    /// The object's identity.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey { kind: self.kind(), namespace: meta.namespace.clone(), name: meta.name.clone().unwrap_or_default() }
    }

    /// The object as JSON with apiVersion and kind, ready for server-side apply.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing k8s-openapi types cannot fail: they hold only strings, numbers and maps.
        each!(self, o => serde_json::to_value(o).unwrap_or(serde_json::Value::Null))
    }
}

impl fmt::Debug for ManagedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagedObject::Secret(_) => write!(f, "Secret({}, data redacted)", self.key()),
            other => each!(other, o => fmt::Debug::fmt(o, f)),
        }
    }
}
