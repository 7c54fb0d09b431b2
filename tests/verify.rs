//! `bulkhead verify` against the real control plane: a healthy tenant passes
//! every applicable check, each control broken by hand (operator stopped, so
//! it cannot repair) fails exactly its check with evidence, the report
//! formats are well-formed, the controller keeps `IsolationVerified` without
//! idle writes, and the NetworkPolicy evaluator behind the cross-tenant check
//! agrees with the independent engine the network tests use.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bulkhead::api::Tenant;
use bulkhead::verify::checks;
use bulkhead::verify::network::{Endpoint, Model, NamedPort, Pod};
use common::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::RwLock;

const WAIT: Duration = Duration::from_secs(60);

/// The profile ClusterRoles are shared by every tenant: the test that widens
/// one takes this lock for writing, every test that expects them intact for reading.
static PROFILES: RwLock<()> = RwLock::const_new(());

const PROFILES_ALL: [&str; 4] = ["admin", "developer", "auditor", "viewer"];

fn user(tenant: &str, profile: &str) -> String {
    format!("{tenant}-{profile}@example.com")
}

fn tenant_manifest(name: &str, shard: &str) -> Value {
    let access: Vec<Value> =
        PROFILES_ALL.iter().map(|p| json!({"kind": "User", "name": user(name, p), "profile": p})).collect();
    let mut t =
        tenant_from("metadata: {name: x}\nspec:\n  namespaces: [{name: agents}, {name: payments}]\n", name, shard);
    t["spec"]["access"] = json!(access);
    t["spec"]["quota"] = json!({"hard": {
        "requests.cpu": "2", "limits.cpu": "4", "requests.memory": "2Gi", "limits.memory": "4Gi",
        "requests.ephemeral-storage": "2Gi", "limits.ephemeral-storage": "4Gi", "pods": "20", "services": "10"
    }});
    t["spec"]["limits"] = json!({"default": {"cpu": "500m", "memory": "256Mi"}});
    t["spec"]["secrets"] = json!({"generated": [{"name": "crm-db", "keys": ["password"]}]});
    // Erased when the test ends: retained namespaces would pile up as other tenants' namespaces.
    t["spec"]["deletionPolicy"] = json!("Delete");
    t
}

async fn wait_ready(client: &Client, name: &str) -> Tenant {
    wait_tenant(client, name, "Ready", WAIT, |t| {
        let s = t.status.as_ref()?;
        let ready = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && s.observed_generation == t.metadata.generation && s.keys.is_some()).then(|| t.clone())
    })
    .await
}

/// Runs `bulkhead verify` with the admin kubeconfig: exit code, stdout, stderr.
fn verify_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("verify")
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env("BULKHEAD_NAMESPACE", OPERATOR_NAMESPACE)
        .stdin(Stdio::null())
        .output()
        .expect("bulkhead verify runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The JSON report of one tenant.
fn verify_json(tenant: &str) -> (i32, Value) {
    let (code, stdout, stderr) = verify_cli(&["--tenant", tenant, "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("JSON report ({e}): {stdout}\n{stderr}"));
    (code, v)
}

/// Check id → (status, the whole check).
fn statuses(report: &Value) -> BTreeMap<String, (String, Value)> {
    report["tenants"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), (c["status"].as_str().unwrap().to_string(), c.clone())))
        .collect()
}

fn failing(report: &Value) -> BTreeSet<String> {
    statuses(report).into_iter().filter(|(_, (s, _))| s == "fail" || s == "error").map(|(id, _)| id).collect()
}

fn bad_evidence(report: &Value, id: &str) -> String {
    let all = statuses(report);
    let check = &all.get(id).unwrap_or_else(|| panic!("no check {id}")).1;
    check["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ok"] == false)
        .map(|e| format!("{} -> {}", e["request"].as_str().unwrap(), e["response"].as_str().unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks that only admission webhooks or features these tenants do not use provide: not applicable here.
const WEBHOOK_OR_FUTURE: [&str; 5] =
    [checks::NODE_PORT, checks::ALWAYS_PULL, checks::AUDIT_SIDECAR, checks::DATA_RESIDENCY, checks::WEBHOOKS];

#[tokio::test]
async fn a_healthy_tenant_passes_every_applicable_check_in_every_format() {
    let _shared = PROFILES.read().await;
    let client = admin().await;
    install_crd(&client).await;
    let op = Operator::start_with(&unique("v"), &[("BULKHEAD_VERIFY_INTERVAL", "2s")]);
    let (a, b) = (unique("va"), unique("vb"));
    apply_tenant(&client, &tenant_manifest(&a, &op.shard)).await;
    apply_tenant(&client, &tenant_manifest(&b, &op.shard)).await;
    wait_ready(&client, &a).await;
    wait_ready(&client, &b).await;

    let (code, report) = verify_json(&a);
    let all = statuses(&report);
    let problems: Vec<String> = all
        .iter()
        .filter(|(id, (s, _))| !(s == "pass" || (s == "not-applicable" && WEBHOOK_OR_FUTURE.contains(&id.as_str()))))
        .map(|(id, (s, c))| format!("{id} {s}: {} {}", c["reason"], bad_evidence(&report, id)))
        .collect();
    assert!(problems.is_empty(), "a healthy tenant must pass everything applicable:\n{}", problems.join("\n"));
    assert_eq!(code, 0, "exit 0 when every check passes");
    assert_eq!(all.len(), checks::CATALOGUE.len(), "one result per catalogue entry");
    for (id, (s, c)) in &all {
        assert!(!c["reason"].as_str().unwrap().is_empty(), "{id} says why it is {s}");
        if s == "pass" && !matches!(id.as_str(), "BH-AUDIT-001" | "BH-RES-001") {
            assert!(!c["evidence"].as_array().unwrap().is_empty(), "{id} passes with evidence");
        }
    }
    // The benchmark checks ran as the tenant's subjects, each profile.
    let cpi = bad_evidence(&report, checks::CLUSTER_RESOURCES);
    assert!(cpi.is_empty());
    let reviewed: BTreeSet<String> = all[checks::CLUSTER_RESOURCES].1["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reviewed.len(), 4, "every subject reviewed: {reviewed:?}");

    // JSON: the documented, stable schema.
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    let set = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(report["apiVersion"], "bulkhead.dev/verify/v1");
    assert_eq!(keys(&report), set(&["apiVersion", "kind", "generatedAt", "generator", "passed", "summary", "tenants"]));
    assert_eq!(keys(&report["summary"]), set(&["tenants", "passed", "failed", "notApplicable", "errors"]));
    assert_eq!(keys(&report["tenants"][0]), set(&["name", "passed", "summary", "checks"]));
    for (_, c) in all.values() {
        assert_eq!(
            keys(c),
            set(&["id", "title", "category", "benchmark", "control", "status", "reason", "remediation", "evidence"])
        );
        for e in c["evidence"].as_array().unwrap() {
            assert!(keys(e).is_subset(&set(&["subject", "request", "response", "ok"])));
        }
    }
    assert_eq!(report["passed"], true);

    // Least privilege: only list (no get, no reviews, no impersonation), as with RBAC narrower than the
    // Helm chart's (which adds reviews: tests/helm.rs). Object controls still compare exactly; the rest is not applicable.
    least_privilege_view_still_proves_the_object_controls(&client, &a).await;

    // Table: the summary line; Markdown: a report for people; JUnit: well-formed XML.
    let (code, table, _) = verify_cli(&["--tenant", &a]);
    assert_eq!(code, 0);
    let line = table.lines().last().unwrap();
    assert!(line.starts_with(&format!("{a}: ")) && line.contains(" passed, 0 failed"), "{line}");
    let (_, md, stderr) = verify_cli(&["--tenant", &a, "-o", "markdown"]);
    assert!(md.starts_with("# Tenant isolation report"));
    assert!(md.contains(&format!("## Tenant `{a}`")) && md.contains("`MTB-PL1-CC-CPI-1`"));
    assert!(stderr.contains(" passed, 0 failed"), "summary on stderr for machine formats: {stderr}");
    let (_, xml, _) = verify_cli(&["-o", "junit", "--tenant", &a]);
    let junit = parse_junit(&xml);
    assert_eq!(junit.suites, 1);
    assert_eq!(junit.cases, checks::CATALOGUE.len());
    assert_eq!(junit.failures, 0);
    assert!(junit.skipped >= 3, "not-applicable checks are skipped testcases");

    // Continuous verification: the condition is set, and passing runs write nothing.
    let api: Api<Tenant> = Api::all(client.clone());
    let t = wait_tenant(&client, &a, "IsolationVerified=True", WAIT, |t| {
        let c = t.status.as_ref()?.conditions.iter().find(|c| c.type_ == "IsolationVerified")?;
        (c.status == "True").then(|| t.clone())
    })
    .await;
    let c = t.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "IsolationVerified").unwrap().clone();
    assert_eq!(c.reason, "ChecksPassed");
    assert!(c.message.contains("0 failed"), "{}", c.message);
    let rv = t.resource_version();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = api.get(&a).await.unwrap();
    assert_eq!(later.resource_version(), rv, "verification runs that change nothing write nothing");
    assert!(op.logs().contains("continuous isolation verification started"));

    // From here on, a steady trickle of short reconciles of `a` (as quota usage following its
    // pods causes): an annotation on one of its namespaces changes every 700 ms, never leaving
    // the reconciler idle for long. Verification must keep its schedule through it.
    let reconciles = "bulkhead_reconcile_duration_seconds_count";
    let reconciled_before = op.metric(reconciles).await.expect("the operator's /metrics answers");
    let churn = {
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns = format!("{a}-payments");
        tokio::spawn(async move {
            for i in 0u64.. {
                let patch = json!({"metadata": {"annotations": {"e2e.bulkhead.dev/churn": i.to_string()}}});
                nss.patch(&ns, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate namespace");
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        })
    };

    // A finding the operator cannot repair (a binding it does not own): the condition
    // names the failing check, one security event per newly failing check, and it clears.
    let intruder: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "let-b-in"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bulkhead-profile-viewer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user(&b, "viewer")}]
    }))
    .unwrap();
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), &format!("{a}-agents"));
    rbs.create(&PostParams::default(), &intruder).await.unwrap();
    let message = wait_tenant(&client, &a, "IsolationVerified=False", WAIT, |t| {
        let c = t.status.as_ref()?.conditions.iter().find(|c| c.type_ == "IsolationVerified")?;
        (c.status == "False").then(|| (c.reason.clone(), c.message.clone()))
    })
    .await;
    assert_eq!(message.0, "ChecksFailed");
    assert!(message.1.starts_with(&format!("failing: {};", checks::NO_FOREIGN_SUBJECTS)), "{}", message.1);
    wait_tenant(&client, &b, "IsolationVerified names MTB-PL1-CC-TI-2", WAIT, |t| {
        let c = t.status.as_ref()?.conditions.iter().find(|c| c.type_ == "IsolationVerified")?;
        c.message.starts_with(&format!("failing: {};", checks::OTHER_TENANTS)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed: Vec<Value> = op
        .security_events()
        .into_iter()
        .filter(|e| e["event"]["action"] == "check-failed" && e["bulkhead"]["tenant"] == a.as_str())
        .collect();
    assert_eq!(failed.len(), 1, "one event per newly failing check, not one per run: {failed:#?}");
    assert_eq!(failed[0]["event"]["reason"], checks::NO_FOREIGN_SUBJECTS);
    assert!(failed[0]["message"].as_str().unwrap().contains("let-b-in"));
    rbs.delete("let-b-in", &DeleteParams::default()).await.unwrap();
    wait_tenant(&client, &a, "IsolationVerified=True again", WAIT, |t| {
        let c = t.status.as_ref()?.conditions.iter().find(|c| c.type_ == "IsolationVerified")?;
        (c.status == "True").then_some(())
    })
    .await;
    assert!(!churn.is_finished(), "the annotation churn kept running");
    churn.abort();
    let churned = op.metric(reconciles).await.expect("the operator's /metrics answers") - reconciled_before;
    assert!(churned >= 5.0, "the churn reconciled `a` all along ({churned} reconciles), and verification still ran");

    delete_tenant(&client, &a).await;
    delete_tenant(&client, &b).await;
}

#[tokio::test]
async fn each_broken_control_fails_exactly_its_check_with_evidence() {
    let _shared = PROFILES.read().await;
    let client = admin().await;
    install_crd(&client).await;
    let mut op = Operator::start(&unique("v"));
    let (a, b) = (unique("va"), unique("vb"));
    apply_tenant(&client, &tenant_manifest(&a, &op.shard)).await;
    apply_tenant(&client, &tenant_manifest(&b, &op.shard)).await;
    wait_ready(&client, &a).await;
    wait_ready(&client, &b).await;
    // Stopped first, so nothing is repaired behind the checks' back.
    op.kill();

    let (code, report) = verify_json(&a);
    assert_eq!(failing(&report), BTreeSet::new(), "baseline");
    assert_eq!(code, 0);
    let mut expected_a: BTreeSet<String> = BTreeSet::new();
    let a_agents = format!("{a}-agents");

    // 1. The default-deny policy goes.
    Api::<NetworkPolicy>::namespaced(client.clone(), &a_agents)
        .delete("bulkhead-default-deny", &DeleteParams::default())
        .await
        .unwrap();
    expected_a.insert(checks::DEFAULT_DENY.into());
    let (code, report) = verify_json(&a);
    assert_eq!(failing(&report), expected_a, "deleting default-deny");
    assert_eq!(code, 1, "exit 1 when a check fails");
    let ev = bad_evidence(&report, checks::DEFAULT_DENY);
    assert!(ev.contains(&format!("NetworkPolicy {a_agents}/bulkhead-default-deny")) && ev.contains("missing"), "{ev}");
    assert_eq!(statuses(&report)[checks::CROSS_TENANT_TRAFFIC].0, "pass", "the allow-list still isolates");

    // 2. A RoleBinding lets tenant b's developer into tenant a.
    let intruder: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "let-b-in"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bulkhead-profile-developer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user(&b, "developer")}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &a_agents).create(&PostParams::default(), &intruder).await.unwrap();
    expected_a.insert(checks::NO_FOREIGN_SUBJECTS.into());
    let (_, report) = verify_json(&a);
    assert_eq!(failing(&report), expected_a, "foreign RoleBinding, seen from tenant a");
    let ev = bad_evidence(&report, checks::NO_FOREIGN_SUBJECTS);
    assert!(ev.contains("let-b-in") && ev.contains(&format!("a subject of tenant {b}")), "{ev}");
    let (_, report_b) = verify_json(&b);
    assert_eq!(failing(&report_b), BTreeSet::from([checks::OTHER_TENANTS.to_string()]), "seen from tenant b");
    let ev = bad_evidence(&report_b, checks::OTHER_TENANTS);
    assert!(ev.contains(&user(&b, "developer")) && ev.contains(&a_agents) && ev.contains("allowed"), "{ev}");

    // 3. A namespace is relabelled.
    Api::<Namespace>::all(client.clone())
        .patch(
            &format!("{a}-payments"),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"bulkhead.dev/tenant": "someone-else"}}})),
        )
        .await
        .unwrap();
    expected_a.insert(checks::NAMESPACE_LABELS.into());
    let (_, report) = verify_json(&a);
    assert_eq!(failing(&report), expected_a, "relabelled namespace");
    let ev = bad_evidence(&report, checks::NAMESPACE_LABELS);
    assert!(ev.contains("metadata.labels.bulkhead.dev/tenant") && ev.contains("someone-else"), "{ev}");

    // 4. A key projection is removed.
    Api::<Secret>::namespaced(client.clone(), &a_agents)
        .delete("bulkhead-keys", &DeleteParams::default())
        .await
        .unwrap();
    expected_a.insert(checks::KEYS_PRESENT.into());
    let (_, report) = verify_json(&a);
    assert_eq!(failing(&report), expected_a, "removed key projection");
    let ev = bad_evidence(&report, checks::KEYS_PRESENT);
    assert!(ev.contains(&format!("Secret {a_agents}/bulkhead-keys")) && ev.contains("missing"), "{ev}");
    let b_keys = Api::<Secret>::namespaced(client.clone(), &format!("{b}-agents")).get("bulkhead-keys").await.unwrap();
    let text = serde_json::to_string(&report).unwrap();
    for v in b_keys.data.unwrap().values().filter(|v| v.0.len() == 32) {
        use base64::Engine;
        assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode(&v.0)), "no key value in a report");
    }

    // Repaired by the operator (the foreign binding is not its to remove), everything passes again.
    Api::<RoleBinding>::namespaced(client.clone(), &a_agents)
        .delete("let-b-in", &DeleteParams::default())
        .await
        .unwrap();
    op.restart();
    wait_for("the operator to repair tenant a", WAIT, || {
        let a = a.clone();
        async move { (verify_json(&a).0 == 0).then_some(()) }
    })
    .await;
    assert_eq!(failing(&verify_json(&b).1), BTreeSet::new());
    delete_tenant(&client, &a).await;
    delete_tenant(&client, &b).await;
}

#[tokio::test]
async fn a_widened_profile_cluster_role_fails_its_checks_and_is_restored() {
    let client = admin().await;
    install_crd(&client).await;
    let mut op = Operator::start(&unique("v"));
    let (a, b) = (unique("va"), unique("vb"));
    apply_tenant(&client, &tenant_manifest(&a, &op.shard)).await;
    apply_tenant(&client, &tenant_manifest(&b, &op.shard)).await;
    wait_ready(&client, &a).await;
    wait_ready(&client, &b).await;
    op.kill();
    // No other test of this binary runs an operator (which would repair the role) or expects it intact now.
    let _exclusive = PROFILES.write().await;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let original = roles.get("bulkhead-profile-viewer").await.unwrap();
    let mut widened_rules = original.rules.clone().unwrap();
    widened_rules.push(
        serde_json::from_value(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]})).unwrap(),
    );
    let mut report = Value::Null;
    // An operator of another test process may restore the role at any moment: try again if so.
    for attempt in 0..5 {
        roles
            .patch("bulkhead-profile-viewer", &PatchParams::default(), &Patch::Merge(json!({"rules": widened_rules})))
            .await
            .unwrap();
        report = verify_json(&a).1;
        let still = roles.get("bulkhead-profile-viewer").await.unwrap().rules.unwrap().len() == widened_rules.len();
        if still {
            break;
        }
        assert!(attempt < 4, "the profile role keeps being restored by another operator");
    }
    let restore = async {
        let planned = bulkhead::plan::access::profile_cluster_roles()
            .into_iter()
            .find(|o| o.key().name == "bulkhead-profile-viewer")
            .unwrap();
        let body = bulkhead::controller::apply::desired_json(&planned);
        roles
            .patch("bulkhead-profile-viewer", &PatchParams::apply("bulkhead").force(), &Patch::Apply(&body))
            .await
            .unwrap();
    };
    let got = failing(&report);
    let ev_role = bad_evidence(&report, checks::PROFILE_ROLES);
    let ev_rights = bad_evidence(&report, checks::PROFILE_RIGHTS);
    restore.await;
    assert_eq!(got, BTreeSet::from([checks::PROFILE_ROLES.to_string(), checks::PROFILE_RIGHTS.to_string()]));
    assert!(ev_role.contains("ClusterRole bulkhead-profile-viewer") && ev_role.contains("rules"), "{ev_role}");
    assert!(
        ev_rights.contains(&user(&a, "viewer")) && ev_rights.contains("secrets") && ev_rights.contains("allowed"),
        "{ev_rights}"
    );
    let (code, report) = verify_json(&a);
    assert_eq!((code, failing(&report)), (0, BTreeSet::new()), "restored");
    drop(_exclusive);
    op.restart();
    delete_tenant(&client, &a).await;
    delete_tenant(&client, &b).await;
}

/// Runs the checks as a ServiceAccount that may only list what the operator watches.
async fn least_privilege_view_still_proves_the_object_controls(client: &Client, tenant: &str) {
    let sa = unique("verify-lp");
    let ns = OPERATOR_NAMESPACE;
    let pp = PatchParams::apply("e2e").force();
    let sa_body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}});
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
        .patch(&sa, &pp, &Patch::Apply(&sa_body))
        .await
        .unwrap();
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": sa},
    "rules": [
        {"apiGroups": ["bulkhead.dev"], "resources": ["tenants"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces", "serviceaccounts", "resourcequotas", "limitranges", "secrets"], "verbs": ["list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "clusterroles", "clusterrolebindings"], "verbs": ["list", "watch"]}
    ]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": sa},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]});
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    roles.patch(&sa, &pp, &Patch::Apply(&role)).await.unwrap();
    bindings.patch(&sa, &pp, &Patch::Apply(&binding)).await.unwrap();
    let limited = as_service_account(ns, &sa).await;
    let settings = bulkhead::verify::Settings { impersonate: false, lenient: true, ..Default::default() };
    let verifier = bulkhead::verify::Verifier::new(limited, settings);
    // RBAC takes a moment to reach the authorizer's cache.
    let report = wait_for("the least-privilege verifier to see the tenant", WAIT, || {
        let verifier = verifier.clone();
        async move { verifier.verify(Some(tenant)).await.ok()?.tenants.into_iter().next() }
    })
    .await;
    let _ = bindings.delete(&sa, &DeleteParams::default()).await;
    let _ = roles.delete(&sa, &DeleteParams::default()).await;
    let summary: Vec<String> =
        report.results.iter().map(|r| format!("{} {:?}: {}", r.check.id, r.status, r.reason)).collect();
    use bulkhead::verify::Status;
    for id in [
        checks::NAMESPACE_LABELS,
        checks::DEFAULT_DENY,
        checks::ALLOW_LIST,
        checks::CROSS_TENANT_TRAFFIC,
        checks::ACCESS_BINDINGS,
        checks::NO_FOREIGN_SUBJECTS,
        checks::PROFILE_ROLES,
        checks::MANAGED_OBJECTS,
        checks::RESOURCE_QUOTAS,
        checks::KEYS_PRESENT,
        checks::KEYS_DISTINCT,
    ] {
        assert_eq!(report.result(id).unwrap().status, Status::Pass, "{id} by list only:\n{}", summary.join("\n"));
    }
    for id in
        [checks::CLUSTER_RESOURCES, checks::PROFILE_RIGHTS, checks::PRIVILEGED, checks::WEBHOOKS, checks::AUDIT_SIDECAR]
    {
        let r = report.result(id).unwrap();
        assert_eq!(r.status, Status::NotApplicable, "{id}: {}", r.reason);
        assert!(r.reason.contains("auditor's credentials"), "{id} says who can run it: {}", r.reason);
    }
    assert_eq!(report.summary().errors, 0, "{}", summary.join("\n"));
}

/// The audit sidecar image the pods of the pod-check test carry (and `bulkhead verify` is told about).
const SIDECAR_IMAGE: &str = "registry.bulkhead.example/bulkhead:e2e";

/// A pod as bulkhead's mutating webhook returns it for `tenant`: its own patch applied to a pod that
/// passes Pod Security `restricted`.
fn admitted_pod(tenant: &Tenant, name: &str) -> Value {
    use bulkhead::admission::{facts::TenantFacts, mutate};
    let mut doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "registry.acme.example/app:1",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
    let config = bulkhead::plan::Config::default();
    let rules = TenantFacts::new(tenant, &config).expect("the tenant plans");
    let pod = serde_json::from_value(doc.clone()).expect("pod");
    let sidecar = mutate::SidecarConfig { image: SIDECAR_IMAGE.into(), ..Default::default() };
    json_patch::patch(&mut doc, &mutate::mutate_pod(&pod, &rules, &sidecar)).expect("the webhook's patch applies");
    doc
}

#[tokio::test]
async fn pods_without_the_sidecar_or_outside_the_regions_fail_by_name() {
    let client = admin().await;
    install_crd(&client).await;
    let op = Operator::start(&unique("v"));
    let name = unique("vp");
    let mut manifest = tenant_from("metadata: {name: x}\nspec: {namespaces: [{name: agents}]}\n", &name, &op.shard);
    manifest["spec"]["audit"] = json!({"mode": "Required"});
    manifest["spec"]["dataResidency"] = json!({"regions": ["eu-west-1"]});
    manifest["spec"]["deletionPolicy"] = json!("Delete");
    apply_tenant(&client, &manifest).await;
    let tenant = wait_ready(&client, &name).await;
    let ns = format!("{name}-agents");

    let report = |args: &[&str]| {
        let mut all = vec!["--tenant", name.as_str(), "-o", "json"];
        all.extend(args);
        let (code, stdout, stderr) = verify_cli(&all);
        let v: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("JSON report ({e}): {stdout}\n{stderr}"));
        (code, v)
    };

    // No webhook runs: the admin creates pods as they would arrive if admission were bypassed.
    let good = admitted_pod(&tenant, "good");
    assert_eq!(good["spec"]["initContainers"][0]["name"], "bulkhead-audit", "the webhook's patch adds the sidecar");
    let mut no_sidecar = admitted_pod(&tenant, "no-sidecar");
    let spec = no_sidecar["spec"].as_object_mut().unwrap();
    spec.remove("initContainers");
    spec.remove("volumes");
    let mut elsewhere = admitted_pod(&tenant, "elsewhere");
    elsewhere["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        [0]["matchExpressions"][0]["values"] = json!(["us-east-1"]);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    // Before any pod: both pass (nothing to carry a sidecar); what else fails is this tenant's lack of quotas.
    let (_, r) = report(&["--sidecar-image", SIDECAR_IMAGE]);
    let baseline = failing(&r);
    assert!(!baseline.contains(checks::AUDIT_SIDECAR) && !baseline.contains(checks::DATA_RESIDENCY), "{baseline:?}");
    for p in [&good, &no_sidecar, &elsewhere] {
        let pod = serde_json::from_value(p.clone()).unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("pod {}: {e}", p["metadata"]["name"]));
    }

    let (code, r) = report(&["--sidecar-image", SIDECAR_IMAGE]);
    assert_eq!(code, 1);
    let mut expected = baseline.clone();
    expected.extend([checks::AUDIT_SIDECAR.to_string(), checks::DATA_RESIDENCY.to_string()]);
    assert_eq!(failing(&r), expected);
    let all = statuses(&r);
    let audit = bad_evidence(&r, checks::AUDIT_SIDECAR);
    assert!(audit.contains(&format!("pod {ns}/no-sidecar:")) && audit.contains("no audit sidecar"), "{audit}");
    assert!(!audit.contains("/good:") && !audit.contains("/elsewhere:"), "only the pod without it: {audit}");
    let reason = all[checks::AUDIT_SIDECAR].1["reason"].as_str().unwrap();
    assert!(reason.starts_with("1 pod(s)") && reason.contains(&format!("{ns}/no-sidecar")), "{reason}");
    let residency = bad_evidence(&r, checks::DATA_RESIDENCY);
    assert!(residency.contains(&format!("pod {ns}/elsewhere:")) && residency.contains("eu-west-1"), "{residency}");
    assert!(!residency.contains("/good:") && !residency.contains("/no-sidecar:"), "only the pod outside: {residency}");
    // Told another image, even the well-formed pod's sidecar is not bulkhead's.
    let (_, r) = report(&["--sidecar-image", "registry.example/other:1"]);
    assert!(bad_evidence(&r, checks::AUDIT_SIDECAR).contains(&format!("pod {ns}/good:")));

    let gone = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    for p in ["no-sidecar", "elsewhere"] {
        pods.delete(p, &gone).await.expect("pod deleted");
    }
    wait_for("the two pods to be gone", WAIT, || {
        let pods = pods.clone();
        async move { (pods.list(&Default::default()).await.ok()?.items.len() == 1).then_some(()) }
    })
    .await;
    let (code, r) = report(&["--sidecar-image", SIDECAR_IMAGE]);
    let all = statuses(&r);
    for id in [checks::AUDIT_SIDECAR, checks::DATA_RESIDENCY] {
        let (status, check) = &all[id];
        assert_eq!(status, "pass", "{id}: {}", check["reason"]);
        let evidence = check["evidence"].as_array().unwrap();
        assert_eq!(evidence.len(), 1, "{id}: one pod judged");
        assert!(evidence[0]["request"].as_str().unwrap().contains(&format!("pod {ns}/good:")));
    }
    assert_eq!(failing(&r), baseline);
    assert_eq!(code, i32::from(!baseline.is_empty()));
    delete_tenant(&client, &name).await;
}

struct Junit {
    suites: usize,
    cases: usize,
    failures: usize,
    skipped: usize,
}

/// Parses a JUnit document with a real XML reader: well-formed or panic.
fn parse_junit(xml: &str) -> Junit {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut j = Junit { suites: 0, cases: 0, failures: 0, skipped: 0 };
    let mut depth = 0i32;
    let mut root = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                root.get_or_insert(name.clone());
                match name.as_str() {
                    "testsuite" => j.suites += 1,
                    "testcase" => j.cases += 1,
                    "failure" => j.failures += 1,
                    _ => {}
                }
            }
            Ok(Event::Empty(e)) => {
                if e.name().as_ref() == b"skipped" {
                    j.skipped += 1;
                }
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("JUnit XML is not well-formed at {}: {e}\n{xml}", reader.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "every element closed");
    assert_eq!(root.as_deref(), Some("testsuites"));
    j
}

fn np(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"namespace": ns, "name": name}, "spec": spec})).unwrap()
}

#[test]
fn network_evaluator_agrees_with_the_independent_engine() {
    // Two tenants as the operator plans them, exceptions included, plus policies a tenant admin could add.
    let config = bulkhead::plan::Config::default();
    let plan_of = |name: &str, extra: Value| {
        let mut t: Tenant = serde_json::from_value(json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name}, "spec": {"namespaces": [{"name": "agents"}, {"name": "payments"}]}}))
        .unwrap();
        if let Some(net) = extra.get("network") {
            t.spec.network = serde_json::from_value(net.clone()).unwrap();
        }
        bulkhead::plan::plan(&t, &config).unwrap()
    };
    let a = plan_of(
        "ta",
        json!({"network": {"ingressFrom": [{"namespaces": ["ing"], "ports": [{"port": 8443}]}, {"cidr": "192.0.2.0/24"}],
                            "egressTo": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}, {"namespaces": ["mon"], "ports": [{"port": 9090}]}]}}),
    );
    let b = plan_of("tb", json!({"network": {"allowDNS": false}}));
    let mut model = Model::default();
    for (ns, labels) in [
        ("ta-agents", json!({"bulkhead.dev/tenant": "ta"})),
        ("ta-payments", json!({"bulkhead.dev/tenant": "ta"})),
        ("tb-agents", json!({"bulkhead.dev/tenant": "tb"})),
        ("tb-payments", json!({"bulkhead.dev/tenant": "tb"})),
        ("ing", json!({})),
        ("mon", json!({})),
        ("plain", json!({"team": "x"})),
        ("kube-system", json!({})),
    ] {
        let labels: BTreeMap<String, String> = serde_json::from_value(labels).unwrap();
        model.namespaces.to_mut().insert(ns, &labels);
    }
    for o in a.objects.iter().chain(&b.objects) {
        if let bulkhead::plan::ManagedObject::NetworkPolicy(p) = o {
            model.policies.entry(p.namespace().unwrap()).or_default().push(p.clone());
        }
    }
    let extra = [
        np(
            "tb-agents",
            "open-to-a-front",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ta-agents"]}]},
                                   "podSelector": {"matchLabels": {"tier": "front"}}}], "ports": [{"port": "http"}]}]}),
        ),
        np(
            "ta-agents",
            "out-to-web",
            json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 8000, "endPort": 8100}]},
                       {"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}], "ports": [{"port": 5000, "protocol": "SCTP"}]}]}),
        ),
        np(
            "plain",
            "guard",
            json!({"podSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["y"]}]},
            "policyTypes": ["Ingress"], "ingress": [{"from": [{"ipBlock": {"cidr": "198.51.100.0/24"}}, {"namespaceSelector": {"matchLabels": {"team": "x"}}}]}]}),
        ),
        np(
            "mon",
            "anyone-udp",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"protocol": "SCTP"}]}]}),
        ),
        np(
            "tb-payments",
            "deny-egress-only",
            json!({"podSelector": {"matchLabels": {"tier": "front"}}, "policyTypes": ["Egress"]}),
        ),
    ];
    for p in extra {
        model.policies.entry(p.namespace().unwrap()).or_default().push(p);
    }

    let mut pods = Vec::new();
    let mut n = 0u8;
    for (ns, _) in model.namespaces.iter() {
        let kinds: Vec<Value> = if ns == "kube-system" {
            vec![json!({"k8s-app": "kube-dns"})]
        } else {
            vec![json!({}), json!({"app": "web", "tier": "front"}), json!({"tier": "front"})]
        };
        for (i, labels) in kinds.into_iter().enumerate() {
            n += 1;
            let ip = if n == 5 { "10.244.1.5".to_string() } else { format!("10.244.0.{n}") };
            pods.push(Pod {
                namespace: ns.to_string(),
                name: format!("p{i}"),
                labels: serde_json::from_value(labels).unwrap(),
                ip: ip.parse().unwrap(),
                ports: vec![NamedPort { name: "http".into(), port: 8080, protocol: "TCP".into() }],
            });
        }
    }
    let externals: Vec<IpAddr> =
        ["192.0.2.50", "203.0.113.9", "198.51.100.7", "8.8.8.8"].iter().map(|s| s.parse().unwrap()).collect();
    let ports = [
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),
        (8080, "TCP"),
        (8050, "TCP"),
        (8443, "TCP"),
        (9090, "TCP"),
        (5000, "SCTP"),
    ];
    let mut ends: Vec<Endpoint> = pods.iter().cloned().map(Endpoint::Pod).collect();
    ends.extend(externals.iter().map(|ip| Endpoint::Ip(*ip)));
    let to_json = |e: &Endpoint| match e {
        Endpoint::Pod(p) => json!({"pod": format!("{}/{}", p.namespace, p.name)}),
        Endpoint::Ip(ip) => json!({"ip": ip.to_string()}),
    };
    let mut queries = Vec::new();
    let mut ours = BTreeMap::new();
    for (i, src) in ends.iter().enumerate() {
        for (j, dst) in ends.iter().enumerate() {
            if i == j || (matches!(src, Endpoint::Ip(_)) && matches!(dst, Endpoint::Ip(_))) {
                continue;
            }
            for (port, proto) in ports {
                let id = format!("{i}-{j}-{port}-{proto}");
                ours.insert(id.clone(), (model.verdict(src, dst, port, proto).allowed(), to_json(src), to_json(dst)));
                queries
                    .push(json!({"id": id, "from": to_json(src), "to": to_json(dst), "port": port, "protocol": proto}));
            }
        }
    }
    let input = json!({
        "namespaces": model.namespaces.iter().map(|(k, v)| json!({"name": k, "labels": v})).collect::<Vec<_>>(),
        "policies": model.policies.values().flatten().collect::<Vec<_>>(),
        "pods": pods.iter().map(|p| json!({"namespace": p.namespace, "name": p.name, "labels": p.labels, "ip": p.ip.to_string(),
            "ports": p.ports.iter().map(|np| json!({"name": np.name, "port": np.port, "protocol": np.protocol})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "queries": queries,
    });
    let v = run_oracle(&input);
    let mut wrong = Vec::new();
    let mut allowed = 0;
    for r in v["results"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let theirs = r["allowed"].as_bool().unwrap();
        let (mine, from, to) = &ours[id];
        allowed += usize::from(theirs);
        if *mine != theirs {
            wrong.push(format!("{id} {from} -> {to}: engine {theirs}, bulkhead {mine}"));
        }
    }
    assert_eq!(v["results"].as_array().unwrap().len(), ours.len());
    assert!(allowed > 100 && allowed < ours.len() / 2, "a scenario with both answers: {allowed} of {}", ours.len());
    assert!(wrong.is_empty(), "{} of {} verdicts differ:\n{}", wrong.len(), ours.len(), wrong.join("\n"));
}
