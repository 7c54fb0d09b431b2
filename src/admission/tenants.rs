//! Tenant rules, pure: a Tenant may not claim a namespace another Tenant
//! holds or plans, nor one that exists outside bulkhead (the same
//! [`Claim`] the controller uses), nor a spec the plan cannot express; and
//! an update may not drop a namespace it holds without saying so, because
//! that releases (Retain) or deletes (Delete) the namespace with its data.

use std::collections::BTreeSet;

use kube::ResourceExt;

use super::decision::{Violation, rule};
use super::facts::View;
use crate::api::{CONFIRM_REMOVAL_ANNOTATION, DeletionPolicy, Tenant};
use crate::audit::sink::SinkTarget;
use crate::controller::status::held_namespaces;
use crate::plan::namespaces::{self, Claim};
use crate::plan::{self, Config, namespace_name};

fn planned(t: &Tenant, config: &Config) -> BTreeSet<String> {
    namespaces::names(&t.name_any(), &t.spec, config).map(|n| n.into_iter().collect()).unwrap_or_default()
}

fn confirmed(t: &Tenant) -> BTreeSet<String> {
    let name = t.name_any();
    t.annotations()
        .get(CONFIRM_REMOVAL_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .flat_map(|s| [s.to_string(), namespace_name(&name, s)])
                .collect()
        })
        .unwrap_or_default()
}

/// Every Tenant rule for a create (`old` is None) or update.
pub fn validate(new: &Tenant, old: Option<&Tenant>, view: &dyn View, config: &Config) -> Vec<Violation> {
    let name = new.name_any();
    let mut out = Vec::new();
    if let Err(e) = plan::plan(new, config) {
        out.push(Violation::new(rule::TENANT_PLAN, "spec", format!("{e}; fix the spec")));
    }
    if let Err(e) = new.spec.audit.sink.parse::<SinkTarget>() {
        out.push(Violation::new(
            rule::TENANT_AUDIT_SINK,
            "spec.audit.sink",
            format!("{e}; use stdout, file:PATH or an http(s):// URL"),
        ));
    }
    let wanted = planned(new, config);
    let before = old.map(|o| planned(o, config)).unwrap_or_default();
    let held = held_namespaces(old.and_then(|o| o.status.as_ref()));
    let others: Vec<_> = view.tenants().into_iter().filter(|t| t.name_any() != name).collect();
    for ns in wanted.iter().filter(|ns| !before.contains(*ns) && !held.contains(*ns)) {
        let info = view.namespace(ns);
        match Claim::of(&name, info.as_ref().map(|i| &i.labels), info.as_ref().is_some_and(|i| i.terminating), false) {
            Claim::OtherTenant(holder) => out.push(Violation::new(
                rule::TENANT_NAMESPACE_CLAIMED,
                "spec.namespaces",
                format!("namespace {ns} belongs to tenant {holder}; choose another name"),
            )),
            Claim::Foreign => out.push(Violation::new(
                rule::TENANT_NAMESPACE_FOREIGN,
                "spec.namespaces",
                format!("namespace {ns} already exists outside bulkhead and is never taken over; choose another name or move its workloads out first"),
            )),
            _ => {
                if let Some(rival) = others.iter().find(|t| planned(t, config).contains(ns)) {
                    out.push(Violation::new(
                        rule::TENANT_NAMESPACE_CLAIMED,
                        "spec.namespaces",
                        format!("namespace {ns} is already claimed by tenant {}; choose another name", rival.name_any()),
                    ));
                }
            }
        }
    }
    if old.is_some() {
        let ok = confirmed(new);
        for ns in before.iter().filter(|ns| held.contains(*ns) && !wanted.contains(*ns) && !ok.contains(*ns)) {
            let fate = match new.spec.deletion_policy {
                DeletionPolicy::Retain => {
                    "release it from the tenant with its data (deletionPolicy Retain: kept, no longer managed, access removed)"
                }
                DeletionPolicy::Delete => "delete it with all its data (deletionPolicy Delete)",
            };
            let short = ns.strip_prefix(&format!("{name}-")).unwrap_or(ns);
            out.push(Violation::new(
                rule::TENANT_NAMESPACE_REMOVAL,
                "spec.namespaces",
                format!("removing namespace {ns} would {fate}; to confirm, annotate the Tenant with {CONFIRM_REMOVAL_ANNOTATION}={short}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::admission::facts::NamespaceInfo;
    use crate::admission::facts::testing::tenant;
    use crate::api::{NamespaceStatus, TenantStatus};

    #[derive(Default)]
    struct Fake {
        namespaces: BTreeMap<String, NamespaceInfo>,
        tenants: Vec<Arc<Tenant>>,
    }

    impl View for Fake {
        fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
            self.namespaces.get(name).cloned()
        }
        fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
            self.tenants.iter().find(|t| t.name_any() == name).cloned()
        }
        fn tenants(&self) -> Vec<Arc<Tenant>> {
            self.tenants.clone()
        }
    }

    fn ns(labels: &[(&str, &str)]) -> NamespaceInfo {
        NamespaceInfo {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            terminating: false,
        }
    }

    fn holding(mut t: Tenant, names: &[&str]) -> Tenant {
        t.status = Some(TenantStatus {
            namespaces: names.iter().map(|n| NamespaceStatus { name: n.to_string(), phase: "Ready".into() }).collect(),
            ..Default::default()
        });
        t
    }

    #[test]
    fn free_namespaces_can_be_claimed() {
        let t = tenant("acme", "namespaces: [{name: a}]");
        assert!(validate(&t, None, &Fake::default(), &Config::default()).is_empty());
    }

    #[test]
    fn held_or_foreign_namespaces_cannot() {
        let mut view = Fake::default();
        view.namespaces.insert("acme-a".into(), ns(&[("bulkhead.dev/tenant", "globex")]));
        view.namespaces.insert("acme-b".into(), ns(&[("team", "x")]));
        let t = tenant("acme", "namespaces: [{name: a}, {name: b}]");
        let out = validate(&t, None, &view, &Config::default());
        let rules: Vec<_> = out.iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec![rule::TENANT_NAMESPACE_CLAIMED, rule::TENANT_NAMESPACE_FOREIGN]);
        assert!(out[0].message.contains("belongs to tenant globex"));
        // Our own released namespace comes back.
        let mut view = Fake::default();
        view.namespaces.insert("acme-a".into(), ns(&[("bulkhead.dev/tenant", "acme")]));
        assert!(validate(&tenant("acme", "namespaces: [{name: a}]"), None, &view, &Config::default()).is_empty());
    }

    #[test]
    fn two_tenants_cannot_plan_the_same_name() {
        // acme + "x-y" and acme-x + "y" both plan namespace acme-x-y.
        let view = Fake { tenants: vec![Arc::new(tenant("acme-x", "namespaces: [{name: y}]"))], ..Default::default() };
        let out = validate(&tenant("acme", "namespaces: [{name: x-y}]"), None, &view, &Config::default());
        assert_eq!(out.len(), 1);
        assert!(out[0].message.contains("already claimed by tenant acme-x"), "{}", out[0].message);
    }

    #[test]
    fn dropping_a_held_namespace_needs_confirmation() {
        let old = holding(tenant("acme", "namespaces: [{name: a}, {name: b}]"), &["acme-a", "acme-b"]);
        let mut new = tenant("acme", "namespaces: [{name: a}]\ndeletionPolicy: Delete");
        let out = validate(&new, Some(&old), &Fake::default(), &Config::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, rule::TENANT_NAMESPACE_REMOVAL);
        assert!(out[0].message.contains("delete it with all its data"));
        assert!(out[0].message.contains("bulkhead.dev/confirm-namespace-removal=b"));
        new.metadata.annotations = Some(BTreeMap::from([(CONFIRM_REMOVAL_ANNOTATION.to_string(), "c, b".to_string())]));
        assert!(validate(&new, Some(&old), &Fake::default(), &Config::default()).is_empty());
        // A namespace never held (it was in conflict) goes without ceremony.
        let old = holding(tenant("acme", "namespaces: [{name: a}, {name: b}]"), &["acme-a"]);
        let new = tenant("acme", "namespaces: [{name: a}]");
        assert!(validate(&new, Some(&old), &Fake::default(), &Config::default()).is_empty());
    }

    #[test]
    fn plan_errors_and_bad_sinks_are_refused_early() {
        let t = tenant(
            "acme",
            "namespaces: [{name: a}]\ncompliance: [PCI-DSS]\nnetwork: {egressTo: [{cidr: 10.0.0.0/8}]}\naudit: {sink: 'ftp://x'}",
        );
        let out = validate(&t, None, &Fake::default(), &Config::default());
        let rules: Vec<_> = out.iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec![rule::TENANT_PLAN, rule::TENANT_AUDIT_SINK]);
        assert!(out[0].message.contains("PCI-DSS"));
    }
}
