//! What the admission rules know about a tenant: the Tenant itself and what
//! the plan derives from it (namespace names, effective settings, profile
//! roles, network exceptions), computed by the same functions the controller
//! uses, so admission never holds a second copy of a rule.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use kube::ResourceExt;

use crate::api::{NetworkPeer, Profile, Tenant, TenantSpec};
use crate::plan::namespaces::Existing;
use crate::plan::{self, Config, Effective, PlanError};

/// Read access to the cluster for the rules that need more than the request: the
/// operator serves it from watch caches, tests and the fuzzer from memory.
pub trait View: Send + Sync {
    /// The namespace called `name`, if it exists.
    fn namespace(&self, name: &str) -> Option<Existing>;
    /// The Tenant called `name`, if it exists.
    fn tenant(&self, name: &str) -> Option<Arc<Tenant>>;
}

/// A [`View`] held in memory: for tests, the fuzzer and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct MemoryView {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Existing>,
    /// Tenants.
    pub tenants: Vec<Arc<Tenant>>,
}

impl MemoryView {
    /// A view holding `tenants` and, for each, its planned namespaces labelled as bulkhead labels them.
    pub fn with_tenants(tenants: Vec<Tenant>, config: &Config) -> Self {
        let mut view = Self::default();
        for t in tenants {
            let name = t.name_any();
            for ns in plan::namespaces::names(&name, &t.spec, config).unwrap_or_default() {
                view.namespaces.insert(ns, Existing::of(Some(&plan::owner_labels(&name)), false));
            }
            view.tenants.push(Arc::new(t));
        }
        view
    }
}

impl View for MemoryView {
    fn namespace(&self, name: &str) -> Option<Existing> {
        self.namespaces.get(name).cloned()
    }
    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.iter().find(|t| t.metadata.name.as_deref() == Some(name)).cloned()
    }
}

/// Traffic direction of a NetworkPolicy rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `spec.ingress[].from`.
    Ingress,
    /// `spec.egress[].to`.
    Egress,
}

/// One tenant as the admission rules see it.
#[derive(Debug)]
pub struct TenantFacts<'a> {
    /// The Tenant.
    pub tenant: &'a Tenant,
    /// Its name.
    pub name: String,
    /// Settings after compliance profiles.
    pub effective: Effective,
    /// Full names of its namespaces, as planned.
    pub namespaces: Vec<String>,
    /// The operator's plan configuration (DNS namespace and pods).
    pub config: &'a Config,
}

impl<'a> TenantFacts<'a> {
    /// Derives the facts with the plan's own functions; fails where the plan would.
    pub fn new(tenant: &'a Tenant, config: &'a Config) -> Result<Self, PlanError> {
        let name = tenant.name_any();
        let effective = Effective::of(&tenant.spec)?;
        let namespaces = plan::namespaces::names(&name, &tenant.spec, config)?;
        Ok(Self { tenant, name, effective, namespaces, config })
    }

    /// The Tenant's spec.
    pub fn spec(&self) -> &TenantSpec {
        &self.tenant.spec
    }

    /// Whether `namespace` is one of the tenant's.
    pub fn owns(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
    }

    /// The profile ClusterRoles this tenant may bind (the exec variants only when its compliance allows exec).
    pub fn profile_roles(&self) -> Vec<String> {
        Profile::ALL.iter().map(|p| plan::access::profile_role_name(*p, self.effective.exec_allowed)).collect()
    }

    fn peers(&self, direction: Direction) -> &[NetworkPeer] {
        match direction {
            Direction::Ingress => &self.spec().network.ingress_from,
            Direction::Egress => &self.spec().network.egress_to,
        }
    }

    /// Namespaces outside the tenant listed as exceptions for `direction`.
    pub fn exception_namespaces(&self, direction: Direction) -> Vec<&str> {
        self.peers(direction).iter().flat_map(|p| p.namespaces.iter().flatten()).map(String::as_str).collect()
    }

    /// CIDRs listed as exceptions for `direction` (unparsable entries are skipped; the CRD rejects them).
    pub fn exception_cidrs(&self, direction: Direction) -> Vec<IpNet> {
        self.peers(direction).iter().filter_map(|p| p.cidr.as_deref()).filter_map(|c| c.parse().ok()).collect()
    }

    /// Regions the tenant's pods must run in, if any.
    pub fn regions(&self) -> Option<&[String]> {
        self.spec().data_residency.as_ref().map(|d| d.regions.as_slice()).filter(|r| !r.is_empty())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Tenants for the unit tests of every rule.

    use crate::api::Tenant;

    /// A Tenant from YAML (the spec part only).
    pub fn tenant(name: &str, spec_yaml: &str) -> Tenant {
        let spec: serde_yaml::Value = serde_yaml::from_str(spec_yaml).expect("test spec parses");
        let value = serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": serde_json::to_value(spec).expect("yaml to json"),
        });
        serde_json::from_value(value).expect("test tenant is valid")
    }

    /// A tenant whose sink is an https SIEM with a CA from a ConfigMap and two headers from Secrets.
    pub fn siem_tenant() -> Tenant {
        tenant(
            "acme",
            "namespaces: [{name: a}]
audit:
  sink: https://siem.example/ingest
  sinkCA: {configMap: trust-bundle, key: ca.crt}
  sinkHeaders:
  - {name: Authorization, secret: siem-token, key: header}
  - {name: X-Tenant-Id, secret: siem-ids, key: acme}",
        )
    }

    /// `acme` with namespaces `acme-agents` and `acme-payments` and one access entry of each kind.
    pub fn acme() -> Tenant {
        tenant(
            "acme",
            r#"
namespaces: [{name: agents}, {name: payments}]
access:
  - {kind: User, name: alice, profile: admin}
  - {kind: Group, name: acme-devs, profile: developer}
  - {kind: ServiceAccount, name: ci, namespace: acme-agents, profile: viewer}
network:
  ingressFrom: [{namespaces: [ingress-nginx]}, {cidr: 192.0.2.0/24}]
  egressTo: [{cidr: 203.0.113.0/24, ports: [{port: 443}]}, {namespaces: [shared-db], ports: [{port: 5432}]}]
"#,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn facts_come_from_the_plan() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        assert_eq!(f.namespaces, vec!["acme-agents", "acme-payments"]);
        assert!(f.owns("acme-agents") && !f.owns("globex-agents"));
        assert!(f.profile_roles().contains(&"bulkhead-profile-admin".to_string()));
        assert_eq!(f.exception_namespaces(Direction::Ingress), vec!["ingress-nginx"]);
        assert_eq!(f.exception_namespaces(Direction::Egress), vec!["shared-db"]);
        assert_eq!(f.exception_cidrs(Direction::Egress), vec!["203.0.113.0/24".parse::<IpNet>().unwrap()]);
        assert!(f.regions().is_none());
    }

    #[test]
    fn pci_tenants_bind_only_the_noexec_profiles() {
        let t = tenant("pay", "namespaces: [{name: a}]\ncompliance: [PCI-DSS]");
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        assert!(f.profile_roles().iter().all(|r| !r.starts_with("bulkhead-profile-admin") || r.ends_with("-noexec")));
        assert_eq!(f.effective.audit_mode, crate::api::AuditMode::Required);
    }
}
