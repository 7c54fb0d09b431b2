//! What the tenant's subjects can and cannot do, asked of the apiserver:
//! SubjectAccessReviews for each subject of each profile, and server-side
//! dry-runs made as the tenant's admin (impersonated) for what admission
//! decides. The apiserver's real RBAC and admission chain answer; nothing
//! here predicts an answer except from the plan's own profile rules.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::api::{Profile, SubjectKind};
use crate::plan::access::{profile_role_name, profile_rules};

use super::checks::*;
use super::{CheckResult, Ctx, Evidence, Status, controls};

/// A subject of the tenant, as the apiserver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// How reports name it ("User alice@example.com (admin)").
    pub label: String,
    /// The user name to review or impersonate.
    pub user: String,
    /// Its groups, including the ones the apiserver adds.
    pub groups: Vec<String>,
    /// Its profiles in this tenant.
    pub profiles: BTreeSet<Profile>,
}

impl Identity {
    /// Whether a RoleBinding subject names this identity (directly or through a group).
    pub fn named_by(&self, subject: &k8s_openapi::api::rbac::v1::Subject) -> bool {
        match subject.kind.as_str() {
            "User" => subject.name == self.user,
            "Group" => self.groups.contains(&subject.name),
            "ServiceAccount" => {
                format!("system:serviceaccount:{}:{}", subject.namespace.as_deref().unwrap_or_default(), subject.name)
                    == self.user
            }
            _ => false,
        }
    }
}

/// The tenant's subjects with their profiles (service accounts only in namespaces it holds).
pub fn identities(ctx: &Ctx<'_>) -> Vec<Identity> {
    let held = ctx.facts.namespaces();
    let mut by_subject: BTreeMap<(SubjectKind, String, Option<String>), BTreeSet<Profile>> = BTreeMap::new();
    for entry in &ctx.facts.tenant.spec.access {
        if entry.kind == SubjectKind::ServiceAccount && !entry.namespace.as_ref().is_some_and(|ns| held.contains(ns)) {
            continue;
        }
        by_subject.entry((entry.kind, entry.name.clone(), entry.namespace.clone())).or_default().insert(entry.profile);
    }
    by_subject
        .into_iter()
        .map(|((kind, name, namespace), profiles)| {
            let names: Vec<&str> = profiles.iter().map(|p| p.as_str()).collect();
            let label = format!("{} {} ({})", kind.as_str(), name, names.join(", "));
            let (user, mut groups) = match kind {
                SubjectKind::User => (name, vec![]),
                SubjectKind::Group => (format!("bulkhead-verify:member-of:{name}"), vec![name]),
                SubjectKind::ServiceAccount => {
                    let ns = namespace.unwrap_or_default();
                    (
                        format!("system:serviceaccount:{ns}:{name}"),
                        vec!["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{ns}")],
                    )
                }
            };
            groups.push("system:authenticated".into());
            Identity { label, user, groups, profiles }
        })
        .collect()
}

/// The attributes of one access review.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attrs {
    /// Namespace; None for cluster-scoped requests.
    pub namespace: Option<String>,
    /// Verb.
    pub verb: &'static str,
    /// API group ("" for core).
    pub group: &'static str,
    /// Resource (plural).
    pub resource: &'static str,
    /// Subresource.
    pub subresource: Option<&'static str>,
    /// Object name.
    pub name: Option<String>,
}

impl Attrs {
    fn new(namespace: Option<&str>, verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Self { namespace: namespace.map(str::to_string), verb, group, resource, subresource: None, name: None }
    }

    fn sub(mut self, subresource: Option<&'static str>) -> Self {
        self.subresource = subresource;
        self
    }

    fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// How evidence shows the request, like `kubectl auth can-i`.
    pub fn describe(&self) -> String {
        let mut res = self.resource.to_string();
        if let Some(s) = self.subresource {
            res = format!("{res}/{s}");
        }
        if !self.group.is_empty() {
            res = format!("{res}.{}", self.group);
        }
        if let Some(n) = &self.name {
            res = format!("{res}/{n}");
        }
        let scope = match &self.namespace {
            Some(ns) => format!("-n {ns}"),
            None => "(cluster-scoped)".to_string(),
        };
        format!("SubjectAccessReview: can-i {} {res} {scope}", self.verb)
    }
}

/// Asks the apiserver whether `who` may do `attrs`: (allowed, the answer as text).
pub async fn review(client: &Client, who: &Identity, attrs: &Attrs) -> Result<(bool, String), String> {
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user.clone()),
            groups: Some(who.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: attrs.namespace.clone(),
                verb: Some(attrs.verb.into()),
                group: Some(attrs.group.into()),
                resource: Some(attrs.resource.into()),
                subresource: attrs.subresource.map(str::to_string),
                name: attrs.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .map_err(|e| format!("{}: {e}", attrs.describe()))?;
    let status = answer.status.unwrap_or_default();
    let why = status.reason.filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default();
    let text = if status.allowed { format!("allowed{why}") } else { format!("denied{why}") };
    Ok((status.allowed, text))
}

/// Reviews every `(identity, attrs, expected)` and turns the answers into evidence.
async fn reviews(ctx: &Ctx<'_>, items: Vec<(&Identity, Attrs, bool)>) -> Result<Vec<Evidence>, String> {
    let client = ctx.client;
    let mut out: Vec<(String, Attrs, Evidence)> = futures::stream::iter(items)
        .map(|(who, attrs, expected)| async move {
            let (allowed, text) = review(client, who, &attrs).await?;
            let ev = Evidence::of(who.label.clone(), attrs.describe(), text, allowed == expected);
            Ok::<_, String>((who.label.clone(), attrs, ev))
        })
        .buffer_unordered(ctx.settings.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(out.into_iter().map(|(_, _, e)| e).collect())
}

fn from_reviews(
    id: &str,
    answers: Result<Vec<Evidence>, String>,
    passing: String,
    failing: impl Fn(usize) -> String,
) -> CheckResult {
    match answers {
        Ok(evidence) => CheckResult::judge(id, evidence, passing, failing),
        Err(e) => CheckResult::error(id, format!("an access review failed: {e}")),
    }
}

const VERBS: [&str; 8] = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

/// Cluster-scoped resources no tenant subject may touch.
const CLUSTER_SCOPED: [(&str, &str); 10] = [
    ("", "namespaces"),
    ("", "nodes"),
    ("", "persistentvolumes"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("storage.k8s.io", "storageclasses"),
    ("bulkhead.dev", "tenants"),
];

async fn cluster_resources(ctx: &Ctx<'_>, ids: &[Identity]) -> CheckResult {
    let mut items = Vec::new();
    for who in ids {
        for (group, resource) in CLUSTER_SCOPED {
            for verb in VERBS {
                items.push((who, Attrs::new(None, verb, group, resource), false));
            }
        }
    }
    let n = items.len();
    from_reviews(
        CLUSTER_RESOURCES,
        reviews(ctx, items).await,
        format!("{n} access reviews of {} subject(s) on cluster-scoped resources: all denied", ids.len()),
        |bad| format!("{bad} access review(s) allowed a tenant subject to touch cluster-scoped resources"),
    )
}

async fn quota_immutable(ctx: &Ctx<'_>, ids: &[Identity]) -> CheckResult {
    let mut items = Vec::new();
    for who in ids {
        for ns in ctx.facts.namespaces() {
            for resource in ["resourcequotas", "limitranges"] {
                for verb in ["create", "update", "patch", "delete", "deletecollection"] {
                    items.push((who, Attrs::new(Some(ns), verb, "", resource), false));
                }
            }
        }
    }
    let n = items.len();
    from_reviews(
        QUOTA_IMMUTABLE,
        reviews(ctx, items).await,
        format!("{n} access reviews: no subject may write ResourceQuotas or LimitRanges"),
        |bad| format!("{bad} access review(s) allowed a tenant subject to change its own quota or limits"),
    )
}

/// What a subject must not do in another tenant's namespace.
const FOREIGN: [(&str, &str, Option<&str>, &str); 8] = [
    ("", "pods", None, "list"),
    ("", "pods", None, "create"),
    ("", "pods", Some("exec"), "create"),
    ("", "secrets", None, "get"),
    ("", "secrets", None, "list"),
    ("", "configmaps", None, "list"),
    ("", "services", None, "create"),
    ("apps", "deployments", None, "create"),
];

fn binding_reaches(rb: &RoleBinding, who: &Identity) -> bool {
    rb.subjects.as_ref().is_some_and(|s| s.iter().any(|s| who.named_by(s)))
}

async fn other_tenants(ctx: &Ctx<'_>, ids: &[Identity]) -> CheckResult {
    let foreign = ctx.view.other_tenant_namespaces(&ctx.facts.name, ctx.facts.namespaces());
    if foreign.is_empty() {
        return CheckResult::not_applicable(OTHER_TENANTS, "there is no other tenant in the cluster");
    }
    // One other tenant's namespace catches every cluster-wide grant (a
    // ClusterRoleBinding applies to all namespaces alike); RoleBindings can
    // only reach namespaces that hold one naming the subject or its groups.
    let probe =
        foreign.range(ctx.facts.name.clone()..).next().or_else(|| foreign.iter().next()).map(|(ns, _)| ns.clone());
    let mut items = Vec::new();
    let mut tenants_probed = BTreeSet::new();
    let mut bound = BTreeSet::new();
    // Each namespace's bindings are decoded once, for every identity.
    let mut targets: Vec<BTreeSet<String>> = ids.iter().map(|_| probe.iter().cloned().collect()).collect();
    for ns in foreign.keys() {
        let Some(rbs) = ctx.view.role_bindings.get(ns) else { continue };
        for (who, targets) in ids.iter().zip(targets.iter_mut()) {
            if rbs.iter().any(|rb| binding_reaches(rb, who)) {
                targets.insert(ns.clone());
                bound.insert(ns.clone());
            }
        }
    }
    for (who, targets) in ids.iter().zip(targets) {
        for ns in targets {
            for (group, resource, sub, verb) in FOREIGN {
                items.push((who, Attrs::new(Some(&ns), verb, group, resource).sub(sub), false));
            }
            if let Some(owner) = foreign.get(&ns) {
                tenants_probed.insert(owner.clone());
                items.push((who, Attrs::new(None, "get", "bulkhead.dev", "tenants").named(owner), false));
            }
        }
    }
    items.sort_by(|a, b| (&a.0.label, &a.1).cmp(&(&b.0.label, &b.1)));
    items.dedup_by(|a, b| a.0.label == b.0.label && a.1 == b.1);
    let n = items.len();
    from_reviews(
        OTHER_TENANTS,
        reviews(ctx, items).await,
        format!(
            "{n} access reviews into {} other tenant(s) ({} namespace(s) of other tenants, {} with a binding that could reach a subject): all denied",
            tenants_probed.len(),
            foreign.len(),
            bound.len()
        ),
        |bad| format!("{bad} access review(s) let a subject of this tenant into another tenant"),
    )
}

/// Whether RBAC `rules` grant `verb` on `resource` (with subresource) in `group`.
pub fn grants(rules: &[PolicyRule], group: &str, resource: &str, subresource: Option<&str>, verb: &str) -> bool {
    let full = match subresource {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    rules.iter().any(|r| {
        let groups = r.api_groups.as_deref().unwrap_or_default();
        let resources = r.resources.as_deref().unwrap_or_default();
        let any_name = r.resource_names.as_ref().is_none_or(Vec::is_empty);
        any_name
            && groups.iter().any(|g| g == "*" || g == group)
            && resources
                .iter()
                .any(|x| x == "*" || *x == full || (subresource.is_some() && *x == format!("{resource}/*")))
            && r.verbs.iter().any(|v| v == "*" || v == verb)
    })
}

/// Rights whose answer is checked against the profile for every subject.
const SENSITIVE: [(&str, &str, Option<&str>, &str); 22] = [
    ("", "secrets", None, "get"),
    ("", "secrets", None, "list"),
    ("", "secrets", None, "create"),
    ("", "pods", Some("exec"), "create"),
    ("", "pods", Some("attach"), "create"),
    ("", "pods", Some("portforward"), "create"),
    ("", "pods", Some("ephemeralcontainers"), "patch"),
    ("", "pods", None, "create"),
    ("", "pods", None, "delete"),
    ("", "pods", None, "list"),
    ("", "pods", Some("log"), "get"),
    ("", "configmaps", None, "create"),
    ("apps", "deployments", None, "create"),
    ("rbac.authorization.k8s.io", "roles", None, "create"),
    ("rbac.authorization.k8s.io", "rolebindings", None, "create"),
    ("rbac.authorization.k8s.io", "rolebindings", None, "list"),
    ("networking.k8s.io", "networkpolicies", None, "create"),
    ("networking.k8s.io", "networkpolicies", None, "delete"),
    ("networking.k8s.io", "networkpolicies", None, "list"),
    ("", "events", None, "list"),
    ("", "serviceaccounts", Some("token"), "create"),
    ("", "resourcequotas", None, "get"),
];

async fn profile_rights(ctx: &Ctx<'_>, ids: &[Identity]) -> CheckResult {
    let exec = ctx.facts.desired.effective.exec_allowed;
    let mut items = Vec::new();
    for who in ids {
        let rules: Vec<PolicyRule> = who.profiles.iter().flat_map(|p| profile_rules(*p, exec)).collect();
        for ns in ctx.facts.namespaces() {
            for (group, resource, sub, verb) in SENSITIVE {
                let expected = grants(&rules, group, resource, sub, verb);
                items.push((who, Attrs::new(Some(ns), verb, group, resource).sub(sub), expected));
            }
        }
    }
    let n = items.len();
    let roles: BTreeSet<String> =
        ids.iter().flat_map(|i| i.profiles.iter().map(|p| profile_role_name(*p, exec))).collect();
    let mut result = from_reviews(
        PROFILE_RIGHTS,
        reviews(ctx, items).await,
        format!(
            "{n} access reviews answered exactly as the documented profiles ({})",
            roles.into_iter().collect::<Vec<_>>().join(", ")
        ),
        |bad| {
            format!("{bad} access review(s) differ from the documented profile (more or fewer rights than it grants)")
        },
    );
    for e in result.evidence.iter_mut() {
        e.response = format!("{} (profile {})", e.response, if e.ok { "agrees" } else { "disagrees" });
    }
    result
}

/// The result of a server-side dry-run.
#[derive(Clone, Debug, PartialEq)]
pub enum DryRun {
    /// Admitted; the object as the apiserver would store it.
    Accepted(Value),
    /// Refused by validation or admission.
    Rejected {
        /// HTTP status code.
        code: u16,
        /// The apiserver's message.
        message: String,
    },
}

impl DryRun {
    fn text(&self) -> String {
        match self {
            DryRun::Accepted(_) => "accepted".to_string(),
            DryRun::Rejected { code, message } => format!("rejected {code}: {message}"),
        }
    }
}

/// Creates `body` at `path` with `dryRun=All`, as `who` (impersonated) or as the caller.
pub async fn dry_run(client: &Client, who: Option<&Identity>, path: &str, body: &Value) -> Result<DryRun, String> {
    let mut builder = http::Request::post(format!("{path}?dryRun=All")).header("Content-Type", "application/json");
    if let Some(who) = who {
        builder = builder.header("Impersonate-User", &who.user);
        for g in &who.groups {
            builder = builder.header("Impersonate-Group", g);
        }
    }
    let request = builder.body(body.to_string().into_bytes()).map_err(|e| format!("cannot build request: {e}"))?;
    match client.request::<Value>(request).await {
        Ok(v) => Ok(DryRun::Accepted(v)),
        Err(kube::Error::Api(s)) => Ok(DryRun::Rejected { code: s.code, message: s.message.clone() }),
        Err(e) => Err(format!("dry-run create at {path} failed: {e}")),
    }
}

/// The subject dry-runs are made as: the tenant's first admin, else its first developer.
fn prober(ids: &[Identity]) -> Option<&Identity> {
    ids.iter()
        .find(|i| i.profiles.contains(&Profile::Admin))
        .or_else(|| ids.iter().find(|i| i.profiles.contains(&Profile::Developer)))
}

const PROBE: &str = "bulkhead-verify-probe";

/// Where the probe pods' image lives when the tenant allows any registry.
const PROBE_IMAGE: &str = "registry.invalid/bulkhead/verify-probe:1";

/// The probe image, under the tenant's first allowed registry when it restricts
/// them: otherwise the image rule would refuse even the compliant pod.
fn probe_image(tenant: &crate::api::Tenant) -> String {
    let allowed = tenant.spec.images.as_ref().map(|i| i.allowed_registries.as_slice()).unwrap_or_default();
    let Some(prefix) = allowed.first() else {
        return PROBE_IMAGE.to_string();
    };
    let prefix = prefix.trim().to_ascii_lowercase();
    let sep = if prefix.ends_with('/') { "" } else { "/" };
    let image = format!("{prefix}{sep}bulkhead/verify-probe:1");
    // A prefix no image under it can match (a short Docker Hub name) leaves the default: the control pod then says so.
    if crate::admission::images::matches(&image, &prefix) { image } else { PROBE_IMAGE.to_string() }
}

/// A pod Pod Security `restricted` admits, within any sane quota: every probe changes exactly one thing.
fn compliant_pod(image: &str) -> Value {
    let tiny = json!({"cpu": "1m", "memory": "4Mi", "ephemeral-storage": "1Mi"});
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": PROBE, "labels": {"bulkhead.dev/verify-probe": "true"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": "Always",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": tiny, "limits": tiny}
            }]
        }
    })
}

type Mutation = fn(&mut Value);

/// The pod probes: check id, what is changed, the change, words the refusal must contain (any).
fn pod_probes() -> Vec<(&'static str, &'static str, Mutation, &'static [&'static str])> {
    vec![
        (
            ADD_CAPABILITIES,
            "container adds capability SYS_ADMIN",
            |p| {
                p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]);
            },
            &["capabilities", "SYS_ADMIN"],
        ),
        (
            RUN_AS_ROOT,
            "pod runs as root (runAsUser 0, runAsNonRoot false)",
            |p| {
                p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
                p["spec"]["securityContext"]["runAsUser"] = json!(0);
            },
            &["runAsNonRoot", "runAsUser"],
        ),
        (
            PRIVILEGED,
            "container is privileged",
            |p| {
                // The API forbids privileged with allowPrivilegeEscalation false.
                p["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
                p["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
            },
            &["privileged"],
        ),
        (
            PRIVILEGE_ESCALATION,
            "container allows privilege escalation",
            |p| {
                p["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
            },
            &["allowPrivilegeEscalation"],
        ),
        (
            HOST_PATH,
            "pod mounts hostPath /",
            |p| {
                p["spec"]["volumes"] = json!([{"name": "host", "hostPath": {"path": "/"}}]);
            },
            &["hostPath"],
        ),
        (
            HOST_NETWORK,
            "pod uses hostNetwork",
            |p| {
                p["spec"]["hostNetwork"] = json!(true);
            },
            &["hostNetwork"],
        ),
        (
            HOST_NETWORK,
            "container uses hostPort 8080",
            |p| {
                p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080, "hostPort": 8080}]);
            },
            &["hostPort"],
        ),
        (
            HOST_PID,
            "pod uses hostPID",
            |p| {
                p["spec"]["hostPID"] = json!(true);
            },
            &["hostPID"],
        ),
        (
            HOST_IPC,
            "pod uses hostIPC",
            |p| {
                p["spec"]["hostIPC"] = json!(true);
            },
            &["hostIPC"],
        ),
    ]
}

fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

/// Runs the pod, NodePort and imagePullPolicy probes in every namespace.
async fn admission_probes(ctx: &Ctx<'_>, ids: &[Identity]) -> Vec<CheckResult> {
    let who = prober(ids);
    let subject = who.map_or_else(
        || "the verifier's own credentials (the tenant has no admin or developer to impersonate)".to_string(),
        |w| w.label.clone(),
    );
    let probes = pod_probes();
    let image = probe_image(&ctx.facts.tenant);
    let control = || compliant_pod(&image);
    let mut by_check: BTreeMap<&str, Vec<Evidence>> = BTreeMap::new();
    let mut nodeport = Vec::new();
    let mut pull = Vec::new();
    let mut inconclusive: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for ns in ctx.facts.namespaces() {
        let path = pods_path(ns);
        // The control pod must be admitted, or no refusal below proves anything.
        match dry_run(ctx.client, who, &path, &control()).await {
            Ok(DryRun::Accepted(_)) => {}
            Ok(refused) => {
                inconclusive.push(format!(
                    "in {ns} even a compliant pod is refused ({}), so refusals prove nothing",
                    refused.text()
                ));
                continue;
            }
            Err(e) => {
                errors.push(e);
                continue;
            }
        }
        for (id, what, mutate, words) in &probes {
            let mut pod = control();
            mutate(&mut pod);
            let request = format!("dry-run create Pod {ns}/{PROBE}: {what}");
            match dry_run(ctx.client, who, &path, &pod).await {
                Ok(answer) => {
                    let ok = match &answer {
                        DryRun::Rejected { message, .. } => {
                            words.iter().any(|w| message.contains(w)) || message.contains("admission webhook")
                        }
                        DryRun::Accepted(_) => false,
                    };
                    by_check.entry(id).or_default().push(Evidence::of(&subject, request, answer.text(), ok));
                }
                Err(e) => errors.push(e),
            }
        }
        // NodePort: only an admission webhook can refuse it.
        let svc_path = format!("/api/v1/namespaces/{ns}/services");
        let svc = |type_: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": PROBE},
                   "spec": {"type": type_, "selector": {"bulkhead.dev/verify-probe": "true"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        };
        match (
            dry_run(ctx.client, who, &svc_path, &svc("ClusterIP")).await,
            dry_run(ctx.client, who, &svc_path, &svc("NodePort")).await,
        ) {
            (Ok(DryRun::Accepted(_)), Ok(answer)) => {
                let ok = matches!(answer, DryRun::Rejected { .. });
                nodeport.push((
                    ns.clone(),
                    Evidence::of(
                        &subject,
                        format!("dry-run create Service {ns}/{PROBE} type NodePort"),
                        answer.text(),
                        ok,
                    ),
                ));
            }
            (Err(e), _) | (_, Err(e)) => errors.push(e),
            (Ok(refused), _) => {
                inconclusive.push(format!("in {ns} even a ClusterIP Service is refused ({})", refused.text()))
            }
        }
        let mut lazy = control();
        lazy["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        match dry_run(ctx.client, who, &path, &lazy).await {
            Ok(answer) => {
                let policy = match &answer {
                    DryRun::Accepted(v) => {
                        v["spec"]["containers"][0]["imagePullPolicy"].as_str().unwrap_or("").to_string()
                    }
                    DryRun::Rejected { .. } => String::new(),
                };
                let ok = matches!(answer, DryRun::Rejected { .. }) || policy == "Always";
                let text = if policy.is_empty() {
                    answer.text()
                } else {
                    format!("{} with imagePullPolicy {policy}", answer.text())
                };
                pull.push((
                    ns.clone(),
                    Evidence::of(
                        &subject,
                        format!("dry-run create Pod {ns}/{PROBE}: imagePullPolicy IfNotPresent"),
                        text,
                        ok,
                    ),
                ));
            }
            Err(e) => errors.push(e),
        }
    }
    let mut out = Vec::new();
    let pod_ids: BTreeSet<&str> = probes.iter().map(|p| p.0).collect();
    for id in pod_ids {
        out.push(if let Some(e) = errors.first() {
            CheckResult::new(
                id,
                Status::Error,
                format!("a dry-run failed: {e}"),
                by_check.remove(id).unwrap_or_default(),
            )
        } else if !inconclusive.is_empty() {
            CheckResult::new(
                id,
                Status::Error,
                format!("inconclusive: {}", inconclusive.join("; ")),
                by_check.remove(id).unwrap_or_default(),
            )
        } else {
            CheckResult::judge(
                id,
                by_check.remove(id).unwrap_or_default(),
                "refused in every namespace of the tenant".to_string(),
                |bad| format!("{bad} dry-run(s) admitted the pod: the control is missing"),
            )
        });
    }
    out.push(webhook_only(ctx, NODE_PORT, "", "services", "NodePort services", nodeport, &errors, &inconclusive));
    out.push(webhook_only(
        ctx,
        ALWAYS_PULL,
        "",
        "pods",
        "pods without imagePullPolicy Always",
        pull,
        &errors,
        &inconclusive,
    ));
    out
}

/// A control only an admission webhook provides: without a webhook covering
/// the resource in the tenant's namespaces, it is not applicable (and says what was admitted).
#[allow(clippy::too_many_arguments)]
fn webhook_only(
    ctx: &Ctx<'_>,
    id: &str,
    group: &str,
    resource: &str,
    what: &str,
    evidence: Vec<(String, Evidence)>,
    errors: &[String],
    inconclusive: &[String],
) -> CheckResult {
    if let Some(e) = errors.first() {
        return CheckResult::error(id, format!("a dry-run failed: {e}"));
    }
    if !inconclusive.is_empty() {
        return CheckResult::error(id, format!("inconclusive: {}", inconclusive.join("; ")));
    }
    let failing: Vec<&String> = evidence.iter().filter(|(_, e)| !e.ok).map(|(ns, _)| ns).collect();
    let enforced: Vec<&&String> =
        failing.iter().filter(|ns| !controls::webhooks_covering(ctx.view, group, resource, ns).is_empty()).collect();
    if !failing.is_empty() && enforced.is_empty() {
        let names: Vec<&str> = failing.iter().map(|s| s.as_str()).collect();
        let reason = format!(
            "no admission webhook covers {resource} in {}: nothing in this cluster refuses {what} yet, and the apiserver admitted the probe (bulkhead's admission webhooks are meant to enforce this)",
            names.join(", ")
        );
        return CheckResult::new(id, Status::NotApplicable, reason, evidence.into_iter().map(|(_, e)| e).collect());
    }
    let evidence: Vec<Evidence> = evidence.into_iter().map(|(_, e)| e).collect();
    CheckResult::judge(id, evidence, format!("{what} are refused in every namespace of the tenant"), |bad| {
        format!("{bad} dry-run(s) admitted {what} although an admission webhook covers the namespace")
    })
}

async fn self_service(ctx: &Ctx<'_>, ids: &[Identity]) -> Vec<CheckResult> {
    let admins: Vec<&Identity> = ids.iter().filter(|i| i.profiles.contains(&Profile::Admin)).collect();
    if admins.is_empty() {
        return [SELF_SERVICE_RBAC, SELF_SERVICE_NETPOL]
            .into_iter()
            .map(|id| {
                CheckResult::not_applicable(
                    id,
                    "the tenant has no subject with the admin profile, so nobody is meant to self-serve",
                )
            })
            .collect();
    }
    let mut rbac_items = Vec::new();
    let mut netpol_items = Vec::new();
    for who in &admins {
        for ns in ctx.facts.namespaces() {
            for verb in ["create", "update", "delete"] {
                rbac_items.push((*who, Attrs::new(Some(ns), verb, "rbac.authorization.k8s.io", "roles"), true));
                rbac_items.push((*who, Attrs::new(Some(ns), verb, "rbac.authorization.k8s.io", "rolebindings"), true));
                netpol_items.push((*who, Attrs::new(Some(ns), verb, "networking.k8s.io", "networkpolicies"), true));
            }
        }
    }
    let (rbac, netpol) = futures::join!(reviews(ctx, rbac_items), reviews(ctx, netpol_items));
    let mut rbac = match rbac {
        Ok(e) => e,
        Err(e) => {
            return vec![CheckResult::error(SELF_SERVICE_RBAC, e.clone()), CheckResult::error(SELF_SERVICE_NETPOL, e)];
        }
    };
    let mut netpol = match netpol {
        Ok(e) => e,
        Err(e) => {
            return vec![CheckResult::error(SELF_SERVICE_RBAC, e.clone()), CheckResult::error(SELF_SERVICE_NETPOL, e)];
        }
    };
    let who = admins[0];
    for ns in ctx.facts.namespaces() {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": PROBE},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": PROBE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": profile_role_name(Profile::Viewer, false)},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]});
        let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": PROBE},
            "spec": {"podSelector": {"matchLabels": {"bulkhead.dev/verify-probe": "true"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {}}]}]}});
        let rbac_base = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}");
        for (is_rbac, path, body, what) in [
            (true, format!("{rbac_base}/roles"), role, "Role"),
            (
                true,
                format!("{rbac_base}/rolebindings"),
                binding,
                "RoleBinding (viewer profile for the namespace's default ServiceAccount)",
            ),
            (false, format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"), policy, "NetworkPolicy"),
        ] {
            match dry_run(ctx.client, Some(who), &path, &body).await {
                Ok(answer) => {
                    let ok = matches!(answer, DryRun::Accepted(_));
                    let ev = Evidence::of(&who.label, format!("dry-run create {what} {ns}/{PROBE}"), answer.text(), ok);
                    if is_rbac { rbac.push(ev) } else { netpol.push(ev) }
                }
                Err(e) => {
                    return vec![
                        CheckResult::error(SELF_SERVICE_RBAC, e.clone()),
                        CheckResult::error(SELF_SERVICE_NETPOL, e),
                    ];
                }
            }
        }
    }
    vec![
        CheckResult::judge(
            SELF_SERVICE_RBAC,
            rbac,
            format!("{} admin(s) can manage Roles and RoleBindings in every namespace", admins.len()),
            |bad| format!("{bad} request(s) show an admin cannot manage Roles or RoleBindings"),
        ),
        CheckResult::judge(
            SELF_SERVICE_NETPOL,
            netpol,
            format!("{} admin(s) can manage NetworkPolicies in every namespace", admins.len()),
            |bad| format!("{bad} request(s) show an admin cannot manage NetworkPolicies"),
        ),
    ]
}

/// Checks answered by SubjectAccessReviews.
const BY_REVIEW: [&str; 4] = [CLUSTER_RESOURCES, QUOTA_IMMUTABLE, OTHER_TENANTS, PROFILE_RIGHTS];
/// Checks answered by impersonated dry-runs.
const BY_DRY_RUN: [&str; 10] = [
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
];

/// Whether the verifier itself may create SubjectAccessReviews.
async fn may_review(client: &Client) -> Result<bool, String> {
    let who = Identity {
        label: "probe".into(),
        user: "bulkhead-verify:probe".into(),
        groups: vec!["system:authenticated".into()],
        profiles: BTreeSet::new(),
    };
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user),
            groups: Some(who.groups),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".into()),
                resource: Some("namespaces".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<SubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &sar).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Every access and admission check of one tenant.
pub async fn run(ctx: &Ctx<'_>) -> Vec<CheckResult> {
    let ids = identities(ctx);
    let mut out = Vec::new();
    let reviews_allowed = !ctx.settings.lenient || may_review(ctx.client).await.unwrap_or(true);
    let lacking = |id: &str, what: &str| {
        CheckResult::not_applicable(
            id,
            format!(
                "the verifier {what} (its RBAC does not grant it): `bulkhead verify` run with an auditor's credentials performs this check"
            ),
        )
    };
    if !reviews_allowed {
        out.extend(BY_REVIEW.iter().map(|id| lacking(id, "may not create SubjectAccessReviews")));
    } else if ids.is_empty() {
        out.extend(
            BY_REVIEW
                .iter()
                .map(|id| CheckResult::not_applicable(id, "the tenant has no access entries: no subject to review")),
        );
    } else {
        let (a, b, c, d) = futures::join!(
            cluster_resources(ctx, &ids),
            quota_immutable(ctx, &ids),
            other_tenants(ctx, &ids),
            profile_rights(ctx, &ids)
        );
        out.extend([a, b, c, d]);
    }
    if ctx.settings.impersonate {
        out.extend(admission_probes(ctx, &ids).await);
    } else {
        out.extend(BY_DRY_RUN.iter().map(|id| lacking(id, "does not impersonate tenant subjects")));
    }
    if ctx.settings.impersonate && reviews_allowed {
        out.extend(self_service(ctx, &ids).await);
    } else {
        let what = "cannot review and impersonate the tenant's admins";
        out.extend([lacking(SELF_SERVICE_RBAC, what), lacking(SELF_SERVICE_NETPOL, what)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_rules_answer_the_sensitive_rights_as_documented() {
        let admin = profile_rules(Profile::Admin, true);
        let viewer = profile_rules(Profile::Viewer, false);
        let dev_pci = profile_rules(Profile::Developer, false);
        assert!(grants(&admin, "", "secrets", None, "get"));
        assert!(grants(&admin, "", "pods", Some("exec"), "create"));
        assert!(grants(&admin, "networking.k8s.io", "networkpolicies", None, "create"));
        assert!(!grants(&admin, "", "serviceaccounts", Some("token"), "create"));
        assert!(!grants(&viewer, "", "secrets", None, "get"));
        assert!(!grants(&viewer, "", "events", None, "list"));
        assert!(grants(&viewer, "", "pods", None, "list"));
        assert!(!grants(&dev_pci, "", "pods", Some("exec"), "create"));
        assert!(!grants(&dev_pci, "rbac.authorization.k8s.io", "roles", None, "create"));
        let wide = vec![PolicyRule {
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..Default::default()
        }];
        assert!(grants(&wide, "", "pods", Some("exec"), "create"));
    }

    #[test]
    fn every_probe_changes_the_compliant_pod() {
        for (_, what, mutate, _) in pod_probes() {
            let mut p = compliant_pod(PROBE_IMAGE);
            mutate(&mut p);
            assert_ne!(p, compliant_pod(PROBE_IMAGE), "{what}");
        }
    }

    #[test]
    fn the_probe_image_is_one_the_tenant_allows() {
        let tenant = |registries: serde_json::Value| {
            let spec = json!({"namespaces": [{"name": "a"}], "images": {"allowedRegistries": registries}});
            crate::api::Tenant::new("acme", serde_json::from_value(spec).unwrap())
        };
        assert_eq!(probe_image(&tenant(json!([]))), PROBE_IMAGE);
        assert_eq!(
            probe_image(&tenant(json!(["registry.acme.example/"]))),
            "registry.acme.example/bulkhead/verify-probe:1"
        );
        assert_eq!(
            probe_image(&tenant(json!(["registry.acme.example/team"]))),
            "registry.acme.example/team/bulkhead/verify-probe:1"
        );
        for allowed in [json!(["registry.acme.example/"]), json!(["registry.acme.example/team", "other.example/"])] {
            let t = tenant(allowed.clone());
            assert!(crate::admission::images::matches(&probe_image(&t), allowed[0].as_str().unwrap()), "{allowed}");
        }
        assert_eq!(probe_image(&tenant(json!(["nginx"]))), PROBE_IMAGE, "no image under a short Hub name");
    }
}
