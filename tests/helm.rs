//! The Helm chart: `helm lint` and `helm template` (pinned helm from
//! `e2e/tools`), the rendered chart applied server-side to the real control
//! plane, and the operator run with exactly the chart's RBAC (impersonating
//! its ServiceAccount) converging and erasing a Tenant that uses every
//! feature, with its continuous verification in full review mode, while
//! SubjectAccessReviews show what that RBAC must never allow.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn chart() -> PathBuf {
    repo().join("charts/bulkhead")
}

static TOOLS: OnceLock<PathBuf> = OnceLock::new();

/// The pinned helm, installed by `e2e/tools` when missing: never skipped.
fn helm() -> PathBuf {
    TOOLS
        .get_or_init(|| {
            let status = Command::new(repo().join("e2e/tools")).status().expect("e2e/tools runs");
            assert!(status.success(), "e2e/tools could not install helm; run it by hand to see why");
            repo().join(".bin/helm")
        })
        .clone()
}

fn run_helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm()).args(args).output().expect("helm runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).to_string()) } else { Err(text) }
}

/// `helm template` of the chart as parsed documents.
fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, chart.to_str().expect("utf-8 path"), "--namespace", namespace];
    for s in sets {
        args.extend(["--set", s]);
    }
    let yaml = run_helm(&args).unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
    serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn profile_role_names() -> BTreeSet<String> {
    bulkhead::plan::access::profile_cluster_roles().iter().map(|o| o.key().name).collect()
}

#[test]
fn chart_lints_and_renders_hardened_least_privilege_objects() {
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    run_helm(&["lint", "--strict", chart]).unwrap_or_else(|e| panic!("helm lint failed:\n{e}"));

    // The CRD the chart installs is the one the code generates.
    let crd = std::fs::read_to_string(repo().join("crds/bulkhead.dev_tenants.yaml")).expect("crds/");
    let copy =
        std::fs::read_to_string(repo().join("charts/bulkhead/crds/bulkhead.dev_tenants.yaml")).expect("chart crds/");
    assert!(crd == copy, "charts/bulkhead/crds/ differs from crds/: copy it again");

    let defaults = render("rel", "ops", &[]);
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(find(&defaults, kind).is_empty(), "{kind} is optional and off by default");
    }
    let all = render(
        "rel",
        "ops",
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "admission.enabled=true",
            "masterKey.existingSecret=bulkhead-master",
        ],
    );
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(!find(&all, kind).is_empty(), "{kind} missing from the rendered chart");
    }
    let services: Vec<&str> = find(&all, "Service").iter().filter_map(|s| s["metadata"]["name"].as_str()).collect();
    assert_eq!(services, ["rel-bulkhead-metrics", "rel-bulkhead-webhook"]);

    // Deployment: two replicas spread over nodes, Pod Security "restricted", probes, leader election.
    let deploy = find(&all, "Deployment")[0];
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    for arg in ["run", "--leader-election", "--metrics-listen=0.0.0.0:8080", "--log-format=json"] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    assert!(args.iter().any(|a| a.starts_with("--master-key-file=/etc/bulkhead/master-key/")));
    assert_eq!(find(&all, "PodDisruptionBudget")[0]["spec"]["minAvailable"], 1);

    // RBAC: no wildcards anywhere; bind/escalate only on the profile roles the code defines, by name.
    for role in find(&all, "ClusterRole").into_iter().chain(find(&all, "Role")) {
        for rule in role["rules"].as_array().expect("rules") {
            let strings = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default()
            };
            for field in ["verbs", "resources", "apiGroups", "resourceNames"] {
                assert!(!strings(field).contains(&"*".to_string()), "wildcard {field} in {rule}");
            }
            let verbs = strings("verbs");
            if verbs.iter().any(|v| v == "bind" || v == "escalate" || v == "impersonate") {
                assert_eq!(verbs, ["bind", "escalate"], "{rule}");
                let names: BTreeSet<String> = strings("resourceNames").into_iter().collect();
                assert_eq!(names, profile_role_names(), "bind/escalate must name exactly the profile roles");
            }
        }
    }

    // The schema documents and enforces the values.
    let bad = run_helm(&["template", "rel", chart, "--set", "replicaCount=0"]).expect_err("replicaCount 0 refused");
    assert!(bad.contains("replicaCount"), "{bad}");
    let bad = run_helm(&["template", "rel", chart, "--set", "logging.format=xml"]).expect_err("bad format refused");
    assert!(bad.contains("logging/format"), "{bad}");
}

/// Server-side applies every rendered document, resolving kinds by discovery.
async fn apply_docs(client: &Client, docs: &[Value], namespace: &str) {
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    for doc in docs {
        let (group, version) = match doc["apiVersion"].as_str().expect("apiVersion").split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), doc["apiVersion"].as_str().unwrap_or_default().to_string()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().expect("kind"));
        let (ar, caps) = discovery.resolve_gvk(&gvk).unwrap_or_else(|| panic!("the cluster does not serve {gvk:?}"));
        let name = doc["metadata"]["name"].as_str().expect("name");
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or(namespace);
            Api::namespaced_with(client.clone(), ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(name, &PatchParams::apply("bulkhead-helm-test").force(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("the apiserver refused {} {name}: {e}", doc["kind"]));
    }
}

fn isolation_verified(t: &bulkhead::api::Tenant) -> Option<(String, String, String)> {
    let c = t.status.as_ref()?.conditions.iter().find(|c| c.type_ == bulkhead::verify::schedule::CONDITION)?;
    (c.observed_generation == t.metadata.generation).then(|| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The operator's own verification, with only the chart's RBAC, runs the access-review checks: a
/// cluster-wide grant to a tenant subject, which only a SubjectAccessReview can see, fails the
/// condition (without the review rule those checks are "not applicable" and it would stay True).
async fn verification_reviews_access_under_the_charts_rbac(admin: &Client, tenant: &str) {
    let passed = |t: &bulkhead::api::Tenant| isolation_verified(t).filter(|(status, ..)| status == "True");
    let (_, reason, message) = wait_tenant(admin, tenant, "IsolationVerified=True", WAIT, passed).await;
    assert_eq!(reason, "ChecksPassed", "{message}");
    let grant = format!("{tenant}-wide-view");
    let crbs: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": grant},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("viewer@{tenant}.example")}]});
    crbs.patch(&grant, &PatchParams::apply("bulkhead-helm-test"), &Patch::Apply(&binding))
        .await
        .expect("a cluster-wide grant to the tenant's viewer");
    let failing = |t: &bulkhead::api::Tenant| isolation_verified(t).filter(|(status, ..)| status == "False");
    let found = wait_tenant(admin, tenant, "IsolationVerified=False by an access review", WAIT, failing).await;
    crbs.delete(&grant, &DeleteParams::default()).await.expect("grant removed");
    let (_, reason, message) = found;
    assert_eq!(reason, "ChecksFailed", "{message}");
    let failing = bulkhead::verify::schedule::failing_in(&message);
    use bulkhead::verify::checks::{CLUSTER_RESOURCES, PROFILE_RIGHTS};
    assert!(
        failing.contains(CLUSTER_RESOURCES) && failing.contains(PROFILE_RIGHTS),
        "the review checks found the grant: {message}"
    );
    wait_tenant(admin, tenant, "IsolationVerified=True again", WAIT, passed).await;
}

/// A kubeconfig with the admin's credentials that impersonates the ServiceAccount: the apiserver's RBAC decides.
fn impersonating_kubeconfig(namespace: &str, sa: &str, path: &std::path::Path) {
    let mut kc = Kubeconfig::read_from(kubeconfig_path()).expect("admin kubeconfig");
    for named in &mut kc.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{namespace}:{sa}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]);
        }
    }
    std::fs::write(path, serde_yaml::to_string(&kc).expect("kubeconfig serialises")).expect("kubeconfig written");
}

struct Ask<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

fn ask<'a>(
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
) -> Ask<'a> {
    Ask { verb, group, resource, namespace, name }
}

async fn allowed(client: &Client, user: &str, groups: &[String], a: &Ask<'_>) -> bool {
    let (resource, subresource) = match a.resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (a.resource.to_string(), None),
    };
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(resource),
                subresource,
                namespace: a.namespace.map(String::from),
                name: a.name.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer =
        Api::<SubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &sar).await.expect("SAR");
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread")]
async fn chart_applies_and_its_rbac_is_sufficient_and_minimal() {
    let admin = admin().await;
    install_crd(&admin).await;
    let ns = unique("bhelm");
    let release = ns.clone();
    let docs = render(&release, &ns, &[]);
    let nss: Api<Namespace> = Api::all(admin.clone());
    nss.patch(
        &ns,
        &PatchParams::apply("bulkhead-helm-test"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
    )
    .await
    .expect("release namespace");
    apply_docs(&admin, &docs, &ns).await;
    let fullname = format!("{release}-bulkhead");
    let sa = find(&docs, "ServiceAccount")[0]["metadata"]["name"].as_str().expect("sa name").to_string();
    assert_eq!(sa, fullname);
    let lease = "bulkhead-leader";

    // The operator, run with exactly the chart's RBAC, as the chart runs it (leader election on).
    let dir = std::env::temp_dir().join(format!("bulkhead-e2e-{ns}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig-sa");
    impersonating_kubeconfig(&ns, &sa, &kubeconfig);
    // A profile role the operator must (re)create itself: that needs `escalate` on it.
    let _ = Api::<ClusterRole>::all(admin.clone()).delete("bulkhead-profile-viewer", &DeleteParams::default()).await;
    let shard = ns.clone();
    let args = [
        "--operator-namespace",
        ns.as_str(),
        "--leader-election",
        "--leader-election-lease",
        lease,
        "--lease-duration",
        "4",
        "--lease-renew-margin",
        "2",
        // Continuous verification within seconds, not the default hour.
        "--verify-interval",
        "4s",
    ];
    let op = Operator::start_replica_with(&shard, "sa", &args, &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8"))]);

    // A Tenant with every feature, then drift, then erasure (deletionPolicy Delete).
    let name = format!("{ns}t");
    let tenant = tenant_from(
        &r#"
metadata: {name: x}
spec:
  displayName: Every feature
  namespaces: [{name: agents, labels: {team: ivr}}, {name: payments}]
  network:
    isolation: Strict
    allowDNS: true
    ingressFrom: [{namespaces: [kube-system], ports: [{port: 8443, protocol: TCP}]}]
    egressTo: [{cidr: 203.0.113.0/24, ports: [{port: 443, protocol: TCP}]}]
  podSecurity: restricted
  quota:
    hard: {requests.cpu: "2", requests.memory: 2Gi, requests.ephemeral-storage: 4Gi, pods: "10"}
    tenantHard: {requests.cpu: "3"}
  limits:
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 100m, memory: 128Mi}
  access:
    - {kind: User, name: admin@every.example, profile: admin}
    - {kind: Group, name: every-auditors, profile: auditor}
    - {kind: User, name: viewer@every.example, profile: viewer}
  secrets:
    rotationPeriod: 720h
    generated: [{name: crm-db, keys: [password, user]}]
  compliance: [GDPR]
  deletionPolicy: Delete
"#
        // Subjects of this run only: a leftover tenant of a failed run must not share them (other-tenant checks).
        .replace("every.example", &format!("{name}.example")),
        &name,
        &shard,
    );
    apply_tenant(&admin, &tenant).await;
    let ready = |t: &bulkhead::api::Tenant| {
        let s = t.status.as_ref()?;
        let ok = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ok && s.observed_generation == t.metadata.generation).then_some(())
    };
    wait_tenant(&admin, &name, "Ready under the chart's RBAC", WAIT, ready).await;
    wait_for("the viewer profile role restored", WAIT, || {
        let api = Api::<ClusterRole>::all(admin.clone());
        async move { api.get_opt("bulkhead-profile-viewer").await.ok().flatten().map(|_| ()) }
    })
    .await;
    let holder = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), &ns)
        .get(lease)
        .await
        .expect("the Lease exists")
        .spec
        .and_then(|s| s.holder_identity);
    assert!(holder.is_some(), "the operator holds the Lease in its namespace");

    verification_reviews_access_under_the_charts_rbac(&admin, &name).await;

    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &format!("{name}-agents"));
    policies.delete("bulkhead-default-deny", &DeleteParams::default()).await.expect("delete a managed policy");
    wait_for("drift repaired under the chart's RBAC", WAIT, || {
        let policies = policies.clone();
        async move { policies.get_opt("bulkhead-default-deny").await.ok().flatten().map(|_| ()) }
    })
    .await;

    delete_tenant(&admin, &name).await;
    for suffix in ["agents", "payments"] {
        let ns_name = format!("{name}-{suffix}");
        wait_for(&format!("namespace {ns_name} erased"), WAIT, || {
            let nss = nss.clone();
            let ns_name = ns_name.clone();
            async move { matches!(nss.get_opt(&ns_name).await, Ok(None)).then_some(()) }
        })
        .await;
    }
    let logs = op.logs();
    for bad in ["forbidden", "Forbidden", "cannot publish event"] {
        assert!(!logs.contains(bad), "the chart's RBAC fell short ({bad}):\n{logs}");
    }
    assert_eq!(op.metric("bulkhead_reconcile_errors_total").await, Some(0.0), "{logs}");
    drop(op);

    // Least privilege, asked of the apiserver's RBAC as the ServiceAccount.
    let user = format!("system:serviceaccount:{ns}:{sa}");
    let groups = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".into(),
    ];
    let must = [
        ask("watch", "bulkhead.dev", "tenants", None, None),
        ask("get", "bulkhead.dev", "tenants", None, Some("any")),
        ask("patch", "bulkhead.dev", "tenants/status", None, Some("any")),
        ask("escalate", "rbac.authorization.k8s.io", "clusterroles", None, Some("bulkhead-profile-admin")),
        ask("bind", "rbac.authorization.k8s.io", "clusterroles", None, Some("bulkhead-profile-viewer")),
        ask("update", "", "secrets", Some(&ns), Some("bulkhead-keys-any")),
        ask("patch", "coordination.k8s.io", "leases", Some(&ns), Some(lease)),
        ask("create", "events.k8s.io", "events", Some("default"), None),
        ask("create", "authorization.k8s.io", "subjectaccessreviews", None, None),
    ];
    for a in &must {
        assert!(allowed(&admin, &user, &groups, a).await, "the operator needs {} {}", a.verb, a.resource);
    }
    let never = [
        // No RBAC escalation beyond the profile roles: cluster-admin can be neither bound nor widened.
        ask("bind", "rbac.authorization.k8s.io", "clusterroles", None, Some("cluster-admin")),
        ask("escalate", "rbac.authorization.k8s.io", "clusterroles", None, Some("cluster-admin")),
        ask("bind", "rbac.authorization.k8s.io", "clusterroles", None, Some("admin")),
        ask("impersonate", "", "users", None, None),
        ask("impersonate", "", "serviceaccounts", None, None),
        // Access reviews, not token reviews: it asks what a subject may do, never who a token is.
        ask("create", "authentication.k8s.io", "tokenreviews", None, None),
        // No workloads, no exec, no tokens: the operator never runs anything in a tenant.
        ask("create", "", "pods", Some("kube-system"), None),
        ask("create", "", "pods/exec", Some("kube-system"), None),
        ask("create", "", "serviceaccounts/token", Some("kube-system"), None),
        ask("list", "", "configmaps", None, None),
        ask("list", "", "nodes", None, None),
        // Secrets are replaced only in its own namespace; elsewhere never updated, only applied where it manages them.
        ask("update", "", "secrets", Some("kube-system"), None),
        ask("get", "", "secrets", Some("kube-system"), Some("any")),
        // The CRD is read, never changed; other CRDs are not even read.
        ask("delete", "apiextensions.k8s.io", "customresourcedefinitions", None, Some("tenants.bulkhead.dev")),
        ask("get", "apiextensions.k8s.io", "customresourcedefinitions", None, Some("other.example.com")),
        // Tenants are the users' to write: no create, update or delete.
        ask("create", "bulkhead.dev", "tenants", None, None),
        ask("delete", "bulkhead.dev", "tenants", None, Some("any")),
        // Leases only its own, only in its namespace.
        ask("patch", "coordination.k8s.io", "leases", Some("kube-system"), Some("kube-controller-manager")),
        ask("patch", "coordination.k8s.io", "leases", Some(&ns), Some("someone-else")),
        // Admission is off in this release: no webhook configurations.
        ask("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some("any")),
    ];
    for a in &never {
        assert!(
            !allowed(&admin, &user, &groups, a).await,
            "least privilege: the operator must not {} {} {:?} {:?}",
            a.verb,
            a.resource,
            a.namespace,
            a.name
        );
    }

    // Clean up the release (cluster-scoped objects carry its unique name).
    let rbac = |kind: &str| {
        let ar =
            kube::discovery::ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind));
        Api::<DynamicObject>::all_with(admin.clone(), &ar)
    };
    let _ = rbac("ClusterRoleBinding").delete(&fullname, &DeleteParams::default()).await;
    let _ = rbac("ClusterRole").delete(&fullname, &DeleteParams::default()).await;
    for kind in ["Role", "RoleBinding"] {
        let ar =
            kube::discovery::ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind));
        let api = Api::<DynamicObject>::namespaced_with(admin.clone(), "default", &ar);
        let _ = api.delete(&format!("{fullname}-events"), &DeleteParams::default()).await;
    }
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
}
