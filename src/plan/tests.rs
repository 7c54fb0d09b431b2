//! Unit tests of the plan, one group per spec field.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use super::object::Kind;
use super::quantity::Quantity;
use super::*;
use crate::api::*;

fn tenant(yaml: &str) -> Tenant {
    serde_yaml::from_str(yaml).expect("test manifest parses")
}

fn base() -> Tenant {
    tenant(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  namespaces: [{name: agents}, {name: payments}]
"#,
    )
}

fn objects_of(d: &DesiredState, kind: Kind) -> Vec<&ManagedObject> {
    d.objects.iter().filter(|o| o.kind() == kind).collect()
}

fn plan_ok(t: &Tenant) -> DesiredState {
    plan(t, &Config::default()).expect("plan succeeds")
}

#[test]
fn namespaces_are_prefixed_labelled_and_restricted_by_default() {
    let mut t = base();
    t.spec.namespaces[0].labels.insert("team".into(), "ivr".into());
    let d = plan_ok(&t);
    assert_eq!(d.namespaces, vec!["acme-agents", "acme-payments"]);
    let ns = objects_of(&d, Kind::Namespace);
    assert_eq!(ns.len(), 2);
    let labels = ns[0].meta().labels.clone().unwrap();
    assert_eq!(labels["bulkhead.dev/tenant"], "acme");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "bulkhead");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    assert_eq!(labels["team"], "ivr");
    // Namespaces never point at the Tenant: deleting it or its CRD must not garbage-collect data.
    assert!(ns.iter().all(|n| n.meta().owner_references.is_none()));
}

#[test]
fn user_labels_cannot_override_ours() {
    let mut t = base();
    t.spec.namespaces[0].labels.insert("bulkhead.dev/tenant".into(), "evil".into());
    t.spec.namespaces[0].labels.insert("pod-security.kubernetes.io/enforce".into(), "privileged".into());
    let d = plan_ok(&t);
    let labels = objects_of(&d, Kind::Namespace)[0].meta().labels.clone().unwrap();
    assert_eq!(labels["bulkhead.dev/tenant"], "acme");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
}

#[test]
fn pod_security_level_is_applied() {
    let mut t = base();
    t.spec.pod_security = PodSecurityLevel::Baseline;
    let d = plan_ok(&t);
    let labels = objects_of(&d, Kind::Namespace)[1].meta().labels.clone().unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
}

#[test]
fn default_service_account_does_not_mount_tokens() {
    let d = plan_ok(&base());
    let sas = objects_of(&d, Kind::ServiceAccount);
    assert_eq!(sas.len(), 2);
    for sa in sas {
        let ManagedObject::ServiceAccount(sa) = sa else { unreachable!() };
        assert_eq!(sa.metadata.name.as_deref(), Some("default"));
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}

#[test]
fn duplicate_reserved_and_too_long_namespaces_are_rejected() {
    let mut t = base();
    t.spec.namespaces.push(t.spec.namespaces[0].clone());
    assert_eq!(plan(&t, &Config::default()), Err(PlanError::DuplicateNamespace("agents".into())));

    let mut t = base();
    t.spec.namespaces[0].name = "x".repeat(60);
    assert!(matches!(plan(&t, &Config::default()), Err(PlanError::InvalidNamespace(_))));

    let mut t = base();
    t.metadata.name = Some("kube".into());
    t.spec.namespaces[0].name = "system".into();
    assert_eq!(plan(&t, &Config::default()), Err(PlanError::ReservedNamespace("kube-system".into())));

    let mut t = base();
    t.metadata.name = Some("Bad_Name".into());
    assert_eq!(plan(&t, &Config::default()), Err(PlanError::InvalidTenantName));
}

fn policy<'a>(d: &'a DesiredState, ns: &str, name: &str) -> &'a k8s_openapi::api::networking::v1::NetworkPolicySpec {
    d.objects
        .iter()
        .find_map(|o| match o {
            ManagedObject::NetworkPolicy(p)
                if p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name) =>
            {
                p.spec.as_ref()
            }
            _ => None,
        })
        .expect("policy exists")
}

#[test]
fn strict_isolation_denies_all_then_allows_the_tenant_and_dns() {
    let d = plan_ok(&base());
    assert_eq!(objects_of(&d, Kind::NetworkPolicy).len(), 4);
    let deny = policy(&d, "acme-agents", network::DEFAULT_DENY);
    assert_eq!(deny.policy_types.as_deref(), Some(&["Ingress".to_string(), "Egress".to_string()][..]));
    assert!(deny.ingress.is_none() && deny.egress.is_none());
    assert_eq!(deny.pod_selector, Some(Default::default()));

    let allow = policy(&d, "acme-agents", network::ALLOW);
    let ingress = allow.ingress.as_ref().unwrap();
    assert_eq!(ingress.len(), 1);
    let sel = ingress[0].from.as_ref().unwrap()[0].namespace_selector.as_ref().unwrap();
    let expr = &sel.match_expressions.as_ref().unwrap()[0];
    // Selected by the immutable name label, never by a spoofable tenant label.
    assert_eq!(expr.key, "kubernetes.io/metadata.name");
    assert_eq!(expr.values.as_deref(), Some(&["acme-agents".to_string(), "acme-payments".to_string()][..]));
    assert!(sel.match_labels.is_none());

    let egress = allow.egress.as_ref().unwrap();
    assert_eq!(egress.len(), 2, "own namespaces and DNS");
    let dns = &egress[1];
    let ports: Vec<(String, i32)> = dns
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| {
            let port = match p.port.as_ref().unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => *i,
                _ => 0,
            };
            (p.protocol.clone().unwrap(), port)
        })
        .collect();
    assert_eq!(ports, vec![("UDP".to_string(), 53), ("TCP".to_string(), 53)]);
    let peer = &dns.to.as_ref().unwrap()[0];
    assert_eq!(peer.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["k8s-app"], "kube-dns");
}

#[test]
fn dns_can_be_switched_off_and_isolation_disabled() {
    let mut t = base();
    t.spec.network.allow_dns = false;
    let d = plan_ok(&t);
    assert_eq!(policy(&d, "acme-payments", network::ALLOW).egress.as_ref().unwrap().len(), 1);

    let mut t = base();
    t.spec.network.isolation = Isolation::Disabled;
    assert!(objects_of(&plan_ok(&t), Kind::NetworkPolicy).is_empty());
}

#[test]
fn listed_exceptions_become_rules_with_ports() {
    let mut t = base();
    t.spec.network.ingress_from = vec![
        NetworkPeer { namespaces: Some(vec!["ingress-nginx".into()]), cidr: None, ports: vec![] },
        NetworkPeer { namespaces: None, cidr: Some("192.0.2.7/24".into()), ports: vec![] },
    ];
    t.spec.network.egress_to = vec![NetworkPeer {
        namespaces: None,
        cidr: Some("203.0.113.0/24".into()),
        ports: vec![PortSpec { port: 443, protocol: Protocol::Tcp }],
    }];
    let d = plan_ok(&t);
    let allow = policy(&d, "acme-agents", network::ALLOW);
    let ingress = allow.ingress.as_ref().unwrap();
    assert_eq!(ingress.len(), 3);
    let ns_sel = ingress[1].from.as_ref().unwrap()[0].namespace_selector.as_ref().unwrap();
    assert_eq!(
        ns_sel.match_expressions.as_ref().unwrap()[0].values.as_deref(),
        Some(&["ingress-nginx".to_string()][..])
    );
    // The CIDR is normalised to its network address.
    assert_eq!(ingress[2].from.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr, "192.0.2.0/24");
    let egress = allow.egress.as_ref().unwrap();
    assert_eq!(egress.len(), 3);
    assert_eq!(egress[2].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr, "203.0.113.0/24");
    assert_eq!(egress[2].ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
}

#[test]
fn bad_cidr_is_a_plan_error_naming_the_field() {
    let mut t = base();
    t.spec.network.egress_to = vec![NetworkPeer { namespaces: None, cidr: Some("300.1.1.1/8".into()), ports: vec![] }];
    let err = plan(&t, &Config::default()).unwrap_err();
    assert!(err.to_string().contains("spec.network.egressTo[0]"), "{err}");
}

fn q(s: &str) -> K8sQuantity {
    K8sQuantity(s.into())
}

fn hard_of(d: &DesiredState, ns: &str) -> BTreeMap<String, K8sQuantity> {
    d.objects
        .iter()
        .find_map(|o| match o {
            ManagedObject::ResourceQuota(rq) if rq.metadata.namespace.as_deref() == Some(ns) => {
                rq.spec.as_ref().and_then(|s| s.hard.clone())
            }
            _ => None,
        })
        .expect("quota exists")
}

#[test]
fn quota_is_canonical_and_tenant_limits_are_split() {
    let mut t = base();
    t.spec.quota = Some(QuotaSpec {
        hard: BTreeMap::from([("requests.memory".into(), q("8192Mi")), ("requests.cpu".into(), q("4"))]),
        tenant_hard: BTreeMap::from([("requests.cpu".into(), q("5")), ("pods".into(), q("11"))]),
    });
    let d = plan_ok(&t);
    let hard = hard_of(&d, "acme-agents");
    assert_eq!(hard["requests.memory"], q("8Gi"));
    // 5 CPUs over two namespaces, capped by nothing smaller: 2500m each.
    assert_eq!(hard["requests.cpu"], q("2500m"));
    // Pods are counted in whole units.
    assert_eq!(hard["pods"], q("5"));
    assert_eq!(hard_of(&d, "acme-payments"), hard);
}

#[test]
fn per_namespace_hard_caps_the_share() {
    let mut t = base();
    t.spec.quota = Some(QuotaSpec {
        hard: BTreeMap::from([("requests.cpu".into(), q("1"))]),
        tenant_hard: BTreeMap::from([("requests.cpu".into(), q("10"))]),
    });
    assert_eq!(hard_of(&plan_ok(&t), "acme-agents")["requests.cpu"], q("1"));
}

#[test]
fn limits_become_a_container_limit_range() {
    let mut t = base();
    t.spec.limits = Some(LimitsSpec {
        default: BTreeMap::from([("cpu".into(), q("0.5"))]),
        default_request: BTreeMap::from([("memory".into(), q("128Mi"))]),
        max: BTreeMap::new(),
    });
    let d = plan_ok(&t);
    let lr = objects_of(&d, Kind::LimitRange);
    assert_eq!(lr.len(), 2);
    let ManagedObject::LimitRange(lr) = lr[0] else { unreachable!() };
    let item = &lr.spec.as_ref().unwrap().limits[0];
    assert_eq!(item.type_, "Container");
    assert_eq!(item.default.as_ref().unwrap()["cpu"], q("500m"));
    assert!(item.max.is_none());
}

#[test]
fn bad_quantity_names_the_field() {
    let mut t = base();
    t.spec.quota = Some(QuotaSpec { hard: BTreeMap::from([("pods".into(), q("lots"))]), tenant_hard: BTreeMap::new() });
    let err = plan(&t, &Config::default()).unwrap_err();
    assert!(err.to_string().contains("spec.quota.hard.pods"), "{err}");
}

#[test]
fn no_quota_no_limits_means_no_objects() {
    let d = plan_ok(&base());
    assert!(objects_of(&d, Kind::ResourceQuota).is_empty());
    assert!(objects_of(&d, Kind::LimitRange).is_empty());
}

fn observed(hard: &[(&str, &str)], used: &[(&str, &str)]) -> quota::Observed {
    let m = |xs: &[(&str, &str)]| xs.iter().map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap())).collect();
    quota::Observed { hard: m(hard), used: m(used) }
}

#[test]
fn rebalance_moves_headroom_to_a_full_namespace_and_never_exceeds_the_limit() {
    let limit: quota::Resources = BTreeMap::from([("pods".into(), Quantity::parse("10").unwrap())]);
    let ns = vec!["a".to_string(), "b".to_string()];
    // a is full (5 of 5), b uses 1 of 5: free headroom is 4, split 2 and 2.
    let obs = BTreeMap::from([
        ("a".to_string(), observed(&[("pods", "5")], &[("pods", "5")])),
        ("b".to_string(), observed(&[("pods", "5")], &[("pods", "1")])),
    ]);
    let out = quota::rebalance(&limit, &BTreeMap::new(), &ns, &obs);
    assert_eq!(out["a"]["pods"].to_string(), "7");
    assert_eq!(out["b"]["pods"].to_string(), "3");
    let total: i128 = out.values().map(|m| m["pods"].milli()).sum();
    assert!(total <= limit["pods"].milli());
}

#[test]
fn rebalance_keeps_shares_while_every_namespace_has_room() {
    let limit: quota::Resources = BTreeMap::from([("pods".into(), Quantity::parse("10").unwrap())]);
    let ns = vec!["a".to_string(), "b".to_string()];
    let obs = BTreeMap::from([
        ("a".to_string(), observed(&[("pods", "6")], &[("pods", "2")])),
        ("b".to_string(), observed(&[("pods", "4")], &[("pods", "3")])),
    ]);
    let out = quota::rebalance(&limit, &BTreeMap::new(), &ns, &obs);
    assert_eq!(out["a"]["pods"].to_string(), "6");
    assert_eq!(out["b"]["pods"].to_string(), "4");
}

#[test]
fn rebalance_with_no_headroom_freezes_at_usage() {
    let limit: quota::Resources = BTreeMap::from([("pods".into(), Quantity::parse("4").unwrap())]);
    let ns = vec!["a".to_string(), "b".to_string()];
    let obs = BTreeMap::from([
        ("a".to_string(), observed(&[("pods", "2")], &[("pods", "3")])),
        ("b".to_string(), observed(&[("pods", "2")], &[("pods", "2")])),
    ]);
    let out = quota::rebalance(&limit, &BTreeMap::new(), &ns, &obs);
    assert_eq!(out["a"]["pods"].to_string(), "3");
    assert_eq!(out["b"]["pods"].to_string(), "2");
    // Stable: feeding the result back changes nothing.
    let obs2 = BTreeMap::from([
        ("a".to_string(), observed(&[("pods", "3")], &[("pods", "3")])),
        ("b".to_string(), observed(&[("pods", "2")], &[("pods", "2")])),
    ]);
    assert_eq!(quota::rebalance(&limit, &BTreeMap::new(), &ns, &obs2), out);
}

fn entry(kind: SubjectKind, name: &str, ns: Option<&str>, profile: Profile) -> AccessEntry {
    AccessEntry { kind, name: name.into(), namespace: ns.map(Into::into), profile }
}

#[test]
fn one_role_binding_per_entry_and_namespace() {
    let mut t = base();
    t.spec.access = vec![
        entry(SubjectKind::User, "alice", None, Profile::Admin),
        entry(SubjectKind::Group, "auditors", None, Profile::Auditor),
        entry(SubjectKind::ServiceAccount, "ci", Some("acme-agents"), Profile::Developer),
        entry(SubjectKind::User, "alice", None, Profile::Admin),
    ];
    let d = plan_ok(&t);
    let rbs = objects_of(&d, Kind::RoleBinding);
    assert_eq!(rbs.len(), 6, "three distinct entries in two namespaces");
    let roles: Vec<String> = rbs
        .iter()
        .map(|o| match o {
            ManagedObject::RoleBinding(rb) => rb.role_ref.name.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert!(roles.contains(&"bulkhead-profile-admin".to_string()));
    assert!(roles.contains(&"bulkhead-profile-auditor".to_string()));
    let sa = rbs
        .iter()
        .find_map(|o| match o {
            ManagedObject::RoleBinding(rb) if rb.subjects.as_ref().unwrap()[0].kind == "ServiceAccount" => Some(rb),
            _ => None,
        })
        .unwrap();
    assert_eq!(sa.subjects.as_ref().unwrap()[0].namespace.as_deref(), Some("acme-agents"));
    assert!(sa.subjects.as_ref().unwrap()[0].api_group.is_none());
    // The tenant's subjects may read their own Tenant, and nothing else cluster-wide.
    let crs = objects_of(&d, Kind::ClusterRole);
    assert_eq!(crs.len(), 1);
    let ManagedObject::ClusterRole(cr) = crs[0] else { unreachable!() };
    let rule = &cr.rules.as_ref().unwrap()[0];
    assert_eq!(rule.resource_names.as_deref(), Some(&["acme".to_string()][..]));
    assert_eq!(rule.verbs, vec!["get"]);
    let ManagedObject::ClusterRoleBinding(crb) = objects_of(&d, Kind::ClusterRoleBinding)[0] else { unreachable!() };
    assert_eq!(crb.subjects.as_ref().unwrap().len(), 3);
}

#[test]
fn binding_names_are_stable_and_change_with_the_role() {
    let a = entry(SubjectKind::User, "alice", None, Profile::Admin);
    assert_eq!(access::binding_name(&a, true), access::binding_name(&a.clone(), true));
    assert_ne!(access::binding_name(&a, true), access::binding_name(&a, false));
    let b = entry(SubjectKind::Group, "alice", None, Profile::Admin);
    assert_ne!(access::binding_name(&a, true), access::binding_name(&b, true));
    assert!(access::binding_name(&a, true).len() <= 63);
}

#[test]
fn service_account_outside_the_tenant_is_rejected() {
    let mut t = base();
    t.spec.access = vec![entry(SubjectKind::ServiceAccount, "ci", Some("globex-ci"), Profile::Developer)];
    assert!(matches!(plan(&t, &Config::default()), Err(PlanError::ServiceAccountOutsideTenant { .. })));
    t.spec.access = vec![entry(SubjectKind::ServiceAccount, "ci", None, Profile::Developer)];
    assert!(matches!(plan(&t, &Config::default()), Err(PlanError::ServiceAccountWithoutNamespace(_))));
}

#[test]
fn no_profile_grants_cluster_scope_quota_edits_or_secret_reads_it_should_not() {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    let grants = |rules: &[PolicyRule], res: &str, verb: &str| {
        rules.iter().any(|r| {
            r.resources.as_ref().is_some_and(|rs| rs.iter().any(|x| x == res || x == "*"))
                && r.verbs.iter().any(|v| v == verb || v == "*")
        })
    };
    for profile in Profile::ALL {
        for exec in [true, false] {
            let rules = access::profile_rules(profile, exec);
            for r in &rules {
                assert!(!r.verbs.iter().any(|v| v == "*" || v == "escalate" || v == "bind" || v == "impersonate"));
                assert!(r.non_resource_urls.is_none());
            }
            for res in ["resourcequotas", "limitranges"] {
                for verb in ["create", "update", "patch", "delete"] {
                    assert!(!grants(&rules, res, verb), "{profile:?} can {verb} {res}");
                }
            }
            assert!(!grants(&rules, "namespaces", "list"));
            assert!(!grants(&rules, "namespaces", "update"));
            let reads_secrets = grants(&rules, "secrets", "get");
            assert_eq!(reads_secrets, matches!(profile, Profile::Admin | Profile::Developer), "{profile:?}");
            let can_exec = grants(&rules, "pods/exec", "create");
            assert_eq!(can_exec, exec && matches!(profile, Profile::Admin | Profile::Developer));
        }
    }
    assert!(grants(&access::profile_rules(Profile::Admin, false), "networkpolicies", "create"));
    assert!(!grants(&access::profile_rules(Profile::Developer, false), "networkpolicies", "create"));
    assert!(!grants(&access::profile_rules(Profile::Developer, false), "rolebindings", "create"));
    assert!(grants(&access::profile_rules(Profile::Auditor, false), "events", "list"));
    assert!(!grants(&access::profile_rules(Profile::Viewer, false), "events", "list"));
}

#[test]
fn compliance_profiles_tighten_and_reject_conflicts() {
    let mut t = base();
    t.spec.access = vec![entry(SubjectKind::User, "alice", None, Profile::Admin)];
    let exec_role = |d: &DesiredState| {
        d.objects.iter().find_map(|o| match o {
            ManagedObject::RoleBinding(rb) => Some(rb.role_ref.name.clone()),
            _ => None,
        })
    };
    assert_eq!(exec_role(&plan_ok(&t)).as_deref(), Some("bulkhead-profile-admin"));
    t.spec.compliance = vec![ComplianceProfile::Gdpr];
    assert_eq!(exec_role(&plan_ok(&t)).as_deref(), Some("bulkhead-profile-admin-noexec"));

    t.spec.compliance = vec![ComplianceProfile::PciDss];
    t.spec.pod_security = PodSecurityLevel::Baseline;
    assert!(matches!(plan(&t, &Config::default()), Err(PlanError::Compliance { profile: "PCI-DSS", .. })));

    t.spec.pod_security = PodSecurityLevel::Restricted;
    t.spec.network.egress_to = vec![NetworkPeer { namespaces: None, cidr: Some("10.0.0.0/8".into()), ports: vec![] }];
    assert!(matches!(plan(&t, &Config::default()), Err(PlanError::Compliance { profile: "PCI-DSS", .. })));

    t.spec.network.egress_to.clear();
    t.spec.network.isolation = Isolation::Disabled;
    assert!(matches!(plan(&t, &Config::default()), Err(PlanError::Compliance { .. })));
}

#[test]
fn claims_never_take_foreign_or_other_tenants_namespaces() {
    use namespaces::{Claim, Existing};
    let existing = |pairs: &[(&str, &str)], terminating: bool| {
        let labels: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Existing::of(Some(&labels), terminating)
    };
    assert_eq!(Claim::of("acme", None, false), Claim::Free);
    let ours = existing(&[(LABEL_TENANT, "acme"), (LABEL_MANAGED_BY, MANAGED_BY), ("team", "x")], false);
    assert_eq!(ours, Existing { holder: Some("acme".into()), managed: true, terminating: false });
    assert_eq!(Claim::of("acme", Some(&ours), true), Claim::Ours);
    assert_eq!(Claim::of("acme", Some(&ours), false), Claim::Ours);
    let going = existing(&[(LABEL_TENANT, "acme"), (LABEL_MANAGED_BY, MANAGED_BY)], true);
    assert_eq!(Claim::of("acme", Some(&going), true), Claim::Terminating);
    let released = existing(&[(LABEL_TENANT, "acme")], false);
    assert_eq!(Claim::of("acme", Some(&released), false), Claim::Released);
    let other = existing(&[(LABEL_TENANT, "globex"), (LABEL_MANAGED_BY, MANAGED_BY)], false);
    assert_eq!(Claim::of("acme", Some(&other), false), Claim::OtherTenant("globex".into()));
    // Relabelled to another tenant, but our status says we hold it: still ours, labels get repaired.
    assert_eq!(Claim::of("acme", Some(&other), true), Claim::Ours);
    // Another manager's value is not bulkhead's label.
    let imitation = existing(&[(LABEL_TENANT, "acme"), (LABEL_MANAGED_BY, "helm")], false);
    assert_eq!(Claim::of("acme", Some(&imitation), false), Claim::Released);
    assert_eq!(Claim::of("acme", Some(&existing(&[("team", "x")], false)), false), Claim::Foreign);
    assert_eq!(Claim::of("acme", Some(&Existing::of(None, false)), false), Claim::Foreign);
    assert!(!Claim::Foreign.usable() && !Claim::Terminating.usable() && Claim::Released.usable());
}

#[test]
fn every_object_is_labelled_for_pruning() {
    let mut t = base();
    t.spec.access = vec![entry(SubjectKind::User, "alice", None, Profile::Viewer)];
    t.spec.quota = Some(QuotaSpec { hard: BTreeMap::from([("pods".into(), q("3"))]), tenant_hard: BTreeMap::new() });
    let d = plan_ok(&t);
    for o in &d.objects {
        let labels = o.meta().labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_TENANT).map(String::as_str), Some("acme"), "{}", o.key());
        assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(MANAGED_BY), "{}", o.key());
    }
    let keys = d.keys();
    assert_eq!(keys.len(), d.objects.len(), "no two objects share a key");
}

#[test]
fn plan_is_deterministic() {
    let t = tenant(include_str!("../../examples/acme-insurance.yaml"));
    assert_eq!(plan_ok(&t), plan_ok(&t));
}

#[test]
fn examples_plan_cleanly() {
    for text in [include_str!("../../examples/acme-insurance.yaml"), include_str!("../../examples/globex-telecom.yaml")]
    {
        let t = tenant(text);
        let d = plan_ok(&t);
        assert!(!d.objects.is_empty());
    }
}

#[test]
fn only_names_the_plan_gives_can_be_pruned() {
    assert!(is_planned_name(Kind::Namespace, "acme", "acme-agents"));
    assert!(!is_planned_name(Kind::Namespace, "acme", "globex-agents"));
    assert!(!is_planned_name(Kind::Namespace, "acme", "acmeagents"));
    assert!(is_planned_name(Kind::ClusterRole, "acme", "bulkhead-tenant-acme"));
    assert!(!is_planned_name(Kind::ClusterRole, "acme", "cluster-admin"));
    assert!(!is_planned_name(Kind::ClusterRoleBinding, "acme", "bulkhead-tenant-globex"));
    assert!(!is_planned_name(Kind::RoleBinding, "acme", "ci-deployer"));
    assert!(!is_planned_name(Kind::ServiceAccount, "acme", "default"));
    // Everything the plan produces passes its own check.
    let t = tenant(include_str!("../../examples/acme-insurance.yaml"));
    for o in plan_ok(&t).objects.iter().filter(|o| o.kind() != Kind::ServiceAccount) {
        assert!(is_planned_name(o.kind(), "acme", &o.key().name), "{}", o.key());
    }
}
