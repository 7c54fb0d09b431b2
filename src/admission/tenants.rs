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

/// The other Tenant that plans namespace `ns`, if any. Namespaces are named
/// `<tenant>-<name>`, so only a Tenant named like a prefix of `ns` that ends
/// before a dash can plan it: a few lookups per namespace, where reading
/// every Tenant made each Tenant write cost O(tenants).
fn rival_planning(ns: &str, tenant: &str, view: &dyn View, config: &Config) -> Option<String> {
    ns.match_indices('-')
        .map(|(at, _)| &ns[..at])
        .filter(|candidate| *candidate != tenant)
        .filter_map(|candidate| view.tenant(candidate))
        .find(|rival| planned(rival, config).contains(ns))
        .map(|rival| rival.name_any())
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
    for ns in wanted.iter().filter(|ns| !before.contains(*ns) && !held.contains(*ns)) {
        match Claim::of(&name, view.namespace(ns).as_ref(), false) {
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
                if let Some(rival) = rival_planning(ns, &name, view, config) {
                    out.push(Violation::new(
                        rule::TENANT_NAMESPACE_CLAIMED,
                        "spec.namespaces",
                        format!("namespace {ns} is already claimed by tenant {rival}; choose another name"),
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
    use crate::admission::facts::testing::tenant;
    use crate::api::{NamespaceStatus, TenantStatus};
    use crate::plan::namespaces::Existing;

    #[derive(Default)]
    struct Fake {
        namespaces: BTreeMap<String, Existing>,
        tenants: Vec<Arc<Tenant>>,
    }

    impl View for Fake {
        fn namespace(&self, name: &str) -> Option<Existing> {
            self.namespaces.get(name).cloned()
        }
        fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
            self.tenants.iter().find(|t| t.name_any() == name).cloned()
        }
    }

    fn ns(labels: &[(&str, &str)]) -> Existing {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Existing::of(Some(&labels), false)
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
        // Tenants named like other prefixes of the name, planning other namespaces, are no rivals.
        let view = Fake {
            tenants: vec![
                Arc::new(tenant("acme-x", "namespaces: [{name: z}]")),
                Arc::new(tenant("a", "namespaces: [{name: b}]")),
            ],
            ..Default::default()
        };
        assert!(validate(&tenant("acme", "namespaces: [{name: x-y}]"), None, &view, &Config::default()).is_empty());
        // The rival may sit at any dash: acme-x-y-z planned by acme-x (y-z) and by acme-x-y (z).
        let view =
            Fake { tenants: vec![Arc::new(tenant("acme-x-y", "namespaces: [{name: z}]"))], ..Default::default() };
        let out = validate(&tenant("acme", "namespaces: [{name: x-y-z}]"), None, &view, &Config::default());
        assert!(out.len() == 1 && out[0].message.contains("by tenant acme-x-y"), "{out:?}");
        // A Tenant updating itself is not its own rival.
        let own = tenant("acme", "namespaces: [{name: a}]");
        let view = Fake { tenants: vec![Arc::new(own.clone())], ..Default::default() };
        assert!(
            validate(&tenant("acme", "namespaces: [{name: a}, {name: b}]"), Some(&own), &view, &Config::default())
                .is_empty()
        );
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
