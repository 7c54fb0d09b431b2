//! The Tenant as the controller's store keeps it between reconciles.
//!
//! A typed Tenant with its status is ~85 allocations and 6.4 KB of heap (a
//! String per condition field, a B-tree per map); the same spec and status
//! as JSON are one allocation of ~2.6 KB. The store holds a thousand of
//! them for the life of the process and reads one per reconcile, so it keeps
//! the metadata typed (what triggers, the store's index and the echo checks
//! read) and the rest as JSON, decoded when a reconcile starts.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Tenant, TenantSpec, TenantStatus};

/// A Tenant with its spec and status kept as compact JSON.
#[derive(Clone, Debug)]
pub struct StoredTenant {
    /// The Tenant's metadata (the watch drops managedFields from it).
    pub metadata: ObjectMeta,
    body: Box<[u8]>,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    spec: &'a TenantSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a TenantStatus>,
}

#[derive(Deserialize)]
struct Body {
    spec: TenantSpec,
    #[serde(default)]
    status: Option<TenantStatus>,
}

impl StoredTenant {
    /// Keeps `tenant` compact.
    pub fn new(tenant: Tenant) -> Self {
        let body = BodyRef { spec: &tenant.spec, status: tenant.status.as_ref() };
        // Serializing types that were just deserialized cannot fail; an empty
        // body would only make `tenant()` report the object as unreadable.
        let body = serde_json::to_vec(&body).unwrap_or_default().into_boxed_slice();
        Self { metadata: tenant.metadata, body }
    }

    /// The whole Tenant, decoded.
    pub fn tenant(&self) -> Result<Tenant, serde_json::Error> {
        let Body { spec, status } = serde_json::from_slice(&self.body)?;
        Ok(Tenant { metadata: self.metadata.clone(), spec, status })
    }

    /// [`Self::tenant`] for readers that can only skip a Tenant: a copy that
    /// does not decode (a bug: it was encoded from a Tenant the apiserver
    /// served) is logged and treated as absent.
    pub fn decoded(&self) -> Option<Tenant> {
        self.tenant()
            .inspect_err(|e| {
                tracing::error!(tenant = ?self.metadata.name, error = %e, "cannot decode the stored Tenant; treated as absent");
            })
            .ok()
    }
}

impl<'de> Deserialize<'de> for StoredTenant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Tenant::deserialize(deserializer).map(Self::new)
    }
}

impl Resource for StoredTenant {
    type DynamicType = ();
    type Scope = <Tenant as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Tenant::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Tenant::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Tenant::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Tenant::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "resourceVersion": "42", "generation": 3, "annotations": {"keep": "me"}},
            "spec": {"namespaces": [{"name": "agents"}], "access": [{"kind": "User", "name": "alice", "profile": "admin"}]},
            "status": {"observedGeneration": 3, "namespaceCount": 1,
                       "namespaces": [{"name": "acme-agents", "phase": "Ready"}]}
        }))
        .expect("a valid Tenant")
    }

    #[test]
    fn a_stored_tenant_decodes_to_what_was_stored() {
        let original = tenant();
        let stored: StoredTenant = serde_json::from_value(serde_json::to_value(&original).unwrap()).unwrap();
        let back = stored.tenant().unwrap();
        assert_eq!(back.spec, original.spec);
        assert_eq!(back.status, original.status);
        assert_eq!(back.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(back.metadata, original.metadata);
    }

    #[test]
    fn a_tenant_without_status_stays_without() {
        let mut original = tenant();
        original.status = None;
        assert_eq!(StoredTenant::new(original).tenant().unwrap().status, None);
    }

    #[test]
    fn the_store_type_names_the_tenant_resource() {
        assert_eq!(StoredTenant::kind(&()), "Tenant");
        assert_eq!(StoredTenant::api_version(&()), "bulkhead.dev/v1alpha1");
        assert_eq!(StoredTenant::plural(&()), "tenants");
    }
}
